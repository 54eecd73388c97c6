/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kg_keysource: the one source of released keys for the front ends (the OpenSSL provider, the
 * PKCS#11 module): a per-process cache of keys, first-use release, lease install, and teardown.
 *
 * A slot is one key as a front end asked for it: (key id, effective KBS URL, expected public
 * key). Two references with the same id but another KBS or another public key get different
 * slots, so a cached key is never handed to a reference it was not matched against. A reference
 * without a public key (a store URI's bare key id) takes any slot of that id and KBS, or makes
 * one that learns its public key from the first release.
 *
 * Locking: ks->lock guards the slot table only and is never held across the network. Each slot
 * has its own release lock, so a release in flight never blocks another key's first use, nor any
 * key's operations (those take the lease's shared lock). Concurrent first uses of different keys
 * still share one attestation: they release through one kg_release_ctx, whose session lock makes
 * the second wait for the first's token and reuse it (passport mode).
 *
 * Ownership: the source owns its slots; a slot pointer stays valid until kg_keysource_free.
 * kg_keysource_private hands out a NEW EVP_PKEY reference (caller frees). Thread-safe.
 */
#ifndef KG_KEYSOURCE_H
#define KG_KEYSOURCE_H

#include <openssl/types.h>
#include <stddef.h>

#include "kg_config.h"
#include "kg_err.h"
#include "kg_keyref.h"
#include "kg_lease.h"

typedef struct kg_keysource kg_keysource;
typedef struct kg_keyslot kg_keyslot;

/* Copies cfg and creates the release context (which reads the ITA API key now, e.g. in an nginx
 * master before its workers drop privileges; if it cannot, the first release tries again). No
 * network. Returns NULL only when out of memory (err set). */
kg_keysource *kg_keysource_new(const kg_config *cfg, kg_err *err);

/* Whether the source may start threads (default yes): parallel preload transfers. A PKCS#11
 * application that forbids threads (CKF_LIBRARY_CANT_CREATE_OS_THREADS) sets no. */
void kg_keysource_set_threads(kg_keysource *ks, int allowed);

/* Stops every lease (aborts and joins refresh threads), then frees the slots; the keys are
 * zeroized when their last reference goes. Accepts NULL. */
void kg_keysource_free(kg_keysource *ks);

/* For a pthread_atfork child handler: re-initialises every lock and forgets the parent's refresh
 * threads. No I/O, no allocation. Accepts NULL. */
void kg_keysource_atfork_child(kg_keysource *ks);

/* The slot for ref (found or created; ref is copied). Returns NULL with err (step handover) when
 * out of memory or when ref's public key is not the one the slot already holds. */
kg_keyslot *kg_keysource_slot(kg_keysource *ks, const kg_keyref *ref, kg_err *err);

/* The slot's released private key, releasing it first if needed (with the slot's lock held, so
 * concurrent first uses release once). With cfg.preload set, the first release of the source
 * releases the keys of every reference it names too, in one batch (kg_keysource_release_all);
 * a first use of one of them meanwhile waits for the batch instead of releasing it again, and a
 * reference that does not load is logged and skipped. Runs once per source. start_refresh: a private
 * operation, which may start the lease's background refresh (0 for loads: an nginx master loads keys before
 * it forks). Returns KG_LEASE_OK with *key (a new reference), KG_LEASE_REVOKED with err holding the
 * revocation, or KG_LEASE_EMPTY with err naming the failed step. *attested (may be NULL) is set
 * to 1 when this call ran a new attestation. */
kg_lease_state kg_keysource_private(kg_keysource *ks, kg_keyslot *slot, int start_refresh, EVP_PKEY **key,
                                    int *attested, kg_err *err);

/* kg_keysource_private, and with KG_LEASE_OK, *prep = a new reference to the key's prepared
 * object of tag (kg_lease_acquire_prep), or NULL when none is published (always after a release
 * in this call). */
kg_lease_state kg_keysource_private_prep(kg_keysource *ks, kg_keyslot *slot, int start_refresh,
                                         const char *tag, EVP_PKEY **key, kg_lease_prep **prep, int *attested,
                                         kg_err *err);

/* Releases every slot of slots[0..n) that holds no key, with one attestation and parallel
 * transfers (parallel = 0: one after the other, for hosts that forbid threads). Slots that hold a
 * key or are revoked are left as they are. errs[i] is set for each slot that failed. Returns the
 * number of failed slots. */
size_t kg_keysource_release_all(kg_keysource *ks, kg_keyslot *const *slots, size_t n, int parallel,
                                kg_err *errs);

/* The slot's key id (for messages). */
const char *kg_keyslot_key_id(const kg_keyslot *slot);

/* The slot's lease (borrowed; valid until kg_keysource_free): counters, tests, and
 * kg_lease_prep_publish. */
kg_lease *kg_keyslot_lease(const kg_keyslot *slot);

/* Number of slots (tests, logs). */
size_t kg_keysource_slot_count(kg_keysource *ks);

#endif
