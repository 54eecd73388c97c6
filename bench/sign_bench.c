/* SPDX-License-Identifier: Apache-2.0 */
/*
 * P1: EVP_DigestSign throughput of a keygate key vs the same key from a plain PEM file.
 *
 *   sign_bench --a FILE --b FILE [--runs N] [--seconds S] [--md sha256]
 *   sign_bench --a FILE --b FILE --ops N     (fixed work for callgrind: after the warm-up,
 *                                             loop_a signs N times with A, loop_b with B)
 *   sign_bench ... --start-at T              (after the warm-up, wait until the unix time T, so
 *                                             that parallel processes sign at the same time)
 *
 * Both keys are loaded in this process with PEM_read_bio_PrivateKey (OPENSSL_CONF decides
 * which providers exist: the harness loads keygate and default). Each operation is what a TLS
 * server does per handshake: a new EVP_MD_CTX, EVP_DigestSignInit_ex, EVP_DigestSign of a
 * 64-byte message, free. Runs alternate A/B (ABBA order) so that drift hits both sides
 * equally; each run lasts --seconds. Prints one JSON object: per-run ops/s by wall clock and by
 * this thread's CPU time, for a and b.
 */
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double clock_s(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static EVP_PKEY *load_key(const char *path)
{
    BIO *bio = BIO_new_file(path, "r");
    EVP_PKEY *key = bio ? PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL) : NULL;
    BIO_free(bio);
    if (key == NULL) {
        fprintf(stderr, "sign_bench: %s: cannot load the private key\n", path);
        ERR_print_errors_fp(stderr);
    }
    return key;
}

static int sign_once(EVP_PKEY *key, const char *md)
{
    static const unsigned char msg[64] = "keygate sign benchmark: a 64-byte message, like a TLS transcript";
    unsigned char sig[1024];
    size_t siglen = sizeof(sig);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int ok = ctx != NULL && EVP_DigestSignInit_ex(ctx, NULL, md, NULL, NULL, key, NULL) > 0 &&
             EVP_DigestSign(ctx, sig, &siglen, msg, sizeof(msg)) > 0;
    EVP_MD_CTX_free(ctx);
    return ok;
}

/* Signs for at least `seconds`; *wall and *cpu get ops per second. */
static int run_for(EVP_PKEY *key, const char *md, double seconds, double *wall, double *cpu)
{
    double w0 = clock_s(CLOCK_MONOTONIC), c0 = clock_s(CLOCK_THREAD_CPUTIME_ID), w1;
    long ops = 0;

    do {
        for (int i = 0; i < 8; i++, ops++)
            if (!sign_once(key, md))
                return 0;
        w1 = clock_s(CLOCK_MONOTONIC);
    } while (w1 - w0 < seconds);
    *wall = (double)ops / (w1 - w0);
    *cpu = (double)ops / (clock_s(CLOCK_THREAD_CPUTIME_ID) - c0);
    return 1;
}

/* Separate, never inlined, and not identical (else the compiler folds them into one), so that
 * callgrind attributes each side's cost to its own function. */
static volatile long ops_a, ops_b;

__attribute__((noinline)) static int loop_a(EVP_PKEY *key, const char *md, long ops)
{
    for (long i = 0; i < ops; i++, ops_a++)
        if (!sign_once(key, md))
            return 0;
    return 1;
}

__attribute__((noinline)) static int loop_b(EVP_PKEY *key, const char *md, long ops)
{
    for (long i = 0; i < ops; i++, ops_b++)
        if (!sign_once(key, md))
            return 0;
    return 1;
}

static void print_list(const char *name, const double *v, int n, int last)
{
    printf("\"%s\": [", name);
    for (int i = 0; i < n; i++)
        printf("%s%.2f", i ? ", " : "", v[i]);
    printf("]%s", last ? "" : ", ");
}

int main(int argc, char **argv)
{
    const char *a_path = NULL, *b_path = NULL, *md = "SHA256";
    int runs = 7;
    long ops = 0;
    double seconds = 0.5, start_at = 0, late = 0;
    double aw[64], ac[64], bw[64], bc[64];
    EVP_PKEY *a = NULL, *b = NULL;
    int rc = 1;

    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--a") == 0)
            a_path = argv[i + 1];
        else if (strcmp(argv[i], "--b") == 0)
            b_path = argv[i + 1];
        else if (strcmp(argv[i], "--runs") == 0)
            runs = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--seconds") == 0)
            seconds = atof(argv[i + 1]);
        else if (strcmp(argv[i], "--md") == 0)
            md = argv[i + 1];
        else if (strcmp(argv[i], "--ops") == 0)
            ops = atol(argv[i + 1]);
        else if (strcmp(argv[i], "--start-at") == 0)
            start_at = atof(argv[i + 1]);
        else
            break;
    }
    if (a_path == NULL || b_path == NULL || runs < 1 || runs > 64 || seconds <= 0) {
        fprintf(stderr, "usage: sign_bench --a FILE --b FILE [--runs N<=64] [--seconds S] [--md NAME]\n"
                        "       sign_bench --a FILE --b FILE --ops N\n");
        return 2;
    }
    if ((a = load_key(a_path)) == NULL || (b = load_key(b_path)) == NULL)
        goto end;
    /* warm-up: first-use costs (fetch caches, lazy release) are not throughput */
    for (int i = 0; i < 16; i++)
        if (!sign_once(a, md) || !sign_once(b, md)) {
            fprintf(stderr, "sign_bench: signing failed\n");
            ERR_print_errors_fp(stderr);
            goto end;
        }
    if (ops > 0) {
        rc = loop_a(a, md, ops) && loop_b(b, md, ops) ? 0 : 1;
        goto end;
    }
    if (start_at > 0) {
        double now = clock_s(CLOCK_REALTIME);
        if (now < start_at) {
            double wait = start_at - now;
            struct timespec ts = {(time_t)wait, (long)((wait - (double)(time_t)wait) * 1e9)};
            while (nanosleep(&ts, &ts) != 0)
                ;
        } else {
            late = now - start_at;
        }
    }
    for (int r = 0; r < runs; r++) {
        int a_first = (r % 2) == 0; /* ABBA: each side goes first half of the time */
        if (!run_for(a_first ? a : b, md, seconds, a_first ? &aw[r] : &bw[r], a_first ? &ac[r] : &bc[r]) ||
            !run_for(a_first ? b : a, md, seconds, a_first ? &bw[r] : &aw[r], a_first ? &bc[r] : &ac[r])) {
            fprintf(stderr, "sign_bench: signing failed\n");
            ERR_print_errors_fp(stderr);
            goto end;
        }
    }
    printf("{");
    print_list("a_wall", aw, runs, 0);
    print_list("a_cpu", ac, runs, 0);
    print_list("b_wall", bw, runs, 0);
    print_list("b_cpu", bc, runs, 1);
    printf(", \"late_s\": %.4f}\n", late);
    rc = 0;
end:
    EVP_PKEY_free(a);
    EVP_PKEY_free(b);
    return rc;
}
