/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Compact JWS splitting and decoding (RFC 7515). This only takes a token apart; it does NOT
 * verify anything. Verification (algorithm allow-list, pinned root, claims) is ita_verify.
 */
#ifndef KG_JWS_H
#define KG_JWS_H

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

#endif
