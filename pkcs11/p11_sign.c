/* SPDX-License-Identifier: Apache-2.0 */
/*
 * C_SignInit/C_Sign/C_SignUpdate/C_SignFinal and the C_Verify* family.
 *
 * Signing uses the released private key (the first C_SignInit on a key runs the release
 * pipeline); verification uses the reference's public key and never attests. The operation
 * state is an OpenSSL context in kg_libctx() (keygate's private library context, never the
 * application's). Length queries (NULL output) and CKR_BUFFER_TOO_SMALL keep the operation
 * active; any other outcome ends it (PKCS#11 §5.2).
 */
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

#include "kg_libctx.h"
#include "kg_log.h"
#include "p11.h"

#define KG_P11_MAX_RAW_INPUT 65536

CK_RV kg_p11_op_init(kg_p11_op *op, CK_MECHANISM_PTR mech, CK_OBJECT_HANDLE key, CK_FLAGS want,
                     const char *caller)
{
    int use_private = want == CKF_SIGN || want == CKF_DECRYPT;
    const kg_p11_mech *m;
    kg_p11_obj obj;
    EVP_PKEY *pk;
    int found, ok;
    CK_RV rv;

    if (op->active)
        return CKR_OPERATION_ACTIVE;
    if (mech == NULL)
        return CKR_ARGUMENTS_BAD;
    if ((m = kg_p11_mech_find(mech->mechanism)) == NULL || !(m->flags & want))
        return CKR_MECHANISM_INVALID;
    pthread_mutex_lock(&kg_p11.lock);
    found = kg_p11_obj_lookup(key, &obj); /* token key objects live until C_Finalize */
    pthread_mutex_unlock(&kg_p11.lock);
    if (!found || (obj.kind != KG_P11_OBJ_PRIVATE && obj.kind != KG_P11_OBJ_PUBLIC))
        return CKR_KEY_HANDLE_INVALID;
    if (use_private && obj.kind != KG_P11_OBJ_PRIVATE)
        return CKR_KEY_FUNCTION_NOT_PERMITTED; /* a public key cannot sign or decrypt */
    if (obj.key->type != m->key_type)
        return CKR_KEY_TYPE_INCONSISTENT;
    if ((rv = kg_p11_mech_check(m, mech)) != CKR_OK)
        return rv;
    if (!use_private)
        pk = obj.key->ref.pubkey;
    else if ((rv = kg_p11_private(obj.key, caller, &pk)) != CKR_OK)
        return rv;
    ERR_set_mark();
    if (m->md != NULL) {
        EVP_PKEY_CTX *inner = NULL; /* owned by mdctx */
        ok = (op->mdctx = EVP_MD_CTX_new()) != NULL &&
             (want == CKF_SIGN
                  ? EVP_DigestSignInit_ex(op->mdctx, &inner, m->md, kg_libctx(), NULL, pk, NULL)
                  : EVP_DigestVerifyInit_ex(op->mdctx, &inner, m->md, kg_libctx(), NULL, pk, NULL)) > 0;
        rv = ok ? kg_p11_mech_apply(m, mech, inner) : CKR_FUNCTION_FAILED;
    } else {
        ok = (op->pctx = EVP_PKEY_CTX_new_from_pkey(kg_libctx(), pk, NULL)) != NULL;
        if (ok) {
            switch (want) {
            case CKF_SIGN: ok = EVP_PKEY_sign_init(op->pctx) > 0; break;
            case CKF_VERIFY: ok = EVP_PKEY_verify_init(op->pctx) > 0; break;
            case CKF_DECRYPT: ok = EVP_PKEY_decrypt_init(op->pctx) > 0; break;
            default: ok = EVP_PKEY_encrypt_init(op->pctx) > 0; break;
            }
        }
        rv = ok ? kg_p11_mech_apply(m, mech, op->pctx) : CKR_FUNCTION_FAILED;
    }
    ERR_pop_to_mark();
    if (use_private)
        EVP_PKEY_free(pk); /* kg_p11_private's reference; the inner context holds its own */
    if (rv != CKR_OK) {
        KG_DEBUG("PKCS#11 %s: mechanism 0x%lx on key '%s' refused (0x%lx)", caller, mech->mechanism,
                 obj.key->label, rv);
        kg_p11_op_reset(op);
        return rv;
    }
    op->mech = m;
    op->key = obj.key;
    op->active = 1;
    return CKR_OK;
}

static size_t sig_size(const kg_p11_op *op)
{
    return op->key->type == KG_P11_RSA ? op->key->modulus_len : 2 * op->key->field_len;
}

/* DER ECDSA-Sig-Value -> r||s, each n bytes. */
static int ecdsa_der_to_raw(const unsigned char *der, size_t der_len, size_t n, unsigned char *out)
{
    const unsigned char *p = der;
    ECDSA_SIG *sig = d2i_ECDSA_SIG(NULL, &p, (long)der_len);
    const BIGNUM *r, *s;
    int ok;

    if (sig == NULL)
        return 0;
    ECDSA_SIG_get0(sig, &r, &s);
    ok = BN_bn2binpad(r, out, (int)n) == (int)n && BN_bn2binpad(s, out + n, (int)n) == (int)n;
    ECDSA_SIG_free(sig);
    return ok;
}

/* r||s -> DER (malloc'ed). */
static unsigned char *ecdsa_raw_to_der(const unsigned char *raw, size_t n, int *der_len)
{
    ECDSA_SIG *sig = ECDSA_SIG_new();
    BIGNUM *r = BN_bin2bn(raw, (int)n, NULL), *s = BN_bin2bn(raw + n, (int)n, NULL);
    unsigned char *der = NULL;

    if (sig == NULL || r == NULL || s == NULL || !ECDSA_SIG_set0(sig, r, s)) {
        BN_free(r);
        BN_free(s);
        ECDSA_SIG_free(sig);
        return NULL;
    }
    *der_len = i2d_ECDSA_SIG(sig, &der);
    ECDSA_SIG_free(sig);
    return *der_len > 0 ? der : NULL;
}

/* The raw-mechanism input rules (CKR_DATA_LEN_RANGE before any private-key work). */
static CK_RV raw_input_ok(const kg_p11_op *op, size_t len)
{
    const kg_p11_mech *m = op->mech;

    if (m->md != NULL)
        return CKR_OK;
    if (m->type == CKM_RSA_PKCS && len + 11 > op->key->modulus_len)
        return CKR_DATA_LEN_RANGE;
    if (m->type == CKM_RSA_PKCS_PSS) {
        size_t md_len = 0;
        const EVP_MD *md = NULL;
        if (EVP_PKEY_CTX_get_signature_md(op->pctx, &md) <= 0 || md == NULL)
            return CKR_FUNCTION_FAILED;
        md_len = (size_t)EVP_MD_get_size(md);
        if (len != md_len)
            return CKR_DATA_LEN_RANGE;
    }
    if (m->type == CKM_ECDSA && len == 0)
        return CKR_DATA_LEN_RANGE;
    return CKR_OK;
}

/* Signs (data, len) - or the digest so far when data is NULL - into sig (room checked). */
static CK_RV do_sign(kg_p11_op *op, const unsigned char *data, size_t len, unsigned char *sig,
                     CK_ULONG *sig_len)
{
    size_t want = sig_size(op), out_len = 0;
    unsigned char der[256];
    int ec = op->key->type == KG_P11_EC, ok;
    CK_RV rv;

    if (op->mech->md == NULL && (rv = raw_input_ok(op, len)) != CKR_OK)
        return rv;
    ERR_set_mark();
    out_len = ec ? sizeof(der) : want;
    if (op->mech->md != NULL)
        ok = (data == NULL || EVP_DigestSignUpdate(op->mdctx, data, len) > 0) &&
             EVP_DigestSignFinal(op->mdctx, ec ? der : sig, &out_len) > 0;
    else
        ok = EVP_PKEY_sign(op->pctx, ec ? der : sig, &out_len, data, len) > 0;
    if (ok && ec)
        ok = ecdsa_der_to_raw(der, out_len, op->key->field_len, sig);
    ERR_pop_to_mark();
    if (!ok) {
        KG_LOG(KG_LOG_ERROR, "PKCS#11 C_Sign: key '%s': OpenSSL refused the signature", op->key->label);
        return CKR_FUNCTION_FAILED;
    }
    *sig_len = (CK_ULONG)want;
    return CKR_OK;
}

/* The length-query / too-small rules; returns CKR_OK when the caller's buffer is big enough. */
static CK_RV sig_room(const kg_p11_op *op, const unsigned char *sig, CK_ULONG *sig_len, int *keep)
{
    CK_ULONG want = (CK_ULONG)sig_size(op);

    *keep = 1;
    if (sig == NULL) {
        *sig_len = want;
        return CKR_OK;
    }
    if (*sig_len < want) {
        *sig_len = want;
        return CKR_BUFFER_TOO_SMALL;
    }
    *keep = 0;
    return CKR_OK;
}

/* C_SignInit and C_VerifyInit: starts the session's operation of that direction. */
static CK_RV session_init(CK_SESSION_HANDLE h, CK_MECHANISM_PTR mech, CK_OBJECT_HANDLE key, int sign)
{
    kg_p11_session *s;
    CK_RV rv;

    if ((rv = kg_p11_session_get(h, &s)) != CKR_OK)
        return rv;
    rv = sign ? kg_p11_op_init(&s->sign, mech, key, CKF_SIGN, "C_SignInit")
              : kg_p11_op_init(&s->verify, mech, key, CKF_VERIFY, "C_VerifyInit");
    kg_p11_session_put(s);
    return rv;
}

CK_RV kg_C_SignInit(CK_SESSION_HANDLE h, CK_MECHANISM_PTR mech, CK_OBJECT_HANDLE key)
{
    return session_init(h, mech, key, 1);
}

CK_RV kg_C_Sign(CK_SESSION_HANDLE h, CK_BYTE_PTR data, CK_ULONG len, CK_BYTE_PTR sig, CK_ULONG_PTR sig_len)
{
    kg_p11_session *s;
    int keep = 0;
    CK_RV rv;

    if ((rv = kg_p11_session_get(h, &s)) != CKR_OK)
        return rv;
    if (!s->sign.active)
        rv = CKR_OPERATION_NOT_INITIALIZED;
    else if (sig_len == NULL || (data == NULL && len > 0) || s->sign.updated)
        rv = CKR_ARGUMENTS_BAD;
    else if ((rv = sig_room(&s->sign, sig, sig_len, &keep)) == CKR_OK && !keep)
        rv = do_sign(&s->sign, data ? data : (const unsigned char *)"", len, sig, sig_len);
    if (s->sign.active && !keep)
        kg_p11_op_reset(&s->sign);
    kg_p11_session_put(s);
    return rv;
}

/* Update for both directions: hash mechanisms digest, raw ones collect the input. */
static CK_RV op_update(kg_p11_op *op, const unsigned char *part, size_t len, int sign)
{
    unsigned char *grown;

    op->updated = 1;
    if (op->mech->md != NULL)
        return (sign ? EVP_DigestSignUpdate(op->mdctx, part, len)
                     : EVP_DigestVerifyUpdate(op->mdctx, part, len)) > 0
                   ? CKR_OK
                   : CKR_FUNCTION_FAILED;
    if (op->buf_len + len > KG_P11_MAX_RAW_INPUT)
        return CKR_DATA_LEN_RANGE;
    if ((grown = OPENSSL_clear_realloc(op->buf, op->buf_len, op->buf_len + len + 1)) == NULL)
        return CKR_HOST_MEMORY;
    op->buf = grown;
    memcpy(op->buf + op->buf_len, part, len);
    op->buf_len += len;
    return CKR_OK;
}

/* C_SignUpdate and C_VerifyUpdate: the session's operation of that direction takes one more part;
 * any failure but "not initialized" ends the operation. */
static CK_RV session_update(CK_SESSION_HANDLE h, CK_BYTE_PTR part, CK_ULONG len, int sign)
{
    kg_p11_session *s;
    kg_p11_op *op;
    CK_RV rv;

    if ((rv = kg_p11_session_get(h, &s)) != CKR_OK)
        return rv;
    op = sign ? &s->sign : &s->verify;
    if (!op->active)
        rv = CKR_OPERATION_NOT_INITIALIZED;
    else if (part == NULL && len > 0)
        rv = CKR_ARGUMENTS_BAD;
    else
        rv = op_update(op, part ? part : (const unsigned char *)"", len, sign);
    if (rv != CKR_OK && rv != CKR_OPERATION_NOT_INITIALIZED)
        kg_p11_op_reset(op);
    kg_p11_session_put(s);
    return rv;
}

/* What a Final call still has to feed: nothing for hash mechanisms (NULL: the digest has it all),
 * the collected input for raw ones. */
static const unsigned char *final_input(const kg_p11_op *op, size_t *len)
{
    *len = op->mech->md != NULL ? 0 : op->buf_len;
    if (op->mech->md != NULL)
        return NULL;
    return op->buf ? op->buf : (const unsigned char *)"";
}

CK_RV kg_C_SignUpdate(CK_SESSION_HANDLE h, CK_BYTE_PTR part, CK_ULONG len)
{
    return session_update(h, part, len, 1);
}

CK_RV kg_C_SignFinal(CK_SESSION_HANDLE h, CK_BYTE_PTR sig, CK_ULONG_PTR sig_len)
{
    kg_p11_session *s;
    int keep = 0;
    CK_RV rv;

    if ((rv = kg_p11_session_get(h, &s)) != CKR_OK)
        return rv;
    if (!s->sign.active)
        rv = CKR_OPERATION_NOT_INITIALIZED;
    else if (sig_len == NULL)
        rv = CKR_ARGUMENTS_BAD;
    else if ((rv = sig_room(&s->sign, sig, sig_len, &keep)) == CKR_OK && !keep) {
        size_t len;
        const unsigned char *data = final_input(&s->sign, &len);
        rv = do_sign(&s->sign, data, len, sig, sig_len);
    }
    if (s->sign.active && !keep)
        kg_p11_op_reset(&s->sign);
    kg_p11_session_put(s);
    return rv;
}

CK_RV kg_C_VerifyInit(CK_SESSION_HANDLE h, CK_MECHANISM_PTR mech, CK_OBJECT_HANDLE key)
{
    return session_init(h, mech, key, 0);
}

static CK_RV do_verify(kg_p11_op *op, const unsigned char *data, size_t len, const unsigned char *sig,
                       size_t sig_len)
{
    unsigned char *der = NULL;
    int der_len = 0, ok;
    CK_RV rv;

    if (sig_len != sig_size(op))
        return CKR_SIGNATURE_LEN_RANGE;
    if (op->mech->md == NULL && (rv = raw_input_ok(op, len)) != CKR_OK)
        return rv;
    if (op->key->type == KG_P11_EC && (der = ecdsa_raw_to_der(sig, op->key->field_len, &der_len)) == NULL)
        return CKR_SIGNATURE_INVALID;
    if (der != NULL) {
        sig = der;
        sig_len = (size_t)der_len;
    }
    ERR_set_mark();
    if (op->mech->md != NULL)
        ok = (data == NULL || EVP_DigestVerifyUpdate(op->mdctx, data, len) > 0) &&
             EVP_DigestVerifyFinal(op->mdctx, sig, sig_len) > 0;
    else
        ok = EVP_PKEY_verify(op->pctx, sig, sig_len, data, len) > 0;
    ERR_pop_to_mark();
    OPENSSL_free(der);
    return ok ? CKR_OK : CKR_SIGNATURE_INVALID;
}

CK_RV kg_C_Verify(CK_SESSION_HANDLE h, CK_BYTE_PTR data, CK_ULONG len, CK_BYTE_PTR sig, CK_ULONG sig_len)
{
    kg_p11_session *s;
    CK_RV rv;

    if ((rv = kg_p11_session_get(h, &s)) != CKR_OK)
        return rv;
    if (!s->verify.active)
        rv = CKR_OPERATION_NOT_INITIALIZED;
    else if (sig == NULL || (data == NULL && len > 0))
        rv = CKR_ARGUMENTS_BAD;
    else
        rv = do_verify(&s->verify, data ? data : (const unsigned char *)"", len, sig, sig_len);
    if (s->verify.active)
        kg_p11_op_reset(&s->verify);
    kg_p11_session_put(s);
    return rv;
}

CK_RV kg_C_VerifyUpdate(CK_SESSION_HANDLE h, CK_BYTE_PTR part, CK_ULONG len)
{
    return session_update(h, part, len, 0);
}

CK_RV kg_C_VerifyFinal(CK_SESSION_HANDLE h, CK_BYTE_PTR sig, CK_ULONG sig_len)
{
    kg_p11_session *s;
    kg_p11_op *op;
    CK_RV rv;

    if ((rv = kg_p11_session_get(h, &s)) != CKR_OK)
        return rv;
    op = &s->verify;
    if (!op->active)
        rv = CKR_OPERATION_NOT_INITIALIZED;
    else if (sig == NULL)
        rv = CKR_ARGUMENTS_BAD;
    else {
        size_t len;
        const unsigned char *data = final_input(op, &len);
        rv = do_verify(op, data, len, sig, sig_len);
    }
    if (op->active)
        kg_p11_op_reset(op);
    kg_p11_session_put(s);
    return rv;
}
