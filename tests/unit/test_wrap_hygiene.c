/* SPDX-License-Identifier: Apache-2.0 */
/*
 * No copy of a released private key is freed uncleared into ordinary heap by the parse.
 *
 * OpenSSL's allocator is replaced (CRYPTO_set_mem_functions, before anything is allocated) by one
 * that looks into every block it frees or moves: a block that still holds the private bytes
 * (RSA d, p, q or the EC scalar, big-endian as in DER and little-endian as BIGNUM limbs) counts
 * as a leak, since freed ordinary heap keeps its contents until reused (the lease test's memory
 * scan found such a copy of p: OpenSSL's PrivateKeyInfo decoder frees its DER buffer without
 * clearing it). The released DER sits in the secure heap, as kg_wrap_unwrap leaves it.
 */
#define _GNU_SOURCE
#include "kg_test.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <string.h>

#include "kg_libctx.h"
#include "kg_wrap.h"

#define HDR 16 /* keeps malloc's 16-byte alignment */
#define WINDOW 16

static uint8_t needles[8][WINDOW];
static int n_needles, armed, leaks;

static void look_into(const void *block, size_t n, const char *file, int line)
{
    for (int i = 0; armed && i < n_needles; i++)
        if (memmem(block, n, needles[i], WINDOW) != NULL) {
            if (getenv("KG_TEST_VERBOSE") != NULL)
                fprintf(stderr, "needle %d in a %zu-byte block freed at %s:%d\n", i, n, file, line);
            leaks++;
        }
}

static void *hook_malloc(size_t n, const char *file, int line)
{
    uint8_t *b = malloc(n + HDR);
    (void)file;
    (void)line;
    if (b == NULL)
        return NULL;
    memcpy(b, &n, sizeof(n));
    return b + HDR;
}

static void hook_free(void *ptr, const char *file, int line)
{
    uint8_t *b;
    size_t n;
    if (ptr == NULL)
        return;
    b = (uint8_t *)ptr - HDR;
    memcpy(&n, b, sizeof(n));
    look_into(ptr, n, file, line);
    /* only the first free of a copy counts: a later block that reuses this memory must not */
    OPENSSL_cleanse(b, n + HDR);
    free(b);
}

static void *hook_realloc(void *ptr, size_t n, const char *file, int line)
{
    uint8_t *moved;
    size_t old;
    if (ptr == NULL)
        return hook_malloc(n, file, line);
    if ((moved = hook_malloc(n, file, line)) == NULL)
        return NULL;
    memcpy(&old, (uint8_t *)ptr - HDR, sizeof(old));
    memcpy(moved, ptr, old < n ? old : n);
    hook_free(ptr, file, line);
    return moved;
}

/* A window from the middle of bn, big-endian and reversed (little-endian limbs on x86-64). */
static void add_needles(const EVP_PKEY *k, const char *param)
{
    BIGNUM *bn = NULL;
    uint8_t be[512];
    int len;

    assert_true(EVP_PKEY_get_bn_param(k, param, &bn));
    len = BN_bn2bin(bn, be);
    BN_clear_free(bn);
    assert_true(len >= 2 * WINDOW);
    memcpy(needles[n_needles++], be + len / 2, WINDOW);
    for (int i = 0; i < WINDOW; i++)
        needles[n_needles][i] = be[len / 2 + WINDOW - 1 - i];
    n_needles++;
    OPENSSL_cleanse(be, sizeof(be));
}

/* der (ordinary heap, freed here) moved into the secure heap. */
static uint8_t *to_secure(uint8_t *der, int len)
{
    uint8_t *s = OPENSSL_secure_malloc((size_t)len);
    assert_non_null(s);
    assert_true(CRYPTO_secure_allocated(s));
    memcpy(s, der, (size_t)len);
    OPENSSL_clear_free(der, (size_t)len);
    return s;
}

/* Parse each DER form of a fresh key of (type, arg) with the allocator armed, use and free it. */
static void parse_leaves_no_copy(const char *type, const char *arg)
{
    EVP_PKEY *k = strcmp(type, "RSA") == 0 ? EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)atoi(arg))
                                           : EVP_PKEY_Q_keygen(NULL, NULL, "EC", arg);
    PKCS8_PRIV_KEY_INFO *p8 = EVP_PKEY2PKCS8(k);
    uint8_t *forms[2] = {NULL, NULL};
    int lens[2];

    assert_non_null(p8);
    lens[0] = i2d_PKCS8_PRIV_KEY_INFO(p8, &forms[0]);
    lens[1] = i2d_PrivateKey(k, &forms[1]); /* PKCS#1 / SEC1 */
    PKCS8_PRIV_KEY_INFO_free(p8);           /* clears its key octets */
    assert_true(lens[0] > 0 && lens[1] > 0);
    n_needles = 0;
    if (strcmp(type, "RSA") == 0) {
        add_needles(k, OSSL_PKEY_PARAM_RSA_D);
        add_needles(k, OSSL_PKEY_PARAM_RSA_FACTOR1);
        add_needles(k, OSSL_PKEY_PARAM_RSA_FACTOR2);
    } else {
        add_needles(k, OSSL_PKEY_PARAM_PRIV_KEY);
    }
    for (int f = 0; f < 2; f++) {
        uint8_t *der = to_secure(forms[f], lens[f]);
        EVP_PKEY *out = NULL;
        EVP_PKEY_CTX *sctx;
        uint8_t sig[512];
        size_t sig_len = sizeof(sig);
        kg_err e;

        leaks = 0;
        armed = 1;
        assert_int_equal(kg_wrap_parse_private_key(der, (size_t)lens[f], NULL, &out, &e), 1);
        assert_int_equal(EVP_PKEY_eq(out, k), 1);
        sctx = EVP_PKEY_CTX_new_from_pkey(kg_libctx(), out, NULL);
        assert_true(EVP_PKEY_sign_init(sctx) > 0);
        assert_true(
            EVP_PKEY_sign(sctx, sig, &sig_len, (const uint8_t *)"0123456789abcdef0123456789abcdef", 32) > 0);
        EVP_PKEY_CTX_free(sctx);
        EVP_PKEY_free(out);
        armed = 0;
        OPENSSL_secure_clear_free(der, (size_t)lens[f]);
        if (leaks != 0)
            fail_msg("%s %s, %s: %d freed ordinary-heap blocks held private key bytes", type, arg,
                     f == 0 ? "PKCS#8" : "PKCS#1/SEC1", leaks);
    }
    EVP_PKEY_free(k);
}

static void rsa_2048(void **state)
{
    parse_leaves_no_copy("RSA", "2048");
}
static void rsa_3072(void **state)
{
    parse_leaves_no_copy("RSA", "3072");
}
static void ec_p256(void **state)
{
    parse_leaves_no_copy("EC", "P-256");
}
static void ec_p384(void **state)
{
    parse_leaves_no_copy("EC", "P-384");
}

int main(void)
{
    int rc;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(rsa_2048),
        cmocka_unit_test(rsa_3072),
        cmocka_unit_test(ec_p256),
        cmocka_unit_test(ec_p384),
    };
    /* before OpenSSL allocates anything */
    if (!CRYPTO_set_mem_functions(hook_malloc, hook_realloc, hook_free))
        return 2;
    if (!CRYPTO_secure_malloc_init(256 * 1024, 32))
        return 2;
    rc = cmocka_run_group_tests(tests, NULL, NULL);
    /* kg_libctx's DRBGs live in the secure heap, which LeakSanitizer does not scan: what they
     * point to would be reported as leaked at exit */
    kg_libctx_cleanup();
    return rc;
}
