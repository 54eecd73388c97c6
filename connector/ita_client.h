/*
 * ITA client: nonce (GET /appraisal/v2/nonce) and attest (POST /appraisal/v1/attest flat, or
 * /appraisal/v2/attest composite). Facts: ../shared/specs/ita-api.md §2-§6.
 *
 * The API key is read from a file that group/others cannot read, kept in OpenSSL's secure
 * heap, sent only to the API host (never to /certs or CRL hosts) and never logged.
 * An ita_client owns one kg_http; it is not thread-safe.
 */
#ifndef KG_ITA_CLIENT_H
#define KG_ITA_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "kg_err.h"
#include "kg_http.h"

#define ITA_MAX_JSON_BODY (64 * 1024)

typedef struct ita_client_opts {
    const char *api_url;
    const char *base_url;
    const char *api_key_file;
    kg_http_opts http;
} ita_client_opts;

/* The signed verifier nonce: decoded bytes of val/iat/signature (val is 88 ASCII bytes). */
typedef struct ita_nonce {
    uint8_t *val;
    size_t val_len;
    uint8_t *iat;
    size_t iat_len;
    uint8_t *signature;
    size_t signature_len;
} ita_nonce;

typedef struct ita_evidence {
    const uint8_t *quote;
    size_t quote_len;
    const uint8_t *runtime_data; /* Intel TDX: the user data bound in REPORTDATA */
    size_t runtime_data_len;
    const uint8_t *user_data; /* Azure only */
    size_t user_data_len;
    const uint8_t *event_log;
    size_t event_log_len;
} ita_evidence;

typedef struct ita_attest_opts {
    int api_version; /* 1: flat v1 body and token; 2: composite v2 */
    const char (*policy_ids)[37];
    int policy_id_count;
    const char *token_alg; /* "PS384" | "RS256" | NULL (server default) */
    int policy_must_match;
    const char *request_id; /* NULL: none */
} ita_attest_opts;

typedef struct ita_client ita_client;

/* Returns a client or NULL with err (config step for key-file problems). Caller frees. */
ita_client *ita_client_new(const ita_client_opts *opts, kg_err *err);
void ita_client_free(ita_client *c);

/* Fetches a fresh nonce. Returns 1, or 0 with err (step nonce). Caller clears *nonce. */
int ita_get_nonce(ita_client *c, ita_nonce *nonce, kg_err *err);
void ita_nonce_clear(ita_nonce *nonce);

/* Posts evidence; nonce may be NULL. On success *token is a malloc'ed NUL-terminated compact
 * JWS (caller frees). Returns 1, or 0 with err (step token) naming URL and HTTP details. */
int ita_attest(ita_client *c, const ita_evidence *ev, const ita_nonce *nonce, const ita_attest_opts *opts,
               char **token, kg_err *err);

#endif
