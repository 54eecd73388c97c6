/*
 * kg_key: the provider's key object, and the per-process cache of released keys.
 *
 * Released keys are cached by key id and shared by all threads and all kg_key objects of the
 * process (nginx per-handshake loads hit the cache, not the network). After fork the child
 * keeps the cache: the keys stay valid without a new attestation.
 */
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
    for (int i = 0; i < KG_SIGN_TMPL_MAX; i++)
        kg_sign_tmpl_free(key->sign_tmpl[i]);
    EVP_PKEY_free(key->priv);
    kg_keyref_clear(&key->ref);
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

/* The cached key for id (one new reference), or NULL. Called with ctx->lock held. */
static EVP_PKEY *cache_get(kg_provctx *ctx, const char *id)
{
    for (size_t i = 0; i < ctx->cache_len; i++)
        if (strcmp(ctx->cache[i].key_id, id) == 0)
            return EVP_PKEY_up_ref(ctx->cache[i].priv) ? ctx->cache[i].priv : NULL;
    return NULL;
}

static void cache_put(kg_provctx *ctx, const char *id, EVP_PKEY *priv)
{
    if (ctx->cache_len == KG_PROV_CACHE_MAX || !EVP_PKEY_up_ref(priv))
        return;
    snprintf(ctx->cache[ctx->cache_len].key_id, sizeof(ctx->cache[0].key_id), "%s", id);
    ctx->cache[ctx->cache_len++].priv = priv;
}

EVP_PKEY *kg_key_private(kg_key *key)
{
    kg_provctx *ctx = key->provctx;
    EVP_PKEY *priv = __atomic_load_n(&key->priv, __ATOMIC_ACQUIRE);
    kg_release_times t;
    kg_err err;

    if (priv != NULL) /* the hot path (every signature) takes no lock */
        return priv;
    kg_err_clear(&err); /* the message below prints its request-id/trace-id fields */
    /* one lock per process (re-initialised after fork): concurrent loads of a key attest once */
    pthread_mutex_lock(&ctx->lock);
    if ((priv = key->priv) != NULL) {
        pthread_mutex_unlock(&ctx->lock);
        return priv;
    }
    if (!key->has_ref) {
        pthread_mutex_unlock(&ctx->lock);
        KG_PROV_RAISE(ctx, KG_R_OPERATION, "keygate: this key object holds only a public key");
        return NULL;
    }
    priv = cache_get(ctx, key->ref.key_id);
    if (priv == NULL) {
        if (ctx->release == NULL && (ctx->release = kg_release_ctx_new(&ctx->cfg, &err)) == NULL)
            goto fail;
        KG_INFO("releasing key %s", key->ref.key_id);
        if (!kg_release_key(ctx->release, &key->ref, &priv, &t, &err))
            goto fail;
        cache_put(ctx, key->ref.key_id, priv);
    }
    __atomic_store_n(&key->priv, priv, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&ctx->lock);
    return priv;
fail:
    pthread_mutex_unlock(&ctx->lock);
    KG_LOG(KG_LOG_ERROR, "key %s: %s", key->ref.key_id, err.msg);
    if (err.request_id[0] != '\0' || err.trace_id[0] != '\0')
        KG_PROV_RAISE(ctx, KG_R_RELEASE, "keygate: key %s: %s (request-id %s, trace-id %s)", key->ref.key_id,
                      err.msg, err.request_id[0] ? err.request_id : "-",
                      err.trace_id[0] ? err.trace_id : "-");
    else
        KG_PROV_RAISE(ctx, KG_R_RELEASE, "keygate: key %s: %s", key->ref.key_id, err.msg);
    return NULL;
}
