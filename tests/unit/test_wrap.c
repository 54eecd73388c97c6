/* SPDX-License-Identifier: Apache-2.0 */
#include "kg_test.h"

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <stdlib.h>
#include <string.h>

#include "kg_libctx.h"
#include "kg_wrap.h"

static EVP_PKEY *wrapping;

static int setup(void **state)
{
    kg_err e;
    wrapping = kg_wrap_key_new(&e);
    return wrapping == NULL;
}

static int teardown(void **state)
{
    EVP_PKEY_free(wrapping);
    return 0;
}

/* What the Intel KBS sends: RSA-OAEP-SHA256(swk) and LE32 header ‖ IV ‖ AES-256-GCM(pt) ‖ tag. */
static void kbs_wrap(const uint8_t *pt, size_t pt_len, size_t swk_len, uint8_t **wk, size_t *wk_len,
                     uint8_t **ws, size_t *ws_len)
{
    uint8_t swk[64], iv[12];
    EVP_PKEY_CTX *pctx = EVP_PKEY_CTX_new_from_pkey(NULL, wrapping, NULL);
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    int outl, finl;

    RAND_bytes(swk, sizeof(swk));
    RAND_bytes(iv, sizeof(iv));
    *ws_len = (size_t)EVP_PKEY_get_size(wrapping);
    *ws = malloc(*ws_len);
    assert_true(EVP_PKEY_encrypt_init(pctx) > 0);
    assert_true(EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_OAEP_PADDING) > 0);
    assert_true(EVP_PKEY_CTX_set_rsa_oaep_md_name(pctx, "SHA256", NULL) > 0);
    assert_true(EVP_PKEY_CTX_set_rsa_mgf1_md_name(pctx, "SHA256", NULL) > 0);
    assert_true(EVP_PKEY_encrypt(pctx, *ws, ws_len, swk, swk_len) > 0);
    EVP_PKEY_CTX_free(pctx);

    *wk_len = 12 + 12 + pt_len + 16;
    *wk = malloc(*wk_len);
    uint32_t hdr[3] = {12, 16, (uint32_t)(pt_len + 16)}; /* x86: little-endian */
    memcpy(*wk, hdr, 12);
    memcpy(*wk + 12, iv, 12);
    assert_true(EVP_EncryptInit_ex(c, EVP_aes_256_gcm(), NULL, swk, iv));
    assert_true(EVP_EncryptUpdate(c, *wk + 24, &outl, pt, (int)pt_len));
    assert_true(EVP_EncryptFinal_ex(c, *wk + 24 + outl, &finl));
    assert_true(EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, 16, *wk + 24 + pt_len));
    EVP_CIPHER_CTX_free(c);
}

static uint8_t *pkcs8(EVP_PKEY *k, size_t *len)
{
    uint8_t *der = NULL;
    PKCS8_PRIV_KEY_INFO *p8 = EVP_PKEY2PKCS8(k);
    int n = i2d_PKCS8_PRIV_KEY_INFO(p8, &der);
    PKCS8_PRIV_KEY_INFO_free(p8);
    assert_true(n > 0);
    *len = (size_t)n;
    return der;
}

static void user_data_layout(void **state)
{
    uint8_t *blob;
    size_t len;
    kg_err e;
    BIGNUM *n = NULL;
    uint8_t nbin[384];

    assert_int_equal(kg_wrap_user_data(wrapping, &blob, &len, &e), 1);
    assert_int_equal(len, 4 + 384);
    assert_memory_equal(blob, "\x01\x00\x01\x00", 4); /* 65537, little-endian */
    assert_true(EVP_PKEY_get_bn_param(wrapping, OSSL_PKEY_PARAM_RSA_N, &n));
    assert_int_equal(BN_bn2binpad(n, nbin, 384), 384);
    assert_memory_equal(blob + 4, nbin, 384); /* modulus big-endian */
    BN_free(n);
    free(blob);
}

static void unwraps_each_key_type(void **state)
{
    static const char *const types[][2] = {
        {"RSA", "2048"}, {"RSA", "4096"}, {"EC", "P-256"}, {"EC", "P-384"}};
    for (size_t i = 0; i < 4; i++) {
        EVP_PKEY *k = strcmp(types[i][0], "RSA") == 0
                          ? EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)atoi(types[i][1]))
                          : EVP_PKEY_Q_keygen(NULL, NULL, "EC", types[i][1]);
        EVP_PKEY *out = NULL;
        size_t pt_len, wk_len, ws_len;
        uint8_t *pt = pkcs8(k, &pt_len), *wk, *ws;
        kg_err e;
        kbs_wrap(pt, pt_len, 32, &wk, &wk_len, &ws, &ws_len);
        assert_int_equal(kg_wrap_unwrap(wrapping, wk, wk_len, ws, ws_len, &out, &e), 1);
        assert_int_equal(EVP_PKEY_eq(out, k), 1);
        EVP_PKEY_free(out);
        OPENSSL_free(pt);
        free(wk);
        free(ws);
        EVP_PKEY_free(k);
    }
}

static void expect_fail(const uint8_t *wk, size_t wk_len, const uint8_t *ws, size_t ws_len,
                        const char *needle)
{
    EVP_PKEY *out = (EVP_PKEY *)1;
    kg_err e;
    kg_err_clear(&e);
    assert_int_equal(kg_wrap_unwrap(wrapping, wk, wk_len, ws, ws_len, &out, &e), 0);
    assert_null(out);
    assert_int_equal(e.step, KG_STEP_UNWRAP);
    if (strstr(e.msg, needle) == NULL)
        fail_msg("'%s' not in '%s'", needle, e.msg);
}

static void refuses_corrupt_wraps(void **state)
{
    EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    size_t pt_len, wk_len, ws_len;
    uint8_t *pt = pkcs8(k, &pt_len), *wk, *ws;

    kbs_wrap(pt, pt_len, 32, &wk, &wk_len, &ws, &ws_len);
    wk[wk_len - 1] ^= 1; /* the GCM tag */
    expect_fail(wk, wk_len, ws, ws_len, "AES-256-GCM authentication");
    wk[wk_len - 1] ^= 1;
    wk[30] ^= 1; /* the ciphertext */
    expect_fail(wk, wk_len, ws, ws_len, "AES-256-GCM authentication");
    wk[30] ^= 1;
    ws[10] ^= 1;
    expect_fail(wk, wk_len, ws, ws_len, "wrapped_swk does not decrypt");
    ws[10] ^= 1;
    expect_fail(wk, wk_len, ws, ws_len - 1, "wrapped_swk does not decrypt");
    wk[0] = 13; /* iv_len */
    expect_fail(wk, wk_len, ws, ws_len, "wrapped_key header");
    wk[0] = 12;
    expect_fail(wk, wk_len - 1, ws, ws_len, "wrapped_key header");
    for (size_t n = 0; n < 12; n++)
        expect_fail(wk, n, ws, ws_len, "shorter than its header");
    wk[4] = 8; /* tag_len */
    expect_fail(wk, wk_len, ws, ws_len, "wrapped_key header");
    wk[4] = 16;
    free(wk);
    free(ws);
    /* a 31-byte SWK */
    kbs_wrap(pt, pt_len, 31, &wk, &wk_len, &ws, &ws_len);
    expect_fail(wk, wk_len, ws, ws_len, "32-byte key");
    free(wk);
    free(ws);
    /* plaintext that is not PKCS#8, and a key type keygate does not serve */
    kbs_wrap((const uint8_t *)"not a key at all", 16, 32, &wk, &wk_len, &ws, &ws_len);
    expect_fail(wk, wk_len, ws, ws_len, "not PKCS#8");
    free(wk);
    free(ws);
    {
        EVP_PKEY *ed = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
        size_t edl;
        uint8_t *edp = pkcs8(ed, &edl);
        kbs_wrap(edp, edl, 32, &wk, &wk_len, &ws, &ws_len);
        expect_fail(wk, wk_len, ws, ws_len, "key type");
        free(wk);
        free(ws);
        OPENSSL_free(edp);
        EVP_PKEY_free(ed);
    }
    OPENSSL_free(pt);
    EVP_PKEY_free(k);
}

/* A key built from parameters as given, without any consistency check (EVP_PKEY_fromdata). */
static EVP_PKEY *key_fromdata(const char *type, OSSL_PARAM_BLD *bld)
{
    OSSL_PARAM *params = OSSL_PARAM_BLD_to_param(bld);
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, type, NULL);
    EVP_PKEY *k = NULL;

    assert_non_null(params);
    assert_true(EVP_PKEY_fromdata_init(ctx) > 0);
    assert_true(EVP_PKEY_fromdata(ctx, &k, EVP_PKEY_KEYPAIR, params) > 0);
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    return k;
}

/* EC: a's scalar with b's public point (what parse_ec_in_place trusted). */
static EVP_PKEY *ec_mismatched(const char *curve)
{
    EVP_PKEY *a = EVP_PKEY_Q_keygen(NULL, NULL, "EC", curve), *b = EVP_PKEY_Q_keygen(NULL, NULL, "EC", curve),
             *k;
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    BIGNUM *d = NULL;
    uint8_t pub[200];
    size_t pub_len;
    char group[32];

    assert_true(EVP_PKEY_get_bn_param(a, OSSL_PKEY_PARAM_PRIV_KEY, &d));
    assert_true(EVP_PKEY_get_octet_string_param(b, OSSL_PKEY_PARAM_PUB_KEY, pub, sizeof(pub), &pub_len));
    assert_true(EVP_PKEY_get_utf8_string_param(a, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group), NULL));
    assert_true(OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, group, 0));
    assert_true(OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, pub, pub_len));
    assert_true(OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_PRIV_KEY, d));
    k = key_fromdata("EC", bld);
    BN_clear_free(d);
    EVP_PKEY_free(a);
    EVP_PKEY_free(b);
    return k;
}

/* RSA: a's n, e and d (d + 2 when bump_d) with the CRT values of a, or of b (p, q do not make n). */
static EVP_PKEY *rsa_mismatched(EVP_PKEY *a, EVP_PKEY *b, int bump_d)
{
    static const char *const names[] = {OSSL_PKEY_PARAM_RSA_N,         OSSL_PKEY_PARAM_RSA_E,
                                        OSSL_PKEY_PARAM_RSA_D,         OSSL_PKEY_PARAM_RSA_FACTOR1,
                                        OSSL_PKEY_PARAM_RSA_FACTOR2,   OSSL_PKEY_PARAM_RSA_EXPONENT1,
                                        OSSL_PKEY_PARAM_RSA_EXPONENT2, OSSL_PKEY_PARAM_RSA_COEFFICIENT1};
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    BIGNUM *bn[8] = {NULL};
    EVP_PKEY *k;

    for (int i = 0; i < 8; i++) {
        assert_true(EVP_PKEY_get_bn_param(i < 3 ? a : b, names[i], &bn[i]));
        if (i == 2 && bump_d)
            assert_true(BN_add_word(bn[i], 2));
        assert_true(OSSL_PARAM_BLD_push_BN(bld, names[i], bn[i]));
    }
    k = key_fromdata("RSA", bld);
    for (int i = 0; i < 8; i++)
        BN_clear_free(bn[i]);
    return k;
}

/* Every path that produces a released key refuses bad: the Intel KBS unwrap, and a Trustee
 * resource as DER and as PEM. */
static void expect_mismatch_refused(EVP_PKEY *bad, const char *what)
{
    const char *needle = "the released private key does not match its own public key";
    size_t pt_len, wk_len, ws_len;
    uint8_t *pt = pkcs8(bad, &pt_len), *wk, *ws;
    EVP_PKEY *out = NULL;
    BIO *b = BIO_new(BIO_s_mem());
    char *pem;
    long pem_len;
    kg_err e;

    kbs_wrap(pt, pt_len, 32, &wk, &wk_len, &ws, &ws_len);
    kg_err_clear(&e);
    if (kg_wrap_unwrap(wrapping, wk, wk_len, ws, ws_len, &out, &e) != 0)
        fail_msg("%s: KBS unwrap accepted the key", what);
    expect_fail(wk, wk_len, ws, ws_len, needle);
    if (kg_wrap_parse_resource(pt, pt_len, &out, &e) != 0)
        fail_msg("%s: Trustee DER resource accepted", what);
    assert_null(out);
    assert_int_equal(e.step, KG_STEP_UNWRAP);
    assert_non_null(strstr(e.msg, needle));
    assert_true(PEM_write_bio_PrivateKey(b, bad, NULL, NULL, 0, NULL, NULL));
    pem_len = BIO_get_mem_data(b, &pem);
    assert_int_equal(kg_wrap_parse_resource((const uint8_t *)pem, (size_t)pem_len, &out, &e), 0);
    assert_non_null(strstr(e.msg, needle));
    BIO_free(b);
    free(wk);
    free(ws);
    OPENSSL_free(pt);
}

/* A KBS answer with the right public key and another private key must not pass (issue 17,
 * finding 9): the public-half match against the expected key cannot see it. */
static void refuses_key_not_matching_its_public_half(void **state)
{
    EVP_PKEY *a = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    EVP_PKEY *b = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    EVP_PKEY *bad;

    bad = ec_mismatched("P-256");
    expect_mismatch_refused(bad, "EC P-256 with another key's publicKey");
    EVP_PKEY_free(bad);
    bad = ec_mismatched("P-384");
    expect_mismatch_refused(bad, "EC P-384 with another key's publicKey");
    EVP_PKEY_free(bad);
    bad = rsa_mismatched(a, a, 1);
    expect_mismatch_refused(bad, "RSA with a corrupted d");
    EVP_PKEY_free(bad);
    bad = rsa_mismatched(a, b, 0);
    expect_mismatch_refused(bad, "RSA with another key's p, q");
    EVP_PKEY_free(bad);
    /* the consistent key itself still passes both paths */
    bad = rsa_mismatched(a, a, 0);
    {
        size_t n;
        uint8_t *der = pkcs8(bad, &n);
        EVP_PKEY *out = NULL;
        kg_err e;
        assert_int_equal(kg_wrap_parse_resource(der, n, &out, &e), 1);
        assert_int_equal(EVP_PKEY_eq(out, a), 1);
        EVP_PKEY_free(out);
        OPENSSL_free(der);
    }
    EVP_PKEY_free(bad);
    EVP_PKEY_free(a);
    EVP_PKEY_free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(user_data_layout),
        cmocka_unit_test(unwraps_each_key_type),
        cmocka_unit_test(refuses_corrupt_wraps),
        cmocka_unit_test(refuses_key_not_matching_its_public_half),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
