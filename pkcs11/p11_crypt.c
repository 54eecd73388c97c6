/* SPDX-License-Identifier: Apache-2.0 */
/*
 * C_DecryptInit/C_Decrypt (released private key) and C_EncryptInit/C_Encrypt (the reference's
 * public key, no attestation): CKM_RSA_PKCS and CKM_RSA_PKCS_OAEP, single-part.
 *
 * A NULL output asks for the size (the modulus size, an upper bound for decryption); a buffer
 * smaller than the plaintext gets CKR_BUFFER_TOO_SMALL with the exact size. Both keep the
 * operation active. Decryption failures are one code (CKR_ENCRYPTED_DATA_INVALID) with no
 * detail, so that padding errors are no oracle.
 */
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <string.h>

#include "p11.h"

CK_RV kg_C_DecryptInit(CK_SESSION_HANDLE h, CK_MECHANISM_PTR mech, CK_OBJECT_HANDLE key)
{
    kg_p11_session *s;
    CK_RV rv;

    if ((rv = kg_p11_session_get(h, &s)) != CKR_OK)
        return rv;
    rv = kg_p11_op_init(&s->decrypt, mech, key, CKF_DECRYPT, "C_DecryptInit");
    kg_p11_session_put(s);
    return rv;
}

static CK_RV do_decrypt(kg_p11_op *op, const unsigned char *in, size_t in_len, unsigned char *out,
                        CK_ULONG *out_len, int *keep)
{
    size_t k = op->key->modulus_len, len = k;
    unsigned char *tmp;
    CK_RV rv = CKR_OK;

    *keep = 1;
    if (out == NULL) {
        *out_len = (CK_ULONG)k;
        return CKR_OK;
    }
    *keep = 0;
    if (in_len != k)
        return CKR_ENCRYPTED_DATA_LEN_RANGE;
    if ((tmp = OPENSSL_secure_malloc(k)) == NULL)
        return CKR_HOST_MEMORY;
    ERR_set_mark();
    if (EVP_PKEY_decrypt(op->pctx, tmp, &len, in, in_len) <= 0)
        rv = CKR_ENCRYPTED_DATA_INVALID;
    ERR_pop_to_mark();
    if (rv == CKR_OK && *out_len < len) {
        *keep = 1;
        rv = CKR_BUFFER_TOO_SMALL;
    } else if (rv == CKR_OK)
        memcpy(out, tmp, len);
    if (rv == CKR_OK || rv == CKR_BUFFER_TOO_SMALL)
        *out_len = (CK_ULONG)len;
    OPENSSL_secure_clear_free(tmp, k);
    return rv;
}

CK_RV kg_C_Decrypt(CK_SESSION_HANDLE h, CK_BYTE_PTR in, CK_ULONG in_len, CK_BYTE_PTR out,
                   CK_ULONG_PTR out_len)
{
    kg_p11_session *s;
    int keep = 0;
    CK_RV rv;

    if ((rv = kg_p11_session_get(h, &s)) != CKR_OK)
        return rv;
    if (!s->decrypt.active)
        rv = CKR_OPERATION_NOT_INITIALIZED;
    else if (in == NULL || out_len == NULL)
        rv = CKR_ARGUMENTS_BAD;
    else
        rv = do_decrypt(&s->decrypt, in, in_len, out, out_len, &keep);
    if (s->decrypt.active && !keep)
        kg_p11_op_reset(&s->decrypt);
    kg_p11_session_put(s);
    return rv;
}

CK_RV kg_C_EncryptInit(CK_SESSION_HANDLE h, CK_MECHANISM_PTR mech, CK_OBJECT_HANDLE key)
{
    kg_p11_session *s;
    CK_RV rv;

    if ((rv = kg_p11_session_get(h, &s)) != CKR_OK)
        return rv;
    rv = kg_p11_op_init(&s->encrypt, mech, key, CKF_ENCRYPT, "C_EncryptInit");
    kg_p11_session_put(s);
    return rv;
}

CK_RV kg_C_Encrypt(CK_SESSION_HANDLE h, CK_BYTE_PTR in, CK_ULONG in_len, CK_BYTE_PTR out,
                   CK_ULONG_PTR out_len)
{
    kg_p11_session *s;
    kg_p11_op *op;
    size_t len;
    int keep = 0;
    CK_RV rv;

    if ((rv = kg_p11_session_get(h, &s)) != CKR_OK)
        return rv;
    op = &s->encrypt;
    if (!op->active)
        rv = CKR_OPERATION_NOT_INITIALIZED;
    else if ((in == NULL && in_len > 0) || out_len == NULL)
        rv = CKR_ARGUMENTS_BAD;
    else if (out == NULL || *out_len < op->key->modulus_len) {
        keep = 1;
        rv = out == NULL ? CKR_OK : CKR_BUFFER_TOO_SMALL;
        *out_len = (CK_ULONG)op->key->modulus_len;
    } else {
        len = *out_len;
        ERR_set_mark();
        if (EVP_PKEY_encrypt(op->pctx, out, &len, in ? in : (const unsigned char *)"", in_len) <= 0)
            rv = CKR_DATA_LEN_RANGE; /* the only way a public-key encryption fails on valid input */
        ERR_pop_to_mark();
        if (rv == CKR_OK)
            *out_len = (CK_ULONG)len;
    }
    if (op->active && !keep)
        kg_p11_op_reset(op);
    kg_p11_session_put(s);
    return rv;
}
