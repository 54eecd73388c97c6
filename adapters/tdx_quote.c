/* SPDX-License-Identifier: Apache-2.0 */
/*
 * TDX DCAP quotes v4 and v5: parser and offline signature checks (see tdx_quote.h).
 *
 * Layout: header (48) [v5: u16 body type, u32 body size] TD report body (584 or 648), then
 *   u32 signature data length, then signature data:
 *     64  ECDSA-P256 signature (r || s) over header [+ descriptor] + body
 *     64  attestation public key (x || y)
 *     u16 certification data type (6) + u32 size, then inside type 6:
 *       384 QE report (SGX report body)
 *       64  QE report signature (r || s) by the PCK leaf key
 *       u16 QE auth data length + data
 *       u16 certification data type (5) + u32 size + PEM PCK chain (leaf first)
 * Every length is checked against the buffer; sizes must add up exactly.
 */
#include "tdx_quote.h"

#include <limits.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <string.h>

#include "kg_libctx.h"

#define TDX_SIG_LEN 64
#define TDX_PUBKEY_LEN 64
#define TDX_CERT_HEADER_LEN 6                                                  /* u16 type + u32 size */
#define TDX_SIG_FIXED_LEN (TDX_SIG_LEN + TDX_PUBKEY_LEN + TDX_CERT_HEADER_LEN) /* 134 */
#define TDX_QE_REPORT_SIG_LEN 64

/* ---- little-endian readers; callers check bounds first ---- */

static uint16_t get_u16le(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

static uint32_t get_u32le(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static uint64_t get_u64le(const uint8_t *p)
{
    return (uint64_t)get_u32le(p) | ((uint64_t)get_u32le(p + 4) << 32);
}

/* A bounded cursor over [buf, buf + end). */
typedef struct quote_cursor {
    const uint8_t *buf;
    size_t end;
    size_t off;
} quote_cursor;

static int cursor_take(quote_cursor *c, size_t n, const uint8_t **out)
{
    if (c->off > c->end || n > c->end - c->off)
        return 0;
    *out = c->buf + c->off;
    c->off += n;
    return 1;
}

static int cursor_u16(quote_cursor *c, uint16_t *v)
{
    const uint8_t *p;

    if (!cursor_take(c, 2, &p))
        return 0;
    *v = get_u16le(p);
    return 1;
}

static int cursor_u32(quote_cursor *c, uint32_t *v)
{
    const uint8_t *p;

    if (!cursor_take(c, 4, &p))
        return 0;
    *v = get_u32le(p);
    return 1;
}

static void parse_header(const uint8_t *buf, tdx_quote *q)
{
    q->version = get_u16le(buf);
    q->att_key_type = get_u16le(buf + 2);
    q->tee_type = get_u32le(buf + 4);
    q->qe_svn = get_u16le(buf + 8);
    q->pce_svn = get_u16le(buf + 10);
    memcpy(q->qe_vendor_id, buf + 12, sizeof(q->qe_vendor_id));
    memcpy(q->header_user_data, buf + 28, sizeof(q->header_user_data));
}

/* The TD report body at q->body_offset; the caller checked that body_size bytes are there. */
static void parse_body(const uint8_t *buf, tdx_quote *q)
{
    const uint8_t *body = buf + q->body_offset;

    memcpy(q->tee_tcb_svn, body + 0, sizeof(q->tee_tcb_svn));
    memcpy(q->mrseam, body + 16, sizeof(q->mrseam));
    memcpy(q->mrsignerseam, body + 64, sizeof(q->mrsignerseam));
    memcpy(q->seam_attributes, body + 112, sizeof(q->seam_attributes));
    q->td_attributes = get_u64le(body + 120);
    memcpy(q->xfam, body + 128, sizeof(q->xfam));
    memcpy(q->mrtd, body + 136, sizeof(q->mrtd));
    memcpy(q->mrconfigid, body + 184, sizeof(q->mrconfigid));
    memcpy(q->mrowner, body + 232, sizeof(q->mrowner));
    memcpy(q->mrownerconfig, body + 280, sizeof(q->mrownerconfig));
    for (int i = 0; i < 4; i++)
        memcpy(q->rtmr[i], body + 328 + 48 * i, sizeof(q->rtmr[i]));
    memcpy(q->report_data, body + TDX_BODY_REPORTDATA_OFFSET, sizeof(q->report_data));
    if (q->body_type == TDX_BODY_TYPE_TD_REPORT15) {
        memcpy(q->tee_tcb_svn2, body + 584, sizeof(q->tee_tcb_svn2));
        memcpy(q->mrservicetd, body + 600, sizeof(q->mrservicetd));
    }
}

/*
 * Version, key and TEE type, then where the body is: v4 has none of v5's descriptor and always a
 * TD report 1.0; v5 names the body's type and size, which must be one of the two TD reports with
 * exactly its size (as Intel's QVL). Sets body_* and signed_len.
 */
static int parse_layout(const uint8_t *buf, size_t len, tdx_quote *q, kg_err *err)
{
    if (q->version != TDX_QUOTE_VERSION_4 && q->version != TDX_QUOTE_VERSION_5)
        return kg_err_set(err, KG_STEP_EVIDENCE, "quote version %u is not supported (need 4 or 5)",
                          (unsigned)q->version);
    if (q->att_key_type != TDX_ATT_KEY_TYPE_ECDSA_P256)
        return kg_err_set(err, KG_STEP_EVIDENCE, "quote attestation key type %u is not ECDSA-P256 (2)",
                          (unsigned)q->att_key_type);
    if (q->tee_type != TDX_TEE_TYPE_TDX)
        return kg_err_set(err, KG_STEP_EVIDENCE, "quote TEE type 0x%x is not TDX (0x81)",
                          (unsigned)q->tee_type);
    if (q->version == TDX_QUOTE_VERSION_4) {
        q->body_type = TDX_BODY_TYPE_TD_REPORT10;
        q->body_size = TDX_TD_REPORT_BODY_LEN;
        q->body_offset = TDX_QUOTE_HEADER_LEN;
    } else {
        if (len < TDX_QUOTE_HEADER_LEN + TDX_QUOTE_BODY_DESC_LEN)
            return kg_err_set(err, KG_STEP_EVIDENCE, "quote v5 body descriptor is truncated");
        q->body_type = get_u16le(buf + TDX_QUOTE_HEADER_LEN);
        q->body_size = get_u32le(buf + TDX_QUOTE_HEADER_LEN + 2);
        q->body_offset = TDX_QUOTE_HEADER_LEN + TDX_QUOTE_BODY_DESC_LEN;
        if (q->body_type != TDX_BODY_TYPE_TD_REPORT10 && q->body_type != TDX_BODY_TYPE_TD_REPORT15)
            return kg_err_set(err, KG_STEP_EVIDENCE,
                              "quote v5 body type %u is not a TD report (2: TDX 1.0, 3: TDX 1.5)",
                              (unsigned)q->body_type);
        if (q->body_size !=
            (q->body_type == TDX_BODY_TYPE_TD_REPORT10 ? TDX_TD_REPORT_BODY_LEN : TDX_TD_REPORT15_BODY_LEN))
            return kg_err_set(err, KG_STEP_EVIDENCE, "quote v5 body size %u is not %d for body type %u",
                              (unsigned)q->body_size,
                              q->body_type == TDX_BODY_TYPE_TD_REPORT10 ? TDX_TD_REPORT_BODY_LEN
                                                                        : TDX_TD_REPORT15_BODY_LEN,
                              (unsigned)q->body_type);
    }
    q->signed_len = q->body_offset + q->body_size;
    if (len < q->signed_len + 4)
        return kg_err_set(err, KG_STEP_EVIDENCE, "quote too short (%zu bytes, need at least %zu)", len,
                          q->signed_len + 4);
    return 1;
}

int tdx_quote_parse(const uint8_t *buf, size_t len, tdx_quote *q, kg_err *err)
{
    quote_cursor sig_cur, cert_cur;
    const uint8_t *skip;
    uint32_t sig_data_len, cert_size, pck_chain_len;
    uint16_t qe_auth_len;

    if (buf == NULL || q == NULL)
        return kg_err_set(err, KG_STEP_INTERNAL, "tdx_quote_parse: NULL argument");
    memset(q, 0, sizeof(*q));
    if (len < TDX_QUOTE_SIGNED_LEN + 4)
        return kg_err_set(err, KG_STEP_EVIDENCE, "quote too short (%zu bytes, need at least %d)", len,
                          TDX_QUOTE_SIGNED_LEN + 4);

    parse_header(buf, q);
    if (!parse_layout(buf, len, q, err))
        return 0;
    parse_body(buf, q);

    sig_data_len = get_u32le(buf + q->signed_len);
    if (sig_data_len > len - (q->signed_len + 4))
        return kg_err_set(err, KG_STEP_EVIDENCE,
                          "quote signature data length %u exceeds the %zu bytes left in the buffer",
                          (unsigned)sig_data_len, len - (q->signed_len + 4));
    if (sig_data_len < TDX_SIG_FIXED_LEN)
        return kg_err_set(err, KG_STEP_EVIDENCE, "quote signature data length %u is too short",
                          (unsigned)sig_data_len);

    /* The cursor never sees the trailing padding: it ends at the signature data's end. */
    sig_cur.buf = buf;
    sig_cur.off = q->signed_len + 4;
    sig_cur.end = sig_cur.off + sig_data_len;
    if (!cursor_take(&sig_cur, TDX_SIG_LEN, &q->signature) ||
        !cursor_take(&sig_cur, TDX_PUBKEY_LEN, &q->att_pubkey) || !cursor_u16(&sig_cur, &q->cert_type) ||
        !cursor_u32(&sig_cur, &cert_size))
        return kg_err_set(err, KG_STEP_EVIDENCE, "quote signature data is truncated");
    if (q->cert_type != TDX_CERT_TYPE_QE_REPORT)
        return kg_err_set(err, KG_STEP_EVIDENCE,
                          "quote certification data type %u is not QE report certification data (6)",
                          (unsigned)q->cert_type);
    if (cert_size != sig_cur.end - sig_cur.off)
        return kg_err_set(err, KG_STEP_EVIDENCE,
                          "quote certification data size %u does not match the signature data (%zu left)",
                          (unsigned)cert_size, sig_cur.end - sig_cur.off);

    cert_cur.buf = buf;
    cert_cur.off = sig_cur.off;
    cert_cur.end = sig_cur.end;
    if (!cursor_take(&cert_cur, SGX_REPORT_BODY_LEN, &q->qe_report) ||
        !cursor_take(&cert_cur, TDX_QE_REPORT_SIG_LEN, &q->qe_report_sig) ||
        !cursor_u16(&cert_cur, &qe_auth_len))
        return kg_err_set(err, KG_STEP_EVIDENCE, "quote QE report certification data is truncated");
    if (!cursor_take(&cert_cur, qe_auth_len, &q->qe_auth_data))
        return kg_err_set(err, KG_STEP_EVIDENCE,
                          "quote QE auth data length %u exceeds the certification data",
                          (unsigned)qe_auth_len);
    q->qe_auth_len = qe_auth_len;
    if (!cursor_u16(&cert_cur, &q->inner_cert_type) || !cursor_u32(&cert_cur, &pck_chain_len))
        return kg_err_set(err, KG_STEP_EVIDENCE, "quote inner certification data header is truncated");
    if (q->inner_cert_type != TDX_CERT_TYPE_PCK_CHAIN)
        return kg_err_set(err, KG_STEP_EVIDENCE,
                          "quote inner certification data type %u is not a PCK chain (5)",
                          (unsigned)q->inner_cert_type);
    if (pck_chain_len == 0 || pck_chain_len != cert_cur.end - cert_cur.off)
        return kg_err_set(err, KG_STEP_EVIDENCE,
                          "quote PCK chain size %u does not match the certification data (%zu left)",
                          (unsigned)pck_chain_len, cert_cur.end - cert_cur.off);
    if (!cursor_take(&cert_cur, pck_chain_len, &skip))
        return kg_err_set(err, KG_STEP_EVIDENCE, "quote PCK chain is truncated");
    q->pck_chain = skip;
    q->pck_chain_len = pck_chain_len;
    q->quote_len = sig_cur.end;
    return 1;
}

int tdx_quote_is_debug(const tdx_quote *q)
{
    return q != NULL && (q->td_attributes & TDX_TD_ATTR_DEBUG) != 0;
}

/* ---- verification helpers ---- */

/* Builds a P-256 public key from raw x || y (64 bytes) in libctx. Returns NULL on failure. */
static EVP_PKEY *p256_pubkey_from_xy(const uint8_t xy[64], OSSL_LIB_CTX *libctx)
{
    uint8_t point[65];
    OSSL_PARAM_BLD *bld = NULL;
    OSSL_PARAM *params = NULL;
    EVP_PKEY_CTX *pctx = NULL;
    EVP_PKEY *pkey = NULL;

    point[0] = 0x04; /* uncompressed */
    memcpy(point + 1, xy, 64);
    bld = OSSL_PARAM_BLD_new();
    if (bld == NULL || !OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0) ||
        !OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, point, sizeof(point)))
        goto err;
    params = OSSL_PARAM_BLD_to_param(bld);
    if (params == NULL)
        goto err;
    pctx = kg_pkey_ctx_new_from_name(libctx, "EC");
    if (pctx == NULL || EVP_PKEY_fromdata_init(pctx) <= 0 ||
        EVP_PKEY_fromdata(pctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) <= 0) {
        EVP_PKEY_free(pkey);
        pkey = NULL;
    }
err:
    EVP_PKEY_CTX_free(pctx);
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    return pkey;
}

/*
 * Verifies a raw r || s (64 bytes) ECDSA signature over data with SHA-256.
 * Returns 1 valid, 0 invalid, -1 on an internal error.
 */
static int ecdsa_p256_verify_raw(EVP_PKEY *pkey, const uint8_t sig_rs[64], const uint8_t *data,
                                 size_t data_len, OSSL_LIB_CTX *libctx)
{
    ECDSA_SIG *sig = NULL;
    BIGNUM *r = NULL, *s = NULL;
    unsigned char *der = NULL;
    int der_len;
    EVP_MD_CTX *mdctx = NULL;
    int ret = -1, rc;

    sig = ECDSA_SIG_new();
    r = BN_bin2bn(sig_rs, 32, NULL);
    s = BN_bin2bn(sig_rs + 32, 32, NULL);
    if (sig == NULL || r == NULL || s == NULL || !ECDSA_SIG_set0(sig, r, s))
        goto err;
    r = s = NULL; /* owned by sig now */
    der_len = i2d_ECDSA_SIG(sig, &der);
    if (der_len <= 0)
        goto err;
    mdctx = EVP_MD_CTX_new();
    if (mdctx == NULL || EVP_DigestVerifyInit_ex(mdctx, NULL, "SHA256", libctx, NULL, pkey, NULL) <= 0)
        goto err;
    rc = EVP_DigestVerify(mdctx, der, (size_t)der_len, data, data_len);
    ret = rc == 1 ? 1 : 0;
err:
    EVP_MD_CTX_free(mdctx);
    OPENSSL_free(der);
    BN_free(r);
    BN_free(s);
    ECDSA_SIG_free(sig);
    ERR_clear_error();
    return ret;
}

/* Reads every PEM certificate of the quote's chain (trailing NULs dropped). Caller frees. */
static STACK_OF(X509) * load_pck_chain(const tdx_quote *q, OSSL_LIB_CTX *libctx)
{
    size_t pem_len = q->pck_chain_len;
    BIO *bio = NULL;
    STACK_OF(X509_INFO) *infos = NULL;
    STACK_OF(X509) *certs = NULL;

    while (pem_len > 0 && q->pck_chain[pem_len - 1] == '\0')
        pem_len--;
    if (pem_len == 0 || pem_len > INT_MAX)
        return NULL;
    bio = BIO_new_mem_buf(q->pck_chain, (int)pem_len);
    if (bio == NULL)
        goto err;
    infos = PEM_X509_INFO_read_bio_ex(bio, NULL, NULL, NULL, libctx, NULL);
    if (infos == NULL)
        goto err;
    certs = sk_X509_new_null();
    if (certs == NULL)
        goto err;
    for (int i = 0; i < sk_X509_INFO_num(infos); i++) {
        X509_INFO *info = sk_X509_INFO_value(infos, i);

        if (info->x509 == NULL)
            continue;
        if (!sk_X509_push(certs, info->x509))
            goto err;
        info->x509 = NULL; /* moved into certs */
    }
    if (sk_X509_num(certs) == 0)
        goto err;
    sk_X509_INFO_pop_free(infos, X509_INFO_free);
    BIO_free(bio);
    ERR_clear_error();
    return certs;
err:
    sk_X509_pop_free(certs, X509_free);
    sk_X509_INFO_pop_free(infos, X509_INFO_free);
    BIO_free(bio);
    ERR_clear_error();
    return NULL;
}

/* 1 if QE report REPORTDATA == SHA-256(att_pubkey || qe_auth_data) || 32 zero bytes. -1 on error. */
static int qe_report_binds_att_key(const tdx_quote *q, OSSL_LIB_CTX *libctx)
{
    static const uint8_t zeros[32];
    const uint8_t *qe_report_data = q->qe_report + SGX_REPORT_BODY_REPORTDATA_OFFSET;
    EVP_MD *sha256 = NULL;
    EVP_MD_CTX *mdctx = NULL;
    uint8_t digest[32];
    unsigned int digest_len = 0;
    int ret = -1;

    sha256 = EVP_MD_fetch(libctx, "SHA256", NULL);
    mdctx = EVP_MD_CTX_new();
    if (sha256 == NULL || mdctx == NULL || !EVP_DigestInit_ex2(mdctx, sha256, NULL) ||
        !EVP_DigestUpdate(mdctx, q->att_pubkey, TDX_PUBKEY_LEN) ||
        !EVP_DigestUpdate(mdctx, q->qe_auth_data, q->qe_auth_len) ||
        !EVP_DigestFinal_ex(mdctx, digest, &digest_len) || digest_len != sizeof(digest))
        goto err;
    ret = memcmp(qe_report_data, digest, 32) == 0 && memcmp(qe_report_data + 32, zeros, 32) == 0;
err:
    EVP_MD_CTX_free(mdctx);
    EVP_MD_free(sha256);
    ERR_clear_error();
    return ret;
}

/* Verifies leaf + untrusted intermediates up to a root in `roots`. Error text into err. */
static int verify_pck_chain(STACK_OF(X509) * certs, X509_STORE *roots, time_t at_time, OSSL_LIB_CTX *libctx,
                            kg_err *err)
{
    X509_STORE_CTX *ctx = NULL;
    STACK_OF(X509) *untrusted = NULL;
    int ret = 0, rc;

    untrusted = sk_X509_new_null();
    if (untrusted == NULL) {
        kg_err_set(err, KG_STEP_INTERNAL, "out of memory verifying the PCK chain");
        goto err;
    }
    for (int i = 1; i < sk_X509_num(certs); i++) {
        if (!sk_X509_push(untrusted, sk_X509_value(certs, i))) {
            kg_err_set(err, KG_STEP_INTERNAL, "out of memory verifying the PCK chain");
            goto err;
        }
    }
    ctx = X509_STORE_CTX_new_ex(libctx, NULL);
    if (ctx == NULL || !X509_STORE_CTX_init(ctx, roots, sk_X509_value(certs, 0), untrusted)) {
        kg_err_set(err, KG_STEP_INTERNAL, "cannot set up PCK chain verification");
        kg_err_add_openssl(err);
        goto err;
    }
    if (at_time != 0)
        X509_STORE_CTX_set_time(ctx, 0, at_time);
    rc = X509_verify_cert(ctx);
    if (rc != 1) {
        int code = X509_STORE_CTX_get_error(ctx);

        kg_err_set(err, KG_STEP_EVIDENCE, "PCK chain does not verify against the pinned root: %s",
                   X509_verify_cert_error_string(code));
        goto err;
    }
    ret = 1;
err:
    X509_STORE_CTX_free(ctx);
    sk_X509_free(untrusted); /* the certificates belong to certs */
    ERR_clear_error();
    return ret;
}

int tdx_quote_verify(const tdx_quote *q, const uint8_t *buf, X509_STORE *roots, time_t at_time,
                     OSSL_LIB_CTX *libctx, kg_err *err)
{
    EVP_PKEY *att_key = NULL;
    EVP_PKEY *pck_key; /* owned by the leaf certificate */
    STACK_OF(X509) *certs = NULL;
    int ret = 0, rc;

    if (q == NULL || buf == NULL || roots == NULL)
        return kg_err_set(err, KG_STEP_INTERNAL, "tdx_quote_verify: NULL argument");
    if (q->signature == NULL || q->att_pubkey == NULL || q->qe_report == NULL || q->qe_report_sig == NULL ||
        q->pck_chain == NULL || q->signed_len < TDX_QUOTE_SIGNED_LEN)
        return kg_err_set(err, KG_STEP_INTERNAL, "tdx_quote_verify: quote was not parsed");
    if (libctx == NULL)
        libctx = kg_libctx(); /* never the application's context */

    /* 1. quote signature over header (+ v5 body descriptor) + TD report body, with the attestation key */
    att_key = p256_pubkey_from_xy(q->att_pubkey, libctx);
    if (att_key == NULL) {
        kg_err_set(err, KG_STEP_EVIDENCE, "quote attestation key is not a valid P-256 point");
        goto err;
    }
    rc = ecdsa_p256_verify_raw(att_key, q->signature, buf, q->signed_len, libctx);
    if (rc != 1) {
        kg_err_set(err, rc < 0 ? KG_STEP_INTERNAL : KG_STEP_EVIDENCE, "%s",
                   rc < 0 ? "cannot check the quote signature" : "quote signature does not verify");
        goto err;
    }

    /* 2. QE report signature with the PCK leaf key */
    certs = load_pck_chain(q, libctx);
    if (certs == NULL) {
        kg_err_set(err, KG_STEP_EVIDENCE, "quote PCK chain holds no readable PEM certificate");
        goto err;
    }
    pck_key = X509_get0_pubkey(sk_X509_value(certs, 0));
    if (pck_key == NULL || !EVP_PKEY_is_a(pck_key, "EC")) {
        kg_err_set(err, KG_STEP_EVIDENCE, "PCK leaf certificate does not hold an EC public key");
        goto err;
    }
    rc = ecdsa_p256_verify_raw(pck_key, q->qe_report_sig, q->qe_report, SGX_REPORT_BODY_LEN, libctx);
    if (rc != 1) {
        kg_err_set(err, rc < 0 ? KG_STEP_INTERNAL : KG_STEP_EVIDENCE, "%s",
                   rc < 0 ? "cannot check the QE report signature"
                          : "QE report signature does not verify with the PCK leaf key");
        goto err;
    }

    /* 3. QE report binds the attestation key */
    rc = qe_report_binds_att_key(q, libctx);
    if (rc != 1) {
        kg_err_set(err, rc < 0 ? KG_STEP_INTERNAL : KG_STEP_EVIDENCE, "%s",
                   rc < 0 ? "cannot hash the attestation key"
                          : "QE report data is not SHA-256(attestation key || QE auth data)");
        goto err;
    }

    /* 4. PCK chain up to the pinned root */
    if (!verify_pck_chain(certs, roots, at_time, libctx, err))
        goto err;
    ret = 1;
err:
    sk_X509_pop_free(certs, X509_free);
    EVP_PKEY_free(att_key);
    ERR_clear_error();
    return ret;
}
