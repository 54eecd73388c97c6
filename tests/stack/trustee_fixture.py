# SPDX-License-Identifier: Apache-2.0
"""Test helpers for the local Trustee KBS (tests/stack/trustee.py): start it, administer it, and
a reference RCAR client in Python whose JWE decryption (python-cryptography) is written apart
from the stand-in's encryption, so either can be the other's oracle.

    trustee = start_trustee(stack)                    # after stack.start_ita()
    trustee = start_trustee(stack, token="ear",       # Trustee's own AS: EAR tokens, no ITA
                            reference_values=write_reference_values(stack, mr_td=...))
    as_cert(stack)                                    # the AS certificate keygate pins
    put_resource(stack, "repo/tls/web", pem_bytes)
    client = RcarClient(stack, key_kind="ec")         # or "rsa"
    client.handshake(sim_quote_maker(stack.state_dir))
    jwe = client.get_resource("repo/tls/web")         # the parsed JWE JSON
    plaintext = decrypt_jwe(jwe, client.private_key)
"""

import base64
import hashlib
import json

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.concatkdf import ConcatKDFHash
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap

from . import pki
from .ear import ensure_as_key
from .kbs_fixture import https_request


class TrusteeHttpError(Exception):
    def __init__(self, status, body):
        super().__init__(f"HTTP {status}: {body[:300]!r}")
        self.status = status
        self.body = body

    @property
    def kind(self):
        try:
            return json.loads(self.body)["type"].rsplit("/", 1)[1]
        except (ValueError, KeyError, IndexError):
            return None


def start_trustee(local_stack, ita=None, name="trustee", **opts):
    """Start tests.stack.trustee against the stack's ITA, or with token="ear" its own AS (no ITA);
    opts become flags (policy="f.json", session_timeout=2, hash_algorithm="sha384",
    reference_values="rv.json", faults=[{...}])."""
    if opts.get("token") == "ear":
        ensure_as_key(local_stack.state_dir)  # before the process: tests read the certificate
    else:
        ita = ita or local_stack.services["ita"]
        opts.setdefault("ita_url", getattr(ita, "url", ita))
    opts.setdefault("name", name)
    args = []
    for key, value in opts.items():
        flag = "--" + ("fault" if key == "faults" else key.replace("_", "-"))
        for v in value if isinstance(value, (list, tuple)) else [value]:
            args += [flag, json.dumps(v) if isinstance(v, dict) else str(v)]
    return local_stack.start(name, "tests.stack.trustee", *args)


def as_cert(stack):
    """Path of the EAR signing certificate of the stand-in's AS (what trustee_as_cert pins)."""
    return ensure_as_key(stack.state_dir)[1]


def write_reference_values(stack, path=None, **values):
    """A reference-values file for --token ear: mr_td, rtmr_1, rtmr_2, xfam, each a hex string or
    a list of them."""
    path = path or f"{stack.state_dir}/trustee-reference-values.json"
    rv = {k: v if isinstance(v, list) else [v] for k, v in values.items()}
    pki.write_file(path, json.dumps(rv))
    return path


def _b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64url(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def trustee_request(stack, method, path, body=None, headers=None, name="trustee"):
    return https_request(stack.services[name].url, method, path, body, headers, stack.state_dir)


def _admin(stack):
    return {"Authorization": f"Bearer {pki.control_token(stack.state_dir)}"}


def put_resource(stack, path, data, name="trustee"):
    status, _, body = trustee_request(stack, "POST", f"/kbs/v0/resource/{path}", data,
                                      {**_admin(stack), "Content-Type": "application/octet-stream"}, name)
    if status != 200:
        raise TrusteeHttpError(status, body)


def set_policy(stack, policy, name="trustee"):
    status, _, body = trustee_request(stack, "POST", "/kbs/v0/resource-policy",
                                      {"policy": _b64url(json.dumps(policy).encode())},
                                      {**_admin(stack), "Content-Type": "application/json"}, name)
    if status != 200:
        raise TrusteeHttpError(status, body)


def public_jwk(private_key):
    if isinstance(private_key, ec.EllipticCurvePrivateKey):
        size = (private_key.curve.key_size + 7) // 8
        n = private_key.public_key().public_numbers()
        crv = {"secp256r1": "P-256", "secp521r1": "P-521"}[private_key.curve.name]
        return {"kty": "EC", "crv": crv, "alg": "ECDH-ES+A256KW", "x": _b64url(n.x.to_bytes(size, "big")),
                "y": _b64url(n.y.to_bytes(size, "big"))}
    n = private_key.public_key().public_numbers()
    return {"kty": "RSA", "alg": "RSA-OAEP-256", "n": _b64url(n.n.to_bytes((n.n.bit_length() + 7) // 8, "big")),
            "e": _b64url(n.e.to_bytes(3, "big"))}


def canonical(obj):
    """JCS for the ASCII-keyed binding object (sort_keys = code unit order for ASCII)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


class RcarClient:
    """What a Trustee attester does (guest-components kbs_protocol), in Python."""

    def __init__(self, stack, key_kind="ec", name="trustee", version="0.4.0",
                 hash_algorithms=("sha256", "sha384", "sha512")):
        self.stack, self.name, self.version = stack, name, version
        self.hash_algorithms = list(hash_algorithms)
        self.private_key = (ec.generate_private_key(ec.SECP256R1()) if key_kind == "ec"
                            else rsa.generate_private_key(65537, 2048))
        self.jwk = public_jwk(self.private_key)
        self.cookie = self.nonce = self.hash = self.token = None

    def auth(self):
        body = {"version": self.version, "tee": "tdx",
                "extra-params": {"supported-hash-algorithms": self.hash_algorithms}}
        status, headers, data = trustee_request(self.stack, "POST", "/kbs/v0/auth", body,
                                                {"Content-Type": "application/json"}, self.name)
        if status != 200:
            raise TrusteeHttpError(status, data)
        challenge = json.loads(data)
        self.cookie = headers["Set-Cookie"].split(";")[0]
        self.nonce = challenge["nonce"]
        extra = challenge["extra-params"]
        self.hash = extra["selected-hash-algorithm"] if isinstance(extra, dict) else "sha384"
        return challenge, headers

    def report_data(self):
        text = canonical({"tee-pubkey": self.jwk, "nonce": self.nonce, "additional-evidence": ""})
        return getattr(hashlib, self.hash)(text).digest().ljust(64, b"\0")

    def attest(self, make_quote, report_data=None):
        quote = make_quote(report_data or self.report_data())
        body = {"init-data": None, "runtime-data": {"nonce": self.nonce, "tee-pubkey": self.jwk},
                "tee-evidence": {"primary_evidence": {"cc_eventlog": None,
                                                      "quote": base64.b64encode(quote).decode()},
                                 "additional_evidence": ""}}
        status, _, data = trustee_request(self.stack, "POST", "/kbs/v0/attest", body,
                                          {"Content-Type": "application/json", "Cookie": self.cookie}, self.name)
        if status != 200:
            raise TrusteeHttpError(status, data)
        self.token = json.loads(data)["token"]
        return self.token

    def handshake(self, make_quote):
        self.auth()
        return self.attest(make_quote)

    def get_resource(self, path, bearer=False):
        headers = {"Authorization": f"Bearer {self.token}"} if bearer else {"Cookie": self.cookie}
        status, _, data = trustee_request(self.stack, "GET", f"/kbs/v0/resource/{path}", None, headers, self.name)
        if status != 200:
            raise TrusteeHttpError(status, data)
        return json.loads(data)


class JweError(Exception):
    pass


def decrypt_jwe(jwe, private_key):
    """RFC 7516 flattened JWE decryption: ECDH-ES+A256KW or RSA-OAEP-256, A256GCM."""
    header = json.loads(_unb64url(jwe["protected"]))
    if header.get("enc") != "A256GCM":
        raise JweError(f"enc {header.get('enc')}")
    encrypted_key = _unb64url(jwe["encrypted_key"])
    try:
        if header["alg"] == "ECDH-ES+A256KW":
            epk = header["epk"]
            curve = {"P-256": ec.SECP256R1(), "P-521": ec.SECP521R1()}[epk["crv"]]
            peer = ec.EllipticCurvePublicNumbers(int.from_bytes(_unb64url(epk["x"]), "big"),
                                                 int.from_bytes(_unb64url(epk["y"]), "big"), curve).public_key()
            z = private_key.exchange(ec.ECDH(), peer)
            alg = b"ECDH-ES+A256KW"
            other = len(alg).to_bytes(4, "big") + alg + bytes(8) + (256).to_bytes(4, "big")
            kek = ConcatKDFHash(hashes.SHA256(), 32, other).derive(z)
            cek = aes_key_unwrap(kek, encrypted_key)
        elif header["alg"] == "RSA-OAEP-256":
            cek = private_key.decrypt(encrypted_key, padding.OAEP(mgf=padding.MGF1(hashes.SHA256()),
                                                                  algorithm=hashes.SHA256(), label=None))
        else:
            raise JweError(f"alg {header['alg']}")
        return AESGCM(cek).decrypt(_unb64url(jwe["iv"]),
                                   _unb64url(jwe["ciphertext"]) + _unb64url(jwe["tag"]),
                                   jwe["protected"].encode("ascii"))
    except JweError:
        raise
    except Exception as e:  # InvalidTag, InvalidUnwrap, ValueError: all mean "not for us"
        raise JweError(f"{type(e).__name__}: {e}") from None
