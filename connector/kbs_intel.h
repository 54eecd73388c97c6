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

/* The generations of intel/trustauthority-kbs (docs/protocols/intel-kbs.md §8): v1.3.0 (and
 * earlier) issues nonces and reads v1 tokens; the 2026 one issues no nonce, calls ITA without one
 * in background mode and also reads v2 tokens. */
typedef enum kbs_intel_gen { KBS_INTEL_GEN_UNKNOWN = 0, KBS_INTEL_GEN_V13, KBS_INTEL_GEN_2026 } kbs_intel_gen;

/* The 2026 generation's answer (HTTP 400) to the empty POST that asks v1.3.0 for a nonce. */
#define KBS_INTEL_NO_NONCE_ERROR "attestation_token or Attestation-Type header is required"

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

/* Background step 1 (v1.3.0): empty POST; returns the KBS's (ITA) nonce and its Attestation-Type.
 * A 2026 KBS answers 400 KBS_INTEL_NO_NONCE_ERROR: then 0 with err (step nonce) and, if
 * nonce_disabled is not NULL, *nonce_disabled = 1 (else it is set to 0). */
int kbs_intel_get_nonce(kg_http *h, const char *kbs_url, const char *key_id, ita_nonce *nonce,
                        char *attestation_type, size_t at_size, int *nonce_disabled, kg_err *err);

/* Background transfer: the Attestation-Type header and, with a nonce (v1.3.0, step 2),
 * {quote, nonce, user_data, event_log?}; without one (nonce NULL: the 2026 generation, one
 * request) {quote, runtime_data, event_log?}. On failure err->http_status is the KBS's status. */
int kbs_intel_transfer_background(kg_http *h, const char *kbs_url, const char *key_id,
                                  const char *attestation_type, const ita_evidence *ev,
                                  const ita_nonce *nonce, kbs_wrapped *out, kg_err *err);

/* GET {kbs}/kbs/v1/version: the service's "version" string into version (at most size - 1
 * printable bytes). 1, or 0 with err (step config: it decides a configuration question). */
int kbs_intel_get_version(kg_http *h, const char *kbs_url, char *version, size_t size, kg_err *err);

/* The generation a version string names: "v1.3.0" and anything up to v1.3.x is
 * KBS_INTEL_GEN_V13, a later vMAJOR.MINOR KBS_INTEL_GEN_2026, anything else
 * KBS_INTEL_GEN_UNKNOWN. The 2026 service's own string is not known from its sources (it is set
 * at build time), hence "later than v1.3" (docs/protocols/intel-kbs.md §8). */
kbs_intel_gen kbs_intel_gen_of_version(const char *version);

/* The reply parsers of the calls above (pure; fuzzed by tests/fuzz). */

/* {"wrapped_key": b64, "wrapped_swk": b64} and no other member. 1, or 0 with err (step transfer,
 * naming url); *out is cleared on failure, else caller clears. */
int kbs_intel_parse_wrapped(const char *url, const uint8_t *body, size_t len, kbs_wrapped *out, kg_err *err);

/* The background nonce {"val", "iat", "signature"} (base64, 1..1024 bytes each). 1/0; caller
 * clears *nonce on success. */
int kbs_intel_parse_nonce(const uint8_t *body, size_t len, ita_nonce *nonce);

/* The GET /version reply {"name", "version", ...}: its version string (printable ASCII, 1..63
 * bytes) into version. 1/0. */
int kbs_intel_parse_version(const uint8_t *body, size_t len, char *version, size_t size);

/* A non-200 reply: sets err to the status and the KBS's {"error": "..."} text (printable,
 * bounded). Always returns 0. */
int kbs_intel_status_error(kg_err *err, kg_step step, const char *url, const kg_http_response *resp);

#endif
