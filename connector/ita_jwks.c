/* SPDX-License-Identifier: Apache-2.0 */
#include "ita_jwks.h"

#include <cjson/cJSON.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kg_b64.h"
#include "kg_libctx.h"

/* an RSA modulus above 16384 bits is not a key anyone signs tokens with */
#define JWK_MAX_N_BYTES 2048
#define JWK_MAX_E_BYTES 16
#define X5C_MAX_CERT_LEN (64 * 1024)

X509 *ita_x509_from_der(const unsigned char *der, size_t len)
{
    const unsigned char *p = der;
    X509 *x;

    if (len == 0 || len > X5C_MAX_CERT_LEN)
        return NULL;
    /* allocated in our library context first, so that its signature checks run there */
    if ((x = X509_new_ex(kg_libctx(), NULL)) == NULL)
        return NULL;
    if (d2i_X509(&x, &p, (long)len) == NULL)
        return NULL;      /* d2i freed x */
    if (p != der + len) { /* trailing bytes: not one DER certificate */
        X509_free(x);
        return NULL;
    }
    return x;
}

void ita_jwk_clear(ita_jwk *k)
{
    if (k == NULL)
        return;
    EVP_PKEY_free(k->pkey);
    sk_X509_pop_free(k->x5c, X509_free);
    memset(k, 0, sizeof(*k));
}

int ita_jwks_check(const char *json, size_t len, kg_err *err)
{
    cJSON *root = NULL;
    int ok = 0;

    if (len > ITA_JWKS_MAX_LEN || memchr(json, '\0', len) != NULL) {
        kg_err_set(err, KG_STEP_VERIFY, "JWKS is larger than 1 MiB or not text");
        goto err;
    }
    root = cJSON_ParseWithLength(json, len);
    if (!cJSON_IsObject(root) || !cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(root, "keys"))) {
        kg_err_set(err, KG_STEP_VERIFY, "JWKS is not a JSON object with a \"keys\" array");
        goto err;
    }
    ok = 1;
err:
    cJSON_Delete(root);
    return ok;
}

static const char *json_string(const cJSON *obj, const char *name)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, name);
    return cJSON_IsString(it) ? it->valuestring : NULL;
}

static BIGNUM *b64url_bn(const char *s, size_t max_bytes)
{
    unsigned char *bin = NULL;
    size_t n = 0;
    BIGNUM *bn = NULL;

    if (s == NULL || !kg_b64url_decode(s, strlen(s), &bin, &n))
        return NULL;
    if (n > 0 && n <= max_bytes)
        bn = BN_bin2bn(bin, (int)n, NULL);
    free(bin);
    return bn;
}

/* The public key for n/e, built in our library context. NULL if n/e are unusable. */
static EVP_PKEY *rsa_from_ne(const char *n_b64, const char *e_b64)
{
    BIGNUM *n = b64url_bn(n_b64, JWK_MAX_N_BYTES), *e = b64url_bn(e_b64, JWK_MAX_E_BYTES);
    OSSL_PARAM_BLD *bld = NULL;
    OSSL_PARAM *params = NULL;
    EVP_PKEY_CTX *pctx = NULL;
    EVP_PKEY *pkey = NULL;

    if (n == NULL || e == NULL || BN_is_zero(n) || BN_is_zero(e))
        goto err;
    if ((bld = OSSL_PARAM_BLD_new()) == NULL || !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, n) ||
        !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, e) ||
        (params = OSSL_PARAM_BLD_to_param(bld)) == NULL)
        goto err;
    if ((pctx = kg_pkey_ctx_new_from_name(NULL, "RSA")) == NULL || EVP_PKEY_fromdata_init(pctx) <= 0 ||
        EVP_PKEY_fromdata(pctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) <= 0)
        pkey = NULL;
err:
    EVP_PKEY_CTX_free(pctx);
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    BN_free(n);
    BN_free(e);
    return pkey;
}

/* Parses x5c (1..10 standard-base64 DER certificates). Returns NULL and a reason if unusable. */
static STACK_OF(X509) * parse_x5c(const cJSON *x5c, const char **why)
{
    STACK_OF(X509) *certs = NULL;
    const cJSON *it;
    int count;

    if (!cJSON_IsArray(x5c)) {
        *why = "x5c is not an array";
        return NULL;
    }
    count = cJSON_GetArraySize(x5c);
    if (count < 1 || count > ITA_JWKS_MAX_X5C) {
        *why = count < 1 ? "x5c is empty" : "x5c has more than 10 certificates";
        return NULL;
    }
    if ((certs = sk_X509_new_null()) == NULL) {
        *why = "out of memory";
        return NULL;
    }
    cJSON_ArrayForEach(it, x5c)
    {
        unsigned char *der = NULL;
        size_t der_len = 0;
        X509 *x = NULL;

        if (!cJSON_IsString(it) || !kg_b64_decode(it->valuestring, strlen(it->valuestring), &der, &der_len) ||
            (x = ita_x509_from_der(der, der_len)) == NULL) {
            free(der);
            *why = "an x5c entry is not a base64 DER certificate";
            goto err;
        }
        free(der);
        if (!sk_X509_push(certs, x)) {
            X509_free(x);
            *why = "out of memory";
            goto err;
        }
    }
    return certs;
err:
    sk_X509_pop_free(certs, X509_free);
    return NULL;
}

/* Fills out from one entry whose kid and alg already matched; 0 with *why if it is unusable. */
static int parse_entry(const cJSON *key, ita_jwk *out, const char **why)
{
    const char *kty = json_string(key, "kty");

    if (kty == NULL || strcmp(kty, "RSA") != 0) {
        *why = "kty is not \"RSA\"";
        return 0;
    }
    if ((out->pkey = rsa_from_ne(json_string(key, "n"), json_string(key, "e"))) == NULL) {
        *why = "n/e are not base64url RSA parameters";
        return 0;
    }
    if ((out->x5c = parse_x5c(cJSON_GetObjectItemCaseSensitive(key, "x5c"), why)) == NULL) {
        ita_jwk_clear(out);
        return 0;
    }
    return 1;
}

int ita_jwks_select(const char *json, const char *kid, const char *alg, ita_jwk *out, int *miss, kg_err *err)
{
    cJSON *root = NULL;
    const cJSON *keys, *key;
    const char *why = NULL;
    int kid_seen = 0, ok = 0;

    memset(out, 0, sizeof(*out));
    *miss = 0;
    root = cJSON_Parse(json);
    keys = cJSON_GetObjectItemCaseSensitive(root, "keys");
    if (!cJSON_IsObject(root) || !cJSON_IsArray(keys)) {
        kg_err_set(err, KG_STEP_VERIFY, "JWKS is not a JSON object with a \"keys\" array");
        goto err;
    }
    cJSON_ArrayForEach(key, keys)
    {
        const char *k_kid = json_string(key, "kid"), *k_alg = json_string(key, "alg");

        /* selection by (kid, alg) together and nothing else: never "try every key" */
        if (!cJSON_IsObject(key) || k_kid == NULL || strcmp(k_kid, kid) != 0)
            continue;
        kid_seen = 1;
        if (k_alg == NULL || strcmp(k_alg, alg) != 0)
            continue;
        if (parse_entry(key, out, &why)) {
            ok = 1;
            goto err;
        }
    }
    if (why != NULL) {
        kg_err_set(err, KG_STEP_VERIFY, "JWKS entry for kid '%.100s' with alg '%s' is unusable: %s", kid, alg,
                   why);
    } else if (kid_seen) {
        *miss = 1;
        kg_err_set(err, KG_STEP_VERIFY, "no JWKS entry for kid '%.100s' with alg '%s'", kid, alg);
    } else {
        *miss = 1;
        kg_err_set(err, KG_STEP_VERIFY, "unknown kid '%.100s' (not found in the JWKS)", kid);
    }
err:
    ERR_clear_error(); /* from entries that failed to parse; their cause is in why */
    cJSON_Delete(root);
    return ok;
}

int ita_read_file(const char *path, size_t max, char **buf, size_t *len, kg_err *err)
{
    FILE *f = fopen(path, "rb");
    char *b = NULL;
    size_t n;
    int ok = 0;

    *buf = NULL;
    if (f == NULL) {
        kg_err_set(err, KG_STEP_CONFIG, "cannot open %s", path);
        goto err;
    }
    if ((b = malloc(max + 2)) == NULL) {
        kg_err_set(err, KG_STEP_INTERNAL, "out of memory");
        goto err;
    }
    n = fread(b, 1, max + 1, f);
    if (ferror(f) || n > max) {
        kg_err_set(err, KG_STEP_CONFIG, "cannot read %s (or larger than %zu bytes)", path, max);
        goto err;
    }
    b[n] = '\0';
    *buf = b;
    *len = n;
    b = NULL;
    ok = 1;
err:
    free(b);
    if (f != NULL)
        fclose(f);
    return ok;
}

X509_CRL *ita_crl_from_bytes(const unsigned char *buf, size_t len)
{
    BIO *bio = NULL;
    char *name = NULL, *header = NULL;
    unsigned char *pem_der = NULL;
    const unsigned char *der = buf, *p;
    long der_len = (long)len;
    X509_CRL *crl = NULL;

    if (len == 0 || len > ITA_CRL_MAX_LEN)
        return NULL;
    if (len > 10 && memcmp(buf, "-----BEGIN", 10) == 0) {
        if ((bio = BIO_new_mem_buf(buf, (int)len)) == NULL ||
            !PEM_read_bio(bio, &name, &header, &pem_der, &der_len) || strcmp(name, "X509 CRL") != 0)
            goto err;
        der = pem_der;
    }
    p = der;
    if ((crl = X509_CRL_new_ex(kg_libctx(), NULL)) == NULL)
        goto err;
    if (d2i_X509_CRL(&crl, &p, der_len) == NULL) {
        crl = NULL; /* d2i freed it */
        goto err;
    }
    if (p != der + der_len) {
        X509_CRL_free(crl);
        crl = NULL;
    }
err:
    ERR_clear_error();
    OPENSSL_free(name);
    OPENSSL_free(header);
    OPENSSL_free(pem_der);
    BIO_free(bio);
    return crl;
}

int ita_load_anchors(X509_STORE *store, const char *path, kg_err *err)
{
    char *text = NULL, *name = NULL, *header = NULL;
    unsigned char *der = NULL;
    long der_len;
    size_t len;
    BIO *bio = NULL;
    int count = 0, ok = 0;

    if (!ita_read_file(path, 1024 * 1024, &text, &len, err))
        goto err;
    if ((bio = BIO_new_mem_buf(text, (int)len)) == NULL)
        goto err;
    while (PEM_read_bio(bio, &name, &header, &der, &der_len)) {
        X509 *x = strcmp(name, "CERTIFICATE") == 0 ? ita_x509_from_der(der, (size_t)der_len) : NULL;
        int added = x != NULL && X509_STORE_add_cert(store, x);

        X509_free(x); /* the store holds its own reference */
        OPENSSL_free(name);
        OPENSSL_free(header);
        OPENSSL_free(der);
        name = header = NULL;
        der = NULL;
        if (!added) {
            kg_err_set(err, KG_STEP_CONFIG, "trust anchor file %s: unusable PEM block", path);
            goto err;
        }
        count++;
    }
    if (count == 0) {
        kg_err_set(err, KG_STEP_CONFIG, "trust anchor file %s holds no PEM certificate", path);
        goto err;
    }
    ok = 1;
err:
    ERR_clear_error();
    BIO_free(bio);
    free(text);
    return ok;
}
