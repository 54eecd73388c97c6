"""Intel-KBS-compatible Key Broker Service of the local stack (intel/trustauthority-kbs v1.3.0).

Run as::

    /usr/bin/python3 -m tests.stack.kbs --state DIR --ita-url URL --ita-base-url URL \
        [--ita-root PEM] [--token-validity-minutes N] [--ita-retry-max N] [--ita-retry-wait S]

Spec: /work/shared/specs/kbs-protocols.md part A; behaviour cross-checked against the Go source
(transport/http/*.go, service/key_transfer.go, service/validation.go,
keymanager/vault_key_manager.go).

Endpoints (base ``/kbs/v1``; ids must match the version-4 UUID regex, else a gorilla-style plain
``404 page not found``; a known path with another method gives an empty 405):

    POST /token                   {"username","password"} -> bare PS384 JWT (Accept application/jwt)
    GET  /version                 {"name","version","gitHash","buildDate"} (no auth)
    POST/GET /key-transfer-policies          create (201) / list (bearer key_transfer_policies:*)
    GET/DELETE /key-transfer-policies/{id}   (delete: 400 while a key uses the policy)
    POST/GET /keys                create or register (201) / search (needs a query parameter)
    GET/DELETE/PUT /keys/{id}     PUT {"transfer_policy_id"} re-binds the policy (201)
    POST /keys/{id}/transfer      attested transfer: nonce / background / passport (no bearer)

Exactness kept from the real service:

* Header checks are string equality: ``Accept``/``Content-Type`` other than exactly
  ``application/json`` (``application/jwt`` for the token's Accept) -> 415.  Request JSON is
  decoded like Go's ``encoding/json`` with ``DisallowUnknownFields`` (also in nested objects):
  unknown field, wrong JSON type, non-integer or out-of-range number, bad base64 in a ``[]byte``
  field or a bad UUID -> 400 ``Failed to JSON-decode request body``; ``null`` leaves the zero
  value; only the first JSON value of the body is read.  (Go's case-insensitive field-name
  matching is not reproduced.)
* Error bodies are Go's: ``{"error":"<text>"}`` + newline, Content-Type ``text/plain;
  charset=utf-8`` (go-kit's error encoder sets none and Go sniffs the JSON as text).
  Request-decoding errors carry the bare message (``Invalid Accept header``); service errors
  are ``"<status>: <message>"``, nested where the Go code nests them (``401: 0: Token claims
  validation against key-transfer-policy failed``, ``500: 0: Error in getting public key``).
  Where the Go code dereferences nil (TDX policy without ``tdx``, policy without ``attributes``
  when the policy-id shortcut does not apply, key request without ``key_information``) the
  recovery handler's empty 500 is returned.  Missing/invalid bearer -> 401 ``Unauthorized``
  (text/plain).
* Transfer dispatch, statuses and messages follow ``service/key_transfer.go``: nonce request (empty
  body, no Attestation-Type) -> ITA ``GET /appraisal/v1/nonce`` (x-api-key, request-id = key id) ->
  200 + ``Attestation-Type: <policy type>`` + the nonce; background (Attestation-Type TDX/SGX) ->
  ITA ``POST /appraisal/v1/attest`` with {quote, verifier_nonce?, runtime_data=user_data,
  policy_ids (of the policy)?, event_log?}, any ITA failure -> 502; passport
  ({"attestation_token"}, no Attestation-Type) -> the token is verified here.  A released key
  comes back 200 with ``{"wrapped_key","wrapped_swk"}`` and an empty ``Attestation-Type`` header,
  as Go's ``header.Set`` with "" produces.
* The ITA client mirrors the Go connector v1.1.0: response bodies decoded strictly (unknown fields
  -> failure; nonce <= 4096 bytes, token response <= 64 KiB), only 200 with a body is success,
  retries on 500/503/504 up to ``--ita-retry-max`` (2) with back-off ``wait * 2^attempt`` capped at
  10 s (``--ita-retry-wait``, default 2 s), no retry on transport errors.
* Policy evaluation is ``service/validation.go``: attester_type must equal the policy type; the
  policy-id shortcut applies when the token has ``policy_ids_matched`` (even ``[]``) and the
  policy has non-empty ``policy_ids`` (an empty list is dropped on storage, as with Go's
  omitempty) and then attributes are ignored; otherwise each configured attribute must match:
  mrsignerseam/mrseam/mrtd (and SGX mrsigner/isvprodid/mrenclave) are exact, case-sensitive list
  membership, seamsvn/isvsvn and rtmr0..3 exact equality; a claim missing from the token
  compares as its Go zero value.
  ``enforce_tcb_upto_date: true`` requires ``attester_tcb_status == "OK"`` (the real constant
  ``TCBStatusUpToDate = "OK"``; current ITA tokens say ``"UpToDate"``, so the flag rejects them, as
  in the real KBS).
* Wrapping is spec A.4 byte for byte: SWK = HKDF-SHA256(32 random bytes, random 32-byte salt,
  no info) -> 32 bytes; AES-256-GCM, 12-byte random IV, no AAD;
  wrapped_key = LE32 iv_len ‖ LE32 16 ‖ LE32 ct_len (incl. tag) ‖ IV ‖ ct ‖ tag;
  wrapped_swk = RSA-OAEP(SHA-256, MGF1-SHA-256, empty label).  The wrapping key is always taken
  from the verified token's ``attester_held_data``
  (LE32 e ‖ n, n big-endian for TDX and little-endian for SGX); moduli of <= 2048 bits -> 500.

Deliberate differences (this is a test oracle, not a copy of the real service's weaknesses):

* Token verification (connector ``VerifyToken``: JWKS from ``{ita_base_url}/certs`` on every call,
  kid lookup, x5c <= 10 certificates classified by CN "Root CA" / "Signing CA" / leaf, all three
  required, CRLs from the first CDP of the signing CA and of the leaf, PS384 or RS256, exp/nbf
  without leeway) keeps all of that, but the chain is verified up to the **pinned** root
  ``--ita-root`` (default ``{state}/ita-root-ca.pem``); the root carried in the x5c must be there
  but is never trusted (the real KBS trusts it, so any JWKS served over TLS from the portal URL
  passes).  The JWK's n/e must also equal the x5c leaf key (the Go connector never compares
  them).  v1 flat claims are required: a v2 token has no top-level ``attester_type`` and fails
  that check with 401, as in the real KBS.  Like the real KBS, nothing else is checked: no
  nonce, iss, aud, debug attributes or TCB status (unless the policy enforces it).
* EC keys are released as PKCS#8 DER like RSA keys (the real Vault manager reads the blanked
  on-disk copy and wraps an empty plaintext); all keys are re-encoded as PKCS#8 DER on import, as
  Go's ``x509.MarshalPKCS8PrivateKey`` does.
* Algorithm names are validated case-insensitively but the key manager compares them
  case-sensitively, as in the real service; a lower-case algorithm makes create/register fail with
  500 here instead of producing the real service's odd keys.
* Keys, policies and the admin user live in memory (no users API, no brute-force defender, no
  transfer without attestation ``POST /keys/{id}``).  The admin is ``{state}/kbs-admin.json``; the
  bearer-token signing key (RSA-3072, PS384, kid ``secret-id``) is kept in
  ``{state}/kbs-jwt-signing.key`` so tokens survive a restart.  Bearer claims: sub (user id), info
  {name, id}, scp (all admin permissions), iat, nbf, exp.

KBS-specific faults (``request.fault`` on the transfer route, see tests/stack/server.py), applied to
the request that releases a key (a nonce request consumes a fault without effect, so use
``"count": null`` or 2 in background mode); ``not_found`` applies to every transfer request:

    not_found     404 as for an unknown key
    deny          401 policy denial
    wrong_key     wrap a freshly generated key of the same type instead of the requested one
    corrupt_wrap  flip a byte of the wrapped_key ciphertext
    corrupt_swk   flip a byte of wrapped_swk
    bad_header    wrapped_key header lies: iv_len 13 (param "variant": "iv_len", default) or
                  ct_len one too large ("variant": "ct_len")

The request log (server.py) records method, path, status, request-id, has_api_key, the
Attestation-Type header and the fault mode; never tokens, keys or passwords.
"""

import base64
import binascii
import datetime
import hmac
import json
import os
import re
import struct
import threading
import time
import urllib.error
import urllib.request
import uuid

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from . import pki
from .server import Response, StackService, main

PREFIX = "/kbs/v1"
UUID_V4 = r"[a-fA-F0-9]{8}-[a-fA-F0-9]{4}-4[a-fA-F0-9]{3}-[89abAB][a-fA-F0-9]{3}-[a-fA-F0-9]{12}"
JSON = "application/json"
JWT = "application/jwt"
VERSION = {"name": "Key Broker Service", "version": "v1.3.0", "gitHash": "keygate-stack",
           "buildDate": "2025-04-23"}
ADMIN_PERMISSIONS = ["keys:search", "keys:create", "keys:delete", "keys:transfer", "keys:update",
                     "key_transfer_policies:create", "key_transfer_policies:search",
                     "key_transfer_policies:delete", "users:delete", "users:search",
                     "users:create", "users:update"]
JWT_SIGNING_KEY_FILE = "kbs-jwt-signing.key"
TCB_STATUS_UP_TO_DATE = "OK"
AES_LENGTHS = {128, 192, 256}
RSA_LENGTHS = {2048, 3072, 4096, 7680}
CURVES = {"secp256r1": ec.SECP256R1, "prime256v1": ec.SECP256R1, "secp384r1": ec.SECP384R1,
          "secp521r1": ec.SECP521R1}
KBS_FAULTS = {"not_found", "deny", "wrong_key", "corrupt_wrap", "corrupt_swk", "bad_header"}

# Messages of transport/http/error.go
ERR_INVALID_REQUEST = "Invalid request body"
ERR_JSON_DECODE = "Failed to JSON-decode request body"
ERR_EMPTY_BODY = "Request body was not provided"
ERR_CONTENT_TYPE = "Invalid Content-type header"
ERR_ACCEPT = "Invalid Accept header"
ERR_QUERY = "Invalid query parameter provided. Refer to API doc for details."
ERR_FILTER = "Invalid filter criteria"
ERR_ATTESTATION_TYPE = "Invalid attestion type header"


# =========================================================================== errors and bodies

class KbsError(Exception):
    """An error answered as Go's errorEncoder does: {"error": text}, text/plain."""

    def __init__(self, status, text):
        super().__init__(text)
        self.status = status
        self.text = text


def handled(status, message, inner=None):
    """service.HandledError: text "<status>: <message>" (inner code 0 nests as "0: <message>")."""
    return KbsError(status, f"{status}: {message}" if inner is None else f"{status}: 0: {message}")


class Panic(Exception):
    """A nil dereference in the Go service: the recovery handler's empty 500."""


def go_json(status, obj, headers=None):
    """A body as Go's json.Encoder writes it: compact, newline-terminated."""
    body = json.dumps(obj, separators=(",", ":")).encode() + b"\n"
    return Response(status, body, {"Content-Type": JSON, **(headers or {})})


def error_body(err):
    body = json.dumps({"error": err.text}, separators=(",", ":")).encode() + b"\n"
    return Response(err.status, body, {"Content-Type": "text/plain; charset=utf-8"})


def plain(status, text):
    """net/http's http.Error / NotFound response."""
    return Response(status, text, {"Content-Type": "text/plain; charset=utf-8",
                                   "X-Content-Type-Options": "nosniff"})


def b64(data):
    return base64.b64encode(data).decode()


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text):
    if not isinstance(text, str) or not re.fullmatch(r"[A-Za-z0-9_-]*", text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def b64_strict(text):
    """Go base64.StdEncoding.DecodeString: padded standard alphabet only."""
    return base64.b64decode(text.encode("ascii"), validate=True)


# =========================================================================== strict JSON (Go)

class DecodeError(ValueError):
    pass


STR, BOOL, BYTES, UUID_T, TIME = "string", "bool", "[]byte", "uuid", "time"
UINT16, INT = ("int", 0, 0xFFFF), ("int", -2**63, 2**63 - 1)


def list_of(t):
    return ("list", t)


NONCE_SCHEMA = {"val": BYTES, "iat": BYTES, "signature": BYTES}
TRANSFER_SCHEMA = {"attestation_token": STR, "quote": BYTES, "nonce": NONCE_SCHEMA,
                   "user_data": BYTES, "event_log": BYTES}
TDX_ATTRIBUTES_SCHEMA = {"mrsignerseam": list_of(STR), "mrseam": list_of(STR), "seamsvn": UINT16,
                         "mrtd": list_of(STR), "rtmr0": STR, "rtmr1": STR, "rtmr2": STR,
                         "rtmr3": STR, "enforce_tcb_upto_date": BOOL}
SGX_ATTRIBUTES_SCHEMA = {"mrsigner": list_of(STR), "isvprodid": list_of(UINT16),
                         "mrenclave": list_of(STR), "isvsvn": UINT16,
                         "enforce_tcb_upto_date": BOOL}
POLICY_SCHEMA = {"id": UUID_T, "created_at": TIME, "attestation_type": STR,
                 "sgx": {"attributes": SGX_ATTRIBUTES_SCHEMA, "policy_ids": list_of(UUID_T)},
                 "tdx": {"attributes": TDX_ATTRIBUTES_SCHEMA, "policy_ids": list_of(UUID_T)}}
KEY_SCHEMA = {"key_information": {"algorithm": STR, "key_length": INT, "curve_type": STR,
                                  "key_data": STR, "kmip_key_id": STR},
              "transfer_policy_id": UUID_T}
KEY_UPDATE_SCHEMA = {"transfer_policy_id": UUID_T}
TOKEN_REQUEST_SCHEMA = {"username": STR, "password": STR}
ITA_TOKEN_SCHEMA = {"token": STR}
RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)")


def convert(value, t):
    """One JSON value into Go type t (schema notation above); DecodeError on mismatch."""
    if isinstance(t, dict):
        return decode_object(value, t)
    if isinstance(t, tuple) and t[0] == "list":
        if not isinstance(value, list):
            raise DecodeError("expected array")
        return [convert(v, t[1]) for v in value if v is not None]
    if isinstance(t, tuple):
        if isinstance(value, bool) or not isinstance(value, int) or not t[1] <= value <= t[2]:
            raise DecodeError("expected integer in range")
        return value
    expected = bool if t == BOOL else str
    if not isinstance(value, expected):
        raise DecodeError(f"expected {t}")
    try:
        if t == BYTES:
            return b64_strict(value)
        if t == UUID_T:
            return str(uuid.UUID(value))
    except (ValueError, binascii.Error) as e:
        raise DecodeError(str(e)) from None
    if t == TIME and not RFC3339.fullmatch(value):
        raise DecodeError("expected RFC 3339 time")
    return value


def decode_object(value, schema):
    """A JSON object into a dict of the known, non-null fields; unknown field -> DecodeError."""
    if not isinstance(value, dict):
        raise DecodeError("expected object")
    out = {}
    for name, v in value.items():
        if name not in schema:
            raise DecodeError(f"unknown field {name!r}")
        if v is not None:
            out[name] = convert(v, schema[name])
    return out


def decode_body(body, schema):
    """Go json.Decoder.Decode of the first JSON value of body (top-level null = zero struct)."""
    try:
        text = body.decode("utf-8").lstrip()
        value, _ = json.JSONDecoder().raw_decode(text)
    except (UnicodeDecodeError, ValueError) as e:
        raise DecodeError(str(e)) from None
    return {} if value is None else decode_object(value, schema)


# =========================================================================== JWT primitives

PS384_PAD = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)
PS384_VERIFY_PAD = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=padding.PSS.AUTO)


def jwt_sign_ps384(key, header, claims):
    signing_input = (b64url(json.dumps(header, separators=(",", ":")).encode()) + "." +
                     b64url(json.dumps(claims, separators=(",", ":")).encode()))
    sig = key.sign(signing_input.encode(), PS384_PAD, hashes.SHA384())
    return signing_input + "." + b64url(sig)


def jwt_split(token):
    """(header dict, claims dict, signing input bytes, signature bytes); ValueError if malformed."""
    parts = token.split(".") if isinstance(token, str) else []
    if len(parts) != 3:
        raise ValueError("token is not a compact JWS")
    header, claims = (json.loads(b64url_decode(p)) for p in parts[:2])
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise ValueError("token header or claims are not JSON objects")
    return header, claims, (parts[0] + "." + parts[1]).encode(), b64url_decode(parts[2])


def jwt_verify_signature(public_key, alg, signing_input, signature):
    """PS384 (any salt length, as golang-jwt verifies) or RS256; InvalidSignature on failure."""
    if alg == "PS384":
        public_key.verify(signature, signing_input, PS384_VERIFY_PAD, hashes.SHA384())
    elif alg == "RS256":
        public_key.verify(signature, signing_input, padding.PKCS1v15(), hashes.SHA256())
    else:
        raise InvalidSignature(f"alg {alg!r} not allowed")


def check_time_claims(claims, now=None):
    """golang-jwt v5 defaults: exp and nbf checked when present, no leeway."""
    now = time.time() if now is None else now
    for name in ("exp", "nbf", "iat"):
        if name in claims and (isinstance(claims[name], bool) or
                               not isinstance(claims[name], (int, float))):
            raise ValueError(f"{name} is not a number")
    if "exp" in claims and now >= claims["exp"]:
        raise ValueError("token is expired")
    if "nbf" in claims and now < claims["nbf"]:
        raise ValueError("token is not valid yet")


# =========================================================================== admin bearer tokens

class AdminAuth:
    """The bootstrap admin user and the PS384 bearer tokens of POST /token."""

    def __init__(self, state_dir, validity_minutes):
        self.admin = pki.kbs_admin(state_dir)
        self.user_id = str(uuid.uuid5(uuid.NAMESPACE_URL, "kbs-admin:" + self.admin["username"]))
        self.validity = int(validity_minutes) * 60
        path = os.path.join(state_dir, JWT_SIGNING_KEY_FILE)
        if not os.path.exists(path):
            pki.write_key(path, pki.new_rsa(3072))
        self.key = pki.load_key(path)

    def issue(self, username, password):
        """Bearer JWT for valid credentials; KbsError otherwise (messages of jwt_token.go)."""
        if not username or not password:
            raise handled(400, "Username and password of a valid user must be provided to get "
                               "the token")
        if username != self.admin["username"]:
            raise handled(401, "Invalid username or password")
        if not hmac.compare_digest(password.encode(), self.admin["password"].encode()):
            raise handled(401, "invalid username or password provided")
        now = int(time.time())
        claims = {"info": {"name": username, "id": self.user_id}, "scp": ADMIN_PERMISSIONS,
                  "sub": self.user_id, "iat": now, "nbf": now, "exp": now + self.validity}
        return jwt_sign_ps384(self.key, {"alg": "PS384", "kid": "secret-id", "typ": "JWT"},
                              claims)

    def authorized(self, req, scope):
        """True if the request carries a valid, unexpired bearer token with scope."""
        auth = req.headers.get("Authorization") or ""
        if not auth.startswith("Bearer "):
            return False
        try:
            header, claims, signing_input, sig = jwt_split(auth[len("Bearer "):].strip())
            if header.get("alg") != "PS384":
                return False
            jwt_verify_signature(self.key.public_key(), "PS384", signing_input, sig)
            check_time_claims(claims)
        except (ValueError, InvalidSignature):
            return False
        scopes = claims.get("scp")
        return isinstance(scopes, list) and scope in scopes


# =========================================================================== transfer policies

HEX96 = re.compile(r"[a-fA-F0-9]{96}")
HEX64 = re.compile(r"[a-fA-F0-9]{64}")
TDX_HEX_LISTS, TDX_HEX_VALUES = ("mrsignerseam", "mrseam", "mrtd"), ("rtmr0", "rtmr1", "rtmr2",
                                                                     "rtmr3")
SGX_HEX_LISTS = ("mrsigner", "mrenclave")
# (policy attribute, token claim, comparison)
TDX_RULES = (("mrsignerseam", "tdx_mrsignerseam", "one_of"), ("mrseam", "tdx_mrseam", "one_of"),
             ("seamsvn", "tdx_seamsvn", "equal"), ("mrtd", "tdx_mrtd", "one_of"),
             ("rtmr0", "tdx_rtmr0", "equal"), ("rtmr1", "tdx_rtmr1", "equal"),
             ("rtmr2", "tdx_rtmr2", "equal"), ("rtmr3", "tdx_rtmr3", "equal"))
SGX_RULES = (("mrsigner", "sgx_mrsigner", "one_of"), ("isvprodid", "sgx_isvprodid", "one_of"),
             ("mrenclave", "sgx_mrenclave", "one_of"), ("isvsvn", "sgx_isvsvn", "equal"))


def validate_policy(policy):
    """validateKeyTransferPolicy: KbsError 400 (Invalid request body) or Panic (tdx/sgx missing)."""
    att = policy.get("attestation_type", "")
    if att not in ("TDX", "SGX"):
        raise KbsError(400, ERR_INVALID_REQUEST)
    section = policy.get(att.lower())
    if section is None:
        raise Panic("nil policy section")
    attrs = section.get("attributes")
    if attrs is None:
        return
    hex_re, lists, values = ((HEX96, TDX_HEX_LISTS, TDX_HEX_VALUES) if att == "TDX"
                             else (HEX64, SGX_HEX_LISTS, ()))
    candidates = [v for name in lists for v in attrs.get(name, [])]
    candidates += [attrs[name] for name in values if attrs.get(name)]
    if not all(hex_re.fullmatch(v) for v in candidates):
        raise KbsError(400, ERR_INVALID_REQUEST)


def store_policy(policy):
    """The policy as Go stores it: server-assigned id/created_at, empty values omitted."""
    def prune(obj):
        if isinstance(obj, dict):
            pruned = {k: prune(v) for k, v in obj.items()}
            return {k: v for k, v in pruned.items() if v not in ("", [], None)}
        return obj
    stored = prune(policy)
    stored["id"] = str(uuid.uuid4())
    stored["created_at"] = _now_rfc3339()
    order = ("id", "created_at", "attestation_type", "sgx", "tdx")
    return {k: stored[k] for k in order if k in stored}


def evaluate_policy(policy, claims):
    """validateAttestationTokenClaims: True if the claims satisfy the policy; Panic on nil attrs.

    claims are the typed claims of parse_claims() (zero values for absent claims).
    """
    att = policy["attestation_type"]
    section = policy[att.lower()]
    matched = claims["policy_ids_matched"]
    if matched is not None and section.get("policy_ids"):
        return any(i in section["policy_ids"] for i in matched)
    attrs = section.get("attributes")
    if attrs is None:
        raise Panic("nil attributes")
    for attr, claim, how in (TDX_RULES if att == "TDX" else SGX_RULES):
        if attr not in attrs:
            continue
        wanted = attrs[attr]
        if how == "one_of" and claims[claim] not in wanted:
            return False
        if how == "equal" and claims[claim] != wanted:
            return False
    return not (attrs.get("enforce_tcb_upto_date")
                and claims["attester_tcb_status"] != TCB_STATUS_UP_TO_DATE)


# Claims the KBS decodes into typed Go fields: name -> (schema type, zero value)
CLAIM_TYPES = {name: (STR, "") for name in (
    "attester_type", "attester_tcb_status", "attester_held_data", "tdx_mrseam", "tdx_mrsignerseam",
    "tdx_mrtd", "tdx_rtmr0", "tdx_rtmr1", "tdx_rtmr2", "tdx_rtmr3", "sgx_mrsigner",
    "sgx_mrenclave")}
CLAIM_TYPES.update({name: (UINT16, 0) for name in ("tdx_seamsvn", "sgx_isvsvn", "sgx_isvprodid")})


def parse_claims(claims):
    """Decode the claims the KBS uses like Go's typed struct; ValueError on a type mismatch."""
    out = {}
    for name, (t, zero) in CLAIM_TYPES.items():
        value = claims.get(name)
        out[name] = zero if value is None else convert(value, t)
    out["policy_ids_matched"] = _matched_policy_ids(claims.get("policy_ids_matched"))
    return out


def _matched_policy_ids(value):
    """ids of policy_ids_matched ([]PolicyClaim: other members ignored, null id = nil UUID)."""
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(m, (dict, type(None))) for m in value):
        raise DecodeError("policy_ids_matched is not an array of objects")
    return [str(uuid.UUID(int=0)) if (m or {}).get("id") is None else convert(m["id"], UUID_T)
            for m in value]


# =========================================================================== keys

def generate_secret(algorithm, key_length, curve_type):
    """A new key as the KBS keeps it: raw AES bytes or PKCS#8 DER."""
    if algorithm == "AES":
        return os.urandom(key_length // 8)
    if algorithm == "RSA":
        key = rsa.generate_private_key(public_exponent=65537, key_size=key_length)
    elif algorithm == "EC":
        key = ec.generate_private_key(CURVES[curve_type]())
    else:
        raise ValueError(f"key manager does not know algorithm {algorithm!r}")
    return pkcs8_der(key)


def import_secret(algorithm, key_data):
    """Register: raw AES bytes, or the PKCS#8 PEM private key re-encoded as PKCS#8 DER."""
    raw = b64_strict(key_data)
    if algorithm == "AES":
        return raw
    if algorithm not in ("RSA", "EC"):
        raise ValueError(f"key manager does not know algorithm {algorithm!r}")
    key = load_pkcs8_pem(raw)
    expected = rsa.RSAPrivateKey if algorithm == "RSA" else ec.EllipticCurvePrivateKey
    if not isinstance(key, expected):
        raise ValueError(f"private key is not an {algorithm} key")
    return pkcs8_der(key)


def load_pkcs8_pem(pem):
    """Go pem.Decode + x509.ParsePKCS8PrivateKey: the first PEM block must be PKCS#8."""
    m = re.search(rb"-----BEGIN ([A-Z0-9 ]+)-----(.*?)-----END \1-----", pem, re.S)
    if not m:
        raise ValueError("failed to decode PEM formatted private key")
    der = base64.b64decode(re.sub(rb"\s", b"", m.group(2)))
    if not _is_pkcs8(der):
        raise ValueError("not a PKCS#8 PrivateKeyInfo")
    return serialization.load_der_private_key(der, None)


def _is_pkcs8(der):
    """PrivateKeyInfo starts SEQUENCE { INTEGER 0, SEQUENCE AlgorithmIdentifier ... }."""
    try:
        body = der[2 + (der[1] & 0x7F if der[1] & 0x80 else 0):]
        return der[0] == 0x30 and body[:3] == b"\x02\x01\x00" and body[3] == 0x30
    except IndexError:
        return False


def pkcs8_der(key):
    return key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def fresh_secret_like(record):
    """A new secret of the same type as record's (the wrong_key fault)."""
    if record["algorithm"] == "AES":
        return os.urandom(len(record["secret"]))
    old = serialization.load_der_private_key(record["secret"], None)
    if isinstance(old, rsa.RSAPrivateKey):
        return pkcs8_der(rsa.generate_private_key(public_exponent=65537, key_size=old.key_size))
    return pkcs8_der(ec.generate_private_key(type(old.curve)()))


def key_response(record):
    """model.KeyResponse of a stored key (omitempty fields dropped)."""
    info = {"algorithm": record["algorithm"]}
    for name in ("key_length", "curve_type", "kmip_key_id"):
        if record.get(name):
            info[name] = record[name]
    resp = {"id": record["id"], "key_info": info}
    if record.get("transfer_policy_id"):
        resp["transfer_policy_id"] = record["transfer_policy_id"]
    resp["transfer_link"] = f"{PREFIX}/keys/{record['id']}/transfer"
    resp["created_at"] = record["created_at"]
    return resp


def validate_key_request(info):
    """validateKeyCreateRequest: True if the key_information passes input validation."""
    algorithm, length = info.get("algorithm", ""), info.get("key_length", 0)
    if algorithm.upper() not in ("AES", "RSA", "EC") or algorithm not in (
            algorithm.upper(), algorithm.lower()):
        return False
    if algorithm.upper() == "EC" and info.get("curve_type", "") not in CURVES:
        return False
    if length not in (AES_LENGTHS if algorithm.upper() == "AES" else RSA_LENGTHS):
        return False
    if info.get("key_data"):
        try:
            raw = b64_strict(info["key_data"])
        except (ValueError, binascii.Error):
            return False
        if algorithm.upper() == "AES" and len(raw) * 8 not in AES_LENGTHS:
            return False
    elif info.get("kmip_key_id") and not re.fullmatch(r"[a-zA-Z0-9_ /.-]*", info["kmip_key_id"]):
        return False
    return True


def _now_rfc3339():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# =========================================================================== wrapping

def public_key_from_held_data(held_data_b64, attestation_type):
    """(e, n) from attester_held_data = LE32(e) ‖ n; ValueError if unusable (n <= 2048 bits)."""
    blob = b64_strict(held_data_b64)
    if len(blob) < 4:
        raise ValueError("user data too short")
    modulus = blob[4:][::-1] if attestation_type == "SGX" else blob[4:]
    e, n = struct.unpack("<I", blob[:4])[0], int.from_bytes(modulus, "big")
    if n.bit_length() <= 2048:
        raise ValueError("RSA key size must be greater than 2048 bits")
    return e, n


def wrap_secret(secret, e, n):
    """(wrapped_key, wrapped_swk) per spec A.4; ValueError if the RSA key cannot encrypt."""
    swk = HKDF(hashes.SHA256(), 32, salt=os.urandom(32), info=None).derive(os.urandom(32))
    iv = os.urandom(12)
    ct = AESGCM(swk).encrypt(iv, secret, None)
    wrapped_key = struct.pack("<III", len(iv), 16, len(ct)) + iv + ct
    public_key = rsa.RSAPublicNumbers(e, n).public_key()
    wrapped_swk = public_key.encrypt(swk, padding.OAEP(mgf=padding.MGF1(hashes.SHA256()),
                                                       algorithm=hashes.SHA256(), label=None))
    return wrapped_key, wrapped_swk


def apply_wrap_fault(fault, wrapped_key, wrapped_swk):
    """Damage the wrapped blobs as the fault mode says (corrupt_wrap, corrupt_swk, bad_header)."""
    mode = fault["mode"]
    if mode == "corrupt_wrap":
        i = len(wrapped_key) - 17       # a ciphertext byte (or the first tag byte if empty)
        wrapped_key = wrapped_key[:i] + bytes([wrapped_key[i] ^ 0x01]) + wrapped_key[i + 1:]
    elif mode == "corrupt_swk":
        wrapped_swk = bytes([wrapped_swk[0] ^ 0x01]) + wrapped_swk[1:]
    elif mode == "bad_header":
        iv_len, tag_len, ct_len = struct.unpack("<III", wrapped_key[:12])
        if fault.get("variant", "iv_len") == "iv_len":
            iv_len = 13
        else:
            ct_len += 1
        wrapped_key = struct.pack("<III", iv_len, tag_len, ct_len) + wrapped_key[12:]
    return wrapped_key, wrapped_swk


# =========================================================================== ITA access

class ItaError(Exception):
    pass


def http_fetch(method, url, ssl_ctx, headers=None, body=None, timeout=30, limit=None):
    """(status, body bytes) of one request; transport errors raise OSError."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}),
                                         urllib.request.HTTPSHandler(context=ssl_ctx))
    try:
        with opener.open(req, timeout=timeout) as resp:
            return resp.status, _read_limited(resp, limit)
    except urllib.error.HTTPError as e:
        return e.code, _read_limited(e, limit)


def _read_limited(resp, limit):
    data = resp.read() if limit is None else resp.read(limit + 1)
    if limit is not None and len(data) > limit:
        raise ItaError(f"response body larger than {limit} bytes")
    return data


class ItaClient:
    """The ITA API calls of the Go connector v1.1.0 as the KBS uses them."""

    RETRY_STATUSES = {500, 503, 504}

    def __init__(self, api_url, api_key, ssl_ctx, retry_max=2, retry_wait=2.0, timeout=30):
        self.api_url = api_url.rstrip("/")
        self.api_key = api_key
        self.ssl_ctx = ssl_ctx
        self.retry_max = retry_max
        self.retry_wait = retry_wait
        self.timeout = timeout

    def _call(self, method, path, request_id, body=None, limit=None):
        headers = {"x-api-key": self.api_key, "Accept": JSON, "request-id": request_id}
        if body is not None:
            headers["Content-Type"] = JSON
        for attempt in range(self.retry_max + 1):
            try:
                status, data = http_fetch(method, self.api_url + path, self.ssl_ctx, headers,
                                          body, self.timeout, limit)
            except OSError as e:
                raise ItaError(f"request to {path} failed: {e}") from None
            if status not in self.RETRY_STATUSES or attempt == self.retry_max:
                break
            time.sleep(min(self.retry_wait * 2 ** attempt, 10.0))
        if status != 200 or not data:
            raise ItaError(f"request to {path} failed: StatusCode = {status}")
        return data

    def get_nonce(self, request_id):
        """The verifier nonce {val, iat, signature} as raw bytes."""
        data = self._call("GET", "/appraisal/v1/nonce", request_id, limit=4096)
        try:
            nonce = decode_body(data, NONCE_SCHEMA)
        except DecodeError as e:
            raise ItaError(f"nonce response: {e}") from None
        return {k: nonce.get(k, b"") for k in ("val", "iat", "signature")}

    def get_token(self, request_id, quote, nonce, runtime_data, policy_ids, event_log):
        """An ITA v1 token for the evidence (fields left out when empty, as Go's omitempty)."""
        body = {"quote": b64(quote or b"")}
        if nonce:
            body["verifier_nonce"] = {k: b64(nonce.get(k, b"")) for k in ("val", "iat",
                                                                          "signature")}
        if runtime_data:
            body["runtime_data"] = b64(runtime_data)
        if policy_ids:
            body["policy_ids"] = policy_ids
        if event_log:
            body["event_log"] = b64(event_log)
        data = self._call("POST", "/appraisal/v1/attest", request_id,
                          json.dumps(body).encode(), limit=64 * 1024)
        try:
            token = decode_body(data, ITA_TOKEN_SCHEMA).get("token", "")
        except DecodeError as e:
            raise ItaError(f"attest response: {e}") from None
        if not token:
            raise ItaError("attest response carries no token")
        return token


# =========================================================================== token verification

class TokenError(Exception):
    pass


def _cn(cert):
    names = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return names[0].value if names else ""


def _is_ca(cert):
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def verify_issued_by(cert, issuer):
    """cert is signed by issuer's key with a matching issuer name; TokenError otherwise."""
    if cert.issuer != issuer.subject:
        raise TokenError(f"{_cn(cert)!r} is not issued by {_cn(issuer)!r}")
    key = issuer.public_key()
    try:
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(),
                       cert.signature_hash_algorithm)
        else:
            key.verify(cert.signature, cert.tbs_certificate_bytes,
                       ec.ECDSA(cert.signature_hash_algorithm))
    except InvalidSignature:
        raise TokenError(f"bad signature on {_cn(cert)!r}") from None


def _check_validity(cert, now):
    if not cert.not_valid_before <= now <= cert.not_valid_after:
        raise TokenError(f"certificate {_cn(cert)!r} is not valid now")


def _first_cdp(cert):
    try:
        cdps = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    except x509.ExtensionNotFound:
        raise TokenError(f"no CRL distribution point in {_cn(cert)!r}") from None
    for dp in cdps:
        for name in dp.full_name or []:
            if isinstance(name, x509.UniformResourceIdentifier):
                return name.value
    raise TokenError(f"no CRL distribution point URI in {_cn(cert)!r}")


class TokenVerifier:
    """ITA token verification of the KBS, with the root pinned instead of taken from the x5c."""

    def __init__(self, base_url, pinned_root, ssl_ctx, timeout=30):
        self.base_url = base_url.rstrip("/")
        self.root = pinned_root
        self.ssl_ctx = ssl_ctx
        self.timeout = timeout

    def verify(self, token):
        """The token's claims dict; TokenError if anything fails."""
        try:
            header, claims, signing_input, sig = jwt_split(token)
        except ValueError as e:
            raise TokenError(f"malformed token: {e}") from None
        alg, kid = header.get("alg"), header.get("kid")
        if alg not in ("PS384", "RS256") or not isinstance(kid, str):
            raise TokenError("token header: alg must be PS384/RS256 and kid a string")
        jwk = self._jwk(kid)
        leaf = self._verify_chain(jwk)
        public_key = self._jwk_public_key(jwk, leaf)
        try:
            jwt_verify_signature(public_key, alg, signing_input, sig)
            check_time_claims(claims)
        except InvalidSignature:
            raise TokenError("token signature invalid") from None
        except ValueError as e:
            raise TokenError(str(e)) from None
        return claims

    def _get(self, url, what):
        try:
            status, data = http_fetch("GET", url, self.ssl_ctx, {"Accept": JSON},
                                      timeout=self.timeout)
        except (OSError, ItaError) as e:
            raise TokenError(f"{what} download failed: {e}") from None
        if status != 200:
            raise TokenError(f"{what} download failed: status {status}")
        return data

    def _jwk(self, kid):
        try:
            jwks = json.loads(self._get(self.base_url + "/certs", "JWKS"))
            jwk = next(k for k in jwks["keys"] if isinstance(k, dict) and k.get("kid") == kid)
        except (ValueError, KeyError, TypeError, StopIteration):
            raise TokenError(f"no JWK with kid {kid!r}") from None
        x5c = jwk.get("x5c")
        if not isinstance(x5c, list) or not 1 <= len(x5c) <= 10:
            raise TokenError("JWK x5c missing or longer than 10 certificates")
        return jwk

    def _verify_chain(self, jwk):
        """Leaf certificate of the JWK after chain (to the pinned root) and CRL checks."""
        try:
            certs = [x509.load_der_x509_certificate(base64.b64decode(c)) for c in jwk["x5c"]]
        except (ValueError, TypeError):
            raise TokenError("x5c holds an unparsable certificate") from None
        roles = {}
        for cert in certs:
            cn = _cn(cert)
            role = ("root" if "Root CA" in cn and _is_ca(cert) else
                    "ca" if "Signing CA" in cn else "leaf")
            roles.setdefault(role, cert)
        if len(roles) != 3:
            raise TokenError("x5c must hold a root CA, a signing CA and a leaf")
        ca, leaf = roles["ca"], roles["leaf"]
        now = datetime.datetime.utcnow()
        verify_issued_by(ca, self.root)
        verify_issued_by(leaf, ca)
        if not _is_ca(ca):
            raise TokenError("signing CA is not a CA")
        for cert in (self.root, ca, leaf):
            _check_validity(cert, now)
        self._check_crl(ca, self.root, now)
        self._check_crl(leaf, ca, now)
        return leaf

    def _check_crl(self, cert, issuer, now):
        url = _first_cdp(cert)
        try:
            crl = x509.load_der_x509_crl(self._get(url, "CRL"))
        except ValueError:
            raise TokenError(f"CRL {url} is not DER") from None
        if not crl.is_signature_valid(issuer.public_key()):
            raise TokenError(f"CRL {url} signature invalid")
        if crl.next_update is None or crl.next_update < now:
            raise TokenError(f"CRL {url} is outdated")
        if crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None:
            raise TokenError(f"certificate {_cn(cert)!r} is revoked")

    @staticmethod
    def _jwk_public_key(jwk, leaf):
        try:
            n = int.from_bytes(b64url_decode(jwk["n"]), "big")
            e = int.from_bytes(b64url_decode(jwk["e"]), "big")
            key = rsa.RSAPublicNumbers(e, n).public_key()
        except (KeyError, ValueError, TypeError):
            raise TokenError("JWK n/e unusable") from None
        if key.public_numbers() != leaf.public_key().public_numbers():
            raise TokenError("JWK key differs from the x5c leaf key")
        return key


# =========================================================================== the service

class KbsService(StackService):
    """Routes and state of the KBS; see the module docstring."""

    def __init__(self, state_dir, ita_url, ita_base_url, ita_root=None, token_validity=5,
                 ita_retry_max=2, ita_retry_wait=2.0):
        super().__init__("kbs", state_dir)
        ssl_ctx = pki.tls_client_context(self.state_dir)
        root_path = ita_root or os.path.join(self.state_dir, "ita-root-ca.pem")
        self.auth = AdminAuth(self.state_dir, token_validity)
        self.ita = ItaClient(ita_url, pki.api_key(self.state_dir), ssl_ctx, ita_retry_max,
                             ita_retry_wait)
        self.verifier = TokenVerifier(ita_base_url, pki.load_cert(root_path), ssl_ctx)
        self.policies = {}
        self.keys = {}
        self.store_lock = threading.Lock()
        self._add_routes()

    # ------------------------------------------------------------------ routing

    def _add_routes(self):
        uid = f"(?P<id>{UUID_V4})"
        table = [
            ("POST", "/token", self.create_token, None),
            ("GET", "/version", self.version, None),
            ("POST", "/key-transfer-policies", self.create_policy, "key_transfer_policies:create"),
            ("GET", "/key-transfer-policies", self.list_policies, "key_transfer_policies:search"),
            ("GET", f"/key-transfer-policies/{uid}", self.get_policy,
             "key_transfer_policies:search"),
            ("DELETE", f"/key-transfer-policies/{uid}", self.delete_policy,
             "key_transfer_policies:delete"),
            ("POST", "/keys", self.create_key, "keys:create"),
            ("GET", "/keys", self.search_keys, "keys:search"),
            ("GET", f"/keys/{uid}", self.get_key, "keys:search"),
            ("DELETE", f"/keys/{uid}", self.delete_key, "keys:delete"),
            ("PUT", f"/keys/{uid}", self.update_key, "keys:update"),
            ("POST", f"/keys/{uid}/transfer", self.transfer, None),
        ]
        for method, path, fn, scope in table:
            self.add_route(method, PREFIX + path, self._wrap(fn, scope))

    def _wrap(self, fn, scope):
        """Bearer check (scope) in front of fn; KbsError/Panic become Go-style responses."""
        def handler(req):
            if scope and not self.auth.authorized(req, scope):
                return plain(401, "Unauthorized\n")
            try:
                return fn(req)
            except KbsError as e:
                return error_body(e)
            except Panic:
                return Response(500, b"", {"Content-Type": "text/plain; charset=utf-8"})
        return handler

    def dispatch(self, req):
        """gorilla/mux semantics: unknown path -> plain 404, known path + other method -> 405."""
        methods = {m for m, rx, _ in self.routes if rx.fullmatch(req.path)}
        if not methods:
            return plain(404, "404 page not found\n")
        if req.method not in methods:
            return Response(405, b"", {"Content-Type": "text/plain; charset=utf-8"})
        return super().dispatch(req)

    # ------------------------------------------------------------------ request helpers

    @staticmethod
    def _require(req, accept=JSON, content_type=JSON, body=True):
        """Header and body checks in the order of the Go decoders (Content-Type first)."""
        if content_type and req.headers.get("Content-Type") != content_type:
            raise KbsError(415, ERR_CONTENT_TYPE)
        if accept and req.headers.get("Accept") != accept:
            raise KbsError(415, ERR_ACCEPT)
        if body and not req.body:
            raise KbsError(400, ERR_EMPTY_BODY)

    @staticmethod
    def _decode(req, schema):
        try:
            return decode_body(req.body, schema)
        except DecodeError:
            raise KbsError(400, ERR_JSON_DECODE) from None

    def _policy(self, policy_id):
        with self.store_lock:
            return self.policies.get(policy_id)

    def _key(self, key_id):
        with self.store_lock:
            return self.keys.get(key_id)

    # ------------------------------------------------------------------ token and version

    def create_token(self, req):
        self._require(req, accept=JWT)
        creds = self._decode(req, TOKEN_REQUEST_SCHEMA)
        token = self.auth.issue(creds.get("username", ""), creds.get("password", ""))
        return Response(200, token, {"Content-Type": "text/plain; charset=utf-8",
                                     "Strict-Transport-Security":
                                         "max-age=63072000; includeSubDomains"})

    def version(self, req):
        return Response(200, json.dumps(VERSION, separators=(",", ":")).encode() + b"\n",
                        {"Content-Type": "application/json; charset=utf-8"})

    # ------------------------------------------------------------------ policies

    def create_policy(self, req):
        self._require(req)
        policy = self._decode(req, POLICY_SCHEMA)
        validate_policy(policy)
        stored = store_policy(policy)
        with self.store_lock:
            self.policies[stored["id"]] = stored
        return go_json(201, stored)

    def list_policies(self, req):
        self._require(req, content_type=None, body=False)
        with self.store_lock:
            return go_json(200, list(self.policies.values()))

    def get_policy(self, req):
        self._require(req, content_type=None, body=False)
        policy = self._policy(req.match["id"].lower())
        if policy is None:
            raise handled(404, "Key transfer policy with specified id does not exist")
        return go_json(200, policy)

    def delete_policy(self, req):
        policy_id = req.match["id"].lower()
        with self.store_lock:
            if any(k.get("transfer_policy_id") == policy_id for k in self.keys.values()):
                raise handled(400, "Key transfer policy is associated with keys")
            if self.policies.pop(policy_id, None) is None:
                raise handled(404, "Key transfer policy with specified id does not exist")
        return Response(204, b"", {"Content-Type": "text/plain; charset=utf-8"})

    # ------------------------------------------------------------------ keys

    def create_key(self, req):
        self._require(req)
        request = self._decode(req, KEY_SCHEMA)
        info = request.get("key_information")
        if info is None:
            raise Panic("nil key_information")
        if not validate_key_request(info):
            raise KbsError(400, ERR_INVALID_REQUEST)
        policy_id = request.get("transfer_policy_id", "")
        if policy_id and self._policy(policy_id) is None:
            raise handled(400, "Key transfer policy with specified id does not exist")
        record = self._new_key_record(info, policy_id)
        with self.store_lock:
            self.keys[record["id"]] = record
        return go_json(201, key_response(record))

    @staticmethod
    def _new_key_record(info, policy_id):
        """Generate or import the key of a create request (KbsError 500 as the key manager)."""
        algorithm = info["algorithm"]
        record = {"id": str(uuid.uuid4()), "algorithm": algorithm,
                  "key_length": info.get("key_length", 0), "transfer_policy_id": policy_id,
                  "created_at": _now_rfc3339()}
        if info.get("key_data") or info.get("kmip_key_id"):
            if not info.get("key_data"):
                raise handled(500, "Failed to register key")     # no KMIP backend here
            try:
                record["secret"] = import_secret(algorithm, info["key_data"])
            except (ValueError, binascii.Error, TypeError):
                raise handled(500, "Failed to register key") from None
            return record
        try:
            record["secret"] = generate_secret(algorithm, record["key_length"],
                                                  info.get("curve_type", ""))
        except (ValueError, KeyError):
            raise handled(500, "Failed to create key") from None
        if algorithm == "EC":
            record["key_length"] = 0
            record["curve_type"] = info["curve_type"]
        return record

    def search_keys(self, req):
        self._require(req, content_type=None, body=False)
        params = {"algorithm", "keyLength", "curveType", "transferPolicyId"}
        if not req.query or len(req.query) > 50 or set(req.query) - params:
            raise KbsError(400, ERR_QUERY)
        crit = {k: v[0].strip() for k, v in req.query.items() if v[0].strip()}
        try:
            wanted = self._key_filter(crit)
        except ValueError:
            raise KbsError(400, ERR_FILTER) from None
        with self.store_lock:
            found = [key_response(r) for r in self.keys.values()
                     if all(r.get(f) == v for f, v in wanted.items())]
        return go_json(200, found)

    @staticmethod
    def _key_filter(crit):
        """Query criteria -> {record field: value}; ValueError for invalid values."""
        wanted = {}
        if "algorithm" in crit:
            if crit["algorithm"] not in ("AES", "RSA", "EC", "aes", "rsa", "ec"):
                raise ValueError("algorithm")
            wanted["algorithm"] = crit["algorithm"]
        if "keyLength" in crit:
            length = int(crit["keyLength"])
            if length not in AES_LENGTHS | RSA_LENGTHS:
                raise ValueError("keyLength")
            wanted["key_length"] = length
        if "curveType" in crit:
            if crit["curveType"] not in CURVES:
                raise ValueError("curveType")
            wanted["curve_type"] = crit["curveType"]
        if "transferPolicyId" in crit:
            wanted["transfer_policy_id"] = str(uuid.UUID(crit["transferPolicyId"]))
        return wanted

    def get_key(self, req):
        self._require(req, content_type=None, body=False)
        record = self._key(req.match["id"].lower())
        if record is None:
            raise handled(404, "Key with specified id does not exist")
        return go_json(200, key_response(record))

    def delete_key(self, req):
        with self.store_lock:
            if self.keys.pop(req.match["id"].lower(), None) is None:
                raise handled(404, "Key with specified id does not exist")
        return Response(204, b"", {"Content-Type": "text/plain; charset=utf-8"})

    def update_key(self, req):
        self._require(req)
        policy_id = self._decode(req, KEY_UPDATE_SCHEMA).get("transfer_policy_id", "")
        if not policy_id:
            raise handled(400, "Key transfer policy must be provided")
        if self._policy(policy_id) is None:
            raise handled(400, "Failed to retrieve key transfer policy")
        with self.store_lock:
            record = self.keys.get(req.match["id"].lower())
            if record is None:
                raise handled(404, "Failed to update key with the given key transfer policy "
                                   "ID. Invalid keyID.")
            record["transfer_policy_id"] = policy_id
            return go_json(201, key_response(record))

    # ------------------------------------------------------------------ attested transfer

    def transfer(self, req):
        """POST /keys/{id}/transfer: decode like decodeTransferKeyHTTPRequest, then dispatch."""
        if req.headers.get("Accept") != JSON:
            raise KbsError(415, ERR_ACCEPT)
        att_type = req.headers.get("Attestation-Type") or ""
        req.attestation_type = att_type or None
        body = {}
        if req.body:
            if req.headers.get("Content-Type") != JSON:
                raise KbsError(415, ERR_CONTENT_TYPE)
            body = self._decode(req, TRANSFER_SCHEMA)
            if att_type and att_type not in ("SGX", "TDX"):
                raise KbsError(400, ERR_ATTESTATION_TYPE)
            if not att_type and not body.get("attestation_token"):
                raise KbsError(400, ERR_INVALID_REQUEST)
        fault = req.fault if req.fault and req.fault.get("mode") in KBS_FAULTS else None
        key_id = req.match["id"].lower()
        record = self._key(key_id)
        if record is None or (fault and fault["mode"] == "not_found"):
            raise handled(404, "Key with specified id does not exist")
        policy = self._policy(record.get("transfer_policy_id", ""))
        if policy is None:
            raise handled(500, "Failed to retrieve key transfer policy for the key")
        if not att_type and not body.get("attestation_token"):
            return self._nonce(key_id, policy)
        token = (self._background_token(key_id, policy, att_type, body) if att_type
                 else body["attestation_token"])
        return self._release(record, policy, token, fault)

    def _nonce(self, key_id, policy):
        try:
            nonce = self.ita.get_nonce(key_id)
        except ItaError:
            raise handled(502, "Error retrieving nonce from Trust Authority service") from None
        return go_json(200, {k: b64(v) for k, v in nonce.items()},
                       {"Attestation-Type": policy["attestation_type"]})

    def _background_token(self, key_id, policy, att_type, body):
        if att_type != policy["attestation_type"]:
            raise handled(401, "attestation-type in request header does not match with "
                               "attestation-type in key-transfer policy")
        policy_ids = policy[att_type.lower()].get("policy_ids", [])
        try:
            return self.ita.get_token(key_id, body.get("quote"), body.get("nonce"),
                                      body.get("user_data"), policy_ids, body.get("event_log"))
        except ItaError:
            raise handled(502, "Error retrieving token from Trust Authority service") from None

    def _release(self, record, policy, token, fault):
        """Verify the token, evaluate the policy, wrap the key to attester_held_data."""
        try:
            claims = parse_claims(self.verifier.verify(token))
        except (TokenError, ValueError):
            raise handled(401, "Failed to authenticate attestation-token") from None
        att = policy["attestation_type"]
        if claims["attester_type"] != att:
            raise handled(401, "attestation-token is not valid for attestation-type in "
                               "key-transfer policy")
        if not evaluate_policy(policy, claims) or (fault and fault["mode"] == "deny"):
            raise handled(401, "Token claims validation against key-transfer-policy failed", 0)
        try:
            e, n = public_key_from_held_data(claims["attester_held_data"], att)
        except (ValueError, binascii.Error):
            raise handled(500, "Error in getting public key", 0) from None
        secret = (fresh_secret_like(record) if fault and fault["mode"] == "wrong_key"
                  else record["secret"])
        try:
            wrapped_key, wrapped_swk = wrap_secret(secret, e, n)
        except ValueError:
            raise handled(500, "Failed to wrap key", 0) from None
        if fault:
            wrapped_key, wrapped_swk = apply_wrap_fault(fault, wrapped_key, wrapped_swk)
        return go_json(200, {"wrapped_key": b64(wrapped_key), "wrapped_swk": b64(wrapped_swk)},
                       {"Attestation-Type": ""})


# =========================================================================== command line

def _add_arguments(parser):
    parser.add_argument("--ita-url", required=True, help="ITA API URL (nonce, attest)")
    parser.add_argument("--ita-base-url", required=True, help="ITA portal URL ({base}/certs)")
    parser.add_argument("--ita-root", help="pinned ITA root CA PEM (default state/ita-root-ca.pem)")
    parser.add_argument("--token-validity-minutes", type=int, default=5,
                        help="admin bearer token lifetime (1..30)")
    parser.add_argument("--ita-retry-max", type=int, default=2)
    parser.add_argument("--ita-retry-wait", type=float, default=2.0)


def _factory(args):
    return KbsService(args.state, args.ita_url, args.ita_base_url, args.ita_root,
                      args.token_validity_minutes, args.ita_retry_max, args.ita_retry_wait)


if __name__ == "__main__":
    raise SystemExit(main(_factory, _add_arguments))
