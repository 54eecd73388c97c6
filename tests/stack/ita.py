# SPDX-License-Identifier: Apache-2.0
"""Local Intel Trust Authority (ITA) compatible service.

    /usr/bin/python3 -m tests.stack.ita --state DIR [--trusted-root PEM]... [--policies JSON]
        [--uptodate-tcb-svn HEX] [--token-lifetime S] [--nonce-lifetime S] [--portal-url URL]
        [--port N] [--fault JSON]... [--http]

One process plays both ITA hosts (API and portal).  Wire format per
docs/protocols/ita-api.md (§2 endpoints, §3 nonce, §4 bodies, §5 responses, §6 REPORTDATA,
§7 claims) and the real tokens in tests/vectors.

Endpoints
    GET  /appraisal/v1/nonce, /appraisal/v2/nonce     x-api-key    -> {"val","iat","signature"}
    POST /appraisal/v1/attest   flat body             x-api-key    -> {"token"} v1 (flat claims)
    POST /appraisal/v2/attest   composite {"tdx":{}}  x-api-key    -> {"token"} v2 (nested "tdx")
    POST /appraisal/v1/attest/azure/tdxvm  flat body  x-api-key    -> {"token"} v1, Azure TDX
    POST /appraisal/v2/attest/azure  composite {"tdx":{}}  x-api-key -> {"token"} v2, Azure TDX
    GET  /certs                                       public       -> JWKS
    GET  /crl/ats-ca-crl.der, /crl/root-ca-crl.der    public       -> DER CRLs
    GET  /crl/foreign/ats-ca-crl.der, /crl/foreign/root-ca-crl.der  (CRLs of the foreign chain)

Every response carries a ``trace-id`` header and echoes ``request-id`` when one was sent.
The request log (server.py) has ``nonce_sha256`` = hex SHA-256 of the nonce val bytes on each
nonce request and on each attest that consumed a nonce (so tests can prove nonces are unique).
Errors are JSON ``{"error": "..."}`` (ITA's real error schema is undocumented).

Choices where the specs are silent (most plausible real behaviour):
* Status codes: missing/wrong x-api-key 401 (API routes only; /certs and /crl/* never need
  it, the C client sends ``x-api-key: (null)`` there); Content-Type not application/json 415;
  body > 500,000 bytes 413; anything malformed, a quote that fails verification, a bad,
  stale or replayed nonce, a REPORTDATA mismatch, unknown/non-UUID policy ids, an unknown
  token_signing_alg 400; ``policy_must_match`` with an unmatched policy 401.
* Base64 inputs (quote, runtime_data, user_data, event_log, nonce fields) are accepted in the
  standard and the URL-safe alphabet, padded or not (the C client sends base64url, Go std).
* Nonce: ``val`` = b64 of 88 ASCII bytes (b64 of 64 random bytes), ``iat`` = b64 of Go
  ``time.String()`` text with whole seconds ("2026-11-27 19:48:09 +0000 UTC"), ``signature``
  = b64 of PS384 (salt 48) by the token-signing leaf over val_bytes || iat_bytes (the same key
  the JWKS publishes).  A nonce is valid for --nonce-lifetime seconds (default 300, like the
  token lifetime) and can be used for ONE token: it is consumed only when a token is issued,
  so a request that fails for another reason (or an injected 503) can be retried with it.
* REPORTDATA must equal SHA-512(val_bytes || iat_bytes || runtime_data), or
  SHA-512(runtime_data) without a nonce (§6.1).  runtime_data ≤ 1 MiB.
* ``user_data`` and ``event_log`` are checked to be base64 and otherwise ignored (no RTMR
  replay).  The v2 route requires the composite body; a flat body there is 400 (the real
  service's behaviour for Go's legacy flat-on-v2 path is unconfirmed, so a client relying on
  it would not be proven by this stack).
* Azure routes (§4.3, §6.2, §7.2, and azure-tdx.md): runtime_data is the Azure runtime JSON and
  user_data the caller's data.  Checks: the quote verifies; REPORTDATA[0:32] ==
  SHA-256(runtime_data); the runtime JSON is an object whose "user-data" equals, compared
  case-insensitively, hex(SHA-512(val_bytes || iat_bytes || user_data)), or 128 zeros with
  neither nonce nor user data (the Azure convention).  Claims: ``attester_runtime_data`` = the
  runtime JSON object (always); the user data as ``attester_user_data`` (if a JSON object) or
  ``attester_held_data`` (base64 of the bytes); v2 ``appraisal.method`` is "azure".
* TCB status: TEE_TCB_SVN >= --uptodate-tcb-svn byte by byte -> "UpToDate" (tcb date
  2024-03-13, no ``attester_advisory_ids`` claim, as in the real UpToDate pilot token), else
  "OutOfDate" (2023-02-15, ["INTEL-SA-00837"], as in the production token).  Default
  reference: all zero (every quote UpToDate).
* Policies (--policies FILE): {uuid: {"mrtd": [hex...], "mrseam"/"rtmr0".."rtmr3"/...: [hex...],
  "allow_debug": bool (default false), "min_tee_tcb_svn": hex}}.  When policy_ids are given the
  token has ``policy_ids_matched``/``policy_ids_unmatched`` (null when empty, as real tokens)
  with {"id","version":"v1","hash"}; hash = b64(b64(SHA-384(policy JSON))) like the real
  double-encoded 64-byte value; and ``policy_defined_claims`` null.  Without policy_ids these
  claims are absent (as in the production token).
* Token: header {"alg","jku":"{portal}/certs","kid","typ":"JWT"} (compact JSON, this key
  order), kid = hex SHA-384 of the leaf DER, lifetime --token-lifetime (300 s).  v1 claims: the
  production token's set (same order); ``verifier_nonce`` only when a nonce was sent;
  ``attester_runtime_data`` (object) instead of ``attester_held_data`` when runtime_data is a
  JSON object; neither when runtime_data is empty.  v2: as the v2 sample (tdx-nested,
  ``tdx_is_migratable``), plus ``attester_type``, ``tdx_collateral`` and ``verifier_nonce``
  inside "tdx", and top-level ``appraisal`` {"method":"default","ver":2}.
* --portal-url (default: this service's own URL) gives jku, eat_profile
  ("{portal}/eat_profile.html", the newer form) and the v2 ``iss``.  v1 ``iss`` is
  "Intel Trust Authority".
* Quote trust: --trusted-root (repeatable) pins the PCK roots (default: sim-sgx-root-ca.pem of
  the state dir); the embedded root is never trusted by itself.

Service-specific faults (``mode``, on the attest routes; see server.py for the generic ones).
Each yields a token a correct verifier rejects and a naive one may accept:
    hs256           HS256, HMAC key = the leaf public key PEM (alg confusion), real kid
    alg_none        alg "none", empty signature
    expired         exp in the past (iat/nbf before it)
    not_yet_valid   nbf/iat one hour in the future
    foreign_root    signed by the "foreign" chain (own root, same CN pattern); its key is
                    listed in /certs with the foreign x5c (and its CRLs served under
                    /crl/foreign/) from the moment the fault is set or used, until restart
    revoked_leaf    signed by ita-revoked-leaf (same CA as the real leaf), whose serial the ATS
                    CRL always lists; its key is in /certs under the same rule as foreign_root
    tampered        payload changed (tdx_mrtd) after signing
    wrong_nonce     verifier_nonce is a different (validly signed) nonce
    wrong_held_data attester_held_data (or attester_runtime_data) differs from runtime_data
    debug_td        claims say the TD is debuggable (tdx_is_debuggable, attributes, dbgstat)
A mode for a shape a real token may have (issue 19, item 5: whether ITA v2 tokens echo the nonce
is unconfirmed), accepted by a correct verifier only where it can check the binding:
    no_nonce_echo   no verifier_nonce anywhere in the token (v1 and v2); tdx_report_data still
                    binds the nonce that was sent
"""

import base64
import binascii
import datetime
import hashlib
import hmac
import json
import os
import re
import threading
import time
import uuid

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

from . import pki
from .quote import QuoteError, verify_quote
from .server import BadRequest, HttpError, Response, StackService, json_response, main

API_ISSUER_V1 = "Intel Trust Authority"
MAX_BODY = 500_000
MAX_RUNTIME_DATA = 1 << 20
UUID_RE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-"
                     r"[0-9a-fA-F]{12}")
SIGNING_ALGS = ("PS384", "RS256")
TCB_LEVELS = {"UpToDate": ("2024-03-13T00:00:00Z", []),
              "OutOfDate": ("2023-02-15T00:00:00Z", ["INTEL-SA-00837"])}
POLICY_MEASUREMENTS = ("mrtd", "mrseam", "mrsignerseam", "mrconfigid", "mrowner",
                       "mrownerconfig", "rtmr0", "rtmr1", "rtmr2", "rtmr3", "xfam",
                       "td_attributes", "seam_attributes")
PS384_PADDING = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)


# --------------------------------------------------------------------------- encodings

def b64(data):
    return base64.b64encode(data).decode()


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64decode_any(value, name):
    """Decode standard or URL-safe base64, padded or not; BadRequest naming the field."""
    if not isinstance(value, str):
        raise BadRequest(f"{name} must be a base64 string")
    s = value.strip().rstrip("=").replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(s + "=" * (-len(s) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(f"{name} is not valid base64") from None


def go_time_string(t):
    """Go time.String() of a UTC time, whole seconds: "2026-11-27 19:48:09 +0000 UTC"."""
    return t.strftime("%Y-%m-%d %H:%M:%S +0000 UTC")


def parse_go_time(text):
    m = re.fullmatch(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)(?:\.\d+)? \+0000 UTC", text)
    if not m:
        raise BadRequest("verifier_nonce iat is not a timestamp")
    return datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S").replace(
        tzinfo=datetime.timezone.utc)


# --------------------------------------------------------------------------- JWS

def sign_jws(header, claims, key, alg):
    """Compact JWS. alg PS384 / RS256 (RSA key), HS256 (bytes key) or none."""
    signing_input = (b64url(json.dumps(header, separators=(",", ":")).encode()) + "."
                     + b64url(json.dumps(claims, separators=(",", ":")).encode()))
    data = signing_input.encode()
    if alg == "PS384":
        sig = key.sign(data, PS384_PADDING, hashes.SHA384())
    elif alg == "RS256":
        sig = key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    elif alg == "HS256":
        sig = hmac.new(key, data, hashlib.sha256).digest()
    elif alg == "none":
        sig = b""
    else:
        raise ValueError(alg)
    return signing_input + "." + b64url(sig)


def jwk_entries(chain, alg_list=SIGNING_ALGS, leaf=None, leaf_key=None):
    """JWKS entries for a chain's leaf (or another leaf of the same CA), one per alg."""
    leaf = leaf or chain.leaf
    pub = (leaf_key or chain.leaf_key).public_key().public_numbers()
    x5c = [b64(c.public_bytes(serialization.Encoding.DER)) for c in (leaf, chain.ca, chain.root)]
    return [{"alg": alg, "e": b64url(pub.e.to_bytes((pub.e.bit_length() + 7) // 8, "big")),
             "kid": pki.kid(leaf), "kty": "RSA",
             "n": b64url(pub.n.to_bytes((pub.n.bit_length() + 7) // 8, "big")),
             "x5c": x5c} for alg in alg_list]


# --------------------------------------------------------------------------- the service

class ItaService(StackService):
    max_body = MAX_BODY

    def __init__(self, state_dir, trusted_roots=None, policies=None, uptodate_tcb_svn=None,
                 token_lifetime=300, nonce_lifetime=300, portal_url=None):
        super().__init__("ita", state_dir)
        roots = trusted_roots or [os.path.join(self.state_dir, pki.SIM_ROOT + ".pem")]
        self.trusted_roots = [c for path in roots for c in pki.load_certs(path)]
        self.policies = policies or {}
        self.uptodate_tcb_svn = uptodate_tcb_svn or bytes(16)
        self.token_lifetime = token_lifetime
        self.nonce_lifetime = nonce_lifetime
        self.portal_url = portal_url
        self.api_key = pki.api_key(self.state_dir)
        self.instance_ids = [str(uuid.uuid5(uuid.NAMESPACE_URL, f"keygate-ita-verifier-{i}"))
                             for i in range(3)]
        self.used_nonces = {}               # val bytes -> expiry (monotonic)
        self.extra_keys = set()             # "foreign_root"/"revoked_leaf" once used or set
        self.chain = self.foreign = None
        self.crls = {}
        self._nonce_lock = threading.Lock()
        self._register_routes()

    def _register_routes(self):
        self.add_route("GET", r"/appraisal/v[12]/nonce", self.nonce)
        self.add_route("POST", r"/appraisal/v1/attest", self.attest_v1)
        self.add_route("POST", r"/appraisal/v2/attest", self.attest_v2)
        self.add_route("POST", r"/appraisal/v1/attest/azure/tdxvm", self.attest_azure_v1)
        self.add_route("POST", r"/appraisal/v2/attest/azure", self.attest_azure_v2)
        self.add_route("GET", r"/certs", self.certs)
        self.add_route("GET", r"/crl/(?:(foreign)/)?(ats-ca|root-ca)-crl\.der", self.crl)

    def on_listen(self):
        """Issue the chains with CDPs under our URL and the CRLs they point at."""
        self.portal_url = (self.portal_url or self.url).rstrip("/")
        self.chain = pki.issue_ita_chain(self.state_dir, self.url, "ita")
        self.foreign = pki.issue_ita_chain(self.state_dir, self.url, "foreign")
        self.crls = {
            ("ita", "ats-ca"): pki.make_crl(self.chain.ca, self.chain.ca_key,
                                            [self.chain.revoked_leaf.serial_number]),
            ("ita", "root-ca"): pki.make_crl(self.chain.root, self.chain.root_key),
            ("foreign", "ats-ca"): pki.make_crl(self.foreign.ca, self.foreign.ca_key),
            ("foreign", "root-ca"): pki.make_crl(self.foreign.root, self.foreign.root_key),
        }

    def dispatch(self, req):
        resp = super().dispatch(req)
        resp.headers["trace-id"] = str(uuid.uuid4())
        if req.headers.get("request-id") is not None:
            resp.headers["request-id"] = req.headers["request-id"]
        return resp

    # ------------------------------------------------------------------ public routes

    def certs(self, req):
        keys = jwk_entries(self.chain)
        modes = self.extra_keys | self.active_fault_modes()
        if "foreign_root" in modes:
            keys += jwk_entries(self.foreign)
        if "revoked_leaf" in modes:
            keys += jwk_entries(self.chain, leaf=self.chain.revoked_leaf,
                                leaf_key=self.chain.revoked_leaf_key)
        return json_response(200, {"keys": keys})

    def crl(self, req):
        prefix, which = req.match.group(1) or "ita", req.match.group(2)
        return Response(200, self.crls[(prefix, which)],
                        {"Content-Type": "application/pkix-crl"})

    # ------------------------------------------------------------------ nonce

    def check_api_key(self, req):
        key = req.headers.get("x-api-key")
        if key is None or not hmac.compare_digest(key.encode(), self.api_key.encode()):
            raise HttpError(401, "missing or invalid x-api-key")

    def new_nonce(self):
        val = base64.b64encode(os.urandom(64))
        iat = go_time_string(datetime.datetime.now(datetime.timezone.utc)).encode()
        sig = self.chain.leaf_key.sign(val + iat, PS384_PADDING, hashes.SHA384())
        return {"val": b64(val), "iat": b64(iat), "signature": b64(sig)}

    def nonce(self, req):
        self.check_api_key(req)
        nonce = self.new_nonce()
        req.log_extra["nonce_sha256"] = nonce_digest(base64.b64decode(nonce["val"]))
        return json_response(200, nonce)

    def check_nonce(self, nonce):
        """Decoded (val, iat) bytes of a nonce we issued that is fresh and unused."""
        if not isinstance(nonce, dict):
            raise BadRequest("verifier_nonce must be an object {val, iat, signature}")
        val, iat, sig = (b64decode_any(nonce.get(k), f"verifier_nonce.{k}")
                         for k in ("val", "iat", "signature"))
        try:
            self.chain.leaf_key.public_key().verify(sig, val + iat, PS384_PADDING,
                                                    hashes.SHA384())
        except InvalidSignature:
            raise BadRequest("verifier_nonce signature is invalid") from None
        try:
            issued = parse_go_time(iat.decode("ascii"))
        except UnicodeDecodeError:
            raise BadRequest("verifier_nonce iat is not a timestamp") from None
        age = (datetime.datetime.now(datetime.timezone.utc) - issued).total_seconds()
        if age > self.nonce_lifetime or age < -60:
            raise BadRequest("verifier_nonce has expired")
        if val in self.used_nonces:
            raise BadRequest("verifier_nonce has already been used")
        return val, iat

    def consume_nonce(self, val):
        """Mark a nonce used; BadRequest if a concurrent request used it first."""
        now = time.monotonic()
        with self._nonce_lock:
            for v in [v for v, exp in self.used_nonces.items() if exp < now]:
                del self.used_nonces[v]
            if val in self.used_nonces:
                raise BadRequest("verifier_nonce has already been used")
            self.used_nonces[val] = now + self.nonce_lifetime + 120

    # ------------------------------------------------------------------ attest

    def attest_v1(self, req):
        body = self.parse_attest(req)
        if "tdx" in body:
            raise BadRequest("v1 attest takes the flat body (quote, runtime_data, ...)")
        return self.attest(req, body, body, version=1)

    def attest_v2(self, req):
        body = self.parse_attest(req)
        if not isinstance(body.get("tdx"), dict):
            raise BadRequest("v2 attest needs composite evidence, e.g. {\"tdx\": {...}}")
        return self.attest(req, body, body["tdx"], version=2)

    def attest_azure_v1(self, req):
        body = self.parse_attest(req)
        req.attestation_type = "azure-tdx"
        if "tdx" in body:
            raise BadRequest("v1 Azure attest takes the flat body (quote, runtime_data, ...)")
        return self.attest(req, body, body, version=1, azure=True)

    def attest_azure_v2(self, req):
        body = self.parse_attest(req)
        req.attestation_type = "azure-tdx"
        if not isinstance(body.get("tdx"), dict):
            raise BadRequest("v2 Azure attest needs composite evidence, e.g. {\"tdx\": {...}}")
        return self.attest(req, body, body["tdx"], version=2, azure=True)

    def parse_attest(self, req):
        self.check_api_key(req)
        req.attestation_type = "tdx"
        ctype = (req.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype != "application/json":
            raise HttpError(415, "Content-Type must be application/json")
        body = req.json()
        if not isinstance(body, dict):
            raise BadRequest("request body must be a JSON object")
        return body

    def attest(self, req, body, evidence, version, azure=False):
        """Validate everything, appraise, and return {"token": ...}."""
        alg = body.get("token_signing_alg") or "PS384"
        if alg not in SIGNING_ALGS:
            raise BadRequest(f"unsupported token_signing_alg {alg!r}")
        policy_ids = self.check_policy_ids(body.get("policy_ids"))
        must_match = body.get("policy_must_match")
        if must_match not in (None, True, False):
            raise BadRequest("policy_must_match must be a boolean")
        if evidence.get("quote") in (None, ""):
            raise BadRequest("quote is required")
        quote_bytes = b64decode_any(evidence["quote"], "quote")
        runtime = (b64decode_any(evidence["runtime_data"], "runtime_data")
                   if evidence.get("runtime_data") else b"")
        if len(runtime) > MAX_RUNTIME_DATA:
            raise BadRequest("runtime_data exceeds 1 MiB")
        user_data = (b64decode_any(evidence["user_data"], "user_data")
                     if evidence.get("user_data") else b"")
        if evidence.get("event_log"):
            b64decode_any(evidence["event_log"], "event_log")
        nonce = evidence.get("verifier_nonce")
        val_iat = self.check_nonce(nonce) if nonce is not None else None
        try:
            q = verify_quote(quote_bytes, self.trusted_roots)
        except QuoteError as e:
            raise BadRequest(f"quote verification failed: {e}") from None
        if azure:
            check_azure_binding(q, runtime, user_data, val_iat)
        else:
            expected = hashlib.sha512((b"".join(val_iat) if val_iat else b"") + runtime).digest()
            if q.report_data != expected:
                raise BadRequest("REPORTDATA does not match SHA-512(nonce val || iat || "
                                 "runtime_data)")
        matched, unmatched = self.evaluate_policies(policy_ids, q)
        if must_match and unmatched:
            raise HttpError(401, "policy_must_match: policies not matched: "
                                 + ", ".join(p["id"] for p in unmatched))
        if val_iat:
            self.consume_nonce(val_iat[0])
            req.log_extra["nonce_sha256"] = nonce_digest(val_iat[0])
        claims = self.build_claims(version, q, runtime, nonce if val_iat else None,
                                   policy_ids, matched, unmatched,
                                   azure_user_data=user_data if azure else None)
        return json_response(200, {"token": self.make_token(claims, alg, version, req.fault)})

    def check_policy_ids(self, ids):
        if ids is None:
            return []
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise BadRequest("policy_ids must be an array of UUID strings")
        for i in ids:
            if not UUID_RE.fullmatch(i):
                raise BadRequest(f"policy id {i!r} is not a UUID")
            if i.lower() not in self.policies:
                raise BadRequest(f"unknown policy id {i}")
        return [i.lower() for i in ids]

    def evaluate_policies(self, policy_ids, q):
        matched, unmatched = [], []
        for pid in policy_ids:
            policy = self.policies[pid]
            entry = {"id": pid, "version": "v1",
                     "hash": b64(b64(hashlib.sha384(
                         json.dumps(policy, sort_keys=True).encode()).digest()).encode())}
            (matched if policy_matches(policy, q) else unmatched).append(entry)
        return matched, unmatched

    # ------------------------------------------------------------------ claims & token

    def tcb(self, q):
        ok = all(a >= b for a, b in zip(q.tee_tcb_svn, self.uptodate_tcb_svn))
        status = "UpToDate" if ok else "OutOfDate"
        return status, *TCB_LEVELS[status]

    def build_claims(self, version, q, runtime, nonce, policy_ids, matched, unmatched,
                     azure_user_data=None):
        status, tcb_date, advisories = self.tcb(q)
        tee = tdx_claims(q)
        if version == 2:
            tee["tdx_is_migratable"] = False
        tee["tdx_collateral"] = collateral(q)
        if azure_user_data is None:
            tee.update(held_data_claim(runtime))
        else:
            tee.update(azure_data_claims(runtime, azure_user_data))
        if nonce is not None:
            tee["verifier_nonce"] = {k: nonce[k] for k in ("val", "iat", "signature")}
        tee.update({"attester_tcb_status": status, "attester_tcb_date": tcb_date})
        if advisories:
            tee["attester_advisory_ids"] = advisories
        tee["attester_type"] = "TDX"
        tee["dbgstat"] = "enabled" if q.debug else "disabled"
        policy = ({"policy_ids_matched": matched or None,
                   "policy_ids_unmatched": unmatched or None,
                   "policy_defined_claims": None} if policy_ids else {})
        common = {"verifier_instance_ids": self.instance_ids,
                  "eat_profile": f"{self.portal_url}/eat_profile.html", "intuse": "generic"}
        now = int(time.time())
        issuer = API_ISSUER_V1 if version == 1 else self.portal_url
        times = {"exp": now + self.token_lifetime, "jti": str(uuid.uuid4()), "iat": now,
                 "iss": issuer, "nbf": now}
        if version == 1:
            verifier = {"verifier_instance_ids": common.pop("verifier_instance_ids")}
            dbg = {"dbgstat": tee.pop("dbgstat")}
            return {**tee, **policy, **verifier, **dbg, **common, "ver": "1.0.0", **times}
        method = "default" if azure_user_data is None else "azure"
        return {"appraisal": {"method": method, "ver": 2}, **common, **policy, "tdx": tee,
                "ver": "2.0.0", **times}

    def make_token(self, claims, alg, version, fault):
        mode = fault.get("mode") if fault else None
        tee = claims if version == 1 else claims["tdx"]
        if mode in ("expired", "not_yet_valid"):
            shift = (-self.token_lifetime - 120) if mode == "expired" else 3600
            for k in ("iat", "nbf", "exp"):
                claims[k] += shift
        elif mode == "wrong_nonce":
            tee["verifier_nonce"] = self.new_nonce()
        elif mode == "no_nonce_echo":
            tee.pop("verifier_nonce", None)
        elif mode == "wrong_held_data":
            if "attester_runtime_data" in tee and "attester_held_data" not in tee:
                tee["attester_runtime_data"] = {**tee["attester_runtime_data"], "x": "wrong"}
            else:
                held = base64.b64decode(tee.get("attester_held_data", ""))
                tee["attester_held_data"] = b64(bytes(b ^ 0xFF for b in held) or b"\xff")
        elif mode == "debug_td":
            attrs = int.from_bytes(bytes.fromhex(tee["tdx_td_attributes"]), "little") | 1
            tee.update({"tdx_td_attributes": attrs.to_bytes(8, "little").hex(),
                        "tdx_td_attributes_debug": True, "tdx_is_debuggable": True,
                        "dbgstat": "enabled"})
        chain, key, leaf = self.chain, self.chain.leaf_key, self.chain.leaf
        if mode == "foreign_root":
            self.extra_keys.add(mode)
            chain, key, leaf = self.foreign, self.foreign.leaf_key, self.foreign.leaf
        elif mode == "revoked_leaf":
            self.extra_keys.add(mode)
            key, leaf = chain.revoked_leaf_key, chain.revoked_leaf
        header = {"alg": alg, "jku": f"{self.portal_url}/certs", "kid": pki.kid(leaf),
                  "typ": "JWT"}
        if mode == "hs256":
            header["alg"] = "HS256"
            key = leaf.public_key().public_bytes(serialization.Encoding.PEM,
                                                 serialization.PublicFormat.SubjectPublicKeyInfo)
        elif mode == "alg_none":
            header["alg"] = "none"
        token = sign_jws(header, claims, key, header["alg"])
        if mode == "tampered":
            h, _, s = token.split(".")
            mrtd = tee["tdx_mrtd"]
            tee["tdx_mrtd"] = ("f" if mrtd[0] != "f" else "0") + mrtd[1:]
            token = ".".join((h, b64url(json.dumps(claims, separators=(",", ":")).encode()), s))
        return token


def nonce_digest(val):
    """What the request log shows of a nonce: hex SHA-256 of its val bytes (a nonce is no
    secret, but the log keeps to fixed-size fields)."""
    return hashlib.sha256(val).hexdigest()


def tdx_claims(q):
    """The tdx_* claims of a verified quote, in the production token's order."""
    c = {f"tdx_{name}": getattr(q, name).hex() for name in (
        "tee_tcb_svn", "mrseam", "mrsignerseam", "seam_attributes", "td_attributes", "xfam",
        "mrtd", "mrconfigid", "mrowner", "mrownerconfig", "rtmr0", "rtmr1", "rtmr2", "rtmr3",
        "report_data")}
    c["tdx_seamsvn"] = q.seamsvn
    c.update({"tdx_td_attributes_debug": q.debug,
              "tdx_td_attributes_septve_disable": q.septve_disable,
              "tdx_td_attributes_protection_keys": q.protection_keys,
              "tdx_td_attributes_key_locker": q.key_locker,
              "tdx_td_attributes_perfmon": q.perfmon,
              "tdx_is_debuggable": q.debug})
    return c


def collateral(q):
    """tdx_collateral: hex SHA-256 of the quote and of the (simulated) PCS collateral."""
    def h(label):
        return hashlib.sha256(b"keygate local PCS " + label).hexdigest()
    return {"qeidcerthash": h(b"qe identity cert"), "qeidcrlhash": h(b"root crl"),
            "qeidhash": h(b"qe identity"), "quotehash": hashlib.sha256(q.raw).hexdigest(),
            "tcbinfocerthash": h(b"qe identity cert"), "tcbinfocrlhash": h(b"root crl"),
            "tcbinfohash": h(b"tcb info")}


def held_data_claim(runtime):
    """attester_runtime_data for a JSON object, attester_held_data for other bytes."""
    if not runtime:
        return {}
    try:
        obj = json.loads(runtime)
    except (ValueError, UnicodeDecodeError):
        obj = None
    if isinstance(obj, dict):
        return {"attester_runtime_data": obj}
    return {"attester_held_data": b64(runtime)}


def azure_user_data_hash(val_iat, user_data):
    """What the Azure adapters write to NV 0x01400002: SHA-512(val || iat || user_data), or
    64 zero bytes with neither nonce nor user data (docs/protocols/azure-tdx.md §1)."""
    if not val_iat and not user_data:
        return bytes(64)
    return hashlib.sha512((b"".join(val_iat) if val_iat else b"") + user_data).digest()


def check_azure_binding(q, runtime, user_data, val_iat):
    """Quote REPORTDATA binds the runtime JSON, whose user-data binds nonce and user data."""
    if q.report_data[:32] != hashlib.sha256(runtime).digest():
        raise BadRequest("REPORTDATA[0:32] does not match SHA-256(runtime_data)")
    try:
        obj = json.loads(runtime)
    except (ValueError, UnicodeDecodeError):
        obj = None
    if not isinstance(obj, dict) or not isinstance(obj.get("user-data"), str):
        raise BadRequest("runtime_data is not an Azure runtime JSON with user-data")
    if obj["user-data"].lower() != azure_user_data_hash(val_iat, user_data).hex():
        raise BadRequest("runtime_data user-data does not match SHA-512(nonce val || iat || "
                         "user_data)")


def azure_data_claims(runtime, user_data):
    """attester_runtime_data = the runtime JSON; user data as attester_user_data (JSON object)
    or attester_held_data (binary)."""
    claims = {"attester_runtime_data": json.loads(runtime)}
    if user_data:
        try:
            obj = json.loads(user_data)
        except (ValueError, UnicodeDecodeError):
            obj = None
        if isinstance(obj, dict):
            claims["attester_user_data"] = obj
        else:
            claims["attester_held_data"] = b64(user_data)
    return claims


def policy_matches(policy, q):
    if q.debug and not policy.get("allow_debug", False):
        return False
    for name in POLICY_MEASUREMENTS:
        allowed = policy.get(name)
        if allowed is not None and getattr(q, name).hex() not in [a.lower() for a in allowed]:
            return False
    minimum = policy.get("min_tee_tcb_svn")
    if minimum and not all(a >= b for a, b in zip(q.tee_tcb_svn, bytes.fromhex(minimum))):
        return False
    return True


# --------------------------------------------------------------------------- entry point

def add_arguments(parser):
    parser.add_argument("--trusted-root", action="append", default=[],
                        help="PEM of a pinned PCK root (repeatable; default sim-sgx-root-ca)")
    parser.add_argument("--policies", help="JSON file {uuid: policy}")
    parser.add_argument("--uptodate-tcb-svn", default="00" * 16,
                        help="reference TEE_TCB_SVN (hex) for UpToDate")
    parser.add_argument("--token-lifetime", type=int, default=300)
    parser.add_argument("--nonce-lifetime", type=int, default=300)
    parser.add_argument("--portal-url", help="portal URL for jku/eat_profile/v2 iss "
                                             "(default: this service's URL)")


def factory(args):
    policies = {}
    if args.policies:
        with open(args.policies) as f:
            policies = {k.lower(): v for k, v in json.load(f).items()}
    return ItaService(args.state, trusted_roots=args.trusted_root, policies=policies,
                      uptodate_tcb_svn=bytes.fromhex(args.uptodate_tcb_svn),
                      token_lifetime=args.token_lifetime, nonce_lifetime=args.nonce_lifetime,
                      portal_url=args.portal_url)


if __name__ == "__main__":
    raise SystemExit(main(factory, add_arguments))
