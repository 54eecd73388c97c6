/* SPDX-License-Identifier: Apache-2.0 */
/* The keygate agent's shared state: kg_agent_server.c (keys, socket, acceptor) and
 * kg_agent_conn.c (one thread per connection). Not an interface. */
#ifndef KG_AGENT_INTERNAL_H
/* struct ucred needs _GNU_SOURCE before the first system header of every includer */
#define KG_AGENT_INTERNAL_H

#include <pthread.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "kg_agent_acl.h"
#include "kg_agent_proto.h"
#include "kg_agent_server.h"
#include "kg_keyref.h"
#include "kg_keysource.h"

/* A key the agent serves: one reference file of an agent_keys entry. */
typedef struct kg_agent_served {
    kg_keyref ref;           /* owned */
    kg_keyslot *slot;        /* the key source's slot (borrowed) */
    const kg_agent_acl *acl; /* who may use it (borrowed from the server's acls) */
} kg_agent_served;

typedef struct kg_agent_conn kg_agent_conn;

struct kg_agent_server {
    kg_config cfg;
    kg_keysource *ks;
    kg_agent_acl *acls;
    size_t n_acls;
    kg_agent_served *keys;
    size_t n_keys;
    int lfd;     /* listening socket */
    int created; /* 1: we bound cfg.agent_socket (unlinked at the end); 0: systemd's */
    int wake[2]; /* self-pipe: kg_agent_server_stop wakes the acceptor */
    int stopping;
    int started;
    pthread_t acceptor;
    pthread_mutex_t lock;    /* clients, n_clients */
    pthread_cond_t cv;       /* n_clients went down */
    kg_agent_conn **clients; /* agent_max_clients entries, NULL = free */
    long n_clients;
};

struct kg_agent_conn {
    kg_agent_server *srv;
    int fd;
    long index; /* in srv->clients */
    struct ucred cred;
    int hello;
    double tokens, last_ms; /* token bucket: agent_rate per second, burst of one second */
    uint8_t in[KG_AGENT_MAX_FRAME];
    uint8_t out[KG_AGENT_MAX_FRAME];
};

/* Serves fd in a new thread, or answers BUSY and closes it when agent_max_clients are served.
 * Takes fd. */
void kg_agent_conn_start(kg_agent_server *srv, int fd, const struct ucred *cred);

#endif
