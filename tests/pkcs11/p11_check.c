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
 *
 * Prints "ok <mode>" and exits 0 on success; prints the failed check and exits 1 otherwise.
 */
#include <dlfcn.h>
#include <p11-kit/pkcs11.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static CK_FUNCTION_LIST *f;

#define CHECK(cond, ...)                                                                                     \
    do {                                                                                                     \
        if (!(cond)) {                                                                                       \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                                             \
            fprintf(stderr, __VA_ARGS__);                                                                    \
            fprintf(stderr, "\n");                                                                           \
            exit(1);                                                                                         \
        }                                                                                                    \
    } while (0)

static CK_SLOT_ID first_slot(void)
{
    CK_SLOT_ID slots[4];
    CK_ULONG n = 4;
    CK_RV rv = f->C_GetSlotList(CK_TRUE, slots, &n);
    CHECK(rv == CKR_OK && n == 1, "C_GetSlotList rv=0x%lx n=%lu", rv, n);
    return slots[0];
}

static CK_SESSION_HANDLE open_session(void)
{
    CK_SESSION_HANDLE s;
    CK_RV rv = f->C_OpenSession(first_slot(), CKF_SERIAL_SESSION, NULL, NULL, &s);
    CHECK(rv == CKR_OK, "C_OpenSession rv=0x%lx", rv);
    return s;
}

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
        /* alone: CKA_VALUE and the private components are refused */
        CK_ATTRIBUTE v = {CKA_VALUE, NULL, 0};
        rv = f->C_GetAttributeValue(s, priv[i], &v, 1);
        CHECK(rv == CKR_ATTRIBUTE_SENSITIVE && v.ulValueLen == CK_UNAVAILABLE_INFORMATION,
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
    CHECK((rv = f->C_Login(s, CKU_USER, NULL, 0)) == CKR_OK, "second C_Login rv=0x%lx", rv);
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

int main(int argc, char **argv)
{
    void *lib;
    CK_C_GetFunctionList get;
    CK_RV rv;
    int rc = 1;

    if (argc < 3) {
        fprintf(
            stderr,
            "usage: p11_check MODULE attrs|fork|threads|login|overlap|signinit|multipart|loop [LABEL [N]]\n");
        return 2;
    }
    CHECK((lib = dlopen(argv[1], RTLD_NOW)) != NULL, "dlopen: %s", dlerror());
    CHECK((get = (CK_C_GetFunctionList)dlsym(lib, "C_GetFunctionList")) != NULL, "no C_GetFunctionList");
    CHECK(get(&f) == CKR_OK, "C_GetFunctionList");
    CHECK((rv = f->C_Initialize(NULL)) == CKR_OK, "C_Initialize rv=0x%lx", rv);
    CHECK(f->C_Initialize(NULL) == CKR_CRYPTOKI_ALREADY_INITIALIZED, "double C_Initialize");
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
    CHECK(f->C_Finalize(NULL) == CKR_OK, "C_Finalize");
    CHECK(f->C_GetInfo(&(CK_INFO){0}) == CKR_CRYPTOKI_NOT_INITIALIZED, "call after C_Finalize");
    if (rc == 0)
        printf("ok %s\n", argv[2]);
    return rc;
}
