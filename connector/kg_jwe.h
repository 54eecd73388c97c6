/* SPDX-License-Identifier: Apache-2.0 */
/*
 * JWE (RFC 7516) decryption for the Trustee KBS resources, and the JWK export of the TEE key.
 * Everything runs on OpenSSL EVP in kg_libctx(); no JOSE library.
 *
 * Accepted: the flattened JSON serialization {"protected","encrypted_key","iv","ciphertext",
 * "tag"[,"aad"]} with every header member in "protected" (an unprotected "header" or
 * "unprotected" and the general "recipients" form are refused, so alg/enc are always covered
 * by the GCM tag), base64url without padding.
 *   alg  ECDH-ES+A256KW  Z = ECDH(our EC key, epk) x-coordinate; KEK = Concat KDF (JWA §4.6.2,
 *                        SHA-256, OpenSSL "SSKDF") over AlgorithmID "ECDH-ES+A256KW",
 *                        PartyUInfo apu, PartyVInfo apv, SuppPubInfo 256; CEK = AES-256 key
 *                        unwrap (RFC 3394, "AES-256-WRAP") of the 40-byte encrypted_key
 *        RSA-OAEP-256    RSA-OAEP, SHA-256, MGF1-SHA-256, empty label -> 32-byte CEK
 *   enc  A256GCM         12-byte IV, 16-byte tag, AAD = ASCII of "protected" exactly as received
 *                        (plus "." and the "aad" member when present, RFC 7516 §5.2 step 14)
 * alg must fit the key (EC key: ECDH-ES+A256KW with an epk on the key's curve; RSA key:
 * RSA-OAEP-256); "crit" and "zip" are refused; a "kid", when present, must be the RFC 7638
 * thumbprint of our public key. Header member names must be unique.
 * The plaintext and every key (Z, KEK, CEK) live in the secure heap and are zeroized.
 */
#ifndef KG_JWE_H
#define KG_JWE_H

#include <cjson/cJSON.h>
#include <openssl/types.h>
#include <stddef.h>
#include <stdint.h>

#include "kg_err.h"

#define KG_JWE_MAX_LEN (256 * 1024)      /* the whole JWE JSON text */
#define KG_JWE_MAX_PLAINTEXT (64 * 1024) /* a resource: a private key file */

/*
 * Decrypts a flattened JSON JWE (json_len bytes, need not be NUL-terminated) with key, the
 * TEE private key. Returns 1 with *plain (OPENSSL_secure_malloc'ed, plain_len + 1 bytes with a
 * NUL after the data; caller frees with OPENSSL_secure_clear_free(*plain, *plain_len + 1)),
 * or 0 with err (step `step`) naming the member or check that failed.
 */
int kg_jwe_decrypt(const char *json, size_t json_len, const EVP_PKEY *key, kg_step step, uint8_t **plain,
                   size_t *plain_len, kg_err *err);

/*
 * The public JWK of a TEE key with exactly the members Trustee's TeePubKey keeps
 * (docs/protocols/trustee-rcar.md §3): EC P-256/P-521 {"kty","crv","alg":"ECDH-ES+A256KW","x","y"}
 * (coordinates padded to the field size), RSA {"kty","alg":"RSA-OAEP-256","n","e"}.
 * Returns a new cJSON object (caller deletes) or NULL with err (step `step`).
 */
cJSON *kg_jwe_public_jwk(const EVP_PKEY *key, kg_step step, kg_err *err);

/* RFC 7638 JWK thumbprint (SHA-256, base64url) of key's public JWK into out (>= 44 bytes). */
int kg_jwe_thumbprint(const EVP_PKEY *key, char *out, size_t size, kg_err *err);

#endif
