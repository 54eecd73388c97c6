/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The keygate agent's wire codec (agent/kg_agent_proto.c). Each input is used three ways:
 *   1. as a frame: kg_agent_header_parse, kg_agent_req_decode_frame, kg_agent_reply_decode_frame;
 *   2. as op ‖ body: kg_agent_req_decode and kg_agent_reply_decode with op = the first byte, so
 *      mutations reach the field layer without having to keep a header consistent;
 *   3. as a struct: the first 16 bytes choose op, enums, salt and versions, the rest feeds the
 *      byte fields; what kg_agent_req_encode / kg_agent_reply_encode accept must decode.
 * Oracles (a violation aborts): whatever decodes re-encodes to the input's canonical form, which
 * is the input without its ignored extension fields (tags 0x8000 and up) and with the body
 * length reduced by them (the only place where bytes and their decoding are not one-to-one), and
 * the re-encoded frame decodes to the same struct; a decoded MESSAGE holds no byte below 0x20.
 */
#include "fuzz_common.h"
#include "kg_agent_proto.h"

static uint8_t out[KG_AGENT_MAX_FRAME];
static uint8_t canon[KG_AGENT_MAX_FRAME];

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* The canonical body of an accepted body: its fields without the ignorable ones. */
static size_t canonical_body(const uint8_t *body, size_t len, uint8_t *to)
{
    size_t off = 4, n = 4;

    memcpy(to, body, 4);
    while (off < len) {
        unsigned tag = (unsigned)body[off] << 8 | body[off + 1];
        size_t flen = (size_t)body[off + 2] << 8 | body[off + 3];
        if (off + 4 + flen > len)
            abort(); /* accepted, so every field fits */
        if (!(tag & 0x8000)) {
            memcpy(to + n, body + off, 4 + flen);
            n += 4 + flen;
        }
        off += 4 + flen;
    }
    return n;
}

static int same_bytes(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen)
{
    return alen == blen && (alen == 0 || memcmp(a, b, alen) == 0);
}

static void same_req(const kg_agent_req *a, const kg_agent_req *b)
{
    if (a->op != b->op || a->id != b->id || a->version != b->version || a->scheme != b->scheme ||
        a->digest != b->digest || a->mgf1_digest != b->mgf1_digest || a->salt_len != b->salt_len ||
        a->padding != b->padding || a->tls_client_version != b->tls_client_version ||
        a->tls_negotiated_version != b->tls_negotiated_version ||
        (a->key_ref == NULL) != (b->key_ref == NULL) || (a->label == NULL) != (b->label == NULL) ||
        (a->data == NULL) != (b->data == NULL) || (a->peer_key == NULL) != (b->peer_key == NULL) ||
        !same_bytes(a->key_ref, a->key_ref_len, b->key_ref, b->key_ref_len) ||
        !same_bytes(a->label, a->label_len, b->label, b->label_len) ||
        !same_bytes(a->data, a->data_len, b->data, b->data_len) ||
        !same_bytes(a->peer_key, a->peer_key_len, b->peer_key, b->peer_key_len))
        abort();
}

static void same_reply(const kg_agent_reply *a, const kg_agent_reply *b)
{
    if (a->op != b->op || a->id != b->id || a->status != b->status || a->version != b->version ||
        a->max_body != b->max_body || (a->message == NULL) != (b->message == NULL) ||
        (a->result == NULL) != (b->result == NULL) ||
        !same_bytes((const uint8_t *)a->message, a->message_len, (const uint8_t *)b->message,
                    b->message_len) ||
        !same_bytes(a->result, a->result_len, b->result, b->result_len))
        abort();
    for (size_t i = 0; i < a->message_len; i++)
        if ((uint8_t)a->message[i] < 0x20 || (uint8_t)a->message[i] == 0x7f)
            abort();
}

/* An accepted request body: re-encoding gives its canonical bytes, which decode to the same. */
static void check_req(const kg_agent_req *req, const uint8_t *body, size_t len)
{
    kg_agent_req again;
    size_t n = 0, clen;
    kg_err err;

    if (!kg_agent_req_encode(req, out, sizeof(out), &n, &err))
        abort();
    clen = canonical_body(body, len, canon);
    if (n != KG_AGENT_HEADER_LEN + clen || get32(out + 8) != clen ||
        memcmp(out + KG_AGENT_HEADER_LEN, canon, clen))
        abort();
    if (!kg_agent_req_decode_frame(out, n, &again, &err) || again.ignored != 0)
        abort();
    same_req(req, &again);
}

static void check_reply(const kg_agent_reply *reply, const uint8_t *body, size_t len)
{
    kg_agent_reply again;
    size_t n = 0, clen;
    kg_err err;

    if (!kg_agent_reply_encode(reply, out, sizeof(out), &n, &err))
        abort();
    clen = canonical_body(body, len, canon);
    if (n != KG_AGENT_HEADER_LEN + clen || get32(out + 8) != clen ||
        memcmp(out + KG_AGENT_HEADER_LEN, canon, clen))
        abort();
    if (!kg_agent_reply_decode_frame(out, n, &again, &err) || again.ignored != 0)
        abort();
    same_reply(reply, &again);
}

/* Mode 3: a struct from the bytes; an accepted encoding must decode to it. */
static void from_struct(const uint8_t *d, size_t size)
{
    const uint8_t *rest = d + 16;
    size_t left = size - 16;
    kg_agent_req req, rback;
    kg_agent_reply reply, pback;
    size_t n = 0;
    kg_err err;
    const uint8_t *p[4];
    size_t l[4];

    /* four byte fields: lengths from d[12..15] scaled up, slices of the rest (NULL when 0xff) */
    for (int i = 0; i < 4; i++) {
        size_t want = d[12 + i] == 0xff ? 0 : (size_t)d[12 + i] * (i == 0 ? 33 : 5);
        p[i] = d[12 + i] == 0xff ? NULL : rest;
        l[i] = want < left ? want : left;
        rest += l[i];
        left -= l[i];
    }
    memset(&req, 0, sizeof(req));
    req.op = d[0] % 7;
    req.id = get32(d + 1) & 0x8000ffffu;
    req.version = d[5] & 3;
    req.scheme = (kg_agent_scheme)(d[6] % 5);
    req.digest = (kg_agent_digest)(d[7] % 8);
    req.mgf1_digest = (kg_agent_digest)(d[8] % 8);
    req.salt_len = (int8_t)d[9];
    req.padding = (kg_agent_padding)(d[10] % 6);
    req.tls_client_version = d[11] & 0x80 ? 0 : 0x0300 | (d[11] & 3);
    req.tls_negotiated_version = d[11] & 0x40 ? 0x0303 : 0;
    if (req.op != KG_AGENT_OP_HELLO && (req.op & 1))
        req.key_ref = p[0], req.key_ref_len = l[0];
    if (req.op == KG_AGENT_OP_SIGN || req.op == KG_AGENT_OP_DECRYPT)
        req.data = p[1], req.data_len = l[1];
    if (req.padding == KG_AGENT_PAD_OAEP)
        req.label = p[2], req.label_len = l[2];
    if (req.op == KG_AGENT_OP_DERIVE)
        req.peer_key = p[3], req.peer_key_len = l[3];
    if (kg_agent_req_encode(&req, out, sizeof(out), &n, &err)) {
        if (!kg_agent_req_decode_frame(out, n, &rback, &err))
            abort();
        same_req(&req, &rback);
    }
    memset(&reply, 0, sizeof(reply));
    reply.op = (uint8_t)(d[0] % 6 | KG_AGENT_OP_REPLY);
    reply.id = reply.op == KG_AGENT_OP_ERROR ? 0 : req.id;
    reply.status = (kg_agent_status)(d[6] % 13);
    reply.version = d[5] & 1;
    reply.max_body = d[7] & 1 ? 4096 : 0;
    reply.message = (const char *)p[2];
    reply.message_len = l[2];
    reply.result = p[1];
    reply.result_len = l[1];
    if (kg_agent_reply_encode(&reply, out, sizeof(out), &n, &err)) {
        if (!kg_agent_reply_decode_frame(out, n, &pback, &err))
            abort();
        same_reply(&reply, &pback);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *buf = fuzz_dup(data, size);
    kg_agent_header hdr;
    kg_agent_req req;
    kg_agent_reply reply;
    kg_err err;
    int ok;

    /* 1. a frame */
    ok = kg_agent_header_parse(buf, size, &hdr, &err);
    fuzz_note("kg_agent_header_parse", ok, err.msg);
    if (ok && hdr.refusal != KG_AGENT_OK)
        abort();
    ok = kg_agent_req_decode_frame(buf, size, &req, &err);
    fuzz_note("kg_agent_req_decode_frame", ok, err.msg);
    if (ok)
        check_req(&req, buf + KG_AGENT_HEADER_LEN, size - KG_AGENT_HEADER_LEN);
    ok = kg_agent_reply_decode_frame(buf, size, &reply, &err);
    fuzz_note("kg_agent_reply_decode_frame", ok, err.msg);
    if (ok)
        check_reply(&reply, buf + KG_AGENT_HEADER_LEN, size - KG_AGENT_HEADER_LEN);

    /* 2. op ‖ body, in its own exact-size buffer */
    if (size >= 1) {
        uint8_t *body = fuzz_dup(data + 1, size - 1);
        if (kg_agent_req_decode(data[0], body, size - 1, &req, &err))
            check_req(&req, body, size - 1);
        else if (req.refusal == KG_AGENT_OK)
            abort(); /* a refusal always says how to answer */
        if (kg_agent_reply_decode(data[0], body, size - 1, &reply, &err))
            check_reply(&reply, body, size - 1);
        free(body);
    }

    /* 3. a struct */
    if (size >= 16)
        from_struct(buf, size);
    free(buf);
    fuzz_err_queue_empty();
    return 0;
}
