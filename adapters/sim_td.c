/* SPDX-License-Identifier: Apache-2.0 */
/*
 * sim: a software TD that emits DCAP v4 or v5 quotes (see sim_td.h and tdx_quote.c for the layout).
 *
 * The attestation key is generated once per process. Only its raw scalar and public point are
 * kept (under a lock), and an EVP_PKEY is rebuilt from them in the caller's library context on
 * every call, so the key works with any libctx and nothing stays allocated between calls.
 */
#include "sim_td.h"

#include <errno.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kg_log.h"
#include "tdx_quote.h"
#include "kg_libctx.h"

#define SIM_CHAIN_FILE_MAX (1024 * 1024)
#define SIM_QE_AUTH_LEN 32
#define SIM_QE_REPORT_MRSIGNER_OFFSET 128
#define SIM_QE_REPORT_ISVPRODID_OFFSET 256
#define SIM_QE_REPORT_ISVSVN_OFFSET 258
#define SIM_QE_REPORT_ATTRIBUTES_OFFSET 48
#define SIM_QE_ISVPRODID 2
#define SIM_QE_ISVSVN 8

static const uint8_t intel_qe_vendor_id[16] = {0x93, 0x9a, 0x72, 0x33, 0xf7, 0x9c, 0x4c, 0xa9,
                                               0x94, 0x0a, 0x0d, 0xb3, 0x95, 0x7f, 0x06, 0x07};

/* Per-process attestation key: P-256 scalar and uncompressed public point. */
static pthread_mutex_t att_key_lock = PTHREAD_MUTEX_INITIALIZER;
static int att_key_ready;
static uint8_t att_key_priv[32];
static uint8_t att_key_pub[65];

void sim_td_config_defaults(sim_td_config *cfg)
{
    static const uint8_t tee_tcb_svn[16] = {0x04, 0x01, 0x07, 0x00};
    static const uint8_t xfam[8] = {0xe7, 0x00, 0x06, 0x00};

    if (cfg == NULL)
        return;
    memset(cfg, 0, sizeof(*cfg));
    for (size_t i = 0; i < sizeof(cfg->mrtd); i++) {
        cfg->mrtd[i] = (uint8_t)(0x5a ^ (i * 7));
        cfg->mrseam[i] = (uint8_t)(0xa5 ^ (i * 3));
    }
    memcpy(cfg->tee_tcb_svn, tee_tcb_svn, sizeof(tee_tcb_svn));
    memcpy(cfg->tee_tcb_svn2, tee_tcb_svn, sizeof(tee_tcb_svn));
    memcpy(cfg->xfam, xfam, sizeof(xfam));
    cfg->td_attributes = TDX_TD_ATTR_SEPT_VE_DISABLE;
    cfg->quote_version = TDX_QUOTE_VERSION_4;
    cfg->body_type = TDX_BODY_TYPE_TD_REPORT15;
}

static void put_u16le(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static void put_u32le(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void put_u64le(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* Never prompt for a passphrase: an encrypted PCK key file simply fails to load. */
static int refuse_passphrase(char *buf, int size, int rwflag, void *userdata)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    (void)userdata;
    return -1;
}

/* Generates the per-process attestation key once. Returns 1 or 0. */
static int att_key_init_locked(OSSL_LIB_CTX *libctx)
{
    EVP_PKEY *pkey = NULL;
    BIGNUM *priv = NULL;
    size_t pub_len = 0;
    int ret = 0;

    if (att_key_ready)
        return 1;
    pkey = kg_pkey_ec_keygen(libctx, "P-256");
    if (pkey == NULL || !EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_PRIV_KEY, &priv) ||
        BN_bn2binpad(priv, att_key_priv, sizeof(att_key_priv)) != (int)sizeof(att_key_priv) ||
        !EVP_PKEY_get_octet_string_param(pkey, OSSL_PKEY_PARAM_PUB_KEY, att_key_pub, sizeof(att_key_pub),
                                         &pub_len) ||
        pub_len != sizeof(att_key_pub) || att_key_pub[0] != 0x04)
        goto err;
    att_key_ready = 1;
    ret = 1;
err:
    if (!ret)
        OPENSSL_cleanse(att_key_priv, sizeof(att_key_priv));
    BN_clear_free(priv);
    EVP_PKEY_free(pkey);
    return ret;
}

/* Returns the attestation key pair as an EVP_PKEY in libctx (caller frees), and its x || y. */
static EVP_PKEY *att_key_get(OSSL_LIB_CTX *libctx, uint8_t pub_xy[64])
{
    OSSL_PARAM_BLD *bld = NULL;
    OSSL_PARAM *params = NULL;
    EVP_PKEY_CTX *pctx = NULL;
    EVP_PKEY *pkey = NULL;
    BIGNUM *priv = NULL;
    int locked = 0;

    if (pthread_mutex_lock(&att_key_lock) != 0)
        goto err;
    locked = 1;
    if (!att_key_init_locked(libctx))
        goto err;
    priv = BN_secure_new();
    if (priv == NULL || BN_bin2bn(att_key_priv, sizeof(att_key_priv), priv) == NULL)
        goto err;
    memcpy(pub_xy, att_key_pub + 1, 64);
    bld = OSSL_PARAM_BLD_new();
    if (bld == NULL || !OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0) ||
        !OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, att_key_pub, sizeof(att_key_pub)) ||
        !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_PRIV_KEY, priv))
        goto err;
    params = OSSL_PARAM_BLD_to_param(bld);
    pctx = kg_pkey_ctx_new_from_name(libctx, "EC");
    if (params == NULL || pctx == NULL || EVP_PKEY_fromdata_init(pctx) <= 0 ||
        EVP_PKEY_fromdata(pctx, &pkey, EVP_PKEY_KEYPAIR, params) <= 0) {
        EVP_PKEY_free(pkey);
        pkey = NULL;
    }
err:
    if (locked)
        pthread_mutex_unlock(&att_key_lock);
    EVP_PKEY_CTX_free(pctx);
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    BN_clear_free(priv);
    return pkey;
}

/* ECDSA-P256 over data with SHA-256; writes raw r || s (64 bytes). Returns 1 or 0. */
static int ecdsa_sign_raw(EVP_PKEY *key, const uint8_t *data, size_t data_len, OSSL_LIB_CTX *libctx,
                          uint8_t out_rs[64])
{
    EVP_MD_CTX *mdctx = NULL;
    unsigned char *der = NULL;
    const unsigned char *der_p;
    size_t der_len = 0;
    ECDSA_SIG *sig = NULL;
    const BIGNUM *r, *s;
    int ret = 0;

    mdctx = EVP_MD_CTX_new();
    if (mdctx == NULL || EVP_DigestSignInit_ex(mdctx, NULL, "SHA256", libctx, NULL, key, NULL) <= 0 ||
        EVP_DigestSign(mdctx, NULL, &der_len, data, data_len) <= 0)
        goto err;
    der = OPENSSL_malloc(der_len);
    if (der == NULL || EVP_DigestSign(mdctx, der, &der_len, data, data_len) <= 0)
        goto err;
    der_p = der;
    sig = d2i_ECDSA_SIG(NULL, &der_p, (long)der_len);
    if (sig == NULL)
        goto err;
    ECDSA_SIG_get0(sig, &r, &s);
    if (BN_bn2binpad(r, out_rs, 32) != 32 || BN_bn2binpad(s, out_rs + 32, 32) != 32)
        goto err;
    ret = 1;
err:
    ECDSA_SIG_free(sig);
    OPENSSL_free(der);
    EVP_MD_CTX_free(mdctx);
    return ret;
}

/* Loads the simulated PCK private key; it must be EC P-256. Returns the key or NULL (err set). */
static EVP_PKEY *load_pck_key(const char *path, OSSL_LIB_CTX *libctx, kg_err *err)
{
    BIO *bio = NULL;
    EVP_PKEY *key = NULL;
    char group[64] = "";
    size_t group_len = 0;

    if (path[0] == '\0') {
        kg_err_set(err, KG_STEP_EVIDENCE, "simulated TD: no PCK key file configured");
        return NULL;
    }
    bio = BIO_new_file(path, "r");
    if (bio == NULL) {
        kg_err_set(err, KG_STEP_EVIDENCE, "simulated TD: cannot open PCK key file %s: %s", path,
                   strerror(errno));
        ERR_clear_error();
        return NULL;
    }
    key = PEM_read_bio_PrivateKey_ex(bio, NULL, refuse_passphrase, NULL, libctx, NULL);
    if (key == NULL) {
        kg_err_set(err, KG_STEP_EVIDENCE,
                   "simulated TD: PCK key file %s holds no unencrypted PEM private key", path);
        goto err;
    }
    if (!EVP_PKEY_is_a(key, "EC") ||
        !EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group), &group_len) ||
        (strcmp(group, "prime256v1") != 0 && strcmp(group, "P-256") != 0)) {
        kg_err_set(err, KG_STEP_EVIDENCE, "simulated TD: PCK key in %s is not an EC P-256 key", path);
        EVP_PKEY_free(key);
        key = NULL;
        goto err;
    }
err:
    BIO_free(bio);
    ERR_clear_error();
    return key;
}

/* Reads the whole chain file (malloc'ed, caller frees). Returns 1 or 0 with err set. */
static int read_chain_file(const char *path, uint8_t **out, size_t *out_len, kg_err *err)
{
    FILE *fp = NULL;
    uint8_t *buf = NULL;
    size_t len = 0, n;
    int ret = 0;

    if (path[0] == '\0')
        return kg_err_set(err, KG_STEP_EVIDENCE, "simulated TD: no PCK chain file configured");
    fp = fopen(path, "rb");
    if (fp == NULL)
        return kg_err_set(err, KG_STEP_EVIDENCE, "simulated TD: cannot open PCK chain file %s: %s", path,
                          strerror(errno));
    buf = malloc(SIM_CHAIN_FILE_MAX + 1);
    if (buf == NULL) {
        kg_err_set(err, KG_STEP_INTERNAL, "out of memory reading %s", path);
        goto err;
    }
    while ((n = fread(buf + len, 1, SIM_CHAIN_FILE_MAX + 1 - len, fp)) > 0) {
        len += n;
        if (len > SIM_CHAIN_FILE_MAX)
            break;
    }
    if (ferror(fp)) {
        kg_err_set(err, KG_STEP_EVIDENCE, "simulated TD: cannot read PCK chain file %s", path);
        goto err;
    }
    if (len == 0 || len > SIM_CHAIN_FILE_MAX) {
        kg_err_set(err, KG_STEP_EVIDENCE, "simulated TD: PCK chain file %s is empty or larger than %d bytes",
                   path, SIM_CHAIN_FILE_MAX);
        goto err;
    }
    *out = buf;
    *out_len = len;
    buf = NULL;
    ret = 1;
err:
    free(buf);
    fclose(fp);
    return ret;
}

/* Checks that the chain's first PEM certificate is the PCK key's certificate. Returns 1 or 0. */
static int check_chain_leaf(const uint8_t *pem, size_t pem_len, EVP_PKEY *pck_key, const char *path,
                            OSSL_LIB_CTX *libctx, kg_err *err)
{
    BIO *bio = NULL;
    X509 *leaf = NULL;
    EVP_PKEY *leaf_key;
    int ret = 0;

    bio = BIO_new_mem_buf(pem, (int)pem_len);
    leaf = X509_new_ex(libctx, NULL);
    if (bio == NULL || leaf == NULL) {
        kg_err_set(err, KG_STEP_INTERNAL, "out of memory reading %s", path);
        goto err;
    }
    if (PEM_read_bio_X509(bio, &leaf, NULL, NULL) == NULL) {
        kg_err_set(err, KG_STEP_EVIDENCE, "simulated TD: PCK chain file %s holds no PEM certificate", path);
        goto err;
    }
    leaf_key = X509_get0_pubkey(leaf);
    if (leaf_key == NULL || EVP_PKEY_eq(leaf_key, pck_key) != 1) {
        kg_err_set(err, KG_STEP_EVIDENCE,
                   "simulated TD: the first certificate in %s does not match the PCK key", path);
        goto err;
    }
    ret = 1;
err:
    X509_free(leaf);
    BIO_free(bio);
    ERR_clear_error();
    return ret;
}

/* Fills the 384-byte QE report; REPORTDATA binds the attestation key and the QE auth data. */
static int build_qe_report(uint8_t *qe_report, const uint8_t att_pub_xy[64], const uint8_t *qe_auth,
                           size_t qe_auth_len, OSSL_LIB_CTX *libctx)
{
    static const uint8_t sim_mrsigner[32] = {0x6b, 0x65, 0x79, 0x67, 0x61, 0x74, 0x65, 0x2d, 0x73, 0x69, 0x6d,
                                             0x2d, 0x71, 0x65, 0x2d, 0x6d, 0x72, 0x73, 0x69, 0x67, 0x6e, 0x65,
                                             0x72, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01};
    EVP_MD *sha256 = NULL;
    EVP_MD_CTX *mdctx = NULL;
    unsigned int digest_len = 0;
    int ret = 0;

    memset(qe_report, 0, SGX_REPORT_BODY_LEN);
    qe_report[SIM_QE_REPORT_ATTRIBUTES_OFFSET] = 0x11;     /* INIT | MODE64BIT */
    qe_report[SIM_QE_REPORT_ATTRIBUTES_OFFSET + 8] = 0xe7; /* XFRM */
    memcpy(qe_report + SIM_QE_REPORT_MRSIGNER_OFFSET, sim_mrsigner, sizeof(sim_mrsigner));
    put_u16le(qe_report + SIM_QE_REPORT_ISVPRODID_OFFSET, SIM_QE_ISVPRODID);
    put_u16le(qe_report + SIM_QE_REPORT_ISVSVN_OFFSET, SIM_QE_ISVSVN);

    sha256 = EVP_MD_fetch(libctx, "SHA256", NULL);
    mdctx = EVP_MD_CTX_new();
    if (sha256 == NULL || mdctx == NULL || !EVP_DigestInit_ex2(mdctx, sha256, NULL) ||
        !EVP_DigestUpdate(mdctx, att_pub_xy, 64) || !EVP_DigestUpdate(mdctx, qe_auth, qe_auth_len) ||
        !EVP_DigestFinal_ex(mdctx, qe_report + SGX_REPORT_BODY_REPORTDATA_OFFSET, &digest_len) ||
        digest_len != 32)
        goto err;
    ret = 1;
err:
    EVP_MD_CTX_free(mdctx);
    EVP_MD_free(sha256);
    return ret;
}

int sim_td_get_quote(const sim_td_config *cfg, const uint8_t report_data[64], OSSL_LIB_CTX *libctx,
                     uint8_t **quote, size_t *quote_len, kg_err *err)
{
    EVP_PKEY *pck_key = NULL;
    EVP_PKEY *att_key = NULL;
    uint8_t *chain = NULL, *buf = NULL, *p, *body, *qe_report;
    uint8_t att_pub_xy[64], qe_auth[SIM_QE_AUTH_LEN];
    size_t chain_len = 0, inner_len, cert_len, sig_data_len, total_len, body_off, body_len, signed_len;
    int ret = 0;

    if (cfg == NULL || report_data == NULL || quote == NULL || quote_len == NULL)
        return kg_err_set(err, KG_STEP_INTERNAL, "sim_td_get_quote: NULL argument");
    if (libctx == NULL)
        libctx = kg_libctx(); /* never the application's context, nor its ENGINEs */
    *quote = NULL;
    *quote_len = 0;
    if (cfg->quote_version != TDX_QUOTE_VERSION_4 &&
        !(cfg->quote_version == TDX_QUOTE_VERSION_5 &&
          (cfg->body_type == TDX_BODY_TYPE_TD_REPORT10 || cfg->body_type == TDX_BODY_TYPE_TD_REPORT15)))
        return kg_err_set(err, KG_STEP_EVIDENCE, "simulated TD: cannot make quote version %d body type %u",
                          cfg->quote_version, (unsigned)cfg->body_type);
    KG_WARN("simulated TD: this quote comes from software, not TDX hardware; "
            "only a verifier that pins the simulated root accepts it");

    pck_key = load_pck_key(cfg->pck_key_file, libctx, err);
    if (pck_key == NULL)
        goto err;
    if (!read_chain_file(cfg->pck_chain_file, &chain, &chain_len, err) ||
        !check_chain_leaf(chain, chain_len, pck_key, cfg->pck_chain_file, libctx, err))
        goto err;
    att_key = att_key_get(libctx, att_pub_xy);
    if (att_key == NULL) {
        kg_err_set(err, KG_STEP_EVIDENCE, "simulated TD: cannot create the attestation key");
        goto err;
    }

    inner_len = chain_len + 1; /* PEM plus a trailing NUL, like real quotes */
    cert_len = SGX_REPORT_BODY_LEN + 64 + 2 + SIM_QE_AUTH_LEN + 2 + 4 + inner_len;
    sig_data_len = 64 + 64 + 2 + 4 + cert_len;
    body_off = TDX_QUOTE_HEADER_LEN;
    body_len = TDX_TD_REPORT_BODY_LEN;
    if (cfg->quote_version == TDX_QUOTE_VERSION_5) {
        body_off += TDX_QUOTE_BODY_DESC_LEN;
        if (cfg->body_type == TDX_BODY_TYPE_TD_REPORT15)
            body_len = TDX_TD_REPORT15_BODY_LEN;
    }
    signed_len = body_off + body_len;
    total_len = signed_len + 4 + sig_data_len;
    buf = calloc(1, total_len);
    if (buf == NULL) {
        kg_err_set(err, KG_STEP_INTERNAL, "out of memory building a simulated quote");
        goto err;
    }

    /* header */
    put_u16le(buf, (uint16_t)cfg->quote_version);
    put_u16le(buf + 2, TDX_ATT_KEY_TYPE_ECDSA_P256);
    put_u32le(buf + 4, TDX_TEE_TYPE_TDX);
    /* qe_svn, pce_svn 0 as in the real quotes; header user data zero */
    memcpy(buf + 12, intel_qe_vendor_id, sizeof(intel_qe_vendor_id));

    if (cfg->quote_version == TDX_QUOTE_VERSION_5) { /* body descriptor (§2.4) */
        put_u16le(buf + TDX_QUOTE_HEADER_LEN, cfg->body_type);
        put_u32le(buf + TDX_QUOTE_HEADER_LEN + 2, (uint32_t)body_len);
    }

    /* TD report body (docs/protocols/tdx-quote.md §2.2, §2.4) */
    body = buf + body_off;
    memcpy(body + 0, cfg->tee_tcb_svn, 16);
    memcpy(body + 16, cfg->mrseam, 48);
    put_u64le(body + 120, cfg->td_attributes);
    memcpy(body + 128, cfg->xfam, 8);
    memcpy(body + 136, cfg->mrtd, 48);
    for (int i = 0; i < 4; i++)
        memcpy(body + 328 + 48 * i, cfg->rtmr[i], 48);
    memcpy(body + TDX_BODY_REPORTDATA_OFFSET, report_data, 64);
    if (body_len == TDX_TD_REPORT15_BODY_LEN) {
        memcpy(body + 584, cfg->tee_tcb_svn2, 16);
        memcpy(body + 600, cfg->mrservicetd, 48);
    }

    /* signature data; the signature covers header, v5 descriptor and body */
    p = buf + signed_len;
    put_u32le(p, (uint32_t)sig_data_len);
    p += 4;
    if (!ecdsa_sign_raw(att_key, buf, signed_len, libctx, p)) {
        kg_err_set(err, KG_STEP_EVIDENCE, "simulated TD: cannot sign the quote");
        goto err;
    }
    p += 64;
    memcpy(p, att_pub_xy, 64);
    p += 64;
    put_u16le(p, TDX_CERT_TYPE_QE_REPORT);
    put_u32le(p + 2, (uint32_t)cert_len);
    p += 6;

    for (size_t i = 0; i < sizeof(qe_auth); i++)
        qe_auth[i] = (uint8_t)i;
    qe_report = p;
    if (!build_qe_report(qe_report, att_pub_xy, qe_auth, sizeof(qe_auth), libctx)) {
        kg_err_set(err, KG_STEP_EVIDENCE, "simulated TD: cannot hash the attestation key");
        goto err;
    }
    p += SGX_REPORT_BODY_LEN;
    if (!ecdsa_sign_raw(pck_key, qe_report, SGX_REPORT_BODY_LEN, libctx, p)) {
        kg_err_set(err, KG_STEP_EVIDENCE, "simulated TD: cannot sign the QE report with the PCK key");
        goto err;
    }
    p += 64;
    put_u16le(p, SIM_QE_AUTH_LEN);
    memcpy(p + 2, qe_auth, sizeof(qe_auth));
    p += 2 + sizeof(qe_auth);
    put_u16le(p, TDX_CERT_TYPE_PCK_CHAIN);
    put_u32le(p + 2, (uint32_t)inner_len);
    p += 6;
    memcpy(p, chain, chain_len);
    p[chain_len] = '\0';

    *quote = buf;
    *quote_len = total_len;
    buf = NULL;
    ret = 1;
err:
    free(buf);
    free(chain);
    EVP_PKEY_free(att_key);
    EVP_PKEY_free(pck_key);
    ERR_clear_error();
    return ret;
}
