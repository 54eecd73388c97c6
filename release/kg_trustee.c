/* SPDX-License-Identifier: Apache-2.0 */
#include "kg_trustee.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kbs_trustee.h"
#include "kg_adapter.h"
#include "kg_attest.h"
#include "kg_ear.h"
#include "kg_jwe.h"
#include "kg_jws.h"
#include "kg_keygen.h"
#include "kg_log.h"
#include "kg_time.h"
#include "kg_verify.h"
#include "kg_wrap.h"

/* One handshake: the TEE key whose public half the token binds, and how to show it. */
typedef struct trustee_session {
    EVP_PKEY *tee_key;
    cJSON *tee_jwk;
    kbs_trustee_challenge ch;
    char *token;
    long long token_exp;
    char kbs_url[KG_CONF_STR];
    unsigned long generation; /* 0 = no session */
} trustee_session;

struct kg_trustee {
    pthread_mutex_t lock;
    trustee_session s;
    ita_verifier *verifier; /* trustee_token = ita: JWKS and CRL caches across handshakes */
    EVP_PKEY *as_key;       /* trustee_token = ear: the pinned AS key, read at the first handshake */
    unsigned long generations;
};

/* What one request uses of the session, taken under the lock. */
typedef struct session_view {
    EVP_PKEY *tee_key; /* a reference */
    char *cookie;      /* or NULL */
    char *token;       /* when there is no cookie */
    unsigned long generation;
    int fresh; /* made by this request */
} session_view;

static void session_clear(trustee_session *s)
{
    EVP_PKEY_free(s->tee_key);
    cJSON_Delete(s->tee_jwk);
    if (s->token != NULL) {
        OPENSSL_cleanse(s->token, strlen(s->token));
        free(s->token);
    }
    memset(s, 0, sizeof(*s));
}

static void view_clear(session_view *v)
{
    EVP_PKEY_free(v->tee_key);
    free(v->cookie);
    if (v->token != NULL) {
        OPENSSL_cleanse(v->token, strlen(v->token));
        free(v->token);
    }
    memset(v, 0, sizeof(*v));
}

kg_trustee *kg_trustee_new(void)
{
    kg_trustee *t = calloc(1, sizeof(*t));
    if (t != NULL)
        pthread_mutex_init(&t->lock, NULL);
    return t;
}

void kg_trustee_free(kg_trustee *t)
{
    if (t == NULL)
        return;
    session_clear(&t->s);
    ita_verifier_free(t->verifier);
    EVP_PKEY_free(t->as_key);
    pthread_mutex_destroy(&t->lock);
    free(t);
}

void kg_trustee_drop_session(kg_trustee *t)
{
    if (t == NULL)
        return;
    pthread_mutex_lock(&t->lock);
    session_clear(&t->s); /* generation 0: the next request makes a new handshake */
    pthread_mutex_unlock(&t->lock);
}

void kg_trustee_atfork_child(kg_trustee *t)
{
    if (t != NULL)
        pthread_mutex_init(&t->lock, NULL);
}

static int cookie_usable(const trustee_session *s, long long now)
{
    return s->ch.cookie[0] != '\0' && s->ch.cookie_expires >= now + KG_SESSION_MIN_VALIDITY_S;
}

static int token_usable(const trustee_session *s, long long now)
{
    return s->token != NULL && s->token_exp >= now + KG_SESSION_MIN_VALIDITY_S;
}

/* Whether a token's header looks like an EAR's (a jwk, no kid): to name the remedy when
 * trustee_token = ita meets Trustee's built-in attestation service. Nothing is trusted here. */
static int looks_like_ear(const char *token)
{
    kg_jws jws;
    cJSON *h;
    int ear = 0;

    if (!kg_jws_split(token, &jws, NULL))
        return 0;
    h = cJSON_Parse(jws.header_json);
    ear = cJSON_GetObjectItemCaseSensitive(h, "jwk") != NULL &&
          cJSON_GetObjectItemCaseSensitive(h, "kid") == NULL;
    cJSON_Delete(h);
    kg_jws_clear(&jws);
    return ear;
}

/* Step 5, trustee_token = ita: our ITA verifier, then the v2 runtime-data binding. */
static int verify_ita(kg_trustee *t, const kg_config *cfg, const trustee_session *s,
                      const uint8_t report_data[64], long long *exp, kg_err *err)
{
    kg_verify_opts vopts;
    ita_claims claims;
    cJSON *payload = NULL;
    int ok = 0;

    memset(&claims, 0, sizeof(claims));
    memset(&vopts, 0, sizeof(vopts));
    vopts.verifier = t->verifier;
    vopts.payload = &payload;
    if (looks_like_ear(s->token)) {
        kg_err_set(
            err, KG_STEP_VERIFY,
            "the KBS returned an EAR token (Trustee's built-in attestation service), not an ITA token; "
            "set trustee_token = ear and trustee_as_cert");
        goto err;
    }
    if (!kg_verify_token(cfg, s->token, &vopts, &claims, err))
        goto err;
    if (claims.layout != 2) {
        kg_err_set(err, KG_STEP_VERIFY, "the KBS returned a v%d ITA token; Trustee's ITA backend gives v2",
                   claims.layout);
        goto err;
    }
    if (!kbs_trustee_check_binding(payload, &s->ch, s->tee_jwk, report_data, err))
        goto err;
    *exp = claims.exp;
    ok = 1;
err:
    cJSON_Delete(payload);
    ita_claims_clear(&claims);
    return ok;
}

/* Step 5, trustee_token = ear: the pinned AS key, the appraisal status, expiry, the binding. */
static int verify_ear(kg_trustee *t, const kg_config *cfg, const trustee_session *s,
                      const uint8_t report_data[64], long long *exp, kg_err *err)
{
    kg_ear_expect x;
    cJSON *payload = NULL;
    int ok;

    memset(&x, 0, sizeof(x));
    x.leeway_s = cfg->token_leeway_s;
    x.max_status = kg_ear_status_of(cfg->trustee_ear_status);
    ok = kg_ear_verify_signature(t->as_key, s->token, &payload, err) &&
         kg_ear_check_claims(payload, &x, exp, err) &&
         kg_ear_check_binding(payload, s->ch.nonce, s->tee_jwk, report_data, err);
    cJSON_Delete(payload);
    return ok;
}

/* Steps 1-5 into a new session. Called with t->lock held. */
static int handshake(kg_trustee *t, const kg_config *cfg, kg_http *h, const char *kbs_url,
                     kg_release_times *tm, kg_err *err)
{
    trustee_session s;
    kg_adapter_request areq;
    kg_evidence ev;
    kbs_trustee_reply reply;
    uint8_t report_data[64];
    int ear = strcmp(cfg->trustee_token, "ear") == 0;
    kg_keygen *gen = NULL;
    double t0, t1;
    int ok = 0;

    memset(&s, 0, sizeof(s));
    memset(&ev, 0, sizeof(ev));
    if (ear ? t->as_key == NULL &&
                  (t->as_key = kg_ear_key_read(cfg->trustee_as_cert, "trustee_as_cert", err)) == NULL
            : t->verifier == NULL && (t->verifier = kg_verifier_new(cfg, NULL, NULL, err)) == NULL)
        goto err;
    /* the TEE key (RSA-3072: hundreds of ms) is generated while /auth hands out the nonce */
    if ((gen = kg_keygen_start(cfg->trustee_tee_key, cfg->cancel, err)) == NULL)
        goto err;

    t0 = kg_mono_ms();
    if (!kbs_trustee_auth(h, kbs_url, "tdx", &s.ch, err))
        goto err;
    KG_TIMES_STEP(tm, nonce, t0);

    {
        kg_keygen *g = gen;
        gen = NULL;
        if (!kg_keygen_join(g, &s.tee_key, &t0, &t1, err) ||
            (s.tee_jwk = kg_jwe_public_jwk(s.tee_key, KG_STEP_WRAPKEY, err)) == NULL)
            goto err;
        tm->at.wrapkey = t0 - tm->origin;
        tm->wrapkey = t1 - t0;
    }

    t0 = kg_mono_ms();
    if (!kbs_trustee_report_data(s.ch.nonce, s.tee_jwk, s.ch.hash_alg, "", KG_STEP_EVIDENCE, report_data,
                                 NULL, err))
        goto err;
    memset(&areq, 0, sizeof(areq));
    areq.report_data = report_data;
    if (!kg_adapter_collect(&cfg->ad, &areq, &ev, err))
        goto err;
    /* an EAR carries Trustee's verdict, not the TD's values for our local policy: judge our own
     * quote (debug bit, MRTD, RTMRs) before it leaves, as kbs_mode = background does */
    if (ear && !kg_verify_evidence_policy(cfg, &ev, err))
        goto err;
    KG_TIMES_STEP(tm, evidence, t0);

    t0 = kg_mono_ms();
    if (!kbs_trustee_attest(h, kbs_url, &s.ch, s.tee_jwk, ev.quote, ev.quote_len, ev.event_log,
                            ev.event_log_len, &s.token, &reply, err))
        goto err;
    KG_TIMES_STEP(tm, token, t0);

    t0 = kg_mono_ms();
    if (!(ear ? verify_ear(t, cfg, &s, report_data, &s.token_exp, err)
              : verify_ita(t, cfg, &s, report_data, &s.token_exp, err)))
        goto err;
    KG_TIMES_STEP(tm, verify, t0);
    tm->attested = 1;

    snprintf(s.kbs_url, sizeof(s.kbs_url), "%s", kbs_url);
    s.generation = ++t->generations;
    session_clear(&t->s);
    t->s = s;
    memset(&s, 0, sizeof(s));
    KG_INFO("trustee: new session %lu with %s (%s, %s TEE key, %s token)", t->s.generation, kbs_url,
            t->s.ch.hash_alg, cfg->trustee_tee_key, cfg->trustee_token);
    ok = 1;
err:
    kg_keygen_abandon(gen);
    OPENSSL_cleanse(report_data, sizeof(report_data));
    kg_evidence_clear(&ev);
    session_clear(&s);
    return ok;
}

/* The session to use (a new one when there is none, it is for another KBS, it expires, or it is
 * generation `stale`), as a view for one request. */
static int take_session(kg_trustee *t, const kg_config *cfg, kg_http *h, const char *kbs_url,
                        unsigned long stale, session_view *v, kg_release_times *tm, kg_err *err)
{
    long long now = (long long)time(NULL);
    trustee_session *s = &t->s;
    int ok = 0;

    memset(v, 0, sizeof(*v));
    pthread_mutex_lock(&t->lock);
    if (s->generation == 0 || s->generation == stale || strcmp(s->kbs_url, kbs_url) != 0 ||
        (!cookie_usable(s, now) && !token_usable(s, now))) {
        if (!handshake(t, cfg, h, kbs_url, tm, err))
            goto err;
        v->fresh = 1;
        now = (long long)time(NULL);
    }
    if (cookie_usable(s, now) ? (v->cookie = strdup(s->ch.cookie)) == NULL
                              : (v->token = strdup(s->token)) == NULL) {
        kg_err_set(err, KG_STEP_INTERNAL, "out of memory");
        goto err;
    }
    if (!EVP_PKEY_up_ref(s->tee_key)) {
        kg_err_set(err, KG_STEP_INTERNAL, "out of memory");
        goto err;
    }
    v->tee_key = s->tee_key;
    v->generation = s->generation;
    ok = 1;
err:
    pthread_mutex_unlock(&t->lock);
    if (!ok)
        view_clear(v);
    return ok;
}

int kg_trustee_release(kg_trustee *t, const kg_config *cfg, const char *kbs_url, const char *path,
                       EVP_PKEY **key, kg_release_times *tm, kg_err *err)
{
    kg_http_opts hopts;
    kg_http *h = NULL;
    session_view v;
    kbs_trustee_reply reply;
    char *jwe = NULL;
    size_t jwe_len = 0, plain_len = 0;
    uint8_t *plain = NULL;
    double t0;
    int ok = 0;

    *key = NULL;
    memset(&v, 0, sizeof(v));
    kg_config_http_opts(cfg, KG_SVC_KBS, &hopts);
    if ((h = kg_http_new(&hopts, err)) == NULL)
        return 0;
    if (!take_session(t, cfg, h, kbs_url, 0, &v, tm, err))
        goto err;
    t0 = kg_mono_ms();
    if (!kbs_trustee_get_resource(h, kbs_url, path, v.cookie, v.token, &jwe, &jwe_len, &reply, err)) {
        if (v.fresh || reply.cls != KBS_TRUSTEE_REATTEST)
            goto err;
        /* the KBS no longer honours the session we reused: one new handshake */
        KG_INFO("trustee: session %lu refused (%s), attesting again", v.generation, reply.error_kind);
        {
            unsigned long stale = v.generation;
            view_clear(&v);
            if (!take_session(t, cfg, h, kbs_url, stale, &v, tm, err))
                goto err;
        }
        t0 = kg_mono_ms();
        if (!kbs_trustee_get_resource(h, kbs_url, path, v.cookie, v.token, &jwe, &jwe_len, &reply, err)) {
            size_t len = strlen(err->msg);
            snprintf(err->msg + len, sizeof(err->msg) - len, " (also after a new attestation)");
            goto err;
        }
    }
    KG_TIMES_STEP(tm, transfer, t0);
    t0 = kg_mono_ms();
    if (!kg_jwe_decrypt(jwe, jwe_len, v.tee_key, KG_STEP_UNWRAP, &plain, &plain_len, err) ||
        !kg_wrap_parse_resource(plain, plain_len, key, err))
        goto err;
    KG_TIMES_STEP(tm, unwrap, t0);
    ok = 1;
err:
    if (plain != NULL)
        OPENSSL_secure_clear_free(plain, plain_len + 1);
    free(jwe);
    view_clear(&v);
    kg_http_free(h);
    return ok;
}
