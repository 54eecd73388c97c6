/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tdx_quote parser and verifier against the three real TDX v4 quotes and the real v5 quote in the
 * vectors (tests/vectors/README.md §2): exact fields, signatures, PCK chain to the pinned
 * Intel SGX root, tampering, truncation at every length, header/size mutations, padding.
 * v5 body types 2 and 3 from the sim TD (sim_pki.h): fields, mutated body descriptors, truncation,
 * and signatures over the wrong bytes (re-signed here with a fresh attestation key).
 */
#include "kg_test.h"

#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sim_pki.h"
#include "tdx_quote.h"

#ifndef KG_VECTORS_DIR
#error "KG_VECTORS_DIR must point to tests/vectors"
#endif

/* 2025-01-01T00:00:00Z: inside the validity of every PCK leaf and CA in the three quotes. */
#define VERIFY_TIME ((time_t)1735689600)
/* 2051-01-01: after the Intel SGX Root CA expires. */
#define VERIFY_TIME_EXPIRED ((time_t)2556144000)

typedef struct quote_vector {
    const char *file;
    uint16_t version;
    uint16_t body_type;
    size_t file_len;
    size_t quote_len;
    uint32_t sig_data_len;
    uint32_t pck_chain_len;
    int pem_has_nul;
    int qe_auth_is_sequence; /* 00..1f, else all zero */
    int debug;
    uint64_t td_attributes;
    uint16_t qe_isvsvn;
    const char *header_user_data;
    const char *tee_tcb_svn;
    const char *mrseam;
    const char *mrtd;
    const char *xfam;
    const char *rtmr[4]; /* NULL: 48 zero bytes */
    const char *report_data;
    const char *tee_tcb_svn2; /* body type 3 only; NULL: zero */
    const char *mrservicetd;  /* body type 3 only; NULL: zero */
} quote_vector;

static const quote_vector vectors[] = {
    {
        .file = "tdx-quote-gcp-cos113.bin",
        .version = 4,
        .body_type = 2,
        .file_len = 8000,
        .quote_len = 4935,
        .sig_data_len = 4299,
        .pck_chain_len = 3677,
        .pem_has_nul = 0,
        .qe_auth_is_sequence = 0,
        .debug = 0,
        .td_attributes = 0x10000000ULL,
        .qe_isvsvn = 6,
        .header_user_data = "0000000000000000000000000000000000000000",
        .tee_tcb_svn = "04010700000000000000000000000000",
        .mrseam = "ffc97a88587660fb04e1f7c851300c96ae0b5a463ac46d035d16c2d9f36d0ed1d23775bcbd27deb219e3a3cc28"
                  "023895",
        .mrtd = "dae67181d3d65e073ad8f95b7907d5e927bfe9761c9ff3e9b89734a45d8954dba41394c7717cb2735396c1d04231"
                "f94a",
        .xfam = "e700060000000000",
        .rtmr = {"3fa2f61f395b7f5feefb4ec2df61297f109ad8abcd6410c1b7df60f21f37b19297fc35e544039c7e1edece752af"
                 "d17f6",
                 "f62dbc072bd5d3f3438b7b35c39a727f5aea2ffc2473f43723953f530daf62504f0a7944aa62c41a86e8a878c2b"
                 "122c1",
                 "4969684dc87381fc3b3134176c8d8806eaf0a901859f5f70cfae8d17714b46c10a8de219048c9fc09f11f381a6f"
                 "be7c1",
                 NULL},
        .report_data = "0000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
                       "0000000000000000000000000000000000000000000",
    },
    {
        .file = "tdx-quote-trustee-v4-debug.bin",
        .version = 4,
        .body_type = 2,
        .file_len = 4936,
        .quote_len = 4936,
        .sig_data_len = 4300,
        .pck_chain_len = 3678,
        .pem_has_nul = 1,
        .qe_auth_is_sequence = 1,
        .debug = 1,
        .td_attributes = 0x10000001ULL,
        .qe_isvsvn = 4,
        .header_user_data = "d099bfec0a477aa85a605dceabf2b10800000000",
        .tee_tcb_svn = "03000500000000000000000000000000",
        .mrseam = "2fd279c16164a93dd5bf373d834328d46008c2b693af9ebb865b08b2ced320c9a89b4869a9fab60fbe9d0c5a53"
                  "63c656",
        .mrtd = "705ee9381b8633a9fbe532b52345e8433343d2868959f57889d84ca377c395b689cac1599ccea1b7d420483a9ce5"
                "f031",
        .xfam = "e742060000000000",
        .rtmr = {"e940da7c2712d2790e2961e00484f4fa8e6f9eed71361655ae22699476b14f9e63867eb41edd4b480fef0c59f49"
                 "6b288",
                 "559cfcf42716ed6c40a48a73d5acb7da255435012f0a9f00fbe8c1c57612ede486a5684c4c9ff3ddf52315fcdca"
                 "3a596",
                 NULL, NULL},
        .report_data = "7c71fe2c86eff65a7cf8dbc22b3275689fd0464a267baced1bf94fc1324656aeb755da3d44d098c0c8738"
                       "2f3a5f85b45c8a28fee1d3bdb38342bf96671501429",
    },
    {
        .file = "tdx-quote-azure.bin",
        .version = 4,
        .body_type = 2,
        .file_len = 5006,
        .quote_len = 4936,
        .sig_data_len = 4300,
        .pck_chain_len = 3678,
        .pem_has_nul = 1,
        .qe_auth_is_sequence = 1,
        .debug = 0,
        .td_attributes = 0,
        .qe_isvsvn = 5,
        .header_user_data = "f17eac112e4cd9a0fafce1b46b5af18f00000000",
        .tee_tcb_svn = "02010600000000000000000000000000",
        .mrseam = "360304d34a16aace0a18e09ad2d07d2b9fd3c174378e5bf108388079827f89ff62acc5f8c473dd40706324834e"
                  "202946",
        .mrtd = "024a32b070383331181619fa387cb4d55d1e38879f989933055ccad5bc2db795d1737b66205949d15469dc8c1ba7"
                "ab7b",
        .xfam = "e718060000000000",
        .rtmr = {NULL, NULL, NULL, NULL},
        .report_data = "9734504f161d104c74e3165c15f779b06a9bb40dfa71937817d7eee68e593839000000000000000000000"
                       "0000000000000000000000000000000000000000000",
    },
    {
        .file = "tdx-quote-trustee-v5.bin",
        .version = 5,
        .body_type = 3,
        .file_len = 5006,
        .quote_len = 5006,
        .sig_data_len = 4300,
        .pck_chain_len = 3678,
        .pem_has_nul = 1,
        .qe_auth_is_sequence = 1,
        .debug = 0,
        .td_attributes = 0x10000000ULL,
        .qe_isvsvn = 6,
        .header_user_data = "da2c7e326c5696889a6a6ab4f8a64b1700000000",
        .tee_tcb_svn = "05010200000000000000000000000000",
        .mrseam = "1cc6a17ab799e9a693fac7536be61c12ee1e0fabada82d0c999e08ccee2aa86de77b0870f558c570e7ffe55d6d"
                  "47fa04",
        .mrtd = "dfba221b48a22af8511542ee796603f37382800840dcd978703909bf8e64d4c8a1e9de86e7c9638bfcba422f3886"
                "400a",
        .xfam = "e742060000000000",
        .rtmr = {"9b529f3689e2e8ebb899e9abbbc3dab394d6545e8cdb28a2abb9cc2f377b83a65c01ba56b824cd3ee885df20051"
                 "f5128",
                 "ca5a979317ffe8a527a3b7aadab03976d7cb6eef1041fb9bd9d69e6fafa7252cdc10e4c2a55e7ecbd2ddb5cacc8"
                 "67430",
                 NULL, NULL},
        .report_data =
            "6d6ab13b046cff606ac0074be13981b07b6325dba10b5facc96febf551c0c3be2b75f92fe1f88f4bb99696"
            "9ad0174b4b7a70261b7b85c844f4b33a4674fd049f",
        .tee_tcb_svn2 = "05010200000000000000000000000000",
        .mrservicetd =
            "383c87d3bbb047b2d171eaca95312ede99f258088dc788f6ae2ccf8b6dd848fe8d47629e08b3f6cbd4a00dd4"
            "7a5a033d",
    },
};
#define N_VECTORS (sizeof(vectors) / sizeof(vectors[0]))

static const uint8_t intel_vendor_id[16] = {0x93, 0x9a, 0x72, 0x33, 0xf7, 0x9c, 0x4c, 0xa9,
                                            0x94, 0x0a, 0x0d, 0xb3, 0x95, 0x7f, 0x06, 0x07};

/* Compares n bytes with a hex string (NULL = all zero). */
static void assert_hex(const uint8_t *got, size_t n, const char *hex)
{
    for (size_t i = 0; i < n; i++) {
        unsigned int byte = 0;

        if (hex != NULL) {
            assert_int_equal(strlen(hex), 2 * n);
            assert_int_equal(sscanf(hex + 2 * i, "%2x", &byte), 1);
        }
        if (got[i] != byte)
            fail_msg("byte %zu: got %02x, want %02x (%s)", i, got[i], byte, hex ? hex : "zeros");
    }
}

static int all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != 0)
            return 0;
    return 1;
}

static X509_STORE *store_from_pem(const char *name)
{
    char path[1024];
    X509_STORE *store;
    X509 *cert;
    FILE *fp;

    snprintf(path, sizeof(path), "%s/%s", KG_VECTORS_DIR, name);
    fp = fopen(path, "r");
    assert_non_null(fp);
    cert = PEM_read_X509(fp, NULL, NULL, NULL);
    fclose(fp);
    assert_non_null(cert);
    store = X509_STORE_new();
    assert_non_null(store);
    assert_int_equal(X509_STORE_add_cert(store, cert), 1);
    X509_free(cert);
    return store;
}

static void test_parse_real_quotes(void **state)
{
    (void)state;
    for (size_t v = 0; v < N_VECTORS; v++) {
        const quote_vector *exp = &vectors[v];
        size_t len;
        uint8_t *buf = kg_test_read_file(kg_test_vector(exp->file), &len);
        tdx_quote q;
        kg_err err;
        uint8_t zero48[48] = {0};

        kg_err_clear(&err);
        assert_int_equal(len, exp->file_len);
        if (!tdx_quote_parse(buf, len, &q, &err))
            fail_msg("%s: %s", exp->file, err.msg);
        assert_int_equal(q.version, exp->version);
        assert_int_equal(q.body_type, exp->body_type);
        assert_int_equal(q.body_size, exp->body_type == 3 ? 648 : 584);
        assert_int_equal(q.body_offset, exp->version == 5 ? 54 : 48);
        assert_int_equal(q.signed_len, q.body_offset + q.body_size);
        assert_int_equal(q.att_key_type, 2);
        assert_int_equal(q.tee_type, 0x81);
        assert_int_equal(q.qe_svn, 0);
        assert_int_equal(q.pce_svn, 0);
        assert_memory_equal(q.qe_vendor_id, intel_vendor_id, 16);
        assert_hex(q.header_user_data, 20, exp->header_user_data);
        assert_hex(q.tee_tcb_svn, 16, exp->tee_tcb_svn);
        assert_hex(q.mrseam, 48, exp->mrseam);
        assert_hex(q.mrtd, 48, exp->mrtd);
        assert_hex(q.xfam, 8, exp->xfam);
        for (int i = 0; i < 4; i++)
            assert_hex(q.rtmr[i], 48, exp->rtmr[i]);
        assert_hex(q.report_data, 64, exp->report_data);
        assert_memory_equal(q.report_data, buf + q.body_offset + TDX_BODY_REPORTDATA_OFFSET, 64);
        assert_hex(q.tee_tcb_svn2, 16, exp->tee_tcb_svn2);
        assert_hex(q.mrservicetd, 48, exp->mrservicetd);
        assert_memory_equal(q.mrsignerseam, zero48, 48);
        assert_memory_equal(q.mrconfigid, zero48, 48);
        assert_memory_equal(q.mrowner, zero48, 48);
        assert_memory_equal(q.mrownerconfig, zero48, 48);
        assert_true(all_zero(q.seam_attributes, 8));
        assert_int_equal(q.td_attributes, exp->td_attributes);
        assert_int_equal(tdx_quote_is_debug(&q), exp->debug);
        assert_int_equal((q.td_attributes & TDX_TD_ATTR_SEPT_VE_DISABLE) != 0,
                         exp->td_attributes == 0 ? 0 : 1);

        /* signature section */
        assert_int_equal(q.quote_len, exp->quote_len);
        assert_int_equal(q.quote_len, q.signed_len + 4 + exp->sig_data_len);
        assert_ptr_equal(q.signature, buf + q.signed_len + 4);
        assert_ptr_equal(q.att_pubkey, q.signature + 64);
        assert_int_equal(q.cert_type, 6);
        assert_ptr_equal(q.qe_report, q.att_pubkey + 64 + 6);
        assert_int_equal(q.qe_report[256] | (q.qe_report[257] << 8), 2); /* ISVPRODID */
        assert_int_equal(q.qe_report[258] | (q.qe_report[259] << 8), exp->qe_isvsvn);
        assert_ptr_equal(q.qe_report_sig, q.qe_report + SGX_REPORT_BODY_LEN);
        assert_int_equal(q.qe_auth_len, 32);
        for (int i = 0; i < 32; i++)
            assert_int_equal(q.qe_auth_data[i], exp->qe_auth_is_sequence ? i : 0);
        assert_int_equal(q.inner_cert_type, 5);
        assert_int_equal(q.pck_chain_len, exp->pck_chain_len);
        assert_ptr_equal(q.pck_chain + q.pck_chain_len, buf + q.quote_len);
        assert_int_equal(q.pck_chain[q.pck_chain_len - 1] == '\0', exp->pem_has_nul);
        assert_memory_equal(q.pck_chain, "-----BEGIN CERTIFICATE-----", 27);
        free(buf);
    }
}

static void test_padding_ignored(void **state)
{
    (void)state;
    for (size_t v = 0; v < N_VECTORS; v++) {
        const quote_vector *exp = &vectors[v];
        size_t len;
        uint8_t *buf = kg_test_read_file(kg_test_vector(exp->file), &len);
        uint8_t *exact;
        tdx_quote padded, trimmed;
        kg_err err;

        assert_true(tdx_quote_parse(buf, len, &padded, &err));
        assert_int_equal(padded.quote_len, exp->quote_len);
        assert_true(all_zero(buf + padded.quote_len, len - padded.quote_len));
        /* the same quote in an exact-size heap buffer: same fields */
        exact = malloc(exp->quote_len);
        assert_non_null(exact);
        memcpy(exact, buf, exp->quote_len);
        assert_true(tdx_quote_parse(exact, exp->quote_len, &trimmed, &err));
        assert_int_equal(trimmed.quote_len, padded.quote_len);
        assert_memory_equal(trimmed.mrtd, padded.mrtd, 48);
        assert_int_equal(trimmed.pck_chain_len, padded.pck_chain_len);
        /* and the padded one still verifies */
        {
            X509_STORE *intel = store_from_pem("intel-sgx-root-ca.pem");

            kg_err_clear(&err);
            if (!tdx_quote_verify(&trimmed, exact, intel, VERIFY_TIME, NULL, &err))
                fail_msg("%s: %s", exp->file, err.msg);
            X509_STORE_free(intel);
        }
        free(exact);
        free(buf);
    }
}

static void test_verify_real_quotes_intel_root(void **state)
{
    X509_STORE *intel = store_from_pem("intel-sgx-root-ca.pem");

    (void)state;
    for (size_t v = 0; v < N_VECTORS; v++) {
        size_t len;
        uint8_t *buf = kg_test_read_file(kg_test_vector(vectors[v].file), &len);
        tdx_quote q;
        kg_err err;

        kg_err_clear(&err);
        assert_true(tdx_quote_parse(buf, len, &q, &err));
        if (!tdx_quote_verify(&q, buf, intel, VERIFY_TIME, NULL, &err))
            fail_msg("%s: %s", vectors[v].file, err.msg);
        /* also with a private library context */
        {
            OSSL_LIB_CTX *libctx = OSSL_LIB_CTX_new();

            assert_non_null(libctx);
            if (!tdx_quote_verify(&q, buf, intel, VERIFY_TIME, libctx, &err))
                fail_msg("%s (libctx): %s", vectors[v].file, err.msg);
            OSSL_LIB_CTX_free(libctx);
        }
        /* after the Intel root expired: the chain check fails */
        assert_false(tdx_quote_verify(&q, buf, intel, VERIFY_TIME_EXPIRED, NULL, &err));
        assert_int_equal(err.step, KG_STEP_EVIDENCE);
        assert_non_null(strstr(err.msg, "PCK chain"));
        free(buf);
    }
    X509_STORE_free(intel);
}

static void test_verify_real_quotes_other_root(void **state)
{
    /* a real but unrelated self-signed root: the ITA token-signing root */
    X509_STORE *other = store_from_pem("ita-prod-root-ca.pem");
    X509_STORE *empty = X509_STORE_new();

    (void)state;
    assert_non_null(empty);
    for (size_t v = 0; v < N_VECTORS; v++) {
        size_t len;
        uint8_t *buf = kg_test_read_file(kg_test_vector(vectors[v].file), &len);
        tdx_quote q;
        kg_err err;

        assert_true(tdx_quote_parse(buf, len, &q, &err));
        kg_err_clear(&err);
        assert_false(tdx_quote_verify(&q, buf, other, VERIFY_TIME, NULL, &err));
        assert_int_equal(err.step, KG_STEP_EVIDENCE);
        assert_non_null(strstr(err.msg, "evidence: PCK chain does not verify"));
        /* the root embedded in the quote must never be trusted by itself */
        kg_err_clear(&err);
        assert_false(tdx_quote_verify(&q, buf, empty, VERIFY_TIME, NULL, &err));
        assert_non_null(strstr(err.msg, "PCK chain does not verify"));
        free(buf);
    }
    X509_STORE_free(empty);
    X509_STORE_free(other);
}

/* Flips one byte at off (in a private copy), then expects verify to fail naming `check`. */
static void expect_tamper_fails(const quote_vector *exp, size_t off, const char *check)
{
    size_t len;
    uint8_t *buf = kg_test_read_file(kg_test_vector(exp->file), &len);
    X509_STORE *intel = store_from_pem("intel-sgx-root-ca.pem");
    tdx_quote q;
    kg_err err;

    buf[off] ^= 0x01;
    kg_err_clear(&err);
    assert_true(tdx_quote_parse(buf, len, &q, &err));
    assert_false(tdx_quote_verify(&q, buf, intel, VERIFY_TIME, NULL, &err));
    assert_int_equal(err.step, KG_STEP_EVIDENCE);
    if (strstr(err.msg, check) == NULL)
        fail_msg("%s offset %zu: want '%s', got '%s'", exp->file, off, check, err.msg);
    X509_STORE_free(intel);
    free(buf);
}

static void test_tamper(void **state)
{
    (void)state;
    for (size_t v = 0; v < N_VECTORS; v++) {
        const size_t body = vectors[v].version == 5 ? 54 : 48;
        const size_t sig_data = body + (vectors[v].body_type == 3 ? 648 : 584) + 4;
        const size_t qe_report = sig_data + 64 + 64 + 6;
        const size_t qe_auth = qe_report + SGX_REPORT_BODY_LEN + 64 + 2;

        expect_tamper_fails(&vectors[v], 0 + 30, "quote signature does not verify");          /* header */
        expect_tamper_fails(&vectors[v], body + 136 + 5, "quote signature does not verify");  /* MRTD */
        expect_tamper_fails(&vectors[v], body + 520 + 63, "quote signature does not verify"); /* REPORTDATA */
        if (vectors[v].body_type == 3) { /* TEE_TCB_SVN2, MRSERVICETD: signed too */
            expect_tamper_fails(&vectors[v], body + 584 + 1, "quote signature does not verify");
            expect_tamper_fails(&vectors[v], body + 600 + 47, "quote signature does not verify");
        }
        expect_tamper_fails(&vectors[v], sig_data + 10, "quote signature does not verify");      /* r */
        expect_tamper_fails(&vectors[v], qe_report + 10, "QE report signature does not verify"); /* CPUSVN */
        expect_tamper_fails(&vectors[v], qe_report + 256,
                            "QE report signature does not verify"); /* ISVPRODID */
        expect_tamper_fails(&vectors[v], qe_report + SGX_REPORT_BODY_LEN + 5,
                            "QE report signature does not verify");
        expect_tamper_fails(&vectors[v], qe_auth + 3, "QE report data is not SHA-256");
    }
}

static void test_truncated_every_length(void **state)
{
    (void)state;
    for (size_t v = 0; v < N_VECTORS; v++) {
        size_t len;
        uint8_t *buf = kg_test_read_file(kg_test_vector(vectors[v].file), &len);
        size_t quote_len = vectors[v].quote_len;

        for (size_t cut = 0; cut < quote_len; cut++) {
            /* exact-size heap copy so that ASan catches any read past `cut` */
            uint8_t *copy = malloc(cut == 0 ? 1 : cut);
            tdx_quote q;
            kg_err err;

            assert_non_null(copy);
            memcpy(copy, buf, cut);
            kg_err_clear(&err);
            if (tdx_quote_parse(copy, cut, &q, &err))
                fail_msg("%s: truncated at %zu parsed", vectors[v].file, cut);
            assert_int_equal(err.step, KG_STEP_EVIDENCE);
            assert_non_null(strstr(err.msg, "evidence: quote"));
            assert_null(strchr(err.msg, '\n'));
            free(copy);
        }
        free(buf);
    }
}

static void put_u16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static void put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

typedef struct mutation {
    size_t offset; /* relative to `base` */
    int base;      /* 0 absolute, 1 QE report, 2 inner header */
    int width;     /* 2 or 4 */
    uint32_t value;
    const char *want;
} mutation;

static void test_header_and_size_mutations(void **state)
{
    /* trustee quote: sig data 4300, cert size 4166, auth 32, inner size 3678 */
    static const mutation mutations[] = {
        {0, 0, 2, 3, "version 3 is not supported"},
        {0, 0, 2, 6, "version 6 is not supported (need 4 or 5)"},
        /* as v5, its TEE_TCB_SVN 03 00 05 00 00 00 reads as body type 3 of size 5 */
        {0, 0, 2, 5, "v5 body size 5 is not 648 for body type 3"},
        {2, 0, 2, 3, "attestation key type 3"},
        {4, 0, 4, 0, "TEE type 0x0 is not TDX"},
        {4, 0, 4, 0x81 | 0x100, "TEE type 0x181"},
        {632, 0, 4, 4301, "signature data length 4301 exceeds"},
        {632, 0, 4, 0xffffffffu, "exceeds"},
        {632, 0, 4, 100, "too short"},
        {632, 0, 4, 4299, "certification data size 4166 does not match"},
        {636 + 128, 0, 2, 5, "certification data type 5 is not QE report"},
        {636 + 130, 0, 4, 4165, "certification data size 4165 does not match"},
        {636 + 130, 0, 4, 4167, "certification data size 4167 does not match"},
        {SGX_REPORT_BODY_LEN + 64, 1, 2, 0xffff, "QE auth data length 65535 exceeds"},
        {SGX_REPORT_BODY_LEN + 64, 1, 2, 33, "inner certification data type"},
        {0, 2, 2, 6, "inner certification data type 6 is not a PCK chain"},
        {2, 2, 4, 3677, "PCK chain size 3677 does not match"},
        {2, 2, 4, 3679, "PCK chain size 3679 does not match"},
        {2, 2, 4, 0, "PCK chain size 0"},
    };
    size_t len;
    uint8_t *orig = kg_test_read_file(kg_test_vector("tdx-quote-trustee-v4-debug.bin"), &len);
    const size_t qe_report_off = 636 + 134;
    const size_t inner_off = qe_report_off + SGX_REPORT_BODY_LEN + 64 + 2 + 32;

    (void)state;
    for (size_t m = 0; m < sizeof(mutations) / sizeof(mutations[0]); m++) {
        uint8_t *buf = malloc(len);
        size_t base = mutations[m].base == 0 ? 0 : mutations[m].base == 1 ? qe_report_off : inner_off;
        tdx_quote q;
        kg_err err;

        assert_non_null(buf);
        memcpy(buf, orig, len);
        if (mutations[m].width == 2)
            put_u16(buf + base + mutations[m].offset, (uint16_t)mutations[m].value);
        else
            put_u32(buf + base + mutations[m].offset, mutations[m].value);
        kg_err_clear(&err);
        assert_false(tdx_quote_parse(buf, len, &q, &err));
        assert_int_equal(err.step, KG_STEP_EVIDENCE);
        if (strstr(err.msg, mutations[m].want) == NULL)
            fail_msg("mutation %zu: want '%s', got '%s'", m, mutations[m].want, err.msg);
        free(buf);
    }
    free(orig);
}

static void test_byte_mutations_no_crash(void **state)
{
    (void)state;
    /* set every byte of the signature-data framing and QE section to 0xff and 0x00 in turn */
    size_t len;
    uint8_t *orig = kg_test_read_file(kg_test_vector("tdx-quote-gcp-cos113.bin"), &len);
    const size_t quote_len = 4935;
    uint8_t *buf = malloc(quote_len);

    assert_non_null(buf);
    for (size_t off = TDX_QUOTE_SIGNED_LEN; off < 636 + 134 + SGX_REPORT_BODY_LEN + 64 + 2 + 32 + 6; off++) {
        for (int val = 0; val < 2; val++) {
            tdx_quote q;
            kg_err err;

            memcpy(buf, orig, quote_len);
            buf[off] = val ? 0xff : 0x00;
            (void)tdx_quote_parse(buf, quote_len, &q, &err);
        }
    }
    free(buf);
    free(orig);
}

/* ---- v5 from the sim TD: body types 2 and 3 ---- */

/* A sim TD v5 quote of body_type with distinct TEE_TCB_SVN2 / MRSERVICETD; *len its length. */
static uint8_t *sim_v5_quote(const sim_pki *pki, uint16_t body_type, size_t *len)
{
    sim_td_config cfg;
    uint8_t report_data[64], *quote = NULL;
    kg_err err;

    config_for(pki, &cfg);
    cfg.quote_version = 5;
    cfg.body_type = body_type;
    for (int i = 0; i < 16; i++)
        cfg.tee_tcb_svn2[i] = (uint8_t)(0xc0 + i);
    for (int i = 0; i < 48; i++)
        cfg.mrservicetd[i] = (uint8_t)(0x30 + i);
    for (int i = 0; i < 64; i++)
        report_data[i] = (uint8_t)(0x80 ^ i);
    kg_err_clear(&err);
    if (!sim_td_get_quote(&cfg, report_data, NULL, &quote, len, &err))
        fail_msg("%s", err.msg);
    return quote;
}

static void test_sim_v5_body_types(void **state)
{
    const sim_pki *pki = *state;
    X509_STORE *sim_root = store_with(pki->root);
    X509_STORE *intel = store_from_pem("intel-sgx-root-ca.pem");
    uint8_t zero[48] = {0};

    for (uint16_t type = 2; type <= 3; type++) {
        size_t len, body_size = type == 3 ? 648 : 584;
        uint8_t *quote = sim_v5_quote(pki, type, &len);
        tdx_quote q;
        kg_err err;

        kg_err_clear(&err);
        if (!tdx_quote_parse(quote, len, &q, &err))
            fail_msg("type %u: %s", type, err.msg);
        assert_int_equal(q.version, 5);
        assert_int_equal(q.body_type, type);
        assert_int_equal(q.body_size, body_size);
        assert_int_equal(q.body_offset, 54);
        assert_int_equal(q.signed_len, 54 + body_size);
        assert_int_equal(q.quote_len, len);
        assert_ptr_equal(q.signature, quote + 54 + body_size + 4);
        for (int i = 0; i < 64; i++)
            assert_int_equal(q.report_data[i], 0x80 ^ i);
        assert_memory_equal(quote + 54 + 520, q.report_data, 64);
        assert_memory_equal(quote + 54 + 136, q.mrtd, 48);
        assert_int_equal(q.td_attributes, TDX_TD_ATTR_SEPT_VE_DISABLE);
        if (type == 3) {
            for (int i = 0; i < 16; i++)
                assert_int_equal(q.tee_tcb_svn2[i], 0xc0 + i);
            for (int i = 0; i < 48; i++)
                assert_int_equal(q.mrservicetd[i], 0x30 + i);
        } else { /* TD report 1.0 has neither */
            assert_memory_equal(q.tee_tcb_svn2, zero, 16);
            assert_memory_equal(q.mrservicetd, zero, 48);
        }
        if (!tdx_quote_verify(&q, quote, sim_root, 0, NULL, &err))
            fail_msg("type %u: %s", type, err.msg);
        assert_false(tdx_quote_verify(&q, quote, intel, 0, NULL, &err));
        assert_non_null(strstr(err.msg, "PCK chain does not verify"));
        free(quote);
    }
    X509_STORE_free(intel);
    X509_STORE_free(sim_root);
}

/* Sets the v5 body descriptor of a copy; parse must fail naming want. */
static void expect_descriptor_fails(const uint8_t *quote, size_t len, uint16_t type, uint32_t size,
                                    const char *want)
{
    uint8_t *buf = malloc(len);
    tdx_quote q;
    kg_err err;

    assert_non_null(buf);
    memcpy(buf, quote, len);
    put_u16(buf + 48, type);
    put_u32(buf + 50, size);
    kg_err_clear(&err);
    assert_false(tdx_quote_parse(buf, len, &q, &err));
    assert_int_equal(err.step, KG_STEP_EVIDENCE);
    if (strstr(err.msg, want) == NULL)
        fail_msg("type %u size %u: want '%s', got '%s'", type, size, want, err.msg);
    free(buf);
}

static void test_sim_v5_mutations(void **state)
{
    const sim_pki *pki = *state;
    X509_STORE *sim_root = store_with(pki->root);
    size_t len2, len3;
    uint8_t *q2 = sim_v5_quote(pki, 2, &len2), *q3 = sim_v5_quote(pki, 3, &len3);

    /* wrong body size for the type, and unknown body types */
    expect_descriptor_fails(q3, len3, 3, 584, "v5 body size 584 is not 648 for body type 3");
    expect_descriptor_fails(q2, len2, 2, 648, "v5 body size 648 is not 584 for body type 2");
    expect_descriptor_fails(q3, len3, 3, 0xffffffffu, "v5 body size 4294967295 is not 648");
    expect_descriptor_fails(q3, len3, 3, 0, "v5 body size 0 is not 648");
    expect_descriptor_fails(q2, len2, 1, 384, "v5 body type 1 is not a TD report"); /* SGX enclave */
    expect_descriptor_fails(q3, len3, 4, 648, "v5 body type 4 is not a TD report");
    expect_descriptor_fails(q3, len3, 0, 648, "v5 body type 0 is not a TD report");
    expect_descriptor_fails(q3, len3, 0xffff, 648, "v5 body type 65535 is not a TD report");
    /* a TD report 1.5 relabelled 1.0 (or back): never parses and verifies */
    for (int which = 0; which < 2; which++) {
        uint8_t *buf = malloc(which ? len2 : len3);
        size_t len = which ? len2 : len3;
        tdx_quote q;
        kg_err err;

        assert_non_null(buf);
        memcpy(buf, which ? q2 : q3, len);
        put_u16(buf + 48, which ? 3 : 2);
        put_u32(buf + 50, which ? 648 : 584);
        assert_false(tdx_quote_parse(buf, len, &q, &err) &&
                     tdx_quote_verify(&q, buf, sim_root, 0, NULL, &err));
        /* the version alone changed to 4: the same bytes read as a v4 quote do not verify either */
        memcpy(buf, which ? q2 : q3, len);
        put_u16(buf, 4);
        assert_false(tdx_quote_parse(buf, len, &q, &err) &&
                     tdx_quote_verify(&q, buf, sim_root, 0, NULL, &err));
        free(buf);
    }
    /* truncated at every length: exact-size copies, never parses, never reads past the end */
    for (size_t cut = 0; cut < len2; cut++) {
        uint8_t *copy = malloc(cut == 0 ? 1 : cut);
        tdx_quote q;
        kg_err err;

        assert_non_null(copy);
        memcpy(copy, q2, cut);
        kg_err_clear(&err);
        if (tdx_quote_parse(copy, cut, &q, &err))
            fail_msg("type 2 truncated at %zu parsed", cut);
        assert_non_null(strstr(err.msg, "evidence: quote"));
        free(copy);
    }
    free(q2);
    free(q3);
    X509_STORE_free(sim_root);
}

/* v5's signature covers header + body descriptor + body; every other choice of bytes must fail. */
static void test_sim_v5_signature_over_wrong_bytes(void **state)
{
    const sim_pki *pki = *state;
    X509_STORE *sim_root = store_with(pki->root);

    for (uint16_t type = 2; type <= 3; type++) {
        size_t len, body = type == 3 ? 648 : 584;
        uint8_t *buf = sim_v5_quote(pki, type, &len), *msg = malloc(48 + body);
        struct {
            size_t from, n; /* a span of the quote; from == SIZE_MAX: header ‖ body without descriptor */
            int ok;
        } cases[] = {
            {0, 54 + body, 1},        /* right: header + descriptor + body (control) */
            {SIZE_MAX, 0, 0},         /* the v4 rule applied to v5: descriptor left out */
            {0, 632, 0},              /* the v4 length */
            {54, body, 0},            /* body only */
            {0, 54 + 584, type == 2}, /* type 3: the TD report 1.0 part only, not SVN2/MRSERVICETD */
        };
        tdx_quote q;
        kg_err err;

        assert_non_null(msg);
        assert_true(tdx_quote_parse(buf, len, &q, &err));
        for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
            if (cases[c].from == SIZE_MAX) {
                memcpy(msg, buf, 48);
                memcpy(msg + 48, buf + 54, body);
                resign(pki, buf, &q, msg, 48 + body);
            } else {
                resign(pki, buf, &q, buf + cases[c].from, cases[c].n);
            }
            kg_err_clear(&err);
            assert_true(tdx_quote_parse(buf, len, &q, &err));
            if (tdx_quote_verify(&q, buf, sim_root, 0, NULL, &err) != cases[c].ok)
                fail_msg("type %u case %zu: want %s, got '%s'", type, c, cases[c].ok ? "ok" : "failure",
                         err.msg);
            if (!cases[c].ok)
                assert_non_null(strstr(err.msg, "quote signature does not verify"));
        }
        free(msg);
        free(buf);
    }
    X509_STORE_free(sim_root);
}

static void test_null_and_unparsed(void **state)
{
    tdx_quote q;
    kg_err err;
    X509_STORE *store = X509_STORE_new();
    uint8_t byte = 0;

    (void)state;
    assert_false(tdx_quote_parse(NULL, 10, &q, &err));
    assert_false(tdx_quote_parse(&byte, 1, NULL, &err));
    assert_false(tdx_quote_parse(&byte, 1, &q, NULL)); /* err may be NULL */
    memset(&q, 0, sizeof(q));
    assert_false(tdx_quote_verify(&q, &byte, store, 0, NULL, &err));
    assert_int_equal(err.step, KG_STEP_INTERNAL);
    assert_false(tdx_quote_verify(&q, &byte, NULL, 0, NULL, &err));
    assert_false(tdx_quote_is_debug(NULL));
    X509_STORE_free(store);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_real_quotes),
        cmocka_unit_test(test_padding_ignored),
        cmocka_unit_test(test_verify_real_quotes_intel_root),
        cmocka_unit_test(test_verify_real_quotes_other_root),
        cmocka_unit_test(test_tamper),
        cmocka_unit_test(test_truncated_every_length),
        cmocka_unit_test(test_header_and_size_mutations),
        cmocka_unit_test(test_byte_mutations_no_crash),
        cmocka_unit_test(test_sim_v5_body_types),
        cmocka_unit_test(test_sim_v5_mutations),
        cmocka_unit_test(test_sim_v5_signature_over_wrong_bytes),
        cmocka_unit_test(test_null_and_unparsed),
    };
    return cmocka_run_group_tests(tests, setup_pki, teardown_pki);
}
