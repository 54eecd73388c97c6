/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A lease's prepared objects (issue 21) with real OpenSSL signing contexts: they follow the key
 * through a refresh (a new key gets new ones, one built from the old key is refused), and a wipe,
 * the lease's end or its free drops them before the key, so nothing prepared keeps a wiped key
 * alive. "Freed" is observed through an EVP_PKEY ex_data free callback, i.e. the last reference.
 */
#include "kg_test.h"

#include <openssl/evp.h>
#include <openssl/x509.h>
#include <string.h>
#include <unistd.h>

#include "kg_config.h"
#include "kg_lease.h"
#include "kg_libctx.h"

#define TAG "md:SHA256"

static int freed_idx = -1;

static void on_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
    if (ptr != NULL)
        *(int *)ptr = 1;
}

/* A new P-256 key whose *freed becomes 1 when its last reference goes. */
static EVP_PKEY *tracked_key(int *freed)
{
    EVP_PKEY *k = EVP_PKEY_Q_keygen(kg_libctx(), NULL, "EC", "P-256");

    assert_non_null(k);
    if (freed_idx < 0)
        freed_idx = EVP_PKEY_get_ex_new_index(0, NULL, NULL, NULL, on_free);
    *freed = 0;
    assert_int_equal(EVP_PKEY_set_ex_data(k, freed_idx, freed), 1);
    return k;
}

/* key's public half, as a separate object */
static EVP_PKEY *public_of(EVP_PKEY *key)
{
    unsigned char *der = NULL;
    const unsigned char *p;
    int len = i2d_PUBKEY(key, &der);
    EVP_PKEY *pub;

    assert_true(len > 0);
    p = der;
    pub = d2i_PUBKEY_ex(NULL, &p, len, kg_libctx(), NULL);
    OPENSSL_free(der);
    assert_non_null(pub);
    return pub;
}

static kg_lease *new_lease(long lease_s)
{
    kg_config cfg;
    kg_keyref ref;
    kg_lease *lease;

    kg_config_defaults(&cfg);
    cfg.key_lease_s = lease_s;
    memset(&ref, 0, sizeof(ref));
    strcpy(ref.key_id, "prep-test");
    assert_non_null(lease = kg_lease_new(&ref, &cfg));
    return lease;
}

static void free_md(void *obj)
{
    EVP_MD_CTX_free(obj);
}

/* What the provider publishes: a digest-sign context initialised once on key. */
static kg_lease_prep *prepared(EVP_PKEY *key)
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    kg_lease_prep *p;

    assert_non_null(md);
    assert_int_equal(EVP_DigestSignInit_ex(md, NULL, "SHA256", kg_libctx(), NULL, key, NULL), 1);
    assert_non_null(p = kg_lease_prep_new(TAG, md, free_md));
    return p;
}

/* Signs msg with a copy of the prepared context (as an operation does); returns the length. */
static size_t sign_copy(kg_lease_prep *p, unsigned char *sig, size_t len)
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();

    assert_int_equal(EVP_MD_CTX_copy_ex(md, kg_lease_prep_obj(p)), 1);
    assert_int_equal(EVP_DigestSign(md, sig, &len, (const unsigned char *)"msg", 3), 1);
    EVP_MD_CTX_free(md);
    return len;
}

static int verifies(EVP_PKEY *key, const unsigned char *sig, size_t len)
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    int ok = EVP_DigestVerifyInit_ex(md, NULL, "SHA256", kg_libctx(), NULL, key, NULL) == 1 &&
             EVP_DigestVerify(md, sig, len, (const unsigned char *)"msg", 3) == 1;

    EVP_MD_CTX_free(md);
    return ok;
}

/* Acquires with TAG: the key (checked) and the prepared object (or NULL). */
static kg_lease_prep *acquire(kg_lease *lease, EVP_PKEY *expect)
{
    EVP_PKEY *k = NULL;
    kg_lease_prep *p = NULL;
    kg_err err;

    assert_int_equal(kg_lease_acquire_prep(lease, 0, TAG, &k, &p, &err), KG_LEASE_OK);
    assert_ptr_equal(k, expect);
    EVP_PKEY_free(k);
    return p;
}

static void refresh_installs_new_prepared_contexts(void **state)
{
    int a_freed, b_freed;
    EVP_PKEY *a = tracked_key(&a_freed), *b = tracked_key(&b_freed), *a_pub = public_of(a);
    kg_lease *lease = new_lease(600);
    kg_lease_prep *pa, *stale, *pb, *got;
    unsigned char sig[128];
    size_t len;

    assert_int_equal(kg_lease_install(lease, a), 1);
    assert_null(acquire(lease, a)); /* nothing prepared yet */
    pa = prepared(a);
    assert_int_equal(kg_lease_prep_publish(lease, a, pa), 1);
    assert_int_equal(kg_lease_prep_publish(lease, a, pa), 0); /* the tag is taken */
    kg_lease_prep_free(pa);
    got = acquire(lease, a);
    assert_ptr_equal(got, pa);
    kg_lease_prep_free(got);

    /* a refresh installs another key: A's prepared context goes with A */
    stale = prepared(a); /* built by an operation that acquired A before the refresh */
    assert_int_equal(kg_lease_install(lease, b), 1);
    assert_null(acquire(lease, b));
    assert_int_equal(kg_lease_prep_publish(lease, a, stale), 0); /* refused: A is not the key */
    kg_lease_prep_free(stale);
    EVP_PKEY_free(a);
    assert_int_equal(a_freed, 1); /* no prepared context kept it */

    pb = prepared(b);
    assert_int_equal(kg_lease_prep_publish(lease, b, pb), 1);
    kg_lease_prep_free(pb);
    got = acquire(lease, b);
    assert_ptr_equal(got, pb);
    len = sign_copy(got, sig, sizeof(sig));
    kg_lease_prep_free(got);
    assert_int_equal(verifies(b, sig, len), 1);
    assert_int_equal(verifies(a_pub, sig, len), 0); /* signed by the new key, not the old one */
    EVP_PKEY_free(a_pub);

    EVP_PKEY_free(b);
    assert_int_equal(b_freed, 0);
    kg_lease_free(lease);
    assert_int_equal(b_freed, 1);
}

static void wipe_frees_prepared_contexts_first(void **state)
{
    int a_freed, c_freed;
    EVP_PKEY *a = tracked_key(&a_freed), *c = tracked_key(&c_freed), *k = NULL;
    kg_lease *lease = new_lease(600);
    kg_lease_prep *p, *held = NULL;
    EVP_MD_CTX *op;
    unsigned char sig[128];
    size_t len = sizeof(sig);
    kg_err err;

    /* no operation in flight: the wipe frees the key at once */
    assert_int_equal(kg_lease_install(lease, a), 1);
    p = prepared(a);
    assert_int_equal(kg_lease_prep_publish(lease, a, p), 1);
    kg_lease_prep_free(p);
    EVP_PKEY_free(a); /* only the lease and its prepared context hold A */
    assert_int_equal(a_freed, 0);
    kg_lease_wipe(lease, "test");
    assert_int_equal(a_freed, 1);
    assert_int_equal(kg_lease_acquire_prep(lease, 0, TAG, &k, &held, &err), KG_LEASE_EMPTY);
    assert_null(k);
    assert_null(held);

    /* an operation that copied the prepared context just before the wipe: the last reference
     * is its own, and goes when it ends; it never reaches the lease again */
    assert_int_equal(kg_lease_install(lease, c), 1);
    p = prepared(c);
    assert_int_equal(kg_lease_prep_publish(lease, c, p), 1);
    kg_lease_prep_free(p);
    EVP_PKEY_free(c);
    assert_int_equal(kg_lease_acquire_prep(lease, 0, TAG, &k, &held, &err), KG_LEASE_OK);
    assert_non_null(held);
    op = EVP_MD_CTX_new();
    assert_int_equal(EVP_MD_CTX_copy_ex(op, kg_lease_prep_obj(held)), 1);
    kg_lease_prep_free(held);
    kg_lease_wipe(lease, "test");
    assert_int_equal(c_freed, 0);
    assert_int_equal(EVP_DigestSign(op, sig, &len, (const unsigned char *)"msg", 3), 1);
    EVP_MD_CTX_free(op);
    assert_int_equal(c_freed, 0); /* the operation's key reference */
    EVP_PKEY_free(k);
    assert_int_equal(c_freed, 1);
    assert_int_equal(kg_lease_acquire_prep(lease, 0, TAG, &k, &held, &err), KG_LEASE_EMPTY);
    assert_null(held);
    kg_lease_free(lease);
}

static void lease_end_frees_prepared_contexts(void **state)
{
    int a_freed;
    EVP_PKEY *a = tracked_key(&a_freed), *k = NULL;
    kg_lease *lease = new_lease(1);
    kg_lease_prep *p, *held = NULL;
    kg_err err;

    assert_int_equal(kg_lease_install(lease, a), 1);
    p = prepared(a);
    assert_int_equal(kg_lease_prep_publish(lease, a, p), 1);
    kg_lease_prep_free(p);
    EVP_PKEY_free(a);
    usleep(1100 * 1000);
    assert_int_equal(kg_lease_acquire_prep(lease, 0, TAG, &k, &held, &err), KG_LEASE_EMPTY);
    assert_null(held);
    assert_int_equal(a_freed, 1);
    kg_lease_free(lease);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(refresh_installs_new_prepared_contexts),
        cmocka_unit_test(wipe_frees_prepared_contexts_first),
        cmocka_unit_test(lease_end_frees_prepared_contexts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
