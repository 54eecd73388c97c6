# SPDX-License-Identifier: Apache-2.0
"""Test helpers for the local KBS (tests/stack/kbs.py): start it, administer it, and a small
reference client that other tests (and the C client tests) can use as an oracle.

    kbs = start_kbs(stack)                      # after stack.start_ita(); ita=... to override
    admin = kbs_admin_token(kbs.url, stack.state_dir)
    policy_id = create_policy(kbs.url, admin, {"mrtd": [mrtd_hex]})
    key_id = register_key(kbs.url, admin, pem_pkcs8, policy_id)

    wrapping = new_wrapping_key()               # RSA-3072: the KBS refuses <= 2048 bits
    make_quote = sim_quote_maker(stack.state_dir, mrtd=...)
    token = ita_token(ita.url, stack.state_dir, user_data_blob(wrapping.public_key()), make_quote)
    der = transfer_passport(kbs.url, key_id, token, wrapping)
    der = transfer_background(kbs.url, key_id, wrapping, make_quote)
    der = transfer_background_2026(kbs.url, key_id, wrapping, make_quote)   # --generation 2026

TLS: every call trusts only the stack's TLS CA of the state dir.  Functions that are not given
``state_dir`` look it up from the KBS URL, registered by ``start_kbs`` and ``kbs_admin_token``.

Errors: a non-2xx KBS answer raises ``KbsHttpError`` (.status, .body, .headers); ``unwrap``
raises ``UnwrapError`` for every malformed or undecryptable wrapped key (intel-kbs.md §5 checks:
iv_len 12, tag_len 16, 12 + iv_len + ct_len == total, ct_len >= 16, 32-byte SWK).
"""

import base64
import hashlib
import http.client
import json
import struct
from urllib.parse import urlsplit

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from . import pki
from .simquote import make_sim_quote

JSON = "application/json"
PREFIX = "/kbs/v1"
_STATE_DIRS = {}                    # KBS URL -> state dir (for the TLS trust anchor)


class KbsHttpError(Exception):
    """A KBS (or ITA) request answered with an unexpected status."""

    def __init__(self, status, body, headers=None):
        super().__init__(f"HTTP {status}: {body[:300]!r}")
        self.status = status
        self.body = body
        self.headers = headers

    def json(self):
        return json.loads(self.body)


class UnwrapError(Exception):
    """wrapped_key / wrapped_swk cannot be unwrapped."""


# =========================================================================== service

def start_kbs(local_stack, ita=None, name="kbs", **opts):
    """Start tests.stack.kbs through LocalStack.start; returns the service handle.

    ita: a service handle or URL used for both --ita-url and --ita-base-url (default: the
    stack's running "ita" service).  opts become flags: ita_root="x.pem" -> --ita-root x.pem,
    ita_retry_wait=0.1, token_validity_minutes=1, key_manager="kmip", faults=[{...}] -> --fault
    JSON each.  A name other than "kbs" runs a second KBS beside it (its own request log).
    """
    if ita is None:
        ita = local_stack.services["ita"]
    ita_url = getattr(ita, "url", ita)
    opts.setdefault("ita_url", ita_url)
    opts.setdefault("ita_base_url", ita_url)
    if name != "kbs":
        opts.setdefault("name", name)
    args = []
    for key, value in opts.items():
        flag = "--" + ("fault" if key == "faults" else key.replace("_", "-"))
        for v in value if isinstance(value, (list, tuple)) else [value]:
            args += [flag, json.dumps(v) if isinstance(v, dict) else str(v)]
    handle = local_stack.start(name, "tests.stack.kbs", *args)
    _STATE_DIRS[handle.url] = local_stack.state_dir
    return handle


def _state_dir(kbs_url, state_dir):
    state_dir = state_dir or _STATE_DIRS.get(kbs_url)
    if state_dir is None:
        raise ValueError(f"unknown KBS {kbs_url}: pass state_dir or use start_kbs")
    return state_dir


def https_request(url, method, path, body=None, headers=None, state_dir=None, timeout=30):
    """One request to url+path trusting the stack TLS CA; returns (status, headers, body).

    body may be bytes, str or a JSON value (sent compact, without adding Content-Type).
    """
    if body is not None and not isinstance(body, (bytes, str)):
        body = json.dumps(body)
    u = urlsplit(url)
    if u.scheme == "https":
        conn = http.client.HTTPSConnection(u.hostname, u.port, timeout=timeout,
                                           context=pki.tls_client_context(state_dir))
    else:
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read()
    finally:
        conn.close()


def kbs_request(kbs_url, method, path, body=None, headers=None, state_dir=None):
    """A raw request to the KBS (path below /kbs/v1 or absolute); (status, headers, body)."""
    full = path if path.startswith(PREFIX) else PREFIX + path
    return https_request(kbs_url, method, full, body, headers, _state_dir(kbs_url, state_dir))


def _call(kbs_url, method, path, body=None, headers=None, token=None, expect=(200,),
          state_dir=None):
    hdrs = {"Accept": JSON, **({"Content-Type": JSON} if body is not None else {}),
            **({"Authorization": f"Bearer {token}"} if token else {}), **(headers or {})}
    status, resp_headers, data = kbs_request(kbs_url, method, path, body, hdrs, state_dir)
    if status not in expect:
        raise KbsHttpError(status, data, resp_headers)
    return data


# =========================================================================== administration

def kbs_admin_token(kbs_url, state_dir):
    """A bearer token of the bootstrap admin (POST /token, Accept application/jwt)."""
    _STATE_DIRS.setdefault(kbs_url, state_dir)
    return _call(kbs_url, "POST", "/token", pki.kbs_admin(state_dir),
                 headers={"Accept": "application/jwt"}, state_dir=state_dir).decode()


def create_policy(kbs_url, token, attributes=None, policy_ids=None, attestation_type="TDX",
                  state_dir=None):
    """Create a transfer policy; returns its id.

    attributes: e.g. {"mrtd": [hex96], "seamsvn": 3, "rtmr0": hex96, "enforce_tcb_upto_date":
    False}; policy_ids: ITA policy UUIDs (the policy-id shortcut).
    """
    section = {}
    if attributes is not None:
        section["attributes"] = attributes
    if policy_ids is not None:
        section["policy_ids"] = policy_ids
    body = {"attestation_type": attestation_type, attestation_type.lower(): section}
    return json.loads(_call(kbs_url, "POST", "/key-transfer-policies", body, token=token,
                            expect=(201,), state_dir=state_dir))["id"]


def register_key(kbs_url, token, pem_pkcs8_bytes, policy_id, state_dir=None):
    """Register (import) an RSA or EC private key given as PKCS#8 PEM; returns the key id.

    key_information is filled as the real KBS wants it: RSA key_length = modulus size; EC
    curve_type plus the mandatory (meaningless) key_length 2048.
    """
    key = serialization.load_pem_private_key(pem_pkcs8_bytes, None)
    if isinstance(key, rsa.RSAPrivateKey):
        info = {"algorithm": "RSA", "key_length": key.key_size}
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        info = {"algorithm": "EC", "key_length": 2048, "curve_type": key.curve.name}
    else:
        raise ValueError("register_key takes RSA or EC private keys")
    info["key_data"] = base64.b64encode(pem_pkcs8_bytes).decode()
    body = {"key_information": info, "transfer_policy_id": policy_id}
    return json.loads(_call(kbs_url, "POST", "/keys", body, token=token, expect=(201,),
                            state_dir=state_dir))["id"]


def set_key_policy(kbs_url, token, key_id, policy_id, state_dir=None):
    """Re-bind a key to another transfer policy: PUT /keys/{id} {"transfer_policy_id"} (the real
    KBS's only key update; it answers 201 with the key)."""
    return json.loads(_call(kbs_url, "PUT", f"/keys/{key_id}", {"transfer_policy_id": policy_id},
                            token=token, expect=(201,), state_dir=state_dir))


def delete_key(kbs_url, token, key_id, state_dir=None):
    """DELETE /keys/{id} (204)."""
    _call(kbs_url, "DELETE", f"/keys/{key_id}", token=token, expect=(204,), state_dir=state_dir)


# =========================================================================== attestation

def new_wrapping_key(bits=3072):
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def user_data_blob(public_key):
    """The KBS wrapping-key blob: LE32(e) ‖ n big-endian (intel-kbs.md §4)."""
    numbers = public_key.public_numbers()
    return struct.pack("<I", numbers.e) + numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8,
                                                             "big")


def user_data_pem(public_key):
    """The 2026 generation's other held-data form: a PEM SubjectPublicKeyInfo (intel-kbs.md §8)."""
    return public_key.public_bytes(serialization.Encoding.PEM,
                                   serialization.PublicFormat.SubjectPublicKeyInfo)


def report_data(nonce, user_data):
    """REPORTDATA = SHA-512(val ‖ iat ‖ user_data), or SHA-512(user_data) without a nonce."""
    prefix = (base64.b64decode(nonce["val"]) + base64.b64decode(nonce["iat"])) if nonce else b""
    return hashlib.sha512(prefix + user_data).digest()


def sim_quote_maker(state_dir, **fields):
    """make_quote(report_data) -> a simulated TDX quote with these body fields (simquote.py)."""
    return lambda rd: make_sim_quote(state_dir, rd, **fields)


def ita_token(ita_url, state_dir, user_data, make_quote, policy_ids=None, version=1,
              with_nonce=True):
    """A token from the local ITA for a quote binding user_data (what a passport client does).

    version 1: GET /appraisal/v1/nonce + POST /appraisal/v1/attest (flat body, v1 token);
    version 2: the v2 nonce and composite body {"tdx": {...}} (v2 token, nested claims).
    """
    headers = {"x-api-key": pki.api_key(state_dir), "Accept": JSON}
    nonce = None
    if with_nonce:
        status, _, data = https_request(ita_url, "GET", f"/appraisal/v{version}/nonce",
                                        headers=headers, state_dir=state_dir)
        if status != 200:
            raise KbsHttpError(status, data)
        nonce = json.loads(data)
    evidence = {"quote": base64.b64encode(make_quote(report_data(nonce, user_data))).decode(),
                "runtime_data": base64.b64encode(user_data).decode()}
    if nonce:
        evidence["verifier_nonce"] = nonce
    body = dict(evidence) if version == 1 else {"tdx": evidence}
    if policy_ids:
        body["policy_ids"] = policy_ids
    status, _, data = https_request(ita_url, "POST", f"/appraisal/v{version}/attest", body,
                                    {**headers, "Content-Type": JSON}, state_dir)
    if status != 200:
        raise KbsHttpError(status, data)
    return json.loads(data)["token"]


# =========================================================================== transfer + unwrap

def _released(data, wrapping_private_key):
    resp = json.loads(data)
    return unwrap(resp["wrapped_key"], resp["wrapped_swk"], wrapping_private_key)


def transfer_passport(kbs_url, key_id, token, wrapping_private_key, state_dir=None):
    """Passport transfer ({"attestation_token"}, no Attestation-Type); returns the plaintext."""
    data = _call(kbs_url, "POST", f"/keys/{key_id}/transfer", {"attestation_token": token},
                 state_dir=state_dir)
    return _released(data, wrapping_private_key)


def transfer_nonce(kbs_url, key_id, state_dir=None):
    """Background step 1 (empty body): (nonce dict, Attestation-Type header)."""
    status, headers, data = kbs_request(kbs_url, "POST", f"/keys/{key_id}/transfer", b"",
                                        {"Accept": JSON}, state_dir)
    if status != 200:
        raise KbsHttpError(status, data, headers)
    return json.loads(data), headers.get("Attestation-Type")


def transfer_background(kbs_url, key_id, wrapping_private_key, make_quote, state_dir=None,
                        event_log=None):
    """Background transfer: nonce step, quote over SHA-512(val‖iat‖blob), release; plaintext."""
    nonce, att_type = transfer_nonce(kbs_url, key_id, state_dir)
    blob = user_data_blob(wrapping_private_key.public_key())
    body = {"quote": base64.b64encode(make_quote(report_data(nonce, blob))).decode(),
            "nonce": nonce, "user_data": base64.b64encode(blob).decode()}
    if event_log is not None:
        body["event_log"] = base64.b64encode(event_log).decode()
    data = _call(kbs_url, "POST", f"/keys/{key_id}/transfer", body,
                 headers={"Attestation-Type": att_type}, state_dir=state_dir)
    return _released(data, wrapping_private_key)


def transfer_background_2026(kbs_url, key_id, wrapping_private_key, make_quote, state_dir=None,
                             user_data=None, event_log=None):
    """The 2026 generation's background transfer, one request without a nonce: Attestation-Type
    TDX, {quote, runtime_data, event_log?}, REPORTDATA = SHA-512(user data); the plaintext.
    user_data defaults to the LE32(e) ‖ n blob of the wrapping key."""
    if user_data is None:
        user_data = user_data_blob(wrapping_private_key.public_key())
    body = {"quote": base64.b64encode(make_quote(report_data(None, user_data))).decode(),
            "runtime_data": base64.b64encode(user_data).decode()}
    if event_log is not None:
        body["event_log"] = base64.b64encode(event_log).decode()
    data = _call(kbs_url, "POST", f"/keys/{key_id}/transfer", body,
                 headers={"Attestation-Type": "TDX"}, state_dir=state_dir)
    return _released(data, wrapping_private_key)


def unwrap(wrapped_key_b64, wrapped_swk_b64, wrapping_private_key):
    """Plaintext of a KBS transfer response (intel-kbs.md §5 recipe); UnwrapError on any defect."""
    try:
        wrapped_key = base64.b64decode(wrapped_key_b64, validate=True)
        wrapped_swk = base64.b64decode(wrapped_swk_b64, validate=True)
    except ValueError as e:
        raise UnwrapError(f"not base64: {e}") from None
    try:
        swk = wrapping_private_key.decrypt(wrapped_swk, padding.OAEP(
            mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None))
    except ValueError:
        raise UnwrapError("RSA-OAEP decryption of wrapped_swk failed") from None
    if len(swk) != 32:
        raise UnwrapError(f"SWK is {len(swk)} bytes, not 32")
    if len(wrapped_key) < 12:
        raise UnwrapError("wrapped_key shorter than its header")
    iv_len, tag_len, ct_len = struct.unpack("<III", wrapped_key[:12])
    if iv_len != 12 or tag_len != 16 or ct_len < 16 or 12 + iv_len + ct_len != len(wrapped_key):
        raise UnwrapError(f"bad wrapped_key header iv_len={iv_len} tag_len={tag_len} "
                          f"ct_len={ct_len} total={len(wrapped_key)}")
    iv, ct = wrapped_key[12:24], wrapped_key[24:]
    try:
        return AESGCM(swk).decrypt(iv, ct, None)
    except InvalidTag:
        raise UnwrapError("AES-GCM authentication failed") from None
