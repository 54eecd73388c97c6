/*
 * Lazy attestation: a key's private part is released (evidence -> ITA -> KBS) at its first
 * private-key operation, or for all keys at C_Login with pkcs11_release = login. The released
 * EVP_PKEY lives in the key's lease (release/kg_lease.h): refreshed in the background before the
 * lease ends, wiped on revocation or when it ends; forked children keep it and refresh on their
 * own. The global lock is never held across the network: releases are
 * serialised by kg_p11.release_lock only, so concurrent first uses of a key attest once.
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

/* With release_lock held. */
static int release_ctx(kg_p11_token *t, kg_err *err)
{
    if (t->release == NULL)
        t->release = kg_release_ctx_new(&t->cfg, err);
    return t->release != NULL;
}

/* The lease of k, created at first use. With release_lock held. */
static kg_lease *key_lease(kg_p11_token *t, kg_p11_key *k)
{
    if (k->lease == NULL)
        __atomic_store_n(&k->lease, kg_lease_new(&k->ref, &t->cfg), __ATOMIC_RELEASE);
    return k->lease;
}

CK_RV kg_p11_private(kg_p11_key *k, const char *caller, EVP_PKEY **out)
{
    kg_lease *lease = __atomic_load_n(&k->lease, __ATOMIC_ACQUIRE);
    /* CKF_LIBRARY_CANT_CREATE_OS_THREADS: no background refresh; a release when the lease ends */
    int refresh = !kg_p11.no_threads;
    EVP_PKEY *priv = NULL;
    kg_release_times times;
    kg_lease_state st = KG_LEASE_EMPTY;
    kg_err err;

    kg_err_clear(&err);
    *out = NULL;
    /* the hot path: a shared lock and a reference count, never the network */
    if (lease != NULL && (st = kg_lease_acquire(lease, refresh, &priv, &err)) == KG_LEASE_OK) {
        *out = priv;
        return CKR_OK;
    }
    if (st == KG_LEASE_REVOKED) {
        KG_LOG(KG_LOG_ERROR, "PKCS#11 %s: key '%s': %s", caller, k->label, err.msg);
        return CKR_DEVICE_ERROR;
    }
    /* pkcs11_release = login: the token said CKF_LOGIN_REQUIRED and releases at C_Login only */
    if (kg_p11.token != NULL && kg_p11.token->release_on_login &&
        !__atomic_load_n(&kg_p11.logged_in, __ATOMIC_ACQUIRE))
        return CKR_USER_NOT_LOGGED_IN;
    pthread_mutex_lock(&kg_p11.release_lock);
    if (kg_p11.token == NULL) { /* finalized meanwhile */
        pthread_mutex_unlock(&kg_p11.release_lock);
        return CKR_CRYPTOKI_NOT_INITIALIZED;
    }
    if ((lease = key_lease(kg_p11.token, k)) == NULL) {
        pthread_mutex_unlock(&kg_p11.release_lock);
        return CKR_HOST_MEMORY;
    }
    if ((st = kg_lease_acquire(lease, refresh, &priv, &err)) == KG_LEASE_EMPTY) {
        KG_INFO("PKCS#11 %s: releasing key '%s' (%s)", caller, k->label, k->ref.key_id);
        if (!release_ctx(kg_p11.token, &err) ||
            !kg_release_key(kg_p11.token->release, &k->ref, &priv, &times, &err)) {
            pthread_mutex_unlock(&kg_p11.release_lock);
            log_failure(caller, k, &err);
            return kg_p11_rv_of(&err);
        }
        KG_DEBUG("PKCS#11: key '%s' released (%s attestation)", k->label, times.attested ? "new" : "cached");
        if (!kg_lease_install(lease, priv)) {
            pthread_mutex_unlock(&kg_p11.release_lock);
            EVP_PKEY_free(priv);
            return CKR_HOST_MEMORY;
        }
        st = KG_LEASE_OK;
    }
    pthread_mutex_unlock(&kg_p11.release_lock);
    if (st == KG_LEASE_REVOKED) {
        KG_LOG(KG_LOG_ERROR, "PKCS#11 %s: key '%s': %s", caller, k->label, err.msg);
        return CKR_DEVICE_ERROR;
    }
    *out = priv;
    return CKR_OK;
}

CK_RV kg_p11_release_all(const char *caller)
{
    kg_p11_token *t;
    const kg_keyref **refs = NULL;
    EVP_PKEY **keys = NULL;
    kg_err *errs = NULL, err;
    size_t *idx = NULL, n = 0;
    CK_RV rv = CKR_OK;

    kg_err_clear(&err);
    pthread_mutex_lock(&kg_p11.release_lock);
    if ((t = kg_p11.token) == NULL) {
        rv = CKR_CRYPTOKI_NOT_INITIALIZED;
        goto done;
    }
    if (t->nkeys == 0)
        goto done;
    refs = calloc(t->nkeys, sizeof(*refs));
    keys = calloc(t->nkeys, sizeof(*keys));
    errs = calloc(t->nkeys, sizeof(*errs));
    idx = calloc(t->nkeys, sizeof(*idx));
    if (refs == NULL || keys == NULL || errs == NULL || idx == NULL) {
        rv = CKR_HOST_MEMORY;
        goto done;
    }
    for (size_t i = 0; i < t->nkeys; i++) {
        EVP_PKEY *live = NULL;
        kg_lease *lease = key_lease(t, &t->keys[i]);

        if (lease == NULL) {
            rv = CKR_HOST_MEMORY;
            goto done;
        }
        /* released and in its lease: nothing to do; revoked keys stay revoked (logged at use) */
        if (kg_lease_acquire(lease, 0, &live, &err) == KG_LEASE_EMPTY) {
            idx[n] = i;
            refs[n++] = &t->keys[i].ref;
        }
        EVP_PKEY_free(live);
    }
    if (n == 0)
        goto done;
    if (!release_ctx(t, &err)) {
        log_failure(caller, &t->keys[idx[0]], &err);
        rv = kg_p11_rv_of(&err);
        goto done;
    }
    KG_INFO("PKCS#11 %s: releasing %zu key(s) with one attestation", caller, n);
    if (kg_p11.no_threads) /* one after the other: the first attests, the rest reuse its token */
        for (size_t j = 0; j < n; j++)
            kg_release_key(t->release, refs[j], &keys[j], NULL, &errs[j]);
    else
        kg_release_keys(t->release, refs, n, keys, errs, NULL);
    for (size_t j = 0; j < n; j++) {
        if (keys[j] != NULL) {
            if (!kg_lease_install(t->keys[idx[j]].lease, keys[j]) && rv == CKR_OK)
                rv = CKR_HOST_MEMORY;
            EVP_PKEY_free(keys[j]); /* the lease holds its own reference */
        } else {
            log_failure(caller, &t->keys[idx[j]], &errs[j]);
            if (rv == CKR_OK)
                rv = kg_p11_rv_of(&errs[j]);
        }
    }
done:
    pthread_mutex_unlock(&kg_p11.release_lock);
    free(refs);
    free(keys);
    free(errs);
    free(idx);
    return rv;
}
