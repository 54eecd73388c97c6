/* SPDX-License-Identifier: Apache-2.0 */
/*
 * teardown_check: a host that unloads keygate while a key's lease refresh runs (issue 17, #3).
 * Built and driven by tests/integration/test_teardown.py.
 *
 *   teardown_check p11 MODULE LABEL N WAIT_MS
 *       N times: dlopen the module, C_Initialize, sign with the private key LABEL (the release),
 *       WAIT_MS into the refresh window, sign again (which starts the background refresh),
 *       C_Finalize, dlclose.
 *   teardown_check provider OPENSSL_CNF REF N WAIT_MS
 *       the same through the provider: a new OSSL_LIB_CTX loading OPENSSL_CNF (default + keygate),
 *       PEM_read_bio_PrivateKey_ex of the reference REF, two ECDSA/RSA signatures,
 *       OSSL_PROVIDER_unload, OSSL_LIB_CTX_free.
 *
 * Between the release and the wait it prints "released I" and reads one line from stdin (the
 * test sets a fault in the stand-ins there, e.g. a KBS that answers the refresh after 30 s).
 * After each teardown it prints "finalized I ms=<teardown time> mapped=<0|1>", mapped saying
 * whether the module is still in /proc/self/maps (it must be gone: unloaded for real). Exits 1
 * with "FAIL ..." on any failed call.
 */
#include <dlfcn.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/provider.h>
#include <p11-kit/pkcs11.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* a failed check also prints OpenSSL's error queue (the provider half) */
#define P11_HOST_ON_FAIL() ERR_print_errors_fp(stderr)
#include "p11_host.h"

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* 1 when a mapping of this process names a file whose name contains needle. */
static int mapped(const char *needle)
{
    char line[4096];
    FILE *fp = fopen("/proc/self/maps", "r");
    int found = 0;

    CHECK(fp != NULL, "open /proc/self/maps");
    while (!found && fgets(line, sizeof(line), fp) != NULL)
        found = strstr(line, needle) != NULL;
    fclose(fp);
    return found;
}

static void wait_for_go(int i)
{
    char line[64];

    printf("released %d\n", i);
    fflush(stdout);
    CHECK(fgets(line, sizeof(line), stdin) != NULL, "no go line on stdin");
}

/* ------------------------------------------------------------------------------------ PKCS#11 */

static CK_RV p11_sign(CK_FUNCTION_LIST *f, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE key, CK_KEY_TYPE type)
{
    CK_MECHANISM m = {type == CKK_EC ? CKM_ECDSA_SHA256 : CKM_SHA256_RSA_PKCS, NULL, 0};
    unsigned char msg[] = "teardown", sig[1024];
    CK_ULONG len = sizeof(sig);
    CK_RV rv;

    if ((rv = f->C_SignInit(s, &m, key)) != CKR_OK)
        return rv;
    return f->C_Sign(s, msg, sizeof(msg) - 1, sig, &len);
}

static int run_p11(const char *module, const char *label, int n, long wait_ms)
{
    const char *base = strrchr(module, '/') ? strrchr(module, '/') + 1 : module;

    for (int i = 0; i < n; i++) {
        CK_C_GetFunctionList get;
        CK_C_INITIALIZE_ARGS args = {.flags = CKF_OS_LOCKING_OK};
        CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
        CK_ATTRIBUTE tmpl[] = {{CKA_CLASS, &cls, sizeof(cls)}, {CKA_LABEL, (void *)label, strlen(label)}};
        CK_KEY_TYPE type;
        CK_ATTRIBUTE ta = {CKA_KEY_TYPE, &type, sizeof(type)};
        CK_SESSION_HANDLE s;
        CK_OBJECT_HANDLE key;
        CK_ULONG found = 0;
        CK_RV rv;
        void *lib;
        double t0, t1;

        CHECK((lib = dlopen(module, RTLD_NOW | RTLD_LOCAL)) != NULL, "dlopen: %s", dlerror());
        CHECK((get = (CK_C_GetFunctionList)dlsym(lib, "C_GetFunctionList")) != NULL, "dlsym");
        CHECK(get(&f) == CKR_OK, "C_GetFunctionList");
        CHECK((rv = f->C_Initialize(&args)) == CKR_OK, "C_Initialize rv=0x%lx", rv);
        CHECK(f->C_OpenSession(1, CKF_SERIAL_SESSION, NULL, NULL, &s) == CKR_OK, "C_OpenSession");
        CHECK(f->C_FindObjectsInit(s, tmpl, 2) == CKR_OK && f->C_FindObjects(s, &key, 1, &found) == CKR_OK &&
                  f->C_FindObjectsFinal(s) == CKR_OK && found == 1,
              "key %s not found", label);
        CHECK(f->C_GetAttributeValue(s, key, &ta, 1) == CKR_OK, "CKA_KEY_TYPE");
        CHECK((rv = p11_sign(f, s, key, type)) == CKR_OK, "first sign (release) rv=0x%lx", rv);
        wait_for_go(i);
        sleep_ms(wait_ms);
        CHECK((rv = p11_sign(f, s, key, type)) == CKR_OK, "sign in the refresh window rv=0x%lx", rv);
        sleep_ms(150); /* the refresh thread is now in its attestation (or waiting on the KBS) */
        t0 = now_ms();
        CHECK((rv = f->C_Finalize(NULL)) == CKR_OK, "C_Finalize rv=0x%lx", rv);
        t1 = now_ms();
        CHECK(dlclose(lib) == 0, "dlclose: %s", dlerror());
        printf("finalized %d ms=%.0f mapped=%d\n", i, t1 - t0, mapped(base));
        fflush(stdout);
    }
    return 0;
}

/* ----------------------------------------------------------------------------------- provider */

static void provider_sign(OSSL_LIB_CTX *libctx, EVP_PKEY *pkey)
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    unsigned char sig[1024];
    size_t len = sizeof(sig);

    CHECK(md != NULL && EVP_DigestSignInit_ex(md, NULL, "SHA256", libctx, NULL, pkey, NULL) == 1 &&
              EVP_DigestSign(md, sig, &len, (const unsigned char *)"teardown", 8) == 1,
          "provider signature");
    EVP_MD_CTX_free(md);
}

static int run_provider(const char *cnf, const char *ref, int n, long wait_ms)
{
    for (int i = 0; i < n; i++) {
        OSSL_LIB_CTX *libctx = OSSL_LIB_CTX_new();
        OSSL_PROVIDER *prov;
        EVP_PKEY *pkey = NULL;
        BIO *bio;
        double t0, t1;

        CHECK(libctx != NULL && OSSL_LIB_CTX_load_config(libctx, cnf) == 1, "load %s", cnf);
        /* one more activation of the configured provider, undone by OSSL_PROVIDER_unload below */
        CHECK((prov = OSSL_PROVIDER_load(libctx, "keygate")) != NULL, "OSSL_PROVIDER_load keygate");
        CHECK((bio = BIO_new_file(ref, "r")) != NULL, "open %s", ref);
        pkey = PEM_read_bio_PrivateKey_ex(bio, NULL, NULL, NULL, libctx, NULL);
        BIO_free(bio);
        CHECK(pkey != NULL, "load the reference (release)");
        provider_sign(libctx, pkey);
        wait_for_go(i);
        sleep_ms(wait_ms);
        provider_sign(libctx, pkey); /* starts the refresh */
        sleep_ms(150);
        t0 = now_ms();
        EVP_PKEY_free(pkey);
        CHECK(OSSL_PROVIDER_unload(prov) == 1, "OSSL_PROVIDER_unload");
        OSSL_LIB_CTX_free(libctx); /* the last activation: teardown, then dlclose */
        t1 = now_ms();
        printf("finalized %d ms=%.0f mapped=%d\n", i, t1 - t0, mapped("/keygate.so"));
        fflush(stdout);
    }
    return 0;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc == 6 && strcmp(argv[1], "p11") == 0)
        return run_p11(argv[2], argv[3], atoi(argv[4]), atol(argv[5]));
    if (argc == 6 && strcmp(argv[1], "provider") == 0)
        return run_provider(argv[2], argv[3], atoi(argv[4]), atol(argv[5]));
    fprintf(stderr,
            "usage: teardown_check p11 MODULE LABEL N WAIT_MS | provider OPENSSL_CNF REF N WAIT_MS\n");
    return 2;
}
