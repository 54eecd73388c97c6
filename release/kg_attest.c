#include "kg_attest.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sim_td.h"
#include "kg_verify.h"
#include "tdx_quote.h"

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

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

void kg_config_http_opts(const kg_config *cfg, kg_http_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->ca_file = cfg->tls_ca_file;
    o->allow_http_loopback = cfg->allow_http_loopback;
    o->timeout_ms = cfg->timeout_ms;
    o->retry_max = cfg->retry_max;
    o->retry_wait_min_ms = cfg->retry_wait_min_ms;
    o->retry_wait_max_ms = cfg->retry_wait_max_ms;
}

int kg_collect_evidence(const kg_config *cfg, const ita_nonce *nonce, const uint8_t *user_data,
                        size_t user_data_len, kg_evidence *ev, kg_err *err)
{
    tdx_quote q;

    memset(ev, 0, sizeof(*ev));
    if (!tdx_report_data_compute(nonce ? nonce->val : NULL, nonce ? nonce->val_len : 0,
                                 nonce ? nonce->iat : NULL, nonce ? nonce->iat_len : 0, user_data,
                                 user_data_len, ev->report_data))
        return kg_err_set(err, KG_STEP_EVIDENCE, "SHA-512 of the report data failed");
    if (strcmp(cfg->adapter, "sim") != 0)
        return kg_err_set(err, KG_STEP_EVIDENCE, "adapter '%s' is not available in this build yet",
                          cfg->adapter);
    if (!sim_td_get_quote(&cfg->sim, ev->report_data, NULL, &ev->quote, &ev->quote_len, err))
        goto err;
    if (user_data_len > 0) {
        if ((ev->runtime_data = malloc(user_data_len)) == NULL) {
            kg_err_set(err, KG_STEP_INTERNAL, "out of memory");
            goto err;
        }
        memcpy(ev->runtime_data, user_data, user_data_len);
        ev->runtime_data_len = user_data_len;
    }
    /* never send a quote that does not carry what we asked for */
    if (!tdx_quote_parse(ev->quote, ev->quote_len, &q, err))
        goto err;
    if (memcmp(q.report_data, ev->report_data, 64) != 0) {
        kg_err_set(err, KG_STEP_EVIDENCE, "quote REPORTDATA differs from the value written");
        goto err;
    }
    return 1;
err:
    kg_evidence_clear(ev);
    return 0;
}

int kg_attest(const kg_config *cfg, const uint8_t *user_data, size_t user_data_len, int verify,
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
    kg_config_http_opts(cfg, &copts.http);
    if ((ita = ita_client_new(&copts, err)) == NULL)
        goto err;

    t0 = now_ms();
    if (!ita_get_nonce(ita, &out->nonce, err))
        goto err;
    out->ms_nonce = now_ms() - t0;

    t0 = now_ms();
    if (!kg_collect_evidence(cfg, &out->nonce, user_data, user_data_len, &out->evidence, err))
        goto err;
    out->ms_evidence = now_ms() - t0;

    memset(&iev, 0, sizeof(iev));
    iev.quote = out->evidence.quote;
    iev.quote_len = out->evidence.quote_len;
    iev.runtime_data = out->evidence.runtime_data;
    iev.runtime_data_len = out->evidence.runtime_data_len;
    iev.event_log = out->evidence.event_log;
    iev.event_log_len = out->evidence.event_log_len;
    memset(&aopts, 0, sizeof(aopts));
    aopts.api_version = strcmp(cfg->ita_api_version, "v2") == 0 ? 2 : 1;
    aopts.policy_ids = cfg->ita_policy_ids;
    aopts.policy_id_count = cfg->ita_policy_id_count;
    aopts.token_alg = cfg->ita_token_alg;
    t0 = now_ms();
    ok = ita_attest(ita, &iev, &out->nonce, &aopts, &out->token, err);
    memcpy(out->token_request_id, ita_client_last_meta(ita)->request_id, sizeof(out->token_request_id));
    memcpy(out->token_trace_id, ita_client_last_meta(ita)->trace_id, sizeof(out->token_trace_id));
    if (!ok)
        goto err;
    out->ms_token = now_ms() - t0;
    ok = 0;

    if (verify) {
        kg_verify_opts vopts;
        memset(&vopts, 0, sizeof(vopts));
        vopts.nonce = &out->nonce;
        vopts.user_data = user_data;
        vopts.user_data_len = user_data_len;
        vopts.payload = &out->payload;
        t0 = now_ms();
        if (!kg_verify_token(cfg, out->token, &vopts, &out->claims, err))
            goto err;
        out->ms_verify = now_ms() - t0;
        out->verified = 1;
    }
    ok = 1;
err:
    ita_client_free(ita);
    return ok;
}
