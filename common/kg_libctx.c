/* SPDX-License-Identifier: Apache-2.0 */
#include "kg_libctx.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/provider.h>
#include <pthread.h>
#include <string.h>

static pthread_once_t libctx_once = PTHREAD_ONCE_INIT;
static OSSL_LIB_CTX *libctx;
static OSSL_PROVIDER *libctx_default;

static void libctx_create(void)
{
    OSSL_LIB_CTX *ctx = OSSL_LIB_CTX_new();

    if (ctx == NULL)
        return;
    if ((libctx_default = OSSL_PROVIDER_load(ctx, "default")) == NULL) {
        OSSL_LIB_CTX_free(ctx);
        return;
    }
    libctx = ctx;
}

OSSL_LIB_CTX *kg_libctx(void)
{
    pthread_once(&libctx_once, libctx_create);
    return libctx;
}

void kg_libctx_cleanup(void)
{
    if (libctx == NULL)
        return;
    OSSL_PROVIDER_unload(libctx_default);
    OSSL_LIB_CTX_free(libctx);
    libctx = NULL;
    libctx_default = NULL;
    libctx_once = (pthread_once_t)PTHREAD_ONCE_INIT; /* a later kg_libctx() makes a new one */
}

/* Provider algorithm names (OpenSSL's providers/implementations/include/prov/names.h) that
 * evp_pkey_name2type() cannot map to a legacy NID. */
static const struct {
    const char *type, *oid;
} pkey_oid_names[] = {
    {"EC", "1.2.840.10045.2.1"},
    {"RSA", "1.2.840.113549.1.1.1"},
};

EVP_PKEY_CTX *kg_pkey_ctx_new_from_name(OSSL_LIB_CTX *ctx, const char *type)
{
    const char *name = type;
    size_t i;

    for (i = 0; i < sizeof(pkey_oid_names) / sizeof(pkey_oid_names[0]); i++)
        if (strcmp(type, pkey_oid_names[i].type) == 0)
            name = pkey_oid_names[i].oid;
    return EVP_PKEY_CTX_new_from_name(ctx != NULL ? ctx : kg_libctx(), name, NULL);
}

EVP_PKEY *kg_pkey_ec_keygen(OSSL_LIB_CTX *ctx, const char *curve)
{
    EVP_PKEY_CTX *pctx = kg_pkey_ctx_new_from_name(ctx, "EC");
    EVP_PKEY *key = NULL;

    if (pctx == NULL || EVP_PKEY_keygen_init(pctx) <= 0 || EVP_PKEY_CTX_set_group_name(pctx, curve) <= 0 ||
        EVP_PKEY_keygen(pctx, &key) <= 0)
        key = NULL;
    EVP_PKEY_CTX_free(pctx);
    return key;
}
