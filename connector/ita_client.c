/* SPDX-License-Identifier: Apache-2.0 */
#include "ita_client.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kg_b64.h"
#include "kg_json.h"
#include "kg_log.h"
#include "kg_uuid.h"

struct ita_client {
    kg_http *http;
    char api_url[512];
    char base_url[512];
    char *api_key; /* secure heap; NUL-terminated */
    ita_call_meta last;
};

const ita_call_meta *ita_client_last_meta(const ita_client *c)
{
    return &c->last;
}

static void remember(ita_client *c, const kg_http_response *resp)
{
    c->last.status = resp->status;
    memcpy(c->last.request_id, resp->request_id, sizeof(c->last.request_id));
    memcpy(c->last.trace_id, resp->trace_id, sizeof(c->last.trace_id));
}

/* Reads the API key file: must be a regular file not readable by group/others. */
int ita_read_api_key(const char *path, char **out, kg_err *err)
{
    struct stat st;
    char *key = NULL;
    ssize_t n;
    size_t len;
    int fd, ok = 0;

    *out = NULL;
    if (path == NULL || *path == '\0')
        return kg_err_set(err, KG_STEP_CONFIG, "ita_api_key_file is not set");
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return kg_err_set(err, KG_STEP_CONFIG, "ita_api_key_file %s: %s", path, strerror(errno));
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        kg_err_set(err, KG_STEP_CONFIG, "ita_api_key_file %s: not a regular file", path);
        goto err;
    }
    if ((st.st_mode & 077) != 0) {
        kg_err_set(err, KG_STEP_CONFIG,
                   "ita_api_key_file %s: readable by group or others (mode %03o); chmod 600 it", path,
                   (unsigned)(st.st_mode & 0777));
        goto err;
    }
    key = OPENSSL_secure_zalloc(ITA_MAX_API_KEY + 1);
    if (key == NULL) {
        kg_err_set(err, KG_STEP_INTERNAL, "out of memory");
        goto err;
    }
    n = read(fd, key, ITA_MAX_API_KEY + 1);
    if (n < 0 || n > ITA_MAX_API_KEY) {
        kg_err_set(err, KG_STEP_CONFIG, "ita_api_key_file %s: unreadable or longer than %d bytes", path,
                   ITA_MAX_API_KEY);
        goto err;
    }
    len = (size_t)n;
    while (len > 0 && (key[len - 1] == '\n' || key[len - 1] == '\r' || key[len - 1] == ' '))
        key[--len] = '\0';
    if (len == 0 || strpbrk(key, "\r\n") != NULL) {
        kg_err_set(err, KG_STEP_CONFIG, "ita_api_key_file %s: empty or not one line", path);
        goto err;
    }
    *out = key;
    key = NULL;
    ok = 1;
err:
    OPENSSL_secure_clear_free(key, ITA_MAX_API_KEY + 1);
    close(fd);
    return ok;
}

ita_client *ita_client_new(const ita_client_opts *opts, kg_err *err)
{
    ita_client *c = calloc(1, sizeof(*c));

    if (c == NULL) {
        kg_err_set(err, KG_STEP_INTERNAL, "out of memory");
        return NULL;
    }
    snprintf(c->api_url, sizeof(c->api_url), "%s", opts->api_url ? opts->api_url : "");
    snprintf(c->base_url, sizeof(c->base_url), "%s", opts->base_url ? opts->base_url : "");
    if (opts->api_key != NULL) {
        size_t len = strlen(opts->api_key);
        if (len == 0 || len > ITA_MAX_API_KEY ||
            (c->api_key = OPENSSL_secure_zalloc(ITA_MAX_API_KEY + 1)) == NULL) {
            kg_err_set(err, KG_STEP_CONFIG, "bad ITA API key");
            goto err;
        }
        memcpy(c->api_key, opts->api_key, len);
    } else if (!ita_read_api_key(opts->api_key_file, &c->api_key, err)) {
        goto err;
    }
    if ((c->http = kg_http_new(&opts->http, err)) == NULL)
        goto err;
    return c;
err:
    ita_client_free(c);
    return NULL;
}

void ita_client_free(ita_client *c)
{
    if (c == NULL)
        return;
    kg_http_free(c->http);
    OPENSSL_secure_clear_free(c->api_key, ITA_MAX_API_KEY + 1);
    free(c);
}

void ita_nonce_clear(ita_nonce *n)
{
    if (n == NULL)
        return;
    free(n->val);
    free(n->iat);
    free(n->signature);
    memset(n, 0, sizeof(*n));
}

/* Builds "x-api-key: <key>" in the secure heap. Caller frees with OPENSSL_secure_clear_free. */
static char *api_key_header(const ita_client *c, size_t *size)
{
    *size = strlen(c->api_key) + sizeof("x-api-key: ");
    char *h = OPENSSL_secure_malloc(*size);
    if (h != NULL)
        snprintf(h, *size, "x-api-key: %s", c->api_key);
    return h;
}

static int decode_field(const cJSON *obj, const char *name, uint8_t **out, size_t *len)
{
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(obj, name);
    if (!cJSON_IsString(f) || !kg_b64_decode(f->valuestring, strlen(f->valuestring), out, len))
        return 0;
    if (*len == 0 || *len > 1024) { /* each nonce field is 1..1024 bytes */
        free(*out);
        *out = NULL;
        return 0;
    }
    return 1;
}

int ita_parse_nonce_reply(const uint8_t *body, size_t len, ita_nonce *nonce, const char **why)
{
    cJSON *json = cJSON_ParseWithLength((const char *)body, len);
    int ok = 0;

    memset(nonce, 0, sizeof(*nonce));
    if (!cJSON_IsObject(json)) {
        *why = "reply is not a JSON object";
        goto err;
    }
    if (!decode_field(json, "val", &nonce->val, &nonce->val_len) ||
        !decode_field(json, "iat", &nonce->iat, &nonce->iat_len) ||
        !decode_field(json, "signature", &nonce->signature, &nonce->signature_len)) {
        *why = "val/iat/signature missing or not base64";
        goto err;
    }
    ok = 1;
err:
    if (!ok)
        ita_nonce_clear(nonce);
    cJSON_Delete(json);
    return ok;
}

int ita_parse_token_reply(const uint8_t *body, size_t len, char **token, const char **why)
{
    cJSON *json = cJSON_ParseWithLength((const char *)body, len);
    const cJSON *tok = cJSON_GetObjectItemCaseSensitive(json, "token");
    int ok = 0;

    *token = NULL;
    if (!cJSON_IsObject(json))
        *why = "reply is not a JSON object";
    else if (!cJSON_IsString(tok) || tok->valuestring[0] == '\0')
        *why = "reply has no \"token\" string";
    else if ((*token = strdup(tok->valuestring)) == NULL)
        *why = "out of memory";
    else
        ok = 1;
    cJSON_Delete(json);
    return ok;
}

int ita_get_nonce(ita_client *c, ita_nonce *nonce, kg_err *err)
{
    char url[600];
    char *keyhdr = NULL;
    const char *why = NULL;
    size_t keyhdr_size = 0;
    kg_http_response resp;
    int ok = 0;

    memset(nonce, 0, sizeof(*nonce));
    memset(&resp, 0, sizeof(resp));
    snprintf(url, sizeof(url), "%s/appraisal/v2/nonce", c->api_url);
    if ((keyhdr = api_key_header(c, &keyhdr_size)) == NULL)
        return kg_err_set(err, KG_STEP_INTERNAL, "out of memory");
    {
        const char *headers[] = {keyhdr, "Accept: application/json", NULL};
        if (!kg_http_request(c->http, KG_STEP_NONCE, "GET", url, headers, NULL, 0, ITA_MAX_JSON_BODY, &resp,
                             err))
            goto err;
    }
    remember(c, &resp);
    if (resp.status != 200) {
        kg_http_status_error(err, KG_STEP_NONCE, "GET", url, &resp);
        goto err;
    }
    if (!ita_parse_nonce_reply(resp.body, resp.body_len, nonce, &why)) {
        kg_err_set(err, KG_STEP_NONCE, "GET %s: %s", url, why);
        goto err;
    }
    ok = 1;
err:
    if (!ok)
        ita_nonce_clear(nonce);
    kg_http_response_clear(&resp);
    OPENSSL_secure_clear_free(keyhdr, keyhdr_size);
    return ok;
}

/* Adds name: base64(data) when len > 0 (absent optional fields are left out). */
/* ITA's attest body leaves out optional evidence that is absent (no empty strings). */
static int add_b64_if_any(cJSON *obj, const char *name, const uint8_t *data, size_t len)
{
    return data == NULL || len == 0 || kg_json_add_b64(obj, name, data, len);
}

static int add_nonce(cJSON *obj, const ita_nonce *n)
{
    cJSON *vn;

    if (n == NULL)
        return 1;
    if ((vn = cJSON_AddObjectToObject(obj, "verifier_nonce")) == NULL)
        return 0;
    return add_b64_if_any(vn, "val", n->val, n->val_len) && add_b64_if_any(vn, "iat", n->iat, n->iat_len) &&
           add_b64_if_any(vn, "signature", n->signature, n->signature_len);
}

static int add_common(cJSON *obj, const ita_attest_opts *o)
{
    if (o->policy_id_count > 0) {
        cJSON *arr = cJSON_AddArrayToObject(obj, "policy_ids");
        if (arr == NULL)
            return 0;
        for (int i = 0; i < o->policy_id_count; i++) {
            cJSON *s = cJSON_CreateString(o->policy_ids[i]);
            if (s == NULL || !cJSON_AddItemToArray(arr, s)) {
                cJSON_Delete(s);
                return 0;
            }
        }
    }
    if (o->token_alg != NULL && cJSON_AddStringToObject(obj, "token_signing_alg", o->token_alg) == NULL)
        return 0;
    if (o->policy_must_match && cJSON_AddTrueToObject(obj, "policy_must_match") == NULL)
        return 0;
    return 1;
}

/* Builds the v1 flat or v2 composite body. Returns a malloc'ed string or NULL. */
static char *attest_body(const ita_evidence *ev, const ita_nonce *nonce, const ita_attest_opts *o)
{
    cJSON *root = cJSON_CreateObject(), *tdx = root;
    char *out = NULL;

    if (root == NULL)
        return NULL;
    if (o->api_version == 2 && (tdx = cJSON_AddObjectToObject(root, "tdx")) == NULL)
        goto err;
    if (!add_b64_if_any(tdx, "quote", ev->quote, ev->quote_len) ||
        !add_b64_if_any(tdx, "runtime_data", ev->runtime_data, ev->runtime_data_len) ||
        !add_b64_if_any(tdx, "user_data", ev->user_data, ev->user_data_len) ||
        !add_b64_if_any(tdx, "event_log", ev->event_log, ev->event_log_len) || !add_nonce(tdx, nonce) ||
        !add_common(root, o))
        goto err;
    out = cJSON_PrintUnformatted(root);
err:
    cJSON_Delete(root);
    return out;
}

/* request-id as ITA's clients accept it: ^[a-zA-Z0-9_ /.-]{1,128}$ */
static int request_id_ok(const char *id)
{
    size_t n = strlen(id);
    if (n == 0 || n > 128)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char ch = id[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '_' ||
              ch == ' ' || ch == '/' || ch == '.' || ch == '-'))
            return 0;
    }
    return 1;
}

int ita_attest_opts_check(const ita_evidence *ev, const ita_attest_opts *o, kg_err *err)
{
    if (o->api_version != 1 && o->api_version != 2)
        return kg_err_set(err, KG_STEP_TOKEN, "api version %d is not 1 or 2", o->api_version);
    if (o->policy_id_count < 0 || o->policy_id_count > ITA_MAX_ATTEST_POLICY_IDS)
        return kg_err_set(err, KG_STEP_TOKEN, "at most %d policy ids", ITA_MAX_ATTEST_POLICY_IDS);
    for (int i = 0; i < o->policy_id_count; i++)
        if (!kg_uuid_ok(o->policy_ids[i], strlen(o->policy_ids[i])))
            return kg_err_set(err, KG_STEP_TOKEN, "policy id '%.40s' is not a UUID", o->policy_ids[i]);
    if (o->token_alg != NULL && strcmp(o->token_alg, "PS384") != 0 && strcmp(o->token_alg, "RS256") != 0)
        return kg_err_set(err, KG_STEP_TOKEN, "token signing alg '%.16s' is not PS384 or RS256",
                          o->token_alg);
    if (o->request_id != NULL && !request_id_ok(o->request_id))
        return kg_err_set(err, KG_STEP_TOKEN, "request id must match ^[a-zA-Z0-9_ /.-]{1,128}$");
    if (ev->quote == NULL || ev->quote_len == 0)
        return kg_err_set(err, KG_STEP_TOKEN, "no quote to attest");
    if (ev->runtime_data_len > ITA_MAX_USER_DATA || ev->user_data_len > ITA_MAX_USER_DATA)
        return kg_err_set(err, KG_STEP_TOKEN, "user data larger than %d bytes", ITA_MAX_USER_DATA);
    return 1;
}

int ita_attest(ita_client *c, const ita_evidence *ev, const ita_nonce *nonce, const ita_attest_opts *opts,
               char **token, kg_err *err)
{
    char url[600], reqid[160];
    char *body = NULL, *keyhdr = NULL;
    const char *why = NULL;
    size_t keyhdr_size = 0;
    kg_http_response resp;
    int ok = 0;

    *token = NULL;
    memset(&resp, 0, sizeof(resp));
    if (!ita_attest_opts_check(ev, opts, err))
        return 0;
    snprintf(url, sizeof(url), "%s/appraisal/%s/attest%s", c->api_url, opts->api_version == 2 ? "v2" : "v1",
             !opts->azure             ? ""
             : opts->api_version == 2 ? "/azure"
                                      : "/azure/tdxvm");
    if ((body = attest_body(ev, nonce, opts)) == NULL) {
        kg_err_set(err, KG_STEP_INTERNAL, "out of memory building the attest request");
        goto err;
    }
    if (strlen(body) > 500000) { /* ITA's request limit */
        kg_err_set(err, KG_STEP_TOKEN, "attest request of %zu bytes exceeds ITA's 500000-byte limit",
                   strlen(body));
        goto err;
    }
    if ((keyhdr = api_key_header(c, &keyhdr_size)) == NULL) {
        kg_err_set(err, KG_STEP_INTERNAL, "out of memory");
        goto err;
    }
    snprintf(reqid, sizeof(reqid), "request-id: %s", opts->request_id ? opts->request_id : "");
    {
        const char *headers[] = {keyhdr, "Accept: application/json", "Content-Type: application/json",
                                 opts->request_id ? reqid : NULL, NULL};
        if (!kg_http_request(c->http, KG_STEP_TOKEN, "POST", url, headers, body, strlen(body),
                             ITA_MAX_JSON_BODY, &resp, err))
            goto err;
    }
    remember(c, &resp);
    if (resp.status != 200) {
        kg_http_status_error(err, KG_STEP_TOKEN, "POST", url, &resp);
        goto err;
    }
    if (!ita_parse_token_reply(resp.body, resp.body_len, token, &why)) {
        kg_err_set(err, strcmp(why, "out of memory") == 0 ? KG_STEP_INTERNAL : KG_STEP_TOKEN, "POST %s: %s",
                   url, why);
        goto err;
    }
    ok = 1;
err:
    free(body);
    kg_http_response_clear(&resp);
    OPENSSL_secure_clear_free(keyhdr, keyhdr_size);
    return ok;
}
