/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Evidence as the adapters return it, and the REPORTDATA binding rule for Intel TDX
 * (docs/protocols/ita-api.md §6.1): REPORTDATA = SHA-512(nonce.val ‖ nonce.iat ‖ user_data),
 * where val/iat are the base64-decoded nonce fields (val is 88 ASCII bytes, hashed as-is). With
 * neither nonce nor user data the input is empty: SHA-512(""), never zeros.
 */
#ifndef KG_EVIDENCE_H
#define KG_EVIDENCE_H

#include <stddef.h>
#include <stdint.h>

#include "kg_err.h"

typedef enum kg_evidence_kind {
    KG_EVIDENCE_TDX = 0,      /* Intel TDX quote; runtime_data = user data */
    KG_EVIDENCE_AZURE_TDX = 1 /* Azure: runtime_data = runtime JSON, user_data = ours; ITA's /azure routes */
} kg_evidence_kind;

typedef struct kg_evidence {
    kg_evidence_kind kind;
    uint8_t *quote; /* owned */
    size_t quote_len;
    uint8_t *runtime_data; /* owned; what ITA receives as runtime_data */
    size_t runtime_data_len;
    uint8_t *user_data; /* owned; Azure only */
    size_t user_data_len;
    uint8_t *event_log; /* owned; optional */
    size_t event_log_len;
    uint8_t report_data[64]; /* the value written into the TD's REPORTDATA */
} kg_evidence;

void kg_evidence_clear(kg_evidence *ev);

/* Copies data into ev->runtime_data (nothing when len is 0). Returns 1, or 0 with err. */
int kg_evidence_set_runtime_data(kg_evidence *ev, const uint8_t *data, size_t len, kg_err *err);

/* Computes the Intel TDX REPORTDATA. Any pointer may be NULL with length 0. Returns 1/0. */
int tdx_report_data_compute(const uint8_t *nonce_val, size_t val_len, const uint8_t *nonce_iat,
                            size_t iat_len, const uint8_t *user_data, size_t user_data_len, uint8_t out[64]);

#endif
