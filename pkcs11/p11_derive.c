/* SPDX-License-Identifier: Apache-2.0 */
/*
 * C_DeriveKey with CKM_ECDH1_DERIVE (KDF CKD_NULL): ECDH between the released private EC key
 * and the peer point of CK_ECDH1_DERIVE_PARAMS (raw uncompressed point or its DER OCTET STRING).
 * The result is a session object (CKO_SECRET_KEY) owned by the calling session; a CKA_VALUE_LEN
 * shorter than the secret keeps its trailing bytes (PKCS#11 v2.40 2.3.9: truncation "removes
 * bytes from the leading end", as OpenSSL's and SoftHSM's peers do). CKA_VALUE is readable only when the
 * template asked for CKA_SENSITIVE=FALSE and CKA_EXTRACTABLE=TRUE (the defaults are sensitive, not
 * extractable).
 */
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <stdlib.h>
#include <string.h>

#include "kg_libctx.h"
#include "kg_log.h"
#include "p11.h"

/* Reads the template of the new key into x. */
static CK_RV secret_template(const CK_ATTRIBUTE *t, CK_ULONG n, kg_p11_secret *x, CK_ULONG *value_len)
{
    *value_len = 0;
    x->key_type = CKK_GENERIC_SECRET;
    x->sensitive = CK_TRUE;
    x->extractable = CK_FALSE;
    for (CK_ULONG i = 0; i < n; i++) {
        const void *v = t[i].pValue;
        CK_ULONG len = t[i].ulValueLen;
        int is_ul = len == sizeof(CK_ULONG) && v != NULL, is_bool = len == sizeof(CK_BBOOL) && v != NULL;
        switch (t[i].type) {
        case CKA_CLASS:
            if (!is_ul || *(const CK_ULONG *)v != CKO_SECRET_KEY)
                return CKR_TEMPLATE_INCONSISTENT;
            break;
        case CKA_KEY_TYPE:
            if (!is_ul)
                return CKR_ATTRIBUTE_VALUE_INVALID;
            x->key_type = *(const CK_ULONG *)v;
            break;
        case CKA_VALUE_LEN:
            if (!is_ul)
                return CKR_ATTRIBUTE_VALUE_INVALID;
            *value_len = *(const CK_ULONG *)v;
            break;
        case CKA_TOKEN:
            if (!is_bool)
                return CKR_ATTRIBUTE_VALUE_INVALID;
            if (*(const CK_BBOOL *)v)
                return CKR_TOKEN_WRITE_PROTECTED; /* only session objects here */
            break;
        case CKA_SENSITIVE:
        case CKA_EXTRACTABLE:
            if (!is_bool)
                return CKR_ATTRIBUTE_VALUE_INVALID;
            *(t[i].type == CKA_SENSITIVE ? &x->sensitive : &x->extractable) = *(const CK_BBOOL *)v;
            break;
        case CKA_LABEL:
            if (len >= sizeof(x->label) || (len > 0 && v == NULL))
                return CKR_ATTRIBUTE_VALUE_INVALID;
            memcpy(x->label, v, len);
            x->label[len] = '\0';
            break;
        case CKA_ID:
            if (len > sizeof(x->id) || (len > 0 && v == NULL))
                return CKR_ATTRIBUTE_VALUE_INVALID;
            memcpy(x->id, v, len);
            x->id_len = len;
            break;
        case CKA_VALUE: return CKR_ATTRIBUTE_READ_ONLY;
        default: break; /* usage flags (CKA_ENCRYPT, ...) are accepted; the key is only readable */
        }
    }
    return CKR_OK;
}

/* The peer public key on the base key's group, from a raw or DER-wrapped uncompressed point. */
static EVP_PKEY *peer_key(const kg_p11_key *k, const unsigned char *p, size_t len)
{
    EVP_PKEY_CTX *ctx = NULL;
    EVP_PKEY *peer = NULL;
    OSSL_PARAM params[3];

    /* DER OCTET STRING around the point (04 len 04 x y) */
    if (len > 2 && p[0] == 0x04 && p[1] < 0x80 && (size_t)p[1] == len - 2 && p[2] == 0x04) {
        p += 2;
        len -= 2;
    } else if (len > 3 && p[0] == 0x04 && p[1] == 0x81 && (size_t)p[2] == len - 3) {
        p += 3;
        len -= 3;
    }
    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, (char *)k->group, 0);
    params[1] = OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY, (void *)p, len);
    params[2] = OSSL_PARAM_construct_end();
    if ((ctx = kg_pkey_ctx_new_from_name(NULL, "EC")) == NULL || EVP_PKEY_fromdata_init(ctx) <= 0 ||
        EVP_PKEY_fromdata(ctx, &peer, EVP_PKEY_PUBLIC_KEY, params) <= 0)
        peer = NULL;
    EVP_PKEY_CTX_free(ctx);
    return peer;
}

static CK_RV ecdh(const kg_p11_key *k, EVP_PKEY *priv, const CK_ECDH1_DERIVE_PARAMS *p, kg_p11_secret *x,
                  CK_ULONG value_len)
{
    EVP_PKEY *peer = peer_key(k, p->pPublicData, p->ulPublicDataLen);
    EVP_PKEY_CTX *ctx = NULL;
    size_t len = 0;
    CK_RV rv = CKR_FUNCTION_FAILED;

    if (peer == NULL)
        return CKR_MECHANISM_PARAM_INVALID;
    if ((ctx = EVP_PKEY_CTX_new_from_pkey(kg_libctx(), priv, NULL)) == NULL ||
        EVP_PKEY_derive_init(ctx) <= 0 || EVP_PKEY_derive_set_peer(ctx, peer) <= 0 ||
        EVP_PKEY_derive(ctx, NULL, &len) <= 0)
        goto done;
    if (value_len > len) {
        rv = CKR_TEMPLATE_INCONSISTENT;
        goto done;
    }
    if ((x->value = OPENSSL_secure_malloc(len)) == NULL) {
        rv = CKR_HOST_MEMORY;
        goto done;
    }
    x->value_len = len;
    if (EVP_PKEY_derive(ctx, x->value, &x->value_len) <= 0)
        goto done;
    if (value_len > 0 && value_len < x->value_len) { /* the trailing bytes; the tail is cleared below */
        memmove(x->value, x->value + (x->value_len - value_len), value_len);
        x->value_len = value_len;
    }
    rv = CKR_OK;
done:
    if (rv != CKR_OK && x->value != NULL) {
        OPENSSL_secure_clear_free(x->value, len);
        x->value = NULL;
    }
    if (rv == CKR_OK && x->value_len < len)
        OPENSSL_cleanse(x->value + x->value_len, len - x->value_len);
    EVP_PKEY_CTX_free(ctx);
    EVP_PKEY_free(peer);
    return rv;
}

CK_RV kg_C_DeriveKey(CK_SESSION_HANDLE h, CK_MECHANISM_PTR mech, CK_OBJECT_HANDLE base, CK_ATTRIBUTE_PTR tmpl,
                     CK_ULONG count, CK_OBJECT_HANDLE_PTR out)
{
    const CK_ECDH1_DERIVE_PARAMS *p;
    kg_p11_session *s;
    kg_p11_secret *x = NULL;
    kg_p11_obj obj;
    EVP_PKEY *priv;
    CK_ULONG value_len;
    int found;
    CK_RV rv;

    if ((rv = kg_p11_session_get(h, &s)) != CKR_OK)
        return rv;
    if (mech == NULL || out == NULL || (tmpl == NULL && count > 0)) {
        rv = CKR_ARGUMENTS_BAD;
        goto out;
    }
    if (mech->mechanism != CKM_ECDH1_DERIVE) {
        rv = CKR_MECHANISM_INVALID;
        goto out;
    }
    p = mech->pParameter;
    if (p == NULL || mech->ulParameterLen != sizeof(*p) || p->kdf != CKD_NULL || p->ulSharedDataLen != 0 ||
        p->pPublicData == NULL || p->ulPublicDataLen == 0) {
        rv = CKR_MECHANISM_PARAM_INVALID;
        goto out;
    }
    pthread_mutex_lock(&kg_p11.lock);
    found = kg_p11_obj_lookup(base, &obj);
    pthread_mutex_unlock(&kg_p11.lock);
    if (!found || obj.kind != KG_P11_OBJ_PRIVATE) {
        rv = CKR_KEY_HANDLE_INVALID;
        goto out;
    }
    if (obj.key->type != KG_P11_EC) {
        rv = CKR_KEY_TYPE_INCONSISTENT;
        goto out;
    }
    if ((x = calloc(1, sizeof(*x))) == NULL) {
        rv = CKR_HOST_MEMORY;
        goto out;
    }
    if ((rv = secret_template(tmpl, count, x, &value_len)) != CKR_OK ||
        (rv = kg_p11_private(obj.key, "C_DeriveKey", &priv)) != CKR_OK)
        goto out;
    ERR_set_mark();
    rv = ecdh(obj.key, priv, p, x, value_len);
    ERR_pop_to_mark();
    EVP_PKEY_free(priv); /* kg_p11_private's reference */
    priv = NULL;
    if (rv != CKR_OK)
        goto out;
    x->owner = h;
    pthread_mutex_lock(&kg_p11.lock);
    x->handle = kg_p11.next_object++;
    x->next = kg_p11.secrets;
    kg_p11.secrets = x;
    *out = x->handle;
    pthread_mutex_unlock(&kg_p11.lock);
    x = NULL;
out:
    if (x != NULL) {
        if (x->value != NULL)
            OPENSSL_secure_clear_free(x->value, x->value_len);
        free(x);
    }
    kg_p11_session_put(s);
    return rv;
}
