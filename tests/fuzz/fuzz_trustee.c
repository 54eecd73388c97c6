/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Trustee KBS replies and binding, all on every input:
 *   - the auth reply (kbs_trustee_parse_challenge: nonce, extra-params, Set-Cookie), the attest
 *     reply (kbs_trustee_parse_token) and a 401 error body (kbs_trustee_status_error);
 *   - kbs_trustee_check_binding with the body as a token payload, against the fixed handshake of
 *     data/trustee-binding.json (the nonce, hash algorithm and TEE JWK of a stack handshake;
 *     REPORTDATA computed here with kbs_trustee_report_data);
 *   - trustee_token = ear (kg_ear.h): the body as a compact EAR verified with the pinned AS key of
 *     data/trustee-as-cert.pem (header rules, ES256 signature), then, for a verified token and
 *     for the body as claims, kg_ear_check_claims (leeway wide enough that a seed's age never
 *     stops it) and kg_ear_check_binding against the same fixed handshake;
 *   - kg_jcs_serialize of whatever the body parses to, with an idempotence oracle: when JCS
 *     accepts a value, its output must parse and serialise again to the very same bytes.
 * Input: the Set-Cookie header value, a '\n', then the body (no '\n': no cookie, all body). The
 * body is NUL-terminated past its length, as kg_http hands it over.
 */
#include <cjson/cJSON.h>

#include "fuzz_common.h"
#include "kbs_trustee.h"
#include "kg_ear.h"
#include "kg_jcs.h"

static kbs_trustee_challenge fixed_ch;
static cJSON *fixed_jwk;
static uint8_t fixed_rd[64];
static EVP_PKEY *as_key;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    FILE *f = fopen(fuzz_data_path("trustee-binding.json"), "rb");
    char text[8192];
    size_t n;
    cJSON *j;
    const cJSON *nonce, *alg;
    kg_err err;

    (void)argc;
    (void)argv;
    FUZZ_REQUIRE(f != NULL);
    n = fread(text, 1, sizeof(text) - 1, f);
    fclose(f);
    text[n] = '\0';
    j = cJSON_Parse(text);
    nonce = cJSON_GetObjectItemCaseSensitive(j, "nonce");
    alg = cJSON_GetObjectItemCaseSensitive(j, "hash_alg");
    FUZZ_REQUIRE(cJSON_IsString(nonce) && strlen(nonce->valuestring) < sizeof(fixed_ch.nonce) &&
                 cJSON_IsString(alg) && strlen(alg->valuestring) < sizeof(fixed_ch.hash_alg));
    snprintf(fixed_ch.nonce, sizeof(fixed_ch.nonce), "%s", nonce->valuestring);
    snprintf(fixed_ch.hash_alg, sizeof(fixed_ch.hash_alg), "%s", alg->valuestring);
    fixed_jwk = cJSON_DetachItemFromObjectCaseSensitive(j, "tee_pubkey");
    FUZZ_REQUIRE(cJSON_IsObject(fixed_jwk));
    FUZZ_REQUIRE(kbs_trustee_report_data(fixed_ch.nonce, fixed_jwk, fixed_ch.hash_alg, "", KG_STEP_EVIDENCE,
                                         fixed_rd, NULL, &err));
    cJSON_Delete(j);
    as_key = kg_ear_key_read(fuzz_data_path("trustee-as-cert.pem"), "trustee_as_cert", &err);
    if (as_key == NULL)
        fprintf(stderr, "%s\n", err.msg);
    FUZZ_REQUIRE(as_key != NULL);
    return 0;
}

/* The EAR checks of kg_trustee.c's verify_ear on a claims object. */
static void ear_claims(const cJSON *payload, const char *what)
{
    kg_ear_expect x = {0, 1L << 40, KG_EAR_WARNING};
    long long exp = 0;
    kg_err err;

    fuzz_note(what, kg_ear_check_claims(payload, &x, &exp, &err), err.msg);
    fuzz_note("kg_ear_check_binding",
              kg_ear_check_binding(payload, fixed_ch.nonce, fixed_jwk, fixed_rd, &err), err.msg);
}

/* JCS never crashes; what it accepts is a fixed point of parse + serialise. */
static void jcs_oracle(const cJSON *value)
{
    char *once = NULL, *twice = NULL;
    size_t once_len = 0, twice_len = 0;
    cJSON *again;
    kg_err err;

    if (!kg_jcs_serialize(value, KG_STEP_EVIDENCE, &once, &once_len, &err)) {
        fuzz_note("kg_jcs_serialize", 0, err.msg);
        FUZZ_REQUIRE(once == NULL);
        return;
    }
    fuzz_note("kg_jcs_serialize", 1, NULL);
    if (strlen(once) != once_len || (again = cJSON_ParseWithLength(once, once_len)) == NULL) {
        fprintf(stderr, "kg_jcs_serialize: output does not parse back: %s\n", once);
        abort();
    }
    if (!kg_jcs_serialize(again, KG_STEP_EVIDENCE, &twice, &twice_len, &err) || twice_len != once_len ||
        memcmp(once, twice, once_len) != 0) {
        fprintf(stderr, "kg_jcs_serialize: not idempotent:\n  %s\n  %s\n", once, twice ? twice : err.msg);
        abort();
    }
    cJSON_Delete(again);
    free(once);
    free(twice);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nl = memchr(data, '\n', size);
    size_t cookie_len = nl ? (size_t)(nl - data) : 0, off = nl ? cookie_len + 1 : 0;
    kg_http_response resp;
    kbs_trustee_challenge ch;
    kbs_trustee_reply reply;
    char *token = NULL;
    cJSON *payload;
    kg_err err;

    memset(&resp, 0, sizeof(resp));
    if (cookie_len >= sizeof(resp.set_cookie)) /* kg_http keeps at most this much */
        cookie_len = sizeof(resp.set_cookie) - 1;
    memcpy(resp.set_cookie, data, cookie_len);
    resp.body = (unsigned char *)fuzz_cstr(data + off, size - off);
    resp.body_len = size - off;
    resp.status = 200;
    snprintf(resp.request_id, sizeof(resp.request_id), "req-1");

    memset(&ch, 0, sizeof(ch));
    fuzz_note("kbs_trustee_parse_challenge",
              kbs_trustee_parse_challenge(&resp, "https://kbs.invalid/kbs/v0/auth", &ch, &err), err.msg);
    FUZZ_REQUIRE(memchr(ch.nonce, '\0', sizeof(ch.nonce)) && memchr(ch.cookie, '\0', sizeof(ch.cookie)) &&
                 memchr(ch.hash_alg, '\0', sizeof(ch.hash_alg)));
    fuzz_note("kbs_trustee_parse_token",
              kbs_trustee_parse_token(&resp, "https://kbs.invalid/kbs/v0/attest", &token, &err), err.msg);
    free(token);
    resp.status = 401;
    kg_err_clear(&err);
    memset(&reply, 0, sizeof(reply));
    (void)kbs_trustee_status_error(&err, KG_STEP_TRANSFER, "GET", "https://kbs.invalid/kbs/v0/resource/a/b/c",
                                   &resp, &reply);
    FUZZ_REQUIRE(memchr(err.msg, '\0', sizeof(err.msg)) != NULL &&
                 memchr(reply.error_kind, '\0', sizeof(reply.error_kind)) != NULL);
    fuzz_note("kbs_trustee_status_error", 0, err.msg);

    if (kg_ear_verify_signature(as_key, (const char *)resp.body, &payload, &err)) {
        fuzz_note("kg_ear_verify_signature", 1, NULL);
        ear_claims(payload, "kg_ear_check_claims (verified)");
        cJSON_Delete(payload);
    } else {
        FUZZ_REQUIRE(payload == NULL);
        fuzz_note("kg_ear_verify_signature", 0, err.msg);
    }
    payload = cJSON_ParseWithLength((const char *)resp.body, resp.body_len);
    fuzz_note("kbs_trustee_check_binding",
              kbs_trustee_check_binding(payload, &fixed_ch, fixed_jwk, fixed_rd, &err), err.msg);
    ear_claims(payload, "kg_ear_check_claims");
    if (payload != NULL)
        jcs_oracle(payload);
    cJSON_Delete(payload);
    free(resp.body);
    fuzz_err_queue_empty();
    return 0;
}
