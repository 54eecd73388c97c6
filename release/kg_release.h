/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The release pipeline (docs/design.md §1): key reference -> wrapping key -> nonce -> evidence ->
 * token -> verify -> transfer -> unwrap -> match -> EVP_PKEY. Every front end uses this. The
 * wrapping key is generated on a thread of its own (kg_keygen.h) while the nonce is fetched.
 *
 * A kg_release_ctx holds one attestation session at a time (wrapping key + verified token),
 * reused for further keys while the token has at least 30 s left (passport mode), and the
 * verifier's JWKS/CRL caches. In background mode every transfer is its own attestation, with a
 * fresh wrapping key and the local policy applied to our quote before it is sent. It is thread-safe;
 * kg_release_keys transfers in parallel. Released keys are EVP_PKEYs in kg_libctx(); their private parts sit
 * in the secure heap.
 */
#ifndef KG_RELEASE_H
#define KG_RELEASE_H

#include <openssl/types.h>
#include <stddef.h>

#include "kg_config.h"
#include "kg_err.h"
#include "kg_keyref.h"

#define KG_SESSION_MIN_VALIDITY_S 30
#define KG_RELEASE_MAX_PARALLEL 16

/* Wall time of each step in ms (0 when the step did not run, e.g. a reused attestation), and when
 * it started, in ms after the release began (origin): the wrapping key is generated on a thread
 * of its own while the nonce is fetched, so the two intervals overlap. */
typedef struct kg_release_times {
    double wrapkey, nonce, evidence, token, verify, transfer, unwrap, match;
    struct {
        double wrapkey, nonce, evidence, token, verify, transfer, unwrap, match;
    } at;
    double origin; /* kg_mono_ms() when the release began */
    int attested;  /* 1 when this release ran a new attestation */
} kg_release_times;

/* Records step (a field name) as started at start (kg_mono_ms()) and ended now. */
#define KG_TIMES_STEP(t, step, start)                                                                        \
    ((t)->at.step = (start) - (t)->origin, (t)->step = kg_mono_ms() - (start))

typedef struct kg_release_ctx kg_release_ctx;

/* Copies cfg. Initialises OpenSSL's secure heap when the application has not. No network. */
kg_release_ctx *kg_release_ctx_new(const kg_config *cfg, kg_err *err);
void kg_release_ctx_free(kg_release_ctx *ctx);

/* Uses api_key (copied into the secure heap) instead of reading ita_api_key_file, e.g. a key
 * the CLI read from stdin. Returns 1, or 0 with err (step config). */
int kg_release_ctx_set_api_key(kg_release_ctx *ctx, const char *api_key, kg_err *err);

/* Drops the attestation session (Intel: wrapping key + token; Trustee: TEE key, cookie, token) so
 * that the next release attests anew (a key lease refresh, a benchmark). The verifier's JWKS and
 * CRL caches stay. Accepts NULL. */
void kg_release_ctx_drop_session(kg_release_ctx *ctx);

/* Generates the wrapping key of this context's next attestation now, on the caller's thread
 * (cfg.cancel stops it), so that the attestation does not wait for it: a lease refresh calls it
 * before its window. Keeps one; a key made before a fork is never used in the child. Intel KBS
 * only (Trustee: returns 1, nothing done). Returns 1, or 0 with err (wrapping-key step). */
int kg_release_ctx_prepare_key(kg_release_ctx *ctx, kg_err *err);

/* Probe mode (keygate status): releases run every step up to the KBS transfer and stop there.
 * With the Intel KBS the wrapped reply is dropped without unwrapping (it is useless without the
 * wrapping key, which is freed); kg_release_key then returns 1 with *key NULL. Trustee replies
 * are decrypted by its protocol; the key is freed (zeroized) at once and *key is NULL too. */
void kg_release_ctx_set_probe(kg_release_ctx *ctx, int probe);

/* For a pthread_atfork child handler: re-initialises the context's lock (another thread may have
 * held it at fork). Does no I/O. Accepts NULL. */
void kg_release_ctx_atfork_child(kg_release_ctx *ctx);

/* Releases one key. Returns 1 with *key (caller frees with EVP_PKEY_free), or 0 with err naming
 * the step; nothing is half-loaded. times may be NULL. */
int kg_release_key(kg_release_ctx *ctx, const kg_keyref *ref, EVP_PKEY **key, kg_release_times *times,
                   kg_err *err);

/* Releases n keys with one attestation (passport) and parallel transfers. keys[i]/errs[i] per
 * key (errs may be NULL). Returns the number released. times gets the shared steps and the
 * slowest transfer/unwrap/match. */
size_t kg_release_keys(kg_release_ctx *ctx, const kg_keyref *const *refs, size_t n, EVP_PKEY **keys,
                       kg_err *errs, kg_release_times *times);

/* A reference for key_id on the configured (or given) KBS, without a public key yet. */
int kg_keyref_for_id(const kg_config *cfg, const char *key_id, const char *kbs_url, kg_keyref *ref,
                     kg_err *err);

#endif
