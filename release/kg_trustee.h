/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The release pipeline against a Confidential Containers Trustee KBS (kbs_type = trustee):
 *
 *   1. TEE key      fresh EC P-256 (default) or RSA-3072 pair (trustee_tee_key), public JWK;
 *                   generated on a thread of its own (kg_keygen.h) while step 2 runs
 *   2. nonce        POST /kbs/v0/auth: the KBS's challenge, hash algorithm and session cookie
 *   3. evidence     REPORTDATA = H(JCS({additional-evidence, nonce, tee-pubkey})) ‖ zeros
 *   4. token        POST /kbs/v0/attest: Trustee has ITA appraise the quote, returns ITA's token
 *   5. verify       our own ITA verifier (pinned root, claims, local policy), then the binding:
 *                   tdx.attester_runtime_data holds our tee-pubkey and the nonce, and hashes
 *                   to tdx_report_data = our REPORTDATA
 *   6. transfer     GET /kbs/v0/resource/<repo>/<type>/<tag> with the cookie (or the token as
 *                   Bearer once the cookie has expired)
 *   7. unwrap       JWE (kg_jwe.h) -> PKCS#8 PEM or DER -> EVP_PKEY in the secure heap
 *
 * One handshake (the session) serves every resource while its cookie or token has at least
 * KG_SESSION_MIN_VALIDITY_S left. When the KBS answers a reused session with a "re-attest" error
 * (TokenNotFound, TokenVerifierError, AttestationError), one new handshake is made and the
 * request repeated; PolicyDeny and storage errors fail at once.
 *
 * A kg_trustee is thread-safe: handshakes are serialised under its lock, resource requests run
 * in parallel outside it.
 */
#ifndef KG_TRUSTEE_H
#define KG_TRUSTEE_H

#include <openssl/types.h>

#include "kg_config.h"
#include "kg_err.h"
#include "kg_release.h"

typedef struct kg_trustee kg_trustee;

/* No I/O. Returns NULL on out of memory. */
kg_trustee *kg_trustee_new(void);
void kg_trustee_free(kg_trustee *t);

/* For a pthread_atfork child handler: re-initialises the lock. Accepts NULL. */
/* Ends the session (TEE key, cookie, token): the next release runs a new RCAR handshake, i.e. a
 * new attestation. Requests already holding a view of the old session finish with it. */
void kg_trustee_drop_session(kg_trustee *t);
void kg_trustee_atfork_child(kg_trustee *t);

/* Releases the resource at path (repo/type/tag) from the Trustee KBS at kbs_url. Returns 1 with
 * *key (caller frees), or 0 with err naming the step; times gets the steps that ran. */
int kg_trustee_release(kg_trustee *t, const kg_config *cfg, const char *kbs_url, const char *path,
                       EVP_PKEY **key, kg_release_times *times, kg_err *err);

#endif
