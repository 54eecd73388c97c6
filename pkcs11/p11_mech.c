/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The mechanism table, C_GetMechanismList/C_GetMechanismInfo, and the PSS/OAEP parameters.
 *
 * Raw mechanisms take what the caller prepared (CKM_ECDSA: the hash; CKM_RSA_PKCS: a DigestInfo;
 * CKM_RSA_PKCS_PSS: the hash, with CK_RSA_PKCS_PSS_PARAMS); hash-and-sign mechanisms hash here.
 * ECDSA signatures are r||s (each the size of the group order), never DER.
 */
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>
#include <string.h>

#include "kg_libctx.h"
#include "p11.h"

#define EC_FLAGS (CKF_EC_F_P | CKF_EC_NAMEDCURVE | CKF_EC_UNCOMPRESS)
#define RSA_SIG (CKF_SIGN | CKF_VERIFY)

static const kg_p11_mech kg_p11_mechs[] = {
    {CKM_ECDSA, KG_P11_EC, CKF_SIGN | CKF_VERIFY | EC_FLAGS, NULL, 0, 0},
    /* SHA-1 and SHA-224: what Java's SunPKCS11 and older tools ask for */
    {CKM_ECDSA_SHA1, KG_P11_EC, CKF_SIGN | CKF_VERIFY | EC_FLAGS, "SHA1", 0, 0},
    {CKM_ECDSA_SHA224, KG_P11_EC, CKF_SIGN | CKF_VERIFY | EC_FLAGS, "SHA224", 0, 0},
    {CKM_ECDSA_SHA256, KG_P11_EC, CKF_SIGN | CKF_VERIFY | EC_FLAGS, "SHA256", 0, 0},
    {CKM_ECDSA_SHA384, KG_P11_EC, CKF_SIGN | CKF_VERIFY | EC_FLAGS, "SHA384", 0, 0},
    {CKM_ECDSA_SHA512, KG_P11_EC, CKF_SIGN | CKF_VERIFY | EC_FLAGS, "SHA512", 0, 0},
    {CKM_ECDH1_DERIVE, KG_P11_EC, CKF_DERIVE | EC_FLAGS, NULL, 0, 0},
    {CKM_RSA_PKCS, KG_P11_RSA, RSA_SIG | CKF_DECRYPT | CKF_ENCRYPT, NULL, 0, 0},
    {CKM_RSA_PKCS_PSS, KG_P11_RSA, RSA_SIG, NULL, 1, 0},
    {CKM_SHA1_RSA_PKCS, KG_P11_RSA, RSA_SIG, "SHA1", 0, 0},
    {CKM_SHA224_RSA_PKCS, KG_P11_RSA, RSA_SIG, "SHA224", 0, 0},
    {CKM_SHA256_RSA_PKCS, KG_P11_RSA, RSA_SIG, "SHA256", 0, 0},
    {CKM_SHA384_RSA_PKCS, KG_P11_RSA, RSA_SIG, "SHA384", 0, 0},
    {CKM_SHA512_RSA_PKCS, KG_P11_RSA, RSA_SIG, "SHA512", 0, 0},
    {CKM_SHA1_RSA_PKCS_PSS, KG_P11_RSA, RSA_SIG, "SHA1", 1, 0},
    {CKM_SHA224_RSA_PKCS_PSS, KG_P11_RSA, RSA_SIG, "SHA224", 1, 0},
    {CKM_SHA256_RSA_PKCS_PSS, KG_P11_RSA, RSA_SIG, "SHA256", 1, 0},
    {CKM_SHA384_RSA_PKCS_PSS, KG_P11_RSA, RSA_SIG, "SHA384", 1, 0},
    {CKM_SHA512_RSA_PKCS_PSS, KG_P11_RSA, RSA_SIG, "SHA512", 1, 0},
    {CKM_RSA_PKCS_OAEP, KG_P11_RSA, CKF_DECRYPT | CKF_ENCRYPT, NULL, 0, 1},
};
#define KG_P11_NMECHS (sizeof(kg_p11_mechs) / sizeof(kg_p11_mechs[0]))

const kg_p11_mech *kg_p11_mech_find(CK_MECHANISM_TYPE type)
{
    for (size_t i = 0; i < KG_P11_NMECHS; i++)
        if (kg_p11_mechs[i].type == type)
            return &kg_p11_mechs[i];
    return NULL;
}

const char *kg_p11_md_of(CK_MECHANISM_TYPE hash)
{
    switch (hash) {
    case CKM_SHA_1: return "SHA1";
    case CKM_SHA224: return "SHA224";
    case CKM_SHA256: return "SHA256";
    case CKM_SHA384: return "SHA384";
    case CKM_SHA512: return "SHA512";
    default: return NULL;
    }
}

static const char *mgf_md_of(CK_RSA_PKCS_MGF_TYPE mgf)
{
    switch (mgf) {
    case CKG_MGF1_SHA1: return "SHA1";
    case CKG_MGF1_SHA224: return "SHA224";
    case CKG_MGF1_SHA256: return "SHA256";
    case CKG_MGF1_SHA384: return "SHA384";
    case CKG_MGF1_SHA512: return "SHA512";
    default: return NULL;
    }
}

CK_RV kg_p11_mech_check(const kg_p11_mech *m, const CK_MECHANISM *mech)
{
    if (m->pss) {
        const CK_RSA_PKCS_PSS_PARAMS *p = mech->pParameter;
        if (p == NULL || mech->ulParameterLen != sizeof(*p) || kg_p11_md_of(p->hashAlg) == NULL ||
            mgf_md_of(p->mgf) == NULL)
            return CKR_MECHANISM_PARAM_INVALID;
        /* hash-and-sign: the parameters' hash must be the mechanism's */
        if (m->md != NULL && strcmp(m->md, kg_p11_md_of(p->hashAlg)) != 0)
            return CKR_MECHANISM_PARAM_INVALID;
    } else if (m->oaep) {
        const CK_RSA_PKCS_OAEP_PARAMS *p = mech->pParameter;
        if (p == NULL || mech->ulParameterLen != sizeof(*p) || kg_p11_md_of(p->hashAlg) == NULL ||
            mgf_md_of(p->mgf) == NULL)
            return CKR_MECHANISM_PARAM_INVALID;
        /* source 0 without a label is what pkcs11-tool 0.23 sends for "no label" */
        if (p->source == 0 ? p->ulSourceDataLen != 0 : p->source != CKZ_DATA_SPECIFIED)
            return CKR_MECHANISM_PARAM_INVALID;
        if (p->ulSourceDataLen > 0 && p->pSourceData == NULL)
            return CKR_MECHANISM_PARAM_INVALID;
    } else if (m->type != CKM_ECDH1_DERIVE && mech->ulParameterLen != 0) {
        return CKR_MECHANISM_PARAM_INVALID;
    }
    return CKR_OK;
}

CK_RV kg_p11_mech_apply(const kg_p11_mech *m, const CK_MECHANISM *mech, EVP_PKEY_CTX *pctx)
{
    if (m->key_type != KG_P11_RSA)
        return CKR_OK;
    if (m->pss) {
        const CK_RSA_PKCS_PSS_PARAMS *p = mech->pParameter;
        EVP_MD *md = m->md != NULL ? NULL : EVP_MD_fetch(kg_libctx(), kg_p11_md_of(p->hashAlg), NULL);
        int ok = (m->md != NULL || md != NULL) &&
                 EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) > 0 &&
                 (m->md != NULL || EVP_PKEY_CTX_set_signature_md(pctx, md) > 0) &&
                 EVP_PKEY_CTX_set_rsa_mgf1_md_name(pctx, mgf_md_of(p->mgf), NULL) > 0 &&
                 p->sLen <= 0x7fffffff && EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, (int)p->sLen) > 0;
        EVP_MD_free(md);
        return ok ? CKR_OK : CKR_MECHANISM_PARAM_INVALID;
    }
    if (m->oaep) {
        const CK_RSA_PKCS_OAEP_PARAMS *p = mech->pParameter;
        int ok = EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_OAEP_PADDING) > 0 &&
                 EVP_PKEY_CTX_set_rsa_oaep_md_name(pctx, kg_p11_md_of(p->hashAlg), NULL) > 0 &&
                 EVP_PKEY_CTX_set_rsa_mgf1_md_name(pctx, mgf_md_of(p->mgf), NULL) > 0;
        if (ok && p->ulSourceDataLen > 0) {
            void *label = OPENSSL_memdup(p->pSourceData, p->ulSourceDataLen); /* the ctx takes it */
            ok = label != NULL && EVP_PKEY_CTX_set0_rsa_oaep_label(pctx, label, (int)p->ulSourceDataLen) > 0;
            if (!ok)
                OPENSSL_free(label);
        }
        return ok ? CKR_OK : CKR_MECHANISM_PARAM_INVALID;
    }
    return EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) > 0 ? CKR_OK : CKR_FUNCTION_FAILED;
}

CK_RV kg_C_GetMechanismList(CK_SLOT_ID slot, CK_MECHANISM_TYPE_PTR list, CK_ULONG_PTR count)
{
    CK_RV rv = kg_p11_check_slot(slot);

    if (rv != CKR_OK)
        return rv;
    if (count == NULL)
        return CKR_ARGUMENTS_BAD;
    if (list != NULL) {
        if (*count < KG_P11_NMECHS) {
            *count = KG_P11_NMECHS;
            return CKR_BUFFER_TOO_SMALL;
        }
        for (size_t i = 0; i < KG_P11_NMECHS; i++)
            list[i] = kg_p11_mechs[i].type;
    }
    *count = KG_P11_NMECHS;
    return CKR_OK;
}

CK_RV kg_C_GetMechanismInfo(CK_SLOT_ID slot, CK_MECHANISM_TYPE type, CK_MECHANISM_INFO_PTR info)
{
    const kg_p11_mech *m;
    CK_RV rv = kg_p11_check_slot(slot);

    if (rv != CKR_OK)
        return rv;
    if (info == NULL)
        return CKR_ARGUMENTS_BAD;
    if ((m = kg_p11_mech_find(type)) == NULL)
        return CKR_MECHANISM_INVALID;
    /* key sizes in bits: what OpenSSL's default provider signs with; the KBS decides which keys exist */
    info->ulMinKeySize = m->key_type == KG_P11_RSA ? 1024 : 256;
    info->ulMaxKeySize = m->key_type == KG_P11_RSA ? 16384 : 521;
    info->flags = m->flags;
    return CKR_OK;
}
