# SPDX-License-Identifier: Apache-2.0
"""kbs_type = trustee: `keygate release` and the OpenSSL provider against the local Trustee KBS
stand-in (tests/stack/trustee.py), with ITA as its verifier (trustee_token = ita) or its own
attestation service issuing EAR tokens (trustee_token = ear), with EC P-256 and RSA TEE keys,
PKCS#8 resources as PEM and DER, one handshake for several keys (counted in the stand-in's request
log), and every fault failing with its step named and no key printed. The tests marked BOTH run
against each kind of Trustee; EAR-only checks are in test_trustee_ear.py."""
import os
import re

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, utils

from conftest import run
from kglib import assert_fails, new_key, openssl_cnf, pub_pem, start_trustee_stack, trustee_conf
from tests.stack.trustee_fixture import put_resource, set_policy

PEM_PUB = re.compile(r"-----BEGIN PUBLIC KEY-----\n.*?-----END PUBLIC KEY-----\n", re.S)
# the module's Trustee: ITA-backed or with its own AS (EAR); one instance of each for the module
BOTH = pytest.mark.parametrize("module_stack", ["ita", "ear"], indirect=True)
ITA = pytest.mark.parametrize("module_stack", ["ita"], indirect=True)


@pytest.fixture(scope="module")
def module_stack(request, stack_dir, tmp_path_factory):
    """ITA and Trustee once for the module per token kind (each test resets faults and the policy)."""
    stack = start_trustee_stack(stack_dir, tmp_path_factory.mktemp(f"trustee-{request.param}"), request.param)
    yield stack
    stack.stop_all()


@pytest.fixture
def trustee_stack(module_stack):
    for name in ("ita", "trustee"):
        module_stack.clear_faults(name)
        module_stack.clear_requests(name)
    set_policy(module_stack, {"default": True, "rules": []})
    yield module_stack
    for name in ("ita", "trustee"):
        module_stack.clear_faults(name)


def store(stack, path, key, fmt="pem"):
    """Uploads key as the resource at path (PKCS#8 PEM or DER, as an admin would)."""
    enc = serialization.Encoding.PEM if fmt == "pem" else serialization.Encoding.DER
    put_resource(stack, path, key.private_bytes(enc, serialization.PrivateFormat.PKCS8,
                                                serialization.NoEncryption()))
    return path


def release(keygate_bin, conf, *args):
    return run([keygate_bin, "-c", str(conf), "release", *args], timeout=120)


def rcar_counts(stack):
    reqs = [(q["method"], q["path"]) for q in stack.requests("trustee")]
    return (reqs.count(("POST", "/kbs/v0/auth")), reqs.count(("POST", "/kbs/v0/attest")),
            len([p for m, p in reqs if m == "GET" and p.startswith("/kbs/v0/resource/")]))


@BOTH
@pytest.mark.parametrize("tee_key", ["ec", "rsa"])
@pytest.mark.parametrize("kind,fmt", [("p256", "pem"), ("rsa3072", "der")])
def test_release_prints_the_public_key_of_the_resource(keygate_bin, trustee_stack, tmp_path, tee_key, kind, fmt):
    key = new_key(kind)
    path = store(trustee_stack, f"keygate/{kind}/{fmt}", key, fmt)
    trustee_stack.clear_requests("trustee")
    trustee_stack.clear_requests("ita")
    conf = trustee_conf(trustee_stack, tmp_path / "k.conf", trustee_tee_key=tee_key)
    r = release(keygate_bin, conf, "--key-id", path, "-v")
    assert r.returncode == 0, r.stderr
    assert r.stdout == pub_pem(key)
    assert "PRIVATE" not in r.stdout and "PRIVATE" not in r.stderr
    for step in ("wrapping-key", "nonce", "evidence", "token", "verify", "transfer", "unwrap", "match"):
        assert re.search(rf"^  {step}\s+[0-9.]+ ms", r.stderr, re.M), r.stderr
    assert rcar_counts(trustee_stack) == (1, 1, 1)
    # ita: Trustee asked ITA (v2, composite body); keygate itself never did. ear: nobody did
    ita = [(q["method"], q["path"]) for q in trustee_stack.requests("ita")]
    assert ita.count(("POST", "/appraisal/v2/attest")) == (trustee_stack.trustee_token == "ita")
    assert not [p for m, p in ita if "nonce" in p or p == "/appraisal/v1/attest"]


@BOTH
def test_release_with_a_v5_quote(keygate_bin, trustee_stack, tmp_path):
    """sim_quote_version = 5: Trustee reads REPORTDATA (the runtime-data hash) from the v5 quote,
    ITA verifies it, the resource is released."""
    key = new_key("p256")
    path = store(trustee_stack, "keygate/v5/pem", key)
    trustee_stack.clear_requests("trustee")
    conf = trustee_conf(trustee_stack, tmp_path / "k.conf", sim_quote_version=5)
    r = release(keygate_bin, conf, "--key-id", path)
    assert r.returncode == 0, r.stderr
    assert r.stdout == pub_pem(key)
    assert rcar_counts(trustee_stack) == (1, 1, 1)


@BOTH
@pytest.mark.parametrize("tee_key", ["ec", "rsa"])
def test_several_keys_share_one_handshake(keygate_bin, trustee_stack, tmp_path, tee_key):
    keys = [new_key(k) for k in ("p256", "rsa2048", "p384", "rsa3072", "p256")]
    paths = [store(trustee_stack, f"site/key{i}/v1", k, "pem" if i % 2 else "der") for i, k in enumerate(keys)]
    trustee_stack.clear_requests("trustee")
    conf = trustee_conf(trustee_stack, tmp_path / "k.conf", trustee_tee_key=tee_key)
    r = release(keygate_bin, conf, *[a for p in paths for a in ("--key-id", p)], "-v")
    assert r.returncode == 0, r.stderr
    assert PEM_PUB.findall(r.stdout) == [pub_pem(k) for k in keys]
    assert rcar_counts(trustee_stack) == (1, 1, 5)


@BOTH
def test_reference_files_and_match(keygate_bin, trustee_stack, tmp_path):
    key, other = new_key("p256"), new_key("p256")
    path = store(trustee_stack, "repo/tls/web", key)
    conf = trustee_conf(trustee_stack, tmp_path / "k.conf")
    ref = tmp_path / "web.ref.pem"
    r = run([keygate_bin, "-c", str(conf), "ref", "create", "--key-id", path, "--kbs-type", "trustee", "-o",
             str(ref)])
    assert r.returncode == 0, r.stderr  # learned the public key by releasing once
    r = release(keygate_bin, conf, "--ref", str(ref))
    assert r.returncode == 0 and r.stdout == pub_pem(key), r.stderr
    pub = tmp_path / "other.pem"
    pub.write_text(pub_pem(other))
    wrong = tmp_path / "wrong.ref.pem"
    assert run([keygate_bin, "-c", str(conf), "ref", "create", "--key-id", path, "--pubkey", str(pub), "-o",
                str(wrong)]).returncode == 0
    assert_fails(release(keygate_bin, conf, "--ref", str(wrong)), 20, "match: the KBS released a key for repo/tls/web")


@BOTH
@pytest.mark.parametrize("tee_key,fault,code,needles", [
    ("ec", {"route": "/auth$", "mode": "bad_cookie"}, 14,
     ["token: POST", "/kbs/v0/attest: HTTP 401", "AttestationError: no session"]),
    ("ec", {"route": "/auth$", "mode": "version_mismatch"}, 12,
     ["nonce: POST", "/kbs/v0/auth: HTTP 401", "Version Mismatch"]),
    ("ec", {"route": "/resource/", "mode": "expired_session"}, 16,
     ["transfer: GET", "HTTP 401", "TokenNotFound"]),  # a fresh session refused: no retry
    ("ec", {"route": "/resource/", "mode": "tampered_tag"}, 17, ["unwrap: JWE fails A256GCM authentication"]),
    ("rsa", {"route": "/resource/", "mode": "tampered_tag"}, 17, ["unwrap: JWE fails A256GCM authentication"]),
    ("ec", {"route": "/resource/", "mode": "wrong_kid"}, 17, ["unwrap: JWE kid", "is not our TEE key"]),
    ("ec", {"route": "/resource/", "mode": "wrong_epk"}, 17, ["unwrap: JWE encrypted_key fails the AES-256-KW"]),
    ("rsa", {"route": "/resource/", "mode": "wrong_epk"}, 17, ["unwrap: JWE encrypted_key does not decrypt"]),
    ("ec", {"route": "/resource/", "mode": "policy_deny"}, 16, ["transfer: GET", "HTTP 401", "PolicyDeny"]),
    ("ec", {"route": "/resource/", "mode": "status", "status": 404,
            "body": {"type": "https://github.com/confidential-containers/kbs/errors/PluginNotFound",
                     "detail": "no plugin"}}, 16, ["transfer: GET", "HTTP 404", "PluginNotFound"]),
    ("ec", {"route": "/resource/", "mode": "malformed_json"}, 17, ["unwrap: JWE is not a JSON object"]),
])
def test_faults_fail_with_the_step_named(keygate_bin, trustee_stack, tmp_path, tee_key, fault, code, needles):
    path = store(trustee_stack, "repo/tls/web", new_key("p256"))
    conf = trustee_conf(trustee_stack, tmp_path / "k.conf", trustee_tee_key=tee_key, retry_max=0)
    trustee_stack.set_faults("trustee", [fault])
    assert_fails(release(keygate_bin, conf, "--key-id", path), code, *needles)


@BOTH
def test_reattests_once_when_the_session_is_refused(keygate_bin, trustee_stack, tmp_path):
    """A reused session refused with TokenNotFound costs one new handshake, then succeeds."""
    keys = [new_key("p256") for _ in range(3)]
    paths = [store(trustee_stack, f"repo/k{i}/t", k) for i, k in enumerate(keys)]
    conf = trustee_conf(trustee_stack, tmp_path / "k.conf")
    # the first GET (on the fresh session) succeeds, the second finds its session expired
    trustee_stack.set_faults("trustee", [{"route": "/resource/repo/k1/", "mode": "expired_session", "count": 1}])
    trustee_stack.clear_requests("trustee")
    r = release(keygate_bin, conf, *[a for p in paths for a in ("--key-id", p)])
    assert r.returncode == 0, r.stderr
    assert PEM_PUB.findall(r.stdout) == [pub_pem(k) for k in keys]
    auths, attests, gets = rcar_counts(trustee_stack)
    # keys 1 and 2 may both have met the dropped session: still only one new handshake
    assert (auths, attests) == (2, 2) and gets in (4, 5)


@ITA
def test_reused_session_refused_twice_names_both(keygate_bin, trustee_stack, tmp_path):
    keys = [new_key("p256") for _ in range(2)]
    paths = [store(trustee_stack, f"repo/k{i}/t", k) for i, k in enumerate(keys)]
    conf = trustee_conf(trustee_stack, tmp_path / "k.conf", retry_max=0)
    trustee_stack.set_faults("trustee", [{"route": "/resource/repo/k1/", "mode": "expired_session"}])
    r = release(keygate_bin, conf, *[a for p in paths for a in ("--key-id", p)])
    assert r.returncode == 16 and PEM_PUB.findall(r.stdout) == [pub_pem(keys[0])]
    assert "TokenNotFound: no attested session and no bearer token (also after a new attestation)" in r.stderr


@ITA
def test_policy_missing_resource_and_bad_resources(keygate_bin, trustee_stack, tmp_path):
    conf = trustee_conf(trustee_stack, tmp_path / "k.conf", retry_max=0)
    path = store(trustee_stack, "repo/tls/web", new_key("p256"))
    set_policy(trustee_stack, {"default": False, "rules": [
        {"path": "repo/tls/*", "allow": True, "claims": {"tdx.tdx_mrtd": ["ab" * 48]}}]})
    assert_fails(release(keygate_bin, conf, "--key-id", path), 16, "PolicyDeny", "resource policy denies")
    set_policy(trustee_stack, {"default": True, "rules": []})
    assert_fails(release(keygate_bin, conf, "--key-id", "repo/tls/missing"), 16, "PluginInternalError")
    # a PKCS#1 PEM, random bytes and an unsupported curve are refused after decryption
    rsa = new_key("rsa2048")
    put_resource(trustee_stack, "repo/bad/pkcs1", rsa.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()))
    assert_fails(release(keygate_bin, conf, "--key-id", "repo/bad/pkcs1"), 17, "without a PRIVATE KEY (PKCS#8)")
    put_resource(trustee_stack, "repo/bad/random", os.urandom(100))
    assert_fails(release(keygate_bin, conf, "--key-id", "repo/bad/random"), 17, "not PKCS#8")
    store(trustee_stack, "repo/bad/p521", ec.generate_private_key(ec.SECP521R1()))
    assert_fails(release(keygate_bin, conf, "--key-id", "repo/bad/p521"), 17, "not RSA 2048..4096 or EC")


@ITA
def test_token_that_does_not_bind_the_runtime_data_is_refused(keygate_bin, trustee_stack, tmp_path):
    """ITA's token carries an altered attester_runtime_data (validly signed): keygate's own
    binding check (H(JCS(runtime data)) = tdx_report_data) catches it; Trustee does not."""
    path = store(trustee_stack, "repo/tls/web", new_key("p256"))
    conf = trustee_conf(trustee_stack, tmp_path / "k.conf", retry_max=0)
    trustee_stack.set_faults("ita", [{"route": "/appraisal/v2/attest", "mode": "wrong_held_data"}])
    assert_fails(release(keygate_bin, conf, "--key-id", path), 15,
                 "verify: attester_runtime_data does not hash (sha512 of its canonical JSON) to tdx_report_data")
    trustee_stack.set_faults("ita", [{"route": "/appraisal/v2/attest", "mode": "debug_td"}])
    assert_fails(release(keygate_bin, conf, "--key-id", path), 15, "verify:", "debuggable")


@ITA
def test_config_refusals(keygate_bin, trustee_stack, tmp_path):
    conf = trustee_conf(trustee_stack, tmp_path / "k.conf", trustee_tee_key="p384")
    r = release(keygate_bin, conf, "--key-id", "repo/tls/web")
    assert r.returncode == 10 and "trustee_tee_key" in r.stderr
    conf = trustee_conf(trustee_stack, tmp_path / "k.conf")
    assert_fails(release(keygate_bin, conf, "--key-id", "repo/../web"), 10, "repo/type/tag")
    conf = trustee_conf(trustee_stack, tmp_path / "k.conf", ita_trust_anchor="")
    assert_fails(release(keygate_bin, conf, "--key-id", "repo/tls/web"), 10, "ita_trust_anchor")


# --------------------------------------------------------------------------- the provider

@BOTH
@pytest.mark.parametrize("tee_key", ["ec", "rsa"])
def test_provider_signs_with_keys_from_trustee(keygate_bin, build_dir, trustee_stack, tmp_path, tee_key):
    keys = {"p256": new_key("p256"), "rsa2048": new_key("rsa2048")}
    conf = trustee_conf(trustee_stack, tmp_path / "keygate.conf", trustee_tee_key=tee_key)
    env = {"OPENSSL_CONF": str(openssl_cnf(build_dir, tmp_path / "openssl.cnf", conf))}
    if os.environ.get("KEYGATE_ASAN_PRELOAD"):
        env["LD_PRELOAD"] = os.environ["KEYGATE_ASAN_PRELOAD"]
    refs = {}
    for kind, key in keys.items():
        path = store(trustee_stack, f"web/{kind}/1", key, "der" if kind == "p256" else "pem")
        pub = tmp_path / f"{kind}.pub.pem"
        pub.write_text(pub_pem(key))
        refs[kind] = tmp_path / f"{kind}.ref.pem"
        r = run([keygate_bin, "-c", str(conf), "ref", "create", "--key-id", path, "--pubkey", str(pub),
                 "--kbs-type", "trustee", "-o", str(refs[kind])])
        assert r.returncode == 0, r.stderr
    trustee_stack.clear_requests("trustee")
    # a public operation needs no attestation
    r = run(["openssl", "pkey", "-pubin", "-in", str(refs["p256"]), "-pubout"], env=env)
    assert r.returncode == 0 and r.stdout == pub_pem(keys["p256"]), r.stderr
    assert rcar_counts(trustee_stack) == (0, 0, 0)
    # sign with the released key
    data = tmp_path / "data.bin"
    data.write_bytes(os.urandom(32))
    sig = tmp_path / "sig.bin"
    r = run(["openssl", "pkeyutl", "-sign", "-inkey", str(refs["p256"]), "-in", str(data), "-out", str(sig),
             "-pkeyopt", "digest:sha256"], env=env)
    assert r.returncode == 0, r.stderr
    keys["p256"].public_key().verify(sig.read_bytes(), data.read_bytes(), ec.ECDSA(utils.Prehashed(hashes.SHA256())))
    assert rcar_counts(trustee_stack) == (1, 1, 1)
    # the store URI with a Trustee resource path
    r = run(["openssl", "pkey", "-in", "keygate:web/rsa2048/1", "-pubout"], env=env)
    assert r.returncode == 0 and r.stdout == pub_pem(keys["rsa2048"]), r.stderr
    # one process, two keys (CA-signed certificate): one handshake
    ca = tmp_path / "ca.pem"
    r = run(["openssl", "req", "-new", "-x509", "-key", str(refs["rsa2048"]), "-subj", "/CN=keygate CA", "-days",
             "1", "-out", str(ca)], env=env)
    assert r.returncode == 0, r.stderr
    trustee_stack.clear_requests("trustee")
    cert = tmp_path / "leaf.pem"
    r = run(["openssl", "req", "-new", "-x509", "-key", str(refs["p256"]), "-CA", str(ca), "-CAkey",
             str(refs["rsa2048"]), "-subj", "/CN=localhost", "-days", "1", "-out", str(cert)], env=env)
    assert r.returncode == 0, r.stderr
    leaf = x509.load_pem_x509_certificate(cert.read_bytes())
    keys["rsa2048"].public_key().verify(leaf.signature, leaf.tbs_certificate_bytes, padding.PKCS1v15(),
                                        leaf.signature_hash_algorithm)
    assert pub_pem(keys["p256"]) == leaf.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    assert rcar_counts(trustee_stack) == (1, 1, 2)
