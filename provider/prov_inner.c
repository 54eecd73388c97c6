/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kg_inner_ctx: the context shared by the operations that forward to an inner EVP_PKEY_CTX of
 * kg_libctx() (RSA asym cipher, ECDH): newctx/freectx/dupctx, the ctx parameters and their lists.
 */
#include <openssl/core_dispatch.h>
#include <openssl/evp.h>
#include <stdlib.h>

#include "kg_libctx.h"
#include "provider.h"

void *kg_inner_newctx(void *provctx)
{
    kg_inner_ctx *ctx = calloc(1, sizeof(*ctx));

    if (ctx != NULL)
        ctx->provctx = provctx;
    else
        KG_PROV_ERROR(provctx, KG_R_INTERNAL, "keygate: out of memory");
    return ctx;
}

void kg_inner_freectx(void *vctx)
{
    kg_inner_ctx *ctx = vctx;

    if (ctx == NULL)
        return;
    EVP_PKEY_CTX_free(ctx->inner);
    free(ctx);
}

void *kg_inner_dupctx(void *vctx)
{
    kg_inner_ctx *src = vctx, *dst;

    if ((dst = calloc(1, sizeof(*dst))) == NULL)
        goto err;
    *dst = *src; /* provctx, and the borrowed key and peer */
    dst->inner = NULL;
    if (src->inner != NULL && (dst->inner = EVP_PKEY_CTX_dup(src->inner)) == NULL)
        goto err;
    return dst;
err:
    free(dst);
    KG_PROV_ERROR(src->provctx, KG_R_OPERATION, "keygate: cannot duplicate the operation context");
    return NULL;
}

int kg_inner_set_ctx_params(void *vctx, const OSSL_PARAM params[])
{
    kg_inner_ctx *ctx = vctx;

    if (params == NULL || params[0].key == NULL)
        return 1;
    return ctx->inner != NULL && EVP_PKEY_CTX_set_params(ctx->inner, params) > 0;
}

int kg_inner_get_ctx_params(void *vctx, OSSL_PARAM params[])
{
    kg_inner_ctx *ctx = vctx;

    if (params == NULL || params[0].key == NULL)
        return 1;
    return ctx->inner != NULL && EVP_PKEY_CTX_get_params(ctx->inner, params) > 0;
}

const OSSL_PARAM *kg_inner_param_list(const kg_inner_ctx *ctx, int operation, const char *alg, int settable,
                                      const OSSL_PARAM *fallback)
{
    const EVP_PKEY_CTX *inner = ctx != NULL ? ctx->inner : NULL;
    const OSSL_PARAM *list = NULL;
    EVP_ASYM_CIPHER *cipher;
    EVP_KEYEXCH *kex;

    if (inner != NULL)
        list = settable ? EVP_PKEY_CTX_settable_params(inner) : EVP_PKEY_CTX_gettable_params(inner);
    if (list == NULL && operation == OSSL_OP_ASYM_CIPHER &&
        (cipher = EVP_ASYM_CIPHER_fetch(kg_libctx(), alg, NULL)) != NULL) {
        list = settable ? EVP_ASYM_CIPHER_settable_ctx_params(cipher)
                        : EVP_ASYM_CIPHER_gettable_ctx_params(cipher);
        EVP_ASYM_CIPHER_free(cipher);
    } else if (list == NULL && operation == OSSL_OP_KEYEXCH &&
               (kex = EVP_KEYEXCH_fetch(kg_libctx(), alg, NULL)) != NULL) {
        list = settable ? EVP_KEYEXCH_settable_ctx_params(kex) : EVP_KEYEXCH_gettable_ctx_params(kex);
        EVP_KEYEXCH_free(kex);
    }
    return list != NULL ? list : fallback;
}
