/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A throwaway simulated PCK PKI for unit tests of the sim TD and the quote parser: root,
 * platform CA and PCK leaf (all P-256) in a temp dir, plus a few bad key files. Use
 * setup_pki/teardown_pki as the cmocka group setup; *state is the sim_pki. resign() re-signs a
 * parsed sim quote over chosen bytes (for signature-coverage tests; needs tdx_quote.h).
 */
#ifndef KG_TEST_SIM_PKI_H
#define KG_TEST_SIM_PKI_H

#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kg_test.h"
#include "sim_td.h"
#include "tdx_quote.h"

typedef struct sim_pki {
    char dir[64];
    char key_file[128];     /* PCK leaf private key (P-256) */
    char chain_file[128];   /* leaf, platform CA, root */
    char garbage_file[128]; /* not PEM */
    char p384_key_file[128];
    char other_key_file[128]; /* P-256 key that is not the leaf's */
    X509 *root;
} sim_pki;

static inline EVP_PKEY *gen_key(const char *curve)
{
    EVP_PKEY *key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", curve);

    assert_non_null(key);
    return key;
}

static inline void add_ext(X509 *cert, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX ctx;
    X509_EXTENSION *ext;

    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, issuer, cert, NULL, NULL, 0);
    ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
    assert_non_null(ext);
    assert_int_equal(X509_add_ext(cert, ext, -1), 1);
    X509_EXTENSION_free(ext);
}

/* Issues a certificate for `key` named cn, signed by issuer_key (self-signed when issuer NULL). */
static inline X509 *make_cert(const char *cn, EVP_PKEY *key, X509 *issuer, EVP_PKEY *issuer_key, long serial,
                              int is_ca)
{
    X509 *cert = X509_new();
    X509_NAME *name;

    assert_non_null(cert);
    assert_int_equal(X509_set_version(cert, 2), 1);
    assert_int_equal(ASN1_INTEGER_set(X509_get_serialNumber(cert), serial), 1);
    name = X509_get_subject_name(cert);
    assert_int_equal(X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC,
                                                (const unsigned char *)"keygate tests", -1, -1, 0),
                     1);
    assert_int_equal(
        X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0), 1);
    assert_int_equal(X509_set_issuer_name(cert, issuer ? X509_get_subject_name(issuer) : name), 1);
    assert_non_null(X509_gmtime_adj(X509_getm_notBefore(cert), -3600));
    assert_non_null(X509_gmtime_adj(X509_getm_notAfter(cert), 7L * 24 * 3600));
    assert_int_equal(X509_set_pubkey(cert, key), 1);
    add_ext(cert, issuer ? issuer : cert, NID_subject_key_identifier, "hash");
    add_ext(cert, issuer ? issuer : cert, NID_authority_key_identifier, "keyid:always");
    if (is_ca) {
        add_ext(cert, issuer ? issuer : cert, NID_basic_constraints, "critical,CA:TRUE");
        add_ext(cert, issuer ? issuer : cert, NID_key_usage, "critical,keyCertSign,cRLSign");
    } else {
        add_ext(cert, issuer, NID_basic_constraints, "critical,CA:FALSE");
        add_ext(cert, issuer, NID_key_usage, "critical,digitalSignature,nonRepudiation");
    }
    assert_true(X509_sign(cert, issuer_key, EVP_sha256()) > 0);
    return cert;
}

static inline void write_key(const char *path, EVP_PKEY *key)
{
    FILE *fp = fopen(path, "w");

    assert_non_null(fp);
    assert_int_equal(PEM_write_PrivateKey(fp, key, NULL, NULL, 0, NULL, NULL), 1);
    fclose(fp);
}

static inline int setup_pki(void **state)
{
    sim_pki *pki = calloc(1, sizeof(*pki));
    EVP_PKEY *root_key, *ca_key, *pck_key, *p384, *other;
    X509 *ca, *leaf;
    FILE *fp;

    assert_non_null(pki);
    strcpy(pki->dir, "/tmp/kg-test-sim-td-XXXXXX");
    assert_non_null(mkdtemp(pki->dir));
    snprintf(pki->key_file, sizeof(pki->key_file), "%s/pck-key.pem", pki->dir);
    snprintf(pki->chain_file, sizeof(pki->chain_file), "%s/pck-chain.pem", pki->dir);
    snprintf(pki->garbage_file, sizeof(pki->garbage_file), "%s/garbage.pem", pki->dir);
    snprintf(pki->p384_key_file, sizeof(pki->p384_key_file), "%s/p384-key.pem", pki->dir);
    snprintf(pki->other_key_file, sizeof(pki->other_key_file), "%s/other-key.pem", pki->dir);

    root_key = gen_key("P-256");
    ca_key = gen_key("P-256");
    pck_key = gen_key("P-256");
    p384 = gen_key("P-384");
    other = gen_key("P-256");
    pki->root = make_cert("keygate sim SGX Root CA", root_key, NULL, root_key, 1, 1);
    ca = make_cert("keygate sim SGX PCK Platform CA", ca_key, pki->root, root_key, 2, 1);
    leaf = make_cert("keygate sim SGX PCK Certificate", pck_key, ca, ca_key, 3, 0);

    write_key(pki->key_file, pck_key);
    write_key(pki->p384_key_file, p384);
    write_key(pki->other_key_file, other);
    fp = fopen(pki->chain_file, "w");
    assert_non_null(fp);
    assert_int_equal(PEM_write_X509(fp, leaf), 1);
    assert_int_equal(PEM_write_X509(fp, ca), 1);
    assert_int_equal(PEM_write_X509(fp, pki->root), 1);
    fclose(fp);
    fp = fopen(pki->garbage_file, "w");
    assert_non_null(fp);
    fputs("this is not a certificate\n-----BEGIN CERTIFICATE-----\nAAAA\n", fp);
    fclose(fp);

    X509_free(leaf);
    X509_free(ca);
    EVP_PKEY_free(other);
    EVP_PKEY_free(p384);
    EVP_PKEY_free(pck_key);
    EVP_PKEY_free(ca_key);
    EVP_PKEY_free(root_key);
    *state = pki;
    return 0;
}

static inline int teardown_pki(void **state)
{
    sim_pki *pki = *state;

    unlink(pki->key_file);
    unlink(pki->chain_file);
    unlink(pki->garbage_file);
    unlink(pki->p384_key_file);
    unlink(pki->other_key_file);
    assert_int_equal(rmdir(pki->dir), 0);
    X509_free(pki->root);
    free(pki);
    return 0;
}

static inline X509_STORE *store_with(X509 *cert)
{
    X509_STORE *store = X509_STORE_new();

    assert_non_null(store);
    assert_int_equal(X509_STORE_add_cert(store, cert), 1);
    return store;
}

static inline void config_for(const sim_pki *pki, sim_td_config *cfg)
{
    sim_td_config_defaults(cfg);
    snprintf(cfg->pck_key_file, sizeof(cfg->pck_key_file), "%s", pki->key_file);
    snprintf(cfg->pck_chain_file, sizeof(cfg->pck_chain_file), "%s", pki->chain_file);
}
/* Raw r || s ECDSA-P256/SHA-256 signature of data with key. */
static inline void sign_raw(EVP_PKEY *key, const uint8_t *data, size_t len, uint8_t *out)
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    unsigned char der[80];
    const unsigned char *p = der;
    size_t der_len = sizeof(der);
    ECDSA_SIG *sig;
    const BIGNUM *r, *s;

    assert_non_null(md);
    assert_int_equal(EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, key), 1);
    assert_int_equal(EVP_DigestSign(md, der, &der_len, data, len), 1);
    sig = d2i_ECDSA_SIG(NULL, &p, (long)der_len);
    assert_non_null(sig);
    ECDSA_SIG_get0(sig, &r, &s);
    assert_int_equal(BN_bn2binpad(r, out, 32), 32);
    assert_int_equal(BN_bn2binpad(s, out + 32, 32), 32);
    ECDSA_SIG_free(sig);
    EVP_MD_CTX_free(md);
}

/*
 * Re-signs a parsed sim quote in place with a fresh attestation key over msg: new key in the
 * signature data, QE report data = SHA-256(key || auth data), QE report signed by the sim PCK.
 */
static inline void resign(const sim_pki *pki, uint8_t *buf, const tdx_quote *q, const uint8_t *msg,
                          size_t msg_len)
{
    EVP_PKEY *att = gen_key("P-256"), *pck;
    uint8_t point[65], *sig = buf + (q->signature - buf), *pub = buf + (q->att_pubkey - buf);
    uint8_t *qe = buf + (q->qe_report - buf), *qe_sig = buf + (q->qe_report_sig - buf);
    size_t point_len = 0;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    unsigned int dlen = 0;
    FILE *fp = fopen(pki->key_file, "r");

    assert_non_null(fp);
    pck = PEM_read_PrivateKey(fp, NULL, NULL, NULL);
    fclose(fp);
    assert_non_null(pck);
    assert_int_equal(EVP_PKEY_get_octet_string_param(att, "pub", point, sizeof(point), &point_len), 1);
    assert_int_equal(point_len, 65);
    memcpy(pub, point + 1, 64);
    assert_non_null(md);
    assert_int_equal(EVP_DigestInit_ex(md, EVP_sha256(), NULL), 1);
    assert_int_equal(EVP_DigestUpdate(md, pub, 64), 1);
    assert_int_equal(EVP_DigestUpdate(md, q->qe_auth_data, q->qe_auth_len), 1);
    assert_int_equal(EVP_DigestFinal_ex(md, qe + SGX_REPORT_BODY_REPORTDATA_OFFSET, &dlen), 1);
    sign_raw(pck, qe, SGX_REPORT_BODY_LEN, qe_sig);
    sign_raw(att, msg, msg_len, sig);
    EVP_MD_CTX_free(md);
    EVP_PKEY_free(pck);
    EVP_PKEY_free(att);
}

#endif
