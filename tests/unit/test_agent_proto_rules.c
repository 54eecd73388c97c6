/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The keygate agent's wire codec, part 2: the rules per op (docs/protocols/agent.md §4, §5):
 * required fields, fields an op or scheme does not allow, values out of range, cross-field rules,
 * and the MESSAGE text rules; each through both directions (sym_req / sym_reply in
 * agent_proto_test.h) unless a struct cannot express the fault. Part 1: test_agent_proto.c.
 */
#include "agent_proto_test.h"

static void required_fields(void **state)
{
    kg_agent_req q;
    kg_agent_reply p;

    q = req_of(KG_AGENT_OP_HELLO);
    sym_req(&q, "field VERSION: missing, required in a HELLO request");
    q = req_of(KG_AGENT_OP_PUBKEY);
    q.key_ref = NULL, q.key_ref_len = 0;
    sym_req(&q, "field KEY_REF: missing, required in a PUBKEY request");
    q = sign_of(KG_AGENT_SCHEME_ECDSA, 0, 32);
    q.key_ref = NULL, q.key_ref_len = 0;
    sym_req(&q, "field KEY_REF: missing, required in a SIGN request with scheme ECDSA");
    q = sign_of(0, 0, 32);
    sym_req(&q, "field SIGN_SCHEME: missing, required in a SIGN request");
    q = sign_of(KG_AGENT_SCHEME_ECDSA, 0, 32);
    q.data = NULL, q.data_len = 0;
    sym_req(&q, "field DATA: missing, required in a SIGN request with scheme ECDSA");
    q = sign_of(KG_AGENT_SCHEME_RSA_PKCS1, 0, 32);
    sym_req(&q, "field DIGEST: missing, required in a SIGN request with scheme RSA_PKCS1");
    q = sign_of(KG_AGENT_SCHEME_RSA_PSS, KG_AGENT_DIGEST_SHA256, 32);
    q.digest = 0;
    sym_req(&q, "field DIGEST: missing, required in a SIGN request with scheme RSA_PSS");
    q = sign_of(KG_AGENT_SCHEME_RSA_PSS, KG_AGENT_DIGEST_SHA256, 32);
    q.mgf1_digest = 0;
    sym_req(&q, "field MGF1_DIGEST: missing, required in a SIGN request with scheme RSA_PSS");
    {
        raw *r = raw_new(KG_AGENT_OP_SIGN, 9); /* SALT_LEN cannot be left out of a struct: by hand */
        raw_field(r, 0x0003, KEYREF, sizeof(KEYREF));
        raw_u8(r, 0x0004, KG_AGENT_SCHEME_RSA_PSS);
        raw_u8(r, 0x0005, KG_AGENT_DIGEST_SHA256);
        raw_u8(r, 0x0006, KG_AGENT_DIGEST_SHA256);
        raw_field(r, 0x000B, big, 32);
        req_refused(raw_done(r), KG_AGENT_BAD_REQUEST,
                    "field SALT_LEN: missing, required in a SIGN request with scheme RSA_PSS");
    }
    q = decrypt_of(0);
    sym_req(&q, "field PADDING: missing, required in a DECRYPT request");
    q = decrypt_of(KG_AGENT_PAD_PKCS1);
    q.data = NULL, q.data_len = 0;
    sym_req(&q, "field DATA: missing, required in a DECRYPT request with padding PKCS1");
    q = decrypt_of(KG_AGENT_PAD_OAEP);
    q.digest = 0;
    sym_req(&q, "field DIGEST: missing, required in a DECRYPT request with padding OAEP");
    q = decrypt_of(KG_AGENT_PAD_OAEP);
    q.mgf1_digest = 0;
    sym_req(&q, "field MGF1_DIGEST: missing, required in a DECRYPT request with padding OAEP");
    q = decrypt_of(KG_AGENT_PAD_PKCS1_TLS);
    q.tls_client_version = 0;
    sym_req(&q, "field TLS_VERSIONS: missing, required in a DECRYPT request with padding PKCS1_TLS");
    q = req_of(KG_AGENT_OP_DERIVE);
    sym_req(&q, "field PEER_KEY: missing, required in a DERIVE request");
    q.key_ref = NULL, q.key_ref_len = 0, q.peer_key = PEER, q.peer_key_len = sizeof(PEER);
    sym_req(&q, "field KEY_REF: missing, required in a DERIVE request");

    for (uint8_t op = 0; op <= KG_AGENT_OP_DERIVE; op++) { /* STATUS: by hand, the struct always has one */
        raw *r = raw_new(op | KG_AGENT_OP_REPLY, op ? 5 : 0);
        reply_refused(raw_done(r), "field STATUS: missing");
    }
    p = reply_of(KG_AGENT_OP_HELLO, KG_AGENT_OK);
    p.version = 0;
    sym_reply(&p, "field VERSION: missing, required in a HELLO reply with status OK");
    p = reply_of(KG_AGENT_OP_HELLO, KG_AGENT_OK);
    p.max_body = 0;
    sym_reply(&p, "field MAX_BODY: missing, required in a HELLO reply with status OK");
    for (uint8_t op = KG_AGENT_OP_PUBKEY; op <= KG_AGENT_OP_DERIVE; op++) {
        p = reply_of(op, KG_AGENT_OK);
        p.result = NULL, p.result_len = 0;
        sym_reply(&p, "field RESULT: missing, required in a");
    }
}

static void fields_not_allowed(void **state)
{
    kg_agent_req q;
    kg_agent_reply p;

    q = req_of(KG_AGENT_OP_HELLO);
    q.version = 1;
    q.key_ref = KEYREF, q.key_ref_len = sizeof(KEYREF);
    sym_req(&q, "field KEY_REF: not allowed in a HELLO request");
    q = req_of(KG_AGENT_OP_PUBKEY);
    q.data = big, q.data_len = 4;
    sym_req(&q, "field DATA: not allowed in a PUBKEY request");
    q = sign_of(KG_AGENT_SCHEME_ECDSA, KG_AGENT_DIGEST_SHA256, 32);
    sym_req(&q, "field DIGEST: not allowed in a SIGN request with scheme ECDSA");
    q = sign_of(KG_AGENT_SCHEME_RSA_PKCS1, KG_AGENT_DIGEST_SHA256, 32);
    q.mgf1_digest = KG_AGENT_DIGEST_SHA256;
    sym_req(&q, "field MGF1_DIGEST: not allowed in a SIGN request with scheme RSA_PKCS1");
    q = sign_of(KG_AGENT_SCHEME_RSA_PKCS1, KG_AGENT_DIGEST_SHA256, 32);
    q.salt_len = 5;
    sym_req(&q, "field SALT_LEN: not allowed in a SIGN request with scheme RSA_PKCS1");
    q = sign_of(KG_AGENT_SCHEME_RSA_PSS, KG_AGENT_DIGEST_SHA256, 32);
    q.padding = KG_AGENT_PAD_PKCS1;
    sym_req(&q, "field PADDING: not allowed in a SIGN request with scheme RSA_PSS");
    q = decrypt_of(KG_AGENT_PAD_PKCS1);
    q.label = big, q.label_len = 3;
    sym_req(&q, "field OAEP_LABEL: not allowed in a DECRYPT request with padding PKCS1");
    q = decrypt_of(KG_AGENT_PAD_NONE);
    q.digest = KG_AGENT_DIGEST_SHA256;
    sym_req(&q, "field DIGEST: not allowed in a DECRYPT request with padding NONE");
    q = decrypt_of(KG_AGENT_PAD_OAEP);
    q.tls_client_version = 0x0303;
    sym_req(&q, "field TLS_VERSIONS: not allowed in a DECRYPT request with padding OAEP");
    q = decrypt_of(KG_AGENT_PAD_PKCS1);
    q.scheme = KG_AGENT_SCHEME_ECDSA;
    sym_req(&q, "field SIGN_SCHEME: not allowed in a DECRYPT request with padding PKCS1");
    q = req_of(KG_AGENT_OP_DERIVE);
    q.peer_key = PEER, q.peer_key_len = sizeof(PEER);
    q.data = big, q.data_len = 32;
    sym_req(&q, "field DATA: not allowed in a DERIVE request");
    { /* reply fields in a request, request fields in a reply: by hand */
        raw *r = raw_new(KG_AGENT_OP_PUBKEY, 9);
        raw_field(r, 0x0003, KEYREF, sizeof(KEYREF));
        raw_u32(r, 0x0010, 0);
        req_refused(raw_done(r), KG_AGENT_BAD_REQUEST, "field STATUS: not allowed in a PUBKEY request");
        r = raw_new(KG_AGENT_OP_PUBKEY | KG_AGENT_OP_REPLY, 9);
        raw_field(r, 0x0003, KEYREF, sizeof(KEYREF));
        raw_u32(r, 0x0010, 0);
        raw_field(r, 0x0012, "x", 1);
        reply_refused(raw_done(r), "field KEY_REF: not allowed in a PUBKEY reply with status OK");
    }
    /* RESULT only with OK, for every other status and op */
    for (uint8_t op = KG_AGENT_OP_PUBKEY; op <= KG_AGENT_OP_DERIVE; op++) {
        for (kg_agent_status st = KG_AGENT_BAD_REQUEST; st <= KG_AGENT_STATUS_LAST; st++) {
            p = reply_of(op, st);
            p.result = big, p.result_len = 10;
            sym_reply(&p, "field RESULT: not allowed in a");
        }
    }
    p = reply_of(0, KG_AGENT_INTERNAL);
    p.result = big, p.result_len = 10;
    sym_reply(&p, "field RESULT: not allowed in an ERROR reply with status INTERNAL");
    p = reply_of(KG_AGENT_OP_HELLO, KG_AGENT_VERSION);
    p.version = 1;
    sym_reply(&p, "field VERSION: not allowed in a HELLO reply with status VERSION");
    p = reply_of(KG_AGENT_OP_SIGN, KG_AGENT_OK);
    p.max_body = 100;
    sym_reply(&p, "field MAX_BODY: not allowed in a SIGN reply with status OK");
    p = reply_of(KG_AGENT_OP_HELLO, KG_AGENT_OK);
    p.result = big, p.result_len = 3;
    sym_reply(&p, "field RESULT: not allowed in a HELLO reply with status OK");
}

static void bad_values(void **state)
{
    static const uint8_t pem[] = "-----BEGIN KEYGATE KEY REFERENCE-----";
    static const uint8_t trailing[] = {0x30, 0x03, 0x02, 0x01, 0x00, 0x00};
    static const uint8_t long_form[] = {0x30, 0x81, 0x03, 0x02, 0x01, 0x00}; /* not minimal */
    static const uint8_t short_seq[] = {0x30, 0x05, 0x02, 0x01, 0x00};
    kg_agent_req q;
    kg_agent_reply p;

    { /* a zero VERSION is a missing one in a struct: by hand */
        raw *r = raw_new(KG_AGENT_OP_HELLO, 9);
        raw_u8(r, 0x0001, 0);
        req_refused(raw_done(r), KG_AGENT_BAD_REQUEST, "field VERSION: value 0, expected 1..255");
    }
    q = sign_of(4, 0, 32);
    sym_req(&q, "field SIGN_SCHEME: value 4, expected 1..3");
    q = sign_of(0x104, 0, 32); /* the encoder does not truncate it to a valid u8 */
    assert_int_equal(kg_agent_req_encode(&q, big, sizeof(big), &(size_t){0}, &(kg_err){0}), 0);
    q = (kg_agent_req){.op = 0};
    assert_int_equal(kg_agent_req_encode(&q, big, sizeof(big), &(size_t){0}, &(kg_err){0}), 0);
    q = sign_of(KG_AGENT_SCHEME_RSA_PKCS1, 7, 32);
    sym_req(&q, "field DIGEST: value 7, expected 1..6");
    q = sign_of(KG_AGENT_SCHEME_RSA_PSS, KG_AGENT_DIGEST_NONE, 32);
    sym_req(&q, "field DIGEST: value 1, expected 2..6");
    q = sign_of(KG_AGENT_SCHEME_RSA_PSS, KG_AGENT_DIGEST_SHA256, 32);
    q.mgf1_digest = KG_AGENT_DIGEST_NONE;
    sym_req(&q, "field MGF1_DIGEST: value 1, expected 2..6");
    q.mgf1_digest = KG_AGENT_DIGEST_SHA256;
    q.salt_len = -4;
    sym_req(&q, "field SALT_LEN: value -4, expected -3..1024");
    q.salt_len = KG_AGENT_MAX_SALT + 1;
    sym_req(&q, "field SALT_LEN: value 1025, expected -3..1024");
    q.salt_len = INT32_MIN;
    sym_req(&q, "field SALT_LEN: value -2147483648, expected -3..1024");
    q = sign_of(KG_AGENT_SCHEME_RSA_PSS, KG_AGENT_DIGEST_SHA384, 32);
    sym_req(&q, "field DATA: length 32, expected 48 (SHA384)");
    q = sign_of(KG_AGENT_SCHEME_RSA_PKCS1, KG_AGENT_DIGEST_SHA1, 21);
    sym_req(&q, "field DATA: length 21, expected 20 (SHA1)");
    q = decrypt_of(5);
    sym_req(&q, "field PADDING: value 5, expected 1..4");
    q = decrypt_of(KG_AGENT_PAD_OAEP);
    q.digest = KG_AGENT_DIGEST_NONE;
    sym_req(&q, "field DIGEST: value 1, expected 2..6");
    q = decrypt_of(KG_AGENT_PAD_OAEP);
    q.mgf1_digest = 9;
    sym_req(&q, "field MGF1_DIGEST: value 9, expected 2..6");
    q = decrypt_of(KG_AGENT_PAD_PKCS1_TLS);
    q.tls_client_version = 0;
    q.tls_negotiated_version = 0x0303;
    sym_req(&q, "field TLS_VERSIONS: client version 0");
    /* key reference and peer key: one DER SEQUENCE, exactly */
    q = req_of(KG_AGENT_OP_PUBKEY);
    for (int i = 0; i < 4; i++) {
        const uint8_t *v[] = {pem, trailing, long_form, short_seq};
        size_t n[] = {sizeof(pem) - 1, sizeof(trailing), sizeof(long_form), sizeof(short_seq)};
        q.key_ref = v[i], q.key_ref_len = n[i];
        sym_req(&q, "field KEY_REF: not one DER SEQUENCE");
    }
    q = req_of(KG_AGENT_OP_DERIVE);
    q.peer_key = pem, q.peer_key_len = sizeof(pem) - 1;
    sym_req(&q, "field PEER_KEY: not one DER SEQUENCE");
    /* a pointer-less length is a caller's bug */
    q = req_of(KG_AGENT_OP_PUBKEY);
    q.data_len = 3;
    assert_int_equal(kg_agent_req_encode(&q, big, sizeof(big), &(size_t){0}, &(kg_err){0}), 0);

    for (uint32_t st = KG_AGENT_STATUS_LAST + 1; st != 0;
         st = st == KG_AGENT_STATUS_LAST + 1 ? 0xffffffffu : 0) {
        p = reply_of(KG_AGENT_OP_SIGN, (kg_agent_status)st);
        sym_reply(&p, "field STATUS: value");
    }
    p = reply_of(0, KG_AGENT_OK);
    sym_reply(&p, "field STATUS: OK in an ERROR reply");
    p = reply_of(0, KG_AGENT_VERSION);
    p.id = 5;
    sym_reply(&p, "request id 5 in an ERROR reply, expected 0");
    p = reply_of(KG_AGENT_OP_HELLO, KG_AGENT_OK);
    p.version = 2;
    sym_reply(&p, "field VERSION: value 2, expected 1..1");
    p.version = 1;
    p.max_body = 3;
    sym_reply(&p, "field MAX_BODY: value 3, expected 4..65536");
    p.max_body = KG_AGENT_MAX_BODY + 1;
    sym_reply(&p, "field MAX_BODY: value 65537, expected 4..65536");
    /* ops: a request op in a reply and back */
    q = req_of(KG_AGENT_OP_PUBKEY);
    q.op = KG_AGENT_OP_PUBKEY | KG_AGENT_OP_REPLY;
    assert_int_equal(kg_agent_req_encode(&q, big, sizeof(big), &(size_t){0}, &(kg_err){0}), 0);
    p = reply_of(KG_AGENT_OP_PUBKEY, KG_AGENT_DENIED);
    p.op = KG_AGENT_OP_PUBKEY;
    assert_int_equal(kg_agent_reply_encode(&p, big, sizeof(big), &(size_t){0}, &(kg_err){0}), 0);
    req_refused(raw_done(raw_new(KG_AGENT_OP_ERROR, 0)), KG_AGENT_BAD_REQUEST, "op 0x80 is not a request");
    reply_refused(raw_done(raw_new(KG_AGENT_OP_SIGN, 1)), "op 0x03 is not a reply");
}

/* One line of text: UTF-8, no control characters. */
static void message_text(void **state)
{
    static const struct {
        const char *text;
        const char *msg; /* NULL: accepted */
    } cases[] = {
        {"two\nlines", "field MESSAGE: control character 0x0a at byte 3"},
        {"tab\there", "control character 0x09 at byte 3"},
        {"esc\x1b[31m", "control character 0x1b at byte 3"},
        {"del\x7f", "control character 0x7f at byte 3"},
        {"c1 \xc2\x85", "control character U+0085 at byte 3"},  /* NEL */
        {"csi \xc2\x9b", "control character U+009B at byte 4"}, /* a terminal's 8-bit CSI */
        {"ls \xe2\x80\xa8", "control character U+2028 at byte 3"},
        {"\xff", "field MESSAGE: invalid UTF-8 at byte 0"},
        {"a\xc0\x80", "invalid UTF-8 at byte 1"},         /* overlong NUL */
        {"a\xe0\x80\xaf", "invalid UTF-8 at byte 1"},     /* overlong '/' */
        {"a\xed\xa0\x80", "invalid UTF-8 at byte 1"},     /* a surrogate */
        {"a\xf4\x90\x80\x80", "invalid UTF-8 at byte 1"}, /* past U+10FFFF */
        {"a\xe2\x82", "invalid UTF-8 at byte 1"},         /* truncated */
        {"a\x80", "invalid UTF-8 at byte 1"},             /* a lone continuation byte */
        {"a\xc3(", "invalid UTF-8 at byte 1"},            /* a lead byte without its continuation */
        {"key revoked at the KBS (lease 42)", NULL},
        {"\xc2\xa0\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\xf4\x8f\xbf\xbf", NULL}, /* NBSP é € 😀 U+10FFFF */
    };
    kg_agent_reply p;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        p = reply_of(KG_AGENT_OP_SIGN, KG_AGENT_REVOKED);
        p.message = cases[i].text;
        p.message_len = strlen(cases[i].text);
        sym_reply(&p, cases[i].msg);
    }
    p = reply_of(KG_AGENT_OP_SIGN, KG_AGENT_REVOKED); /* a NUL inside */
    p.message = "a\0b";
    p.message_len = 3;
    sym_reply(&p, "control character 0x00 at byte 1");
}
int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(required_fields, setup),
        cmocka_unit_test_setup(fields_not_allowed, setup),
        cmocka_unit_test_setup(bad_values, setup),
        cmocka_unit_test_setup(message_text, setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
