/* keygate OpenSSL 3 provider: shared context and reason codes. */
#ifndef KG_PROVIDER_H
#define KG_PROVIDER_H

#include <openssl/core.h>
#include <openssl/core_dispatch.h>

#include "kg_config.h"

/* Provider-specific reason codes, reported through get_reason_strings. */
enum {
    KG_R_CONFIG = 1, /* keygate.conf or an inline key in the provider section is invalid */
    KG_R_NOT_AVAILABLE = 2
};

typedef struct kg_provctx {
    const OSSL_CORE_HANDLE *handle;
    OSSL_LIB_CTX *libctx; /* the application's library context (for errors); never used for our own crypto */
    char config_path[512];
    kg_config cfg;
} kg_provctx;

#endif
