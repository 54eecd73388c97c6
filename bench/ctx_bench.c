/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Issue 21 item 1: what the provider's inner sign init costs against a copy of a context prepared
 * once, per key type (P-256, RSA-2048, RSA-3072), in the default provider.
 *
 *   ctx_bench                  wall µs per call of each variant (2000 calls after a warm-up)
 *   valgrind --tool=callgrind ctx_bench, then callgrind_annotate --inclusive=yes: the instructions
 *   of each loop_* function (3 key types x 2 passes x 2000 calls)
 */
#include <openssl/evp.h>
#include <stdio.h>
#include <time.h>

#define N 2000

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* each variant in its own function, never inlined, so callgrind attributes its cost */
__attribute__((noinline)) static void loop_init_md(EVP_PKEY *k, EVP_MD_CTX *tm, EVP_PKEY_CTX *tp)
{
    for (int i = 0; i < N; i++) {
        EVP_MD_CTX *m = EVP_MD_CTX_new();
        EVP_DigestSignInit_ex(m, NULL, "SHA256", NULL, NULL, k, NULL);
        EVP_MD_CTX_free(m);
    }
}

__attribute__((noinline)) static void loop_copy_md(EVP_PKEY *k, EVP_MD_CTX *tm, EVP_PKEY_CTX *tp)
{
    for (int i = 0; i < N; i++) {
        EVP_MD_CTX *m = EVP_MD_CTX_new();
        EVP_MD_CTX_copy_ex(m, tm);
        EVP_MD_CTX_free(m);
    }
}

__attribute__((noinline)) static void loop_dup_md_pctx(EVP_PKEY *k, EVP_MD_CTX *tm, EVP_PKEY_CTX *tp)
{
    for (int i = 0; i < N; i++)
        EVP_PKEY_CTX_free(EVP_PKEY_CTX_dup(EVP_MD_CTX_get_pkey_ctx(tm)));
}

__attribute__((noinline)) static void loop_init_raw(EVP_PKEY *k, EVP_MD_CTX *tm, EVP_PKEY_CTX *tp)
{
    for (int i = 0; i < N; i++) {
        EVP_PKEY_CTX *p = EVP_PKEY_CTX_new_from_pkey(NULL, k, NULL);
        EVP_PKEY_sign_init(p);
        EVP_PKEY_CTX_free(p);
    }
}

__attribute__((noinline)) static void loop_dup_raw(EVP_PKEY *k, EVP_MD_CTX *tm, EVP_PKEY_CTX *tp)
{
    for (int i = 0; i < N; i++)
        EVP_PKEY_CTX_free(EVP_PKEY_CTX_dup(tp));
}

int main(void)
{
    static const char *keys[] = {"P-256", "RSA-2048", "RSA-3072"};
    static const char *names[] = {"DigestSignInit_ex", "MD_CTX_copy_ex", "PKEY_CTX_dup (digest ctx)",
                                  "new_from_pkey + sign_init", "PKEY_CTX_dup (raw ctx)"};
    void (*loops[])(EVP_PKEY *, EVP_MD_CTX *, EVP_PKEY_CTX *) = {loop_init_md, loop_copy_md, loop_dup_md_pctx,
                                                                 loop_init_raw, loop_dup_raw};

    for (int j = 0; j < 3; j++) {
        EVP_PKEY *k = j == 0 ? EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256")
                             : EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)(j == 1 ? 2048 : 3072));
        EVP_MD_CTX *tm = EVP_MD_CTX_new();
        EVP_PKEY_CTX *tp = k != NULL ? EVP_PKEY_CTX_new_from_pkey(NULL, k, NULL) : NULL;

        if (k == NULL || tm == NULL || tp == NULL ||
            EVP_DigestSignInit_ex(tm, NULL, "SHA256", NULL, NULL, k, NULL) <= 0 ||
            EVP_PKEY_sign_init(tp) <= 0) {
            fprintf(stderr, "ctx_bench: %s: setup failed\n", keys[j]);
            return 1;
        }
        for (int i = 0; i < 5; i++) {
            double t0;
            loops[i](k, tm, tp); /* warm-up */
            t0 = now();
            loops[i](k, tm, tp);
            printf("%-9s %-26s %.2f us\n", keys[j], names[i], (now() - t0) / N * 1e6);
        }
        EVP_MD_CTX_free(tm);
        EVP_PKEY_CTX_free(tp);
        EVP_PKEY_free(k);
    }
    return 0;
}
