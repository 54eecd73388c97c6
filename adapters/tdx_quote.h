/* SPDX-License-Identifier: Apache-2.0 */
/*
 * TDX DCAP quote v4 (ECDSA-P256 attestation key, TEE type 0x81): layout, parser and the
 * signature checks an offline verifier can do (quote signature, QE report signature,
 * QE report-data binding, PCK chain). Layout: docs/protocols/tdx-quote.md §2.
 *
 * tdx_quote_parse never copies the buffer: pointer fields point into the caller's buffer,
 * which must outlive the tdx_quote. Trailing bytes after the signature data (zero padding in
 * real files) are ignored; quote_len tells the real length.
 */
#ifndef KG_TDX_QUOTE_H
#define KG_TDX_QUOTE_H

#include <openssl/x509.h>
#include <stddef.h>
#include <stdint.h>

#include "kg_err.h"

#define TDX_QUOTE_HEADER_LEN 48
#define TDX_TD_REPORT_BODY_LEN 584
#define TDX_QUOTE_SIGNED_LEN (TDX_QUOTE_HEADER_LEN + TDX_TD_REPORT_BODY_LEN) /* 632 */
#define TDX_QUOTE_REPORTDATA_OFFSET 568
#define TDX_QUOTE_VERSION_4 4
#define TDX_ATT_KEY_TYPE_ECDSA_P256 2
#define TDX_TEE_TYPE_TDX 0x81
#define TDX_CERT_TYPE_PCK_CHAIN 5
#define TDX_CERT_TYPE_QE_REPORT 6
#define SGX_REPORT_BODY_LEN 384
#define SGX_REPORT_BODY_REPORTDATA_OFFSET 320
#define TDX_TD_ATTR_DEBUG 0x1ULL
#define TDX_TD_ATTR_SEPT_VE_DISABLE 0x10000000ULL

typedef struct tdx_quote {
    /* header */
    uint16_t version;
    uint16_t att_key_type;
    uint32_t tee_type;
    uint16_t qe_svn;
    uint16_t pce_svn;
    uint8_t qe_vendor_id[16];
    uint8_t header_user_data[20];
    /* TD quote body */
    uint8_t tee_tcb_svn[16];
    uint8_t mrseam[48];
    uint8_t mrsignerseam[48];
    uint8_t seam_attributes[8];
    uint64_t td_attributes; /* little-endian u64 from the 8 bytes */
    uint8_t xfam[8];
    uint8_t mrtd[48];
    uint8_t mrconfigid[48];
    uint8_t mrowner[48];
    uint8_t mrownerconfig[48];
    uint8_t rtmr[4][48];
    uint8_t report_data[64];
    /* signature section: pointers into the caller's buffer */
    const uint8_t *signature;     /* 64 bytes, r || s big-endian */
    const uint8_t *att_pubkey;    /* 64 bytes, x || y */
    uint16_t cert_type;           /* outer certification data type, 6 */
    const uint8_t *qe_report;     /* 384-byte SGX report body */
    const uint8_t *qe_report_sig; /* 64 bytes */
    const uint8_t *qe_auth_data;
    uint16_t qe_auth_len;
    uint16_t inner_cert_type; /* 5 */
    const uint8_t *pck_chain; /* PEM, leaf first, maybe NUL-terminated */
    uint32_t pck_chain_len;
    size_t quote_len; /* header + body + 4 + signature data length */
} tdx_quote;

/* Parses a v4 TDX quote. Returns 1, or 0 with err (step evidence) naming the bad field. */
int tdx_quote_parse(const uint8_t *buf, size_t len, tdx_quote *q, kg_err *err);

/*
 * Verifies, for a parsed quote whose buffer is buf:
 *  - the quote ECDSA-P256 signature over bytes [0, 632) with att_pubkey;
 *  - the QE report signature with the PCK leaf key;
 *  - QE report REPORTDATA[0:32] == SHA-256(att_pubkey || qe_auth_data), [32:64] zero;
 *  - the PCK chain (leaf, intermediates from the quote) up to a root in `roots`
 *    (the pinned root; never the root embedded in the quote). at_time: 0 = now.
 * Returns 1, or 0 with err naming the failed check. libctx may be NULL (kg_libctx()).
 */
int tdx_quote_verify(const tdx_quote *q, const uint8_t *buf, X509_STORE *roots, time_t at_time,
                     OSSL_LIB_CTX *libctx, kg_err *err);

/* 1 if the TD's DEBUG attribute bit is set. */
int tdx_quote_is_debug(const tdx_quote *q);

#endif
