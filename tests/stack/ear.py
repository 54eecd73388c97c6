# SPDX-License-Identifier: Apache-2.0
"""Trustee's built-in attestation service for the Trustee stand-in (tests/stack/trustee.py
``--token ear``): it appraises a TDX quote itself and issues an EAR (draft-ietf-rats-ear) as
confidential-containers/trustee does (attestation-service/src/ear_token/broker.rs; the facts and
the commit are in docs/protocols/trustee-rcar.md §8):

    header   {"typ":"JWT","alg":"ES256","jwk":{"alg":"ES256","kty":"EC","crv":"P-256","x","y"}}
    payload  {"eat_profile":"tag:github.com,2024:confidential-containers/Trustee","iat",
              "ear.verifier-id":{"build","developer"},
              "submods":{"cpu0":{"ear.status","ear.trustworthiness-vector",
                                 "ear.appraisal-policy-id":"default",
                                 "ear.veraison.annotated-evidence":{"init_data","init_data_claims",
                                     "report_data","runtime_data_claims","tdx":{...}}}},
              "exp": iat + duration, "iss":"CoCo-Attestation-Service"}

Appraisal (the TDX part of Trustee's default CPU policy, ear_default_policy_cpu.rego, with a JSON
file of reference values instead of the RVPS: {"mr_td": [hex], "rtmr_1": [hex], "rtmr_2": [hex],
"xfam": [hex]}):
    executables    3 if rtmr_1 and rtmr_2 are reference values, else 33 (warning)
    hardware       2 if the quote is a TDX quote of Intel's QE (verified against the pinned sim
                   root, as the ITA stand-in does), mr_td is a reference value and the TCB is
                   UpToDate (the stand-in has no PCS: always), else 97 (contraindicated)
    configuration  2 if the TD is not debuggable and xfam is a reference value, else 36 (warning)
    the others     0 (no claim)
ear.status is the worst tier of the vector (AR4SI: 2..31 affirming, 32..95 warning, 96..127
contraindicated, 0 none).  Without reference values the status is contraindicated, as a fresh
Trustee's is.

The signing key is an EC P-256 key in the state directory (trustee-as-key.pem; its self-signed
certificate trustee-as-cert.pem is what a relying party pins), created once by ensure_as_key.

Faults (the ``mode`` of a fault on /kbs/v0/attest, with its params):
    ear_alg          sign with params.alg instead: HS256 (HMAC keyed with the AS public key PEM,
                     the classic confusion), none (empty signature), RS256 (a fresh RSA key),
                     ES384 (a fresh P-384 key)
    ear_expired      iat 10 minutes ago, exp 5 minutes ago
    ear_drop         delete the claim at params.path (a list of member names)
    ear_wrong_pubkey runtime_data_claims.tee-pubkey of another key
    ear_header       add params.member = params.value to the JWS header (e.g. jku)
    ear_other_key    sign with another P-256 key (and name it in the header jwk)
"""

import base64
import copy
import hashlib
import hmac
import json
import os
import time

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature
from cryptography.exceptions import InvalidSignature

from . import pki
from .quote import INTEL_QE_VENDOR_ID, TEE_TDX, QuoteError, verify_quote

AS_KEY = "trustee-as-key.pem"
AS_CERT = "trustee-as-cert.pem"
PROFILE = "tag:github.com,2024:confidential-containers/Trustee"
ISSUER = "CoCo-Attestation-Service"
VERIFIER_ID = {"build": "attestation-service 0.1.0", "developer": "https://confidentialcontainers.org"}
VECTOR = ("instance-identity", "configuration", "executables", "file-system", "hardware", "runtime-opaque",
          "storage-opaque", "sourced-data")
STATUS_ORDER = ("none", "affirming", "warning", "contraindicated")


class EarError(Exception):
    pass


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def ensure_as_key(state_dir):
    """The AS signing key and its self-signed certificate in state_dir (made once)."""
    key_path, cert_path = os.path.join(state_dir, AS_KEY), os.path.join(state_dir, AS_CERT)
    if not (os.path.exists(key_path) and os.path.exists(cert_path)):
        key = pki.new_ec()
        pki.write_cert(cert_path, pki.issue_cert("keygate stack Trustee AS token signer", key))
        pki.write_key(key_path, key)
    return key_path, cert_path


def ec_jwk(public_key, alg="ES256"):
    size = (public_key.curve.key_size + 7) // 8
    n = public_key.public_numbers()
    crv = {256: "P-256", 384: "P-384", 521: "P-521"}[public_key.curve.key_size]
    return {"alg": alg, "kty": "EC", "crv": crv, "x": b64url(n.x.to_bytes(size, "big")),
            "y": b64url(n.y.to_bytes(size, "big"))}


def tier(value):
    v = abs(value)
    return ("none" if v <= 1 else "affirming" if v <= 31 else "warning" if v <= 95 else "contraindicated")


def worst(statuses):
    return max(statuses, key=STATUS_ORDER.index, default="none")


def tdx_claims(q):
    """The TDX verifier's parsed claims (deps/verifier/src/tdx/claims.rs), all hex as Trustee."""
    header = {"version": q.version.to_bytes(2, "little").hex(),
              "att_key_type": q.att_key_type.to_bytes(2, "little").hex(),
              "tee_type": q.tee_type.to_bytes(4, "little").hex(), "reserved": "00000000",
              "vendor_id": q.qe_vendor_id.hex(), "user_data": q.header_user_data.hex()}
    body = {"tcb_svn": q.tee_tcb_svn.hex(), "mr_seam": q.mrseam.hex(), "mrsigner_seam": q.mrsignerseam.hex(),
            "seam_attributes": q.seam_attributes.hex(), "td_attributes": q.td_attributes.hex(),
            "xfam": q.xfam.hex(), "mr_td": q.mrtd.hex(), "mr_config_id": q.mrconfigid.hex(),
            "mr_owner": q.mrowner.hex(), "mr_owner_config": q.mrownerconfig.hex(),
            **{f"rtmr_{i}": r.hex() for i, r in enumerate(q.rtmrs)}, "report_data": q.report_data.hex()}
    attrs = {"debug": q.debug, "key_locker": q.key_locker, "perfmon": q.perfmon,
             "protection_keys": q.protection_keys, "septve_disable": q.septve_disable}
    return {"quote": {"header": header, "body": body}, "td_attributes": attrs, "tcb_status": "UpToDate",
            "collateral_expiration_status": "0"}


def appraise(q, rv):
    """The trust vector of Trustee's default CPU policy for TDX (see the module docstring)."""
    body = tdx_claims(q)["quote"]["body"]
    vector = dict.fromkeys(VECTOR, 0)
    vector["executables"] = 3 if (body["rtmr_1"] in rv.get("rtmr_1", [])
                                  and body["rtmr_2"] in rv.get("rtmr_2", [])) else 33
    vector["hardware"] = 2 if (q.tee_type == TEE_TDX and q.qe_vendor_id == INTEL_QE_VENDOR_ID
                               and body["mr_td"] in rv.get("mr_td", [])) else 97
    vector["configuration"] = 2 if (not q.debug and body["xfam"] in rv.get("xfam", [])) else 36
    return vector


class EarBroker:
    def __init__(self, state_dir, trusted_roots, reference_values=None, duration_min=5, key_path=None):
        key_path = key_path or ensure_as_key(state_dir)[0]
        self.key = pki.load_key(key_path)
        self.trusted_roots = trusted_roots
        self.reference_values = reference_values or {}
        self.duration_s = int(duration_min * 60)

    # ------------------------------------------------------------------ issue

    def issue(self, quote_bytes, runtime_claims, fault=None):
        """Verify the quote, appraise it and return the signed EAR (EarError if the quote is bad)."""
        try:
            q = verify_quote(quote_bytes, self.trusted_roots)
        except QuoteError as e:
            raise EarError(f"Verifier evaluate failed: {e}") from None
        vector = appraise(q, self.reference_values)
        tdx = tdx_claims(q)
        runtime = copy.deepcopy(runtime_claims)
        mode = (fault or {}).get("mode")
        if mode == "ear_wrong_pubkey":
            runtime["tee-pubkey"] = ec_jwk(pki.new_ec().public_key(), "ECDH-ES+A256KW")
        evidence = {"init_data": q.mrconfigid.hex(), "init_data_claims": None,
                    "report_data": q.report_data.hex(), "runtime_data_claims": runtime, "tdx": tdx}
        now = int(time.time())
        iat, exp = (now - 600, now - 300) if mode == "ear_expired" else (now, now + self.duration_s)
        payload = {"eat_profile": PROFILE, "iat": iat, "ear.verifier-id": VERIFIER_ID,
                   "submods": {"cpu0": {"ear.status": worst(tier(v) for v in vector.values()),
                                        "ear.trustworthiness-vector": vector,
                                        "ear.appraisal-policy-id": "default",
                                        "ear.veraison.annotated-evidence": evidence}},
                   "exp": exp, "iss": ISSUER}
        if mode == "ear_drop":
            node, path = payload, fault["path"]
            for name in path[:-1]:
                node = node[name]
            node.pop(path[-1], None)
        return self.sign(payload, fault)

    def sign(self, payload, fault=None):
        mode = (fault or {}).get("mode")
        alg = fault.get("alg", "ES256") if mode == "ear_alg" else "ES256"
        key = pki.new_ec() if mode == "ear_other_key" else self.key
        header = {"typ": "JWT", "alg": alg, "jwk": ec_jwk(key.public_key())}
        if mode == "ear_header":
            header[fault["member"]] = fault["value"]
        signing_input = (b64url(json.dumps(header, separators=(",", ":")).encode()) + "." +
                         b64url(json.dumps(payload, separators=(",", ":")).encode())).encode()
        if alg == "ES256":
            r, s = decode_dss_signature(key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
            sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        elif alg == "ES384":
            r, s = decode_dss_signature(ec.generate_private_key(ec.SECP384R1()).sign(
                signing_input, ec.ECDSA(hashes.SHA384())))
            sig = r.to_bytes(48, "big") + s.to_bytes(48, "big")
        elif alg == "HS256":
            secret = self.key.public_key().public_bytes(serialization.Encoding.PEM,
                                                         serialization.PublicFormat.SubjectPublicKeyInfo)
            sig = hmac.new(secret, signing_input, hashlib.sha256).digest()
        elif alg == "RS256":
            sig = pki.new_rsa(2048).sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
        elif alg == "none":
            sig = b""
        else:
            raise EarError(f"the stand-in cannot sign {alg}")
        return signing_input.decode() + "." + b64url(sig)

    # ------------------------------------------------------------------ verify (the KBS side)

    def verify(self, token):
        """The KBS's check of a Bearer EAR (its own AS key, ES256, exp): the claims or EarError."""
        try:
            h64, p64, s64 = token.split(".")
            header = json.loads(unb64url(h64))
            sig = unb64url(s64)
            if header.get("alg") != "ES256" or len(sig) != 64:
                raise EarError(f"alg {header.get('alg')!r} is not ES256")
            der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
            self.key.public_key().verify(der, f"{h64}.{p64}".encode(), ec.ECDSA(hashes.SHA256()))
            claims = json.loads(unb64url(p64))
        except (ValueError, InvalidSignature) as e:
            raise EarError(f"EAR does not verify: {type(e).__name__} {e}") from None
        if not isinstance(claims.get("exp"), int) or claims["exp"] + 60 < time.time():
            raise EarError("EAR expired or without exp")
        return claims


def tee_pubkey_of(claims):
    """Where Trustee's KBS reads the TEE key of an EAR (kbs/src/token/mod.rs)."""
    try:
        return claims["submods"]["cpu0"]["ear.veraison.annotated-evidence"]["runtime_data_claims"]["tee-pubkey"]
    except (KeyError, TypeError):
        return None
