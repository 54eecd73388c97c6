/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ITA client: nonce (GET /appraisal/v2/nonce) and attest (POST /appraisal/v1/attest flat, or
 * /appraisal/v2/attest composite). Facts: docs/protocols/ita-api.md §2-§5.
 *
 * The API key is read from a file that group/others cannot read, kept in OpenSSL's secure
 * heap, sent only to the API host (never to /certs or CRL hosts) and never logged.
 * An ita_client owns one kg_http; it is not thread-safe.
 */
#ifndef KG_ITA_CLIENT_H
#define KG_ITA_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "keygate/ita.h"
#include "kg_err.h"
#include "kg_http.h"

#define ITA_MAX_JSON_BODY (64 * 1024)
#define ITA_MAX_USER_DATA (1024 * 1024) /* ITA runtime_data limit */
#define ITA_MAX_ATTEST_POLICY_IDS 10

typedef struct ita_client_opts {
    const char *api_url;
    const char *base_url;
    const char *api_key_file;
    kg_http_opts http;
    const char *api_key; /* optional, borrowed: the key already read (ita_read_api_key), so that
                            a forked worker needs no access to a root-only file; else the file */
} ita_client_opts;

#define ITA_MAX_API_KEY 1024

/* Reads an API key file (regular, not readable by group/others) into the secure heap. *key is
 * freed with OPENSSL_secure_clear_free(*key, ITA_MAX_API_KEY + 1). Returns 1 or 0 with err. */
int ita_read_api_key(const char *path, char **key, kg_err *err);

/* The signed verifier nonce: decoded bytes of val/iat/signature (val is 88 ASCII bytes). */
typedef keygate_ita_nonce ita_nonce;
typedef keygate_ita_evidence ita_evidence;

typedef struct ita_attest_opts {
    int api_version; /* 1: flat v1 body and token; 2: composite v2 */
    const char (*policy_ids)[37];
    int policy_id_count;
    const char *token_alg; /* "PS384" | "RS256" | NULL (server default) */
    int policy_must_match;
    const char *request_id; /* NULL: none */
    int azure;              /* Azure TDX evidence: /appraisal/v1/attest/azure/tdxvm or /v2/attest/azure */
} ita_attest_opts;

typedef struct ita_client ita_client;

/* HTTP details of the last completed exchange (also filled when the call failed on status). */
typedef struct ita_call_meta {
    long status;
    char request_id[129];
    char trace_id[129];
} ita_call_meta;

const ita_call_meta *ita_client_last_meta(const ita_client *c);

/* Returns a client or NULL with err (config step for key-file problems). Caller frees. */
ita_client *ita_client_new(const ita_client_opts *opts, kg_err *err);
void ita_client_free(ita_client *c);

/* Fetches a fresh nonce. Returns 1, or 0 with err (step nonce). Caller clears *nonce. */
int ita_get_nonce(ita_client *c, ita_nonce *nonce, kg_err *err);
void ita_nonce_clear(ita_nonce *nonce);

/* The reply parsers of ita_get_nonce and ita_attest (pure; fuzzed by tests/fuzz). On failure
 * they return 0 and set *why to a static description; nothing is left allocated.
 * Nonce: {"val", "iat", "signature"} base64, each 1..1024 bytes (caller clears *nonce).
 * Token: {"token": "<non-empty string>"}; *token is malloc'ed (caller frees). */
int ita_parse_nonce_reply(const uint8_t *body, size_t len, ita_nonce *nonce, const char **why);
int ita_parse_token_reply(const uint8_t *body, size_t len, char **token, const char **why);

/* Validates attest inputs in the library (UUID policy ids, at most 10; PS384|RS256; request-id
 * ^[a-zA-Z0-9_ /.-]{1,128}$; user data at most 1 MiB). Returns 1, or 0 with err (step token). */
int ita_attest_opts_check(const ita_evidence *ev, const ita_attest_opts *opts, kg_err *err);

/* Posts evidence; nonce may be NULL. On success *token is a malloc'ed NUL-terminated compact
 * JWS (caller frees). Returns 1, or 0 with err (step token) naming URL and HTTP details. */
int ita_attest(ita_client *c, const ita_evidence *ev, const ita_nonce *nonce, const ita_attest_opts *opts,
               char **token, kg_err *err);

#endif
