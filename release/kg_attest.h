/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Pipeline steps 2-4 (docs/design.md §1): nonce → evidence → token.
 * Verification (step 5) is not part of this file.
 */
#ifndef KG_ATTEST_H
#define KG_ATTEST_H

#include <stddef.h>
#include <stdint.h>

#include "ita_claims.h"
#include "ita_client.h"
#include "ita_verify.h"
#include "kg_config.h"
#include "kg_err.h"
#include "kg_evidence.h"

typedef struct kg_attestation {
    ita_nonce nonce;
    kg_evidence evidence;
    char *token;                /* compact JWS as ITA returned it; owned */
    char token_request_id[129]; /* request-id / trace-id of the attest reply */
    char token_trace_id[129];
    int verified;      /* 1 when step 5 ran and passed */
    ita_claims claims; /* filled when verified */
    cJSON *payload;    /* the verified payload when verified; owned */
    double ms_nonce, ms_evidence, ms_token, ms_verify;
    double at_nonce, at_evidence, at_token, at_verify; /* kg_mono_ms() when each step started */
} kg_attestation;

void kg_attestation_clear(kg_attestation *a);

/* Step 3: asks the configured adapter for evidence binding nonce (may be NULL) and user_data.
 * Checks locally that the quote's REPORTDATA equals what was asked for. Returns 1 or 0. */
int kg_collect_evidence(const kg_config *cfg, const ita_nonce *nonce, const uint8_t *user_data,
                        size_t user_data_len, kg_evidence *ev, kg_err *err);

/* Steps 2-4 against ITA and, when verify is set, step 5 (kg_verify_token with our nonce and user
 * data). Returns 1 with *out filled, or 0 with err; *out keeps what the steps that ran produced
 * (timings, request ids). The caller always clears *out. */
int kg_attest(const kg_config *cfg, const uint8_t *user_data, size_t user_data_len, int verify,
              kg_attestation *out, kg_err *err);

/* The user data, asked for when step 3 needs it, i.e. after the nonce: the release generates the
 * wrapping key meanwhile. get returns 1 with *user_data (borrowed until kg_attest_with returns),
 * or 0 with err (its step, e.g. wrapping-key). */
typedef struct kg_user_data_source {
    int (*get)(void *arg, const uint8_t **user_data, size_t *user_data_len, kg_err *err);
    void *arg;
} kg_user_data_source;

/* kg_attest (verified) with the user data from src, verification by a long-lived verifier
 * (JWKS/CRL caches) and an API key read earlier (api_key NULL: read ita_api_key_file now);
 * verifier may be NULL. A failing src fails with its own error, after the nonce. */
int kg_attest_with(const kg_config *cfg, const kg_user_data_source *src, ita_verifier *verifier,
                   const char *api_key, kg_attestation *out, kg_err *err);

/* kg_attest with an API key read earlier (e.g. from stdin by the CLI); api_key NULL: read
 * ita_api_key_file. */
int kg_attest_key(const kg_config *cfg, const uint8_t *user_data, size_t user_data_len, int verify,
                  const char *api_key, kg_attestation *out, kg_err *err);

/* Which service a kg_http talks to: it decides the TLS trust (ita_tls_ca_file or kbs_tls_ca_file,
 * else tls_ca_file, else the system store). */
typedef enum kg_service { KG_SVC_ITA, KG_SVC_KBS } kg_service;

/* kg_http options from the configuration, for service svc. */
void kg_config_http_opts(const kg_config *cfg, kg_service svc, kg_http_opts *opts);

/* The CA file service svc trusts, or "" for the system store. */
const char *kg_config_ca_file(const kg_config *cfg, kg_service svc);

#endif
