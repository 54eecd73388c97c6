# SPDX-License-Identifier: Apache-2.0
"""Reference ITA token verifier (docs/protocols/ita-api.md §8), used to prove the stack's tokens.

    header, claims = verify_token(token, jwks, pinned_roots, fetch_crl, now=None)
    check_binding(claims, nonce=..., runtime_data=...)

verify_token: alg allow-list {PS384, RS256} before any crypto; key chosen by (kid, alg); kty
RSA, x5c <= 10; chain built from x5c[0] to a PINNED root (DER equality, never the x5c root by
itself) with signatures, validity dates and BasicConstraints; leaf and intermediate revocation
via the CRLs at their CDPs (fetch_crl(url) -> DER; signature, nextUpdate, serial); JWK n/e ==
leaf key; JWS signature (PS384 = PSS/SHA-384/MGF1-SHA-384/salt 48); exp/nbf with leeway; iss
and ver per layout.  check_binding: verifier_nonce, held data, tdx_report_data, debug.
Failures raise TokenError whose ``check`` names the failed check.
"""

import base64
import datetime
import hashlib
import json

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

ALLOWED_ALGS = ("PS384", "RS256")
ISSUER_V1 = "Intel Trust Authority"


class TokenError(Exception):
    def __init__(self, check, message):
        super().__init__(f"{check}: {message}")
        self.check = check


def b64url_decode(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def decode_unverified(token):
    """(header, claims) without any verification."""
    h, p, _ = token.split(".")
    return json.loads(b64url_decode(h)), json.loads(b64url_decode(p))


def _der(cert):
    return cert.public_bytes(serialization.Encoding.DER)


def _signed_by(cert, issuer):
    try:
        issuer.public_key().verify(cert.signature, cert.tbs_certificate_bytes,
                                   padding.PKCS1v15(), cert.signature_hash_algorithm)
    except (InvalidSignature, TypeError, AttributeError):
        return False
    return True


def _is_ca(cert):
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def cdp_url(cert):
    try:
        dps = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    except x509.ExtensionNotFound:
        return None
    return next((n.value for dp in dps for n in (dp.full_name or [])
                 if isinstance(n, x509.UniformResourceIdentifier)), None)


def build_chain(certs, pinned_roots, now):
    """[leaf, ..., pinned root] from certs[0]; TokenError("chain") if not anchored."""
    pinned = {_der(r): r for r in pinned_roots}
    path = [certs[0]]
    while len(path) <= len(certs) + 1:
        cur = path[-1]
        if not cur.not_valid_before <= now <= cur.not_valid_after:
            raise TokenError("chain", f"{cur.subject.rfc4514_string()} not valid now")
        root = next((r for r in pinned.values()
                     if r.subject == cur.issuer and _signed_by(cur, r)), None)
        if root is not None:
            return path if _der(cur) == _der(root) else path + [root]
        issuer = next((c for c in certs if c.subject == cur.issuer and _is_ca(c)
                       and c not in path and _signed_by(cur, c)), None)
        if issuer is None:
            raise TokenError("chain", "x5c does not chain to a pinned root")
        path.append(issuer)
    raise TokenError("chain", "chain too long")


def check_revocation(path, fetch_crl, now):
    """Each non-root cert of path against the CRL at its CDP, signed by its issuer."""
    for cert, issuer in zip(path, path[1:]):
        url = cdp_url(cert)
        if url is None:
            raise TokenError("crl", f"{cert.subject.rfc4514_string()} has no CDP")
        crl = x509.load_der_x509_crl(fetch_crl(url))
        if crl.issuer != issuer.subject or not crl.is_signature_valid(issuer.public_key()):
            raise TokenError("crl", f"CRL at {url} is not signed by the issuer")
        if crl.next_update is None or crl.next_update < now:
            raise TokenError("crl", f"CRL at {url} is stale")
        if crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None:
            raise TokenError("revoked", f"{cert.subject.rfc4514_string()} is revoked")


def verify_jws_signature(pub, alg, signing_input, sig):
    try:
        if alg == "PS384":
            pub.verify(sig, signing_input,
                       padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48),
                       hashes.SHA384())
        else:
            pub.verify(sig, signing_input, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        raise TokenError("signature", "JWS signature does not verify") from None


def verify_token(token, jwks, pinned_roots, fetch_crl, now=None, leeway=0, issuer_v2=None):
    """Verify an ITA token; returns (header, claims)."""
    now = now or datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    parts = token.split(".")
    if len(parts) != 3:
        raise TokenError("format", "not a compact JWS")
    header, claims = decode_unverified(token)
    alg = header.get("alg")
    if alg not in ALLOWED_ALGS:
        raise TokenError("alg", f"alg {alg!r} not allowed")
    jwk = next((k for k in jwks.get("keys", [])
                if k.get("kid") == header.get("kid") and k.get("alg") == alg), None)
    if jwk is None:
        raise TokenError("kid", "no JWKS key with this (kid, alg)")
    if jwk.get("kty") != "RSA" or not 1 <= len(jwk.get("x5c", [])) <= 10:
        raise TokenError("jwk", "key must be RSA with 1..10 x5c certificates")
    certs = [x509.load_der_x509_certificate(base64.b64decode(c)) for c in jwk["x5c"]]
    path = build_chain(certs, pinned_roots, now)
    check_revocation(path, fetch_crl, now)
    leaf_pub = path[0].public_key()
    nums = leaf_pub.public_numbers()
    if not isinstance(leaf_pub, rsa.RSAPublicKey) or (
            int.from_bytes(b64url_decode(jwk["n"]), "big"),
            int.from_bytes(b64url_decode(jwk["e"]), "big")) != (nums.n, nums.e):
        raise TokenError("jwk", "JWK n/e differ from the x5c leaf key")
    verify_jws_signature(leaf_pub, alg, f"{parts[0]}.{parts[1]}".encode(), b64url_decode(parts[2]))
    t = now.replace(tzinfo=datetime.timezone.utc).timestamp()
    if claims.get("exp") is None or t > claims["exp"] + leeway:
        raise TokenError("expired", "token expired")
    if t + leeway < claims.get("nbf", 0):
        raise TokenError("not_yet_valid", "token not yet valid")
    ver, iss = claims.get("ver"), claims.get("iss")
    if not ((ver == "1.0.0" and iss == ISSUER_V1)
            or (ver == "2.0.0" and iss is not None and issuer_v2 in (None, iss))):
        raise TokenError("issuer", f"iss {claims.get('iss')!r} / ver {claims.get('ver')!r}")
    return header, claims


def tee_claims(claims):
    """The TDX claims: the token itself (v1) or its "tdx" object (v2)."""
    return claims["tdx"] if claims.get("ver") == "2.0.0" else claims


def check_binding(claims, nonce=None, runtime_data=b"", allow_debug=False):
    """Nonce echo, held data, REPORTDATA binding and debug state of a verified token."""
    tee = tee_claims(claims)
    if nonce is not None and tee.get("verifier_nonce") != {
            k: nonce[k] for k in ("val", "iat", "signature")}:
        raise TokenError("nonce", "verifier_nonce is not the nonce we fetched")
    if "attester_runtime_data" in tee:
        if tee["attester_runtime_data"] != json.loads(runtime_data):
            raise TokenError("held_data", "attester_runtime_data differs")
    elif base64.b64decode(tee.get("attester_held_data", "")) != runtime_data:
        raise TokenError("held_data", "attester_held_data differs")
    prefix = (base64.b64decode(nonce["val"]) + base64.b64decode(nonce["iat"])) if nonce else b""
    if tee.get("tdx_report_data") != hashlib.sha512(prefix + runtime_data).hexdigest():
        raise TokenError("report_data", "tdx_report_data does not bind nonce and data")
    debug = tee.get("tdx_is_debuggable") or tee.get("tdx_td_attributes_debug") or (
        int.from_bytes(bytes.fromhex(tee.get("tdx_td_attributes", "00")), "little") & 1) or (
        tee.get("dbgstat") != "disabled")
    if debug and not allow_debug:
        raise TokenError("debug", "the TD is debuggable")
