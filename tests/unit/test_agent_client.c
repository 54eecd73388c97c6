/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kg_agent_client against a peer on a real unix socket that speaks the protocol through the real
 * codec (kg_agent_req_decode, kg_agent_reply_encode): connect failures, a silent peer (the
 * deadline, no hang), the reconnect after the peer closed or restarted, non-OK replies, the pool
 * under 4 threads, and a fork child that must not use its parent's connections.
 */
#include "kg_test.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "kg_agent_client.h"

static const uint8_t KEYREF[] = {0x30, 0x06, 0x02, 0x01, 0x01, 0x0c, 0x01, 'k'};

/* What the peer does with a request other than HELLO. */
enum mode {
    ANSWER,    /* OK, the result is the data reversed */
    DENY,      /* DENIED with a message */
    SILENT,    /* never answers, not even HELLO */
    DROP_ONCE, /* closes without a reply at the next request, then answers */
    DROP_ALL   /* closes without a reply at every request */
};

typedef struct peer {
    char dir[48], path[96];
    int lfd;
    pthread_t thread;
    int mode;         /* atomic */
    int accepted;     /* atomic */
    int requests;     /* atomic: requests other than HELLO */
    int inflight;     /* atomic */
    int max_inflight; /* atomic */
    int delay_ms;
    int stop;             /* atomic */
    pthread_mutex_t lock; /* fds */
    int fds[64];          /* the open connections (-1: none), so that peer_down can close them */
} peer;

static int read_n(int fd, uint8_t *b, size_t n)
{
    while (n > 0) {
        ssize_t r = read(fd, b, n);
        if (r <= 0)
            return 0;
        b += r;
        n -= (size_t)r;
    }
    return 1;
}

typedef struct handler_arg {
    peer *p;
    int fd;
} handler_arg;

static void *handler(void *varg)
{
    handler_arg *a = varg;
    peer *p = a->p;
    int fd = a->fd;
    static __thread uint8_t body[KG_AGENT_MAX_BODY], out[KG_AGENT_MAX_FRAME];
    uint8_t hdr_buf[KG_AGENT_HEADER_LEN], result[KG_AGENT_MAX_DATA];

    free(a);
    for (;;) {
        kg_agent_header hdr;
        kg_agent_req req;
        kg_agent_reply reply;
        size_t out_len;
        kg_err err;
        int mode;

        if (!read_n(fd, hdr_buf, sizeof(hdr_buf)) ||
            !kg_agent_header_parse(hdr_buf, sizeof(hdr_buf), &hdr, &err) || !read_n(fd, body, hdr.body_len) ||
            !kg_agent_req_decode(hdr.op, body, hdr.body_len, &req, &err))
            break;
        mode = __atomic_load_n(&p->mode, __ATOMIC_SEQ_CST);
        if (mode == SILENT) {
            while (!__atomic_load_n(&p->stop, __ATOMIC_SEQ_CST))
                poll(NULL, 0, 10);
            break;
        }
        memset(&reply, 0, sizeof(reply));
        reply.op = req.op | KG_AGENT_OP_REPLY;
        reply.id = req.id;
        if (req.op == KG_AGENT_OP_HELLO) {
            reply.version = 1;
            reply.max_body = KG_AGENT_MAX_BODY;
        } else {
            int n = __atomic_add_fetch(&p->inflight, 1, __ATOMIC_SEQ_CST), m;
            while (
                (m = __atomic_load_n(&p->max_inflight, __ATOMIC_SEQ_CST)) < n &&
                !__atomic_compare_exchange_n(&p->max_inflight, &m, n, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
                ;
            __atomic_add_fetch(&p->requests, 1, __ATOMIC_SEQ_CST);
            if (p->delay_ms > 0)
                poll(NULL, 0, p->delay_ms);
            __atomic_sub_fetch(&p->inflight, 1, __ATOMIC_SEQ_CST);
            if (mode == DROP_ONCE || mode == DROP_ALL) {
                if (mode == DROP_ONCE)
                    __atomic_store_n(&p->mode, ANSWER, __ATOMIC_SEQ_CST);
                break;
            }
            if (mode == DENY) {
                reply.status = KG_AGENT_DENIED;
                reply.message = "uid 0 may not use this key";
                reply.message_len = strlen(reply.message);
            } else {
                for (size_t i = 0; i < req.data_len; i++)
                    result[i] = req.data[req.data_len - 1 - i];
                reply.result = result;
                reply.result_len = req.data_len;
            }
        }
        if (!kg_agent_reply_encode(&reply, out, sizeof(out), &out_len, &err) ||
            write(fd, out, out_len) != (ssize_t)out_len)
            break;
    }
    pthread_mutex_lock(&p->lock);
    for (int i = 0; i < 64; i++)
        if (p->fds[i] == fd)
            p->fds[i] = -1;
    close(fd);
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

static void *acceptor(void *varg)
{
    peer *p = varg;

    while (!__atomic_load_n(&p->stop, __ATOMIC_SEQ_CST)) {
        struct pollfd pf = {.fd = p->lfd, .events = POLLIN};
        handler_arg *a;
        pthread_t t;
        int fd;

        if (poll(&pf, 1, 20) <= 0)
            continue;
        if ((fd = accept(p->lfd, NULL, NULL)) < 0)
            continue;
        __atomic_add_fetch(&p->accepted, 1, __ATOMIC_SEQ_CST);
        pthread_mutex_lock(&p->lock);
        for (int i = 0; i < 64; i++)
            if (p->fds[i] < 0) {
                p->fds[i] = fd;
                break;
            }
        pthread_mutex_unlock(&p->lock);
        a = malloc(sizeof(*a));
        a->p = p;
        a->fd = fd;
        pthread_create(&t, NULL, handler, a);
        pthread_detach(t);
    }
    return NULL;
}

static void peer_listen(peer *p)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};

    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", p->path);
    p->lfd = socket(AF_UNIX, SOCK_STREAM, 0);
    assert_true(p->lfd >= 0);
    assert_int_equal(bind(p->lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(p->lfd, 16), 0);
    __atomic_store_n(&p->stop, 0, __ATOMIC_SEQ_CST);
    assert_int_equal(pthread_create(&p->thread, NULL, acceptor, p), 0);
}

/* Stops accepting, ends every connection and unlinks the socket: the agent is down. */
static void peer_down(peer *p)
{
    __atomic_store_n(&p->stop, 1, __ATOMIC_SEQ_CST);
    pthread_join(p->thread, NULL);
    close(p->lfd);
    unlink(p->path);
    pthread_mutex_lock(&p->lock);
    for (int i = 0; i < 64; i++)
        if (p->fds[i] >= 0)
            shutdown(p->fds[i], SHUT_RDWR);
    pthread_mutex_unlock(&p->lock);
}

static int peer_setup(void **state)
{
    peer *p = calloc(1, sizeof(*p));

    pthread_mutex_init(&p->lock, NULL);
    for (int i = 0; i < 64; i++)
        p->fds[i] = -1;
    snprintf(p->dir, sizeof(p->dir), "/tmp/kg-agent-client-XXXXXX");
    assert_non_null(mkdtemp(p->dir));
    snprintf(p->path, sizeof(p->path), "%s/agent.sock", p->dir);
    peer_listen(p);
    *state = p;
    return 0;
}

static int peer_teardown(void **state)
{
    peer *p = *state;

    if (!__atomic_load_n(&p->stop, __ATOMIC_SEQ_CST))
        peer_down(p);
    for (int tries = 0, open = 1; open && tries < 200; tries++) { /* the handlers end (detached) */
        open = 0;
        pthread_mutex_lock(&p->lock);
        for (int i = 0; i < 64; i++)
            open |= p->fds[i] >= 0;
        pthread_mutex_unlock(&p->lock);
        if (open)
            poll(NULL, 0, 10);
    }
    poll(NULL, 0, 10); /* past their last unlock */
    rmdir(p->dir);
    free(p);
    return 0;
}

static void sign_req(kg_agent_req *req, const uint8_t *digest, size_t len)
{
    memset(req, 0, sizeof(*req));
    req->op = KG_AGENT_OP_SIGN;
    req->key_ref = KEYREF;
    req->key_ref_len = sizeof(KEYREF);
    req->scheme = KG_AGENT_SCHEME_ECDSA;
    req->data = digest;
    req->data_len = len;
}

/* One SIGN of 32 bytes starting with `seed`; checks the peer's answer (the data reversed). */
static int sign_once(kg_agent_client *c, uint8_t seed, kg_err *err, kg_agent_status *st)
{
    uint8_t digest[32], out[64];
    size_t out_len = 0;
    kg_agent_req req;

    for (size_t i = 0; i < sizeof(digest); i++)
        digest[i] = (uint8_t)(seed + i);
    sign_req(&req, digest, sizeof(digest));
    if (!kg_agent_client_call(c, &req, "web", out, sizeof(out), &out_len, st, err))
        return 0;
    assert_int_equal(out_len, sizeof(digest));
    for (size_t i = 0; i < sizeof(digest); i++)
        assert_int_equal(out[i], digest[sizeof(digest) - 1 - i]);
    return 1;
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void test_answer_and_pool_reuse(void **state)
{
    peer *p = *state;
    kg_agent_client *c = kg_agent_client_new(p->path, 2000, NULL);
    kg_agent_status st;
    kg_err err;

    assert_non_null(c);
    for (int i = 0; i < 5; i++)
        assert_true(sign_once(c, (uint8_t)i, &err, &st));
    assert_int_equal(st, KG_AGENT_OK);
    assert_int_equal(__atomic_load_n(&p->accepted, __ATOMIC_SEQ_CST), 1); /* one connection, reused */
    assert_int_equal(__atomic_load_n(&p->requests, __ATOMIC_SEQ_CST), 5);
    kg_agent_client_free(c);
}

static void test_connect_failure(void **state)
{
    peer *p = *state;
    char want[256];
    kg_agent_client *c;
    kg_agent_status st = KG_AGENT_OK;
    kg_err err;

    peer_down(p);
    c = kg_agent_client_new(p->path, 2000, NULL);
    assert_non_null(c);
    assert_false(sign_once(c, 0, &err, &st));
    snprintf(want, sizeof(want), "handover: agent: %s: connect: No such file or directory", p->path);
    assert_string_equal(err.msg, want);
    assert_int_equal(err.step, KG_STEP_HANDOVER);
    assert_int_equal(st, KG_AGENT_UNAVAILABLE);
    /* the agent comes back: the same client recovers */
    peer_listen(p);
    assert_true(sign_once(c, 1, &err, &st));
    kg_agent_client_free(c);
}

static void test_silent_peer_times_out(void **state)
{
    peer *p = *state;
    kg_agent_client *c = kg_agent_client_new(p->path, 300, NULL);
    char want[256];
    int64_t t0;
    kg_err err;

    __atomic_store_n(&p->mode, SILENT, __ATOMIC_SEQ_CST);
    t0 = mono_ms();
    assert_false(sign_once(c, 0, &err, NULL));
    assert_true(mono_ms() - t0 >= 290);
    assert_true(mono_ms() - t0 < 2000);
    snprintf(want, sizeof(want), "handover: agent: %s: reply: no answer within 300 ms", p->path);
    assert_string_equal(err.msg, want);
    kg_agent_client_free(c);
}

static void test_reconnect_after_restart(void **state)
{
    peer *p = *state;
    kg_agent_client *c = kg_agent_client_new(p->path, 2000, NULL);
    kg_err err;

    assert_true(sign_once(c, 0, &err, NULL));
    /* the agent restarts: its connections close, a new socket appears at the same path */
    peer_down(p);
    peer_listen(p);
    assert_true(sign_once(c, 1, &err, NULL));
    assert_int_equal(__atomic_load_n(&p->accepted, __ATOMIC_SEQ_CST), 2);
    kg_agent_client_free(c);
}

static void test_reconnect_once_after_a_dropped_request(void **state)
{
    peer *p = *state;
    kg_agent_client *c = kg_agent_client_new(p->path, 2000, NULL);
    kg_err err;

    assert_true(sign_once(c, 0, &err, NULL));
    /* the pooled connection is closed at the request, before any reply byte: retried once */
    __atomic_store_n(&p->mode, DROP_ONCE, __ATOMIC_SEQ_CST);
    assert_true(sign_once(c, 1, &err, NULL));
    assert_int_equal(__atomic_load_n(&p->accepted, __ATOMIC_SEQ_CST), 2);
    assert_int_equal(__atomic_load_n(&p->requests, __ATOMIC_SEQ_CST), 3);
    /* dropped again on the new connection: no third try */
    __atomic_store_n(&p->mode, DROP_ALL, __ATOMIC_SEQ_CST);
    assert_false(sign_once(c, 2, &err, NULL));
    assert_non_null(strstr(err.msg, ": reply: connection closed by the agent"));
    assert_int_equal(__atomic_load_n(&p->requests, __ATOMIC_SEQ_CST), 5);
    assert_int_equal(__atomic_load_n(&p->accepted, __ATOMIC_SEQ_CST), 3);
    kg_agent_client_free(c);
}

static void test_error_reply(void **state)
{
    peer *p = *state;
    kg_agent_client *c = kg_agent_client_new(p->path, 2000, NULL);
    kg_agent_status st = KG_AGENT_OK;
    kg_err err;

    __atomic_store_n(&p->mode, DENY, __ATOMIC_SEQ_CST);
    assert_false(sign_once(c, 0, &err, &st));
    assert_string_equal(err.msg, "handover: agent: key web: DENIED: uid 0 may not use this key");
    assert_int_equal(st, KG_AGENT_DENIED);
    /* the framing is intact: the connection is kept */
    __atomic_store_n(&p->mode, ANSWER, __ATOMIC_SEQ_CST);
    assert_true(sign_once(c, 1, &err, &st));
    assert_int_equal(__atomic_load_n(&p->accepted, __ATOMIC_SEQ_CST), 1);
    kg_agent_client_free(c);
}

typedef struct worker {
    kg_agent_client *c;
    int ok;
    uint8_t seed;
} worker;

static void *work(void *varg)
{
    worker *w = varg;
    kg_err err;

    for (int i = 0; i < 100; i++)
        w->ok += sign_once(w->c, (uint8_t)(w->seed + i), &err, NULL);
    return NULL;
}

static void test_pool_four_threads(void **state)
{
    peer *p = *state;
    kg_agent_client *c = kg_agent_client_new(p->path, 5000, NULL);
    worker w[4];
    pthread_t t[4];

    p->delay_ms = 2;
    for (int i = 0; i < 4; i++) {
        w[i] = (worker){c, 0, (uint8_t)(i * 50)};
        assert_int_equal(pthread_create(&t[i], NULL, work, &w[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(w[i].ok, 100);
    }
    /* each thread held at most one connection at a time, and they ran side by side */
    assert_true(__atomic_load_n(&p->accepted, __ATOMIC_SEQ_CST) <= 4);
    assert_true(__atomic_load_n(&p->max_inflight, __ATOMIC_SEQ_CST) >= 2);
    assert_int_equal(__atomic_load_n(&p->requests, __ATOMIC_SEQ_CST), 400);
    kg_agent_client_free(c);
}

static void test_fork_child_uses_its_own_connection(void **state)
{
    peer *p = *state;
    kg_agent_client *c = kg_agent_client_new(p->path, 2000, NULL);
    int status = 0;
    kg_err err;
    pid_t pid;

    assert_true(sign_once(c, 0, &err, NULL));
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) { /* no atfork handler here: the pid check alone must drop the parent's */
        kg_err e;
        _exit(sign_once(c, 1, &e, NULL) ? 0 : 1);
    }
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    assert_int_equal(__atomic_load_n(&p->accepted, __ATOMIC_SEQ_CST), 2);
    /* the parent's connection still works */
    assert_true(sign_once(c, 2, &err, NULL));
    assert_int_equal(__atomic_load_n(&p->accepted, __ATOMIC_SEQ_CST), 2);
    kg_agent_client_free(c);
}

static void test_bad_arguments(void **state)
{
    char longpath[200];
    kg_err err;

    (void)state;
    memset(longpath, 'a', sizeof(longpath) - 1);
    longpath[sizeof(longpath) - 1] = '\0';
    assert_null(kg_agent_client_new(longpath, 1000, &err));
    assert_non_null(strstr(err.msg, "socket path"));
    assert_null(kg_agent_client_new("/x", 0, &err));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_answer_and_pool_reuse, peer_setup, peer_teardown),
        cmocka_unit_test_setup_teardown(test_connect_failure, peer_setup, peer_teardown),
        cmocka_unit_test_setup_teardown(test_silent_peer_times_out, peer_setup, peer_teardown),
        cmocka_unit_test_setup_teardown(test_reconnect_after_restart, peer_setup, peer_teardown),
        cmocka_unit_test_setup_teardown(test_reconnect_once_after_a_dropped_request, peer_setup,
                                        peer_teardown),
        cmocka_unit_test_setup_teardown(test_error_reply, peer_setup, peer_teardown),
        cmocka_unit_test_setup_teardown(test_pool_four_threads, peer_setup, peer_teardown),
        cmocka_unit_test_setup_teardown(test_fork_child_uses_its_own_connection, peer_setup, peer_teardown),
        cmocka_unit_test(test_bad_arguments),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
