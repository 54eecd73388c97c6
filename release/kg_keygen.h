/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kg_keygen: a wrapping (or Trustee TEE) key generated on a thread of its own while the release
 * does its network (issue 21 item 2). An RSA-3072 key takes hundreds of ms of random prime search;
 * the nonce it is bound with, and the TLS connects before it, do not need it. The release starts
 * the generation, fetches the nonce, and joins before the evidence step needs the user data.
 *
 * Every started generation ends in exactly one kg_keygen_join or kg_keygen_abandon, which waits
 * for the thread: none outlives the release (a module may be unloaded after it). The key's private
 * half lives where kg_wrap_key_generate puts it (OpenSSL's secure heap when initialised).
 */
#ifndef KG_KEYGEN_H
#define KG_KEYGEN_H

#include <openssl/types.h>

#include "kg_err.h"

typedef struct kg_keygen kg_keygen;

/* Starts generating a key of kind (NULL: the Intel KBS wrapping key, RSA-3072; "ec" or "rsa": a
 * Trustee TEE key, kg_wrap_key_generate). The ENGINE check (kg_wrap_engine_check) runs here, on
 * the caller's thread, before any network. cancel (borrowed, may be NULL, read atomically; as
 * kg_http_opts.cancel) stops the generation at its next candidate prime. When no thread can be
 * created the key is generated in kg_keygen_join instead. Returns NULL with err (wrapping-key). */
kg_keygen *kg_keygen_start(const char *kind, const int *cancel, kg_err *err);

/* A handle for a key generated beforehand (takes key over): kg_keygen_join returns it at once.
 * NULL with err (out of memory; key freed). */
kg_keygen *kg_keygen_ready(EVP_PKEY *key, kg_err *err);

/* Waits for the key and frees g. Returns 1 with *key (caller frees) and, when start/end are not
 * NULL, the generation's interval in kg_mono_ms() time (both the join time for a ready key), or 0
 * with err (wrapping-key step, e.g. "stopped (cancelled)"). */
int kg_keygen_join(kg_keygen *g, EVP_PKEY **key, double *start, double *end, kg_err *err);

/* Gives g up (another step failed): stops the generation at its next candidate prime, waits for
 * the thread, frees the key and g. Accepts NULL. */
void kg_keygen_abandon(kg_keygen *g);

#endif
