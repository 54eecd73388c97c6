/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kg_agent_client: a pool of connections to the keygate agent, one request per call
 * (kg_agent_client.h says what it promises; docs/protocols/agent.md the wire format).
 */
#include "kg_agent_client.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/* A request is at most about 10 KiB (docs/protocols/agent.md §2): key reference 8 KiB, data 1 KiB,
 * label 256 bytes and small fields. */
#define KG_AGENT_CLIENT_TX 16384

typedef struct conn {
    int fd;
    uint32_t max_body; /* the agent's, from HELLO */
} conn;

struct kg_agent_client {
    char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    long timeout_ms;
    pthread_mutex_t lock; /* idle, n_idle, pid */
    conn idle[KG_AGENT_CLIENT_IDLE];
    int n_idle;
    pid_t pid;        /* the process that opened the idle connections */
    uint32_t next_id; /* atomic */
};

/* How one exchange ended. */
typedef enum io_rc {
    IO_OK = 0,
    IO_BROKEN, /* EPIPE, ECONNRESET, end of file: the agent closed or restarted */
    IO_TIMEOUT,
    IO_ERROR /* anything else; errno tells */
} io_rc;

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int left_ms(int64_t deadline)
{
    int64_t left = deadline - now_ms();

    return left <= 0 ? 0 : left > INT32_MAX ? INT32_MAX : (int)left;
}

/* Waits for events on fd until the deadline: IO_OK when ready. */
static io_rc wait_fd(int fd, short events, int64_t deadline)
{
    struct pollfd p = {.fd = fd, .events = events};
    int rc;

    for (;;) {
        int left = left_ms(deadline);
        if (left == 0)
            return IO_TIMEOUT;
        rc = poll(&p, 1, left);
        if (rc > 0)
            return IO_OK; /* POLLERR/POLLHUP: the following send or recv says what */
        if (rc == 0)
            return IO_TIMEOUT;
        if (errno != EINTR)
            return IO_ERROR;
    }
}

static io_rc broken_or_error(void)
{
    return errno == EPIPE || errno == ECONNRESET ? IO_BROKEN : IO_ERROR;
}

static io_rc send_all(int fd, const uint8_t *buf, size_t n, int64_t deadline)
{
    while (n > 0) {
        ssize_t w = send(fd, buf, n, MSG_NOSIGNAL); /* no SIGPIPE in nginx: EPIPE instead */
        if (w > 0) {
            buf += w;
            n -= (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            io_rc rc = wait_fd(fd, POLLOUT, deadline);
            if (rc != IO_OK)
                return rc;
            continue;
        }
        return broken_or_error();
    }
    return IO_OK;
}

static io_rc recv_all(int fd, uint8_t *buf, size_t n, int64_t deadline)
{
    while (n > 0) {
        ssize_t r = recv(fd, buf, n, 0);
        if (r > 0) {
            buf += r;
            n -= (size_t)r;
            continue;
        }
        if (r == 0) {
            errno = ECONNRESET;
            return IO_BROKEN;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            io_rc rc = wait_fd(fd, POLLIN, deadline);
            if (rc != IO_OK)
                return rc;
            continue;
        }
        return broken_or_error();
    }
    return IO_OK;
}

static void wipe_free(uint8_t *p, size_t n)
{
    if (p == NULL)
        return;
    explicit_bzero(p, n);
    free(p);
}

/* "agent: PATH: WHAT: <cause>" for an I/O failure. */
static int io_fail(const kg_agent_client *c, const char *what, io_rc rc, int saved_errno, kg_err *err)
{
    if (rc == IO_TIMEOUT)
        return kg_err_set(err, KG_STEP_HANDOVER, "agent: %s: %s: no answer within %ld ms", c->path, what,
                          c->timeout_ms);
    if (rc == IO_BROKEN)
        return kg_err_set(err, KG_STEP_HANDOVER, "agent: %s: %s: connection closed by the agent", c->path,
                          what);
    return kg_err_set(err, KG_STEP_HANDOVER, "agent: %s: %s: %s", c->path, what, strerror(saved_errno));
}

/* A reply whose status is not OK: "agent: key ID: STATUS: message" (or the socket without a key). */
static int status_fail(const kg_agent_client *c, const char *key_id, const kg_agent_reply *reply, kg_err *err)
{
    int with_key = key_id != NULL && reply->op != KG_AGENT_OP_ERROR;

    return kg_err_set(err, KG_STEP_HANDOVER, "agent: %s%s: %s%s%.*s", with_key ? "key " : "",
                      with_key ? key_id : c->path, kg_agent_status_name(reply->status),
                      reply->message_len ? ": " : "", (int)reply->message_len,
                      reply->message ? reply->message : "");
}

/* Sends the frame, reads one reply into a new buffer (*body of *body_len bytes: the caller wipes
 * and frees it, also on failure) and decodes it into *reply (which borrows *body). *rc says how
 * the I/O ended: IO_BROKEN only when no reply byte arrived. */
static int exchange(const kg_agent_client *c, int fd, const uint8_t *frame, size_t frame_len,
                    int64_t deadline, uint8_t **body, size_t *body_len, kg_agent_reply *reply, io_rc *rc,
                    kg_err *err)
{
    uint8_t hdr_buf[KG_AGENT_HEADER_LEN];
    kg_agent_header hdr;
    kg_err perr;

    *body = NULL;
    *body_len = 0;
    memset(reply, 0, sizeof(*reply));
    if ((*rc = send_all(fd, frame, frame_len, deadline)) != IO_OK)
        return io_fail(c, "send", *rc, errno, err);
    if ((*rc = recv_all(fd, hdr_buf, sizeof(hdr_buf), deadline)) != IO_OK)
        return io_fail(c, "reply", *rc, errno, err);
    *rc = IO_ERROR; /* from here on the connection is not reusable on failure, nor retried */
    if (!kg_agent_header_parse(hdr_buf, sizeof(hdr_buf), &hdr, &perr))
        return kg_err_set(err, KG_STEP_HANDOVER, "agent: %s: reply: %s", c->path, perr.msg);
    if ((*body = malloc(hdr.body_len)) == NULL)
        return kg_err_set(err, KG_STEP_INTERNAL, "agent: out of memory");
    *body_len = hdr.body_len;
    if ((*rc = recv_all(fd, *body, hdr.body_len, deadline)) != IO_OK) {
        int e = errno;
        *rc = *rc == IO_BROKEN ? IO_ERROR : *rc; /* a reply was under way: not a stale connection */
        return io_fail(c, "reply", *rc, e, err);
    }
    *rc = IO_ERROR;
    if (!kg_agent_reply_decode(hdr.op, *body, hdr.body_len, reply, &perr))
        return kg_err_set(err, KG_STEP_HANDOVER, "agent: %s: reply: %s", c->path, perr.msg);
    *rc = IO_OK;
    return 1;
}

static uint32_t new_id(kg_agent_client *c)
{
    uint32_t id = __atomic_add_fetch(&c->next_id, 1, __ATOMIC_RELAXED);

    return id != 0 ? id : __atomic_add_fetch(&c->next_id, 1, __ATOMIC_RELAXED);
}

/* Opens a connection and says HELLO. 1 with *out filled; 0 with err. */
static int conn_open(kg_agent_client *c, int64_t deadline, conn *out, kg_err *err)
{
    struct sockaddr_un sa;
    uint8_t frame[64], *body = NULL;
    size_t frame_len, body_len = 0;
    kg_agent_req hello;
    kg_agent_reply reply;
    socklen_t elen = sizeof(int);
    int fd, soerr = 0, ok = 0;
    io_rc rc;

    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    memcpy(sa.sun_path, c->path, strlen(c->path)); /* length checked by kg_agent_client_new */
    if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)) < 0)
        return io_fail(c, "socket", IO_ERROR, errno, err);
    /* a unix socket's non-blocking connect answers at once, or EAGAIN when the agent's backlog
     * is full: try again until the deadline */
    while (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        if (errno == EINTR)
            continue;
        if (errno == EINPROGRESS) {
            if ((rc = wait_fd(fd, POLLOUT, deadline)) != IO_OK ||
                getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &elen) != 0 || soerr != 0) {
                io_fail(c, "connect", rc == IO_OK ? IO_ERROR : rc, soerr != 0 ? soerr : errno, err);
                goto end;
            }
            break;
        }
        if (errno == EAGAIN && left_ms(deadline) > 0) {
            poll(NULL, 0, left_ms(deadline) < 5 ? left_ms(deadline) : 5);
            continue;
        }
        io_fail(c, "connect", errno == EAGAIN ? IO_TIMEOUT : IO_ERROR, errno, err);
        goto end;
    }
    memset(&hello, 0, sizeof(hello));
    hello.op = KG_AGENT_OP_HELLO;
    hello.id = new_id(c);
    hello.version = KG_AGENT_PROTO_VERSION;
    if (!kg_agent_req_encode(&hello, frame, sizeof(frame), &frame_len, err) ||
        !exchange(c, fd, frame, frame_len, deadline, &body, &body_len, &reply, &rc, err))
        goto end;
    if (reply.status != KG_AGENT_OK) {
        status_fail(c, NULL, &reply, err);
        goto end;
    }
    if (reply.op != (KG_AGENT_OP_HELLO | KG_AGENT_OP_REPLY) || reply.id != hello.id ||
        reply.version != KG_AGENT_PROTO_VERSION) {
        kg_err_set(err, KG_STEP_HANDOVER, "agent: %s: HELLO: unexpected reply (%s, version %u)", c->path,
                   kg_agent_op_name(reply.op), reply.version);
        goto end;
    }
    out->fd = fd;
    out->max_body = reply.max_body;
    ok = 1;
end:
    wipe_free(body, body_len);
    if (!ok)
        close(fd);
    return ok;
}

/* Drops the idle connections of another process (a fork parent's). Lock held. */
static void check_pid(kg_agent_client *c)
{
    pid_t pid = getpid();

    if (c->pid == pid)
        return;
    for (int i = 0; i < c->n_idle; i++)
        close(c->idle[i].fd); /* this process's copy only: the parent's connection lives on */
    c->n_idle = 0;
    c->pid = pid;
}

/* An idle connection that is still usable, or 0. One with something to read (end of file: the
 * agent closed it, or restarted) is closed here. */
static int conn_take(kg_agent_client *c, conn *out)
{
    for (;;) {
        struct pollfd p;
        int found = 0;

        pthread_mutex_lock(&c->lock);
        check_pid(c);
        if (c->n_idle > 0) {
            *out = c->idle[--c->n_idle];
            found = 1;
        }
        pthread_mutex_unlock(&c->lock);
        if (!found)
            return 0;
        p.fd = out->fd;
        p.events = POLLIN;
        p.revents = 0;
        if (poll(&p, 1, 0) == 0)
            return 1;
        close(out->fd);
    }
}

static void conn_give(kg_agent_client *c, const conn *cn)
{
    int kept = 0;

    pthread_mutex_lock(&c->lock);
    check_pid(c);
    if (c->n_idle < KG_AGENT_CLIENT_IDLE) {
        c->idle[c->n_idle++] = *cn;
        kept = 1;
    }
    pthread_mutex_unlock(&c->lock);
    if (!kept)
        close(cn->fd);
}

/* After a broken connection the others are from the same (dead) agent: close them all. */
static void conn_flush(kg_agent_client *c)
{
    pthread_mutex_lock(&c->lock);
    check_pid(c);
    for (int i = 0; i < c->n_idle; i++)
        close(c->idle[i].fd);
    c->n_idle = 0;
    pthread_mutex_unlock(&c->lock);
}

kg_agent_client *kg_agent_client_new(const char *socket_path, long timeout_ms, kg_err *err)
{
    kg_agent_client *c;

    if (socket_path == NULL || socket_path[0] == '\0' ||
        strlen(socket_path) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
        kg_err_set(err, KG_STEP_CONFIG, "agent: socket path empty or longer than %zu bytes",
                   sizeof(((struct sockaddr_un *)0)->sun_path) - 1);
        return NULL;
    }
    if (timeout_ms <= 0) {
        kg_err_set(err, KG_STEP_CONFIG, "agent: timeout must be positive");
        return NULL;
    }
    if ((c = calloc(1, sizeof(*c))) == NULL) {
        kg_err_set(err, KG_STEP_INTERNAL, "agent: out of memory");
        return NULL;
    }
    snprintf(c->path, sizeof(c->path), "%s", socket_path);
    c->timeout_ms = timeout_ms;
    c->pid = getpid();
    pthread_mutex_init(&c->lock, NULL);
    return c;
}

void kg_agent_client_free(kg_agent_client *c)
{
    if (c == NULL)
        return;
    conn_flush(c);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

void kg_agent_client_atfork_child(kg_agent_client *c)
{
    if (c == NULL)
        return;
    pthread_mutex_init(&c->lock, NULL);
    check_pid(c);
}

const char *kg_agent_client_socket(const kg_agent_client *c)
{
    return c->path;
}

int kg_agent_client_call(kg_agent_client *c, kg_agent_req *req, const char *key_id, unsigned char *out,
                         size_t cap, size_t *out_len, kg_agent_status *status, kg_err *err)
{
    int64_t deadline = now_ms() + c->timeout_ms;
    uint8_t frame[KG_AGENT_CLIENT_TX], *body = NULL;
    size_t frame_len = 0, req_len, body_len = 0;
    kg_agent_reply reply;
    kg_agent_status st = KG_AGENT_UNAVAILABLE;
    conn cn = {-1, 0};
    int ok = 0, keep = 0;
    io_rc rc = IO_ERROR;

    if (req->op == KG_AGENT_OP_HELLO)
        return kg_err_set(err, KG_STEP_INTERNAL, "agent: HELLO is the client's own request");
    req->id = new_id(c);
    if (!kg_agent_req_encode(req, frame, sizeof(frame), &frame_len, err))
        goto end;
    req_len = frame_len - KG_AGENT_HEADER_LEN;
    for (int attempt = 0; attempt < 2; attempt++) {
        int pooled = attempt == 0 && conn_take(c, &cn);

        if (!pooled && !conn_open(c, deadline, &cn, err))
            goto end;
        if (req_len > cn.max_body) {
            kg_err_set(err, KG_STEP_HANDOVER, "agent: %s: request of %zu bytes over the agent's limit %u",
                       c->path, req_len, cn.max_body);
            keep = 1;
            goto end;
        }
        if (exchange(c, cn.fd, frame, frame_len, deadline, &body, &body_len, &reply, &rc, err))
            break;
        wipe_free(body, body_len);
        body = NULL;
        close(cn.fd);
        cn.fd = -1;
        /* a pooled connection closed before any reply byte: the agent restarted; once more on a
         * new connection (nothing was done: no reply was sent) */
        if (!(pooled && rc == IO_BROKEN))
            goto end;
        conn_flush(c);
    }
    /* a reply to this request (or an ERROR reply, after which the agent closes) */
    if (reply.op == KG_AGENT_OP_ERROR) {
        st = reply.status;
        status_fail(c, key_id, &reply, err);
        goto end;
    }
    if (reply.op != (req->op | KG_AGENT_OP_REPLY) || reply.id != req->id) {
        kg_err_set(err, KG_STEP_HANDOVER, "agent: %s: %s with id %u in answer to %s id %u", c->path,
                   kg_agent_op_name(reply.op), reply.id, kg_agent_op_name(req->op), req->id);
        goto end;
    }
    keep = 1; /* the framing is intact whatever the status */
    st = reply.status;
    if (reply.status != KG_AGENT_OK) {
        status_fail(c, key_id, &reply, err);
        goto end;
    }
    if (reply.result_len > cap) {
        kg_err_set(err, KG_STEP_HANDOVER, "agent: %s: result of %zu bytes, room for %zu", c->path,
                   reply.result_len, cap);
        goto end;
    }
    if (reply.result_len > 0)
        memcpy(out, reply.result, reply.result_len);
    *out_len = reply.result_len;
    ok = 1;
end:
    wipe_free(body, body_len); /* a DECRYPT or DERIVE result is a secret */
    if (status != NULL)
        *status = st;
    if (cn.fd >= 0) {
        if (keep)
            conn_give(c, &cn);
        else
            close(cn.fd);
    }
    return ok;
}
