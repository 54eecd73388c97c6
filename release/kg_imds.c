/* SPDX-License-Identifier: Apache-2.0 */
#include "kg_imds.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "kg_attest.h"
#include "kg_b64.h"
#include "kg_http.h"

#define IMDS_MAX_REPLY (64 * 1024)

int kg_imds_tdquote(void *ctx, const char *url, const uint8_t *td_report, size_t td_report_len,
                    uint8_t **quote, size_t *quote_len, kg_err *err)
{
    const kg_config *cfg = ctx;
    const char *headers[] = {"Content-Type: application/json", "Accept: application/json", NULL};
    kg_http_opts o;
    kg_http *h = NULL;
    kg_http_response resp;
    cJSON *req = NULL, *reply = NULL;
    const cJSON *q;
    char *b64 = NULL, *body = NULL;
    int ok = 0;

    *quote = NULL;
    *quote_len = 0;
    memset(&resp, 0, sizeof(resp));
    kg_config_http_opts(cfg, KG_SVC_ITA, &o);
    o.allow_http_host = KG_IMDS_HOST; /* IMDS is link-local plain http */
    if ((h = kg_http_new(&o, err)) == NULL)
        goto err;
    if ((b64 = kg_b64_encode(td_report, td_report_len)) == NULL || (req = cJSON_CreateObject()) == NULL ||
        cJSON_AddStringToObject(req, "report", b64) == NULL || (body = cJSON_PrintUnformatted(req)) == NULL) {
        kg_err_set(err, KG_STEP_INTERNAL, "out of memory");
        goto err;
    }
    if (!kg_http_request(h, KG_STEP_EVIDENCE, "POST", url, headers, body, strlen(body), IMDS_MAX_REPLY, &resp,
                         err))
        goto err;
    if (resp.status != 200) {
        kg_http_status_error(err, KG_STEP_EVIDENCE, "adapter azure-tdx: IMDS POST", url, &resp);
        goto err;
    }
    reply = cJSON_ParseWithLength((const char *)resp.body, resp.body_len);
    q = cJSON_GetObjectItemCaseSensitive(reply, "quote");
    if (!cJSON_IsString(q) || !kg_b64url_decode(q->valuestring, strlen(q->valuestring), quote, quote_len)) {
        /* IMDS answers unpadded base64url; accept padded standard base64 as well */
        if (!cJSON_IsString(q) || !kg_b64_decode(q->valuestring, strlen(q->valuestring), quote, quote_len)) {
            kg_err_set(err, KG_STEP_EVIDENCE, "adapter azure-tdx: IMDS reply from %s has no base64 \"quote\"",
                       url);
            goto err;
        }
    }
    ok = 1;
err:
    cJSON_Delete(req);
    cJSON_Delete(reply);
    free(b64);
    free(body);
    kg_http_response_clear(&resp);
    kg_http_free(h);
    return ok;
}
