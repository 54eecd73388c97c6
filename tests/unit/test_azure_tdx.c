/* SPDX-License-Identifier: Apache-2.0 */
/* azure-tdx: the HCL report parser on the real Azure vector, malformed and truncated reports, and
 * the Azure binding of ITA tokens (runtime JSON user-data, attester_held_data/_user_data). */
#include "kg_test.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hcl_report.h"
#include "ita_claims.h"
#include "kg_b64.h"
#include "tdx_quote.h"

static void sha(const char *alg, const void *a, size_t alen, const void *b, size_t blen, const void *c,
                size_t clen, uint8_t *out)
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned int n = 0;
    assert_int_equal(EVP_DigestInit_ex(ctx, EVP_get_digestbyname(alg), NULL), 1);
    EVP_DigestUpdate(ctx, a, alen);
    EVP_DigestUpdate(ctx, b, blen);
    EVP_DigestUpdate(ctx, c, clen);
    EVP_DigestFinal_ex(ctx, out, &n);
    EVP_MD_CTX_free(ctx);
}

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v, p[1] = (uint8_t)(v >> 8), p[2] = (uint8_t)(v >> 16), p[3] = (uint8_t)(v >> 24);
}

static void real_report_parses(void **state)
{
    size_t len, rlen, qlen;
    uint8_t *buf = kg_test_read_file(kg_test_vector("azure-tdx-hcl-report.bin"), &len),
            *runtime = kg_test_read_file(kg_test_vector("azure-tdx-runtime-data.json"), &rlen);
    uint8_t *quote = kg_test_read_file(kg_test_vector("tdx-quote-azure.bin"), &qlen), md[32], ud[64],
            zeros[64] = {0};
    hcl_report r;
    tdx_quote q;
    kg_err e;

    assert_int_equal(len, 2600);
    assert_int_equal(hcl_report_parse(buf, len, &r, &e), 1);
    assert_int_equal(r.version, 2);
    assert_int_equal(r.report_size, 2437);
    assert_int_equal(r.request_type, HCL_REQUEST_TYPE_TDX);
    assert_int_equal(r.status, 0);
    assert_ptr_equal(r.td_report, buf + 32);
    assert_int_equal(r.igvm_data_size, 1221);
    assert_int_equal(r.igvm_version, 1);
    assert_int_equal(r.report_type, HCL_IGVM_REPORT_TYPE_TDX);
    assert_int_equal(r.hash_type, HCL_IGVM_HASH_SHA256);
    assert_int_equal(r.runtime_data_len, 1201);
    assert_int_equal(rlen, 1201);
    assert_memory_equal(r.runtime_data, runtime, 1201);
    /* TD report REPORTDATA == SHA-256(runtime JSON) || zeros == the quote's REPORTDATA */
    assert_int_equal(hcl_report_check_runtime_hash(&r, &e), 1);
    sha("SHA256", runtime, rlen, "", 0, "", 0, md);
    assert_memory_equal(r.td_report + TD_REPORT_REPORTDATA_OFFSET, md, 32);
    assert_memory_equal(r.td_report + TD_REPORT_REPORTDATA_OFFSET + 32, zeros, 32);
    assert_int_equal(tdx_quote_parse(quote, qlen, &q, &e), 1);
    assert_memory_equal(q.report_data, r.td_report + TD_REPORT_REPORTDATA_OFFSET, 64);
    assert_memory_equal(q.mrtd, r.td_report + TD_REPORT_MRTD_OFFSET, 48);
    /* user-data: 128 hex zeros (no nonce, no user data) */
    assert_int_equal(hcl_runtime_user_data(r.runtime_data, r.runtime_data_len, ud, &e), 1);
    assert_memory_equal(ud, zeros, 64);
    free(buf);
    free(runtime);
    free(quote);
}

static void expect_parse_fail(const uint8_t *buf, size_t len, const char *needle)
{
    hcl_report r;
    kg_err e;
    kg_err_clear(&e);
    assert_int_equal(hcl_report_parse(buf, len, &r, &e), 0);
    assert_int_equal(e.step, KG_STEP_EVIDENCE);
    assert_non_null(strstr(e.msg, "evidence: adapter azure-tdx: HCL report: "));
    if (strstr(e.msg, needle) == NULL)
        fail_msg("'%s' does not contain '%s'", e.msg, needle);
}

static void malformed_reports_fail_cleanly(void **state)
{
    size_t len;
    uint8_t *real = kg_test_read_file(kg_test_vector("azure-tdx-hcl-report.bin"), &len),
            *buf = malloc(HCL_REPORT_MAX + 1);
    hcl_report r;
    kg_err e;

    assert_non_null(buf);
    /* truncated anywhere before the end of the runtime JSON (exact-size copies: ASan sees overreads) */
    for (size_t cut = 0; cut < 1236 + 1201; cut += cut < 1240 ? 1 : 97) {
        uint8_t *t = malloc(cut ? cut : 1);
        memcpy(t, real, cut);
        assert_int_equal(hcl_report_parse(t, cut, &r, &e), 0);
        free(t);
    }
    expect_parse_fail(real, 31, "shorter than");
    expect_parse_fail(real, 1236 + 1200, "runtime data length 1201 does not fit");
    expect_parse_fail(NULL, 0, "shorter than");
    memset(buf, 0, HCL_REPORT_MAX + 1);
    memcpy(buf, real, len);
    expect_parse_fail(buf, HCL_REPORT_MAX + 1, "more than 8192");
    assert_int_equal(hcl_report_parse(buf, HCL_REPORT_MAX, &r, &e), 1); /* zero padding is fine */

#define MUTATE(stmt, needle)                                                                                 \
    do {                                                                                                     \
        memcpy(buf, real, len);                                                                              \
        stmt;                                                                                                \
        expect_parse_fail(buf, len, needle);                                                                 \
    } while (0)
    MUTATE(buf[0] = 'X', "no \"HCLA\" signature");
    MUTATE(put32(buf + 12, 1), "request type 1 is not TDX");
    MUTATE(put32(buf + 16, 5), "status 5");
    MUTATE(buf[32] = 0x00, "TD report type 0x00 is not TDX");
    MUTATE(put32(buf + 1224, 2), "report type 2 is not TDX");
    MUTATE(put32(buf + 1228, 2), "hash type 2 is not SHA-256");
    MUTATE(put32(buf + 1232, 0), "runtime data length 0");
    MUTATE(put32(buf + 1232, 0xFFFFFFFFu), "does not fit");
    MUTATE(put32(buf + 1232, (uint32_t)(len - 1236 + 1)), "does not fit");

    /* a changed runtime JSON byte breaks the REPORTDATA binding */
    memcpy(buf, real, len);
    buf[1236 + 10] ^= 0x20;
    assert_int_equal(hcl_report_parse(buf, len, &r, &e), 1);
    assert_int_equal(hcl_report_check_runtime_hash(&r, &e), 0);
    assert_non_null(strstr(e.msg, "REPORTDATA is not SHA-256(runtime JSON)"));
    /* so do non-zero upper REPORTDATA bytes */
    memcpy(buf, real, len);
    buf[32 + TD_REPORT_REPORTDATA_OFFSET + 63] = 1;
    assert_int_equal(hcl_report_parse(buf, len, &r, &e), 1);
    assert_int_equal(hcl_report_check_runtime_hash(&r, &e), 0);
    free(buf);
    free(real);
}

static void runtime_user_data(void **state)
{
    char json[400], hex[129];
    uint8_t ud[64], want[64];
    kg_err e;

    for (int i = 0; i < 64; i++)
        want[i] = (uint8_t)(i * 7 + 0xa0);
    for (int i = 0; i < 64; i++)
        sprintf(hex + 2 * i, "%02X", want[i]); /* upper case, as Standard_DC2es_v6 did before */
    snprintf(json, sizeof(json), "{\"keys\":[],\"user-data\":\"%s\"}", hex);
    assert_int_equal(hcl_runtime_user_data((const uint8_t *)json, strlen(json), ud, &e), 1);
    assert_memory_equal(ud, want, 64);
    hex[5] = 'g';
    snprintf(json, sizeof(json), "{\"user-data\":\"%s\"}", hex);
    assert_int_equal(hcl_runtime_user_data((const uint8_t *)json, strlen(json), ud, &e), 0);
    assert_non_null(strstr(e.msg, "is not hex"));
    hex[127] = '\0';
    snprintf(json, sizeof(json), "{\"user-data\":\"%s\"}", hex);
    assert_int_equal(hcl_runtime_user_data((const uint8_t *)json, strlen(json), ud, &e), 0);
    assert_non_null(strstr(e.msg, "no 128-hex-digit"));
    assert_int_equal(hcl_runtime_user_data((const uint8_t *)"{\"user-data\":7}", 15, ud, &e), 0);
    assert_int_equal(hcl_runtime_user_data((const uint8_t *)"{\"keys\":[]}", 11, ud, &e), 0);
    assert_int_equal(hcl_runtime_user_data((const uint8_t *)"{\"keys\":[{\"k", 12, ud, &e), 0);
    assert_non_null(strstr(e.msg, "not a JSON object"));
    assert_int_equal(hcl_runtime_user_data((const uint8_t *)"[]", 2, ud, &e), 0);
    /* the length is honoured: a valid object followed by bytes outside the length */
    snprintf(json, sizeof(json), "{\"user-data\":\"%0128d\"}", 0);
    assert_int_equal(hcl_runtime_user_data((const uint8_t *)json, strlen(json) - 1, ud, &e), 0);
}

/* ---------------------------------------------------------------- ITA claims: Azure binding */

static const uint8_t val[5] = "vvvvv", iat[29] = "2026-11-27 19:48:09 +0000 UTC";

/* A v1 Azure token payload: runtime JSON with user-data (hex in the given case) plus extra. */
static void azure_payload(char *out, size_t size, const uint8_t h[64], int upper, const char *extra)
{
    char hex[129], *vb = kg_b64_encode(val, sizeof(val)), *ib = kg_b64_encode(iat, sizeof(iat));
    for (int i = 0; i < 64; i++)
        sprintf(hex + 2 * i, upper ? "%02X" : "%02x", h[i]);
    snprintf(out, size,
             "{\"ver\":\"1.0.0\",\"iss\":\"Intel Trust Authority\",\"exp\":2000,\"tdx_is_debuggable\":false,"
             "\"attester_type\":\"TDX\",\"tdx_report_data\":\"%s\",\"attester_runtime_data\":{\"keys\":[],"
             "\"user-data\":\"%s\"},"
             "\"verifier_nonce\":{\"val\":\"%s\",\"iat\":\"%s\",\"signature\":\"c2ln\"}%s}",
             "9734504f161d104c74e3165c15f779b06a9bb40dfa71937817d7eee68e593839"
             "0000000000000000000000000000000000000000000000000000000000000000",
             hex, vb, ib, extra);
    free(vb);
    free(ib);
}

static void check(const char *json, const ita_expect *x, const char *needle)
{
    cJSON *p = cJSON_Parse(json);
    ita_claims c;
    kg_err e;
    int ok;

    assert_non_null(p);
    kg_err_clear(&e);
    assert_int_equal(ita_claims_parse(p, &c, &e), 1);
    ok = ita_claims_check(&c, x, &e);
    if (needle == NULL && !ok)
        fail_msg("unexpected failure: %s", e.msg);
    if (needle != NULL && (ok || strstr(e.msg, needle) == NULL))
        fail_msg("expected '%s', got %s", needle, ok ? "success" : e.msg);
    ita_claims_clear(&c);
    cJSON_Delete(p);
}

static void claims_azure_binding(void **state)
{
    static const uint8_t key[] = "\x01\x00\x01 our binary wrapping key";
    static const char ukey[] = "{\"n\":\"abc\",\"e\":\"AQAB\"}";
    uint8_t h[64], zeros[64] = {0};
    char json[4096], extra[300], *kb = kg_b64_encode(key, sizeof(key) - 1);
    ita_nonce ours = {(uint8_t *)val, 5, (uint8_t *)iat, 29, (uint8_t *)"sig", 3};
    ita_expect x;

    memset(&x, 0, sizeof(x));
    x.now = 1500;
    x.nonce = &ours;
    x.user_data = key;
    x.user_data_len = sizeof(key) - 1;
    x.check_binding = 1;
    /* held data: user-data = SHA-512(val || iat || key), any case */
    sha("SHA512", val, 5, iat, 29, key, sizeof(key) - 1, h);
    snprintf(extra, sizeof(extra), ",\"attester_held_data\":\"%s\"", kb);
    azure_payload(json, sizeof(json), h, 1, extra);
    check(json, &x, NULL);
    azure_payload(json, sizeof(json), h, 0, extra);
    check(json, &x, NULL);
    x.check_binding = 0; /* without our data: still the internal consistency */
    check(json, &x, NULL);
    x.check_binding = 1;
    x.user_data_len--;
    check(json, &x, "attester_held_data is not our user data");
    x.user_data_len++;
    h[0] ^= 1;
    azure_payload(json, sizeof(json), h, 1, extra);
    check(json, &x, "attester_runtime_data user-data is not SHA-512");
    x.check_binding = 0;
    check(json, &x, "attester_runtime_data user-data is not SHA-512");
    x.check_binding = 1;
    /* no held data at all: our key was not bound */
    sha("SHA512", val, 5, iat, 29, key, sizeof(key) - 1, h);
    azure_payload(json, sizeof(json), h, 1, "");
    check(json, &x, "token has no attester_held_data or attester_user_data");

    /* JSON user data arrives as attester_user_data (ITA may re-order its members) */
    x.user_data = (const uint8_t *)ukey;
    x.user_data_len = strlen(ukey);
    sha("SHA512", val, 5, iat, 29, ukey, strlen(ukey), h);
    azure_payload(json, sizeof(json), h, 0, ",\"attester_user_data\":{\"e\":\"AQAB\",\"n\":\"abc\"}");
    check(json, &x, NULL);
    azure_payload(json, sizeof(json), h, 0, ",\"attester_user_data\":{\"e\":\"AQAB\",\"n\":\"abd\"}");
    check(json, &x, "attester_user_data is not our user data");

    /* neither nonce nor user data: 64 zero bytes (the Azure convention) */
    memset(&x, 0, sizeof(x));
    x.now = 1500;
    azure_payload(json, sizeof(json), zeros, 0, "");
    {
        /* drop the nonce echo */
        char *vn = strstr(json, ",\"verifier_nonce\"");
        strcpy(vn, "}");
    }
    check(json, &x, NULL);
    azure_payload(json, sizeof(json), zeros, 0, "");
    check(json, &x, "attester_runtime_data user-data is not SHA-512"); /* with a nonce: not zeros */

    /* a user-data that is not 64 bytes of hex is a malformed claim */
    {
        cJSON *p = cJSON_Parse("{\"attester_runtime_data\":{\"user-data\":\"00\"}}");
        ita_claims c;
        kg_err e;
        assert_int_equal(ita_claims_parse(p, &c, &e), 0);
        assert_non_null(strstr(e.msg, "user-data is not 64 bytes of hex"));
        cJSON_Delete(p);
    }
    free(kb);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(real_report_parses),
        cmocka_unit_test(malformed_reports_fail_cleanly),
        cmocka_unit_test(runtime_user_data),
        cmocka_unit_test(claims_azure_binding),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
