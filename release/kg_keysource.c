/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kg_keysource: cache, first-use release, lease install and teardown for the front ends.
 * See kg_keysource.h for the contract and the locking.
 */
#include "kg_keysource.h"

#include <glob.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "kg_log.h"
#include "kg_release.h"
#include "kg_time.h"

/* At most this many references are preloaded (a glob is the operator's, but memory is ours). */
#define KG_PRELOAD_MAX 1024

struct kg_keyslot {
    kg_keyref ref;   /* key id, effective KBS URL, kbs_type; pubkey NULL until learned (both locks) */
    kg_lease *lease; /* one reference */
    pthread_mutex_t release_lock;
    int preloading; /* under ks->preload_lock: in the preload batch that runs now */
};

struct kg_keysource {
    kg_config cfg;
    pthread_mutex_t lock; /* the slot table and rctx creation; never across the network */
    kg_release_ctx *rctx; /* shared by every slot: one attestation for concurrent first uses */
    kg_keyslot **slots;
    size_t nslots, cap;
    pthread_mutex_t batch_lock; /* kg_keysource_release_all: one batch at a time */
    int parallel;               /* threads allowed (kg_keysource_set_threads) */
    /* preload (cfg.preload): runs once, at the first release. preload_lock guards the state and
     * the slots' preloading flags and is never held across the network; threads whose key is in
     * the running batch wait on preload_cv instead of releasing it a second time. */
    pthread_mutex_t preload_lock;
    pthread_cond_t preload_cv;
    enum { PRELOAD_PENDING, PRELOAD_RUNNING, PRELOAD_DONE } preload_state;
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
    pthread_mutex_init(&ks->preload_lock, NULL);
    pthread_cond_init(&ks->preload_cv, NULL);
    ks->parallel = 1;
    ks->preload_state = cfg->preload[0] != '\0' ? PRELOAD_PENDING : PRELOAD_DONE;
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
    pthread_mutex_destroy(&ks->preload_lock);
    pthread_cond_destroy(&ks->preload_cv);
    OPENSSL_cleanse(&ks->cfg, sizeof(ks->cfg));
    free(ks);
}

void kg_keysource_atfork_child(kg_keysource *ks)
{
    if (ks == NULL)
        return;
    pthread_mutex_init(&ks->lock, NULL);
    pthread_mutex_init(&ks->batch_lock, NULL);
    pthread_mutex_init(&ks->preload_lock, NULL);
    pthread_cond_init(&ks->preload_cv, NULL);
    if (ks->preload_state == PRELOAD_RUNNING) /* its thread is not in this process */
        ks->preload_state = PRELOAD_DONE;
    kg_release_ctx_atfork_child(ks->rctx);
    for (size_t i = 0; i < ks->nslots; i++) {
        ks->slots[i]->preloading = 0;
        pthread_mutex_init(&ks->slots[i]->release_lock, NULL);
        kg_lease_atfork_child(ks->slots[i]->lease);
    }
}

void kg_keysource_set_threads(kg_keysource *ks, int allowed)
{
    ks->parallel = allowed != 0;
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

/* Adds the slot of the reference in path to slots[0..*n) unless it is there. A file that does not
 * parse, or that names a key this source holds under another public key, is logged and skipped:
 * a preload never stops the key that triggered it. */
static void preload_add_file(kg_keysource *ks, const char *path, kg_keyslot **slots, size_t *n)
{
    kg_keyref ref;
    kg_keyslot *s;
    kg_err err;

    if (!kg_keyref_load(path, &ref, &err)) {
        KG_WARN("preload: %s: %s", path, err.msg);
        return;
    }
    s = kg_keysource_slot(ks, &ref, &err);
    kg_keyref_clear(&ref);
    if (s == NULL) {
        KG_WARN("preload: %s: %s", path, err.msg);
        return;
    }
    for (size_t i = 0; i < *n; i++)
        if (slots[i] == s)
            return;
    slots[(*n)++] = s;
}

/* With ks->preload_lock held (file system only, no network): first and the slots of every
 * reference cfg.preload names, at most KG_PRELOAD_MAX, flagged preloading. Returns their count. */
static size_t preload_collect(kg_keysource *ks, kg_keyslot *first, kg_keyslot **slots)
{
    char list[sizeof(ks->cfg.preload)], *save = NULL;
    size_t n = 0;
    int full = 0;

    slots[n++] = first;
    memcpy(list, ks->cfg.preload, sizeof(list));
    for (char *item = strtok_r(list, ",", &save); item != NULL; item = strtok_r(NULL, ",", &save)) {
        glob_t g;
        int rc;
        char *end = item + strlen(item);

        while (*item == ' ' || *item == '\t')
            item++;
        while (end > item && (end[-1] == ' ' || end[-1] == '\t'))
            *--end = '\0';
        memset(&g, 0, sizeof(g));
        if ((rc = glob(item, 0, NULL, &g)) == GLOB_NOMATCH)
            KG_WARN("preload: %s: no such file (or nothing matches)", item);
        else if (rc != 0)
            KG_WARN("preload: %s: cannot be expanded (glob error %d)", item, rc);
        for (size_t i = 0; rc == 0 && i < g.gl_pathc; i++) {
            if (n == KG_PRELOAD_MAX) {
                full = 1;
                break;
            }
            preload_add_file(ks, g.gl_pathv[i], slots, &n);
        }
        globfree(&g);
    }
    if (full)
        KG_WARN("preload: more than %d references; the others are released at their own first use",
                KG_PRELOAD_MAX);
    for (size_t i = 0; i < n; i++)
        slots[i]->preloading = 1;
    return n;
}

/* Before slot's first release: runs the preload (cfg.preload) once per key source, as one batch
 * with slot in it (one attestation, parallel transfers), or waits for the batch that runs now
 * when slot is in it. Returns 1 when this call's batch failed to release slot (*err says why: the
 * caller reports it rather than trying again alone), else 0 (the caller goes on: slot is ready,
 * revoked, or not preloaded). */
static int preload(kg_keysource *ks, kg_keyslot *slot, kg_err *err)
{
    kg_keyslot **slots = NULL;
    kg_err *errs = NULL;
    size_t n, failed = 0;
    double t0 = kg_mono_ms();
    int slot_failed = 0;

    pthread_mutex_lock(&ks->preload_lock);
    while (ks->preload_state == PRELOAD_RUNNING && slot->preloading)
        pthread_cond_wait(&ks->preload_cv, &ks->preload_lock);
    if (ks->preload_state != PRELOAD_PENDING || (slots = calloc(KG_PRELOAD_MAX, sizeof(*slots))) == NULL) {
        pthread_mutex_unlock(&ks->preload_lock);
        return 0;
    }
    n = preload_collect(ks, slot, slots);
    __atomic_store_n(&ks->preload_state, PRELOAD_RUNNING, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&ks->preload_lock);

    KG_INFO("preload: releasing %zu key(s) with one attestation", n);
    if ((errs = calloc(n, sizeof(*errs))) == NULL)
        KG_WARN("preload: out of memory; each key is released at its own first use");
    else if ((failed = kg_keysource_release_all(ks, slots, n, ks->parallel, errs)) > 0)
        for (size_t i = 0; i < n; i++) {
            if (errs[i].step == KG_STEP_NONE && errs[i].msg[0] == '\0')
                continue;
            if (slots[i] == slot) {
                *err = errs[i];
                slot_failed = 1;
            } else {
                KG_WARN("preload: key %s: %s", slots[i]->ref.key_id, errs[i].msg);
            }
        }
    if (errs != NULL)
        KG_INFO("preload: %zu of %zu key(s) released in %.0f ms", n - failed, n, kg_mono_ms() - t0);

    pthread_mutex_lock(&ks->preload_lock);
    for (size_t i = 0; i < n; i++)
        slots[i]->preloading = 0;
    __atomic_store_n(&ks->preload_state, PRELOAD_DONE, __ATOMIC_RELEASE);
    pthread_cond_broadcast(&ks->preload_cv);
    pthread_mutex_unlock(&ks->preload_lock);
    free(slots);
    free(errs);
    return slot_failed;
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
    /* the first release in this process releases every preloaded key with it */
    if (__atomic_load_n(&ks->preload_state, __ATOMIC_ACQUIRE) != PRELOAD_DONE && preload(ks, slot, err))
        return KG_LEASE_EMPTY;
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
