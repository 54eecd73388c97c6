# SPDX-License-Identifier: Apache-2.0
"""The Trustee KBS stand-in (tests/stack/trustee.py) against its spec (docs/protocols/trustee-rcar.md),
driven by the Python RCAR client of trustee_fixture.py. Its JWE is decrypted here with
python-cryptography (trustee_fixture.decrypt_jwe) and with jwcrypto, a JOSE library nobody here
wrote, independently of keygate's C code."""
import base64
import hashlib
import json
import re
import time

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwcrypto import jwe as jw_jwe
from jwcrypto import jwk as jw_jwk

from tests.stack.fixtures import copy_state
from tests.stack.kbs_fixture import sim_quote_maker
from tests.stack.trustee import jcs, thumbprint
from tests.stack.trustee_fixture import (JweError, RcarClient, TrusteeHttpError, decrypt_jwe, put_resource,
                                         set_policy, start_trustee, trustee_request)

SECRET = b"-----BEGIN PRIVATE KEY-----\nnot a key, only bytes the stand-in must not alter\n" \
         b"-----END PRIVATE KEY-----\n"


@pytest.fixture(scope="module")
def stack(stack_dir, tmp_path_factory):
    s = copy_state(stack_dir, tmp_path_factory.mktemp("trustee-stack") / "state")
    s.start_ita()
    start_trustee(s)
    put_resource(s, "repo/tls/web", SECRET)
    yield s
    s.stop_all()


@pytest.fixture
def trustee(stack):
    stack.clear_faults("trustee")
    stack.clear_faults("ita")
    set_policy(stack, {"default": True, "rules": []})
    yield stack
    stack.clear_faults("trustee")
    stack.clear_faults("ita")


@pytest.fixture
def make_quote(stack):
    return sim_quote_maker(stack.state_dir)


def jwcrypto_decrypt(jwe_json, private_key):
    key = jw_jwk.JWK.from_pem(private_key.private_bytes(serialization.Encoding.PEM,
                                                        serialization.PrivateFormat.PKCS8,
                                                        serialization.NoEncryption()))
    token = jw_jwe.JWE()
    token.deserialize(json.dumps(jwe_json), key=key)
    return token.payload


def test_jcs_rfc8785_examples():
    # RFC 8785 §3.2.3: UTF-16 code unit order (U+1F600 before U+FB33)
    obj = {"\u20ac": "Euro Sign", "\r": "Carriage Return", "\ufb33": "Hebrew Letter Dalet With Dagesh",
           "1": "One", "\U0001f600": "Emoji: Grinning Face", "\u0080": "Control",
           "\u00f6": "Latin Small Letter O With Diaeresis"}
    assert list(json.loads(jcs(obj))) == ["\r", "1", "\u0080", "\u00f6", "\u20ac", "\U0001f600", "\ufb33"]
    assert jcs({"s": "\u20ac$\u000f\nA'B\"\\\\\"/", "l": [None, True, False]}) == \
        '{"l":[null,true,false],"s":"\u20ac$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}'


@pytest.mark.parametrize("kind", ["ec", "rsa"])
def test_handshake_and_resource_decrypt_independently(trustee, make_quote, kind):
    client = RcarClient(trustee, key_kind=kind)
    challenge, headers = client.auth()
    assert re.fullmatch(r"kbs-session-id=[0-9a-f]{32}; Expires=\w{3}, \d\d \w{3} \d{4} [\d:]{8} GMT; Path=/kbs/v0",
                        headers["Set-Cookie"])
    assert len(base64.b64decode(challenge["nonce"], validate=True)) == 32
    assert challenge["extra-params"] == {"selected-hash-algorithm": "sha512"}  # ITA backend
    token = client.attest(make_quote)
    claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    assert claims["ver"] == "2.0.0"
    rt = claims["tdx"]["attester_runtime_data"]
    assert rt["tee-pubkey"] == client.jwk and rt["nonce"] == client.nonce and rt["additional-evidence"] == ""
    assert bytes.fromhex(claims["tdx"]["tdx_report_data"]) == client.report_data()
    assert client.attest(make_quote) == token  # a second attest of the session: the same token
    jwe = client.get_resource("repo/tls/web")
    assert list(jwe) == ["protected", "encrypted_key", "iv", "ciphertext", "tag"]
    header = json.loads(base64.urlsafe_b64decode(jwe["protected"] + "=="))
    if kind == "ec":
        assert list(header) == ["alg", "enc", "epk"] and header["alg"] == "ECDH-ES+A256KW"
        assert list(header["epk"]) == ["crv", "kty", "x", "y"] and header["epk"]["crv"] == "P-256"
        assert len(base64.urlsafe_b64decode(jwe["encrypted_key"] + "==")) == 40
    else:
        assert header == {"alg": "RSA-OAEP-256", "enc": "A256GCM"}
    assert all("=" not in v for v in jwe.values())
    assert decrypt_jwe(jwe, client.private_key) == SECRET
    assert jwcrypto_decrypt(jwe, client.private_key) == SECRET
    # the token as Bearer serves too (passport-style)
    assert decrypt_jwe(client.get_resource("repo/tls/web", bearer=True), client.private_key) == SECRET
    # the JWE is for this TEE key only
    with pytest.raises(JweError):
        decrypt_jwe(jwe, RcarClient(trustee, key_kind=kind).private_key)


def test_hash_negotiation_and_report_data_check(trustee, make_quote):
    client = RcarClient(trustee, hash_algorithms=["sha384"])  # no sha512 offered: protocol default
    challenge, _ = client.auth()
    assert challenge["extra-params"] == "" and client.hash == "sha384"
    with pytest.raises(TrusteeHttpError) as e:  # Trustee accepts SHA-384; ITA wants SHA-512
        client.attest(make_quote)
    assert e.value.status == 401 and e.value.kind == "AttestationError" and b"ITA attest failed" in e.value.body
    client = RcarClient(trustee)
    client.auth()
    wrong = hashlib.sha384(b"not the runtime data").digest().ljust(64, b"\0")
    with pytest.raises(TrusteeHttpError) as e:
        client.attest(make_quote, report_data=wrong)
    assert e.value.kind == "AttestationError" and b"REPORTDATA is not sha512" in e.value.body
    client = RcarClient(trustee)
    client.auth()
    client.nonce = base64.b64encode(bytes(32)).decode()  # not the session's challenge
    with pytest.raises(TrusteeHttpError) as e:
        client.attest(make_quote)
    assert e.value.kind == "AttestationError" and b"nonce" in e.value.body


def test_version_tee_and_errors(trustee, make_quote):
    with pytest.raises(TrusteeHttpError) as e:
        RcarClient(trustee, version="0.3.0").auth()
    assert e.value.status == 401 and e.value.kind == "AttestationError" and b"Version Mismatch" in e.value.body
    assert json.loads(e.value.body)["type"] == \
        "https://github.com/confidential-containers/kbs/errors/AttestationError"
    trustee.set_faults("trustee", [{"route": "/auth$", "mode": "version_mismatch"}])
    with pytest.raises(TrusteeHttpError) as e:
        RcarClient(trustee).auth()
    assert b"requires =0.5.0" in e.value.body
    trustee.clear_faults("trustee")
    status, _, body = trustee_request(trustee, "POST", "/kbs/v0/auth", {"version": "0.4.0", "tee": "snp"},
                                      {"Content-Type": "application/json"})
    assert status == 401 and b"unsupported tee" in body
    status, _, body = trustee_request(trustee, "GET", "/kbs/v0/resource/repo/tls/web")
    assert status == 401 and json.loads(body)["type"].endswith("/TokenNotFound")
    status, _, body = trustee_request(trustee, "POST", "/kbs/v0/resource/repo/tls/web", b"x")
    assert status == 401 and json.loads(body)["type"].endswith("/AdminAuth")
    client = RcarClient(trustee)
    client.handshake(make_quote)
    with pytest.raises(TrusteeHttpError) as e:
        client.get_resource("repo/tls/missing")
    assert e.value.status == 401 and e.value.kind == "PluginInternalError"


def test_session_faults(trustee, make_quote):
    trustee.set_faults("trustee", [{"route": "/auth$", "mode": "bad_cookie"}])
    client = RcarClient(trustee)
    client.auth()
    with pytest.raises(TrusteeHttpError) as e:
        client.attest(make_quote)
    assert e.value.kind == "AttestationError" and b"no session" in e.value.body
    trustee.set_faults("trustee", [{"route": "/resource/", "mode": "expired_session", "count": 1}])
    client = RcarClient(trustee)
    client.handshake(make_quote)
    with pytest.raises(TrusteeHttpError) as e:
        client.get_resource("repo/tls/web")
    assert e.value.kind == "TokenNotFound"
    with pytest.raises(TrusteeHttpError):  # the session is gone for good
        client.get_resource("repo/tls/web")
    assert decrypt_jwe(client.get_resource("repo/tls/web", bearer=True), client.private_key) == SECRET


def test_session_timeout(stack, make_quote):
    start_trustee(stack, name="trustee-short", session_timeout=1)
    try:
        put_resource(stack, "repo/tls/web", SECRET, name="trustee-short")
        client = RcarClient(stack, name="trustee-short")
        client.handshake(make_quote)
        assert decrypt_jwe(client.get_resource("repo/tls/web"), client.private_key) == SECRET
        time.sleep(1.5)
        with pytest.raises(TrusteeHttpError) as e:
            client.get_resource("repo/tls/web")
        assert e.value.kind == "TokenNotFound"
        assert decrypt_jwe(client.get_resource("repo/tls/web", bearer=True), client.private_key) == SECRET
    finally:
        stack.stop("trustee-short")


def test_jwe_faults(trustee, make_quote):
    client = RcarClient(trustee)
    client.handshake(make_quote)
    trustee.set_faults("trustee", [{"route": "/resource/", "mode": "tampered_tag", "count": 1}])
    with pytest.raises(JweError, match="InvalidTag"):
        decrypt_jwe(client.get_resource("repo/tls/web"), client.private_key)
    trustee.set_faults("trustee", [{"route": "/resource/", "mode": "wrong_epk", "count": 1}])
    with pytest.raises(JweError, match="InvalidUnwrap"):
        decrypt_jwe(client.get_resource("repo/tls/web"), client.private_key)
    trustee.set_faults("trustee", [{"route": "/resource/", "mode": "wrong_kid", "count": 1}])
    jwe = client.get_resource("repo/tls/web")
    header = json.loads(base64.urlsafe_b64decode(jwe["protected"] + "=="))
    assert header["kid"] != thumbprint(client.jwk)
    assert decrypt_jwe(jwe, client.private_key) == SECRET  # only the kid is wrong
    rsa_client = RcarClient(trustee, key_kind="rsa")
    rsa_client.handshake(make_quote)
    trustee.set_faults("trustee", [{"route": "/resource/", "mode": "wrong_epk", "count": 1}])
    with pytest.raises(JweError):
        decrypt_jwe(rsa_client.get_resource("repo/tls/web"), rsa_client.private_key)


def test_resource_policy(trustee, make_quote):
    client = RcarClient(trustee)
    client.handshake(make_quote)
    claims = json.loads(base64.urlsafe_b64decode(client.token.split(".")[1] + "=="))
    mrtd = claims["tdx"]["tdx_mrtd"]
    set_policy(trustee, {"default": False, "rules": [
        {"path": "repo/tls/*", "allow": True, "claims": {"tdx.tdx_mrtd": [mrtd]}}]})
    assert decrypt_jwe(client.get_resource("repo/tls/web"), client.private_key) == SECRET
    set_policy(trustee, {"default": False, "rules": [
        {"path": "repo/tls/*", "allow": True, "claims": {"tdx.tdx_mrtd": ["ab" * 48]}}]})
    with pytest.raises(TrusteeHttpError) as e:
        client.get_resource("repo/tls/web")
    assert e.value.status == 401 and e.value.kind == "PolicyDeny"
    set_policy(trustee, {"default": True, "rules": []})
    trustee.set_faults("trustee", [{"route": "/resource/", "mode": "policy_deny"}])
    with pytest.raises(TrusteeHttpError) as e:
        client.get_resource("repo/tls/web")
    assert e.value.kind == "PolicyDeny"


def test_tee_pubkey_members_are_normalised(trustee, make_quote):
    """Extra JWK members (kid, use) are dropped by the server, so they must not be hashed."""
    client = RcarClient(trustee)
    client.auth()
    extra = dict(client.jwk, kid="x", use="enc")
    quote = make_quote(client.report_data())  # hashed without the extra members
    body = {"init-data": None, "runtime-data": {"nonce": client.nonce, "tee-pubkey": extra},
            "tee-evidence": {"primary_evidence": {"cc_eventlog": None,
                                                  "quote": base64.b64encode(quote).decode()},
                             "additional_evidence": ""}}
    status, _, data = trustee_request(trustee, "POST", "/kbs/v0/attest", body,
                                      {"Content-Type": "application/json", "Cookie": client.cookie})
    assert status == 200, data
    claims = json.loads(base64.urlsafe_b64decode(json.loads(data)["token"].split(".")[1] + "=="))
    assert claims["tdx"]["attester_runtime_data"]["tee-pubkey"] == client.jwk
    # P-384 is not a TeePubKey curve
    p384 = ec.generate_private_key(ec.SECP384R1()).public_key().public_numbers()
    client = RcarClient(trustee)
    client.auth()
    client.jwk = {"kty": "EC", "crv": "P-384", "alg": "ECDH-ES+A256KW",
                  "x": base64.urlsafe_b64encode(p384.x.to_bytes(48, "big")).rstrip(b"=").decode(),
                  "y": base64.urlsafe_b64encode(p384.y.to_bytes(48, "big")).rstrip(b"=").decode()}
    with pytest.raises(TrusteeHttpError) as e:
        client.attest(make_quote)
    assert e.value.kind == "AttestationError" and b"tee-pubkey is not EC P-256/P-521" in e.value.body


# --------------------------------------------------------------------------- --token ear

@pytest.fixture(scope="module")
def ear(stack):
    """A second Trustee on the same state, with its own attestation service (EAR), whose reference
    values affirm the sim quotes of sim_quote_maker."""
    from tests.stack.simquote import DEFAULTS
    from tests.stack.trustee_fixture import write_reference_values

    rv = write_reference_values(stack, mr_td=DEFAULTS["mrtd"].hex(), xfam=DEFAULTS["xfam"].hex(),
                                rtmr_1="00" * 48, rtmr_2="00" * 48)
    start_trustee(stack, name="trustee-ear", token="ear", reference_values=rv)
    put_resource(stack, "repo/tls/web", SECRET, name="trustee-ear")
    yield stack
    stack.stop("trustee-ear")


def test_ear_mode_issues_trustees_ear_and_releases_with_it(ear, make_quote):
    """The EAR verifies with jwcrypto under the pinned AS certificate's key (ES256), has the claims
    of Trustee's example token, binds the handshake in submods.cpu0, and serves the resource to
    the cookie and as Bearer; ITA is never asked."""
    from jwcrypto import jws as jw_jws

    from tests.stack import pki
    from tests.stack.trustee_fixture import as_cert

    ear.clear_requests("ita")
    client = RcarClient(ear, name="trustee-ear")
    challenge, _ = client.auth()
    assert challenge["extra-params"] == "" and client.hash == "sha384"  # the built-in AS: SHA-384
    token = client.attest(make_quote)
    pub = pki.load_cert(as_cert(ear)).public_key()
    verifier = jw_jws.JWS()
    verifier.deserialize(token)
    verifier.verify(jw_jwk.JWK.from_pyca(pub), alg="ES256")
    header = verifier.jose_header
    assert header["alg"] == "ES256" and header["typ"] == "JWT" and "kid" not in header
    assert header["jwk"]["crv"] == "P-256" and header["jwk"]["alg"] == "ES256"
    claims = json.loads(verifier.payload)
    assert set(claims) == {"eat_profile", "iat", "ear.verifier-id", "submods", "exp", "iss"}
    assert claims["eat_profile"] == "tag:github.com,2024:confidential-containers/Trustee"
    assert claims["exp"] - claims["iat"] == 300
    cpu0 = claims["submods"]["cpu0"]
    assert cpu0["ear.status"] == "affirming" and cpu0["ear.appraisal-policy-id"] == "default"
    assert cpu0["ear.trustworthiness-vector"]["hardware"] == 2
    evidence = cpu0["ear.veraison.annotated-evidence"]
    assert evidence["runtime_data_claims"] == {"additional-evidence": "", "nonce": client.nonce,
                                               "tee-pubkey": client.jwk}
    assert evidence["report_data"] == client.report_data().hex() == evidence["tdx"]["quote"]["body"]["report_data"]
    assert evidence["tdx"]["quote"]["header"]["tee_type"] == "81000000"
    assert decrypt_jwe(client.get_resource("repo/tls/web"), client.private_key) == SECRET
    assert decrypt_jwe(client.get_resource("repo/tls/web", bearer=True), client.private_key) == SECRET
    assert ear.requests("ita") == []


def test_ear_status_follows_the_reference_values(ear):
    """Trustee's default TDX policy: an MRTD outside the reference values is contraindicated
    (hardware 97), a debug TD a warning (configuration 36)."""
    from tests.stack.simquote import make_sim_quote

    for quote_args, status, claim, value in (({"mrtd": bytes(48)}, "contraindicated", "hardware", 97),
                                             ({"debug": True}, "warning", "configuration", 36)):
        client = RcarClient(ear, name="trustee-ear")
        client.auth()
        token = client.attest(lambda rd: make_sim_quote(ear.state_dir, rd, **quote_args))
        cpu0 = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))["submods"]["cpu0"]
        assert cpu0["ear.status"] == status
        assert cpu0["ear.trustworthiness-vector"][claim] == value
