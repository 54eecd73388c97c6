/* SPDX-License-Identifier: Apache-2.0 */
/* kg_agent_ops: one SIGN, DECRYPT or DERIVE on a released key (see kg_agent_ops.h). */
#include "kg_agent_ops.h"

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <string.h>

#include "kg_libctx.h"

static const char *md_name(kg_agent_digest d)
{
    switch (d) {
    case KG_AGENT_DIGEST_SHA1: return "SHA1";
    case KG_AGENT_DIGEST_SHA224: return "SHA224";
    case KG_AGENT_DIGEST_SHA256: return "SHA256";
    case KG_AGENT_DIGEST_SHA384: return "SHA384";
    case KG_AGENT_DIGEST_SHA512: return "SHA512";
    default: return NULL;
    }
}

static int is_rsa(const EVP_PKEY *key)
{
    return EVP_PKEY_is_a(key, "RSA") || EVP_PKEY_is_a(key, "RSA-PSS");
}

/* The protocol's salt length (§4) as OpenSSL's. OpenSSL 3.0 has no RSA_PSS_SALTLEN_AUTO_DIGEST_MAX:
 * "the digest's length, or less when the key is too small" is computed from the key's size the
 * way RFC 8017 §9.1.1 bounds it (emLen - hLen - 2). */
static int pss_salt(const EVP_PKEY *key, const kg_agent_req *req)
{
    int hlen = (int)kg_agent_digest_size(req->digest), bits, emlen, max;

    switch (req->salt_len) {
    case KG_AGENT_SALT_DIGEST: return RSA_PSS_SALTLEN_DIGEST;
    case KG_AGENT_SALT_MAX: return RSA_PSS_SALTLEN_MAX;
    case KG_AGENT_SALT_DIGEST_MAX:
        bits = EVP_PKEY_get_bits(key);
        emlen = (bits - 1 + 7) / 8;
        max = emlen - hlen - 2;
        return max < hlen ? (max < 0 ? 0 : max) : hlen;
    default: return req->salt_len;
    }
}

/* Sets the signature parameters of ctx for req. Returns 1, or 0 with err (a wrong key type). */
static int sign_setup(EVP_PKEY *key, EVP_PKEY_CTX *ctx, const kg_agent_req *req, kg_err *err)
{
    const char *scheme = kg_agent_scheme_name(req->scheme);
    int ok = 1;

    if (req->scheme == KG_AGENT_SCHEME_ECDSA) {
        if (!EVP_PKEY_is_a(key, "EC"))
            return kg_err_set(err, KG_AGENT_STEP, "SIGN %s: the key is not an EC key", scheme);
        return 1; /* no digest set: the data is the digest */
    }
    if (!is_rsa(key))
        return kg_err_set(err, KG_AGENT_STEP, "SIGN %s: the key is not an RSA key", scheme);
    if (req->scheme == KG_AGENT_SCHEME_RSA_PKCS1) {
        ok = EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PADDING) > 0;
        /* with a digest OpenSSL adds the DigestInfo and checks the length; NONE pads as given */
        if (ok && req->digest != KG_AGENT_DIGEST_NONE)
            ok = EVP_PKEY_CTX_set_signature_md(ctx, EVP_get_digestbyname(md_name(req->digest))) > 0;
    } else {
        OSSL_PARAM p[5];
        int salt = pss_salt(key, req);

        p[0] = OSSL_PARAM_construct_utf8_string(OSSL_SIGNATURE_PARAM_PAD_MODE,
                                                (char *)OSSL_PKEY_RSA_PAD_MODE_PSS, 0);
        p[1] = OSSL_PARAM_construct_utf8_string(OSSL_SIGNATURE_PARAM_DIGEST, (char *)md_name(req->digest), 0);
        p[2] = OSSL_PARAM_construct_utf8_string(OSSL_SIGNATURE_PARAM_MGF1_DIGEST,
                                                (char *)md_name(req->mgf1_digest), 0);
        p[3] = OSSL_PARAM_construct_int(OSSL_SIGNATURE_PARAM_PSS_SALTLEN, &salt);
        p[4] = OSSL_PARAM_construct_end();
        ok = EVP_PKEY_CTX_set_params(ctx, p) > 0;
    }
    if (!ok) {
        kg_err_set(err, KG_AGENT_STEP, "SIGN %s %s: parameters refused", scheme,
                   kg_agent_digest_name(req->digest));
        kg_err_add_openssl(err);
    }
    return ok;
}

static kg_agent_status do_sign(EVP_PKEY *key, const kg_agent_req *req, uint8_t **out, size_t *out_len,
                               kg_err *err)
{
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_pkey(kg_libctx(), key, NULL);
    kg_agent_status st = KG_AGENT_OP_FAILED;
    uint8_t *sig = NULL;
    size_t len = 0;

    if (ctx == NULL || EVP_PKEY_sign_init(ctx) <= 0) {
        kg_err_set(err, KG_AGENT_STEP, "SIGN: cannot start the operation");
        kg_err_add_openssl(err);
        goto err;
    }
    if (!sign_setup(key, ctx, req, err))
        goto err;
    if (EVP_PKEY_sign(ctx, NULL, &len, req->data, req->data_len) <= 0 ||
        (sig = OPENSSL_malloc(len)) == NULL || EVP_PKEY_sign(ctx, sig, &len, req->data, req->data_len) <= 0) {
        kg_err_set(err, KG_AGENT_STEP, "SIGN %s: the signature failed (%zu bytes of data for a %d-bit key)",
                   kg_agent_scheme_name(req->scheme), req->data_len, EVP_PKEY_get_bits(key));
        kg_err_add_openssl(err);
        goto err;
    }
    *out = sig;
    *out_len = len;
    sig = NULL;
    st = KG_AGENT_OK;
err:
    OPENSSL_free(sig);
    EVP_PKEY_CTX_free(ctx);
    return st;
}

static int decrypt_setup(EVP_PKEY_CTX *ctx, const kg_agent_req *req)
{
    OSSL_PARAM p[5];
    unsigned int cv = req->tls_client_version, nv = req->tls_negotiated_version;
    size_t n = 0;

    switch (req->padding) {
    case KG_AGENT_PAD_PKCS1:
        p[n++] = OSSL_PARAM_construct_utf8_string(OSSL_ASYM_CIPHER_PARAM_PAD_MODE,
                                                  (char *)OSSL_PKEY_RSA_PAD_MODE_PKCSV15, 0);
        break;
    case KG_AGENT_PAD_NONE:
        p[n++] = OSSL_PARAM_construct_utf8_string(OSSL_ASYM_CIPHER_PARAM_PAD_MODE,
                                                  (char *)OSSL_PKEY_RSA_PAD_MODE_NONE, 0);
        break;
    case KG_AGENT_PAD_OAEP:
        p[n++] = OSSL_PARAM_construct_utf8_string(OSSL_ASYM_CIPHER_PARAM_PAD_MODE,
                                                  (char *)OSSL_PKEY_RSA_PAD_MODE_OAEP, 0);
        p[n++] = OSSL_PARAM_construct_utf8_string(OSSL_ASYM_CIPHER_PARAM_OAEP_DIGEST,
                                                  (char *)md_name(req->digest), 0);
        p[n++] = OSSL_PARAM_construct_utf8_string(OSSL_ASYM_CIPHER_PARAM_MGF1_DIGEST,
                                                  (char *)md_name(req->mgf1_digest), 0);
        if (req->label != NULL)
            p[n++] = OSSL_PARAM_construct_octet_string(OSSL_ASYM_CIPHER_PARAM_OAEP_LABEL, (void *)req->label,
                                                       req->label_len);
        break;
    case KG_AGENT_PAD_PKCS1_TLS:
        /* RSA_PKCS1_WITH_TLS_PADDING: a bad padding or version gives a random pre-master secret */
        if (EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_WITH_TLS_PADDING) <= 0)
            return 0;
        p[n++] = OSSL_PARAM_construct_uint(OSSL_ASYM_CIPHER_PARAM_TLS_CLIENT_VERSION, &cv);
        if (nv != 0)
            p[n++] = OSSL_PARAM_construct_uint(OSSL_ASYM_CIPHER_PARAM_TLS_NEGOTIATED_VERSION, &nv);
        break;
    default: return 0;
    }
    p[n] = OSSL_PARAM_construct_end();
    return EVP_PKEY_CTX_set_params(ctx, p) > 0;
}

static kg_agent_status do_decrypt(EVP_PKEY *key, const kg_agent_req *req, uint8_t **out, size_t *out_len,
                                  kg_err *err)
{
    EVP_PKEY_CTX *ctx = NULL;
    kg_agent_status st = KG_AGENT_OP_FAILED;
    uint8_t *pt = NULL;
    size_t cap = 0, len;

    if (!is_rsa(key)) {
        kg_err_set(err, KG_AGENT_STEP, "DECRYPT: the key is not an RSA key");
        goto err;
    }
    if ((ctx = EVP_PKEY_CTX_new_from_pkey(kg_libctx(), key, NULL)) == NULL ||
        EVP_PKEY_decrypt_init(ctx) <= 0 || !decrypt_setup(ctx, req) ||
        EVP_PKEY_decrypt(ctx, NULL, &cap, req->data, req->data_len) <= 0 ||
        (pt = OPENSSL_malloc(cap == 0 ? 1 : cap)) == NULL) {
        kg_err_set(err, KG_AGENT_STEP, "DECRYPT %s: the operation cannot run with these parameters",
                   kg_agent_padding_name(req->padding));
        goto err;
    }
    len = cap;
    if (EVP_PKEY_decrypt(ctx, pt, &len, req->data, req->data_len) <= 0) {
        /* generic on purpose (docs/protocols/agent.md §5): no padding or length detail */
        kg_err_set(err, KG_AGENT_STEP, "DECRYPT %s: decryption failed", kg_agent_padding_name(req->padding));
        goto err;
    }
    *out = pt;
    *out_len = len;
    pt = NULL;
    st = KG_AGENT_OK;
err:
    ERR_clear_error();
    OPENSSL_clear_free(pt, cap);
    EVP_PKEY_CTX_free(ctx);
    return st;
}

static kg_agent_status do_derive(EVP_PKEY *key, const kg_agent_req *req, uint8_t **out, size_t *out_len,
                                 kg_err *err)
{
    const unsigned char *p = req->peer_key;
    EVP_PKEY *peer = NULL;
    EVP_PKEY_CTX *ctx = NULL;
    kg_agent_status st = KG_AGENT_OP_FAILED;
    uint8_t *secret = NULL;
    size_t len = 0;
    char mine[64] = "", theirs[64] = "";

    if (!EVP_PKEY_is_a(key, "EC")) {
        kg_err_set(err, KG_AGENT_STEP, "DERIVE: the key is not an EC key");
        goto err;
    }
    peer = d2i_PUBKEY_ex(NULL, &p, (long)req->peer_key_len, kg_libctx(), NULL);
    if (peer == NULL || p != req->peer_key + req->peer_key_len || !EVP_PKEY_is_a(peer, "EC")) {
        kg_err_set(err, KG_AGENT_STEP, "DERIVE: field PEER_KEY: not an EC SubjectPublicKeyInfo");
        goto err;
    }
    if (!EVP_PKEY_get_group_name(key, mine, sizeof(mine), NULL) ||
        !EVP_PKEY_get_group_name(peer, theirs, sizeof(theirs), NULL) || strcmp(mine, theirs) != 0) {
        kg_err_set(err, KG_AGENT_STEP, "DERIVE: the peer key's curve %s is not the key's (%s)",
                   theirs[0] ? theirs : "?", mine[0] ? mine : "?");
        goto err;
    }
    /* validate_peer = 1: a point off the curve is refused here */
    if ((ctx = EVP_PKEY_CTX_new_from_pkey(kg_libctx(), key, NULL)) == NULL ||
        EVP_PKEY_derive_init(ctx) <= 0 || EVP_PKEY_derive_set_peer_ex(ctx, peer, 1) <= 0) {
        kg_err_set(err, KG_AGENT_STEP, "DERIVE: the peer key is refused");
        kg_err_add_openssl(err);
        goto err;
    }
    if (EVP_PKEY_derive(ctx, NULL, &len) <= 0 || (secret = OPENSSL_malloc(len)) == NULL ||
        EVP_PKEY_derive(ctx, secret, &len) <= 0) {
        kg_err_set(err, KG_AGENT_STEP, "DERIVE: the key agreement failed");
        kg_err_add_openssl(err);
        goto err;
    }
    *out = secret;
    *out_len = len;
    secret = NULL;
    st = KG_AGENT_OK;
err:
    OPENSSL_clear_free(secret, len);
    EVP_PKEY_CTX_free(ctx);
    EVP_PKEY_free(peer);
    return st;
}

kg_agent_status kg_agent_op_run(EVP_PKEY *key, const kg_agent_req *req, uint8_t **out, size_t *out_len,
                                kg_err *err)
{
    *out = NULL;
    *out_len = 0;
    switch (req->op) {
    case KG_AGENT_OP_SIGN: return do_sign(key, req, out, out_len, err);
    case KG_AGENT_OP_DECRYPT: return do_decrypt(key, req, out, out_len, err);
    case KG_AGENT_OP_DERIVE: return do_derive(key, req, out, out_len, err);
    default:
        kg_err_set(err, KG_AGENT_STEP, "%s: not a key operation", kg_agent_op_name(req->op));
        return KG_AGENT_INTERNAL;
    }
}
