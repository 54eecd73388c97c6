/* SPDX-License-Identifier: Apache-2.0 */
/*
 * p11_client: PIN login and signing throughput, against libkeygate-pkcs11.so directly or through
 * a PKCS#11 module in front of it (p11-kit-proxy.so, p11-kit-client.so). Built and run by
 * tests/integration/test_pkcs11_pin.py and test_p11kit.py (p11_check.c does the rest).
 *
 *   p11_client MODULE wrongpin LABEL PIN  pkcs11_pin_file is set to PIN: NULL, empty and wrong
 *                                   PINs get CKR_PIN_INCORRECT and change nothing (no login, no
 *                                   key use), the token has no protected path
 *   p11_client MODULE pin LABEL PIN  the wrong PINs, then PIN logs in and signs; after C_Logout
 *                                   the key is refused, after a second C_Login it signs again
 *   p11_client MODULE bench LABEL N [PIN]  N signatures with the key's raw mechanism (after
 *                                   C_Login(PIN) when given), prints "signs=N ms=T"
 *   p11_client MODULE hold LABEL [nosigpipe]  signs once, prints "signed", waits for a line on
 *                                   stdin, signs again and prints the C_Sign result as "rv=0x..."
 *                                   (a test scans this process's memory or stops the server
 *                                   meanwhile); nosigpipe: ignore SIGPIPE first, as servers do
 *
 * Prints "ok <mode>" and exits 0 on success; prints the failed check and exits 1 otherwise.
 */
#include <dlfcn.h>
#include <signal.h>
#include <p11-kit/pkcs11.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "p11_host.h"

static CK_ULONG find(CK_SESSION_HANDLE s, CK_OBJECT_CLASS cls, const char *label, CK_OBJECT_HANDLE *out)
{
    CK_ATTRIBUTE t[] = {{CKA_CLASS, &cls, sizeof(cls)}, {CKA_LABEL, (void *)label, strlen(label)}};
    CK_ULONG n = 0;
    CHECK(f->C_FindObjectsInit(s, t, 2) == CKR_OK && f->C_FindObjects(s, out, 1, &n) == CKR_OK &&
              f->C_FindObjectsFinal(s) == CKR_OK,
          "find %s", label);
    return n;
}

/* Signs 32 bytes with the key's raw mechanism (ECDSA, RSA-PSS). Returns the first failure. */
static CK_RV sign_once(CK_SESSION_HANDLE s, CK_OBJECT_HANDLE key)
{
    CK_KEY_TYPE kt = CKK_EC;
    CK_ATTRIBUTE a = {CKA_KEY_TYPE, &kt, sizeof(kt)};
    unsigned char hash[32] = {1, 2, 3}, sig[1024];
    CK_ULONG len = sizeof(sig);
    CK_MECHANISM m = {CKM_ECDSA, NULL, 0};
    CK_RSA_PKCS_PSS_PARAMS pss = {CKM_SHA256, CKG_MGF1_SHA256, 32};
    CK_RV rv;

    if ((rv = f->C_GetAttributeValue(s, key, &a, 1)) != CKR_OK)
        return rv;
    if (kt == CKK_RSA) {
        m.mechanism = CKM_RSA_PKCS_PSS;
        m.pParameter = &pss;
        m.ulParameterLen = sizeof(pss);
    }
    if ((rv = f->C_SignInit(s, &m, key)) != CKR_OK)
        return rv;
    return f->C_Sign(s, hash, sizeof(hash), sig, &len);
}

static CK_RV login(CK_SESSION_HANDLE s, const char *pin, CK_ULONG len)
{
    return f->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR)pin, len);
}

/* The PIN's wrong neighbours, NULL and empty: each CKR_PIN_INCORRECT, nothing changes. */
static void wrong_pins(CK_SESSION_HANDLE s, const char *label, const char *pin, CK_OBJECT_HANDLE key)
{
    size_t n = strlen(pin);
    char *buf = calloc(1, n + 4096);
    CK_SESSION_INFO si;
    CK_OBJECT_HANDLE found;
    CK_RV rv;

    CHECK(buf != NULL && n > 0, "PIN");
    struct {
        const char *what;
        const char *p;
        CK_ULONG len;
    } tries[] = {{"NULL", NULL, 0},          {"empty", "", 0},         {"prefix", pin, n - 1},
                 {"with a NUL", pin, n + 1}, {"extended", buf, n + 1}, {"with a newline", buf, n + 1},
                 {"first byte", buf, n},     {"last byte", buf, n},    {"4096 longer", buf, n + 4096}};
    for (size_t i = 0; i < sizeof(tries) / sizeof(tries[0]); i++) {
        memset(buf, 'x', n + 4096);
        memcpy(buf, pin, n);
        if (!strcmp(tries[i].what, "with a newline"))
            buf[n] = '\n';
        else if (!strcmp(tries[i].what, "first byte"))
            buf[0] ^= 1;
        else if (!strcmp(tries[i].what, "last byte"))
            buf[n - 1] ^= 0x20;
        CHECK((rv = login(s, tries[i].p, tries[i].len)) == CKR_PIN_INCORRECT, "%s PIN: rv=0x%lx",
              tries[i].what, rv);
        CHECK(f->C_GetSessionInfo(s, &si) == CKR_OK && si.state == CKS_RO_PUBLIC_SESSION,
              "logged in after the %s PIN", tries[i].what);
        CHECK(find(s, CKO_PRIVATE_KEY, label, &found) == 0, "private key visible after the %s PIN",
              tries[i].what);
        CHECK((rv = sign_once(s, key)) == CKR_USER_NOT_LOGGED_IN, "sign after the %s PIN: rv=0x%lx",
              tries[i].what, rv);
    }
    CHECK(f->C_Login(s, CKU_USER, NULL, 4) == CKR_ARGUMENTS_BAD, "NULL PIN with a length");
    CHECK(f->C_Logout(s) == CKR_USER_NOT_LOGGED_IN, "logout after wrong PINs");
    free(buf);
}

/* The private key's handle without login: the public key's, minus one (stable handles). */
static CK_OBJECT_HANDLE private_handle(CK_SESSION_HANDLE s, const char *label)
{
    CK_OBJECT_HANDLE pub;
    CHECK(find(s, CKO_PUBLIC_KEY, label, &pub) == 1, "public key %s not found", label);
    return pub - 1;
}

static int mode_pin(const char *label, const char *pin, int right)
{
    CK_SESSION_HANDLE s = open_session();
    CK_OBJECT_HANDLE key = private_handle(s, label), found;
    CK_TOKEN_INFO ti;
    CK_RV rv;

    CHECK(f->C_GetTokenInfo(first_slot(), &ti) == CKR_OK, "C_GetTokenInfo");
    CHECK(!(ti.flags & CKF_PROTECTED_AUTHENTICATION_PATH) && (ti.flags & CKF_LOGIN_REQUIRED) &&
              (ti.flags & CKF_USER_PIN_INITIALIZED),
          "token flags 0x%lx", ti.flags);
    CHECK(ti.ulMinPinLen >= 1 && ti.ulMaxPinLen >= strlen(pin), "PIN lengths %lu..%lu", ti.ulMinPinLen,
          ti.ulMaxPinLen);
    CHECK((rv = sign_once(s, key)) == CKR_USER_NOT_LOGGED_IN, "sign before login: rv=0x%lx", rv);
    wrong_pins(s, label, pin, key);
    if (!right)
        return 0;
    CHECK((rv = login(s, pin, strlen(pin))) == CKR_OK, "the right PIN: rv=0x%lx", rv);
    CHECK(find(s, CKO_PRIVATE_KEY, label, &found) == 1 && found == key, "private key after login");
    CHECK((rv = sign_once(s, key)) == CKR_OK, "sign after login: rv=0x%lx", rv);
    CHECK(login(s, pin, strlen(pin)) == CKR_USER_ALREADY_LOGGED_IN, "second login");
    CHECK(f->C_Logout(s) == CKR_OK, "logout");
    CHECK((rv = sign_once(s, key)) == CKR_USER_NOT_LOGGED_IN, "sign after logout: rv=0x%lx", rv);
    CHECK((rv = login(s, "", 0)) == CKR_PIN_INCORRECT, "empty PIN after logout: rv=0x%lx", rv);
    CHECK((rv = login(s, pin, strlen(pin))) == CKR_OK, "the right PIN again: rv=0x%lx", rv);
    CHECK((rv = sign_once(s, key)) == CKR_OK, "sign after the second login: rv=0x%lx", rv);
    return 0;
}

static int mode_bench(const char *label, long n, const char *pin)
{
    CK_SESSION_HANDLE s = open_session();
    CK_OBJECT_HANDLE key;
    struct timespec t0, t1;
    CK_RV rv;

    if (pin != NULL)
        CHECK((rv = login(s, pin, strlen(pin))) == CKR_OK, "C_Login rv=0x%lx", rv);
    CHECK(find(s, CKO_PRIVATE_KEY, label, &key) == 1, "key %s not found", label);
    CHECK((rv = sign_once(s, key)) == CKR_OK, "first signature (the release) rv=0x%lx", rv);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (long i = 0; i < n; i++)
        CHECK((rv = sign_once(s, key)) == CKR_OK, "signature %ld rv=0x%lx", i, rv);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    printf("signs=%ld ms=%.1f\n", n, (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6);
    return 0;
}

static int mode_hold(const char *label)
{
    CK_SESSION_HANDLE s = open_session();
    CK_OBJECT_HANDLE key;
    char line[16];
    CK_RV rv;

    CHECK(find(s, CKO_PRIVATE_KEY, label, &key) == 1, "key %s not found", label);
    CHECK((rv = sign_once(s, key)) == CKR_OK, "sign rv=0x%lx", rv);
    printf("signed\n");
    fflush(stdout);
    CHECK(fgets(line, sizeof(line), stdin) != NULL, "stdin closed");
    printf("rv=0x%lx\n", sign_once(s, key));
    fflush(stdout);
    return 0;
}

int main(int argc, char **argv)
{
    void *lib;
    CK_C_GetFunctionList get;
    CK_RV rv;
    int rc = 1;

    if (argc < 4) {
        fprintf(stderr, "usage: p11_client MODULE wrongpin|pin|bench|hold LABEL [ARGS]\n");
        return 2;
    }
    CHECK((lib = dlopen(argv[1], RTLD_NOW)) != NULL, "dlopen: %s", dlerror());
    CHECK((get = (CK_C_GetFunctionList)dlsym(lib, "C_GetFunctionList")) != NULL, "no C_GetFunctionList");
    CHECK(get(&f) == CKR_OK, "C_GetFunctionList");
    CHECK((rv = f->C_Initialize(NULL)) == CKR_OK, "C_Initialize rv=0x%lx", rv);
    if (!strcmp(argv[2], "wrongpin") && argc > 4)
        rc = mode_pin(argv[3], argv[4], 0);
    else if (!strcmp(argv[2], "pin") && argc > 4)
        rc = mode_pin(argv[3], argv[4], 1);
    else if (!strcmp(argv[2], "bench") && argc > 4)
        rc = mode_bench(argv[3], atol(argv[4]), argc > 5 ? argv[5] : NULL);
    else if (!strcmp(argv[2], "hold")) {
        if (argc > 4 && !strcmp(argv[4], "nosigpipe"))
            signal(SIGPIPE, SIG_IGN);
        rc = mode_hold(argv[3]);
    }
    if (rc == 0 && !strcmp(argv[2], "hold")) {
        printf("ok hold\n"); /* no C_Finalize: the server may be gone */
        return 0;
    }
    CHECK((rv = f->C_Finalize(NULL)) == CKR_OK, "C_Finalize rv=0x%lx", rv);
    if (rc == 0)
        printf("ok %s\n", argv[2]);
    return rc;
}
