/* SPDX-License-Identifier: Apache-2.0 */
#include "kg_release.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "kbs_intel.h"
#include "kg_attest.h"
#include "kg_intel_gen.h"
#include "kg_keygen.h"
#include "kg_log.h"
#include "kg_time.h"
#include "kg_trustee.h"
#include "kg_verify.h"
#include "kg_wrap.h"

#define SECURE_HEAP_SIZE (1024 * 1024)
#define SECURE_HEAP_MIN 64

/* One attestation: the wrapping key whose public half ITA bound into the token (ctx->session:
 * passport; background makes one per transfer). */
typedef struct kg_session {
    EVP_PKEY *wrapping_key;
    uint8_t *user_data;
    size_t user_data_len;
    char *token; /* verified */
    long long exp;
} kg_session;

struct kg_release_ctx {
    kg_config cfg;
    pthread_mutex_t lock;
    kg_session session;
    ita_verifier *verifier; /* JWKS and CRL caches across attestations */
    kg_http *idle_http;     /* a KBS connection kept alive between kg_release_key calls */
    char *api_key;          /* read at creation when possible (secure heap), see kg_release_ctx_new */
    kg_trustee *trustee;    /* kbs_type = trustee: its session (kg_trustee.h) */
    int probe;              /* kg_release_ctx_set_probe: stop after the transfer */
    /* kg_release_ctx_prepare_key: the next attestation's wrapping key, made ahead (a lease
     * refresh), by process spare_pid (a forked child never shares its parent's) */
    pthread_mutex_t spare_lock;
    EVP_PKEY *spare;
    pid_t spare_pid;
};

static void session_clear(kg_session *s)
{
    EVP_PKEY_free(s->wrapping_key);
    free(s->user_data);
    free(s->token);
    memset(s, 0, sizeof(*s));
}

/* Key bytes belong in the secure heap; set it up if the application did not. Once per process:
 * CRYPTO_secure_malloc_init is not thread-safe, and contexts are created from concurrent first
 * uses (PKCS#11 threads, per-key leases); two racing inits corrupt the arena. */
static pthread_once_t secure_heap_once = PTHREAD_ONCE_INIT;

static void secure_heap_init(void)
{
    if (!CRYPTO_secure_malloc_initialized() && !CRYPTO_secure_malloc_init(SECURE_HEAP_SIZE, SECURE_HEAP_MIN))
        KG_WARN("cannot initialise OpenSSL's secure heap: key material falls back to the normal heap");
}

kg_release_ctx *kg_release_ctx_new(const kg_config *cfg, kg_err *err)
{
    kg_release_ctx *ctx;

    pthread_once(&secure_heap_once, secure_heap_init);
    if ((ctx = calloc(1, sizeof(*ctx))) == NULL) {
        kg_err_set(err, KG_STEP_INTERNAL, "out of memory");
        return NULL;
    }
    ctx->cfg = *cfg;
    pthread_mutex_init(&ctx->lock, NULL);
    pthread_mutex_init(&ctx->spare_lock, NULL);
    if (strcmp(cfg->kbs_type, "trustee") == 0 && (ctx->trustee = kg_trustee_new()) == NULL) {
        pthread_mutex_destroy(&ctx->spare_lock);
        pthread_mutex_destroy(&ctx->lock);
        free(ctx);
        kg_err_set(err, KG_STEP_INTERNAL, "out of memory");
        return NULL;
    }
    /* read the API key now (the nginx master, as root), so that a forked worker running as
     * nobody never needs the root-only file; if it cannot be read now, the release will try */
    if (cfg->ita_api_key_file[0] != '\0') {
        kg_err ignored;
        if (!ita_read_api_key(cfg->ita_api_key_file, &ctx->api_key, &ignored))
            KG_DEBUG("API key not preloaded: %s", ignored.msg);
    }
    return ctx;
}

void kg_release_ctx_free(kg_release_ctx *ctx)
{
    if (ctx == NULL)
        return;
    session_clear(&ctx->session);
    EVP_PKEY_free(ctx->spare);
    ita_verifier_free(ctx->verifier);
    kg_trustee_free(ctx->trustee);
    kg_http_free(ctx->idle_http);
    OPENSSL_secure_clear_free(ctx->api_key, ITA_MAX_API_KEY + 1);
    pthread_mutex_destroy(&ctx->spare_lock);
    pthread_mutex_destroy(&ctx->lock);
    OPENSSL_cleanse(&ctx->cfg, sizeof(ctx->cfg));
    free(ctx);
}

void kg_release_ctx_drop_session(kg_release_ctx *ctx)
{
    if (ctx == NULL)
        return;
    pthread_mutex_lock(&ctx->lock);
    session_clear(&ctx->session);
    pthread_mutex_unlock(&ctx->lock);
    kg_trustee_drop_session(ctx->trustee);
}

void kg_release_ctx_set_probe(kg_release_ctx *ctx, int probe)
{
    ctx->probe = probe;
}

int kg_release_ctx_set_api_key(kg_release_ctx *ctx, const char *api_key, kg_err *err)
{
    size_t len = api_key != NULL ? strlen(api_key) : 0;
    char *copy;

    if (len == 0 || len > ITA_MAX_API_KEY)
        return kg_err_set(err, KG_STEP_CONFIG, "the ITA API key is empty or longer than %d bytes",
                          ITA_MAX_API_KEY);
    if ((copy = OPENSSL_secure_zalloc(ITA_MAX_API_KEY + 1)) == NULL)
        return kg_err_set(err, KG_STEP_INTERNAL, "out of memory");
    memcpy(copy, api_key, len);
    pthread_mutex_lock(&ctx->lock);
    OPENSSL_secure_clear_free(ctx->api_key, ITA_MAX_API_KEY + 1);
    ctx->api_key = copy;
    pthread_mutex_unlock(&ctx->lock);
    return 1;
}

void kg_release_ctx_atfork_child(kg_release_ctx *ctx)
{
    if (ctx != NULL) {
        pthread_mutex_init(&ctx->lock, NULL);
        pthread_mutex_init(&ctx->spare_lock, NULL); /* the spare itself: see take_spare */
        kg_intel_gen_atfork_child();
        kg_trustee_atfork_child(ctx->trustee);
        /* the parent's connection: dropped without a word (a TLS close_notify from here would
         * end the parent's session); the child makes its own when it needs one */
        ctx->idle_http = NULL;
    }
}

int kg_keyref_for_id(const kg_config *cfg, const char *key_id, const char *kbs_url, kg_keyref *ref,
                     kg_err *err)
{
    memset(ref, 0, sizeof(*ref));
    if (!kg_keyref_key_id_ok(key_id, cfg->kbs_type))
        return kg_err_set(err, KG_STEP_CONFIG, "key id '%.64s' is not a %s", key_id,
                          strcmp(cfg->kbs_type, "trustee") == 0 ? "repo/type/tag resource path"
                                                                : "UUID (v4)");
    snprintf(ref->key_id, sizeof(ref->key_id), "%s", key_id);
    snprintf(ref->kbs_url, sizeof(ref->kbs_url), "%s", kbs_url ? kbs_url : "");
    return 1;
}

static const char *kbs_url_of(const kg_release_ctx *ctx, const kg_keyref *ref)
{
    return ref->kbs_url[0] != '\0' ? ref->kbs_url : ctx->cfg.kbs_url;
}

/* The spare wrapping key (kg_release_ctx_prepare_key) if this process made it, else NULL. */
static EVP_PKEY *take_spare(kg_release_ctx *ctx)
{
    EVP_PKEY *key;
    int ours;

    pthread_mutex_lock(&ctx->spare_lock);
    key = ctx->spare;
    ours = ctx->spare_pid == getpid();
    ctx->spare = NULL;
    pthread_mutex_unlock(&ctx->spare_lock);
    if (key != NULL && !ours) { /* made by the parent before a fork: the parent uses it */
        EVP_PKEY_free(key);
        key = NULL;
    }
    return key;
}

static int cancelled(void *arg)
{
    const int *cancel = arg;
    return cancel != NULL && __atomic_load_n(cancel, __ATOMIC_ACQUIRE) != 0;
}

int kg_release_ctx_prepare_key(kg_release_ctx *ctx, kg_err *err)
{
    kg_wrap_stop stop = {cancelled, (void *)ctx->cfg.cancel};
    EVP_PKEY *key;

    if (ctx->trustee != NULL)
        return 1;
    if ((key = take_spare(ctx)) == NULL &&
        (!kg_wrap_engine_check(err) || (key = kg_wrap_key_generate(NULL, &stop, err)) == NULL))
        return 0;
    pthread_mutex_lock(&ctx->spare_lock);
    EVP_PKEY_free(ctx->spare);
    ctx->spare = key;
    ctx->spare_pid = getpid();
    pthread_mutex_unlock(&ctx->spare_lock);
    return 1;
}

/* A new session's wrapping key: the spare, or one generated on a thread of its own meanwhile. */
static kg_keygen *wrapkey_begin(kg_release_ctx *ctx, kg_err *err)
{
    EVP_PKEY *spare = take_spare(ctx);

    if (spare != NULL)
        return kg_keygen_ready(spare, err);
    return kg_keygen_start(NULL, ctx->cfg.cancel, err);
}

/* A wrapping key generated while the nonce request runs, joined when the evidence needs it. */
typedef struct wrapkey_job {
    kg_keygen *gen; /* NULL once joined; kg_keygen_abandon(gen) on every path */
    kg_session *s;  /* gets wrapping_key and user_data */
    kg_release_times *t;
} wrapkey_job;

static int wrapkey_join(wrapkey_job *j, kg_err *err)
{
    kg_keygen *gen = j->gen;
    double start, end;

    j->gen = NULL;
    if (!kg_keygen_join(gen, &j->s->wrapping_key, &start, &end, err) ||
        !kg_wrap_user_data(j->s->wrapping_key, &j->s->user_data, &j->s->user_data_len, err))
        return 0;
    j->t->at.wrapkey = start - j->t->origin;
    j->t->wrapkey = end - start;
    KG_DEBUG("wrapping key ready (%.1f ms, from %.1f ms)", j->t->wrapkey, j->t->at.wrapkey);
    return 1;
}

/* kg_user_data_source.get: the evidence step of kg_attest_with, after the nonce. */
static int wrapkey_user_data(void *arg, const uint8_t **user_data, size_t *len, kg_err *err)
{
    wrapkey_job *j = arg;

    if (!wrapkey_join(j, err))
        return 0;
    *user_data = j->s->user_data;
    *len = j->s->user_data_len;
    return 1;
}

static int session_stale(const kg_session *s)
{
    return s->token == NULL || (long long)time(NULL) + KG_SESSION_MIN_VALIDITY_S > s->exp;
}

/* Passport: the current session if its token has >= 30 s left, else a new attestation, whose
 * wrapping key is *gen's (started by the caller; taken over) or a new one. Called with ctx->lock
 * held. On success *token is a copy (caller frees) and *wrapping_key a new reference (caller
 * frees). */
static int passport_session(kg_release_ctx *ctx, kg_release_times *t, kg_keygen **gen, char **token,
                            EVP_PKEY **wrapping_key, kg_err *err)
{
    kg_session *s = &ctx->session;
    kg_attestation att;
    kg_session fresh;
    wrapkey_job job = {NULL, &fresh, t};
    kg_user_data_source src = {wrapkey_user_data, &job};
    int ok = 0;

    memset(&att, 0, sizeof(att));
    memset(&fresh, 0, sizeof(fresh));
    if (session_stale(s)) {
        job.gen = *gen;
        *gen = NULL;
        if (job.gen == NULL && (job.gen = wrapkey_begin(ctx, err)) == NULL)
            goto err;
        if (ctx->verifier == NULL && (ctx->verifier = kg_verifier_new(&ctx->cfg, NULL, NULL, err)) == NULL)
            goto err;
        if (!kg_attest_with(&ctx->cfg, &src, ctx->verifier, ctx->api_key, &att, err))
            goto err;
        t->at.nonce = att.at_nonce - t->origin;
        t->at.evidence = att.at_evidence - t->origin;
        t->at.token = att.at_token - t->origin;
        t->at.verify = att.at_verify - t->origin;
        t->nonce = att.ms_nonce;
        t->evidence = att.ms_evidence;
        t->token = att.ms_token;
        t->verify = att.ms_verify;
        t->attested = 1;
        fresh.token = att.token;
        att.token = NULL;
        fresh.exp = att.claims.exp;
        session_clear(s);
        *s = fresh;
        memset(&fresh, 0, sizeof(fresh));
    }
    if ((*token = strdup(s->token)) == NULL || !EVP_PKEY_up_ref(s->wrapping_key)) {
        free(*token);
        *token = NULL;
        kg_err_set(err, KG_STEP_INTERNAL, "out of memory");
        goto err;
    }
    *wrapping_key = s->wrapping_key;
    ok = 1;
err:
    kg_keygen_abandon(job.gen); /* the nonce failed before the key was needed */
    kg_attestation_clear(&att);
    session_clear(&fresh);
    return ok;
}

/* Background: every transfer is an attestation of its own (the KBS asks ITA), so it gets a fresh
 * wrapping key, as a passport session does; nothing is shared between the workers of
 * kg_release_keys, so no lock. The local policy keygate can judge without a token is applied to
 * our quote before it leaves (kg_verify_evidence_policy). The KBS's generation decides the
 * exchange (docs/protocols/intel-kbs.md §8): v1.3.0 hands out a nonce for an empty POST; the 2026
 * one refuses that with 400, takes one request without a nonce and has ITA check REPORTDATA =
 * SHA-512(user data). Unless pinned, that 400 tells them apart and is remembered per URL. On
 * success *wrapping_key is the caller's. */
static int background_transfer(kg_release_ctx *ctx, kg_http *h, const kg_keyref *ref, kg_release_times *t,
                               EVP_PKEY **wrapping_key, kbs_wrapped *w, kg_err *err)
{
    const char *url = kbs_url_of(ctx, ref);
    kbs_intel_gen pinned = kg_intel_gen_pinned(&ctx->cfg), gen = kg_intel_gen_known(&ctx->cfg, url);
    char attestation_type[32] = "TDX"; /* the 2026 service names none: keygate attests TDs */
    kg_session s;
    wrapkey_job job = {NULL, &s, t};
    ita_nonce nonce;
    kg_evidence ev;
    ita_evidence iev;
    double t0;
    int ok = 0;

    memset(&s, 0, sizeof(s));
    memset(&nonce, 0, sizeof(nonce));
    memset(&ev, 0, sizeof(ev));
    /* generated while the KBS hands out the nonce (the v1.3.0 exchange) */
    if ((job.gen = wrapkey_begin(ctx, err)) == NULL)
        goto err;
    for (int attempt = 0;; attempt++) {
        int nonce_disabled = 0;

        t0 = kg_mono_ms();
        if (gen != KBS_INTEL_GEN_2026) {
            if (kbs_intel_get_nonce(h, url, ref->key_id, &nonce, attestation_type, sizeof(attestation_type),
                                    &nonce_disabled, err)) {
                gen = KBS_INTEL_GEN_V13;
            } else if (nonce_disabled && pinned == KBS_INTEL_GEN_UNKNOWN) {
                gen = KBS_INTEL_GEN_2026;
                KG_DEBUG("Intel KBS %s issues no nonce: the 2026 generation", url);
            } else {
                size_t len = strlen(err->msg);
                if (nonce_disabled)
                    snprintf(err->msg + len, sizeof(err->msg) - len,
                             " (a 2026 KBS, which issues no nonce; kbs_intel_generation = v1.3 is pinned)");
                goto err;
            }
            if (pinned == KBS_INTEL_GEN_UNKNOWN)
                kg_intel_gen_remember(url, gen);
        }
        KG_TIMES_STEP(t, nonce, t0);
        if (job.gen != NULL && !wrapkey_join(&job, err))
            goto err;
        t0 = kg_mono_ms();
        if (!kg_collect_evidence(&ctx->cfg, gen == KBS_INTEL_GEN_2026 ? NULL : &nonce, s.user_data,
                                 s.user_data_len, &ev, err))
            goto err;
        KG_TIMES_STEP(t, evidence, t0);
        t0 = kg_mono_ms();
        if (!kg_verify_evidence_policy(&ctx->cfg, &ev, err))
            goto err;
        KG_TIMES_STEP(t, verify, t0);
        t->attested = 1;
        memset(&iev, 0, sizeof(iev));
        iev.quote = ev.quote;
        iev.quote_len = ev.quote_len;
        iev.runtime_data = ev.runtime_data;
        iev.runtime_data_len = ev.runtime_data_len;
        iev.event_log = ev.event_log;
        iev.event_log_len = ev.event_log_len;
        t0 = kg_mono_ms();
        if (kbs_intel_transfer_background(h, url, ref->key_id, attestation_type, &iev,
                                          gen == KBS_INTEL_GEN_2026 ? NULL : &nonce, w, err))
            break;
        /* a KBS that changed generation behind the same URL (a rollback to v1.3.0 refuses the
         * nonce-less request's runtime_data; an upgrade between our two requests refuses the
         * v1.3.0 body) answers 400, which keygate's well-formed requests never get otherwise:
         * forget what was learnt and start again, once */
        if (pinned != KBS_INTEL_GEN_UNKNOWN || err->http_status != 400 || attempt > 0)
            goto err;
        KG_INFO("Intel KBS %s refused the transfer with 400 (%s): asking its generation again", url,
                err->msg);
        kg_intel_gen_remember(url, KBS_INTEL_GEN_UNKNOWN);
        gen = KBS_INTEL_GEN_UNKNOWN;
        ita_nonce_clear(&nonce);
        kg_evidence_clear(&ev);
        kg_err_clear(err);
    }
    KG_TIMES_STEP(t, transfer, t0);
    *wrapping_key = s.wrapping_key;
    s.wrapping_key = NULL;
    ok = 1;
err:
    kg_keygen_abandon(job.gen);
    session_clear(&s);
    ita_nonce_clear(&nonce);
    kg_evidence_clear(&ev);
    return ok;
}

/* Transfer, unwrap and match for one key, on the caller's HTTP handle (keep-alive across the
 * keys of a kg_release_keys worker) or, when shared is NULL, on its own. */
static int release_one(kg_release_ctx *ctx, kg_http *shared, const kg_keyref *ref, EVP_PKEY **key,
                       kg_release_times *t, kg_err *err)
{
    kg_http_opts hopts;
    kg_http *h = shared;
    kbs_wrapped w;
    EVP_PKEY *wrapping_key = NULL, *released = NULL;
    kg_keygen *gen = NULL;
    char *token = NULL;
    double t0;
    int ok = 0, stale;

    *key = NULL;
    memset(&w, 0, sizeof(w));
    if (kbs_url_of(ctx, ref)[0] == '\0')
        return kg_err_set(err, KG_STEP_CONFIG, "no KBS URL for key %s (kbs_url or the reference)",
                          ref->key_id);
    if (ref->kbs_type[0] != '\0' && strcmp(ref->kbs_type, ctx->cfg.kbs_type) != 0)
        return kg_err_set(err, KG_STEP_CONFIG, "key %s is on a %s KBS, keygate.conf says kbs_type = %s",
                          ref->key_id, ref->kbs_type, ctx->cfg.kbs_type);
    /* kg_config_check judged keygate.conf's kbs_url; a KBS named by the reference only is judged
     * here, before anything is attested (docs/supported-combinations.md) */
    if (!kg_config_check_passport(&ctx->cfg, err))
        return 0;
    if (strcmp(ctx->cfg.kbs_type, "trustee") == 0) {
        if (!kg_trustee_release(ctx->trustee, &ctx->cfg, kbs_url_of(ctx, ref), ref->key_id, &released, t,
                                err))
            goto err;
        goto match;
    }
    kg_config_http_opts(&ctx->cfg, KG_SVC_KBS, &hopts);
    if (h == NULL && (h = kg_http_new(&hopts, err)) == NULL)
        return 0;
    if (strcmp(ctx->cfg.kbs_mode, "background") == 0) {
        if (!background_transfer(ctx, h, ref, t, &wrapping_key, &w, err))
            goto err;
    } else {
        /* a new attestation's wrapping key is generated from here on, while the KBS generation
         * check, the ITA connection and the nonce run (passport_session takes it over; if another
         * thread attested meanwhile, it is abandoned below). Not while another release holds the
         * session (it may be attesting right now): passport_session starts one if still needed */
        stale = 0;
        if (pthread_mutex_trylock(&ctx->lock) == 0) {
            stale = session_stale(&ctx->session);
            pthread_mutex_unlock(&ctx->lock);
        }
        if (stale && (gen = wrapkey_begin(ctx, err)) == NULL)
            goto err;
        /* kbs_intel_generation = auto with v2 tokens: the KBS must say it takes them */
        if (!kg_intel_gen_check_passport(&ctx->cfg, h, kbs_url_of(ctx, ref), err))
            goto err;
        pthread_mutex_lock(&ctx->lock);
        ok = passport_session(ctx, t, &gen, &token, &wrapping_key, err);
        pthread_mutex_unlock(&ctx->lock);
        if (!ok)
            goto err;
        ok = 0;
        t0 = kg_mono_ms();
        if (!kbs_intel_transfer_passport(h, kbs_url_of(ctx, ref), ref->key_id, token, &w, err)) {
            /* a refused token: the next release asks the KBS's generation again */
            if (err->http_status == 401 && kg_intel_gen_pinned(&ctx->cfg) == KBS_INTEL_GEN_UNKNOWN)
                kg_intel_gen_remember(kbs_url_of(ctx, ref), KBS_INTEL_GEN_UNKNOWN);
            goto err;
        }
        KG_TIMES_STEP(t, transfer, t0);
    }
    if (ctx->probe) { /* the KBS said yes; the wrapped reply is dropped, never unwrapped */
        ok = 1;
        goto err;
    }
    t0 = kg_mono_ms();
    if (!kg_wrap_unwrap(wrapping_key, w.wrapped_key, w.wrapped_key_len, w.wrapped_swk, w.wrapped_swk_len,
                        ref->pubkey, &released, err))
        goto err;
    KG_TIMES_STEP(t, unwrap, t0);
match:
    t0 = kg_mono_ms();
    if (ref->pubkey != NULL && EVP_PKEY_eq(released, ref->pubkey) != 1) {
        kg_err_set(err, KG_STEP_MATCH,
                   "the KBS released a key for %s whose public key is not the reference's", ref->key_id);
        goto err;
    }
    KG_TIMES_STEP(t, match, t0);
    if (ctx->probe) { /* Trustee: its reply is decrypted by the protocol; freed (zeroized) here */
        ok = 1;
        goto err;
    }
    *key = released;
    released = NULL;
    ok = 1;
err:
    kg_keygen_abandon(gen);
    EVP_PKEY_free(released); /* frees the private key held in the secure heap */
    EVP_PKEY_free(wrapping_key);
    kbs_wrapped_clear(&w);
    free(token);
    if (h != shared)
        kg_http_free(h);
    return ok;
}

/* The idle KBS connection, if any (the caller owns it until http_put_idle), else NULL. */
static kg_http *http_take_idle(kg_release_ctx *ctx)
{
    kg_http *h;
    pthread_mutex_lock(&ctx->lock);
    h = ctx->idle_http;
    ctx->idle_http = NULL;
    pthread_mutex_unlock(&ctx->lock);
    return h;
}

static void http_put_idle(kg_release_ctx *ctx, kg_http *h)
{
    pthread_mutex_lock(&ctx->lock);
    if (ctx->idle_http == NULL) {
        ctx->idle_http = h;
        h = NULL;
    }
    pthread_mutex_unlock(&ctx->lock);
    kg_http_free(h);
}

int kg_release_key(kg_release_ctx *ctx, const kg_keyref *ref, EVP_PKEY **key, kg_release_times *times,
                   kg_err *err)
{
    kg_release_times t;
    kg_http_opts hopts;
    kg_http *h;
    int ok;

    memset(&t, 0, sizeof(t));
    t.origin = kg_mono_ms();
    /* keys loaded one after the other (nginx: one per server block) reuse one connection */
    kg_config_http_opts(&ctx->cfg, KG_SVC_KBS, &hopts);
    if ((h = http_take_idle(ctx)) == NULL)
        h = kg_http_new(&hopts, err);
    ok = h != NULL && release_one(ctx, h, ref, key, &t, err);
    if (h != NULL)
        http_put_idle(ctx, h);
    if (times != NULL)
        *times = t;
    return ok;
}

/* Whether err is a failure of the attestation a batch shares (passport: one session for every
 * key), not of one key's own transfer. Background mode attests per transfer: never shared. */
static int session_step_failed(const kg_release_ctx *ctx, const kg_err *err)
{
    if (strcmp(ctx->cfg.kbs_mode, "background") == 0)
        return 0;
    switch (err->step) {
    case KG_STEP_WRAPKEY:
    case KG_STEP_NONCE:
    case KG_STEP_EVIDENCE:
    case KG_STEP_TOKEN:
    case KG_STEP_VERIFY: return 1;
    default: return 0;
    }
}

typedef struct release_job {
    kg_release_ctx *ctx;
    const kg_keyref *const *refs;
    EVP_PKEY **keys;
    kg_err *errs;
    kg_release_times *times;
    size_t n;
    size_t next; /* next index to take, under ctx->lock */
} release_job;

/* One worker: its own HTTP handle for all the keys it takes, so transfers to the same KBS reuse
 * the connection (no TLS handshake per key). */
static void *release_worker(void *arg)
{
    release_job *job = arg;
    kg_http_opts hopts;
    kg_http *h;
    kg_err ignored;

    kg_config_http_opts(&job->ctx->cfg, KG_SVC_KBS, &hopts);
    h = kg_http_new(&hopts, &ignored); /* NULL: release_one makes one per key */
    for (;;) {
        size_t i;
        pthread_mutex_lock(&job->ctx->lock);
        i = job->next++;
        pthread_mutex_unlock(&job->ctx->lock);
        if (i >= job->n)
            break;
        kg_err_clear(&job->errs[i]);
        release_one(job->ctx, h, job->refs[i], &job->keys[i], &job->times[i], &job->errs[i]);
    }
    kg_http_free(h);
    return NULL;
}

size_t kg_release_keys(kg_release_ctx *ctx, const kg_keyref *const *refs, size_t n, EVP_PKEY **keys,
                       kg_err *errs, kg_release_times *times)
{
    kg_release_times *t = calloc(n ? n : 1, sizeof(*t));
    kg_err *e = errs != NULL ? errs : calloc(n ? n : 1, sizeof(*e));
    pthread_t threads[KG_RELEASE_MAX_PARALLEL];
    size_t nthreads = 0, released = 0, first;
    release_job job = {ctx, refs, keys, e, t, n, 0};

    for (size_t i = 0; i < n; i++)
        keys[i] = NULL;
    if (t == NULL || e == NULL || n == 0)
        goto done;
    t[0].origin = kg_mono_ms();
    for (size_t i = 1; i < n; i++)
        t[i].origin = t[0].origin; /* one time line for the whole batch */
    /* the first key runs alone: it makes the attestation every other transfer reuses */
    first = job.next++;
    if (!release_one(ctx, NULL, refs[first], &keys[first], &t[first], &e[first]) &&
        session_step_failed(ctx, &e[first])) {
        /* the attestation every key would share failed: the others fail with it rather than
         * attest again one after the other (a preload of 50 keys against an ITA that is down) */
        for (size_t i = 1; i < n; i++)
            e[i] = e[first];
        job.next = n;
    }
    while (job.next < n && nthreads < KG_RELEASE_MAX_PARALLEL && nthreads + 1 < n &&
           pthread_create(&threads[nthreads], NULL, release_worker, &job) == 0)
        nthreads++;
    if (nthreads == 0 && job.next < n)
        release_worker(&job);
    for (size_t i = 0; i < nthreads; i++)
        pthread_join(threads[i], NULL);
    for (size_t i = 0; i < n; i++)
        released += keys[i] != NULL;
    if (times != NULL) {
        *times = t[first];
        for (size_t i = 0; i < n; i++) {
            if (t[i].transfer > times->transfer) {
                times->transfer = t[i].transfer;
                times->at.transfer = t[i].at.transfer;
            }
            if (t[i].unwrap > times->unwrap) {
                times->unwrap = t[i].unwrap;
                times->at.unwrap = t[i].at.unwrap;
            }
            if (t[i].match > times->match) {
                times->match = t[i].match;
                times->at.match = t[i].at.match;
            }
        }
    }
done:
    free(t);
    if (errs == NULL)
        free(e);
    return released;
}
