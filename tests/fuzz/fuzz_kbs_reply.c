/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Intel KBS replies: the transfer reply {"wrapped_key", "wrapped_swk"} (kbs_intel_parse_wrapped),
 * the background nonce reply (kbs_intel_parse_nonce), the GET /version reply
 * (kbs_intel_parse_version, kbs_intel_gen_of_version) and the {"error": ...} text of a non-200
 * reply (kbs_intel_status_error), all on every input. The body is NUL-terminated past its
 * length, as kg_http hands it over.
 */
#include "fuzz_common.h"
#include "kbs_intel.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *body = (uint8_t *)fuzz_cstr(data, size);
    kg_http_response resp;
    kbs_wrapped w;
    ita_nonce nonce;
    kg_err err;

    fuzz_note("kbs_intel_parse_wrapped", kbs_intel_parse_wrapped("https://kbs.invalid", body, size, &w, &err),
              err.msg);
    kbs_wrapped_clear(&w);
    fuzz_note("kbs_intel_parse_nonce", kbs_intel_parse_nonce(body, size, &nonce), "malformed");
    ita_nonce_clear(&nonce);
    {
        char version[64];
        if (kbs_intel_parse_version(body, size, version, sizeof(version)))
            (void)kbs_intel_gen_of_version(version);
    }
    memset(&resp, 0, sizeof(resp));
    resp.status = 400;
    resp.body = body;
    resp.body_len = size;
    snprintf(resp.request_id, sizeof(resp.request_id), "req-1");
    kg_err_clear(&err);
    (void)kbs_intel_status_error(&err, KG_STEP_TRANSFER, "https://kbs.invalid", &resp);
    FUZZ_REQUIRE(memchr(err.msg, '\0', sizeof(err.msg)) != NULL);
    free(body);
    fuzz_err_queue_empty();
    return 0;
}
