/* SPDX-License-Identifier: Apache-2.0 */
/*
 * keygate OpenSSL 3 provider: shared context, the key object, reason codes.
 *
 * The design of docs/protocols/openssl-provider.md §1: the key stays in our keymgmt. A kg_key holds the
 * reference (key id + public key, always present) and, once released, the private EVP_PKEY
 * that lives in kg_libctx() (default provider only, never the application's context). Our
 * signature/asym-cipher/keyexch forward to it; private export is refused.
 */
#ifndef KG_PROVIDER_H
#define KG_PROVIDER_H

#include <openssl/core.h>
#include <openssl/core_dispatch.h>
#include <pthread.h>
#include <stdint.h>

#include "kg_config.h"
#include "kg_keyref.h"
#include "kg_keysource.h"

/* Provider-specific reason codes, reported through get_reason_strings. */
enum {
    KG_R_CONFIG = 1,         /* keygate.conf or an inline key in the provider section is invalid */
    KG_R_NOT_AVAILABLE = 2,  /* operation not offered */
    KG_R_RELEASE = 3,        /* the release pipeline failed (the message names the step) */
    KG_R_EXPORT_REFUSED = 4, /* private key export refused */
    KG_R_BAD_REFERENCE = 5,  /* malformed KEYGATE KEY REFERENCE */
    KG_R_OPERATION = 6       /* a forwarded operation failed */
};

#define KG_KEY_TYPE_RSA 1
#define KG_KEY_TYPE_EC 2

typedef struct kg_provctx {
    const OSSL_CORE_HANDLE *handle;
    OSSL_LIB_CTX *corelibctx; /* for BIO_new_from_core_bio only */
    char config_path[512];
    kg_config cfg;
    int release_lazy;       /* release = lazy */
    kg_keysource *keys_src; /* the per-process cache of released keys, their releases and leases
                               (release/kg_keysource.h, as in the PKCS#11 module) */
} kg_provctx;

#define KG_KEY_MAGIC 0x6b67796bU /* "kgyk" */

typedef struct kg_key {
    uint32_t magic;
    kg_provctx *provctx;
    int type;         /* KG_KEY_TYPE_* */
    int has_ref;      /* 0 for a public key imported from elsewhere (no key id) */
    kg_keyref ref;    /* key id, KBS, and ref.pubkey: the public key (kg_libctx) */
    kg_keyslot *slot; /* its slot in provctx->keys_src, bound at first private use; atomic */
} kg_key;

/* The object reference the decoder hands to keymgmt load: versioned, with a magic number. */
typedef struct kg_key_reference {
    uint32_t magic;
    uint32_t version;
    kg_key *key;
} kg_key_reference;

/* Error to the core, with our reason code and file:line. */
void kg_prov_raise(const kg_provctx *ctx, const char *file, int line, const char *func, int reason,
                   const char *fmt, ...) __attribute__((format(printf, 6, 7)));
#define KG_PROV_RAISE(ctx, reason, ...)                                                                      \
    kg_prov_raise((ctx), __FILE__, __LINE__, __func__, (reason), __VA_ARGS__)

/* Key objects (prov_key.c). */
kg_key *kg_key_new(kg_provctx *ctx, int type);
void kg_key_free(kg_key *key);
int kg_key_type_of(const EVP_PKEY *pkey); /* KG_KEY_TYPE_* or 0 */
/* Releases (or finds in the per-process cache) the private key for a private operation, which
 * may start the lease's background refresh. Returns a NEW reference to the private EVP_PKEY
 * (the caller frees it: a revocation may wipe the key while an operation still runs) or NULL
 * with an error raised naming the step, or the revocation. */
EVP_PKEY *kg_key_private(kg_key *key);
/* The same for loading (decoder, store): releases if needed but starts no refresh thread (an
 * nginx master loads keys before it forks). */
EVP_PKEY *kg_key_private_load(kg_key *key);

/* Operations that forward to an inner EVP_PKEY_CTX of kg_libctx() (asym_cipher.c, keyexch.c).
 * set/get: an empty list is always accepted; anything else needs the inner context (1/0).
 * list: the inner context's settable (settable != 0) or gettable list; with no context (libcrypto
 * may ask without one) that of the default provider's `alg` for `operation` (OSSL_OP_ASYM_CIPHER
 * or OSSL_OP_KEYEXCH: static data of a provider loaded for the life of the process); failing
 * both, fallback. */
int kg_inner_set_params(EVP_PKEY_CTX *inner, const OSSL_PARAM params[]);
int kg_inner_get_params(EVP_PKEY_CTX *inner, OSSL_PARAM params[]);
const OSSL_PARAM *kg_inner_param_list(const EVP_PKEY_CTX *inner, int operation, const char *alg, int settable,
                                      const OSSL_PARAM *fallback);

/* Frees what signature.c fetched from kg_libctx() (before kg_libctx_cleanup). */
void kg_signature_cleanup(void);

/* The dispatch tables of each operation. */
extern const OSSL_DISPATCH kg_rsa_keymgmt_functions[];
extern const OSSL_DISPATCH kg_ec_keymgmt_functions[];
extern const OSSL_DISPATCH kg_rsa_signature_functions[];
extern const OSSL_DISPATCH kg_ecdsa_signature_functions[];
extern const OSSL_DISPATCH kg_rsa_asym_cipher_functions[];
extern const OSSL_DISPATCH kg_ecdh_keyexch_functions[];
extern const OSSL_DISPATCH kg_pem_decoder_functions[];
extern const OSSL_DISPATCH kg_rsa_ref_decoder_functions[];
extern const OSSL_DISPATCH kg_ec_ref_decoder_functions[];
extern const OSSL_DISPATCH kg_rsa_spki_der_encoder_functions[];
extern const OSSL_DISPATCH kg_rsa_spki_pem_encoder_functions[];
extern const OSSL_DISPATCH kg_ec_spki_der_encoder_functions[];
extern const OSSL_DISPATCH kg_ec_spki_pem_encoder_functions[];
extern const OSSL_DISPATCH kg_rsa_text_encoder_functions[];
extern const OSSL_DISPATCH kg_ec_text_encoder_functions[];
extern const OSSL_DISPATCH kg_store_functions[];

#define KG_REF_STRUCTURE "keygate-reference"
/* Names of our signature implementations: unique, so a fetch for a keygate key finds ours first. */
#define KG_RSA_SIG_NAME "KEYGATE-RSA"
#define KG_ECDSA_SIG_NAME "KEYGATE-ECDSA"

#endif
