/* SPDX-License-Identifier: Apache-2.0 */
/* EAR verification (kg_ear.h) on tokens signed here with OpenSSL: the algorithm fixed by the
 * pinned key (P-256 ES256, P-384 ES384), the header rules, the JWS R‖S signature form, the
 * claims (profile, iat/exp with leeway, status of every submod) and the binding. The whole
 * exchange with the Trustee stand-in is in tests/integration/test_trustee_ear.py. */
#include "kg_test.h"

#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kg_b64.h"
#include "kg_ear.h"

#define NOW 1800000000LL

static char *b64(const char *text)
{
    return kg_b64url_encode((const unsigned char *)text, strlen(text));
}

/* "<b64 header>.<b64 payload>.<b64 sig>"; raw: JWS R‖S (else the DER OpenSSL makes). */
static char *sign(EVP_PKEY *key, const char *header, const char *payload, int raw)
{
    char *h = b64(header), *p = b64(payload), *input, *sig64, *out;
    int bits = EVP_PKEY_get_bits(key);
    size_t n = (size_t)(bits + 7) / 8, der_len = 0, len;
    unsigned char der[160], rs[132] = {0};
    const unsigned char *q = der;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    ECDSA_SIG *sig;

    len = strlen(h) + strlen(p) + 2;
    input = malloc(len);
    snprintf(input, len, "%s.%s", h, p);
    der_len = sizeof(der);
    assert_int_equal(EVP_DigestSignInit(md, NULL, bits == 256 ? EVP_sha256() : EVP_sha384(), NULL, key), 1);
    assert_int_equal(EVP_DigestSign(md, der, &der_len, (unsigned char *)input, strlen(input)), 1);
    EVP_MD_CTX_free(md);
    if (raw) {
        sig = d2i_ECDSA_SIG(NULL, &q, (long)der_len);
        assert_non_null(sig);
        BN_bn2binpad(ECDSA_SIG_get0_r(sig), rs, (int)n);
        BN_bn2binpad(ECDSA_SIG_get0_s(sig), rs + n, (int)n);
        ECDSA_SIG_free(sig);
        sig64 = kg_b64url_encode(rs, 2 * n);
    } else {
        sig64 = kg_b64url_encode(der, der_len);
    }
    len = strlen(input) + strlen(sig64) + 2;
    out = malloc(len);
    snprintf(out, len, "%s.%s", input, sig64);
    free(h);
    free(p);
    free(input);
    free(sig64);
    return out;
}

/* {"kty":"EC","crv":..,"x":..,"y":..} of key. */
static char *jwk_of(EVP_PKEY *key)
{
    unsigned char pt[133];
    size_t len = 0, n;
    char *x, *y, *out = malloc(400);

    assert_int_equal(
        EVP_PKEY_get_octet_string_param(key, OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, pt, sizeof(pt), &len), 1);
    n = (len - 1) / 2;
    x = kg_b64url_encode(pt + 1, n);
    y = kg_b64url_encode(pt + 1 + n, n);
    snprintf(out, 400, "{\"alg\":\"ES%d\",\"kty\":\"EC\",\"crv\":\"P-%d\",\"x\":\"%s\",\"y\":\"%s\"}",
             n == 32 ? 256 : 384, n == 32 ? 256 : 384, x, y);
    free(x);
    free(y);
    return out;
}

static int verify(EVP_PKEY *key, const char *token, kg_err *e)
{
    cJSON *payload = NULL;
    int ok = kg_ear_verify_signature(key, token, &payload, e);
    assert_true(ok ? payload != NULL : payload == NULL);
    cJSON_Delete(payload);
    return ok;
}

static const char PAYLOAD[] =
    "{\"eat_profile\":\"tag:github.com,2024:confidential-containers/Trustee\",\"iat\":"
    "1800000000,\"exp\":1800000300}";

static void alg_follows_the_key(void **state)
{
    EVP_PKEY *p256 = EVP_EC_gen("P-256"), *p384 = EVP_EC_gen("P-384"), *other = EVP_EC_gen("P-256");
    char header[600], *jwk = jwk_of(p256), *tok;
    kg_err e;

    assert_string_equal(kg_ear_alg_of(p256), "ES256");
    assert_string_equal(kg_ear_alg_of(p384), "ES384");
    /* Trustee's header: typ, alg, the signer's jwk */
    snprintf(header, sizeof(header), "{\"typ\":\"JWT\",\"alg\":\"ES256\",\"jwk\":%s}", jwk);
    tok = sign(p256, header, PAYLOAD, 1);
    assert_int_equal(verify(p256, tok, &e), 1);
    /* pinned P-384: ES256 is not its algorithm, whatever signed it */
    assert_int_equal(verify(p384, tok, &e), 0);
    assert_string_equal(e.msg,
                        "verify: EAR token alg 'ES256' is not allowed: the pinned AS key (trustee_as_cert) "
                        "is EC P-384, so ES384 only");
    /* another P-256 key pinned: the header jwk names the signer */
    assert_int_equal(verify(other, tok, &e), 0);
    assert_non_null(strstr(e.msg, "header jwk is not the pinned AS key"));
    free(tok);
    /* the same without a jwk: the signature decides */
    tok = sign(p256, "{\"alg\":\"ES256\"}", PAYLOAD, 1);
    assert_int_equal(verify(p256, tok, &e), 1);
    assert_int_equal(verify(other, tok, &e), 0);
    assert_string_equal(e.msg, "verify: EAR token signature does not verify with the pinned AS key (ES256)");
    free(tok);
    /* ES384 with a P-384 key */
    tok = sign(p384, "{\"alg\":\"ES384\",\"typ\":\"JWT\"}", PAYLOAD, 1);
    assert_int_equal(verify(p384, tok, &e), 1);
    free(tok);
    /* a DER signature is not the JWS form */
    tok = sign(p256, "{\"alg\":\"ES256\"}", PAYLOAD, 0);
    assert_int_equal(verify(p256, tok, &e), 0);
    assert_non_null(strstr(e.msg, "bytes, not the 64 of ES256"));
    free(tok);
    free(jwk);
    EVP_PKEY_free(p256);
    EVP_PKEY_free(p384);
    EVP_PKEY_free(other);
}

static void header_rules(void **state)
{
    static const struct {
        const char *header, *want;
    } v[] = {
        {"{\"alg\":\"HS256\"}", "alg 'HS256' is not allowed"},
        {"{\"alg\":\"none\"}", "alg 'none' is not allowed"},
        {"{\"alg\":\"RS256\"}", "alg 'RS256' is not allowed"},
        {"{\"alg\":\"PS384\",\"kid\":\"k\"}", "(an ITA token? then trustee_token = ita)"},
        {"{\"typ\":\"JWT\"}", "alg '(missing)' is not allowed"},
        {"{\"alg\":\"ES256\",\"alg\":\"ES256\"}", "duplicate member 'alg'"},
        {"{\"alg\":\"ES256\",\"crit\":[\"b64\"]}", "\"crit\""},
        {"{\"alg\":\"ES256\",\"typ\":\"JOSE\"}", "typ is not \"JWT\""},
        {"{\"alg\":\"ES256\",\"jku\":\"https://as.example/jwks\"}", "header carries jku"},
        {"{\"alg\":\"ES256\",\"x5u\":\"https://as.example/c.pem\"}", "header carries x5u"},
        {"{\"alg\":\"ES256\",\"x5c\":[\"MIIB\"]}", "header carries x5c"},
        {"{\"alg\":\"ES256\",\"jwk\":{\"kty\":\"RSA\",\"n\":\"AQAB\",\"e\":\"AQAB\"}}", "header jwk is not"},
    };
    EVP_PKEY *key = EVP_EC_gen("P-256");
    kg_err e;

    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        char *tok = sign(key, v[i].header, PAYLOAD, 1);
        assert_int_equal(verify(key, tok, &e), 0);
        if (strstr(e.msg, v[i].want) == NULL)
            fail_msg("%s: %s", v[i].header, e.msg);
        assert_int_equal(e.step, KG_STEP_VERIFY);
        free(tok);
    }
    EVP_PKEY_free(key);
}

static int claims(const char *json, kg_ear_status max, kg_err *e)
{
    cJSON *p = cJSON_Parse(json);
    kg_ear_expect x = {NOW, 60, max};
    long long exp = 0;
    int ok;

    assert_non_null(p);
    ok = kg_ear_check_claims(p, &x, &exp, e);
    cJSON_Delete(p);
    return ok;
}

#define HEAD                                                                                                 \
    "{\"eat_profile\":\"tag:github.com,2023:veraison/"                                                       \
    "ear\",\"ear.verifier-id\":{\"build\":\"b\",\"developer\":\"d\"},"

static void claim_rules(void **state)
{
    static const struct {
        const char *json;
        kg_ear_status max;
        const char *want; /* NULL: accepted */
    } v[] = {
        {HEAD "\"iat\":1800000000,\"exp\":1800000300,\"submods\":{\"cpu0\":{\"ear.status\":\"affirming\"}}}",
         KG_EAR_AFFIRMING, NULL},
        /* exp + leeway is the last second */
        {HEAD "\"iat\":1799999000,\"exp\":1799999940,\"submods\":{\"cpu0\":{\"ear.status\":\"affirming\"}}}",
         KG_EAR_AFFIRMING, NULL},
        {HEAD "\"iat\":1799999000,\"exp\":1799999939,\"submods\":{\"cpu0\":{\"ear.status\":\"affirming\"}}}",
         KG_EAR_AFFIRMING, "EAR token expired at 1799999939 (now 1800000000, leeway 60 s)"},
        {HEAD "\"iat\":1800000061,\"exp\":1800000300,\"submods\":{\"cpu0\":{\"ear.status\":\"affirming\"}}}",
         KG_EAR_AFFIRMING, "issued in the future"},
        {HEAD
         "\"iat\":1800000000,\"exp\":1800000300.5,\"submods\":{\"cpu0\":{\"ear.status\":\"affirming\"}}}",
         KG_EAR_AFFIRMING, "EAR claim exp is not an integer NumericDate"},
        {HEAD
         "\"iat\":\"1800000000\",\"exp\":1800000300,\"submods\":{\"cpu0\":{\"ear.status\":\"affirming\"}}}",
         KG_EAR_AFFIRMING, "EAR claim iat is not an integer NumericDate"},
        {HEAD "\"iat\":1800000000,\"exp\":1800000300,\"submods\":{}}", KG_EAR_AFFIRMING, "has no submods"},
        /* every submod counts: a GPU's warning fails the default */
        {HEAD "\"iat\":1800000000,\"exp\":1800000300,\"submods\":{\"cpu0\":{\"ear.status\":\"affirming\"},"
              "\"gpu0\":{\"ear.status\":\"warning\"}}}",
         KG_EAR_AFFIRMING, "EAR submod 'gpu0' ear.status is warning; trustee_ear_status = affirming"},
        {HEAD "\"iat\":1800000000,\"exp\":1800000300,\"submods\":{\"cpu0\":{\"ear.status\":\"affirming\"},"
              "\"gpu0\":{\"ear.status\":\"warning\"}}}",
         KG_EAR_WARNING, NULL},
        /* "none" makes no claim: never good enough */
        {HEAD "\"iat\":1800000000,\"exp\":1800000300,\"submods\":{\"cpu0\":{\"ear.status\":\"none\"}}}",
         KG_EAR_WARNING, "ear.status is none"},
        {HEAD "\"iat\":1800000000,\"exp\":1800000300,\"submods\":{\"cpu0\":{\"ear.status\":\"AFFIRMING\"}}}",
         KG_EAR_WARNING, "ear.status 'AFFIRMING' is not an AR4SI tier"},
        {HEAD "\"iat\":1800000000,\"exp\":1800000300,\"submods\":{\"cpu0\":{\"ear.status\":2}}}",
         KG_EAR_WARNING, "has no ear.status string"},
        {"{\"eat_profile\":\"tag:example.com,2025:other\",\"iat\":1800000000,\"exp\":1800000300}",
         KG_EAR_WARNING,
         "eat_profile 'tag:example.com,2025:other' is not Trustee's or Veraison's EAR profile"},
        {"{\"eat_profile\":\"tag:github.com,2023:veraison/ear\",\"iat\":1800000000,\"exp\":1800000300,"
         "\"submods\":{\"cpu0\":{\"ear.status\":\"affirming\"}}}",
         KG_EAR_WARNING, "no ear.verifier-id"},
    };
    kg_err e;

    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        int ok = claims(v[i].json, v[i].max, &e);
        if (ok != (v[i].want == NULL) || (!ok && strstr(e.msg, v[i].want) == NULL))
            fail_msg("case %zu: %s", i, ok ? "accepted" : e.msg);
    }
}

static void binding_rules(void **state)
{
    static const char JWK[] =
        "{\"kty\":\"EC\",\"crv\":\"P-256\",\"alg\":\"ECDH-ES+A256KW\",\"x\":\"eA\",\"y\":\"eQ\"}";
    char rd_hex[129], other_hex[129], json[2048];
    uint8_t rd[64];
    cJSON *jwk = cJSON_Parse(JWK), *p;
    kg_err e;
    static const struct {
        const char *nonce, *jwk;
        int rd_ok, body_ok;
        const char *want;
    } v[] = {
        {"n0nce", JWK, 1, 1, NULL},
        {"other", JWK, 1, 1, "nonce is not the KBS challenge"},
        {"n0nce", "{\"kty\":\"EC\",\"crv\":\"P-256\",\"alg\":\"ECDH-ES+A256KW\",\"x\":\"eA\",\"y\":\"eA\"}",
         1, 1, "tee-pubkey is not our TEE key"},
        {"n0nce", JWK, 0, 1, "EAR report_data is not the REPORTDATA"},
        {"n0nce", JWK, 1, 0, "tdx.quote.body.report_data is not the REPORTDATA"},
    };

    for (int i = 0; i < 64; i++) {
        rd[i] = (uint8_t)(i * 5);
        snprintf(rd_hex + 2 * i, 3, "%02x", rd[i]);
        snprintf(other_hex + 2 * i, 3, "%02x", (uint8_t)(rd[i] ^ (i == 63)));
    }
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        snprintf(json, sizeof(json),
                 "{\"submods\":{\"cpu0\":{\"ear.veraison.annotated-evidence\":{\"report_data\":\"%s\","
                 "\"runtime_data_claims\":{\"additional-evidence\":\"\",\"nonce\":\"%s\",\"tee-pubkey\":%s},"
                 "\"tdx\":{\"quote\":{\"body\":{\"report_data\":\"%s\"}}}}}}}",
                 v[i].rd_ok ? rd_hex : other_hex, v[i].nonce, v[i].jwk, v[i].body_ok ? rd_hex : other_hex);
        p = cJSON_Parse(json);
        assert_non_null(p);
        if (kg_ear_check_binding(p, "n0nce", jwk, rd, &e) != (v[i].want == NULL) ||
            (v[i].want != NULL && strstr(e.msg, v[i].want) == NULL))
            fail_msg("case %zu: %s", i, v[i].want ? e.msg : "refused");
        cJSON_Delete(p);
    }
    cJSON_Delete(jwk);
}

static void key_files(void **state)
{
    EVP_PKEY *rsa = EVP_RSA_gen(2048), *p521 = EVP_EC_gen("P-521"), *p256 = EVP_EC_gen("P-256"), *got;
    char path[] = "/tmp/kg-ear-XXXXXX";
    int fd = mkstemp(path);
    FILE *f;
    kg_err e;

    assert_true(fd >= 0);
    close(fd);
    /* a bare SubjectPublicKeyInfo */
    f = fopen(path, "w");
    PEM_write_PUBKEY(f, p256);
    fclose(f);
    got = kg_ear_key_read(path, "trustee_as_cert", &e);
    assert_non_null(got);
    assert_int_equal(EVP_PKEY_eq(got, p256), 1);
    EVP_PKEY_free(got);
    /* RSA and P-521 are not what Trustee signs with */
    f = fopen(path, "w");
    PEM_write_PUBKEY(f, rsa);
    fclose(f);
    assert_null(kg_ear_key_read(path, "trustee_as_cert", &e));
    assert_int_equal(e.step, KG_STEP_CONFIG);
    assert_non_null(strstr(e.msg, "the key is RSA, not EC P-256 or P-384"));
    f = fopen(path, "w");
    PEM_write_PUBKEY(f, p521);
    fclose(f);
    assert_null(kg_ear_key_read(path, "trustee_as_cert", &e));
    /* a private key file is neither */
    f = fopen(path, "w");
    PEM_write_PrivateKey(f, p256, NULL, NULL, 0, NULL, NULL);
    fclose(f);
    assert_null(kg_ear_key_read(path, "trustee_as_cert", &e));
    assert_non_null(strstr(e.msg, "neither a PEM certificate nor a PEM public key"));
    unlink(path);
    assert_null(kg_ear_key_read(path, "trustee_as_cert", &e));
    assert_non_null(strstr(e.msg, "cannot open"));
    assert_int_equal(kg_ear_status_of("warning"), KG_EAR_WARNING);
    assert_int_equal(kg_ear_status_of("Warning"), 0);
    EVP_PKEY_free(rsa);
    EVP_PKEY_free(p521);
    EVP_PKEY_free(p256);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(alg_follows_the_key), cmocka_unit_test(header_rules), cmocka_unit_test(claim_rules),
        cmocka_unit_test(binding_rules),       cmocka_unit_test(key_files),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
