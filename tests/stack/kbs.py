# SPDX-License-Identifier: Apache-2.0
"""Intel-KBS-compatible Key Broker Service of the local stack (intel/trustauthority-kbs v1.3.0).

Run as::

    /usr/bin/python3 -m tests.stack.kbs --state DIR --ita-url URL --ita-base-url URL \
        [--ita-root PEM] [--token-validity-minutes N] [--ita-retry-max N] [--ita-retry-wait S]
        [--key-manager vault|kmip] [--sec1-form full|no-params|no-public|bare] [--name kbs]
        [--generation v1.3.0|2026] [--transfer-cost-ms N]

Spec: docs/protocols/intel-kbs.md; behaviour cross-checked against the Go source
(transport/http/*.go, service/key_transfer.go, service/validation.go,
keymanager/vault_key_manager.go).  This module holds the routes, handlers, admin bearer
tokens and ``main``; kbs_model.py the schemas, Go-style errors, policies, keys and wrapping;
kbs_token.py the ITA client and the token verifier.

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
* Wrapping is intel-kbs.md §5 byte for byte: SWK = HKDF-SHA256(32 random bytes, random 32-byte salt,
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
* The key manager (``--key-manager``, intel-kbs.md §5) decides the bytes that are wrapped:
  ``vault`` (the default) releases PKCS#8 DER, as Go's ``x509.MarshalPKCS8PrivateKey`` stored it;
  ``kmip`` releases what a KMIP server's Get returns as KeyMaterial: RSA as PKCS#1
  RSAPrivateKey DER, EC as SEC1 ECPrivateKey DER, with the named curve ``[0]`` and the
  ``publicKey [1]`` as ``--sec1-form`` says (``full`` = both, as RFC 5915 wants; ``no-params``,
  ``no-public``, ``bare``).  Keys are kept as PKCS#8 DER (re-encoded on import) and converted
  when released.  Deliberate differences: EC keys are released by both managers (the real Vault
  manager reads the blanked on-disk copy and wraps an empty plaintext; the real KMIP manager
  supports AES and RSA only and answers 500 for EC), and in ``kmip`` mode a key is registered
  with ``key_data`` as in ``vault`` mode (the stand-in is its own KMIP server; the real KMIP
  manager registers by ``kmip_key_id`` only).
* Algorithm names are validated case-insensitively but the key manager compares them
  case-sensitively, as in the real service; a lower-case algorithm makes create/register fail with
  500 here instead of producing the real service's odd keys.
* Keys, policies and the admin user live in memory (no users API, no brute-force defender, no
  transfer without attestation ``POST /keys/{id}``).  The admin is ``{state}/kbs-admin.json``; the
  bearer-token signing key (RSA-3072, PS384, kid ``secret-id``) is kept in
  ``{state}/kbs-jwt-signing.key`` so tokens survive a restart.  Bearer claims: sub (user id), info
  {name, id}, scp (all admin permissions), iat, nbf, exp.

The 2026 generation (``--generation 2026``; intel-kbs.md §8, ``service/key_transfer.go``
"© 2024-2026") differs as that code does: ``GET /version`` reports ``VERSION_2026``; no nonce
issuance (a transfer without Attestation-Type and token -> 400 ``400: attestation_token or
Attestation-Type header is required``, after the key and policy look-ups); background mode reads
``{quote, runtime_data, event_log?, nvgpu?}`` (``user_data`` is an unknown field there) and calls
ITA's ``POST /appraisal/v2/attest`` with ``{"policy_ids"?, "tdx": {quote, runtime_data,
event_log?}}`` and no verifier nonce (``getTokenV2``), so ITA expects REPORTDATA =
SHA-512(runtime_data), and reads the v2 token it gets back; passport mode
also takes v2 tokens (``ver`` 2.x: the ``tdx``/``sgx`` sub-object's claims lifted to the top
level); the held data may also be a PEM SubjectPublicKeyInfo (RSA > 2048 bits).  Not modelled:
``nvgpu`` evidence (answered 502, as an ITA refusal) and the 2026 policy model (list of attester
types, NVGPU policies): policies keep the v1.3.0 form.

KBS-specific faults (``request.fault`` on the transfer route, see tests/stack/server.py), applied to
the request that releases a key (a nonce request consumes a fault without effect, so use
``"count": null`` or 2 in background mode); ``not_found`` applies to every transfer request:

    not_found     404 as for an unknown key
    deny          401 policy denial
    wrong_key     wrap a freshly generated key of the same type instead of the requested one
    wrong_scalar  wrap the requested key's public half with another private half (EC: the
                  publicKey field of another key's PKCS#8 or SEC1, dropped with the SEC1 forms
                  without [1]; RSA: another key with this n)
    corrupt_wrap  flip a byte of the wrapped_key ciphertext
    corrupt_swk   flip a byte of wrapped_swk
    bad_header    wrapped_key header lies: iv_len 13 (param "variant": "iv_len", default) or
                  ct_len one too large ("variant": "ct_len")
    as_v1_3       a 2026 KBS answers this transfer request as v1.3.0 does (a generation flip
                  behind the same URL, e.g. a rollback); applies to every transfer request, so
                  use "count": null for a lasting flip

The request log (server.py) records method, path, status, request-id, has_api_key, the
Attestation-Type header and the fault mode; never tokens, keys or passwords. A background-mode
transfer with evidence also records ``user_data_sha256``, the SHA-256 of its user_data (the
public wrapping key): tests tell wrapping keys apart by it.  Every transfer request records
``inflight``, the number of transfer requests being handled when it started (itself included):
server.py serves each connection on a thread of its own, so overlapping transfers show as >= 2.

Fixed-cost mode (``--transfer-cost-ms N``, or at runtime ``PUT /_stack/transfer-cost {"ms": N}``,
``{"ms": null}`` = off; GET reads it; off by default), for benchmarks that must measure the client
rather than this Python process: a released key's service time is a stated constant.  The
transfer (from the handler's start, after the added latency) is padded to N ms with
``time.sleep``, which does not hold the GIL, so concurrent transfers overlap as on a multi-core
KBS; its log record has ``cost_ms`` (N), ``work_ms`` (the time before the padding) and
``over_cost`` (the work alone took longer than N).  To keep that work small the service caches
as a real KBS with caching would: the verification result of a passport token, keyed by the exact
token string, until its ``exp`` (at most VERIFIED_TTL; ``token_cached`` in the log), and each
downloaded JWKS and CRL for ITA_CACHE_TTL (the chain, CRL and signature checks still run for every
new token).  Only verified tokens are cached: any other token is verified in full and refused as
before.  Failed transfers and nonce requests are not padded.  Switching the mode clears both
caches.
"""

import binascii
import copy
import hashlib
import hmac
import json
import os
import threading
import time
import uuid

from cryptography.exceptions import InvalidSignature

from . import pki
from .kbs_model import (AES_LENGTHS, CURVES, KEY_MANAGERS, SEC1_FORMS, ERR_ACCEPT, ERR_ATTESTATION_TYPE, ERR_CONTENT_TYPE,
                        ERR_EMPTY_BODY, ERR_FILTER, ERR_INVALID_REQUEST, ERR_JSON_DECODE,
                        ERR_NO_TOKEN_2026, ERR_QUERY, GENERATIONS, JSON, KEY_SCHEMA, KEY_UPDATE_SCHEMA, POLICY_SCHEMA, PREFIX,
                        RSA_LENGTHS, TOKEN_REQUEST_SCHEMA, TRANSFER_SCHEMA, TRANSFER_SCHEMA_2026,
                        DecodeError, KbsError, Panic, apply_wrap_fault, b64, decode_body,
                        evaluate_policy, flatten_v2_claims,
                        fresh_secret_like, generate_secret, handled, import_secret, key_material,
                        key_response, other_private_half,
                        now_rfc3339, parse_claims, public_key_from_held_data, store_policy,
                        validate_key_request, validate_policy, wrap_secret)
from .kbs_token import (ItaClient, ItaError, TokenError, TokenVerifier, check_time_claims,
                        jwt_sign_ps384, jwt_split, jwt_verify_signature)
from .server import HttpError, Response, StackService, json_response, main

UUID_V4 = r"[a-fA-F0-9]{8}-[a-fA-F0-9]{4}-4[a-fA-F0-9]{3}-[89abAB][a-fA-F0-9]{3}-[a-fA-F0-9]{12}"
JWT = "application/jwt"
VERSION = {"name": "Key Broker Service", "version": "v1.3.0", "gitHash": "keygate-stack",
           "buildDate": "2025-04-23"}
# The real string is the Makefile's VERSION at build time; no 2026 Makefile was read, so this
# number is assumed (keygate treats anything after v1.3 as the 2026 generation).
VERSION_2026 = {**VERSION, "version": "v1.4.0", "buildDate": "2026-06-01"}
ADMIN_PERMISSIONS = ["keys:search", "keys:create", "keys:delete", "keys:transfer", "keys:update",
                     "key_transfer_policies:create", "key_transfer_policies:search",
                     "key_transfer_policies:delete", "users:delete", "users:search",
                     "users:create", "users:update"]
JWT_SIGNING_KEY_FILE = "kbs-jwt-signing.key"
VERIFIED_TTL = 300         # fixed-cost mode: longest reuse of a token's verification (s)
VERIFIED_MAX = 1024        # ... and of cached tokens (the cache is emptied when full)
ITA_CACHE_TTL = 300        # ... and of a downloaded JWKS or CRL
KBS_FAULTS = {"not_found", "deny", "wrong_key", "wrong_scalar", "corrupt_wrap", "corrupt_swk",
              "bad_header", "as_v1_3"}


# =========================================================================== responses

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


# =========================================================================== the service

class KbsService(StackService):
    """Routes and state of the KBS; see the module docstring."""

    def __init__(self, state_dir, ita_url, ita_base_url, ita_root=None, token_validity=5,
                 ita_retry_max=2, ita_retry_wait=2.0, key_manager="vault", sec1_form="full",
                 name="kbs", generation="v1.3.0", transfer_cost_ms=None):
        super().__init__(name, state_dir)
        self.gen2026 = generation == "2026"
        self.key_manager, self.sec1_form = key_manager, sec1_form
        ssl_ctx = pki.tls_client_context(self.state_dir)
        root_path = ita_root or os.path.join(self.state_dir, "ita-root-ca.pem")
        self.auth = AdminAuth(self.state_dir, token_validity)
        self.ita = ItaClient(ita_url, pki.api_key(self.state_dir), ssl_ctx, ita_retry_max,
                             ita_retry_wait)
        self.verifier = TokenVerifier(ita_base_url, pki.load_cert(root_path), ssl_ctx)
        self.policies = {}
        self.keys = {}
        self.store_lock = threading.Lock()
        self._cost_lock = threading.Lock()     # inflight, transfer_cost_ms, _verified
        self._inflight = 0
        self._verified = {}                    # token -> (claims, deadline): fixed-cost mode
        self.transfer_cost_ms = None
        self.set_transfer_cost(transfer_cost_ms)
        self._add_routes()

    # ------------------------------------------------------------------ fixed-cost mode

    def set_transfer_cost(self, ms):
        """Fixed service time per released key in ms (None = off); clears the caches."""
        if ms is not None and not 0 <= float(ms) <= 10000:
            raise ValueError("transfer cost ms must be in [0, 10000] or null")
        with self._cost_lock:
            self.transfer_cost_ms = None if ms is None else float(ms)
            self._verified.clear()
        self.verifier.set_cache(0 if ms is None else ITA_CACHE_TTL)

    def service_control(self, req):
        if req.path != "/_stack/transfer-cost" or req.method not in ("GET", "PUT"):
            return None
        if req.method == "PUT":
            try:
                self.set_transfer_cost(req.json().get("ms"))
            except (HttpError, ValueError, TypeError, AttributeError) as e:
                return json_response(400, {"error": f"transfer cost needs {{\"ms\": number or "
                                                    f"null}}: {e}"})
        return json_response(200, {"ms": self.transfer_cost_ms})

    def _verify_token(self, token, cost):
        """(claims, from the cache) for token; in fixed-cost mode (cost not None) a token
        verified before is taken from the cache while it is valid. Only verified tokens are
        cached: any other is verified in full (TokenError when it fails)."""
        if cost is None:
            return self.verifier.verify(token), False
        now = time.time()
        with self._cost_lock:
            hit = self._verified.get(token)
        if hit is not None and now < hit[1]:
            return copy.deepcopy(hit[0]), True
        claims = self.verifier.verify(token)
        exp = claims.get("exp")
        deadline = now + VERIFIED_TTL
        if isinstance(exp, (int, float)) and not isinstance(exp, bool):
            deadline = min(deadline, exp)
        with self._cost_lock:
            if self.transfer_cost_ms is not None:
                if len(self._verified) >= VERIFIED_MAX:
                    self._verified.clear()
                self._verified[token] = (copy.deepcopy(claims), deadline)
        return claims, False

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
        version = VERSION_2026 if self.gen2026 else VERSION
        return Response(200, json.dumps(version, separators=(",", ":")).encode() + b"\n",
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
                  "created_at": now_rfc3339()}
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
        """POST /keys/{id}/transfer, counted in ``inflight`` and, in fixed-cost mode, a released
        key padded to the stated service time."""
        t0 = time.monotonic()
        with self._cost_lock:
            self._inflight += 1
            req.log_extra["inflight"] = self._inflight
            cost = self.transfer_cost_ms
        try:
            req.kbs_cost = cost
            resp = self._transfer_request(req)
            if cost is not None and getattr(req, "kbs_released", False):
                work = (time.monotonic() - t0) * 1000
                req.log_extra.update(cost_ms=cost, work_ms=round(work, 2), over_cost=work > cost)
                if work < cost:
                    time.sleep((cost - work) / 1000)
            return resp
        finally:
            with self._cost_lock:
                self._inflight -= 1

    def _transfer_request(self, req):
        """Decode like decodeTransferKeyHTTPRequest, then dispatch."""
        if req.headers.get("Accept") != JSON:
            raise KbsError(415, ERR_ACCEPT)
        att_type = req.headers.get("Attestation-Type") or ""
        req.attestation_type = att_type or None
        if req.body and req.headers.get("Content-Type") != JSON:
            raise KbsError(415, ERR_CONTENT_TYPE)
        fault = req.fault if req.fault and req.fault.get("mode") in KBS_FAULTS else None
        if fault and fault["mode"] == "as_v1_3":
            return self._transfer(req, att_type, False, None)
        return self._transfer(req, att_type, self.gen2026, fault)

    def _transfer(self, req, att_type, gen2026, fault):
        """The transfer as the given generation serves it."""
        body = {}
        if req.body:
            body = self._decode(req, TRANSFER_SCHEMA_2026 if gen2026 else TRANSFER_SCHEMA)
            if att_type and att_type not in ("SGX", "TDX"):
                raise KbsError(400, ERR_ATTESTATION_TYPE)
            if not att_type and not body.get("attestation_token") and not gen2026:
                raise KbsError(400, ERR_INVALID_REQUEST)
            user_data = body.get("runtime_data" if gen2026 else "user_data")
            if att_type and user_data is not None:
                req.log_extra["user_data_sha256"] = hashlib.sha256(user_data).hexdigest()
        key_id = req.match["id"].lower()
        record = self._key(key_id)
        if record is None or (fault and fault["mode"] == "not_found"):
            raise handled(404, "Key with specified id does not exist")
        policy = self._policy(record.get("transfer_policy_id", ""))
        if policy is None:
            raise handled(500, "Failed to retrieve key transfer policy for the key")
        if not att_type and not body.get("attestation_token"):
            if gen2026:    # nonce issuance disabled
                raise handled(400, ERR_NO_TOKEN_2026)
            return self._nonce(key_id, policy)
        token = (self._background_token(key_id, policy, att_type, body, gen2026) if att_type
                 else body["attestation_token"])
        resp = self._release(record, policy, token, fault, gen2026, req)
        req.kbs_released = True
        return resp

    def _nonce(self, key_id, policy):
        try:
            nonce = self.ita.get_nonce(key_id)
        except ItaError:
            raise handled(502, "Error retrieving nonce from Trust Authority service") from None
        return go_json(200, {k: b64(v) for k, v in nonce.items()},
                       {"Attestation-Type": policy["attestation_type"]})

    def _background_token(self, key_id, policy, att_type, body, gen2026):
        if att_type != policy["attestation_type"]:
            raise handled(401, "attestation-type in request header does not match with "
                               "attestation-type in key-transfer policy")
        policy_ids = policy[att_type.lower()].get("policy_ids", [])
        if gen2026 and body.get("nvgpu") is not None:
            raise handled(502, "Error retrieving token from Trust Authority service")
        try:
            if gen2026:     # ITA v2, no verifier nonce: REPORTDATA = SHA-512(runtime_data)
                return self.ita.get_token(key_id, body.get("quote"), None, body.get("runtime_data"),
                                          policy_ids, body.get("event_log"), layout="v2")
            return self.ita.get_token(key_id, body.get("quote"), body.get("nonce"),
                                      body.get("user_data"), policy_ids, body.get("event_log"))
        except ItaError:
            raise handled(502, "Error retrieving token from Trust Authority service") from None

    def _release(self, record, policy, token, fault, gen2026, req):
        """Verify the token, evaluate the policy, wrap the key to attester_held_data."""
        cost = getattr(req, "kbs_cost", None)
        try:
            claims, cached = self._verify_token(token, cost)
            if cost is not None:
                req.log_extra["token_cached"] = cached
            claims = parse_claims(flatten_v2_claims(claims) if gen2026 else claims)
        except (TokenError, ValueError):
            raise handled(401, "Failed to authenticate attestation-token") from None
        att = policy["attestation_type"]
        if claims["attester_type"] != att:
            raise handled(401, "attestation-token is not valid for attestation-type in "
                               "key-transfer policy")
        if not evaluate_policy(policy, claims) or (fault and fault["mode"] == "deny"):
            raise handled(401, "Token claims validation against key-transfer-policy failed", 0)
        try:
            e, n = public_key_from_held_data(claims["attester_held_data"], att, gen2026)
        except (ValueError, binascii.Error):
            raise handled(500, "Error in getting public key", 0) from None
        mode = fault["mode"] if fault else None
        secret = (fresh_secret_like(record) if mode == "wrong_key"
                  else other_private_half(record) if mode == "wrong_scalar" else record["secret"])
        secret = key_material(secret, record["algorithm"], self.key_manager, self.sec1_form)
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
    parser.add_argument("--key-manager", choices=KEY_MANAGERS, default="vault",
                        help="the form of released keys: vault = PKCS#8, kmip = PKCS#1 / SEC1")
    parser.add_argument("--sec1-form", choices=sorted(SEC1_FORMS), default="full",
                        help="kmip EC keys: SEC1 with [0] and [1] (full) or without either")
    parser.add_argument("--name", default="kbs", help="service name (announce file, request log)")
    parser.add_argument("--generation", choices=GENERATIONS, default="v1.3.0",
                        help="the service generation modelled (intel-kbs.md §8)")
    parser.add_argument("--transfer-cost-ms", type=float, default=None,
                        help="fixed-cost mode: a released key takes this many ms (token "
                             "verification cached per token); default off")


def _factory(args):
    return KbsService(args.state, args.ita_url, args.ita_base_url, args.ita_root,
                      args.token_validity_minutes, args.ita_retry_max, args.ita_retry_wait,
                      args.key_manager, args.sec1_form, args.name, args.generation,
                      args.transfer_cost_ms)


if __name__ == "__main__":
    raise SystemExit(main(_factory, _add_arguments))
