/* SPDX-License-Identifier: Apache-2.0 */
#include "kg_ear.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kg_b64.h"
#include "kg_jws.h"
#include "kg_libctx.h"

#define DEFAULT_LEEWAY_S 60

/* Trustee's default profile (attestation-service/src/ear_token/mod.rs) and the draft's own. */
static const char *const profiles[] = {"tag:github.com,2024:confidential-containers/Trustee",
                                       "tag:github.com,2023:veraison/ear", NULL};

static const char *const status_names[] = {NULL, "affirming", "warning", "contraindicated", "none"};

kg_ear_status kg_ear_status_of(const char *name)
{
    for (int i = KG_EAR_AFFIRMING; name != NULL && i <= KG_EAR_NONE; i++)
        if (strcmp(name, status_names[i]) == 0)
            return (kg_ear_status)i;
    return 0;
}

/* Printable, bounded copy of untrusted text for messages. */
static const char *printable(char *dst, size_t size, const char *src)
{
    size_t n = 0;
    for (; src != NULL && *src != '\0' && n + 1 < size; src++)
        dst[n++] = (*src >= 0x20 && *src < 0x7f) ? *src : '?';
    dst[n] = '\0';
    return dst;
}

static int curve_bits(const EVP_PKEY *key)
{
    char group[32];
    if (key == NULL || !EVP_PKEY_is_a(key, "EC") ||
        !EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group), NULL))
        return 0;
    if (strcmp(group, "prime256v1") == 0 || strcmp(group, "P-256") == 0)
        return 256;
    if (strcmp(group, "secp384r1") == 0 || strcmp(group, "P-384") == 0)
        return 384;
    return 0;
}

const char *kg_ear_alg_of(const EVP_PKEY *key)
{
    switch (curve_bits(key)) {
    case 256: return "ES256";
    case 384: return "ES384";
    default: return NULL;
    }
}

EVP_PKEY *kg_ear_key_read(const char *path, const char *what, kg_err *err)
{
    BIO *bio = BIO_new_file(path, "r");
    X509 *cert = NULL;
    EVP_PKEY *key = NULL;

    if (bio == NULL) {
        ERR_clear_error();
        kg_err_set(err, KG_STEP_CONFIG, "%s %s: cannot open", what, path);
        return NULL;
    }
    if ((cert = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
        key = X509_get_pubkey(cert);
    } else {
        (void)BIO_reset(bio);
        key = PEM_read_bio_PUBKEY_ex(bio, NULL, NULL, NULL, kg_libctx(), NULL);
    }
    ERR_clear_error();
    X509_free(cert);
    BIO_free(bio);
    if (key == NULL) {
        kg_err_set(err, KG_STEP_CONFIG, "%s %s: neither a PEM certificate nor a PEM public key", what, path);
        return NULL;
    }
    if (kg_ear_alg_of(key) == NULL) {
        kg_err_set(err, KG_STEP_CONFIG,
                   "%s %s: the key is %s, not EC P-256 or P-384 (Trustee signs its EAR tokens with ES256 "
                   "on P-256)",
                   what, path, EVP_PKEY_get0_type_name(key) ? EVP_PKEY_get0_type_name(key) : "unknown");
        EVP_PKEY_free(key);
        return NULL;
    }
    return key;
}

/* The header jwk must be the pinned key: same curve and the same point. */
static int jwk_is_key(const cJSON *jwk, EVP_PKEY *key, int bits)
{
    const cJSON *kty = cJSON_GetObjectItemCaseSensitive(jwk, "kty");
    const cJSON *crv = cJSON_GetObjectItemCaseSensitive(jwk, "crv");
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(jwk, "x");
    const cJSON *y = cJSON_GetObjectItemCaseSensitive(jwk, "y");
    unsigned char point[1 + 2 * 48], *xb = NULL, *yb = NULL;
    size_t plen = 0, xl = 0, yl = 0, n = (size_t)bits / 8;
    int same = 0;

    if (!cJSON_IsString(kty) || strcmp(kty->valuestring, "EC") != 0 || !cJSON_IsString(crv) ||
        strcmp(crv->valuestring, bits == 256 ? "P-256" : "P-384") != 0 || !cJSON_IsString(x) ||
        !cJSON_IsString(y))
        return 0;
    if (!EVP_PKEY_get_octet_string_param(key, OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, point, sizeof(point),
                                         &plen) ||
        plen != 1 + 2 * n || point[0] != 0x04)
        goto done;
    if (!kg_b64url_decode(x->valuestring, strlen(x->valuestring), &xb, &xl) ||
        !kg_b64url_decode(y->valuestring, strlen(y->valuestring), &yb, &yl))
        goto done;
    same = xl == n && yl == n && CRYPTO_memcmp(xb, point + 1, n) == 0 &&
           CRYPTO_memcmp(yb, point + 1 + n, n) == 0;
done:
    ERR_clear_error();
    free(xb);
    free(yb);
    return same;
}

static int check_header(const cJSON *h, EVP_PKEY *key, const char *want, kg_err *err)
{
    static const char *const refused[] = {"jku", "x5u", "x5c", NULL};
    const cJSON *alg, *jwk;
    char what[40];

    if (!cJSON_IsObject(h))
        return kg_err_set(err, KG_STEP_VERIFY, "EAR token header is not a JSON object");
    alg = cJSON_GetObjectItemCaseSensitive(h, "alg");
    if (!cJSON_IsString(alg) || strcmp(alg->valuestring, want) != 0)
        return kg_err_set(err, KG_STEP_VERIFY,
                          "EAR token alg '%s' is not allowed: the pinned AS key (trustee_as_cert) is EC "
                          "P-%d, so %s only%s",
                          cJSON_IsString(alg) ? printable(what, sizeof(what), alg->valuestring)
                          : alg == NULL       ? "(missing)"
                                              : "(not a string)",
                          curve_bits(key), want,
                          cJSON_IsString(alg) && strcmp(alg->valuestring, "PS384") == 0
                              ? " (an ITA token? then trustee_token = ita)"
                              : "");
    if (!kg_jws_header_rules(h, "EAR token", err))
        return 0;
    for (const char *const *r = refused; *r != NULL; r++)
        if (cJSON_GetObjectItemCaseSensitive(h, *r) != NULL)
            return kg_err_set(err, KG_STEP_VERIFY,
                              "EAR token header carries %s: a token does not choose its key, the pinned "
                              "trustee_as_cert is the only trust",
                              *r);
    jwk = cJSON_GetObjectItemCaseSensitive(h, "jwk");
    if (jwk != NULL && !jwk_is_key(jwk, key, curve_bits(key)))
        return kg_err_set(err, KG_STEP_VERIFY,
                          "EAR token header jwk is not the pinned AS key (trustee_as_cert): the token was "
                          "signed by another attestation service key");
    return 1;
}

/* JWS ECDSA: R‖S, each the curve size, big-endian (RFC 7518 §3.4) -> DER for OpenSSL. */
static int verify_es(EVP_PKEY *key, const char *alg, const char *token, const kg_jws *jws, kg_err *err)
{
    size_t n = (size_t)curve_bits(key) / 8;
    ECDSA_SIG *sig = NULL;
    BIGNUM *r = NULL, *s = NULL;
    unsigned char *der = NULL;
    int der_len, ok = 0;
    EVP_MD_CTX *md = NULL;

    if (jws->signature_len != 2 * n)
        return kg_err_set(err, KG_STEP_VERIFY, "EAR token signature is %zu bytes, not the %zu of %s",
                          jws->signature_len, 2 * n, alg);
    if ((sig = ECDSA_SIG_new()) == NULL || (r = BN_bin2bn(jws->signature, (int)n, NULL)) == NULL ||
        (s = BN_bin2bn(jws->signature + n, (int)n, NULL)) == NULL || !ECDSA_SIG_set0(sig, r, s)) {
        BN_free(r);
        BN_free(s);
        kg_err_set(err, KG_STEP_INTERNAL, "out of memory");
        goto err;
    }
    if ((der_len = i2d_ECDSA_SIG(sig, &der)) <= 0 || (md = EVP_MD_CTX_new()) == NULL ||
        EVP_DigestVerifyInit_ex(md, NULL, n == 32 ? "SHA256" : "SHA384", kg_libctx(), NULL, key, NULL) != 1) {
        kg_err_set(err, KG_STEP_INTERNAL, "cannot set up %s verification", alg);
        kg_err_add_openssl(err);
        goto err;
    }
    if (EVP_DigestVerify(md, der, (size_t)der_len, (const unsigned char *)token, jws->signing_input_len) !=
        1) {
        kg_err_set(err, KG_STEP_VERIFY, "EAR token signature does not verify with the pinned AS key (%s)",
                   alg);
        goto err;
    }
    ok = 1;
err:
    ERR_clear_error();
    EVP_MD_CTX_free(md);
    OPENSSL_free(der);
    ECDSA_SIG_free(sig);
    return ok;
}

int kg_ear_verify_signature(EVP_PKEY *key, const char *token, cJSON **payload, kg_err *err)
{
    const char *want = kg_ear_alg_of(key);
    cJSON *header = NULL, *claims = NULL;
    kg_jws jws;
    int ok = 0;

    memset(&jws, 0, sizeof(jws));
    *payload = NULL;
    if (want == NULL || token == NULL)
        return kg_err_set(err, KG_STEP_INTERNAL, "kg_ear_verify_signature: no EC P-256/P-384 key or token");
    if (!kg_jws_split(token, &jws, err))
        goto err;
    header = cJSON_Parse(jws.header_json);
    if (!check_header(header, key, want, err) || !verify_es(key, want, token, &jws, err))
        goto err;
    /* the payload is parsed only once its signature is known good */
    claims = cJSON_Parse(jws.payload_json);
    if (!cJSON_IsObject(claims)) {
        kg_err_set(err, KG_STEP_VERIFY, "EAR token payload is not a JSON object");
        goto err;
    }
    *payload = claims;
    claims = NULL;
    ok = 1;
err:
    cJSON_Delete(claims);
    cJSON_Delete(header);
    kg_jws_clear(&jws);
    return ok;
}

/* A NumericDate: an integer number of seconds (Trustee writes integers). */
static int time_claim(const cJSON *payload, const char *name, long long *out, kg_err *err)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(payload, name);
    if (v == NULL)
        return kg_err_set(err, KG_STEP_VERIFY, "EAR token has no %s claim", name);
    if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > 253402300799.0 ||
        v->valuedouble != (double)(long long)v->valuedouble)
        return kg_err_set(err, KG_STEP_VERIFY, "EAR claim %s is not an integer NumericDate", name);
    *out = (long long)v->valuedouble;
    return 1;
}

static int check_submod(const cJSON *sub, const kg_ear_expect *x, kg_err *err)
{
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(sub, "ear.status");
    char name[40], what[40];
    kg_ear_status s;

    printable(name, sizeof(name), sub->string);
    if (!cJSON_IsObject(sub))
        return kg_err_set(err, KG_STEP_VERIFY, "EAR submod '%s' is not an object", name);
    if (!cJSON_IsString(st))
        return kg_err_set(err, KG_STEP_VERIFY, "EAR submod '%s' has no ear.status string", name);
    if ((s = kg_ear_status_of(st->valuestring)) == 0)
        return kg_err_set(err, KG_STEP_VERIFY, "EAR submod '%s' ear.status '%s' is not an AR4SI tier", name,
                          printable(what, sizeof(what), st->valuestring));
    if (s > x->max_status)
        return kg_err_set(
            err, KG_STEP_VERIFY,
            "EAR submod '%s' ear.status is %s; trustee_ear_status = %s accepts %s (the attestation "
            "service's appraisal policy did not affirm this TD)",
            name, status_names[s], status_names[x->max_status],
            x->max_status == KG_EAR_AFFIRMING ? "affirming only" : "affirming or warning");
    return 1;
}

int kg_ear_check_claims(const cJSON *payload, const kg_ear_expect *x, long long *exp, kg_err *err)
{
    const cJSON *profile = cJSON_GetObjectItemCaseSensitive(payload, "eat_profile");
    const cJSON *vid = cJSON_GetObjectItemCaseSensitive(payload, "ear.verifier-id");
    const cJSON *submods = cJSON_GetObjectItemCaseSensitive(payload, "submods"), *sub;
    long long now = x->now != 0 ? (long long)x->now : (long long)time(NULL), iat = 0;
    long leeway = x->leeway_s < 0 ? DEFAULT_LEEWAY_S : x->leeway_s;
    const char *const *p;
    char what[80];

    *exp = 0;
    if (!cJSON_IsString(profile))
        return kg_err_set(err, KG_STEP_VERIFY, "EAR token has no eat_profile string");
    for (p = profiles; *p != NULL && strcmp(*p, profile->valuestring) != 0; p++)
        ;
    if (*p == NULL)
        return kg_err_set(err, KG_STEP_VERIFY,
                          "EAR eat_profile '%s' is not Trustee's or Veraison's EAR profile",
                          printable(what, sizeof(what), profile->valuestring));
    if (!time_claim(payload, "iat", &iat, err) || !time_claim(payload, "exp", exp, err))
        return 0;
    if (now > *exp + leeway)
        return kg_err_set(err, KG_STEP_VERIFY, "EAR token expired at %lld (now %lld, leeway %ld s)", *exp,
                          now, leeway);
    if (now + leeway < iat)
        return kg_err_set(err, KG_STEP_VERIFY, "EAR token issued in the future (iat %lld, now %lld)", iat,
                          now);
    if (!cJSON_IsObject(vid) || !cJSON_IsString(cJSON_GetObjectItemCaseSensitive(vid, "build")) ||
        !cJSON_IsString(cJSON_GetObjectItemCaseSensitive(vid, "developer")))
        return kg_err_set(err, KG_STEP_VERIFY, "EAR token has no ear.verifier-id {build, developer}");
    if (!cJSON_IsObject(submods) || cJSON_GetArraySize(submods) == 0)
        return kg_err_set(err, KG_STEP_VERIFY, "EAR token has no submods (no appraisal)");
    cJSON_ArrayForEach(sub, submods)
    {
        if (!check_submod(sub, x, err))
            return 0;
    }
    return 1;
}

static int hex64(const cJSON *v, uint8_t out[64])
{
    unsigned int b;
    if (!cJSON_IsString(v) || strlen(v->valuestring) != 128)
        return 0;
    for (int i = 0; i < 64; i++) {
        const char *s = v->valuestring + 2 * i;
        if (!strchr("0123456789abcdefABCDEF", s[0]) || !strchr("0123456789abcdefABCDEF", s[1]) ||
            sscanf(s, "%2x", &b) != 1)
            return 0;
        out[i] = (uint8_t)b;
    }
    return 1;
}

int kg_ear_check_binding(const cJSON *payload, const char *nonce, const cJSON *tee_pubkey,
                         const uint8_t report_data[64], kg_err *err)
{
    const cJSON *submods = cJSON_GetObjectItemCaseSensitive(payload, "submods");
    const cJSON *cpu0 = cJSON_GetObjectItemCaseSensitive(submods, "cpu0");
    const cJSON *ev = cJSON_GetObjectItemCaseSensitive(cpu0, "ear.veraison.annotated-evidence");
    const cJSON *rt = cJSON_GetObjectItemCaseSensitive(ev, "runtime_data_claims");
    const cJSON *pk = cJSON_GetObjectItemCaseSensitive(rt, "tee-pubkey");
    const cJSON *n = cJSON_GetObjectItemCaseSensitive(rt, "nonce");
    const cJSON *tdx = cJSON_GetObjectItemCaseSensitive(ev, "tdx");
    const cJSON *body =
        cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(tdx, "quote"), "body");
    uint8_t claimed[64];

    if (!cJSON_IsObject(ev))
        return kg_err_set(
            err, KG_STEP_VERIFY,
            "EAR token has no submods.cpu0.ear.veraison.annotated-evidence (the TDX appraisal)");
    if (!cJSON_IsObject(rt))
        return kg_err_set(err, KG_STEP_VERIFY, "EAR annotated evidence has no runtime_data_claims object");
    if (pk == NULL || !cJSON_Compare(pk, tee_pubkey, 1))
        return kg_err_set(err, KG_STEP_VERIFY, "EAR runtime_data_claims tee-pubkey is not our TEE key");
    if (!cJSON_IsString(n) || strcmp(n->valuestring, nonce) != 0)
        return kg_err_set(err, KG_STEP_VERIFY,
                          "EAR runtime_data_claims nonce is not the KBS challenge of this session");
    if (!hex64(cJSON_GetObjectItemCaseSensitive(ev, "report_data"), claimed))
        return kg_err_set(err, KG_STEP_VERIFY, "EAR annotated evidence has no report_data of 64 bytes");
    if (CRYPTO_memcmp(claimed, report_data, 64) != 0)
        return kg_err_set(err, KG_STEP_VERIFY, "EAR report_data is not the REPORTDATA of our evidence");
    if (!cJSON_IsObject(tdx))
        return kg_err_set(err, KG_STEP_VERIFY,
                          "EAR annotated evidence has no tdx claims (not a TDX appraisal)");
    if (!hex64(cJSON_GetObjectItemCaseSensitive(body, "report_data"), claimed) ||
        CRYPTO_memcmp(claimed, report_data, 64) != 0)
        return kg_err_set(err, KG_STEP_VERIFY,
                          "EAR tdx.quote.body.report_data is not the REPORTDATA of our evidence");
    return 1;
}
