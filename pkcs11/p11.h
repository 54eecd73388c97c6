/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Internal interface of libkeygate-pkcs11.so (PKCS#11 2.40, one token "keygate").
 *
 * Files: p11_module.c (function list, C_Initialize/C_Finalize, fork, locking, slot/token info),
 * p11_token.c (keygate.conf -> the key table, public attribute blobs), p11_objects.c (objects,
 * attributes, find, session objects), p11_session.c (sessions, login, random), p11_release.c
 * (lazy attestation + process cache), p11_mech.c (mechanism table and parameters), p11_sign.c
 * (sign/verify), p11_crypt.c (decrypt/encrypt), p11_derive.c (ECDH), p11_stubs.c (the
 * functions a released-key token does not offer).
 *
 * Locking: kg_p11.lock guards the session table, session objects and the login state; it is
 * never held across crypto or network I/O. Each session has its own mutex for its operation
 * state (taken through kg_p11_session_get/put, which keep a reference so a concurrent
 * C_CloseSession cannot free it under us). Releases run under each key's own lock
 * (release/kg_keysource.h); kg_p11.release_lock (a rwlock) only keeps C_Finalize from freeing
 * the token under a release in flight. The token (key table) is immutable between C_Initialize
 * and C_Finalize; released keys live in the leases of its key source.
 */
#ifndef KG_P11_H
#define KG_P11_H

#include <openssl/types.h>
#include <p11-kit/pkcs11.h>
#include <pthread.h>
#include <stddef.h>
#include <sys/types.h>

#include "kg_config.h"
#include "kg_err.h"
#include "kg_keyref.h"
#include "kg_keysource.h"
#include "kg_lease.h"

#define KG_P11_SLOT_ID 1
#define KG_P11_TOKEN_LABEL "keygate"
#define KG_P11_MAX_KEYS 64
#define KG_P11_LABEL_MAX 64
#define KG_P11_OBJ_BASE 0x1000UL             /* token objects: BASE + 4*key index + kind */
#define KG_P11_SESSION_OBJ_BASE 0x40000000UL /* session objects (derived secrets): a counter */
#define KG_P11_PIN_MAX 256                   /* bytes of a pkcs11_pin_file PIN (ulMaxPinLen) */

enum { KG_P11_RSA = 1, KG_P11_EC = 2 };
enum { KG_P11_OBJ_PRIVATE = 1, KG_P11_OBJ_PUBLIC = 2, KG_P11_OBJ_CERT = 3, KG_P11_OBJ_SECRET = 4 };

/* One configured key: what the token shows without attestation, and the released key. */
typedef struct kg_p11_key {
    char label[KG_P11_LABEL_MAX];
    char ref_path[KG_CONF_STR];
    kg_keyref ref;                     /* key id, KBS and the expected public key */
    int type;                          /* KG_P11_RSA | KG_P11_EC */
    unsigned char id[20];              /* CKA_ID: SHA-1 of the public key bits (X.509 SKI method 1) */
    unsigned char *modulus, *exponent; /* RSA, big-endian */
    size_t modulus_len, exponent_len;
    CK_ULONG modulus_bits;
    unsigned char *ec_params, *ec_point; /* DER OID; DER OCTET STRING of the uncompressed point */
    size_t ec_params_len, ec_point_len;
    size_t field_len;                                /* EC: bytes of r and of s */
    char group[32];                                  /* EC: OpenSSL group name */
    unsigned char *cert, *subject, *issuer, *serial; /* DER; cert NULL when none configured */
    size_t cert_len, subject_len, issuer_len, serial_len;
    kg_keyslot *slot; /* the released private key and its lease (kg_keysource.h); set at load */
} kg_p11_key;

typedef struct kg_p11_token {
    char conf_path[KG_CONF_STR]; /* "" when no configuration was found */
    kg_config cfg;
    kg_p11_key *keys;
    size_t nkeys;
    char serial[17];
    int release_on_login;
    int login_required; /* release_on_login or a PIN: private keys need C_Login(CKU_USER) */
    /* pkcs11_pin_file's PIN: KG_P11_PIN_MAX + 1 bytes, zero-padded, in the secure heap, cleared with
     * the token; NULL when no PIN is configured (protected authentication path) */
    unsigned char *pin;
    size_t pin_len;
    kg_keysource *keys_src; /* cache, releases and leases of keys[] (kg_keysource.h) */
} kg_p11_token;

/* An operation in progress on a session (sign, verify, decrypt, encrypt). */
typedef struct kg_p11_op {
    int active;
    const struct kg_p11_mech *mech;
    kg_p11_key *key;
    EVP_PKEY_CTX *pctx; /* raw operations (owned) */
    EVP_MD_CTX *mdctx;  /* hash-and-sign (owns its pkey ctx) */
    unsigned char *buf; /* raw data given through Update (single-part mechanisms) */
    size_t buf_len;
    int updated; /* Update was called: only Final may follow */
} kg_p11_op;

typedef struct kg_p11_session {
    CK_SESSION_HANDLE handle;
    CK_FLAGS flags;
    int refs;   /* kg_p11_session_get references; guarded by kg_p11.lock */
    int closed; /* removed from the table; freed by the last put */
    pthread_mutex_t mutex;
    int finding;
    CK_OBJECT_HANDLE *found;
    size_t found_len, found_pos;
    kg_p11_op sign, verify, decrypt, encrypt;
} kg_p11_session;

/* A derived secret (C_DeriveKey): a session object owned by the session that made it. */
typedef struct kg_p11_secret {
    CK_OBJECT_HANDLE handle;
    CK_SESSION_HANDLE owner;
    CK_KEY_TYPE key_type;
    unsigned char *value; /* secure heap */
    size_t value_len;
    char label[KG_P11_LABEL_MAX];
    unsigned char id[64];
    size_t id_len;
    CK_BBOOL sensitive, extractable;
    struct kg_p11_secret *next;
} kg_p11_secret;

typedef struct kg_p11_state {
    pthread_mutex_t lock;
    pthread_rwlock_t release_lock; /* releases: shared; C_Finalize: exclusive */
    int initialized;
    pid_t pid; /* the process that called C_Initialize: a forked child must call it again */
    kg_p11_token *token;
    kg_p11_session **sessions;
    size_t nsessions, cap_sessions;
    CK_SESSION_HANDLE next_session;
    CK_OBJECT_HANDLE next_object;
    kg_p11_secret *secrets;
    int logged_in;
    int no_threads; /* C_Initialize said CKF_LIBRARY_CANT_CREATE_OS_THREADS */
} kg_p11_state;

extern kg_p11_state kg_p11;

/* p11_module.c */
int kg_p11_ready(void); /* initialised in this process; caller holds kg_p11.lock or reads racily */
void kg_p11_pad(unsigned char *dst, size_t size, const char *src);
CK_RV kg_p11_check_slot(CK_SLOT_ID slot);

/* p11_token.c: loads the configuration named by init_reserved / KEYGATE_CONF / the default
 * path. Returns CKR_OK with *token (caller frees with kg_p11_token_free), else an error logged
 * with its cause. No network. */
CK_RV kg_p11_token_load(const char *init_reserved, kg_p11_token **token);
void kg_p11_token_free(kg_p11_token *token);

/* p11_session.c */
CK_RV kg_p11_session_get(CK_SESSION_HANDLE h, kg_p11_session **s); /* locks s->mutex */
void kg_p11_session_put(kg_p11_session *s);                        /* unlocks, drops the ref */
void kg_p11_op_reset(kg_p11_op *op);
void kg_p11_sessions_drop(int free_busy); /* with kg_p11.lock held: closes every session */

/* p11_objects.c */
typedef struct kg_p11_obj {
    int kind;        /* KG_P11_OBJ_* */
    kg_p11_key *key; /* token objects */
    kg_p11_secret *secret;
} kg_p11_obj;
/* Resolves a handle (token or session object). With kg_p11.lock held for session objects. */
int kg_p11_obj_lookup(CK_OBJECT_HANDLE h, kg_p11_obj *obj);
CK_OBJECT_HANDLE kg_p11_obj_handle(size_t key_index, int kind);
void kg_p11_secrets_drop(CK_SESSION_HANDLE owner); /* owner 0: all; kg_p11.lock held */

/* p11_release.c: the released private key of key, a NEW reference the caller frees (runs the
 * pipeline once per lease, maps failures to CKR_DEVICE_ERROR / CKR_FUNCTION_FAILED and logs the
 * step; a revoked, wiped key gives CKR_DEVICE_ERROR and logs the revocation). */
CK_RV kg_p11_private(kg_p11_key *key, const char *caller, EVP_PKEY **priv);
CK_RV kg_p11_release_all(const char *caller);
CK_RV kg_p11_rv_of(const kg_err *err);

/* p11_mech.c */
typedef struct kg_p11_mech {
    CK_MECHANISM_TYPE type;
    int key_type;   /* KG_P11_RSA | KG_P11_EC */
    CK_FLAGS flags; /* CKF_SIGN, CKF_VERIFY, CKF_DECRYPT, CKF_ENCRYPT, CKF_DERIVE (+ EC flags) */
    const char *md; /* hash-and-sign digest, NULL for raw mechanisms */
    int pss, oaep;
} kg_p11_mech;
const kg_p11_mech *kg_p11_mech_find(CK_MECHANISM_TYPE type);
/* Applies the CK_MECHANISM parameters (PSS, OAEP) to an initialised pkey ctx. */
CK_RV kg_p11_mech_apply(const kg_p11_mech *m, const CK_MECHANISM *mech, EVP_PKEY_CTX *pctx);
/* Checks the parameters before any key work; returns CKR_MECHANISM_PARAM_INVALID on a bad one. */
CK_RV kg_p11_mech_check(const kg_p11_mech *m, const CK_MECHANISM *mech);
const char *kg_p11_md_of(CK_MECHANISM_TYPE hash); /* CKM_SHA256 -> "SHA256", else NULL */

/* p11_sign.c: starts op on session s: checks the mechanism and the key object (a private key
 * when want is CKF_SIGN/CKF_DECRYPT, whose release runs here; else its public key), and
 * prepares the OpenSSL context. Called with s->mutex held. */
CK_RV kg_p11_op_init(kg_p11_op *op, CK_MECHANISM_PTR mech, CK_OBJECT_HANDLE key, CK_FLAGS want,
                     const char *caller);

/* Function-table entries implemented outside p11_module.c. */
CK_RV kg_C_GetMechanismList(CK_SLOT_ID, CK_MECHANISM_TYPE_PTR, CK_ULONG_PTR);
CK_RV kg_C_GetMechanismInfo(CK_SLOT_ID, CK_MECHANISM_TYPE, CK_MECHANISM_INFO_PTR);
CK_RV kg_C_OpenSession(CK_SLOT_ID, CK_FLAGS, CK_VOID_PTR, CK_NOTIFY, CK_SESSION_HANDLE_PTR);
CK_RV kg_C_CloseSession(CK_SESSION_HANDLE);
CK_RV kg_C_CloseAllSessions(CK_SLOT_ID);
CK_RV kg_C_GetSessionInfo(CK_SESSION_HANDLE, CK_SESSION_INFO_PTR);
CK_RV kg_C_Login(CK_SESSION_HANDLE, CK_USER_TYPE, CK_UTF8CHAR_PTR, CK_ULONG);
CK_RV kg_C_Logout(CK_SESSION_HANDLE);
CK_RV kg_C_SeedRandom(CK_SESSION_HANDLE, CK_BYTE_PTR, CK_ULONG);
CK_RV kg_C_GenerateRandom(CK_SESSION_HANDLE, CK_BYTE_PTR, CK_ULONG);
CK_RV kg_C_GetAttributeValue(CK_SESSION_HANDLE, CK_OBJECT_HANDLE, CK_ATTRIBUTE_PTR, CK_ULONG);
CK_RV kg_C_FindObjectsInit(CK_SESSION_HANDLE, CK_ATTRIBUTE_PTR, CK_ULONG);
CK_RV kg_C_FindObjects(CK_SESSION_HANDLE, CK_OBJECT_HANDLE_PTR, CK_ULONG, CK_ULONG_PTR);
CK_RV kg_C_FindObjectsFinal(CK_SESSION_HANDLE);
CK_RV kg_C_DestroyObject(CK_SESSION_HANDLE, CK_OBJECT_HANDLE);
CK_RV kg_C_GetObjectSize(CK_SESSION_HANDLE, CK_OBJECT_HANDLE, CK_ULONG_PTR);
CK_RV kg_C_SignInit(CK_SESSION_HANDLE, CK_MECHANISM_PTR, CK_OBJECT_HANDLE);
CK_RV kg_C_Sign(CK_SESSION_HANDLE, CK_BYTE_PTR, CK_ULONG, CK_BYTE_PTR, CK_ULONG_PTR);
CK_RV kg_C_SignUpdate(CK_SESSION_HANDLE, CK_BYTE_PTR, CK_ULONG);
CK_RV kg_C_SignFinal(CK_SESSION_HANDLE, CK_BYTE_PTR, CK_ULONG_PTR);
CK_RV kg_C_VerifyInit(CK_SESSION_HANDLE, CK_MECHANISM_PTR, CK_OBJECT_HANDLE);
CK_RV kg_C_Verify(CK_SESSION_HANDLE, CK_BYTE_PTR, CK_ULONG, CK_BYTE_PTR, CK_ULONG);
CK_RV kg_C_VerifyUpdate(CK_SESSION_HANDLE, CK_BYTE_PTR, CK_ULONG);
CK_RV kg_C_VerifyFinal(CK_SESSION_HANDLE, CK_BYTE_PTR, CK_ULONG);
CK_RV kg_C_DecryptInit(CK_SESSION_HANDLE, CK_MECHANISM_PTR, CK_OBJECT_HANDLE);
CK_RV kg_C_Decrypt(CK_SESSION_HANDLE, CK_BYTE_PTR, CK_ULONG, CK_BYTE_PTR, CK_ULONG_PTR);
CK_RV kg_C_EncryptInit(CK_SESSION_HANDLE, CK_MECHANISM_PTR, CK_OBJECT_HANDLE);
CK_RV kg_C_Encrypt(CK_SESSION_HANDLE, CK_BYTE_PTR, CK_ULONG, CK_BYTE_PTR, CK_ULONG_PTR);
CK_RV kg_C_DeriveKey(CK_SESSION_HANDLE, CK_MECHANISM_PTR, CK_OBJECT_HANDLE, CK_ATTRIBUTE_PTR, CK_ULONG,
                     CK_OBJECT_HANDLE_PTR);

/* p11_stubs.c: the complete 2.40 function list. */
extern CK_FUNCTION_LIST kg_p11_function_list;
CK_RV kg_C_Initialize(CK_VOID_PTR);
CK_RV kg_C_Finalize(CK_VOID_PTR);
CK_RV kg_C_GetInfo(CK_INFO_PTR);
CK_RV kg_C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR);
CK_RV kg_C_GetSlotList(CK_BBOOL, CK_SLOT_ID_PTR, CK_ULONG_PTR);
CK_RV kg_C_GetSlotInfo(CK_SLOT_ID, CK_SLOT_INFO_PTR);
CK_RV kg_C_GetTokenInfo(CK_SLOT_ID, CK_TOKEN_INFO_PTR);

#endif
