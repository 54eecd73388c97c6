/* SPDX-License-Identifier: Apache-2.0 */
/* The adapter dispatch table and the checks every adapter's result gets. */
#include "kg_adapter.h"

#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "azure_tdx.h"
#include "kg_libctx.h"
#include "tdx_quote.h"
#include "tdx_tsm.h"

typedef int (*kg_adapter_collect_fn)(const kg_adapter_config *cfg, const kg_adapter_request *req,
                                     kg_evidence *ev, kg_err *err);

static int sim_collect(const kg_adapter_config *cfg, const kg_adapter_request *req, kg_evidence *ev,
                       kg_err *err)
{
    if (!sim_td_get_quote(&cfg->sim, ev->report_data, kg_libctx(), &ev->quote, &ev->quote_len, err))
        return 0;
    if (!kg_evidence_set_runtime_data(ev, req->user_data, req->user_data_len, err))
        return 0;
    ev->kind = KG_EVIDENCE_TDX;
    return 1;
}

static int not_built(const kg_adapter_config *cfg, const kg_adapter_request *req, kg_evidence *ev,
                     kg_err *err)
{
    return kg_err_set(err, KG_STEP_EVIDENCE, "adapter %s: not available in this build", cfg->name);
}

static const struct {
    const char *name;
    kg_adapter_collect_fn collect;
} kg_adapters[] = {
    {"sim", sim_collect},
    {"tdx", tdx_tsm_collect},
    {"tdx-ioctl", not_built},
    {"azure-tdx", azure_tdx_collect},
};

void kg_adapter_config_defaults(kg_adapter_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    snprintf(cfg->name, sizeof(cfg->name), "tdx");
    sim_td_config_defaults(&cfg->sim);
    snprintf(cfg->tsm_report_dir, sizeof(cfg->tsm_report_dir), "/sys/kernel/config/tsm/report");
    snprintf(cfg->ccel_table, sizeof(cfg->ccel_table), "/sys/firmware/acpi/tables/CCEL");
    snprintf(cfg->ccel_data, sizeof(cfg->ccel_data), "/sys/firmware/acpi/tables/data/CCEL");
    snprintf(cfg->tdx_guest_device, sizeof(cfg->tdx_guest_device), "/dev/tdx_guest");
    snprintf(cfg->azure_tcti, sizeof(cfg->azure_tcti), "device:/dev/tpmrm0");
    snprintf(cfg->azure_imds_url, sizeof(cfg->azure_imds_url), "http://169.254.169.254/acc/tdquote");
    cfg->azure_report_timeout_ms = 10000;
}

int kg_adapter_collect(const kg_adapter_config *cfg, const kg_adapter_request *req, kg_evidence *ev,
                       kg_err *err)
{
    kg_adapter_collect_fn collect = NULL;
    tdx_quote q;

    memset(ev, 0, sizeof(*ev));
    for (size_t i = 0; i < sizeof(kg_adapters) / sizeof(kg_adapters[0]); i++)
        if (strcmp(kg_adapters[i].name, cfg->name) == 0)
            collect = kg_adapters[i].collect;
    if (collect == NULL)
        return kg_err_set(err, KG_STEP_EVIDENCE, "unknown adapter '%s'", cfg->name);
    if (req->report_data != NULL) {
        if (strcmp(cfg->name, "azure-tdx") == 0) {
            kg_err_set(err, KG_STEP_EVIDENCE,
                       "adapter azure-tdx binds through the vTPM runtime JSON, not a given REPORTDATA");
            goto err;
        }
        memcpy(ev->report_data, req->report_data, 64);
    } else if (!tdx_report_data_compute(req->nonce_val, req->nonce_val_len, req->nonce_iat,
                                        req->nonce_iat_len, req->user_data, req->user_data_len,
                                        ev->report_data)) {
        kg_err_set(err, KG_STEP_EVIDENCE, "adapter %s: SHA-512 of the report data failed", cfg->name);
        goto err;
    }
    if (!collect(cfg, req, ev, err))
        goto err;
    /* never hand out a quote that does not carry what we asked for (Azure binds through the
     * runtime JSON instead: its adapter checks that itself) */
    if (!tdx_quote_parse(ev->quote, ev->quote_len, &q, err))
        goto err;
    if (ev->kind == KG_EVIDENCE_TDX && CRYPTO_memcmp(q.report_data, ev->report_data, 64) != 0) {
        kg_err_set(err, KG_STEP_EVIDENCE, "adapter %s: quote REPORTDATA differs from the value written",
                   cfg->name);
        goto err;
    }
    return 1;
err:
    kg_evidence_clear(ev);
    return 0;
}
