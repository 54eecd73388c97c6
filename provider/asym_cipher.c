/* SPDX-License-Identifier: Apache-2.0 */
/*
 * RSA asymmetric cipher for keygate keys: encryption (public, from the reference) and decryption
 * (the released private key). Both forward to an inner EVP_PKEY_CTX in kg_libctx(), so padding
 * (PKCS#1 v1.5, OAEP, no padding, the TLS pre-master variant) and every parameter are OpenSSL's
 * own default implementation; we only route the key.
 *
 * Algorithm table entry for provider.c (OSSL_OP_ASYM_CIPHER):
 *   {"RSA:rsaEncryption", "provider=keygate", kg_rsa_asym_cipher_functions},
 */
#include <openssl/core_dispatch.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/rsa.h>
#include <stdlib.h>
#include <string.h>

#include "kg_libctx.h"
#include "provider.h"

typedef kg_inner_ctx kg_asym_ctx; /* provider.h; newctx/freectx/dupctx in prov_inner.c */

static OSSL_FUNC_asym_cipher_encrypt_init_fn kg_asym_encrypt_init;
static OSSL_FUNC_asym_cipher_encrypt_fn kg_asym_encrypt;
static OSSL_FUNC_asym_cipher_decrypt_init_fn kg_asym_decrypt_init;
static OSSL_FUNC_asym_cipher_decrypt_fn kg_asym_decrypt;
static OSSL_FUNC_asym_cipher_settable_ctx_params_fn kg_asym_settable_ctx_params;
static OSSL_FUNC_asym_cipher_gettable_ctx_params_fn kg_asym_gettable_ctx_params;

/* Used only if the default provider's own lists cannot be fetched (see kg_inner_param_list). Same
 * names and types as the default RSA asym cipher of OpenSSL 3.0. */
static const OSSL_PARAM kg_asym_settable[] = {
    OSSL_PARAM_utf8_string(OSSL_ASYM_CIPHER_PARAM_PAD_MODE, NULL, 0),
    OSSL_PARAM_utf8_string(OSSL_ASYM_CIPHER_PARAM_OAEP_DIGEST, NULL, 0),
    OSSL_PARAM_utf8_string(OSSL_ASYM_CIPHER_PARAM_OAEP_DIGEST_PROPS, NULL, 0),
    OSSL_PARAM_utf8_string(OSSL_ASYM_CIPHER_PARAM_MGF1_DIGEST, NULL, 0),
    OSSL_PARAM_utf8_string(OSSL_ASYM_CIPHER_PARAM_MGF1_DIGEST_PROPS, NULL, 0),
    OSSL_PARAM_octet_string(OSSL_ASYM_CIPHER_PARAM_OAEP_LABEL, NULL, 0),
    OSSL_PARAM_uint(OSSL_ASYM_CIPHER_PARAM_TLS_CLIENT_VERSION, NULL),
    OSSL_PARAM_uint(OSSL_ASYM_CIPHER_PARAM_TLS_NEGOTIATED_VERSION, NULL),
    OSSL_PARAM_END};

static const OSSL_PARAM kg_asym_gettable[] = {
    OSSL_PARAM_DEFN(OSSL_ASYM_CIPHER_PARAM_PAD_MODE, OSSL_PARAM_UTF8_STRING, NULL, 0),
    OSSL_PARAM_utf8_string(OSSL_ASYM_CIPHER_PARAM_OAEP_DIGEST, NULL, 0),
    OSSL_PARAM_utf8_string(OSSL_ASYM_CIPHER_PARAM_MGF1_DIGEST, NULL, 0),
    OSSL_PARAM_DEFN(OSSL_ASYM_CIPHER_PARAM_OAEP_LABEL, OSSL_PARAM_OCTET_PTR, NULL, 0),
    OSSL_PARAM_uint(OSSL_ASYM_CIPHER_PARAM_TLS_CLIENT_VERSION, NULL),
    OSSL_PARAM_uint(OSSL_ASYM_CIPHER_PARAM_TLS_NEGOTIATED_VERSION, NULL),
    OSSL_PARAM_END};

/* (Re)initialises the inner context on pkey for encryption or decryption. */
static int asym_init(kg_asym_ctx *ctx, void *vkey, const OSSL_PARAM params[], int decrypt)
{
    kg_key *key = kg_key_cast(vkey, KG_KEY_TYPE_RSA);
    EVP_PKEY *pkey;

    EVP_PKEY_CTX_free(ctx->inner);
    ctx->inner = NULL;
    ctx->key = NULL;
    ctx->agent = 0;
    if (key == NULL) {
        KG_PROV_ERROR(ctx->provctx, KG_R_OPERATION, "keygate RSA cipher: not a keygate RSA key");
        return 0;
    }
    if (decrypt && ctx->provctx->agent != NULL) {
        /* the agent decrypts; an encryption context on the public key holds the parameters */
        ctx->agent = 1;
        decrypt = 0;
    }
    /* encryption needs only the reference's public key: no release for it */
    pkey = decrypt ? kg_key_private(key) : key->ref.pubkey;
    if (pkey == NULL) {
        if (!decrypt)
            KG_PROV_ERROR(ctx->provctx, KG_R_OPERATION, "keygate RSA cipher: the key has no public key");
        return 0; /* kg_key_private raised the release error */
    }
    ctx->inner = EVP_PKEY_CTX_new_from_pkey(kg_libctx(), pkey, NULL); /* holds its own reference */
    if (decrypt)
        EVP_PKEY_free(pkey); /* kg_key_private's reference */
    if (ctx->inner == NULL)
        goto err;
    if ((decrypt ? EVP_PKEY_decrypt_init_ex(ctx->inner, params)
                 : EVP_PKEY_encrypt_init_ex(ctx->inner, params)) <= 0)
        goto err;
    ctx->key = key;
    return 1;
err:
    EVP_PKEY_CTX_free(ctx->inner);
    ctx->inner = NULL;
    KG_PROV_ERROR(ctx->provctx, KG_R_OPERATION, "keygate RSA cipher: %s init failed",
                  decrypt || ctx->agent ? "decrypt" : "encrypt");
    return 0;
}

static int kg_asym_encrypt_init(void *vctx, void *vkey, const OSSL_PARAM params[])
{
    return asym_init(vctx, vkey, params, 0);
}

static int kg_asym_decrypt_init(void *vctx, void *vkey, const OSSL_PARAM params[])
{
    return asym_init(vctx, vkey, params, 1);
}

/* backend = agent: the parameters of the context, and the agent's decryption. */
static int agent_decrypt(kg_asym_ctx *ctx, unsigned char *out, size_t *outlen, size_t outsize,
                         const unsigned char *in, size_t inlen)
{
    kg_agent_req req;
    char oaep_md[64] = "", mgf1[64] = "";
    int pad = 0;
    unsigned int client_version = 0, negotiated_version = 0;
    void *label = NULL;
    size_t label_len = 0;
    OSSL_PARAM params[] = {
        OSSL_PARAM_int(OSSL_ASYM_CIPHER_PARAM_PAD_MODE, &pad),
        OSSL_PARAM_utf8_string(OSSL_ASYM_CIPHER_PARAM_OAEP_DIGEST, oaep_md, sizeof(oaep_md)),
        OSSL_PARAM_utf8_string(OSSL_ASYM_CIPHER_PARAM_MGF1_DIGEST, mgf1, sizeof(mgf1)),
        OSSL_PARAM_octet_ptr(OSSL_ASYM_CIPHER_PARAM_OAEP_LABEL, &label, 0),
        OSSL_PARAM_uint(OSSL_ASYM_CIPHER_PARAM_TLS_CLIENT_VERSION, &client_version),
        OSSL_PARAM_uint(OSSL_ASYM_CIPHER_PARAM_TLS_NEGOTIATED_VERSION, &negotiated_version),
        OSSL_PARAM_END};

    if (out == NULL) { /* the size: at most the modulus */
        *outlen = (size_t)EVP_PKEY_get_size(ctx->key->ref.pubkey);
        return 1;
    }
    if (EVP_PKEY_CTX_get_params(ctx->inner, params) <= 0)
        goto unsupported;
    label_len = params[3].return_size;
    memset(&req, 0, sizeof(req));
    req.op = KG_AGENT_OP_DECRYPT;
    req.data = in;
    req.data_len = inlen;
    switch (pad) {
    case RSA_PKCS1_PADDING: req.padding = KG_AGENT_PAD_PKCS1; break;
    case RSA_NO_PADDING: req.padding = KG_AGENT_PAD_NONE; break;
    case RSA_PKCS1_OAEP_PADDING:
        req.padding = KG_AGENT_PAD_OAEP;
        req.digest = kg_agent_digest_named(oaep_md[0] ? oaep_md : "SHA1");
        req.mgf1_digest = mgf1[0] ? kg_agent_digest_named(mgf1) : req.digest;
        if (req.digest == 0 || req.mgf1_digest == 0)
            goto unsupported;
        if (label != NULL && label_len > 0) { /* absent = the empty label (one encoding) */
            req.label = label;
            req.label_len = label_len;
        }
        break;
    case RSA_PKCS1_WITH_TLS_PADDING:
        req.padding = KG_AGENT_PAD_PKCS1_TLS;
        if (client_version == 0 || client_version > 0xffff || negotiated_version > 0xffff)
            goto unsupported;
        req.tls_client_version = (uint16_t)client_version;
        req.tls_negotiated_version = (uint16_t)negotiated_version;
        break;
    default: goto unsupported;
    }
    return kg_key_agent_call(ctx->key, &req, out, outsize, outlen); /* raises the failure */
unsupported:
    KG_PROV_ERROR(ctx->provctx, KG_R_NOT_AVAILABLE,
                  "keygate RSA cipher: backend = agent decrypts PKCS#1 v1.5, OAEP with SHA-1 or SHA-2, no "
                  "padding and the TLS pre-master padding only (padding %d, OAEP digest %s, MGF1 %s)",
                  pad, oaep_md[0] ? oaep_md : "default", mgf1[0] ? mgf1 : "default");
    return 0;
}

/* Both directions: out == NULL asks for the maximum output size (two-call pattern); otherwise
 * outsize is the room in out. */
static int asym_run(kg_asym_ctx *ctx, unsigned char *out, size_t *outlen, size_t outsize,
                    const unsigned char *in, size_t inlen, int decrypt)
{
    size_t len = out == NULL ? 0 : outsize;
    int rc;

    if (ctx->inner == NULL) {
        KG_PROV_ERROR(ctx->provctx, KG_R_OPERATION, "keygate RSA cipher: not initialised");
        return 0;
    }
    if (ctx->agent) { /* initialised for decryption by the agent */
        if (decrypt)
            return agent_decrypt(ctx, out, outlen, outsize, in, inlen);
        KG_PROV_ERROR(ctx->provctx, KG_R_OPERATION, "keygate RSA cipher: initialised for decryption");
        return 0;
    }
    rc = decrypt ? EVP_PKEY_decrypt(ctx->inner, out, &len, in, inlen)
                 : EVP_PKEY_encrypt(ctx->inner, out, &len, in, inlen);
    if (rc <= 0) {
        /* the default provider's error (e.g. "oaep decoding error") is already queued; no
         * extra text for decryption, so that padding failures do not become an oracle */
        if (!decrypt)
            KG_PROV_ERROR(ctx->provctx, KG_R_OPERATION, "keygate RSA cipher: encryption failed");
        return 0;
    }
    *outlen = len;
    return 1;
}

static int kg_asym_encrypt(void *vctx, unsigned char *out, size_t *outlen, size_t outsize,
                           const unsigned char *in, size_t inlen)
{
    return asym_run(vctx, out, outlen, outsize, in, inlen, 0);
}

static int kg_asym_decrypt(void *vctx, unsigned char *out, size_t *outlen, size_t outsize,
                           const unsigned char *in, size_t inlen)
{
    return asym_run(vctx, out, outlen, outsize, in, inlen, 1);
}

static const OSSL_PARAM *kg_asym_settable_ctx_params(void *vctx, void *provctx)
{
    return kg_inner_param_list(vctx, OSSL_OP_ASYM_CIPHER, "RSA", 1, kg_asym_settable);
}

static const OSSL_PARAM *kg_asym_gettable_ctx_params(void *vctx, void *provctx)
{
    return kg_inner_param_list(vctx, OSSL_OP_ASYM_CIPHER, "RSA", 0, kg_asym_gettable);
}

const OSSL_DISPATCH kg_rsa_asym_cipher_functions[] = {
    {OSSL_FUNC_ASYM_CIPHER_NEWCTX, (void (*)(void))kg_inner_newctx},
    {OSSL_FUNC_ASYM_CIPHER_FREECTX, (void (*)(void))kg_inner_freectx},
    {OSSL_FUNC_ASYM_CIPHER_DUPCTX, (void (*)(void))kg_inner_dupctx},
    {OSSL_FUNC_ASYM_CIPHER_ENCRYPT_INIT, (void (*)(void))kg_asym_encrypt_init},
    {OSSL_FUNC_ASYM_CIPHER_ENCRYPT, (void (*)(void))kg_asym_encrypt},
    {OSSL_FUNC_ASYM_CIPHER_DECRYPT_INIT, (void (*)(void))kg_asym_decrypt_init},
    {OSSL_FUNC_ASYM_CIPHER_DECRYPT, (void (*)(void))kg_asym_decrypt},
    {OSSL_FUNC_ASYM_CIPHER_SET_CTX_PARAMS, (void (*)(void))kg_inner_set_ctx_params},
    {OSSL_FUNC_ASYM_CIPHER_SETTABLE_CTX_PARAMS, (void (*)(void))kg_asym_settable_ctx_params},
    {OSSL_FUNC_ASYM_CIPHER_GET_CTX_PARAMS, (void (*)(void))kg_inner_get_ctx_params},
    {OSSL_FUNC_ASYM_CIPHER_GETTABLE_CTX_PARAMS, (void (*)(void))kg_asym_gettable_ctx_params},
    {0, NULL}};
