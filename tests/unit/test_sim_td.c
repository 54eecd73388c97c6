/* SPDX-License-Identifier: Apache-2.0 */
/*
 * sim_td: builds a throwaway simulated PCK PKI (sim_pki.h) in a temp dir, produces v4 and v5
 * quotes, and checks they parse back field by field and verify only against the simulated root.
 * Negative cases: missing/garbage/wrong-type files, an unknown quote version or body type.
 */
#include "kg_test.h"

#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sim_pki.h"
#include "sim_td.h"
#include "tdx_quote.h"

#ifndef KG_VECTORS_DIR
#error "KG_VECTORS_DIR must point to tests/vectors"
#endif

static X509_STORE *intel_root_store(void)
{
    FILE *fp = fopen(KG_VECTORS_DIR "/intel-sgx-root-ca.pem", "r");
    X509 *cert;
    X509_STORE *store;

    assert_non_null(fp);
    cert = PEM_read_X509(fp, NULL, NULL, NULL);
    fclose(fp);
    assert_non_null(cert);
    store = store_with(cert);
    X509_free(cert);
    return store;
}

static void test_roundtrip_custom(void **state)
{
    static const uint8_t intel_vendor_id[16] = {0x93, 0x9a, 0x72, 0x33, 0xf7, 0x9c, 0x4c, 0xa9,
                                                0x94, 0x0a, 0x0d, 0xb3, 0x95, 0x7f, 0x06, 0x07};
    const sim_pki *pki = *state;
    sim_td_config cfg;
    uint8_t report_data[64], zero48[48] = {0};
    uint8_t *quote = NULL, *chain_pem;
    size_t quote_len = 0, chain_len;
    tdx_quote q;
    kg_err err;
    X509_STORE *sim_root = store_with(pki->root);
    X509_STORE *intel = intel_root_store();

    config_for(pki, &cfg);
    for (int i = 0; i < 48; i++) {
        cfg.mrtd[i] = (uint8_t)(0x10 + i);
        cfg.mrseam[i] = (uint8_t)(0x80 + i);
        for (int r = 0; r < 4; r++)
            cfg.rtmr[r][i] = (uint8_t)(r * 0x40 + i + 1);
    }
    for (int i = 0; i < 16; i++)
        cfg.tee_tcb_svn[i] = (uint8_t)(i * 3);
    for (int i = 0; i < 8; i++)
        cfg.xfam[i] = (uint8_t)(0xe0 + i);
    cfg.td_attributes = TDX_TD_ATTR_DEBUG | TDX_TD_ATTR_SEPT_VE_DISABLE | 0x0102030400000000ULL;
    for (int i = 0; i < 64; i++)
        report_data[i] = (uint8_t)(0xff - i);

    kg_err_clear(&err);
    if (!sim_td_get_quote(&cfg, report_data, NULL, &quote, &quote_len, &err))
        fail_msg("%s", err.msg);
    assert_non_null(quote);
    if (!tdx_quote_parse(quote, quote_len, &q, &err))
        fail_msg("%s", err.msg);

    assert_int_equal(q.version, 4);
    assert_int_equal(q.body_type, TDX_BODY_TYPE_TD_REPORT10); /* implied in v4 */
    assert_int_equal(q.signed_len, 632);
    assert_int_equal(q.att_key_type, 2);
    assert_int_equal(q.tee_type, 0x81);
    assert_memory_equal(q.qe_vendor_id, intel_vendor_id, 16);
    assert_memory_equal(q.tee_tcb_svn, cfg.tee_tcb_svn, 16);
    assert_memory_equal(q.mrseam, cfg.mrseam, 48);
    assert_memory_equal(q.mrtd, cfg.mrtd, 48);
    for (int r = 0; r < 4; r++)
        assert_memory_equal(q.rtmr[r], cfg.rtmr[r], 48);
    assert_memory_equal(q.xfam, cfg.xfam, 8);
    assert_int_equal(q.td_attributes, cfg.td_attributes);
    assert_memory_equal(quote + 168, "\x01\x00\x00\x10\x04\x03\x02\x01", 8); /* LE u64 */
    assert_memory_equal(q.report_data, report_data, 64);
    assert_memory_equal(quote + TDX_QUOTE_REPORTDATA_OFFSET, report_data, 64);
    assert_memory_equal(q.mrsignerseam, zero48, 48);
    assert_memory_equal(q.mrconfigid, zero48, 48);
    assert_memory_equal(q.mrowner, zero48, 48);
    assert_memory_equal(q.mrownerconfig, zero48, 48);
    assert_true(tdx_quote_is_debug(&q));

    assert_int_equal(q.quote_len, quote_len);
    assert_int_equal(q.cert_type, 6);
    assert_int_equal(q.inner_cert_type, 5);
    assert_int_equal(q.qe_report[256] | (q.qe_report[257] << 8), 2); /* ISVPRODID */
    assert_int_equal(q.qe_auth_len, 32);
    for (int i = 0; i < 32; i++)
        assert_int_equal(q.qe_auth_data[i], i);
    chain_pem = kg_test_read_file(pki->chain_file, &chain_len);
    assert_int_equal(q.pck_chain_len, chain_len + 1);
    assert_memory_equal(q.pck_chain, chain_pem, chain_len);
    assert_int_equal(q.pck_chain[chain_len], '\0');
    free(chain_pem);

    if (!tdx_quote_verify(&q, quote, sim_root, 0, NULL, &err))
        fail_msg("%s", err.msg);
    kg_err_clear(&err);
    assert_false(tdx_quote_verify(&q, quote, intel, 0, NULL, &err));
    assert_int_equal(err.step, KG_STEP_EVIDENCE);
    assert_non_null(strstr(err.msg, "PCK chain does not verify"));

    /* tampering with the body breaks the quote signature */
    quote[200] ^= 0x80;
    assert_false(tdx_quote_verify(&q, quote, sim_root, 0, NULL, &err));
    assert_non_null(strstr(err.msg, "quote signature does not verify"));

    free(quote);
    X509_STORE_free(intel);
    X509_STORE_free(sim_root);
}

static void test_defaults_and_same_att_key(void **state)
{
    const sim_pki *pki = *state;
    sim_td_config cfg;
    uint8_t report_data[64] = {0}, zero48[48] = {0};
    uint8_t *quote1 = NULL, *quote2 = NULL;
    size_t len1 = 0, len2 = 0;
    tdx_quote q1, q2;
    kg_err err;
    X509_STORE *sim_root = store_with(pki->root);
    OSSL_LIB_CTX *libctx = OSSL_LIB_CTX_new();

    assert_non_null(libctx);
    config_for(pki, &cfg);
    assert_true(sim_td_get_quote(&cfg, report_data, NULL, &quote1, &len1, &err));
    report_data[0] = 1;
    /* a second call, in another library context: same per-process attestation key */
    assert_true(sim_td_get_quote(&cfg, report_data, libctx, &quote2, &len2, &err));
    assert_true(tdx_quote_parse(quote1, len1, &q1, &err));
    assert_true(tdx_quote_parse(quote2, len2, &q2, &err));
    assert_memory_equal(q1.att_pubkey, q2.att_pubkey, 64);
    assert_int_equal(q2.report_data[0], 1);

    assert_false(tdx_quote_is_debug(&q1));
    assert_int_equal(q1.td_attributes, TDX_TD_ATTR_SEPT_VE_DISABLE);
    assert_memory_not_equal(q1.mrtd, zero48, 48);
    for (int r = 0; r < 4; r++)
        assert_memory_equal(q1.rtmr[r], zero48, 48);
    assert_memory_equal(q1.tee_tcb_svn, "\x04\x01\x07\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00",
                        16);
    assert_true(tdx_quote_verify(&q1, quote1, sim_root, 0, NULL, &err));
    if (!tdx_quote_verify(&q2, quote2, sim_root, 0, libctx, &err))
        fail_msg("%s", err.msg);

    free(quote1);
    free(quote2);
    OSSL_LIB_CTX_free(libctx);
    X509_STORE_free(sim_root);
}

/* sim_quote_version = 5: a TD report 1.5 body (type 3) by default, whose TEE_TCB_SVN2 is the
 * TEE_TCB_SVN and whose MRSERVICETD is zero (no service TD bound); REPORTDATA 6 bytes later. */
static void test_v5_defaults(void **state)
{
    const sim_pki *pki = *state;
    sim_td_config cfg;
    uint8_t report_data[64], zero48[48] = {0};
    uint8_t *quote = NULL;
    size_t quote_len = 0;
    tdx_quote q;
    kg_err err;
    X509_STORE *sim_root = store_with(pki->root);

    config_for(pki, &cfg);
    cfg.quote_version = 5;
    for (int i = 0; i < 64; i++)
        report_data[i] = (uint8_t)(i + 7);
    kg_err_clear(&err);
    if (!sim_td_get_quote(&cfg, report_data, NULL, &quote, &quote_len, &err) ||
        !tdx_quote_parse(quote, quote_len, &q, &err))
        fail_msg("%s", err.msg);
    assert_int_equal(quote[0] | (quote[1] << 8), 5);
    assert_int_equal(quote[48] | (quote[49] << 8), 3);          /* body type */
    assert_memory_equal(quote + 50, "\x88\x02\x00\x00", 4);     /* body size 648 */
    assert_memory_equal(quote + 48 + 6 + 520, report_data, 64); /* REPORTDATA at 574 */
    assert_int_equal(q.version, 5);
    assert_int_equal(q.body_type, TDX_BODY_TYPE_TD_REPORT15);
    assert_int_equal(q.body_size, 648);
    assert_int_equal(q.signed_len, 48 + 6 + 648);
    assert_memory_equal(q.report_data, report_data, 64);
    assert_memory_equal(q.mrtd, cfg.mrtd, 48);
    assert_memory_equal(q.tee_tcb_svn2, cfg.tee_tcb_svn, 16);
    assert_memory_equal(q.mrservicetd, zero48, 48);
    assert_int_equal(q.td_attributes, TDX_TD_ATTR_SEPT_VE_DISABLE);
    if (!tdx_quote_verify(&q, quote, sim_root, 0, NULL, &err))
        fail_msg("%s", err.msg);
    free(quote);
    X509_STORE_free(sim_root);
}

/* Expects sim_td_get_quote to fail with a message containing `want`; no output on failure. */
static void expect_quote_fails(const sim_td_config *cfg, const char *want)
{
    static uint8_t sentinel[1];
    uint8_t report_data[64] = {0};
    uint8_t *quote = sentinel;
    size_t quote_len = 99;
    kg_err err;

    kg_err_clear(&err);
    assert_false(sim_td_get_quote(cfg, report_data, NULL, &quote, &quote_len, &err));
    assert_null(quote);
    assert_int_equal(quote_len, 0);
    assert_int_equal(err.step, KG_STEP_EVIDENCE);
    assert_null(strchr(err.msg, '\n'));
    if (strstr(err.msg, want) == NULL)
        fail_msg("want '%s', got '%s'", want, err.msg);
}

static void test_negative(void **state)
{
    const sim_pki *pki = *state;
    sim_td_config cfg;
    char missing[160];

    snprintf(missing, sizeof(missing), "%s/does-not-exist.pem", pki->dir);

    sim_td_config_defaults(&cfg);
    expect_quote_fails(&cfg, "no PCK key file configured");

    config_for(pki, &cfg);
    snprintf(cfg.pck_key_file, sizeof(cfg.pck_key_file), "%s", missing);
    expect_quote_fails(&cfg, "cannot open PCK key file");

    config_for(pki, &cfg);
    snprintf(cfg.pck_key_file, sizeof(cfg.pck_key_file), "%s", pki->garbage_file);
    expect_quote_fails(&cfg, "holds no unencrypted PEM private key");

    config_for(pki, &cfg);
    snprintf(cfg.pck_key_file, sizeof(cfg.pck_key_file), "%s", pki->p384_key_file);
    expect_quote_fails(&cfg, "is not an EC P-256 key");

    config_for(pki, &cfg);
    snprintf(cfg.pck_key_file, sizeof(cfg.pck_key_file), "%s", pki->other_key_file);
    expect_quote_fails(&cfg, "does not match the PCK key");

    config_for(pki, &cfg);
    cfg.pck_chain_file[0] = '\0';
    expect_quote_fails(&cfg, "no PCK chain file configured");

    config_for(pki, &cfg);
    snprintf(cfg.pck_chain_file, sizeof(cfg.pck_chain_file), "%s", missing);
    expect_quote_fails(&cfg, "cannot open PCK chain file");

    config_for(pki, &cfg);
    snprintf(cfg.pck_chain_file, sizeof(cfg.pck_chain_file), "%s", pki->garbage_file);
    expect_quote_fails(&cfg, "holds no PEM certificate");

    config_for(pki, &cfg);
    snprintf(cfg.pck_chain_file, sizeof(cfg.pck_chain_file), "%s", pki->key_file);
    expect_quote_fails(&cfg, "holds no PEM certificate");

    config_for(pki, &cfg);
    cfg.quote_version = 3;
    expect_quote_fails(&cfg, "cannot make quote version 3");
    cfg.quote_version = 5;
    cfg.body_type = 1; /* SGX enclave report: not a TD */
    expect_quote_fails(&cfg, "cannot make quote version 5 body type 1");

    {
        uint8_t report_data[64] = {0};
        uint8_t *quote = NULL;
        size_t quote_len = 0;
        kg_err err;

        assert_false(sim_td_get_quote(NULL, report_data, NULL, &quote, &quote_len, &err));
        assert_int_equal(err.step, KG_STEP_INTERNAL);
        config_for(pki, &cfg);
        assert_false(sim_td_get_quote(&cfg, report_data, NULL, NULL, &quote_len, &err));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_custom),
        cmocka_unit_test(test_defaults_and_same_att_key),
        cmocka_unit_test(test_v5_defaults),
        cmocka_unit_test(test_negative),
    };
    return cmocka_run_group_tests(tests, setup_pki, teardown_pki);
}
