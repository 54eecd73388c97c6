# SPDX-License-Identifier: Apache-2.0
"""Tests of the local Intel-compatible KBS (tests/stack/kbs.py) and its reference client.

One ITA + KBS pair serves the whole module (a copy of the session PKI); tokens from the local
ITA are reused where the KBS allows it (it checks no nonce in passport mode).
"""

import base64
import json
import os
import re
import shutil
import subprocess
import threading
import uuid

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.stack import kbs_fixture as kf
from tests.stack import pki
from tests.stack.fixtures import LocalStack
from tests.stack.simquote import DEFAULTS

MRTD = DEFAULTS["mrtd"].hex()
OTHER_MRTD = "ab" * 48
ITA_POLICY_ID = str(uuid.UUID("6d8d4a1c-1e49-4d6b-9a55-6f0d3c2b8a11"))
JSON_HEADERS = {"Accept": "application/json", "Content-Type": "application/json"}


# =========================================================================== fixtures

@pytest.fixture(scope="module")
def stack(stack_dir, tmp_path_factory):
    """ITA (with one policy matching the simulated TD's MRTD) and KBS on a copy of stack_dir."""
    state = tmp_path_factory.mktemp("kbs-stack") / "state"
    shutil.copytree(stack_dir, state, ignore=shutil.ignore_patterns(
        "*.json.tmp*", "*-requests.jsonl", "*.log", "ita.json", "kbs.json", ".pki.lock"))
    s = LocalStack(str(state)).init()
    policies = os.path.join(s.state_dir, "ita-policies.json")
    with open(policies, "w") as f:
        json.dump({ITA_POLICY_ID: {"mrtd": [MRTD]}}, f)
    s.start_ita(policies=policies)
    s.kbs = kf.start_kbs(s, ita_retry_wait=0.1)
    yield s
    s.stop_all()


@pytest.fixture(scope="module")
def url(stack):
    return stack.kbs.url


@pytest.fixture(scope="module")
def admin(stack, url):
    return kf.kbs_admin_token(url, stack.state_dir)


@pytest.fixture(scope="module")
def wrapping():
    return kf.new_wrapping_key(3072)


@pytest.fixture(scope="module")
def make_quote(stack):
    return kf.sim_quote_maker(stack.state_dir)


@pytest.fixture(scope="module")
def token(stack, wrapping, make_quote):
    """A v1 passport token binding the module's wrapping key (reusable until it expires)."""
    return kf.ita_token(stack.services["ita"].url, stack.state_dir,
                        kf.user_data_blob(wrapping.public_key()), make_quote)


@pytest.fixture(scope="module")
def rsa_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=3072)


@pytest.fixture(scope="module")
def mrtd_policy(url, admin):
    return kf.create_policy(url, admin, {"mrtd": [MRTD]})


@pytest.fixture(scope="module")
def rsa_key_id(url, admin, rsa_key, mrtd_policy):
    return kf.register_key(url, admin, pem(rsa_key), mrtd_policy)


@pytest.fixture
def kbs_faults(stack):
    yield lambda faults: stack.set_faults("kbs", faults)
    stack.clear_faults("kbs")


def pem(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def der(key):
    return key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def request(url, method, path, body=None, headers=None):
    status, hdrs, data = kf.kbs_request(url, method, path, body, headers)
    return status, hdrs, data


def error_text(data):
    return json.loads(data)["error"]


def passport_status(url, key_id, tok):
    """Status and error text of a passport transfer that is expected to fail."""
    with pytest.raises(kf.KbsHttpError) as e:
        kf.transfer_passport(url, key_id, tok, kf.new_wrapping_key())
    return e.value.status, error_text(e.value.body)


# =========================================================================== header rules

def test_accept_and_content_type_must_be_exact(url, admin, rsa_key_id):
    path = f"/keys/{rsa_key_id}/transfer"
    for accept in ("application/json; charset=utf-8", "*/*", None):
        headers = {} if accept is None else {"Accept": accept}
        status, hdrs, data = request(url, "POST", path, b"", headers)
        assert (status, error_text(data)) == (415, "Invalid Accept header")
        assert hdrs["Content-Type"] == "text/plain; charset=utf-8"      # Go sniffing
    status, _, data = request(url, "POST", path, {"attestation_token": "x"},
                              {"Accept": "application/json",
                               "Content-Type": "application/json; charset=utf-8"})
    assert (status, error_text(data)) == (415, "Invalid Content-type header")
    status, _, data = request(url, "POST", "/key-transfer-policies", {"attestation_type": "TDX"},
                              {**JSON_HEADERS, "Content-Type": "application/json; charset=utf-8",
                               "Authorization": f"Bearer {admin}"})
    assert (status, error_text(data)) == (415, "Invalid Content-type header")
    status, _, _ = request(url, "POST", "/token", {"username": "a", "password": "b"},
                           JSON_HEADERS)
    assert status == 415                                # the token wants Accept application/jwt


def test_unknown_fields_and_bad_json_are_400(url, admin, rsa_key_id):
    path = f"/keys/{rsa_key_id}/transfer"
    for body in ({"attestation_token": "x", "extra": 1}, {"nonce": {"val": "", "x": ""}},
                 {"quote": "not base64!"}, b"{not json"):
        status, _, data = request(url, "POST", path, body,
                                  {**JSON_HEADERS, "Attestation-Type": "TDX"})
        assert (status, error_text(data)) == (400, "Failed to JSON-decode request body")
    status, _, data = request(url, "POST", path, {"quote": ""},
                              {**JSON_HEADERS, "Attestation-Type": "SEV"})
    assert (status, error_text(data)) == (400, "Invalid attestion type header")
    status, _, data = request(url, "POST", path, {"quote": ""}, JSON_HEADERS)
    assert (status, error_text(data)) == (400, "Invalid request body")
    auth = {**JSON_HEADERS, "Authorization": f"Bearer {admin}"}
    for policy in ({"attestation_type": "TDX", "tdx": {}, "color": "red"},
                   {"attestation_type": "TDX", "tdx": {"attributes": {"seamsvn": "3"}}},
                   {"attestation_type": "TDX", "tdx": {"attributes": {"seamsvn": 70000}}}):
        status, _, data = request(url, "POST", "/key-transfer-policies", policy, auth)
        assert (status, error_text(data)) == (400, "Failed to JSON-decode request body")


def test_ids_must_be_uuid_v4(url, admin):
    auth = {"Accept": "application/json", "Authorization": f"Bearer {admin}"}
    for bad in ("not-a-uuid", str(uuid.uuid1()), "6d8d4a1c-1e49-4d6b-7a55-6f0d3c2b8a11"):
        status, hdrs, data = request(url, "GET", f"/keys/{bad}", None, auth)
        assert (status, data) == (404, b"404 page not found\n")
        status, _, _ = request(url, "POST", f"/keys/{bad}/transfer", b"",
                               {"Accept": "application/json"})
        assert status == 404
    status, _, data = request(url, "GET", f"/keys/{uuid.uuid4()}", None, auth)
    assert (status, error_text(data)) == (404, "404: Key with specified id does not exist")
    status, _, data = request(url, "POST", f"/keys/{uuid.uuid4()}/transfer", b"",
                              {"Accept": "application/json"})
    assert (status, error_text(data)) == (404, "404: Key with specified id does not exist")


def test_admin_routes_need_a_valid_bearer(url, admin):
    for headers in ({}, {"Authorization": "Bearer nonsense"},
                    {"Authorization": f"Bearer {admin[:-4]}AAAA"}, {"Authorization": admin}):
        status, hdrs, data = request(url, "GET", "/key-transfer-policies", None,
                                     {"Accept": "application/json", **headers})
        assert (status, data) == (401, b"Unauthorized\n")
        assert hdrs["Content-Type"] == "text/plain; charset=utf-8"
    status, _, data = request(url, "GET", "/version", None, {})
    assert status == 200 and json.loads(data)["name"] == "Key Broker Service"


def test_admin_token_is_ps384_with_scopes_and_bad_password_is_401(stack, url, admin):
    header, claims = (json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))
                      for p in admin.split(".")[:2])
    assert header == {"alg": "PS384", "kid": "secret-id", "typ": "JWT"}
    assert "keys:create" in claims["scp"] and claims["exp"] - claims["iat"] == 300
    creds = dict(pki.kbs_admin(stack.state_dir), password="wrong-password")
    status, _, data = request(url, "POST", "/token", creds,
                              {"Accept": "application/jwt", "Content-Type": "application/json"})
    assert (status, error_text(data)) == (401, "401: invalid username or password provided")


# =========================================================================== admin objects

def test_policy_create_get_and_validation(url, admin, mrtd_policy):
    auth = {**JSON_HEADERS, "Authorization": f"Bearer {admin}"}
    status, _, data = request(url, "GET", f"/key-transfer-policies/{mrtd_policy}", None, auth)
    policy = json.loads(data)
    assert status == 200
    assert list(policy) == ["id", "created_at", "attestation_type", "tdx"]
    assert policy["tdx"] == {"attributes": {"mrtd": [MRTD]}}
    status, _, data = request(url, "POST", "/key-transfer-policies",
                              {"attestation_type": "TDX", "tdx": {"attributes": {"mrtd": ["ab"]}}},
                              auth)
    assert (status, error_text(data)) == (400, "Invalid request body")
    status, _, data = request(url, "POST", "/key-transfer-policies", {"attestation_type": "TDX"},
                              auth)
    assert (status, data) == (500, b"")                 # the real KBS dereferences nil tdx
    status, _, data = request(url, "GET", "/key-transfer-policies", None, auth)
    assert mrtd_policy in [p["id"] for p in json.loads(data)]


def test_register_rsa3072_and_p256_pkcs8_and_reject_pkcs1(url, admin, mrtd_policy, rsa_key,
                                                           rsa_key_id):
    auth = {"Accept": "application/json", "Authorization": f"Bearer {admin}"}
    status, _, data = request(url, "GET", f"/keys/{rsa_key_id}", None, auth)
    assert status == 200
    assert json.loads(data) == {
        "id": rsa_key_id, "key_info": {"algorithm": "RSA", "key_length": 3072},
        "transfer_policy_id": mrtd_policy,
        "transfer_link": f"/kbs/v1/keys/{rsa_key_id}/transfer",
        "created_at": json.loads(data)["created_at"]}
    ec_id = kf.register_key(url, admin, pem(ec.generate_private_key(ec.SECP256R1())),
                            mrtd_policy)
    status, _, data = request(url, "GET", f"/keys/{ec_id}", None, auth)
    assert json.loads(data)["key_info"] == {"algorithm": "EC", "key_length": 2048}
    pkcs1 = rsa_key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.TraditionalOpenSSL,
                                  serialization.NoEncryption())
    with pytest.raises(kf.KbsHttpError) as e:
        kf.register_key(url, admin, pkcs1, mrtd_policy)
    assert (e.value.status, error_text(e.value.body)) == (500, "500: Failed to register key")
    status, _, data = request(url, "DELETE", f"/key-transfer-policies/{mrtd_policy}", None, auth)
    assert (status, error_text(data)) == (400, "400: Key transfer policy is associated with keys")


def test_key_search_update_delete(url, admin, mrtd_policy):
    auth = {**JSON_HEADERS, "Authorization": f"Bearer {admin}"}
    status, _, data = request(url, "POST", "/keys",
                              {"key_information": {"algorithm": "AES", "key_length": 256}}, auth)
    key = json.loads(data)
    assert status == 201 and key["key_info"] == {"algorithm": "AES", "key_length": 256}
    assert "transfer_policy_id" not in key
    status, _, data = request(url, "GET", "/keys", None, auth)
    assert (status, error_text(data)) == (
        400, "Invalid query parameter provided. Refer to API doc for details.")
    status, _, data = request(url, "GET", "/keys?algorithm=AES", None, auth)
    assert key["id"] in [k["id"] for k in json.loads(data)]
    status, _, data = request(url, "PUT", f"/keys/{key['id']}",
                              {"transfer_policy_id": mrtd_policy}, auth)
    assert status == 201 and json.loads(data)["transfer_policy_id"] == mrtd_policy
    status, _, data = request(url, "GET", f"/keys?transferPolicyId={mrtd_policy}", None, auth)
    assert key["id"] in [k["id"] for k in json.loads(data)]
    assert request(url, "DELETE", f"/keys/{key['id']}", None, auth)[0] == 204
    assert request(url, "DELETE", f"/keys/{key['id']}", None, auth)[0] == 404


# =========================================================================== transfers

def test_passport_transfer_releases_registered_rsa3072(url, rsa_key, rsa_key_id, token,
                                                       wrapping):
    assert kf.transfer_passport(url, rsa_key_id, token, wrapping) == der(rsa_key)


def test_passport_transfer_of_p256_key(url, admin, mrtd_policy, token, wrapping):
    key = ec.generate_private_key(ec.SECP256R1())
    key_id = kf.register_key(url, admin, pem(key), mrtd_policy)
    assert kf.transfer_passport(url, key_id, token, wrapping) == der(key)


def test_background_transfer(stack, url, rsa_key, rsa_key_id, wrapping, make_quote):
    stack.clear_requests("ita")
    nonce, att_type = kf.transfer_nonce(url, rsa_key_id)
    assert att_type == "TDX" and set(nonce) == {"val", "iat", "signature"}
    assert len(base64.b64decode(nonce["val"])) == 88
    assert kf.transfer_background(url, rsa_key_id, wrapping, make_quote) == der(rsa_key)
    calls = [(r["method"], r["path"], r["request_id"], r["has_api_key"])
             for r in stack.requests("ita") if "/appraisal/" in r["path"]]
    assert calls == [("GET", "/appraisal/v1/nonce", rsa_key_id, True)] * 2 + [
        ("POST", "/appraisal/v1/attest", rsa_key_id, True)]


def test_background_single_shot_and_release_response_shape(url, rsa_key, rsa_key_id, wrapping,
                                                           make_quote):
    """No nonce: REPORTDATA = SHA-512(blob); Go-encoded release, empty Attestation-Type."""
    blob = kf.user_data_blob(wrapping.public_key())
    body = {"quote": base64.b64encode(make_quote(kf.report_data(None, blob))).decode(),
            "user_data": base64.b64encode(blob).decode()}
    status, hdrs, data = request(url, "POST", f"/keys/{rsa_key_id}/transfer", body,
                                 {**JSON_HEADERS, "Attestation-Type": "TDX"})
    assert status == 200 and hdrs["Content-Type"] == "application/json"
    assert hdrs["Attestation-Type"] == "" and data.endswith(b"}\n")
    resp = json.loads(data)
    assert list(resp) == ["wrapped_key", "wrapped_swk"]
    wrapped_key = base64.b64decode(resp["wrapped_key"])
    ct_len = len(der(rsa_key)) + 16
    assert wrapped_key[:12] == (12).to_bytes(4, "little") + (16).to_bytes(4, "little") + \
        ct_len.to_bytes(4, "little") and len(wrapped_key) == 24 + ct_len
    assert len(base64.b64decode(resp["wrapped_swk"])) == 384
    assert kf.unwrap(resp["wrapped_key"], resp["wrapped_swk"], wrapping) == der(rsa_key)


def test_background_failures(stack, url, rsa_key_id, wrapping, make_quote):
    blob = kf.user_data_blob(wrapping.public_key())
    nonce, _ = kf.transfer_nonce(url, rsa_key_id)
    body = {"quote": base64.b64encode(make_quote(kf.report_data(None, blob))).decode(),
            "nonce": nonce, "user_data": base64.b64encode(blob).decode()}
    path = f"/keys/{rsa_key_id}/transfer"
    status, _, data = request(url, "POST", path, body, {**JSON_HEADERS, "Attestation-Type": "TDX"})
    assert (status, error_text(data)) == (
        502, "502: Error retrieving token from Trust Authority service")   # REPORTDATA mismatch
    status, _, data = request(url, "POST", path, body, {**JSON_HEADERS, "Attestation-Type": "SGX"})
    assert status == 401 and "attestation-type in request header" in error_text(data)
    stack.set_faults("ita", [{"route": "/nonce", "mode": "status", "status": 503}])
    try:
        status, _, data = request(url, "POST", path, b"", {"Accept": "application/json"})
    finally:
        stack.clear_faults("ita")
    assert (status, error_text(data)) == (
        502, "502: Error retrieving nonce from Trust Authority service")


# =========================================================================== policy and token

def test_wrong_mrtd_is_denied(url, admin, token):
    key_id = kf.register_key(url, admin, pem(ec.generate_private_key(ec.SECP256R1())),
                             kf.create_policy(url, admin, {"mrtd": [OTHER_MRTD]}))
    assert passport_status(url, key_id, token) == (
        401, "401: 0: Token claims validation against key-transfer-policy failed")


def test_policy_id_shortcut_overrides_attributes(stack, url, admin, wrapping, make_quote):
    policy = kf.create_policy(url, admin, {"mrtd": [OTHER_MRTD]}, policy_ids=[ITA_POLICY_ID])
    key = ec.generate_private_key(ec.SECP384R1())
    key_id = kf.register_key(url, admin, pem(key), policy)
    with_ids = kf.ita_token(stack.services["ita"].url, stack.state_dir,
                            kf.user_data_blob(wrapping.public_key()), make_quote,
                            policy_ids=[ITA_POLICY_ID])
    assert kf.transfer_passport(url, key_id, with_ids, wrapping) == der(key)


def test_enforce_tcb_upto_date_wants_ok_like_the_real_kbs(url, admin, token):
    key_id = kf.register_key(url, admin, pem(ec.generate_private_key(ec.SECP256R1())),
                             kf.create_policy(url, admin, {"enforce_tcb_upto_date": True}))
    assert passport_status(url, key_id, token)[0] == 401       # ITA says "UpToDate", not "OK"


def test_policy_without_attributes_and_no_shortcut_is_500(url, admin, token):
    key_id = kf.register_key(url, admin, pem(ec.generate_private_key(ec.SECP256R1())),
                             kf.create_policy(url, admin, policy_ids=[ITA_POLICY_ID]))
    with pytest.raises(kf.KbsHttpError) as e:
        kf.transfer_passport(url, key_id, token, kf.new_wrapping_key())
    assert e.value.status == 500                  # token without policy_ids_matched: nil attrs


def test_v2_token_is_rejected(stack, url, rsa_key_id, wrapping, make_quote):
    v2 = kf.ita_token(stack.services["ita"].url, stack.state_dir,
                      kf.user_data_blob(wrapping.public_key()), make_quote, version=2)
    assert passport_status(url, rsa_key_id, v2) == (
        401, "401: attestation-token is not valid for attestation-type in key-transfer policy")


def test_wrapping_key_of_2048_bits_is_500(stack, url, rsa_key_id, make_quote):
    small = kf.new_wrapping_key(2048)
    tok = kf.ita_token(stack.services["ita"].url, stack.state_dir,
                       kf.user_data_blob(small.public_key()), make_quote)
    with pytest.raises(kf.KbsHttpError) as e:
        kf.transfer_passport(url, rsa_key_id, tok, small)
    assert (e.value.status, error_text(e.value.body)) == (
        500, "500: 0: Error in getting public key")


@pytest.mark.parametrize("mode", ["expired", "tampered", "foreign_root", "revoked_leaf",
                                  "hs256", "alg_none"])
def test_bad_tokens_are_401(stack, url, rsa_key_id, wrapping, make_quote, mode):
    stack.set_faults("ita", [{"route": "/attest", "mode": mode, "count": 1}])
    try:
        bad = kf.ita_token(stack.services["ita"].url, stack.state_dir,
                           kf.user_data_blob(wrapping.public_key()), make_quote)
    finally:
        stack.clear_faults("ita")
    assert passport_status(url, rsa_key_id, bad) == (
        401, "401: Failed to authenticate attestation-token")


def test_forged_and_garbage_tokens_are_401(url, rsa_key_id, token):
    h, p, s = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))
    claims["tdx_mrtd"] = OTHER_MRTD
    forged = ".".join((h, base64.urlsafe_b64encode(json.dumps(claims).encode())
                       .rstrip(b"=").decode(), s))
    for bad in (forged, "a.b.c", token + "x"):
        assert passport_status(url, rsa_key_id, bad)[0] == 401


# =========================================================================== KBS faults

@pytest.mark.parametrize("fault", [{"mode": "corrupt_wrap"}, {"mode": "corrupt_swk"},
                                   {"mode": "bad_header"},
                                   {"mode": "bad_header", "variant": "ct_len"}])
def test_fault_breaks_unwrap(url, rsa_key_id, token, wrapping, kbs_faults, fault):
    kbs_faults([{"route": "/transfer", **fault}])
    with pytest.raises(kf.UnwrapError):
        kf.transfer_passport(url, rsa_key_id, token, wrapping)


def test_fault_wrong_key_releases_another_key(url, rsa_key, rsa_key_id, token, wrapping,
                                              kbs_faults):
    kbs_faults([{"route": "/transfer", "mode": "wrong_key"}])
    other = kf.transfer_passport(url, rsa_key_id, token, wrapping)
    assert other != der(rsa_key)
    assert serialization.load_der_private_key(other, None).key_size == 3072


def test_faults_deny_and_not_found(url, rsa_key_id, token, kbs_faults):
    kbs_faults([{"route": "/transfer", "mode": "deny", "count": 1},
                {"route": "/transfer", "mode": "not_found", "count": 1}])
    assert passport_status(url, rsa_key_id, token)[0] == 401
    assert passport_status(url, rsa_key_id, token)[0] == 404


# =========================================================================== key managers

def traditional(key):
    """PKCS#1 RSAPrivateKey or SEC1 ECPrivateKey (with [0] and [1]) DER, as OpenSSL writes it."""
    return key.private_bytes(serialization.Encoding.DER,
                             serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())


def kmip_kbs(stack, sec1_form):
    """A KBS with the kmip key manager and this SEC1 form, started once per module; (url, admin,
    policy)."""
    name = f"kbs-kmip-{sec1_form}"
    if name not in stack.services:
        kf.start_kbs(stack, name=name, ita_retry_wait=0.1, key_manager="kmip", sec1_form=sec1_form)
    url = stack.services[name].url
    admin = kf.kbs_admin_token(url, stack.state_dir)
    return url, admin, kf.create_policy(url, admin, {"mrtd": [MRTD]})


def asn1(der_bytes):
    """openssl asn1parse's lines for DER (an independent parser of what the stand-in sent)."""
    r = subprocess.run(["openssl", "asn1parse", "-inform", "DER"], input=der_bytes,
                       capture_output=True, check=True)
    return [re.search(r"(?:prim|cons): (.*)$", line).group(1).strip()
            for line in r.stdout.decode().splitlines()]


@pytest.mark.parametrize("kind", ["rsa2048", "rsa3072", "p256", "p384"])
def test_kmip_key_manager_releases_pkcs1_and_sec1(stack, token, wrapping, kind):
    """--key-manager kmip: the KMIP server's KeyMaterial form, PKCS#1 for RSA and SEC1 for EC
    (the default SEC1 form is RFC 5915's: named curve and publicKey); the vault manager of the
    module's KBS releases the same key as PKCS#8."""
    key = (rsa.generate_private_key(public_exponent=65537, key_size=int(kind[3:]))
           if kind.startswith("rsa")
           else ec.generate_private_key({"p256": ec.SECP256R1(), "p384": ec.SECP384R1()}[kind]))
    url, admin, policy = kmip_kbs(stack, "full")
    released = kf.transfer_passport(url, kf.register_key(url, admin, pem(key), policy), token,
                                    wrapping)
    assert released == traditional(key) and released != der(key)
    vault = stack.kbs.url
    vault_admin = kf.kbs_admin_token(vault, stack.state_dir)
    key_id = kf.register_key(vault, vault_admin, pem(key),
                             kf.create_policy(vault, vault_admin, {"mrtd": [MRTD]}))
    assert kf.transfer_passport(vault, key_id, token, wrapping) == der(key)


@pytest.mark.parametrize("form,params,public", [("full", True, True), ("no-params", False, True),
                                                ("no-public", True, False),
                                                ("bare", False, False)])
def test_kmip_sec1_forms(stack, token, wrapping, form, params, public):
    """--sec1-form: SEC1 ECPrivateKey with or without the named curve [0] and the publicKey [1];
    version 1 and the scalar padded to the curve's size in every form."""
    key = ec.generate_private_key(ec.SECP384R1())
    url, admin, policy = kmip_kbs(stack, form)
    released = kf.transfer_passport(url, kf.register_key(url, admin, pem(key), policy), token,
                                    wrapping)
    lines = asn1(released)
    scalar = key.private_numbers().private_value.to_bytes(48, "big").hex().upper()
    assert lines[:3] == ["SEQUENCE", "INTEGER           :01", f"OCTET STRING      [HEX DUMP]:{scalar}"]
    assert ("OBJECT            :secp384r1" in lines) == params
    assert ("cont [ 0 ]" in lines) == params and ("cont [ 1 ]" in lines) == public
    if params:
        loaded = serialization.load_der_private_key(released, None)
        assert loaded.private_numbers() == key.private_numbers()


def test_kmip_wrong_scalar_fault_keeps_its_inconsistency(stack, token, wrapping):
    """The wrong_scalar fault's PKCS#1 has the requested key's n with another key's private half
    (what unwrap's pairwise check refuses)."""
    url, admin, policy = kmip_kbs(stack, "full")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key_id = kf.register_key(url, admin, pem(key), policy)
    name = next(n for n, s in stack.services.items() if s.url == url)
    stack.set_faults(name, [{"mode": "wrong_scalar"}])
    try:
        released = kf.transfer_passport(url, key_id, token, wrapping)
    finally:
        stack.clear_faults(name)
    lines = asn1(released)
    assert lines[1] == "INTEGER           :00"
    assert lines[2] == "INTEGER           :" + format(key.private_numbers().public_numbers.n, "X")
    assert lines[4] != "INTEGER           :" + format(key.private_numbers().d, "X")


# =========================================================================== the 2026 generation

@pytest.fixture(scope="module")
def kbs2026(stack):
    """A KBS of the 2026 generation beside the v1.3.0 one; (url, admin, policy)."""
    name = "kbs-2026"
    if name not in stack.services:
        kf.start_kbs(stack, name=name, ita_retry_wait=0.1, generation="2026")
    url = stack.services[name].url
    admin = kf.kbs_admin_token(url, stack.state_dir)
    return url, admin, kf.create_policy(url, admin, {"mrtd": [MRTD]})


def new_key_on(kbs, curve=ec.SECP256R1()):
    url, admin, policy = kbs
    key = ec.generate_private_key(curve)
    return key, kf.register_key(url, admin, pem(key), policy)


def test_2026_reports_its_version_and_issues_no_nonce(stack, url, kbs2026):
    status, _, data = request(kbs2026[0], "GET", "/version")
    assert status == 200 and json.loads(data)["version"] == "v1.4.0"
    assert json.loads(request(url, "GET", "/version")[2])["version"] == "v1.3.0"
    _, key_id = new_key_on(kbs2026)
    stack.clear_requests("ita")
    status, _, data = request(kbs2026[0], "POST", f"/keys/{key_id}/transfer", b"",
                              {"Accept": "application/json"})
    assert (status, error_text(data)) == (
        400, "400: attestation_token or Attestation-Type header is required")
    assert not [r for r in stack.requests("ita") if "/appraisal/" in r["path"]]
    # the key is looked up first: an unknown key is still 404
    status, _, _ = request(kbs2026[0], "POST", f"/keys/{uuid.uuid4()}/transfer", b"",
                           {"Accept": "application/json"})
    assert status == 404


def test_2026_background_is_one_request_without_a_nonce(stack, kbs2026, wrapping, make_quote):
    key, key_id = new_key_on(kbs2026)
    stack.clear_requests("ita")
    assert kf.transfer_background_2026(kbs2026[0], key_id, wrapping, make_quote) == der(key)
    calls = [(r["method"], r["path"]) for r in stack.requests("ita") if "/appraisal/" in r["path"]]
    assert calls == [("POST", "/appraisal/v2/attest")]          # no nonce, from anyone


def test_2026_background_refuses_a_nonce_binding_and_the_old_field(kbs2026, wrapping, make_quote):
    _, key_id = new_key_on(kbs2026)
    blob = kf.user_data_blob(wrapping.public_key())
    nonce = {"val": base64.b64encode(b"v" * 88).decode(), "iat": base64.b64encode(b"i").decode()}
    path = f"/keys/{key_id}/transfer"
    headers = {**JSON_HEADERS, "Attestation-Type": "TDX"}
    # a quote bound to a nonce: ITA, called without one, looks for SHA-512(runtime_data)
    body = {"quote": base64.b64encode(make_quote(kf.report_data(nonce, blob))).decode(),
            "runtime_data": base64.b64encode(blob).decode()}
    status, _, data = request(kbs2026[0], "POST", path, body, headers)
    assert (status, error_text(data)) == (
        502, "502: Error retrieving token from Trust Authority service")
    # v1.3.0's field names are unknown fields here
    body = {"quote": base64.b64encode(make_quote(kf.report_data(None, blob))).decode(),
            "user_data": base64.b64encode(blob).decode()}
    status, _, data = request(kbs2026[0], "POST", path, body, headers)
    assert (status, error_text(data)) == (400, "Failed to JSON-decode request body")
    # composite GPU evidence is not modelled: answered as an ITA refusal
    body = {"quote": body["quote"], "runtime_data": body["user_data"], "nvgpu": {"arch": "HOPPER"}}
    assert request(kbs2026[0], "POST", path, body, headers)[0] == 502


@pytest.mark.parametrize("version", [1, 2])
def test_2026_passport_takes_v1_and_v2_tokens(stack, kbs2026, wrapping, make_quote, version):
    key, key_id = new_key_on(kbs2026, ec.SECP384R1())
    tok = kf.ita_token(stack.services["ita"].url, stack.state_dir,
                       kf.user_data_blob(wrapping.public_key()), make_quote, version=version)
    assert kf.transfer_passport(kbs2026[0], key_id, tok, wrapping) == der(key)


def test_2026_v2_token_policy_is_still_applied(stack, kbs2026, admin, wrapping, make_quote):
    url, admin26, _ = kbs2026
    key_id = kf.register_key(url, admin26, pem(ec.generate_private_key(ec.SECP256R1())),
                             kf.create_policy(url, admin26, {"mrtd": [OTHER_MRTD]}))
    v2 = kf.ita_token(stack.services["ita"].url, stack.state_dir,
                      kf.user_data_blob(wrapping.public_key()), make_quote, version=2)
    assert passport_status(url, key_id, v2) == (
        401, "401: 0: Token claims validation against key-transfer-policy failed")


@pytest.mark.parametrize("mode", ["passport", "background"])
def test_2026_takes_a_pem_spki_held_data(stack, kbs2026, wrapping, make_quote, mode):
    key, key_id = new_key_on(kbs2026)
    spki = kf.user_data_pem(wrapping.public_key())
    if mode == "passport":
        tok = kf.ita_token(stack.services["ita"].url, stack.state_dir, spki, make_quote)
        assert kf.transfer_passport(kbs2026[0], key_id, tok, wrapping) == der(key)
    else:
        assert kf.transfer_background_2026(kbs2026[0], key_id, wrapping, make_quote,
                                           user_data=spki) == der(key)


def test_v1_3_0_refuses_a_pem_spki_held_data(stack, url, rsa_key_id, wrapping, make_quote):
    tok = kf.ita_token(stack.services["ita"].url, stack.state_dir,
                       kf.user_data_pem(wrapping.public_key()), make_quote)
    # read as LE32(e) ‖ n: e = "----" is no exponent Go's RSA-OAEP takes
    assert passport_status(url, rsa_key_id, tok) == (500, "500: 0: Failed to wrap key")


def test_2026_v1_passport_with_a_wrong_binding(stack, kbs2026, wrapping, make_quote):
    """A v1 token whose held data is not a usable key (a 2048-bit PEM key, a short blob) is a
    500 at the KBS; a token bound to another key releases a key nobody else can unwrap."""
    _, key_id = new_key_on(kbs2026)
    ita_url = stack.services["ita"].url
    small = kf.user_data_pem(kf.new_wrapping_key(2048).public_key())
    for held in (small, b"\x01\x00\x01\x00" + b"\xff" * 8):
        tok = kf.ita_token(ita_url, stack.state_dir, held, make_quote)
        assert passport_status(kbs2026[0], key_id, tok) == (500, "500: 0: Error in getting public key")
    other = kf.ita_token(ita_url, stack.state_dir, kf.user_data_blob(wrapping.public_key()),
                         make_quote)
    with pytest.raises(kf.UnwrapError):
        kf.transfer_passport(kbs2026[0], key_id, other, kf.new_wrapping_key())


# =========================================================================== fixed-cost mode

COST_MS = 250           # long enough that two transfers started together overlap


@pytest.fixture(scope="module")
def kbs_cost(stack):
    """A KBS in fixed-cost mode (--transfer-cost-ms) beside the others; (url, key, key id)."""
    name = "kbs-cost"
    if name not in stack.services:
        kf.start_kbs(stack, name=name, ita_retry_wait=0.1, transfer_cost_ms=COST_MS)
    url = stack.services[name].url
    admin = kf.kbs_admin_token(url, stack.state_dir)
    key = ec.generate_private_key(ec.SECP256R1())
    return url, key, kf.register_key(url, admin, pem(key), kf.create_policy(url, admin,
                                                                          {"mrtd": [MRTD]}))


def transfer_log(stack, name="kbs-cost"):
    return [r for r in stack.requests(name) if r["path"].endswith("/transfer")]


def verification_fetches(stack):
    """What a KBS fetched from ITA to verify tokens: the JWKS and the CRLs."""
    return sorted(r["path"] for r in stack.requests("ita")
                  if r["path"] == "/certs" or r["path"].startswith("/crl/"))


def test_fixed_cost_transfer_takes_the_stated_time_and_verifies_a_token_once(
        stack, kbs_cost, token, wrapping):
    url, key, key_id = kbs_cost
    stack.clear_requests("kbs-cost")
    stack.clear_requests("ita")
    assert kf.transfer_passport(url, key_id, token, wrapping) == der(key)
    assert kf.transfer_passport(url, key_id, token, wrapping) == der(key)
    log = transfer_log(stack)
    assert [r["status"] for r in log] == [200, 200]
    assert [r["token_cached"] for r in log] == [False, True]
    for r in log:       # the service time is padded to the stated cost (or reports its excess)
        assert r["cost_ms"] == COST_MS and r["ms"] >= COST_MS and r["inflight"] == 1
        assert r["over_cost"] == (r["work_ms"] > COST_MS)
    # one JWKS and one download of each CRL for both transfers (the normal KBS: per transfer)
    assert verification_fetches(stack) == ["/certs", "/crl/ats-ca-crl.der",
                                           "/crl/root-ca-crl.der"]


def test_fixed_cost_verifies_another_token_afresh_with_the_cached_jwks(
        stack, kbs_cost, token, wrapping, make_quote):
    url, key, key_id = kbs_cost
    assert kf.transfer_passport(url, key_id, token, wrapping) == der(key)   # caches filled
    other = kf.ita_token(stack.services["ita"].url, stack.state_dir,
                         kf.user_data_blob(wrapping.public_key()), make_quote)
    assert other != token
    stack.clear_requests("kbs-cost")
    stack.clear_requests("ita")
    assert kf.transfer_passport(url, key_id, other, wrapping) == der(key)
    assert [r["token_cached"] for r in transfer_log(stack)] == [False]
    assert verification_fetches(stack) == []


def test_fixed_cost_still_refuses_forged_tokens(stack, kbs_cost, token, wrapping):
    """The cache holds verified tokens only: a token that differs from one verified before in
    its claims or its signature, or takes another's signature, is verified and refused."""
    url, key, key_id = kbs_cost
    assert kf.transfer_passport(url, key_id, token, wrapping) == der(key)   # token cached
    h, p, s = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))
    claims["exp"] += 3600
    forged = ".".join((h, base64.urlsafe_b64encode(json.dumps(claims).encode())
                       .rstrip(b"=").decode(), s))
    stack.clear_requests("kbs-cost")
    for bad in (forged, token + "x", token[:-2], "a.b.c"):
        assert passport_status(url, key_id, bad) == (
            401, "401: Failed to authenticate attestation-token")
    log = transfer_log(stack)
    assert [r["status"] for r in log] == [401] * 4
    assert not [r for r in log if r.get("token_cached") or "cost_ms" in r]   # not padded either


@pytest.mark.parametrize("mode", ["expired", "tampered", "foreign_root", "revoked_leaf"])
def test_fixed_cost_refuses_bad_tokens_with_the_jwks_and_crls_cached(
        stack, kbs_cost, token, wrapping, make_quote, mode):
    url, _, key_id = kbs_cost
    kf.transfer_passport(url, key_id, token, wrapping)          # JWKS and CRLs cached
    stack.set_faults("ita", [{"route": "/attest", "mode": mode, "count": 1}])
    try:
        bad = kf.ita_token(stack.services["ita"].url, stack.state_dir,
                           kf.user_data_blob(wrapping.public_key()), make_quote)
    finally:
        stack.clear_faults("ita")
    for _ in range(2):                      # a refused token is never cached
        assert passport_status(url, key_id, bad) == (
            401, "401: Failed to authenticate attestation-token")


def test_concurrent_transfers_overlap(stack, kbs_cost, token, wrapping):
    """server.py serves connections on threads and the fixed cost is a sleep without the GIL:
    two transfers started together are both in flight (the log's inflight reaches 2)."""
    url, key, key_id = kbs_cost
    kf.transfer_passport(url, key_id, token, wrapping)          # token verified and cached
    stack.clear_requests("kbs-cost")
    results = []
    threads = [threading.Thread(target=lambda: results.append(
        kf.transfer_passport(url, key_id, token, wrapping))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [der(key)] * 2
    assert sorted(r["inflight"] for r in transfer_log(stack)) == [1, 2]


def test_inflight_is_logged_in_the_normal_mode_and_cost_is_a_runtime_knob(
        stack, url, rsa_key, rsa_key_id, token, wrapping):
    stack.clear_requests("kbs")
    assert kf.transfer_passport(url, rsa_key_id, token, wrapping) == der(rsa_key)
    status, _, _ = request(url, "POST", f"/keys/{rsa_key_id}/transfer", b"",
                           {"Accept": "application/json"})                     # a nonce request
    assert status == 200
    log = transfer_log(stack, "kbs")
    assert [r["inflight"] for r in log] == [1, 1]
    assert not [r for r in log if "cost_ms" in r or "token_cached" in r]      # off by default
    assert stack.control("kbs", "GET", "/_stack/transfer-cost") == {"ms": None}
    try:
        assert stack.control("kbs", "PUT", "/_stack/transfer-cost", {"ms": 30}) == {"ms": 30.0}
        stack.clear_requests("kbs")
        assert kf.transfer_passport(url, rsa_key_id, token, wrapping) == der(rsa_key)
        (rec,) = transfer_log(stack, "kbs")
        assert rec["cost_ms"] == 30.0 and rec["ms"] >= 30.0
        for bad in ({"ms": -1}, {"ms": "x"}, {"ms": 20000}):
            with pytest.raises(RuntimeError, match="HTTP 400"):
                stack.control("kbs", "PUT", "/_stack/transfer-cost", bad)
        assert stack.control("kbs", "GET", "/_stack/transfer-cost") == {"ms": 30.0}
    finally:
        assert stack.control("kbs", "PUT", "/_stack/transfer-cost", {"ms": None}) == {"ms": None}
    stack.clear_requests("kbs")
    kf.transfer_passport(url, rsa_key_id, token, wrapping)
    assert "cost_ms" not in transfer_log(stack, "kbs")[0]


def test_listen_backlog_takes_a_burst_of_parallel_connects(stack, url):
    """A client's parallel workers connect at once; with socketserver's default backlog of 5 the
    kernel drops the surplus SYNs and those connects stall a second (SYN retransmit)."""
    port = stack.services["kbs"].port
    out = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True,
                         check=True).stdout.split()
    assert int(out[2]) >= 64            # Send-Q of a listening socket: its backlog
