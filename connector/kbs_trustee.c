/* SPDX-License-Identifier: Apache-2.0 */
#include "kbs_trustee.h"

#include <curl/curl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "kg_b64.h"
#include "kg_json.h"
#include "kg_jcs.h"
#include "kg_libctx.h"

#define COOKIE_NAME "kbs-session-id"

static const struct {
    const char *kind;
    kbs_trustee_error_class cls;
} error_kinds[] = {
    {"TokenNotFound", KBS_TRUSTEE_REATTEST},
    {"TokenVerifierError", KBS_TRUSTEE_REATTEST},
    {"AttestationError", KBS_TRUSTEE_REATTEST},
    {"ExpiredSession", KBS_TRUSTEE_REATTEST},
    {"SessionNotFound", KBS_TRUSTEE_REATTEST},
    {"CookieNotFound", KBS_TRUSTEE_REATTEST},
    {"PolicyDeny", KBS_TRUSTEE_DENIED},
    {"PluginInternalError", KBS_TRUSTEE_NOT_FOUND},
    {"InvalidRequestPath", KBS_TRUSTEE_NOT_FOUND},
    {"PluginNotFound", KBS_TRUSTEE_NOT_FOUND},
};

kbs_trustee_error_class kbs_trustee_classify(const char *kind)
{
    const char *slash = kind != NULL ? strrchr(kind, '/') : NULL;
    if (kind == NULL || *kind == '\0')
        return KBS_TRUSTEE_OTHER;
    if (slash != NULL)
        kind = slash + 1;
    for (size_t i = 0; i < sizeof(error_kinds) / sizeof(error_kinds[0]); i++)
        if (strcmp(error_kinds[i].kind, kind) == 0)
            return error_kinds[i].cls;
    return KBS_TRUSTEE_OTHER;
}

/* Printable, bounded copy for messages. */
static void printable(char *dst, size_t size, const char *src)
{
    size_t n = 0;
    for (; src != NULL && *src != '\0' && n + 1 < size; src++)
        dst[n++] = (*src >= 0x20 && *src < 0x7f) ? *src : '?';
    dst[n] = '\0';
}

/* A non-200 reply: status, the error Kind (and its class) and detail into err and reply. */
int kbs_trustee_status_error(kg_err *err, kg_step step, const char *method, const char *url,
                             const kg_http_response *resp, kbs_trustee_reply *reply)
{
    cJSON *j = cJSON_ParseWithLength((const char *)resp->body, resp->body_len);
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(j, "type");
    const cJSON *detail = cJSON_GetObjectItemCaseSensitive(j, "detail");
    char kind[64] = "", why[200] = "";

    if (cJSON_IsString(type)) {
        const char *slash = strrchr(type->valuestring, '/');
        printable(kind, sizeof(kind), slash ? slash + 1 : type->valuestring);
    }
    if (cJSON_IsString(detail))
        printable(why, sizeof(why), detail->valuestring);
    cJSON_Delete(j);
    reply->status = resp->status;
    reply->cls = kind[0] != '\0'       ? kbs_trustee_classify(kind)
                 : resp->status == 404 ? KBS_TRUSTEE_NOT_FOUND
                                       : KBS_TRUSTEE_OTHER;
    snprintf(reply->error_kind, sizeof(reply->error_kind), "%s", kind);
    kg_http_status_error(err, step, method, url, resp);
    if (err != NULL && (kind[0] != '\0' || why[0] != '\0')) {
        size_t len = strlen(err->msg);
        snprintf(err->msg + len, sizeof(err->msg) - len, ": %s%s%s", kind[0] ? kind : "error",
                 why[0] ? ": " : "", why);
    }
    return 0;
}

static int request(kg_http *h, kg_step step, const char *method, const char *url, const char *const *headers,
                   const char *body, kg_http_response *resp, kg_err *err)
{
    if (!kg_http_request(h, step, method, url, headers, body, body ? strlen(body) : 0, KBS_TRUSTEE_MAX_REPLY,
                         resp, err))
        return 0;
    if (err != NULL) {
        snprintf(err->request_id, sizeof(err->request_id), "%s", resp->request_id);
        snprintf(err->trace_id, sizeof(err->trace_id), "%s", resp->trace_id);
    }
    return 1;
}

/* "kbs-session-id=<id>; Expires=...; Max-Age=..." -> cookie and its expiry. */
static int parse_set_cookie(const char *sc, kbs_trustee_challenge *ch)
{
    const char *p = sc, *semi;
    size_t n;
    long long now = (long long)time(NULL);

    if (strncmp(p, COOKIE_NAME "=", strlen(COOKIE_NAME) + 1) != 0)
        return 0;
    semi = strchr(p, ';');
    n = semi ? (size_t)(semi - p) : strlen(p);
    if (n <= strlen(COOKIE_NAME) + 1 || n >= sizeof(ch->cookie))
        return 0;
    for (size_t i = strlen(COOKIE_NAME) + 1; i < n; i++)
        if (!((p[i] >= '0' && p[i] <= '9') || (p[i] >= 'a' && p[i] <= 'z') || (p[i] >= 'A' && p[i] <= 'Z') ||
              p[i] == '-' || p[i] == '_'))
            return 0;
    memcpy(ch->cookie, p, n);
    ch->cookie[n] = '\0';
    ch->cookie_expires = now + KBS_TRUSTEE_SESSION_DEFAULT_S;
    while (semi != NULL) {
        char attr[128];
        const char *next;
        p = semi + 1;
        while (*p == ' ')
            p++;
        next = strchr(p, ';');
        n = next ? (size_t)(next - p) : strlen(p);
        if (n < sizeof(attr)) {
            memcpy(attr, p, n);
            attr[n] = '\0';
            if (strncasecmp(attr, "Expires=", 8) == 0) {
                time_t t = curl_getdate(attr + 8, NULL);
                if (t != (time_t)-1)
                    ch->cookie_expires = (long long)t;
            } else if (strncasecmp(attr, "Max-Age=", 8) == 0) {
                ch->cookie_expires = now + strtoll(attr + 8, NULL, 10);
            }
        }
        semi = next;
    }
    return 1;
}

int kbs_trustee_parse_challenge(const kg_http_response *resp, const char *url, kbs_trustee_challenge *ch,
                                kg_err *err)
{
    cJSON *j;
    const cJSON *nonce, *extra, *sel;
    int ok = 0;

    j = cJSON_ParseWithLength((const char *)resp->body, resp->body_len);
    nonce = cJSON_GetObjectItemCaseSensitive(j, "nonce");
    if (!cJSON_IsString(nonce) || nonce->valuestring[0] == '\0' ||
        strlen(nonce->valuestring) >= sizeof(ch->nonce)) {
        kg_err_set(err, KG_STEP_NONCE, "POST %s: challenge has no nonce string (of at most %d bytes)", url,
                   KBS_TRUSTEE_MAX_NONCE - 1);
        goto done;
    }
    snprintf(ch->nonce, sizeof(ch->nonce), "%s", nonce->valuestring);
    /* "" or {} or no selection: the protocol default, SHA-384 */
    snprintf(ch->hash_alg, sizeof(ch->hash_alg), "sha384");
    extra = cJSON_GetObjectItemCaseSensitive(j, "extra-params");
    sel = cJSON_IsObject(extra) ? cJSON_GetObjectItemCaseSensitive(extra, "selected-hash-algorithm") : NULL;
    if (sel != NULL) {
        if (!cJSON_IsString(sel) ||
            (strcmp(sel->valuestring, "sha256") && strcmp(sel->valuestring, "sha384") &&
             strcmp(sel->valuestring, "sha512"))) {
            char what[40];
            printable(what, sizeof(what), cJSON_IsString(sel) ? sel->valuestring : "?");
            kg_err_set(err, KG_STEP_NONCE,
                       "POST %s: the KBS selected hash algorithm '%s', not one we offered", url, what);
            goto done;
        }
        snprintf(ch->hash_alg, sizeof(ch->hash_alg), "%s", sel->valuestring);
    }
    if (!parse_set_cookie(resp->set_cookie, ch)) {
        kg_err_set(err, KG_STEP_NONCE, "POST %s: challenge without a " COOKIE_NAME " cookie", url);
        goto done;
    }
    ok = 1;
done:
    cJSON_Delete(j);
    return ok;
}

int kbs_trustee_auth(kg_http *h, const char *kbs_url, const char *tee, kbs_trustee_challenge *ch, kg_err *err)
{
    static const char *const headers[] = {"Content-Type: application/json", "Accept: application/json", NULL};
    char url[700];
    kg_http_response resp;
    kbs_trustee_reply reply;
    cJSON *req = cJSON_CreateObject(), *params, *algs;
    char *body = NULL;
    int ok = 0;

    memset(ch, 0, sizeof(*ch));
    memset(&resp, 0, sizeof(resp));
    snprintf(url, sizeof(url), "%s/kbs/v0/auth", kbs_url);
    if (req == NULL || !cJSON_AddStringToObject(req, "version", KBS_TRUSTEE_PROTOCOL) ||
        !cJSON_AddStringToObject(req, "tee", tee) ||
        (params = cJSON_AddObjectToObject(req, "extra-params")) == NULL ||
        (algs = cJSON_AddArrayToObject(params, "supported-hash-algorithms")) == NULL ||
        !cJSON_AddItemToArray(algs, cJSON_CreateString("sha256")) ||
        !cJSON_AddItemToArray(algs, cJSON_CreateString("sha384")) ||
        !cJSON_AddItemToArray(algs, cJSON_CreateString("sha512")) ||
        (body = cJSON_PrintUnformatted(req)) == NULL) {
        kg_err_set(err, KG_STEP_INTERNAL, "out of memory");
        goto err;
    }
    if (!request(h, KG_STEP_NONCE, "POST", url, headers, body, &resp, err))
        goto err;
    if (resp.status != 200) {
        kbs_trustee_status_error(err, KG_STEP_NONCE, "POST", url, &resp, &reply);
        goto err;
    }
    if (!kbs_trustee_parse_challenge(&resp, url, ch, err))
        goto err;
    ok = 1;
err:
    if (!ok)
        memset(ch, 0, sizeof(*ch));
    free(body);
    cJSON_Delete(req);
    kg_http_response_clear(&resp);
    return ok;
}

/* H(JCS(obj)) ‖ zero padding to 64 bytes; *jcs (optional) gets the canonical text. */
static int digest_jcs(const cJSON *obj, const char *hash_alg, kg_step step, uint8_t out[64], char **jcs,
                      kg_err *err)
{
    const char *md = strcmp(hash_alg, "sha256") == 0   ? "SHA256"
                     : strcmp(hash_alg, "sha384") == 0 ? "SHA384"
                     : strcmp(hash_alg, "sha512") == 0 ? "SHA512"
                                                       : NULL;
    char *text = NULL;
    size_t len = 0;

    memset(out, 0, 64);
    if (md == NULL)
        return kg_err_set(err, step, "hash algorithm '%.16s' is not sha256/sha384/sha512", hash_alg);
    if (!kg_jcs_serialize(obj, step, &text, &len, err))
        return 0;
    if (!EVP_Q_digest(kg_libctx(), md, NULL, text, len, out, NULL)) {
        free(text);
        return kg_err_set(err, KG_STEP_INTERNAL, "%s failed", md);
    }
    if (jcs != NULL)
        *jcs = text;
    else
        free(text);
    return 1;
}

int kbs_trustee_report_data(const char *nonce, const cJSON *tee_pubkey, const char *hash_alg,
                            const char *additional_evidence, kg_step step, uint8_t report_data[64],
                            char **jcs, kg_err *err)
{
    cJSON *runtime = cJSON_CreateObject();
    int ok = 0;

    memset(report_data, 0, 64);
    if (jcs != NULL)
        *jcs = NULL;
    if (runtime == NULL ||
        !cJSON_AddStringToObject(runtime, "additional-evidence",
                                 additional_evidence ? additional_evidence : "") ||
        !cJSON_AddStringToObject(runtime, "nonce", nonce) ||
        !cJSON_AddItemToObject(runtime, "tee-pubkey", cJSON_Duplicate(tee_pubkey, 1))) {
        kg_err_set(err, KG_STEP_INTERNAL, "out of memory");
        goto err;
    }
    ok = digest_jcs(runtime, hash_alg, step, report_data, jcs, err);
err:
    cJSON_Delete(runtime);
    return ok;
}

int kbs_trustee_parse_token(const kg_http_response *resp, const char *url, char **token, kg_err *err)
{
    cJSON *j = cJSON_ParseWithLength((const char *)resp->body, resp->body_len);
    const cJSON *tok = cJSON_GetObjectItemCaseSensitive(j, "token");
    int ok = 1;

    *token = NULL;
    if (!cJSON_IsString(tok) || tok->valuestring[0] == '\0' || (*token = strdup(tok->valuestring)) == NULL)
        ok = kg_err_set(err, KG_STEP_TOKEN, "POST %s: reply has no token", url);
    cJSON_Delete(j);
    return ok;
}

int kbs_trustee_attest(kg_http *h, const char *kbs_url, const kbs_trustee_challenge *ch,
                       const cJSON *tee_pubkey, const uint8_t *quote, size_t quote_len,
                       const uint8_t *event_log, size_t event_log_len, char **token, kbs_trustee_reply *reply,
                       kg_err *err)
{
    char url[700], cookie_header[200];
    const char *headers[] = {"Content-Type: application/json", "Accept: application/json", cookie_header,
                             NULL};
    kg_http_response resp;
    cJSON *req = cJSON_CreateObject(), *rt, *te, *pe;
    char *body = NULL;
    int ok = 0;

    *token = NULL;
    memset(reply, 0, sizeof(*reply));
    memset(&resp, 0, sizeof(resp));
    snprintf(url, sizeof(url), "%s/kbs/v0/attest", kbs_url);
    snprintf(cookie_header, sizeof(cookie_header), "Cookie: %s", ch->cookie);
    if (req == NULL || !cJSON_AddNullToObject(req, "init-data") ||
        (rt = cJSON_AddObjectToObject(req, "runtime-data")) == NULL ||
        !cJSON_AddStringToObject(rt, "nonce", ch->nonce) ||
        !cJSON_AddItemToObject(rt, "tee-pubkey", cJSON_Duplicate(tee_pubkey, 1)) ||
        (te = cJSON_AddObjectToObject(req, "tee-evidence")) == NULL ||
        (pe = cJSON_AddObjectToObject(te, "primary_evidence")) == NULL ||
        (event_log_len > 0 ? !kg_json_add_b64(pe, "cc_eventlog", event_log, event_log_len)
                           : !cJSON_AddNullToObject(pe, "cc_eventlog")) ||
        !kg_json_add_b64(pe, "quote", quote, quote_len) ||
        !cJSON_AddStringToObject(te, "additional_evidence", "") ||
        (body = cJSON_PrintUnformatted(req)) == NULL) {
        kg_err_set(err, KG_STEP_INTERNAL, "out of memory");
        goto err;
    }
    if (!request(h, KG_STEP_TOKEN, "POST", url, headers, body, &resp, err))
        goto err;
    if (resp.status != 200) {
        kbs_trustee_status_error(err, KG_STEP_TOKEN, "POST", url, &resp, reply);
        goto err;
    }
    if (!kbs_trustee_parse_token(&resp, url, token, err))
        goto err;
    reply->status = 200;
    ok = 1;
err:
    free(body);
    cJSON_Delete(req);
    kg_http_response_clear(&resp);
    return ok;
}

/* repo/type/tag, each [A-Za-z0-9._-]+ and not "." or ".." (nothing to escape in a URL). */
static int resource_path_ok(const char *path)
{
    int segments = 0;
    const char *p = path;
    while (*p != '\0') {
        const char *end = strchr(p, '/');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        if (n == 0 || (n == 1 && p[0] == '.') || (n == 2 && p[0] == '.' && p[1] == '.'))
            return 0;
        for (size_t i = 0; i < n; i++)
            if (!((p[i] >= '0' && p[i] <= '9') || (p[i] >= 'a' && p[i] <= 'z') ||
                  (p[i] >= 'A' && p[i] <= 'Z') || p[i] == '.' || p[i] == '_' || p[i] == '-'))
                return 0;
        segments++;
        if (end == NULL)
            break;
        p = end + 1;
        if (*p == '\0')
            return 0;
    }
    return segments == 3;
}

int kbs_trustee_get_resource(kg_http *h, const char *kbs_url, const char *path, const char *cookie,
                             const char *token, char **jwe, size_t *jwe_len, kbs_trustee_reply *reply,
                             kg_err *err)
{
    char url[800], *auth = NULL;
    const char *headers[] = {"Accept: application/json", NULL, NULL};
    kg_http_response resp;
    int ok = 0;

    *jwe = NULL;
    *jwe_len = 0;
    memset(reply, 0, sizeof(*reply));
    memset(&resp, 0, sizeof(resp));
    if (!resource_path_ok(path))
        return kg_err_set(err, KG_STEP_CONFIG, "resource path '%.64s' is not repo/type/tag", path);
    snprintf(url, sizeof(url), "%s/kbs/v0/resource/%s", kbs_url, path);
    if (cookie != NULL) {
        size_t n = strlen(cookie) + sizeof("Cookie: ");
        if ((auth = malloc(n)) != NULL)
            snprintf(auth, n, "Cookie: %s", cookie);
    } else if (token != NULL) {
        size_t n = strlen(token) + sizeof("Authorization: Bearer ");
        if ((auth = malloc(n)) != NULL)
            snprintf(auth, n, "Authorization: Bearer %s", token);
    } else {
        return kg_err_set(err, KG_STEP_INTERNAL, "resource request without a session or token");
    }
    if (auth == NULL)
        return kg_err_set(err, KG_STEP_INTERNAL, "out of memory");
    headers[1] = auth;
    if (!request(h, KG_STEP_TRANSFER, "GET", url, headers, NULL, &resp, err))
        goto err;
    if (resp.status != 200) {
        kbs_trustee_status_error(err, KG_STEP_TRANSFER, "GET", url, &resp, reply);
        goto err;
    }
    reply->status = 200;
    *jwe = (char *)resp.body; /* NUL-terminated by kg_http */
    *jwe_len = resp.body_len;
    resp.body = NULL;
    ok = 1;
err:
    if (token != NULL && auth != NULL)
        OPENSSL_cleanse(auth, strlen(auth));
    free(auth);
    kg_http_response_clear(&resp);
    return ok;
}

static int hex64(const char *s, uint8_t out[64])
{
    if (s == NULL || strlen(s) != 128)
        return 0;
    for (int i = 0; i < 64; i++) {
        unsigned int v;
        if (sscanf(s + 2 * i, "%2x", &v) != 1 || !strchr("0123456789abcdefABCDEF", s[2 * i]) ||
            !strchr("0123456789abcdefABCDEF", s[2 * i + 1]))
            return 0;
        out[i] = (uint8_t)v;
    }
    return 1;
}

int kbs_trustee_check_binding(const cJSON *payload, const kbs_trustee_challenge *ch, const cJSON *tee_pubkey,
                              const uint8_t report_data[64], kg_err *err)
{
    const cJSON *tdx = cJSON_GetObjectItemCaseSensitive(payload, "tdx");
    const cJSON *rt = cJSON_GetObjectItemCaseSensitive(tdx, "attester_runtime_data");
    const cJSON *pk = cJSON_GetObjectItemCaseSensitive(rt, "tee-pubkey");
    const cJSON *nonce = cJSON_GetObjectItemCaseSensitive(rt, "nonce");
    const cJSON *rd = cJSON_GetObjectItemCaseSensitive(tdx, "tdx_report_data");
    uint8_t claimed[64], recomputed[64];

    if (!cJSON_IsObject(rt))
        return kg_err_set(err, KG_STEP_VERIFY,
                          "token has no tdx.attester_runtime_data object (not an ITA v2 "
                          "token for Trustee runtime data)");
    if (pk == NULL || !cJSON_Compare(pk, tee_pubkey, 1))
        return kg_err_set(err, KG_STEP_VERIFY, "attester_runtime_data tee-pubkey is not our TEE key");
    if (!cJSON_IsString(nonce) || strcmp(nonce->valuestring, ch->nonce) != 0)
        return kg_err_set(err, KG_STEP_VERIFY,
                          "attester_runtime_data nonce is not the KBS challenge of this session");
    if (!cJSON_IsString(rd) || !hex64(rd->valuestring, claimed))
        return kg_err_set(err, KG_STEP_VERIFY, "token has no tdx_report_data of 64 bytes");
    if (CRYPTO_memcmp(claimed, report_data, 64) != 0)
        return kg_err_set(err, KG_STEP_VERIFY, "tdx_report_data is not the REPORTDATA of our evidence");
    /* ITA parsed the runtime data it was given: its canonical form must hash to the quote's */
    if (!digest_jcs(rt, ch->hash_alg, KG_STEP_VERIFY, recomputed, NULL, err))
        return 0;
    if (CRYPTO_memcmp(recomputed, claimed, 64) != 0)
        return kg_err_set(err, KG_STEP_VERIFY,
                          "attester_runtime_data does not hash (%s of its canonical JSON) to tdx_report_data",
                          ch->hash_alg);
    return 1;
}
