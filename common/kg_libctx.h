/*
 * The private OpenSSL library context of keygate's own crypto and TLS.
 *
 * keygate's provider calls into this library, so nothing here may ever fetch an algorithm
 * from the application's default context (which may have keygate loaded: recursion). This
 * context loads no configuration and only the default provider. It lives for the process.
 */
#ifndef KG_LIBCTX_H
#define KG_LIBCTX_H

#include <openssl/types.h>

/* Returns the context (created once, thread-safe), or NULL if OpenSSL could not create it. */
OSSL_LIB_CTX *kg_libctx(void);

/* Frees the context at process end (the CLI's atexit, the provider's teardown, C_Finalize), so
 * leak checkers see nothing. Every object made in it must be freed before. Not thread-safe.
 * A later kg_libctx() creates a fresh context (C_Initialize after C_Finalize). */
void kg_libctx_cleanup(void);

/* A key-generation / fromdata context for `type` ("EC" or "RSA"; any other name is passed on as
 * is) in libctx (NULL: kg_libctx()), always served by a provider, never by an ENGINE. Why: in
 * OpenSSL 3.0, EVP_PKEY_CTX_new_from_name() maps a name with a legacy NID ("EC", "RSA") to that
 * NID and asks the process-global ENGINE table (ENGINE_get_pkey_meth_engine) first, whatever the
 * libctx; a host that made an ENGINE the default (nginx `ssl_engine`, or libcurl's
 * OPENSSL_init_ssl(OPENSSL_INIT_ENGINE_ALL_BUILTIN) registering every configured ENGINE) would
 * get our key generation. The algorithm's OID, an alias of the provider's keymgmt, maps to no
 * NID, so only the provider fetch runs. Caller frees with EVP_PKEY_CTX_free. */
EVP_PKEY_CTX *kg_pkey_ctx_new_from_name(OSSL_LIB_CTX *libctx, const char *type);

/* A fresh EC key on the named curve (e.g. "P-256") made as above, or NULL. Caller frees. */
EVP_PKEY *kg_pkey_ec_keygen(OSSL_LIB_CTX *libctx, const char *curve);

#endif
