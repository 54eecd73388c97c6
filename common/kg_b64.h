/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Base64 (RFC 4648) on top of OpenSSL's EVP_EncodeBlock/EVP_DecodeBlock.
 * Decoding is strict: standard alphabet, padding required, no whitespace, unused trailing bits
 * zero (canonical: one encoding per byte string), and the padding bytes that EVP_DecodeBlock
 * reports as zeros are removed. The url variants take the
 * base64url alphabet without padding (JOSE).
 */
#ifndef KG_B64_H
#define KG_B64_H

#include <stddef.h>

/* Returns a NUL-terminated malloc'ed string the caller frees, or NULL on OOM. */
char *kg_b64_encode(const unsigned char *in, size_t len);
char *kg_b64url_encode(const unsigned char *in, size_t len);

/* Returns 1 and a malloc'ed buffer (*out, *out_len; caller frees) or 0 on malformed input. */
int kg_b64_decode(const char *in, size_t in_len, unsigned char **out, size_t *out_len);
int kg_b64url_decode(const char *in, size_t in_len, unsigned char **out, size_t *out_len);

#endif
