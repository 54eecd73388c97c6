/* SPDX-License-Identifier: Apache-2.0 */
#include "kg_verify.h"

#include <string.h>

#include "ita_verify.h"
#include "kg_attest.h"
#include "tdx_quote.h"

ita_verifier *kg_verifier_new(const kg_config *cfg, const char *jwks_file, const char *const *crl_files,
                              kg_err *err)
{
    ita_verifier_opts vo;

    if (cfg->ita_trust_anchor[0] == '\0') {
        kg_err_set(err, KG_STEP_CONFIG,
                   "ita_trust_anchor is not set: tokens are only verified against a pinned root");
        return NULL;
    }
    memset(&vo, 0, sizeof(vo));
    vo.base_url = cfg->ita_base_url;
    vo.jwks_file = jwks_file;
    vo.trust_anchor_file = cfg->ita_trust_anchor;
    vo.crl_policy = strcmp(cfg->crl_policy, "if-available") == 0 ? ITA_CRL_IF_AVAILABLE : ITA_CRL_REQUIRE;
    vo.crl_files = crl_files;
    vo.cache_dir = strcmp(cfg->cache_dir, "none") == 0 ? NULL : cfg->cache_dir;
    vo.allow_rs256 = 1; /* both are ITA algorithms; which one is requested is ita_token_alg */
    kg_config_http_opts(cfg, KG_SVC_ITA, &vo.http);
    return ita_verifier_new(&vo, err);
}

int kg_verify_token(const kg_config *cfg, const char *token, const kg_verify_opts *opts, ita_claims *claims,
                    kg_err *err)
{
    ita_verifier *v = NULL; /* our own, when the caller gave none */
    ita_expect x;
    cJSON *payload = NULL;
    char alg[16];
    int ok = 0;

    memset(claims, 0, sizeof(*claims));
    if (opts->verifier == NULL && (v = kg_verifier_new(cfg, opts->jwks_file, opts->crl_files, err)) == NULL)
        return 0;
    if (!ita_verify_signature(opts->verifier != NULL ? opts->verifier : v, token, opts->at, &payload, alg,
                              err))
        goto err;
    if (!ita_claims_parse(payload, claims, err))
        goto err;

    memset(&x, 0, sizeof(x));
    x.now = opts->at;
    x.leeway_s = cfg->token_leeway_s;
    x.base_url = cfg->ita_base_url;
    x.nonce = opts->nonce;
    x.user_data = opts->user_data;
    x.user_data_len = opts->user_data_len;
    x.check_binding = opts->user_data != NULL;
    x.allow_debug = cfg->allow_debug_td;
    x.tcb_status_allow = cfg->require_tcb_status;
    x.mrtd_allow = cfg->require_mrtd;
    for (int i = 0; i < 4; i++)
        x.rtmr_allow[i] = cfg->require_rtmr[i];
    x.required_policy_ids = cfg->ita_policy_ids;
    x.required_policy_count = cfg->ita_policy_id_count;
    x.attester_type = opts->attester_type;
    if (!ita_claims_check(claims, &x, err))
        goto err;
    if (opts->payload != NULL) {
        *opts->payload = payload;
        payload = NULL;
    }
    ok = 1;
err:
    if (!ok)
        ita_claims_clear(claims);
    cJSON_Delete(payload);
    ita_verifier_free(v);
    return ok;
}

int kg_verify_evidence_policy(const kg_config *cfg, const kg_evidence *ev, kg_err *err)
{
    ita_td_values v;
    ita_expect x;
    tdx_quote q;

    if (!tdx_quote_parse(ev->quote, ev->quote_len, &q, err))
        return 0;
    memset(&v, 0, sizeof(v));
    v.is_debuggable = tdx_quote_is_debug(&q);
    v.mrtd = q.mrtd;
    for (int i = 0; i < 4; i++)
        v.rtmr[i] = q.rtmr[i];
    v.from_quote = 1;
    memset(&x, 0, sizeof(x));
    x.allow_debug = cfg->allow_debug_td;
    x.mrtd_allow = cfg->require_mrtd;
    for (int i = 0; i < 4; i++)
        x.rtmr_allow[i] = cfg->require_rtmr[i];
    return ita_td_policy_check(&v, &x, err);
}
