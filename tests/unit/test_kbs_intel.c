/* SPDX-License-Identifier: Apache-2.0 */
/* The Intel KBS generation from GET /kbs/v1/version (kbs_intel.h, docs/protocols/intel-kbs.md
 * §8): the reply parser and the version -> generation rule. The wire exchanges are in
 * tests/integration/test_release_cli.py against both generations of the stand-in. */
#include "kg_test.h"

#include <string.h>

#include "kbs_intel.h"

static int parse(const char *body, char *out, size_t size)
{
    return kbs_intel_parse_version((const uint8_t *)body, strlen(body), out, size);
}

static void test_parse_version(void **state)
{
    char v[64];
    (void)state;
    assert_int_equal(parse("{\"name\":\"Key Broker Service\",\"version\":\"v1.3.0\",\"gitHash\":\"31867a4\","
                           "\"buildDate\":\"2025-04-23\"}\n",
                           v, sizeof(v)),
                     1);
    assert_string_equal(v, "v1.3.0");
    assert_int_equal(parse("{\"version\":\"\"}", v, sizeof(v)), 0);            /* empty: built without it */
    assert_int_equal(parse("{\"version\":\"v1 .3\"}", v, sizeof(v)), 0);       /* not printable as one word */
    assert_int_equal(parse("{\"version\":\"v1.3\\u0007\"}", v, sizeof(v)), 0); /* control character */
    assert_int_equal(parse("{\"version\":130}", v, sizeof(v)), 0);
    assert_int_equal(parse("[\"v1.3.0\"]", v, sizeof(v)), 0);
    assert_int_equal(parse("{\"version\":\"v1.3.0\"}", v, 6), 0); /* does not fit */
    memset(v, 'x', 64);
    assert_int_equal(
        parse("{\"version\":\"v1.3.0-abcdefabcdefabcdefabcdefabcdefabcdefabcdefabcdefabcdefab\"}", v,
              sizeof(v)),
        1);
}

static void test_generation_of_version(void **state)
{
    static const struct {
        const char *version;
        kbs_intel_gen gen;
    } cases[] = {
        {"v1.3.0", KBS_INTEL_GEN_V13},     {"v1.3.1-rc1", KBS_INTEL_GEN_V13},
        {"1.2.0", KBS_INTEL_GEN_V13},      {"v0.3.2", KBS_INTEL_GEN_V13},
        {"v1.3", KBS_INTEL_GEN_V13},       {"v1.4.0", KBS_INTEL_GEN_2026},
        {"v1.10.0", KBS_INTEL_GEN_2026},   {"v2.0.0+g1234", KBS_INTEL_GEN_2026},
        {"V2.0", KBS_INTEL_GEN_2026},      {"", KBS_INTEL_GEN_UNKNOWN},
        {"v", KBS_INTEL_GEN_UNKNOWN},      {"v1", KBS_INTEL_GEN_UNKNOWN},
        {"v1.", KBS_INTEL_GEN_UNKNOWN},    {"v1.x", KBS_INTEL_GEN_UNKNOWN},
        {"dev", KBS_INTEL_GEN_UNKNOWN},    {"v1.3_custom", KBS_INTEL_GEN_UNKNOWN},
        {"-1.3.0", KBS_INTEL_GEN_UNKNOWN},
    };
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        if (kbs_intel_gen_of_version(cases[i].version) != cases[i].gen)
            fail_msg("'%s': generation %d, want %d", cases[i].version,
                     kbs_intel_gen_of_version(cases[i].version), cases[i].gen);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_version),
        cmocka_unit_test(test_generation_of_version),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
