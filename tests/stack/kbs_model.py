# SPDX-License-Identifier: Apache-2.0
"""The KBS's data model (part of tests/stack/kbs.py, whose docstring describes the behaviour).

Go-style errors, request schemas and their strict ``encoding/json``-like decoding, key-transfer
policy validation and evaluation (``service/validation.go``), key generation and import, the
key response, and the intel-kbs.md §5 wrapping of a released key.
"""

import base64
import binascii
import datetime
import json
import os
import re
import struct
import uuid

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

PREFIX = "/kbs/v1"
JSON = "application/json"
TCB_STATUS_UP_TO_DATE = "OK"
AES_LENGTHS = {128, 192, 256}
RSA_LENGTHS = {2048, 3072, 4096, 7680}
CURVES = {"secp256r1": ec.SECP256R1, "prime256v1": ec.SECP256R1, "secp384r1": ec.SECP384R1,
          "secp521r1": ec.SECP521R1}

# Messages of transport/http/error.go
ERR_INVALID_REQUEST = "Invalid request body"
ERR_JSON_DECODE = "Failed to JSON-decode request body"
ERR_EMPTY_BODY = "Request body was not provided"
ERR_CONTENT_TYPE = "Invalid Content-type header"
ERR_ACCEPT = "Invalid Accept header"
ERR_QUERY = "Invalid query parameter provided. Refer to API doc for details."
ERR_FILTER = "Invalid filter criteria"
ERR_ATTESTATION_TYPE = "Invalid attestion type header"
# The 2026 generation (intel-kbs.md §8): no nonce issuance
ERR_NO_TOKEN_2026 = "attestation_token or Attestation-Type header is required"
GENERATIONS = ("v1.3.0", "2026")


# =========================================================================== errors and encodings

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


def b64(data):
    return base64.b64encode(data).decode()


def b64_strict(text):
    """Go base64.StdEncoding.DecodeString: padded standard alphabet only."""
    return base64.b64decode(text.encode("ascii"), validate=True)


# =========================================================================== strict JSON (Go)

class DecodeError(ValueError):
    pass


STR, BOOL, BYTES, UUID_T, TIME = "string", "bool", "[]byte", "uuid", "time"
RAW = "json.RawMessage"     # any JSON value, kept as is
UINT16, INT = ("int", 0, 0xFFFF), ("int", -2**63, 2**63 - 1)


def list_of(t):
    return ("list", t)


NONCE_SCHEMA = {"val": BYTES, "iat": BYTES, "signature": BYTES}
TRANSFER_SCHEMA = {"attestation_token": STR, "quote": BYTES, "nonce": NONCE_SCHEMA,
                   "user_data": BYTES, "event_log": BYTES}
# The 2026 request: the service reads RuntimeData (sent to ITA as runtime_data) and an optional
# nvgpu (composite TD + GPU evidence); the JSON names follow ITA's (intel-kbs.md §8).
TRANSFER_SCHEMA_2026 = {"attestation_token": STR, "quote": BYTES, "runtime_data": BYTES,
                        "event_log": BYTES, "nvgpu": RAW}
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
    if t == RAW:
        return value
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
    stored["created_at"] = now_rfc3339()
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


def flatten_v2_claims(claims):
    """The 2026 generation's AttestationTokenV2Claim.ToAttestationTokenClaim: a token whose ver
    starts with "2" has its sgx (else tdx) sub-object's claims lifted to the top level, with
    attester_type set from the sub-object; a v1 token is returned unchanged."""
    if not str(claims.get("ver", "")).startswith("2"):
        return claims
    flat = {"policy_ids_matched": claims.get("policy_ids_matched")}
    for tee, attester in (("sgx", "SGX"), ("tdx", "TDX")):
        if isinstance(claims.get(tee), dict):
            return {**claims[tee], **flat, "attester_type": attester}
    return flat


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


# =========================================================================== key managers

KEY_MANAGERS = ("vault", "kmip")
# SEC1 ECPrivateKey forms of the kmip key manager: (named curve [0], publicKey [1]) present
SEC1_FORMS = {"full": (True, True), "no-params": (False, True), "no-public": (True, False),
              "bare": (False, False)}
RSA_ENCRYPTION_OID = bytes.fromhex("06092a864886f70d010101")


def _der_tlv(data, i):
    """(tag byte, content start, end) of the DER TLV at data[i]."""
    tag, n, i = data[i], data[i + 1], i + 2
    if n & 0x80:
        k = n & 0x7F
        n, i = int.from_bytes(data[i:i + k], "big"), i + k
    return tag, i, i + n


def _der_children(data):
    """[(tag, whole TLV, content)] of the elements inside the SEQUENCE that data is."""
    _, i, end = _der_tlv(data, 0)
    out = []
    while i < end:
        tag, start, stop = _der_tlv(data, i)
        out.append((tag, data[i:stop], data[start:stop]))
        i = stop
    return out


def _der(tag, content):
    n = len(content)
    length = bytes([n]) if n < 0x80 else (
        bytes([0x80 | ((n.bit_length() + 7) // 8)]) + n.to_bytes((n.bit_length() + 7) // 8, "big"))
    return bytes([tag]) + length + content


def key_material(secret, algorithm, key_manager, sec1_form="full"):
    """The bytes the KBS wraps for a stored key (intel-kbs.md §5): the key manager's own form.

    vault: what Go's x509.MarshalPKCS8PrivateKey made (the stored PKCS#8 DER, AES raw);
    kmip: the KMIP server's KeyMaterial: RSA as PKCS#1 RSAPrivateKey DER, EC as SEC1
    ECPrivateKey DER with the named curve [0] and publicKey [1] as sec1_form says (SEC1_FORMS).
    Converted at the DER level (PKCS#8's privateKey is the PKCS#1 / SEC1 structure), so a
    deliberately inconsistent key (the wrong_scalar fault) stays as it is.
    """
    if key_manager == "vault" or algorithm not in ("RSA", "EC"):
        return secret
    _, alg, private = _der_children(secret)[:3]
    alg_oid, alg_params = (child[1] for child in _der_children(alg[1])[:2])
    inner = private[2]
    if alg_oid == RSA_ENCRYPTION_OID:
        return inner
    version, scalar, *rest = _der_children(inner)
    public = [child[1] for child in rest if child[0] == 0xA1]
    with_params, with_public = SEC1_FORMS[sec1_form]
    body = version[1] + scalar[1] + (_der(0xA0, alg_params) if with_params else b"")
    return _der(0x30, body + (public[0] if with_public and public else b""))


def fresh_secret_like(record):
    """A new secret of the same type as record's (the wrong_key fault)."""
    if record["algorithm"] == "AES":
        return os.urandom(len(record["secret"]))
    old = serialization.load_der_private_key(record["secret"], None)
    if isinstance(old, rsa.RSAPrivateKey):
        return pkcs8_der(rsa.generate_private_key(public_exponent=65537, key_size=old.key_size))
    return pkcs8_der(ec.generate_private_key(type(old.curve)()))


def other_private_half(record):
    """The record's key (PKCS#8 DER) with its public half kept and another private half (the
    wrong_scalar fault): a fresh key of the same type whose public value is overwritten in
    place by the record's (same encoded length): EC publicKey point, RSA modulus n."""
    old = serialization.load_der_private_key(record["secret"], None)
    if isinstance(old, rsa.RSAPrivateKey):
        fresh = rsa.generate_private_key(public_exponent=65537, key_size=old.key_size)
        size = (old.key_size + 7) // 8
        want, have = (k.public_key().public_numbers().n.to_bytes(size, "big") for k in (old, fresh))
    else:
        fresh = ec.generate_private_key(type(old.curve)())
        want, have = (k.public_key().public_bytes(serialization.Encoding.X962,
                                                  serialization.PublicFormat.UncompressedPoint)
                      for k in (old, fresh))
    der = pkcs8_der(fresh)
    assert der.count(have) == 1 and len(want) == len(have)
    return der.replace(have, want)


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


def now_rfc3339():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# =========================================================================== wrapping

def public_key_from_held_data(held_data_b64, attestation_type, pem_ok=False):
    """(e, n) from attester_held_data = LE32(e) ‖ n or, with pem_ok (the 2026 generation), a PEM
    SubjectPublicKeyInfo of an RSA key; ValueError if unusable (n <= 2048 bits)."""
    blob = b64_strict(held_data_b64)
    if len(blob) < 4 + (1 if pem_ok else 0):
        raise ValueError("user data too short")
    if pem_ok and b"-----BEGIN" in blob:
        key = serialization.load_pem_public_key(blob)
        if not isinstance(key, rsa.RSAPublicKey):
            raise ValueError("public key in user_data is not an RSA key")
        numbers = key.public_numbers()
        if numbers.n.bit_length() <= 2048:
            raise ValueError("RSA key size must be greater than 2048 bits")
        return numbers.e, numbers.n
    modulus = blob[4:][::-1] if attestation_type == "SGX" else blob[4:]
    e, n = struct.unpack("<I", blob[:4])[0], int.from_bytes(modulus, "big")
    if n.bit_length() <= 2048:
        raise ValueError("RSA key size must be greater than 2048 bits")
    return e, n


def wrap_secret(secret, e, n):
    """(wrapped_key, wrapped_swk) per intel-kbs.md §5; ValueError if the RSA key cannot encrypt."""
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
