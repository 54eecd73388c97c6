/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Local policy on our own quote (kbs_mode = background, issue 17 finding 1):
 * kg_verify_evidence_policy on real TDX quotes from the shared vectors (GCP: not debug, three
 * RTMRs; the Trustee v4 quote: DEBUG set), the same allow-list comparison as for a token's claims
 * (ita_td_policy_check: comma lists, hex of any case), every refusal at step verify and classified
 * by the lease code as a local-policy revocation, as the passport path's refusals are; and
 * kg_config_check refusing require_tcb_status with background mode.
 */
#include "kg_test.h"

#include <string.h>

#include "kg_config.h"
#include "kg_lease.h"
#include "kg_verify.h"

#define GCP_MRTD                                                                                             \
    "dae67181d3d65e073ad8f95b7907d5e927bfe9761c9ff3e9b89734a45d8954dba41394c7717cb2735396c1d04231f94a"
#define GCP_RTMR1                                                                                            \
    "f62dbc072bd5d3f3438b7b35c39a727f5aea2ffc2473f43723953f530daf62504f0a7944aa62c41a86e8a878c2b122c1"
#define OTHER                                                                                                \
    "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"

static void load(kg_evidence *ev, const char *vector)
{
    memset(ev, 0, sizeof(*ev));
    ev->quote = kg_test_read_file(kg_test_vector(vector), &ev->quote_len);
}

static void config(kg_config *c)
{
    kg_err e;
    kg_config_defaults(c);
    assert_int_equal(kg_config_set(c, "kbs_mode", "background", &e), 1);
}

/* A refusal: step verify, the expected words, and the lease calls it a local-policy revocation. */
static void assert_refused(const kg_config *c, const kg_evidence *ev, const char *needle)
{
    char line[600];
    kg_err e;

    kg_err_clear(&e);
    assert_int_equal(kg_verify_evidence_policy(c, ev, &e), 0);
    assert_int_equal(e.step, KG_STEP_VERIFY);
    assert_int_equal(strncmp(e.msg, "verify: ", 8), 0);
    if (strstr(e.msg, needle) == NULL)
        fail_msg("'%s' does not say '%s'", e.msg, needle);
    assert_int_equal(kg_lease_err_is_revocation(&e), 1);
    kg_lease_revocation_message("k", &e, line, sizeof(line));
    assert_non_null(strstr(line, "revoked by local policy"));
}

static void test_debug_quote_is_refused_unless_allowed(void **state)
{
    kg_config c;
    kg_evidence ev;
    kg_err e;

    (void)state;
    config(&c);
    load(&ev, "tdx-quote-trustee-v4-debug.bin");
    assert_refused(&c, &ev,
                   "the TD is debuggable: our quote's TDATTRIBUTES has DEBUG set (allow_debug_td = no)");
    assert_int_equal(kg_config_set(&c, "allow_debug_td", "yes", &e), 1);
    assert_int_equal(kg_verify_evidence_policy(&c, &ev, &e), 1);
    kg_evidence_clear(&ev);

    /* a production quote (SEPT_VE_DISABLE only) passes the debug check with the defaults */
    config(&c);
    load(&ev, "tdx-quote-gcp-cos113.bin");
    assert_int_equal(kg_verify_evidence_policy(&c, &ev, &e), 1);
    kg_evidence_clear(&ev);
}

static void test_mrtd_and_rtmr_allow_lists(void **state)
{
    kg_config c;
    kg_evidence ev;
    kg_err e;

    (void)state;
    load(&ev, "tdx-quote-gcp-cos113.bin");
    config(&c);
    assert_int_equal(kg_config_set(&c, "require_mrtd", OTHER, &e), 1);
    assert_refused(&c, &ev, "our quote's MRTD " GCP_MRTD " is not in require_mrtd");
    /* ours in the list, upper case, second, with spaces: accepted (the token path's rule) */
    assert_int_equal(kg_config_set(&c, "require_mrtd",
                                   OTHER " , DAE67181D3D65E073AD8F95B7907D5E927BFE9761C9FF3E9B89"
                                         "734A45D8954DBA41394C7717CB2735396C1D04231F94A",
                                   &e),
                     1);
    assert_int_equal(kg_verify_evidence_policy(&c, &ev, &e), 1);

    assert_int_equal(kg_config_set(&c, "require_rtmr1", OTHER, &e), 1);
    assert_refused(&c, &ev, "our quote's RTMR1 is not in require_rtmr1");
    assert_int_equal(kg_config_set(&c, "require_rtmr1", GCP_RTMR1, &e), 1);
    assert_int_equal(kg_verify_evidence_policy(&c, &ev, &e), 1);
    /* RTMR3 is all zero in this quote: a list without zeros refuses it */
    assert_int_equal(kg_config_set(&c, "require_rtmr3", OTHER, &e), 1);
    assert_refused(&c, &ev, "our quote's RTMR3 is not in require_rtmr3");
    kg_evidence_clear(&ev);
}

static void test_unparsable_quote_is_an_evidence_error_not_a_revocation(void **state)
{
    uint8_t junk[700];
    kg_evidence ev;
    kg_config c;
    kg_err e;

    (void)state;
    memset(junk, 0x41, sizeof(junk));
    memset(&ev, 0, sizeof(ev));
    ev.quote = junk;
    ev.quote_len = sizeof(junk);
    config(&c);
    kg_err_clear(&e);
    assert_int_equal(kg_verify_evidence_policy(&c, &ev, &e), 0);
    assert_int_equal(e.step, KG_STEP_EVIDENCE);
    assert_int_equal(kg_lease_err_is_revocation(&e), 0);
}

static void test_require_tcb_status_with_background_is_a_config_error(void **state)
{
    kg_config c;
    kg_err e;

    (void)state;
    /* the default (UpToDate) is no setting: background mode loads, the KBS's policy decides */
    config(&c);
    assert_string_equal(c.require_tcb_status, "UpToDate");
    assert_int_equal(kg_config_check(&c, &e), 1);
    /* set, even to the default value: refused, naming the setting and the mode */
    assert_int_equal(kg_config_set(&c, "require_tcb_status", "UpToDate", &e), 1);
    kg_err_clear(&e);
    assert_int_equal(kg_config_check(&c, &e), 0);
    assert_int_equal(e.step, KG_STEP_CONFIG);
    assert_string_equal(e.msg,
                        "config: require_tcb_status cannot be enforced with kbs_mode = background (the TCB "
                        "status is in ITA's token, which only the KBS sees)");
    /* set empty (= any): nothing to enforce */
    assert_int_equal(kg_config_set(&c, "require_tcb_status", "", &e), 1);
    assert_int_equal(kg_config_check(&c, &e), 1);
    /* passport enforces it; Trustee ignores kbs_mode */
    assert_int_equal(kg_config_set(&c, "require_tcb_status", "UpToDate,OutOfDate", &e), 1);
    assert_int_equal(kg_config_set(&c, "kbs_mode", "passport", &e), 1);
    assert_int_equal(kg_config_check(&c, &e), 1);
    assert_int_equal(kg_config_set(&c, "kbs_mode", "background", &e), 1);
    assert_int_equal(kg_config_set(&c, "kbs_type", "trustee", &e), 1);
    assert_int_equal(kg_config_check(&c, &e), 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_debug_quote_is_refused_unless_allowed),
        cmocka_unit_test(test_mrtd_and_rtmr_allow_lists),
        cmocka_unit_test(test_unparsable_quote_is_an_evidence_error_not_a_revocation),
        cmocka_unit_test(test_require_tcb_status_with_background_is_a_config_error),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
