/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Azure HCL report (vTPM NV index 0x01400001 on TDX CVMs), docs/protocols/azure-tdx.md §2:
 *
 *   [0, 32)        header: "HCLA", u32 version, u32 report size, u32 request type (2 = TDX),
 *                  u32 status, 12 reserved
 *   [32, 1056)     the 1024-byte TD report (REPORTMACSTRUCT, TEE_TCB_INFO, TDINFO)
 *   [1216, 1236)   IGVM request data header: u32 data_size, version, report_type (4 = TDX),
 *                  hash_type (1 = SHA-256), variable_data_size (= runtime JSON length)
 *   [1236, ...)    the runtime JSON (keys, vm-configuration, user-data)
 *
 * The TD report's REPORTDATA is SHA-256(runtime JSON) || 32 zero bytes; the JSON's user-data is
 * the hex of what was written into NV index 0x01400002. Pure functions, no I/O.
 */
#ifndef KG_HCL_REPORT_H
#define KG_HCL_REPORT_H

#include <stddef.h>
#include <stdint.h>

#include "kg_err.h"

#define HCL_HEADER_LEN 32
#define HCL_TD_REPORT_OFFSET 32
#define HCL_TD_REPORT_LEN 1024
#define HCL_IGVM_HEADER_OFFSET 1216
#define HCL_RUNTIME_DATA_OFFSET 1236
#define HCL_REPORT_MAX 8192 /* bound on what we read from the NV index */
#define HCL_REQUEST_TYPE_TDX 2
#define HCL_IGVM_REPORT_TYPE_TDX 4
#define HCL_IGVM_HASH_SHA256 1
#define TD_REPORT_TYPE_TDX 0x81
#define TD_REPORT_REPORTDATA_OFFSET 128 /* in REPORTMACSTRUCT */
#define TD_REPORT_MRTD_OFFSET 528       /* TDINFO at 512: attributes 8, xfam 8, mrtd 48 */

typedef struct hcl_report {
    uint32_t version;
    uint32_t report_size;
    uint32_t request_type;
    uint32_t status;
    const uint8_t *td_report; /* HCL_TD_REPORT_LEN bytes inside the caller's buffer */
    uint32_t igvm_data_size;
    uint32_t igvm_version;
    uint32_t report_type;
    uint32_t hash_type;
    const uint8_t *runtime_data; /* the runtime JSON, inside the caller's buffer */
    size_t runtime_data_len;
} hcl_report;

/* Parses and bounds-checks an HCL report of len bytes (a TDX one: signature, request type,
 * report type, TD report type, hash type SHA-256, runtime length within the buffer). Pointers
 * point into buf. Returns 1, or 0 with err (step evidence, "adapter azure-tdx: HCL report: ..."). */
int hcl_report_parse(const uint8_t *buf, size_t len, hcl_report *r, kg_err *err);

/* TD report REPORTDATA == SHA-256(runtime JSON) || 32 zero bytes. Returns 1, or 0 with err. */
int hcl_report_check_runtime_hash(const hcl_report *r, kg_err *err);

/* Reads the runtime JSON's "user-data" into out (64 bytes; hex of any case). Returns 1, or 0
 * with err when the JSON is malformed or user-data is not 128 hex digits. */
int hcl_runtime_user_data(const uint8_t *json, size_t json_len, uint8_t out[64], kg_err *err);

#endif
