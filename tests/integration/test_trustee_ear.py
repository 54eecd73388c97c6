# SPDX-License-Identifier: Apache-2.0
"""trustee_token = ear: what keygate refuses in an EAR from Trustee's built-in attestation service
(the stand-in's EAR faults, tests/stack/ear.py) and in the configuration, each with one line
naming the step and the cause, and no key printed. The release and provider paths that succeed
run in test_trustee.py against both kinds of Trustee."""
import os

import pytest

from conftest import run
from kglib import assert_fails, new_key, pub_pem, start_trustee_stack, trustee_conf
from tests.stack import pki
from tests.stack.trustee_fixture import put_resource

PATH = "repo/ear/key"


@pytest.fixture(scope="module")
def ear_stack(stack_dir, tmp_path_factory):
    stack = start_trustee_stack(stack_dir, tmp_path_factory.mktemp("trustee-ear"), "ear")
    yield stack
    stack.stop_all()


@pytest.fixture
def stack(ear_stack):
    ear_stack.clear_faults("trustee")
    ear_stack.clear_requests("trustee")
    yield ear_stack
    ear_stack.clear_faults("trustee")


@pytest.fixture(scope="module")
def key(ear_stack):
    from cryptography.hazmat.primitives import serialization

    k = new_key("p256")
    put_resource(ear_stack, PATH, k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()))
    return k


def release(keygate_bin, conf):
    return run([keygate_bin, "-c", str(conf), "release", "--key-id", PATH], timeout=120)


def attests(stack):
    return [q for q in stack.requests("trustee") if q["path"] == "/kbs/v0/attest"]


def test_released_with_an_ear_and_nobody_asked_ita(keygate_bin, stack, key, tmp_path):
    stack.clear_requests("ita")
    r = release(keygate_bin, trustee_conf(stack, tmp_path / "k.conf"))
    assert r.returncode == 0 and r.stdout == pub_pem(key), r.stderr
    assert len(attests(stack)) == 1 and stack.requests("ita") == []


@pytest.mark.parametrize("overrides,status", [
    ({"sim_mrtd": "ab" * 48}, "contraindicated"),   # hardware 97: MRTD not a reference value
    ({"sim_rtmr1": "cd" * 48}, "warning"),          # executables 33: RTMR1 not a reference value
    ({"sim_xfam": "e702060000000000"}, "warning"),  # configuration 36: XFAM not a reference value
])
def test_status_below_affirming_is_refused_by_default(keygate_bin, stack, key, tmp_path, overrides, status):
    r = release(keygate_bin, trustee_conf(stack, tmp_path / "k.conf", retry_max=0, **overrides))
    assert_fails(r, 15, f"verify: EAR submod 'cpu0' ear.status is {status}; trustee_ear_status = affirming "
                        "accepts affirming only")


def test_warning_is_accepted_when_configured_contraindicated_never(keygate_bin, stack, key, tmp_path):
    conf = trustee_conf(stack, tmp_path / "k.conf", trustee_ear_status="warning", sim_rtmr1="cd" * 48)
    r = release(keygate_bin, conf)
    assert r.returncode == 0 and r.stdout == pub_pem(key), r.stderr
    conf = trustee_conf(stack, tmp_path / "k.conf", trustee_ear_status="warning", sim_mrtd="ab" * 48)
    assert_fails(release(keygate_bin, conf), 15, "ear.status is contraindicated; trustee_ear_status = warning "
                                                 "accepts affirming or warning")


@pytest.mark.parametrize("fault,needles", [
    ({"mode": "ear_alg", "alg": "HS256"}, ["verify: EAR token alg 'HS256' is not allowed", "EC P-256, so ES256"]),
    ({"mode": "ear_alg", "alg": "none"}, ["verify: EAR token alg 'none' is not allowed"]),
    ({"mode": "ear_alg", "alg": "RS256"}, ["verify: EAR token alg 'RS256' is not allowed"]),
    ({"mode": "ear_alg", "alg": "ES384"}, ["verify: EAR token alg 'ES384' is not allowed"]),
    ({"mode": "ear_other_key"}, ["verify: EAR token header jwk is not the pinned AS key"]),
    ({"mode": "ear_header", "member": "jku", "value": "https://127.0.0.1:1/jwks"},
     ["verify: EAR token header carries jku", "the pinned trustee_as_cert is the only trust"]),
    ({"mode": "ear_header", "member": "x5c", "value": ["MIIB"]}, ["verify: EAR token header carries x5c"]),
    ({"mode": "ear_expired"}, ["verify: EAR token expired at"]),
    ({"mode": "ear_wrong_pubkey"}, ["verify: EAR runtime_data_claims tee-pubkey is not our TEE key"]),
    ({"mode": "ear_drop", "path": ["exp"]}, ["verify: EAR token has no exp claim"]),
    ({"mode": "ear_drop", "path": ["iat"]}, ["verify: EAR token has no iat claim"]),
    ({"mode": "ear_drop", "path": ["eat_profile"]}, ["verify: EAR token has no eat_profile string"]),
    ({"mode": "ear_drop", "path": ["ear.verifier-id"]}, ["verify: EAR token has no ear.verifier-id"]),
    ({"mode": "ear_drop", "path": ["submods"]}, ["verify: EAR token has no submods"]),
    ({"mode": "ear_drop", "path": ["submods", "cpu0", "ear.status"]},
     ["verify: EAR submod 'cpu0' has no ear.status string"]),
    ({"mode": "ear_drop", "path": ["submods", "cpu0", "ear.veraison.annotated-evidence", "runtime_data_claims"]},
     ["verify: EAR annotated evidence has no runtime_data_claims object"]),
    ({"mode": "ear_drop", "path": ["submods", "cpu0", "ear.veraison.annotated-evidence", "report_data"]},
     ["verify: EAR annotated evidence has no report_data of 64 bytes"]),
    ({"mode": "ear_drop", "path": ["submods", "cpu0", "ear.veraison.annotated-evidence", "tdx"]},
     ["verify: EAR annotated evidence has no tdx claims"]),
])
def test_bad_ears_are_refused_at_verify(keygate_bin, stack, key, tmp_path, fault, needles):
    stack.set_faults("trustee", [{"route": "/kbs/v0/attest$", **fault}])
    r = release(keygate_bin, trustee_conf(stack, tmp_path / "k.conf", retry_max=0))
    assert_fails(r, 15, *needles)
    assert not [q for q in stack.requests("trustee") if q["path"].startswith("/kbs/v0/resource/")]


def test_another_pinned_key_refuses_the_ear(keygate_bin, stack, key, tmp_path):
    """The AS of the stand-in signs with its key; keygate pins another (a certificate, then a bare
    public key): the header jwk names the signer, which is not the pin."""
    other = pki.new_ec()
    cert = tmp_path / "other-as.pem"
    pki.write_cert(str(cert), pki.issue_cert("another AS", other))
    assert_fails(release(keygate_bin, trustee_conf(stack, tmp_path / "k.conf", trustee_as_cert=cert)), 15,
                 "verify: EAR token header jwk is not the pinned AS key (trustee_as_cert)")
    from cryptography.hazmat.primitives import serialization

    pub = tmp_path / "other-as.pub.pem"
    pki.write_file(str(pub), other.public_key().public_bytes(serialization.Encoding.PEM,
                                                             serialization.PublicFormat.SubjectPublicKeyInfo))
    assert_fails(release(keygate_bin, trustee_conf(stack, tmp_path / "k.conf", trustee_as_cert=pub)), 15,
                 "header jwk is not the pinned AS key")


def test_the_as_public_key_file_works_as_well_as_its_certificate(keygate_bin, stack, key, tmp_path):
    from cryptography.hazmat.primitives import serialization

    from tests.stack.trustee_fixture import as_cert

    pub = tmp_path / "as.pub.pem"
    pki.write_file(str(pub), pki.load_cert(as_cert(stack)).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    r = release(keygate_bin, trustee_conf(stack, tmp_path / "k.conf", trustee_as_cert=pub))
    assert r.returncode == 0 and r.stdout == pub_pem(key), r.stderr


def test_local_policy_judges_our_own_quote_before_it_leaves(keygate_bin, stack, key, tmp_path):
    conf = trustee_conf(stack, tmp_path / "k.conf", require_mrtd="ef" * 48, retry_max=0)
    assert_fails(release(keygate_bin, conf), 15, "MRTD")
    conf = trustee_conf(stack, tmp_path / "k.conf", sim_td_attributes="0100000000000000", retry_max=0)
    assert_fails(release(keygate_bin, conf), 15, "debug")
    assert attests(stack) == []  # refused before the evidence was sent


def test_an_ita_configuration_meeting_an_ear_names_the_remedy(keygate_bin, stack, key, tmp_path):
    conf = trustee_conf(stack, tmp_path / "k.conf", trustee_token="ita", trustee_as_cert="", retry_max=0)
    assert_fails(release(keygate_bin, conf), 15, "verify: the KBS returned an EAR token (Trustee's built-in "
                                                 "attestation service), not an ITA token; set trustee_token = ear")


@pytest.mark.parametrize("overrides,needles", [
    ({"trustee_as_cert": ""}, ["config: trustee_token = ear needs trustee_as_cert"]),
    ({"trustee_token": "ita"}, ["config: trustee_as_cert is set but trustee_token = ita"]),
    ({"kbs_type": "intel"}, ["config: trustee_token = ear cannot be used with kbs_type = intel"]),
    ({"require_tcb_status": "UpToDate"}, ["config: require_tcb_status cannot be enforced with trustee_token = ear"]),
    ({"trustee_ear_status": "contraindicated"}, ["trustee_ear_status: 'contraindicated' is not one of "
                                                 "affirming|warning"]),
    ({"trustee_as_cert": "/nonexistent/as.pem"}, ["config: trustee_as_cert /nonexistent/as.pem: cannot open"]),
])
def test_config_refusals(keygate_bin, stack, tmp_path, overrides, needles):
    assert_fails(release(keygate_bin, trustee_conf(stack, tmp_path / "k.conf", **overrides)), 10, *needles)
    assert attests(stack) == []


def test_as_key_files_that_cannot_be_a_pin(keygate_bin, stack, tmp_path):
    rsa_cert = tmp_path / "rsa-as.pem"
    pki.write_cert(str(rsa_cert), pki.issue_cert("an RSA AS", pki.new_rsa(2048)))
    assert_fails(release(keygate_bin, trustee_conf(stack, tmp_path / "k.conf", trustee_as_cert=rsa_cert)), 10,
                 "trustee_as_cert", "not EC P-256 or P-384")
    junk = tmp_path / "junk.pem"
    junk.write_bytes(os.urandom(64))
    assert_fails(release(keygate_bin, trustee_conf(stack, tmp_path / "k.conf", trustee_as_cert=junk)), 10,
                 "neither a PEM certificate nor a PEM public key")
    # a trust file: writable by others is refused like ita_trust_anchor
    from tests.stack.trustee_fixture import as_cert

    loose = tmp_path / "loose.pem"
    loose.write_bytes(open(as_cert(stack), "rb").read())
    os.chmod(loose, 0o666)
    assert_fails(release(keygate_bin, trustee_conf(stack, tmp_path / "k.conf", trustee_as_cert=loose)), 10,
                 "trustee_as_cert", "writable by group or others")
