/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ECDH for keygate EC keys: derive between the released private key and the peer's public key,
 * forwarded to an inner EVP_PKEY_CTX in kg_libctx(). Cofactor mode and the X9.63 KDF parameters
 * are the default provider's, passed through untouched.
 *
 * The peer arrives as a kg_key too: libcrypto imports a foreign peer (a public key from a file,
 * a TLS key share) into our keymgmt before set_peer, and our keymgmt keeps it in ref.pubkey.
 *
 * Algorithm table entry for provider.c (OSSL_OP_KEYEXCH):
 *   {"ECDH", "provider=keygate", kg_ecdh_keyexch_functions},
 */
#include <openssl/core_dispatch.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/x509.h>
#include <stdlib.h>
#include <string.h>

#include "kg_libctx.h"
#include "provider.h"

/* provider.h; newctx/freectx/dupctx in prov_inner.c. inner is on the released private key. */
typedef kg_inner_ctx kg_kex_ctx;

static OSSL_FUNC_keyexch_init_fn kg_kex_init;
static OSSL_FUNC_keyexch_set_peer_fn kg_kex_set_peer;
static OSSL_FUNC_keyexch_derive_fn kg_kex_derive;
static OSSL_FUNC_keyexch_settable_ctx_params_fn kg_kex_settable_ctx_params;
static OSSL_FUNC_keyexch_gettable_ctx_params_fn kg_kex_gettable_ctx_params;

/* Fallbacks if the default provider's lists cannot be fetched (see kg_inner_param_list): the names and
 * types of OpenSSL 3.0's ECDH. */
static const OSSL_PARAM kg_kex_settable[] = {
    OSSL_PARAM_int(OSSL_EXCHANGE_PARAM_EC_ECDH_COFACTOR_MODE, NULL),
    OSSL_PARAM_utf8_string(OSSL_EXCHANGE_PARAM_KDF_TYPE, NULL, 0),
    OSSL_PARAM_utf8_string(OSSL_EXCHANGE_PARAM_KDF_DIGEST, NULL, 0),
    OSSL_PARAM_utf8_string(OSSL_EXCHANGE_PARAM_KDF_DIGEST_PROPS, NULL, 0),
    OSSL_PARAM_size_t(OSSL_EXCHANGE_PARAM_KDF_OUTLEN, NULL),
    OSSL_PARAM_octet_string(OSSL_EXCHANGE_PARAM_KDF_UKM, NULL, 0),
    OSSL_PARAM_END};

static const OSSL_PARAM kg_kex_gettable[] = {
    OSSL_PARAM_int(OSSL_EXCHANGE_PARAM_EC_ECDH_COFACTOR_MODE, NULL),
    OSSL_PARAM_utf8_string(OSSL_EXCHANGE_PARAM_KDF_TYPE, NULL, 0),
    OSSL_PARAM_utf8_string(OSSL_EXCHANGE_PARAM_KDF_DIGEST, NULL, 0),
    OSSL_PARAM_size_t(OSSL_EXCHANGE_PARAM_KDF_OUTLEN, NULL),
    OSSL_PARAM_DEFN(OSSL_EXCHANGE_PARAM_KDF_UKM, OSSL_PARAM_OCTET_PTR, NULL, 0),
    OSSL_PARAM_END};

static int kg_kex_init(void *vctx, void *vkey, const OSSL_PARAM params[])
{
    kg_kex_ctx *ctx = vctx;
    kg_key *key = kg_key_cast(vkey, KG_KEY_TYPE_EC);
    EVP_PKEY *priv;

    EVP_PKEY_CTX_free(ctx->inner);
    ctx->inner = NULL;
    ctx->key = ctx->peer = NULL;
    ctx->agent = 0;
    if (key == NULL) {
        KG_PROV_ERROR(ctx->provctx, KG_R_OPERATION, "keygate ECDH: not a keygate EC key");
        return 0;
    }
    if (ctx->provctx->agent != NULL) {
        /* the agent derives; a context on the public key checks the peer and answers the size */
        if (key->ref.pubkey == NULL)
            goto err;
        ctx->agent = 1;
        ctx->inner = EVP_PKEY_CTX_new_from_pkey(kg_libctx(), key->ref.pubkey, NULL);
        if (ctx->inner == NULL || EVP_PKEY_derive_init_ex(ctx->inner, params) <= 0)
            goto err;
        ctx->key = key;
        return 1;
    }
    if ((priv = kg_key_private(key)) == NULL)
        return 0; /* the release error is already raised */
    ctx->inner = EVP_PKEY_CTX_new_from_pkey(kg_libctx(), priv, NULL); /* holds its own reference */
    EVP_PKEY_free(priv);
    if (ctx->inner == NULL || EVP_PKEY_derive_init_ex(ctx->inner, params) <= 0)
        goto err;
    ctx->key = key;
    return 1;
err:
    EVP_PKEY_CTX_free(ctx->inner);
    ctx->inner = NULL;
    KG_PROV_ERROR(ctx->provctx, KG_R_OPERATION, "keygate ECDH: init failed");
    return 0;
}

static int kg_kex_set_peer(void *vctx, void *vpeer)
{
    kg_kex_ctx *ctx = vctx;
    kg_key *peer = kg_key_cast(vpeer, KG_KEY_TYPE_EC);

    if (ctx->inner == NULL) {
        KG_PROV_ERROR(ctx->provctx, KG_R_OPERATION, "keygate ECDH: not initialised");
        return 0;
    }
    if (peer == NULL || peer->ref.pubkey == NULL) {
        KG_PROV_ERROR(ctx->provctx, KG_R_OPERATION, "keygate ECDH: the peer is not an EC public key");
        return 0;
    }
    /* validate: the default provider checks the point is on our curve (invalid-curve attacks) */
    if (EVP_PKEY_derive_set_peer_ex(ctx->inner, peer->ref.pubkey, 1) <= 0) {
        KG_PROV_ERROR(ctx->provctx, KG_R_OPERATION, "keygate ECDH: the peer key was rejected");
        return 0;
    }
    ctx->peer = peer;
    return 1;
}

/* backend = agent: the agent derives with the peer's SubjectPublicKeyInfo. The default
 * provider's KDF (X9.63) would need the raw secret here: not offered. */
static int agent_derive(kg_kex_ctx *ctx, unsigned char *secret, size_t *secretlen, size_t outlen)
{
    char kdf[64] = "";
    OSSL_PARAM params[] = {OSSL_PARAM_utf8_string(OSSL_EXCHANGE_PARAM_KDF_TYPE, kdf, sizeof(kdf)),
                           OSSL_PARAM_END};
    unsigned char *der = NULL;
    kg_agent_req req;
    int len, ok;

    if (EVP_PKEY_CTX_get_params(ctx->inner, params) <= 0 || kdf[0] != '\0') {
        KG_PROV_ERROR(ctx->provctx, KG_R_NOT_AVAILABLE,
                      "keygate ECDH: backend = agent derives without a KDF only");
        return 0;
    }
    if ((len = i2d_PUBKEY(ctx->peer->ref.pubkey, &der)) <= 0) {
        KG_PROV_ERROR(ctx->provctx, KG_R_OPERATION, "keygate ECDH: cannot encode the peer key");
        return 0;
    }
    memset(&req, 0, sizeof(req));
    req.op = KG_AGENT_OP_DERIVE;
    req.peer_key = der;
    req.peer_key_len = (size_t)len;
    ok = kg_key_agent_call(ctx->key, &req, secret, outlen, secretlen); /* raises the failure */
    OPENSSL_free(der);
    return ok;
}

/* secret == NULL asks for the size (two-call pattern); otherwise outlen is the room in secret. */
static int kg_kex_derive(void *vctx, unsigned char *secret, size_t *secretlen, size_t outlen)
{
    kg_kex_ctx *ctx = vctx;
    size_t len = secret == NULL ? 0 : outlen;

    if (ctx->inner == NULL || ctx->peer == NULL) {
        KG_PROV_ERROR(ctx->provctx, KG_R_OPERATION, "keygate ECDH: no key or no peer set");
        return 0;
    }
    if (ctx->agent && secret != NULL)
        return agent_derive(ctx, secret, secretlen, outlen);
    if (EVP_PKEY_derive(ctx->inner, secret, &len) <= 0) {
        KG_PROV_ERROR(ctx->provctx, KG_R_OPERATION, "keygate ECDH: derive failed");
        return 0;
    }
    *secretlen = len;
    return 1;
}

static const OSSL_PARAM *kg_kex_settable_ctx_params(void *vctx, void *provctx)
{
    return kg_inner_param_list(vctx, OSSL_OP_KEYEXCH, "ECDH", 1, kg_kex_settable);
}

static const OSSL_PARAM *kg_kex_gettable_ctx_params(void *vctx, void *provctx)
{
    return kg_inner_param_list(vctx, OSSL_OP_KEYEXCH, "ECDH", 0, kg_kex_gettable);
}

const OSSL_DISPATCH kg_ecdh_keyexch_functions[] = {
    {OSSL_FUNC_KEYEXCH_NEWCTX, (void (*)(void))kg_inner_newctx},
    {OSSL_FUNC_KEYEXCH_FREECTX, (void (*)(void))kg_inner_freectx},
    {OSSL_FUNC_KEYEXCH_DUPCTX, (void (*)(void))kg_inner_dupctx},
    {OSSL_FUNC_KEYEXCH_INIT, (void (*)(void))kg_kex_init},
    {OSSL_FUNC_KEYEXCH_SET_PEER, (void (*)(void))kg_kex_set_peer},
    {OSSL_FUNC_KEYEXCH_DERIVE, (void (*)(void))kg_kex_derive},
    {OSSL_FUNC_KEYEXCH_SET_CTX_PARAMS, (void (*)(void))kg_inner_set_ctx_params},
    {OSSL_FUNC_KEYEXCH_SETTABLE_CTX_PARAMS, (void (*)(void))kg_kex_settable_ctx_params},
    {OSSL_FUNC_KEYEXCH_GET_CTX_PARAMS, (void (*)(void))kg_inner_get_ctx_params},
    {OSSL_FUNC_KEYEXCH_GETTABLE_CTX_PARAMS, (void (*)(void))kg_kex_gettable_ctx_params},
    {0, NULL}};
