/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kg_agent_server: `keygate agent`, the process that holds released keys and serves private-key
 * operations on a unix socket (docs/agent.md; the protocol: docs/protocols/agent.md).
 *
 * One acceptor thread; one thread per client, up to agent_max_clients (one more is answered with
 * an ERROR/BUSY reply and closed). Clients are identified by SO_PEERCRED at accept; each key has
 * its allow list (agent_keys). Keys come from a kg_keysource: one attestation for all of them at
 * start, their leases renewed in the background, revocation seen by every client at once.
 *
 * Usage: new (parses agent_keys, loads the references, opens or takes over the socket; no
 * network), start (releases every key with one attestation, then starts the acceptor), stop
 * (async-signal-safe: wakes the acceptor), wait (joins the acceptor and every client), free.
 * Ownership: the server owns its key source, socket and threads; free unlinks the socket it
 * created (never one it was handed by systemd).
 */
#ifndef KG_AGENT_SERVER_H
#define KG_AGENT_SERVER_H

#include "kg_config.h"
#include "kg_err.h"

typedef struct kg_agent_server kg_agent_server;

/* Returns NULL with err (config for a bad agent_keys or socket directory, internal otherwise). */
kg_agent_server *kg_agent_server_new(const kg_config *cfg, kg_err *err);

/* Releases the keys (logging those that failed: they are retried at first use) and starts the
 * acceptor. Returns 1/0. */
int kg_agent_server_start(kg_agent_server *srv, kg_err *err);

/* Asks the server to stop: no more connections, clients closed. Async-signal-safe. */
void kg_agent_server_stop(kg_agent_server *srv);

/* Waits until the acceptor and every client thread have ended (after kg_agent_server_stop). */
void kg_agent_server_wait(kg_agent_server *srv);

/* Closes the socket (unlinking it if this server created it), frees the keys. Accepts NULL. */
void kg_agent_server_free(kg_agent_server *srv);

#endif
