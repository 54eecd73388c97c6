/* SPDX-License-Identifier: Apache-2.0 */
#include "kg_wrap.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/decoder.h>
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

EVP_PKEY *kg_wrap_key_new(kg_err *err)
{
    EVP_PKEY_CTX *ctx;
    EVP_PKEY *key = NULL;

    if (!no_default_engine(err))
        return NULL;
    ctx = kg_pkey_ctx_new_from_name(NULL, "RSA");
    if (ctx == NULL || EVP_PKEY_keygen_init(ctx) <= 0 ||
        EVP_PKEY_CTX_set_rsa_keygen_bits(ctx, KG_WRAP_RSA_BITS) <= 0 || EVP_PKEY_keygen(ctx, &key) <= 0) {
        kg_err_set(err, KG_STEP_WRAPKEY, "RSA-%d key generation failed", KG_WRAP_RSA_BITS);
        kg_err_add_openssl(err);
        key = NULL;
    }
    EVP_PKEY_CTX_free(ctx);
    return key;
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

static int key_supported(const EVP_PKEY *pk)
{
    char group[32] = "";
    if (EVP_PKEY_is_a(pk, "RSA"))
        return EVP_PKEY_get_bits(pk) >= 2048 && EVP_PKEY_get_bits(pk) <= 4096;
    return EVP_PKEY_is_a(pk, "EC") &&
           EVP_PKEY_get_utf8_string_param(pk, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group), NULL) &&
           (strcmp(group, "prime256v1") == 0 || strcmp(group, "secp384r1") == 0);
}

/* The key type PrivateKeyInfo's AlgorithmIdentifier names: "RSA", "EC", "" for any other
 * algorithm, NULL when the headers or the AlgorithmIdentifier do not parse. Given the type,
 * OSSL_DECODER_CTX_new_for_pkey sets up only that type's decoders: 1.45 M instead of 4.7 M
 * instructions per released P-256 key (bench/RESULTS.md, P4); anything else is refused before a
 * decoder is set up at all. Reads the headers and the AlgorithmIdentifier only, never the private
 * key octets. */
static const char *pkcs8_key_type(const uint8_t *der, size_t len)
{
    const unsigned char *p = der;
    long plen;
    int tag, cls, nid;
    X509_ALGOR *alg;

    if (len > LONG_MAX || (ASN1_get_object(&p, &plen, &tag, &cls, (long)len) & 0x80) != 0 ||
        tag != V_ASN1_SEQUENCE)
        return NULL;
    if ((ASN1_get_object(&p, &plen, &tag, &cls, (long)(len - (size_t)(p - der))) & 0x80) != 0 ||
        tag != V_ASN1_INTEGER || plen > (long)(len - (size_t)(p - der)))
        return NULL;
    p += plen; /* the version */
    if ((alg = d2i_X509_ALGOR(NULL, &p, (long)(len - (size_t)(p - der)))) == NULL) {
        ERR_clear_error();
        return NULL;
    }
    nid = OBJ_obj2nid(alg->algorithm);
    X509_ALGOR_free(alg);
    return nid == NID_rsaEncryption ? "RSA" : nid == NID_X9_62_id_ecPublicKey ? "EC" : "";
}

/* The next TLV of ECPrivateKey at *p (end e): 1 with its content, tag and class. */
static int next_tlv(const unsigned char **p, const unsigned char *e, int *tag, int *cls,
                    const unsigned char **c, long *clen)
{
    if (*p >= e || (ASN1_get_object(p, clen, tag, cls, e - *p) & 0x80) != 0 || *clen > e - *p)
        return 0;
    *c = *p;
    *p += *clen;
    return 1;
}

/*
 * EC keys without OpenSSL's ECPrivateKey decoder: it copies the big-endian scalar into ordinary
 * heap memory and frees it without zeroizing, which leaves the key in the process after a lease
 * wipe (issue 12's memory scan found it). Here the scalar is read in place from the PKCS#8
 * structure (freed with ASN1_STRING_clear_free) into a secure-heap BIGNUM. Returns 1 with *key,
 * 0 with *key NULL when this is no EC key with an embedded public key (the caller decodes).
 */
static int parse_ec_in_place(const uint8_t *der, size_t len, EVP_PKEY **key)
{
    const unsigned char *in = der, *pk, *p, *e, *c, *scalar = NULL, *pub = NULL;
    PKCS8_PRIV_KEY_INFO *p8 = d2i_PKCS8_PRIV_KEY_INFO(NULL, &in, (long)len);
    const ASN1_OBJECT *alg;
    const X509_ALGOR *algor;
    const void *pval;
    int pklen, ptype, tag, cls, nid;
    long clen, scalar_len = 0, pub_len = 0;
    OSSL_PARAM_BLD *bld = NULL;
    OSSL_PARAM *params = NULL;
    EVP_PKEY_CTX *pctx = NULL;
    BIGNUM *d = NULL;
    const char *group;

    *key = NULL;
    if (p8 == NULL || in != der + len || !PKCS8_pkey_get0(&alg, &pk, &pklen, &algor, p8) ||
        OBJ_obj2nid(alg) != NID_X9_62_id_ecPublicKey)
        goto done;
    X509_ALGOR_get0(NULL, &ptype, &pval, algor);
    if (ptype != V_ASN1_OBJECT || (nid = OBJ_obj2nid(pval)) == NID_undef || (group = OBJ_nid2sn(nid)) == NULL)
        goto done;
    p = pk;
    e = pk + pklen;
    /* ECPrivateKey ::= SEQUENCE { version 1, privateKey OCTET STRING, [0] params OPTIONAL,
     *                             [1] publicKey BIT STRING OPTIONAL } */
    if (!next_tlv(&p, e, &tag, &cls, &c, &clen) || tag != V_ASN1_SEQUENCE || p != e)
        goto done;
    p = c;
    e = c + clen;
    if (!next_tlv(&p, e, &tag, &cls, &c, &clen) || tag != V_ASN1_INTEGER || clen != 1 || c[0] != 1)
        goto done;
    if (!next_tlv(&p, e, &tag, &cls, &scalar, &scalar_len) || tag != V_ASN1_OCTET_STRING)
        goto done;
    while (p < e && next_tlv(&p, e, &tag, &cls, &c, &clen))
        if (cls == V_ASN1_CONTEXT_SPECIFIC && tag == 1) {
            const unsigned char *q = c;
            if (next_tlv(&q, c + clen, &tag, &cls, &pub, &pub_len) && tag == V_ASN1_BIT_STRING &&
                pub_len > 1 && pub[0] == 0) {
                pub++; /* no unused bits */
                pub_len--;
            } else
                pub = NULL;
        }
    if (pub == NULL || scalar_len == 0 || (d = BN_secure_new()) == NULL ||
        BN_bin2bn(scalar, (int)scalar_len, d) == NULL || (bld = OSSL_PARAM_BLD_new()) == NULL ||
        !OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, group, 0) ||
        !OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, pub, (size_t)pub_len) ||
        !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_PRIV_KEY, d) || /* secure BN: secure param block */
        (params = OSSL_PARAM_BLD_to_param(bld)) == NULL ||
        (pctx = kg_pkey_ctx_new_from_name(kg_libctx(), "EC")) == NULL || EVP_PKEY_fromdata_init(pctx) <= 0 ||
        EVP_PKEY_fromdata(pctx, key, EVP_PKEY_KEYPAIR, params) <= 0)
        *key = NULL;
done:
    EVP_PKEY_CTX_free(pctx);
    OSSL_PARAM_free(params); /* clears the secure block holding the scalar */
    OSSL_PARAM_BLD_free(bld);
    BN_clear_free(d);
    PKCS8_PRIV_KEY_INFO_free(p8); /* clears the private key octets */
    ERR_clear_error();
    return *key != NULL;
}

static int parse_pkcs8(const uint8_t *der, size_t len, EVP_PKEY **key, kg_err *err)
{
    if (parse_ec_in_place(der, len, key)) {
        if (!key_supported(*key)) {
            EVP_PKEY_free(*key);
            *key = NULL;
            return kg_err_set(err, KG_STEP_UNWRAP,
                              "released key type is not RSA 2048..4096 or EC P-256/P-384");
        }
        return 1;
    }
    OSSL_DECODER_CTX *dctx;
    const unsigned char *p = der;
    size_t left = len;
    EVP_PKEY *pk = NULL;
    const char *type = pkcs8_key_type(der, len);

    *key = NULL;
    if (type == NULL) {
        ERR_clear_error(); /* ASN1_get_object's */
        return kg_err_set(err, KG_STEP_UNWRAP, "released key is not PKCS#8 PrivateKeyInfo DER");
    }
    if (type[0] == '\0')
        return kg_err_set(err, KG_STEP_UNWRAP, "released key type is not RSA 2048..4096 or EC P-256/P-384");
    dctx = OSSL_DECODER_CTX_new_for_pkey(&pk, "DER", "PrivateKeyInfo", type, OSSL_KEYMGMT_SELECT_KEYPAIR,
                                         kg_libctx(), NULL);
    if (dctx == NULL)
        return kg_err_set(err, KG_STEP_INTERNAL, "no PKCS#8 decoder");
    if (!OSSL_DECODER_from_data(dctx, &p, &left) || pk == NULL || left != 0) {
        OSSL_DECODER_CTX_free(dctx);
        EVP_PKEY_free(pk);
        ERR_clear_error();
        return kg_err_set(err, KG_STEP_UNWRAP, "released key is not PKCS#8 PrivateKeyInfo DER");
    }
    OSSL_DECODER_CTX_free(dctx);
    if (!key_supported(pk)) {
        EVP_PKEY_free(pk);
        return kg_err_set(err, KG_STEP_UNWRAP, "released key type is not RSA 2048..4096 or EC P-256/P-384");
    }
    *key = pk;
    return 1;
}

/*
 * PKCS#8 carries both halves and nothing ties them: an EC key's embedded publicKey is taken as
 * given, an RSA key's d, p, q need not make its n. The public half is what the reference and
 * the certificate are matched against, so a key whose private half differs would pass that
 * match and then sign with another key. OpenSSL's pairwise check: EC scalar * G == public
 * point; RSA n == p * q, p and q prime, d * e == 1 mod lcm(p-1, q-1), CRT values. Cost, once per
 * release (2-core test VM under load): EC < 2 ms; RSA-2048 60 ms, -3072 180 ms, -4096 340 ms
 * (mostly the primality tests).
 */
int kg_wrap_parse_pkcs8(const uint8_t *der, size_t len, EVP_PKEY **key, kg_err *err)
{
    EVP_PKEY_CTX *ctx;
    int ok;

    if (!parse_pkcs8(der, len, key, err))
        return 0;
    ctx = EVP_PKEY_CTX_new_from_pkey(kg_libctx(), *key, NULL);
    ok = ctx != NULL && EVP_PKEY_pairwise_check(ctx) == 1;
    EVP_PKEY_CTX_free(ctx);
    ERR_clear_error();
    if (ok)
        return 1;
    EVP_PKEY_free(*key);
    *key = NULL;
    return kg_err_set(err, KG_STEP_UNWRAP,
                      "the released private key does not match its own public key (pairwise consistency "
                      "check failed)");
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
                   const uint8_t *wrapped_swk, size_t wrapped_swk_len, EVP_PKEY **key, kg_err *err)
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
    if (!kg_wrap_parse_pkcs8(plain, plain_len, key, err))
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

EVP_PKEY *kg_wrap_tee_key_new(const char *kind, kg_err *err)
{
    EVP_PKEY *key;

    if (strcmp(kind, "rsa") == 0)
        return kg_wrap_key_new(err);
    if (!no_default_engine(err))
        return NULL;
    key = kg_pkey_ec_keygen(NULL, "P-256");
    if (key == NULL) {
        kg_err_set(err, KG_STEP_WRAPKEY, "EC P-256 TEE key generation failed");
        kg_err_add_openssl(err);
    }
    return key;
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
