/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The wrapping key of an attestation session and the Intel KBS unwrap (docs/protocols/intel-kbs.md §5):
 *   user_data   = LE32(e) ‖ BE(n) of a fresh RSA-3072 key (private half in memory only)
 *   wrapped_swk = RSA-OAEP(SHA-256, MGF1-SHA-256, empty label) of a 32-byte AES key
 *   wrapped_key = LE32 iv_len(12) ‖ LE32 tag_len(16) ‖ LE32 ct_len ‖ IV ‖ AES-256-GCM(ct ‖ tag)
 * The plaintext (the private key as the KBS's key manager keeps it: PKCS#8, PKCS#1 or SEC1 DER)
 * and the AES key live in OpenSSL's secure heap and are zeroized on every path. All crypto runs
 * in kg_libctx().
 */
#ifndef KG_WRAP_H
#define KG_WRAP_H

#include <openssl/types.h>
#include <stddef.h>
#include <stdint.h>

#include "kg_err.h"

#define KG_WRAP_RSA_BITS 3072

/* A fresh RSA-3072 wrapping key in kg_libctx(). Returns NULL with err (wrapping-key step). */
EVP_PKEY *kg_wrap_key_new(kg_err *err);

/* Refuses (0 with err, wrapping-key step) when a process-wide ENGINE would run keygate's crypto;
 * kg_wrap_key_new and kg_keygen_start check it first, kg_wrap_key_generate does not. */
int kg_wrap_engine_check(kg_err *err);

/* Asked between candidate primes of an RSA generation: fn(arg) != 0 stops it. */
typedef struct kg_wrap_stop {
    int (*fn)(void *arg);
    void *arg;
} kg_wrap_stop;

/* kind NULL or "rsa": an RSA-3072 key (the wrapping key; the Trustee "rsa" TEE key), "ec": an EC
 * P-256 TEE key (Trustee, docs/protocols/trustee-rcar.md §3: ECDH-ES+A256KW; RSA: RSA-OAEP-256),
 * in kg_libctx(), without the ENGINE check (the caller made it:
 * kg_wrap_engine_check). stop (may be NULL; borrowed) can end an RSA generation early. Returns
 * NULL with err (wrapping-key step; "stopped (cancelled)" when stop ended it). Thread-safe. */
EVP_PKEY *kg_wrap_key_generate(const char *kind, const kg_wrap_stop *stop, kg_err *err);

/* LE32(e) ‖ BE(n), n padded to the modulus size. *blob is malloc'ed, caller frees. */
int kg_wrap_user_data(const EVP_PKEY *wrapping_key, uint8_t **blob, size_t *len, kg_err *err);

/*
 * Unwraps an Intel KBS reply and parses the private key (kg_wrap_parse_private_key) into an
 * EVP_PKEY in kg_libctx(). reference (may be NULL; borrowed) is the public key the key reference
 * expects: only its EC curve is used, for a SEC1 key without curve parameters. Returns 1 with
 * *key (caller frees), or 0 with err (step unwrap) naming what failed; nothing is half-loaded.
 */
int kg_wrap_unwrap(const EVP_PKEY *wrapping_key, const uint8_t *wrapped_key, size_t wrapped_key_len,
                   const uint8_t *wrapped_swk, size_t wrapped_swk_len, const EVP_PKEY *reference,
                   EVP_PKEY **key, kg_err *err);

/*
 * Parses a private key as the Intel KBS's key managers hand it over (docs/protocols/intel-kbs.md
 * §5): PKCS#8 PrivateKeyInfo (Vault), PKCS#1 RSAPrivateKey or SEC1 ECPrivateKey (KMIP), strict
 * DER with nothing after it, into a supported key (RSA 2048..4096, EC P-256/P-384) in kg_libctx()
 * whose private half matches its public half (EVP_PKEY_pairwise_check). A SEC1 key without
 * [0] parameters takes the curve of reference (an EC public key; NULL or RSA: refused). Returns
 * 1 with *key (caller frees), else 0 with err (step unwrap).
 */
int kg_wrap_parse_private_key(const uint8_t *der, size_t len, const EVP_PKEY *reference, EVP_PKEY **key,
                              kg_err *err);

/* As kg_wrap_parse_private_key, PKCS#8 DER (PrivateKeyInfo) only (Trustee resources). */
int kg_wrap_parse_pkcs8(const uint8_t *der, size_t len, EVP_PKEY **key, kg_err *err);

/* A Trustee resource: PKCS#8 as PEM ("PRIVATE KEY", surrounding text allowed) or DER, into a
 * supported private key (as kg_wrap_parse_pkcs8). Returns 1/0 with err (step unwrap). */
int kg_wrap_parse_resource(const uint8_t *data, size_t len, EVP_PKEY **key, kg_err *err);

#endif
