/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ita_jwks: internal to ita_verify.c. Parses an ITA JWKS and selects the entry for a token;
 * also the file, certificate and CRL parsing ita_verify.c needs.
 *
 * The JWKS is untrusted input (it is fuzzed): every entry is validated before use and an
 * unusable entry is skipped, never dereferenced blindly. All objects are created in
 * kg_libctx().
 */
#ifndef KG_ITA_JWKS_H
#define KG_ITA_JWKS_H

#include <openssl/evp.h>
#include <openssl/x509.h>
#include <stddef.h>

#include "kg_err.h"

#define ITA_JWKS_MAX_LEN (1024 * 1024)
#define ITA_JWKS_MAX_X5C 10
#define ITA_CRL_MAX_LEN (1024 * 1024)

typedef struct ita_jwk {
    EVP_PKEY *pkey;       /* RSA public key from the JWK n/e; owned */
    STACK_OF(X509) * x5c; /* x5c in order (leaf first), 1..10 certificates; owned */
} ita_jwk;

/* 1 if json (len bytes, NUL-terminated) is a JSON object with a "keys" array; else 0 with err
 * (step verify). Used before a JWKS is cached, so that garbage is never cached. */
int ita_jwks_check(const char *json, size_t len, kg_err *err);

/*
 * Selects the entry whose kid AND alg equal the arguments. Returns 1 and fills *out (caller
 * clears with ita_jwk_clear), or 0 with err. *miss is set to 1 when no entry has that kid, or
 * none has that (kid, alg) pair: a key rotation may explain it, so the caller may refresh.
 */
int ita_jwks_select(const char *json, const char *kid, const char *alg, ita_jwk *out, int *miss, kg_err *err);
void ita_jwk_clear(ita_jwk *k);

/* DER to X509 in kg_libctx(); the whole buffer must be one certificate. NULL if malformed. */
X509 *ita_x509_from_der(const unsigned char *der, size_t len);

/* Reads a whole file of at most max bytes, NUL-terminated (*buf malloc'ed; caller frees).
 * Returns 1, or 0 with err (step config). */
int ita_read_file(const char *path, size_t max, char **buf, size_t *len, kg_err *err);

/* A CRL from DER or PEM bytes (at most 1 MiB), created in kg_libctx(). NULL if malformed. */
X509_CRL *ita_crl_from_bytes(const unsigned char *buf, size_t len);

/* Adds every PEM certificate of path to store (the pinned roots; at least one). 1, or 0 with err. */
int ita_load_anchors(X509_STORE *store, const char *path, kg_err *err);

#endif
