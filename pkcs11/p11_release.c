/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Lazy attestation: a key's private part is released (evidence -> ITA -> KBS) at its first
 * private-key operation, or for all keys at C_Login with pkcs11_release = login. The released
 * EVP_PKEY lives in the key's lease (release/kg_lease.h): refreshed in the background before the
 * lease ends, wiped on revocation or when it ends; forked children keep it and refresh on their
 * own. The cache, the per-key release locks and the lease install are release/kg_keysource.h's,
 * shared with the provider: a release in flight never blocks another key, and concurrent first
 * uses of a key attest once. kg_p11.release_lock is a rwlock that releases take shared and
 * C_Finalize exclusive.
 *
 * Failures map to honest return values: the attestation service or TD device failing
 * (nonce, evidence, token, transfer) is CKR_DEVICE_ERROR; a refusal by our own checks (verify,
 * unwrap, public-key match), configuration or internal errors are CKR_FUNCTION_FAILED. The debug
 * log names the step (kg_err's message).
 */
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

#include "kg_log.h"
#include "p11.h"

CK_RV kg_p11_rv_of(const kg_err *err)
{
    switch (err->step) {
    case KG_STEP_NONCE:
    case KG_STEP_EVIDENCE:
    case KG_STEP_TOKEN:
    case KG_STEP_TRANSFER: return CKR_DEVICE_ERROR;
    default: return CKR_FUNCTION_FAILED;
    }
}

static void log_failure(const char *caller, const kg_p11_key *k, const kg_err *err)
{
    if (err->request_id[0] != '\0' || err->trace_id[0] != '\0')
        KG_LOG(KG_LOG_ERROR, "PKCS#11 %s: key '%s' (%s): %s (request-id %s, trace-id %s)", caller, k->label,
               k->ref.key_id, err->msg, err->request_id[0] ? err->request_id : "-",
               err->trace_id[0] ? err->trace_id : "-");
    else
        KG_LOG(KG_LOG_ERROR, "PKCS#11 %s: key '%s' (%s): %s", caller, k->label, k->ref.key_id, err->msg);
}

/* pkcs11_release = login or a PIN: private operations need a logged-in user, also for a key
 * released earlier (C_Logout ends the right to use it, not only the right to release it). */
static int login_required(void)
{
    return kg_p11.token != NULL && kg_p11.token->login_required &&
           !__atomic_load_n(&kg_p11.logged_in, __ATOMIC_ACQUIRE);
}

CK_RV kg_p11_private(kg_p11_key *k, const char *caller, EVP_PKEY **out)
{
    /* CKF_LIBRARY_CANT_CREATE_OS_THREADS: no background refresh; a release when the lease ends */
    int refresh = !kg_p11.no_threads, attested = 0;
    kg_lease_state st;
    kg_err err;

    kg_err_clear(&err);
    *out = NULL;
    if (login_required())
        return CKR_USER_NOT_LOGGED_IN;
    /* the hot path: a shared lock and a reference count, never the network */
    if ((st = kg_lease_acquire(kg_keyslot_lease(k->slot), refresh, out, &err)) == KG_LEASE_EMPTY) {
        /* shared: releases of different keys run side by side; C_Finalize waits for them */
        pthread_rwlock_rdlock(&kg_p11.release_lock);
        if (kg_p11.token == NULL) { /* finalized meanwhile */
            pthread_rwlock_unlock(&kg_p11.release_lock);
            return CKR_CRYPTOKI_NOT_INITIALIZED;
        }
        KG_DEBUG("PKCS#11 %s: key '%s' (%s) needs its release", caller, k->label, k->ref.key_id);
        st = kg_keysource_private(kg_p11.token->keys_src, k->slot, refresh, out, &attested, &err);
        pthread_rwlock_unlock(&kg_p11.release_lock);
        if (st == KG_LEASE_OK)
            KG_DEBUG("PKCS#11: key '%s' released (%s attestation)", k->label, attested ? "new" : "cached");
    }
    switch (st) {
    case KG_LEASE_OK: return CKR_OK;
    case KG_LEASE_REVOKED:
        KG_LOG(KG_LOG_ERROR, "PKCS#11 %s: key '%s': %s", caller, k->label, err.msg);
        return CKR_DEVICE_ERROR;
    default: log_failure(caller, k, &err); return kg_p11_rv_of(&err);
    }
}

CK_RV kg_p11_release_all(const char *caller)
{
    kg_p11_token *t;
    kg_keyslot **slots = NULL;
    kg_err *errs = NULL;
    CK_RV rv = CKR_OK;

    pthread_rwlock_rdlock(&kg_p11.release_lock);
    if ((t = kg_p11.token) == NULL) {
        rv = CKR_CRYPTOKI_NOT_INITIALIZED;
        goto done;
    }
    if (t->nkeys == 0)
        goto done;
    slots = calloc(t->nkeys, sizeof(*slots));
    errs = calloc(t->nkeys, sizeof(*errs));
    if (slots == NULL || errs == NULL) {
        rv = CKR_HOST_MEMORY;
        goto done;
    }
    for (size_t i = 0; i < t->nkeys; i++)
        slots[i] = t->keys[i].slot;
    KG_INFO("PKCS#11 %s: releasing the token's key(s) not held yet, with one attestation", caller);
    if (kg_keysource_release_all(t->keys_src, slots, t->nkeys, !kg_p11.no_threads, errs) > 0)
        for (size_t i = 0; i < t->nkeys; i++)
            if (errs[i].step != KG_STEP_NONE || errs[i].msg[0] != '\0') {
                log_failure(caller, &t->keys[i], &errs[i]);
                if (rv == CKR_OK)
                    rv = kg_p11_rv_of(&errs[i]);
            }
done:
    pthread_rwlock_unlock(&kg_p11.release_lock);
    free(slots);
    free(errs);
    return rv;
}
