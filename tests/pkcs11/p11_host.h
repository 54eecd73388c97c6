/* SPDX-License-Identifier: Apache-2.0 */
/*
 * p11_host.h: what the one-file PKCS#11 test hosts (p11_check.c, p11_client.c,
 * tests/teardown/teardown_check.c) share, so a failed check reads the same in all of them and
 * slot or session handling is fixed in one place. Header-only (static functions) because each
 * host is compiled alone by build_host in tests/integration/kglib.py, which puts this folder on
 * the include path.
 *
 * f is the module's function list: the host's main sets it from C_GetFunctionList. A host that
 * must print more on a failed CHECK defines P11_HOST_ON_FAIL() before including this
 * (teardown_check prints OpenSSL's error queue).
 */
#ifndef P11_HOST_H
#define P11_HOST_H

#include <p11-kit/pkcs11.h>
#include <stdio.h>
#include <stdlib.h>

#ifndef P11_HOST_ON_FAIL
#define P11_HOST_ON_FAIL() ((void)0)
#endif

/* Prints "FAIL file:line: <printf message>" (and P11_HOST_ON_FAIL's output) and exits 1. */
#define CHECK(cond, ...)                                                                                     \
    do {                                                                                                     \
        if (!(cond)) {                                                                                       \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                                             \
            fprintf(stderr, __VA_ARGS__);                                                                    \
            fprintf(stderr, "\n");                                                                           \
            P11_HOST_ON_FAIL();                                                                              \
            exit(1);                                                                                         \
        }                                                                                                    \
    } while (0)

static CK_FUNCTION_LIST *f;

/* The only slot with a token (keygate has one). */
static inline CK_SLOT_ID first_slot(void)
{
    CK_SLOT_ID slots[4];
    CK_ULONG n = 4;
    CK_RV rv = f->C_GetSlotList(CK_TRUE, slots, &n);
    CHECK(rv == CKR_OK && n == 1, "C_GetSlotList rv=0x%lx n=%lu", rv, n);
    return slots[0];
}

/* A read-only session on first_slot(); the caller closes it (or C_Finalize does). */
static inline CK_SESSION_HANDLE open_session(void)
{
    CK_SESSION_HANDLE s;
    CK_RV rv = f->C_OpenSession(first_slot(), CKF_SERIAL_SESSION, NULL, NULL, &s);
    CHECK(rv == CKR_OK, "C_OpenSession rv=0x%lx", rv);
    return s;
}

#endif
