/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Key references: the small file that stands where a private key file would (docs/design.md §3).
 *
 *   -----BEGIN KEYGATE KEY REFERENCE-----
 *   base64 of DER:
 *   KeygateKeyReference ::= SEQUENCE {
 *       version      INTEGER (1),
 *       keyId        UTF8String,            -- Intel KBS: key UUID; Trustee: repo/type/tag
 *       publicKey    SubjectPublicKeyInfo,  -- the key the KBS must hand out
 *       kbsUrl       [0] IMPLICIT UTF8String OPTIONAL,
 *       kbsType      [1] IMPLICIT UTF8String OPTIONAL,  -- "intel" | "trustee"
 *       description  [2] IMPLICIT UTF8String OPTIONAL }
 *   -----END KEYGATE KEY REFERENCE-----
 *
 * The parser is a pure, bounded function (fuzzed): it either returns a fully checked
 * reference or an error naming the field. Public operations need only the reference.
 */
#ifndef KG_KEYREF_H
#define KG_KEYREF_H

#include <openssl/types.h>
#include <stddef.h>
#include <stdint.h>

#include "kg_err.h"

#define KG_KEYREF_PEM_LABEL "KEYGATE KEY REFERENCE"
#define KG_KEYREF_VERSION 1
#define KG_KEYREF_MAX_DER 8192

typedef struct kg_keyref {
    char key_id[256];
    char kbs_url[512]; /* "" = use kbs_url of keygate.conf */
    char kbs_type[16]; /* "" = use kbs_type of keygate.conf */
    char description[256];
    EVP_PKEY *pubkey;  /* the expected public key, in kg_libctx(); owned */
    uint8_t *spki_der; /* its SubjectPublicKeyInfo DER; owned */
    size_t spki_der_len;
} kg_keyref;

void kg_keyref_clear(kg_keyref *ref);

/* Parses the DER body. Returns 1 with *ref filled (caller clears), or 0 with err (config). */
int kg_keyref_from_der(const uint8_t *der, size_t len, kg_keyref *ref, kg_err *err);

/* Parses a PEM text holding a KEYGATE KEY REFERENCE block (other blocks, such as a certificate
 * or DH parameters in the same file, are skipped). Returns 1/0 like kg_keyref_from_der. */
int kg_keyref_from_pem(const char *pem, size_t len, kg_keyref *ref, kg_err *err);

/* Reads a reference file. Returns 1/0 (err names the file). */
int kg_keyref_load(const char *path, kg_keyref *ref, kg_err *err);

/* Builds the DER body (malloc'ed, caller frees) / the PEM text (malloc'ed, NUL-terminated). */
int kg_keyref_to_der(const kg_keyref *ref, uint8_t **der, size_t *len, kg_err *err);
int kg_keyref_to_pem(const kg_keyref *ref, char **pem, kg_err *err);

/* Sets ref->pubkey and spki_der from a public key (any key: only its public part is kept). */
int kg_keyref_set_pubkey(kg_keyref *ref, const EVP_PKEY *key, kg_err *err);

/* Checks a key id for a KBS type: intel = UUID (version 4 as the Intel KBS requires),
 * trustee = repo/type/tag of [A-Za-z0-9._-]. Returns 1/0. */
int kg_keyref_key_id_ok(const char *key_id, const char *kbs_type);

#endif
