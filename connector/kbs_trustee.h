/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Confidential Containers Trustee KBS client: the RCAR handshake of KBS protocol 0.4.0 and the
 * resource route (docs/protocols/trustee-rcar.md §1-§6). HTTP and JSON only: evidence, token
 * verification and the JWE live elsewhere (release/kg_trustee.c, kg_jwe.h).
 *
 *   1. POST /kbs/v0/auth    {"version":"0.4.0","tee":"tdx","extra-params":{"supported-hash-
 *                           algorithms":[...]}} -> {"nonce","extra-params"} + Set-Cookie
 *                           kbs-session-id
 *   2. binding              runtime = {"additional-evidence":"","nonce":<verbatim>,"tee-pubkey":JWK}
 *                           REPORTDATA = H(JCS(runtime)) ‖ zero padding to 64 bytes; H from the
 *                           challenge's selected-hash-algorithm (sha384 when absent)
 *   3. POST /kbs/v0/attest  cookie; {"init-data":null,"runtime-data":{"nonce","tee-pubkey"},
 *                           "tee-evidence":{"primary_evidence":{"cc_eventlog","quote"},
 *                           "additional_evidence":""}} -> {"token"}
 *   4. GET /kbs/v0/resource/<repo>/<type>/<tag>   cookie or Bearer token -> flattened JWE
 *
 * Errors: Trustee answers almost everything with 401 and a body {"type": ".../errors/<Kind>",
 * "detail"}; the Kind is returned (kbs_trustee_reply) so callers branch on it, and it is named
 * in every message.
 */
#ifndef KG_KBS_TRUSTEE_H
#define KG_KBS_TRUSTEE_H

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>

#include "kg_err.h"
#include "kg_http.h"

#define KBS_TRUSTEE_PROTOCOL "0.4.0"
#define KBS_TRUSTEE_MAX_REPLY (256 * 1024)
#define KBS_TRUSTEE_SESSION_DEFAULT_S 300 /* Trustee's default session timeout */
#define KBS_TRUSTEE_MAX_NONCE 256

/* What a Trustee error type means for the client. */
typedef enum kbs_trustee_error_class {
    KBS_TRUSTEE_OK = 0,
    KBS_TRUSTEE_REATTEST = 1,  /* TokenNotFound, TokenVerifierError, AttestationError, ExpiredSession...:
                                  the session or token is no longer good; a new handshake may help */
    KBS_TRUSTEE_DENIED = 2,    /* PolicyDeny: the resource policy refuses this TD */
    KBS_TRUSTEE_NOT_FOUND = 3, /* PluginInternalError (storage), InvalidRequestPath, PluginNotFound */
    KBS_TRUSTEE_OTHER = 4
} kbs_trustee_error_class;

/* The challenge and session of one handshake (no secrets: the cookie only names a session that
 * is worthless without the TEE private key). */
typedef struct kbs_trustee_challenge {
    char nonce[KBS_TRUSTEE_MAX_NONCE]; /* verbatim */
    char hash_alg[8];                  /* sha256 | sha384 | sha512 */
    char cookie[160];                  /* "kbs-session-id=<id>" for the Cookie header */
    long long cookie_expires;          /* Unix time from Expires/Max-Age, else now + 300 s */
} kbs_trustee_challenge;

/* The outcome of a request that may fail the Trustee way. */
typedef struct kbs_trustee_reply {
    long status;
    kbs_trustee_error_class cls;
    char error_kind[64]; /* e.g. "PolicyDeny"; "" when the body had no type */
} kbs_trustee_reply;

/* Maps a Trustee error type (full URL or bare Kind) to its class. */
kbs_trustee_error_class kbs_trustee_classify(const char *kind);

/* Step 1. tee is "tdx". On success fills *ch. Returns 1, or 0 with err (step nonce) naming the
 * URL, status, error kind and detail (e.g. a protocol version mismatch). */
int kbs_trustee_auth(kg_http *h, const char *kbs_url, const char *tee, kbs_trustee_challenge *ch,
                     kg_err *err);

/*
 * Step 2. The binding object for (nonce, tee_pubkey) and its REPORTDATA under hash_alg.
 * additional_evidence NULL means "". *jcs (optional) receives the canonical text that was
 * hashed (malloc'ed, caller frees). Returns 1, or 0 with err (step `step`).
 */
int kbs_trustee_report_data(const char *nonce, const cJSON *tee_pubkey, const char *hash_alg,
                            const char *additional_evidence, kg_step step, uint8_t report_data[64],
                            char **jcs, kg_err *err);

/* Step 3. Sends the evidence in the session of ch. On success *token is the JWT (malloc'ed,
 * caller frees). Returns 1, or 0 with err (step token) and *reply filled. */
int kbs_trustee_attest(kg_http *h, const char *kbs_url, const kbs_trustee_challenge *ch,
                       const cJSON *tee_pubkey, const uint8_t *quote, size_t quote_len,
                       const uint8_t *event_log, size_t event_log_len, char **token, kbs_trustee_reply *reply,
                       kg_err *err);

/*
 * Step 4. GET the resource at path (repo/type/tag, checked) with the session cookie (cookie not
 * NULL) or else the token as Bearer. On success *jwe is the reply body (malloc'ed,
 * NUL-terminated, caller frees). Returns 1, or 0 with err (step transfer) and *reply filled
 * (reply->cls says whether a new handshake may help).
 */
int kbs_trustee_get_resource(kg_http *h, const char *kbs_url, const char *path, const char *cookie,
                             const char *token, char **jwe, size_t *jwe_len, kbs_trustee_reply *reply,
                             kg_err *err);

/*
 * Checks that a verified ITA v2 token (payload) binds this handshake: tdx.attester_runtime_data
 * carries our tee-pubkey and the challenge nonce, tdx.tdx_report_data equals report_data, and
 * H(JCS(attester_runtime_data)) (zero-padded) is that REPORTDATA too. Returns 1, or 0 with err
 * (step verify) naming the claim.
 */
int kbs_trustee_check_binding(const cJSON *payload, const kbs_trustee_challenge *ch, const cJSON *tee_pubkey,
                              const uint8_t report_data[64], kg_err *err);

/* Internal entry points of the reply parsers above (narrow, for tests/fuzz/fuzz_trustee.c); url only
 * names the request in messages. The auth reply (200): body nonce and extra-params, Set-Cookie
 * (resp->set_cookie) -> *ch, 1, or 0 with err (step nonce). The attest reply (200): *token
 * (malloc'ed, caller frees), 1, or 0 with err (step token). A non-200 reply: always 0, err (step
 * `step`) and *reply filled with the status and the Trustee error Kind. */
int kbs_trustee_parse_challenge(const kg_http_response *resp, const char *url, kbs_trustee_challenge *ch,
                                kg_err *err);
int kbs_trustee_parse_token(const kg_http_response *resp, const char *url, char **token, kg_err *err);
int kbs_trustee_status_error(kg_err *err, kg_step step, const char *method, const char *url,
                             const kg_http_response *resp, kbs_trustee_reply *reply);

#endif
