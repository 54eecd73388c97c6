/* SPDX-License-Identifier: Apache-2.0 */
/* RFC 8785 canonical JSON: the RFC's own examples (§3.2.2, §3.2.3, Appendix B) and the Trustee
 * runtime-data object with its '/' escaping trap. */
#include "kg_test.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kg_jcs.h"

static char *jcs_of(const char *json)
{
    cJSON *j = cJSON_Parse(json);
    char *out = NULL;
    kg_err e;
    assert_non_null(j);
    if (!kg_jcs_serialize(j, KG_STEP_EVIDENCE, &out, NULL, &e))
        out = NULL;
    cJSON_Delete(j);
    return out;
}

static void assert_jcs(const char *in, const char *want)
{
    char *got = jcs_of(in);
    assert_non_null(got);
    assert_string_equal(got, want);
    free(got);
}

/* RFC 8785 §3.2.2 (whitespace, literals, numbers, string escaping) */
static void test_rfc_3_2_2(void **state)
{
    assert_jcs("{\n  \"numbers\": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],\n"
               "  \"string\": \"\\u20ac$\\u000F\\u000aA'\\u0042\\u0022\\u005c\\\\\\\"\\/\",\n"
               "  \"literals\": [null, true, false]\n}",
               "{\"literals\":[null,true,false],\"numbers\":[333333333.3333333,1e+30,4.5,0.002,1e-27],"
               "\"string\":\"\xe2\x82\xac$\\u000f\\nA'B\\\"\\\\\\\\\\\"/\"}");
}

/* RFC 8785 §3.2.3: member order by UTF-16 code units (U+1F600 as a surrogate pair sorts
 * before U+FB33, unlike code point order) */
static void test_rfc_3_2_3_sorting(void **state)
{
    assert_jcs(
        "{\"\\u20ac\":\"Euro Sign\",\"\\r\":\"Carriage Return\",\"\\ufb33\":\"Hebrew Letter Dalet With "
        "Dagesh\",\"1\":\"One\",\"\\ud83d\\ude00\":\"Emoji: Grinning Face\",\"\\u0080\":\"Control\","
        "\"\\u00f6\":\"Latin Small Letter O With Diaeresis\"}",
        "{\"\\r\":\"Carriage Return\",\"1\":\"One\",\"\xc2\x80\":\"Control\",\"\xc3\xb6\":\"Latin Small "
        "Letter O With Diaeresis\",\"\xe2\x82\xac\":\"Euro Sign\",\"\xf0\x9f\x98\x80\":\"Emoji: Grinning "
        "Face\",\"\xef\xac\xb3\":\"Hebrew Letter Dalet With Dagesh\"}");
    /* nested objects are sorted too; a prefix sorts first; arrays keep their order */
    assert_jcs("{\"b\":[{\"z\":1,\"y\":2}],\"a\":{\"ab\":1,\"a\":2}}",
               "{\"a\":{\"a\":2,\"ab\":1},\"b\":[{\"y\":2,\"z\":1}]}");
}

/* RFC 8785 Appendix B: IEEE-754 bit patterns and their ECMAScript text */
static void test_rfc_appendix_b_numbers(void **state)
{
    static const struct {
        uint64_t bits;
        const char *text;
    } v[] = {
        {0x0000000000000000ULL, "0"},
        {0x8000000000000000ULL, "0"},
        {0x0000000000000001ULL, "5e-324"},
        {0x8000000000000001ULL, "-5e-324"},
        {0x7fefffffffffffffULL, "1.7976931348623157e+308"},
        {0xffefffffffffffffULL, "-1.7976931348623157e+308"},
        {0x4340000000000000ULL, "9007199254740992"},
        {0xc340000000000000ULL, "-9007199254740992"},
        {0x4430000000000000ULL, "295147905179352830000"},
        {0x44b52d02c7e14af5ULL, "9.999999999999997e+22"},
        {0x44b52d02c7e14af6ULL, "1e+23"},
        {0x44b52d02c7e14af7ULL, "1.0000000000000001e+23"},
        {0x444b1ae4d6e2ef4eULL, "999999999999999700000"},
        {0x444b1ae4d6e2ef4fULL, "999999999999999900000"},
        {0x444b1ae4d6e2ef50ULL, "1e+21"},
        {0x3eb0c6f7a0b5ed8cULL, "9.999999999999997e-7"},
        {0x3eb0c6f7a0b5ed8dULL, "0.000001"},
        {0x41b3de4355555553ULL, "333333333.3333332"},
        {0x41b3de4355555554ULL, "333333333.33333325"},
        {0x41b3de4355555555ULL, "333333333.3333333"},
        {0x41b3de4355555556ULL, "333333333.3333334"},
        {0x41b3de4355555557ULL, "333333333.33333343"},
        {0xbecbf647612f3696ULL, "-0.0000033333333333333333"},
        {0x43143ff3c1cb0959ULL, "1424953923781206.2"},
    };
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        double d;
        char buf[40];
        cJSON *n;
        char *out = NULL;
        kg_err e;
        memcpy(&d, &v[i].bits, sizeof(d));
        assert_int_equal(kg_jcs_number(d, buf, sizeof(buf)), 1);
        assert_string_equal(buf, v[i].text);
        n = cJSON_CreateNumber(d); /* and through the tree serialiser */
        assert_int_equal(kg_jcs_serialize(n, KG_STEP_EVIDENCE, &out, NULL, &e), 1);
        assert_string_equal(out, v[i].text);
        free(out);
        cJSON_Delete(n);
    }
    /* NaN and Infinity (0x7fffffffffffffff, 0x7ff0000000000000) are not JSON */
    {
        char buf[40];
        cJSON *n = cJSON_CreateNumber(INFINITY);
        char *out = NULL;
        kg_err e;
        assert_int_equal(kg_jcs_number(NAN, buf, sizeof(buf)), 0);
        assert_int_equal(kg_jcs_number(-INFINITY, buf, sizeof(buf)), 0);
        assert_int_equal(kg_jcs_serialize(n, KG_STEP_EVIDENCE, &out, NULL, &e), 0);
        assert_null(out);
        assert_non_null(strstr(e.msg, "NaN or Infinity"));
        cJSON_Delete(n);
    }
    /* small integers and simple fractions */
    assert_jcs("[1, -1, 10, 100e0, 0.5, 1e21, 1e20, 1e-7, 123456789012]",
               "[1,-1,10,100,0.5,1e+21,100000000000000000000,1e-7,123456789012]");
}

/* The Trustee binding object: '/' and '+' of a base64 nonce stay as they are */
static void test_trustee_runtime_data(void **state)
{
    assert_jcs(
        "{\"tee-pubkey\":{\"kty\":\"EC\",\"crv\":\"P-256\",\"alg\":\"ECDH-ES+A256KW\",\"x\":\"ab-_\","
        "\"y\":\"cd\"},\"nonce\":\"a/b+c/==\",\"additional-evidence\":\"\"}",
        "{\"additional-evidence\":\"\",\"nonce\":\"a/b+c/==\",\"tee-pubkey\":{\"alg\":\"ECDH-ES+A256KW\","
        "\"crv\":\"P-256\",\"kty\":\"EC\",\"x\":\"ab-_\",\"y\":\"cd\"}}");
    /* control characters: short escapes where JSON has them, \u00xx lower case otherwise; DEL
     * and U+2028 are not escaped */
    assert_jcs("[\"\\u0001\\u001f\\b\\f\\t\\u007f\\u2028\"]",
               "[\"\\u0001\\u001f\\b\\f\\t\x7f\xe2\x80\xa8\"]");
}

static void test_refusals(void **state)
{
    cJSON *j;
    char *out = NULL;
    kg_err e;

    /* duplicate member names (I-JSON) */
    j = cJSON_Parse("{\"a\":1,\"b\":2,\"a\":3}");
    assert_int_equal(kg_jcs_serialize(j, KG_STEP_EVIDENCE, &out, NULL, &e), 0);
    assert_non_null(strstr(e.msg, "duplicate member 'a'"));
    assert_int_equal(e.step, KG_STEP_EVIDENCE);
    cJSON_Delete(j);
    /* invalid UTF-8: a stray continuation byte, an overlong form, an encoded surrogate */
    {
        const char *bad[] = {"\x80", "\xc0\xaf", "\xed\xa0\x80", "a\xf5\x80\x80\x80"};
        for (size_t i = 0; i < 4; i++) {
            j = cJSON_CreateString(bad[i]);
            assert_int_equal(kg_jcs_serialize(j, KG_STEP_EVIDENCE, &out, NULL, &e), 0);
            assert_non_null(strstr(e.msg, "not valid UTF-8"));
            cJSON_Delete(j);
            j = cJSON_CreateObject();
            cJSON_AddNullToObject(j, bad[i]);
            assert_int_equal(kg_jcs_serialize(j, KG_STEP_EVIDENCE, &out, NULL, &e), 0);
            cJSON_Delete(j);
        }
    }
    /* raw nodes and excessive depth */
    j = cJSON_CreateRaw("{}");
    assert_int_equal(kg_jcs_serialize(j, KG_STEP_EVIDENCE, &out, NULL, &e), 0);
    cJSON_Delete(j);
    {
        cJSON *root = cJSON_CreateArray(), *cur = root;
        for (int i = 0; i < KG_JCS_MAX_DEPTH + 5; i++) {
            cJSON *next = cJSON_CreateArray();
            cJSON_AddItemToArray(cur, next);
            cur = next;
        }
        assert_int_equal(kg_jcs_serialize(root, KG_STEP_EVIDENCE, &out, NULL, &e), 0);
        assert_non_null(strstr(e.msg, "nesting"));
        cJSON_Delete(root);
    }
    assert_null(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rfc_3_2_2),
        cmocka_unit_test(test_rfc_3_2_3_sorting),
        cmocka_unit_test(test_rfc_appendix_b_numbers),
        cmocka_unit_test(test_trustee_runtime_data),
        cmocka_unit_test(test_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
