/* SPDX-License-Identifier: Apache-2.0 */
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
#include <stddef.h>

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

/* Returns 1 when no ENGINE is this process's default for (or registered for) the EC, RSA or
 * RSA-PSS key methods, SHA-256/384/512 or AES-256-GCM; else 0 with its id in engine_id. OpenSSL
 * 3.0 puts such an ENGINE in front of every EVP_PKEY_CTX made for an existing key
 * (EVP_PKEY_CTX_new_from_pkey, EVP_DigestSignInit_ex, ...) and of digests and ciphers, even
 * fetched ones in a private libctx, and no public API avoids it: keygate refuses to run its
 * crypto there rather than hand keys to a legacy ENGINE method. */
int kg_libctx_engine_check(char *engine_id, size_t len);

/* Removes every ENGINE in the process's engine list from the algorithm tables (not from the list,
 * and without touching keys that carry their ENGINE). For one use: libcurl's first
 * curl_global_init() calls OPENSSL_init_ssl(OPENSSL_INIT_ENGINE_ALL_BUILTIN), which ends in
 * ENGINE_register_all_complete() and so registers every ENGINE the host's openssl.cnf loaded
 * (e.g. libp11 for an nginx `engine:` key) for all its algorithms; kg_http undoes that when the
 * process had no such ENGINE before. Not for a host's own ENGINE_set_default. */
void kg_libctx_engine_unregister_all(void);

/* A fresh EC key on the named curve (e.g. "P-256") made as above, or NULL. Caller frees. */
EVP_PKEY *kg_pkey_ec_keygen(OSSL_LIB_CTX *libctx, const char *curve);

#endif
