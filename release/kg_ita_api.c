/* SPDX-License-Identifier: Apache-2.0 */
/*
 * keygate/ita.h: the public ITA client API, a thin layer over connector/ (ita_client,
 * ita_verify, ita_claims) and release/ (configuration, adapters, kg_attest).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ita_claims.h"
#include "ita_client.h"
#include "ita_verify.h"
#include "keygate/ita.h"
#include "kg_attest.h"
#include "kg_config.h"
#include "kg_http.h"
#include "kg_verify.h"

#define DEFAULT_API_URL "https://api.trustauthority.intel.com"
#define DEFAULT_BASE_URL "https://portal.trustauthority.intel.com"

struct keygate_ita {
    kg_config cfg;          /* effective settings (from the struct or a keygate.conf) */
    int has_conf;           /* created from a keygate.conf: the adapter can be used */
    ita_client *client;     /* NULL when no API key file was given */
    ita_verifier *verifier; /* created on first verification; caches JWKS and CRLs */
    kg_http *http;          /* for the JWKS download */
};

static void meta_from_client(const ita_client *c, keygate_ita_meta *meta)
{
    const ita_call_meta *m;
    if (meta == NULL)
        return;
    memset(meta, 0, sizeof(*meta));
    if (c == NULL)
        return;
    m = ita_client_last_meta(c);
    meta->http_status = m->status;
    memcpy(meta->request_id, m->request_id, sizeof(meta->request_id));
    memcpy(meta->trace_id, m->trace_id, sizeof(meta->trace_id));
}

static int set_str(kg_config *cfg, const char *key, const char *value, kg_err *err)
{
    return value == NULL || kg_config_set(cfg, key, value, err);
}

static int config_from_struct(const keygate_ita_config *in, kg_config *cfg, kg_err *err)
{
    char num[32];
    long retries;

    kg_config_defaults(cfg);
    if (!set_str(cfg, "ita_api_url", in->api_url ? in->api_url : DEFAULT_API_URL, err) ||
        !set_str(cfg, "ita_base_url", in->base_url ? in->base_url : DEFAULT_BASE_URL, err) ||
        !set_str(cfg, "ita_api_key_file", in->api_key_file, err) ||
        !set_str(cfg, "ita_trust_anchor", in->trust_anchor_file, err) ||
        !set_str(cfg, "tls_ca_file", in->tls_ca_file, err) ||
        !set_str(cfg, "crl_policy", in->crl_if_available ? "if-available" : "require", err))
        return 0;
    if (in->timeout_ms != 0) {
        snprintf(num, sizeof(num), "%ld", in->timeout_ms);
        if (!kg_config_set(cfg, "timeout_ms", num, err))
            return 0;
    }
    if (in->leeway_s != 0) {
        snprintf(num, sizeof(num), "%ld", in->leeway_s);
        if (!kg_config_set(cfg, "token_leeway_s", num, err))
            return 0;
    }
    retries = in->retry.max_retries < 0 ? 0 : in->retry.max_retries == 0 ? 2 : in->retry.max_retries;
    snprintf(num, sizeof(num), "%ld", retries);
    if (!kg_config_set(cfg, "retry_max", num, err))
        return 0;
    if (in->retry.wait_min_ms > 0) {
        snprintf(num, sizeof(num), "%ld", in->retry.wait_min_ms);
        if (!kg_config_set(cfg, "retry_wait_min_ms", num, err))
            return 0;
    }
    if (in->retry.wait_max_ms > 0) {
        snprintf(num, sizeof(num), "%ld", in->retry.wait_max_ms);
        if (!kg_config_set(cfg, "retry_wait_max_ms", num, err))
            return 0;
    }
    cfg->require_tcb_status[0] = '\0'; /* relying parties state their policy in keygate_ita_expect */
    return kg_config_check(cfg, err);
}

static keygate_ita *ita_create(const kg_config *cfg, int has_conf, kg_err *err)
{
    keygate_ita *ita = calloc(1, sizeof(*ita));
    kg_http_opts hopts;

    if (ita == NULL) {
        kg_err_set(err, KG_STEP_INTERNAL, "out of memory");
        return NULL;
    }
    ita->cfg = *cfg;
    ita->has_conf = has_conf;
    kg_config_http_opts(cfg, KG_SVC_ITA, &hopts);
    if ((ita->http = kg_http_new(&hopts, err)) == NULL)
        goto err;
    if (cfg->ita_api_key_file[0] != '\0') {
        ita_client_opts copts = {cfg->ita_api_url, cfg->ita_base_url, cfg->ita_api_key_file, hopts, NULL};
        if ((ita->client = ita_client_new(&copts, err)) == NULL)
            goto err;
    }
    return ita;
err:
    keygate_ita_free(ita);
    return NULL;
}

keygate_ita *keygate_ita_new(const keygate_ita_config *in, keygate_error *err)
{
    kg_config cfg;

    kg_err_clear(err);
    if (in == NULL) {
        kg_err_set(err, KG_STEP_CONFIG, "no configuration");
        return NULL;
    }
    if (!config_from_struct(in, &cfg, err))
        return NULL;
    return ita_create(&cfg, 0, err);
}

keygate_ita *keygate_ita_new_from_conf(const char *path, keygate_error *err)
{
    kg_config cfg;

    kg_err_clear(err);
    if (path == NULL) {
        kg_err_set(err, KG_STEP_CONFIG, "no keygate.conf path");
        return NULL;
    }
    kg_config_defaults(&cfg);
    if (!kg_config_load_file(&cfg, path, err) || !kg_config_check(&cfg, err))
        return NULL;
    return ita_create(&cfg, 1, err);
}

void keygate_ita_free(keygate_ita *ita)
{
    if (ita == NULL)
        return;
    ita_client_free(ita->client);
    ita_verifier_free(ita->verifier);
    kg_http_free(ita->http);
    free(ita);
}

static int need_client(keygate_ita *ita, kg_step step, kg_err *err)
{
    return ita->client != NULL || kg_err_set(err, step, "no API key file configured");
}

int keygate_ita_get_nonce(keygate_ita *ita, keygate_ita_nonce *nonce, keygate_ita_meta *meta,
                          keygate_error *err)
{
    int ok;

    kg_err_clear(err);
    memset(nonce, 0, sizeof(*nonce));
    if (!need_client(ita, KG_STEP_NONCE, err))
        return 0;
    ok = ita_get_nonce(ita->client, nonce, err);
    meta_from_client(ita->client, meta);
    return ok;
}

void keygate_ita_nonce_clear(keygate_ita_nonce *nonce)
{
    ita_nonce_clear(nonce);
}

int keygate_ita_get_token(keygate_ita *ita, const keygate_ita_evidence *ev, const keygate_ita_nonce *nonce,
                          const keygate_ita_token_args *args, char **token, keygate_ita_meta *meta,
                          keygate_error *err)
{
    ita_attest_opts o;
    int ok;

    kg_err_clear(err);
    *token = NULL;
    if (!need_client(ita, KG_STEP_TOKEN, err))
        return 0;
    memset(&o, 0, sizeof(o));
    o.api_version = 1;
    if (args != NULL) {
        o.api_version = args->api_version == 0 ? 1 : args->api_version;
        o.policy_ids = args->policy_ids;
        o.policy_id_count = args->policy_id_count;
        o.token_alg = args->token_alg;
        o.policy_must_match = args->policy_must_match;
        o.request_id = args->request_id;
        o.azure = args->azure;
    }
    ok = ita_attest(ita->client, ev, nonce, &o, token, err);
    meta_from_client(ita->client, meta);
    return ok;
}

int keygate_ita_attest(keygate_ita *ita, const uint8_t *user_data, size_t user_data_len, char **token,
                       keygate_ita_claims *claims, keygate_ita_meta *meta, keygate_error *err)
{
    kg_attestation att;
    int ok;

    kg_err_clear(err);
    *token = NULL;
    if (claims != NULL)
        memset(claims, 0, sizeof(*claims));
    if (!ita->has_conf)
        return kg_err_set(err, KG_STEP_CONFIG,
                          "attest needs an adapter: create the client with "
                          "keygate_ita_new_from_conf");
    ok = kg_attest(&ita->cfg, user_data, user_data_len, 1, &att, err);
    if (meta != NULL) {
        memset(meta, 0, sizeof(*meta));
        meta->http_status = err != NULL && !ok ? err->http_status : (att.token != NULL ? 200 : 0);
        memcpy(meta->request_id, att.token_request_id, sizeof(meta->request_id));
        memcpy(meta->trace_id, att.token_trace_id, sizeof(meta->trace_id));
    }
    if (ok) {
        *token = att.token;
        att.token = NULL;
        if (claims != NULL) {
            *claims = att.claims; /* moves the owned buffers */
            memset(&att.claims, 0, sizeof(att.claims));
        }
    }
    kg_attestation_clear(&att);
    return ok;
}

int keygate_ita_get_token_signing_certificates(keygate_ita *ita, char **jwks_json, keygate_ita_meta *meta,
                                               keygate_error *err)
{
    const char *headers[] = {"Accept: application/json", NULL};
    char url[sizeof(ita->cfg.ita_base_url) + 8];
    kg_http_response resp;

    kg_err_clear(err);
    *jwks_json = NULL;
    if (meta != NULL)
        memset(meta, 0, sizeof(*meta));
    snprintf(url, sizeof(url), "%s/certs", ita->cfg.ita_base_url);
    /* no API key: /certs is public, and the key goes to the API host only */
    if (!kg_http_request(ita->http, KG_STEP_VERIFY, "GET", url, headers, NULL, 0, 1024 * 1024, &resp, err))
        return 0;
    if (meta != NULL) {
        meta->http_status = resp.status;
        memcpy(meta->request_id, resp.request_id, sizeof(meta->request_id));
        memcpy(meta->trace_id, resp.trace_id, sizeof(meta->trace_id));
    }
    if (resp.status != 200) {
        kg_http_status_error(err, KG_STEP_VERIFY, "GET", url, &resp);
        kg_http_response_clear(&resp);
        return 0;
    }
    *jwks_json = (char *)resp.body; /* NUL-terminated by kg_http */
    resp.body = NULL;
    kg_http_response_clear(&resp);
    return 1;
}

int keygate_ita_verify_token(keygate_ita *ita, const char *token, const keygate_ita_expect *expect,
                             keygate_ita_claims *claims, keygate_error *err)
{
    kg_config cfg = ita->cfg;
    kg_verify_opts vo;

    kg_err_clear(err);
    memset(&vo, 0, sizeof(vo));
    if (expect != NULL) {
        vo.at = expect->at;
        vo.nonce = expect->nonce;
        vo.user_data = expect->user_data;
        vo.user_data_len = expect->user_data_len;
        cfg.allow_debug_td = expect->allow_debug;
        snprintf(cfg.require_tcb_status, sizeof(cfg.require_tcb_status), "%s",
                 expect->tcb_status_allow ? expect->tcb_status_allow : "");
        snprintf(cfg.require_mrtd, sizeof(cfg.require_mrtd), "%s",
                 expect->mrtd_allow ? expect->mrtd_allow : "");
        for (int i = 0; i < 4; i++)
            snprintf(cfg.require_rtmr[i], sizeof(cfg.require_rtmr[i]), "%s",
                     expect->rtmr_allow[i] ? expect->rtmr_allow[i] : "");
        cfg.ita_policy_id_count = 0;
        for (int i = 0; i < expect->required_policy_count && i < KG_CONF_MAX_POLICY_IDS; i++) {
            memcpy(cfg.ita_policy_ids[i], expect->required_policy_ids[i], 36);
            cfg.ita_policy_ids[i][36] = '\0';
            cfg.ita_policy_id_count++;
        }
    } else if (!ita->has_conf) {
        cfg.require_tcb_status[0] = '\0';
        cfg.ita_policy_id_count = 0;
    }
    if (ita->verifier == NULL && (ita->verifier = kg_verifier_new(&ita->cfg, NULL, NULL, err)) == NULL)
        return 0;
    vo.verifier = ita->verifier; /* JWKS and CRLs stay cached across calls */
    return kg_verify_token(&cfg, token, &vo, claims, err);
}

void keygate_ita_claims_clear(keygate_ita_claims *claims)
{
    ita_claims_clear(claims);
}
