/* SPDX-License-Identifier: Apache-2.0 */
#include "kbs_intel.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kg_b64.h"
#include "kg_json.h"

void kbs_wrapped_clear(kbs_wrapped *w)
{
    if (w == NULL)
        return;
    free(w->wrapped_key);
    free(w->wrapped_swk);
    memset(w, 0, sizeof(*w));
}

static void transfer_url(char *url, size_t size, const char *kbs_url, const char *key_id)
{
    snprintf(url, size, "%s/kbs/v1/keys/%s/transfer", kbs_url, key_id);
}

/* The {"error": "..."} text of a reply, printable and bounded, into why ("" when none). */
static void error_text(const kg_http_response *resp, char *why, size_t size)
{
    cJSON *j = cJSON_ParseWithLength((const char *)resp->body, resp->body_len);
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(j, "error");
    size_t n = 0;

    if (cJSON_IsString(e))
        for (const char *p = e->valuestring; *p != '\0' && n < size - 1; p++)
            why[n++] = (*p >= 0x20 && *p < 0x7f) ? *p : '?';
    why[n] = '\0';
    cJSON_Delete(j);
}

int kbs_intel_status_error(kg_err *err, kg_step step, const char *url, const kg_http_response *resp)
{
    char why[200];

    error_text(resp, why, sizeof(why));
    kg_http_status_error(err, step, "POST", url, resp);
    if (err != NULL && why[0] != '\0') {
        size_t len = strlen(err->msg);
        snprintf(err->msg + len, sizeof(err->msg) - len, ": %s", why);
    }
    return 0;
}

int kbs_intel_parse_wrapped(const char *url, const uint8_t *body, size_t len, kbs_wrapped *out, kg_err *err)
{
    cJSON *j = cJSON_ParseWithLength((const char *)body, len);
    const cJSON *item, *wk, *ws;
    int ok = 0;

    memset(out, 0, sizeof(*out));
    if (!cJSON_IsObject(j)) {
        kg_err_set(err, KG_STEP_TRANSFER, "POST %s: reply is not a JSON object", url);
        goto err;
    }
    cJSON_ArrayForEach(item, j)
    {
        if (strcmp(item->string, "wrapped_key") != 0 && strcmp(item->string, "wrapped_swk") != 0) {
            kg_err_set(err, KG_STEP_TRANSFER, "POST %s: reply has an unknown field '%.40s'", url,
                       item->string);
            goto err;
        }
    }
    wk = cJSON_GetObjectItemCaseSensitive(j, "wrapped_key");
    ws = cJSON_GetObjectItemCaseSensitive(j, "wrapped_swk");
    if (!cJSON_IsString(wk) || !cJSON_IsString(ws) ||
        !kg_b64_decode(wk->valuestring, strlen(wk->valuestring), &out->wrapped_key, &out->wrapped_key_len) ||
        !kg_b64_decode(ws->valuestring, strlen(ws->valuestring), &out->wrapped_swk, &out->wrapped_swk_len)) {
        kg_err_set(err, KG_STEP_TRANSFER, "POST %s: reply lacks base64 wrapped_key/wrapped_swk", url);
        goto err;
    }
    ok = 1;
err:
    if (!ok)
        kbs_wrapped_clear(out);
    cJSON_Delete(j);
    return ok;
}

static int post(kg_http *h, const char *url, const char *const *headers, const char *body,
                kg_http_response *resp, kg_err *err)
{
    if (!kg_http_request(h, KG_STEP_TRANSFER, "POST", url, headers, body ? body : "", body ? strlen(body) : 0,
                         KBS_MAX_REPLY, resp, err))
        return 0;
    if (err != NULL) {
        snprintf(err->request_id, sizeof(err->request_id), "%s", resp->request_id);
        snprintf(err->trace_id, sizeof(err->trace_id), "%s", resp->trace_id);
    }
    return 1;
}

/* Sends a transfer request (its JSON body built by the caller) and parses the wrapped key. */
static int post_for_wrapped(kg_http *h, const char *url, const char *const *headers, const cJSON *req,
                            kbs_wrapped *out, kg_err *err)
{
    char *body = req != NULL ? cJSON_PrintUnformatted(req) : NULL;
    kg_http_response resp;
    int ok = 0;

    memset(&resp, 0, sizeof(resp));
    if (body == NULL) {
        kg_err_set(err, KG_STEP_INTERNAL, "out of memory");
        goto err;
    }
    if (!post(h, url, headers, body, &resp, err))
        goto err;
    if (resp.status != 200) {
        kbs_intel_status_error(err, KG_STEP_TRANSFER, url, &resp);
        goto err;
    }
    ok = kbs_intel_parse_wrapped(url, resp.body, resp.body_len, out, err);
err:
    free(body);
    kg_http_response_clear(&resp);
    return ok;
}

int kbs_intel_transfer_passport(kg_http *h, const char *kbs_url, const char *key_id, const char *token,
                                kbs_wrapped *out, kg_err *err)
{
    static const char *const headers[] = {"Accept: application/json", "Content-Type: application/json", NULL};
    char url[700];
    cJSON *req = cJSON_CreateObject();
    int ok;

    memset(out, 0, sizeof(*out));
    transfer_url(url, sizeof(url), kbs_url, key_id);
    if (req != NULL && cJSON_AddStringToObject(req, "attestation_token", token) == NULL) {
        cJSON_Delete(req);
        req = NULL;
    }
    ok = post_for_wrapped(h, url, headers, req, out, err);
    cJSON_Delete(req);
    return ok;
}

int kbs_intel_parse_nonce(const uint8_t *body, size_t len, ita_nonce *nonce)
{
    cJSON *j = cJSON_ParseWithLength((const char *)body, len);
    const char *fields[] = {"val", "iat", "signature"};
    uint8_t **dst[] = {&nonce->val, &nonce->iat, &nonce->signature};
    size_t *dlen[] = {&nonce->val_len, &nonce->iat_len, &nonce->signature_len};
    int ok = 0;

    memset(nonce, 0, sizeof(*nonce));
    for (int i = 0; i < 3; i++) {
        const cJSON *f = cJSON_GetObjectItemCaseSensitive(j, fields[i]);
        if (!cJSON_IsString(f) || !kg_b64_decode(f->valuestring, strlen(f->valuestring), dst[i], dlen[i]) ||
            *dlen[i] == 0 || *dlen[i] > 1024)
            goto err;
    }
    ok = 1;
err:
    if (!ok)
        ita_nonce_clear(nonce);
    cJSON_Delete(j);
    return ok;
}

int kbs_intel_get_nonce(kg_http *h, const char *kbs_url, const char *key_id, ita_nonce *nonce,
                        char *attestation_type, size_t at_size, int *nonce_disabled, kg_err *err)
{
    static const char *const headers[] = {"Accept: application/json", NULL};
    char url[700], why[200];
    kg_http_response resp;
    int ok = 0;

    memset(nonce, 0, sizeof(*nonce));
    memset(&resp, 0, sizeof(resp));
    if (nonce_disabled != NULL)
        *nonce_disabled = 0;
    transfer_url(url, sizeof(url), kbs_url, key_id);
    if (!post(h, url, headers, NULL, &resp, err))
        goto err;
    if (resp.status != 200) {
        /* the 2026 service wraps it as "400: <text>" (a HandledError) */
        error_text(&resp, why, sizeof(why));
        if (nonce_disabled != NULL && resp.status == 400 && strstr(why, KBS_INTEL_NO_NONCE_ERROR) != NULL)
            *nonce_disabled = 1;
        kbs_intel_status_error(err, KG_STEP_NONCE, url, &resp);
        goto err;
    }
    if (resp.attestation_type[0] == '\0') {
        kg_err_set(err, KG_STEP_NONCE, "POST %s: nonce reply without an Attestation-Type header", url);
        goto err;
    }
    snprintf(attestation_type, at_size, "%s", resp.attestation_type);
    if (!kbs_intel_parse_nonce(resp.body, resp.body_len, nonce)) {
        kg_err_set(err, KG_STEP_NONCE, "POST %s: nonce reply lacks base64 val/iat/signature", url);
        goto err;
    }
    ok = 1;
err:
    if (!ok)
        ita_nonce_clear(nonce);
    kg_http_response_clear(&resp);
    return ok;
}

int kbs_intel_transfer_background(kg_http *h, const char *kbs_url, const char *key_id,
                                  const char *attestation_type, const ita_evidence *ev,
                                  const ita_nonce *nonce, kbs_wrapped *out, kg_err *err)
{
    char url[700], at_header[64];
    const char *headers[] = {"Accept: application/json", "Content-Type: application/json", at_header, NULL};
    cJSON *req = cJSON_CreateObject(), *n;
    int ok;

    memset(out, 0, sizeof(*out));
    transfer_url(url, sizeof(url), kbs_url, key_id);
    snprintf(at_header, sizeof(at_header), "Attestation-Type: %s", attestation_type);
    /* the 2026 request model names the user data RuntimeData, as ITA does (intel-kbs.md §8) */
    if (req == NULL || !kg_json_add_b64(req, "quote", ev->quote, ev->quote_len) ||
        (nonce != NULL && ((n = cJSON_AddObjectToObject(req, "nonce")) == NULL ||
                           !kg_json_add_b64(n, "val", nonce->val, nonce->val_len) ||
                           !kg_json_add_b64(n, "iat", nonce->iat, nonce->iat_len) ||
                           !kg_json_add_b64(n, "signature", nonce->signature, nonce->signature_len))) ||
        !kg_json_add_b64(req, nonce != NULL ? "user_data" : "runtime_data", ev->runtime_data,
                         ev->runtime_data_len) ||
        (ev->event_log_len > 0 && !kg_json_add_b64(req, "event_log", ev->event_log, ev->event_log_len))) {
        cJSON_Delete(req);
        req = NULL; /* post_for_wrapped reports out of memory */
    }
    ok = post_for_wrapped(h, url, headers, req, out, err);
    cJSON_Delete(req);
    return ok;
}

int kbs_intel_parse_version(const uint8_t *body, size_t len, char *version, size_t size)
{
    cJSON *j = cJSON_ParseWithLength((const char *)body, len);
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, "version");
    size_t n;
    int ok = 0;

    if (!cJSON_IsString(v) || (n = strlen(v->valuestring)) == 0 || n > 63 || n >= size)
        goto err;
    for (size_t i = 0; i < n; i++)
        if (v->valuestring[i] < 0x21 || v->valuestring[i] > 0x7e)
            goto err;
    memcpy(version, v->valuestring, n + 1);
    ok = 1;
err:
    cJSON_Delete(j);
    return ok;
}

int kbs_intel_get_version(kg_http *h, const char *kbs_url, char *version, size_t size, kg_err *err)
{
    static const char *const headers[] = {"Accept: application/json", NULL};
    char url[700];
    kg_http_response resp;
    int ok = 0;

    memset(&resp, 0, sizeof(resp));
    snprintf(url, sizeof(url), "%s/kbs/v1/version", kbs_url);
    if (!kg_http_request(h, KG_STEP_CONFIG, "GET", url, headers, NULL, 0, KBS_MAX_REPLY, &resp, err))
        goto err;
    if (resp.status != 200) {
        kg_http_status_error(err, KG_STEP_CONFIG, "GET", url, &resp);
        goto err;
    }
    if (!kbs_intel_parse_version(resp.body, resp.body_len, version, size)) {
        kg_err_set(err, KG_STEP_CONFIG, "GET %s: reply without a printable \"version\" string", url);
        goto err;
    }
    ok = 1;
err:
    kg_http_response_clear(&resp);
    return ok;
}

kbs_intel_gen kbs_intel_gen_of_version(const char *version)
{
    const char *p = version;
    unsigned long major, minor;
    char *end;

    if (*p == 'v' || *p == 'V')
        p++;
    if (!isdigit((unsigned char)*p))
        return KBS_INTEL_GEN_UNKNOWN;
    major = strtoul(p, &end, 10);
    if (*end != '.' || !isdigit((unsigned char)end[1]))
        return KBS_INTEL_GEN_UNKNOWN;
    minor = strtoul(end + 1, &end, 10);
    if (*end != '\0' && *end != '.' && *end != '-' && *end != '+')
        return KBS_INTEL_GEN_UNKNOWN;
    return major < 1 || (major == 1 && minor <= 3) ? KBS_INTEL_GEN_V13 : KBS_INTEL_GEN_2026;
}
