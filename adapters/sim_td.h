/* SPDX-License-Identifier: Apache-2.0 */
/*
 * sim: a software TD for demos and tests. It produces quotes in the real DCAP v4 or v5 layout
 * (tdx_quote.h) signed by a per-process ECDSA-P256 attestation key, with a QE report signed
 * by a simulated PCK key whose chain (PEM, leaf first) is embedded as certification data
 * type 5 inside type 6. Only a verifier that pins the simulated root accepts its quotes.
 * Every use logs a warning.
 */
#ifndef KG_SIM_TD_H
#define KG_SIM_TD_H

#include <openssl/types.h>
#include <stddef.h>
#include <stdint.h>

#include "kg_err.h"

typedef struct sim_td_config {
    uint8_t mrtd[48];
    uint8_t mrseam[48];
    uint8_t rtmr[4][48];
    uint8_t tee_tcb_svn[16];
    uint8_t xfam[8];
    uint64_t td_attributes;   /* bit 0 = DEBUG */
    int quote_version;        /* 4, or 5 (body descriptor + body_type) */
    uint16_t body_type;       /* v5 only: 3 = TD report 1.5 (default), 2 = TD report 1.0 */
    uint8_t tee_tcb_svn2[16]; /* body type 3 only */
    uint8_t mrservicetd[48];  /* body type 3 only */
    char pck_key_file[512];   /* PEM private key (EC P-256) of the simulated PCK */
    char pck_chain_file[512]; /* PEM chain: PCK leaf, platform CA, root */
} sim_td_config;

/* Fills defaults: a fixed non-zero MRTD, zero RTMRs, SEPT_VE_DISABLE only (not debug),
 * TEE_TCB_SVN and TEE_TCB_SVN2 04010700..., MRSERVICETD zero (no service TD bound), quote v4
 * (v5: body type 3), files empty (must be set before use). */
void sim_td_config_defaults(sim_td_config *cfg);

/* Produces a quote carrying report_data. *quote is malloc'ed, caller frees.
 * Returns 1, or 0 with err (step evidence). libctx may be NULL (keygate's private kg_libctx()). */
int sim_td_get_quote(const sim_td_config *cfg, const uint8_t report_data[64], OSSL_LIB_CTX *libctx,
                     uint8_t **quote, size_t *quote_len, kg_err *err);

#endif
