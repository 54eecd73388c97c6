/* SPDX-License-Identifier: Apache-2.0 */
/*
 * p11_check: drives libkeygate-pkcs11.so through the raw PKCS#11 API for what command-line
 * tools cannot show. Built and run by tests/integration/test_pkcs11.py.
 *
 *   p11_check MODULE attrs          C_GetAttributeValue semantics, stable handles
 *   p11_check MODULE fork LABEL     sign in the parent, then in a forked child after C_Initialize
 *   p11_check MODULE threads LABEL N  N threads sign concurrently (C_Initialize(NULL))
 *   p11_check MODULE login LABEL    pkcs11_release = login: hidden before C_Login, usable after,
 *                                   refused again after C_Logout
 *   p11_check MODULE overlap LABEL1 LABEL2 MS  first uses of two keys, the second MS later, in
 *                                   two threads: prints when each signature was done
 *   p11_check MODULE signinit LABEL prints the C_SignInit return value as "rv=0x..."
 *   p11_check MODULE multipart LABEL  C_SignUpdate/Final and C_VerifyUpdate/Final against the
 *                                   one-shot calls, for a hash and the raw mechanism of the key
 *   p11_check MODULE loop LABEL SECONDS  signs every 50 ms for SECONDS, printing each change of
 *                                   the result as "t=<ms> rv=0x..." (key leases, issue 12)
 *   p11_check MODULE initargs CONF  C_Initialize's pReserved: garbage pointers and strings are
 *                                   CKR_ARGUMENTS_BAD (never a crash), "config=CONF" works
 *   p11_check MODULE attrtypes      CKR_ATTRIBUTE_TYPE_INVALID vs CKR_ATTRIBUTE_SENSITIVE per class
 *   p11_check MODULE derive LABEL PEERHEX LEN  ECDH1_DERIVE with CKA_VALUE_LEN LEN (0: none),
 *                                   prints "value=<hex>"
 *   p11_check MODULE sign LABEL MECH MSGHEX  signs one-shot and in parts (MECH: hex CKM_ value;
 *                                   PSS parameters follow the mechanism's hash), prints
 *                                   "one=<hex> parts=<hex>"
 *   p11_check MODULE verify LABEL MECH MSGHEX SIGHEX  prints "one=0x... parts=0x..." (C_Verify
 *                                   and C_VerifyUpdate/Final results)
 *   p11_check MODULE badpin LABEL   wrong PINs get CKR_PIN_INCORRECT and change nothing
 *
 * Prints "ok <mode>" and exits 0 on success; prints the failed check and exits 1 otherwise.
 */
#include <dlfcn.h>
#include <p11-kit/pkcs11.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "p11_host.h"

/* Handles of objects of class cls (and label, if given). Returns the count. */
static CK_ULONG find(CK_SESSION_HANDLE s, CK_OBJECT_CLASS cls, const char *label, CK_OBJECT_HANDLE *out,
                     CK_ULONG max)
{
    CK_ATTRIBUTE t[] = {{CKA_CLASS, &cls, sizeof(cls)},
                        {CKA_LABEL, (void *)label, label ? strlen(label) : 0}};
    CK_ULONG n = 0;
    CK_RV rv = f->C_FindObjectsInit(s, t, label ? 2 : 1);
    CHECK(rv == CKR_OK, "C_FindObjectsInit rv=0x%lx", rv);
    rv = f->C_FindObjects(s, out, max, &n);
    CHECK(rv == CKR_OK, "C_FindObjects rv=0x%lx", rv);
    CHECK(f->C_FindObjectsFinal(s) == CKR_OK, "C_FindObjectsFinal");
    return n;
}

/* Signs 32 bytes with the key's raw mechanism. Returns the C_SignInit/C_Sign result. */
static CK_RV sign_once(CK_SESSION_HANDLE s, CK_OBJECT_HANDLE key)
{
    CK_KEY_TYPE kt;
    CK_ATTRIBUTE a = {CKA_KEY_TYPE, &kt, sizeof(kt)};
    unsigned char hash[32] = {1, 2, 3}, sig[1024];
    CK_ULONG len = sizeof(sig);
    CK_MECHANISM m = {CKM_ECDSA, NULL, 0};
    CK_RSA_PKCS_PSS_PARAMS pss = {CKM_SHA256, CKG_MGF1_SHA256, 32};
    CK_RV rv;

    CHECK(f->C_GetAttributeValue(s, key, &a, 1) == CKR_OK, "CKA_KEY_TYPE");
    if (kt == CKK_RSA) {
        m.mechanism = CKM_RSA_PKCS_PSS;
        m.pParameter = &pss;
        m.ulParameterLen = sizeof(pss);
    }
    if ((rv = f->C_SignInit(s, &m, key)) != CKR_OK)
        return rv;
    return f->C_Sign(s, hash, sizeof(hash), sig, &len);
}

/* Refusals that happen before any attestation (mode attrs checks none happened). */
static void misuse(CK_SESSION_HANDLE s)
{
    CK_OBJECT_HANDLE pub, priv;
    CK_OBJECT_CLASS cls = CKO_PUBLIC_KEY;
    CK_KEY_TYPE kt = CKK_RSA;
    CK_ATTRIBUTE t[] = {{CKA_CLASS, &cls, sizeof(cls)}, {CKA_KEY_TYPE, &kt, sizeof(kt)}};
    CK_MECHANISM ecdsa = {CKM_ECDSA, NULL, 0}, digest = {CKM_SHA256, NULL, 0}, bad = {0x80001234UL, NULL, 0};
    CK_RSA_PKCS_PSS_PARAMS pss = {CKM_SHA256, 0x999, 32};
    CK_MECHANISM badpss = {CKM_RSA_PKCS_PSS, &pss, sizeof(pss)};
    CK_SESSION_HANDLE s2;
    CK_SLOT_INFO si;
    CK_ULONG n = 0;
    CK_RV rv;

    CHECK(f->C_FindObjectsInit(s, t, 2) == CKR_OK && f->C_FindObjects(s, &pub, 1, &n) == CKR_OK && n == 1 &&
              f->C_FindObjectsFinal(s) == CKR_OK,
          "RSA public key");
    cls = CKO_PRIVATE_KEY;
    CHECK(f->C_FindObjectsInit(s, t, 2) == CKR_OK && f->C_FindObjects(s, &priv, 1, &n) == CKR_OK && n == 1 &&
              f->C_FindObjectsFinal(s) == CKR_OK,
          "RSA private key");
    CK_MECHANISM pkcs = {CKM_RSA_PKCS, NULL, 0};
    CHECK((rv = f->C_SignInit(s, &pkcs, pub)) == CKR_KEY_FUNCTION_NOT_PERMITTED,
          "sign with a public key 0x%lx", rv);
    CHECK((rv = f->C_SignInit(s, &ecdsa, priv)) == CKR_KEY_TYPE_INCONSISTENT, "ECDSA on RSA 0x%lx", rv);
    CHECK((rv = f->C_SignInit(s, &bad, priv)) == CKR_MECHANISM_INVALID, "unknown mechanism 0x%lx", rv);
    CHECK((rv = f->C_SignInit(s, &badpss, priv)) == CKR_MECHANISM_PARAM_INVALID, "bad PSS MGF 0x%lx", rv);
    CHECK((rv = f->C_Sign(s, (CK_BYTE_PTR) "x", 1, NULL, &n)) == CKR_OPERATION_NOT_INITIALIZED,
          "C_Sign 0x%lx", rv);
    CHECK(f->C_DigestInit(s, &digest) == CKR_FUNCTION_NOT_SUPPORTED, "C_DigestInit");
    CHECK((rv = f->C_SeedRandom(s, NULL, 1)) == CKR_ARGUMENTS_BAD, "C_SeedRandom(NULL, 1) 0x%lx", rv);
    CHECK(f->C_CreateObject(s, t, 1, &pub) == CKR_FUNCTION_NOT_SUPPORTED, "C_CreateObject");
    CHECK(f->C_DestroyObject(s, priv) == CKR_ACTION_PROHIBITED, "C_DestroyObject on a token key");
    CHECK(f->C_OpenSession(first_slot(), 0, NULL, NULL, &s2) == CKR_SESSION_PARALLEL_NOT_SUPPORTED,
          "parallel");
    CHECK(f->C_GetSlotInfo(first_slot() + 1, &si) == CKR_SLOT_ID_INVALID, "bad slot");
    CHECK(f->C_Login(s, CKU_SO, NULL, 0) == CKR_USER_TYPE_INVALID, "SO login");
    CHECK(f->C_Logout(s) == CKR_USER_NOT_LOGGED_IN, "logout without login");
    CHECK(f->C_CloseSession(0xdead) == CKR_SESSION_HANDLE_INVALID, "bad session");
}

static int mode_attrs(void)
{
    CK_SESSION_HANDLE s = open_session(), s2;
    CK_OBJECT_HANDLE priv[16], again[16];
    CK_ULONG n = find(s, CKO_PRIVATE_KEY, NULL, priv, 16), n2;
    CHECK(n >= 1, "no private key objects");
    for (CK_ULONG i = 0; i < n; i++) {
        CK_BYTE value[64], id[64], sensitive = 0, extractable = 1, always_auth = 1, unknown[8];
        CK_KEY_TYPE kt;
        CK_ATTRIBUTE t[] = {
            {CKA_VALUE, value, sizeof(value)},        /* sensitive */
            {CKA_LABEL, NULL, 0},                     /* size query */
            {CKA_ID, id, sizeof(id)},                 /* filled */
            {0x8badf00dUL, unknown, sizeof(unknown)}, /* unknown */
            {CKA_SENSITIVE, &sensitive, 1},           /* filled after the failures */
            {CKA_EXTRACTABLE, &extractable, 1},
            {CKA_ALWAYS_AUTHENTICATE, &always_auth, 1},
            {CKA_KEY_TYPE, &kt, sizeof(kt)},
        };
        CK_RV rv = f->C_GetAttributeValue(s, priv[i], t, 8);
        CHECK(rv == CKR_ATTRIBUTE_SENSITIVE || rv == CKR_ATTRIBUTE_TYPE_INVALID, "batch rv=0x%lx", rv);
        CHECK(t[0].ulValueLen == CK_UNAVAILABLE_INFORMATION, "CKA_VALUE length %lu", t[0].ulValueLen);
        CHECK(t[1].ulValueLen > 0 && t[1].ulValueLen != CK_UNAVAILABLE_INFORMATION, "label size query");
        CHECK(t[2].ulValueLen == 20, "CKA_ID length %lu", t[2].ulValueLen);
        CHECK(t[3].ulValueLen == CK_UNAVAILABLE_INFORMATION, "unknown attribute length");
        CHECK(sensitive == CK_TRUE && extractable == CK_FALSE && always_auth == CK_FALSE, "key flags");
        CHECK(kt == CKK_RSA || kt == CKK_EC, "key type");
        /* alone: CKA_VALUE is refused (an EC key's private value; an RSA key has none) */
        CK_ATTRIBUTE v = {CKA_VALUE, NULL, 0};
        rv = f->C_GetAttributeValue(s, priv[i], &v, 1);
        CHECK(rv == (kt == CKK_EC ? CKR_ATTRIBUTE_SENSITIVE : CKR_ATTRIBUTE_TYPE_INVALID) &&
                  v.ulValueLen == CK_UNAVAILABLE_INFORMATION,
              "CKA_VALUE rv=0x%lx", rv);
        CK_ATTRIBUTE pe = {kt == CKK_RSA ? CKA_PRIVATE_EXPONENT : CKA_VALUE, value, sizeof(value)};
        CHECK(f->C_GetAttributeValue(s, priv[i], &pe, 1) == CKR_ATTRIBUTE_SENSITIVE, "private component");
        /* public components on the private key, and a too-small buffer */
        CK_BYTE small[2];
        CK_ATTRIBUTE pub = {kt == CKK_RSA ? CKA_MODULUS : CKA_EC_PARAMS, small, sizeof(small)};
        rv = f->C_GetAttributeValue(s, priv[i], &pub, 1);
        CHECK(rv == CKR_BUFFER_TOO_SMALL && pub.ulValueLen == CK_UNAVAILABLE_INFORMATION,
              "small buffer rv=0x%lx", rv);
        pub.pValue = NULL;
        CHECK(f->C_GetAttributeValue(s, priv[i], &pub, 1) == CKR_OK && pub.ulValueLen > 2,
              "public component size");
    }
    CHECK(f->C_GetAttributeValue(s, 0xdead, NULL, 0) == CKR_OBJECT_HANDLE_INVALID, "bad handle");
    misuse(s);
    /* handles are the same in another session and after C_Finalize + C_Initialize */
    s2 = open_session();
    n2 = find(s2, CKO_PRIVATE_KEY, NULL, again, 16);
    CHECK(n2 == n && memcmp(priv, again, n * sizeof(*priv)) == 0, "handles differ between sessions");
    CHECK(f->C_Finalize(NULL) == CKR_OK, "C_Finalize");
    CHECK(f->C_Initialize(NULL) == CKR_OK, "C_Initialize again");
    s2 = open_session();
    n2 = find(s2, CKO_PRIVATE_KEY, NULL, again, 16);
    CHECK(n2 == n && memcmp(priv, again, n * sizeof(*priv)) == 0, "handles differ after re-initialisation");
    return 0;
}

static int mode_fork(const char *label)
{
    CK_SESSION_HANDLE s = open_session();
    CK_OBJECT_HANDLE key;
    CK_ULONG count;
    CK_RV rv;
    int status;
    pid_t pid;

    CHECK(find(s, CKO_PRIVATE_KEY, label, &key, 1) == 1, "key %s not found", label);
    CHECK((rv = sign_once(s, key)) == CKR_OK, "parent sign rv=0x%lx", rv);
    pid = fork();
    CHECK(pid >= 0, "fork");
    if (pid == 0) {
        /* the child is a new application: not initialised until it says so */
        rv = f->C_GetSlotList(CK_TRUE, NULL, &count);
        CHECK(rv == CKR_CRYPTOKI_NOT_INITIALIZED, "child before C_Initialize rv=0x%lx", rv);
        CHECK((rv = f->C_Initialize(NULL)) == CKR_OK, "child C_Initialize rv=0x%lx", rv);
        CHECK(f->C_CloseSession(s) == CKR_SESSION_HANDLE_INVALID, "parent session visible in child");
        s = open_session();
        CHECK(find(s, CKO_PRIVATE_KEY, label, &key, 1) == 1, "child: key not found");
        for (int i = 0; i < 5; i++)
            CHECK((rv = sign_once(s, key)) == CKR_OK, "child sign rv=0x%lx", rv);
        CHECK(f->C_Finalize(NULL) == CKR_OK, "child C_Finalize");
        _exit(0);
    }
    CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0, "child failed");
    /* the child's C_Finalize did not harm the parent */
    CHECK((rv = sign_once(s, key)) == CKR_OK, "parent sign after child rv=0x%lx", rv);
    return 0;
}

static const char *thread_label;

static void *thread_main(void *arg)
{
    CK_SESSION_HANDLE s = open_session();
    CK_OBJECT_HANDLE key;
    CK_RV rv;

    CHECK(find(s, CKO_PRIVATE_KEY, thread_label, &key, 1) == 1, "thread: key not found");
    for (int i = 0; i < 20; i++)
        CHECK((rv = sign_once(s, key)) == CKR_OK, "thread sign rv=0x%lx", rv);
    CHECK(f->C_CloseSession(s) == CKR_OK, "thread close");
    return arg;
}

static int mode_threads(const char *label, int n)
{
    pthread_t t[32];

    thread_label = label;
    for (int i = 0; i < n && i < 32; i++)
        CHECK(pthread_create(&t[i], NULL, thread_main, NULL) == 0, "pthread_create");
    for (int i = 0; i < n && i < 32; i++)
        pthread_join(t[i], NULL);
    return 0;
}

/* Overlapping first uses of two keys: LABEL1 at once, LABEL2 DELAY_MS later, each in its own
 * thread and session. Prints "first_ms=... second_ms=..." (each sign's end, from the start). */
typedef struct overlap_arg {
    const char *label;
    long delay_ms;
    double t0, end_ms;
} overlap_arg;

static double mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void *overlap_main(void *p)
{
    overlap_arg *a = p;
    struct timespec d = {a->delay_ms / 1000, (a->delay_ms % 1000) * 1000000L};
    CK_SESSION_HANDLE s = open_session();
    CK_OBJECT_HANDLE key;
    CK_RV rv;

    CHECK(find(s, CKO_PRIVATE_KEY, a->label, &key, 1) == 1, "key %s not found", a->label);
    nanosleep(&d, NULL);
    CHECK((rv = sign_once(s, key)) == CKR_OK, "sign with %s rv=0x%lx", a->label, rv);
    a->end_ms = mono_ms() - a->t0;
    CHECK(f->C_CloseSession(s) == CKR_OK, "close");
    return NULL;
}

static int mode_overlap(const char *label1, const char *label2, long delay_ms)
{
    double t0 = mono_ms();
    overlap_arg a[2] = {{label1, 0, t0, 0}, {label2, delay_ms, t0, 0}};
    pthread_t t[2];

    for (int i = 0; i < 2; i++)
        CHECK(pthread_create(&t[i], NULL, overlap_main, &a[i]) == 0, "pthread_create");
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    printf("first_ms=%.0f second_ms=%.0f\n", a[0].end_ms, a[1].end_ms);
    return 0;
}

static int mode_login(const char *label)
{
    CK_SESSION_HANDLE s = open_session();
    CK_OBJECT_HANDLE key, pub;
    CK_TOKEN_INFO ti;
    CK_RV rv;

    CHECK(f->C_GetTokenInfo(first_slot(), &ti) == CKR_OK && (ti.flags & CKF_LOGIN_REQUIRED) &&
              (ti.flags & CKF_PROTECTED_AUTHENTICATION_PATH),
          "token flags 0x%lx", ti.flags);
    CHECK(find(s, CKO_PRIVATE_KEY, label, &key, 1) == 0, "private key visible before login");
    CHECK(find(s, CKO_PUBLIC_KEY, label, &pub, 1) == 1, "public key not visible");
    /* the private key's handle (stable) is refused for signing before login */
    key = pub - 1;
    CHECK((rv = sign_once(s, key)) == CKR_USER_NOT_LOGGED_IN, "sign before login rv=0x%lx", rv);
    CHECK((rv = f->C_Login(s, CKU_USER, NULL, 0)) == CKR_OK, "C_Login rv=0x%lx", rv);
    CHECK(f->C_Login(s, CKU_USER, NULL, 0) == CKR_USER_ALREADY_LOGGED_IN, "second login");
    CHECK(find(s, CKO_PRIVATE_KEY, label, &key, 1) == 1, "private key not visible after login");
    CHECK((rv = sign_once(s, key)) == CKR_OK, "sign after login rv=0x%lx", rv);
    CHECK(f->C_Logout(s) == CKR_OK, "logout");
    /* logging out ends the right to use the key, not only the right to release it: the key is
     * released and held, and still refused */
    CHECK((rv = sign_once(s, key)) == CKR_USER_NOT_LOGGED_IN, "sign after logout rv=0x%lx", rv);
    CHECK((rv = f->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR) "", 0)) == CKR_OK, "C_Login, empty PIN: rv=0x%lx",
          rv);
    CHECK((rv = sign_once(s, key)) == CKR_OK, "sign after the second login rv=0x%lx", rv);
    CHECK(f->C_Logout(s) == CKR_OK, "second logout");
    return 0;
}

static int mode_signinit(const char *label)
{
    CK_SESSION_HANDLE s = open_session();
    CK_OBJECT_HANDLE key;

    CHECK(find(s, CKO_PRIVATE_KEY, label, &key, 1) == 1, "key %s not found", label);
    printf("rv=0x%lx\n", sign_once(s, key));
    return 0;
}

/* Multi-part sign of msg in three parts (with a length query before SignFinal). */
static CK_ULONG sign_parts(CK_SESSION_HANDLE s, CK_MECHANISM *m, CK_OBJECT_HANDLE key,
                           const unsigned char *msg, CK_ULONG len, unsigned char *sig)
{
    CK_ULONG n = 0, room;
    CK_RV rv;

    CHECK((rv = f->C_SignInit(s, m, key)) == CKR_OK, "C_SignInit 0x%lx: rv=0x%lx", m->mechanism, rv);
    CHECK(f->C_SignUpdate(s, (CK_BYTE_PTR)msg, 5) == CKR_OK && f->C_SignUpdate(s, NULL, 0) == CKR_OK &&
              f->C_SignUpdate(s, (CK_BYTE_PTR)msg + 5, len - 5) == CKR_OK,
          "C_SignUpdate 0x%lx", m->mechanism);
    CHECK(f->C_SignFinal(s, NULL, &n) == CKR_OK && n > 0, "C_SignFinal length query 0x%lx", m->mechanism);
    room = 1;
    CHECK(f->C_SignFinal(s, sig, &room) == CKR_BUFFER_TOO_SMALL && room == n, "C_SignFinal too small");
    CHECK((rv = f->C_SignFinal(s, sig, &n)) == CKR_OK, "C_SignFinal 0x%lx: rv=0x%lx", m->mechanism, rv);
    CHECK(f->C_SignFinal(s, sig, &n) == CKR_OPERATION_NOT_INITIALIZED, "C_SignFinal ends the operation");
    return n;
}

/* Multi-part verify of (msg, sig); returns C_VerifyFinal's result. */
static CK_RV verify_parts(CK_SESSION_HANDLE s, CK_MECHANISM *m, CK_OBJECT_HANDLE key,
                          const unsigned char *msg, CK_ULONG len, const unsigned char *sig, CK_ULONG sig_len)
{
    CK_RV rv;

    CHECK(f->C_VerifyInit(s, m, key) == CKR_OK, "C_VerifyInit 0x%lx", m->mechanism);
    CHECK(f->C_VerifyUpdate(s, (CK_BYTE_PTR)msg, 7) == CKR_OK &&
              f->C_VerifyUpdate(s, (CK_BYTE_PTR)msg + 7, len - 7) == CKR_OK,
          "C_VerifyUpdate 0x%lx", m->mechanism);
    rv = f->C_VerifyFinal(s, (CK_BYTE_PTR)sig, sig_len);
    CHECK(f->C_VerifyFinal(s, (CK_BYTE_PTR)sig, sig_len) == CKR_OPERATION_NOT_INITIALIZED,
          "C_VerifyFinal ends the operation");
    return rv;
}

/* For a hash mechanism and the key's raw one: parts and one-shot agree in both directions (RSA
 * PKCS#1 v1.5 is deterministic: equal bytes), a changed message fails, and misuse is refused. */
static int mode_multipart(const char *label)
{
    CK_SESSION_HANDLE s = open_session();
    CK_OBJECT_HANDLE priv, pub;
    CK_KEY_TYPE kt;
    CK_ATTRIBUTE a = {CKA_KEY_TYPE, &kt, sizeof(kt)};
    unsigned char msg[48], bad[48], one[1024], parts[1024];
    CK_ULONG one_len, parts_len;
    CK_RV rv;

    for (size_t i = 0; i < sizeof(msg); i++)
        msg[i] = (unsigned char)(i * 7 + 1);
    memcpy(bad, msg, sizeof(msg));
    bad[20] ^= 1; /* inside every input length used below */
    CHECK(find(s, CKO_PRIVATE_KEY, label, &priv, 1) == 1 && find(s, CKO_PUBLIC_KEY, label, &pub, 1) == 1,
          "key %s not found", label);
    CHECK(f->C_GetAttributeValue(s, priv, &a, 1) == CKR_OK, "CKA_KEY_TYPE");
    CK_MECHANISM mechs[2] = {{kt == CKK_RSA ? CKM_SHA256_RSA_PKCS : CKM_ECDSA_SHA256, NULL, 0},
                             {kt == CKK_RSA ? CKM_RSA_PKCS : CKM_ECDSA, NULL, 0}};
    for (int i = 0; i < 2; i++) {
        CK_MECHANISM *m = &mechs[i];
        CK_ULONG len = i == 0 ? sizeof(msg) : 32; /* raw ECDSA signs a hash-sized input */

        parts_len = sign_parts(s, m, priv, msg, len, parts);
        one_len = sizeof(one);
        CHECK(f->C_SignInit(s, m, priv) == CKR_OK && (rv = f->C_Sign(s, msg, len, one, &one_len)) == CKR_OK,
              "C_Sign 0x%lx: rv=0x%lx", m->mechanism, rv);
        CHECK(one_len == parts_len, "signature lengths %lu and %lu", one_len, parts_len);
        if (kt == CKK_RSA)
            CHECK(memcmp(one, parts, one_len) == 0, "multi-part and one-shot RSA signatures differ (0x%lx)",
                  m->mechanism);
        CHECK((rv = verify_parts(s, m, pub, msg, len, one, one_len)) == CKR_OK,
              "parts verify one-shot: 0x%lx", rv);
        CHECK(f->C_VerifyInit(s, m, pub) == CKR_OK &&
                  (rv = f->C_Verify(s, msg, len, parts, parts_len)) == CKR_OK,
              "one-shot verify of parts: 0x%lx", rv);
        CHECK((rv = verify_parts(s, m, pub, bad, len, parts, parts_len)) == CKR_SIGNATURE_INVALID,
              "changed message: 0x%lx", rv);
        /* one-shot C_Sign after C_SignUpdate is a misuse that ends the operation */
        CHECK(f->C_SignInit(s, m, priv) == CKR_OK && f->C_SignUpdate(s, msg, 4) == CKR_OK, "init+update");
        one_len = sizeof(one);
        CHECK(f->C_Sign(s, msg, len, one, &one_len) == CKR_ARGUMENTS_BAD, "C_Sign after C_SignUpdate");
        CHECK(f->C_SignUpdate(s, msg, 4) == CKR_OPERATION_NOT_INITIALIZED, "operation ended after misuse");
        CHECK(f->C_VerifyUpdate(s, msg, 4) == CKR_OPERATION_NOT_INITIALIZED, "verify not started");
    }
    return 0;
}

static long long elapsed_ms(const struct timespec *t0)
{
    struct timespec now;

    clock_gettime(CLOCK_MONOTONIC, &now);
    return (now.tv_sec - t0->tv_sec) * 1000LL + (now.tv_nsec - t0->tv_nsec) / 1000000;
}

static int mode_loop(const char *label, int seconds)
{
    CK_SESSION_HANDLE s = open_session();
    CK_OBJECT_HANDLE key;
    CK_RV last = (CK_RV)-1;
    struct timespec t0;
    unsigned long signs = 0, failed = 0;

    CHECK(find(s, CKO_PRIVATE_KEY, label, &key, 1) == 1, "key %s not found", label);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    while (elapsed_ms(&t0) < seconds * 1000LL) {
        CK_RV rv = sign_once(s, key);

        signs++;
        failed += rv != CKR_OK;
        if (rv != last) {
            printf("t=%lld rv=0x%lx\n", elapsed_ms(&t0), rv);
            fflush(stdout);
            last = rv;
        }
        usleep(50000);
    }
    printf("signs=%lu failed=%lu\n", signs, failed);
    return 0;
}

/* C_Initialize with only pReserved set; on success checks the token has keys and finalizes. */
static CK_RV init_reserved(void *reserved)
{
    CK_C_INITIALIZE_ARGS a;
    CK_OBJECT_HANDLE h[16];
    CK_ULONG n;
    CK_RV rv;

    memset(&a, 0, sizeof(a));
    a.pReserved = reserved;
    if ((rv = f->C_Initialize(&a)) != CKR_OK) {
        CHECK(f->C_GetSlotList(CK_TRUE, NULL, &n) == CKR_CRYPTOKI_NOT_INITIALIZED, "initialised after 0x%lx",
              rv);
        return rv;
    }
    CHECK(find(open_session(), CKO_PRIVATE_KEY, NULL, h, 16) > 0, "no keys from pReserved's configuration");
    CHECK(f->C_Finalize(NULL) == CKR_OK, "C_Finalize");
    return rv;
}

static int mode_initargs(const char *conf)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE), len;
    void *bad[] = {(void *)1, (void *)8, (void *)page, (void *)(UINTPTR_MAX - 2)};
    char cfg[4200], *map;
    CK_RV rv;

    /* pkcs11test Init.InitArgsBadReserved: (void *)1, and other pointers nobody may read */
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        CHECK((rv = init_reserved(bad[i])) == CKR_ARGUMENTS_BAD, "pReserved %p: rv=0x%lx", bad[i], rv);
    /* a readable page followed by an unreadable one */
    map = mmap(NULL, 2 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(map != MAP_FAILED && mprotect(map + page, page, PROT_NONE) == 0, "mmap");
    CHECK((rv = init_reserved(map + page)) == CKR_ARGUMENTS_BAD, "PROT_NONE pReserved: rv=0x%lx", rv);
    memset(map, '/', page); /* a "path" that runs into the unreadable page without a NUL */
    memcpy(map + page - 64, "config=/", 8);
    CHECK((rv = init_reserved(map + page - 64)) == CKR_ARGUMENTS_BAD, "unterminated: rv=0x%lx", rv);
    CHECK((rv = init_reserved(map)) == CKR_ARGUMENTS_BAD, "no NUL in a page: rv=0x%lx", rv);
    /* readable, but not the documented format */
    CHECK((rv = init_reserved("hello")) == CKR_ARGUMENTS_BAD, "garbage string: rv=0x%lx", rv);
    CHECK((rv = init_reserved("config=relative.conf")) == CKR_ARGUMENTS_BAD, "relative path: rv=0x%lx", rv);
    /* the documented forms work: config=PATH (also ending right before the unreadable page) and
     * a bare absolute path */
    snprintf(cfg, sizeof(cfg), "config=%s", conf);
    CHECK((rv = init_reserved(cfg)) == CKR_OK, "config=PATH: rv=0x%lx", rv);
    len = strlen(cfg) + 1;
    memcpy(map + page - len, cfg, len);
    CHECK((rv = init_reserved(map + page - len)) == CKR_OK, "config=PATH at a page end: rv=0x%lx", rv);
    CHECK((rv = init_reserved((void *)conf)) == CKR_OK, "bare path: rv=0x%lx", rv);
    munmap(map, 2 * page);
    return 0;
}

/* One attribute alone: its result, and the length the module reported. */
static void expect_attr(CK_SESSION_HANDLE s, CK_OBJECT_HANDLE o, CK_ATTRIBUTE_TYPE type, CK_RV want,
                        const char *what)
{
    unsigned char buf[8192];
    CK_ATTRIBUTE a = {type, buf, sizeof(buf)};
    CK_RV rv = f->C_GetAttributeValue(s, o, &a, 1);

    CHECK(rv == want, "%s: attribute 0x%lx rv=0x%lx, want 0x%lx", what, type, rv, want);
    CHECK(want == CKR_OK || a.ulValueLen == CK_UNAVAILABLE_INFORMATION, "%s: attribute 0x%lx length %lu",
          what, type, a.ulValueLen);
}

static int mode_attrtypes(void)
{
    static const CK_ATTRIBUTE_TYPE rsa_private[] = {CKA_PRIVATE_EXPONENT, CKA_PRIME_1,    CKA_PRIME_2,
                                                    CKA_EXPONENT_1,       CKA_EXPONENT_2, CKA_COEFFICIENT};
    static const CK_OBJECT_CLASS classes[] = {CKO_PRIVATE_KEY, CKO_PUBLIC_KEY, CKO_CERTIFICATE};
    CK_SESSION_HANDLE s = open_session();
    int seen_rsa = 0, seen_ec = 0;

    for (size_t c = 0; c < 3; c++) {
        CK_OBJECT_HANDLE h[16];
        CK_ULONG n = find(s, classes[c], NULL, h, 16);
        CHECK(n > 0, "no objects of class %lu", classes[c]);
        for (CK_ULONG i = 0; i < n; i++) {
            CK_KEY_TYPE kt = CKK_RSA;
            CK_ATTRIBUTE a = {CKA_KEY_TYPE, &kt, sizeof(kt)};
            int priv = classes[c] == CKO_PRIVATE_KEY, cert = classes[c] == CKO_CERTIFICATE;
            if (!cert)
                CHECK(f->C_GetAttributeValue(s, h[i], &a, 1) == CKR_OK, "CKA_KEY_TYPE");
            seen_rsa |= priv && kt == CKK_RSA;
            seen_ec |= priv && kt == CKK_EC;
            /* RSA private components: sensitive on an RSA private key, absent everywhere else */
            for (size_t j = 0; j < sizeof(rsa_private) / sizeof(rsa_private[0]); j++)
                expect_attr(s, h[i], rsa_private[j],
                            priv && kt == CKK_RSA ? CKR_ATTRIBUTE_SENSITIVE : CKR_ATTRIBUTE_TYPE_INVALID,
                            "RSA part");
            /* CKA_VALUE: the EC private value (sensitive), the certificate's DER, else absent */
            expect_attr(s, h[i], CKA_VALUE,
                        cert                   ? CKR_OK
                        : priv && kt == CKK_EC ? CKR_ATTRIBUTE_SENSITIVE
                                               : CKR_ATTRIBUTE_TYPE_INVALID,
                        "CKA_VALUE");
            if (!cert) {
                expect_attr(s, h[i], CKA_MODULUS, kt == CKK_RSA ? CKR_OK : CKR_ATTRIBUTE_TYPE_INVALID,
                            "modulus");
                expect_attr(s, h[i], CKA_EC_PARAMS, kt == CKK_EC ? CKR_OK : CKR_ATTRIBUTE_TYPE_INVALID,
                            "params");
            }
            if (priv && kt == CKK_EC) { /* a batch: the call goes on over the template */
                unsigned char b1[64], b3[64];
                CK_KEY_TYPE got = 0;
                CK_ATTRIBUTE t[] = {{CKA_PRIME_1, b1, sizeof(b1)},
                                    {CKA_LABEL, NULL, 0},
                                    {CKA_MODULUS, b3, sizeof(b3)},
                                    {CKA_KEY_TYPE, &got, sizeof(got)}};
                CK_RV rv = f->C_GetAttributeValue(s, h[i], t, 4);
                CHECK(rv == CKR_ATTRIBUTE_TYPE_INVALID, "batch rv=0x%lx", rv);
                CHECK(t[0].ulValueLen == CK_UNAVAILABLE_INFORMATION &&
                          t[2].ulValueLen == CK_UNAVAILABLE_INFORMATION,
                      "batch: absent attributes' lengths");
                CHECK(t[1].ulValueLen > 0 && t[1].ulValueLen != CK_UNAVAILABLE_INFORMATION && got == CKK_EC,
                      "batch: present attributes not filled");
            }
        }
    }
    CHECK(seen_rsa && seen_ec, "needs an RSA and an EC key");
    return 0;
}

static size_t unhex(const char *hex, unsigned char *out, size_t max)
{
    size_t n = 0;
    unsigned int byte;

    while (hex[0] && hex[1] && n < max && sscanf(hex, "%2x", &byte) == 1) {
        out[n++] = (unsigned char)byte;
        hex += 2;
    }
    return n;
}

static void print_hex(const char *name, const unsigned char *p, CK_ULONG n)
{
    printf("%s=", name);
    for (CK_ULONG i = 0; i < n; i++)
        printf("%02x", p[i]);
    printf("\n");
}

static int mode_derive(const char *label, const char *peer_hex, CK_ULONG value_len)
{
    CK_SESSION_HANDLE s = open_session();
    unsigned char peer[256], value[256];
    CK_ECDH1_DERIVE_PARAMS p = {CKD_NULL, 0, NULL, 0, peer};
    CK_MECHANISM m = {CKM_ECDH1_DERIVE, &p, sizeof(p)};
    CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
    CK_KEY_TYPE kt = CKK_GENERIC_SECRET;
    CK_BBOOL no = CK_FALSE, yes = CK_TRUE;
    CK_ATTRIBUTE t[] = {{CKA_CLASS, &cls, sizeof(cls)},
                        {CKA_KEY_TYPE, &kt, sizeof(kt)},
                        {CKA_SENSITIVE, &no, sizeof(no)},
                        {CKA_EXTRACTABLE, &yes, sizeof(yes)},
                        {CKA_VALUE_LEN, &value_len, sizeof(value_len)}};
    CK_ATTRIBUTE v = {CKA_VALUE, value, sizeof(value)};
    CK_OBJECT_HANDLE key, secret;
    CK_RV rv;

    p.ulPublicDataLen = unhex(peer_hex, peer, sizeof(peer));
    CHECK(find(s, CKO_PRIVATE_KEY, label, &key, 1) == 1, "key %s not found", label);
    CHECK((rv = f->C_DeriveKey(s, &m, key, t, value_len ? 5 : 4, &secret)) == CKR_OK, "C_DeriveKey rv=0x%lx",
          rv);
    CHECK((rv = f->C_GetAttributeValue(s, secret, &v, 1)) == CKR_OK, "CKA_VALUE rv=0x%lx", rv);
    print_hex("value", value, v.ulValueLen);
    return 0;
}

/* The mechanism named by hex, with the PSS parameters of its hash for the _PSS ones. */
static void mech_of(const char *hex, CK_MECHANISM *m, CK_RSA_PKCS_PSS_PARAMS *pss)
{
    static const CK_RSA_PKCS_PSS_PARAMS params[] = {{CKM_SHA_1, CKG_MGF1_SHA1, 20},
                                                    {CKM_SHA224, CKG_MGF1_SHA224, 28},
                                                    {CKM_SHA256, CKG_MGF1_SHA256, 32},
                                                    {CKM_SHA384, CKG_MGF1_SHA384, 48},
                                                    {CKM_SHA512, CKG_MGF1_SHA512, 64}};
    static const CK_MECHANISM_TYPE mechs[] = {CKM_SHA1_RSA_PKCS_PSS, CKM_SHA224_RSA_PKCS_PSS,
                                              CKM_SHA256_RSA_PKCS_PSS, CKM_SHA384_RSA_PKCS_PSS,
                                              CKM_SHA512_RSA_PKCS_PSS};

    m->mechanism = strtoul(hex, NULL, 16);
    m->pParameter = NULL;
    m->ulParameterLen = 0;
    for (size_t i = 0; i < 5; i++)
        if (m->mechanism == mechs[i]) {
            *pss = params[i];
            m->pParameter = pss;
            m->ulParameterLen = sizeof(*pss);
        }
}

static int mode_sign(const char *label, const char *mech, const char *msg_hex)
{
    CK_SESSION_HANDLE s = open_session();
    CK_RSA_PKCS_PSS_PARAMS pss;
    CK_MECHANISM m;
    CK_OBJECT_HANDLE key;
    unsigned char msg[1024], one[1024], parts[1024];
    CK_ULONG len = unhex(msg_hex, msg, sizeof(msg)), one_len = sizeof(one), parts_len = sizeof(parts);
    CK_RV rv;

    mech_of(mech, &m, &pss);
    CHECK(len >= 2 && find(s, CKO_PRIVATE_KEY, label, &key, 1) == 1, "key %s not found", label);
    CHECK((rv = f->C_SignInit(s, &m, key)) == CKR_OK &&
              (rv = f->C_Sign(s, msg, len, one, &one_len)) == CKR_OK,
          "C_Sign 0x%lx: rv=0x%lx", m.mechanism, rv);
    CHECK((rv = f->C_SignInit(s, &m, key)) == CKR_OK && (rv = f->C_SignUpdate(s, msg, 1)) == CKR_OK &&
              (rv = f->C_SignUpdate(s, msg + 1, len - 1)) == CKR_OK &&
              (rv = f->C_SignFinal(s, parts, &parts_len)) == CKR_OK,
          "C_SignUpdate/Final 0x%lx: rv=0x%lx", m.mechanism, rv);
    print_hex("one", one, one_len);
    print_hex("parts", parts, parts_len);
    return 0;
}

static int mode_verify(const char *label, const char *mech, const char *msg_hex, const char *sig_hex)
{
    CK_SESSION_HANDLE s = open_session();
    CK_RSA_PKCS_PSS_PARAMS pss;
    CK_MECHANISM m;
    CK_OBJECT_HANDLE key;
    unsigned char msg[1024], sig[1024];
    CK_ULONG len = unhex(msg_hex, msg, sizeof(msg)), sig_len = unhex(sig_hex, sig, sizeof(sig));
    CK_RV one, parts;

    mech_of(mech, &m, &pss);
    CHECK(len >= 2 && find(s, CKO_PUBLIC_KEY, label, &key, 1) == 1, "key %s not found", label);
    CHECK((one = f->C_VerifyInit(s, &m, key)) == CKR_OK, "C_VerifyInit 0x%lx: rv=0x%lx", m.mechanism, one);
    one = f->C_Verify(s, msg, len, sig, sig_len);
    CHECK((parts = f->C_VerifyInit(s, &m, key)) == CKR_OK && f->C_VerifyUpdate(s, msg, 1) == CKR_OK &&
              f->C_VerifyUpdate(s, msg + 1, len - 1) == CKR_OK,
          "C_VerifyInit/Update 0x%lx", m.mechanism);
    parts = f->C_VerifyFinal(s, sig, sig_len);
    printf("one=0x%lx parts=0x%lx\n", one, parts);
    return 0;
}

/* Wrong PINs: CKR_PIN_INCORRECT, no login, and with pkcs11_release = login no key either. */
static int mode_badpin(const char *label)
{
    static const char *pins[] = {"simply-wrong", "x", "\0\0\0"};
    static const CK_ULONG lens[] = {12, 1, 3};
    CK_SESSION_HANDLE s = open_session();
    CK_OBJECT_HANDLE pub, key;
    CK_SESSION_INFO si;
    CK_TOKEN_INFO ti;
    CK_RV rv;

    CHECK(f->C_GetTokenInfo(first_slot(), &ti) == CKR_OK, "C_GetTokenInfo");
    CHECK(find(s, CKO_PUBLIC_KEY, label, &pub, 1) == 1, "public key %s not found", label);
    key = pub - 1; /* the private key's stable handle */
    for (size_t i = 0; i < 3; i++) {
        CHECK((rv = f->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR)pins[i], lens[i])) == CKR_PIN_INCORRECT,
              "PIN %zu: rv=0x%lx", i, rv);
        CHECK(f->C_GetSessionInfo(s, &si) == CKR_OK && si.state == CKS_RO_PUBLIC_SESSION, "logged in");
        CHECK(f->C_Logout(s) == CKR_USER_NOT_LOGGED_IN, "logout after a wrong PIN");
        if (ti.flags & CKF_LOGIN_REQUIRED) {
            CHECK(find(s, CKO_PRIVATE_KEY, label, &key, 1) == 0, "private key visible after a wrong PIN");
            CHECK((rv = sign_once(s, pub - 1)) == CKR_USER_NOT_LOGGED_IN, "sign after a wrong PIN rv=0x%lx",
                  rv);
        }
    }
    CHECK(f->C_Login(s, CKU_USER, NULL, 4) == CKR_ARGUMENTS_BAD, "NULL PIN with a length");
    return 0;
}

int main(int argc, char **argv)
{
    void *lib;
    CK_C_GetFunctionList get;
    CK_RV rv;
    int rc = 1;

    if (argc < 3) {
        fprintf(stderr, "usage: p11_check MODULE "
                        "attrs|fork|threads|login|overlap|signinit|multipart|loop|initargs|attrtypes|"
                        "derive|sign|verify|badpin [ARGS]\n");
        return 2;
    }
    CHECK((lib = dlopen(argv[1], RTLD_NOW)) != NULL, "dlopen: %s", dlerror());
    CHECK((get = (CK_C_GetFunctionList)dlsym(lib, "C_GetFunctionList")) != NULL, "no C_GetFunctionList");
    CHECK(get(&f) == CKR_OK, "C_GetFunctionList");
    if (!strcmp(argv[2], "initargs") && argc > 3) { /* before any C_Initialize */
        rc = mode_initargs(argv[3]);
        printf("ok initargs\n");
        return rc;
    }
    CHECK((rv = f->C_Initialize(NULL)) == CKR_OK, "C_Initialize rv=0x%lx", rv);
    /* P11_CHECK_PROXY: p11-kit-proxy.so counts C_Initialize calls (the second is CKR_OK and needs
     * its own C_Finalize); the module itself refuses the second */
    rv = f->C_Initialize(NULL);
    CHECK(rv == CKR_CRYPTOKI_ALREADY_INITIALIZED ||
              (rv == CKR_OK && getenv("P11_CHECK_PROXY") != NULL && f->C_Finalize(NULL) == CKR_OK),
          "double C_Initialize rv=0x%lx", rv);
    if (!strcmp(argv[2], "attrs"))
        rc = mode_attrs();
    else if (!strcmp(argv[2], "fork") && argc > 3)
        rc = mode_fork(argv[3]);
    else if (!strcmp(argv[2], "threads") && argc > 4)
        rc = mode_threads(argv[3], atoi(argv[4]));
    else if (!strcmp(argv[2], "overlap") && argc > 5)
        rc = mode_overlap(argv[3], argv[4], atol(argv[5]));
    else if (!strcmp(argv[2], "login") && argc > 3)
        rc = mode_login(argv[3]);
    else if (!strcmp(argv[2], "signinit") && argc > 3)
        rc = mode_signinit(argv[3]);
    else if (!strcmp(argv[2], "multipart") && argc > 3)
        rc = mode_multipart(argv[3]);
    else if (!strcmp(argv[2], "loop") && argc > 4)
        rc = mode_loop(argv[3], atoi(argv[4]));
    else if (!strcmp(argv[2], "attrtypes"))
        rc = mode_attrtypes();
    else if (!strcmp(argv[2], "derive") && argc > 5)
        rc = mode_derive(argv[3], argv[4], strtoul(argv[5], NULL, 10));
    else if (!strcmp(argv[2], "sign") && argc > 5)
        rc = mode_sign(argv[3], argv[4], argv[5]);
    else if (!strcmp(argv[2], "verify") && argc > 6)
        rc = mode_verify(argv[3], argv[4], argv[5], argv[6]);
    else if (!strcmp(argv[2], "badpin") && argc > 3)
        rc = mode_badpin(argv[3]);
    CHECK(f->C_Finalize(NULL) == CKR_OK, "C_Finalize");
    CHECK(f->C_GetInfo(&(CK_INFO){0}) == CKR_CRYPTOKI_NOT_INITIALIZED, "call after C_Finalize");
    if (rc == 0)
        printf("ok %s\n", argv[2]);
    return rc;
}
