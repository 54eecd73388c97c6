/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What a process-default ENGINE does to keygate's crypto in its private OSSL_LIB_CTX: the C
 * reproducer behind tests/integration/test_engine_isolation.py and docs/pkcs11.md (nginx).
 *
 * An in-process ENGINE registers counting copies of OpenSSL's built-in EC and RSA pkey methods
 * and is made the default for them (ENGINE_set_default, as nginx's `ssl_engine` and the openssl
 * apps' `-engine` do; libcurl's OPENSSL_init_ssl(OPENSSL_INIT_ENGINE_ALL_BUILTIN) registers every
 * configured ENGINE the same way). Every EVP_PKEY_CTX that ends up on the engine runs its init
 * method, which counts.
 */
#define OPENSSL_SUPPRESS_DEPRECATED /* the ENGINE API is the subject of this test */
#include "kg_test.h"

#include <openssl/core_names.h>
#include <openssl/engine.h>
#include <openssl/evp.h>
#include <openssl/provider.h>
#include <string.h>

#include "kg_libctx.h"

static int engine_ctx_count;
static EVP_PKEY_METHOD *ec_meth, *rsa_meth;
static int (*ec_init)(EVP_PKEY_CTX *), (*rsa_init)(EVP_PKEY_CTX *);
static const int engine_nids[] = {EVP_PKEY_EC, EVP_PKEY_RSA};

static int counting_ec_init(EVP_PKEY_CTX *ctx)
{
    engine_ctx_count++;
    return ec_init != NULL ? ec_init(ctx) : 1;
}

static int counting_rsa_init(EVP_PKEY_CTX *ctx)
{
    engine_ctx_count++;
    return rsa_init != NULL ? rsa_init(ctx) : 1;
}

static int engine_pkey_meths(ENGINE *e, EVP_PKEY_METHOD **pmeth, const int **nids, int nid)
{
    (void)e;
    if (pmeth == NULL) {
        *nids = engine_nids;
        return 2;
    }
    *pmeth = nid == EVP_PKEY_EC ? ec_meth : nid == EVP_PKEY_RSA ? rsa_meth : NULL;
    return *pmeth != NULL;
}

static EVP_PKEY_METHOD *counting_copy(int nid, int (**orig_init)(EVP_PKEY_CTX *), int (*init)(EVP_PKEY_CTX *))
{
    const EVP_PKEY_METHOD *builtin = EVP_PKEY_meth_find(nid);
    EVP_PKEY_METHOD *m = EVP_PKEY_meth_new(nid, 0);

    assert_non_null(builtin);
    assert_non_null(m);
    EVP_PKEY_meth_copy(m, builtin);
    EVP_PKEY_meth_get_init(builtin, orig_init);
    EVP_PKEY_meth_set_init(m, init);
    return m;
}

static int setup(void **state)
{
    ENGINE *e = ENGINE_new();

    (void)state;
    ec_meth = counting_copy(EVP_PKEY_EC, &ec_init, counting_ec_init);
    rsa_meth = counting_copy(EVP_PKEY_RSA, &rsa_init, counting_rsa_init);
    assert_non_null(e);
    assert_int_equal(ENGINE_set_id(e, "kgtest"), 1);
    assert_int_equal(ENGINE_set_name(e, "keygate test engine"), 1);
    assert_int_equal(ENGINE_set_pkey_meths(e, engine_pkey_meths), 1);
    assert_int_equal(ENGINE_add(e), 1);
    assert_int_equal(ENGINE_set_default(e, ENGINE_METHOD_ALL), 1);
    ENGINE_free(e); /* the engine list and the tables keep their references */
    assert_non_null(kg_libctx());
    return 0;
}

static int teardown(void **state)
{
    ENGINE *e = ENGINE_by_id("kgtest");

    (void)state;
    if (e != NULL) {
        ENGINE_unregister_pkey_meths(e); /* drops the tables' functional reference */
        ENGINE_remove(e);
        ENGINE_free(e);
    }
    /* the last ENGINE_free freed ec_meth and rsa_meth (engine_pkey_meths_free) */
    kg_libctx_cleanup();
    return 0;
}

/* The cause: a name with a legacy NID goes to the default ENGINE even in a private libctx, and
 * the context it gives is legacy (no keymgmt: fromdata is refused, keygen makes a legacy key). */
static void test_a_name_with_a_nid_goes_to_the_engine(void **state)
{
    EVP_PKEY_CTX *ctx;
    int before = engine_ctx_count;

    (void)state;
    ctx = EVP_PKEY_CTX_new_from_name(kg_libctx(), "EC", NULL);
    assert_non_null(ctx);
    assert_int_equal(engine_ctx_count, before + 1);
    assert_true(EVP_PKEY_fromdata_init(ctx) <= 0);
    EVP_PKEY_CTX_free(ctx);
}

/* The fix: kg_pkey_ctx_new_from_name fetches the provider's keymgmt by OID; keys come from the
 * default provider of kg_libctx() and the engine never sees a context. */
static void test_keygate_key_generation_stays_on_the_provider(void **state)
{
    int before = engine_ctx_count;
    EVP_PKEY *ec = kg_pkey_ec_keygen(NULL, "P-256");
    EVP_PKEY_CTX *ctx = kg_pkey_ctx_new_from_name(NULL, "RSA");
    EVP_PKEY *rsa = NULL;
    BIGNUM *priv = NULL;

    (void)state;
    assert_non_null(ec);
    assert_non_null(EVP_PKEY_get0_provider(ec));
    assert_string_equal(OSSL_PROVIDER_get0_name(EVP_PKEY_get0_provider(ec)), "default");
    assert_true(EVP_PKEY_is_a(ec, "EC"));
    assert_int_equal(EVP_PKEY_get_base_id(ec), EVP_PKEY_EC);
    assert_int_equal(EVP_PKEY_get_bn_param(ec, OSSL_PKEY_PARAM_PRIV_KEY, &priv),
                     1); /* failed under the engine */
    assert_non_null(ctx);
    assert_true(EVP_PKEY_keygen_init(ctx) > 0);
    assert_true(EVP_PKEY_CTX_set_rsa_keygen_bits(ctx, 2048) > 0);
    assert_true(EVP_PKEY_keygen(ctx, &rsa) > 0);
    assert_non_null(EVP_PKEY_get0_provider(rsa));
    assert_true(EVP_PKEY_is_a(rsa, "RSA"));
    assert_int_equal(engine_ctx_count, before);
    BN_clear_free(priv);
    EVP_PKEY_CTX_free(ctx);
    EVP_PKEY_free(rsa);
    EVP_PKEY_free(ec);
}

/* The limit (OpenSSL 3.0 int_ctx_new): a context for an operation on an existing provider key
 * takes the keymgmt's first name ("EC"), maps it to its NID and asks the ENGINE table again; no
 * public 3.0 API avoids that. Sign, verify, derive and decrypt under a default EC/RSA ENGINE
 * therefore run through that engine's legacy pkey method. If this test ever fails, OpenSSL
 * stopped doing that: update docs/pkcs11.md (nginx through the libp11 engine). */
static void test_operations_on_a_provider_key_still_reach_the_engine(void **state)
{
    EVP_PKEY *ec = kg_pkey_ec_keygen(NULL, "P-256");
    EVP_PKEY_CTX *ctx;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    int before = engine_ctx_count;

    (void)state;
    assert_non_null(ec);
    ctx = EVP_PKEY_CTX_new_from_pkey(kg_libctx(), ec, NULL);
    assert_non_null(ctx);
    assert_int_equal(engine_ctx_count, before + 1);
    EVP_PKEY_CTX_free(ctx);
    assert_non_null(md);
    assert_true(EVP_DigestSignInit_ex(md, NULL, "SHA256", kg_libctx(), NULL, ec, NULL) > 0);
    assert_int_equal(engine_ctx_count, before + 2);
    EVP_MD_CTX_free(md);
    EVP_PKEY_free(ec);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_name_with_a_nid_goes_to_the_engine),
        cmocka_unit_test(test_keygate_key_generation_stays_on_the_provider),
        cmocka_unit_test(test_operations_on_a_provider_key_still_reach_the_engine),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
