/* SPDX-License-Identifier: Apache-2.0 */
#include "kg_test.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ita_claims.h"
#include "ita_client.h"
#include "kg_b64.h"
#include "kg_jws.h"

#define PROD_TIME 1701735000 /* 2023-12-05T00:10:00Z */

static cJSON *prod_payload(void)
{
    char *tok = kg_test_read_text(kg_test_vector("ita-tdx-prod-token-v1.jwt"), NULL);
    kg_jws jws;
    kg_err e;
    cJSON *p;
    assert_int_equal(kg_jws_split(tok, &jws, &e), 1);
    p = cJSON_Parse(jws.payload_json);
    assert_non_null(p);
    kg_jws_clear(&jws);
    free(tok);
    return p;
}

static void hex_eq(const uint8_t *b, size_t n, const char *hex)
{
    char buf[200];
    for (size_t i = 0; i < n; i++)
        sprintf(buf + 2 * i, "%02x", b[i]);
    assert_string_equal(buf, hex);
}

static void parses_production_v1_token(void **state)
{
    cJSON *p = prod_payload();
    ita_claims c;
    kg_err e;

    assert_int_equal(ita_claims_parse(p, &c, &e), 1);
    assert_int_equal(c.layout, 1);
    assert_string_equal(c.ver, "1.0.0");
    assert_string_equal(c.iss, "Intel Trust Authority");
    assert_string_equal(c.attester_type, "TDX");
    assert_string_equal(c.tcb_status, "OutOfDate");
    assert_int_equal(c.advisory_count, 1);
    assert_string_equal(c.advisory_ids[0], "INTEL-SA-00837");
    assert_int_equal(c.exp, 1701735250);
    assert_int_equal(c.iat, 1701734950);
    assert_int_equal(c.held_data_len, 422);
    assert_int_equal(c.has_verifier_nonce, 1);
    assert_int_equal(c.verifier_nonce.val_len, 88);
    assert_int_equal(c.is_debuggable, 0);
    assert_int_equal(c.seamsvn, 3);
    hex_eq(
        c.mrtd, 48,
        "5f53c3881242a5b418854923bb4adec34c72aa4b570d526179d63f9ee6e4cefb6abd4f0f35e5e6e29655a60d90bcf27f");
    hex_eq(c.td_attributes, 8, "0000001000000000");
    hex_eq(c.tee_tcb_svn, 16, "03000500000000000000000000000000");

    /* the real token's binding and claims hold at its time, with OutOfDate allowed */
    ita_expect x;
    memset(&x, 0, sizeof(x));
    x.now = PROD_TIME;
    x.leeway_s = -1;
    x.user_data = c.held_data;
    x.user_data_len = c.held_data_len;
    x.check_binding = 1;
    x.tcb_status_allow = "UpToDate, OutOfDate";
    assert_int_equal(ita_claims_check(&c, &x, &e), 1);
    x.tcb_status_allow = "UpToDate";
    assert_int_equal(ita_claims_check(&c, &x, &e), 0);
    assert_non_null(strstr(e.msg, "attester_tcb_status 'OutOfDate'"));
    x.tcb_status_allow = NULL;
    x.now = 0; /* today */
    assert_int_equal(ita_claims_check(&c, &x, &e), 0);
    assert_non_null(strstr(e.msg, "token expired"));
    ita_claims_clear(&c);
    cJSON_Delete(p);
}

static void parses_v2_nested_sample(void **state)
{
    char *text = kg_test_read_text(kg_test_vector("ita-tdx-claims-v2-sample.json"), NULL);
    cJSON *p = cJSON_Parse(text);
    ita_claims c;
    kg_err e;

    assert_non_null(p);
    assert_int_equal(ita_claims_parse(p, &c, &e), 1);
    assert_int_equal(c.layout, 2);
    assert_string_equal(c.ver, "2.0.0");
    assert_int_equal(c.has_tdx, 1);
    assert_int_equal(c.seamsvn, 269);
    hex_eq(c.td_attributes, 8, "0000001000000000");
    assert_memory_equal(c.held_data, "test-held-data", 14);
    ita_claims_clear(&c);
    cJSON_Delete(p);
    free(text);
}

static void check_fails(const char *json_text, const char *needle)
{
    cJSON *p = cJSON_Parse(json_text);
    ita_claims c;
    kg_err e;
    assert_non_null(p);
    kg_err_clear(&e);
    assert_int_equal(ita_claims_parse(p, &c, &e), 0);
    if (strstr(e.msg, needle) == NULL)
        fail_msg("'%s' not in '%s'", needle, e.msg);
    cJSON_Delete(p);
}

static void rejects_malformed_claims(void **state)
{
    check_fails("[]", "not a JSON object");
    check_fails("{\"exp\":\"soon\"}", "exp is not a NumericDate");
    check_fails("{\"exp\":-5}", "exp is not a NumericDate");
    check_fails("{\"tdx_mrtd\":\"00\"}", "tdx_mrtd is not 48 bytes of hex");
    check_fails("{\"tdx_report_data\":42}", "tdx_report_data");
    check_fails("{\"attester_held_data\":\"***\"}", "attester_held_data is not base64");
    check_fails("{\"tdx_is_debuggable\":\"no\"}", "tdx_is_debuggable is not a boolean");
    check_fails("{\"verifier_nonce\":{\"val\":1}}", "verifier_nonce");
    check_fails("{\"policy_ids_matched\":[{\"id\":\"x\"}]}", "UUID");
    check_fails("{\"tdx\":{\"tdx_mrtd\":\"zz\"}}", "tdx_mrtd");
    check_fails("{\"iss\":7}", "iss is not a string");
}

static void check_claims(const char *json_text, const ita_expect *x, const char *needle)
{
    cJSON *p = cJSON_Parse(json_text);
    ita_claims c;
    kg_err e;
    assert_non_null(p);
    assert_int_equal(ita_claims_parse(p, &c, &e), 1);
    kg_err_clear(&e);
    if (ita_claims_check(&c, x, &e) != (needle == NULL))
        fail_msg("expected %s, got '%s'", needle == NULL ? "acceptance" : needle, e.msg);
    if (needle != NULL && strstr(e.msg, needle) == NULL)
        fail_msg("'%s' not in '%s'", needle, e.msg);
    ita_claims_clear(&c);
    cJSON_Delete(p);
}

static void claim_checks(void **state)
{
    ita_expect x;
    char json[2048];
#define BASE                                                                                                 \
    "{\"ver\":\"1.0.0\",\"iss\":\"Intel Trust "                                                              \
    "Authority\",\"attester_type\":\"TDX\",\"exp\":2000,\"nbf\":1000,"                                       \
    "\"iat\":1000,\"tdx_is_debuggable\":%s,\"attester_tcb_status\":\"UpToDate\"%s}"
    memset(&x, 0, sizeof(x));
    x.now = 1500;
    x.leeway_s = 60;
    snprintf(json, sizeof(json), BASE, "false", "");
    check_claims(json, &x, NULL);
    x.now = 2061;
    check_claims(json, &x, "token expired");
    x.now = 2059; /* inside the leeway */
    check_claims(json, &x, NULL);
    x.now = 939;
    check_claims(json, &x, "not valid before");
    x.now = 1500;
    snprintf(json, sizeof(json), BASE, "true", "");
    check_claims(json, &x, "the TD is debuggable");
    x.allow_debug = 1;
    check_claims(json, &x, NULL);
    x.allow_debug = 0;
    check_claims(
        "{\"ver\":\"1.0.0\",\"iss\":\"Intel Trust Authority\",\"attester_type\":\"TDX\",\"exp\":2000}", &x,
        "does not say");
    check_claims("{\"ver\":\"2.0.0\",\"iss\":\"Intel Trust Authority\",\"exp\":2000}", &x,
                 "ver '2.0.0' is not 1.0.0");
    check_claims("{\"ver\":\"1.0.0\",\"iss\":\"Evil\",\"exp\":2000,\"tdx_is_debuggable\":false}", &x,
                 "iss 'Evil'");
    check_claims("{\"ver\":\"1.0.0\",\"iss\":\"Intel Trust Authority\",\"tdx_is_debuggable\":false}", &x,
                 "no exp");
    check_claims(
        "{\"ver\":\"2.0.0\",\"iss\":\"https://"
        "evil.example\",\"exp\":2000,\"tdx\":{\"attester_type\":\"TDX\",\"tdx_is_debuggable\":false}}",
        &x, "not an ITA portal URL");
    check_claims("{\"ver\":\"2.0.0\",\"iss\":\"https://portal.eu.trustauthority.intel.com\",\"exp\":2000,"
                 "\"tdx\":{\"attester_type\":\"TDX\",\"tdx_is_debuggable\":false}}",
                 &x, NULL);
    x.base_url = "https://127.0.0.1:8443";
    check_claims("{\"ver\":\"2.0.0\",\"iss\":\"https://127.0.0.1:8443\",\"exp\":2000,"
                 "\"tdx\":{\"attester_type\":\"TDX\",\"tdx_is_debuggable\":false}}",
                 &x, NULL);
    /* policy ids */
    static const char required[1][37] = {"4f5c2a3e-1b2c-4d5e-8f90-0123456789ab"};
    x.required_policy_ids = required;
    x.required_policy_count = 1;
    snprintf(json, sizeof(json), BASE, "false",
             ",\"policy_ids_matched\":[{\"id\":\"4F5C2A3E-1B2C-4D5E-8F90-0123456789AB\"}]");
    check_claims(json, &x, NULL);
    snprintf(json, sizeof(json), BASE, "false", ",\"policy_ids_matched\":null");
    check_claims(json, &x, "policy 4f5c2a3e-1b2c-4d5e-8f90-0123456789ab is not in policy_ids_matched");
}

static void binding_and_nonce(void **state)
{
    uint8_t val[] = "v-a-l", iat[] = "2026-11-27 19:48:09 +0000 UTC", held[] = "our wrapping key";
    uint8_t md[64];
    unsigned int n;
    char hex[129], *held_b64, *val_b64, *iat_b64, json[4096];
    ita_nonce ours = {val, 5, iat, 29, (uint8_t *)"sig", 3}, other = {val, 4, iat, 29, (uint8_t *)"sig", 3};
    ita_expect x;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();

    EVP_DigestInit_ex(ctx, EVP_sha512(), NULL);
    EVP_DigestUpdate(ctx, val, 5);
    EVP_DigestUpdate(ctx, iat, 29);
    EVP_DigestUpdate(ctx, held, 16);
    EVP_DigestFinal_ex(ctx, md, &n);
    EVP_MD_CTX_free(ctx);
    for (int i = 0; i < 64; i++)
        sprintf(hex + 2 * i, "%02x", md[i]);
    held_b64 = kg_b64_encode(held, 16);
    val_b64 = kg_b64_encode(val, 5);
    iat_b64 = kg_b64_encode(iat, 29);
    snprintf(json, sizeof(json),
             "{\"ver\":\"1.0.0\",\"iss\":\"Intel Trust Authority\",\"exp\":2000,\"tdx_is_debuggable\":false,"
             "\"attester_type\":\"TDX\",\"attester_held_data\":\"%s\",\"tdx_report_data\":\"%s\","
             "\"verifier_nonce\":{\"val\":\"%s\",\"iat\":\"%s\",\"signature\":\"c2ln\"}}",
             held_b64, hex, val_b64, iat_b64);
    memset(&x, 0, sizeof(x));
    x.now = 1500;
    x.nonce = &ours;
    x.user_data = held;
    x.user_data_len = 16;
    x.check_binding = 1;
    check_claims(json, &x, NULL);
    x.nonce = &other;
    check_claims(json, &x, "verifier_nonce is not the nonce we fetched");
    x.nonce = &ours;
    x.user_data = (const uint8_t *)"our wrapping kez";
    check_claims(json, &x, "attester_held_data is not our user data");
    /* a report data that does not bind the held data */
    hex[0] = hex[0] == '0' ? '1' : '0';
    snprintf(json, sizeof(json),
             "{\"ver\":\"1.0.0\",\"iss\":\"Intel Trust Authority\",\"exp\":2000,\"tdx_is_debuggable\":false,"
             "\"attester_type\":\"TDX\",\"attester_held_data\":\"%s\",\"tdx_report_data\":\"%s\","
             "\"verifier_nonce\":{\"val\":\"%s\",\"iat\":\"%s\",\"signature\":\"c2ln\"}}",
             held_b64, hex, val_b64, iat_b64);
    x.user_data = held;
    check_claims(json, &x, "tdx_report_data is not SHA-512");
    free(held_b64);
    free(val_b64);
    free(iat_b64);
}

/* Issue 19, item 5: no upstream source shows whether ITA's v2 tokens echo verifier_nonce. A v2
 * token without the echo is accepted when the REPORTDATA binding, which includes the nonce we
 * fetched, is recomputed from our nonce and our user data and matches; never when it cannot be
 * checked. Every real v1 token (tests/vectors) echoes the nonce, so v1 still must; a different
 * echo is refused in both layouts. */
static void v2_without_nonce_echo(void **state)
{
    uint8_t val[] = "v-a-l", iat[] = "2026-11-27 19:48:09 +0000 UTC", held[] = "our wrapping key";
    uint8_t md[64];
    unsigned int n;
    char hex[129], *held_b64, *val_b64, *iat_b64, v2[4096], v2_echo[4096], v1[4096];
    ita_nonce ours = {val, 5, iat, 29, (uint8_t *)"sig", 3}, other = {val, 4, iat, 29, (uint8_t *)"sig", 3};
    ita_expect x;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();

    EVP_DigestInit_ex(ctx, EVP_sha512(), NULL);
    EVP_DigestUpdate(ctx, val, 5);
    EVP_DigestUpdate(ctx, iat, 29);
    EVP_DigestUpdate(ctx, held, 16);
    EVP_DigestFinal_ex(ctx, md, &n);
    EVP_MD_CTX_free(ctx);
    for (int i = 0; i < 64; i++)
        sprintf(hex + 2 * i, "%02x", md[i]);
    held_b64 = kg_b64_encode(held, 16);
    val_b64 = kg_b64_encode(val, 4); /* the echo of v2_echo: a nonce other than ours */
    iat_b64 = kg_b64_encode(iat, 29);
#define TEE                                                                                                  \
    "\"attester_type\":\"TDX\",\"tdx_is_debuggable\":false,\"attester_held_data\":\"%s\",\"tdx_report_"      \
    "data\":\"%s\""
    snprintf(
        v2, sizeof(v2),
        "{\"ver\":\"2.0.0\",\"iss\":\"https://portal.trustauthority.intel.com\",\"exp\":2000,\"tdx\":{" TEE
        "}}",
        held_b64, hex);
    snprintf(
        v2_echo, sizeof(v2_echo),
        "{\"ver\":\"2.0.0\",\"iss\":\"https://portal.trustauthority.intel.com\",\"exp\":2000,\"tdx\":{" TEE
        ",\"verifier_nonce\":{\"val\":\"%s\",\"iat\":\"%s\",\"signature\":\"c2ln\"}}}",
        held_b64, hex, val_b64, iat_b64);
    snprintf(v1, sizeof(v1), "{\"ver\":\"1.0.0\",\"iss\":\"Intel Trust Authority\",\"exp\":2000," TEE "}",
             held_b64, hex);
#undef TEE
    memset(&x, 0, sizeof(x));
    x.now = 1500;
    x.nonce = &ours;
    x.user_data = held;
    x.user_data_len = 16;
    x.check_binding = 1;
    /* no echo, and SHA-512(our nonce || our user data) is the token's REPORTDATA: accepted */
    check_claims(v2, &x, NULL);
    /* another nonce than the one REPORTDATA binds: refused */
    x.nonce = &other;
    check_claims(v2, &x, "tdx_report_data is not SHA-512(nonce.val || nonce.iat || attester_held_data)");
    /* an echo that differs from our nonce: refused, even though REPORTDATA would bind ours */
    x.nonce = &ours;
    check_claims(v2_echo, &x, "verifier_nonce is not the nonce we fetched");
    /* v1 must echo the nonce */
    check_claims(v1, &x, "token has no verifier_nonce");
    /* without our user data the binding cannot be checked */
    x.user_data = NULL;
    x.user_data_len = 0;
    x.check_binding = 0;
    check_claims(
        v2, &x,
        "v2 token has no verifier_nonce echo, and without our user data the REPORTDATA binding, which "
        "includes the nonce, cannot be checked");
    /* neither nonce nor user data (keygate verify of a stored token): the nonce is unknown */
    x.nonce = NULL;
    check_claims(v2, &x,
                 "tdx_report_data is not SHA-512(attester_held_data) and the token echoes no verifier_nonce: "
                 "the nonce it binds is unknown here");
    free(held_b64);
    free(val_b64);
    free(iat_b64);
}

/* attester_type must be the expected one, TDX unless the caller says otherwise: v1 at the top
 * level, v2 inside "tdx" (issue 17, finding 10). */
static void attester_type_checks(void **state)
{
    ita_expect x;

    memset(&x, 0, sizeof(x));
    x.now = 1500;
#define V1(type)                                                                                             \
    "{\"ver\":\"1.0.0\",\"iss\":\"Intel Trust Authority\",\"exp\":2000," type "\"tdx_is_debuggable\":false}"
#define V2(top, tee)                                                                                         \
    "{\"ver\":\"2.0.0\",\"iss\":\"https://portal.trustauthority.intel.com\",\"exp\":2000," top               \
    "\"tdx\":{" tee "\"tdx_is_debuggable\":false}}"
    check_claims(V1("\"attester_type\":\"TDX\","), &x, NULL);
    check_claims(V1("\"attester_type\":\"SGX\","), &x, "attester_type 'SGX' is not the expected 'TDX'");
    check_claims(V1("\"attester_type\":\"tdx\","), &x, "attester_type 'tdx' is not the expected 'TDX'");
    check_claims(V1(""), &x, "token has no attester_type claim (expected 'TDX')");
    check_claims(V2("", "\"attester_type\":\"TDX\","), &x, NULL);
    check_claims(V2("", "\"attester_type\":\"SGX\","), &x, "attester_type 'SGX' is not the expected 'TDX'");
    check_claims(V2("", ""), &x, "token has no attester_type claim (expected 'TDX')");
    /* v2: a top-level attester_type does not speak for the tdx claims */
    check_claims(V2("\"attester_type\":\"TDX\",", ""), &x, "token has no attester_type claim");
    x.attester_type = "SGX";
    check_claims(V1("\"attester_type\":\"SGX\","), &x, NULL);
    check_claims(V1("\"attester_type\":\"TDX\","), &x, "attester_type 'TDX' is not the expected 'SGX'");
#undef V1
#undef V2
}

static void attest_input_validation(void **state)
{
    static const char ids[11][37] = {"4f5c2a3e-1b2c-4d5e-8f90-0123456789ab", "not-a-uuid"};
    uint8_t q[4] = {1, 2, 3, 4};
    ita_evidence ev = {q, 4, NULL, 0, NULL, 0, NULL, 0};
    ita_attest_opts o;
    kg_err e;

    memset(&o, 0, sizeof(o));
    o.api_version = 1;
    assert_int_equal(ita_attest_opts_check(&ev, &o, &e), 1);
    o.policy_ids = ids;
    o.policy_id_count = 1;
    assert_int_equal(ita_attest_opts_check(&ev, &o, &e), 1);
    o.policy_id_count = 2;
    assert_int_equal(ita_attest_opts_check(&ev, &o, &e), 0);
    assert_non_null(strstr(e.msg, "is not a UUID"));
    o.policy_id_count = 11;
    assert_int_equal(ita_attest_opts_check(&ev, &o, &e), 0);
    assert_non_null(strstr(e.msg, "at most 10"));
    o.policy_id_count = 0;
    o.token_alg = "HS256";
    assert_int_equal(ita_attest_opts_check(&ev, &o, &e), 0);
    o.token_alg = "RS256";
    o.request_id = "ok-id_1/2.3 x";
    assert_int_equal(ita_attest_opts_check(&ev, &o, &e), 1);
    o.request_id = "bad\\id";
    assert_int_equal(ita_attest_opts_check(&ev, &o, &e), 0);
    o.request_id = "";
    assert_int_equal(ita_attest_opts_check(&ev, &o, &e), 0);
    {
        char long_id[130];
        memset(long_id, 'a', 129);
        long_id[129] = '\0';
        o.request_id = long_id;
        assert_int_equal(ita_attest_opts_check(&ev, &o, &e), 0);
        long_id[128] = '\0';
        assert_int_equal(ita_attest_opts_check(&ev, &o, &e), 1);
    }
    o.request_id = NULL;
    ev.runtime_data_len = ITA_MAX_USER_DATA + 1;
    ev.runtime_data = q;
    assert_int_equal(ita_attest_opts_check(&ev, &o, &e), 0);
    assert_non_null(strstr(e.msg, "user data larger"));
    ev.runtime_data_len = 0;
    o.api_version = 3;
    assert_int_equal(ita_attest_opts_check(&ev, &o, &e), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(parses_production_v1_token), cmocka_unit_test(parses_v2_nested_sample),
        cmocka_unit_test(rejects_malformed_claims),   cmocka_unit_test(claim_checks),
        cmocka_unit_test(binding_and_nonce),          cmocka_unit_test(attester_type_checks),
        cmocka_unit_test(attest_input_validation),    cmocka_unit_test(v2_without_nonce_echo),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
