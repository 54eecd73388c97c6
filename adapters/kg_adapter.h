/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The evidence adapters behind one interface: collect evidence binding a nonce and user data,
 * returning quote, runtime_data, user_data and event log (kg_evidence.h).
 *
 *   sim        software TD (sim_td.h): demos and tests only, warns on every use
 *   tdx        configfs-tsm (Linux 6.7+: bare-metal TDX hosts, GCP TDX VMs)
 *   tdx-ioctl  /dev/tdx_guest (older guests)
 *   azure-tdx  Azure TDX CVMs: vTPM NV indices + IMDS quote conversion
 *
 * adapters/ depends on libcrypto only (docs/design.md §2): anything that needs HTTP (Azure's IMDS)
 * is reached through a callback the caller supplies.
 */
#ifndef KG_ADAPTER_H
#define KG_ADAPTER_H

#include <stddef.h>
#include <stdint.h>

#include "kg_err.h"
#include "kg_evidence.h"
#include "sim_td.h"

typedef struct kg_adapter_config {
    char name[16]; /* tdx | tdx-ioctl | azure-tdx | sim */
    sim_td_config sim;
    char tsm_report_dir[512]; /* configfs-tsm report directory */
    int event_log;            /* collect the CCEL event log (tdx) */
    char ccel_table[512];     /* ACPI CCEL table */
    char ccel_data[512];      /* CCEL event log data */
    char tdx_guest_device[256];
    char azure_tcti[256];         /* TSS2 TCTI configuration for the vTPM */
    char azure_imds_url[512];     /* Azure IMDS /acc/tdquote */
    long azure_report_timeout_ms; /* bound on waiting for the HCL report to carry our hash */
} kg_adapter_config;

typedef struct kg_adapter_request {
    const uint8_t *nonce_val; /* decoded nonce fields; NULL/0 when there is no nonce */
    size_t nonce_val_len;
    const uint8_t *nonce_iat;
    size_t nonce_iat_len;
    const uint8_t *user_data;
    size_t user_data_len;
    /* When set, these 64 bytes are REPORTDATA as they are (a KBS's own binding, e.g. Trustee's
     * H(JCS(runtime data))); the nonce fields are then unused. tdx and sim only. */
    const uint8_t *report_data;
    /* Azure: converts a 1024-byte TD report into a quote through IMDS. Supplied by release/
     * (which owns HTTP). *quote is malloc'ed, caller frees. Returns 1/0 with err. */
    int (*imds_tdquote)(void *ctx, const char *url, const uint8_t *td_report, size_t td_report_len,
                        uint8_t **quote, size_t *quote_len, kg_err *err);
    void *imds_ctx;
} kg_adapter_request;

/* Fills defaults: name "tdx", sysfs/configfs paths, TCTI device:/dev/tpmrm0, IMDS
 * http://169.254.169.254/acc/tdquote, 10 s report timeout, sim defaults. */
void kg_adapter_config_defaults(kg_adapter_config *cfg);

/* Collects evidence with the configured adapter. On success ev is filled (caller clears with
 * kg_evidence_clear) and its quote's REPORTDATA was checked locally against ev->report_data.
 * Returns 1, or 0 with err (step evidence) whose message names the adapter. */
int kg_adapter_collect(const kg_adapter_config *cfg, const kg_adapter_request *req, kg_evidence *ev,
                       kg_err *err);

#endif
