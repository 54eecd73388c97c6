/* SPDX-License-Identifier: Apache-2.0 */
/*
 * TDX DCAP quotes v4 and v5 (ECDSA-P256 attestation key, TEE type 0x81): layout, parser and the
 * signature checks an offline verifier can do (quote signature, QE report signature,
 * QE report-data binding, PCK chain). Layout: docs/protocols/tdx-quote.md §2 (v4), §2.4 (v5).
 *
 * v5 puts a body descriptor (u16 type, u32 size) between the header and the TD report: type 2 is
 * the 584-byte TD report of TDX 1.0 (the v4 body), type 3 the 648-byte TD report of TDX 1.5
 * (+ TEE_TCB_SVN2, MRSERVICETD). The signature covers header, descriptor and body. Read fields
 * through the parsed tdx_quote, never at fixed offsets: they move by 6 bytes in v5.
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
#define TDX_TD_REPORT_BODY_LEN 584   /* TD report 1.0: v4 body, v5 body type 2 */
#define TDX_TD_REPORT15_BODY_LEN 648 /* TD report 1.5: v5 body type 3 */
#define TDX_QUOTE_BODY_DESC_LEN 6    /* v5: u16 body type + u32 body size */
#define TDX_QUOTE_SIGNED_LEN (TDX_QUOTE_HEADER_LEN + TDX_TD_REPORT_BODY_LEN) /* 632: the smallest (v4) */
#define TDX_QUOTE_REPORTDATA_OFFSET 568                                      /* v4 only */
#define TDX_BODY_REPORTDATA_OFFSET 520                                       /* in the TD report body */
#define TDX_QUOTE_VERSION_4 4
#define TDX_QUOTE_VERSION_5 5
#define TDX_BODY_TYPE_TD_REPORT10 2 /* TDX 1.0 */
#define TDX_BODY_TYPE_TD_REPORT15 3 /* TDX 1.5 */
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
    /* body: v4 carries a TD report 1.0 without descriptor (body_type 2 is then implied) */
    uint16_t body_type; /* TDX_BODY_TYPE_TD_REPORT10 or _TD_REPORT15 */
    uint32_t body_size; /* 584 or 648 */
    size_t body_offset; /* 48 (v4) or 54 (v5) */
    size_t signed_len;  /* header (+ descriptor) + body: what the quote signature covers */
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
    /* TD report 1.5 only (body_type 3); zero otherwise */
    uint8_t tee_tcb_svn2[16];
    uint8_t mrservicetd[48];
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
    size_t quote_len; /* signed_len + 4 + signature data length */
} tdx_quote;

/* Parses a v4 or v5 (body type 2 or 3) TDX quote. Returns 1, or 0 with err (step evidence)
 * naming the bad field. */
int tdx_quote_parse(const uint8_t *buf, size_t len, tdx_quote *q, kg_err *err);

/*
 * Verifies, for a parsed quote whose buffer is buf:
 *  - the quote ECDSA-P256 signature over bytes [0, signed_len) with att_pubkey;
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
