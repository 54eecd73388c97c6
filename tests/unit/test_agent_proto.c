/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The keygate agent's wire codec (agent/kg_agent_proto.c, docs/protocols/agent.md), part 1:
 * round trips of every op and status, the header, the field layer (truncation, order, duplicates,
 * unknown and ignorable tags, fixed lengths, trailing bytes), bounds, names, and the seeds that
 * tests/fuzz/make-corpus.py writes from the specification. Part 2 (the per-op rules):
 * test_agent_proto_rules.c. Helpers: agent_proto_test.h.
 */
#include "agent_proto_test.h"

#include <dirent.h>

/* ---- round trips ---- */

static void round_trip_requests(void **state)
{
    static uint8_t ref_max[KG_AGENT_MAX_KEY_REF], peer_max[KG_AGENT_MAX_PEER_KEY];
    static const int32_t salts[] = {KG_AGENT_SALT_DIGEST, KG_AGENT_SALT_MAX, KG_AGENT_SALT_DIGEST_MAX, 0, 20,
                                    KG_AGENT_MAX_SALT};
    kg_agent_req q;

    q = req_of(KG_AGENT_OP_HELLO);
    for (unsigned v = 1; v <= 255; v += 127) {
        q.version = (uint8_t)v;
        sym_req(&q, NULL);
    }
    q = req_of(KG_AGENT_OP_PUBKEY);
    sym_req(&q, NULL);
    make_seq(ref_max, sizeof(ref_max));
    q.key_ref = ref_max;
    q.key_ref_len = sizeof(ref_max);
    sym_req(&q, NULL);

    for (size_t len = 1; len <= KG_AGENT_MAX_ECDSA_DATA; len += 21) { /* 1, 22, 43, 64 */
        q = sign_of(KG_AGENT_SCHEME_ECDSA, 0, len);
        sym_req(&q, NULL);
    }
    for (kg_agent_digest d = KG_AGENT_DIGEST_SHA1; d <= KG_AGENT_DIGEST_SHA512; d++) {
        q = sign_of(KG_AGENT_SCHEME_RSA_PKCS1, d, kg_agent_digest_size(d));
        sym_req(&q, NULL);
        q = sign_of(KG_AGENT_SCHEME_RSA_PSS, d, kg_agent_digest_size(d));
        q.mgf1_digest = KG_AGENT_DIGEST_SHA1;
        for (size_t i = 0; i < sizeof(salts) / sizeof(salts[0]); i++) {
            q.salt_len = salts[i];
            sym_req(&q, NULL);
        }
    }
    /* NONE: a DigestInfo (51 bytes for SHA-256), the TLS 1.0 MD5‖SHA1 (36), the maximum */
    for (size_t i = 0; i < 4; i++) {
        static const size_t lens[] = {51, 36, 1, KG_AGENT_MAX_DATA};
        q = sign_of(KG_AGENT_SCHEME_RSA_PKCS1, KG_AGENT_DIGEST_NONE, lens[i]);
        sym_req(&q, NULL);
    }
    for (kg_agent_padding pad = KG_AGENT_PAD_PKCS1; pad <= KG_AGENT_PAD_PKCS1_TLS; pad++) {
        q = decrypt_of(pad);
        sym_req(&q, NULL);
    }
    q = decrypt_of(KG_AGENT_PAD_OAEP);
    q.label = big;
    q.label_len = KG_AGENT_MAX_LABEL;
    q.mgf1_digest = KG_AGENT_DIGEST_SHA512;
    q.data_len = KG_AGENT_MAX_DATA;
    sym_req(&q, NULL);
    q.label_len = 1;
    q.data_len = 1;
    sym_req(&q, NULL);
    q = decrypt_of(KG_AGENT_PAD_PKCS1_TLS);
    q.tls_negotiated_version = 0x0301;
    sym_req(&q, NULL);
    q = req_of(KG_AGENT_OP_DERIVE);
    q.peer_key = PEER;
    q.peer_key_len = sizeof(PEER);
    sym_req(&q, NULL);
    make_seq(peer_max, sizeof(peer_max));
    q.peer_key = peer_max;
    q.peer_key_len = sizeof(peer_max);
    q.id = 0xffffffff;
    sym_req(&q, NULL);
}

static void round_trip_replies(void **state)
{
    static const char *texts[] = {"key 3fa85f64 is not released: UNAVAILABLE", "clé révoquée €", "ok 😀"};
    static char long_text[KG_AGENT_MAX_MESSAGE + 1];
    kg_agent_reply p;

    for (uint8_t op = 0; op <= KG_AGENT_OP_DERIVE; op++) {
        for (kg_agent_status st = KG_AGENT_OK; st <= KG_AGENT_STATUS_LAST; st++) {
            if (op == 0 && st == KG_AGENT_OK)
                continue;
            p = reply_of(op, st);
            sym_reply(&p, NULL);
            p.message = texts[st % 3];
            p.message_len = strlen(p.message);
            sym_reply(&p, NULL);
        }
    }
    p = reply_of(KG_AGENT_OP_DECRYPT, KG_AGENT_OK); /* an empty plaintext is a plaintext */
    p.result_len = 0;
    sym_reply(&p, NULL);
    p.result_len = KG_AGENT_MAX_RESULT;
    memset(long_text, 'x', KG_AGENT_MAX_MESSAGE - 2);
    memcpy(long_text + KG_AGENT_MAX_MESSAGE - 2, "é", 2); /* a 2-byte character ends it */
    p.message = long_text;
    p.message_len = KG_AGENT_MAX_MESSAGE;
    sym_reply(&p, NULL);
    p = reply_of(KG_AGENT_OP_HELLO, KG_AGENT_OK);
    p.max_body = 4;
    sym_reply(&p, NULL);
}

/* ---- header ---- */

static void header_refusals(void **state)
{
    kg_agent_header h;
    kg_err e;
    uint8_t b[12];

    raw *r = raw_done(raw_new(KG_AGENT_OP_SIGN, 1));
    memcpy(b, r->b, 12);
    assert_int_equal(kg_agent_header_parse(b, 12, &h, &e), 1);
    assert_int_equal(h.op, KG_AGENT_OP_SIGN);
    assert_int_equal(h.body_len, 4);
    assert_int_equal(kg_agent_header_parse(b, 11, &h, &e), 0);
    assert_string_equal(e.msg, "handover: agent protocol: header: 11 bytes, expected 12");

    struct {
        int at;
        uint8_t v;
        kg_agent_status why;
        const char *msg;
    } cases[] = {
        {0, 'X', KG_AGENT_BAD_REQUEST, "header: bad magic"},
        {2, 'B', KG_AGENT_BAD_REQUEST, "header: bad magic"},
        {3, 2, KG_AGENT_VERSION, "header: version 2, expected 1"},
        {3, 0, KG_AGENT_VERSION, "header: version 0, expected 1"},
        {5, 1, KG_AGENT_BAD_REQUEST, "header: flags 0x01, expected 0"},
        {5, 0x80, KG_AGENT_BAD_REQUEST, "header: flags 0x80, expected 0"},
        {6, 1, KG_AGENT_BAD_REQUEST, "header: reserved 0x0100, expected 0"},
        {7, 1, KG_AGENT_BAD_REQUEST, "header: reserved 0x0001, expected 0"},
        {4, 0, KG_AGENT_BAD_REQUEST, "header: unknown op 0x00"},
        {4, 6, KG_AGENT_BAD_REQUEST, "header: unknown op 0x06"},
        {4, 0x7f, KG_AGENT_BAD_REQUEST, "header: unknown op 0x7f"},
        {4, 0x86, KG_AGENT_BAD_REQUEST, "header: unknown op 0x86"},
        {4, 0xff, KG_AGENT_BAD_REQUEST, "header: unknown op 0xff"},
        {11, 3, KG_AGENT_BAD_REQUEST, "header: body length 3, shorter than the request id"},
        {11, 0, KG_AGENT_BAD_REQUEST, "header: body length 0, shorter than the request id"},
        {9, 1, KG_AGENT_TOO_LARGE, "header: body length 65540, at most 65536"}, /* 0x00010004 */
        {8, 0xff, KG_AGENT_TOO_LARGE, "header: body length 4278190084, at most 65536"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint8_t c[12];
        memcpy(c, b, 12);
        c[cases[i].at] = cases[i].v;
        /* from the 12 header bytes alone: nothing of the body needs to be there */
        assert_int_equal(kg_agent_header_parse(c, 12, &h, &e), 0);
        if (strstr(e.msg, cases[i].msg) == NULL)
            fail_msg("case %zu: expected \"%s\" in \"%s\"", i, cases[i].msg, e.msg);
        assert_int_equal(h.refusal, cases[i].why);
    }
    /* the largest body passes the header; one more byte does not */
    b[8] = 0, b[9] = 1, b[10] = 0, b[11] = 0;
    assert_int_equal(kg_agent_header_parse(b, 12, &h, &e), 1);
    assert_int_equal(h.body_len, KG_AGENT_MAX_BODY);
    b[11] = 1;
    assert_int_equal(kg_agent_header_parse(b, 12, &h, &e), 0);
    assert_string_equal(e.msg, "handover: agent protocol: header: body length 65537, at most 65536");
    assert_int_equal(h.refusal, KG_AGENT_TOO_LARGE);

    /* a frame must be exactly header + body */
    r = raw_new(KG_AGENT_OP_HELLO, 1);
    raw_u8(r, 0x0001, 1);
    raw_done(r);
    r->n++;
    req_refused(r, KG_AGENT_BAD_REQUEST, "frame of 22 bytes, the header says 9 + 12");
    r->n -= 2;
    req_refused(r, KG_AGENT_BAD_REQUEST, "frame of 20 bytes, the header says 9 + 12");
}

/* ---- fields ---- */

static void field_refusals(void **state)
{
    raw *r;
    kg_agent_req q;
    kg_agent_reply p;
    kg_err e;
    uint8_t *c;

    /* truncated field header, value past the end, trailing bytes */
    r = raw_new(KG_AGENT_OP_HELLO, 7);
    raw_u8(r, 0x0001, 1);
    raw_bytes(r, "\x00\x02", 2);
    req_refused(raw_done(r), KG_AGENT_BAD_REQUEST, "field header at byte 9: 2 bytes left, expected 4");
    r = raw_new(KG_AGENT_OP_HELLO, 7);
    raw_u8(r, 0x0001, 1);
    raw_bytes(r, "\x00", 1);
    req_refused(raw_done(r), KG_AGENT_BAD_REQUEST, "field header at byte 9: 1 bytes left, expected 4");
    r = raw_new(KG_AGENT_OP_PUBKEY, 7);
    raw_bytes(r, "\x00\x03\x00\x09\x30\x07", 6);
    req_refused(raw_done(r), KG_AGENT_BAD_REQUEST,
                "field 0x0003 at byte 4: length 9 runs past the body (2 bytes left)");
    /* duplicate and out of order */
    r = raw_new(KG_AGENT_OP_HELLO, 7);
    raw_u8(r, 0x0001, 1);
    raw_u8(r, 0x0001, 1);
    req_refused(raw_done(r), KG_AGENT_BAD_REQUEST, "field VERSION: appears twice");
    r = raw_new(KG_AGENT_OP_SIGN, 7);
    raw_u8(r, 0x0004, 1);
    raw_field(r, 0x0003, KEYREF, sizeof(KEYREF));
    req_refused(raw_done(r), KG_AGENT_BAD_REQUEST, "field 0x0003 at byte 9: out of order (after 0x0004)");
    r = raw_new(KG_AGENT_OP_HELLO, 7);
    raw_u8(r, 0x0001, 1);
    raw_field(r, 0x9000, "x", 1);
    raw_field(r, 0x9000, "x", 1);
    req_refused(raw_done(r), KG_AGENT_BAD_REQUEST, "field (extension): appears twice");
    /* unknown tags: refused below 0x8000, skipped from 0x8000 */
    for (unsigned tag = 0x000D; tag != 0; tag = tag == 0x000D ? 0x0013 : tag == 0x0013 ? 0x7fff : 0) {
        r = raw_new(KG_AGENT_OP_HELLO, 7);
        raw_u8(r, 0x0001, 1);
        raw_field(r, (uint16_t)tag, "x", 1);
        req_refused(raw_done(r), KG_AGENT_BAD_REQUEST, "at byte 9: unknown");
    }
    r = raw_new(KG_AGENT_OP_HELLO, 7);
    raw_u8(r, 0x0001, 3);
    raw_field(r, 0x8000, "", 0);
    raw_field(r, 0x8001, big, 300);
    raw_field(r, 0xffff, "x", 1);
    raw_done(r);
    assert_int_equal(dec_req(r, &q, &e, &c), 1);
    assert_int_equal(q.ignored, 3);
    assert_int_equal(q.version, 3);
    free(c);
    r = raw_new(KG_AGENT_OP_PUBKEY | KG_AGENT_OP_REPLY, 7);
    raw_u32(r, 0x0010, KG_AGENT_DENIED);
    raw_field(r, 0xabcd, "x", 1);
    raw_done(r);
    assert_int_equal(dec_reply(r, &p, &e, &c), 1);
    assert_int_equal(p.ignored, 1);
    assert_int_equal(p.status, KG_AGENT_DENIED);
    free(c);
    r = raw_new(KG_AGENT_OP_HELLO, 7); /* ignorable, but its length still has to fit */
    raw_u8(r, 0x0001, 1);
    raw_bytes(r, "\x80\x00\x00\x05xx", 6);
    req_refused(raw_done(r), KG_AGENT_BAD_REQUEST, "field 0x8000 at byte 9: length 5 runs past the body");

    /* fixed lengths, with the message the brief's example names */
    r = raw_new(KG_AGENT_OP_SIGN, 7);
    raw_field(r, 0x0003, KEYREF, sizeof(KEYREF));
    raw_field(r, 0x0004, "\x01\x01\x01", 3);
    kg_err_clear(&e);
    assert_int_equal(dec_req(raw_done(r), &q, &e, &c), 0);
    assert_string_equal(e.msg, "handover: agent protocol: field SIGN_SCHEME: length 3, expected 1");
    assert_int_equal(q.id, 7); /* the agent answers with the request's id */
    free(c);
    r = raw_new(KG_AGENT_OP_HELLO, 7);
    raw_field(r, 0x0001, "", 0);
    req_refused(raw_done(r), KG_AGENT_BAD_REQUEST, "field VERSION: length 0, expected 1");
    r = raw_new(KG_AGENT_OP_SIGN, 7);
    raw_field(r, 0x0007, "\xff\xff", 2);
    req_refused(raw_done(r), KG_AGENT_BAD_REQUEST, "field SALT_LEN: length 2, expected 4");
    r = raw_new(KG_AGENT_OP_SIGN | KG_AGENT_OP_REPLY, 7);
    raw_field(r, 0x0010, "\x00\x00", 2);
    reply_refused(raw_done(r), "field STATUS: length 2, expected 4");
    r = raw_new(KG_AGENT_OP_HELLO | KG_AGENT_OP_REPLY, 7);
    raw_field(r, 0x0002, "\x00\x01\x00\x00\x00", 5);
    reply_refused(raw_done(r), "field MAX_BODY: length 5, expected 4");
}

/* Oversize and empty variable-length fields, through both directions (symmetry). */
static void bounds(void **state)
{
    static uint8_t ref[KG_AGENT_MAX_KEY_REF + 1], peer[KG_AGENT_MAX_PEER_KEY + 1];
    kg_agent_req q;
    kg_agent_reply p;

    make_seq(ref, sizeof(ref));
    q = req_of(KG_AGENT_OP_PUBKEY);
    q.key_ref = ref;
    q.key_ref_len = sizeof(ref);
    sym_req(&q, "field KEY_REF: length 8193, at most 8192");
    req_refused(raw_req(&q), KG_AGENT_TOO_LARGE, "KEY_REF");
    q.key_ref_len = 0;
    sym_req(&q, "field KEY_REF: length 0, expected 1..8192");
    q = sign_of(KG_AGENT_SCHEME_RSA_PKCS1, KG_AGENT_DIGEST_NONE, KG_AGENT_MAX_DATA + 1);
    sym_req(&q, "field DATA: length 1025, at most 1024");
    req_refused(raw_req(&q), KG_AGENT_TOO_LARGE, "DATA");
    q.data_len = 0;
    sym_req(&q, "field DATA: length 0, expected 1..1024");
    q = sign_of(KG_AGENT_SCHEME_ECDSA, 0, KG_AGENT_MAX_ECDSA_DATA + 1);
    sym_req(&q, "field DATA: length 65, at most 64 for ECDSA");
    req_refused(raw_req(&q), KG_AGENT_TOO_LARGE, "DATA");
    q = decrypt_of(KG_AGENT_PAD_OAEP);
    q.label = big;
    q.label_len = KG_AGENT_MAX_LABEL + 1;
    sym_req(&q, "field OAEP_LABEL: length 257, at most 256");
    q.label_len = 0; /* no label is written as no field */
    sym_req(&q, "field OAEP_LABEL: length 0, expected 1..256");
    q = req_of(KG_AGENT_OP_DERIVE);
    make_seq(peer, sizeof(peer));
    q.peer_key = peer;
    q.peer_key_len = sizeof(peer);
    sym_req(&q, "field PEER_KEY: length 1025, at most 1024");
    p = reply_of(KG_AGENT_OP_SIGN, KG_AGENT_DENIED);
    p.message = (const char *)big;
    p.message_len = KG_AGENT_MAX_MESSAGE + 1;
    memset(big, 'a', sizeof(big));
    sym_reply(&p, "field MESSAGE: length 513, at most 512");
    p.message_len = 0;
    sym_reply(&p, "field MESSAGE: length 0, expected 1..512");
    p = reply_of(KG_AGENT_OP_DECRYPT, KG_AGENT_OK);
    p.result_len = KG_AGENT_MAX_RESULT + 1;
    sym_reply(&p, "field RESULT: length 16385, at most 16384");
    p = reply_of(KG_AGENT_OP_SIGN, KG_AGENT_OK);
    p.result_len = 0;
    sym_reply(&p, "field RESULT: empty in a SIGN reply with status OK");
}

static void trailing_bytes(void **state)
{
    kg_agent_req q = req_of(KG_AGENT_OP_PUBKEY);
    raw *r;

    for (size_t extra = 1; extra <= 3; extra++) {
        char msg[64];
        r = raw_req(&q);
        raw_bytes(r, "\x00\x00\x00", extra);
        snprintf(msg, sizeof(msg), "field header at byte 16: %zu bytes left, expected 4", extra);
        req_refused(raw_done(r), KG_AGENT_BAD_REQUEST, msg);
    }
    /* four zero bytes are a field header (tag 0): unknown and not ignorable */
    r = raw_req(&q);
    raw_bytes(r, "\x00\x00\x00\x00", 4);
    req_refused(raw_done(r), KG_AGENT_BAD_REQUEST, "out of order");
    /* a body shorter than the request id, through the body decoder */
    assert_int_equal(kg_agent_req_decode(KG_AGENT_OP_HELLO, (const uint8_t *)"\0\0\1", 3, &q, &(kg_err){0}),
                     0);
    assert_int_equal(q.refusal, KG_AGENT_BAD_REQUEST);
    /* a body over the maximum, through the body decoder (a header would have refused it first) */
    assert_int_equal(kg_agent_req_decode(KG_AGENT_OP_HELLO, big, KG_AGENT_MAX_BODY + 1, &q, &(kg_err){0}), 0);
    assert_int_equal(q.refusal, KG_AGENT_TOO_LARGE);
    /* a reply frame with a refused header */
    r = raw_reply(
        &(kg_agent_reply){.op = KG_AGENT_OP_SIGN | KG_AGENT_OP_REPLY, .id = 1, .status = KG_AGENT_DENIED});
    r->b[5] = 2;
    reply_refused(r, "header: flags 0x02, expected 0");
}

static void encode_buffer(void **state)
{
    kg_agent_req q = req_of(KG_AGENT_OP_PUBKEY);
    uint8_t out[40];
    size_t n = 0;
    kg_err e;

    assert_int_equal(kg_agent_req_encode(&q, out, sizeof(out), &n, &e), 1);
    assert_int_equal(n, 12 + 4 + 4 + sizeof(KEYREF));
    assert_int_equal(kg_agent_req_encode(&q, out, n - 1, &n, &e), 0);
    assert_non_null(strstr(e.msg, "encode: a buffer of 27 bytes, the frame needs 28"));
    assert_int_equal(kg_agent_req_encode(&q, NULL, 0, &n, &e), 0);
}

static void names(void **state)
{
    const char *seen[KG_AGENT_STATUS_LAST + 1];

    for (kg_agent_status st = KG_AGENT_OK; st <= KG_AGENT_STATUS_LAST; st++) {
        seen[st] = kg_agent_status_name(st);
        assert_string_not_equal(seen[st], "?");
        for (kg_agent_status o = KG_AGENT_OK; o < st; o++)
            assert_string_not_equal(seen[o], seen[st]);
    }
    assert_string_equal(kg_agent_status_name(KG_AGENT_UNKNOWN_KEY), "UNKNOWN_KEY");
    assert_string_equal(kg_agent_status_name((kg_agent_status)99), "?");
    assert_string_equal(kg_agent_op_name(KG_AGENT_OP_SIGN), "SIGN");
    assert_string_equal(kg_agent_op_name(KG_AGENT_OP_SIGN | KG_AGENT_OP_REPLY), "SIGN reply");
    assert_string_equal(kg_agent_op_name(KG_AGENT_OP_ERROR), "ERROR reply");
    assert_string_equal(kg_agent_op_name(6), "?");
    assert_string_equal(kg_agent_scheme_name(KG_AGENT_SCHEME_RSA_PSS), "RSA_PSS");
    assert_string_equal(kg_agent_scheme_name(0), "?");
    assert_string_equal(kg_agent_digest_name(KG_AGENT_DIGEST_SHA384), "SHA384");
    assert_string_equal(kg_agent_digest_name(0), "?");
    assert_string_equal(kg_agent_padding_name(KG_AGENT_PAD_PKCS1_TLS), "PKCS1_TLS");
    assert_string_equal(kg_agent_padding_name(9), "?");
    for (uint8_t op = KG_AGENT_OP_HELLO; op <= KG_AGENT_OP_DERIVE; op++) {
        char reply[32];
        snprintf(reply, sizeof(reply), "%s reply", kg_agent_op_name(op));
        assert_string_equal(kg_agent_op_name(op | KG_AGENT_OP_REPLY), reply);
        assert_string_not_equal(kg_agent_op_name(op), "?");
    }
    for (kg_agent_digest d = KG_AGENT_DIGEST_NONE; d <= KG_AGENT_DIGEST_SHA512; d++) {
        char name[16];
        snprintf(name, sizeof(name), "SHA%zu",
                 kg_agent_digest_size(d) == 20 ? (size_t)1 : kg_agent_digest_size(d) * 8);
        assert_string_equal(kg_agent_digest_name(d), d == KG_AGENT_DIGEST_NONE ? "NONE" : name);
    }
    assert_int_equal(kg_agent_digest_size(KG_AGENT_DIGEST_SHA224), 28);
    assert_int_equal(kg_agent_digest_size(KG_AGENT_DIGEST_NONE), 0);
}

/* The fuzz seeds are frames that tests/fuzz/make-corpus.py writes from the specification, a
 * second implementation: proto-ok-* must decode, proto-bad-* must be refused. */
static void spec_seeds(void **state)
{
    const char *dir = KG_SOURCE_DIR "/tests/fuzz/corpus/agent_proto";
    DIR *d = opendir(dir);
    struct dirent *ent;
    int ok_seen = 0, bad_seen = 0;
    static const char *why[][2] = {
        {"magic", "header: bad magic"},
        {"version2", "header: version 2, expected 1"},
        {"flags", "header: flags 0x01"},
        {"oversize", "header: body length 65537, at most 65536"},
        {"duplicate", "field VERSION: appears twice"},
        {"out-of-order", "out of order (after 0x0004)"},
        {"unknown-tag", "field 0x0013 at byte 9: unknown"},
        {"scheme-length", "field SIGN_SCHEME: length 3, expected 1"},
        {"missing-digest", "field DIGEST: missing"},
        {"pem-key-ref", "field KEY_REF: not one DER SEQUENCE"},
        {"trailing", "field header at byte 9: 2 bytes left"},
        {"result-on-denied", "field RESULT: not allowed in a SIGN reply with status DENIED"},
        {"message-newline", "field MESSAGE: control character 0x0a"},
    };

    assert_non_null(d);
    while ((ent = readdir(d)) != NULL) {
        char path[1024];
        int good = strncmp(ent->d_name, "proto-ok-", 9) == 0;
        size_t n;
        uint8_t *b;
        kg_agent_req q;
        kg_agent_reply p;
        kg_err e;
        int rc;

        if (!good && strncmp(ent->d_name, "proto-bad-", 10) != 0)
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir, ent->d_name);
        b = kg_test_read_file(path, &n);
        rc = n > 4 && (b[4] & KG_AGENT_OP_REPLY) ? kg_agent_reply_decode_frame(b, n, &p, &e)
                                                 : kg_agent_req_decode_frame(b, n, &q, &e);
        if (rc != good)
            fail_msg("%s: decode %d (%s)", ent->d_name, rc, rc ? "accepted" : e.msg);
        if (!good) { /* and for the reason the seed was written for */
            size_t i = 0;
            while (i < sizeof(why) / sizeof(why[0]) && strcmp(ent->d_name + 10, why[i][0]) != 0)
                i++;
            if (i == sizeof(why) / sizeof(why[0]))
                fail_msg("%s: no expected reason in spec_seeds", ent->d_name);
            if (strstr(e.msg, why[i][1]) == NULL)
                fail_msg("%s: expected \"%s\" in \"%s\"", ent->d_name, why[i][1], e.msg);
        }
        ok_seen += good;
        bad_seen += !good;
        free(b);
    }
    closedir(d);
    assert_true(ok_seen >= 15);
    assert_true(bad_seen == (int)(sizeof(why) / sizeof(why[0])));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(round_trip_requests, setup),
        cmocka_unit_test_setup(round_trip_replies, setup),
        cmocka_unit_test_setup(header_refusals, setup),
        cmocka_unit_test_setup(field_refusals, setup),
        cmocka_unit_test_setup(bounds, setup),
        cmocka_unit_test_setup(trailing_bytes, setup),
        cmocka_unit_test_setup(encode_buffer, setup),
        cmocka_unit_test(names),
        cmocka_unit_test(spec_seeds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
