/* SPDX-License-Identifier: Apache-2.0 */
/* The Trustee binding (kbs_trustee.h): REPORTDATA = H(JCS(runtime)) zero-padded for each
 * negotiable hash, checked against hand-written canonical text; the error classes; and the
 * token binding check against altered claims. The wire exchanges are in
 * tests/integration/test_trustee.py. */
#include "kg_test.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kbs_trustee.h"

static const char JWK[] =
    "{\"kty\":\"EC\",\"crv\":\"P-256\",\"alg\":\"ECDH-ES+A256KW\",\"x\":\"AAEC-_\",\"y\":\"Zm9v\"}";
static const char NONCE[] = "q+/ab/cd==";
/* what must be hashed: sorted members, '/' and '+' as they are, no whitespace */
static const char CANONICAL[] =
    "{\"additional-evidence\":\"\",\"nonce\":\"q+/ab/cd==\",\"tee-pubkey\":{\"alg\":"
    "\"ECDH-ES+A256KW\",\"crv\":\"P-256\",\"kty\":\"EC\",\"x\":\"AAEC-_\",\"y\":\"Zm9v\"}}";

static void test_report_data_per_hash(void **state)
{
    static const struct {
        const char *alg, *md;
        size_t len;
    } v[] = {{"sha256", "SHA256", 32}, {"sha384", "SHA384", 48}, {"sha512", "SHA512", 64}};
    cJSON *jwk = cJSON_Parse(JWK);
    for (size_t i = 0; i < 3; i++) {
        uint8_t rd[64], want[64] = {0};
        char *jcs = NULL;
        kg_err e;
        assert_int_equal(kbs_trustee_report_data(NONCE, jwk, v[i].alg, NULL, KG_STEP_EVIDENCE, rd, &jcs, &e),
                         1);
        assert_string_equal(jcs, CANONICAL);
        assert_int_equal(EVP_Q_digest(NULL, v[i].md, NULL, CANONICAL, strlen(CANONICAL), want, NULL), 1);
        assert_memory_equal(rd, want, 64); /* digest then zeros */
        for (size_t k = v[i].len; k < 64; k++)
            assert_int_equal(rd[k], 0);
        free(jcs);
    }
    {
        uint8_t rd[64];
        kg_err e;
        assert_int_equal(kbs_trustee_report_data(NONCE, jwk, "sm3", NULL, KG_STEP_EVIDENCE, rd, NULL, &e), 0);
        assert_non_null(strstr(e.msg, "'sm3' is not sha256/sha384/sha512"));
    }
    cJSON_Delete(jwk);
}

static void test_classify(void **state)
{
    assert_int_equal(kbs_trustee_classify("https://github.com/confidential-containers/kbs/errors/PolicyDeny"),
                     KBS_TRUSTEE_DENIED);
    assert_int_equal(kbs_trustee_classify("TokenNotFound"), KBS_TRUSTEE_REATTEST);
    assert_int_equal(kbs_trustee_classify(".../errors/AttestationError"), KBS_TRUSTEE_REATTEST);
    assert_int_equal(kbs_trustee_classify(".../errors/TokenVerifierError"), KBS_TRUSTEE_REATTEST);
    assert_int_equal(kbs_trustee_classify(".../errors/PluginInternalError"), KBS_TRUSTEE_NOT_FOUND);
    assert_int_equal(kbs_trustee_classify(".../errors/Something"), KBS_TRUSTEE_OTHER);
    assert_int_equal(kbs_trustee_classify(""), KBS_TRUSTEE_OTHER);
    assert_int_equal(kbs_trustee_classify(NULL), KBS_TRUSTEE_OTHER);
}

/* A v2 payload as ITA makes it for Trustee's runtime data. */
static cJSON *payload_for(const cJSON *jwk, const char *nonce, const uint8_t rd[64])
{
    cJSON *p = cJSON_CreateObject(), *tdx = cJSON_AddObjectToObject(p, "tdx");
    cJSON *rt = cJSON_AddObjectToObject(tdx, "attester_runtime_data");
    char hex[129];
    cJSON_AddItemToObject(rt, "tee-pubkey", cJSON_Duplicate(jwk, 1));
    cJSON_AddStringToObject(rt, "nonce", nonce);
    cJSON_AddStringToObject(rt, "additional-evidence", "");
    for (int i = 0; i < 64; i++)
        snprintf(hex + 2 * i, 3, "%02x", rd[i]);
    cJSON_AddStringToObject(tdx, "tdx_report_data", hex);
    return p;
}

static void expect_binding(const cJSON *payload, const kbs_trustee_challenge *ch, const cJSON *jwk,
                           const uint8_t rd[64], const char *needle)
{
    kg_err e;
    kg_err_clear(&e);
    if (needle == NULL) {
        if (!kbs_trustee_check_binding(payload, ch, jwk, rd, &e))
            fail_msg("binding refused: %s", e.msg);
        return;
    }
    assert_int_equal(kbs_trustee_check_binding(payload, ch, jwk, rd, &e), 0);
    assert_int_equal(e.step, KG_STEP_VERIFY);
    if (strstr(e.msg, needle) == NULL)
        fail_msg("'%s' lacks '%s'", e.msg, needle);
}

static void test_check_binding(void **state)
{
    cJSON *jwk = cJSON_Parse(JWK), *other = cJSON_Parse(JWK), *p;
    kbs_trustee_challenge ch;
    uint8_t rd[64], bad[64];
    kg_err e;

    memset(&ch, 0, sizeof(ch));
    strcpy(ch.nonce, NONCE);
    strcpy(ch.hash_alg, "sha512");
    assert_int_equal(kbs_trustee_report_data(NONCE, jwk, "sha512", "", KG_STEP_EVIDENCE, rd, NULL, &e), 1);
    p = payload_for(jwk, NONCE, rd);
    expect_binding(p, &ch, jwk, rd, NULL);
    /* another TEE key */
    cJSON_ReplaceItemInObject(other, "x", cJSON_CreateString("AAED-_"));
    expect_binding(p, &ch, other, rd, "tee-pubkey is not our TEE key");
    cJSON_Delete(p);
    /* another nonce */
    p = payload_for(jwk, "b3RoZXI=", rd);
    expect_binding(p, &ch, jwk, rd, "nonce is not the KBS challenge");
    cJSON_Delete(p);
    /* tdx_report_data that is not our evidence's */
    memcpy(bad, rd, 64);
    bad[63] ^= 1;
    p = payload_for(jwk, NONCE, bad);
    expect_binding(p, &ch, jwk, rd, "tdx_report_data is not the REPORTDATA of our evidence");
    cJSON_Delete(p);
    /* runtime data with an extra member no longer hashes to REPORTDATA */
    p = payload_for(jwk, NONCE, rd);
    cJSON_AddStringToObject(cJSON_GetObjectItem(cJSON_GetObjectItem(p, "tdx"), "attester_runtime_data"), "x",
                            "wrong");
    expect_binding(p, &ch, jwk, rd, "does not hash (sha512 of its canonical JSON)");
    cJSON_Delete(p);
    /* the same object under a hash that was not negotiated */
    strcpy(ch.hash_alg, "sha384");
    p = payload_for(jwk, NONCE, rd);
    expect_binding(p, &ch, jwk, rd, "does not hash (sha384");
    cJSON_Delete(p);
    /* a v1 (flat) payload */
    p = cJSON_Parse("{\"attester_held_data\":\"AA==\"}");
    expect_binding(p, &ch, jwk, rd, "no tdx.attester_runtime_data");
    cJSON_Delete(p);
    cJSON_Delete(jwk);
    cJSON_Delete(other);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_report_data_per_hash),
        cmocka_unit_test(test_classify),
        cmocka_unit_test(test_check_binding),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
