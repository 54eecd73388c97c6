/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The keygate agent's wire codec (kg_agent_proto.h, docs/protocols/agent.md).
 *
 * One path for both directions: a decode walks the fields into a view (value pointers and a
 * presence mask), converts it to the struct and runs the semantic checks; an encode builds the
 * same view from the struct, runs the same length and semantic checks, then writes the view. So
 * the encoder cannot produce what the decoder refuses, and the checks exist once.
 */
#include "kg_agent_proto.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static const uint8_t kg_agent_magic[3] = {'K', 'G', 'A'};

/* The fields, in ascending tag order (the wire order). */
enum {
    F_VERSION,
    F_MAX_BODY,
    F_KEY_REF,
    F_SIGN_SCHEME,
    F_DIGEST,
    F_MGF1_DIGEST,
    F_SALT_LEN,
    F_PADDING,
    F_OAEP_LABEL,
    F_TLS_VERSIONS,
    F_DATA,
    F_PEER_KEY,
    F_STATUS,
    F_MESSAGE,
    F_RESULT,
    F_COUNT
};
#define BIT(f) (1u << (f))

static const struct {
    uint16_t tag;
    const char *name;
    size_t min, max; /* value length bounds; min == max: fixed length */
} fields[F_COUNT] = {
    [F_VERSION] = {0x0001, "VERSION", 1, 1},
    [F_MAX_BODY] = {0x0002, "MAX_BODY", 4, 4},
    [F_KEY_REF] = {0x0003, "KEY_REF", 1, KG_AGENT_MAX_KEY_REF},
    [F_SIGN_SCHEME] = {0x0004, "SIGN_SCHEME", 1, 1},
    [F_DIGEST] = {0x0005, "DIGEST", 1, 1},
    [F_MGF1_DIGEST] = {0x0006, "MGF1_DIGEST", 1, 1},
    [F_SALT_LEN] = {0x0007, "SALT_LEN", 4, 4},
    [F_PADDING] = {0x0008, "PADDING", 1, 1},
    [F_OAEP_LABEL] = {0x0009, "OAEP_LABEL", 1, KG_AGENT_MAX_LABEL},
    [F_TLS_VERSIONS] = {0x000A, "TLS_VERSIONS", 4, 4},
    [F_DATA] = {0x000B, "DATA", 1, KG_AGENT_MAX_DATA},
    [F_PEER_KEY] = {0x000C, "PEER_KEY", 1, KG_AGENT_MAX_PEER_KEY},
    [F_STATUS] = {0x0010, "STATUS", 4, 4},
    [F_MESSAGE] = {0x0011, "MESSAGE", 1, KG_AGENT_MAX_MESSAGE},
    [F_RESULT] = {0x0012, "RESULT", 0, KG_AGENT_MAX_RESULT},
};
#define TAG_IGNORABLE 0x8000u

/* A message's fields: what a decode found or an encode will write. */
typedef struct view {
    const uint8_t *val[F_COUNT];
    size_t len[F_COUNT];
    unsigned present;
    unsigned ignored;
    uint8_t ints[F_COUNT][4]; /* the encoder's bytes of the integer fields */
} view;

__attribute__((format(printf, 4, 5))) static int fail(kg_err *err, kg_agent_status *why,
                                                      kg_agent_status status, const char *fmt, ...)
{
    char buf[512];
    va_list ap;

    if (why != NULL)
        *why = status;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    return kg_err_set(err, KG_AGENT_STEP, "agent protocol: %s", buf);
}

static uint16_t get16(const uint8_t *p)
{
    return (uint16_t)(p[0] << 8 | p[1]);
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* ---- names ---- */

const char *kg_agent_op_name(uint8_t op)
{
    switch (op) {
    case KG_AGENT_OP_HELLO: return "HELLO";
    case KG_AGENT_OP_PUBKEY: return "PUBKEY";
    case KG_AGENT_OP_SIGN: return "SIGN";
    case KG_AGENT_OP_DECRYPT: return "DECRYPT";
    case KG_AGENT_OP_DERIVE: return "DERIVE";
    case KG_AGENT_OP_ERROR: return "ERROR reply";
    case KG_AGENT_OP_HELLO | KG_AGENT_OP_REPLY: return "HELLO reply";
    case KG_AGENT_OP_PUBKEY | KG_AGENT_OP_REPLY: return "PUBKEY reply";
    case KG_AGENT_OP_SIGN | KG_AGENT_OP_REPLY: return "SIGN reply";
    case KG_AGENT_OP_DECRYPT | KG_AGENT_OP_REPLY: return "DECRYPT reply";
    case KG_AGENT_OP_DERIVE | KG_AGENT_OP_REPLY: return "DERIVE reply";
    }
    return "?";
}

const char *kg_agent_status_name(kg_agent_status status)
{
    switch (status) {
    case KG_AGENT_OK: return "OK";
    case KG_AGENT_BAD_REQUEST: return "BAD_REQUEST";
    case KG_AGENT_VERSION: return "VERSION";
    case KG_AGENT_UNKNOWN_KEY: return "UNKNOWN_KEY";
    case KG_AGENT_DENIED: return "DENIED";
    case KG_AGENT_REVOKED: return "REVOKED";
    case KG_AGENT_UNAVAILABLE: return "UNAVAILABLE";
    case KG_AGENT_RATE_LIMITED: return "RATE_LIMITED";
    case KG_AGENT_TOO_LARGE: return "TOO_LARGE";
    case KG_AGENT_INTERNAL: return "INTERNAL";
    case KG_AGENT_OP_FAILED: return "OP_FAILED";
    case KG_AGENT_BUSY: return "BUSY";
    }
    return "?";
}

const char *kg_agent_scheme_name(kg_agent_scheme scheme)
{
    switch (scheme) {
    case KG_AGENT_SCHEME_ECDSA: return "ECDSA";
    case KG_AGENT_SCHEME_RSA_PKCS1: return "RSA_PKCS1";
    case KG_AGENT_SCHEME_RSA_PSS: return "RSA_PSS";
    }
    return "?";
}

const char *kg_agent_digest_name(kg_agent_digest digest)
{
    switch (digest) {
    case KG_AGENT_DIGEST_NONE: return "NONE";
    case KG_AGENT_DIGEST_SHA1: return "SHA1";
    case KG_AGENT_DIGEST_SHA224: return "SHA224";
    case KG_AGENT_DIGEST_SHA256: return "SHA256";
    case KG_AGENT_DIGEST_SHA384: return "SHA384";
    case KG_AGENT_DIGEST_SHA512: return "SHA512";
    }
    return "?";
}

const char *kg_agent_padding_name(kg_agent_padding padding)
{
    switch (padding) {
    case KG_AGENT_PAD_PKCS1: return "PKCS1";
    case KG_AGENT_PAD_OAEP: return "OAEP";
    case KG_AGENT_PAD_NONE: return "NONE";
    case KG_AGENT_PAD_PKCS1_TLS: return "PKCS1_TLS";
    }
    return "?";
}

size_t kg_agent_digest_size(kg_agent_digest digest)
{
    switch (digest) {
    case KG_AGENT_DIGEST_SHA1: return 20;
    case KG_AGENT_DIGEST_SHA224: return 28;
    case KG_AGENT_DIGEST_SHA256: return 32;
    case KG_AGENT_DIGEST_SHA384: return 48;
    case KG_AGENT_DIGEST_SHA512: return 64;
    case KG_AGENT_DIGEST_NONE: return 0;
    }
    return 0;
}

static int is_request_op(unsigned op)
{
    return op >= KG_AGENT_OP_HELLO && op <= KG_AGENT_OP_DERIVE;
}

static int is_reply_op(unsigned op)
{
    return op == KG_AGENT_OP_ERROR || ((op & KG_AGENT_OP_REPLY) && is_request_op(op & ~KG_AGENT_OP_REPLY));
}

/* ---- value checks shared by both directions ---- */

/* A field's length against its bounds: over the maximum is TOO_LARGE, anything else BAD_REQUEST. */
static int check_len(int f, size_t len, kg_agent_status *why, kg_err *err)
{
    if (fields[f].min == fields[f].max && len != fields[f].min)
        return fail(err, why, KG_AGENT_BAD_REQUEST, "field %s: length %zu, expected %zu", fields[f].name, len,
                    fields[f].min);
    if (len > fields[f].max)
        return fail(err, why, KG_AGENT_TOO_LARGE, "field %s: length %zu, at most %zu", fields[f].name, len,
                    fields[f].max);
    if (len < fields[f].min)
        return fail(err, why, KG_AGENT_BAD_REQUEST, "field %s: length %zu, expected %zu..%zu", fields[f].name,
                    len, fields[f].min, fields[f].max);
    return 1;
}

/* One DER SEQUENCE filling exactly n bytes, with a minimal definite length (the shape of a key
 * reference and of a SubjectPublicKeyInfo; what is inside is the agent's to parse). */
static int der_sequence(const uint8_t *p, size_t n)
{
    size_t hl, body;

    if (n < 2 || p[0] != 0x30)
        return 0;
    if (p[1] < 0x80) {
        hl = 2;
        body = p[1];
    } else if (p[1] == 0x81 && n >= 3 && p[2] >= 0x80) {
        hl = 3;
        body = p[2];
    } else if (p[1] == 0x82 && n >= 4 && get16(p + 2) >= 0x100) {
        hl = 4;
        body = get16(p + 2);
    } else {
        return 0; /* longer forms exceed every bound of this protocol */
    }
    return hl + body == n;
}

/* A one-line UTF-8 text: well-formed (no overlong forms, surrogates or code points past
 * U+10FFFF) and free of C0/C1 controls, DEL and the Unicode line/paragraph separators, so that a
 * log line or terminal showing it cannot be split or driven by escape sequences. */
static int check_text(int f, const uint8_t *s, size_t n, kg_agent_status *why, kg_err *err)
{
    size_t i = 0, k, j;
    uint32_t cp;

    while (i < n) {
        uint8_t c = s[i];
        if (c < 0x80) {
            if (c < 0x20 || c == 0x7f)
                return fail(err, why, KG_AGENT_BAD_REQUEST, "field %s: control character 0x%02x at byte %zu",
                            fields[f].name, c, i);
            i++;
            continue;
        }
        if (c >= 0xc2 && c <= 0xdf) {
            k = 1;
            cp = c & 0x1fu;
        } else if (c >= 0xe0 && c <= 0xef) {
            k = 2;
            cp = c & 0x0fu;
        } else if (c >= 0xf0 && c <= 0xf4) {
            k = 3;
            cp = c & 0x07u;
        } else {
            goto bad;
        }
        if (n - i <= k)
            goto bad;
        for (j = 1; j <= k; j++) {
            if ((s[i + j] & 0xc0) != 0x80)
                goto bad;
            cp = cp << 6 | (s[i + j] & 0x3fu);
        }
        if ((k == 2 && cp < 0x800) || (k == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
            (cp >= 0xd800 && cp <= 0xdfff))
            goto bad;
        if (cp <= 0x9f || cp == 0x2028 || cp == 0x2029)
            return fail(err, why, KG_AGENT_BAD_REQUEST, "field %s: control character U+%04X at byte %zu",
                        fields[f].name, (unsigned)cp, i);
        i += k + 1;
    }
    return 1;
bad:
    return fail(err, why, KG_AGENT_BAD_REQUEST, "field %s: invalid UTF-8 at byte %zu", fields[f].name, i);
}

/* The fields of `need` missing, then those present beyond need and `allow` (missing first: without
 * a SIGN_SCHEME, "DIGEST not allowed" would send the reader the wrong way); ctx names the message. */
static int check_fields(unsigned present, unsigned need, unsigned allow, const char *ctx,
                        kg_agent_status *why, kg_err *err)
{
    for (int f = 0; f < F_COUNT; f++) {
        if ((need & BIT(f)) && !(present & BIT(f)))
            return fail(err, why, KG_AGENT_BAD_REQUEST, "field %s: missing, required in %s", fields[f].name,
                        ctx);
    }
    for (int f = 0; f < F_COUNT; f++) {
        if ((present & BIT(f)) && !((need | allow) & BIT(f)))
            return fail(err, why, KG_AGENT_BAD_REQUEST, "field %s: not allowed in %s", fields[f].name, ctx);
    }
    return 1;
}

static int check_digest(int f, kg_agent_digest d, int none_ok, kg_agent_status *why, kg_err *err)
{
    if (kg_agent_digest_size(d) == 0 && !(none_ok && d == KG_AGENT_DIGEST_NONE))
        return fail(err, why, KG_AGENT_BAD_REQUEST, "field %s: value %u, expected %u..%u", fields[f].name,
                    (unsigned)d, none_ok ? KG_AGENT_DIGEST_NONE : KG_AGENT_DIGEST_SHA1,
                    KG_AGENT_DIGEST_SHA512);
    return 1;
}

static int check_sign(const kg_agent_req *req, unsigned present, kg_agent_status *why, kg_err *err)
{
    unsigned need = BIT(F_KEY_REF) | BIT(F_SIGN_SCHEME) | BIT(F_DATA);
    char ctx[64];
    size_t want;

    if ((present & BIT(F_SIGN_SCHEME)) &&
        (req->scheme < KG_AGENT_SCHEME_ECDSA || req->scheme > KG_AGENT_SCHEME_RSA_PSS))
        return fail(err, why, KG_AGENT_BAD_REQUEST, "field SIGN_SCHEME: value %u, expected 1..3",
                    (unsigned)req->scheme);
    if (req->scheme == KG_AGENT_SCHEME_RSA_PKCS1)
        need |= BIT(F_DIGEST);
    else if (req->scheme == KG_AGENT_SCHEME_RSA_PSS)
        need |= BIT(F_DIGEST) | BIT(F_MGF1_DIGEST) | BIT(F_SALT_LEN);
    snprintf(ctx, sizeof(ctx), "a SIGN request with scheme %s", kg_agent_scheme_name(req->scheme));
    if (!check_fields(present, need, 0, (present & BIT(F_SIGN_SCHEME)) ? ctx : "a SIGN request", why, err))
        return 0;
    if (req->scheme == KG_AGENT_SCHEME_ECDSA) {
        if (req->data_len > KG_AGENT_MAX_ECDSA_DATA)
            return fail(err, why, KG_AGENT_TOO_LARGE, "field DATA: length %zu, at most %d for ECDSA",
                        req->data_len, KG_AGENT_MAX_ECDSA_DATA);
        return 1;
    }
    if (!check_digest(F_DIGEST, req->digest, req->scheme == KG_AGENT_SCHEME_RSA_PKCS1, why, err))
        return 0;
    want = kg_agent_digest_size(req->digest);
    if (want != 0 && req->data_len != want)
        return fail(err, why, KG_AGENT_BAD_REQUEST, "field DATA: length %zu, expected %zu (%s)",
                    req->data_len, want, kg_agent_digest_name(req->digest));
    if (req->scheme == KG_AGENT_SCHEME_RSA_PSS) {
        if (!check_digest(F_MGF1_DIGEST, req->mgf1_digest, 0, why, err))
            return 0;
        if (req->salt_len < KG_AGENT_SALT_DIGEST_MAX || req->salt_len > KG_AGENT_MAX_SALT)
            return fail(err, why, KG_AGENT_BAD_REQUEST, "field SALT_LEN: value %ld, expected -3..%d",
                        (long)req->salt_len, KG_AGENT_MAX_SALT);
    }
    return 1;
}

static int check_decrypt(const kg_agent_req *req, unsigned present, kg_agent_status *why, kg_err *err)
{
    unsigned need = BIT(F_KEY_REF) | BIT(F_PADDING) | BIT(F_DATA), allow = 0;
    char ctx[64];

    if ((present & BIT(F_PADDING)) &&
        (req->padding < KG_AGENT_PAD_PKCS1 || req->padding > KG_AGENT_PAD_PKCS1_TLS))
        return fail(err, why, KG_AGENT_BAD_REQUEST, "field PADDING: value %u, expected 1..4",
                    (unsigned)req->padding);
    if (req->padding == KG_AGENT_PAD_OAEP) {
        need |= BIT(F_DIGEST) | BIT(F_MGF1_DIGEST);
        allow |= BIT(F_OAEP_LABEL);
    } else if (req->padding == KG_AGENT_PAD_PKCS1_TLS) {
        need |= BIT(F_TLS_VERSIONS);
    }
    snprintf(ctx, sizeof(ctx), "a DECRYPT request with padding %s", kg_agent_padding_name(req->padding));
    if (!check_fields(present, need, allow, (present & BIT(F_PADDING)) ? ctx : "a DECRYPT request", why, err))
        return 0;
    if (req->padding == KG_AGENT_PAD_OAEP)
        return check_digest(F_DIGEST, req->digest, 0, why, err) &&
               check_digest(F_MGF1_DIGEST, req->mgf1_digest, 0, why, err);
    if (req->padding == KG_AGENT_PAD_PKCS1_TLS && req->tls_client_version == 0)
        return fail(err, why, KG_AGENT_BAD_REQUEST, "field TLS_VERSIONS: client version 0");
    return 1;
}

/* Everything about a request but its bytes: fields per op, values, cross-field rules. */
static int check_req(const kg_agent_req *req, unsigned present, kg_agent_status *why, kg_err *err)
{
    if ((present & BIT(F_KEY_REF)) && !der_sequence(req->key_ref, req->key_ref_len))
        return fail(err, why, KG_AGENT_BAD_REQUEST,
                    "field KEY_REF: not one DER SEQUENCE (the reference's DER, not "
                    "its PEM)");
    if ((present & BIT(F_PEER_KEY)) && !der_sequence(req->peer_key, req->peer_key_len))
        return fail(err, why, KG_AGENT_BAD_REQUEST,
                    "field PEER_KEY: not one DER SEQUENCE (SubjectPublicKeyInfo)");
    switch (req->op) {
    case KG_AGENT_OP_HELLO:
        if (!check_fields(present, BIT(F_VERSION), 0, "a HELLO request", why, err))
            return 0;
        if (req->version == 0)
            return fail(err, why, KG_AGENT_BAD_REQUEST, "field VERSION: value 0, expected 1..255");
        return 1;
    case KG_AGENT_OP_PUBKEY: return check_fields(present, BIT(F_KEY_REF), 0, "a PUBKEY request", why, err);
    case KG_AGENT_OP_SIGN: return check_sign(req, present, why, err);
    case KG_AGENT_OP_DECRYPT: return check_decrypt(req, present, why, err);
    case KG_AGENT_OP_DERIVE:
        return check_fields(present, BIT(F_KEY_REF) | BIT(F_PEER_KEY), 0, "a DERIVE request", why, err);
    }
    return fail(err, why, KG_AGENT_BAD_REQUEST, "op 0x%02x is not a request", (unsigned)req->op);
}

static int check_reply(const kg_agent_reply *reply, unsigned present, kg_agent_status *why, kg_err *err)
{
    unsigned need = BIT(F_STATUS), allow = BIT(F_MESSAGE);
    unsigned req_op = reply->op & ~KG_AGENT_OP_REPLY;
    char ctx[64];

    if (!is_reply_op(reply->op))
        return fail(err, why, KG_AGENT_BAD_REQUEST, "op 0x%02x is not a reply", (unsigned)reply->op);
    if ((present & BIT(F_STATUS)) && reply->status > KG_AGENT_STATUS_LAST)
        return fail(err, why, KG_AGENT_BAD_REQUEST, "field STATUS: value %lu, expected 0..%d",
                    (unsigned long)reply->status, KG_AGENT_STATUS_LAST);
    if (reply->op == KG_AGENT_OP_ERROR) {
        if ((present & BIT(F_STATUS)) && reply->status == KG_AGENT_OK)
            return fail(err, why, KG_AGENT_BAD_REQUEST, "field STATUS: OK in an ERROR reply");
        if (reply->id != 0)
            return fail(err, why, KG_AGENT_BAD_REQUEST, "request id %lu in an ERROR reply, expected 0",
                        (unsigned long)reply->id);
    } else if ((present & BIT(F_STATUS)) && reply->status == KG_AGENT_OK) {
        need |= req_op == KG_AGENT_OP_HELLO ? BIT(F_VERSION) | BIT(F_MAX_BODY) : BIT(F_RESULT);
    }
    snprintf(ctx, sizeof(ctx), "a%s %s with status %s", reply->op == KG_AGENT_OP_ERROR ? "n" : "",
             kg_agent_op_name(reply->op), kg_agent_status_name(reply->status));
    if (!check_fields(present, need, allow, ctx, why, err))
        return 0;
    if ((present & BIT(F_MESSAGE)) &&
        !check_text(F_MESSAGE, (const uint8_t *)reply->message, reply->message_len, why, err))
        return 0;
    if ((present & BIT(F_VERSION)) && (reply->version < 1 || reply->version > KG_AGENT_PROTO_VERSION))
        return fail(err, why, KG_AGENT_VERSION, "field VERSION: value %u, expected 1..%d",
                    (unsigned)reply->version, KG_AGENT_PROTO_VERSION);
    if ((present & BIT(F_MAX_BODY)) && (reply->max_body < 4 || reply->max_body > KG_AGENT_MAX_BODY))
        return fail(err, why, KG_AGENT_BAD_REQUEST, "field MAX_BODY: value %lu, expected 4..%d",
                    (unsigned long)reply->max_body, KG_AGENT_MAX_BODY);
    if ((present & BIT(F_RESULT)) && reply->result_len == 0 && req_op != KG_AGENT_OP_DECRYPT)
        return fail(err, why, KG_AGENT_BAD_REQUEST, "field RESULT: empty in %s", ctx);
    return 1;
}

/* ---- decoding ---- */

/* The fields after the request id: strictly ascending tags, each value inside the body, known
 * tags within their bounds, unknown tags skipped only when ignorable. */
static int walk(const uint8_t *body, size_t len, view *v, kg_agent_status *why, kg_err *err)
{
    size_t off = 4;
    long prev = -1;

    memset(v, 0, sizeof(*v));
    while (off < len) {
        uint16_t tag, flen;
        int f;

        if (len - off < 4)
            return fail(err, why, KG_AGENT_BAD_REQUEST,
                        "field header at byte %zu: %zu bytes left, expected 4", off, len - off);
        tag = get16(body + off);
        flen = get16(body + off + 2);
        for (f = 0; f < F_COUNT && fields[f].tag != tag; f++)
            ;
        if ((long)tag <= prev) {
            if ((long)tag == prev)
                return fail(err, why, KG_AGENT_BAD_REQUEST, "field %s: appears twice",
                            f < F_COUNT ? fields[f].name : "(extension)");
            return fail(err, why, KG_AGENT_BAD_REQUEST,
                        "field 0x%04x at byte %zu: out of order (after 0x%04lx)", (unsigned)tag, off,
                        (unsigned long)prev);
        }
        prev = tag;
        if (len - off - 4 < flen)
            return fail(err, why, KG_AGENT_BAD_REQUEST,
                        "field 0x%04x at byte %zu: length %u runs past the body "
                        "(%zu bytes left)",
                        (unsigned)tag, off, (unsigned)flen, len - off - 4);
        if (f == F_COUNT) {
            if (!(tag & TAG_IGNORABLE))
                return fail(err, why, KG_AGENT_BAD_REQUEST, "field 0x%04x at byte %zu: unknown",
                            (unsigned)tag, off);
            v->ignored++;
        } else {
            if (!check_len(f, flen, why, err))
                return 0;
            v->present |= BIT(f);
            v->val[f] = body + off + 4;
            v->len[f] = flen;
        }
        off += 4 + (size_t)flen;
    }
    return 1;
}

static int body_start(uint8_t op, int request, const uint8_t *body, size_t len, uint32_t *id,
                      kg_agent_status *why, kg_err *err)
{
    *id = 0;
    if (request ? !is_request_op(op) : !is_reply_op(op))
        return fail(err, why, KG_AGENT_BAD_REQUEST, "op 0x%02x is not a %s", (unsigned)op,
                    request ? "request" : "reply");
    if (len > KG_AGENT_MAX_BODY)
        return fail(err, why, KG_AGENT_TOO_LARGE, "body of %zu bytes, at most %d", len, KG_AGENT_MAX_BODY);
    if (body == NULL || len < 4)
        return fail(err, why, KG_AGENT_BAD_REQUEST, "body of %zu bytes, shorter than the request id", len);
    *id = get32(body);
    return 1;
}

int kg_agent_header_parse(const uint8_t *buf, size_t len, kg_agent_header *hdr, kg_err *err)
{
    kg_agent_status *why = &hdr->refusal;

    memset(hdr, 0, sizeof(*hdr));
    if (buf == NULL || len < KG_AGENT_HEADER_LEN)
        return fail(err, why, KG_AGENT_BAD_REQUEST, "header: %zu bytes, expected %d", buf ? len : 0,
                    KG_AGENT_HEADER_LEN);
    hdr->version = buf[3];
    hdr->op = buf[4];
    hdr->body_len = get32(buf + 8);
    if (memcmp(buf, kg_agent_magic, sizeof(kg_agent_magic)) != 0)
        return fail(err, why, KG_AGENT_BAD_REQUEST, "header: bad magic (not a keygate agent frame)");
    /* the version first: what follows it may mean something else in another version */
    if (buf[3] != KG_AGENT_PROTO_VERSION)
        return fail(err, why, KG_AGENT_VERSION, "header: version %u, expected %d", (unsigned)buf[3],
                    KG_AGENT_PROTO_VERSION);
    if (buf[5] != 0)
        return fail(err, why, KG_AGENT_BAD_REQUEST, "header: flags 0x%02x, expected 0", (unsigned)buf[5]);
    if (get16(buf + 6) != 0)
        return fail(err, why, KG_AGENT_BAD_REQUEST, "header: reserved 0x%04x, expected 0",
                    (unsigned)get16(buf + 6));
    if (!is_request_op(buf[4]) && !is_reply_op(buf[4]))
        return fail(err, why, KG_AGENT_BAD_REQUEST, "header: unknown op 0x%02x", (unsigned)buf[4]);
    if (hdr->body_len > KG_AGENT_MAX_BODY)
        return fail(err, why, KG_AGENT_TOO_LARGE, "header: body length %lu, at most %d",
                    (unsigned long)hdr->body_len, KG_AGENT_MAX_BODY);
    if (hdr->body_len < 4)
        return fail(err, why, KG_AGENT_BAD_REQUEST, "header: body length %lu, shorter than the request id",
                    (unsigned long)hdr->body_len);
    hdr->refusal = KG_AGENT_OK;
    return 1;
}

int kg_agent_req_decode(uint8_t op, const uint8_t *body, size_t len, kg_agent_req *req, kg_err *err)
{
    view v;

    memset(req, 0, sizeof(*req));
    req->op = op;
    if (!body_start(op, 1, body, len, &req->id, &req->refusal, err) ||
        !walk(body, len, &v, &req->refusal, err))
        return 0;
    req->ignored = v.ignored;
    if (v.present & BIT(F_VERSION))
        req->version = v.val[F_VERSION][0];
    req->key_ref = v.val[F_KEY_REF];
    req->key_ref_len = v.len[F_KEY_REF];
    if (v.present & BIT(F_SIGN_SCHEME))
        req->scheme = (kg_agent_scheme)v.val[F_SIGN_SCHEME][0];
    if (v.present & BIT(F_DIGEST))
        req->digest = (kg_agent_digest)v.val[F_DIGEST][0];
    if (v.present & BIT(F_MGF1_DIGEST))
        req->mgf1_digest = (kg_agent_digest)v.val[F_MGF1_DIGEST][0];
    if (v.present & BIT(F_SALT_LEN))
        req->salt_len = (int32_t)get32(v.val[F_SALT_LEN]);
    if (v.present & BIT(F_PADDING))
        req->padding = (kg_agent_padding)v.val[F_PADDING][0];
    req->label = v.val[F_OAEP_LABEL];
    req->label_len = v.len[F_OAEP_LABEL];
    if (v.present & BIT(F_TLS_VERSIONS)) {
        req->tls_client_version = get16(v.val[F_TLS_VERSIONS]);
        req->tls_negotiated_version = get16(v.val[F_TLS_VERSIONS] + 2);
    }
    req->data = v.val[F_DATA];
    req->data_len = v.len[F_DATA];
    req->peer_key = v.val[F_PEER_KEY];
    req->peer_key_len = v.len[F_PEER_KEY];
    if (!check_req(req, v.present, &req->refusal, err))
        return 0;
    req->refusal = KG_AGENT_OK;
    return 1;
}

int kg_agent_reply_decode(uint8_t op, const uint8_t *body, size_t len, kg_agent_reply *reply, kg_err *err)
{
    kg_agent_status why;
    view v;

    memset(reply, 0, sizeof(*reply));
    reply->op = op;
    if (!body_start(op, 0, body, len, &reply->id, &why, err) || !walk(body, len, &v, &why, err))
        return 0;
    reply->ignored = v.ignored;
    if (v.present & BIT(F_STATUS))
        reply->status = (kg_agent_status)get32(v.val[F_STATUS]);
    reply->message = (const char *)v.val[F_MESSAGE];
    reply->message_len = v.len[F_MESSAGE];
    if (v.present & BIT(F_VERSION))
        reply->version = v.val[F_VERSION][0];
    if (v.present & BIT(F_MAX_BODY))
        reply->max_body = get32(v.val[F_MAX_BODY]);
    reply->result = v.val[F_RESULT];
    reply->result_len = v.len[F_RESULT];
    return check_reply(reply, v.present, &why, err);
}

/* Header, then a body of exactly the header's length. */
static int frame_split(const uint8_t *frame, size_t len, kg_agent_header *hdr, kg_err *err)
{
    if (!kg_agent_header_parse(frame, len, hdr, err))
        return 0;
    if (len - KG_AGENT_HEADER_LEN != hdr->body_len)
        return fail(err, &hdr->refusal, KG_AGENT_BAD_REQUEST, "frame of %zu bytes, the header says %lu + %d",
                    len, (unsigned long)hdr->body_len, KG_AGENT_HEADER_LEN);
    return 1;
}

int kg_agent_req_decode_frame(const uint8_t *frame, size_t len, kg_agent_req *req, kg_err *err)
{
    kg_agent_header hdr;

    if (!frame_split(frame, len, &hdr, err)) {
        memset(req, 0, sizeof(*req));
        req->op = hdr.op;
        req->refusal = hdr.refusal;
        return 0;
    }
    return kg_agent_req_decode(hdr.op, frame + KG_AGENT_HEADER_LEN, hdr.body_len, req, err);
}

int kg_agent_reply_decode_frame(const uint8_t *frame, size_t len, kg_agent_reply *reply, kg_err *err)
{
    kg_agent_header hdr;

    if (!frame_split(frame, len, &hdr, err)) {
        memset(reply, 0, sizeof(*reply));
        return 0;
    }
    return kg_agent_reply_decode(hdr.op, frame + KG_AGENT_HEADER_LEN, hdr.body_len, reply, err);
}

/* ---- encoding ---- */

static int set_bytes(view *v, int f, const void *p, size_t len, kg_err *err)
{
    if (p == NULL) {
        if (len != 0)
            return fail(err, NULL, KG_AGENT_BAD_REQUEST, "field %s: length %zu without a value",
                        fields[f].name, len);
        return 1;
    }
    if (!check_len(f, len, NULL, err))
        return 0;
    v->present |= BIT(f);
    v->val[f] = p;
    v->len[f] = len;
    return 1;
}

static void set_u8(view *v, int f, unsigned x)
{
    v->ints[f][0] = (uint8_t)x;
    v->present |= BIT(f);
    v->val[f] = v->ints[f];
    v->len[f] = 1;
}

static void set_u32(view *v, int f, uint32_t x)
{
    put32(v->ints[f], x);
    v->present |= BIT(f);
    v->val[f] = v->ints[f];
    v->len[f] = 4;
}

/* Header, id and the view's fields in tag order. */
static int write_frame(uint8_t op, uint32_t id, const view *v, uint8_t *out, size_t cap, size_t *out_len,
                       kg_err *err)
{
    size_t body = 4, off;

    for (int f = 0; f < F_COUNT; f++)
        if (v->present & BIT(f))
            body += 4 + v->len[f];
    if (body > KG_AGENT_MAX_BODY)
        return fail(err, NULL, KG_AGENT_TOO_LARGE, "body of %zu bytes, at most %d", body, KG_AGENT_MAX_BODY);
    if (out == NULL || cap < KG_AGENT_HEADER_LEN + body)
        return fail(err, NULL, KG_AGENT_INTERNAL, "encode: a buffer of %zu bytes, the frame needs %zu",
                    out ? cap : 0, KG_AGENT_HEADER_LEN + body);
    memcpy(out, kg_agent_magic, sizeof(kg_agent_magic));
    out[3] = KG_AGENT_PROTO_VERSION;
    out[4] = op;
    out[5] = 0;
    put16(out + 6, 0);
    put32(out + 8, (uint32_t)body);
    put32(out + 12, id);
    off = KG_AGENT_HEADER_LEN + 4;
    for (int f = 0; f < F_COUNT; f++) {
        if (!(v->present & BIT(f)))
            continue;
        put16(out + off, fields[f].tag);
        put16(out + off + 2, (uint16_t)v->len[f]);
        if (v->len[f] != 0)
            memcpy(out + off + 4, v->val[f], v->len[f]);
        off += 4 + v->len[f];
    }
    *out_len = off;
    return 1;
}

int kg_agent_req_encode(const kg_agent_req *req, uint8_t *out, size_t cap, size_t *out_len, kg_err *err)
{
    view v;

    memset(&v, 0, sizeof(v));
    if (!is_request_op(req->op))
        return fail(err, NULL, KG_AGENT_BAD_REQUEST, "op 0x%02x is not a request", (unsigned)req->op);
    if (req->version != 0)
        set_u8(&v, F_VERSION, req->version);
    if (req->scheme != 0)
        set_u8(&v, F_SIGN_SCHEME, req->scheme);
    if (req->digest != 0)
        set_u8(&v, F_DIGEST, req->digest);
    if (req->mgf1_digest != 0)
        set_u8(&v, F_MGF1_DIGEST, req->mgf1_digest);
    /* 0 is a salt length: the field is there whenever the scheme is PSS */
    if (req->salt_len != 0 || req->scheme == KG_AGENT_SCHEME_RSA_PSS)
        set_u32(&v, F_SALT_LEN, (uint32_t)req->salt_len);
    if (req->padding != 0)
        set_u8(&v, F_PADDING, req->padding);
    if (req->tls_client_version != 0 || req->tls_negotiated_version != 0) {
        set_u32(&v, F_TLS_VERSIONS, (uint32_t)req->tls_client_version << 16 | req->tls_negotiated_version);
    }
    if (!set_bytes(&v, F_KEY_REF, req->key_ref, req->key_ref_len, err) ||
        !set_bytes(&v, F_OAEP_LABEL, req->label, req->label_len, err) ||
        !set_bytes(&v, F_DATA, req->data, req->data_len, err) ||
        !set_bytes(&v, F_PEER_KEY, req->peer_key, req->peer_key_len, err))
        return 0;
    if (!check_req(req, v.present, NULL, err))
        return 0;
    return write_frame(req->op, req->id, &v, out, cap, out_len, err);
}

int kg_agent_reply_encode(const kg_agent_reply *reply, uint8_t *out, size_t cap, size_t *out_len, kg_err *err)
{
    view v;

    memset(&v, 0, sizeof(v));
    if (!is_reply_op(reply->op))
        return fail(err, NULL, KG_AGENT_BAD_REQUEST, "op 0x%02x is not a reply", (unsigned)reply->op);
    set_u32(&v, F_STATUS, (uint32_t)reply->status);
    if (reply->version != 0)
        set_u8(&v, F_VERSION, reply->version);
    if (reply->max_body != 0)
        set_u32(&v, F_MAX_BODY, reply->max_body);
    if (!set_bytes(&v, F_MESSAGE, reply->message, reply->message_len, err) ||
        !set_bytes(&v, F_RESULT, reply->result, reply->result_len, err))
        return 0;
    if (!check_reply(reply, v.present, NULL, err))
        return 0;
    return write_frame(reply->op, reply->id, &v, out, cap, out_len, err);
}
