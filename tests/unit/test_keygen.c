/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kg_keygen: the wrapping key generated on a thread of its own during the release's network.
 * Every path ends with the thread joined and nothing leaked (the ASan tree checks leaks).
 */
#include "kg_test.h"

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <string.h>

#include "kg_keygen.h"
#include "kg_wrap.h"

static void joins_an_rsa_3072_wrapping_key(void **state)
{
    kg_keygen *g;
    EVP_PKEY *key = NULL;
    double start = -1, end = -1;
    kg_err err;

    (void)state;
    kg_err_clear(&err);
    g = kg_keygen_start(NULL, NULL, &err);
    assert_non_null(g);
    assert_int_equal(kg_keygen_join(g, &key, &start, &end, &err), 1);
    assert_non_null(key);
    assert_true(EVP_PKEY_is_a(key, "RSA"));
    assert_int_equal(EVP_PKEY_get_bits(key), KG_WRAP_RSA_BITS);
    assert_true(start > 0 && end > start);
    EVP_PKEY_free(key);
}

static void generates_the_trustee_tee_key_kinds(void **state)
{
    kg_keygen *g;
    EVP_PKEY *key = NULL;
    char group[32];
    kg_err err;

    (void)state;
    g = kg_keygen_start("ec", NULL, &err);
    assert_non_null(g);
    assert_int_equal(kg_keygen_join(g, &key, NULL, NULL, &err), 1);
    assert_true(EVP_PKEY_is_a(key, "EC"));
    assert_true(EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group), NULL));
    assert_string_equal(group, "prime256v1");
    EVP_PKEY_free(key);
}

/* A cancelled release (lease teardown) stops the prime search: the join reports it, step 11. */
static void a_cancelled_generation_fails_with_its_step(void **state)
{
    int cancel = 1;
    kg_keygen *g;
    EVP_PKEY *key = (EVP_PKEY *)&cancel; /* must be reset */
    kg_err err;

    (void)state;
    kg_err_clear(&err);
    g = kg_keygen_start(NULL, &cancel, &err);
    assert_non_null(g);
    assert_int_equal(kg_keygen_join(g, &key, NULL, NULL, &err), 0);
    assert_null(key);
    assert_int_equal(err.step, KG_STEP_WRAPKEY);
    assert_non_null(strstr(err.msg, "wrapping-key: RSA-3072 key generation stopped (cancelled)"));
}

/* Cancelled while the thread searches (set after the start): the same error, the thread joined. */
static void a_generation_cancelled_while_running_stops(void **state)
{
    int cancel = 0;
    kg_keygen *g;
    EVP_PKEY *key = NULL;
    kg_err err;

    (void)state;
    g = kg_keygen_start(NULL, &cancel, &err);
    assert_non_null(g);
    __atomic_store_n(&cancel, 1, __ATOMIC_RELEASE);
    assert_int_equal(kg_keygen_join(g, &key, NULL, NULL, &err), 0);
    assert_null(key);
    assert_int_equal(err.step, KG_STEP_WRAPKEY);
}

/* The nonce failed: the generation is given up, its thread joined, its key (if any) freed. */
static void abandoning_joins_and_frees(void **state)
{
    kg_err err;

    (void)state;
    for (int i = 0; i < 4; i++) {
        kg_keygen *g = kg_keygen_start(i % 2 ? "rsa" : NULL, NULL, &err);
        assert_non_null(g);
        kg_keygen_abandon(g);
    }
    {
        /* a finished generation abandoned: the key is freed (ASan: no leak) */
        kg_keygen *g = kg_keygen_start("ec", NULL, &err);
        assert_non_null(g);
        kg_keygen_abandon(g);
    }
    kg_keygen_abandon(NULL);
}

/* A key made ahead (a lease refresh's spare): the join hands it over at once. */
static void a_ready_key_is_handed_over(void **state)
{
    EVP_PKEY *made, *key = NULL;
    double start = -1, end = -1;
    kg_keygen *g;
    kg_err err;

    (void)state;
    made = kg_wrap_key_generate("ec", NULL, &err);
    assert_non_null(made);
    g = kg_keygen_ready(made, &err);
    assert_non_null(g);
    assert_int_equal(kg_keygen_join(g, &key, &start, &end, &err), 1);
    assert_ptr_equal(key, made);
    assert_true(start > 0 && start == end);
    EVP_PKEY_free(key);
    /* and abandoned: freed with the handle */
    made = kg_wrap_key_generate("ec", NULL, &err);
    assert_non_null(made);
    kg_keygen_abandon(kg_keygen_ready(made, &err));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(joins_an_rsa_3072_wrapping_key),
        cmocka_unit_test(generates_the_trustee_tee_key_kinds),
        cmocka_unit_test(a_cancelled_generation_fails_with_its_step),
        cmocka_unit_test(a_generation_cancelled_while_running_stops),
        cmocka_unit_test(abandoning_joins_and_frees),
        cmocka_unit_test(a_ready_key_is_handed_over),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
