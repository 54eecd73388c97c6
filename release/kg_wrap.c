/* SPDX-License-Identifier: Apache-2.0 */
#include "kg_wrap.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/asn1.h>
#include <openssl/objects.h>
#include <openssl/param_build.h>
#include <openssl/x509.h>
#include <openssl/rsa.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "kg_http.h"
#include "kg_libctx.h"

#define SWK_LEN 32
#define GCM_IV_LEN 12
#define GCM_TAG_LEN 16
#define WRAPPED_HEADER_LEN 12
#define MAX_PLAINTEXT (16 * 1024)

/* Every release starts with a fresh wrapping key: refuse here, before any network, when a
 * process-wide ENGINE would run keygate's crypto (kg_libctx_engine_check). */
static int no_default_engine(kg_err *err)
{
    char id[64];

    kg_http_global_init(); /* libcurl's OpenSSL init may register ENGINEs: let it happen first */
    if (kg_libctx_engine_check(id, sizeof(id)))
        return 1;
    return kg_err_set(
        err, KG_STEP_WRAPKEY,
        "ENGINE '%s' is this process's default for EC/RSA keys or digests (nginx ssl_engine, "
        "openssl -engine, or an openssl.cnf engine registered at OpenSSL init); OpenSSL 3.0 would run "
        "keygate's key operations through it, so keygate refuses: load the PKCS#11 module through "
        "p11-kit server, or use the provider without the engine",
        id);
}

int kg_wrap_engine_check(kg_err *err)
{
    return no_default_engine(err);
}

/* OpenSSL's key generation callback, called between candidate primes: 0 stops the search. */
static int keygen_cb(EVP_PKEY_CTX *ctx)
{
    const kg_wrap_stop *stop = EVP_PKEY_CTX_get_app_data(ctx);
    return stop == NULL || !stop->fn(stop->arg);
}

static EVP_PKEY *rsa_generate(const kg_wrap_stop *stop, kg_err *err)
{
    EVP_PKEY_CTX *ctx;
    EVP_PKEY *key = NULL;

    ctx = kg_pkey_ctx_new_from_name(NULL, "RSA");
    if (ctx != NULL && stop != NULL) {
        EVP_PKEY_CTX_set_app_data(ctx, (void *)stop);
        EVP_PKEY_CTX_set_cb(ctx, keygen_cb);
    }
    if (ctx == NULL || EVP_PKEY_keygen_init(ctx) <= 0 ||
        EVP_PKEY_CTX_set_rsa_keygen_bits(ctx, KG_WRAP_RSA_BITS) <= 0 || EVP_PKEY_keygen(ctx, &key) <= 0 ||
        (stop != NULL && stop->fn(stop->arg))) { /* (a stop after the last candidate counts too) */
        EVP_PKEY_free(key);
        if (stop != NULL && stop->fn(stop->arg))
            kg_err_set(err, KG_STEP_WRAPKEY, "RSA-%d key generation stopped (cancelled)", KG_WRAP_RSA_BITS);
        else
            kg_err_set(err, KG_STEP_WRAPKEY, "RSA-%d key generation failed", KG_WRAP_RSA_BITS);
        kg_err_add_openssl(err);
        key = NULL;
    }
    EVP_PKEY_CTX_free(ctx);
    return key;
}

EVP_PKEY *kg_wrap_key_generate(const char *kind, const kg_wrap_stop *stop, kg_err *err)
{
    EVP_PKEY *key;

    if (kind == NULL || strcmp(kind, "rsa") == 0)
        return rsa_generate(stop, err);
    if ((key = kg_pkey_ec_keygen(NULL, "P-256")) == NULL) {
        kg_err_set(err, KG_STEP_WRAPKEY, "EC P-256 TEE key generation failed");
        kg_err_add_openssl(err);
    }
    return key;
}

EVP_PKEY *kg_wrap_key_new(kg_err *err)
{
    return no_default_engine(err) ? rsa_generate(NULL, err) : NULL;
}

int kg_wrap_user_data(const EVP_PKEY *wrapping_key, uint8_t **blob, size_t *len, kg_err *err)
{
    BIGNUM *n = NULL, *e = NULL;
    size_t nlen;
    uint32_t ev;
    int ok = 0;

    *blob = NULL;
    *len = 0;
    if (!EVP_PKEY_get_bn_param(wrapping_key, OSSL_PKEY_PARAM_RSA_N, &n) ||
        !EVP_PKEY_get_bn_param(wrapping_key, OSSL_PKEY_PARAM_RSA_E, &e) || BN_num_bytes(e) > 4) {
        kg_err_set(err, KG_STEP_WRAPKEY, "wrapping key is not RSA");
        goto err;
    }
    nlen = (size_t)EVP_PKEY_get_size(wrapping_key);
    ev = (uint32_t)BN_get_word(e);
    if ((*blob = malloc(4 + nlen)) == NULL) {
        kg_err_set(err, KG_STEP_INTERNAL, "out of memory");
        goto err;
    }
    (*blob)[0] = (uint8_t)ev; /* the exponent is little-endian, the modulus big-endian (intel-kbs.md §4) */
    (*blob)[1] = (uint8_t)(ev >> 8);
    (*blob)[2] = (uint8_t)(ev >> 16);
    (*blob)[3] = (uint8_t)(ev >> 24);
    if (BN_bn2binpad(n, *blob + 4, (int)nlen) != (int)nlen) {
        free(*blob);
        *blob = NULL;
        kg_err_set(err, KG_STEP_WRAPKEY, "cannot encode the wrapping key modulus");
        goto err;
    }
    *len = 4 + nlen;
    ok = 1;
err:
    BN_free(n);
    BN_free(e);
    return ok;
}

static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

#define KEY_TYPE_MSG "released key type is not RSA 2048..4096 or EC P-256/P-384"

static int key_supported(const EVP_PKEY *pk)
{
    char group[32] = "";
    if (EVP_PKEY_is_a(pk, "RSA"))
        return EVP_PKEY_get_bits(pk) >= 2048 && EVP_PKEY_get_bits(pk) <= 4096;
    return EVP_PKEY_is_a(pk, "EC") &&
           EVP_PKEY_get_utf8_string_param(pk, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group), NULL) &&
           (strcmp(group, "prime256v1") == 0 || strcmp(group, "secp384r1") == 0);
}

/*
 * One DER TLV at *p, before e: a one-byte tag, a definite length in its shortest form (BER's
 * longer forms are refused) and the content inside the input. Returns the tag byte (0x30
 * SEQUENCE, 0x02 INTEGER, 0x04 OCTET STRING, 0xa0 [0] ...) with the content, and moves *p past
 * it; -1 when the bytes are no such TLV. Reads headers only, never the content.
 */
static int der_tlv(const unsigned char **p, const unsigned char *e, const unsigned char **c, size_t *clen)
{
    const unsigned char *q = *p;
    long len;
    int tag, cls, ret;
    size_t hdr;

    if (q >= e || e - q > LONG_MAX)
        return -1;
    ret = ASN1_get_object(&q, &len, &tag, &cls, (long)(e - q));
    if ((ret & 0x80) != 0 || (ret & 0x01) != 0 || tag >= 0x1f || len < 0 || len > e - q)
        return -1;
    hdr = 2 + (len < 0x80 ? 0 : len < 0x100 ? 1 : len < 0x10000 ? 2 : len < 0x1000000 ? 3 : 4);
    if ((size_t)(q - *p) != hdr)
        return -1;
    ret = **p;
    *c = q;
    *clen = (size_t)len;
    *p = q + len;
    return ret;
}

/* A one-byte DER INTEGER (a version): its value, else -1. */
static int der_version(const unsigned char **p, const unsigned char *e)
{
    const unsigned char *c;
    size_t n;
    return der_tlv(p, e, &c, &n) == 0x02 && n == 1 && c[0] < 0x80 ? c[0] : -1;
}

/* A DER INTEGER that is positive (or zero) and minimally encoded. */
static int der_positive_int(const unsigned char **p, const unsigned char *e)
{
    const unsigned char *c;
    size_t n;
    return der_tlv(p, e, &c, &n) == 0x02 && n > 0 && (c[0] & 0x80) == 0 &&
           !(n > 1 && c[0] == 0 && (c[1] & 0x80) == 0);
}

enum key_form { FORM_NONE, FORM_TRAILING, FORM_PKCS8, FORM_PKCS1, FORM_SEC1 };

/*
 * The three private-key DER forms a KBS can hand over (intel-kbs.md §5) all start
 * SEQUENCE { INTEGER version, ... }; the element after the version tells them apart without
 * ambiguity: a SEQUENCE (PKCS#8's AlgorithmIdentifier), an INTEGER (PKCS#1's modulus) or an
 * OCTET STRING (SEC1's scalar). Headers only: no decoder is set up to find out (a decoder per
 * guess cost 4.7 M instructions per input, see parse_pkcs8). *trailing: bytes after the DER.
 */
static enum key_form key_form(const uint8_t *der, size_t len, size_t *trailing)
{
    const unsigned char *p = der, *c, *e, *x;
    size_t n;

    if (der_tlv(&p, der + len, &c, &n) != 0x30)
        return FORM_NONE;
    if (p != der + len) {
        *trailing = (size_t)(der + len - p);
        return FORM_TRAILING;
    }
    e = c + n;
    if (der_tlv(&c, e, &x, &n) != 0x02)
        return FORM_NONE;
    switch (der_tlv(&c, e, &x, &n)) {
    case 0x30: return FORM_PKCS8;
    case 0x02: return FORM_PKCS1;
    case 0x04: return FORM_SEC1;
    default: return FORM_NONE;
    }
}

/* The EC public point d·G of a SEC1 key without its [1] (uncompressed, into out); the scalar's
 * temporaries stay in the secure heap (BN_CTX_secure_new_ex). Returns its length, 0 on failure. */
static size_t ec_public_point(int nid, const BIGNUM *d, uint8_t *out, size_t out_len)
{
    EC_GROUP *g = EC_GROUP_new_by_curve_name_ex(kg_libctx(), NULL, nid);
    EC_POINT *pt = g != NULL ? EC_POINT_new(g) : NULL;
    BN_CTX *bctx = BN_CTX_secure_new_ex(kg_libctx());
    size_t n = 0;

    if (pt != NULL && bctx != NULL && EC_POINT_mul(g, pt, d, NULL, NULL, bctx))
        n = EC_POINT_point2oct(g, pt, POINT_CONVERSION_UNCOMPRESSED, out, out_len, bctx);
    BN_CTX_free(bctx); /* clears its BIGNUMs */
    EC_POINT_free(pt);
    EC_GROUP_free(g);
    return n;
}

/* The curve of an EC reference public key, NID_undef when there is none. */
static int reference_curve(const EVP_PKEY *reference)
{
    char group[32];
    if (reference == NULL || !EVP_PKEY_is_a(reference, "EC") ||
        !EVP_PKEY_get_utf8_string_param(reference, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group), NULL))
        return NID_undef;
    return OBJ_txt2nid(group);
}

/*
 * SEC1 ECPrivateKey (RFC 5915), read in place and never through OpenSSL's decoder: that copies
 * the big-endian scalar into ordinary heap memory and frees it without zeroizing, which left the
 * key in the process after a lease wipe (issue 12's memory scan found it). Here the scalar goes
 * from the input (the secure-heap plaintext) into a secure-heap BIGNUM.
 *   ECPrivateKey ::= SEQUENCE { version 1, privateKey OCTET STRING (the order's size),
 *                               [0] namedCurve OPTIONAL, [1] publicKey BIT STRING OPTIONAL }
 * The curve: outer_nid (PKCS#8's AlgorithmIdentifier; [0] must then agree), else [0], else the
 * reference's (a KMIP server keeps the curve as an attribute, beside the key material). Without
 * [1] the public point is computed. Returns 1 with *key, 0 with err.
 */
static int ec_from_sec1(const uint8_t *der, size_t len, int outer_nid, const EVP_PKEY *reference,
                        EVP_PKEY **key, kg_err *err)
{
    const unsigned char *p = der, *e, *c, *x, *scalar, *pub = NULL;
    size_t n, m, scalar_len, pub_len = 0, order_len;
    int inner_nid = NID_undef, nid;
    uint8_t point[1 + 2 * 48];
    OSSL_PARAM_BLD *bld = NULL;
    OSSL_PARAM *params = NULL;
    EVP_PKEY_CTX *pctx = NULL;
    BIGNUM *d = NULL;

    *key = NULL;
    if (der_tlv(&p, der + len, &c, &n) != 0x30 || p != der + len)
        return kg_err_set(err, KG_STEP_UNWRAP, "released EC key is not a DER SEC1 ECPrivateKey");
    p = c;
    e = c + n;
    if (der_version(&p, e) != 1)
        return kg_err_set(err, KG_STEP_UNWRAP, "released SEC1 ECPrivateKey's version is not 1");
    if (der_tlv(&p, e, &scalar, &scalar_len) != 0x04)
        return kg_err_set(err, KG_STEP_UNWRAP, "released SEC1 ECPrivateKey has no privateKey OCTET STRING");
    if (p < e && *p == 0xa0) { /* [0] ECParameters: namedCurve only */
        const unsigned char *q;
        ASN1_OBJECT *o = NULL;
        if (der_tlv(&p, e, &c, &n) == 0xa0 && (q = c, der_tlv(&q, c + n, &x, &m) == 0x06) && q == c + n) {
            x = c;
            o = d2i_ASN1_OBJECT(NULL, &x, (long)n);
            inner_nid = o != NULL && x == c + n ? OBJ_obj2nid(o) : NID_undef;
            ASN1_OBJECT_free(o);
        }
        if (inner_nid == NID_undef)
            return kg_err_set(err, KG_STEP_UNWRAP,
                              "released EC key does not name a known curve (explicit curve parameters are "
                              "not accepted)");
    }
    if (p < e && *p == 0xa1) { /* [1] publicKey BIT STRING, no unused bits */
        const unsigned char *q;
        if (der_tlv(&p, e, &c, &n) != 0xa1 || (q = c, der_tlv(&q, c + n, &pub, &pub_len) != 0x03) ||
            q != c + n || pub_len < 2 || pub[0] != 0)
            return kg_err_set(err, KG_STEP_UNWRAP, "released SEC1 ECPrivateKey's publicKey is not DER");
        pub++;
        pub_len--;
    }
    if (p != e)
        return kg_err_set(err, KG_STEP_UNWRAP, "released SEC1 ECPrivateKey has elements after its publicKey");
    if (outer_nid != NID_undef && inner_nid != NID_undef && inner_nid != outer_nid)
        return kg_err_set(err, KG_STEP_UNWRAP,
                          "released EC key names two curves (AlgorithmIdentifier and [0])");
    nid = outer_nid != NID_undef   ? outer_nid
          : inner_nid != NID_undef ? inner_nid
                                   : reference_curve(reference);
    if (nid == NID_undef)
        return kg_err_set(err, KG_STEP_UNWRAP,
                          "released key is a SEC1 ECPrivateKey without curve parameters, and the key "
                          "reference names no curve (no EC public key): create the reference with --pubkey");
    if (nid != NID_X9_62_prime256v1 && nid != NID_secp384r1)
        return kg_err_set(err, KG_STEP_UNWRAP, KEY_TYPE_MSG);
    order_len = nid == NID_secp384r1 ? 48 : 32;
    if (scalar_len != order_len)
        return kg_err_set(err, KG_STEP_UNWRAP, "released EC private key is %zu bytes, %s takes %zu",
                          scalar_len, OBJ_nid2sn(nid), order_len);
    if ((d = BN_secure_new()) == NULL || BN_bin2bn(scalar, (int)scalar_len, d) == NULL) {
        kg_err_set(err, KG_STEP_INTERNAL, "out of secure memory");
        goto done;
    }
    if (pub == NULL) {
        if ((pub_len = ec_public_point(nid, d, point, sizeof(point))) == 0) {
            kg_err_set(err, KG_STEP_UNWRAP, "released EC private key gives no public point on %s",
                       OBJ_nid2sn(nid));
            goto done;
        }
        pub = point;
    }
    if ((bld = OSSL_PARAM_BLD_new()) == NULL ||
        !OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, OBJ_nid2sn(nid), 0) ||
        !OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, pub, pub_len) ||
        !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_PRIV_KEY, d) || /* secure BN: secure param block */
        (params = OSSL_PARAM_BLD_to_param(bld)) == NULL ||
        (pctx = kg_pkey_ctx_new_from_name(kg_libctx(), "EC")) == NULL || EVP_PKEY_fromdata_init(pctx) <= 0 ||
        EVP_PKEY_fromdata(pctx, key, EVP_PKEY_KEYPAIR, params) <= 0) {
        *key = NULL;
        kg_err_set(err, KG_STEP_UNWRAP, "released EC key does not load (public point not on %s?)",
                   OBJ_nid2sn(nid));
    }
done:
    EVP_PKEY_CTX_free(pctx);
    OSSL_PARAM_free(params); /* clears the secure block holding the scalar */
    OSSL_PARAM_BLD_free(bld);
    BN_clear_free(d);
    return *key != NULL;
}

/* The parameter names of PKCS#1's INTEGERs after the version, in their order, and those of
 * otherPrimeInfos' { r, d, t } for the third to fifth prime (RSA_MAX_PRIME_NUM is 5). */
static const char *const rsa_names[8] = {OSSL_PKEY_PARAM_RSA_N,         OSSL_PKEY_PARAM_RSA_E,
                                         OSSL_PKEY_PARAM_RSA_D,         OSSL_PKEY_PARAM_RSA_FACTOR1,
                                         OSSL_PKEY_PARAM_RSA_FACTOR2,   OSSL_PKEY_PARAM_RSA_EXPONENT1,
                                         OSSL_PKEY_PARAM_RSA_EXPONENT2, OSSL_PKEY_PARAM_RSA_COEFFICIENT1};
static const char *const rsa_other_prime_names[3][3] = {
    {OSSL_PKEY_PARAM_RSA_FACTOR3, OSSL_PKEY_PARAM_RSA_EXPONENT3, OSSL_PKEY_PARAM_RSA_COEFFICIENT2},
    {OSSL_PKEY_PARAM_RSA_FACTOR4, OSSL_PKEY_PARAM_RSA_EXPONENT4, OSSL_PKEY_PARAM_RSA_COEFFICIENT3},
    {OSSL_PKEY_PARAM_RSA_FACTOR5, OSSL_PKEY_PARAM_RSA_EXPONENT5, OSSL_PKEY_PARAM_RSA_COEFFICIENT4}};

/* The (already checked) INTEGER at *p into a fresh secure-heap BIGNUM kept in bns[*nb], pushed to
 * bld under name. Returns 1, 0 when out of (secure) memory. */
static int push_secure_int(const unsigned char **p, const unsigned char *e, OSSL_PARAM_BLD *bld,
                           const char *name, BIGNUM **bns, int *nb)
{
    const unsigned char *c;
    size_t n;

    der_tlv(p, e, &c, &n);
    if ((bns[*nb] = BN_secure_new()) == NULL)
        return 0;
    return BN_bin2bn(c, (int)n, bns[(*nb)++]) != NULL && OSSL_PARAM_BLD_push_BN(bld, name, bns[*nb - 1]);
}

/*
 * PKCS#1 RSAPrivateKey (RFC 8017 A.1.2): SEQUENCE { version, n, e, d, p, q, dP, dQ, qInv,
 * otherPrimeInfos OPTIONAL }, version 0 without otherPrimeInfos, 1 with them (multi-prime, up to
 * five primes). The structure is checked (DER, every INTEGER minimal and non-negative), then read
 * in place, as SEC1 keys are (ec_from_sec1): each INTEGER goes from the input (the secure-heap
 * plaintext) into a secure-heap BIGNUM, and from there into a secure parameter block for
 * EVP_PKEY_fromdata. OpenSSL's decoders (PrivateKeyInfo and type-specific, 3.0 and 3.5,
 * decode_der2key.c) copy the DER into ordinary heap and free it without clearing, which left p
 * and q in the process after a lease wipe (tests/unit/test_wrap_hygiene.c). what names the
 * structure in errors.
 */
static int parse_pkcs1(const uint8_t *der, size_t len, const char *what, EVP_PKEY **key, kg_err *err)
{
    const unsigned char *p = der, *e, *c, *q, *x, *others = NULL;
    size_t n, m, others_len = 0;
    int version, i, nb = 0;
    BIGNUM *bns[8 + 3 * 3] = {NULL};
    OSSL_PARAM_BLD *bld = NULL;
    OSSL_PARAM *params = NULL;
    EVP_PKEY_CTX *pctx = NULL;

    *key = NULL;
    if (der_tlv(&p, der + len, &c, &n) != 0x30 || p != der + len)
        return kg_err_set(err, KG_STEP_UNWRAP, "released key is not %s DER", what);
    p = c;
    e = c + n;
    if ((version = der_version(&p, e)) != 0 && version != 1)
        return kg_err_set(err, KG_STEP_UNWRAP,
                          "released %s's version is not 0 (two primes) or 1 (multi-prime)", what);
    for (i = 0, q = p; i < 8; i++)
        if (!der_positive_int(&q, e))
            return kg_err_set(err, KG_STEP_UNWRAP, "released key is not %s DER", what);
    if (version == 1) { /* otherPrimeInfos: SEQUENCE SIZE(1..MAX) OF SEQUENCE { r, d, t } */
        if (der_tlv(&q, e, &others, &others_len) != 0x30 || others_len == 0)
            return kg_err_set(err, KG_STEP_UNWRAP,
                              "released %s's version is 1 (multi-prime) without otherPrimeInfos", what);
        for (i = 0, c = others; c < others + others_len; i++)
            if (der_tlv(&c, others + others_len, &x, &m) != 0x30 || !der_positive_int(&x, x + m) ||
                !der_positive_int(&x, c) || !der_positive_int(&x, c) || x != c)
                return kg_err_set(err, KG_STEP_UNWRAP, "released key is not %s DER", what);
        if (i > 3)
            return kg_err_set(err, KG_STEP_UNWRAP, "released RSA key has %d primes, at most 5 are supported",
                              i + 2);
    }
    if (q != e)
        return kg_err_set(err, KG_STEP_UNWRAP, "released %s has elements after its %s (version %d)", what,
                          version == 0 ? "coefficient" : "otherPrimeInfos", version);
    if ((bld = OSSL_PARAM_BLD_new()) == NULL)
        goto oom;
    for (i = 0; i < 8; i++)
        if (!push_secure_int(&p, e, bld, rsa_names[i], bns, &nb))
            goto oom;
    for (i = 0, c = others; others != NULL && c < others + others_len; i++) { /* version 1 only */
        der_tlv(&c, others + others_len, &x, &m);
        for (int j = 0; j < 3; j++)
            if (!push_secure_int(&x, c, bld, rsa_other_prime_names[i][j], bns, &nb))
                goto oom;
    }
    /* secure BIGNUMs: a secure parameter block, read back into secure BIGNUMs by the import */
    if ((params = OSSL_PARAM_BLD_to_param(bld)) == NULL)
        goto oom;
    if ((pctx = kg_pkey_ctx_new_from_name(kg_libctx(), "RSA")) == NULL || EVP_PKEY_fromdata_init(pctx) <= 0 ||
        EVP_PKEY_fromdata(pctx, key, EVP_PKEY_KEYPAIR, params) <= 0) {
        *key = NULL;
        kg_err_set(err, KG_STEP_UNWRAP, "released %s does not load as an RSA key", what);
    } else if (!key_supported(*key)) {
        EVP_PKEY_free(*key);
        *key = NULL;
        kg_err_set(err, KG_STEP_UNWRAP, KEY_TYPE_MSG);
    }
    goto done;
oom:
    kg_err_set(err, KG_STEP_INTERNAL, "out of secure memory");
done:
    EVP_PKEY_CTX_free(pctx);
    OSSL_PARAM_free(params); /* clears the secure block */
    OSSL_PARAM_BLD_free(bld);
    while (nb > 0)
        BN_clear_free(bns[--nb]);
    return *key != NULL;
}

/*
 * PrivateKeyInfo / OneAsymmetricKey (RFC 5958): SEQUENCE { version (0; 1 when it carries the
 * publicKey), AlgorithmIdentifier, privateKey OCTET STRING, [0] attributes OPTIONAL,
 * [1] publicKey OPTIONAL }. Both key types are read in place, never through OpenSSL's decoders
 * (ec_from_sec1, parse_pkcs1): no uncleared copy, and none of the decoder set-up that cost 1.45 M
 * (RSA's decoders alone) to 4.7 M instructions per released key (bench/RESULTS.md, P4). Any
 * other algorithm is refused.
 */
static int parse_pkcs8(const uint8_t *der, size_t len, EVP_PKEY **key, kg_err *err)
{
    const unsigned char *p = der, *e, *c, *alg, *priv, *x;
    size_t n, priv_len;
    int version, has_pub = 0, alg_nid, ptype;
    X509_ALGOR *a = NULL;
    const ASN1_OBJECT *obj;
    const void *pval;

    *key = NULL;
    if (der_tlv(&p, der + len, &c, &n) != 0x30 || p != der + len)
        return kg_err_set(err, KG_STEP_UNWRAP, "released key is not PKCS#8 PrivateKeyInfo DER");
    p = c;
    e = c + n;
    version = der_version(&p, e);
    alg = p;
    if (der_tlv(&p, e, &c, &n) != 0x30 || der_tlv(&p, e, &priv, &priv_len) != 0x04)
        return kg_err_set(err, KG_STEP_UNWRAP, "released key is not PKCS#8 PrivateKeyInfo DER");
    x = alg;
    if (p < e && *p == 0xa0 && der_tlv(&p, e, &c, &n) != 0xa0)
        return kg_err_set(err, KG_STEP_UNWRAP, "released key is not PKCS#8 PrivateKeyInfo DER");
    if (p < e && *p == 0xa1) {
        if (der_tlv(&p, e, &c, &n) != 0xa1)
            return kg_err_set(err, KG_STEP_UNWRAP, "released key is not PKCS#8 PrivateKeyInfo DER");
        has_pub = 1;
    }
    if (p != e)
        return kg_err_set(err, KG_STEP_UNWRAP, "released key is not PKCS#8 PrivateKeyInfo DER");
    if (version != has_pub) /* RFC 5958: v1 (0) without publicKey, v2 (1) with it */
        return kg_err_set(err, KG_STEP_UNWRAP, "released PKCS#8 key's version is not %d", has_pub);
    if ((a = d2i_X509_ALGOR(NULL, &x, (long)(priv - x))) == NULL)
        return kg_err_set(err, KG_STEP_UNWRAP, "released key is not PKCS#8 PrivateKeyInfo DER");
    X509_ALGOR_get0(&obj, &ptype, &pval, a);
    alg_nid = OBJ_obj2nid(obj);
    if (alg_nid == NID_X9_62_id_ecPublicKey) {
        int curve = ptype == V_ASN1_OBJECT ? OBJ_obj2nid(pval) : NID_undef;
        X509_ALGOR_free(a);
        if (curve == NID_undef)
            return kg_err_set(err, KG_STEP_UNWRAP,
                              "released EC key does not name a known curve (explicit curve parameters are "
                              "not accepted)");
        return ec_from_sec1(priv, priv_len, curve, NULL, key, err);
    }
    X509_ALGOR_free(a);
    if (alg_nid != NID_rsaEncryption)
        return kg_err_set(err, KG_STEP_UNWRAP, KEY_TYPE_MSG);
    /* RFC 8017 A.1: rsaEncryption's parameters are NULL (absent is taken, as OpenSSL does) */
    if (ptype != V_ASN1_NULL && ptype != V_ASN1_UNDEF)
        return kg_err_set(err, KG_STEP_UNWRAP, "released PKCS#8 RSA key has AlgorithmIdentifier parameters");
    return parse_pkcs1(priv, priv_len, "PKCS#8 key's RSAPrivateKey", key, err);
}

/*
 * PKCS#8 and PKCS#1 carry both halves and nothing ties them: an EC key's embedded publicKey is
 * taken as given, an RSA key's d, p, q need not make its n. The public half is what the reference
 * and the certificate are matched against, so a key whose private half differs would pass that
 * match and then sign with another key. OpenSSL's pairwise check: EC scalar * G == public
 * point; RSA n == p * q, p and q prime, d * e == 1 mod lcm(p-1, q-1), CRT values. Cost, once per
 * release (2-core test VM under load): EC < 2 ms; RSA-2048 60 ms, -3072 180 ms, -4096 340 ms
 * (mostly the primality tests). Frees *key when it fails.
 */
static int pairwise_ok(EVP_PKEY **key, kg_err *err)
{
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_pkey(kg_libctx(), *key, NULL);
    int ok = ctx != NULL && EVP_PKEY_pairwise_check(ctx) == 1;

    EVP_PKEY_CTX_free(ctx);
    if (ok)
        return 1;
    EVP_PKEY_free(*key);
    *key = NULL;
    return kg_err_set(err, KG_STEP_UNWRAP,
                      "the released private key does not match its own public key (pairwise consistency "
                      "check failed)");
}

int kg_wrap_parse_pkcs8(const uint8_t *der, size_t len, EVP_PKEY **key, kg_err *err)
{
    size_t trailing;
    int ok;

    *key = NULL;
    ok = key_form(der, len, &trailing) == FORM_PKCS8
             ? parse_pkcs8(der, len, key, err) && pairwise_ok(key, err)
             : kg_err_set(err, KG_STEP_UNWRAP, "released key is not PKCS#8 PrivateKeyInfo DER");
    ERR_clear_error(); /* ASN1_get_object's, d2i's, the import's */
    return ok;
}

int kg_wrap_parse_private_key(const uint8_t *der, size_t len, const EVP_PKEY *reference, EVP_PKEY **key,
                              kg_err *err)
{
    size_t trailing = 0;
    int ok;

    *key = NULL;
    switch (key_form(der, len, &trailing)) {
    case FORM_PKCS8: ok = parse_pkcs8(der, len, key, err); break;
    case FORM_PKCS1: ok = parse_pkcs1(der, len, "PKCS#1 RSAPrivateKey", key, err); break;
    case FORM_SEC1: ok = ec_from_sec1(der, len, NID_undef, reference, key, err); break;
    case FORM_TRAILING:
        ok = kg_err_set(err, KG_STEP_UNWRAP, "released key has %zu bytes after its DER structure", trailing);
        break;
    default:
        ok = kg_err_set(
            err, KG_STEP_UNWRAP,
            "released key is not PKCS#8 PrivateKeyInfo, PKCS#1 RSAPrivateKey or SEC1 ECPrivateKey DER");
    }
    ok = ok && pairwise_ok(key, err);
    ERR_clear_error(); /* ASN1_get_object's, d2i's, the import's */
    return ok;
}

static int unwrap_swk(const EVP_PKEY *wrapping_key, const uint8_t *wrapped_swk, size_t len, uint8_t *swk,
                      kg_err *err)
{
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_pkey(kg_libctx(), (EVP_PKEY *)wrapping_key, NULL);
    uint8_t *out = OPENSSL_secure_malloc((size_t)EVP_PKEY_get_size(wrapping_key));
    size_t outlen = (size_t)EVP_PKEY_get_size(wrapping_key);
    int ok = 0;

    if (ctx == NULL || out == NULL) {
        kg_err_set(err, KG_STEP_INTERNAL, "out of memory");
        goto err;
    }
    if (len != outlen || EVP_PKEY_decrypt_init(ctx) <= 0 ||
        EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_OAEP_PADDING) <= 0 ||
        EVP_PKEY_CTX_set_rsa_oaep_md_name(ctx, "SHA256", NULL) <= 0 ||
        EVP_PKEY_CTX_set_rsa_mgf1_md_name(ctx, "SHA256", NULL) <= 0 ||
        EVP_PKEY_decrypt(ctx, out, &outlen, wrapped_swk, len) <= 0 || outlen != SWK_LEN) {
        ERR_clear_error();
        kg_err_set(err, KG_STEP_UNWRAP, "wrapped_swk does not decrypt (RSA-OAEP-SHA256) to a 32-byte key");
        goto err;
    }
    memcpy(swk, out, SWK_LEN);
    ok = 1;
err:
    OPENSSL_secure_clear_free(out, (size_t)EVP_PKEY_get_size(wrapping_key));
    EVP_PKEY_CTX_free(ctx);
    return ok;
}

int kg_wrap_unwrap(const EVP_PKEY *wrapping_key, const uint8_t *wrapped_key, size_t wrapped_key_len,
                   const uint8_t *wrapped_swk, size_t wrapped_swk_len, const EVP_PKEY *reference,
                   EVP_PKEY **key, kg_err *err)
{
    uint8_t *swk = OPENSSL_secure_malloc(SWK_LEN), *plain = NULL;
    uint32_t iv_len, tag_len, ct_len;
    size_t plain_len = 0;
    EVP_CIPHER_CTX *cctx = NULL;
    EVP_CIPHER *gcm = NULL;
    int outl = 0, finl = 0, ok = 0;

    *key = NULL;
    if (swk == NULL) {
        kg_err_set(err, KG_STEP_INTERNAL, "out of secure memory");
        goto err;
    }
    if (wrapped_key_len < WRAPPED_HEADER_LEN) {
        kg_err_set(err, KG_STEP_UNWRAP, "wrapped_key of %zu bytes is shorter than its header",
                   wrapped_key_len);
        goto err;
    }
    iv_len = le32(wrapped_key);
    tag_len = le32(wrapped_key + 4);
    ct_len = le32(wrapped_key + 8);
    if (iv_len != GCM_IV_LEN || tag_len != GCM_TAG_LEN || ct_len < GCM_TAG_LEN ||
        ct_len - GCM_TAG_LEN > MAX_PLAINTEXT ||
        (size_t)WRAPPED_HEADER_LEN + iv_len + ct_len != wrapped_key_len) {
        kg_err_set(err, KG_STEP_UNWRAP,
                   "wrapped_key header (iv %u, tag %u, ciphertext %u) does not match its %zu bytes", iv_len,
                   tag_len, ct_len, wrapped_key_len);
        goto err;
    }
    if (!unwrap_swk(wrapping_key, wrapped_swk, wrapped_swk_len, swk, err))
        goto err;
    plain_len = ct_len - GCM_TAG_LEN;
    if ((plain = OPENSSL_secure_malloc(plain_len + 1)) == NULL || (cctx = EVP_CIPHER_CTX_new()) == NULL ||
        (gcm = EVP_CIPHER_fetch(kg_libctx(), "AES-256-GCM", NULL)) == NULL) {
        kg_err_set(err, KG_STEP_INTERNAL, "out of memory");
        goto err;
    }
    {
        const uint8_t *iv = wrapped_key + WRAPPED_HEADER_LEN, *ct = iv + GCM_IV_LEN;
        if (!EVP_DecryptInit_ex2(cctx, gcm, swk, iv, NULL) ||
            !EVP_DecryptUpdate(cctx, plain, &outl, ct, (int)plain_len) ||
            !EVP_CIPHER_CTX_ctrl(cctx, EVP_CTRL_GCM_SET_TAG, GCM_TAG_LEN, (void *)(ct + plain_len)) ||
            EVP_DecryptFinal_ex(cctx, plain + outl, &finl) <= 0) {
            ERR_clear_error();
            kg_err_set(err, KG_STEP_UNWRAP, "wrapped_key fails AES-256-GCM authentication");
            goto err;
        }
    }
    if (!kg_wrap_parse_private_key(plain, plain_len, reference, key, err))
        goto err;
    ok = 1;
err:
    OPENSSL_secure_clear_free(swk, SWK_LEN);
    if (plain != NULL)
        OPENSSL_secure_clear_free(plain, plain_len + 1);
    EVP_CIPHER_CTX_free(cctx);
    EVP_CIPHER_free(gcm);
    return ok;
}

#define PEM_BEGIN "-----BEGIN PRIVATE KEY-----"
#define PEM_END "-----END PRIVATE KEY-----"

int kg_wrap_parse_resource(const uint8_t *data, size_t len, EVP_PKEY **key, kg_err *err)
{
    const char *text = (const char *)data, *begin = NULL, *end = NULL;
    uint8_t *b64 = NULL, *der = NULL;
    size_t b64_len = 0, der_len = 0;
    int ok = 0;

    *key = NULL;
    /* PEM: only the PRIVATE KEY block counts (an EC PARAMETERS block may precede it) */
    for (size_t i = 0; i + strlen(PEM_BEGIN) <= len; i++)
        if (memcmp(text + i, PEM_BEGIN, strlen(PEM_BEGIN)) == 0) {
            begin = text + i + strlen(PEM_BEGIN);
            break;
        }
    if (begin == NULL) {
        if (len >= 10 && memcmp(data, "-----BEGIN", 10) == 0)
            return kg_err_set(err, KG_STEP_UNWRAP,
                              "resource is PEM without a PRIVATE KEY (PKCS#8) block (PKCS#1, SEC1 and "
                              "encrypted keys are not accepted)");
        return kg_wrap_parse_pkcs8(data, len, key, err);
    }
    for (const char *p = begin; p + strlen(PEM_END) <= text + len; p++)
        if (memcmp(p, PEM_END, strlen(PEM_END)) == 0) {
            end = p;
            break;
        }
    if (end == NULL)
        return kg_err_set(err, KG_STEP_UNWRAP, "resource PEM has no " PEM_END " line");
    /* the base64 body without line breaks, in the secure heap like the key it encodes */
    if ((b64 = OPENSSL_secure_malloc((size_t)(end - begin) + 1)) == NULL) {
        kg_err_set(err, KG_STEP_INTERNAL, "out of secure memory");
        goto err;
    }
    for (const char *p = begin; p < end; p++) {
        if (*p == '\r' || *p == '\n' || *p == ' ' || *p == '\t')
            continue;
        b64[b64_len++] = (uint8_t)*p;
    }
    if (b64_len % 4 != 0 || b64_len == 0 || (der = OPENSSL_secure_malloc(b64_len / 4 * 3)) == NULL) {
        kg_err_set(err, KG_STEP_UNWRAP, "resource PEM body is not base64");
        goto err;
    }
    {
        int n = EVP_DecodeBlock(der, b64, (int)b64_len);
        size_t pad = (b64[b64_len - 1] == '=') + (b64[b64_len - 2] == '=');
        if (n < 0 || (size_t)n < pad) {
            kg_err_set(err, KG_STEP_UNWRAP, "resource PEM body is not base64");
            goto err;
        }
        der_len = (size_t)n - pad;
    }
    ok = kg_wrap_parse_pkcs8(der, der_len, key, err);
err:
    if (b64 != NULL)
        OPENSSL_secure_clear_free(b64, (size_t)(end - begin) + 1);
    if (der != NULL)
        OPENSSL_secure_clear_free(der, b64_len / 4 * 3);
    return ok;
}
