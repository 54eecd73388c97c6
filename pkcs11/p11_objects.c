/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Objects and attributes.
 *
 * Token objects: per configured key a private key, a public key and (if configured) a
 * certificate, all with the key's CKA_ID and CKA_LABEL. Their handles are
 * KG_P11_OBJ_BASE + 4 * key index + kind: stable for the module's lifetime and across
 * C_Initialize, fork and restarts with the same configuration. Session objects are the secrets
 * C_DeriveKey makes, numbered from KG_P11_SESSION_OBJ_BASE and never reused.
 *
 * Every attribute here is public or refused: the private components a private key has (RSA:
 * CKA_PRIVATE_EXPONENT, CKA_PRIME_1/2, CKA_EXPONENT_1/2, CKA_COEFFICIENT; EC: CKA_VALUE) answer
 * CKR_ATTRIBUTE_SENSITIVE, attributes an object's type does not have CKR_ATTRIBUTE_TYPE_INVALID
 * (PKCS#11 v2.40 C_GetAttributeValue), and nothing needs attestation.
 * C_GetAttributeValue fills every attribute it can and reports the last problem (PKCS#11 §5.7).
 */
#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>

#include "kg_log.h"
#include "p11.h"

typedef enum { ATTR_OK, ATTR_SENSITIVE, ATTR_INVALID } attr_rc;

/* An attribute's value: points into the object or into the small inline storage. */
typedef struct attr_val {
    const void *ptr;
    size_t len;
    union {
        CK_ULONG ul;
        CK_BBOOL b;
        CK_MECHANISM_TYPE mechs[16];
    } u;
} attr_val;

static attr_rc set_ul(attr_val *v, CK_ULONG x)
{
    v->u.ul = x;
    v->ptr = &v->u.ul;
    v->len = sizeof(CK_ULONG);
    return ATTR_OK;
}

static attr_rc set_bool(attr_val *v, int x)
{
    v->u.b = x ? CK_TRUE : CK_FALSE;
    v->ptr = &v->u.b;
    v->len = sizeof(CK_BBOOL);
    return ATTR_OK;
}

static attr_rc set_bytes(attr_val *v, const void *p, size_t len)
{
    v->ptr = p;
    v->len = len;
    return ATTR_OK;
}

CK_OBJECT_HANDLE kg_p11_obj_handle(size_t key_index, int kind)
{
    return KG_P11_OBJ_BASE + 4 * (CK_OBJECT_HANDLE)key_index + (CK_OBJECT_HANDLE)kind;
}

int kg_p11_obj_lookup(CK_OBJECT_HANDLE h, kg_p11_obj *obj)
{
    kg_p11_token *t = kg_p11.token;

    memset(obj, 0, sizeof(*obj));
    if (h >= KG_P11_SESSION_OBJ_BASE) {
        for (kg_p11_secret *s = kg_p11.secrets; s != NULL; s = s->next)
            if (s->handle == h) {
                obj->kind = KG_P11_OBJ_SECRET;
                obj->secret = s;
                return 1;
            }
        return 0;
    }
    if (t == NULL || h < KG_P11_OBJ_BASE)
        return 0;
    size_t i = (size_t)((h - KG_P11_OBJ_BASE) / 4);
    int kind = (int)((h - KG_P11_OBJ_BASE) % 4);
    if (i >= t->nkeys || kind == 0 || (kind == KG_P11_OBJ_CERT && t->keys[i].cert == NULL))
        return 0;
    obj->kind = kind;
    obj->key = &t->keys[i];
    return 1;
}

/* The mechanisms a key may be used with (CKA_ALLOWED_MECHANISMS). */
static attr_rc allowed_mechs(const kg_p11_key *k, attr_val *v)
{
    static const CK_MECHANISM_TYPE rsa[] = {CKM_RSA_PKCS,
                                            CKM_RSA_PKCS_PSS,
                                            CKM_SHA1_RSA_PKCS,
                                            CKM_SHA224_RSA_PKCS,
                                            CKM_SHA256_RSA_PKCS,
                                            CKM_SHA384_RSA_PKCS,
                                            CKM_SHA512_RSA_PKCS,
                                            CKM_SHA1_RSA_PKCS_PSS,
                                            CKM_SHA224_RSA_PKCS_PSS,
                                            CKM_SHA256_RSA_PKCS_PSS,
                                            CKM_SHA384_RSA_PKCS_PSS,
                                            CKM_SHA512_RSA_PKCS_PSS,
                                            CKM_RSA_PKCS_OAEP};
    static const CK_MECHANISM_TYPE ec[] = {CKM_ECDSA,        CKM_ECDSA_SHA1,   CKM_ECDSA_SHA224,
                                           CKM_ECDSA_SHA256, CKM_ECDSA_SHA384, CKM_ECDSA_SHA512,
                                           CKM_ECDH1_DERIVE};
    return k->type == KG_P11_RSA ? set_bytes(v, rsa, sizeof(rsa)) : set_bytes(v, ec, sizeof(ec));
}

/* Attributes every key object shares. */
static attr_rc key_common(const kg_p11_key *k, int kind, CK_ATTRIBUTE_TYPE type, attr_val *v)
{
    switch (type) {
    case CKA_KEY_TYPE: return set_ul(v, k->type == KG_P11_RSA ? CKK_RSA : CKK_EC);
    case CKA_ID: return set_bytes(v, k->id, sizeof(k->id));
    case CKA_START_DATE:
    case CKA_END_DATE: return set_bytes(v, "", 0);
    case CKA_DERIVE: return set_bool(v, kind == KG_P11_OBJ_PRIVATE && k->type == KG_P11_EC);
    case CKA_LOCAL: return set_bool(v, 0); /* released by a KBS, not generated here */
    case CKA_KEY_GEN_MECHANISM: return set_ul(v, CK_UNAVAILABLE_INFORMATION);
    case CKA_ALLOWED_MECHANISMS: return allowed_mechs(k, v);
    case CKA_SUBJECT: return set_bytes(v, k->subject, k->subject_len);
    case CKA_PUBLIC_KEY_INFO: return set_bytes(v, k->ref.spki_der, k->ref.spki_der_len);
    case CKA_MODULUS: return k->type == KG_P11_RSA ? set_bytes(v, k->modulus, k->modulus_len) : ATTR_INVALID;
    case CKA_PUBLIC_EXPONENT:
        return k->type == KG_P11_RSA ? set_bytes(v, k->exponent, k->exponent_len) : ATTR_INVALID;
    case CKA_EC_PARAMS:
        return k->type == KG_P11_EC ? set_bytes(v, k->ec_params, k->ec_params_len) : ATTR_INVALID;
    case CKA_EC_POINT:
        return k->type == KG_P11_EC ? set_bytes(v, k->ec_point, k->ec_point_len) : ATTR_INVALID;
    default: return ATTR_INVALID;
    }
}

static attr_rc private_attr(const kg_p11_key *k, CK_ATTRIBUTE_TYPE type, attr_val *v)
{
    int rsa = k->type == KG_P11_RSA;

    switch (type) {
    case CKA_SENSITIVE:
    case CKA_ALWAYS_SENSITIVE:
    case CKA_NEVER_EXTRACTABLE:
    case CKA_SIGN: return set_bool(v, 1);
    case CKA_DECRYPT: return set_bool(v, rsa);
    case CKA_EXTRACTABLE:
    case CKA_SIGN_RECOVER:
    case CKA_UNWRAP:
    case CKA_WRAP_WITH_TRUSTED:
    case CKA_ALWAYS_AUTHENTICATE: return set_bool(v, 0);
    case CKA_VALUE: return rsa ? ATTR_INVALID : ATTR_SENSITIVE; /* the EC private value */
    case CKA_PRIVATE_EXPONENT:
    case CKA_PRIME_1:
    case CKA_PRIME_2:
    case CKA_EXPONENT_1:
    case CKA_EXPONENT_2:
    case CKA_COEFFICIENT: return rsa ? ATTR_SENSITIVE : ATTR_INVALID;
    default: return key_common(k, KG_P11_OBJ_PRIVATE, type, v);
    }
}

static attr_rc public_attr(const kg_p11_key *k, CK_ATTRIBUTE_TYPE type, attr_val *v)
{
    int rsa = k->type == KG_P11_RSA;

    switch (type) {
    case CKA_VERIFY: return set_bool(v, 1);
    case CKA_ENCRYPT: return set_bool(v, rsa);
    case CKA_VERIFY_RECOVER:
    case CKA_WRAP:
    case CKA_TRUSTED: return set_bool(v, 0);
    case CKA_MODULUS_BITS: return rsa ? set_ul(v, k->modulus_bits) : ATTR_INVALID;
    default: return key_common(k, KG_P11_OBJ_PUBLIC, type, v);
    }
}

static attr_rc cert_attr(const kg_p11_key *k, CK_ATTRIBUTE_TYPE type, attr_val *v)
{
    switch (type) {
    case CKA_CERTIFICATE_TYPE: return set_ul(v, CKC_X_509);
    case CKA_TRUSTED: return set_bool(v, 0);
    case CKA_CERTIFICATE_CATEGORY: return set_ul(v, 0); /* unspecified */
    case CKA_JAVA_MIDP_SECURITY_DOMAIN: return set_ul(v, 0);
    case CKA_START_DATE:
    case CKA_END_DATE:
    case CKA_URL:
    case CKA_HASH_OF_SUBJECT_PUBLIC_KEY:
    case CKA_HASH_OF_ISSUER_PUBLIC_KEY: return set_bytes(v, "", 0);
    case CKA_ID: return set_bytes(v, k->id, sizeof(k->id));
    case CKA_SUBJECT: return set_bytes(v, k->subject, k->subject_len);
    case CKA_ISSUER: return set_bytes(v, k->issuer, k->issuer_len);
    case CKA_SERIAL_NUMBER: return set_bytes(v, k->serial, k->serial_len);
    case CKA_VALUE: return set_bytes(v, k->cert, k->cert_len);
    case CKA_PUBLIC_KEY_INFO: return set_bytes(v, k->ref.spki_der, k->ref.spki_der_len);
    default: return ATTR_INVALID;
    }
}

static attr_rc secret_attr(const kg_p11_secret *s, CK_ATTRIBUTE_TYPE type, attr_val *v)
{
    switch (type) {
    case CKA_CLASS: return set_ul(v, CKO_SECRET_KEY);
    case CKA_KEY_TYPE: return set_ul(v, s->key_type);
    case CKA_TOKEN:
    case CKA_PRIVATE:
    case CKA_MODIFIABLE:
    case CKA_LOCAL:
    case CKA_ENCRYPT:
    case CKA_DECRYPT:
    case CKA_SIGN:
    case CKA_VERIFY:
    case CKA_WRAP:
    case CKA_UNWRAP:
    case CKA_DERIVE:
    case CKA_ALWAYS_SENSITIVE:
    case CKA_NEVER_EXTRACTABLE: return set_bool(v, 0);
    case CKA_DESTROYABLE: return set_bool(v, 1);
    case CKA_SENSITIVE: return set_bool(v, s->sensitive);
    case CKA_EXTRACTABLE: return set_bool(v, s->extractable);
    case CKA_LABEL: return set_bytes(v, s->label, strlen(s->label));
    case CKA_ID: return set_bytes(v, s->id, s->id_len);
    case CKA_VALUE_LEN: return set_ul(v, s->value_len);
    case CKA_KEY_GEN_MECHANISM: return set_ul(v, CKM_ECDH1_DERIVE);
    case CKA_VALUE:
        return s->sensitive || !s->extractable ? ATTR_SENSITIVE : set_bytes(v, s->value, s->value_len);
    default: return ATTR_INVALID;
    }
}

/* One attribute of obj. Called with kg_p11.lock held (session objects may go away). */
static attr_rc obj_attr(const kg_p11_obj *o, CK_ATTRIBUTE_TYPE type, attr_val *v)
{
    const kg_p11_key *k = o->key;

    if (o->kind == KG_P11_OBJ_SECRET)
        return secret_attr(o->secret, type, v);
    switch (type) { /* storage attributes of every token object */
    case CKA_CLASS:
        return set_ul(v, o->kind == KG_P11_OBJ_PRIVATE  ? CKO_PRIVATE_KEY
                         : o->kind == KG_P11_OBJ_PUBLIC ? CKO_PUBLIC_KEY
                                                        : CKO_CERTIFICATE);
    case CKA_TOKEN: return set_bool(v, 1);
    case CKA_PRIVATE: /* login mode or a PIN: private keys appear after C_Login */
        return set_bool(v, o->kind == KG_P11_OBJ_PRIVATE && kg_p11.token->login_required);
    case CKA_MODIFIABLE:
    case CKA_COPYABLE:
    case CKA_DESTROYABLE: return set_bool(v, 0);
    case CKA_LABEL: return set_bytes(v, k->label, strlen(k->label));
    default: break;
    }
    switch (o->kind) {
    case KG_P11_OBJ_PRIVATE: return private_attr(k, type, v);
    case KG_P11_OBJ_PUBLIC: return public_attr(k, type, v);
    default: return cert_attr(k, type, v);
    }
}

CK_RV kg_C_GetAttributeValue(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE oh, CK_ATTRIBUTE_PTR tmpl, CK_ULONG count)
{
    kg_p11_session *s;
    kg_p11_obj obj;
    CK_RV rv;

    if ((rv = kg_p11_session_get(h, &s)) != CKR_OK)
        return rv;
    if (tmpl == NULL && count > 0) {
        kg_p11_session_put(s);
        return CKR_ARGUMENTS_BAD;
    }
    pthread_mutex_lock(&kg_p11.lock);
    if (!kg_p11_obj_lookup(oh, &obj)) {
        rv = CKR_OBJECT_HANDLE_INVALID;
        goto out;
    }
    /* every entry is processed; the return value reports a problem with any of them */
    for (CK_ULONG i = 0; i < count; i++) {
        attr_val v;
        attr_rc rc = obj_attr(&obj, tmpl[i].type, &v);
        if (rc != ATTR_OK) {
            tmpl[i].ulValueLen = CK_UNAVAILABLE_INFORMATION;
            rv = rc == ATTR_SENSITIVE ? CKR_ATTRIBUTE_SENSITIVE : CKR_ATTRIBUTE_TYPE_INVALID;
        } else if (tmpl[i].pValue == NULL) {
            tmpl[i].ulValueLen = v.len;
        } else if (tmpl[i].ulValueLen < v.len) {
            tmpl[i].ulValueLen = CK_UNAVAILABLE_INFORMATION;
            rv = CKR_BUFFER_TOO_SMALL;
        } else {
            if (v.len > 0)
                memcpy(tmpl[i].pValue, v.ptr, v.len);
            tmpl[i].ulValueLen = v.len;
        }
    }
out:
    pthread_mutex_unlock(&kg_p11.lock);
    kg_p11_session_put(s);
    return rv;
}

/* Does obj carry every attribute of the template with exactly those bytes? kg_p11.lock held. */
static int obj_matches(const kg_p11_obj *o, const CK_ATTRIBUTE *tmpl, CK_ULONG count)
{
    for (CK_ULONG i = 0; i < count; i++) {
        attr_val v;
        if (obj_attr(o, tmpl[i].type, &v) != ATTR_OK || v.len != tmpl[i].ulValueLen ||
            (v.len > 0 && (tmpl[i].pValue == NULL || memcmp(v.ptr, tmpl[i].pValue, v.len) != 0)))
            return 0;
    }
    return 1;
}

CK_RV kg_C_FindObjectsInit(CK_SESSION_HANDLE h, CK_ATTRIBUTE_PTR tmpl, CK_ULONG count)
{
    kg_p11_session *s;
    kg_p11_token *t;
    size_t n = 0, cap;
    CK_RV rv;

    if ((rv = kg_p11_session_get(h, &s)) != CKR_OK)
        return rv;
    if (tmpl == NULL && count > 0) {
        rv = CKR_ARGUMENTS_BAD;
        goto out;
    }
    if (s->finding) {
        rv = CKR_OPERATION_ACTIVE;
        goto out;
    }
    pthread_mutex_lock(&kg_p11.lock);
    if ((t = kg_p11.token) == NULL) { /* C_Finalize raced with us */
        pthread_mutex_unlock(&kg_p11.lock);
        rv = CKR_CRYPTOKI_NOT_INITIALIZED;
        goto out;
    }
    cap = 3 * t->nkeys + 1;
    for (kg_p11_secret *x = kg_p11.secrets; x != NULL; x = x->next)
        cap++;
    free(s->found);
    if ((s->found = calloc(cap, sizeof(*s->found))) == NULL) {
        pthread_mutex_unlock(&kg_p11.lock);
        rv = CKR_HOST_MEMORY;
        goto out;
    }
    for (size_t i = 0; i < t->nkeys; i++)
        for (int kind = KG_P11_OBJ_PRIVATE; kind <= KG_P11_OBJ_CERT; kind++) {
            kg_p11_obj o;
            CK_OBJECT_HANDLE oh = kg_p11_obj_handle(i, kind);
            if (kind == KG_P11_OBJ_PRIVATE && t->login_required && !kg_p11.logged_in)
                continue; /* CKA_PRIVATE objects are invisible before login */
            if (kg_p11_obj_lookup(oh, &o) && obj_matches(&o, tmpl, count))
                s->found[n++] = oh;
        }
    for (kg_p11_secret *x = kg_p11.secrets; x != NULL; x = x->next) {
        kg_p11_obj o = {KG_P11_OBJ_SECRET, NULL, x};
        if (obj_matches(&o, tmpl, count))
            s->found[n++] = x->handle;
    }
    pthread_mutex_unlock(&kg_p11.lock);
    s->found_len = n;
    s->found_pos = 0;
    s->finding = 1;
out:
    kg_p11_session_put(s);
    return rv;
}

CK_RV kg_C_FindObjects(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE_PTR out, CK_ULONG max, CK_ULONG_PTR count)
{
    kg_p11_session *s;
    CK_RV rv;

    if ((rv = kg_p11_session_get(h, &s)) != CKR_OK)
        return rv;
    if (count == NULL || (out == NULL && max > 0))
        rv = CKR_ARGUMENTS_BAD;
    else if (!s->finding)
        rv = CKR_OPERATION_NOT_INITIALIZED;
    else {
        *count = 0;
        while (*count < max && s->found_pos < s->found_len)
            out[(*count)++] = s->found[s->found_pos++];
    }
    kg_p11_session_put(s);
    return rv;
}

CK_RV kg_C_FindObjectsFinal(CK_SESSION_HANDLE h)
{
    kg_p11_session *s;
    CK_RV rv;

    if ((rv = kg_p11_session_get(h, &s)) != CKR_OK)
        return rv;
    if (!s->finding)
        rv = CKR_OPERATION_NOT_INITIALIZED;
    free(s->found);
    s->found = NULL;
    s->found_len = s->found_pos = 0;
    s->finding = 0;
    kg_p11_session_put(s);
    return rv;
}

static void secret_free(kg_p11_secret *x)
{
    OPENSSL_secure_clear_free(x->value, x->value_len);
    free(x);
}

void kg_p11_secrets_drop(CK_SESSION_HANDLE owner)
{
    kg_p11_secret **pp = &kg_p11.secrets;

    while (*pp != NULL) {
        kg_p11_secret *x = *pp;
        if (owner == 0 || x->owner == owner) {
            *pp = x->next;
            secret_free(x);
        } else
            pp = &x->next;
    }
}

CK_RV kg_C_DestroyObject(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE oh)
{
    kg_p11_session *s;
    kg_p11_obj obj;
    CK_RV rv;

    if ((rv = kg_p11_session_get(h, &s)) != CKR_OK)
        return rv;
    pthread_mutex_lock(&kg_p11.lock);
    if (!kg_p11_obj_lookup(oh, &obj))
        rv = CKR_OBJECT_HANDLE_INVALID;
    else if (obj.kind != KG_P11_OBJ_SECRET)
        rv = CKR_ACTION_PROHIBITED; /* token objects come from keygate.conf */
    else
        for (kg_p11_secret **pp = &kg_p11.secrets; *pp != NULL; pp = &(*pp)->next)
            if (*pp == obj.secret) {
                *pp = obj.secret->next;
                secret_free(obj.secret);
                break;
            }
    pthread_mutex_unlock(&kg_p11.lock);
    kg_p11_session_put(s);
    return rv;
}

CK_RV kg_C_GetObjectSize(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE oh, CK_ULONG_PTR size)
{
    kg_p11_session *s;
    kg_p11_obj obj;
    CK_RV rv;

    if ((rv = kg_p11_session_get(h, &s)) != CKR_OK)
        return rv;
    pthread_mutex_lock(&kg_p11.lock);
    if (!kg_p11_obj_lookup(oh, &obj))
        rv = CKR_OBJECT_HANDLE_INVALID;
    else if (size == NULL)
        rv = CKR_ARGUMENTS_BAD;
    else
        *size = CK_UNAVAILABLE_INFORMATION;
    pthread_mutex_unlock(&kg_p11.lock);
    kg_p11_session_put(s);
    return rv;
}
