/* SPDX-License-Identifier: Apache-2.0 */
/* Azure HCL report parser (hcl_report.h). */
#include "hcl_report.h"

#include <cjson/cJSON.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <string.h>

#include "kg_libctx.h"

#define E_PREFIX "adapter azure-tdx: HCL report: "

static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

int hcl_report_parse(const uint8_t *buf, size_t len, hcl_report *r, kg_err *err)
{
    const uint8_t *igvm = buf + HCL_IGVM_HEADER_OFFSET;

    memset(r, 0, sizeof(*r));
    if (buf == NULL || len < HCL_RUNTIME_DATA_OFFSET)
        return kg_err_set(err, KG_STEP_EVIDENCE, E_PREFIX "%zu bytes, shorter than the %d-byte fixed part",
                          len, HCL_RUNTIME_DATA_OFFSET);
    if (len > HCL_REPORT_MAX)
        return kg_err_set(err, KG_STEP_EVIDENCE, E_PREFIX "%zu bytes, more than %d", len, HCL_REPORT_MAX);
    if (memcmp(buf, "HCLA", 4) != 0)
        return kg_err_set(err, KG_STEP_EVIDENCE, E_PREFIX "no \"HCLA\" signature");
    r->version = le32(buf + 4);
    r->report_size = le32(buf + 8);
    r->request_type = le32(buf + 12);
    r->status = le32(buf + 16);
    if (r->request_type != HCL_REQUEST_TYPE_TDX)
        return kg_err_set(err, KG_STEP_EVIDENCE, E_PREFIX "request type %u is not TDX (%d)", r->request_type,
                          HCL_REQUEST_TYPE_TDX);
    if (r->status != 0)
        return kg_err_set(err, KG_STEP_EVIDENCE, E_PREFIX "status %u (the paravisor failed the request)",
                          r->status);
    r->td_report = buf + HCL_TD_REPORT_OFFSET;
    if (r->td_report[0] != TD_REPORT_TYPE_TDX)
        return kg_err_set(err, KG_STEP_EVIDENCE, E_PREFIX "TD report type 0x%02x is not TDX (0x81)",
                          r->td_report[0]);
    r->igvm_data_size = le32(igvm);
    r->igvm_version = le32(igvm + 4);
    r->report_type = le32(igvm + 8);
    r->hash_type = le32(igvm + 12);
    r->runtime_data_len = le32(igvm + 16);
    if (r->report_type != HCL_IGVM_REPORT_TYPE_TDX)
        return kg_err_set(err, KG_STEP_EVIDENCE, E_PREFIX "report type %u is not TDX (%d)", r->report_type,
                          HCL_IGVM_REPORT_TYPE_TDX);
    if (r->hash_type != HCL_IGVM_HASH_SHA256)
        return kg_err_set(err, KG_STEP_EVIDENCE, E_PREFIX "runtime data hash type %u is not SHA-256 (%d)",
                          r->hash_type, HCL_IGVM_HASH_SHA256);
    if (r->runtime_data_len == 0 || r->runtime_data_len > len - HCL_RUNTIME_DATA_OFFSET)
        return kg_err_set(err, KG_STEP_EVIDENCE, E_PREFIX "runtime data length %zu does not fit in %zu bytes",
                          r->runtime_data_len, len - HCL_RUNTIME_DATA_OFFSET);
    r->runtime_data = buf + HCL_RUNTIME_DATA_OFFSET;
    return 1;
}

int hcl_report_check_runtime_hash(const hcl_report *r, kg_err *err)
{
    static const uint8_t zeros[32];
    uint8_t md[32];
    unsigned int mdlen = 0;
    const uint8_t *rd = r->td_report + TD_REPORT_REPORTDATA_OFFSET;
    EVP_MD *sha256 = EVP_MD_fetch(kg_libctx(), "SHA256", NULL); /* never the application's context */
    int ok = sha256 != NULL && EVP_Digest(r->runtime_data, r->runtime_data_len, md, &mdlen, sha256, NULL);

    EVP_MD_free(sha256);
    if (!ok)
        return kg_err_set(err, KG_STEP_EVIDENCE, E_PREFIX "SHA-256 of the runtime data failed");
    if (CRYPTO_memcmp(rd, md, 32) != 0 || CRYPTO_memcmp(rd + 32, zeros, 32) != 0)
        return kg_err_set(err, KG_STEP_EVIDENCE,
                          E_PREFIX "TD report REPORTDATA is not SHA-256(runtime JSON) || zeros");
    return 1;
}

static int hexval(int ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

int hcl_runtime_user_data(const uint8_t *json, size_t json_len, uint8_t out[64], kg_err *err)
{
    cJSON *root = cJSON_ParseWithLength((const char *)json, json_len);
    const cJSON *ud = cJSON_GetObjectItemCaseSensitive(root, "user-data");
    int ok = 0;

    if (!cJSON_IsObject(root)) {
        kg_err_set(err, KG_STEP_EVIDENCE, E_PREFIX "runtime data is not a JSON object");
        goto err;
    }
    if (!cJSON_IsString(ud) || strlen(ud->valuestring) != 128) {
        kg_err_set(err, KG_STEP_EVIDENCE, E_PREFIX "runtime JSON has no 128-hex-digit \"user-data\"");
        goto err;
    }
    for (int i = 0; i < 64; i++) {
        int hi = hexval((unsigned char)ud->valuestring[2 * i]),
            lo = hexval((unsigned char)ud->valuestring[2 * i + 1]);
        if (hi < 0 || lo < 0) {
            kg_err_set(err, KG_STEP_EVIDENCE, E_PREFIX "runtime JSON \"user-data\" is not hex");
            goto err;
        }
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    ok = 1;
err:
    cJSON_Delete(root);
    return ok;
}
