/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kg_key: the provider's key object, and the per-process cache of released keys.
 *
 * Released keys are cached in the provider's key source (release/kg_keysource.h) by key id, KBS
 * and public key, and shared by all threads and all kg_key objects of the process (repeated
 * loads hit the cache, not the network). Each cached key has a lease (release/kg_lease.h):
 * refreshed in the background before it ends, wiped on revocation or when it ends. After fork
 * the child keeps the cache and refreshes on its own.
 */
#include <openssl/core_dispatch.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kg_libctx.h"
#include "kg_log.h"
#include "provider.h"

kg_key *kg_key_new(kg_provctx *ctx, int type)
{
    kg_key *key = calloc(1, sizeof(*key));

    if (key == NULL)
        return NULL;
    key->magic = KG_KEY_MAGIC;
    key->provctx = ctx;
    key->type = type;
    return key;
}

void kg_key_free(kg_key *key)
{
    if (key == NULL)
        return;
    kg_keyref_clear(&key->ref); /* the slot belongs to the provider's key source */
    key->magic = 0;
    free(key);
}

int kg_key_type_of(const EVP_PKEY *pkey)
{
    if (EVP_PKEY_is_a(pkey, "RSA"))
        return KG_KEY_TYPE_RSA;
    if (EVP_PKEY_is_a(pkey, "EC"))
        return KG_KEY_TYPE_EC;
    return 0;
}

static void raise_release_error(kg_provctx *ctx, const kg_key *key, const kg_err *err)
{
    KG_LOG(KG_LOG_ERROR, "key %s: %s", key->ref.key_id, err->msg);
    if (err->request_id[0] != '\0' || err->trace_id[0] != '\0')
        KG_PROV_RAISE(ctx, KG_R_RELEASE, "keygate: key %s: %s (request-id %s, trace-id %s)", key->ref.key_id,
                      err->msg, err->request_id[0] ? err->request_id : "-",
                      err->trace_id[0] ? err->trace_id : "-");
    else
        KG_PROV_RAISE(ctx, KG_R_RELEASE, "keygate: key %s: %s", key->ref.key_id, err->msg);
}

static EVP_PKEY *key_private(kg_key *key, int op)
{
    kg_provctx *ctx = key->provctx;
    kg_keyslot *slot = __atomic_load_n(&key->slot, __ATOMIC_ACQUIRE);
    kg_lease_state st;
    EVP_PKEY *priv = NULL;
    kg_err err;

    kg_err_clear(&err); /* the message below prints its request-id/trace-id fields */
    if (slot == NULL) {
        if (!key->has_ref) {
            KG_PROV_RAISE(ctx, KG_R_OPERATION, "keygate: this key object holds only a public key");
            return NULL;
        }
        /* (key id, KBS, public key): a reference never gets a key released for another one */
        if (ctx->keys_src == NULL || (slot = kg_keysource_slot(ctx->keys_src, &key->ref, &err)) == NULL) {
            raise_release_error(ctx, key, &err);
            return NULL;
        }
        __atomic_store_n(&key->slot, slot, __ATOMIC_RELEASE); /* racing threads find the same slot */
    }
    /* the hot path (every signature) takes the lease's shared lock, never the network; a first
     * use releases under this key's own lock only */
    st = kg_keysource_private(ctx->keys_src, slot, op, &priv, NULL, &err);
    if (st == KG_LEASE_REVOKED) {
        KG_LOG(KG_LOG_ERROR, "%s", err.msg);
        KG_PROV_RAISE(ctx, KG_R_RELEASE, "%s", err.msg);
        return NULL;
    }
    if (priv == NULL)
        raise_release_error(ctx, key, &err);
    return priv;
}

EVP_PKEY *kg_key_private(kg_key *key)
{
    return key_private(key, 1);
}

EVP_PKEY *kg_key_private_load(kg_key *key)
{
    return key_private(key, 0);
}

int kg_inner_set_params(EVP_PKEY_CTX *inner, const OSSL_PARAM params[])
{
    if (params == NULL || params[0].key == NULL)
        return 1;
    return inner != NULL && EVP_PKEY_CTX_set_params(inner, params) > 0;
}

int kg_inner_get_params(EVP_PKEY_CTX *inner, OSSL_PARAM params[])
{
    if (params == NULL || params[0].key == NULL)
        return 1;
    return inner != NULL && EVP_PKEY_CTX_get_params(inner, params) > 0;
}

const OSSL_PARAM *kg_inner_param_list(const EVP_PKEY_CTX *inner, int operation, const char *alg, int settable,
                                      const OSSL_PARAM *fallback)
{
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
