/* SPDX-License-Identifier: Apache-2.0 */
#define _GNU_SOURCE /* struct ucred, accept4, pipe2 */
/*
 * kg_agent_conn: one connection of the keygate agent, in its own thread: frames in, replies out,
 * in order (docs/protocols/agent.md). A client can only stall itself: reads of a started frame
 * and writes have a deadline (agent_timeout_ms); waiting for the next request has none.
 * Every refusal is logged as one line naming the client (pid, uid, gid) and the cause.
 */
#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "keygate/version.h"
#include "kg_agent_internal.h"
#include "kg_agent_ops.h"
#include "kg_log.h"
#include "kg_time.h"

static void conn_log(const kg_agent_conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void conn_log(const kg_agent_conn *c, const char *fmt, ...)
{
    char line[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    KG_WARN("agent: client pid=%ld uid=%u gid=%u: %s", (long)c->cred.pid, (unsigned)c->cred.uid,
            (unsigned)c->cred.gid, line);
}

/* Waits for fd to be ready until deadline (ms on the monotonic clock; < 0 = none). 1 ready. */
static int wait_fd(int fd, short ev, double deadline)
{
    for (;;) {
        struct pollfd p = {fd, ev, 0};
        int ms = deadline < 0 ? -1 : (int)(deadline - kg_mono_ms());
        int rc;

        if (deadline >= 0 && ms <= 0)
            return 0;
        if ((rc = poll(&p, 1, ms)) > 0)
            return 1;
        if (rc == 0 || errno != EINTR)
            return 0;
    }
}

/* Reads len bytes. idle: the first byte may take any time (the client thinks). Returns 1, 0 on
 * a clean end before the first byte, -1 on an error, a timeout or an end within the frame. */
static int read_full(kg_agent_conn *c, uint8_t *buf, size_t len, int idle)
{
    double deadline = idle ? -1 : kg_mono_ms() + (double)c->srv->cfg.agent_timeout_ms;
    size_t got = 0;

    while (got < len) {
        ssize_t n;

        if (!wait_fd(c->fd, POLLIN, deadline))
            return -1;
        n = recv(c->fd, buf + got, len - got, MSG_DONTWAIT);
        if (n == 0)
            return got == 0 && idle ? 0 : -1;
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN)
                continue;
            return -1;
        }
        if (got == 0 && idle)
            deadline = kg_mono_ms() + (double)c->srv->cfg.agent_timeout_ms; /* the frame started */
        got += (size_t)n;
    }
    return 1;
}

static int write_full(kg_agent_conn *c, const uint8_t *buf, size_t len)
{
    double deadline = kg_mono_ms() + (double)c->srv->cfg.agent_timeout_ms;
    size_t done = 0;

    while (done < len) {
        ssize_t n;

        if (!wait_fd(c->fd, POLLOUT, deadline))
            return 0;
        if ((n = send(c->fd, buf + done, len - done, MSG_NOSIGNAL | MSG_DONTWAIT)) < 0) {
            if (errno == EINTR || errno == EAGAIN)
                continue;
            return 0;
        }
        done += (size_t)n;
    }
    return 1;
}

/* Sends one reply. msg (may be NULL) is made printable ASCII (the protocol refuses control
 * characters) and cut to the field's bound. result: OK replies but HELLO's. Returns 1/0. */
static int reply(kg_agent_conn *c, uint8_t op, uint32_t id, kg_agent_status st, const char *msg,
                 const uint8_t *result, size_t result_len)
{
    char m[KG_AGENT_MAX_MESSAGE + 1];
    kg_agent_reply r;
    size_t len = 0, n = 0;
    kg_err err;
    int ok;

    memset(&r, 0, sizeof(r));
    r.op = op;
    r.id = id;
    r.status = st;
    for (; msg != NULL && msg[n] != '\0' && n < KG_AGENT_MAX_MESSAGE; n++)
        m[n] = (msg[n] < 0x20 || (unsigned char)msg[n] >= 0x7f) ? '?' : msg[n];
    m[n] = '\0';
    if (n > 0) {
        r.message = m;
        r.message_len = n;
    }
    if (st == KG_AGENT_OK && op == (KG_AGENT_OP_HELLO | KG_AGENT_OP_REPLY)) {
        r.version = KG_AGENT_PROTO_VERSION;
        r.max_body = KG_AGENT_MAX_BODY;
    } else if (st == KG_AGENT_OK) {
        r.result = result;
        r.result_len = result_len;
    }
    if (!kg_agent_reply_encode(&r, c->out, sizeof(c->out), &len, &err)) {
        conn_log(c, "cannot encode a reply: %s", err.msg);
        return 0;
    }
    ok = write_full(c, c->out, len);
    OPENSSL_cleanse(c->out, len); /* may hold a plaintext or a shared secret */
    if (!ok)
        conn_log(c, "reply not delivered (the client does not read, or left)");
    return ok;
}

/* The served key for a reference, and whether this client may use it (any matching entry
 * allowing it is enough: two agent_keys entries naming one key add up). */
static const kg_agent_served *find_key(kg_agent_conn *c, const kg_keyref *ref, int *allowed)
{
    const kg_agent_server *srv = c->srv;
    const char *url = ref->kbs_url[0] ? ref->kbs_url : srv->cfg.kbs_url;
    const kg_agent_served *found = NULL;

    *allowed = 0;
    for (size_t i = 0; i < srv->n_keys; i++) {
        const kg_agent_served *k = &srv->keys[i];
        const char *kurl = k->ref.kbs_url[0] ? k->ref.kbs_url : srv->cfg.kbs_url;

        if (strcmp(k->ref.key_id, ref->key_id) != 0 || strcmp(kurl, url) != 0 ||
            EVP_PKEY_eq(k->ref.pubkey, ref->pubkey) != 1)
            continue;
        found = k;
        if (kg_agent_acl_allows(k->acl, c->cred.uid, c->cred.gid)) {
            *allowed = 1;
            return k;
        }
    }
    return found;
}

/* Whether the token bucket has one operation left (refilled at agent_rate per second). */
static int take_token(kg_agent_conn *c)
{
    double now = kg_mono_ms(), rate = (double)c->srv->cfg.agent_rate;

    c->tokens += (now - c->last_ms) * rate / 1000.0;
    if (c->tokens > rate)
        c->tokens = rate;
    c->last_ms = now;
    if (c->tokens < 1.0)
        return 0;
    c->tokens -= 1.0;
    return 1;
}

/* A key operation (PUBKEY, SIGN, DECRYPT, DERIVE) on a decoded request. Returns 1 to go on. */
static int serve_key_op(kg_agent_conn *c, const kg_agent_req *req)
{
    uint8_t rop = (uint8_t)(req->op | KG_AGENT_OP_REPLY), *out = NULL;
    const char *op = kg_agent_op_name(req->op);
    const kg_agent_served *k;
    kg_agent_status st;
    kg_lease_state ls;
    EVP_PKEY *key = NULL;
    size_t out_len = 0;
    kg_keyref ref;
    kg_err err;
    int allowed, ok;

    memset(&ref, 0, sizeof(ref));
    kg_err_clear(&err);
    if (!take_token(c)) {
        conn_log(c, "%s request %u: RATE_LIMITED (over agent_rate = %ld per second)", op, req->id,
                 c->srv->cfg.agent_rate);
        return reply(c, rop, req->id, KG_AGENT_RATE_LIMITED, "rate limited: over agent_rate", NULL, 0);
    }
    if (!kg_keyref_from_der(req->key_ref, req->key_ref_len, &ref, &err)) {
        conn_log(c, "%s request %u: BAD_REQUEST: field KEY_REF: %s", op, req->id, err.msg);
        return reply(c, rop, req->id, KG_AGENT_BAD_REQUEST, err.msg, NULL, 0);
    }
    if ((k = find_key(c, &ref, &allowed)) == NULL) {
        conn_log(c, "%s request %u: UNKNOWN_KEY: key %s is not served here", op, req->id, ref.key_id);
        ok = reply(c, rop, req->id, KG_AGENT_UNKNOWN_KEY, "the agent serves no such key", NULL, 0);
        goto end;
    }
    if (!allowed) {
        conn_log(c, "%s request %u: DENIED: key %s does not allow uid %u or gid %u (agent_keys)", op, req->id,
                 ref.key_id, (unsigned)c->cred.uid, (unsigned)c->cred.gid);
        ok = reply(c, rop, req->id, KG_AGENT_DENIED, "this uid/gid may not use the key", NULL, 0);
        goto end;
    }
    if (req->op == KG_AGENT_OP_PUBKEY) {
        ok = reply(c, rop, req->id, KG_AGENT_OK, NULL, k->ref.spki_der, k->ref.spki_der_len);
        goto end;
    }
    ls = kg_keysource_private(c->srv->ks, k->slot, 1, &key, NULL, &err);
    if (ls != KG_LEASE_OK) {
        st = ls == KG_LEASE_REVOKED ? KG_AGENT_REVOKED : KG_AGENT_UNAVAILABLE;
        conn_log(c, "%s request %u: %s: key %s: %s", op, req->id, kg_agent_status_name(st), ref.key_id,
                 err.msg);
        ok = reply(c, rop, req->id, st, err.msg, NULL, 0);
        goto end;
    }
    if ((st = kg_agent_op_run(key, req, &out, &out_len, &err)) != KG_AGENT_OK) {
        conn_log(c, "%s request %u: %s: key %s: %s", op, req->id, kg_agent_status_name(st), ref.key_id,
                 err.msg);
        ok = reply(c, rop, req->id, st, err.msg, NULL, 0);
        goto end;
    }
    KG_DEBUG("agent: client pid=%ld uid=%u: %s request %u on key %s: OK", (long)c->cred.pid,
             (unsigned)c->cred.uid, op, req->id, ref.key_id);
    ok = reply(c, rop, req->id, KG_AGENT_OK, NULL, out, out_len);
end:
    OPENSSL_clear_free(out, out_len);
    EVP_PKEY_free(key);
    kg_keyref_clear(&ref);
    return ok;
}

/* Reads and answers one frame. Returns 1 to go on, 0 to close the connection. */
static int serve_one(kg_agent_conn *c)
{
    kg_agent_header hdr;
    kg_agent_req req;
    kg_err err;
    int rc;

    if ((rc = read_full(c, c->in, KG_AGENT_HEADER_LEN, 1)) <= 0) {
        if (rc < 0)
            conn_log(c, "closed: a header cut short, a timeout (agent_timeout_ms) or a read error");
        return 0;
    }
    /* the header alone decides whether the body is read: an oversize length never is */
    if (!kg_agent_header_parse(c->in, KG_AGENT_HEADER_LEN, &hdr, &err)) {
        conn_log(c, "%s: %s; closed", kg_agent_status_name(hdr.refusal), err.msg);
        reply(c, KG_AGENT_OP_ERROR, 0, hdr.refusal, err.msg, NULL, 0);
        return 0;
    }
    if (hdr.op & KG_AGENT_OP_REPLY) {
        conn_log(c, "BAD_REQUEST: header: op 0x%02x is a reply; closed", hdr.op);
        reply(c, KG_AGENT_OP_ERROR, 0, KG_AGENT_BAD_REQUEST, "header: a reply op where a request belongs",
              NULL, 0);
        return 0;
    }
    if (read_full(c, c->in + KG_AGENT_HEADER_LEN, hdr.body_len, 0) <= 0) {
        conn_log(c, "closed: a body cut short, a timeout (agent_timeout_ms) or a read error");
        return 0;
    }
    rc = kg_agent_req_decode(hdr.op, c->in + KG_AGENT_HEADER_LEN, hdr.body_len, &req, &err);
    if (!rc) {
        conn_log(c, "%s request %u: %s: %s%s", kg_agent_op_name(hdr.op), req.id,
                 kg_agent_status_name(req.refusal), err.msg, c->hello ? "" : "; closed (no HELLO yet)");
        return reply(c, (uint8_t)(hdr.op | KG_AGENT_OP_REPLY), req.id, req.refusal, err.msg, NULL, 0) &&
               c->hello;
    }
    if (req.op == KG_AGENT_OP_HELLO) {
        c->hello = 1;
        return reply(c, KG_AGENT_OP_HELLO | KG_AGENT_OP_REPLY, req.id, KG_AGENT_OK,
                     "keygate agent " KEYGATE_VERSION_STR, NULL, 0);
    }
    if (!c->hello) {
        conn_log(c, "%s request %u: BAD_REQUEST: HELLO must come first; closed", kg_agent_op_name(req.op),
                 req.id);
        reply(c, (uint8_t)(req.op | KG_AGENT_OP_REPLY), req.id, KG_AGENT_BAD_REQUEST,
              "handover: agent protocol: HELLO must be the first request", NULL, 0);
        return 0;
    }
    rc = serve_key_op(c, &req);
    OPENSSL_cleanse(c->in, KG_AGENT_HEADER_LEN + hdr.body_len); /* a ciphertext is no secret, but cheap */
    return rc;
}

static void *conn_main(void *arg)
{
    kg_agent_conn *c = arg;
    kg_agent_server *srv = c->srv;

    while (!__atomic_load_n(&srv->stopping, __ATOMIC_ACQUIRE) && serve_one(c))
        ;
    pthread_mutex_lock(&srv->lock);
    srv->clients[c->index] = NULL;
    srv->n_clients--;
    pthread_cond_broadcast(&srv->cv);
    pthread_mutex_unlock(&srv->lock);
    close(c->fd);
    free(c);
    return NULL;
}

void kg_agent_conn_start(kg_agent_server *srv, int fd, const struct ucred *cred)
{
    kg_agent_conn *c = NULL;
    pthread_attr_t attr;
    pthread_t t;
    long i = -1;

    pthread_mutex_lock(&srv->lock);
    if (srv->n_clients < srv->cfg.agent_max_clients && (c = calloc(1, sizeof(*c))) != NULL) {
        for (i = 0; srv->clients[i] != NULL; i++)
            ;
        srv->clients[i] = c;
        srv->n_clients++;
    }
    pthread_mutex_unlock(&srv->lock);
    if (c == NULL) {
        kg_agent_conn busy = {.srv = srv, .fd = fd, .cred = *cred};

        conn_log(&busy, "BUSY: agent_max_clients = %ld connections served already; closed",
                 srv->cfg.agent_max_clients);
        (void)reply(&busy, KG_AGENT_OP_ERROR, 0, KG_AGENT_BUSY,
                    "the agent serves its maximum number of clients", NULL, 0);
        close(fd);
        return;
    }
    c->srv = srv;
    c->fd = fd;
    c->index = i;
    c->cred = *cred;
    c->tokens = (double)srv->cfg.agent_rate;
    c->last_ms = kg_mono_ms();
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&t, &attr, conn_main, c) != 0) {
        conn_log(c, "cannot start a thread; closed");
        pthread_mutex_lock(&srv->lock);
        srv->clients[i] = NULL;
        srv->n_clients--;
        pthread_cond_broadcast(&srv->cv);
        pthread_mutex_unlock(&srv->lock);
        close(fd);
        free(c);
    }
    pthread_attr_destroy(&attr);
}
