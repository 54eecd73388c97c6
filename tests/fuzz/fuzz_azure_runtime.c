/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Azure TDX: the HCL report (hcl_report_parse: header, TD report, IGVM request data, runtime
 * JSON bounds), the runtime JSON's user-data (hcl_runtime_user_data) and the REPORTDATA binding
 * (hcl_report_check_runtime_hash). The same input is also given to hcl_runtime_user_data as
 * raw runtime JSON. Exact-size buffers.
 */
#include "fuzz_common.h"
#include "hcl_report.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *buf = fuzz_dup(data, size), ud[64];
    hcl_report r;
    kg_err err;

    (void)hcl_runtime_user_data(buf, size, ud, &err);
    if (hcl_report_parse(buf, size, &r, &err)) {
        fuzz_note("hcl_runtime_user_data",
                  hcl_runtime_user_data(r.runtime_data, r.runtime_data_len, ud, &err), err.msg);
        fuzz_note("hcl_report_check_runtime_hash", hcl_report_check_runtime_hash(&r, &err), err.msg);
    } else {
        fuzz_note("hcl_report_parse", 0, err.msg);
    }
    free(buf);
    fuzz_err_queue_empty();
    return 0;
}
