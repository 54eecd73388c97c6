# SPDX-License-Identifier: Apache-2.0
"""The local ITA stack keeps to the specs: tokens, JWKS, CRLs, quotes, nonces, errors, faults.

Run from the repository root: /usr/bin/python3 -m pytest -p no:cacheprovider -q tests/stack
"""

import base64
import datetime
import hashlib
import hmac
import json
import os
import pathlib
import re
import socket
import ssl
import struct
import time
import urllib.request

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

from tests.stack import pki, simquote, tokencheck
from tests.stack.fixtures import copy_state
from tests.stack.quote import QuoteError, verify_quote
from tests.stack.tokencheck import TokenError

VECTORS = os.environ.get("KEYGATE_VECTORS_DIR", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "vectors"))
INTEL_ROOT = os.path.join(VECTORS, "intel-sgx-root-ca.pem")
ZERO48 = "00" * 48


# --------------------------------------------------------------------------- helpers

def load_json_token(path):
    with open(path) as f:
        return tokencheck.decode_unverified(f.read().strip())


def cn(cert):
    return cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value


def state(stack):
    return stack.state_dir


def key_headers(stack, **extra):
    return {"x-api-key": pki.api_key(state(stack)), **extra}


def get_nonce(stack, version=2):
    status, body = stack.http("ita", "GET", f"/appraisal/v{version}/nonce",
                              headers=key_headers(stack))
    assert status == 200, body
    return json.loads(body)


def report_data(nonce, runtime):
    prefix = (base64.b64decode(nonce["val"]) + base64.b64decode(nonce["iat"])) if nonce else b""
    return hashlib.sha512(prefix + runtime).digest()


def attest_body(version, quote, runtime, nonce, **top):
    evidence = {"quote": base64.b64encode(quote).decode(),
                "runtime_data": base64.b64encode(runtime).decode()}
    if nonce is not None:
        evidence["verifier_nonce"] = nonce
    if version == 1:
        return {**evidence, **top}
    return {"tdx": evidence, **top}


def attest(stack, version=1, runtime=b"keygate test runtime data", use_nonce=True,
           quote_fields=None, headers=None, **top):
    """nonce -> sim quote -> attest. Returns (status, body bytes, nonce, quote bytes)."""
    nonce = get_nonce(stack) if use_nonce else None
    quote = simquote.make_sim_quote(state(stack), report_data(nonce, runtime),
                                    **(quote_fields or {}))
    status, body = stack.http("ita", "POST", f"/appraisal/v{version}/attest",
                              attest_body(version, quote, runtime, nonce, **top),
                              headers=headers if headers is not None else key_headers(stack))
    return status, body, nonce, quote


def token_of(status, body):
    assert status == 200, body
    return json.loads(body)["token"]


def crl_fetcher(stack):
    ctx = pki.tls_client_context(state(stack))

    def fetch(url):
        with urllib.request.urlopen(url, context=ctx, timeout=10) as r:
            assert r.headers["Content-Type"] == "application/pkix-crl"
            return r.read()
    return fetch


def jwks(stack):
    status, body = stack.http("ita", "GET", "/certs")
    assert status == 200
    return json.loads(body)


def ita_root(stack):
    return pki.load_cert(os.path.join(state(stack), "ita-root-ca.pem"))


def verify(stack, token, **kw):
    return tokencheck.verify_token(token, jwks(stack), [ita_root(stack)], crl_fetcher(stack),
                                   issuer_v2=stack.services["ita"].url, **kw)


# --------------------------------------------------------------------------- quotes

REAL_QUOTES = {
    "tdx-quote-gcp-cos113.bin": dict(
        mrtd="dae67181d3d65e073ad8f95b7907d5e927bfe9761c9ff3e9b89734a45d8954dba41394c7717cb273"
             "5396c1d04231f94a",
        rtmr0="3fa2f61f395b7f5feefb4ec2df61297f109ad8abcd6410c1b7df60f21f37b19297fc35e544039c7e"
              "1edece752afd17f6",
        rtmr1="f62dbc072bd5d3f3438b7b35c39a727f5aea2ffc2473f43723953f530daf62504f0a7944aa62c41a"
              "86e8a878c2b122c1",
        rtmr2="4969684dc87381fc3b3134176c8d8806eaf0a901859f5f70cfae8d17714b46c10a8de219048c9fc0"
              "9f11f381a6fbe7c1",
        rtmr3=ZERO48, debug=False, report_data="00" * 64,
        tee_tcb_svn="04010700000000000000000000000000", td_attributes="0000001000000000",
        xfam="e700060000000000",
        mrseam="ffc97a88587660fb04e1f7c851300c96ae0b5a463ac46d035d16c2d9f36d0ed1d23775bcbd27deb2"
               "19e3a3cc28023895"),
    "tdx-quote-trustee-v4-debug.bin": dict(
        mrtd="705ee9381b8633a9fbe532b52345e8433343d2868959f57889d84ca377c395b689cac1599ccea1b7"
             "d420483a9ce5f031",
        rtmr0="e940da7c2712d2790e2961e00484f4fa8e6f9eed71361655ae22699476b14f9e63867eb41edd4b48"
              "0fef0c59f496b288",
        rtmr1="559cfcf42716ed6c40a48a73d5acb7da255435012f0a9f00fbe8c1c57612ede486a5684c4c9ff3dd"
              "f52315fcdca3a596",
        rtmr2=ZERO48, rtmr3=ZERO48, debug=True,
        report_data="7c71fe2c86eff65a7cf8dbc22b3275689fd0464a267baced1bf94fc1324656aeb755da3d44d0"
                    "98c0c87382f3a5f85b45c8a28fee1d3bdb38342bf96671501429",
        tee_tcb_svn="03000500000000000000000000000000", td_attributes="0100001000000000",
        xfam="e742060000000000",
        mrseam="2fd279c16164a93dd5bf373d834328d46008c2b693af9ebb865b08b2ced320c9a89b4869a9fab60f"
               "be9d0c5a5363c656"),
    "tdx-quote-azure.bin": dict(
        mrtd="024a32b070383331181619fa387cb4d55d1e38879f989933055ccad5bc2db795d1737b66205949d1"
             "5469dc8c1ba7ab7b",
        rtmr0=ZERO48, rtmr1=ZERO48, rtmr2=ZERO48, rtmr3=ZERO48, debug=False,
        report_data="9734504f161d104c74e3165c15f779b06a9bb40dfa71937817d7eee68e593839" + "00" * 32,
        tee_tcb_svn="02010600000000000000000000000000", td_attributes="0000000000000000",
        xfam="e718060000000000",
        mrseam="360304d34a16aace0a18e09ad2d07d2b9fd3c174378e5bf108388079827f89ff62acc5f8c473dd40"
               "706324834e202946"),
    # v5, body type 3 (tests/vectors/README.md §2.2): the body 6 bytes later, signed with its descriptor
    "tdx-quote-trustee-v5.bin": dict(
        version=5, body_type=3, signed_len=702, debug=False, td_attributes="0000001000000000",
        mrtd="dfba221b48a22af8511542ee796603f37382800840dcd978703909bf8e64d4c8a1e9de86e7c9638b"
             "fcba422f3886400a",
        report_data="6d6ab13b046cff606ac0074be13981b07b6325dba10b5facc96febf551c0c3be2b75f92fe1f88f4b"
                    "b996969ad0174b4b7a70261b7b85c844f4b33a4674fd049f",
        tee_tcb_svn="05010200000000000000000000000000", tee_tcb_svn2="05010200000000000000000000000000",
        mrservicetd="383c87d3bbb047b2d171eaca95312ede99f258088dc788f6ae2ccf8b6dd848fe8d47629e08b3f6cb"
                    "d4a00dd47a5a033d"),
}


@pytest.mark.parametrize("name", sorted(REAL_QUOTES))
def test_real_quotes_verify_against_pinned_intel_root(name):
    with open(os.path.join(VECTORS, name), "rb") as f:
        data = f.read()
    with open(INTEL_ROOT, "rb") as f:
        q = verify_quote(data, [f.read()])
    expect = REAL_QUOTES[name]
    for field, value in expect.items():
        got = getattr(q, field)
        assert (got.hex() if isinstance(got, bytes) else got) == value, field
    assert [cn(c) for c in q.pck_chain] == [
        "Intel SGX PCK Certificate", "Intel SGX PCK Platform CA", "Intel SGX Root CA"]


@pytest.mark.parametrize("name", sorted(REAL_QUOTES))
def test_real_quotes_rejected_under_sim_root(name, stack_dir):
    with open(os.path.join(VECTORS, name), "rb") as f:
        data = f.read()
    with open(stack_dir / "sim-sgx-root-ca.pem", "rb") as f:
        with pytest.raises(QuoteError) as e:
            verify_quote(data, [f.read()])
    assert e.value.check == "pck_chain"


def test_sim_quote_verifies_and_tampering_is_named(stack_dir):
    rd = bytes(range(64))
    quote = simquote.make_sim_quote(str(stack_dir), rd, mrtd=b"\x11" * 48, debug=True)
    sim_root = (stack_dir / "sim-sgx-root-ca.pem").read_bytes()
    q = verify_quote(quote + bytes(100), [sim_root])           # trailing padding ignored
    assert (q.report_data, q.mrtd, q.debug) == (rd, b"\x11" * 48, True)
    body_flip = bytearray(quote)
    body_flip[200] ^= 1
    qe_flip = bytearray(quote)
    qe_flip[636 + 134 + 10] ^= 1                               # inside the QE report
    auth_flip = bytearray(quote)
    auth_flip[636 + 134 + 384 + 64 + 2] ^= 1                   # QE auth data
    for data, check in ((body_flip, "quote_signature"), (qe_flip, "qe_report_signature"),
                        (auth_flip, "qe_report_data")):
        with pytest.raises(QuoteError) as e:
            verify_quote(bytes(data), [sim_root])
        assert e.value.check == check
    with open(INTEL_ROOT, "rb") as f:
        with pytest.raises(QuoteError, match="pck_chain"):
            verify_quote(quote, [f.read()])


@pytest.mark.parametrize("body_type", [2, 3])
def test_sim_v5_quote_verifies_is_attested_and_mutations_are_named(session_stack, body_type):
    """A v5 quote of either body type verifies (signature over header + descriptor + body), the
    ITA stand-in attests it (REPORTDATA read at its v5 offset), and a wrong descriptor or a
    changed byte at the end of the (signed) body is refused."""
    rd = bytes(range(64))
    svn2, servicetd = bytes(range(16, 32)), b"\x5e" * 48
    fields = dict(tee_tcb_svn2=svn2, mrservicetd=servicetd) if body_type == 3 else {}
    quote = simquote.make_sim_quote(state(session_stack), rd, version=5, body_type=body_type, **fields)
    sim_root = (pathlib.Path(state(session_stack)) / "sim-sgx-root-ca.pem").read_bytes()
    q = verify_quote(quote, [sim_root])
    size = 648 if body_type == 3 else 584
    assert (q.version, q.body_type, q.signed_len, q.report_data) == (5, body_type, 54 + size, rd)
    assert quote[48:54] == struct.pack("<HI", body_type, size) and quote[574:638] == rd
    assert (q.tee_tcb_svn2, q.mrservicetd) == ((svn2, servicetd) if body_type == 3 else (bytes(16), bytes(48)))
    for desc, needle in ((struct.pack("<HI", body_type, 648 + 584 - size), "body size"),
                         (struct.pack("<HI", 1, 384), "body type 1"), (struct.pack("<HI", 4, size), "body type 4")):
        with pytest.raises(QuoteError, match=needle):
            verify_quote(quote[:48] + desc + quote[54:], [sim_root])
    flipped = bytearray(quote)
    flipped[54 + size - 1] ^= 1                                # last body byte: signed in v5
    with pytest.raises(QuoteError) as e:
        verify_quote(bytes(flipped), [sim_root])
    assert e.value.check == "quote_signature"
    status, body, nonce, _ = attest(session_stack, quote_fields=dict(version=5, body_type=body_type))
    claims = tokencheck.decode_unverified(token_of(status, body))[1]
    assert claims["tdx_report_data"] == report_data(nonce, b"keygate test runtime data").hex()


# --------------------------------------------------------------------------- nonce

@pytest.mark.parametrize("version", [1, 2])
def test_nonce_format_and_signature(session_stack, version):
    status, headers, body = session_stack.http_full(
        "ita", "GET", f"/appraisal/v{version}/nonce",
        headers=key_headers(session_stack, **{"request-id": "req-123"}))
    assert status == 200
    assert headers["request-id"] == "req-123" and headers["trace-id"]
    nonce = json.loads(body)
    assert set(nonce) == {"val", "iat", "signature"}
    val, iat, sig = (base64.b64decode(nonce[k], validate=True) for k in ("val", "iat", "signature"))
    assert len(val) == 88 and len(base64.b64decode(val, validate=True)) == 64
    assert re.fullmatch(rb"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \+0000 UTC", iat)
    assert len(sig) == 384
    x5c = jwks(session_stack)["keys"][0]["x5c"]
    leaf = x509.load_der_x509_certificate(base64.b64decode(x5c[0]))
    leaf.public_key().verify(sig, val + iat, padding.PSS(padding.MGF1(hashes.SHA384()), 48),
                             hashes.SHA384())


# --------------------------------------------------------------------------- tokens

@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("alg", ["PS384", "RS256"])
def test_token_verifies_against_own_jwks_chain_and_crls(session_stack, version, alg):
    mrtd = hashlib.sha384(b"e2e").digest()
    status, body, nonce, quote = attest(session_stack, version, token_signing_alg=alg,
                                        quote_fields={"mrtd": mrtd, "rtmr1": b"\x01" * 48})
    token = token_of(status, body)
    header, claims = verify(session_stack, token)
    tokencheck.check_binding(claims, nonce, b"keygate test runtime data")
    assert header["alg"] == alg
    keys = [k for k in jwks(session_stack)["keys"] if k["kid"] == header["kid"]]
    assert [k["alg"] for k in keys] == ["PS384", "RS256"]
    leaf_der = base64.b64decode(keys[0]["x5c"][0])
    assert header["kid"] == hashlib.sha384(leaf_der).hexdigest()
    assert header["jku"] == session_stack.services["ita"].url + "/certs"
    tee = tokencheck.tee_claims(claims)
    assert tee["tdx_mrtd"] == mrtd.hex() and tee["tdx_rtmr1"] == "01" * 48
    assert tee["tdx_report_data"] == report_data(nonce, b"keygate test runtime data").hex()
    assert tee["tdx_collateral"]["quotehash"] == hashlib.sha256(quote).hexdigest()
    assert claims["exp"] - claims["iat"] == 300 and claims["nbf"] == claims["iat"]
    if version == 2:
        assert claims["iss"] == session_stack.services["ita"].url
        assert claims["appraisal"] == {"method": "default", "ver": 2}


def test_jwks_shape_and_crl_endpoints(local_stack):
    keys = jwks(local_stack)["keys"]
    assert len(keys) == 2 and {k["alg"] for k in keys} == {"PS384", "RS256"}
    for k in keys:
        assert set(k) == {"alg", "e", "kid", "kty", "n", "x5c"} and k["kty"] == "RSA"
        certs = [x509.load_der_x509_certificate(base64.b64decode(c)) for c in k["x5c"]]
        assert [cn(c) for c in certs] == ["keygate local ITA Attestation Token Signing",
                                          "keygate local ITA ATS Signing CA",
                                          "keygate local ITA Root CA"]
        assert all(c.signature_algorithm_oid == x509.SignatureAlgorithmOID.RSA_WITH_SHA512
                   for c in certs)
        nums = certs[0].public_key().public_numbers()
        assert int.from_bytes(tokencheck.b64url_decode(k["n"]), "big") == nums.n
        assert k["e"] == "AQAB" and certs[0].public_key().key_size == 3072
        url = local_stack.services["ita"].url
        assert tokencheck.cdp_url(certs[0]) == url + "/crl/ats-ca-crl.der"
        assert tokencheck.cdp_url(certs[1]) == url + "/crl/root-ca-crl.der"
        tokencheck.check_revocation(certs, crl_fetcher(local_stack),
                                    datetime.datetime.utcnow())
        eku = [e for e in certs[0].extensions if isinstance(e.value, x509.ExtendedKeyUsage)]
        assert not eku


def test_v1_shape_equals_production_token(stack_dir, tmp_path):
    """OutOfDate reference so that attester_advisory_ids is present, as in the real token."""
    stack = copy_state(stack_dir, tmp_path / "state")
    stack.start_ita(uptodate_tcb_svn="ff" * 16)
    try:
        token = token_of(*attest(stack, 1)[:2])
    finally:
        stack.stop_all()
    header, claims = tokencheck.decode_unverified(token)
    real_header, real_claims = load_json_token(os.path.join(VECTORS, "ita-tdx-prod-token-v1.jwt"))
    assert list(header) == list(real_header)
    assert list(claims) == list(real_claims)              # same keys, same order
    for k, v in real_claims.items():
        assert type(claims[k]) is type(v), k
    assert set(claims["tdx_collateral"]) == set(real_claims["tdx_collateral"])
    assert set(claims["verifier_nonce"]) == set(real_claims["verifier_nonce"])
    assert (claims["iss"], claims["ver"], claims["attester_type"], claims["intuse"]) == (
        "Intel Trust Authority", "1.0.0", "TDX", "generic")
    assert claims["attester_tcb_status"] == "OutOfDate"


def test_v1_uptodate_and_json_runtime_documented_differences(session_stack):
    real = load_json_token(os.path.join(VECTORS, "ita-tdx-prod-token-v1.jwt"))[1]
    pilot = load_json_token(os.path.join(VECTORS, "ita-tdx-pilot-token-v1.jwt"))[1]
    claims = tokencheck.decode_unverified(token_of(*attest(session_stack, 1)[:2]))[1]
    # UpToDate: no advisory claim, exactly like the real UpToDate pilot token
    assert claims["attester_tcb_status"] == "UpToDate"
    assert set(claims) == set(real) - {"attester_advisory_ids"} == set(pilot)
    runtime = json.dumps({"tee-pubkey": {"kty": "EC"}}).encode()
    status, body, nonce, _ = attest(session_stack, 1, runtime=runtime, use_nonce=False)
    claims = tokencheck.decode_unverified(token_of(status, body))[1]
    assert set(claims) == (set(pilot) - {"attester_held_data", "verifier_nonce"}
                           | {"attester_runtime_data"})
    assert claims["attester_runtime_data"] == {"tee-pubkey": {"kty": "EC"}}
    tokencheck.check_binding(claims, None, runtime)


def test_v2_shape_matches_sample(session_stack):
    with open(os.path.join(VECTORS, "ita-tdx-claims-v2-sample.json")) as f:
        sample = json.load(f)
    status, body, nonce, _ = attest(session_stack, 2)
    claims = tokencheck.decode_unverified(token_of(status, body))[1]
    jwt_claims = {"exp", "iat", "iss", "jti", "nbf"}
    assert set(claims) == set(sample) | jwt_claims | {"appraisal"}
    # documented: the edited sample's odd tdx_mrenclave dropped; attester_type, tdx_collateral
    # and the verifier_nonce echo added inside "tdx"
    assert set(claims["tdx"]) == (set(sample["tdx"]) - {"tdx_mrenclave", "attester_advisory_ids"}
                                  | {"attester_type", "tdx_collateral", "verifier_nonce"})
    assert claims["ver"] == "2.0.0" and claims["eat_profile"].endswith("/eat_profile.html")
    for k, v in sample["tdx"].items():
        if k in claims["tdx"]:
            assert type(claims["tdx"][k]) is type(v), k


def test_policies_matched_unmatched_and_must_match(stack_dir, tmp_path):
    mrtd = hashlib.sha384(b"policy td").digest()
    good, bad = "11111111-2222-4333-8444-555555555555", "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee"
    policies = tmp_path / "policies.json"
    policies.write_text(json.dumps({good: {"mrtd": [mrtd.hex()]},
                                    bad: {"mrtd": ["00" * 48], "allow_debug": False}}))
    stack = copy_state(stack_dir, tmp_path / "state")
    stack.start_ita(policies=str(policies))
    try:
        fields = {"quote_fields": {"mrtd": mrtd}}
        claims = tokencheck.decode_unverified(token_of(*attest(
            stack, 1, policy_ids=[good, bad], **fields)[:2]))[1]
        assert [p["id"] for p in claims["policy_ids_matched"]] == [good]
        assert [p["id"] for p in claims["policy_ids_unmatched"]] == [bad]
        entry = claims["policy_ids_matched"][0]
        assert entry["version"] == "v1" and len(base64.b64decode(entry["hash"])) == 64
        claims = tokencheck.decode_unverified(token_of(*attest(
            stack, 2, policy_ids=[good], policy_must_match=True, **fields)[:2]))[1]
        assert claims["policy_ids_unmatched"] is None
        assert attest(stack, 1, policy_ids=[bad], policy_must_match=True, **fields)[0] == 401
        assert attest(stack, 1, policy_ids=["not-a-uuid"], **fields)[0] == 400
        assert attest(stack, 1, policy_ids=["99999999-2222-4333-8444-555555555555"],
                      **fields)[0] == 400
    finally:
        stack.stop_all()


# --------------------------------------------------------------------------- rejections

def test_replayed_nonce_and_wrong_reportdata_rejected(session_stack):
    runtime = b"replay me"
    nonce = get_nonce(session_stack)
    quote = simquote.make_sim_quote(state(session_stack), report_data(nonce, runtime))
    body = attest_body(1, quote, runtime, nonce)
    assert session_stack.http("ita", "POST", "/appraisal/v1/attest", body,
                              key_headers(session_stack))[0] == 200
    status, resp = session_stack.http("ita", "POST", "/appraisal/v1/attest", body,
                                      key_headers(session_stack))
    assert status == 400 and b"already been used" in resp
    nonce = get_nonce(session_stack)
    wrong = simquote.make_sim_quote(state(session_stack), report_data(nonce, b"other data"))
    status, resp = session_stack.http("ita", "POST", "/appraisal/v1/attest",
                                      attest_body(1, wrong, runtime, nonce),
                                      key_headers(session_stack))
    assert status == 400 and b"REPORTDATA" in resp
    # that failure did not consume the nonce: the right quote still gets a token
    assert session_stack.http("ita", "POST", "/appraisal/v1/attest",
                              attest_body(1, simquote.make_sim_quote(
                                  state(session_stack), report_data(nonce, runtime)),
                                  runtime, nonce), key_headers(session_stack))[0] == 200
    forged = dict(get_nonce(session_stack), val=base64.b64encode(b"A" * 88).decode())
    status, resp = session_stack.http("ita", "POST", "/appraisal/v1/attest",
                                      attest_body(1, quote, runtime, forged),
                                      key_headers(session_stack))
    assert status == 400 and b"signature" in resp


def test_stale_nonce_rejected(stack_dir, tmp_path):
    stack = copy_state(stack_dir, tmp_path / "state")
    stack.start_ita(nonce_lifetime=0)
    try:
        nonce = get_nonce(stack)
        time.sleep(1.1)
        quote = simquote.make_sim_quote(state(stack), report_data(nonce, b"x"))
        status, body = stack.http("ita", "POST", "/appraisal/v1/attest",
                                  attest_body(1, quote, b"x", nonce), key_headers(stack))
        assert status == 400 and b"expired" in body
    finally:
        stack.stop_all()


def test_trusted_root_option_pins_quote_roots(stack_dir, tmp_path):
    """Real quotes pass quote verification only when the Intel root is pinned; they then fail
    the REPORTDATA binding (none of them binds SHA-512(runtime_data))."""
    stack = copy_state(stack_dir, tmp_path / "state")
    with open(os.path.join(VECTORS, "tdx-quote-gcp-cos113.bin"), "rb") as f:
        real = f.read()
    body = {"quote": base64.b64encode(real).decode(), "runtime_data": ""}
    try:
        stack.start_ita()
        status, resp = stack.http("ita", "POST", "/appraisal/v1/attest", body, key_headers(stack))
        assert status == 400 and b"quote verification failed: pck_chain" in resp
        stack.stop("ita")
        stack.start_ita(trusted_root=[os.path.join(state(stack), "sim-sgx-root-ca.pem"),
                                      INTEL_ROOT])
        status, resp = stack.http("ita", "POST", "/appraisal/v1/attest", body, key_headers(stack))
        assert status == 400 and b"REPORTDATA" in resp
        assert token_of(*attest(stack, 1)[:2])                  # sim quotes still accepted
    finally:
        stack.stop_all()


def test_api_key_required_on_api_routes_only(session_stack):
    for headers in ({}, {"x-api-key": "wrong"}):
        assert session_stack.http("ita", "GET", "/appraisal/v2/nonce", headers=headers)[0] == 401
        assert attest(session_stack, 1, headers=headers, use_nonce=False)[0] == 401
        assert attest(session_stack, 2, headers=headers, use_nonce=False)[0] == 401
    for path in ("/certs", "/crl/ats-ca-crl.der", "/crl/root-ca-crl.der"):
        for headers in ({}, {"x-api-key": "(null)"}):           # the C client's literal header
            assert session_stack.http("ita", "GET", path, headers=headers)[0] == 200


def test_request_validation(session_stack):
    hdr = key_headers(session_stack)
    nonce = get_nonce(session_stack)
    quote = simquote.make_sim_quote(state(session_stack), report_data(nonce, b"d"))
    good = attest_body(1, quote, b"d", nonce)

    def post(version, body, headers=hdr):
        return session_stack.http("ita", "POST", f"/appraisal/v{version}/attest", body, headers)[0]

    assert post(1, json.dumps(good), {**hdr, "Content-Type": "text/plain"}) == 415
    assert post(1, {**good, "runtime_data": "A" * 500_001}) == 413
    assert post(1, b"{not json", {**hdr, "Content-Type": "application/json"}) == 400
    assert post(1, {**good, "quote": "!!!not base64"}) == 400
    assert post(1, {**good, "quote": base64.b64encode(b"\x04\x00" + bytes(700)).decode()}) == 400
    assert post(1, {**good, "token_signing_alg": "HS256"}) == 400
    assert post(2, good) == 400                                  # flat body on the v2 route
    url_safe = {**good, "quote": base64.urlsafe_b64encode(quote).decode().rstrip("=")}
    assert post(1, url_safe) == 200                              # base64url accepted


# --------------------------------------------------------------------------- generic faults

def test_generic_faults(session_stack):
    s = session_stack
    s.set_faults("ita", [{"route": "/nonce$", "mode": "status", "status": 503,
                          "headers": {"Retry-After": "1"}, "count": 1}])
    status, headers, _ = s.http_full("ita", "GET", "/appraisal/v2/nonce",
                                     headers=key_headers(s))
    assert (status, headers["Retry-After"]) == (503, "1")
    assert s.http("ita", "GET", "/appraisal/v2/nonce", headers=key_headers(s))[0] == 200
    for mode, exc in (("truncate", Exception), ("close", Exception)):
        s.set_faults("ita", [{"route": "^/certs$", "mode": mode, "count": 1}])
        with pytest.raises(exc):
            s.http("ita", "GET", "/certs")
    s.set_faults("ita", [{"route": "^/certs$", "mode": "oversize", "bytes": 300_000,
                          "count": 1}])
    status, body = s.http("ita", "GET", "/certs")
    assert status == 200 and len(body) == 300_000 and body.startswith(b'{"token": "')
    s.set_faults("ita", [{"route": "^/certs$", "mode": "delay", "seconds": 0.6, "count": 1}])
    t0 = time.monotonic()
    assert s.http("ita", "GET", "/certs")[0] == 200 and time.monotonic() - t0 >= 0.6
    s.set_faults("ita", [{"route": "^/certs$", "mode": "malformed_json", "count": 1}])
    with pytest.raises(ValueError):
        json.loads(s.http("ita", "GET", "/certs")[1])
    s.set_faults("ita", [{"route": "^/certs$", "mode": "unknown_fields", "count": 1}])
    assert "x_unexpected_field" in json.loads(s.http("ita", "GET", "/certs")[1])
    s.set_faults("ita", [{"route": "^/certs$", "mode": "html_error", "count": 1}])
    status, headers, body = s.http_full("ita", "GET", "/certs")
    assert (status, headers["Server"], headers["Content-Type"]) == (400, "awselb/2.0",
                                                                   "text/html")
    assert s.set_faults("ita", []) == []
    log = s.requests("ita")
    assert {r["fault"] for r in log} >= {"status", "truncate", "close", "oversize", "delay",
                                        "malformed_json", "unknown_fields", "html_error"}
    assert all(set(r) - {"nonce_sha256"} == {"t", "method", "path", "status", "request_id",
                                             "has_api_key", "user_agent", "attestation_type", "fault",
                                             "ms"}
               for r in log)


def test_request_log_has_the_digest_of_each_nonce_issued_and_consumed(session_stack):
    s = session_stack
    s.clear_requests("ita")
    status, body, nonce, _ = attest(s, 1)
    assert status == 200, body
    digest = hashlib.sha256(base64.b64decode(nonce["val"])).hexdigest()
    log = s.requests("ita")
    assert [(r["path"], r.get("nonce_sha256")) for r in log] == [
        ("/appraisal/v2/nonce", digest), ("/appraisal/v1/attest", digest)]
    status, _, _, _ = attest(s, 1, use_nonce=False)  # no nonce: nothing to log
    assert status == 200 and "nonce_sha256" not in s.requests("ita")[-1]


def test_control_api_needs_token_and_log_has_no_secrets(session_stack):
    s = session_stack
    assert s.http("ita", "GET", "/_stack/requests")[0] == 401
    assert s.http("ita", "PUT", "/_stack/faults", {"faults": []},
                  {"X-Stack-Control": "nope"})[0] == 401
    token = token_of(*attest(s, 1)[:2])
    with open(os.path.join(state(s), "ita-requests.jsonl")) as f:
        text = f.read()
    assert pki.api_key(state(s)) not in text and token.split(".")[1] not in text
    assert any(r["has_api_key"] and r["attestation_type"] == "tdx"
               for r in map(json.loads, text.splitlines()))


def test_fault_from_command_line_and_clean_sigterm(stack_dir, tmp_path):
    stack = copy_state(stack_dir, tmp_path / "state")
    stack.start_ita(faults=[{"route": "^/certs$", "mode": "status", "status": 504}])
    assert stack.http("ita", "GET", "/certs")[0] == 504
    assert stack.http("ita", "GET", "/certs")[0] == 504          # count null: every request
    assert stack.stop("ita") == 0
    assert not (tmp_path / "state" / "ita.json").exists()


def test_plain_http_mode(stack_dir, tmp_path):
    stack = copy_state(stack_dir, tmp_path / "state")
    handle = stack.start_ita(http=True)
    try:
        assert handle.url.startswith("http://127.0.0.1:")
        assert stack.http("ita", "GET", "/certs")[0] == 200
        with socket.create_connection(("127.0.0.1", handle.port)) as sock:
            with pytest.raises(ssl.SSLError):
                ssl.create_default_context().wrap_socket(sock, server_hostname="localhost")
    finally:
        stack.stop_all()


# --------------------------------------------------------------------------- bad tokens

BAD_TOKENS = {
    "hs256": "alg", "alg_none": "alg", "expired": "expired", "not_yet_valid": "not_yet_valid",
    "foreign_root": "chain", "revoked_leaf": "revoked", "tampered": "signature",
    "wrong_nonce": "nonce", "wrong_held_data": "held_data", "debug_td": "debug",
}


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("mode", sorted(BAD_TOKENS))
def test_bad_token_faults_rejected_for_the_right_reason(session_stack, mode, version):
    s = session_stack
    s.set_faults("ita", [{"route": "/attest$", "mode": mode, "count": 1}])
    runtime = b"bad token data"
    status, body, nonce, _ = attest(s, version, runtime=runtime)
    token = token_of(status, body)
    with pytest.raises(TokenError) as e:
        _, claims = verify(s, token)
        tokencheck.check_binding(claims, nonce, runtime)
    assert e.value.check == BAD_TOKENS[mode], str(e.value)
    s.clear_faults("ita")
    assert_naive_verifier_accepts(s, mode, token)


def assert_naive_verifier_accepts(stack, mode, token):
    """What a naive client checks does pass: the fault is caught only by a real check."""
    header, _ = tokencheck.decode_unverified(token)
    signing_input, sig = token.rsplit(".", 1)
    jwk = next(k for k in jwks(stack)["keys"] if k["kid"] == header["kid"])
    x5c = [x509.load_der_x509_certificate(base64.b64decode(c)) for c in jwk["x5c"]]
    if mode == "hs256":                 # HMAC keyed with the leaf public key PEM
        pem = x5c[0].public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
        assert tokencheck.b64url_decode(sig) == hmac.new(pem, signing_input.encode(),
                                                         hashlib.sha256).digest()
    elif mode == "alg_none":
        assert header["alg"] == "none" and sig == ""
    elif mode == "foreign_root":        # trusting the JWKS's own root: fully valid
        tokencheck.verify_token(token, jwks(stack), [x5c[-1]], crl_fetcher(stack),
                                issuer_v2=stack.services["ita"].url)
    elif mode != "tampered":            # a valid signature by the x5c leaf
        tokencheck.verify_jws_signature(x5c[0].public_key(), header["alg"],
                                     signing_input.encode(), tokencheck.b64url_decode(sig))


@pytest.mark.parametrize("version", [1, 2])
def test_no_nonce_echo_drops_the_echo_and_keeps_the_binding(session_stack, version):
    """The no_nonce_echo mode (issue 19, item 5): a validly signed token without verifier_nonce,
    whose tdx_report_data still binds the nonce that was sent."""
    s = session_stack
    s.set_faults("ita", [{"route": "/attest$", "mode": "no_nonce_echo", "count": 1}])
    runtime = b"no echo data"
    status, body, nonce, _ = attest(s, version, runtime=runtime)
    _, claims = verify(s, token_of(status, body))
    tee = claims["tdx"] if version == 2 else claims
    assert "verifier_nonce" not in claims and "verifier_nonce" not in tee
    prefix = base64.b64decode(nonce["val"]) + base64.b64decode(nonce["iat"])
    assert tee["tdx_report_data"] == hashlib.sha512(prefix + runtime).hexdigest()
    assert base64.b64decode(tee["attester_held_data"]) == runtime
    # the next token echoes it again (count 1)
    status, body, nonce, _ = attest(s, version, runtime=runtime)
    _, claims = verify(s, token_of(status, body))
    tokencheck.check_binding(claims, nonce, runtime)
