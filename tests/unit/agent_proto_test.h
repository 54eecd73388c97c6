/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Helpers of the agent codec's tests (test_agent_proto.c, test_agent_proto_rules.c): the tests'
 * own frame writer (raw_*: no checks, the codec's presence rules, tag order), decoding from
 * exact-size copies (a read past the end is an ASan report), and the symmetry checks sym_req /
 * sym_reply: encode(x) and decode(raw(x)) both accept, with the same bytes and x back, or both
 * refuse with the same message.
 */
#ifndef AGENT_PROTO_TEST_H
#define AGENT_PROTO_TEST_H

#include "kg_test.h"

#include <string.h>

#include "kg_agent_proto.h"

static const uint8_t KEYREF[] = {0x30, 0x06, 0x02, 0x01, 0x01, 0x0c, 0x01, 'k'};
static const uint8_t PEER[] = {0x30, 0x03, 0x02, 0x01, 0x00};
static uint8_t big[20000]; /* payload bytes for the long fields */

/* ---- the test's own frame writer (no checks) ---- */

typedef struct raw {
    uint8_t b[KG_AGENT_MAX_FRAME + 64];
    size_t n;
} raw;

static inline raw *raw_new(uint8_t op, uint32_t id)
{
    static raw r; /* one frame at a time */
    memset(&r, 0, sizeof(r));
    memcpy(r.b, "KGA\x01", 4);
    r.b[4] = op;
    r.n = 12;
    r.b[r.n++] = (uint8_t)(id >> 24);
    r.b[r.n++] = (uint8_t)(id >> 16);
    r.b[r.n++] = (uint8_t)(id >> 8);
    r.b[r.n++] = (uint8_t)id;
    return &r;
}

static inline void raw_bytes(raw *r, const void *p, size_t len)
{
    memcpy(r->b + r->n, p, len);
    r->n += len;
}

static inline void raw_field(raw *r, uint16_t tag, const void *p, size_t len)
{
    uint8_t h[4] = {(uint8_t)(tag >> 8), (uint8_t)tag, (uint8_t)(len >> 8), (uint8_t)len};
    raw_bytes(r, h, 4);
    raw_bytes(r, p, len);
}

static inline void raw_u8(raw *r, uint16_t tag, unsigned v)
{
    uint8_t b = (uint8_t)v;
    raw_field(r, tag, &b, 1);
}

static inline void raw_u32(raw *r, uint16_t tag, uint32_t v)
{
    uint8_t b[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
    raw_field(r, tag, b, 4);
}

/* sets the header's body length to what was written */
static inline raw *raw_done(raw *r)
{
    size_t body = r->n - 12;
    r->b[8] = (uint8_t)(body >> 24);
    r->b[9] = (uint8_t)(body >> 16);
    r->b[10] = (uint8_t)(body >> 8);
    r->b[11] = (uint8_t)body;
    return r;
}

/* A request struct written field by field with the codec's presence rules, in tag order. */
static inline raw *raw_req(const kg_agent_req *q)
{
    raw *r = raw_new(q->op, q->id);
    if (q->version)
        raw_u8(r, 0x0001, q->version);
    if (q->key_ref)
        raw_field(r, 0x0003, q->key_ref, q->key_ref_len);
    if (q->scheme)
        raw_u8(r, 0x0004, q->scheme);
    if (q->digest)
        raw_u8(r, 0x0005, q->digest);
    if (q->mgf1_digest)
        raw_u8(r, 0x0006, q->mgf1_digest);
    if (q->salt_len || q->scheme == KG_AGENT_SCHEME_RSA_PSS)
        raw_u32(r, 0x0007, (uint32_t)q->salt_len);
    if (q->padding)
        raw_u8(r, 0x0008, q->padding);
    if (q->label)
        raw_field(r, 0x0009, q->label, q->label_len);
    if (q->tls_client_version || q->tls_negotiated_version)
        raw_u32(r, 0x000A, (uint32_t)q->tls_client_version << 16 | q->tls_negotiated_version);
    if (q->data)
        raw_field(r, 0x000B, q->data, q->data_len);
    if (q->peer_key)
        raw_field(r, 0x000C, q->peer_key, q->peer_key_len);
    return raw_done(r);
}

static inline raw *raw_reply(const kg_agent_reply *p)
{
    raw *r = raw_new(p->op, p->id);
    if (p->version)
        raw_u8(r, 0x0001, p->version);
    if (p->max_body)
        raw_u32(r, 0x0002, p->max_body);
    raw_u32(r, 0x0010, p->status);
    if (p->message)
        raw_field(r, 0x0011, p->message, p->message_len);
    if (p->result)
        raw_field(r, 0x0012, p->result, p->result_len);
    return raw_done(r);
}

/* ---- decoding exact-size copies ---- */

static inline uint8_t *dup(const uint8_t *p, size_t n)
{
    uint8_t *c = malloc(n ? n : 1);
    assert_non_null(c);
    memcpy(c, p, n);
    return c;
}

/* Decodes a copy of r as a request; *copy keeps the bytes the struct borrows (caller frees). */
static inline int dec_req(const raw *r, kg_agent_req *q, kg_err *e, uint8_t **copy)
{
    *copy = dup(r->b, r->n);
    return kg_agent_req_decode_frame(*copy, r->n, q, e);
}

static inline int dec_reply(const raw *r, kg_agent_reply *p, kg_err *e, uint8_t **copy)
{
    *copy = dup(r->b, r->n);
    return kg_agent_reply_decode_frame(*copy, r->n, p, e);
}

static inline void req_refused(const raw *r, kg_agent_status why, const char *msg)
{
    kg_agent_req q;
    kg_err e;
    uint8_t *c;

    kg_err_clear(&e);
    assert_int_equal(dec_req(r, &q, &e, &c), 0);
    if (strstr(e.msg, msg) == NULL)
        fail_msg("expected \"%s\" in \"%s\"", msg, e.msg);
    assert_int_equal(q.refusal, why);
    free(c);
}

static inline void reply_refused(const raw *r, const char *msg)
{
    kg_agent_reply p;
    kg_err e;
    uint8_t *c;

    kg_err_clear(&e);
    assert_int_equal(dec_reply(r, &p, &e, &c), 0);
    if (strstr(e.msg, msg) == NULL)
        fail_msg("expected \"%s\" in \"%s\"", msg, e.msg);
    free(c);
}

/* ---- symmetry: encode(x) and decode(raw(x)) agree; when they accept, on the bytes too ---- */

static inline int sym_req(const kg_agent_req *q, const char *msg)
{
    static uint8_t out[KG_AGENT_MAX_FRAME];
    kg_agent_req back;
    kg_err e1, e2;
    size_t n = 0;
    uint8_t *c;
    raw *r;
    int enc, dec;

    kg_err_clear(&e1);
    kg_err_clear(&e2);
    enc = kg_agent_req_encode(q, out, sizeof(out), &n, &e1);
    r = raw_req(q);
    dec = dec_req(r, &back, &e2, &c);
    if (enc != dec)
        fail_msg("encode %d (%s), decode %d (%s)", enc, e1.msg, dec, e2.msg);
    if (!enc) {
        assert_string_equal(e1.msg, e2.msg);
        if (msg && strstr(e1.msg, msg) == NULL)
            fail_msg("expected \"%s\" in \"%s\"", msg, e1.msg);
    } else {
        assert_null(msg);
        assert_int_equal(n, r->n);
        assert_memory_equal(out, r->b, n);
        /* decode(encode(x)) == x */
        assert_int_equal(back.op, q->op);
        assert_int_equal(back.id, q->id);
        assert_int_equal(back.version, q->version);
        assert_int_equal(back.scheme, q->scheme);
        assert_int_equal(back.digest, q->digest);
        assert_int_equal(back.mgf1_digest, q->mgf1_digest);
        assert_int_equal(back.salt_len, q->salt_len);
        assert_int_equal(back.padding, q->padding);
        assert_int_equal(back.tls_client_version, q->tls_client_version);
        assert_int_equal(back.tls_negotiated_version, q->tls_negotiated_version);
        assert_int_equal(back.key_ref_len, q->key_ref_len);
        assert_int_equal(back.data_len, q->data_len);
        assert_int_equal(back.label_len, q->label_len);
        assert_int_equal(back.peer_key_len, q->peer_key_len);
        assert_true((back.key_ref == NULL) == (q->key_ref == NULL));
        assert_true((back.data == NULL) == (q->data == NULL));
        assert_true((back.label == NULL) == (q->label == NULL));
        assert_true((back.peer_key == NULL) == (q->peer_key == NULL));
        if (q->key_ref)
            assert_memory_equal(back.key_ref, q->key_ref, q->key_ref_len);
        if (q->data && q->data_len)
            assert_memory_equal(back.data, q->data, q->data_len);
        if (q->label)
            assert_memory_equal(back.label, q->label, q->label_len);
        if (q->peer_key)
            assert_memory_equal(back.peer_key, q->peer_key, q->peer_key_len);
        assert_int_equal(back.refusal, KG_AGENT_OK);
    }
    free(c);
    return enc;
}

static inline int sym_reply(const kg_agent_reply *p, const char *msg)
{
    static uint8_t out[KG_AGENT_MAX_FRAME];
    kg_agent_reply back;
    kg_err e1, e2;
    size_t n = 0;
    uint8_t *c;
    raw *r;
    int enc, dec;

    kg_err_clear(&e1);
    kg_err_clear(&e2);
    enc = kg_agent_reply_encode(p, out, sizeof(out), &n, &e1);
    r = raw_reply(p);
    dec = dec_reply(r, &back, &e2, &c);
    if (enc != dec)
        fail_msg("encode %d (%s), decode %d (%s)", enc, e1.msg, dec, e2.msg);
    if (!enc) {
        assert_string_equal(e1.msg, e2.msg);
        if (msg && strstr(e1.msg, msg) == NULL)
            fail_msg("expected \"%s\" in \"%s\"", msg, e1.msg);
    } else {
        assert_null(msg);
        assert_int_equal(n, r->n);
        assert_memory_equal(out, r->b, n);
        assert_int_equal(back.op, p->op);
        assert_int_equal(back.id, p->id);
        assert_int_equal(back.status, p->status);
        assert_int_equal(back.version, p->version);
        assert_int_equal(back.max_body, p->max_body);
        assert_int_equal(back.message_len, p->message_len);
        assert_int_equal(back.result_len, p->result_len);
        assert_true((back.message == NULL) == (p->message == NULL));
        assert_true((back.result == NULL) == (p->result == NULL));
        if (p->message)
            assert_memory_equal(back.message, p->message, p->message_len);
        if (p->result && p->result_len)
            assert_memory_equal(back.result, p->result, p->result_len);
    }
    free(c);
    return enc;
}

static inline kg_agent_req req_of(uint8_t op)
{
    kg_agent_req q;
    memset(&q, 0, sizeof(q));
    q.op = op;
    q.id = 0x01020304;
    if (op != KG_AGENT_OP_HELLO) {
        q.key_ref = KEYREF;
        q.key_ref_len = sizeof(KEYREF);
    }
    return q;
}

static inline kg_agent_req sign_of(kg_agent_scheme s, kg_agent_digest d, size_t len)
{
    kg_agent_req q = req_of(KG_AGENT_OP_SIGN);
    q.scheme = s;
    q.digest = d;
    q.data = big;
    q.data_len = len;
    if (s == KG_AGENT_SCHEME_RSA_PSS) {
        q.mgf1_digest = d;
        q.salt_len = KG_AGENT_SALT_DIGEST;
    }
    return q;
}

static inline kg_agent_req decrypt_of(kg_agent_padding pad)
{
    kg_agent_req q = req_of(KG_AGENT_OP_DECRYPT);
    q.padding = pad;
    q.data = big;
    q.data_len = 256;
    if (pad == KG_AGENT_PAD_OAEP)
        q.digest = q.mgf1_digest = KG_AGENT_DIGEST_SHA256;
    if (pad == KG_AGENT_PAD_PKCS1_TLS)
        q.tls_client_version = 0x0303;
    return q;
}

static inline kg_agent_reply reply_of(uint8_t req_op, kg_agent_status st)
{
    kg_agent_reply p;
    memset(&p, 0, sizeof(p));
    p.op = req_op | KG_AGENT_OP_REPLY;
    p.id = req_op == 0 ? 0 : 0x01020304;
    p.status = st;
    if (st == KG_AGENT_OK && req_op == KG_AGENT_OP_HELLO) {
        p.version = 1;
        p.max_body = KG_AGENT_MAX_BODY;
    } else if (st == KG_AGENT_OK && req_op != 0) {
        p.result = big;
        p.result_len = 71;
    }
    return p;
}

static inline void make_seq(uint8_t *p, size_t total)
{
    memset(p, 0x41, total);
    p[0] = 0x30;
    if (total - 2 < 0x80) {
        p[1] = (uint8_t)(total - 2);
    } else if (total - 3 < 0x100) {
        p[1] = 0x81;
        p[2] = (uint8_t)(total - 3);
    } else {
        p[1] = 0x82;
        p[2] = (uint8_t)((total - 4) >> 8);
        p[3] = (uint8_t)(total - 4);
    }
}

static inline inline int setup(void **state)
{
    for (size_t i = 0; i < sizeof(big); i++)
        big[i] = (uint8_t)(i * 7 + 1);
    return 0;
}

#endif
