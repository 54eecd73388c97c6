/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libkeygate-pkcs11.so: C_Initialize/C_Finalize, fork, locking, library/slot/token information.
 *
 * C_Initialize reads keygate.conf and the key references (local files, never the network: p11-kit
 * loads this module into every GnuTLS program). Locking is internal whatever pInitArgs says.
 * Fork: the child sees CKR_CRYPTOKI_NOT_INITIALIZED until it calls C_Initialize, which drops the
 * parent's sessions and keeps the token with the keys the parent released (no new attestation).
 * Only C_GetFunctionList is exported (keygate-pkcs11.map).
 */
#define _GNU_SOURCE /* pipe2 */
#include <fcntl.h>
#include <openssl/crypto.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "keygate/version.h"
#include "kg_libctx.h"
#include "kg_log.h"
#include "p11.h"

kg_p11_state kg_p11 = {.lock = PTHREAD_MUTEX_INITIALIZER, .release_lock = PTHREAD_RWLOCK_INITIALIZER};
static pthread_once_t kg_p11_atfork_once = PTHREAD_ONCE_INIT;

void kg_p11_pad(unsigned char *dst, size_t size, const char *src)
{
    size_t len = strlen(src);
    memset(dst, ' ', size);
    memcpy(dst, src, len < size ? len : size);
}

int kg_p11_ready(void)
{
    return kg_p11.initialized && kg_p11.pid == getpid();
}

CK_RV kg_p11_check_slot(CK_SLOT_ID slot)
{
    if (!kg_p11_ready())
        return CKR_CRYPTOKI_NOT_INITIALIZED;
    return slot == KG_P11_SLOT_ID ? CKR_OK : CKR_SLOT_ID_INVALID;
}

/* Another parent thread may have held a lock at fork(): re-create ours (no I/O, no allocation).
 * The child stays "not initialised" (pid check) until it calls C_Initialize. */
static void kg_p11_atfork_child(void)
{
    pthread_mutex_init(&kg_p11.lock, NULL);
    pthread_rwlock_init(&kg_p11.release_lock, NULL);
    if (kg_p11.token != NULL)
        kg_keysource_atfork_child(kg_p11.token->keys_src);
}

static void kg_p11_atfork_register(void)
{
    pthread_atfork(NULL, NULL, kg_p11_atfork_child);
}

/* Copies the NUL-terminated string at p into out (cap bytes with the NUL), reading only memory
 * the kernel says is readable: write(2) of one byte per page into a pipe fails with EFAULT where
 * a load would fault. Returns 1 when a whole string was copied. */
static int readable_string(const void *p, char *out, size_t cap)
{
    const unsigned char *s = p;
    uintptr_t start = (uintptr_t)p, checked = start; /* [start, checked) is known readable */
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    unsigned char sink;
    int fds[2], ok = 0;

    if (start < page || start > UINTPTR_MAX - cap || pipe2(fds, O_CLOEXEC | O_NONBLOCK) != 0)
        return 0;
    for (size_t i = 0; i < cap; i++) {
        if (start + i == checked) {
            if (write(fds[1], s + i, 1) != 1 || read(fds[0], &sink, 1) != 1)
                break;
            checked = (start + i) / page * page + page;
        }
        out[i] = (char)s[i];
        if (s[i] == '\0') {
            ok = 1;
            break;
        }
    }
    close(fds[0]);
    close(fds[1]);
    return ok;
}

/* pReserved of C_Initialize. PKCS#11 says NULL_PTR, else CKR_ARGUMENTS_BAD; p11-kit's non-standard
 * x-init-reserved puts the module file's string there (the pointer is the string, nothing tells a
 * module that it came from p11-kit). So a non-NULL pReserved is read only through
 * readable_string (never a fault on (void *)1 or an unmapped page, at most cap bytes) and
 * accepted only in the documented forms, "config=/ABSOLUTE/PATH" or "/ABSOLUTE/PATH" (or empty),
 * printable; anything else is CKR_ARGUMENTS_BAD. *out: the string, or NULL when empty. */
static CK_RV reserved_config(const void *p, char *buf, size_t cap, const char **out)
{
    const char *s = buf;

    *out = NULL;
    if (!readable_string(p, buf, cap))
        goto bad;
    while (*s == ' ' || *s == '\t')
        s++;
    if (*s == '\0')
        return CKR_OK; /* "x-init-reserved:" without a value: as if not set */
    if (strncmp(s, "config=", 7) == 0 && s[7] == '/')
        *out = s;
    else if (*s == '/')
        *out = s;
    else
        goto bad;
    for (const char *c = s; *c != '\0'; c++)
        if ((unsigned char)*c < 0x20 || *c == 0x7f)
            goto bad;
    return CKR_OK;
bad:
    *out = NULL;
    KG_LOG(KG_LOG_ERROR, "PKCS#11 C_Initialize: pReserved must be NULL or p11-kit's x-init-reserved "
                         "\"config=/path/keygate.conf\"");
    return CKR_ARGUMENTS_BAD;
}

CK_RV kg_C_Initialize(CK_VOID_PTR init_args)
{
    char reserved_buf[KG_CONF_STR + 16];
    CK_C_INITIALIZE_ARGS *args = init_args;
    const char *reserved = NULL;
    kg_p11_token *token = NULL;
    int no_threads = 0;
    CK_RV rv = CKR_OK;

    if (args != NULL) {
        int some = args->CreateMutex || args->DestroyMutex || args->LockMutex || args->UnlockMutex;
        int all = args->CreateMutex && args->DestroyMutex && args->LockMutex && args->UnlockMutex;
        if (some && !all)
            return CKR_ARGUMENTS_BAD;
        /* p11-kit passes CKF_LIBRARY_CANT_CREATE_OS_THREADS for GnuTLS programs: releases are
         * then sequential (no transfer threads of ours) */
        no_threads = (args->flags & CKF_LIBRARY_CANT_CREATE_OS_THREADS) != 0;
        /* callbacks or not, we lock with pthreads (always available here); p11-kit's
         * x-init-reserved arrives in pReserved: "config=/path/keygate.conf" or a bare path */
        if (args->pReserved != NULL &&
            (rv = reserved_config(args->pReserved, reserved_buf, sizeof(reserved_buf), &reserved)) != CKR_OK)
            return rv;
    }
    pthread_once(&kg_p11_atfork_once, kg_p11_atfork_register);
    pthread_mutex_lock(&kg_p11.lock);
    if (kg_p11_ready()) {
        rv = CKR_CRYPTOKI_ALREADY_INITIALIZED;
        goto out;
    }
    if (kg_p11.initialized) {
        /* a forked child: the parent's sessions are not ours; its token and released keys are
         * (spec: the child is a new application; keys stay valid, no new attestation) */
        kg_p11_sessions_drop(0);
        kg_p11_secrets_drop(0);
        kg_p11.logged_in = 0;
        kg_p11.pid = getpid();
        KG_DEBUG("PKCS#11 C_Initialize in forked child %d: keeping %zu key(s)", (int)getpid(),
                 kg_p11.token ? kg_p11.token->nkeys : (size_t)0);
        goto out;
    }
    pthread_mutex_unlock(&kg_p11.lock);
    rv = kg_p11_token_load(reserved, &token); /* local files only */
    pthread_mutex_lock(&kg_p11.lock);
    if (rv != CKR_OK)
        goto out;
    if (kg_p11_ready()) { /* another thread won the race */
        kg_p11_token_free(token);
        rv = CKR_CRYPTOKI_ALREADY_INITIALIZED;
        goto out;
    }
    kg_p11.token = token;
    kg_p11.no_threads = no_threads;
    if (token->keys_src != NULL) /* a preload's parallel transfers need threads */
        kg_keysource_set_threads(token->keys_src, !no_threads);
    kg_p11.initialized = 1;
    kg_p11.pid = getpid();
    kg_p11.logged_in = 0;
    if (kg_p11.next_session == 0)
        kg_p11.next_session = 1;
    if (kg_p11.next_object == 0)
        kg_p11.next_object = KG_P11_SESSION_OBJ_BASE;
    KG_DEBUG("PKCS#11 C_Initialize: %zu key(s) from %s", token->nkeys,
             token->conf_path[0] ? token->conf_path : "(no keygate.conf)");
out:
    pthread_mutex_unlock(&kg_p11.lock);
    return rv;
}

CK_RV kg_C_Finalize(CK_VOID_PTR reserved)
{
    kg_p11_token *token;

    if (reserved != NULL)
        return CKR_ARGUMENTS_BAD;
    pthread_mutex_lock(&kg_p11.lock);
    if (!kg_p11_ready()) {
        pthread_mutex_unlock(&kg_p11.lock);
        return CKR_CRYPTOKI_NOT_INITIALIZED;
    }
    kg_p11_sessions_drop(0); /* a session still in use is freed by its last user */
    kg_p11_secrets_drop(0);
    free(kg_p11.sessions);
    kg_p11.sessions = NULL;
    kg_p11.nsessions = kg_p11.cap_sessions = 0;
    kg_p11.logged_in = 0;
    kg_p11.initialized = 0;
    token = kg_p11.token;
    kg_p11.token = NULL;
    pthread_mutex_unlock(&kg_p11.lock);
    /* a release still running in another thread holds release_lock (shared) and the token */
    pthread_rwlock_wrlock(&kg_p11.release_lock);
    /* stops and joins every lease refresh first: after C_Finalize p11-kit may dlclose us, and no
     * thread may be left in our code or on the state freed here */
    kg_p11_token_free(token); /* frees (and zeroizes) the released keys */
    /* everything made in keygate's library context is gone: free it too (its DRBGs), so leak
     * checkers see nothing; the next C_Initialize gets a fresh one */
    kg_libctx_cleanup();
    pthread_rwlock_unlock(&kg_p11.release_lock);
    return CKR_OK;
}

CK_RV kg_C_GetInfo(CK_INFO_PTR info)
{
    if (!kg_p11_ready())
        return CKR_CRYPTOKI_NOT_INITIALIZED;
    if (info == NULL)
        return CKR_ARGUMENTS_BAD;
    memset(info, 0, sizeof(*info));
    info->cryptokiVersion.major = 2;
    info->cryptokiVersion.minor = 40;
    kg_p11_pad(info->manufacturerID, sizeof(info->manufacturerID), "keygate");
    kg_p11_pad(info->libraryDescription, sizeof(info->libraryDescription), "keygate attested keys");
    info->libraryVersion.major = KEYGATE_VERSION_MAJOR;
    info->libraryVersion.minor = KEYGATE_VERSION_MINOR;
    return CKR_OK;
}

CK_RV kg_C_GetSlotList(CK_BBOOL token_present, CK_SLOT_ID_PTR list, CK_ULONG_PTR count)
{
    if (!kg_p11_ready())
        return CKR_CRYPTOKI_NOT_INITIALIZED;
    if (count == NULL)
        return CKR_ARGUMENTS_BAD;
    if (list != NULL) {
        if (*count < 1) {
            *count = 1;
            return CKR_BUFFER_TOO_SMALL;
        }
        list[0] = KG_P11_SLOT_ID;
    }
    *count = 1;
    return CKR_OK;
}

CK_RV kg_C_GetSlotInfo(CK_SLOT_ID slot, CK_SLOT_INFO_PTR info)
{
    CK_RV rv = kg_p11_check_slot(slot);

    if (rv != CKR_OK)
        return rv;
    if (info == NULL)
        return CKR_ARGUMENTS_BAD;
    memset(info, 0, sizeof(*info));
    kg_p11_pad(info->slotDescription, sizeof(info->slotDescription), "keygate attested keys (Intel TDX)");
    kg_p11_pad(info->manufacturerID, sizeof(info->manufacturerID), "keygate");
    info->flags = CKF_TOKEN_PRESENT;
    info->hardwareVersion.major = KEYGATE_VERSION_MAJOR;
    info->hardwareVersion.minor = KEYGATE_VERSION_MINOR;
    info->firmwareVersion = info->hardwareVersion;
    return CKR_OK;
}

CK_RV kg_C_GetTokenInfo(CK_SLOT_ID slot, CK_TOKEN_INFO_PTR info)
{
    CK_RV rv = kg_p11_check_slot(slot);

    if (rv != CKR_OK)
        return rv;
    if (info == NULL)
        return CKR_ARGUMENTS_BAD;
    memset(info, 0, sizeof(*info));
    pthread_mutex_lock(&kg_p11.lock);
    if (!kg_p11_ready()) {
        pthread_mutex_unlock(&kg_p11.lock);
        return CKR_CRYPTOKI_NOT_INITIALIZED;
    }
    kg_p11_pad(info->label, sizeof(info->label), KG_P11_TOKEN_LABEL);
    kg_p11_pad(info->manufacturerID, sizeof(info->manufacturerID), "keygate");
    kg_p11_pad(info->model, sizeof(info->model), "TDX attested");
    kg_p11_pad(info->serialNumber, sizeof(info->serialNumber), kg_p11.token->serial);
    /* no PIN: C_Login(CKU_USER) authenticates by attestation (protected authentication path),
     * and the keys are usable without it (attestation runs on first private use); with
     * pkcs11_pin_file the application gives the PIN (no protected path) */
    info->flags = CKF_TOKEN_INITIALIZED | CKF_USER_PIN_INITIALIZED | CKF_RNG;
    if (kg_p11.token->pin == NULL)
        info->flags |= CKF_PROTECTED_AUTHENTICATION_PATH;
    /* pkcs11_release = login: consumers log in when they load a key (the nginx master, before
     * its workers fork), and that C_Login attests; with a PIN private keys need the login */
    if (kg_p11.token->login_required)
        info->flags |= CKF_LOGIN_REQUIRED;
    info->ulMaxSessionCount = CK_EFFECTIVELY_INFINITE;
    info->ulSessionCount = kg_p11.nsessions;
    info->ulMaxRwSessionCount = CK_EFFECTIVELY_INFINITE;
    info->ulRwSessionCount = 0;
    for (size_t i = 0; i < kg_p11.nsessions; i++)
        if (kg_p11.sessions[i]->flags & CKF_RW_SESSION)
            info->ulRwSessionCount++;
    info->ulMaxPinLen = kg_p11.token->pin != NULL ? KG_P11_PIN_MAX : 0;
    info->ulMinPinLen = kg_p11.token->pin != NULL ? 1 : 0;
    info->ulTotalPublicMemory = CK_UNAVAILABLE_INFORMATION;
    info->ulFreePublicMemory = CK_UNAVAILABLE_INFORMATION;
    info->ulTotalPrivateMemory = CK_UNAVAILABLE_INFORMATION;
    info->ulFreePrivateMemory = CK_UNAVAILABLE_INFORMATION;
    info->hardwareVersion.major = KEYGATE_VERSION_MAJOR;
    info->hardwareVersion.minor = KEYGATE_VERSION_MINOR;
    info->firmwareVersion = info->hardwareVersion;
    memset(info->utcTime, ' ', sizeof(info->utcTime));
    pthread_mutex_unlock(&kg_p11.lock);
    return CKR_OK;
}

CK_RV kg_C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR list)
{
    if (list == NULL)
        return CKR_ARGUMENTS_BAD;
    *list = &kg_p11_function_list;
    return CKR_OK;
}

__attribute__((visibility("default"))) CK_RV C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR list)
{
    return kg_C_GetFunctionList(list);
}
