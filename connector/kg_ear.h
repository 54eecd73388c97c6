/* SPDX-License-Identifier: Apache-2.0 */
/*
 * EAR attestation results (draft-ietf-rats-ear) as Trustee's built-in attestation service issues
 * them (trustee_token = ear; docs/protocols/trustee-rcar.md §8):
 *
 *   header   {"typ":"JWT","alg":"ES256","jwk":{"kty":"EC","crv":"P-256","alg":"ES256","x","y"
 *            [,"x5c"]}}
 *   payload  {"eat_profile","iat","ear.verifier-id":{"build","developer"},"exp"[,"iss"],
 *            "submods":{"cpu0":{"ear.status","ear.trustworthiness-vector","ear.appraisal-policy-id",
 *            "ear.veraison.annotated-evidence":{"report_data","runtime_data_claims":{"nonce",
 *            "tee-pubkey","additional-evidence"?},"tdx":{"quote":{"header","body"},...},...}}}}
 *
 * Trust rests on one pinned key (trustee_as_cert): the algorithm follows from its type (EC P-256:
 * ES256, P-384: ES384) and nothing in the token chooses a key. A header jwk is accepted only when
 * it is the pinned key itself (Trustee always sends it); jku, x5u, x5c and a jwk of another key
 * are refused. Everything runs in kg_libctx().
 */
#ifndef KG_EAR_H
#define KG_EAR_H

#include <cjson/cJSON.h>
#include <openssl/types.h>
#include <stdint.h>
#include <time.h>

#include "kg_err.h"

/* Appraisal tiers of ear.status, best first (AR4SI). */
typedef enum kg_ear_status {
    KG_EAR_AFFIRMING = 1,
    KG_EAR_WARNING = 2,
    KG_EAR_CONTRAINDICATED = 3,
    KG_EAR_NONE = 4 /* "no claim being made": never good enough */
} kg_ear_status;

/* The tier of an ear.status string, or 0 when it is none of the four. */
kg_ear_status kg_ear_status_of(const char *name);

/* Reads the pinned AS key from path: a PEM certificate (its public key; dates and issuer are not
 * judged, it is a pin) or a PEM SubjectPublicKeyInfo. EC P-256 or P-384 only. Returns the key
 * (caller frees) or NULL with err (step config) naming `what` (the config key) and the cause. */
EVP_PKEY *kg_ear_key_read(const char *path, const char *what, kg_err *err);

/* "ES256" for a P-256 key, "ES384" for P-384, NULL otherwise. */
const char *kg_ear_alg_of(const EVP_PKEY *key);

/*
 * Verifies the compact JWS token with key: the header alg must be the key's (anything else, HS256
 * and "none" included, is refused before any crypto), no crit, no duplicate members, typ absent or
 * "JWT", no jku/x5u/x5c, a jwk only if it is key; then the signature (JWS R‖S, converted for
 * OpenSSL). On success *payload is the parsed claims object (caller frees with cJSON_Delete);
 * nothing in it is checked yet. Returns 1, or 0 with err (step verify).
 */
int kg_ear_verify_signature(EVP_PKEY *key, const char *token, cJSON **payload, kg_err *err);

typedef struct kg_ear_expect {
    time_t now;               /* 0 = time(NULL) */
    long leeway_s;            /* token_leeway_s */
    kg_ear_status max_status; /* the worst ear.status accepted in every submod */
} kg_ear_expect;

/*
 * The claims of a verified EAR: eat_profile (Trustee's or Veraison's), iat and exp (both required;
 * exp + leeway not passed, iat not beyond now + leeway), ear.verifier-id, and submods: at least one,
 * each with an ear.status no worse than max_status. *exp receives exp. Returns 1, or 0 with err
 * (step verify) naming the claim.
 */
int kg_ear_check_claims(const cJSON *payload, const kg_ear_expect *x, long long *exp, kg_err *err);

/*
 * The binding of a verified EAR to one RCAR handshake, in submods.cpu0's annotated evidence
 * (where Trustee's KBS reads the TEE key): runtime_data_claims.tee-pubkey equals tee_pubkey,
 * runtime_data_claims.nonce equals nonce, and report_data and tdx.quote.body.report_data are
 * the REPORTDATA of our quote. Returns 1, or 0 with err (step verify) naming the claim.
 */
int kg_ear_check_binding(const cJSON *payload, const char *nonce, const cJSON *tee_pubkey,
                         const uint8_t report_data[64], kg_err *err);

#endif
