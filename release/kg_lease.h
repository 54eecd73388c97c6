/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kg_lease: continuous attestation of one released key in this process (issue 12).
 *
 * A lease holds the released EVP_PKEY (one reference) and when it ends (key_lease_s, at most
 * key_lease_max_s). When a private operation finds the lease close to refresh_before_s of its
 * end, it starts one refresh thread (lazily, in the process that needs it: no thread exists
 * before fork). The thread starts up to 5 s ahead (never in the first half of the time before
 * the window) and generates the next wrapping key (kg_release_ctx_prepare_key), so that the
 * refresh does not wait for it (a thread started inside the window skips this: the release
 * generates its key during the nonce, as every release does). At refresh_before_s it makes a new
 * attestation with the lease's own kg_release_ctx and a transfer of the same key id; operations
 * keep using the current key meanwhile. Transient failures (network, 5xx, 429) are
 * retried with backoff until the lease ends; a KBS denial (4xx at transfer), a token that fails
 * the local policy or a different public key is a revocation: on_revoke = wipe frees the key at
 * once, keep keeps it until the lease ends. A lease that ends wipes the key.
 *
 * Ownership: the lease owns its key reference; kg_lease_acquire hands out new references (the
 * caller frees them), so a wipe never frees memory an operation still uses: the last reference
 * frees (and OpenSSL zeroizes, secure heap) the private parts. Leases are refcounted (the refresh
 * thread holds one). Thread-safe; kg_lease_atfork_child forgets a parent's in-flight refresh.
 */
#ifndef KG_LEASE_H
#define KG_LEASE_H

#include <openssl/types.h>

#include "kg_config.h"
#include "kg_err.h"
#include "kg_keyref.h"

typedef struct kg_lease kg_lease;

typedef enum kg_lease_state {
    KG_LEASE_OK = 0,     /* *key holds a new reference */
    KG_LEASE_EMPTY = 1,  /* nothing released (yet, or the lease ended): release, then install */
    KG_LEASE_REVOKED = 2 /* revoked and wiped: err holds the revocation message */
} kg_lease_state;

/* Copies ref and cfg. Returns NULL when out of memory. */
kg_lease *kg_lease_new(const kg_keyref *ref, const kg_config *cfg);
int kg_lease_up_ref(kg_lease *lease);
void kg_lease_free(kg_lease *lease); /* drops one reference; the last one wipes the key */

/* The current key (new reference in *key) or why there is none. May start the background
 * refresh (start_refresh = 1, private operations) but never waits on the network. */
kg_lease_state kg_lease_acquire(kg_lease *lease, int start_refresh, EVP_PKEY **key, kg_err *err);

/* Stops the lease for teardown: aborts a refresh in flight (its HTTP requests are cancelled, its
 * sleeps cut short), waits for its thread to end, and starts no refresh afterwards. The key stays
 * until the last reference goes. Call it before the code or the state the refresh uses goes away
 * (C_Finalize, provider teardown, dlclose). Returns promptly (not after network timeouts).
 * Accepts NULL; idempotent. */
void kg_lease_stop(kg_lease *lease);

/* Installs a key the caller released (takes one new reference) and starts a new lease. */
int kg_lease_install(kg_lease *lease, EVP_PKEY *key);

/* Wipes the key now (logged with why). */
void kg_lease_wipe(kg_lease *lease, const char *why);

/* Prepared objects (issue 21): state derived from the current key that is costly to build and
 * cheap to copy (the provider's initialised signing contexts). A caller builds one per key and
 * tag and publishes it next to that key; the lease frees it, before its own reference to the key,
 * whenever the key is replaced (install, refresh), wiped (revocation, lease end) or the lease
 * freed. So a prepared object never outlives its key, never keeps a wiped key alive, and is never
 * handed out with another key. Refcounted: an operation that holds one when the key goes frees it
 * when it ends, like its key reference (copies hold references of their own). */
typedef struct kg_lease_prep kg_lease_prep;
#define KG_LEASE_PREP_MAX 8  /* tags per key; more are not published (callers build their own) */
#define KG_LEASE_PREP_TAG 32 /* tag size, with its NUL */

/* A prepared object of tag that owns obj (free_obj frees it with the last reference). Returns
 * NULL (obj untouched) when out of memory or when tag is too long. */
kg_lease_prep *kg_lease_prep_new(const char *tag, void *obj, void (*free_obj)(void *));
void *kg_lease_prep_obj(const kg_lease_prep *prep); /* borrowed while a reference is held */
void kg_lease_prep_free(kg_lease_prep *prep);       /* drops one reference; accepts NULL */

/* kg_lease_acquire, and with KG_LEASE_OK, *prep = a new reference to the prepared object of tag
 * published for that very key, or NULL when there is none (yet). */
kg_lease_state kg_lease_acquire_prep(kg_lease *lease, int start_refresh, const char *tag, EVP_PKEY **key,
                                     kg_lease_prep **prep, kg_err *err);

/* Publishes prep (takes a new reference) for key, if key is still the lease's current key and no
 * object of prep's tag is published: a context built from a key that a refresh or a wipe has
 * replaced meanwhile is refused. Returns 1 when published, 0 otherwise (prep is then the
 * caller's alone). */
int kg_lease_prep_publish(kg_lease *lease, const EVP_PKEY *key, kg_lease_prep *prep);

/* Counters for logs and tests. */
unsigned long kg_lease_refreshes(const kg_lease *lease);

/* For a pthread_atfork child handler: re-initialises the lock and forgets any refresh of the
 * parent (its thread does not exist here). No I/O. Accepts NULL. */
void kg_lease_atfork_child(kg_lease *lease);

/* 1 when err (a failed release) is a revocation (KBS denial, local policy, other public key),
 * 0 when transient (network, 5xx, 429, ...). */
int kg_lease_err_is_revocation(const kg_err *err);

/* "keygate: key <id> revoked by KBS at <time> (step transfer, HTTP 401, request-id ...)". */
void kg_lease_revocation_message(const char *key_id, const kg_err *err, char *out, size_t outlen);

#endif
