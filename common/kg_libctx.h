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

#endif
