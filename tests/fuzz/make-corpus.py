#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Regenerates the seed corpora (tests/fuzz/corpus/<harness>/) and the fixed harness inputs
(tests/fuzz/data/) from the real artefacts in tests/vectors and from the local stack.

    /usr/bin/python3 tests/fuzz/make-corpus.py [--vectors DIR] [--only jwe,trustee | tdx_quote | keyforms | ear
                                                  | agent_proto]

Run once and commit the result; the test run only replays what is committed. Seeds made here
are named stack-* (keyform-* for the private-key forms of the wrap harness, made without the
stack; proto-* for the agent protocol, written from its specification), seeds copied from the
vectors vector-*; regression inputs (crashes found and fixed) are named regress-* and are never
touched by this script.

The local stack runs from a temporary state dir (its own PKI) on 127.0.0.1 and is stopped by
PID at the end. data/verify-at is a time at which the stack tokens, certificates and CRLs
written here are all valid, so the jws harness can verify a seed token completely.
--only tdx_quote keeps data/verify-at and issues a fresh simulated PCK PKI valid at that time.
--only ear makes only the trustee harness's stack-ear-* seeds (an EAR of the Trustee stand-in's
attestation service for the handshake of data/trustee-binding.json) and data/trustee-as-cert.pem.
"""
import argparse
import base64
import datetime
import json
import os
import pathlib
import shutil
import struct
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))

from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import padding  # noqa: E402
from cryptography.hazmat.primitives.kdf.concatkdf import ConcatKDFHash  # noqa: E402
from cryptography.hazmat.primitives.keywrap import aes_key_wrap  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec, rsa  # noqa: E402

from tests.stack import kbs_fixture as kf  # noqa: E402
from tests.stack import trustee as trustee_kbs  # noqa: E402
from tests.stack import trustee_fixture as tf  # noqa: E402
from tests.stack import paravisor, pki  # noqa: E402
from tests.stack.fixtures import LocalStack  # noqa: E402
from tests.stack.simquote import DEFAULTS, make_sim_quote  # noqa: E402

HARNESSES = ["jws", "jwks", "x5c_crl", "ita_reply", "tdx_quote", "keyref", "kbs_reply", "wrap",
             "config", "azure_runtime", "ccel", "jwe", "trustee", "agent_proto"]
TRUSTEE_HARNESSES = ["jwe", "trustee"]  # made by from_trustee, with their own data/ files
QUOTE_VECTORS = ("tdx-quote-gcp-cos113.bin", "tdx-quote-trustee-v4-debug.bin", "tdx-quote-azure.bin",
                 "tdx-quote-trustee-v5.bin")


class Corpus:
    def __init__(self, root, harnesses=HARNESSES, prefixes=("stack-", "vector-", "keyform-", "proto-")):
        self.root = root
        for h in harnesses:
            d = root / h
            d.mkdir(parents=True, exist_ok=True)
            for f in d.iterdir():            # keep regression inputs, replace the seeds
                if f.name.startswith(prefixes):
                    f.unlink()

    def add(self, harness, name, data):
        if isinstance(data, str):
            data = data.encode()
        (self.root / harness / name).write_bytes(data)


def der_len(n):
    if n < 0x80:
        return bytes([n])
    b = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(b)]) + b


def tlv(tag, body):
    return bytes([tag]) + der_len(len(body)) + body


def keyref_der(key_id, spki, kbs_url=None, kbs_type=None, description=None):
    """KeygateKeyReference (release/kg_keyref.h)."""
    body = tlv(0x02, b"\x01") + tlv(0x0C, key_id.encode()) + spki
    for tag, val in ((0x80, kbs_url), (0x81, kbs_type), (0x82, description)):
        if val is not None:
            body += tlv(tag, val.encode())
    return tlv(0x30, body)


def pem_block(label, der):
    b64 = base64.b64encode(der).decode()
    lines = "\n".join(b64[i:i + 64] for i in range(0, len(b64), 64))
    return f"-----BEGIN {label}-----\n{lines}\n-----END {label}-----\n"


def spki(key):
    return key.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


def pkcs8(key):
    return key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def from_key_forms(c):
    """wrap seeds of every private-key form an Intel KBS key manager hands over (intel-kbs.md §5),
    sealed by the harness (mode bit 0), with the reference it passes in bits 1-2 (none, P-256,
    P-384, RSA): PKCS#1 (two and three primes), SEC1 with and without [0] and [1] (as the stand-in's
    kmip key manager makes them), and PKCS#8 with a trailing byte. No stack needed."""
    from tests.stack.kbs_model import SEC1_FORMS, key_material
    reference = {"rsa2048": 3, "rsa3072": 3, "p256": 1, "p384": 2}
    keys = {"rsa2048": rsa.generate_private_key(public_exponent=65537, key_size=2048),
            "rsa3072": rsa.generate_private_key(public_exponent=65537, key_size=3072),
            "p256": ec.generate_private_key(ec.SECP256R1()), "p384": ec.generate_private_key(ec.SECP384R1())}
    for name, key in keys.items():
        mode = bytes([1 | reference[name] << 1])
        der = pkcs8(key)
        if name.startswith("rsa"):
            c.add("wrap", f"keyform-pkcs1-{name}", mode + key_material(der, "RSA", "kmip"))
        else:
            for form in SEC1_FORMS:
                c.add("wrap", f"keyform-sec1-{form}-{name}", mode + key_material(der, "EC", "kmip", form))
        c.add("wrap", f"keyform-pkcs8-{name}-trailing-byte", mode + der + b"\x00")
    three_primes = subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
                                   "-pkeyopt", "rsa_keygen_primes:3", "-outform", "DER"],
                                  capture_output=True, check=True).stdout  # PKCS#1, version 1
    c.add("wrap", "keyform-pkcs1-rsa2048-3prime", b"\x01" + three_primes)


# The keygate agent's wire protocol (docs/protocols/agent.md), written here from the specification
# alone: a second implementation, whose frames test_agent_proto.c's spec_seeds decodes with the C
# codec (proto-ok-* must decode, proto-bad-* must be refused).
AGENT_TAGS = {"VERSION": 1, "MAX_BODY": 2, "KEY_REF": 3, "SIGN_SCHEME": 4, "DIGEST": 5, "MGF1_DIGEST": 6,
              "SALT_LEN": 7, "PADDING": 8, "OAEP_LABEL": 9, "TLS_VERSIONS": 10, "DATA": 11, "PEER_KEY": 12,
              "STATUS": 0x10, "MESSAGE": 0x11, "RESULT": 0x12}
AGENT_OPS = {"HELLO": 1, "PUBKEY": 2, "SIGN": 3, "DECRYPT": 4, "DERIVE": 5}
AGENT_STATUS = {"OK": 0, "BAD_REQUEST": 1, "VERSION": 2, "UNKNOWN_KEY": 3, "DENIED": 4, "REVOKED": 5,
                "UNAVAILABLE": 6, "RATE_LIMITED": 7, "TOO_LARGE": 8, "INTERNAL": 9, "OP_FAILED": 10, "BUSY": 11}
SCHEME = {"ECDSA": 1, "RSA_PKCS1": 2, "RSA_PSS": 3}
DIGEST = {"NONE": 1, "SHA1": 2, "SHA224": 3, "SHA256": 4, "SHA384": 5, "SHA512": 6}
PADDING = {"PKCS1": 1, "OAEP": 2, "NONE": 3, "PKCS1_TLS": 4}


def agent_frame(op, rid, fields, sort=True, version=1, flags=0, body_len=None):
    """One frame: header, request id, fields (name or tag, value bytes) in tag order."""
    items = [(AGENT_TAGS.get(t, t), v) for t, v in fields]
    if sort:
        items.sort(key=lambda f: f[0])
    body = struct.pack(">I", rid) + b"".join(struct.pack(">HH", t, len(v)) + v for t, v in items)
    n = len(body) if body_len is None else body_len
    return b"KGA" + struct.pack(">BBBHI", version, op, flags, 0, n) + body


def from_agent_proto(c):
    """agent_proto seeds: every op and reply shape, real key references and real results (fresh
    keys, thrown away), plus refused frames. No stack needed."""
    from cryptography.hazmat.primitives.asymmetric import utils
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    peer = ec.generate_private_key(ec.SECP256R1())
    rsa_ref = keyref_der("3fa85f64-5717-4562-b3fc-2c963f66afa6", spki(rsa_key))
    ec_ref = keyref_der("6ba7b810-9dad-41d1-80b4-00c04fd430c8", spki(ec_key), "https://kbs.example:9443", "intel")
    u8, i32 = (lambda v: bytes([v])), (lambda v: struct.pack(">i", v))  # noqa: E731
    u32 = lambda v: struct.pack(">I", v)  # noqa: E731
    digest = hashes.Hash(hashes.SHA256())
    digest.update(b"keygate agent")
    h256 = digest.finalize()
    digest_info = bytes.fromhex("3031300d060960864801650304020105000420") + h256
    op = AGENT_OPS
    req = {
        "hello": (op["HELLO"], [("VERSION", u8(1))]),
        "hello-v9": (op["HELLO"], [("VERSION", u8(9))]),
        "pubkey-rsa": (op["PUBKEY"], [("KEY_REF", rsa_ref)]),
        "sign-ecdsa-p256": (op["SIGN"], [("KEY_REF", ec_ref), ("SIGN_SCHEME", u8(SCHEME["ECDSA"])),
                                         ("DATA", h256)]),
        "sign-pkcs1-sha256": (op["SIGN"], [("KEY_REF", rsa_ref), ("SIGN_SCHEME", u8(SCHEME["RSA_PKCS1"])),
                                           ("DIGEST", u8(DIGEST["SHA256"])), ("DATA", h256)]),
        "sign-pkcs1-none-digestinfo": (op["SIGN"], [("KEY_REF", rsa_ref), ("SIGN_SCHEME", u8(SCHEME["RSA_PKCS1"])),
                                                    ("DIGEST", u8(DIGEST["NONE"])), ("DATA", digest_info)]),
        "sign-pkcs1-none-tls10": (op["SIGN"], [("KEY_REF", rsa_ref), ("SIGN_SCHEME", u8(SCHEME["RSA_PKCS1"])),
                                               ("DIGEST", u8(DIGEST["NONE"])), ("DATA", os.urandom(36))]),
        "sign-pss-sha256-salt-digest": (op["SIGN"], [("KEY_REF", rsa_ref), ("SIGN_SCHEME", u8(SCHEME["RSA_PSS"])),
                                                     ("DIGEST", u8(DIGEST["SHA256"])),
                                                     ("MGF1_DIGEST", u8(DIGEST["SHA256"])), ("SALT_LEN", i32(-1)),
                                                     ("DATA", h256)]),
        "sign-pss-sha512-salt-max": (op["SIGN"], [("KEY_REF", rsa_ref), ("SIGN_SCHEME", u8(SCHEME["RSA_PSS"])),
                                                  ("DIGEST", u8(DIGEST["SHA512"])), ("MGF1_DIGEST", u8(DIGEST["SHA1"])),
                                                  ("SALT_LEN", i32(-2)), ("DATA", os.urandom(64))]),
        "decrypt-pkcs1": (op["DECRYPT"], [("KEY_REF", rsa_ref), ("PADDING", u8(PADDING["PKCS1"])),
                                          ("DATA", rsa_key.public_key().encrypt(b"secret", padding.PKCS1v15()))]),
        "decrypt-oaep-label": (op["DECRYPT"], [("KEY_REF", rsa_ref), ("PADDING", u8(PADDING["OAEP"])),
                                               ("DIGEST", u8(DIGEST["SHA256"])), ("MGF1_DIGEST", u8(DIGEST["SHA256"])),
                                               ("OAEP_LABEL", b"keygate"),
                                               ("DATA", rsa_key.public_key().encrypt(b"secret", padding.OAEP(
                                                   padding.MGF1(hashes.SHA256()), hashes.SHA256(), b"keygate")))]),
        "decrypt-none": (op["DECRYPT"], [("KEY_REF", rsa_ref), ("PADDING", u8(PADDING["NONE"])),
                                         ("DATA", os.urandom(255))]),
        "decrypt-pkcs1-tls": (op["DECRYPT"], [("KEY_REF", rsa_ref), ("PADDING", u8(PADDING["PKCS1_TLS"])),
                                              ("TLS_VERSIONS", struct.pack(">HH", 0x0303, 0x0303)),
                                              ("DATA", rsa_key.public_key().encrypt(b"\x03\x03" + os.urandom(46),
                                                                                    padding.PKCS1v15()))]),
        "derive-p256": (op["DERIVE"], [("KEY_REF", ec_ref), ("PEER_KEY", spki(peer))]),
        "hello-extension": (op["HELLO"], [("VERSION", u8(1)), (0x8001, b"future")]),
    }
    for rid, (name, (o, fields)) in enumerate(req.items(), 1):
        c.add("agent_proto", f"proto-ok-{name}", agent_frame(o, rid, fields))
    ok = u32(AGENT_STATUS["OK"])
    reply = {
        "hello-reply": (0x81, 1, [("STATUS", ok), ("VERSION", u8(1)), ("MAX_BODY", u32(65536)),
                                  ("MESSAGE", b"keygate agent 0.1.0")]),
        "pubkey-reply": (0x82, 2, [("STATUS", ok), ("RESULT", spki(rsa_key))]),
        "sign-reply-ecdsa": (0x83, 3, [("STATUS", ok), ("RESULT", ec_key.sign(
            h256, ec.ECDSA(utils.Prehashed(hashes.SHA256()))))]),
        "sign-reply-rsa": (0x83, 4, [("STATUS", ok), ("RESULT", rsa_key.sign(
            h256, padding.PKCS1v15(), utils.Prehashed(hashes.SHA256())))]),
        "decrypt-reply-empty": (0x84, 5, [("STATUS", ok), ("RESULT", b"")]),
        "derive-reply": (0x85, 6, [("STATUS", ok), ("RESULT", ec_key.exchange(ec.ECDH(), peer.public_key()))]),
        "sign-reply-denied": (0x83, 7, [("STATUS", u32(AGENT_STATUS["DENIED"])),
                                        ("MESSAGE", b"uid 1001 may not use key 3fa85f64")]),
        "sign-reply-revoked-utf8": (0x83, 8, [("STATUS", u32(AGENT_STATUS["REVOKED"])),
                                              ("MESSAGE", "clé révoquée".encode())]),
        "error-version": (0x80, 0, [("STATUS", u32(AGENT_STATUS["VERSION"])),
                                    ("MESSAGE", b"this agent speaks version 1")]),
    }
    for name, (o, rid, fields) in reply.items():
        c.add("agent_proto", f"proto-ok-{name}", agent_frame(o, rid, fields))
    hello = [("VERSION", u8(1))]
    bad = {
        "magic": agent_frame(1, 1, hello).replace(b"KGA", b"KGB", 1),
        "version2": agent_frame(1, 1, hello, version=2),
        "flags": agent_frame(1, 1, hello, flags=1),
        "oversize": agent_frame(1, 1, [], body_len=65537),
        "duplicate": agent_frame(1, 1, hello + hello),
        "out-of-order": agent_frame(3, 1, [("SIGN_SCHEME", u8(1)), ("KEY_REF", ec_ref), ("DATA", h256)], sort=False),
        "unknown-tag": agent_frame(1, 1, hello + [(0x0013, b"x")]),
        "scheme-length": agent_frame(3, 1, [("KEY_REF", ec_ref), ("SIGN_SCHEME", b"\x01\x01\x01"),
                                            ("DATA", h256)]),
        "missing-digest": agent_frame(3, 1, [("KEY_REF", rsa_ref), ("SIGN_SCHEME", u8(SCHEME["RSA_PKCS1"])),
                                             ("DATA", h256)]),
        "pem-key-ref": agent_frame(2, 1, [("KEY_REF", pem_block("KEYGATE KEY REFERENCE", rsa_ref).encode()[:1000])]),
        "trailing": agent_frame(1, 1, hello, body_len=4 + 5 + 2) + b"\0\0",  # 2 stray bytes after the fields
        "result-on-denied": agent_frame(0x83, 1, [("STATUS", u32(AGENT_STATUS["DENIED"])), ("RESULT", b"sig")]),
        "message-newline": agent_frame(0x83, 1, [("STATUS", u32(AGENT_STATUS["INTERNAL"])),
                                                 ("MESSAGE", b"two\nlines")]),
    }
    for name, frame in bad.items():
        c.add("agent_proto", f"proto-bad-{name}", frame)


def from_vectors(c, data, vec):
    v = lambda name: (vec / name).read_bytes()  # noqa: E731
    for name in ("ita-sgx-dev-token.jwt", "ita-sgx-dev-token-2023.jwt", "ita-tdx-pilot-token-v1.jwt",
                 "ita-tdx-prod-token-v1.jwt"):
        c.add("jws", "vector-" + name, v(name).strip())
        c.add("ita_reply", "vector-token-" + name, json.dumps({"token": v(name).strip().decode()}))
    for name in ("ita-dev-jwks.json", "ita-dev-jwks-2023.json", "ita-prod-jwks.json"):
        c.add("jwks", "vector-" + name, v(name))
    dev = json.loads(v("ita-dev-jwks.json"))["keys"][0]["x5c"]
    for i, crl in enumerate(("ita-dev-ats-ca-crl.der", "ita-dev-root-ca-crl.der")):
        cert = base64.b64decode(dev[min(i, len(dev) - 1)])
        c.add("x5c_crl", "vector-" + crl, struct.pack(">H", len(cert)) + cert + v(crl))
    root_der = pki.load_cert(str(vec / "intel-sgx-root-ca.pem")).public_bytes(serialization.Encoding.DER)
    c.add("x5c_crl", "vector-intel-sgx-root-ca-crl.der",
          struct.pack(">H", len(root_der)) + root_der + v("intel-sgx-root-ca-crl.der"))
    for name in QUOTE_VECTORS:
        c.add("tdx_quote", "vector-" + name, v(name))
    c.add("azure_runtime", "vector-azure-tdx-hcl-report.bin", v("azure-tdx-hcl-report.bin"))
    c.add("azure_runtime", "vector-azure-tdx-runtime-data.json", v("azure-tdx-runtime-data.json"))
    c.add("ccel", "vector-tdx-ccel-table-gcp-cos113.bin", v("tdx-ccel-table-gcp-cos113.bin"))
    log = v("tdx-ccel-data-gcp-cos113.bin")
    c.add("ccel", "vector-tdx-ccel-data-gcp-cos113.bin", log[:18101 + 64])  # events + some 0xFF fill
    shutil.copyfile(vec / "intel-sgx-root-ca.pem", data / "intel-sgx-root-ca.pem")


def sim_quote_seeds(c, state):
    """tdx_quote seeds from the simulated TD of a stack state dir: v4 (normal, debug) and v5 with
    body types 2 and 3 (distinct TEE_TCB_SVN2 and MRSERVICETD)."""
    c.add("tdx_quote", "stack-sim-quote.bin", make_sim_quote(state, bytes(range(64))))
    c.add("tdx_quote", "stack-sim-quote-debug.bin", make_sim_quote(state, bytes(64), debug=True))
    c.add("tdx_quote", "stack-sim-quote-v5-type2.bin",
          make_sim_quote(state, bytes(range(64, 128)), version=5, body_type=2))
    c.add("tdx_quote", "stack-sim-quote-v5-type3.bin",
          make_sim_quote(state, bytes(range(128, 192)), version=5, body_type=3,
                         tee_tcb_svn2=bytes(range(16)), mrservicetd=b"\x5e" * 48))


def from_sim_td(c, data, vec, tmp):
    """--only tdx_quote: the vector quotes and fresh sim quotes, whose simulated PCK PKI is issued
    (pki._now) just before data/verify-at so that the harness verifies them completely at that
    time without touching the other harnesses' data."""
    at = int((data / "verify-at").read_text())
    for name in QUOTE_VECTORS:
        c.add("tdx_quote", "vector-" + name, (vec / name).read_bytes())
    pki._now = lambda: datetime.datetime.fromtimestamp(at - 60, datetime.timezone.utc)
    stack = LocalStack(tmp / "quote-state").init()
    shutil.copyfile(os.path.join(stack.state_dir, "sim-sgx-root-ca.pem"), data / "sim-sgx-root-ca.pem")
    sim_quote_seeds(c, stack.state_dir)


def from_stack(c, data, tmp):
    stack = LocalStack(tmp / "state").init()
    try:
        ita = stack.start_ita()
        kbs = kf.start_kbs(stack)
        state = stack.state_dir
        get = lambda url, path, **kw: kf.https_request(url, "GET", path, state_dir=state, **kw)  # noqa

        # data/: what the harnesses verify against
        status, _, jwks = get(ita.url, "/certs")
        assert status == 200, status
        (data / "ita-jwks.json").write_bytes(jwks)
        for name in ("ita-root-ca", "ita-signing-ca", "ita-leaf"):
            shutil.copyfile(os.path.join(state, name + ".pem"), data / (name + ".pem"))
        shutil.copyfile(os.path.join(state, "sim-sgx-root-ca.pem"), data / "sim-sgx-root-ca.pem")
        crls = {}
        for which, dest in (("root-ca", "ita-root-ca.crl"), ("ats-ca", "ita-signing-ca.crl")):
            status, _, crl = get(ita.url, f"/crl/{which}-crl.der")
            assert status == 200, (which, status)
            (data / dest).write_bytes(crl)
            crls[which] = crl
        (data / "verify-at").write_text(f"{int(time.time()) + 30}\n")

        c.add("jwks", "stack-jwks.json", jwks)
        leaf = pki.load_cert(os.path.join(state, "ita-leaf.pem")).public_bytes(serialization.Encoding.DER)
        ca = pki.load_cert(os.path.join(state, "ita-signing-ca.pem")).public_bytes(serialization.Encoding.DER)
        c.add("x5c_crl", "stack-leaf-ats-crl", struct.pack(">H", len(leaf)) + leaf + crls["ats-ca"])
        c.add("x5c_crl", "stack-ca-root-crl", struct.pack(">H", len(ca)) + ca + crls["root-ca"])
        pem_crl = pem_block("X509 CRL", crls["ats-ca"]).encode()
        c.add("x5c_crl", "stack-leaf-ats-crl-pem", struct.pack(">H", len(leaf)) + leaf + pem_crl)

        # ITA replies and tokens (v1 flat, v2 nested)
        headers = {"x-api-key": pki.api_key(state), "Accept": "application/json"}
        for version in (1, 2):
            status, _, body = get(ita.url, f"/appraisal/v{version}/nonce", headers=headers)
            assert status == 200, status
            c.add("ita_reply", f"stack-nonce-v{version}.json", body)
        wrapping = kf.new_wrapping_key(3072)
        blob = kf.user_data_blob(wrapping.public_key())
        make_quote = kf.sim_quote_maker(state)
        tokens = {}
        for version in (1, 2):
            tokens[version] = kf.ita_token(ita.url, state, blob, make_quote, version=version)
            c.add("jws", f"stack-token-v{version}.jwt", tokens[version])
            c.add("ita_reply", f"stack-token-v{version}.json", json.dumps({"token": tokens[version]}))
        sim_quote_seeds(c, state)

        # KBS replies: transfer (passport), background nonce, an error
        admin = kf.kbs_admin_token(kbs.url, state)
        policy = kf.create_policy(kbs.url, admin, {"mrtd": [DEFAULTS["mrtd"].hex()]})
        released = {}
        for name, key in (("rsa3072", rsa.generate_private_key(public_exponent=65537, key_size=3072)),
                          ("p256", ec.generate_private_key(ec.SECP256R1()))):
            pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
            key_id = kf.register_key(kbs.url, admin, pem, policy)
            released[name] = (key_id, key)
            status, _, body = kf.kbs_request(kbs.url, "POST", f"/keys/{key_id}/transfer",
                                             {"attestation_token": tokens[1]},
                                             {"Accept": "application/json",
                                              "Content-Type": "application/json"}, state)
            assert status == 200, (status, body)
            c.add("kbs_reply", f"stack-transfer-{name}.json", body)
            reply = json.loads(body)
            c.add("wrap", f"stack-wrapped-key-{name}", b"\x00" + base64.b64decode(reply["wrapped_key"]))
            c.add("wrap", f"stack-pkcs8-{name}", b"\x01" + pkcs8(key))
        key_id = released["rsa3072"][0]
        status, _, body = kf.kbs_request(kbs.url, "POST", f"/keys/{key_id}/transfer", b"",
                                         {"Accept": "application/json"}, state)
        assert status == 200, status
        c.add("kbs_reply", "stack-nonce.json", body)
        status, _, body = kf.kbs_request(kbs.url, "POST", "/keys/00000000-0000-4000-8000-000000000000/transfer",
                                         {"attestation_token": tokens[1]},
                                         {"Accept": "application/json", "Content-Type": "application/json"},
                                         state)
        c.add("kbs_reply", f"stack-error-{status}.json", body)
        status, _, body = kf.kbs_request(kbs.url, "GET", "/version", None, {"Accept": "application/json"}, state)
        assert status == 200, status
        c.add("kbs_reply", "stack-version.json", body)
        for name in ("p384", "rsa2048"):
            key = (ec.generate_private_key(ec.SECP384R1()) if name == "p384"
                   else rsa.generate_private_key(public_exponent=65537, key_size=2048))
            c.add("wrap", f"stack-pkcs8-{name}", b"\x01" + pkcs8(key))

        # key references: every optional field, RSA and EC, DER and PEM (with a certificate first)
        rsa_key, ec_key = released["rsa3072"][1], released["p256"][1]
        refs = {
            "rsa-min": keyref_der(released["rsa3072"][0], spki(rsa_key)),
            "ec-all": keyref_der(released["p256"][0], spki(ec_key), kbs.url, "intel", "web server key"),
            "trustee": keyref_der("default/key/tls", spki(ec_key), "https://127.0.0.1:8080", "trustee"),
        }
        for name, der in refs.items():
            c.add("keyref", f"stack-{name}.der", der)
            c.add("keyref", f"stack-{name}.pem", pem_block("KEYGATE KEY REFERENCE", der))
        cert_pem = open(os.path.join(state, "ita-leaf.pem")).read()
        c.add("keyref", "stack-bundle.pem", cert_pem + pem_block("KEYGATE KEY REFERENCE", refs["ec-all"]))

        # keygate.conf as the tests write it
        conf = {"adapter": "sim", "ita_api_url": ita.url, "ita_base_url": ita.url,
                "ita_api_key_file": "/etc/keygate/ita-api-key", "ita_trust_anchor": "/etc/keygate/root.pem",
                "tls_ca_file": "/etc/keygate/tls-ca.pem", "sim_pck_key": "/etc/keygate/sim-pck.key",
                "sim_pck_chain": "/etc/keygate/sim-pck-chain.pem", "kbs_url": kbs.url, "kbs_type": "intel",
                "kbs_mode": "background", "ita_api_version": "v2",
                "ita_policy_ids": "00000000-0000-4000-8000-000000000000,11111111-1111-4111-8111-111111111111",
                # no require_tcb_status: background mode cannot enforce it (kg_config_check refuses)
                "require_mrtd": DEFAULTS["mrtd"].hex(),
                "retry_wait_min_ms": 50, "retry_wait_max_ms": 400, "allow_debug_td": "no"}
        c.add("config", "stack-keygate.conf",
              "# written by make-corpus.py\n" + "".join(f"{k} = {v}\n" for k, v in conf.items()))

        # Azure: an HCL report as the paravisor stand-in writes it, cut to its real length
        report = paravisor.hcl_report(bytes(range(64)), 4096)
        total = struct.unpack_from("<I", report, 8)[0]
        c.add("azure_runtime", "stack-hcl-report.bin", report[:total])
    finally:
        stack.stop_all()


def jwe_seal_data(ec_key, rsa_key):
    """data/jwe-seal.json: a fixed CEK and its encrypted_key for each TEE key, made the way the
    Trustee stand-in's make_jwe makes them (ECDH-ES+A256KW with an ephemeral P-256 key, whose
    public JWK seal-mode headers carry as "epk"; RSA-OAEP-256)."""
    cek = os.urandom(32)
    eph = ec.generate_private_key(ec.SECP256R1())
    z = eph.exchange(ec.ECDH(), ec_key.public_key())
    kek = ConcatKDFHash(hashes.SHA256(), 32, trustee_kbs.concat_kdf_info("ECDH-ES+A256KW")).derive(z)
    epk = tf.public_jwk(eph)
    del epk["alg"]
    rsa_ek = rsa_key.public_key().encrypt(cek, padding.OAEP(mgf=padding.MGF1(hashes.SHA256()),
                                                            algorithm=hashes.SHA256(), label=None))
    return {"cek": trustee_kbs.b64url(cek), "ec_encrypted_key": trustee_kbs.b64url(aes_key_wrap(kek, cek)),
            "ec_epk": epk, "rsa_encrypted_key": trustee_kbs.b64url(rsa_ek)}


def from_trustee(c, data, tmp):
    """jwe/ and trustee/ seeds from the Trustee stand-in (tests/stack/trustee.py) with fixed TEE
    keys: real RCAR replies, resource JWEs and a token's claims, plus the harness's seal mode."""
    ec_key = ec.generate_private_key(ec.SECP256R1())
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # speed; see fuzz_jwe.c
    for name, key in (("jwe-tee-ec.pem", ec_key), ("jwe-tee-rsa.pem", rsa_key)):
        (data / name).write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                    serialization.NoEncryption()))
    seal = jwe_seal_data(ec_key, rsa_key)
    (data / "jwe-seal.json").write_text(json.dumps(seal, indent=1) + "\n")
    resource_ec, resource_rsa = ec.generate_private_key(ec.SECP256R1()), rsa.generate_private_key(65537, 2048)
    pem = resource_ec.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    der = pkcs8(resource_rsa)
    ec_jwk, rsa_jwk = tf.public_jwk(ec_key), tf.public_jwk(rsa_key)

    # seal mode (first byte bit 1): header text, NUL, plaintext
    ec_hdr = {"alg": "ECDH-ES+A256KW", "enc": "A256GCM", "epk": seal["ec_epk"]}
    rsa_hdr = {"alg": "RSA-OAEP-256", "enc": "A256GCM"}
    dump = lambda h: json.dumps(h, separators=(",", ":")).encode()  # noqa: E731
    c.add("jwe", "stack-seal-ec-pem", b"\x02" + dump(ec_hdr) + b"\0" + pem)
    c.add("jwe", "stack-seal-ec-kid", b"\x02" + dump({**ec_hdr, "kid": trustee_kbs.thumbprint(ec_jwk)}) + b"\0"
          + b"x")
    c.add("jwe", "stack-seal-ec-apu", b"\x02" + dump({**ec_hdr, "apu": "QWxpY2U", "apv": "Qm9i"}) + b"\0")
    c.add("jwe", "stack-seal-rsa-der", b"\x03" + dump(rsa_hdr) + b"\0" + der)
    c.add("jwe", "stack-seal-rsa-kid", b"\x03" + dump({**rsa_hdr, "kid": trustee_kbs.thumbprint(rsa_jwk)}) + b"\0"
          + b"y")
    # the stand-in's faulty JWEs (raw mode)
    for fault in ("tampered_tag", "wrong_kid", "wrong_epk"):
        c.add("jwe", f"stack-{fault}-ec.json", b"\x00" + dump(trustee_kbs.make_jwe(ec_jwk, b"k", fault)))
    c.add("jwe", "stack-wrong_epk-rsa.json", b"\x01" + dump(trustee_kbs.make_jwe(rsa_jwk, b"k", "wrong_epk")))

    stack = LocalStack(tmp / "trustee-state").init()
    try:
        stack.start_ita()
        tf.start_trustee(stack)
        tf.set_policy(stack, {"default": True, "rules": []})
        tf.put_resource(stack, "keygate/p256/pem", pem)
        tf.put_resource(stack, "keygate/rsa/der", der)
        make_quote = kf.sim_quote_maker(stack.state_dir)
        for kind, key, first in (("ec", ec_key, b"\x00"), ("rsa", rsa_key, b"\x01")):
            client = tf.RcarClient(stack, key_kind="ec")
            client.private_key, client.jwk = key, tf.public_jwk(key)
            challenge, headers = client.auth()
            c.add("trustee", f"stack-auth-{kind}", headers["Set-Cookie"].encode() + b"\n" + dump(challenge))
            token = client.attest(make_quote)
            c.add("trustee", f"stack-attest-{kind}", b"\n" + dump({"token": token}))
            payload = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
            if kind == "ec":
                (data / "trustee-binding.json").write_text(json.dumps(
                    {"nonce": client.nonce, "hash_alg": client.hash, "tee_pubkey": client.jwk}, indent=1) + "\n")
                c.add("trustee", "stack-claims-ec", b"\n" + dump(payload))
            for path in ("keygate/p256/pem", "keygate/rsa/der"):
                c.add("jwe", f"stack-{kind}-{path.replace('/', '-')}.json", first + dump(client.get_resource(path)))
        # error replies: no session, unknown resource, policy deny
        for name, path, headers in (("token-not-found", "keygate/p256/pem", {}),
                                    ("not-found", "keygate/none/x", {"Cookie": client.cookie})):
            status, _, body = tf.trustee_request(stack, "GET", f"/kbs/v0/resource/{path}", None, headers)
            c.add("trustee", f"stack-error-{name}", b"\n" + body)
        tf.set_policy(stack, {"default": False, "rules": []})
        status, _, body = tf.trustee_request(stack, "GET", "/kbs/v0/resource/keygate/p256/pem", None,
                                             {"Cookie": client.cookie})
        c.add("trustee", "stack-error-policy-deny", b"\n" + body)
        status, _, body = tf.trustee_request(stack, "POST", "/kbs/v0/auth", {"version": "0.1.0", "tee": "tdx"},
                                             {"Content-Type": "application/json"})
        c.add("trustee", "stack-error-version", b"\n" + body)
    finally:
        stack.stop_all()


def from_trustee_ear(c, data, tmp):
    """trustee/stack-ear-*: an EAR (tests/stack/ear.py, no service needed) that binds the fixed
    handshake of data/trustee-binding.json, as a token and as claims; its AS certificate is
    data/trustee-as-cert.pem, the key the harness pins."""
    from tests.stack.ear import EarBroker, ensure_as_key
    from tests.stack.quote import parse_quote

    binding = json.loads((data / "trustee-binding.json").read_text())
    stack = LocalStack(tmp / "ear-state").init()
    runtime = {"additional-evidence": "", "nonce": binding["nonce"], "tee-pubkey": binding["tee_pubkey"]}
    digest = trustee_kbs.HASHES[binding["hash_alg"]](trustee_kbs.jcs(runtime).encode()).digest()
    quote = make_sim_quote(stack.state_dir, digest.ljust(64, b"\0"))
    q = parse_quote(quote)
    rv = {"mr_td": [q.mrtd.hex()], "xfam": [q.xfam.hex()], "rtmr_1": [q.rtmr1.hex()], "rtmr_2": [q.rtmr2.hex()]}
    roots = pki.load_certs(os.path.join(stack.state_dir, pki.SIM_ROOT + ".pem"))
    broker = EarBroker(stack.state_dir, roots, rv)
    token = broker.issue(quote, runtime)
    shutil.copy(ensure_as_key(stack.state_dir)[1], data / "trustee-as-cert.pem")
    c.add("trustee", "stack-ear-token", b"\n" + token.encode())
    c.add("trustee", "stack-ear-claims", b"\n" + base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    c.add("trustee", "stack-ear-alg-hs256", b"\n" + broker.sign(json.loads(base64.urlsafe_b64decode(
        token.split(".")[1] + "==")), {"mode": "ear_alg", "alg": "HS256"}).encode())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vectors", default=str(REPO / "tests" / "vectors"))
    ap.add_argument("--only", help="comma-separated harnesses: regenerate only jwe,trustee (and their data/); "
                                   "or tdx_quote (and data/sim-sgx-root-ca.pem); or keyforms: only the wrap "
                                   "harness's keyform-* seeds")
    args = ap.parse_args()
    data = HERE / "data"
    data.mkdir(exist_ok=True)
    if args.only == "tdx_quote":
        c = Corpus(HERE / "corpus", ["tdx_quote"])
        with tempfile.TemporaryDirectory(prefix="keygate-corpus-") as tmp:
            from_sim_td(c, data, pathlib.Path(args.vectors), pathlib.Path(tmp))
    elif args.only == "agent_proto":
        from_agent_proto(Corpus(HERE / "corpus", ["agent_proto"], prefixes=("proto-",)))
    elif args.only == "keyforms":
        from_key_forms(Corpus(HERE / "corpus", ["wrap"], prefixes=("keyform-",)))
    elif args.only == "ear":
        with tempfile.TemporaryDirectory(prefix="keygate-corpus-") as tmp:
            from_trustee_ear(Corpus(HERE / "corpus", ["trustee"], prefixes=("stack-ear-",)), data,
                             pathlib.Path(tmp))
    elif args.only:
        only = args.only.split(",")
        if not set(only) <= set(TRUSTEE_HARNESSES):
            ap.error(f"--only takes {','.join(TRUSTEE_HARNESSES)} or tdx_quote")
        c = Corpus(HERE / "corpus", TRUSTEE_HARNESSES)
        with tempfile.TemporaryDirectory(prefix="keygate-corpus-") as tmp:
            from_trustee(c, data, pathlib.Path(tmp))
            if "trustee" in only:
                from_trustee_ear(c, data, pathlib.Path(tmp))
    else:
        c = Corpus(HERE / "corpus")
        from_vectors(c, data, pathlib.Path(args.vectors))
        from_key_forms(c)
        from_agent_proto(c)
        c.add("config", "stack-keygate.conf.example", (REPO / "conf" / "keygate.conf.example").read_bytes())
        with tempfile.TemporaryDirectory(prefix="keygate-corpus-") as tmp:
            from_stack(c, data, pathlib.Path(tmp))
            from_trustee(c, data, pathlib.Path(tmp))
            from_trustee_ear(c, data, pathlib.Path(tmp))
    total = sum(f.stat().st_size for f in (HERE / "corpus").rglob("*") if f.is_file())
    print(f"corpus: {sum(1 for f in (HERE / 'corpus').rglob('*') if f.is_file())} files, {total} bytes")


if __name__ == "__main__":
    main()
