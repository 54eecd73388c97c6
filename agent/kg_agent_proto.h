/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kg_agent_proto: the codec of the keygate agent's wire protocol, version 1
 * (docs/protocols/agent.md is the specification; this header names its constants).
 *
 *   frame = header (12 bytes) ‖ body
 *   header = "KGA" ‖ version u8 ‖ op u8 ‖ flags u8 ‖ reserved u16 ‖ body length u32 (big-endian)
 *   body = request id u32 ‖ fields, each tag u16 ‖ length u16 ‖ value, in strictly ascending
 *          tag order (so each tag at most once and one byte string per message)
 *
 * Pure and bounded: no allocation, no I/O, no OpenSSL. The decoders check everything the
 * specification states (lengths, required and allowed fields per op, enum values, cross-field
 * rules) and fill a struct whose byte fields point INTO the caller's buffer: the decoded struct
 * borrows the buffer and is valid only while it is, unchanged. The encoders run the same checks
 * on the struct (they refuse what the decoders would refuse) and write a whole frame into a
 * caller-owned buffer; decode(encode(x)) gives x back, and encode(decode(bytes)) gives the bytes
 * back, except for ignored extension fields (tags 0x8000 and up), which re-encoding drops.
 *
 * Errors: 1 on success, 0 with a kg_err of step KG_AGENT_STEP whose message is one line naming
 * the field and the cause, e.g. "handover: agent protocol: field SIGN_SCHEME: length 3, expected 1".
 * Messages never hold field contents other than small integers (no key references, data, results).
 */
#ifndef KG_AGENT_PROTO_H
#define KG_AGENT_PROTO_H

#include <stddef.h>
#include <stdint.h>

#include "kg_err.h"

/* The step of the codec's errors: the agent replaces hand-over (design.md §1, step 8). */
#define KG_AGENT_STEP KG_STEP_HANDOVER

#define KG_AGENT_PROTO_VERSION 1 /* the only version this codec speaks */
#define KG_AGENT_HEADER_LEN 12   /* "KGA", version, op, flags, reserved u16, body length u32 */
#define KG_AGENT_MAX_BODY 65536
#define KG_AGENT_MAX_FRAME (KG_AGENT_HEADER_LEN + KG_AGENT_MAX_BODY)

/* Field bounds (bytes). */
#define KG_AGENT_MAX_KEY_REF 8192 /* = KG_KEYREF_MAX_DER */
#define KG_AGENT_MAX_DATA 1024    /* SIGN input, DECRYPT ciphertext: RSA up to 8192 bits */
#define KG_AGENT_MAX_ECDSA_DATA 64
#define KG_AGENT_MAX_LABEL 256
#define KG_AGENT_MAX_PEER_KEY 1024
#define KG_AGENT_MAX_MESSAGE 512
#define KG_AGENT_MAX_RESULT 16384
#define KG_AGENT_MAX_SALT 1024

/* Request ops; a reply's op is the request's | KG_AGENT_OP_REPLY. KG_AGENT_OP_ERROR (0x80) is the
 * reply to a frame the agent could not take as a request (bad header, unknown op): request id 0,
 * a non-OK status, and the agent closes the connection after it. */
typedef enum kg_agent_op {
    KG_AGENT_OP_HELLO = 1,
    KG_AGENT_OP_PUBKEY = 2,
    KG_AGENT_OP_SIGN = 3,
    KG_AGENT_OP_DECRYPT = 4,
    KG_AGENT_OP_DERIVE = 5
} kg_agent_op;
#define KG_AGENT_OP_REPLY 0x80
#define KG_AGENT_OP_ERROR 0x80

/* Reply status (u32 on the wire). docs/protocols/agent.md §5 says when each is used. */
typedef enum kg_agent_status {
    KG_AGENT_OK = 0,
    KG_AGENT_BAD_REQUEST = 1,  /* the frame or request breaks this specification */
    KG_AGENT_VERSION = 2,      /* no common protocol version */
    KG_AGENT_UNKNOWN_KEY = 3,  /* the agent serves no key for this reference */
    KG_AGENT_DENIED = 4,       /* the client's uid/gid may not use this key (SO_PEERCRED) */
    KG_AGENT_REVOKED = 5,      /* the KBS revoked the key, or its lease ended without renewal */
    KG_AGENT_UNAVAILABLE = 6,  /* not released (yet), release failed, or the agent is stopping */
    KG_AGENT_RATE_LIMITED = 7, /* the client exceeded its request rate */
    KG_AGENT_TOO_LARGE = 8,    /* a body or field over its bound */
    KG_AGENT_INTERNAL = 9,     /* the agent's own failure (out of memory, ...) */
    KG_AGENT_OP_FAILED = 10,   /* the operation itself failed (wrong key type, bad padding, bad peer key) */
    KG_AGENT_BUSY = 11         /* the agent serves its maximum number of clients */
} kg_agent_status;
#define KG_AGENT_STATUS_LAST KG_AGENT_BUSY

/* Enums on the wire are u8 and start at 1: a zeroed field is never a valid value. */
typedef enum kg_agent_scheme {
    KG_AGENT_SCHEME_ECDSA = 1, /* data = the digest (1..64 bytes); result = DER ECDSA-Sig-Value */
    KG_AGENT_SCHEME_RSA_PKCS1 =
        2, /* PKCS#1 v1.5; digest NONE: data = what to pad (DigestInfo, TLS MD5‖SHA1) */
    KG_AGENT_SCHEME_RSA_PSS = 3 /* data = the digest; digest, mgf1_digest and salt_len required */
} kg_agent_scheme;

typedef enum kg_agent_digest {
    KG_AGENT_DIGEST_NONE = 1, /* RSA_PKCS1 signatures only: data is signed as given */
    KG_AGENT_DIGEST_SHA1 = 2,
    KG_AGENT_DIGEST_SHA224 = 3,
    KG_AGENT_DIGEST_SHA256 = 4,
    KG_AGENT_DIGEST_SHA384 = 5,
    KG_AGENT_DIGEST_SHA512 = 6
} kg_agent_digest;

typedef enum kg_agent_padding {
    KG_AGENT_PAD_PKCS1 = 1,    /* PKCS#1 v1.5 */
    KG_AGENT_PAD_OAEP = 2,     /* digest and mgf1_digest required, label optional */
    KG_AGENT_PAD_NONE = 3,     /* raw RSA */
    KG_AGENT_PAD_PKCS1_TLS = 4 /* TLS pre-master secret (OpenSSL's RSA_PKCS1_WITH_TLS_PADDING):
                                  tls_client_version required; always 48 bytes, no padding oracle */
} kg_agent_padding;

/* PSS salt lengths other than an explicit 0..KG_AGENT_MAX_SALT (the protocol's own values; the
 * agent maps them to OpenSSL's RSA_PSS_SALTLEN_*). */
#define KG_AGENT_SALT_DIGEST (-1) /* the digest's length (RSA_PSS_SALTLEN_DIGEST) */
#define KG_AGENT_SALT_MAX                                                                                    \
    (-2) /* the largest the key allows (RSA_PSS_SALTLEN_MAX; OpenSSL's                                       \
            AUTO means this when signing) */
#define KG_AGENT_SALT_DIGEST_MAX                                                                             \
    (-3) /* the digest's length, or less if the key is too small                                             \
            (RSA_PSS_SALTLEN_AUTO_DIGEST_MAX, OpenSSL 3.1+) */

/* A parsed header. */
typedef struct kg_agent_header {
    uint8_t version;
    uint8_t op;
    uint32_t body_len;
    kg_agent_status refusal; /* after a failed parse: what the agent answers (VERSION, TOO_LARGE,
                                BAD_REQUEST), in a KG_AGENT_OP_ERROR reply before it closes */
} kg_agent_header;

/* A request. Which fields an op uses: docs/protocols/agent.md §4. Unused fields are 0/NULL
 * (the encoder refuses a set field the op does not use). Byte fields are present iff their
 * pointer is non-NULL. After a decode they point into the decoded buffer (borrowed). */
typedef struct kg_agent_req {
    uint8_t op;  /* kg_agent_op */
    uint32_t id; /* chosen by the client, echoed in the reply */
    /* HELLO */
    uint8_t version; /* the highest protocol version the client speaks, >= 1 */
    /* PUBKEY, SIGN, DECRYPT, DERIVE: the key reference's DER (KEYGATE KEY REFERENCE contents) */
    const uint8_t *key_ref;
    size_t key_ref_len;
    /* SIGN */
    kg_agent_scheme scheme;
    kg_agent_digest digest;      /* SIGN RSA_PKCS1 / RSA_PSS; DECRYPT OAEP */
    kg_agent_digest mgf1_digest; /* SIGN RSA_PSS; DECRYPT OAEP */
    int32_t salt_len;            /* SIGN RSA_PSS: 0..KG_AGENT_MAX_SALT or KG_AGENT_SALT_* */
    /* DECRYPT */
    kg_agent_padding padding;
    const uint8_t *label; /* OAEP label, 1..256 bytes; NULL = none (the empty label) */
    size_t label_len;
    uint16_t tls_client_version;     /* PKCS1_TLS: the ClientHello's version, != 0 */
    uint16_t tls_negotiated_version; /* PKCS1_TLS: the negotiated version, 0 = not given */
    /* SIGN: the digest or data; DECRYPT: the ciphertext */
    const uint8_t *data;
    size_t data_len;
    /* DERIVE: the peer's public key, SubjectPublicKeyInfo DER */
    const uint8_t *peer_key;
    size_t peer_key_len;
    /* set by the decoder */
    unsigned ignored;        /* extension fields (tag >= 0x8000) skipped */
    kg_agent_status refusal; /* after a failed decode: what the agent answers (BAD_REQUEST,
                                TOO_LARGE, ...) in a reply with this id (0 if not read) */
} kg_agent_req;

/* A reply. message is NOT NUL-terminated (print it with "%.*s"); it and result point into the
 * decoded buffer after a decode (borrowed). */
typedef struct kg_agent_reply {
    uint8_t op;  /* request op | KG_AGENT_OP_REPLY, or KG_AGENT_OP_ERROR */
    uint32_t id; /* the request's id; 0 in an ERROR reply */
    kg_agent_status status;
    const char *message; /* optional: one line of UTF-8, 1..512 bytes, no control characters */
    size_t message_len;
    /* HELLO, OK only */
    uint8_t version;   /* the version both sides speak from now on (<= the client's) */
    uint32_t max_body; /* the largest body the agent accepts, 4..KG_AGENT_MAX_BODY */
    /* PUBKEY (SPKI DER), SIGN (signature), DECRYPT (plaintext, may be empty), DERIVE (shared
     * secret): present iff status is OK */
    const uint8_t *result;
    size_t result_len;
    unsigned ignored; /* set by the decoder: extension fields skipped */
} kg_agent_reply;

/* Parses the 12 bytes of a header (len >= 12; bytes after the 12th are not looked at) and checks
 * magic, version, flags, reserved, op (a request or reply op) and the body length (4 ..
 * KG_AGENT_MAX_BODY) before any body byte is read. On failure hdr->refusal says what to answer. */
int kg_agent_header_parse(const uint8_t *buf, size_t len, kg_agent_header *hdr, kg_err *err);

/* Decodes the body of a request with header op `op`. On failure req->refusal and req->id (if the
 * body had one) say how to answer. req borrows body. */
int kg_agent_req_decode(uint8_t op, const uint8_t *body, size_t len, kg_agent_req *req, kg_err *err);

/* Header + body in one buffer of exactly 12 + body length bytes. req borrows frame. */
int kg_agent_req_decode_frame(const uint8_t *frame, size_t len, kg_agent_req *req, kg_err *err);

/* Writes the whole frame of req into out (cap bytes; KG_AGENT_MAX_FRAME always suffices) and sets
 * *out_len. Refuses what kg_agent_req_decode would refuse. */
int kg_agent_req_encode(const kg_agent_req *req, uint8_t *out, size_t cap, size_t *out_len, kg_err *err);

/* The same for replies. */
int kg_agent_reply_decode(uint8_t op, const uint8_t *body, size_t len, kg_agent_reply *reply, kg_err *err);
int kg_agent_reply_decode_frame(const uint8_t *frame, size_t len, kg_agent_reply *reply, kg_err *err);
int kg_agent_reply_encode(const kg_agent_reply *reply, uint8_t *out, size_t cap, size_t *out_len,
                          kg_err *err);

/* Stable upper-case names, as the specification writes them ("SIGN", "SIGN reply", "ERROR reply",
 * "UNKNOWN_KEY", "RSA_PSS", "SHA256", "OAEP"); "?" for a value outside the enum. */
const char *kg_agent_op_name(uint8_t op);
const char *kg_agent_status_name(kg_agent_status status);
const char *kg_agent_scheme_name(kg_agent_scheme scheme);
const char *kg_agent_digest_name(kg_agent_digest digest);
const char *kg_agent_padding_name(kg_agent_padding padding);

/* The digest's output length in bytes; 0 for NONE and unknown values. */
size_t kg_agent_digest_size(kg_agent_digest digest);

#endif
