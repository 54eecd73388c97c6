/* SPDX-License-Identifier: Apache-2.0 */
/*
 * JWS/JWT: compact split (kg_jws_split), the header checks and the whole signature path
 * (ita_verify_signature: alg allow-list, duplicate members, kid, JWKS selection, leaf key,
 * chain to the pinned root, CRLs, RSA-PSS/PKCS#1 verification) and the claims parser and
 * checks (ita_claims_parse/ita_claims_check) on the decoded payload.
 *
 * The verifier is offline: the local stack's JWKS, root and CRLs from tests/fuzz/data, judged
 * at the time in data/verify-at (when the corpus tokens were valid), so that a seed token
 * verifies completely and mutations explore every rejection.
 */
#include <cjson/cJSON.h>

#include "fuzz_common.h"
#include "ita_claims.h"
#include "ita_verify.h"
#include "kg_jws.h"

static ita_verifier *verifier;
static time_t verify_at;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    static const char *crls[3];
    ita_verifier_opts o;
    kg_err err;
    FILE *f;
    long long at = 0;

    (void)argc;
    (void)argv;
    crls[0] = fuzz_data_path("ita-root-ca.crl");
    crls[1] = fuzz_data_path("ita-signing-ca.crl");
    memset(&o, 0, sizeof(o));
    o.jwks_file = fuzz_data_path("ita-jwks.json");
    o.trust_anchor_file = fuzz_data_path("ita-root-ca.pem");
    o.crl_files = crls;
    o.crl_policy = ITA_CRL_REQUIRE;
    o.allow_rs256 = 1;
    o.offline = 1;
    FUZZ_REQUIRE((f = fopen(fuzz_data_path("verify-at"), "r")) != NULL);
    FUZZ_REQUIRE(fscanf(f, "%lld", &at) == 1);
    fclose(f);
    verify_at = (time_t)at;
    verifier = ita_verifier_new(&o, &err);
    if (verifier == NULL)
        fprintf(stderr, "%s\n", err.msg);
    FUZZ_REQUIRE(verifier != NULL);
    return 0;
}

static void claims(const char *payload_json)
{
    static const char policy[1][37] = {"00000000-0000-4000-8000-000000000000"};
    cJSON *payload = cJSON_Parse(payload_json);
    ita_claims c;
    ita_expect x;
    kg_err err;
    int ok;

    if (payload == NULL)
        return;
    memset(&c, 0, sizeof(c));
    ok = ita_claims_parse(payload, &c, &err);
    fuzz_note("ita_claims_parse", ok, err.msg);
    if (ok) {
        memset(&x, 0, sizeof(x));
        x.now = verify_at;
        x.leeway_s = -1;
        x.base_url = "https://127.0.0.1:1";
        x.allow_debug = 0;
        x.tcb_status_allow = "UpToDate,OutOfDate";
        x.mrtd_allow = "0000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
                       "00000000000";
        x.required_policy_ids = policy;
        x.required_policy_count = 1;
        (void)ita_claims_check(&c, &x, &err);
    }
    ita_claims_clear(&c);
    cJSON_Delete(payload);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *token = fuzz_cstr(data, size), alg[8];
    cJSON *payload = NULL;
    kg_jws jws;
    kg_err err;

    if (kg_jws_split(token, &jws, &err)) {
        cJSON_Delete(cJSON_Parse(jws.header_json));
        claims(jws.payload_json);
        kg_jws_clear(&jws);
    }
    if (ita_verify_signature(verifier, token, verify_at, &payload, alg, &err)) {
        fuzz_note("ita_verify_signature", 1, NULL);
        cJSON_Delete(payload);
    } else {
        fuzz_note("ita_verify_signature", 0, err.msg);
    }
    free(token);
    fuzz_err_queue_empty();
    return 0;
}
