# SPDX-License-Identifier: Apache-2.0
"""Confidential Containers Trustee compatible KBS of the local stack, with ITA as its verifier
or (``--token ear``) its own built-in attestation service issuing EAR tokens (tests/stack/ear.py).

    /usr/bin/python3 -m tests.stack.trustee --state DIR --ita-url URL [--ita-base-url URL]
        [--ita-root PEM] [--protocol-version 0.4.0] [--hash-algorithm sha512]
        [--session-timeout S] [--policy FILE] [--ita-policy-id UUID]... [--name trustee]
    /usr/bin/python3 -m tests.stack.trustee --state DIR --token ear [--reference-values FILE]
        [--token-duration-min M] [...]

With ``--token ear`` (Trustee's default deployment, ``attestation_service.type =
"coco_as_builtin"``) no ITA is involved: the AS verifies the quote against the pinned sim root,
appraises it with the reference values and returns an EAR signed by the state directory's AS key
(trustee-as-key.pem; trustee-as-cert.pem is what keygate pins). The challenge's extra-params is
"" (the built-in AS hashes the runtime data with SHA-384 whatever the client offers), the TEE key
of a resource request is read at
/submods/cpu0/ear.veraison.annotated-evidence/runtime_data_claims/tee-pubkey, and the EAR faults
of ear.py apply to /kbs/v0/attest.

Wire format per docs/protocols/trustee-rcar.md (KBS protocol 0.4.0, Trustee with
``attestation_service.type = "intel_ta"``):

    POST /kbs/v0/auth      {"version","tee","extra-params"} -> {"nonce","extra-params"} and
                           Set-Cookie kbs-session-id=<32 hex>; Expires=<now + session timeout>
    POST /kbs/v0/attest    cookie; {"init-data","runtime-data":{"nonce","tee-pubkey"},
                           "tee-evidence":{"primary_evidence":{"cc_eventlog","quote"},
                           "additional_evidence"}} -> {"token"} (ITA's v2 token, as is)
    GET  /kbs/v0/resource/<repo>/<type>/<tag>   cookie of an attested session, or
                           Authorization: Bearer <token> -> flattened JSON JWE
    POST/DELETE /kbs/v0/resource/<repo>/<type>/<tag>    admin: store (raw body) / delete
    POST/GET /kbs/v0/resource-policy {"policy": b64url(policy)}   admin

Admin requests carry ``Authorization: Bearer <control-token of the state dir>`` (the real
service verifies an identity provider's JWT; the stack has one secret for such things).

Behaviour:
* auth: the version must equal --protocol-version exactly (the real server's ``=0.4.0`` semver
  requirement), tee must be "tdx"; the nonce is 32 random bytes in standard base64; with ITA
  as verifier the selected hash is --hash-algorithm (default sha512) when the client offered
  it, else ``extra-params`` is "" (the client then uses SHA-384).
* attest: the session must exist and not be expired and the runtime-data nonce must be the
  session's; tee-pubkey must be a TeePubKey (EC P-256/P-521 with alg ECDH-ES+A256KW, or RSA
  with RSA-OAEP-256/RSA1_5; other members are dropped, as serde drops them); the server rebuilds
  {"tee-pubkey","nonce","additional-evidence"}, canonicalises it (RFC 8785, ``jcs`` below) and
  compares H(JCS) zero-padded with the quote's REPORTDATA; then POSTs ITA /appraisal/v2/attest
  with {"policy_ids","policy_must_match","tdx":{"quote","runtime_data": b64(JCS text),
  "event_log"?}} and verifies the token (tests.stack.kbs_token.TokenVerifier: JWKS of
  --ita-base-url, root pinned to --ita-root).  A second attest of an attested session returns
  the same token.
* resource: the resource policy sees the token claims and the path; the TEE key is read from
  the verified claims at /tdx/attester_runtime_data/tee-pubkey (as Trustee does for ITA).
  JWE: header {"alg","enc":"A256GCM"[,"epk":{"crv","kty","x","y"}]} in this order, compact
  JSON, base64url; ECDH-ES+A256KW = ECDH, Concat KDF (SHA-256, AlgorithmID, empty apu/apv,
  256) and AES key wrap; RSA-OAEP-256; AES-256-GCM with AAD = the protected string.
* Errors: {"type": "https://github.com/confidential-containers/kbs/errors/<Kind>", "detail"},
  401 for everything except InvalidRequestPath/PluginNotFound (404), as the real code does:
  AttestationError (auth/attest failures, version mismatch, missing session), TokenNotFound
  (resource without an attested session or a valid Bearer token), PolicyDeny,
  PluginInternalError (no such resource).  Malformed JSON bodies are 400 (actix).

Resource policy (JSON instead of Rego; the stack does not embed a Rego engine):
    {"default": true|false, "rules": [{"path": "<fnmatch glob of repo/type/tag>",
      "allow": bool, "claims": {"tdx.tdx_mrtd": ["hex", ...], ...}}]}
The first rule whose glob matches and whose claim lists all contain the token's value decides;
otherwise "default" (true, like Trustee's default policy for ITA tokens).

Service-specific faults (``mode``; see server.py for the generic ones):
    bad_cookie        /auth: the Set-Cookie names a session the server never stored
    version_mismatch  /auth: answer as a server that requires protocol 0.5.0
    expired_session   /resource: the session of the cookie is found expired (and dropped)
    tampered_tag      /resource: one bit of the JWE tag flipped
    wrong_kid         /resource: a "kid" (RFC 7638 thumbprint of another key) in the header
    wrong_epk         /resource: the JWE is made for another key of the same type (EC: its epk
                      and encrypted_key do not belong to the TEE key; RSA: encrypted_key)
    policy_deny       /resource: 401 PolicyDeny whatever the policy says
"""

import base64
import email.utils
import fnmatch
import hashlib
import json
import os
import re
import threading
import time
import uuid

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.concatkdf import ConcatKDFHash
from cryptography.hazmat.primitives.keywrap import aes_key_wrap

from . import pki
from .ear import EarBroker, EarError, tee_pubkey_of, unb64url
from .kbs_token import TokenError, TokenVerifier, http_fetch
from .quote import QuoteError, parse_quote
from .server import Response, StackService, json_response, main

PREFIX = "/kbs/v0"
ERROR_PREFIX = "https://github.com/confidential-containers/kbs/errors/"
COOKIE = "kbs-session-id"
HASHES = {"sha256": hashlib.sha256, "sha384": hashlib.sha384, "sha512": hashlib.sha512}
CURVES = {"P-256": (ec.SECP256R1(), 32), "P-521": (ec.SECP521R1(), 66)}
RESOURCE_RE = r"/kbs/v0/resource/(?P<path>[A-Za-z0-9._-]+/[A-Za-z0-9._-]+/[A-Za-z0-9._-]+)"


class TrusteeError(Exception):
    def __init__(self, kind, detail, status=401):
        super().__init__(f"{kind}: {detail}")
        self.kind, self.detail, self.status = kind, detail, status


def error_response(e):
    return json_response(e.status, {"type": ERROR_PREFIX + e.kind, "detail": e.detail})


# --------------------------------------------------------------------------- encodings

def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text):
    if not isinstance(text, str) or not re.fullmatch(r"[A-Za-z0-9_-]*", text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _jcs_string(s):
    out = ['"']
    for ch in s:
        o = ord(ch)
        if ch in '"\\':
            out.append("\\" + ch)
        elif o < 0x20:
            out.append({8: "\\b", 9: "\\t", 10: "\\n", 12: "\\f", 13: "\\r"}.get(o, f"\\u{o:04x}"))
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def jcs(value):
    """RFC 8785 canonical JSON of strings, objects, arrays, literals and integers (what the
    binding object holds). Members sorted by UTF-16 code units."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return _jcs_string(value)
    if isinstance(value, list):
        return "[" + ",".join(jcs(v) for v in value) + "]"
    if isinstance(value, dict):
        keys = sorted(value, key=lambda k: k.encode("utf-16-be"))
        return "{" + ",".join(_jcs_string(k) + ":" + jcs(value[k]) for k in keys) + "}"
    raise ValueError(f"no canonical form for {type(value).__name__}")


# --------------------------------------------------------------------------- TEE keys and JWE

def tee_pubkey(jwk):
    """The TeePubKey of a JWK (only its known members) and the cryptography public key."""
    if not isinstance(jwk, dict):
        raise TrusteeError("AttestationError", "tee-pubkey is not a JWK object")
    try:
        if jwk.get("kty") == "EC" and jwk.get("crv") in CURVES and jwk.get("alg") == "ECDH-ES+A256KW":
            curve, size = CURVES[jwk["crv"]]
            x, y = b64url_decode(jwk["x"]), b64url_decode(jwk["y"])
            if len(x) != size or len(y) != size:
                raise ValueError("coordinate size")
            key = ec.EllipticCurvePublicNumbers(int.from_bytes(x, "big"), int.from_bytes(y, "big"),
                                                curve).public_key()
            return {k: jwk[k] for k in ("kty", "crv", "alg", "x", "y")}, key
        if jwk.get("kty") == "RSA" and jwk.get("alg") in ("RSA-OAEP-256", "RSA1_5"):
            n, e = (int.from_bytes(b64url_decode(jwk[k]), "big") for k in ("n", "e"))
            if n.bit_length() > 4096:
                raise ValueError("RSA modulus above 4096 bits")
            return ({k: jwk[k] for k in ("kty", "alg", "n", "e")},
                    rsa.RSAPublicNumbers(e, n).public_key())
    except (KeyError, ValueError, TypeError) as e:
        raise TrusteeError("AttestationError", f"tee-pubkey is not a valid TeePubKey: {e}") from None
    raise TrusteeError("AttestationError", "tee-pubkey is not EC P-256/P-521 ECDH-ES+A256KW or "
                                           "RSA RSA-OAEP-256/RSA1_5")


def thumbprint(jwk):
    """RFC 7638 SHA-256 thumbprint."""
    members = ("crv", "kty", "x", "y") if jwk["kty"] == "EC" else ("e", "kty", "n")
    return b64url(hashlib.sha256(jcs({k: jwk[k] for k in members}).encode()).digest())


def concat_kdf_info(alg, apu=b"", apv=b""):
    return (len(alg).to_bytes(4, "big") + alg.encode() + len(apu).to_bytes(4, "big") + apu
            + len(apv).to_bytes(4, "big") + apv + (256).to_bytes(4, "big"))


def make_jwe(jwk, plaintext, fault_mode=None):
    """The flattened JWE of plaintext for the TEE key in jwk (a TeePubKey)."""
    tee, public = tee_pubkey(jwk)
    if fault_mode == "wrong_epk":  # made for another key of the same kind
        other = (ec.generate_private_key(public.curve) if tee["kty"] == "EC"
                 else rsa.generate_private_key(65537, public.key_size))
        public = other.public_key()
    cek, iv = os.urandom(32), os.urandom(12)
    header = {"alg": "ECDH-ES+A256KW" if tee["kty"] == "EC" else "RSA-OAEP-256", "enc": "A256GCM"}
    if tee["kty"] == "EC":
        size = CURVES[tee["crv"]][1]
        eph = ec.generate_private_key(public.curve)
        z = eph.exchange(ec.ECDH(), public)
        kek = ConcatKDFHash(hashes.SHA256(), 32, concat_kdf_info(header["alg"])).derive(z)
        encrypted_key = aes_key_wrap(kek, cek)
        nums = eph.public_key().public_numbers()
        header["epk"] = {"crv": tee["crv"], "kty": "EC", "x": b64url(nums.x.to_bytes(size, "big")),
                         "y": b64url(nums.y.to_bytes(size, "big"))}
    else:
        encrypted_key = public.encrypt(cek, padding.OAEP(mgf=padding.MGF1(hashes.SHA256()),
                                                         algorithm=hashes.SHA256(), label=None))
    if fault_mode == "wrong_kid":
        other = ec.generate_private_key(ec.SECP256R1()).public_key().public_numbers()
        header["kid"] = thumbprint({"kty": "EC", "crv": "P-256", "x": b64url(other.x.to_bytes(32, "big")),
                                    "y": b64url(other.y.to_bytes(32, "big"))})
    protected = b64url(json.dumps(header, separators=(",", ":")).encode())
    sealed = AESGCM(cek).encrypt(iv, plaintext, protected.encode("ascii"))
    tag = bytearray(sealed[-16:])
    if fault_mode == "tampered_tag":
        tag[0] ^= 0x01
    return {"protected": protected, "encrypted_key": b64url(encrypted_key), "iv": b64url(iv),
            "ciphertext": b64url(sealed[:-16]), "tag": b64url(bytes(tag))}


# --------------------------------------------------------------------------- policy

def claim(claims, dotted):
    node = claims
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def policy_allows(policy, claims, path):
    for rule in policy.get("rules", []):
        if not fnmatch.fnmatchcase(path, rule.get("path", "*")):
            continue
        wanted = rule.get("claims", {})
        if all(claim(claims, name) in values for name, values in wanted.items()):
            return bool(rule.get("allow", True))
    return bool(policy.get("default", True))


# --------------------------------------------------------------------------- the service

class TrusteeService(StackService):
    max_body = 2 * 1024 * 1024  # payload_request_size

    def __init__(self, state_dir, ita_url, ita_base_url=None, ita_root=None, protocol_version="0.4.0",
                 hash_algorithm="sha512", session_timeout=300, policy=None, ita_policy_ids=(), name="trustee",
                 token="ita", reference_values=None, token_duration_min=5):
        super().__init__(name, state_dir)
        self.ssl_ctx = pki.tls_client_context(self.state_dir)
        self.token_kind = token
        self.ear = self.verifier = None
        if token == "ear":
            roots = pki.load_certs(os.path.join(self.state_dir, pki.SIM_ROOT + ".pem"))
            self.ear = EarBroker(self.state_dir, roots, reference_values, token_duration_min)
        else:
            self.ita_url = ita_url.rstrip("/")
            root = pki.load_cert(ita_root or os.path.join(self.state_dir, "ita-root-ca.pem"))
            self.verifier = TokenVerifier(ita_base_url or ita_url, root, self.ssl_ctx)
        self.protocol_version = protocol_version
        self.hash_algorithm = hash_algorithm
        self.session_timeout = session_timeout
        self.policy = policy or {"default": True, "rules": []}
        self.ita_policy_ids = list(ita_policy_ids)
        self.admin_token = pki.control_token(self.state_dir)
        self.sessions = {}
        self.resources = {}
        self.lock = threading.Lock()
        for method, rx, fn in (("POST", "/kbs/v0/auth", self.auth), ("POST", "/kbs/v0/attest", self.attest),
                               ("GET", RESOURCE_RE, self.get_resource),
                               ("POST", RESOURCE_RE, self.put_resource),
                               ("DELETE", RESOURCE_RE, self.delete_resource),
                               ("POST", "/kbs/v0/resource-policy", self.set_policy),
                               ("GET", "/kbs/v0/resource-policy", self.get_policy)):
            self.add_route(method, rx, self._wrap(fn))

    @staticmethod
    def _wrap(fn):
        def handler(req):
            try:
                return fn(req)
            except TrusteeError as e:
                return error_response(e)
        return handler

    # ------------------------------------------------------------------ sessions

    def _cookie(self, sid, expires):
        when = email.utils.formatdate(expires, usegmt=True)
        return {"Set-Cookie": f"{COOKIE}={sid}; Expires={when}; Path=/kbs/v0"}

    def _session(self, req):
        """The live session of the request's cookie, or None."""
        cookie = req.headers.get("Cookie") or ""
        m = re.search(rf"(?:^|;\s*){COOKIE}=([0-9a-f]+)", cookie)
        if not m:
            return None
        with self.lock:
            s = self.sessions.get(m.group(1))
            if s is not None and (s["expires"] < time.time() or
                                  (req.fault or {}).get("mode") == "expired_session"):
                del self.sessions[m.group(1)]
                s = None
        return s

    # ------------------------------------------------------------------ RCAR

    def auth(self, req):
        body = req.json()
        if not isinstance(body, dict):
            raise TrusteeError("AttestationError", "request is not a JSON object", 400)
        required = "0.5.0" if (req.fault or {}).get("mode") == "version_mismatch" else self.protocol_version
        if body.get("version") != required:
            raise TrusteeError("AttestationError", f"KBS Client Protocol Version Mismatch: client "
                                                   f"{body.get('version')!r}, server requires ={required}")
        if body.get("tee") != "tdx":
            raise TrusteeError("AttestationError", f"unsupported tee {body.get('tee')!r} (this KBS "
                                                   f"appraises tdx with ITA)")
        req.attestation_type = "tdx"
        extra = body.get("extra-params")
        offered = extra.get("supported-hash-algorithms", []) if isinstance(extra, dict) else []
        selected = self.hash_algorithm if self.hash_algorithm in offered and not self.ear else None
        nonce = base64.b64encode(os.urandom(32)).decode()
        sid = uuid.uuid4().hex
        expires = time.time() + self.session_timeout
        if (req.fault or {}).get("mode") != "bad_cookie":
            with self.lock:
                self.sessions[sid] = {"nonce": nonce, "hash": selected or "sha384", "expires": expires,
                                      "token": None, "claims": None}
        else:
            sid = uuid.uuid4().hex  # never stored
        extra_out = {"selected-hash-algorithm": selected} if selected else ""
        return json_response(200, {"nonce": nonce, "extra-params": extra_out}, self._cookie(sid, expires))

    def attest(self, req):
        s = self._session(req)
        if s is None:
            raise TrusteeError("AttestationError", "no session for this cookie (missing, unknown or expired)")
        body = req.json()
        if not isinstance(body, dict):
            raise TrusteeError("AttestationError", "request is not a JSON object", 400)
        if s["token"] is not None:
            return json_response(200, {"token": s["token"]})
        runtime = body.get("runtime-data") or {}
        if runtime.get("nonce") != s["nonce"]:
            raise TrusteeError("AttestationError", "runtime-data nonce is not this session's challenge")
        tee, _ = tee_pubkey(runtime.get("tee-pubkey"))
        evidence = body.get("tee-evidence") or {}
        primary = evidence.get("primary_evidence") or {}
        additional = evidence.get("additional_evidence", "")
        try:
            quote = base64.b64decode(primary.get("quote") or "", validate=True)
        except ValueError:
            raise TrusteeError("AttestationError", "quote is not base64") from None
        text = jcs({"tee-pubkey": tee, "nonce": s["nonce"], "additional-evidence": additional}).encode()
        digest = HASHES[s["hash"]](text).digest()
        try:
            report_data = parse_quote(quote).report_data  # v4 or v5: REPORTDATA moves in v5
        except QuoteError as e:
            raise TrusteeError("AttestationError", f"quote does not parse: {e}") from None
        if report_data != digest.ljust(64, b"\0"):
            raise TrusteeError("AttestationError", f"REPORTDATA is not {s['hash']} of the canonical "
                                                   f"runtime data")
        if self.ear:
            try:
                token = self.ear.issue(quote, {"additional-evidence": additional, "nonce": s["nonce"],
                                               "tee-pubkey": tee}, req.fault)
            except EarError as e:
                raise TrusteeError("AttestationError", str(e)) from None
            # the session keeps what the AS said; a faulted token never reaches a resource
            claims = json.loads(unb64url(token.split(".")[1]))
        else:
            token = self._ita_attest(quote, text, primary.get("cc_eventlog"))
            try:
                claims = self.verifier.verify(token)
            except TokenError as e:
                raise TrusteeError("AttestationError", f"ITA token does not verify: {e}") from None
        with self.lock:
            s.update(token=token, claims=claims, expires=time.time() + self.session_timeout)
        sid = re.search(rf"{COOKIE}=([0-9a-f]+)", req.headers.get("Cookie")).group(1)
        return json_response(200, {"token": token}, self._cookie(sid, s["expires"]))

    def _ita_attest(self, quote, runtime_text, event_log):
        tdx = {"quote": base64.b64encode(quote).decode(),
               "runtime_data": base64.b64encode(runtime_text).decode()}
        if event_log:
            tdx["event_log"] = event_log
        body = {"policy_ids": self.ita_policy_ids, "policy_must_match": bool(self.ita_policy_ids),
                "tdx": tdx}
        headers = {"x-api-key": pki.api_key(self.state_dir), "Accept": "application/json",
                   "Content-Type": "application/json",
                   "User-Agent": "Confidential-containers-trustee (keygate stack)"}
        try:
            status, data = http_fetch("POST", self.ita_url + "/appraisal/v2/attest", self.ssl_ctx, headers,
                                      json.dumps(body).encode(), limit=256 * 1024)
        except OSError as e:
            raise TrusteeError("AttestationError", f"ITA attest failed: {e}") from None
        if status != 200:
            raise TrusteeError("AttestationError", f"ITA attest failed: HTTP {status}: "
                                                   f"{data[:200].decode(errors='replace')}")
        return json.loads(data)["token"]

    # ------------------------------------------------------------------ resources

    def _claims_of(self, req):
        s = self._session(req)
        if s is not None and s["claims"] is not None:
            return s["claims"]
        auth = req.headers.get("Authorization") or ""
        if auth.startswith("Bearer "):
            try:
                return (self.ear or self.verifier).verify(auth[len("Bearer "):])
            except (TokenError, EarError) as e:
                raise TrusteeError("TokenVerifierError", f"bearer token: {e}") from None
        raise TrusteeError("TokenNotFound", "no attested session and no bearer token")

    def get_resource(self, req):
        path = req.match.group("path")
        claims = self._claims_of(req)
        mode = (req.fault or {}).get("mode")
        if mode == "policy_deny" or not policy_allows(self.policy, claims, path):
            raise TrusteeError("PolicyDeny", f"resource policy denies {path}")
        with self.lock:
            data = self.resources.get(path)
        if data is None:
            raise TrusteeError("PluginInternalError", f"resource {path} not found in storage")
        jwk = tee_pubkey_of(claims) if self.ear else claim(claims, "tdx.attester_runtime_data.tee-pubkey")
        if jwk is None:
            raise TrusteeError("PluginInternalError", "failed to find tee-pubkey in the attestation claims")
        return json_response(200, make_jwe(jwk, data, mode))

    def _admin(self, req):
        auth = req.headers.get("Authorization") or ""
        if auth != f"Bearer {self.admin_token}":
            raise TrusteeError("AdminAuth", "admin token missing or wrong")

    def put_resource(self, req):
        self._admin(req)
        with self.lock:
            self.resources[req.match.group("path")] = bytes(req.body)
        return Response(200, b"")

    def delete_resource(self, req):
        self._admin(req)
        with self.lock:
            self.resources.pop(req.match.group("path"), None)
        return Response(200, b"")

    def set_policy(self, req):
        self._admin(req)
        try:
            policy = json.loads(b64url_decode(req.json()["policy"]))
        except (KeyError, TypeError, ValueError):
            raise TrusteeError("PolicyEngine", "policy is not base64url of a JSON policy", 400) from None
        self.policy = policy
        return Response(200, b"")

    def get_policy(self, req):
        self._admin(req)
        return json_response(200, {"policy": b64url(json.dumps(self.policy).encode())})


# --------------------------------------------------------------------------- entry point

def add_arguments(parser):
    parser.add_argument("--ita-url", help="ITA API URL (/appraisal/v2/attest); required with --token ita")
    parser.add_argument("--token", default="ita", choices=("ita", "ear"),
                        help="attestation backend: ITA (its token as is) or the built-in AS (EAR)")
    parser.add_argument("--reference-values", help="--token ear: JSON reference values (tests/stack/ear.py)")
    parser.add_argument("--token-duration-min", type=float, default=5, help="--token ear: EAR lifetime")
    parser.add_argument("--ita-base-url", help="ITA portal URL ({base}/certs); default --ita-url")
    parser.add_argument("--ita-root", help="pinned ITA root CA PEM (default state/ita-root-ca.pem)")
    parser.add_argument("--protocol-version", default="0.4.0")
    parser.add_argument("--hash-algorithm", default="sha512", choices=sorted(HASHES))
    parser.add_argument("--session-timeout", type=float, default=300)
    parser.add_argument("--policy", help="JSON resource policy file")
    parser.add_argument("--ita-policy-id", action="append", default=[])
    parser.add_argument("--name", default="trustee", help="service name (announce file, request log)")


def factory(args):
    policy = reference_values = None
    if args.policy:
        with open(args.policy) as f:
            policy = json.load(f)
    if args.reference_values:
        with open(args.reference_values) as f:
            reference_values = json.load(f)
    if args.token == "ita" and not args.ita_url:
        raise SystemExit("--ita-url is required with --token ita")
    return TrusteeService(args.state, args.ita_url, args.ita_base_url, args.ita_root, args.protocol_version,
                          args.hash_algorithm, args.session_timeout, policy, args.ita_policy_id, args.name,
                          args.token, reference_values, args.token_duration_min)


if __name__ == "__main__":
    raise SystemExit(main(factory, add_arguments))
