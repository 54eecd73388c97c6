/* SPDX-License-Identifier: Apache-2.0 */
#define _GNU_SOURCE /* memmem */
#include "kg_test.h"

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
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

/* kg_wrap_unwrap with a reference public key (only its EC curve is used by the unwrap). */
static int unwrap_ref(const uint8_t *wk, size_t wk_len, const uint8_t *ws, size_t ws_len, const EVP_PKEY *ref,
                      EVP_PKEY **out, kg_err *e)
{
    kg_err_clear(e);
    return kg_wrap_unwrap(wrapping, wk, wk_len, ws, ws_len, ref, out, e);
}

/* The key in its type's own DER: PKCS#1 RSAPrivateKey or SEC1 ECPrivateKey with [0] and [1]. */
static uint8_t *traditional(EVP_PKEY *k, size_t *len)
{
    uint8_t *der = NULL;
    int n = i2d_PrivateKey(k, &der);
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
        {"RSA", "2048"}, {"RSA", "3072"}, {"RSA", "4096"}, {"EC", "P-256"}, {"EC", "P-384"}};
    for (size_t i = 0; i < 5; i++) {
        EVP_PKEY *k = strcmp(types[i][0], "RSA") == 0
                          ? EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)atoi(types[i][1]))
                          : EVP_PKEY_Q_keygen(NULL, NULL, "EC", types[i][1]);
        EVP_PKEY *out = NULL;
        size_t pt_len, wk_len, ws_len;
        uint8_t *pt = pkcs8(k, &pt_len), *wk, *ws;
        kg_err e;
        kbs_wrap(pt, pt_len, 32, &wk, &wk_len, &ws, &ws_len);
        assert_int_equal(kg_wrap_unwrap(wrapping, wk, wk_len, ws, ws_len, NULL, &out, &e), 1);
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
    assert_int_equal(kg_wrap_unwrap(wrapping, wk, wk_len, ws, ws_len, NULL, &out, &e), 0);
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
    if (kg_wrap_unwrap(wrapping, wk, wk_len, ws, ws_len, NULL, &out, &e) != 0)
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
    /* the same key as a KMIP key manager returns it: PKCS#1 RSAPrivateKey or SEC1 ECPrivateKey */
    pt = traditional(bad, &pt_len);
    kbs_wrap(pt, pt_len, 32, &wk, &wk_len, &ws, &ws_len);
    if (unwrap_ref(wk, wk_len, ws, ws_len, NULL, &out, &e) != 0)
        fail_msg("%s: KBS unwrap accepted the key as PKCS#1/SEC1", what);
    assert_null(out);
    if (strstr(e.msg, needle) == NULL)
        fail_msg("%s as PKCS#1/SEC1: '%s' not in '%s'", what, needle, e.msg);
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

/* Appends the DER TLV tag ‖ length ‖ content (content below 64 KiB) at buf + *n. */
static void der_put(uint8_t *buf, size_t *n, uint8_t tag, const uint8_t *content, size_t len)
{
    buf[(*n)++] = tag;
    if (len >= 0x100) {
        buf[(*n)++] = 0x82;
        buf[(*n)++] = (uint8_t)(len >> 8);
    } else if (len >= 0x80) {
        buf[(*n)++] = 0x81;
    }
    buf[(*n)++] = (uint8_t)len;
    memmove(buf + *n, content, len);
    *n += len;
}

/* SEC1 ECPrivateKey of k (RFC 5915): version, the scalar padded to the order's size, then the
 * named curve [0] and the public point [1] only when asked. malloc'ed. */
static uint8_t *sec1(EVP_PKEY *k, int version, int with_params, int with_pub, size_t *len)
{
    uint8_t d[66], pub[134], bits[140], oid[16], body[320], *o = oid, v = (uint8_t)version;
    uint8_t *out = malloc(330);
    size_t dlen = (size_t)(EVP_PKEY_get_bits(k) + 7) / 8, pub_len, n = 0, bits_len = 0;
    BIGNUM *bn = NULL;
    char group[32];
    int oid_len;

    assert_non_null(out);
    assert_true(EVP_PKEY_get_bn_param(k, OSSL_PKEY_PARAM_PRIV_KEY, &bn));
    assert_int_equal(BN_bn2binpad(bn, d, (int)dlen), (int)dlen);
    BN_clear_free(bn);
    pub[0] = 0; /* the BIT STRING's unused-bits byte */
    assert_true(
        EVP_PKEY_get_octet_string_param(k, OSSL_PKEY_PARAM_PUB_KEY, pub + 1, sizeof(pub) - 1, &pub_len));
    assert_true(EVP_PKEY_get_utf8_string_param(k, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group), NULL));
    oid_len = i2d_ASN1_OBJECT(OBJ_nid2obj(OBJ_sn2nid(group)), &o);
    assert_true(oid_len > 0);
    der_put(body, &n, 0x02, &v, 1);
    der_put(body, &n, 0x04, d, dlen);
    if (with_params)
        der_put(body, &n, 0xa0, oid, (size_t)oid_len);
    if (with_pub) {
        der_put(bits, &bits_len, 0x03, pub, pub_len + 1);
        der_put(body, &n, 0xa1, bits, bits_len);
    }
    *len = 0;
    der_put(out, len, 0x30, body, n);
    OPENSSL_cleanse(d, sizeof(d));
    OPENSSL_cleanse(body, sizeof(body));
    return out;
}

/* Wraps pt as the KBS does and unwraps it with reference ref: 1 if k came back. */
static int unwraps_to(const uint8_t *pt, size_t pt_len, const EVP_PKEY *ref, EVP_PKEY *k, kg_err *e)
{
    size_t wk_len, ws_len;
    uint8_t *wk, *ws;
    EVP_PKEY *out = NULL;
    int ok;

    kbs_wrap(pt, pt_len, 32, &wk, &wk_len, &ws, &ws_len);
    ok = unwrap_ref(wk, wk_len, ws, ws_len, ref, &out, e) == 1 && EVP_PKEY_eq(out, k) == 1;
    EVP_PKEY_free(out);
    free(wk);
    free(ws);
    return ok;
}

/* Wraps pt and expects the unwrap to fail at step unwrap with needle in the message. */
static void refused(const uint8_t *pt, size_t pt_len, const EVP_PKEY *ref, const char *what,
                    const char *needle)
{
    size_t wk_len, ws_len;
    uint8_t *wk, *ws;
    EVP_PKEY *out = (EVP_PKEY *)1;
    kg_err e;

    kbs_wrap(pt, pt_len, 32, &wk, &wk_len, &ws, &ws_len);
    if (unwrap_ref(wk, wk_len, ws, ws_len, ref, &out, &e) != 0)
        fail_msg("%s: accepted", what);
    assert_null(out);
    assert_int_equal(e.step, KG_STEP_UNWRAP);
    if (strstr(e.msg, needle) == NULL)
        fail_msg("%s: '%s' not in '%s'", what, needle, e.msg);
    free(wk);
    free(ws);
}

/* A KMIP key manager hands the KBS the key material as its server stores it (intel-kbs.md §5):
 * PKCS#1 RSAPrivateKey for RSA, SEC1 ECPrivateKey for EC, with or without the optional named
 * curve [0] and public key [1]. Without [0] the curve is the reference's. */
static void unwraps_kmip_key_formats(void **state)
{
    static const char *const rsa_bits[] = {"2048", "3072"}, *const curves[] = {"P-256", "P-384"};
    kg_err e;

    for (size_t i = 0; i < 2; i++) {
        EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)atoi(rsa_bits[i]));
        size_t len;
        uint8_t *der = traditional(k, &len);
        if (!unwraps_to(der, len, NULL, k, &e))
            fail_msg("PKCS#1 RSA-%s: %s", rsa_bits[i], e.msg);
        if (!unwraps_to(der, len, k, k, &e))
            fail_msg("PKCS#1 RSA-%s with a reference: %s", rsa_bits[i], e.msg);
        OPENSSL_free(der);
        EVP_PKEY_free(k);
    }
    for (size_t i = 0; i < 2; i++) {
        EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", curves[i]);
        size_t len;
        uint8_t *der = traditional(k, &len);
        if (!unwraps_to(der, len, NULL, k, &e)) /* OpenSSL's own SEC1: [0] and [1] */
            fail_msg("SEC1 %s as i2d_PrivateKey writes it: %s", curves[i], e.msg);
        OPENSSL_free(der);
        for (int params = 0; params < 2; params++)
            for (int pub = 0; pub < 2; pub++) {
                der = sec1(k, 1, params, pub, &len);
                if (!unwraps_to(der, len, k, k, &e))
                    fail_msg("SEC1 %s params %d publicKey %d, reference given: %s", curves[i], params, pub,
                             e.msg);
                if (params && !unwraps_to(der, len, NULL, k, &e))
                    fail_msg("SEC1 %s params 1 publicKey %d, no reference: %s", curves[i], pub, e.msg);
                free(der);
            }
        EVP_PKEY_free(k);
    }
}

/* Without [0] only the reference names the curve: no reference, or one that is not EC, is a
 * clear unwrap error; a reference on another curve does not fit the scalar. */
static void sec1_without_curve_needs_the_reference(void **state)
{
    EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    EVP_PKEY *rsa = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    EVP_PKEY *p384 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
    size_t len;
    uint8_t *der;

    for (int pub = 0; pub < 2; pub++) {
        der = sec1(k, 1, 0, pub, &len);
        refused(der, len, NULL, "SEC1 without [0], no reference", "names no curve");
        refused(der, len, rsa, "SEC1 without [0], RSA reference", "names no curve");
        refused(der, len, p384, "SEC1 P-256 without [0], P-384 reference", "secp384r1");
        free(der);
    }
    EVP_PKEY_free(k);
    EVP_PKEY_free(rsa);
    EVP_PKEY_free(p384);
}

/* One byte after the DER structure is refused in every format. */
static void refuses_trailing_bytes(void **state)
{
    EVP_PKEY *keys[2] = {EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048),
                         EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256")};
    for (size_t i = 0; i < 2; i++) {
        size_t len;
        uint8_t *forms[3], *buf;
        size_t lens[3];
        forms[0] = pkcs8(keys[i], &lens[0]);
        forms[1] = traditional(keys[i], &lens[1]);
        forms[2] = i == 1 ? sec1(keys[i], 1, 0, 1, &lens[2]) : NULL;
        for (size_t f = 0; f < 3 && forms[f] != NULL; f++) {
            len = lens[f] + 1;
            buf = malloc(len);
            memcpy(buf, forms[f], lens[f]);
            buf[len - 1] = 0;
            refused(buf, len, keys[i], "trailing byte", "after its DER");
            free(buf);
        }
        OPENSSL_free(forms[0]);
        OPENSSL_free(forms[1]);
        free(forms[2]);
        EVP_PKEY_free(keys[i]);
    }
}

/* The version INTEGER is the first element of all three; der[off] is its one content byte. */
static void with_version(const uint8_t *der, size_t len, uint8_t version, const EVP_PKEY *ref,
                         const char *what)
{
    uint8_t *copy = malloc(len);
    size_t off = der[1] < 0x80 ? 4 : 4 + (der[1] & 0x7f);

    memcpy(copy, der, len);
    assert_int_equal(copy[off - 2], 0x02);
    assert_int_equal(copy[off - 1], 0x01);
    copy[off] = version;
    refused(copy, len, ref, what, "version");
    free(copy);
}

static void refuses_wrong_versions(void **state)
{
    EVP_PKEY *r = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    size_t len;
    uint8_t *der;

    der = pkcs8(r, &len);
    with_version(der, len, 2, r, "PKCS#8 RSA version 2");
    with_version(der, len, 1, r, "PKCS#8 RSA v2 without its publicKey");
    {
        /* rsaEncryption's parameters must be NULL: an (equally long) empty OCTET STRING is not */
        static const uint8_t rsa_oid_null[] = {0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7,
                                               0x0d, 0x01, 0x01, 0x01, 0x05, 0x00};
        uint8_t *at = memmem(der, len, rsa_oid_null, sizeof(rsa_oid_null));
        assert_non_null(at);
        at[11] = 0x04;
        refused(der, len, r, "PKCS#8 RSA with an OCTET STRING as parameters", "parameters");
    }
    OPENSSL_free(der);
    der = pkcs8(k, &len);
    with_version(der, len, 2, k, "PKCS#8 EC version 2");
    OPENSSL_free(der);
    der = traditional(r, &len);
    with_version(der, len, 1, r, "PKCS#1 multi-prime version without otherPrimeInfos");
    with_version(der, len, 2, r, "PKCS#1 version 2");
    OPENSSL_free(der);
    der = sec1(k, 0, 1, 1, &len);
    refused(der, len, k, "SEC1 version 0", "version");
    free(der);
    der = sec1(k, 2, 1, 1, &len);
    refused(der, len, k, "SEC1 version 2", "version");
    free(der);
    /* an RSAPublicKey { n, e } is no PKCS#1 private key: n is no version */
    der = NULL;
    len = (size_t)i2d_PublicKey(r, &der);
    refused(der, len, r, "RSAPublicKey", "version");
    OPENSSL_free(der);
    EVP_PKEY_free(r);
    EVP_PKEY_free(k);
}

/* keygate takes a multi-prime RSA key as PKCS#8 (the OpenSSL decoder does), so it takes one as
 * PKCS#1 too (version 1 with otherPrimeInfos); curves other than P-256/P-384 are refused. */
static void multi_prime_and_other_curves(void **state)
{
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL);
    EVP_PKEY *k = NULL, *p521 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-521");
    size_t len;
    uint8_t *der;
    kg_err e;

    assert_true(EVP_PKEY_keygen_init(ctx) > 0 && EVP_PKEY_CTX_set_rsa_keygen_bits(ctx, 2048) > 0 &&
                EVP_PKEY_CTX_set_rsa_keygen_primes(ctx, 3) > 0 && EVP_PKEY_keygen(ctx, &k) > 0);
    der = pkcs8(k, &len);
    if (!unwraps_to(der, len, k, k, &e))
        fail_msg("3-prime RSA as PKCS#8: %s", e.msg);
    OPENSSL_free(der);
    der = traditional(k, &len);
    if (!unwraps_to(der, len, k, k, &e))
        fail_msg("3-prime RSA as PKCS#1: %s", e.msg);
    OPENSSL_free(der);
    der = traditional(p521, &len);
    refused(der, len, p521, "SEC1 P-521", "key type");
    OPENSSL_free(der);
    EVP_PKEY_CTX_free(ctx);
    EVP_PKEY_free(k);
    EVP_PKEY_free(p521);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(user_data_layout),
        cmocka_unit_test(unwraps_each_key_type),
        cmocka_unit_test(refuses_corrupt_wraps),
        cmocka_unit_test(refuses_key_not_matching_its_public_half),
        cmocka_unit_test(unwraps_kmip_key_formats),
        cmocka_unit_test(sec1_without_curve_needs_the_reference),
        cmocka_unit_test(refuses_trailing_bytes),
        cmocka_unit_test(refuses_wrong_versions),
        cmocka_unit_test(multi_prime_and_other_curves),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
