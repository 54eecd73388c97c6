/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Sessions, login and random numbers.
 *
 * Sessions live in kg_p11.sessions (guarded by kg_p11.lock). An entry point that works on a
 * session takes it with kg_p11_session_get (a reference + the session's own mutex) and gives it
 * back with kg_p11_session_put, so crypto and network I/O never run under the global lock and a
 * concurrent C_CloseSession only frees the session after the last user is done.
 *
 * Login is per application (all sessions). Without pkcs11_pin_file it takes no PIN: the token has
 * a protected authentication path, and "authenticating" means attesting. C_Login accepts only a
 * NULL or empty PIN; any other PIN is CKR_PIN_INCORRECT and changes nothing (no login, no
 * attestation), so an application that believes it typed a secret is told it did not authenticate
 * with it. With pkcs11_pin_file, C_Login takes exactly that PIN (pin_matches: constant time) and
 * private keys need the login in both release modes; a wrong, NULL or empty PIN is
 * CKR_PIN_INCORRECT and changes nothing. There is no retry counter (docs/pkcs11.md: the module's
 * state is per process, and p11-kit's server starts one per connection). With pkcs11_release =
 * login, C_Login(CKU_USER) runs the release pipeline for every key; otherwise it only changes the session
 * state and keys are released at their first private use. Closing the last session logs out (PKCS#11 §5.6).
 */
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>

#include "kg_libctx.h"
#include "kg_log.h"
#include "p11.h"

void kg_p11_op_reset(kg_p11_op *op)
{
    EVP_PKEY_CTX_free(op->pctx);
    EVP_MD_CTX_free(op->mdctx);
    if (op->buf != NULL)
        OPENSSL_clear_free(op->buf, op->buf_len);
    memset(op, 0, sizeof(*op));
}

static void session_free(kg_p11_session *s)
{
    kg_p11_op_reset(&s->sign);
    kg_p11_op_reset(&s->verify);
    kg_p11_op_reset(&s->decrypt);
    kg_p11_op_reset(&s->encrypt);
    free(s->found);
    pthread_mutex_destroy(&s->mutex);
    free(s);
}

/* Removes entry i from the table (kg_p11.lock held) and frees it unless it is in use. */
static void session_remove(size_t i, int free_busy)
{
    kg_p11_session *s = kg_p11.sessions[i];

    kg_p11.sessions[i] = kg_p11.sessions[--kg_p11.nsessions];
    kg_p11_secrets_drop(s->handle);
    s->closed = 1;
    if (s->refs == 0 || free_busy)
        session_free(s);
    if (kg_p11.nsessions == 0)
        kg_p11.logged_in = 0; /* the last session closed: back to the public state */
}

void kg_p11_sessions_drop(int free_busy)
{
    /* in a forked child, a session another parent thread was using may be mid-operation:
     * leave it alone (a small leak) rather than free state we cannot trust */
    while (kg_p11.nsessions > 0)
        session_remove(kg_p11.nsessions - 1, free_busy);
}

CK_RV kg_p11_session_get(CK_SESSION_HANDLE h, kg_p11_session **out)
{
    kg_p11_session *s = NULL;

    pthread_mutex_lock(&kg_p11.lock);
    if (!kg_p11_ready()) {
        pthread_mutex_unlock(&kg_p11.lock);
        return CKR_CRYPTOKI_NOT_INITIALIZED;
    }
    for (size_t i = 0; i < kg_p11.nsessions; i++)
        if (kg_p11.sessions[i]->handle == h) {
            s = kg_p11.sessions[i];
            s->refs++;
            break;
        }
    pthread_mutex_unlock(&kg_p11.lock);
    if (s == NULL)
        return CKR_SESSION_HANDLE_INVALID;
    pthread_mutex_lock(&s->mutex);
    *out = s;
    return CKR_OK;
}

void kg_p11_session_put(kg_p11_session *s)
{
    int gone;

    pthread_mutex_unlock(&s->mutex);
    pthread_mutex_lock(&kg_p11.lock);
    gone = --s->refs == 0 && s->closed;
    pthread_mutex_unlock(&kg_p11.lock);
    if (gone)
        session_free(s);
}

CK_RV kg_C_OpenSession(CK_SLOT_ID slot, CK_FLAGS flags, CK_VOID_PTR app, CK_NOTIFY notify,
                       CK_SESSION_HANDLE_PTR out)
{
    kg_p11_session *s;
    CK_RV rv = kg_p11_check_slot(slot);

    if (rv != CKR_OK)
        return rv;
    if (out == NULL)
        return CKR_ARGUMENTS_BAD;
    if (!(flags & CKF_SERIAL_SESSION))
        return CKR_SESSION_PARALLEL_NOT_SUPPORTED;
    if ((s = calloc(1, sizeof(*s))) == NULL)
        return CKR_HOST_MEMORY;
    s->flags = flags & (CKF_SERIAL_SESSION | CKF_RW_SESSION); /* notify callbacks are never called */
    pthread_mutex_init(&s->mutex, NULL);
    pthread_mutex_lock(&kg_p11.lock);
    if (!kg_p11_ready()) {
        rv = CKR_CRYPTOKI_NOT_INITIALIZED;
        goto err;
    }
    if (kg_p11.nsessions == kg_p11.cap_sessions) {
        size_t cap = kg_p11.cap_sessions ? 2 * kg_p11.cap_sessions : 16;
        kg_p11_session **grown = realloc(kg_p11.sessions, cap * sizeof(*grown));
        if (grown == NULL) {
            rv = CKR_HOST_MEMORY;
            goto err;
        }
        kg_p11.sessions = grown;
        kg_p11.cap_sessions = cap;
    }
    s->handle = kg_p11.next_session++; /* never reused while the module lives */
    kg_p11.sessions[kg_p11.nsessions++] = s;
    *out = s->handle;
    pthread_mutex_unlock(&kg_p11.lock);
    return CKR_OK;
err:
    pthread_mutex_unlock(&kg_p11.lock);
    pthread_mutex_destroy(&s->mutex);
    free(s);
    return rv;
}

CK_RV kg_C_CloseSession(CK_SESSION_HANDLE h)
{
    CK_RV rv = CKR_SESSION_HANDLE_INVALID;

    pthread_mutex_lock(&kg_p11.lock);
    if (!kg_p11_ready())
        rv = CKR_CRYPTOKI_NOT_INITIALIZED;
    else
        for (size_t i = 0; i < kg_p11.nsessions; i++)
            if (kg_p11.sessions[i]->handle == h) {
                session_remove(i, 0);
                rv = CKR_OK;
                break;
            }
    pthread_mutex_unlock(&kg_p11.lock);
    return rv;
}

CK_RV kg_C_CloseAllSessions(CK_SLOT_ID slot)
{
    CK_RV rv;

    pthread_mutex_lock(&kg_p11.lock);
    if ((rv = kg_p11_check_slot(slot)) == CKR_OK)
        kg_p11_sessions_drop(0);
    pthread_mutex_unlock(&kg_p11.lock);
    return rv;
}

CK_RV kg_C_GetSessionInfo(CK_SESSION_HANDLE h, CK_SESSION_INFO_PTR info)
{
    kg_p11_session *s;
    CK_RV rv;
    int rw, user;

    if (info == NULL)
        return CKR_ARGUMENTS_BAD;
    if ((rv = kg_p11_session_get(h, &s)) != CKR_OK)
        return rv;
    rw = (s->flags & CKF_RW_SESSION) != 0;
    user = __atomic_load_n(&kg_p11.logged_in, __ATOMIC_ACQUIRE);
    memset(info, 0, sizeof(*info));
    info->slotID = KG_P11_SLOT_ID;
    info->state = rw ? (user ? CKS_RW_USER_FUNCTIONS : CKS_RW_PUBLIC_SESSION)
                     : (user ? CKS_RO_USER_FUNCTIONS : CKS_RO_PUBLIC_SESSION);
    info->flags = s->flags;
    info->ulDeviceError = 0;
    kg_p11_session_put(s);
    return CKR_OK;
}

/* Whether pin is the token's PIN, in time independent of the configured PIN's bytes and length:
 * both sides are compared over the full zero-padded KG_P11_PIN_MAX bytes (CRYPTO_memcmp), and the
 * lengths are compared without an early exit. The time depends only on the given length (the
 * copy), which the caller knows; a given PIN longer than any PIN can be is refused at once, which
 * tells only the public maximum (ulMaxPinLen). The copy lives on the stack and is cleansed. */
static int pin_matches(const kg_p11_token *t, const CK_UTF8CHAR *pin, CK_ULONG len)
{
    unsigned char given[KG_P11_PIN_MAX];
    int diff;

    if (len > KG_P11_PIN_MAX)
        return 0;
    memset(given, 0, sizeof(given));
    if (len > 0)
        memcpy(given, pin, len);
    diff = CRYPTO_memcmp(given, t->pin, KG_P11_PIN_MAX) | ((size_t)len != t->pin_len);
    OPENSSL_cleanse(given, sizeof(given));
    return diff == 0;
}

CK_RV kg_C_Login(CK_SESSION_HANDLE h, CK_USER_TYPE user, CK_UTF8CHAR_PTR pin, CK_ULONG pin_len)
{
    kg_p11_session *s;
    int release;
    CK_RV rv;

    if ((rv = kg_p11_session_get(h, &s)) != CKR_OK)
        return rv;
    kg_p11_session_put(s);
    if (user == CKU_CONTEXT_SPECIFIC)
        return CKR_OPERATION_NOT_INITIALIZED; /* no key has CKA_ALWAYS_AUTHENTICATE */
    if (user != CKU_USER)
        return CKR_USER_TYPE_INVALID; /* there is no security officer: the token is not administered */
    if (pin == NULL && pin_len > 0)
        return CKR_ARGUMENTS_BAD;
    pthread_mutex_lock(&kg_p11.lock);
    rv = !kg_p11_ready()    ? CKR_CRYPTOKI_NOT_INITIALIZED
         : kg_p11.logged_in ? CKR_USER_ALREADY_LOGGED_IN
                            : CKR_OK;
    if (rv == CKR_OK && kg_p11.token->pin != NULL) {
        if (!pin_matches(kg_p11.token, pin, pin_len)) /* NULL and empty too: a PIN is never empty */
            rv = CKR_PIN_INCORRECT;
    } else if (rv == CKR_OK && pin_len > 0) {
        rv = CKR_PIN_INCORRECT; /* the protected path has no PIN: a given one is never right */
    }
    release = rv == CKR_OK && kg_p11.token->release_on_login;
    pthread_mutex_unlock(&kg_p11.lock);
    if (rv != CKR_OK)
        return rv;
    /* the token's authentication is the attestation */
    if (release && (rv = kg_p11_release_all("C_Login")) != CKR_OK)
        return rv;
    pthread_mutex_lock(&kg_p11.lock);
    if (!kg_p11_ready())
        rv = CKR_CRYPTOKI_NOT_INITIALIZED;
    else if (kg_p11.nsessions == 0)
        rv = CKR_SESSION_HANDLE_INVALID; /* closed while we attested */
    else if (kg_p11.logged_in)
        rv = CKR_USER_ALREADY_LOGGED_IN;
    else
        __atomic_store_n(&kg_p11.logged_in, 1, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&kg_p11.lock);
    return rv;
}

CK_RV kg_C_Logout(CK_SESSION_HANDLE h)
{
    kg_p11_session *s;
    CK_RV rv;

    if ((rv = kg_p11_session_get(h, &s)) != CKR_OK)
        return rv;
    kg_p11_session_put(s);
    pthread_mutex_lock(&kg_p11.lock);
    if (!kg_p11.logged_in)
        rv = CKR_USER_NOT_LOGGED_IN;
    else
        __atomic_store_n(&kg_p11.logged_in, 0, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&kg_p11.lock);
    return rv;
}

CK_RV kg_C_SeedRandom(CK_SESSION_HANDLE h, CK_BYTE_PTR seed, CK_ULONG len)
{
    kg_p11_session *s;
    CK_RV rv;

    if ((rv = kg_p11_session_get(h, &s)) != CKR_OK)
        return rv;
    kg_p11_session_put(s);
    if (seed == NULL && len > 0)
        return CKR_ARGUMENTS_BAD;
    return CKR_RANDOM_SEED_NOT_SUPPORTED; /* OpenSSL's DRBG seeds itself from the OS */
}

CK_RV kg_C_GenerateRandom(CK_SESSION_HANDLE h, CK_BYTE_PTR out, CK_ULONG len)
{
    kg_p11_session *s;
    CK_RV rv;

    if ((rv = kg_p11_session_get(h, &s)) != CKR_OK)
        return rv;
    if (out == NULL && len > 0)
        rv = CKR_ARGUMENTS_BAD;
    else if (len > 0 && RAND_bytes_ex(kg_libctx(), out, (size_t)len, 0) != 1)
        rv = CKR_FUNCTION_FAILED;
    kg_p11_session_put(s);
    return rv;
}
