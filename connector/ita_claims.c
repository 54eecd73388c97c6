/* SPDX-License-Identifier: Apache-2.0 */
#include "ita_claims.h"

#include <ctype.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "kg_b64.h"
#include "kg_libctx.h"

#define DEFAULT_LEEWAY_S 60

/*
 * Azure TDX tokens (docs/protocols/azure-tdx.md §2.1, ita-api.md §7.2): attester_runtime_data
 * is the vTPM's runtime JSON, whose "user-data" is hex(SHA-512(val || iat || user data)) (64 zero
 * bytes with neither), and our user data arrives as attester_held_data (binary) or attester_user_data (JSON).
 * keygate_ita_claims has no field for the runtime JSON's user-data, so its 64 bytes are kept
 * right after the held data, in the same allocation, and runtime_data_is_json (still true) says
 * so. With attester_user_data, held_data holds that object as compact JSON text.
 */
#define RUNTIME_AZURE 2           /* held_data = attester_held_data (maybe empty), then the hash */
#define RUNTIME_AZURE_JSON_USER 3 /* held_data = attester_user_data JSON text, then the hash */

/* iss values ITA uses: v1 and the v2 portal hosts (US, EU, pilot). */
static const char *const known_v2_iss[] = {"https://portal.trustauthority.intel.com",
                                           "https://portal.eu.trustauthority.intel.com",
                                           "https://portal.pilot.trustauthority.intel.com", NULL};
#define ITA_V1_ISS "Intel Trust Authority"

void ita_claims_clear(ita_claims *c)
{
    if (c == NULL)
        return;
    free(c->held_data);
    ita_nonce_clear(&c->verifier_nonce);
    memset(c, 0, sizeof(*c));
}

static int hexval(int ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    ch = tolower(ch);
    return ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
}

static int hex_to_bytes(const char *s, uint8_t *out, size_t n)
{
    if (strlen(s) != 2 * n)
        return 0;
    for (size_t i = 0; i < n; i++) {
        int hi = hexval((unsigned char)s[2 * i]), lo = hexval((unsigned char)s[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return 0;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return 1;
}

static const cJSON *get(const cJSON *obj, const char *name)
{
    return obj ? cJSON_GetObjectItemCaseSensitive(obj, name) : NULL;
}

/* Optional string claim into a fixed buffer. Returns 0 on a wrong type or over-long value. */
static int opt_str(const cJSON *obj, const char *name, char *dst, size_t size, kg_err *err)
{
    const cJSON *v = get(obj, name);
    if (v == NULL || cJSON_IsNull(v))
        return 1;
    if (!cJSON_IsString(v) || strlen(v->valuestring) >= size)
        return kg_err_set(err, KG_STEP_VERIFY, "claim %s is not a string of at most %zu bytes", name,
                          size - 1);
    memcpy(dst, v->valuestring, strlen(v->valuestring) + 1);
    return 1;
}

static int opt_time(const cJSON *obj, const char *name, int *has, long long *out, kg_err *err)
{
    const cJSON *v = get(obj, name);
    if (v == NULL)
        return 1;
    if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > 1e13)
        return kg_err_set(err, KG_STEP_VERIFY, "claim %s is not a NumericDate", name);
    *out = (long long)v->valuedouble;
    *has = 1;
    return 1;
}

/* Optional fixed-length hex claim; *present set when found. */
static int opt_hex(const cJSON *obj, const char *name, uint8_t *out, size_t n, int *present, kg_err *err)
{
    const cJSON *v = get(obj, name);
    if (v == NULL)
        return 1;
    if (!cJSON_IsString(v) || !hex_to_bytes(v->valuestring, out, n))
        return kg_err_set(err, KG_STEP_VERIFY, "claim %s is not %zu bytes of hex", name, n);
    if (present != NULL)
        *present = 1;
    return 1;
}

static int opt_bool(const cJSON *obj, const char *name, int *out, kg_err *err)
{
    const cJSON *v = get(obj, name);
    if (v == NULL)
        return 1;
    if (!cJSON_IsBool(v))
        return kg_err_set(err, KG_STEP_VERIFY, "claim %s is not a boolean", name);
    *out = cJSON_IsTrue(v);
    return 1;
}

static int b64_field(const cJSON *obj, const char *name, uint8_t **out, size_t *len)
{
    const cJSON *v = get(obj, name);
    return cJSON_IsString(v) && kg_b64_decode(v->valuestring, strlen(v->valuestring), out, len);
}

static int parse_nonce(const cJSON *obj, ita_claims *c, kg_err *err)
{
    const cJSON *vn = get(obj, "verifier_nonce");
    if (vn == NULL || cJSON_IsNull(vn))
        return 1;
    if (!cJSON_IsObject(vn) || !b64_field(vn, "val", &c->verifier_nonce.val, &c->verifier_nonce.val_len) ||
        !b64_field(vn, "iat", &c->verifier_nonce.iat, &c->verifier_nonce.iat_len) ||
        !b64_field(vn, "signature", &c->verifier_nonce.signature, &c->verifier_nonce.signature_len))
        return kg_err_set(err, KG_STEP_VERIFY, "claim verifier_nonce is not {val, iat, signature} in base64");
    c->has_verifier_nonce = 1;
    return 1;
}

/* policy_ids_matched / _unmatched: null or an array of {"id": uuid, ...}. */
static int parse_policy_list(const cJSON *obj, const char *name, char ids[][37], int *count, kg_err *err)
{
    const cJSON *arr = get(obj, name), *item;
    if (arr == NULL || cJSON_IsNull(arr))
        return 1;
    if (!cJSON_IsArray(arr))
        return kg_err_set(err, KG_STEP_VERIFY, "claim %s is not an array", name);
    cJSON_ArrayForEach(item, arr)
    {
        const cJSON *id = get(item, "id");
        if (!cJSON_IsString(id) || strlen(id->valuestring) != 36)
            return kg_err_set(err, KG_STEP_VERIFY, "claim %s has an entry without a UUID id", name);
        if (*count >= ITA_MAX_POLICY_IDS)
            return kg_err_set(err, KG_STEP_VERIFY, "claim %s has more than %d entries", name,
                              ITA_MAX_POLICY_IDS);
        memcpy(ids[*count], id->valuestring, 37);
        (*count)++;
    }
    return 1;
}

static int parse_advisories(const cJSON *obj, ita_claims *c, kg_err *err)
{
    const cJSON *arr = get(obj, "attester_advisory_ids"), *item;
    if (arr == NULL || cJSON_IsNull(arr))
        return 1;
    if (!cJSON_IsArray(arr))
        return kg_err_set(err, KG_STEP_VERIFY, "claim attester_advisory_ids is not an array");
    cJSON_ArrayForEach(item, arr)
    {
        if (!cJSON_IsString(item) || strlen(item->valuestring) >= sizeof(c->advisory_ids[0]))
            return kg_err_set(err, KG_STEP_VERIFY, "claim attester_advisory_ids has a bad entry");
        if (c->advisory_count < ITA_MAX_ADVISORIES)
            strcpy(c->advisory_ids[c->advisory_count++], item->valuestring);
    }
    return 1;
}

/* The Azure runtime JSON's user-data, kept after the held data (see RUNTIME_AZURE). */
static int parse_azure(const cJSON *t, ita_claims *c, kg_err *err)
{
    const cJSON *rt = get(t, "attester_runtime_data"), *aud = get(t, "attester_user_data"), *ud;
    uint8_t hash[64], *buf;
    char *text = NULL;
    const uint8_t *src = c->held_data;
    size_t n = c->held_data_len;
    int kind = RUNTIME_AZURE;

    if (!cJSON_IsObject(rt) || (ud = get(rt, "user-data")) == NULL)
        return 1; /* not an Azure runtime JSON */
    if (!cJSON_IsString(ud) || !hex_to_bytes(ud->valuestring, hash, 64))
        return kg_err_set(err, KG_STEP_VERIFY,
                          "claim attester_runtime_data user-data is not 64 bytes of hex");
    if (c->held_data == NULL && aud != NULL && !cJSON_IsNull(aud)) {
        if ((text = cJSON_PrintUnformatted(aud)) == NULL)
            return kg_err_set(err, KG_STEP_INTERNAL, "out of memory");
        src = (const uint8_t *)text;
        n = strlen(text);
        kind = RUNTIME_AZURE_JSON_USER;
    }
    if ((buf = malloc(n + 64)) == NULL) {
        free(text);
        return kg_err_set(err, KG_STEP_INTERNAL, "out of memory");
    }
    if (n > 0)
        memcpy(buf, src, n);
    memcpy(buf + n, hash, 64);
    free(text);
    free(c->held_data);
    c->held_data = buf;
    c->held_data_len = n;
    c->runtime_data_is_json = kind;
    return 1;
}

/* The attester claims: top level in v1, under "tdx" in v2. */
static int parse_tee(const cJSON *t, ita_claims *c, kg_err *err)
{
    static const char *rtmr_names[4] = {"tdx_rtmr0", "tdx_rtmr1", "tdx_rtmr2", "tdx_rtmr3"};
    const cJSON *held = get(t, "attester_held_data"), *seamsvn = get(t, "tdx_seamsvn");
    int sgx_debug = -1;

    if (!opt_str(t, "attester_type", c->attester_type, sizeof(c->attester_type), err) ||
        !opt_str(t, "attester_tcb_status", c->tcb_status, sizeof(c->tcb_status), err) ||
        !opt_str(t, "attester_tcb_date", c->tcb_date, sizeof(c->tcb_date), err) ||
        !parse_advisories(t, c, err))
        return 0;
    if (held != NULL && !cJSON_IsNull(held)) {
        if (!cJSON_IsString(held) ||
            !kg_b64_decode(held->valuestring, strlen(held->valuestring), &c->held_data, &c->held_data_len))
            return kg_err_set(err, KG_STEP_VERIFY, "claim attester_held_data is not base64");
    }
    c->runtime_data_is_json = cJSON_IsObject(get(t, "attester_runtime_data"));
    if (!parse_azure(t, c, err))
        return 0;
    if (!opt_hex(t, "tdx_report_data", c->report_data, 64, &c->has_tdx, err) ||
        !opt_hex(t, "tdx_mrtd", c->mrtd, 48, NULL, err) ||
        !opt_hex(t, "tdx_mrseam", c->mrseam, 48, NULL, err) ||
        !opt_hex(t, "tdx_mrsignerseam", c->mrsignerseam, 48, NULL, err) ||
        !opt_hex(t, "tdx_mrconfigid", c->mrconfigid, 48, NULL, err) ||
        !opt_hex(t, "tdx_mrowner", c->mrowner, 48, NULL, err) ||
        !opt_hex(t, "tdx_mrownerconfig", c->mrownerconfig, 48, NULL, err) ||
        !opt_hex(t, "tdx_tee_tcb_svn", c->tee_tcb_svn, 16, NULL, err) ||
        !opt_hex(t, "tdx_seam_attributes", c->seam_attributes, 8, NULL, err) ||
        !opt_hex(t, "tdx_td_attributes", c->td_attributes, 8, NULL, err) ||
        !opt_hex(t, "tdx_xfam", c->xfam, 8, NULL, err))
        return 0;
    for (int i = 0; i < 4; i++)
        if (!opt_hex(t, rtmr_names[i], c->rtmr[i], 48, NULL, err))
            return 0;
    if (seamsvn != NULL) {
        if (!cJSON_IsNumber(seamsvn))
            return kg_err_set(err, KG_STEP_VERIFY, "claim tdx_seamsvn is not a number");
        c->seamsvn = (long)seamsvn->valuedouble;
    }
    c->is_debuggable = -1;
    if (!opt_bool(t, "tdx_is_debuggable", &c->is_debuggable, err) ||
        !opt_bool(t, "sgx_is_debuggable", &sgx_debug, err))
        return 0;
    if (c->is_debuggable < 0)
        c->is_debuggable = sgx_debug;
    return parse_nonce(t, c, err);
}

int ita_claims_parse(const cJSON *payload, ita_claims *c, kg_err *err)
{
    const cJSON *tdx;

    memset(c, 0, sizeof(*c));
    if (!cJSON_IsObject(payload))
        return kg_err_set(err, KG_STEP_VERIFY, "token payload is not a JSON object");
    tdx = get(payload, "tdx");
    c->layout = cJSON_IsObject(tdx) ? 2 : 1;
    if (!opt_str(payload, "ver", c->ver, sizeof(c->ver), err) ||
        !opt_str(payload, "iss", c->iss, sizeof(c->iss), err) ||
        !opt_str(payload, "jti", c->jti, sizeof(c->jti), err) ||
        !opt_time(payload, "iat", &c->has_iat, &c->iat, err) ||
        !opt_time(payload, "nbf", &c->has_nbf, &c->nbf, err) ||
        !opt_time(payload, "exp", &c->has_exp, &c->exp, err) ||
        !parse_tee(c->layout == 2 ? tdx : payload, c, err) ||
        !parse_policy_list(payload, "policy_ids_matched", c->policy_ids_matched, &c->matched_count, err) ||
        !parse_policy_list(payload, "policy_ids_unmatched", c->policy_ids_unmatched, &c->unmatched_count,
                           err))
        goto err;
    /* v2 may also carry the nonce echo at the top level */
    if (c->layout == 2 && !c->has_verifier_nonce && !parse_nonce(payload, c, err))
        goto err;
    return 1;
err:
    ita_claims_clear(c);
    return 0;
}

/* The next item of a comma list, blanks around it trimmed: 1 with item and len set, 0 at the end. */
static int list_next(const char **p, const char **item, size_t *len)
{
    const char *comma;
    size_t n;

    if (*p == NULL || **p == '\0')
        return 0;
    comma = strchr(*p, ',');
    n = comma ? (size_t)(comma - *p) : strlen(*p);
    *item = *p;
    while (n > 0 && isspace((unsigned char)**item))
        (*item)++, n--;
    while (n > 0 && isspace((unsigned char)(*item)[n - 1]))
        n--;
    *len = n;
    *p = comma ? comma + 1 : NULL;
    return 1;
}

/* 1 if item (n bytes as hex) is in a comma list of hex values (case-insensitive). */
static int hex_in_list(const char *list, const uint8_t *value, size_t n)
{
    const char *p = list, *it;
    size_t len;

    while (list_next(&p, &it, &len)) {
        uint8_t tmp[64];
        char item[200];
        if (len < sizeof(item) && n <= sizeof(tmp)) {
            memcpy(item, it, len);
            item[len] = '\0';
            if (hex_to_bytes(item, tmp, n) && CRYPTO_memcmp(tmp, value, n) == 0)
                return 1;
        }
    }
    return 0;
}

static int str_in_list(const char *list, const char *value)
{
    const char *p = list, *it;
    size_t vlen = strlen(value), len;

    while (list_next(&p, &it, &len))
        if (len == vlen && strncmp(it, value, len) == 0)
            return 1;
    return 0;
}

static int nonce_equal(const ita_nonce *a, const ita_nonce *b)
{
    return a->val_len == b->val_len && a->iat_len == b->iat_len && a->signature_len == b->signature_len &&
           CRYPTO_memcmp(a->val, b->val, a->val_len) == 0 && CRYPTO_memcmp(a->iat, b->iat, a->iat_len) == 0 &&
           CRYPTO_memcmp(a->signature, b->signature, a->signature_len) == 0;
}

static int check_iss_ver(const ita_claims *c, const ita_expect *x, kg_err *err)
{
    if (c->layout == 1) {
        if (strcmp(c->ver, "1.0.0") != 0)
            return kg_err_set(err, KG_STEP_VERIFY, "ver '%s' is not 1.0.0 (v1 flat token)", c->ver);
        if (strcmp(c->iss, ITA_V1_ISS) != 0)
            return kg_err_set(err, KG_STEP_VERIFY, "iss '%s' is not '%s'", c->iss, ITA_V1_ISS);
        return 1;
    }
    if (strcmp(c->ver, "2.0.0") != 0)
        return kg_err_set(err, KG_STEP_VERIFY, "ver '%s' is not 2.0.0 (v2 nested token)", c->ver);
    for (const char *const *k = known_v2_iss; *k != NULL; k++)
        if (strcmp(c->iss, *k) == 0)
            return 1;
    if (x->base_url != NULL && x->base_url[0] != '\0' && strcmp(c->iss, x->base_url) == 0)
        return 1;
    return kg_err_set(err, KG_STEP_VERIFY, "iss '%s' is not an ITA portal URL", c->iss);
}

/* An SGX (or other TEE's) token must not pass for a TD: attester_type is read where the TEE
 * claims are (top level in v1, "tdx" in v2) and must be present. */
static int check_attester_type(const ita_claims *c, const ita_expect *x, kg_err *err)
{
    const char *want = x->attester_type != NULL ? x->attester_type : "TDX";

    if (c->attester_type[0] == '\0')
        return kg_err_set(err, KG_STEP_VERIFY, "token has no attester_type claim (expected '%s')", want);
    if (strcmp(c->attester_type, want) != 0)
        return kg_err_set(err, KG_STEP_VERIFY, "attester_type '%s' is not the expected '%s'",
                          c->attester_type, want);
    return 1;
}

static int check_time(const ita_claims *c, const ita_expect *x, kg_err *err)
{
    long long now = x->now != 0 ? (long long)x->now : (long long)time(NULL);
    long leeway = x->leeway_s < 0 ? DEFAULT_LEEWAY_S : x->leeway_s;

    if (!c->has_exp)
        return kg_err_set(err, KG_STEP_VERIFY, "token has no exp claim");
    if (now > c->exp + leeway)
        return kg_err_set(err, KG_STEP_VERIFY, "token expired at %lld (now %lld, leeway %ld s)", c->exp, now,
                          leeway);
    if (c->has_nbf && now + leeway < c->nbf)
        return kg_err_set(err, KG_STEP_VERIFY, "token not valid before %lld (now %lld, leeway %ld s)", c->nbf,
                          now, leeway);
    if (c->has_iat && now + leeway < c->iat)
        return kg_err_set(err, KG_STEP_VERIFY, "token issued in the future (iat %lld, now %lld)", c->iat,
                          now);
    return 1;
}

/* SHA-512(nonce.val ‖ nonce.iat ‖ data), or SHA-512(data) when nonce is NULL. */
static int nonce_data_sha512(const ita_nonce *nonce, const uint8_t *data, size_t len, uint8_t md[64],
                             kg_err *err)
{
    unsigned int mdlen = 0;
    EVP_MD *sha512 = NULL;
    EVP_MD_CTX *ctx;
    int ok;

    if ((ctx = EVP_MD_CTX_new()) == NULL)
        return kg_err_set(err, KG_STEP_INTERNAL, "out of memory");
    /* SHA-512 from our private library context, never the application's */
    ok = EVP_DigestInit_ex2(ctx, sha512 = EVP_MD_fetch(kg_libctx(), "SHA512", NULL), NULL) &&
         (nonce == NULL || (EVP_DigestUpdate(ctx, nonce->val, nonce->val_len) &&
                            EVP_DigestUpdate(ctx, nonce->iat, nonce->iat_len))) &&
         (len == 0 || EVP_DigestUpdate(ctx, data, len)) && EVP_DigestFinal_ex(ctx, md, &mdlen);
    EVP_MD_CTX_free(ctx);
    EVP_MD_free(sha512);
    return ok ? 1 : kg_err_set(err, KG_STEP_INTERNAL, "SHA-512 failed");
}

/* Azure: our user data is the held data (or, as JSON, attester_user_data), and the runtime
 * JSON's user-data is SHA-512(nonce.val ‖ nonce.iat ‖ user data), or zeros with neither. ITA
 * checked that the quote's REPORTDATA binds the runtime JSON (which it re-serialised). *bound as
 * for check_binding. */
static int check_azure_binding(const ita_claims *c, const ita_expect *x, const ita_nonce *nonce, int *bound,
                               kg_err *err)
{
    const uint8_t *want = c->held_data + c->held_data_len, *data = c->held_data;
    size_t len = c->held_data_len;
    uint8_t md[64];

    if (c->runtime_data_is_json == RUNTIME_AZURE_JSON_USER) {
        if (!x->check_binding)
            return 1; /* ITA re-serialised the JSON user data, the hashed bytes are not in the token */
        cJSON *ours = cJSON_ParseWithLength((const char *)x->user_data, x->user_data_len);
        cJSON *theirs = cJSON_ParseWithLength((const char *)c->held_data, c->held_data_len);
        int same = ours != NULL && theirs != NULL && cJSON_Compare(ours, theirs, 1);
        cJSON_Delete(ours);
        cJSON_Delete(theirs);
        if (!same)
            return kg_err_set(err, KG_STEP_VERIFY, "attester_user_data is not our user data");
        data = x->user_data;
        len = x->user_data_len;
    } else if (x->check_binding) {
        if (len == 0 && x->user_data_len > 0)
            return kg_err_set(
                err, KG_STEP_VERIFY,
                "token has no attester_held_data or attester_user_data (our key was not bound)");
        if (len != x->user_data_len || CRYPTO_memcmp(data, x->user_data, len) != 0)
            return kg_err_set(err, KG_STEP_VERIFY, "attester_held_data is not our user data");
    }
    if (nonce == NULL && len == 0)
        memset(md, 0, sizeof(md)); /* the Azure convention */
    else if (!nonce_data_sha512(nonce, data, len, md, err))
        return 0;
    if (CRYPTO_memcmp(md, want, 64) != 0)
        return kg_err_set(
            err, KG_STEP_VERIFY,
            "attester_runtime_data user-data is not SHA-512(nonce.val || nonce.iat || user data)");
    *bound = x->check_binding;
    return 1;
}

/* tdx_report_data must be SHA-512(nonce.val ‖ nonce.iat ‖ held data): the quote bound the data.
 * nonce: the echo, else the one we fetched, else NULL (a token made without a nonce, or whose
 * nonce is unknown here). *bound = 1 when that hash covered our own user data and matched. */
static int check_binding(const ita_claims *c, const ita_expect *x, const ita_nonce *nonce, int *bound,
                         kg_err *err)
{
    uint8_t md[64];

    *bound = 0;
    if (c->runtime_data_is_json >= RUNTIME_AZURE)
        return check_azure_binding(c, x, nonce, bound, err);
    if (x->check_binding) {
        if (c->held_data == NULL)
            return kg_err_set(err, KG_STEP_VERIFY, "token has no attester_held_data (our key was not bound)");
        if (c->held_data_len != x->user_data_len ||
            CRYPTO_memcmp(c->held_data, x->user_data, x->user_data_len) != 0)
            return kg_err_set(err, KG_STEP_VERIFY, "attester_held_data is not our user data");
    }
    if (!c->has_tdx)
        return x->check_binding ? kg_err_set(err, KG_STEP_VERIFY, "token has no tdx_report_data") : 1;
    if (c->runtime_data_is_json && c->held_data == NULL)
        return 1; /* JSON runtime data: ITA re-serialised it, the hashed bytes are not in the token */
    if (!nonce_data_sha512(nonce, c->held_data, c->held_data_len, md, err))
        return 0;
    if (CRYPTO_memcmp(md, c->report_data, 64) != 0) {
        if (nonce == NULL)
            return kg_err_set(err, KG_STEP_VERIFY,
                              "tdx_report_data is not SHA-512(attester_held_data) and the token echoes no "
                              "verifier_nonce: the nonce it binds is unknown here");
        return kg_err_set(err, KG_STEP_VERIFY,
                          "tdx_report_data is not SHA-512(nonce.val || nonce.iat || attester_held_data)");
    }
    *bound = x->check_binding;
    return 1;
}

int ita_td_policy_check(const ita_td_values *v, const ita_expect *x, kg_err *err)
{
    static const char hexdigits[] = "0123456789abcdef";
    char hex[97];

    if (!x->allow_debug && v->is_debuggable != 0) {
        if (v->from_quote)
            return kg_err_set(
                err, KG_STEP_VERIFY,
                "the TD is debuggable: our quote's TDATTRIBUTES has DEBUG set (allow_debug_td = no)");
        return kg_err_set(err, KG_STEP_VERIFY, "%s (allow_debug_td = no)",
                          v->is_debuggable > 0 ? "the TD is debuggable"
                                               : "token does not say the TD is not debuggable");
    }
    if (x->mrtd_allow != NULL && x->mrtd_allow[0] != '\0' && !hex_in_list(x->mrtd_allow, v->mrtd, 48)) {
        for (int i = 0; i < 48; i++)
            hex[2 * i] = hexdigits[v->mrtd[i] >> 4], hex[2 * i + 1] = hexdigits[v->mrtd[i] & 15];
        hex[96] = '\0';
        return kg_err_set(err, KG_STEP_VERIFY, "%s %s is not in require_mrtd",
                          v->from_quote ? "our quote's MRTD" : "tdx_mrtd", hex);
    }
    for (int r = 0; r < 4; r++)
        if (x->rtmr_allow[r] != NULL && x->rtmr_allow[r][0] != '\0' &&
            !hex_in_list(x->rtmr_allow[r], v->rtmr[r], 48))
            return kg_err_set(err, KG_STEP_VERIFY, "%s%d is not in require_rtmr%d",
                              v->from_quote ? "our quote's RTMR" : "tdx_rtmr", r, r);
    return 1;
}

static int check_policy(const ita_claims *c, const ita_expect *x, kg_err *err)
{
    ita_td_values v = {c->is_debuggable, c->mrtd, {c->rtmr[0], c->rtmr[1], c->rtmr[2], c->rtmr[3]}, 0};

    if (!ita_td_policy_check(&v, x, err))
        return 0;
    if (x->tcb_status_allow != NULL && x->tcb_status_allow[0] != '\0' &&
        !str_in_list(x->tcb_status_allow, c->tcb_status))
        return kg_err_set(err, KG_STEP_VERIFY, "attester_tcb_status '%s' is not in require_tcb_status (%s)",
                          c->tcb_status, x->tcb_status_allow);
    for (int i = 0; i < x->required_policy_count; i++) {
        int found = 0;
        for (int j = 0; j < c->matched_count && !found; j++)
            found = strcasecmp(c->policy_ids_matched[j], x->required_policy_ids[i]) == 0;
        if (!found)
            return kg_err_set(err, KG_STEP_VERIFY, "policy %s is not in policy_ids_matched",
                              x->required_policy_ids[i]);
    }
    return 1;
}

/* The nonce echo. Every real v1 token echoes it (tests/vectors), so v1 must. Whether v2 tokens do
 * is unconfirmed (issue 19, item 5); REPORTDATA binds the nonce anyway, so a v2 token without the
 * echo passes when that binding is recomputed from our nonce and our user data and matches
 * (ita_claims_check); where it cannot be, the token is refused. An echo must be our nonce. */
static int check_nonce_echo(const ita_claims *c, const ita_expect *x, kg_err *err)
{
    if (x->nonce == NULL)
        return 1;
    if (c->has_verifier_nonce) {
        if (!nonce_equal(&c->verifier_nonce, x->nonce))
            return kg_err_set(err, KG_STEP_VERIFY, "verifier_nonce is not the nonce we fetched");
        return 1;
    }
    if (c->layout != 2)
        return kg_err_set(err, KG_STEP_VERIFY, "token has no verifier_nonce");
    if (!x->check_binding)
        return kg_err_set(err, KG_STEP_VERIFY,
                          "v2 token has no verifier_nonce echo, and without our user data the REPORTDATA "
                          "binding, which includes the nonce, cannot be checked");
    return 1;
}

int ita_claims_check(const ita_claims *c, const ita_expect *x, kg_err *err)
{
    const ita_nonce *nonce = c->has_verifier_nonce ? &c->verifier_nonce : x->nonce;
    int bound = 0;

    if (!check_time(c, x, err) || !check_iss_ver(c, x, err) || !check_attester_type(c, x, err) ||
        !check_nonce_echo(c, x, err) || !check_binding(c, x, nonce, &bound, err))
        return 0;
    /* check_nonce_echo let a v2 token without the echo through on this condition */
    if (x->nonce != NULL && !c->has_verifier_nonce && !bound)
        return kg_err_set(err, KG_STEP_VERIFY,
                          "v2 token has no verifier_nonce echo and its REPORTDATA binding was not checked "
                          "against our user data");
    return check_policy(c, x, err);
}
