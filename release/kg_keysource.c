/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kg_keysource: cache, first-use release, lease install and teardown for the front ends.
 * See kg_keysource.h for the contract and the locking.
 */
#include "kg_keysource.h"

#include <openssl/evp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "kg_log.h"
#include "kg_release.h"

struct kg_keyslot {
    kg_keyref ref;   /* key id, effective KBS URL, kbs_type; pubkey NULL until learned (both locks) */
    kg_lease *lease; /* one reference */
    pthread_mutex_t release_lock;
};

struct kg_keysource {
    kg_config cfg;
    pthread_mutex_t lock; /* the slot table and rctx creation; never across the network */
    kg_release_ctx *rctx; /* shared by every slot: one attestation for concurrent first uses */
    kg_keyslot **slots;
    size_t nslots, cap;
    pthread_mutex_t batch_lock; /* kg_keysource_release_all: one batch at a time */
};

kg_keysource *kg_keysource_new(const kg_config *cfg, kg_err *err)
{
    kg_keysource *ks = calloc(1, sizeof(*ks));
    kg_err ignored;

    if (ks == NULL) {
        kg_err_set(err, KG_STEP_INTERNAL, "out of memory");
        return NULL;
    }
    ks->cfg = *cfg;
    pthread_mutex_init(&ks->lock, NULL);
    pthread_mutex_init(&ks->batch_lock, NULL);
    if ((ks->rctx = kg_release_ctx_new(&ks->cfg, &ignored)) == NULL)
        KG_WARN("release context not created yet (%s); retried at first use", ignored.msg);
    return ks;
}

void kg_keysource_free(kg_keysource *ks)
{
    if (ks == NULL)
        return;
    /* first every refresh thread out (they use rctx-independent state, but also this code) */
    for (size_t i = 0; i < ks->nslots; i++)
        kg_lease_stop(ks->slots[i]->lease);
    for (size_t i = 0; i < ks->nslots; i++) {
        kg_lease_free(ks->slots[i]->lease); /* the last reference zeroizes (secure heap) */
        kg_keyref_clear(&ks->slots[i]->ref);
        pthread_mutex_destroy(&ks->slots[i]->release_lock);
        free(ks->slots[i]);
    }
    free(ks->slots);
    kg_release_ctx_free(ks->rctx);
    pthread_mutex_destroy(&ks->lock);
    pthread_mutex_destroy(&ks->batch_lock);
    OPENSSL_cleanse(&ks->cfg, sizeof(ks->cfg));
    free(ks);
}

void kg_keysource_atfork_child(kg_keysource *ks)
{
    if (ks == NULL)
        return;
    pthread_mutex_init(&ks->lock, NULL);
    pthread_mutex_init(&ks->batch_lock, NULL);
    kg_release_ctx_atfork_child(ks->rctx);
    for (size_t i = 0; i < ks->nslots; i++) {
        pthread_mutex_init(&ks->slots[i]->release_lock, NULL);
        kg_lease_atfork_child(ks->slots[i]->lease);
    }
}

const char *kg_keyslot_key_id(const kg_keyslot *slot)
{
    return slot->ref.key_id;
}

kg_lease *kg_keyslot_lease(const kg_keyslot *slot)
{
    return slot->lease;
}

size_t kg_keysource_slot_count(kg_keysource *ks)
{
    size_t n;

    pthread_mutex_lock(&ks->lock);
    n = ks->nslots;
    pthread_mutex_unlock(&ks->lock);
    return n;
}

static const char *effective_kbs_url(const kg_keysource *ks, const kg_keyref *ref)
{
    return ref->kbs_url[0] != '\0' ? ref->kbs_url : ks->cfg.kbs_url;
}

/* With ks->lock held: the slot ref may use, or NULL. */
static kg_keyslot *slot_find(kg_keysource *ks, const kg_keyref *ref)
{
    const char *url = effective_kbs_url(ks, ref);

    for (size_t i = 0; i < ks->nslots; i++) {
        kg_keyslot *s = ks->slots[i];
        if (strcmp(s->ref.key_id, ref->key_id) != 0 || strcmp(s->ref.kbs_url, url) != 0)
            continue;
        if (ref->pubkey == NULL || (s->ref.pubkey != NULL && EVP_PKEY_eq(s->ref.pubkey, ref->pubkey) == 1))
            return s;
    }
    return NULL;
}

/* With ks->lock held: a new slot for ref, or NULL when out of memory. */
static kg_keyslot *slot_add(kg_keysource *ks, const kg_keyref *ref)
{
    kg_keyslot *s = calloc(1, sizeof(*s));
    kg_err ignored;

    if (s == NULL)
        return NULL;
    memcpy(s->ref.key_id, ref->key_id, sizeof(s->ref.key_id));
    snprintf(s->ref.kbs_url, sizeof(s->ref.kbs_url), "%s", effective_kbs_url(ks, ref));
    memcpy(s->ref.kbs_type, ref->kbs_type, sizeof(s->ref.kbs_type));
    memcpy(s->ref.description, ref->description, sizeof(s->ref.description));
    pthread_mutex_init(&s->release_lock, NULL);
    if ((ref->pubkey != NULL && !kg_keyref_set_pubkey(&s->ref, ref->pubkey, &ignored)) ||
        (s->lease = kg_lease_new(&s->ref, &ks->cfg)) == NULL)
        goto err;
    if (ks->nslots == ks->cap) {
        size_t cap = ks->cap ? ks->cap * 2 : 8;
        kg_keyslot **grown = realloc(ks->slots, cap * sizeof(*grown));
        if (grown == NULL)
            goto err;
        ks->slots = grown;
        ks->cap = cap;
    }
    ks->slots[ks->nslots++] = s;
    return s;
err:
    kg_lease_free(s->lease);
    kg_keyref_clear(&s->ref);
    pthread_mutex_destroy(&s->release_lock);
    free(s);
    return NULL;
}

kg_keyslot *kg_keysource_slot(kg_keysource *ks, const kg_keyref *ref, kg_err *err)
{
    kg_keyslot *s;
    EVP_PKEY *held = NULL;
    kg_err ignored;

    pthread_mutex_lock(&ks->lock);
    if ((s = slot_find(ks, ref)) == NULL && (s = slot_add(ks, ref)) == NULL) {
        pthread_mutex_unlock(&ks->lock);
        kg_err_set(err, KG_STEP_INTERNAL, "key %s: out of memory", ref->key_id);
        return NULL;
    }
    pthread_mutex_unlock(&ks->lock);
    /* a cache hit is still matched against this reference's public key: the key held is the
     * one the slot's releases were matched against, so a difference is a bug caught here */
    if (ref->pubkey != NULL && kg_lease_acquire(s->lease, 0, &held, &ignored) == KG_LEASE_OK &&
        EVP_PKEY_eq(held, ref->pubkey) != 1) {
        EVP_PKEY_free(held);
        kg_err_set(err, KG_STEP_MATCH, "the key held for %s is not the reference's public key", ref->key_id);
        return NULL;
    }
    EVP_PKEY_free(held);
    return s;
}

/* The shared release context, created on first need. */
static kg_release_ctx *release_ctx(kg_keysource *ks, kg_err *err)
{
    kg_release_ctx *r;

    pthread_mutex_lock(&ks->lock);
    if (ks->rctx == NULL)
        ks->rctx = kg_release_ctx_new(&ks->cfg, err);
    r = ks->rctx;
    pthread_mutex_unlock(&ks->lock);
    return r;
}

/* With s->release_lock held: installs a released key, learning the slot's public key. */
static int slot_install(kg_keysource *ks, kg_keyslot *s, EVP_PKEY *key, kg_err *err)
{
    if (s->ref.pubkey == NULL) {
        int ok;
        pthread_mutex_lock(&ks->lock);
        ok = kg_keyref_set_pubkey(&s->ref, key, err);
        pthread_mutex_unlock(&ks->lock);
        if (!ok)
            return 0;
    }
    if (!kg_lease_install(s->lease, key))
        return kg_err_set(err, KG_STEP_HANDOVER, "cannot start the lease of key %s", s->ref.key_id);
    return 1;
}

kg_lease_state kg_keysource_private(kg_keysource *ks, kg_keyslot *slot, int start_refresh, EVP_PKEY **key,
                                    int *attested, kg_err *err)
{
    return kg_keysource_private_prep(ks, slot, start_refresh, NULL, key, NULL, attested, err);
}

kg_lease_state kg_keysource_private_prep(kg_keysource *ks, kg_keyslot *slot, int start_refresh,
                                         const char *tag, EVP_PKEY **key, kg_lease_prep **prep, int *attested,
                                         kg_err *err)
{
    kg_release_times t;
    kg_release_ctx *r;
    kg_lease_state st;
    EVP_PKEY *priv = NULL;

    *key = NULL;
    if (prep != NULL)
        *prep = NULL;
    if (attested != NULL)
        *attested = 0;
    /* the hot path: the lease's shared lock and a reference count, never the network */
    if ((st = kg_lease_acquire_prep(slot->lease, start_refresh, tag, key, prep, err)) != KG_LEASE_EMPTY)
        return st;
    pthread_mutex_lock(&slot->release_lock);
    /* another thread may have released it while we waited */
    if ((st = kg_lease_acquire(slot->lease, start_refresh, key, err)) != KG_LEASE_EMPTY)
        goto done;
    if ((r = release_ctx(ks, err)) == NULL)
        goto done;
    KG_INFO("releasing key %s", slot->ref.key_id);
    memset(&t, 0, sizeof(t));
    if (!kg_release_key(r, &slot->ref, &priv, &t, err))
        goto done;
    if (!slot_install(ks, slot, priv, err)) {
        EVP_PKEY_free(priv);
        goto done;
    }
    if (attested != NULL)
        *attested = t.attested;
    *key = priv;
    st = KG_LEASE_OK;
done:
    pthread_mutex_unlock(&slot->release_lock);
    return st;
}

static int slot_ptr_cmp(const void *a, const void *b)
{
    const kg_keyslot *x = *(kg_keyslot *const *)a, *y = *(kg_keyslot *const *)b;
    return x < y ? -1 : x > y;
}

size_t kg_keysource_release_all(kg_keysource *ks, kg_keyslot *const *slots, size_t n, int parallel,
                                kg_err *errs)
{
    kg_keyslot **locked = calloc(n ? n : 1, sizeof(*locked));
    const kg_keyref **refs = calloc(n ? n : 1, sizeof(*refs));
    size_t *idx = calloc(n ? n : 1, sizeof(*idx));
    EVP_PKEY **keys = calloc(n ? n : 1, sizeof(*keys));
    kg_err *rerrs = calloc(n ? n : 1, sizeof(*rerrs));
    size_t nlocked = 0, todo = 0, failed = 0;
    kg_release_ctx *r;
    kg_err err;

    for (size_t i = 0; i < n; i++)
        kg_err_clear(&errs[i]);
    if (locked == NULL || refs == NULL || idx == NULL || keys == NULL || rerrs == NULL) {
        for (size_t i = 0; i < n; i++)
            kg_err_set(&errs[i], KG_STEP_INTERNAL, "out of memory");
        failed = n;
        goto out;
    }
    /* a batch holds several slot locks: take them in one global order, one batch at a time */
    pthread_mutex_lock(&ks->batch_lock);
    memcpy(locked, slots, n * sizeof(*locked));
    qsort(locked, n, sizeof(*locked), slot_ptr_cmp);
    for (size_t i = 0; i < n; i++)
        if (i == 0 || locked[i] != locked[i - 1])
            locked[nlocked++] = locked[i];
    for (size_t i = 0; i < nlocked; i++)
        pthread_mutex_lock(&locked[i]->release_lock);
    for (size_t i = 0; i < n; i++) {
        EVP_PKEY *live = NULL;
        int dup = 0;
        /* released and in its lease: nothing to do; revoked keys stay revoked (reported at use) */
        for (size_t j = 0; j < todo && !dup; j++)
            dup = refs[j] == &slots[i]->ref;
        if (!dup && kg_lease_acquire(slots[i]->lease, 0, &live, &err) == KG_LEASE_EMPTY) {
            idx[todo] = i;
            refs[todo++] = &slots[i]->ref;
        }
        EVP_PKEY_free(live);
    }
    if (todo > 0 && (r = release_ctx(ks, &err)) == NULL) {
        for (size_t j = 0; j < todo; j++)
            errs[idx[j]] = err;
        failed = todo;
        todo = 0;
    }
    if (todo > 0) {
        KG_INFO("releasing %zu key(s) with one attestation", todo);
        if (parallel)
            kg_release_keys(r, refs, todo, keys, rerrs, NULL);
        else /* one after the other: the first attests, the rest reuse its token */
            for (size_t j = 0; j < todo; j++)
                kg_release_key(r, refs[j], &keys[j], NULL, &rerrs[j]);
    }
    for (size_t j = 0; j < todo; j++) {
        if (keys[j] == NULL || !slot_install(ks, slots[idx[j]], keys[j], &rerrs[j])) {
            errs[idx[j]] = rerrs[j];
            failed++;
        }
        EVP_PKEY_free(keys[j]); /* the lease holds its own reference */
    }
    for (size_t i = 0; i < nlocked; i++)
        pthread_mutex_unlock(&locked[i]->release_lock);
    pthread_mutex_unlock(&ks->batch_lock);
out:
    free(locked);
    free(refs);
    free(idx);
    free(keys);
    free(rerrs);
    return failed;
}
