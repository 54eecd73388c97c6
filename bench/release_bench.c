/* SPDX-License-Identifier: Apache-2.0 */
/*
 * P3/P4 and the Intel-client comparison: releases keys through libkeygate in one process and
 * prints one JSON object with the wall time, this process's CPU time (user+sys, all threads)
 * and the step breakdown.
 *
 *   release_bench --config keygate.conf [--mode keygate|warm] [--no-reuse] [--no-cache]
 *                 [--repeat K] REF...
 *
 *   keygate  one kg_release_ctx, kg_release_keys over every REF: one attestation, parallel
 *            transfers (what `keygate release` and the provider do)
 *   --no-reuse --no-cache  the approach of Intel's clients (mode "intel"): for every key a new
 *            context, so a fresh wrapping key, nonce, evidence, attest, JWKS and both CRLs,
 *            then the transfer, one key after the other. --no-reuse alone: one context, a new
 *            attestation per key, JWKS/CRLs cached
 *   warm     one context; a first release fills the JWKS/CRL caches, then K releases of the
 *            first REF that each attest again (kg_release_ctx_drop_session) with the caches
 *            warm. "warm_start" (epoch seconds) lets the harness count only those requests
 *            in the stack's log
 *   sequential  one context, kg_release_key for one REF after the other (what the provider
 *            does when nginx loads one key per server block)
 *   keygen   K wrapping keys (kg_wrap_key_new) and nothing else: their CPU time, to separate
 *            the key generation from the rest of a release (REF is still required)
 */
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "kg_config.h"
#include "kg_keyref.h"
#include "kg_release.h"
#include "kg_wrap.h"

#define MAX_REFS 1024

static double now_ms(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static double cpu_ms(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e3 +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e3;
}

static void add_times(kg_release_times *sum, const kg_release_times *t)
{
    sum->wrapkey += t->wrapkey;
    sum->nonce += t->nonce;
    sum->evidence += t->evidence;
    sum->token += t->token;
    sum->verify += t->verify;
    sum->transfer += t->transfer;
    sum->unwrap += t->unwrap;
    sum->match += t->match;
    sum->attested += t->attested;
}

int main(int argc, char **argv)
{
    const char *conf = NULL, *mode = "keygate";
    static kg_keyref refs[MAX_REFS];
    static const kg_keyref *ptrs[MAX_REFS];
    static EVP_PKEY *keys[MAX_REFS];
    static kg_err errs[MAX_REFS];
    kg_release_times times, t;
    kg_release_ctx *ctx = NULL;
    kg_config cfg;
    kg_err err;
    size_t n = 0, released = 0;
    int repeat = 1, rc = 1, no_reuse = 0, no_cache = 0;
    double w0, c0, wall, cpu, warm_start = 0;

    memset(&times, 0, sizeof(times));
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--config") == 0 && i + 1 < argc)
            conf = argv[++i];
        else if (strcmp(argv[i], "--mode") == 0 && i + 1 < argc)
            mode = argv[++i];
        else if (strcmp(argv[i], "--no-reuse") == 0)
            no_reuse = 1;
        else if (strcmp(argv[i], "--no-cache") == 0)
            no_cache = 1;
        else if (strcmp(argv[i], "--repeat") == 0 && i + 1 < argc)
            repeat = atoi(argv[++i]);
        else if (n < MAX_REFS) {
            if (!kg_keyref_load(argv[i], &refs[n], &err)) {
                fprintf(stderr, "release_bench: %s\n", err.msg);
                return 1;
            }
            ptrs[n] = &refs[n];
            n++;
        }
    }
    if (strcmp(mode, "keygen") == 0 && repeat >= 1) {
        c0 = cpu_ms();
        w0 = now_ms(CLOCK_MONOTONIC);
        for (int r = 0; r < repeat; r++) {
            EVP_PKEY *k = kg_wrap_key_new(&err);
            if (k == NULL) {
                fprintf(stderr, "release_bench: %s\n", err.msg);
                return 1;
            }
            EVP_PKEY_free(k);
        }
        printf("{\"mode\": \"keygen\", \"keys\": %d, \"wall_ms\": %.3f, \"cpu_ms\": %.3f}\n", repeat,
               now_ms(CLOCK_MONOTONIC) - w0, cpu_ms() - c0);
        return 0;
    }
    if (strcmp(mode, "keygate") == 0 && (no_reuse || no_cache))
        mode = no_cache ? "intel" : "no-reuse";
    if (conf == NULL || n == 0 || repeat < 1 ||
        (strcmp(mode, "keygate") != 0 && strcmp(mode, "intel") != 0 && strcmp(mode, "warm") != 0 &&
         strcmp(mode, "no-reuse") != 0 && strcmp(mode, "sequential") != 0)) {
        fprintf(stderr,
                "usage: release_bench --config F [--mode keygate|sequential|warm|keygen] [--no-reuse] "
                "[--no-cache] "
                "[--repeat K] REF...\n");
        return 2;
    }
    kg_config_defaults(&cfg);
    if (!kg_config_load_file(&cfg, conf, &err) || !kg_config_check(&cfg, &err)) {
        fprintf(stderr, "release_bench: %s\n", err.msg);
        return 1;
    }

    w0 = now_ms(CLOCK_MONOTONIC);
    c0 = cpu_ms();
    if (strcmp(mode, "keygate") == 0) {
        if ((ctx = kg_release_ctx_new(&cfg, &err)) == NULL)
            goto fail;
        released = kg_release_keys(ctx, ptrs, n, keys, errs, &times);
        kg_release_ctx_free(ctx);
        ctx = NULL;
    } else if (strcmp(mode, "sequential") == 0) {
        if ((ctx = kg_release_ctx_new(&cfg, &err)) == NULL)
            goto fail;
        for (size_t i = 0; i < n; i++) {
            memset(&t, 0, sizeof(t));
            if (kg_release_key(ctx, ptrs[i], &keys[i], &t, &errs[i]))
                released++;
            add_times(&times, &t);
        }
    } else if (strcmp(mode, "intel") == 0 || strcmp(mode, "no-reuse") == 0) {
        int fresh_ctx = strcmp(mode, "intel") == 0;
        for (size_t i = 0; i < n; i++) {
            if ((fresh_ctx || ctx == NULL) && (ctx = kg_release_ctx_new(&cfg, &err)) == NULL)
                goto fail;
            kg_release_ctx_drop_session(ctx);
            memset(&t, 0, sizeof(t));
            if (kg_release_key(ctx, ptrs[i], &keys[i], &t, &errs[i]))
                released++;
            add_times(&times, &t);
            if (fresh_ctx) {
                kg_release_ctx_free(ctx);
                ctx = NULL;
            }
        }
    } else {
        if ((ctx = kg_release_ctx_new(&cfg, &err)) == NULL ||
            !kg_release_key(ctx, ptrs[0], &keys[0], &t, &err))
            goto fail;
        EVP_PKEY_free(keys[0]);
        keys[0] = NULL;
        warm_start = now_ms(CLOCK_REALTIME) / 1e3;
        w0 = now_ms(CLOCK_MONOTONIC);
        c0 = cpu_ms();
        for (int r = 0; r < repeat; r++) {
            EVP_PKEY *k = NULL;
            kg_release_ctx_drop_session(ctx);
            memset(&t, 0, sizeof(t));
            if (kg_release_key(ctx, ptrs[0], &k, &t, &errs[0]))
                released++;
            EVP_PKEY_free(k);
            add_times(&times, &t);
        }
        n = (size_t)repeat;
    }
    wall = now_ms(CLOCK_MONOTONIC) - w0;
    cpu = cpu_ms() - c0;
    for (size_t i = 0; i < n && i < MAX_REFS; i++)
        if (strcmp(mode, "warm") != 0 && keys[i] == NULL && errs[i].msg[0] != '\0')
            fprintf(stderr, "release_bench: key %zu: %s\n", i, errs[i].msg);
    printf("{\"mode\": \"%s\", \"keys\": %zu, \"released\": %zu, \"wall_ms\": %.3f, \"cpu_ms\": %.3f, "
           "\"warm_start\": %.3f, \"steps_ms\": {\"wrapkey\": %.3f, \"nonce\": %.3f, \"evidence\": %.3f, "
           "\"token\": %.3f, \"verify\": %.3f, \"transfer\": %.3f, \"unwrap\": %.3f, \"match\": %.3f}, "
           "\"attestations\": %d}\n",
           mode, n, released, wall, cpu, warm_start, times.wrapkey, times.nonce, times.evidence, times.token,
           times.verify, times.transfer, times.unwrap, times.match, times.attested);
    rc = released == n ? 0 : 1;
    goto end;
fail:
    fprintf(stderr, "release_bench: %s\n", err.msg);
end:
    kg_release_ctx_free(ctx);
    for (size_t i = 0; i < MAX_REFS; i++) {
        EVP_PKEY_free(keys[i]);
        kg_keyref_clear(&refs[i]);
    }
    return rc;
}
