/* SPDX-License-Identifier: Apache-2.0 */
/*
 * azure-tdx: Azure TDX confidential VMs (DCesv5/ECesv5/DCesv6), docs/protocols/azure-tdx.md §1.
 *
 * Talks to the vTPM with ESYS over the configured TCTI (no tools, no temp files):
 *   1. h = SHA-512(nonce.val || nonce.iat || user_data), or 64 zero bytes with neither;
 *   2. define NV index 0x01400002 (owner, 64 bytes) if missing and write h into it;
 *   3. poll NV index 0x01400001 (the HCL report, hcl_report.h), with a growing interval bounded
 *      by azure_report_timeout_ms, until its runtime JSON's user-data is hex(h) (any case) and
 *      the TD report's REPORTDATA is SHA-256(runtime JSON) || zeros;
 *   4. convert the 1024-byte TD report into a quote through the caller's IMDS callback.
 * The vTPM connection is opened per step and closed on every path, so a single-client TCTI
 * (swtpm) is free for others between polls.
 *
 * The evidence: kind KG_EVIDENCE_AZURE_TDX, quote, runtime_data = runtime JSON, user_data = the
 * caller's, report_data = h (what was written to NV 0x01400002).
 */
#ifndef KG_AZURE_TDX_H
#define KG_AZURE_TDX_H

#include "kg_adapter.h"

#define AZURE_NV_USER_DATA 0x01400002u
#define AZURE_NV_HCL_REPORT 0x01400001u

int azure_tdx_collect(const kg_adapter_config *cfg, const kg_adapter_request *req, kg_evidence *ev,
                      kg_err *err);

#endif
