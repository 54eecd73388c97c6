# SPDX-License-Identifier: Apache-2.0
"""The KBS's side of Intel Trust Authority (part of tests/stack/kbs.py, whose docstring describes
the behaviour): JWT primitives, the ITA client of the Go connector v1.1.0 and the token verifier
with the pinned root.
"""

import base64
import datetime
import json
import re
import threading
import time
import urllib.error
import urllib.request

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from .kbs_model import ITA_TOKEN_SCHEMA, JSON, NONCE_SCHEMA, DecodeError, b64, decode_body
# BasicConstraints and CDP lookups are the reference verifier's; chain building, signatures and
# CRL checks stay here because the KBS does them differently (roles by CN, EC issuers, pinned root).
from .tokencheck import _is_ca, cdp_url


# =========================================================================== JWT primitives

def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text):
    """Unpadded base64url, strict alphabet (tokencheck.b64url_decode skips stray characters)."""
    if not isinstance(text, str) or not re.fullmatch(r"[A-Za-z0-9_-]*", text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


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

    # per ITA API version: the attest path and the error of an answer without a token
    ATTEST = {"v1": ("/appraisal/v1/attest", "attest response carries no token"),
              "v2": ("/appraisal/v2/attest", "ITA returned no attestation token")}

    def get_token(self, request_id, quote, nonce, runtime_data, policy_ids, event_log, layout="v1"):
        """An ITA token for TDX evidence, fields left out when empty (as Go's omitempty). layout
        "v1": POST /appraisal/v1/attest {quote, verifier_nonce?, runtime_data?, policy_ids?,
        event_log?}; "v2", as the 2026 KBS asks for it without a verifier nonce (getTokenV2):
        POST /appraisal/v2/attest {"policy_ids"?, "tdx": {quote, runtime_data?, event_log?}}."""
        path, missing = self.ATTEST[layout]
        evidence = {"quote": b64(quote or b"")}
        if nonce:
            evidence["verifier_nonce"] = {k: b64(nonce.get(k, b"")) for k in ("val", "iat",
                                                                              "signature")}
        if runtime_data:
            evidence["runtime_data"] = b64(runtime_data)
        if policy_ids and layout == "v1":
            evidence["policy_ids"] = policy_ids
        if event_log:
            evidence["event_log"] = b64(event_log)
        if layout == "v1":
            body = evidence
        else:
            body = {"policy_ids": policy_ids, "tdx": evidence} if policy_ids else {"tdx": evidence}
        data = self._call("POST", path, request_id, json.dumps(body).encode(), limit=64 * 1024)
        try:
            token = decode_body(data, ITA_TOKEN_SCHEMA).get("token", "")
        except DecodeError as e:
            raise ItaError(f"attest response: {e}") from None
        if not token:
            raise ItaError(missing)
        return token


# =========================================================================== token verification

class TokenError(Exception):
    pass


def _cn(cert):
    names = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return names[0].value if names else ""


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
    """URI of the first CRL distribution point (tokencheck.cdp_url); TokenError if none."""
    url = cdp_url(cert)
    if url is None:
        raise TokenError(f"no CRL distribution point URI in {_cn(cert)!r}")
    return url


class TokenVerifier:
    """ITA token verification of the KBS, with the root pinned instead of taken from the x5c."""

    def __init__(self, base_url, pinned_root, ssl_ctx, timeout=30):
        self.base_url = base_url.rstrip("/")
        self.root = pinned_root
        self.ssl_ctx = ssl_ctx
        self.timeout = timeout
        self.cache_ttl = 0              # seconds a downloaded JWKS/CRL is reused; 0 = never
        self._cache = {}                # url -> (body bytes, monotonic deadline)
        self._cache_lock = threading.Lock()

    def set_cache(self, ttl):
        """Reuse each downloaded JWKS and CRL for ttl seconds (0: download on every call, as the
        Go connector does). Only the bytes are kept: chain, CRL signatures, nextUpdate and
        revocation are still checked on every verification."""
        with self._cache_lock:
            self.cache_ttl = ttl
            self._cache.clear()

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

    def _get(self, url, what, fresh=False):
        with self._cache_lock:
            hit = self._cache.get(url) if self.cache_ttl and not fresh else None
        if hit is not None and time.monotonic() < hit[1]:
            return hit[0]
        data = self._download(url, what)
        with self._cache_lock:
            if self.cache_ttl:
                self._cache[url] = (data, time.monotonic() + self.cache_ttl)
        return data

    def _download(self, url, what):
        try:
            status, data = http_fetch("GET", url, self.ssl_ctx, {"Accept": JSON},
                                      timeout=self.timeout)
        except (OSError, ItaError) as e:
            raise TokenError(f"{what} download failed: {e}") from None
        if status != 200:
            raise TokenError(f"{what} download failed: status {status}")
        return data

    def _jwk(self, kid):
        jwk = self._find_jwk(kid, False)
        if jwk is None and self.cache_ttl:     # a cached JWKS may predate a new signing key
            jwk = self._find_jwk(kid, True)
        if jwk is None:
            raise TokenError(f"no JWK with kid {kid!r}")
        x5c = jwk.get("x5c")
        if not isinstance(x5c, list) or not 1 <= len(x5c) <= 10:
            raise TokenError("JWK x5c missing or longer than 10 certificates")
        return jwk

    def _find_jwk(self, kid, fresh):
        try:
            jwks = json.loads(self._get(self.base_url + "/certs", "JWKS", fresh))
            return next(k for k in jwks["keys"] if isinstance(k, dict) and k.get("kid") == kid)
        except (ValueError, KeyError, TypeError, StopIteration):
            return None

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
