/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kg_lease: key leases, background refresh (stale-while-revalidate), revocation and wipe.
 * See kg_lease.h for the contract.
 *
 * Locking: lease->lock (a rwlock) guards key, its prepared objects, the times and the state; it
 * is held only for pointer swaps and reference counting, never across the network or a free of
 * key material.
 * The hot path takes it shared. The refresh thread releases with its own kg_release_ctx (a new
 * attestation every time, nothing shared with the front end's context), then swaps under the
 * exclusive lock and frees the old key outside it.
 */
#include "kg_lease.h"

#include <errno.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kg_log.h"
#include "kg_release.h"
#include "kg_time.h"

/* How long before its window a refresh thread starts, to generate the next wrapping key (an
 * RSA-3072 prime search of up to a few hundred ms, more on a loaded machine) off the refresh. */
#define KG_LEASE_KEYGEN_LEAD_MS 5000

struct kg_lease {
    int refs; /* atomic */
    pthread_rwlock_t lock;
    EVP_PKEY *key;                          /* one reference, NULL when nothing is released or after a wipe */
    kg_lease_prep *prep[KG_LEASE_PREP_MAX]; /* key's prepared objects, one reference each */
    int nprep;
    long long start_ms;       /* monotonic start of the current lease */
    long long end_ms;         /* monotonic end of the current lease */
    long long refresh_ms;     /* monotonic time the refresh may start */
    long long prepare_ms;     /* monotonic time the refresh thread may start: it generates the
                               * next wrapping key, then waits for refresh_ms */
    int refreshing;           /* a refresh thread of this process runs */
    unsigned long generation; /* bumped at fork: a parent's refresh never installs in the child */
    unsigned long refreshes;
    int revoked;          /* the KBS or the local policy said no */
    char revoke_msg[768]; /* the message later operations fail with (fits kg_err.msg) */
    kg_keyref ref;
    kg_config cfg;
    kg_release_ctx *rctx; /* the refreshes' context: created at the first install, i.e. before an
                           * nginx master forks and its workers drop privileges (API key read) */
    /* teardown (kg_lease_stop): stopping is also cfg.cancel, which aborts the refresh's HTTP
     * requests; stop_cv wakes its sleeps. The refresh thread is joinable: a module or provider
     * is unloaded only after its threads have left its code. */
    int stopping; /* atomic */
    pthread_mutex_t stop_mu;
    pthread_cond_t stop_cv;
    pthread_t thread;
    int thread_joinable; /* under lock: thread is ours to join */
};

static void stop_sync_init(kg_lease *lease)
{
    pthread_condattr_t attr;

    pthread_mutex_init(&lease->stop_mu, NULL);
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&lease->stop_cv, &attr);
    pthread_condattr_destroy(&attr);
}

static int stopping(const kg_lease *lease)
{
    return __atomic_load_n(&lease->stopping, __ATOMIC_ACQUIRE) != 0;
}

/* Sleeps ms, or less when the lease is being stopped. Returns 0 when it is. */
static int lease_sleep(kg_lease *lease, long long ms)
{
    struct timespec until;

    if (ms < 0)
        ms = 0;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += (time_t)(ms / 1000);
    until.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&lease->stop_mu);
    while (!stopping(lease) && pthread_cond_timedwait(&lease->stop_cv, &lease->stop_mu, &until) != ETIMEDOUT)
        ;
    pthread_mutex_unlock(&lease->stop_mu);
    return !stopping(lease);
}

struct kg_lease_prep {
    int refs; /* atomic */
    char tag[KG_LEASE_PREP_TAG];
    void *obj;
    void (*free_obj)(void *);
};

kg_lease_prep *kg_lease_prep_new(const char *tag, void *obj, void (*free_obj)(void *))
{
    kg_lease_prep *p;

    if (strlen(tag) >= sizeof(p->tag) || (p = calloc(1, sizeof(*p))) == NULL)
        return NULL;
    p->refs = 1;
    memcpy(p->tag, tag, strlen(tag) + 1);
    p->obj = obj;
    p->free_obj = free_obj;
    return p;
}

void *kg_lease_prep_obj(const kg_lease_prep *prep)
{
    return prep->obj;
}

void kg_lease_prep_free(kg_lease_prep *prep)
{
    if (prep == NULL || __atomic_sub_fetch(&prep->refs, 1, __ATOMIC_ACQ_REL) > 0)
        return;
    if (prep->free_obj != NULL)
        prep->free_obj(prep->obj);
    free(prep);
}

/* With the lock held: the current key's prepared object of tag, or NULL. */
static kg_lease_prep *prep_find(const kg_lease *lease, const char *tag)
{
    for (int i = 0; i < lease->nprep; i++)
        if (strcmp(lease->prep[i]->tag, tag) == 0)
            return lease->prep[i];
    return NULL;
}

/* With the exclusive lock held, whenever key changes: drops its prepared objects first. Under the
 * lock, as they hold references only: the lease's own key reference, dropped after, or an
 * operation's is the last one. */
static void prep_drop(kg_lease *lease)
{
    for (int i = 0; i < lease->nprep; i++) {
        kg_lease_prep_free(lease->prep[i]);
        lease->prep[i] = NULL;
    }
    lease->nprep = 0;
}

int kg_lease_prep_publish(kg_lease *lease, const EVP_PKEY *key, kg_lease_prep *prep)
{
    int ok = 0;

    pthread_rwlock_wrlock(&lease->lock);
    if (key != NULL && lease->key == key && lease->nprep < KG_LEASE_PREP_MAX &&
        prep_find(lease, prep->tag) == NULL) {
        __atomic_add_fetch(&prep->refs, 1, __ATOMIC_ACQ_REL);
        lease->prep[lease->nprep++] = prep;
        ok = 1;
    }
    pthread_rwlock_unlock(&lease->lock);
    return ok;
}

static long lease_s(const kg_config *cfg)
{
    return cfg->key_lease_s < cfg->key_lease_max_s ? cfg->key_lease_s : cfg->key_lease_max_s;
}

kg_lease *kg_lease_new(const kg_keyref *ref, const kg_config *cfg)
{
    kg_lease *lease = calloc(1, sizeof(*lease));

    if (lease == NULL)
        return NULL;
    lease->refs = 1;
    pthread_rwlock_init(&lease->lock, NULL);
    stop_sync_init(lease);
    lease->cfg = *cfg;
    lease->cfg.cancel = &lease->stopping;
    memcpy(lease->ref.key_id, ref->key_id, sizeof(ref->key_id));
    memcpy(lease->ref.kbs_url, ref->kbs_url, sizeof(ref->kbs_url));
    memcpy(lease->ref.kbs_type, ref->kbs_type, sizeof(ref->kbs_type));
    memcpy(lease->ref.description, ref->description, sizeof(ref->description));
    if (ref->pubkey != NULL) {
        kg_err err;
        if (!kg_keyref_set_pubkey(&lease->ref, ref->pubkey, &err)) {
            kg_lease_free(lease);
            return NULL;
        }
    }
    return lease;
}

int kg_lease_up_ref(kg_lease *lease)
{
    return __atomic_add_fetch(&lease->refs, 1, __ATOMIC_ACQ_REL) > 1;
}

void kg_lease_free(kg_lease *lease)
{
    if (lease == NULL || __atomic_sub_fetch(&lease->refs, 1, __ATOMIC_ACQ_REL) > 0)
        return;
    /* the last reference: a finished refresh thread not yet joined (or this very thread, when a
     * front end dropped its references without kg_lease_stop) */
    if (lease->thread_joinable) {
        if (pthread_equal(lease->thread, pthread_self()))
            pthread_detach(lease->thread);
        else
            pthread_join(lease->thread, NULL);
    }
    prep_drop(lease);
    EVP_PKEY_free(lease->key); /* the private parts sit in the secure heap: zeroized */
    kg_release_ctx_free(lease->rctx);
    kg_keyref_clear(&lease->ref);
    pthread_rwlock_destroy(&lease->lock);
    pthread_cond_destroy(&lease->stop_cv);
    pthread_mutex_destroy(&lease->stop_mu);
    free(lease);
}

void kg_lease_stop(kg_lease *lease)
{
    pthread_t thread;
    int join = 0;

    if (lease == NULL)
        return;
    pthread_mutex_lock(&lease->stop_mu);
    __atomic_store_n(&lease->stopping, 1, __ATOMIC_RELEASE);
    pthread_cond_broadcast(&lease->stop_cv);
    pthread_mutex_unlock(&lease->stop_mu);
    pthread_rwlock_wrlock(&lease->lock);
    if (lease->thread_joinable && !pthread_equal(lease->thread, pthread_self())) {
        thread = lease->thread;
        lease->thread_joinable = 0;
        join = 1;
    }
    pthread_rwlock_unlock(&lease->lock);
    if (join)
        pthread_join(thread, NULL);
}

unsigned long kg_lease_refreshes(const kg_lease *lease)
{
    return __atomic_load_n(&lease->refreshes, __ATOMIC_RELAXED);
}

/* With the exclusive lock held: a new lease for key (one reference taken over). */
static void start_lease(kg_lease *lease, EVP_PKEY *key)
{
    long len = lease_s(&lease->cfg);
    long before = lease->cfg.refresh_before_s;

    if (before > len * 4 / 5) /* the first fifth of a lease never refreshes (no refresh storm) */
        before = len * 4 / 5;
    prep_drop(lease); /* the old key's: a new key gets new prepared objects */
    lease->key = key;
    lease->start_ms = kg_mono_ms_int();
    lease->end_ms = lease->start_ms + len * 1000;
    lease->refresh_ms = lease->end_ms - (before > 0 ? before : 1) * 1000;
    if (lease->refresh_ms < lease->start_ms)
        lease->refresh_ms = lease->start_ms;
    /* the key generation ahead of the window, but not in the first half of the lease's quiet time */
    lease->prepare_ms = lease->refresh_ms - KG_LEASE_KEYGEN_LEAD_MS;
    if (lease->prepare_ms < lease->start_ms + (lease->refresh_ms - lease->start_ms) / 2)
        lease->prepare_ms = lease->start_ms + (lease->refresh_ms - lease->start_ms) / 2;
}

int kg_lease_install(kg_lease *lease, EVP_PKEY *key)
{
    EVP_PKEY *old;

    if (!EVP_PKEY_up_ref(key))
        return 0;
    pthread_rwlock_wrlock(&lease->lock);
    if (lease->ref.pubkey == NULL) { /* a store URI's reference: the released key is the reference */
        kg_err err;
        if (!kg_keyref_set_pubkey(&lease->ref, key, &err)) {
            pthread_rwlock_unlock(&lease->lock);
            EVP_PKEY_free(key);
            return 0;
        }
    }
    if (lease->rctx == NULL) {
        kg_err err;
        if ((lease->rctx = kg_release_ctx_new(&lease->cfg, &err)) == NULL)
            KG_LOG(KG_LOG_WARN, "lease: key %s: %s (refreshes will retry)", lease->ref.key_id, err.msg);
    }
    old = lease->key;
    start_lease(lease, key);
    pthread_rwlock_unlock(&lease->lock);
    EVP_PKEY_free(old);
    KG_LOG(KG_LOG_INFO, "lease: key %s released, lease %ld s", lease->ref.key_id, lease_s(&lease->cfg));
    return 1;
}

void kg_lease_wipe(kg_lease *lease, const char *why)
{
    EVP_PKEY *old;

    pthread_rwlock_wrlock(&lease->lock);
    prep_drop(lease);
    old = lease->key;
    lease->key = NULL;
    pthread_rwlock_unlock(&lease->lock);
    if (old != NULL) {
        /* the last reference (ours, or an operation's that ends now) frees and zeroizes */
        EVP_PKEY_free(old);
        KG_LOG(KG_LOG_WARN, "lease: key %s wiped (%s)", lease->ref.key_id, why);
    }
}

int kg_lease_err_is_revocation(const kg_err *err)
{
    switch (err->step) {
    case KG_STEP_TRANSFER: /* the KBS said no: 401 policy, 403, 404 deleted key; 429 is load */
        return err->http_status >= 400 && err->http_status < 500 && err->http_status != 429 &&
               err->http_status != 408;
    case KG_STEP_VERIFY: /* a verified token that fails our policy; JWKS/CRL fetches are transient */
        return err->http_status == 0 && strstr(err->msg, "JWKS") == NULL && strstr(err->msg, "CRL") == NULL &&
               strstr(err->msg, "fetch") == NULL;
    case KG_STEP_MATCH: /* the KBS now holds another key under this id */ return 1;
    default: return 0;
    }
}

void kg_lease_revocation_message(const char *key_id, const kg_err *err, char *out, size_t outlen)
{
    char when[32], http[32] = "";
    time_t t = time(NULL);
    struct tm tm;

    gmtime_r(&t, &tm);
    strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
    if (err->http_status != 0)
        snprintf(http, sizeof(http), ", HTTP %ld", err->http_status);
    snprintf(out, outlen, "keygate: key %s revoked by %s at %s (step %s%s, request-id %s): %.400s", key_id,
             err->step == KG_STEP_TRANSFER ? "KBS" : "local policy", when, kg_step_name(err->step), http,
             err->request_id[0] ? err->request_id : "-", err->msg);
}

/* ------------------------------------------------------------------------------------ refresh */

typedef struct refresh_job {
    kg_lease *lease; /* one reference */
    unsigned long generation;
} refresh_job;

/* The refreshes' context (only the refresh thread creates it after the first install). */
static kg_release_ctx *lease_rctx(kg_lease *lease, kg_err *err)
{
    if (lease->rctx == NULL)
        lease->rctx = kg_release_ctx_new(&lease->cfg, err);
    return lease->rctx;
}

/* The next attempt's wrapping key, generated now so that the attempt does not wait for it. */
static void prepare_key(kg_lease *lease)
{
    long long t0 = kg_mono_ms_int();
    kg_err err;

    kg_err_clear(&err);
    if (strcmp(lease->cfg.kbs_type, "trustee") == 0) /* its TEE key is part of the handshake */
        return;
    if (lease_rctx(lease, &err) != NULL && kg_release_ctx_prepare_key(lease->rctx, &err)) {
        KG_LOG(KG_LOG_INFO, "lease: key %s: next wrapping key made ahead (%lld ms)", lease->ref.key_id,
               kg_mono_ms_int() - t0);
        return;
    }
    if (!stopping(lease))
        KG_DEBUG("lease: key %s: no wrapping key made ahead (%s); the refresh makes one", lease->ref.key_id,
                 err.msg);
}

/* Milliseconds until the refresh window (the lease's current refresh_ms), <= 0 inside it. */
static long long until_window(kg_lease *lease)
{
    long long left;

    pthread_rwlock_rdlock(&lease->lock);
    left = lease->refresh_ms - kg_mono_ms_int();
    pthread_rwlock_unlock(&lease->lock);
    return left;
}

/* Sleeps until the refresh window. Returns 0 when stopped. */
static int wait_for_window(kg_lease *lease)
{
    long long left;

    while ((left = until_window(lease)) > 0)
        if (!lease_sleep(lease, left))
            return 0;
    return !stopping(lease);
}

/* One refresh attempt: a new attestation and a transfer of the same key id. Uses the lease's own
 * context (one refresh per lease at a time): API key and verifier caches, never a reused token. */
static int refresh_once(kg_lease *lease, EVP_PKEY **key, kg_release_times *times, kg_err *err)
{
    if (lease_rctx(lease, err) == NULL)
        return 0;
    kg_release_ctx_drop_session(lease->rctx);
    return kg_release_key(lease->rctx, &lease->ref, key, times, err);
}

/* With the exclusive lock held: 1 when this thread's process still owns the refresh. */
static int job_current(const refresh_job *job)
{
    return job->lease->generation == job->generation;
}

static void revoke(kg_lease *lease, const refresh_job *job, const kg_err *err)
{
    char msg[sizeof(lease->revoke_msg)];
    int wipe = strcmp(lease->cfg.on_revoke, "keep") != 0;

    kg_lease_revocation_message(lease->ref.key_id, err, msg, sizeof(msg));
    pthread_rwlock_wrlock(&lease->lock);
    if (job_current(job)) {
        lease->revoked = 1;
        memcpy(lease->revoke_msg, msg, sizeof(msg));
    }
    pthread_rwlock_unlock(&lease->lock);
    KG_LOG(KG_LOG_ERROR, "lease: %s; on_revoke = %s", msg,
           wipe ? "wipe" : "keep (kept until the lease ends)");
    if (wipe && job_current(job))
        kg_lease_wipe(lease, "revoked");
}

static long long lease_end(kg_lease *lease)
{
    long long end;

    pthread_rwlock_rdlock(&lease->lock);
    end = lease->end_ms;
    pthread_rwlock_unlock(&lease->lock);
    return end;
}

/* Wipes the key if its lease has ended (not if an operation released it anew). 1 when wiped. */
static int wipe_if_ended(kg_lease *lease)
{
    EVP_PKEY *old = NULL;

    pthread_rwlock_wrlock(&lease->lock);
    if (lease->key != NULL && kg_mono_ms_int() >= lease->end_ms) {
        prep_drop(lease);
        old = lease->key;
        lease->key = NULL;
    }
    pthread_rwlock_unlock(&lease->lock);
    if (old == NULL)
        return 0;
    EVP_PKEY_free(old);
    KG_LOG(KG_LOG_WARN, "lease: key %s wiped (lease ended)", lease->ref.key_id);
    return 1;
}

static void *refresh_main(void *arg)
{
    refresh_job *job = arg;
    kg_lease *lease = job->lease;
    long long wait = lease->cfg.retry_wait_min_ms > 0 ? lease->cfg.retry_wait_min_ms : 200;
    int attempt = 0, go;

    /* started ahead of the window (prepare_ms): the wrapping key first, then the window; started
     * inside it (no operation came earlier), the release generates its key during the nonce */
    if (until_window(lease) > 0)
        prepare_key(lease);
    go = wait_for_window(lease);
    while (go) {
        EVP_PKEY *key = NULL, *old;
        kg_release_times times;
        kg_err err;
        long long end, t0 = kg_mono_ms_int();

        kg_err_clear(&err);
        attempt++;
        KG_LOG(KG_LOG_INFO, "lease: key %s refresh (attempt %d)", lease->ref.key_id, attempt);
        if (refresh_once(lease, &key, &times, &err)) {
            pthread_rwlock_wrlock(&lease->lock);
            if (!job_current(job) || lease->revoked || stopping(lease)) {
                pthread_rwlock_unlock(&lease->lock);
                EVP_PKEY_free(key);
                break;
            }
            old = lease->key;
            start_lease(lease, key);
            lease->refreshes++;
            pthread_rwlock_unlock(&lease->lock);
            EVP_PKEY_free(old); /* freed when the last operation using it ends */
            /* wrapping key: 0.0 ms when the key made ahead served (no prime search in the refresh) */
            KG_LOG(KG_LOG_INFO,
                   "lease: key %s refreshed (%lu, in %lld ms, wrapping key %.1f ms), lease %ld s",
                   lease->ref.key_id, kg_lease_refreshes(lease), kg_mono_ms_int() - t0, times.wrapkey,
                   lease_s(&lease->cfg));
            break;
        }
        if (stopping(lease)) { /* torn down: a cancelled request says nothing about the key */
            KG_DEBUG("lease: key %s refresh stopped (teardown)", lease->ref.key_id);
            break;
        }
        if (kg_lease_err_is_revocation(&err)) {
            revoke(lease, job, &err);
            break;
        }
        end = lease_end(lease);
        KG_LOG(KG_LOG_WARN, "lease: key %s refresh failed (transient, HTTP %ld, request-id %s): %s",
               lease->ref.key_id, err.http_status, err.request_id[0] ? err.request_id : "-", err.msg);
        if (kg_mono_ms_int() + wait >= end) {
            if (kg_mono_ms_int() < end && !lease_sleep(lease, end - kg_mono_ms_int()))
                break;
            if (job_current(job) && wipe_if_ended(lease))
                KG_LOG(KG_LOG_ERROR, "lease: key %s: the lease ended without a successful refresh",
                       lease->ref.key_id);
            break; /* (if an operation released the key anew meanwhile, its lease refreshes anew) */
        }
        /* the next attempt's wrapping key during the wait (a fresh one per attestation) */
        t0 = kg_mono_ms_int();
        prepare_key(lease);
        if (!lease_sleep(lease, wait - (kg_mono_ms_int() - t0)))
            break;
        wait = wait * 2 < lease->cfg.retry_wait_max_ms ? wait * 2 : lease->cfg.retry_wait_max_ms;
        if (wait <= 0)
            wait = 200;
    }
    pthread_rwlock_wrlock(&lease->lock);
    if (job_current(job))
        lease->refreshing = 0;
    pthread_rwlock_unlock(&lease->lock);
    kg_lease_free(lease);
    free(job);
    return NULL;
}

/* Starts the refresh thread unless one runs. Created here, from a private operation, in the
 * process that needs it: never before a fork, never at provider or module init. */
static void start_refresh(kg_lease *lease)
{
    refresh_job *job;
    pthread_t prev;
    int rc, join_prev = 0;

    pthread_rwlock_wrlock(&lease->lock);
    if (lease->refreshing || lease->revoked || lease->key == NULL || kg_mono_ms_int() < lease->prepare_ms ||
        stopping(lease)) {
        pthread_rwlock_unlock(&lease->lock);
        return;
    }
    if ((job = calloc(1, sizeof(*job))) == NULL) {
        pthread_rwlock_unlock(&lease->lock);
        return;
    }
    /* the previous refresh has ended (refreshing is 0): join it outside the lock */
    if (lease->thread_joinable) {
        prev = lease->thread;
        lease->thread_joinable = 0;
        join_prev = 1;
    }
    lease->refreshing = 1;
    job->lease = lease;
    job->generation = lease->generation;
    kg_lease_up_ref(lease);
    /* under the lock, so that kg_lease_stop sees the new thread or none */
    rc = pthread_create(&lease->thread, NULL, refresh_main, job);
    if (rc == 0)
        lease->thread_joinable = 1;
    else
        lease->refreshing = 0;
    pthread_rwlock_unlock(&lease->lock);
    if (join_prev)
        pthread_join(prev, NULL);
    if (rc != 0) {
        KG_LOG(KG_LOG_WARN, "lease: key %s: cannot start the refresh thread (%s); next operation retries",
               lease->ref.key_id, strerror(rc));
        kg_lease_free(lease);
        free(job);
    }
}

/* With the lock held: err carries the revocation message as it is (no step prefix). */
static void revoked_err(const kg_lease *lease, kg_err *err)
{
    kg_err_clear(err);
    err->step = KG_STEP_TRANSFER;
    memcpy(err->msg, lease->revoke_msg,
           sizeof(err->msg) < sizeof(lease->revoke_msg) ? sizeof(err->msg) : sizeof(lease->revoke_msg));
    err->msg[sizeof(err->msg) - 1] = 0;
}

kg_lease_state kg_lease_acquire(kg_lease *lease, int start_refresh_ok, EVP_PKEY **key, kg_err *err)
{
    return kg_lease_acquire_prep(lease, start_refresh_ok, NULL, key, NULL, err);
}

kg_lease_state kg_lease_acquire_prep(kg_lease *lease, int start_refresh_ok, const char *tag, EVP_PKEY **key,
                                     kg_lease_prep **prep, kg_err *err)
{
    long long now = kg_mono_ms_int();
    int refresh = 0, ended = 0;
    EVP_PKEY *k = NULL;
    kg_lease_prep *p = NULL;

    *key = NULL;
    if (prep != NULL)
        *prep = NULL;
    pthread_rwlock_rdlock(&lease->lock);
    if (lease->key != NULL && now < lease->end_ms) {
        if (EVP_PKEY_up_ref(lease->key))
            k = lease->key;
        if (k != NULL && tag != NULL && (p = prep_find(lease, tag)) != NULL)
            __atomic_add_fetch(&p->refs, 1, __ATOMIC_ACQ_REL);
        refresh = now >= lease->prepare_ms && !lease->refreshing && !lease->revoked;
    } else if (lease->key != NULL) {
        ended = 1;
    } else if (lease->revoked) {
        revoked_err(lease, err);
        pthread_rwlock_unlock(&lease->lock);
        return KG_LEASE_REVOKED;
    }
    pthread_rwlock_unlock(&lease->lock);
    /* the lease ended: no refresh succeeded in time (or no operation asked for one) */
    if (ended) {
        wipe_if_ended(lease); /* not a key another thread has just released anew */
        pthread_rwlock_rdlock(&lease->lock);
        if (lease->revoked) {
            revoked_err(lease, err);
            pthread_rwlock_unlock(&lease->lock);
            return KG_LEASE_REVOKED;
        }
        pthread_rwlock_unlock(&lease->lock);
        return KG_LEASE_EMPTY;
    }
    if (k == NULL)
        return KG_LEASE_EMPTY;
    if (refresh && start_refresh_ok)
        start_refresh(lease);
    *key = k;
    if (prep != NULL)
        *prep = p;
    else
        kg_lease_prep_free(p);
    return KG_LEASE_OK;
}

void kg_lease_atfork_child(kg_lease *lease)
{
    if (lease == NULL)
        return;
    pthread_rwlock_init(&lease->lock, NULL);
    stop_sync_init(lease);
    lease->thread_joinable = 0; /* the parent's thread: not ours to join */
    kg_release_ctx_atfork_child(lease->rctx);
    lease->generation++;
    if (lease->refreshing) /* the parent's refresh thread (and its reference) is not in this process */
        __atomic_sub_fetch(&lease->refs, 1, __ATOMIC_ACQ_REL);
    lease->refreshing = 0;
}
