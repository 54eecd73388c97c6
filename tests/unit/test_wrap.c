#include "kg_test.h"

#include <openssl/core_names.h>
#include <openssl/evp.h>
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(user_data_layout),
        cmocka_unit_test(unwraps_each_key_type),
        cmocka_unit_test(refuses_corrupt_wraps),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
