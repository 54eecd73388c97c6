/* SPDX-License-Identifier: Apache-2.0 */
#include "kg_test.h"

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdlib.h>
#include <string.h>

#include "kg_keyref.h"
#include "kg_libctx.h"

static EVP_PKEY *gen(const char *alg, const char *param)
{
    EVP_PKEY *k = NULL;
    if (strcmp(alg, "RSA") == 0)
        k = EVP_PKEY_Q_keygen(kg_libctx(), NULL, "RSA", (size_t)atoi(param));
    else
        k = EVP_PKEY_Q_keygen(kg_libctx(), NULL, "EC", param);
    assert_non_null(k);
    return k;
}

static void roundtrip(void **state)
{
    static const struct {
        const char *alg, *param;
    } keys[] = {{"RSA", "2048"}, {"EC", "P-256"}, {"EC", "P-384"}};
    for (size_t i = 0; i < 3; i++) {
        EVP_PKEY *k = gen(keys[i].alg, keys[i].param);
        kg_keyref ref, back;
        kg_err e;
        char *pem = NULL;
        memset(&ref, 0, sizeof(ref));
        strcpy(ref.key_id, "3fa85f64-5717-4562-b3fc-2c963f66afa6");
        strcpy(ref.kbs_url, "https://kbs.example:9443");
        strcpy(ref.kbs_type, "intel");
        strcpy(ref.description, "web front end");
        assert_int_equal(kg_keyref_set_pubkey(&ref, k, &e), 1);
        assert_int_equal(kg_keyref_to_pem(&ref, &pem, &e), 1);
        assert_non_null(strstr(pem, "-----BEGIN KEYGATE KEY REFERENCE-----"));
        assert_int_equal(kg_keyref_from_pem(pem, strlen(pem), &back, &e), 1);
        assert_string_equal(back.key_id, ref.key_id);
        assert_string_equal(back.kbs_url, ref.kbs_url);
        assert_string_equal(back.kbs_type, "intel");
        assert_string_equal(back.description, "web front end");
        assert_int_equal(EVP_PKEY_eq(back.pubkey, k), 1);
        assert_int_equal(back.spki_der_len, ref.spki_der_len);
        /* optional fields really are optional */
        kg_keyref_clear(&back);
        free(pem);
        ref.kbs_url[0] = ref.kbs_type[0] = ref.description[0] = '\0';
        assert_int_equal(kg_keyref_to_pem(&ref, &pem, &e), 1);
        assert_int_equal(kg_keyref_from_pem(pem, strlen(pem), &back, &e), 1);
        assert_string_equal(back.kbs_url, "");
        kg_keyref_clear(&back);
        kg_keyref_clear(&ref);
        free(pem);
        EVP_PKEY_free(k);
    }
}

static void with_other_pem_blocks(void **state)
{
    EVP_PKEY *k = gen("EC", "P-256");
    kg_keyref ref, back;
    kg_err e;
    char *pem = NULL, buf[8192];
    memset(&ref, 0, sizeof(ref));
    strcpy(ref.key_id, "trustee-repo/tls/web");
    strcpy(ref.kbs_type, "trustee");
    assert_int_equal(kg_keyref_set_pubkey(&ref, k, &e), 1);
    assert_int_equal(kg_keyref_to_pem(&ref, &pem, &e), 1);
    /* a certificate-like block before it and DH params after (haproxy bundles) */
    snprintf(buf, sizeof(buf),
             "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n%s"
             "-----BEGIN DH PARAMETERS-----\nAAAA\n-----END DH PARAMETERS-----\n",
             pem);
    assert_int_equal(kg_keyref_from_pem(buf, strlen(buf), &back, &e), 1);
    assert_string_equal(back.key_id, "trustee-repo/tls/web");
    kg_keyref_clear(&back);
    /* two references in one file are ambiguous */
    snprintf(buf, sizeof(buf), "%s%s", pem, pem);
    assert_int_equal(kg_keyref_from_pem(buf, strlen(buf), &back, &e), 0);
    assert_non_null(strstr(e.msg, "more than one"));
    kg_keyref_clear(&ref);
    free(pem);
    EVP_PKEY_free(k);
}

static void expect_der_error(const uint8_t *der, size_t len, const char *needle)
{
    kg_keyref ref;
    kg_err e;
    kg_err_clear(&e);
    assert_int_equal(kg_keyref_from_der(der, len, &ref, &e), 0);
    assert_null(ref.pubkey);
    if (strstr(e.msg, needle) == NULL)
        fail_msg("'%s' not in '%s'", needle, e.msg);
}

static void rejects_bad_references(void **state)
{
    EVP_PKEY *k = gen("EC", "P-256"), *small = gen("RSA", "1024");
    kg_keyref ref;
    kg_err e;
    uint8_t *der = NULL;
    size_t len = 0;

    memset(&ref, 0, sizeof(ref));
    strcpy(ref.key_id, "3fa85f64-5717-4562-b3fc-2c963f66afa6");
    assert_int_equal(kg_keyref_set_pubkey(&ref, k, &e), 1);
    assert_int_equal(kg_keyref_to_der(&ref, &der, &len, &e), 1);
    /* every truncation fails cleanly */
    for (size_t n = 0; n < len; n++)
        expect_der_error(der, n, "key reference");
    /* trailing bytes */
    {
        uint8_t *more = malloc(len + 1);
        memcpy(more, der, len);
        more[len] = 0;
        expect_der_error(more, len + 1, "trailing bytes");
        free(more);
    }
    /* every single-byte change either parses to a fully checked reference or fails cleanly */
    for (size_t i = 0; i < len; i++) {
        kg_keyref r2;
        uint8_t saved = der[i];
        der[i] ^= 0x41;
        if (kg_keyref_from_der(der, len, &r2, &e))
            kg_keyref_clear(&r2);
        der[i] = saved;
    }
    free(der);
    kg_keyref_clear(&ref);

    /* bad key ids and unsupported keys are refused at set/parse time */
    memset(&ref, 0, sizeof(ref));
    assert_int_equal(kg_keyref_set_pubkey(&ref, small, &e), 0);
    assert_non_null(strstr(e.msg, "RSA-1024"));
    assert_int_equal(kg_keyref_key_id_ok("3fa85f64-5717-4562-b3fc-2c963f66afa6", "intel"), 1);
    assert_int_equal(kg_keyref_key_id_ok("3fa85f64-5717-1562-b3fc-2c963f66afa6", "intel"), 0); /* not v4 */
    assert_int_equal(kg_keyref_key_id_ok("../../etc/passwd", "intel"), 0);
    assert_int_equal(kg_keyref_key_id_ok("repo/type/tag", "trustee"), 1);
    assert_int_equal(kg_keyref_key_id_ok("repo/../tag", "trustee"), 0); /* no path traversal in URLs */
    assert_int_equal(kg_keyref_key_id_ok("./type/tag", "trustee"), 0);
    assert_int_equal(kg_keyref_key_id_ok("repo//tag", "trustee"), 0);
    assert_int_equal(kg_keyref_key_id_ok("repo/type/tag/x", "trustee"), 0);
    {
        const char *no_block = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        assert_int_equal(kg_keyref_from_pem(no_block, strlen(no_block), &ref, &e), 0);
        assert_non_null(strstr(e.msg, "no KEYGATE KEY REFERENCE block"));
    }
    assert_int_equal(kg_keyref_load("/nonexistent.ref.pem", &ref, &e), 0);
    assert_non_null(strstr(e.msg, "/nonexistent.ref.pem"));
    EVP_PKEY_free(k);
    EVP_PKEY_free(small);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(roundtrip),
        cmocka_unit_test(with_other_pem_blocks),
        cmocka_unit_test(rejects_bad_references),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
