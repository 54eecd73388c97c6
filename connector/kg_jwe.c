/* SPDX-License-Identifier: Apache-2.0 */
#include "kg_jwe.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/params.h>
#include <openssl/rsa.h>
#include <stdlib.h>
#include <string.h>

#include "kg_b64.h"
#include "kg_jcs.h"
#include "kg_libctx.h"

#define CEK_LEN 32
#define GCM_IV_LEN 12
#define GCM_TAG_LEN 16
#define KW_LEN (CEK_LEN + 8)
#define ALG_ECDH "ECDH-ES+A256KW"
#define ALG_RSA "RSA-OAEP-256"
#define MAX_PARTY_INFO 1024

/* The decoded parts of one JWE. */
typedef struct jwe_parts {
    const char *protected_b64; /* as received (the AAD) */
    const char *aad_b64;       /* optional "aad" member */
    cJSON *header;
    uint8_t *encrypted_key, *iv, *ciphertext, *tag;
    size_t encrypted_key_len, iv_len, ciphertext_len, tag_len;
} jwe_parts;

static void parts_clear(jwe_parts *p)
{
    cJSON_Delete(p->header);
    free(p->encrypted_key);
    free(p->iv);
    free(p->ciphertext);
    free(p->tag);
    memset(p, 0, sizeof(*p));
}

#define MAX_MEMBERS 32 /* a JWE or its header has a handful; bounds the quadratic check below */

/* 1 if obj has at most MAX_MEMBERS members and no two share a name. */
static int unique_members(const cJSON *obj)
{
    if (cJSON_GetArraySize(obj) > MAX_MEMBERS)
        return 0;
    for (const cJSON *a = obj->child; a != NULL; a = a->next)
        for (const cJSON *b = a->next; b != NULL; b = b->next)
            if (a->string != NULL && b->string != NULL && strcmp(a->string, b->string) == 0)
                return 0;
    return 1;
}

static const char *str_member(const cJSON *obj, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static int b64url_member(const cJSON *obj, const char *name, int required, uint8_t **out, size_t *len,
                         kg_step step, kg_err *err)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);
    *out = NULL;
    *len = 0;
    if (v == NULL && !required)
        return 1;
    if (!cJSON_IsString(v) || !kg_b64url_decode(v->valuestring, strlen(v->valuestring), out, len))
        return kg_err_set(err, step, "JWE %s is %s", name, v == NULL ? "missing" : "not base64url");
    return 1;
}

static int parse_parts(const char *json, size_t json_len, cJSON **root, jwe_parts *p, kg_step step,
                       kg_err *err)
{
    static const char *const refused[] = {"header", "unprotected", "recipients", NULL};
    const char *hdr_b64;
    uint8_t *hdr = NULL;
    size_t hdr_len = 0;

    if (json_len > KG_JWE_MAX_LEN)
        return kg_err_set(err, step, "JWE of %zu bytes exceeds %d", json_len, KG_JWE_MAX_LEN);
    *root = cJSON_ParseWithLength(json, json_len);
    if (!cJSON_IsObject(*root))
        return kg_err_set(err, step, "JWE is not a JSON object");
    if (!unique_members(*root))
        return kg_err_set(err, step, "JWE has a member twice or more than %d members", MAX_MEMBERS);
    for (const char *const *r = refused; *r != NULL; r++)
        if (cJSON_GetObjectItemCaseSensitive(*root, *r) != NULL)
            return kg_err_set(err, step,
                              "JWE member '%s' is not accepted (flattened form, protected header only)", *r);
    if ((hdr_b64 = str_member(*root, "protected")) == NULL)
        return kg_err_set(err, step, "JWE protected header is missing");
    p->protected_b64 = hdr_b64;
    if (cJSON_GetObjectItemCaseSensitive(*root, "aad") != NULL &&
        (p->aad_b64 = str_member(*root, "aad")) == NULL)
        return kg_err_set(err, step, "JWE aad is not a string");
    if (!kg_b64url_decode(hdr_b64, strlen(hdr_b64), &hdr, &hdr_len))
        return kg_err_set(err, step, "JWE protected header is not base64url");
    p->header = cJSON_ParseWithLength((const char *)hdr, hdr_len);
    free(hdr);
    if (!cJSON_IsObject(p->header))
        return kg_err_set(err, step, "JWE protected header is not a JSON object");
    if (!unique_members(p->header))
        return kg_err_set(err, step, "JWE protected header has a member twice or more than %d members",
                          MAX_MEMBERS);
    return b64url_member(*root, "encrypted_key", 1, &p->encrypted_key, &p->encrypted_key_len, step, err) &&
           b64url_member(*root, "iv", 1, &p->iv, &p->iv_len, step, err) &&
           b64url_member(*root, "ciphertext", 1, &p->ciphertext, &p->ciphertext_len, step, err) &&
           b64url_member(*root, "tag", 1, &p->tag, &p->tag_len, step, err);
}

/* "P-256"/"P-521" of an EC key (the curves Trustee's JWE code supports), or NULL. */
static const char *jwk_curve(const EVP_PKEY *key, size_t *coord_len)
{
    char group[32] = "";
    if (!EVP_PKEY_is_a(key, "EC") ||
        !EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group), NULL))
        return NULL;
    if (strcmp(group, "prime256v1") == 0) {
        *coord_len = 32;
        return "P-256";
    }
    if (strcmp(group, "secp521r1") == 0) {
        *coord_len = 66;
        return "P-521";
    }
    return NULL;
}

static int add_b64url_bn(cJSON *obj, const char *name, const BIGNUM *bn, size_t pad_to)
{
    size_t n = pad_to ? pad_to : (size_t)BN_num_bytes(bn);
    uint8_t *buf = malloc(n ? n : 1);
    char *s = NULL;
    int ok = buf != NULL && BN_bn2binpad(bn, buf, (int)n) == (int)n &&
             (s = kg_b64url_encode(buf, n)) != NULL && cJSON_AddStringToObject(obj, name, s) != NULL;
    free(buf);
    free(s);
    return ok;
}

/* The members of the public JWK; with thumbprint_only, the RFC 7638 required set. */
static cJSON *public_jwk(const EVP_PKEY *key, int thumbprint_only, kg_step step, kg_err *err)
{
    cJSON *jwk = cJSON_CreateObject();
    BIGNUM *a = NULL, *b = NULL;
    size_t coord = 0;
    const char *crv = jwk_curve(key, &coord);
    int ok = 0;

    if (jwk == NULL) {
        kg_err_set(err, KG_STEP_INTERNAL, "out of memory");
        goto err;
    }
    if (crv != NULL) {
        if (!EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_EC_PUB_X, &a) ||
            !EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_EC_PUB_Y, &b)) {
            kg_err_set(err, step, "TEE key: no EC public point");
            goto err;
        }
        ok = cJSON_AddStringToObject(jwk, "kty", "EC") && cJSON_AddStringToObject(jwk, "crv", crv) &&
             (thumbprint_only || cJSON_AddStringToObject(jwk, "alg", ALG_ECDH)) &&
             add_b64url_bn(jwk, "x", a, coord) && add_b64url_bn(jwk, "y", b, coord);
    } else if (EVP_PKEY_is_a(key, "RSA")) {
        if (!EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_RSA_N, &a) ||
            !EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_RSA_E, &b)) {
            kg_err_set(err, step, "TEE key: no RSA modulus");
            goto err;
        }
        ok = cJSON_AddStringToObject(jwk, "kty", "RSA") &&
             (thumbprint_only || cJSON_AddStringToObject(jwk, "alg", ALG_RSA)) &&
             add_b64url_bn(jwk, "n", a, 0) && add_b64url_bn(jwk, "e", b, 0);
    } else {
        kg_err_set(err, step, "TEE key is neither EC P-256/P-521 nor RSA");
        goto err;
    }
    if (!ok)
        kg_err_set(err, KG_STEP_INTERNAL, "out of memory");
err:
    BN_free(a);
    BN_free(b);
    if (!ok) {
        cJSON_Delete(jwk);
        jwk = NULL;
    }
    return jwk;
}

cJSON *kg_jwe_public_jwk(const EVP_PKEY *key, kg_step step, kg_err *err)
{
    return public_jwk(key, 0, step, err);
}

int kg_jwe_thumbprint(const EVP_PKEY *key, char *out, size_t size, kg_err *err)
{
    cJSON *jwk = public_jwk(key, 1, KG_STEP_UNWRAP, err);
    char *text = NULL, *b64 = NULL;
    unsigned char md[32];
    size_t len = 0;
    int ok = 0;

    if (jwk == NULL || !kg_jcs_serialize(jwk, KG_STEP_UNWRAP, &text, &len, err))
        goto err;
    if (!EVP_Q_digest(kg_libctx(), "SHA256", NULL, text, len, md, NULL) ||
        (b64 = kg_b64url_encode(md, 32)) == NULL || strlen(b64) >= size) {
        kg_err_set(err, KG_STEP_INTERNAL, "JWK thumbprint failed");
        goto err;
    }
    memcpy(out, b64, strlen(b64) + 1);
    ok = 1;
err:
    free(text);
    free(b64);
    cJSON_Delete(jwk);
    return ok;
}

/* The sender's ephemeral key from "epk": an EC point on our curve. */
static EVP_PKEY *peer_key(const cJSON *epk, const char *crv, size_t coord, kg_step step, kg_err *err)
{
    const char *group = strcmp(crv, "P-256") == 0 ? "prime256v1" : "secp521r1";
    uint8_t *x = NULL, *y = NULL, point[1 + 2 * 66];
    size_t xl = 0, yl = 0;
    OSSL_PARAM params[3];
    EVP_PKEY_CTX *ctx = NULL, *check = NULL;
    EVP_PKEY *peer = NULL;

    if (!cJSON_IsObject(epk)) {
        kg_err_set(err, step, "JWE header has no epk object for " ALG_ECDH);
        goto err;
    }
    if (str_member(epk, "kty") == NULL || strcmp(str_member(epk, "kty"), "EC") != 0 ||
        str_member(epk, "crv") == NULL || strcmp(str_member(epk, "crv"), crv) != 0) {
        kg_err_set(err, step, "JWE epk is not an EC key on %s (our TEE key's curve)", crv);
        goto err;
    }
    if (!b64url_member(epk, "x", 1, &x, &xl, step, err) || !b64url_member(epk, "y", 1, &y, &yl, step, err))
        goto err;
    if (xl != coord || yl != coord) {
        kg_err_set(err, step, "JWE epk coordinates are not %zu bytes", coord);
        goto err;
    }
    point[0] = 0x04;
    memcpy(point + 1, x, coord);
    memcpy(point + 1 + coord, y, coord);
    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, (char *)group, 0);
    params[1] = OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY, point, 1 + 2 * coord);
    params[2] = OSSL_PARAM_construct_end();
    if ((ctx = kg_pkey_ctx_new_from_name(NULL, "EC")) == NULL || EVP_PKEY_fromdata_init(ctx) <= 0 ||
        EVP_PKEY_fromdata(ctx, &peer, EVP_PKEY_PUBLIC_KEY, params) <= 0 ||
        (check = EVP_PKEY_CTX_new_from_pkey(kg_libctx(), peer, NULL)) == NULL ||
        EVP_PKEY_public_check(check) <= 0) {
        ERR_clear_error();
        EVP_PKEY_free(peer);
        peer = NULL;
        kg_err_set(err, step, "JWE epk is not a point on %s", crv);
    }
err:
    free(x);
    free(y);
    EVP_PKEY_CTX_free(ctx);
    EVP_PKEY_CTX_free(check);
    return peer;
}

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* KEK = Concat KDF (NIST SP 800-56A §5.8.1 = OpenSSL's single-step KDF "SSKDF": one round of
 * SHA-256(counter ‖ Z ‖ OtherInfo)) with OtherInfo per JWA §4.6.2. */
static int concat_kdf(const uint8_t *z, size_t zlen, const cJSON *header, uint8_t kek[32], kg_step step,
                      kg_err *err)
{
    uint8_t *apu = NULL, *apv = NULL, *info = NULL;
    size_t apu_len = 0, apv_len = 0, info_len = 0, off = 0;
    EVP_KDF *kdf = NULL;
    EVP_KDF_CTX *kctx = NULL;
    OSSL_PARAM params[4];
    int ok = 0;

    if (!b64url_member(header, "apu", 0, &apu, &apu_len, step, err) ||
        !b64url_member(header, "apv", 0, &apv, &apv_len, step, err))
        goto err;
    if (apu_len > MAX_PARTY_INFO || apv_len > MAX_PARTY_INFO) {
        kg_err_set(err, step, "JWE apu/apv longer than %d bytes", MAX_PARTY_INFO);
        goto err;
    }
    info_len = 4 + strlen(ALG_ECDH) + 4 + apu_len + 4 + apv_len + 4;
    if ((info = malloc(info_len)) == NULL) {
        kg_err_set(err, KG_STEP_INTERNAL, "out of memory");
        goto err;
    }
    put_be32(info + off, (uint32_t)strlen(ALG_ECDH));
    memcpy(info + off + 4, ALG_ECDH, strlen(ALG_ECDH));
    off += 4 + strlen(ALG_ECDH);
    put_be32(info + off, (uint32_t)apu_len);
    if (apu_len)
        memcpy(info + off + 4, apu, apu_len);
    off += 4 + apu_len;
    put_be32(info + off, (uint32_t)apv_len);
    if (apv_len)
        memcpy(info + off + 4, apv, apv_len);
    off += 4 + apv_len;
    put_be32(info + off, 256); /* SuppPubInfo: keydatalen in bits */
    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, "SHA256", 0);
    params[1] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)z, zlen);
    params[2] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, info, info_len);
    params[3] = OSSL_PARAM_construct_end();
    if ((kdf = EVP_KDF_fetch(kg_libctx(), "SSKDF", NULL)) == NULL || (kctx = EVP_KDF_CTX_new(kdf)) == NULL ||
        EVP_KDF_derive(kctx, kek, 32, params) <= 0) {
        ERR_clear_error();
        kg_err_set(err, KG_STEP_INTERNAL, "Concat KDF (SSKDF, SHA-256) failed");
        goto err;
    }
    ok = 1;
err:
    free(apu);
    free(apv);
    free(info);
    EVP_KDF_CTX_free(kctx);
    EVP_KDF_free(kdf);
    return ok;
}

/* AES-256 key unwrap (RFC 3394, default IV) of the 40-byte encrypted_key into cek. */
static int aes_kw_unwrap(const uint8_t kek[32], const uint8_t *wrapped, size_t len, uint8_t cek[CEK_LEN],
                         kg_step step, kg_err *err)
{
    EVP_CIPHER *kw = EVP_CIPHER_fetch(kg_libctx(), "AES-256-WRAP", NULL);
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    uint8_t out[KW_LEN + 16];
    int outl = 0, finl = 0, ok = 0;

    if (kw == NULL || c == NULL) {
        kg_err_set(err, KG_STEP_INTERNAL, "AES-256-WRAP is not available");
        goto err;
    }
    if (len != KW_LEN) {
        kg_err_set(err, step, "JWE encrypted_key is %zu bytes, not %d (AES-256-KW of a 256-bit CEK)", len,
                   KW_LEN);
        goto err;
    }
    EVP_CIPHER_CTX_set_flags(c, EVP_CIPHER_CTX_FLAG_WRAP_ALLOW);
    if (!EVP_DecryptInit_ex2(c, kw, kek, NULL, NULL) ||
        EVP_DecryptUpdate(c, out, &outl, wrapped, (int)len) <= 0 ||
        EVP_DecryptFinal_ex(c, out + outl, &finl) <= 0 || outl + finl != CEK_LEN) {
        ERR_clear_error();
        kg_err_set(err, step,
                   "JWE encrypted_key fails the AES-256-KW integrity check (epk or key not for our TEE key)");
        goto err;
    }
    memcpy(cek, out, CEK_LEN);
    ok = 1;
err:
    OPENSSL_cleanse(out, sizeof(out));
    EVP_CIPHER_CTX_free(c);
    EVP_CIPHER_free(kw);
    return ok;
}

static int cek_ecdh(const EVP_PKEY *key, const char *crv, size_t coord, const jwe_parts *p,
                    uint8_t cek[CEK_LEN], kg_step step, kg_err *err)
{
    EVP_PKEY *peer = peer_key(cJSON_GetObjectItemCaseSensitive(p->header, "epk"), crv, coord, step, err);
    EVP_PKEY_CTX *ctx = NULL;
    uint8_t *z = NULL, *kek = OPENSSL_secure_malloc(32);
    size_t zlen = 0;
    int ok = 0;

    if (peer == NULL)
        goto err;
    if (kek == NULL || (ctx = EVP_PKEY_CTX_new_from_pkey(kg_libctx(), (EVP_PKEY *)key, NULL)) == NULL ||
        EVP_PKEY_derive_init(ctx) <= 0 || EVP_PKEY_derive_set_peer(ctx, peer) <= 0 ||
        EVP_PKEY_derive(ctx, NULL, &zlen) <= 0 || (z = OPENSSL_secure_malloc(zlen)) == NULL ||
        EVP_PKEY_derive(ctx, z, &zlen) <= 0) {
        ERR_clear_error();
        kg_err_set(err, step, "ECDH with the JWE epk failed");
        goto err;
    }
    ok = concat_kdf(z, zlen, p->header, kek, step, err) &&
         aes_kw_unwrap(kek, p->encrypted_key, p->encrypted_key_len, cek, step, err);
err:
    if (z != NULL)
        OPENSSL_secure_clear_free(z, zlen);
    if (kek != NULL)
        OPENSSL_secure_clear_free(kek, 32);
    EVP_PKEY_CTX_free(ctx);
    EVP_PKEY_free(peer);
    return ok;
}

static int cek_rsa(const EVP_PKEY *key, const jwe_parts *p, uint8_t cek[CEK_LEN], kg_step step, kg_err *err)
{
    size_t size = (size_t)EVP_PKEY_get_size(key), outlen = size;
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_pkey(kg_libctx(), (EVP_PKEY *)key, NULL);
    uint8_t *out = OPENSSL_secure_malloc(size);
    int ok = 0;

    if (ctx == NULL || out == NULL) {
        kg_err_set(err, KG_STEP_INTERNAL, "out of memory");
        goto err;
    }
    if (p->encrypted_key_len != size) {
        kg_err_set(err, step, "JWE encrypted_key is %zu bytes, not the %zu of our RSA TEE key",
                   p->encrypted_key_len, size);
        goto err;
    }
    if (EVP_PKEY_decrypt_init(ctx) <= 0 || EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_OAEP_PADDING) <= 0 ||
        EVP_PKEY_CTX_set_rsa_oaep_md_name(ctx, "SHA256", NULL) <= 0 ||
        EVP_PKEY_CTX_set_rsa_mgf1_md_name(ctx, "SHA256", NULL) <= 0 ||
        EVP_PKEY_decrypt(ctx, out, &outlen, p->encrypted_key, p->encrypted_key_len) <= 0 ||
        outlen != CEK_LEN) {
        ERR_clear_error();
        kg_err_set(err, step,
                   "JWE encrypted_key does not decrypt (RSA-OAEP-256) to a 32-byte key for our TEE key");
        goto err;
    }
    memcpy(cek, out, CEK_LEN);
    ok = 1;
err:
    if (out != NULL)
        OPENSSL_secure_clear_free(out, size);
    EVP_PKEY_CTX_free(ctx);
    return ok;
}

/* A256GCM with AAD = protected [‖ "." ‖ aad], all as received. */
static int gcm_decrypt(const uint8_t cek[CEK_LEN], const jwe_parts *p, uint8_t **plain, size_t *plain_len,
                       kg_step step, kg_err *err)
{
    EVP_CIPHER *gcm = EVP_CIPHER_fetch(kg_libctx(), "AES-256-GCM", NULL);
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    uint8_t *out = NULL;
    int outl = 0, finl = 0, ok = 0;

    if (gcm == NULL || c == NULL) {
        kg_err_set(err, KG_STEP_INTERNAL, "out of memory");
        goto err;
    }
    if (p->iv_len != GCM_IV_LEN || p->tag_len != GCM_TAG_LEN) {
        kg_err_set(err, step, "JWE iv/tag are %zu/%zu bytes, not %d/%d (A256GCM)", p->iv_len, p->tag_len,
                   GCM_IV_LEN, GCM_TAG_LEN);
        goto err;
    }
    if (p->ciphertext_len > KG_JWE_MAX_PLAINTEXT) {
        kg_err_set(err, step, "JWE ciphertext of %zu bytes exceeds %d", p->ciphertext_len,
                   KG_JWE_MAX_PLAINTEXT);
        goto err;
    }
    if ((out = OPENSSL_secure_malloc(p->ciphertext_len + 1)) == NULL) {
        kg_err_set(err, KG_STEP_INTERNAL, "out of secure memory");
        goto err;
    }
    if (!EVP_DecryptInit_ex2(c, gcm, cek, p->iv, NULL) ||
        !EVP_DecryptUpdate(c, NULL, &outl, (const uint8_t *)p->protected_b64,
                           (int)strlen(p->protected_b64)) ||
        (p->aad_b64 != NULL &&
         (!EVP_DecryptUpdate(c, NULL, &outl, (const uint8_t *)".", 1) ||
          !EVP_DecryptUpdate(c, NULL, &outl, (const uint8_t *)p->aad_b64, (int)strlen(p->aad_b64)))) ||
        !EVP_DecryptUpdate(c, out, &outl, p->ciphertext, (int)p->ciphertext_len) ||
        !EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, GCM_TAG_LEN, p->tag) ||
        EVP_DecryptFinal_ex(c, out + outl, &finl) <= 0) {
        ERR_clear_error();
        kg_err_set(err, step,
                   "JWE fails A256GCM authentication (tag, ciphertext or protected header altered)");
        goto err;
    }
    out[p->ciphertext_len] = '\0';
    *plain = out;
    *plain_len = p->ciphertext_len;
    out = NULL;
    ok = 1;
err:
    if (out != NULL)
        OPENSSL_secure_clear_free(out, p->ciphertext_len + 1);
    EVP_CIPHER_CTX_free(c);
    EVP_CIPHER_free(gcm);
    return ok;
}

int kg_jwe_decrypt(const char *json, size_t json_len, const EVP_PKEY *key, kg_step step, uint8_t **plain,
                   size_t *plain_len, kg_err *err)
{
    cJSON *root = NULL;
    jwe_parts p;
    const char *alg, *enc, *crv;
    const cJSON *kid;
    uint8_t *cek = OPENSSL_secure_malloc(CEK_LEN);
    size_t coord = 0;
    int ok = 0;

    *plain = NULL;
    *plain_len = 0;
    memset(&p, 0, sizeof(p));
    if (cek == NULL) {
        kg_err_set(err, KG_STEP_INTERNAL, "out of secure memory");
        goto err;
    }
    if (json == NULL || !parse_parts(json, json_len, &root, &p, step, err))
        goto err;
    alg = str_member(p.header, "alg");
    enc = str_member(p.header, "enc");
    if (cJSON_GetObjectItemCaseSensitive(p.header, "crit") != NULL ||
        cJSON_GetObjectItemCaseSensitive(p.header, "zip") != NULL) {
        kg_err_set(err, step, "JWE header has crit or zip, which keygate does not implement");
        goto err;
    }
    if (enc == NULL || strcmp(enc, "A256GCM") != 0) {
        kg_err_set(err, step, "JWE enc '%.20s' is not A256GCM", enc ? enc : "");
        goto err;
    }
    if ((kid = cJSON_GetObjectItemCaseSensitive(p.header, "kid")) != NULL) {
        char ours[64];
        if (!kg_jwe_thumbprint(key, ours, sizeof(ours), err))
            goto err;
        if (!cJSON_IsString(kid) || strcmp(kid->valuestring, ours) != 0) {
            kg_err_set(err, step, "JWE kid '%.50s' is not our TEE key (thumbprint %s)",
                       cJSON_IsString(kid) ? kid->valuestring : "?", ours);
            goto err;
        }
    }
    crv = jwk_curve(key, &coord);
    if (alg != NULL && strcmp(alg, ALG_ECDH) == 0 && crv != NULL) {
        if (!cek_ecdh(key, crv, coord, &p, cek, step, err))
            goto err;
    } else if (alg != NULL && strcmp(alg, ALG_RSA) == 0 && EVP_PKEY_is_a(key, "RSA")) {
        if (!cek_rsa(key, &p, cek, step, err))
            goto err;
    } else {
        kg_err_set(err, step, "JWE alg '%.20s' does not fit our %s TEE key (%s)", alg ? alg : "",
                   crv ? "EC" : "RSA", crv ? ALG_ECDH : ALG_RSA);
        goto err;
    }
    ok = gcm_decrypt(cek, &p, plain, plain_len, step, err);
err:
    if (cek != NULL)
        OPENSSL_secure_clear_free(cek, CEK_LEN);
    parts_clear(&p);
    cJSON_Delete(root);
    return ok;
}
