/* SPDX-License-Identifier: Apache-2.0 */
/* JWE decryption (kg_jwe): round trips against a test-side encryptor written straight from RFC
 * 7516/7518 (Concat KDF as a plain SHA-256 over counter ‖ Z ‖ OtherInfo, so that the library's
 * use of OpenSSL's SSKDF is checked against the JWA definition), the RFC 7638 thumbprint
 * example, and every refusal: tampered tag/ciphertext/header, wrong epk, wrong kid, alg/enc
 * not allowed, malformed members. The Python stand-in's own JWE (python-cryptography, jwcrypto)
 * is decrypted by this code in tests/integration/test_trustee.py. */
#include "kg_test.h"

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <stdlib.h>
#include <string.h>

#include "kg_b64.h"
#include "kg_jwe.h"

static EVP_PKEY *ec256, *ec521, *rsa3072, *other256;

static int setup(void **state)
{
    ec256 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    ec521 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-521");
    other256 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    rsa3072 = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)3072);
    return ec256 == NULL || ec521 == NULL || other256 == NULL || rsa3072 == NULL;
}

static int teardown(void **state)
{
    EVP_PKEY_free(ec256);
    EVP_PKEY_free(ec521);
    EVP_PKEY_free(other256);
    EVP_PKEY_free(rsa3072);
    return 0;
}

enum { T_TAG = 1, T_CIPHERTEXT = 2, T_PROTECTED = 4, T_WRONG_EPK = 8, T_EPK_OFF_CURVE = 16 };

typedef struct jwe_opts {
    const char *alg; /* default from the key */
    const char *enc; /* default A256GCM */
    const char *kid;
    const char *apu_b64, *apv_b64;
    const char *aad_b64;
    const char *extra_header_member; /* adds "<name>": "x" */
    int tamper;
} jwe_opts;

static void be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8), p[3] = (uint8_t)v;
}

/* JWA §4.6.2 Concat KDF written out: SHA-256(00000001 ‖ Z ‖ AlgorithmID ‖ PartyUInfo ‖
 * PartyVInfo ‖ SuppPubInfo) for a 256-bit key. */
static void concat_kdf(const uint8_t *z, size_t zlen, const uint8_t *apu, size_t apu_len, const uint8_t *apv,
                       size_t apv_len, uint8_t kek[32])
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    uint8_t n[4];
    unsigned int len;
    assert_int_equal(EVP_DigestInit_ex(md, EVP_sha256(), NULL), 1);
    be32(n, 1);
    EVP_DigestUpdate(md, n, 4);
    EVP_DigestUpdate(md, z, zlen);
    be32(n, 14);
    EVP_DigestUpdate(md, n, 4);
    EVP_DigestUpdate(md, "ECDH-ES+A256KW", 14);
    be32(n, (uint32_t)apu_len);
    EVP_DigestUpdate(md, n, 4);
    EVP_DigestUpdate(md, apu, apu_len);
    be32(n, (uint32_t)apv_len);
    EVP_DigestUpdate(md, n, 4);
    EVP_DigestUpdate(md, apv, apv_len);
    be32(n, 256);
    EVP_DigestUpdate(md, n, 4);
    EVP_DigestFinal_ex(md, kek, &len);
    EVP_MD_CTX_free(md);
}

static void set_b64url(cJSON *obj, const char *name, const uint8_t *p, size_t len)
{
    char *s = kg_b64url_encode(p, len);
    cJSON_AddStringToObject(obj, name, s);
    free(s);
}

static size_t decode_opt(const char *b64, uint8_t **out)
{
    size_t len = 0;
    *out = NULL;
    if (b64 != NULL)
        assert_int_equal(kg_b64url_decode(b64, strlen(b64), out, &len), 1);
    return len;
}

/* A flattened JWE of pt for recipient. Caller frees. */
static char *make_jwe(EVP_PKEY *recipient, const uint8_t *pt, size_t pt_len, const jwe_opts *o)
{
    int ec = EVP_PKEY_is_a(recipient, "EC");
    cJSON *hdr = cJSON_CreateObject(), *jwe = cJSON_CreateObject();
    uint8_t cek[32], iv[12], tag[16], ek[1024], *ct = malloc(pt_len + 1);
    size_t ek_len = sizeof(ek);
    char *hdr_text, *prot, *out;
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    int outl, finl;

    RAND_bytes(cek, sizeof(cek));
    RAND_bytes(iv, sizeof(iv));
    cJSON_AddStringToObject(hdr, "alg", o->alg ? o->alg : ec ? "ECDH-ES+A256KW" : "RSA-OAEP-256");
    cJSON_AddStringToObject(hdr, "enc", o->enc ? o->enc : "A256GCM");
    if (ec) {
        char group[32];
        EVP_PKEY *eph, *epk_shown;
        EVP_PKEY_CTX *dctx;
        uint8_t z[66], kek[32], *apu, *apv;
        size_t zlen = sizeof(z), apu_len = decode_opt(o->apu_b64, &apu),
               apv_len = decode_opt(o->apv_b64, &apv);
        cJSON *epk;
        kg_err e;

        EVP_PKEY_get_utf8_string_param(recipient, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group), NULL);
        eph = EVP_PKEY_Q_keygen(NULL, NULL, "EC", group);
        dctx = EVP_PKEY_CTX_new(eph, NULL);
        assert_int_equal(EVP_PKEY_derive_init(dctx), 1);
        assert_int_equal(EVP_PKEY_derive_set_peer(dctx, recipient), 1);
        assert_int_equal(EVP_PKEY_derive(dctx, z, &zlen), 1);
        EVP_PKEY_CTX_free(dctx);
        concat_kdf(z, zlen, apu, apu_len, apv, apv_len, kek);
        /* AES-256 key wrap of the CEK */
        {
            EVP_CIPHER_CTX *kw = EVP_CIPHER_CTX_new();
            int l1, l2;
            EVP_CIPHER_CTX_set_flags(kw, EVP_CIPHER_CTX_FLAG_WRAP_ALLOW);
            assert_int_equal(EVP_EncryptInit_ex(kw, EVP_aes_256_wrap(), NULL, kek, NULL), 1);
            assert_int_equal(EVP_EncryptUpdate(kw, ek, &l1, cek, 32), 1);
            assert_int_equal(EVP_EncryptFinal_ex(kw, ek + l1, &l2), 1);
            ek_len = (size_t)(l1 + l2);
            EVP_CIPHER_CTX_free(kw);
        }
        epk_shown = (o->tamper & T_WRONG_EPK) ? EVP_PKEY_Q_keygen(NULL, NULL, "EC", group) : eph;
        epk = kg_jwe_public_jwk(epk_shown, KG_STEP_UNWRAP, &e);
        assert_non_null(epk);
        cJSON_DeleteItemFromObjectCaseSensitive(epk, "alg");
        if (o->tamper & T_EPK_OFF_CURVE) {
            const char *y = cJSON_GetObjectItem(epk, "y")->valuestring;
            char *bad = strdup(y);
            bad[5] = bad[5] == 'A' ? 'B' : 'A';
            cJSON_ReplaceItemInObject(epk, "y", cJSON_CreateString(bad));
            free(bad);
        }
        cJSON_AddItemToObject(hdr, "epk", epk);
        if (o->apu_b64)
            cJSON_AddStringToObject(hdr, "apu", o->apu_b64);
        if (o->apv_b64)
            cJSON_AddStringToObject(hdr, "apv", o->apv_b64);
        if (epk_shown != eph)
            EVP_PKEY_free(epk_shown);
        EVP_PKEY_free(eph);
        free(apu);
        free(apv);
    } else {
        EVP_PKEY_CTX *pctx = EVP_PKEY_CTX_new(recipient, NULL);
        assert_int_equal(EVP_PKEY_encrypt_init(pctx), 1);
        EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_OAEP_PADDING);
        EVP_PKEY_CTX_set_rsa_oaep_md(pctx, EVP_sha256());
        EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, EVP_sha256());
        assert_int_equal(EVP_PKEY_encrypt(pctx, ek, &ek_len, cek, 32), 1);
        EVP_PKEY_CTX_free(pctx);
    }
    if (o->kid)
        cJSON_AddStringToObject(hdr, "kid", o->kid);
    if (o->extra_header_member)
        cJSON_AddStringToObject(hdr, o->extra_header_member, "x");
    hdr_text = cJSON_PrintUnformatted(hdr);
    prot = kg_b64url_encode((const uint8_t *)hdr_text, strlen(hdr_text));
    assert_int_equal(EVP_EncryptInit_ex(c, EVP_aes_256_gcm(), NULL, cek, iv), 1);
    assert_int_equal(EVP_EncryptUpdate(c, NULL, &outl, (const uint8_t *)prot, (int)strlen(prot)), 1);
    if (o->aad_b64) {
        EVP_EncryptUpdate(c, NULL, &outl, (const uint8_t *)".", 1);
        EVP_EncryptUpdate(c, NULL, &outl, (const uint8_t *)o->aad_b64, (int)strlen(o->aad_b64));
    }
    assert_int_equal(EVP_EncryptUpdate(c, ct, &outl, pt, (int)pt_len), 1);
    assert_int_equal(EVP_EncryptFinal_ex(c, ct + outl, &finl), 1);
    EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, 16, tag);
    EVP_CIPHER_CTX_free(c);
    if (o->tamper & T_TAG)
        tag[15] ^= 1;
    if ((o->tamper & T_CIPHERTEXT) && pt_len > 0)
        ct[0] ^= 0x80;
    if (o->tamper & T_PROTECTED) {
        /* the same header, re-encoded with a space: semantically equal, but not the AAD */
        char *spaced = malloc(strlen(hdr_text) + 2);
        spaced[0] = ' ';
        strcpy(spaced + 1, hdr_text);
        free(prot);
        prot = kg_b64url_encode((const uint8_t *)spaced, strlen(spaced));
        free(spaced);
    }
    cJSON_AddStringToObject(jwe, "protected", prot);
    set_b64url(jwe, "encrypted_key", ek, ek_len);
    set_b64url(jwe, "iv", iv, sizeof(iv));
    set_b64url(jwe, "ciphertext", ct, pt_len);
    set_b64url(jwe, "tag", tag, sizeof(tag));
    if (o->aad_b64)
        cJSON_AddStringToObject(jwe, "aad", o->aad_b64);
    out = cJSON_PrintUnformatted(jwe);
    cJSON_Delete(jwe);
    cJSON_Delete(hdr);
    free(hdr_text);
    free(prot);
    free(ct);
    return out;
}

static const char PT[] = "-----BEGIN PRIVATE KEY-----\nnot really a key, just resource bytes\n"
                         "-----END PRIVATE KEY-----\n";

static void expect_ok(EVP_PKEY *key, const jwe_opts *o)
{
    char *jwe = make_jwe(key, (const uint8_t *)PT, strlen(PT), o);
    uint8_t *plain = NULL;
    size_t len = 0;
    kg_err e;
    if (!kg_jwe_decrypt(jwe, strlen(jwe), key, KG_STEP_UNWRAP, &plain, &len, &e))
        fail_msg("decrypt failed: %s", e.msg);
    assert_int_equal(len, strlen(PT));
    assert_memory_equal(plain, PT, len);
    assert_int_equal(plain[len], 0);
    OPENSSL_secure_clear_free(plain, len + 1);
    free(jwe);
}

static void expect_fail_text(EVP_PKEY *key, const char *jwe, const char *needle)
{
    uint8_t *plain = (uint8_t *)"x";
    size_t len = 9;
    kg_err e;
    kg_err_clear(&e);
    assert_int_equal(kg_jwe_decrypt(jwe, strlen(jwe), key, KG_STEP_UNWRAP, &plain, &len, &e), 0);
    assert_null(plain);
    assert_int_equal(len, 0);
    assert_int_equal(e.step, KG_STEP_UNWRAP);
    if (strstr(e.msg, needle) == NULL)
        fail_msg("'%s' does not contain '%s'", e.msg, needle);
}

static void expect_fail(EVP_PKEY *key, const jwe_opts *o, const char *needle)
{
    char *jwe = make_jwe(key, (const uint8_t *)PT, strlen(PT), o);
    expect_fail_text(key, jwe, needle);
    free(jwe);
}

static void test_round_trips(void **state)
{
    jwe_opts o = {0};
    expect_ok(ec256, &o);
    expect_ok(ec521, &o);
    expect_ok(rsa3072, &o);
    o.apu_b64 = "QWxpY2U"; /* "Alice", "Bob" as in RFC 7518 Appendix C */
    o.apv_b64 = "Qm9i";
    o.aad_b64 = "c29tZSBhYWQ";
    expect_ok(ec256, &o);
    /* an empty resource decrypts to zero bytes */
    {
        jwe_opts z = {0};
        char *jwe = make_jwe(ec256, (const uint8_t *)"", 0, &z);
        uint8_t *plain;
        size_t len;
        kg_err e;
        assert_int_equal(kg_jwe_decrypt(jwe, strlen(jwe), ec256, KG_STEP_UNWRAP, &plain, &len, &e), 1);
        assert_int_equal(len, 0);
        OPENSSL_secure_clear_free(plain, 1);
        free(jwe);
    }
}

static void test_kid(void **state)
{
    char tp[64];
    jwe_opts o = {0};
    kg_err e;
    assert_int_equal(kg_jwe_thumbprint(ec256, tp, sizeof(tp), &e), 1);
    o.kid = tp;
    expect_ok(ec256, &o);
    o.kid = "some-other-key";
    expect_fail(ec256, &o, "JWE kid 'some-other-key' is not our TEE key");
    assert_int_equal(kg_jwe_thumbprint(other256, tp, sizeof(tp), &e), 1);
    o.kid = tp; /* the thumbprint of a different key */
    expect_fail(ec256, &o, "is not our TEE key");
}

/* RFC 7638 §3.1 example */
static void test_rfc7638_thumbprint(void **state)
{
    static const char n_b64[] = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxu"
                                "hDR1L6tSoc_BJECPebWKRXjBZCiFV4n3o"
                                "knjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_"
                                "FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZ"
                                "Hzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-"
                                "bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kE"
                                "gU8awapJzKnqDKgw";
    uint8_t *n;
    size_t nlen;
    BIGNUM *bn_n, *bn_e = BN_new();
    OSSL_PARAM params[3];
    uint8_t n_le[512];
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL);
    EVP_PKEY *pub = NULL;
    char tp[64];
    kg_err e;
    unsigned char e_le[4] = {1, 0, 1, 0};

    assert_int_equal(kg_b64url_decode(n_b64, strlen(n_b64), &n, &nlen), 1);
    bn_n = BN_bin2bn(n, (int)nlen, NULL);
    BN_set_word(bn_e, 65537);
    BN_bn2nativepad(bn_n, n_le, (int)nlen);
    params[0] = OSSL_PARAM_construct_BN(OSSL_PKEY_PARAM_RSA_N, n_le, nlen);
    params[1] = OSSL_PARAM_construct_BN(OSSL_PKEY_PARAM_RSA_E, e_le, 3);
    params[2] = OSSL_PARAM_construct_end();
    BN_bn2nativepad(bn_e, e_le, 3);
    assert_int_equal(EVP_PKEY_fromdata_init(ctx), 1);
    assert_int_equal(EVP_PKEY_fromdata(ctx, &pub, EVP_PKEY_PUBLIC_KEY, params), 1);
    assert_int_equal(kg_jwe_thumbprint(pub, tp, sizeof(tp), &e), 1);
    assert_string_equal(tp, "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
    EVP_PKEY_free(pub);
    EVP_PKEY_CTX_free(ctx);
    BN_free(bn_n);
    BN_free(bn_e);
    free(n);
}

static void test_public_jwk_members(void **state)
{
    kg_err e;
    cJSON *j = kg_jwe_public_jwk(ec256, KG_STEP_WRAPKEY, &e), *item;
    const char *ec_names[] = {"kty", "crv", "alg", "x", "y"}, *rsa_names[] = {"kty", "alg", "n", "e"};
    int i = 0;
    uint8_t *x;
    size_t xl;
    cJSON_ArrayForEach(item, j) assert_string_equal(item->string, ec_names[i++]);
    assert_int_equal(i, 5);
    assert_string_equal(cJSON_GetObjectItem(j, "alg")->valuestring, "ECDH-ES+A256KW");
    assert_string_equal(cJSON_GetObjectItem(j, "crv")->valuestring, "P-256");
    assert_int_equal(kg_b64url_decode(cJSON_GetObjectItem(j, "x")->valuestring,
                                      strlen(cJSON_GetObjectItem(j, "x")->valuestring), &x, &xl),
                     1);
    assert_int_equal(xl, 32);
    free(x);
    cJSON_Delete(j);
    j = kg_jwe_public_jwk(ec521, KG_STEP_WRAPKEY, &e);
    assert_string_equal(cJSON_GetObjectItem(j, "crv")->valuestring, "P-521");
    assert_int_equal(strlen(cJSON_GetObjectItem(j, "y")->valuestring), 88); /* 66 bytes */
    cJSON_Delete(j);
    j = kg_jwe_public_jwk(rsa3072, KG_STEP_WRAPKEY, &e);
    i = 0;
    cJSON_ArrayForEach(item, j) assert_string_equal(item->string, rsa_names[i++]);
    assert_string_equal(cJSON_GetObjectItem(j, "e")->valuestring, "AQAB");
    assert_string_equal(cJSON_GetObjectItem(j, "alg")->valuestring, "RSA-OAEP-256");
    cJSON_Delete(j);
    /* P-384 is not a Trustee TEE key curve */
    {
        EVP_PKEY *p384 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
        assert_null(kg_jwe_public_jwk(p384, KG_STEP_WRAPKEY, &e));
        assert_int_equal(e.step, KG_STEP_WRAPKEY);
        EVP_PKEY_free(p384);
    }
}

static void test_tampering(void **state)
{
    jwe_opts o = {0};
    o.tamper = T_TAG;
    expect_fail(ec256, &o, "A256GCM authentication");
    expect_fail(rsa3072, &o, "A256GCM authentication");
    o.tamper = T_CIPHERTEXT;
    expect_fail(ec256, &o, "A256GCM authentication");
    o.tamper = T_PROTECTED;
    expect_fail(rsa3072, &o, "A256GCM authentication");
    o.tamper = T_WRONG_EPK;
    expect_fail(ec256, &o, "AES-256-KW integrity check");
    o.tamper = T_EPK_OFF_CURVE;
    expect_fail(ec256, &o, "is not a point on P-256");
    o.tamper = 0;
    o.aad_b64 = "YWFk";
    {
        /* an aad member that was not part of the encryption */
        char *jwe = make_jwe(ec256, (const uint8_t *)PT, strlen(PT), &(jwe_opts){0}), *p = strrchr(jwe, '}');
        char *with = malloc(strlen(jwe) + 32);
        *p = '\0';
        sprintf(with, "%s,\"aad\":\"YWFk\"}", jwe);
        expect_fail_text(ec256, with, "A256GCM authentication");
        free(with);
        free(jwe);
    }
}

static void test_wrong_key_or_alg(void **state)
{
    jwe_opts o = {0};
    char *jwe = make_jwe(other256, (const uint8_t *)PT, strlen(PT), &o);
    expect_fail_text(ec256, jwe, "AES-256-KW integrity check"); /* made for someone else */
    expect_fail_text(ec521, jwe, "not an EC key on P-521");
    expect_fail_text(rsa3072, jwe, "alg 'ECDH-ES+A256KW' does not fit our RSA TEE key");
    free(jwe);
    jwe = make_jwe(rsa3072, (const uint8_t *)PT, strlen(PT), &o);
    expect_fail_text(ec256, jwe, "alg 'RSA-OAEP-256' does not fit our EC TEE key");
    free(jwe);
    o.alg = "RSA1_5"; /* deprecated in Trustee; never accepted here */
    expect_fail(rsa3072, &o, "alg 'RSA1_5' does not fit");
    o.alg = "dir";
    expect_fail(ec256, &o, "alg 'dir' does not fit");
    o.alg = NULL;
    o.enc = "A128GCM";
    expect_fail(ec256, &o, "enc 'A128GCM' is not A256GCM");
    o.enc = NULL;
    o.extra_header_member = "crit";
    expect_fail(ec256, &o, "crit or zip");
    o.extra_header_member = "zip";
    expect_fail(ec256, &o, "crit or zip");
}

static void test_malformed(void **state)
{
    static const struct {
        const char *jwe, *needle;
    } v[] = {
        {"", "not a JSON object"},
        {"[]", "not a JSON object"},
        {"{\"protected\":\"e30\"}", "JWE encrypted_key is missing"},
        {"{\"protected\":\"e30\",\"protected\":\"e30\"}", "member twice"},
        {"{\"protected\":\"!!\",\"encrypted_key\":\"\",\"iv\":\"\",\"ciphertext\":\"\",\"tag\":\"\"}",
         "protected header is not base64url"},
        {"{\"protected\":\"bm90IGpzb24\",\"encrypted_key\":\"\",\"iv\":\"\",\"ciphertext\":\"\",\"tag\":"
         "\"\"}",
         "protected header is not a JSON object"},
        /* {"alg":"x","alg":"y"} */
        {"{\"protected\":\"eyJhbGciOiJ4IiwiYWxnIjoieSJ9\",\"encrypted_key\":\"\",\"iv\":\"\",\"ciphertext\":"
         "\"\","
         "\"tag\":\"\"}",
         "protected header has a member twice"},
        {"{\"protected\":\"e30\",\"header\":{\"alg\":\"RSA-OAEP-256\"},\"encrypted_key\":\"\",\"iv\":\"\","
         "\"ciphertext\":\"\",\"tag\":\"\"}",
         "'header' is not accepted"},
        {"{\"protected\":\"e30\",\"recipients\":[],\"iv\":\"\",\"ciphertext\":\"\",\"tag\":\"\"}",
         "'recipients' is not accepted"},
        {"{\"protected\":\"e30\",\"encrypted_key\":\"AA==\",\"iv\":\"\",\"ciphertext\":\"\",\"tag\":\"\"}",
         "encrypted_key is not base64url"},
        {"{\"protected\":\"e30\",\"encrypted_key\":\"\",\"iv\":\"\",\"ciphertext\":\"\",\"tag\":7}",
         "JWE tag is not base64url"},
        /* {"alg":"ECDH-ES+A256KW","enc":"A256GCM"} without epk */
        {"{\"protected\":\"eyJhbGciOiJFQ0RILUVTK0EyNTZLVyIsImVuYyI6IkEyNTZHQ00ifQ\",\"encrypted_key\":\"\","
         "\"iv\":\"\",\"ciphertext\":\"\",\"tag\":\"\"}",
         "no epk object"},
    };
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++)
        expect_fail_text(ec256, v[i].jwe, v[i].needle);
    /* many members: refused before any quadratic work */
    {
        cJSON *j = cJSON_CreateObject();
        char name[16], *text;
        for (int i = 0; i < 40; i++) {
            snprintf(name, sizeof(name), "m%d", i);
            cJSON_AddStringToObject(j, name, "");
        }
        text = cJSON_PrintUnformatted(j);
        expect_fail_text(ec256, text, "more than 32 members");
        free(text);
        cJSON_Delete(j);
    }
    /* wrong iv/tag sizes in an otherwise valid JWE */
    {
        char *jwe = make_jwe(rsa3072, (const uint8_t *)PT, strlen(PT), &(jwe_opts){0});
        cJSON *j = cJSON_Parse(jwe);
        char *text;
        cJSON_ReplaceItemInObject(j, "iv", cJSON_CreateString("AAAAAAAAAAAAAAAA")); /* 12 bytes: fine */
        cJSON_ReplaceItemInObject(j, "tag", cJSON_CreateString("AAAA"));
        text = cJSON_PrintUnformatted(j);
        expect_fail_text(rsa3072, text, "iv/tag are 12/3 bytes");
        free(text);
        cJSON_Delete(j);
        free(jwe);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trips),        cmocka_unit_test(test_kid),
        cmocka_unit_test(test_rfc7638_thumbprint), cmocka_unit_test(test_public_jwk_members),
        cmocka_unit_test(test_tampering),          cmocka_unit_test(test_wrong_key_or_alg),
        cmocka_unit_test(test_malformed),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
