#include "kg_libctx.h"

#include <openssl/crypto.h>
#include <openssl/provider.h>
#include <pthread.h>

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
