/* SPDX-License-Identifier: Apache-2.0 */
#include "kg_attest.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kg_imds.h"
#include "kg_time.h"
#include "kg_verify.h"

static int attest(const kg_config *cfg, const uint8_t *user_data, size_t user_data_len,
                  const kg_user_data_source *src, int verify, ita_verifier *verifier, const char *api_key,
                  kg_attestation *out, kg_err *err);

void kg_attestation_clear(kg_attestation *a)
{
    if (a == NULL)
        return;
    ita_nonce_clear(&a->nonce);
    kg_evidence_clear(&a->evidence);
    free(a->token);
    ita_claims_clear(&a->claims);
    cJSON_Delete(a->payload);
    memset(a, 0, sizeof(*a));
}

const char *kg_config_ca_file(const kg_config *cfg, kg_service svc)
{
    const char *own = svc == KG_SVC_ITA ? cfg->ita_tls_ca_file : cfg->kbs_tls_ca_file;
    return own[0] != '\0' ? own : cfg->tls_ca_file;
}

void kg_config_http_opts(const kg_config *cfg, kg_service svc, kg_http_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->ca_file = kg_config_ca_file(cfg, svc);
    o->allow_http_loopback = cfg->allow_http_loopback;
    o->timeout_ms = cfg->timeout_ms;
    o->max_attempts = cfg->retry_max + 1; /* retry_max counts retries, as Intel's Go client does */
    o->retry_wait_min_ms = cfg->retry_wait_min_ms;
    o->retry_wait_max_ms = cfg->retry_wait_max_ms;
    o->cancel = cfg->cancel;
}

int kg_collect_evidence(const kg_config *cfg, const ita_nonce *nonce, const uint8_t *user_data,
                        size_t user_data_len, kg_evidence *ev, kg_err *err)
{
    kg_adapter_request req;

    memset(&req, 0, sizeof(req));
    if (nonce != NULL) {
        req.nonce_val = nonce->val;
        req.nonce_val_len = nonce->val_len;
        req.nonce_iat = nonce->iat;
        req.nonce_iat_len = nonce->iat_len;
    }
    req.user_data = user_data;
    req.user_data_len = user_data_len;
    req.imds_tdquote = kg_imds_tdquote;
    req.imds_ctx = (void *)cfg;
    return kg_adapter_collect(&cfg->ad, &req, ev, err);
}

int kg_attest(const kg_config *cfg, const uint8_t *user_data, size_t user_data_len, int verify,
              kg_attestation *out, kg_err *err)
{
    return attest(cfg, user_data, user_data_len, NULL, verify, NULL, NULL, out, err);
}

int kg_attest_key(const kg_config *cfg, const uint8_t *user_data, size_t user_data_len, int verify,
                  const char *api_key, kg_attestation *out, kg_err *err)
{
    return attest(cfg, user_data, user_data_len, NULL, verify, NULL, api_key, out, err);
}

int kg_attest_with(const kg_config *cfg, const kg_user_data_source *src, ita_verifier *verifier,
                   const char *api_key, kg_attestation *out, kg_err *err)
{
    return attest(cfg, NULL, 0, src, 1, verifier, api_key, out, err);
}

/* user_data, or src when not NULL (asked after the nonce). */
static int attest(const kg_config *cfg, const uint8_t *user_data, size_t user_data_len,
                  const kg_user_data_source *src, int verify, ita_verifier *verifier, const char *api_key,
                  kg_attestation *out, kg_err *err)
{
    ita_client_opts copts;
    ita_attest_opts aopts;
    ita_evidence iev;
    ita_client *ita = NULL;
    double t0;
    int ok = 0;

    memset(out, 0, sizeof(*out));
    memset(&copts, 0, sizeof(copts));
    copts.api_url = cfg->ita_api_url;
    copts.base_url = cfg->ita_base_url;
    copts.api_key_file = cfg->ita_api_key_file;
    copts.api_key = api_key;
    kg_config_http_opts(cfg, KG_SVC_ITA, &copts.http);
    if ((ita = ita_client_new(&copts, err)) == NULL)
        goto err;

    out->at_nonce = t0 = kg_mono_ms();
    if (!ita_get_nonce(ita, &out->nonce, err))
        goto err;
    out->ms_nonce = kg_mono_ms() - t0;

    if (src != NULL && !src->get(src->arg, &user_data, &user_data_len, err))
        goto err;
    out->at_evidence = t0 = kg_mono_ms();
    if (!kg_collect_evidence(cfg, &out->nonce, user_data, user_data_len, &out->evidence, err))
        goto err;
    out->ms_evidence = kg_mono_ms() - t0;

    memset(&iev, 0, sizeof(iev));
    iev.quote = out->evidence.quote;
    iev.quote_len = out->evidence.quote_len;
    iev.runtime_data = out->evidence.runtime_data;
    iev.runtime_data_len = out->evidence.runtime_data_len;
    iev.event_log = out->evidence.event_log;
    iev.event_log_len = out->evidence.event_log_len;
    iev.user_data = out->evidence.user_data;
    iev.user_data_len = out->evidence.user_data_len;
    memset(&aopts, 0, sizeof(aopts));
    aopts.api_version = strcmp(cfg->ita_api_version, "v2") == 0 ? 2 : 1;
    aopts.policy_ids = cfg->ita_policy_ids;
    aopts.policy_id_count = cfg->ita_policy_id_count;
    aopts.token_alg = cfg->ita_token_alg;
    aopts.azure = out->evidence.kind == KG_EVIDENCE_AZURE_TDX;
    out->at_token = t0 = kg_mono_ms();
    ok = ita_attest(ita, &iev, &out->nonce, &aopts, &out->token, err);
    memcpy(out->token_request_id, ita_client_last_meta(ita)->request_id, sizeof(out->token_request_id));
    memcpy(out->token_trace_id, ita_client_last_meta(ita)->trace_id, sizeof(out->token_trace_id));
    if (!ok)
        goto err;
    out->ms_token = kg_mono_ms() - t0;
    ok = 0;

    if (verify) {
        kg_verify_opts vopts;
        memset(&vopts, 0, sizeof(vopts));
        vopts.nonce = &out->nonce;
        vopts.user_data = user_data;
        vopts.user_data_len = user_data_len;
        vopts.payload = &out->payload;
        vopts.verifier = verifier;
        out->at_verify = t0 = kg_mono_ms();
        if (!kg_verify_token(cfg, out->token, &vopts, &out->claims, err))
            goto err;
        out->ms_verify = kg_mono_ms() - t0;
        out->verified = 1;
    }
    ok = 1;
err:
    ita_client_free(ita);
    return ok;
}
