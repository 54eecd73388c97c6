/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Compact JWS splitting and decoding (RFC 7515), and the header rules every verifier shares.
 * This does NOT verify anything: algorithm allow-list, key and claims are ita_verify (ITA) and
 * kg_ear (Trustee's EAR).
 */
#ifndef KG_JWS_H
#define KG_JWS_H

#include <cjson/cJSON.h>
#include <stddef.h>

#include "kg_err.h"

#define KG_JWS_MAX_LEN (64 * 1024)

typedef struct kg_jws {
    char *header_json;        /* decoded protected header, NUL-terminated; owned */
    char *payload_json;       /* decoded payload, NUL-terminated; owned */
    unsigned char *signature; /* owned */
    size_t signature_len;
    size_t signing_input_len; /* bytes of "<b64 header>.<b64 payload>" at the token's start */
} kg_jws;

/* Splits and base64url-decodes the three parts. Returns 1, or 0 with err (step verify). */
int kg_jws_split(const char *compact, kg_jws *out, kg_err *err);
void kg_jws_clear(kg_jws *jws);

#define KG_JWS_HEADER_MAX_MEMBERS 32

/* The rules of a verified token's header after its alg check: an object of at most
 * KG_JWS_HEADER_MAX_MEMBERS members, none twice (another parser could read the other one), no
 * "crit" (no extension is understood), typ absent or "JWT". what names the token in messages
 * ("token", "EAR token"). Returns 1, or 0 with err (step verify). */
int kg_jws_header_rules(const cJSON *header, const char *what, kg_err *err);

#endif
