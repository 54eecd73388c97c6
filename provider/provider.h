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

#include "kg_agent_client.h"
#include "kg_config.h"
#include "kg_err.h"
#include "kg_keyref.h"
#include "kg_keysource.h"

/* Provider reason codes, reported through get_reason_strings (strings in provider.c, the list in
 * docs/man/keygate-provider.7.md). A pipeline step's code is its kg_step value, which is also the
 * keygate command's exit code; 1 and 3 (keygate 0.1's "config" and "release") are not reused. */
enum {
    KG_R_NOT_AVAILABLE = 2,  /* operation not offered */
    KG_R_EXPORT_REFUSED = 4, /* private key export refused */
    KG_R_BAD_REFERENCE = 5,  /* malformed KEYGATE KEY REFERENCE or keygate: URI */
    KG_R_OPERATION = 6,      /* a forwarded operation failed, or its key is not ours */
    KG_R_REVOKED = 7,        /* the key's lease was revoked */
    KG_R_CONFIG = KG_STEP_CONFIG,
    KG_R_WRAPKEY = KG_STEP_WRAPKEY,
    KG_R_NONCE = KG_STEP_NONCE,
    KG_R_EVIDENCE = KG_STEP_EVIDENCE,
    KG_R_TOKEN = KG_STEP_TOKEN,
    KG_R_VERIFY = KG_STEP_VERIFY,
    KG_R_TRANSFER = KG_STEP_TRANSFER,
    KG_R_UNWRAP = KG_STEP_UNWRAP,
    KG_R_HANDOVER = KG_STEP_HANDOVER,
    KG_R_INTERNAL = KG_STEP_INTERNAL,
    KG_R_MATCH = KG_STEP_MATCH
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
                               (release/kg_keysource.h, as in the PKCS#11 module); NULL with
                               backend = agent */
    kg_agent_client *agent; /* backend = agent: the keygate agent's connections, which every
                               private operation uses instead of keys_src; NULL in local mode */
} kg_provctx;

#define KG_KEY_MAGIC 0x6b67796bU /* "kgyk" */

typedef struct kg_key {
    uint32_t magic;
    kg_provctx *provctx;
    int type;         /* KG_KEY_TYPE_* */
    int has_ref;      /* 0 for a public key imported from elsewhere (no key id) */
    kg_keyref ref;    /* key id, KBS, and ref.pubkey: the public key (kg_libctx) */
    kg_keyslot *slot; /* its slot in provctx->keys_src, bound at first private use; atomic */
    uint8_t *ref_der; /* backend = agent: the reference's DER (the agent's KEY_REF), built at first
                         use; atomic, owned */
    size_t ref_der_len;
} kg_key;

/* The object reference the decoder hands to keymgmt load: versioned, with a magic number. */
typedef struct kg_key_reference {
    uint32_t magic;
    uint32_t version;
    kg_key *key;
} kg_key_reference;

/* Raises an error to the core (our reason code, file:line, the formatted message as its data) and
 * logs the message (KG_LOG at error level; debug level for KG_R_EXPORT_REFUSED and
 * KG_R_NOT_AVAILABLE, which libcrypto meets while negotiating and falls back from). Formats once.
 * ctx == NULL (keymgmt load has none): raised through the first live provider instance. */
void kg_prov_error(const kg_provctx *ctx, const char *file, int line, const char *func, int reason,
                   const char *fmt, ...) __attribute__((format(printf, 6, 7)));
#define KG_PROV_ERROR(ctx, reason, ...)                                                                      \
    kg_prov_error((ctx), __FILE__, __LINE__, __func__, (reason), __VA_ARGS__)

/* A failed step as the provider reports it: writes "keygate: key KEY_ID: <err->msg>" to buf, with
 * the HTTP status, request-id and trace-id appended when the message does not carry them
 * already, and returns the reason code of err->step (KG_R_INTERNAL for an unknown one). key_id
 * may be NULL. */
int kg_prov_step_message(const char *key_id, const kg_err *err, char *buf, size_t len);
/* The same, raised and logged as KG_PROV_ERROR. */
void kg_prov_step_error(const kg_provctx *ctx, const char *file, int line, const char *func,
                        const char *key_id, const kg_err *err);
#define KG_PROV_STEP_ERROR(ctx, key_id, err)                                                                 \
    kg_prov_step_error((ctx), __FILE__, __LINE__, __func__, (key_id), (err))

/* Raises to the core only, without logging: for an error already logged (decoder.c re-raises a
 * release failure that libcrypto dropped). */
void kg_prov_raise(const kg_provctx *ctx, const char *file, int line, const char *func, int reason,
                   const char *fmt, ...) __attribute__((format(printf, 6, 7)));

/* Key objects (prov_key.c). */
kg_key *kg_key_new(kg_provctx *ctx, int type);
void kg_key_free(kg_key *key);
int kg_key_type_of(const EVP_PKEY *pkey); /* KG_KEY_TYPE_* or 0 */
/* keydata as our key object when it is one (its magic) of type (KG_KEY_TYPE_*, 0 = either);
 * NULL otherwise. Nothing raised: the caller says what it wanted. */
kg_key *kg_key_cast(void *keydata, int type);
/* The key object an object reference of ours (decoder, store) carries, or NULL when objref is
 * not one (size, magic, version, the key's magic). Borrowed; the reference still owns it. */
kg_key *kg_key_reference_get(const void *objref, size_t objref_sz);
/* Releases (or finds in the per-process cache) the private key for a private operation, which
 * may start the lease's background refresh. Returns a NEW reference to the private EVP_PKEY
 * (the caller frees it: a revocation may wipe the key while an operation still runs) or NULL
 * with an error raised naming the step, or the revocation. */
EVP_PKEY *kg_key_private(kg_key *key);
/* The same for loading (decoder, store): releases if needed but starts no refresh thread (an
 * nginx master loads keys before it forks). */
EVP_PKEY *kg_key_private_load(kg_key *key);
/* kg_key_private, and *prep = a new reference to the key's prepared object of tag (signature.c's
 * initialised contexts, kept in the key's lease: kg_lease_prep_*), or NULL when none is
 * published for this key yet. The caller frees both. */
EVP_PKEY *kg_key_private_prep(kg_key *key, const char *tag, kg_lease_prep **prep);
/* Publishes prep for priv (a key kg_key_private* returned) in the key's lease: 1 when published,
 * 0 when priv is no longer the lease's key (refreshed or wiped meanwhile) or the tag is taken. */
int kg_key_prep_publish(kg_key *key, const EVP_PKEY *priv, kg_lease_prep *prep);

/* backend = agent (prov_key.c). kg_key_agent_check asks the agent for the key's public key and
 * checks it is the reference's: what a load does instead of a release (decoder, release = eager),
 * so `nginx -t` fails when the agent is down or lacks the key. kg_key_agent_call sends req (its
 * KEY_REF set here) and copies the result to out (cap bytes). Both return 1/0 and raise the
 * failure (kept for kg_key_failure_reraise like a release failure): the agent's status and
 * message, or why it could not be reached, naming the socket. A revocation raises KG_R_REVOKED. */
int kg_key_agent_check(kg_key *key);
int kg_key_agent_call(kg_key *key, kg_agent_req *req, unsigned char *out, size_t cap, size_t *out_len);
/* The agent's digest enum for an OpenSSL digest (SHA-1 and SHA-2 but SHA-512/224, /256), or 0. */
kg_agent_digest kg_agent_digest_of(const EVP_MD *md);
kg_agent_digest kg_agent_digest_named(const char *name);

/* This thread's last release failure (raised by kg_key_private*), kept for the level-1 decoder,
 * which runs outside the error marks that drop it on the OSSL_STORE path (decoder.c). begin
 * forgets it; pending says whether one for key_id happened since; reraise raises it again
 * (without logging it twice) and forgets it. */
void kg_key_failure_begin(void);
int kg_key_failure_pending(const char *key_id);
void kg_key_failure_reraise(const kg_provctx *ctx);

/* The context of the operations that forward to an inner EVP_PKEY_CTX of kg_libctx()
 * (asym_cipher.c, keyexch.c; prov_inner.c). key and peer are borrowed: the outer EVP_PKEY_CTX
 * holds them. */
typedef struct kg_inner_ctx {
    kg_provctx *provctx;
    kg_key *key;
    kg_key *peer;        /* keyexch only */
    EVP_PKEY_CTX *inner; /* kg_libctx(); NULL until an init */
    int agent;           /* backend = agent: inner is on the public key and only holds the
                            parameters; the private operation goes to the agent */
} kg_inner_ctx;

/* newctx/freectx/dupctx of both: dupctx is cheap, OpenSSL duplicates the inner context (padding,
 * digests, label, peer, KDF settings). */
void *kg_inner_newctx(void *provctx);
void kg_inner_freectx(void *vctx);
void *kg_inner_dupctx(void *vctx);
/* set/get_ctx_params of both: an empty list is always accepted; anything else needs the inner
 * context (1/0). */
int kg_inner_set_ctx_params(void *vctx, const OSSL_PARAM params[]);
int kg_inner_get_ctx_params(void *vctx, OSSL_PARAM params[]);
/* The inner context's settable (settable != 0) or gettable list; with no context (libcrypto may
 * ask without one) that of the default provider's `alg` for `operation` (OSSL_OP_ASYM_CIPHER or
 * OSSL_OP_KEYEXCH: static data of a provider loaded for the life of the process); failing both,
 * fallback. */
const OSSL_PARAM *kg_inner_param_list(const kg_inner_ctx *ctx, int operation, const char *alg, int settable,
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
