/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kg_agent_client: the client side of the keygate agent protocol (docs/protocols/agent.md), for
 * the provider's and the PKCS#11 module's `backend = agent`.
 *
 * A client is a pool of unix-socket connections to one agent: a call takes an idle connection
 * (or opens one: non-blocking connect, then HELLO), sends one request, waits for its reply and
 * gives the connection back (at most KG_AGENT_CLIENT_IDLE idle ones are kept). Concurrent calls
 * from several threads each use their own connection, so TLS handshakes in a threaded server do
 * not queue on one socket. A whole call (connect, HELLO, request, reply) has one deadline,
 * timeout_ms. A pooled connection that turns out broken (EPIPE, ECONNRESET, end of file before
 * the reply: the agent restarted) is replaced once by a fresh one; a fresh one that fails ends
 * the call. Nothing is retried after a reply arrived.
 *
 * After fork a child never uses its parent's connections (a reply could go to either process):
 * kg_agent_client_atfork_child drops them, and a call that finds the pool opened by another pid
 * drops them too.
 *
 * Errors: 0 with a kg_err of step KG_STEP_HANDOVER and one line, e.g.
 *   "handover: agent: /run/keygate/agent.sock: connect: No such file or directory"
 *   "handover: agent: key web: DENIED: uid 33 may not use this key"
 * Results and key references never appear in a message.
 */
#ifndef KG_AGENT_CLIENT_H
#define KG_AGENT_CLIENT_H

#include <stddef.h>

#include "kg_agent_proto.h"
#include "kg_err.h"

#define KG_AGENT_CLIENT_IDLE 16 /* idle connections kept per client */

typedef struct kg_agent_client kg_agent_client;

/* A client of the agent on socket_path (copied); no connection yet (the first call opens one).
 * timeout_ms > 0. The caller owns the result: kg_agent_client_free. NULL with err on failure. */
kg_agent_client *kg_agent_client_new(const char *socket_path, long timeout_ms, kg_err *err);

/* Closes the idle connections and frees c. No call may be running. Accepts NULL. */
void kg_agent_client_free(kg_agent_client *c);

/* In a fork child (pthread_atfork child handler, or before the first call): forgets the parent's
 * connections (closes this process's copies of their descriptors) and re-initialises the lock,
 * which a parent thread may have held at the fork. No I/O on the sockets. Accepts NULL. */
void kg_agent_client_atfork_child(kg_agent_client *c);

/* One request. req is borrowed; its op must not be HELLO and its id is set by the call. key_id
 * names the key in error messages (may be NULL). On status OK, the RESULT (at most cap bytes;
 * a larger one is an error) is copied to out and *out_len set; the call's own buffers are wiped
 * (a DECRYPT or DERIVE result is a secret). *status (may be NULL) gets the reply's status, or
 * KG_AGENT_UNAVAILABLE when no reply came (connect, timeout, broken connection). Returns 1 only
 * when the status is OK. */
int kg_agent_client_call(kg_agent_client *c, kg_agent_req *req, const char *key_id, unsigned char *out,
                         size_t cap, size_t *out_len, kg_agent_status *status, kg_err *err);

/* The socket path (borrowed from c). */
const char *kg_agent_client_socket(const kg_agent_client *c);

#endif
