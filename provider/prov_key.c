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
#include <openssl/x509.h>
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
    free(key->ref_der);
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

kg_key *kg_key_cast(void *keydata, int type)
{
    kg_key *key = keydata;

    if (key == NULL || key->magic != KG_KEY_MAGIC || (type != 0 && key->type != type))
        return NULL;
    return key;
}

kg_key *kg_key_reference_get(const void *objref, size_t objref_sz)
{
    const kg_key_reference *ref = objref;

    if (objref == NULL || objref_sz != sizeof(*ref) || ref->magic != KG_KEY_MAGIC || ref->version != 1)
        return NULL;
    return kg_key_cast(ref->key, 0);
}

/* This thread's last release failure, for kg_key_failure_reraise. Thread-local: decoders run in
 * the loading thread, and two threads loading keys must not see each other's failures. */
static __thread struct {
    int set;
    int reason;
    const char *file, *func; /* where it was raised (string literals) */
    int line;
    char key_id[sizeof(((kg_keyref *)0)->key_id)];
    char msg[1024];
} last_failure;

static void remember_failure(const char *file, int line, const char *func, const char *key_id, int reason,
                             const char *msg)
{
    last_failure.set = 1;
    last_failure.reason = reason;
    last_failure.file = file;
    last_failure.line = line;
    last_failure.func = func;
    snprintf(last_failure.key_id, sizeof(last_failure.key_id), "%s", key_id);
    snprintf(last_failure.msg, sizeof(last_failure.msg), "%s", msg);
}

/* Raises and logs a release failure, and keeps it for kg_key_failure_reraise. */
static void release_failed(const kg_provctx *ctx, const char *file, int line, const char *func,
                           const char *key_id, int reason, const char *msg)
{
    kg_prov_error(ctx, file, line, func, reason, "%s", msg);
    remember_failure(file, line, func, key_id, reason, msg);
}

void kg_key_failure_begin(void)
{
    last_failure.set = 0;
}

int kg_key_failure_pending(const char *key_id)
{
    return last_failure.set && strcmp(last_failure.key_id, key_id) == 0;
}

void kg_key_failure_reraise(const kg_provctx *ctx)
{
    if (!last_failure.set)
        return;
    last_failure.set = 0;
    /* logged when it happened: raise only */
    kg_prov_raise(ctx, last_failure.file, last_failure.line, last_failure.func, last_failure.reason, "%s",
                  last_failure.msg);
}

static EVP_PKEY *key_private(kg_key *key, int op, const char *tag, kg_lease_prep **prep)
{
    kg_provctx *ctx = key->provctx;
    kg_keyslot *slot = __atomic_load_n(&key->slot, __ATOMIC_ACQUIRE);
    kg_lease_state st;
    EVP_PKEY *priv = NULL;
    char msg[1024];
    kg_err err;

    kg_err_clear(&err);       /* the message below prints its request-id/trace-id fields */
    if (ctx->agent != NULL) { /* only a bare key id (store.c) comes here: it has no public key */
        snprintf(msg, sizeof(msg),
                 "keygate: key %s: backend = agent: no private key in this process, and a bare key id "
                 "has no public key to ask the agent for: use the key's KEYGATE KEY REFERENCE",
                 key->ref.key_id);
        release_failed(ctx, __FILE__, __LINE__, __func__, key->ref.key_id, KG_R_CONFIG, msg);
        return NULL;
    }
    if (slot == NULL) {
        if (!key->has_ref) {
            KG_PROV_ERROR(ctx, KG_R_OPERATION, "keygate: this key object holds only a public key");
            return NULL;
        }
        /* (key id, KBS, public key): a reference never gets a key released for another one */
        if (ctx->keys_src == NULL || (slot = kg_keysource_slot(ctx->keys_src, &key->ref, &err)) == NULL)
            goto err;
        __atomic_store_n(&key->slot, slot, __ATOMIC_RELEASE); /* racing threads find the same slot */
    }
    /* the hot path (every signature) takes the lease's shared lock, never the network; a first
     * use releases under this key's own lock only */
    st = kg_keysource_private_prep(ctx->keys_src, slot, op, tag, &priv, prep, NULL, &err);
    if (st == KG_LEASE_REVOKED) {
        /* kg_lease_revocation_message: names the key */
        release_failed(ctx, __FILE__, __LINE__, __func__, key->ref.key_id, KG_R_REVOKED, err.msg);
        return NULL;
    }
    if (priv != NULL)
        return priv;
err:
    if (err.msg[0] == '\0') /* no key source: provider init failed */
        kg_err_set(&err, KG_STEP_INTERNAL, "the provider has no key source");
    release_failed(ctx, __FILE__, __LINE__, __func__, key->ref.key_id,
                   kg_prov_step_message(key->ref.key_id, &err, msg, sizeof(msg)), msg);
    return NULL;
}

EVP_PKEY *kg_key_private(kg_key *key)
{
    return key_private(key, 1, NULL, NULL);
}

EVP_PKEY *kg_key_private_prep(kg_key *key, const char *tag, kg_lease_prep **prep)
{
    return key_private(key, 1, tag, prep);
}

int kg_key_prep_publish(kg_key *key, const EVP_PKEY *priv, kg_lease_prep *prep)
{
    kg_keyslot *slot = __atomic_load_n(&key->slot, __ATOMIC_ACQUIRE);

    return slot != NULL && kg_lease_prep_publish(kg_keyslot_lease(slot), priv, prep);
}

EVP_PKEY *kg_key_private_load(kg_key *key)
{
    return key_private(key, 0, NULL, NULL);
}

/* ---- backend = agent ---- */

static const struct {
    const char *name;
    kg_agent_digest digest;
} agent_digests[] = {{"SHA1", KG_AGENT_DIGEST_SHA1},
                     {"SHA224", KG_AGENT_DIGEST_SHA224},
                     {"SHA256", KG_AGENT_DIGEST_SHA256},
                     {"SHA384", KG_AGENT_DIGEST_SHA384},
                     {"SHA512", KG_AGENT_DIGEST_SHA512}};

kg_agent_digest kg_agent_digest_of(const EVP_MD *md)
{
    for (size_t i = 0; md != NULL && i < sizeof(agent_digests) / sizeof(agent_digests[0]); i++)
        if (EVP_MD_is_a(md, agent_digests[i].name))
            return agent_digests[i].digest;
    return 0;
}

kg_agent_digest kg_agent_digest_named(const char *name)
{
    EVP_MD *md;
    kg_agent_digest d;

    if (name == NULL || *name == '\0' || (md = EVP_MD_fetch(kg_libctx(), name, NULL)) == NULL)
        return 0;
    d = kg_agent_digest_of(md);
    EVP_MD_free(md);
    return d;
}

/* The reference's DER, built once per key object (racing threads: one wins, the others free). */
static const uint8_t *agent_ref_der(kg_key *key, size_t *len, kg_err *err)
{
    uint8_t *der = __atomic_load_n(&key->ref_der, __ATOMIC_ACQUIRE), *expected = NULL;
    size_t n;

    if (der == NULL) {
        if (!kg_keyref_to_der(&key->ref, &der, &n, err))
            return NULL;
        key->ref_der_len = n; /* the same value whichever thread wins */
        if (!__atomic_compare_exchange_n(&key->ref_der, &expected, der, 0, __ATOMIC_ACQ_REL,
                                         __ATOMIC_ACQUIRE)) {
            free(der);
            der = expected;
        }
    }
    *len = key->ref_der_len;
    return der;
}

int kg_key_agent_call(kg_key *key, kg_agent_req *req, unsigned char *out, size_t cap, size_t *out_len)
{
    kg_provctx *ctx = key->provctx;
    kg_agent_status st = KG_AGENT_UNAVAILABLE;
    char msg[1024];
    kg_err err;

    kg_err_clear(&err);
    if (!key->has_ref) {
        KG_PROV_ERROR(ctx, KG_R_OPERATION, "keygate: this key object holds only a public key");
        return 0;
    }
    if ((req->key_ref = agent_ref_der(key, &req->key_ref_len, &err)) != NULL &&
        kg_agent_client_call(ctx->agent, req, NULL, out, cap, out_len, &st, &err))
        return 1;
    kg_prov_step_message(key->ref.key_id, &err, msg, sizeof(msg));
    release_failed(ctx, __FILE__, __LINE__, __func__, key->ref.key_id,
                   st == KG_AGENT_REVOKED ? KG_R_REVOKED : KG_R_HANDOVER, msg);
    return 0;
}

int kg_key_agent_check(kg_key *key)
{
    kg_agent_req req;
    unsigned char spki[KG_AGENT_MAX_RESULT];
    const unsigned char *p = spki;
    size_t len = 0;
    EVP_PKEY *pub = NULL;
    int ok = 0;

    memset(&req, 0, sizeof(req));
    req.op = KG_AGENT_OP_PUBKEY;
    if (!kg_key_agent_call(key, &req, spki, sizeof(spki), &len))
        return 0;
    pub = d2i_PUBKEY_ex(NULL, &p, (long)len, kg_libctx(), NULL);
    ok = pub != NULL && p == spki + len && EVP_PKEY_eq(pub, key->ref.pubkey) == 1;
    EVP_PKEY_free(pub);
    if (!ok) {
        char msg[600];
        snprintf(msg, sizeof(msg), "keygate: key %s: match: the agent at %s holds another public key",
                 key->ref.key_id, kg_agent_client_socket(key->provctx->agent));
        release_failed(key->provctx, __FILE__, __LINE__, __func__, key->ref.key_id, KG_R_MATCH, msg);
    }
    return ok;
}
