/* SPDX-License-Identifier: Apache-2.0 */
/*
 * keygate/ita.h: an Intel Trust Authority client and token verifier for relying parties and
 * attesters (part of libkeygate; pkg-config libkeygate).
 *
 * The five operations of Intel's connectors:
 *   keygate_ita_get_nonce     GET  {api}/appraisal/v2/nonce
 *   keygate_ita_get_token     POST {api}/appraisal/v1/attest (flat) or /v2/attest (composite),
 *                             evidence supplied by the caller (background-check relying party)
 *   keygate_ita_attest        nonce, evidence from the configured adapter, token, verification
 *   keygate_ita_get_token_signing_certificates   GET {base}/certs (the JWKS)
 *   keygate_ita_verify_token  our own JWS verification to a pinned root, CRLs, claims
 *
 * Every call returns 1 on success and 0 on failure; on failure *err holds one line naming the
 * step and cause. Every network call fills *meta (HTTP status, request-id, trace-id) when meta
 * is not NULL, on success and on failure. Nothing here prints; secrets are never logged.
 * A keygate_ita is not thread-safe: use one per thread.
 *
 * Defaults are ITA's US hosts. EU: api_url = https://api.eu.trustauthority.intel.com,
 * base_url = https://portal.eu.trustauthority.intel.com.
 */
#ifndef KEYGATE_ITA_H
#define KEYGATE_ITA_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "keygate/error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct keygate_ita_meta {
    long http_status;
    char request_id[129];
    char trace_id[129];
} keygate_ita_meta;

/* Retries: the shape of Intel's connectors' retry configuration. */
typedef struct keygate_ita_retry {
    long wait_min_ms; /* 0 = 200 */
    long wait_max_ms; /* 0 = 5000 */
    long max_retries; /* retries after the first attempt; 0 = 2 (3 attempts in all); -1 = none */
} keygate_ita_retry;

typedef struct keygate_ita_config {
    const char *api_url;           /* NULL = https://api.trustauthority.intel.com */
    const char *base_url;          /* NULL = https://portal.trustauthority.intel.com */
    const char *api_key_file;      /* the API key (mode 0600); needed by nonce/token/attest */
    const char *trust_anchor_file; /* PEM root pinned for token chains; needed by verify */
    const char *tls_ca_file;       /* NULL = system store */
    long timeout_ms;               /* connect and total, per request; 0 = 10000 */
    keygate_ita_retry retry;
    int crl_if_available; /* 0 (default): a CRL that cannot be fetched fails verification */
    long leeway_s;        /* exp/nbf leeway; 0 = 60 */
} keygate_ita_config;

/* The signed verifier nonce as decoded bytes. Release with keygate_ita_nonce_clear. */
typedef struct keygate_ita_nonce {
    uint8_t *val;
    size_t val_len;
    uint8_t *iat;
    size_t iat_len;
    uint8_t *signature;
    size_t signature_len;
} keygate_ita_nonce;

typedef struct keygate_ita_evidence {
    const uint8_t *quote;
    size_t quote_len;
    const uint8_t *runtime_data; /* Intel TDX: the user data bound into REPORTDATA */
    size_t runtime_data_len;
    const uint8_t *user_data; /* Azure */
    size_t user_data_len;
    const uint8_t *event_log;
    size_t event_log_len;
} keygate_ita_evidence;

typedef struct keygate_ita_token_args {
    int api_version;              /* 1 (default when 0) or 2 */
    const char (*policy_ids)[37]; /* UUIDs, at most 10 */
    int policy_id_count;
    const char *token_alg; /* "PS384" | "RS256" | NULL */
    int policy_must_match;
    const char *request_id; /* ^[a-zA-Z0-9_ /.-]{1,128}$ or NULL */
    int azure;              /* Azure TDX evidence: ITA's /azure routes */
} keygate_ita_token_args;

/* What verification must also check. Zero/NULL = not checked (the debug bit always is). */
typedef struct keygate_ita_expect {
    time_t at;                      /* 0 = now */
    const keygate_ita_nonce *nonce; /* must equal the token's verifier_nonce */
    const uint8_t *user_data;       /* must equal attester_held_data (and be bound in REPORTDATA) */
    size_t user_data_len;
    int allow_debug;
    const char *tcb_status_allow; /* comma list, e.g. "UpToDate" */
    const char *mrtd_allow;       /* comma list of 96-hex values */
    const char *rtmr_allow[4];
    const char (*required_policy_ids)[37];
    int required_policy_count;
} keygate_ita_expect;

/* Normalized claims of a v1 (flat) or v2 (nested "tdx") token. Release with
 * keygate_ita_claims_clear. */
typedef struct keygate_ita_claims {
    int layout; /* 1 or 2 */
    char ver[16];
    char iss[256];
    char jti[64];
    int has_iat, has_nbf, has_exp;
    long long iat, nbf, exp;
    char attester_type[32];
    char tcb_status[64];
    char tcb_date[40];
    char advisory_ids[32][32];
    int advisory_count;
    uint8_t *held_data;
    size_t held_data_len;
    int runtime_data_is_json;
    int has_tdx;
    uint8_t report_data[64];
    uint8_t mrtd[48], mrseam[48], mrsignerseam[48], mrconfigid[48], mrowner[48], mrownerconfig[48];
    uint8_t rtmr[4][48];
    uint8_t tee_tcb_svn[16], seam_attributes[8], td_attributes[8], xfam[8];
    long seamsvn;
    int is_debuggable; /* 1, 0, or -1 when the token does not say */
    int has_verifier_nonce;
    keygate_ita_nonce verifier_nonce;
    char policy_ids_matched[16][37];
    int matched_count;
    char policy_ids_unmatched[16][37];
    int unmatched_count;
} keygate_ita_claims;

typedef struct keygate_ita keygate_ita;

/* Creates a client. Reads the API key and trust anchor files named in cfg (no network).
 * Returns NULL with *err on failure. Free with keygate_ita_free. */
KEYGATE_API keygate_ita *keygate_ita_new(const keygate_ita_config *cfg, keygate_error *err);

/* Creates a client from a keygate.conf (its adapter is then used by keygate_ita_attest). */
KEYGATE_API keygate_ita *keygate_ita_new_from_conf(const char *keygate_conf_path, keygate_error *err);

KEYGATE_API void keygate_ita_free(keygate_ita *ita);

KEYGATE_API int keygate_ita_get_nonce(keygate_ita *ita, keygate_ita_nonce *nonce, keygate_ita_meta *meta,
                                      keygate_error *err);
KEYGATE_API void keygate_ita_nonce_clear(keygate_ita_nonce *nonce);

/* *token: malloc'ed compact JWS, caller frees (free()). nonce and args may be NULL. */
KEYGATE_API int keygate_ita_get_token(keygate_ita *ita, const keygate_ita_evidence *evidence,
                                      const keygate_ita_nonce *nonce, const keygate_ita_token_args *args,
                                      char **token, keygate_ita_meta *meta, keygate_error *err);

/* Nonce, evidence binding it and user_data from the configured adapter, token, verification
 * (nonce echo, binding of user_data, and the conf's local policy). *token: caller frees;
 * claims may be NULL, else filled (caller clears). Needs keygate_ita_new_from_conf. */
KEYGATE_API int keygate_ita_attest(keygate_ita *ita, const uint8_t *user_data, size_t user_data_len,
                                   char **token, keygate_ita_claims *claims, keygate_ita_meta *meta,
                                   keygate_error *err);

/* *jwks_json: malloc'ed JSON text of {base}/certs, caller frees. */
KEYGATE_API int keygate_ita_get_token_signing_certificates(keygate_ita *ita, char **jwks_json,
                                                           keygate_ita_meta *meta, keygate_error *err);

/* Verifies token and fills *claims (caller clears). expect may be NULL (signature, chain,
 * CRLs, time, iss/ver, attester_type, internal REPORTDATA consistency and the debug bit only).
 * attester_type (top level in v1, in "tdx" in v2) must always be "TDX". */
KEYGATE_API int keygate_ita_verify_token(keygate_ita *ita, const char *token,
                                         const keygate_ita_expect *expect, keygate_ita_claims *claims,
                                         keygate_error *err);
KEYGATE_API void keygate_ita_claims_clear(keygate_ita_claims *claims);

#ifdef __cplusplus
}
#endif
#endif
