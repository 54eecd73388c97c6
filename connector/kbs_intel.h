/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Intel Trust Authority KBS client (intel/trustauthority-kbs): the attested key transfer
 * POST {kbs}/kbs/v1/keys/{id}/transfer in its three request shapes, with exactly the headers
 * the real service demands (docs/protocols/intel-kbs.md §3). Unwrapping is not done here (kg_wrap.h).
 */
#ifndef KG_KBS_INTEL_H
#define KG_KBS_INTEL_H

#include <stddef.h>
#include <stdint.h>

#include "ita_client.h"
#include "kg_err.h"
#include "kg_http.h"

#define KBS_MAX_REPLY (64 * 1024)

/* The released, still wrapped key: decoded wrapped_key and wrapped_swk. Owned. */
typedef struct kbs_wrapped {
    uint8_t *wrapped_key;
    size_t wrapped_key_len;
    uint8_t *wrapped_swk;
    size_t wrapped_swk_len;
} kbs_wrapped;

void kbs_wrapped_clear(kbs_wrapped *w);

/* Passport: {"attestation_token": token}, no Attestation-Type header. Returns 1, or 0 with err
 * (step transfer) naming the URL, HTTP status, the KBS's error text and request/trace ids. */
int kbs_intel_transfer_passport(kg_http *h, const char *kbs_url, const char *key_id, const char *token,
                                kbs_wrapped *out, kg_err *err);

/* Background step 1: empty POST; returns the KBS's (ITA) nonce and its Attestation-Type. */
int kbs_intel_get_nonce(kg_http *h, const char *kbs_url, const char *key_id, ita_nonce *nonce,
                        char *attestation_type, size_t at_size, kg_err *err);

/* Background step 2: Attestation-Type header and {quote, nonce, user_data, event_log?}. */
int kbs_intel_transfer_background(kg_http *h, const char *kbs_url, const char *key_id,
                                  const char *attestation_type, const ita_evidence *ev,
                                  const ita_nonce *nonce, kbs_wrapped *out, kg_err *err);

/* The reply parsers of the calls above (pure; fuzzed by tests/fuzz). */

/* {"wrapped_key": b64, "wrapped_swk": b64} and no other member. 1, or 0 with err (step transfer,
 * naming url); *out is cleared on failure, else caller clears. */
int kbs_intel_parse_wrapped(const char *url, const uint8_t *body, size_t len, kbs_wrapped *out, kg_err *err);

/* The background nonce {"val", "iat", "signature"} (base64, 1..1024 bytes each). 1/0; caller
 * clears *nonce on success. */
int kbs_intel_parse_nonce(const uint8_t *body, size_t len, ita_nonce *nonce);

/* A non-200 reply: sets err to the status and the KBS's {"error": "..."} text (printable,
 * bounded). Always returns 0. */
int kbs_intel_status_error(kg_err *err, kg_step step, const char *url, const kg_http_response *resp);

#endif
