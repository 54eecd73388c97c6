# SPDX-License-Identifier: Apache-2.0
"""Token verification (`keygate token` verifies by default, `keygate verify --token`): every
forged or invalid class fails with the check named; the real artefacts in tests/vectors
give the outcome tests/vectors/README.md states."""
import base64
import hashlib
import http.server
import json
import os
import pathlib
import threading

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from conftest import REPO, run, write_keygate_conf
from tests.stack import ita, pki

VECTORS = pathlib.Path(os.environ.get("KEYGATE_VECTORS_DIR", REPO / "tests" / "vectors"))
PROD_TIME = "2023-12-05T00:10:00Z"
DEV_TIME = "2024-06-11T04:20:00Z"


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_dec(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def fetch_token(keygate_bin, conf, *extra):
    r = run([keygate_bin, "-c", str(conf), "token", *extra])
    return r


def verify(keygate_bin, conf, token_file, *extra):
    return run([keygate_bin, "-c", str(conf), "verify", "--token", str(token_file), *extra])


def assert_check(r, needle):
    """Exit 15 and exactly one error line, the last, naming the check (stderr may also carry the
    sim warning and the request-id/trace-id lines of `keygate token`)."""
    assert r.returncode == 15, (r.returncode, r.stderr)
    errors = [l for l in r.stderr.splitlines() if l.startswith("keygate: ")]
    assert len(errors) == 1 and r.stderr.endswith(errors[0] + "\n"), r.stderr
    assert errors[0].startswith("keygate: verify: ") and needle in errors[0], r.stderr


# ---------------------------------------------------------------- against the local stack

@pytest.mark.parametrize("version", ["v1", "v2"])
def test_release_grade_token_is_fetched_verified_and_printed(keygate_bin, ita_stack, tmp_path, version):
    ud = tmp_path / "ud.bin"
    ud.write_bytes(os.urandom(388))
    conf = write_keygate_conf(ita_stack, tmp_path / "k.conf", ita_api_version=version)
    r = fetch_token(keygate_bin, conf, "--user-data-file", str(ud))
    assert r.returncode == 0, r.stderr
    assert "trace-id: " in r.stderr and "request-id: " in r.stderr
    token = tmp_path / "token.jwt"
    token.write_text(r.stdout)
    r = verify(keygate_bin, conf, token, "--json", "--user-data-file", str(ud))
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    claims = out["claims"]["tdx"] if version == "v2" else out["claims"]
    assert out["verified"] is True
    assert base64.b64decode(claims["attester_held_data"]) == ud.read_bytes()
    r = verify(keygate_bin, conf, token)
    assert r.returncode == 0 and "token verified: ver %s" % ("2.0.0" if version == "v2" else "1.0.0") in r.stderr
    # another user data file: held data is not ours
    other = tmp_path / "other.bin"
    other.write_bytes(b"x" * 388)
    assert_check(verify(keygate_bin, conf, token, "--user-data-file", str(other)),
                 "attester_held_data is not our user data")


@pytest.mark.parametrize("mode,needle", [
    ("hs256", "alg 'HS256' is not allowed"),
    ("alg_none", "alg 'none' is not allowed"),
    ("expired", "token expired"),
    ("not_yet_valid", "not valid before"),
    ("foreign_root", "pinned"),
    ("revoked_leaf", "leaf certificate revoked"),
    ("tampered", "signature"),
    ("wrong_nonce", "verifier_nonce is not the nonce we fetched"),
    ("wrong_held_data", "attester_held_data is not our user data"),
    ("debug_td", "debuggable"),
])
def test_forged_and_invalid_tokens_fail_with_the_check_named(keygate_bin, ita_stack, tmp_path, mode, needle):
    ud = tmp_path / "ud.bin"
    ud.write_bytes(os.urandom(64))
    ita_stack.set_faults("ita", [{"route": "/attest$", "mode": mode}])
    conf = write_keygate_conf(ita_stack, tmp_path / "k.conf")
    assert_check(fetch_token(keygate_bin, conf, "--user-data-file", str(ud)), needle)


def _good_token(keygate_bin, ita_stack, tmp_path, **conf_keys):
    conf = write_keygate_conf(ita_stack, tmp_path / "k.conf", **conf_keys)
    r = fetch_token(keygate_bin, conf)
    assert r.returncode == 0, r.stderr
    token = tmp_path / "token.jwt"
    token.write_text(r.stdout)
    status, jwks = ita_stack.http("ita", "GET", "/certs")
    assert status == 200
    return conf, token, json.loads(jwks)


def test_unknown_kid_and_kid_alg_mismatch(keygate_bin, ita_stack, tmp_path):
    conf, token, jwks = _good_token(keygate_bin, ita_stack, tmp_path)
    jwks_file = tmp_path / "jwks.json"
    renamed = {"keys": [dict(k, kid="00" * 48) for k in jwks["keys"]]}
    jwks_file.write_text(json.dumps(renamed))
    assert_check(verify(keygate_bin, conf, token, "--jwks-file", str(jwks_file)), "kid")
    only_rs256 = {"keys": [k for k in jwks["keys"] if k["alg"] == "RS256"]}
    jwks_file.write_text(json.dumps(only_rs256))
    r = verify(keygate_bin, conf, token, "--jwks-file", str(jwks_file))
    assert_check(r, "PS384")


def test_jwk_must_equal_x5c_leaf(keygate_bin, ita_stack, tmp_path):
    conf, token, jwks = _good_token(keygate_bin, ita_stack, tmp_path)
    other = rsa.generate_private_key(public_exponent=65537, key_size=3072).public_key().public_numbers()
    swapped = {"keys": [dict(k, n=b64url(other.n.to_bytes(384, "big"))) for k in jwks["keys"]]}
    jwks_file = tmp_path / "jwks.json"
    jwks_file.write_text(json.dumps(swapped))
    assert_check(verify(keygate_bin, conf, token, "--jwks-file", str(jwks_file)), "JWK n/e differ")


def test_revoked_intermediate(keygate_bin, ita_stack, tmp_path):
    conf, token, _ = _good_token(keygate_bin, ita_stack, tmp_path)
    state = pathlib.Path(ita_stack.state_dir)
    chain = pki.load_ita_chain(str(state))
    crl = tmp_path / "root-crl.der"
    crl.write_bytes(pki.make_crl(chain.root, chain.root_key, [chain.ca.serial_number], crl_number=7))
    assert_check(verify(keygate_bin, conf, token, "--crl-file", str(crl)), "intermediate certificate revoked")


def test_local_policy(keygate_bin, ita_stack, tmp_path):
    conf, token, _ = _good_token(keygate_bin, ita_stack, tmp_path)
    conf2 = write_keygate_conf(ita_stack, tmp_path / "k2.conf", require_tcb_status="SWHardeningNeeded")
    assert_check(verify(keygate_bin, conf2, token), "attester_tcb_status 'UpToDate' is not in require_tcb_status")
    conf3 = write_keygate_conf(ita_stack, tmp_path / "k3.conf", require_mrtd="ab" * 48)
    assert_check(verify(keygate_bin, conf3, token), "is not in require_mrtd")
    conf4 = write_keygate_conf(ita_stack, tmp_path / "k4.conf", require_rtmr1="cd" * 48)
    assert_check(verify(keygate_bin, conf4, token), "tdx_rtmr1 is not in require_rtmr1")
    # allow-lists that include the TD pass
    conf5 = write_keygate_conf(ita_stack, tmp_path / "k5.conf", require_rtmr1="cd" * 48 + ", " + "00" * 48,
                               require_tcb_status="OutOfDate, UpToDate")
    assert verify(keygate_bin, conf5, token).returncode == 0


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_attester_type_must_be_the_expected_one(keygate_bin, ita_stack, tmp_path, version):
    """A validly signed token for another TEE (SGX) does not pass for a TD: attester_type (top
    level in v1, in "tdx" in v2) must be TDX unless --attester-type says otherwise."""
    conf, token, _ = _good_token(keygate_bin, ita_stack, tmp_path, ita_api_version=version)
    header, claims = (json.loads(b64url_dec(p)) for p in token.read_text().split(".")[:2])
    tee = claims["tdx"] if version == "v2" else claims
    assert tee["attester_type"] == "TDX"
    chain = pki.load_ita_chain(ita_stack.state_dir)

    def resigned(name, **tee_claims):
        tee.update(tee_claims)
        for k, v in tee_claims.items():
            if v is None:
                del tee[k]
        f = tmp_path / name
        f.write_text(ita.sign_jws(header, claims, chain.leaf_key, header["alg"]))
        return f

    sgx = resigned("sgx.jwt", attester_type="SGX")
    assert_check(verify(keygate_bin, conf, sgx), "attester_type 'SGX' is not the expected 'TDX'")
    r = verify(keygate_bin, conf, sgx, "--attester-type", "SGX")
    assert r.returncode == 0 and "attester SGX" in r.stderr, r.stderr
    assert_check(verify(keygate_bin, conf, token, "--attester-type", "SGX"),
                 "attester_type 'TDX' is not the expected 'SGX'")
    assert verify(keygate_bin, conf, token, "--attester-type", "TDX").returncode == 0
    missing = resigned("none.jwt", attester_type=None)
    assert_check(verify(keygate_bin, conf, missing), "token has no attester_type claim (expected 'TDX')")
    r = verify(keygate_bin, conf, token, "--attester-type", "")
    assert r.returncode == 1 and "--attester-type" in r.stderr, r.stderr  # usage error


def test_pinned_root_is_required(keygate_bin, ita_stack, tmp_path):
    conf, token, _ = _good_token(keygate_bin, ita_stack, tmp_path)
    conf2 = write_keygate_conf(ita_stack, tmp_path / "k2.conf", ita_trust_anchor=None)
    r = verify(keygate_bin, conf2, token)
    assert r.returncode == 10 and "ita_trust_anchor is not set" in r.stderr
    conf3 = write_keygate_conf(ita_stack, tmp_path / "k3.conf",
                               ita_trust_anchor=pathlib.Path(ita_stack.state_dir) / "foreign-root-ca.pem")
    assert_check(verify(keygate_bin, conf3, token), "pinned")


def test_crl_unavailable_follows_crl_policy(keygate_bin, ita_stack, tmp_path):
    conf, token, _ = _good_token(keygate_bin, ita_stack, tmp_path)
    ita_stack.set_faults("ita", [{"route": "^/crl/", "mode": "status", "status": 404}])
    assert_check(verify(keygate_bin, conf, token), "crl_policy = require")
    conf2 = write_keygate_conf(ita_stack, tmp_path / "k2.conf", crl_policy="if-available")
    r = verify(keygate_bin, conf2, token)
    assert r.returncode == 0, r.stderr


def test_oversize_jwks_is_refused_without_reading_it(keygate_bin, ita_stack, tmp_path):
    conf, token, _ = _good_token(keygate_bin, ita_stack, tmp_path)
    ita_stack.set_faults("ita", [{"route": "^/certs$", "mode": "oversize"}])  # 64 MiB
    assert_check(verify(keygate_bin, conf, token), "larger than 1048576 bytes")


# ---------------------------------------------------------------- the real artefacts

def vector(name):
    p = VECTORS / name
    if not p.exists():
        pytest.fail(f"missing test vector {p} (tests/vectors/README.md lists them)")
    return p


def offline_conf(tmp_path, root, **extra):
    keys = {"ita_trust_anchor": root, "timeout_ms": 1000, "retry_max": 0,
            "require_tcb_status": "UpToDate, OutOfDate"}
    keys.update(extra)
    p = tmp_path / "offline.conf"
    p.write_text("".join(f"{k} = {v}\n" for k, v in keys.items()))
    return p


def test_production_tdx_token_verifies_at_its_time(keygate_bin, tmp_path):
    conf = offline_conf(tmp_path, vector("ita-prod-root-ca.pem"), crl_policy="if-available")
    token = vector("ita-tdx-prod-token-v1.jwt")
    r = verify(keygate_bin, conf, token, "--jwks-file", str(vector("ita-prod-jwks.json")), "--at", PROD_TIME,
               "--json")
    assert r.returncode == 0, r.stderr
    c = json.loads(r.stdout)["claims"]
    assert c["attester_type"] == "TDX" and c["tdx_mrtd"].startswith("5f53c388")
    # the binding holds (and keygate checked it): SHA-512(val || iat || held) == tdx_report_data
    n = c["verifier_nonce"]
    held = base64.b64decode(c["attester_held_data"])
    assert hashlib.sha512(base64.b64decode(n["val"]) + base64.b64decode(n["iat"]) + held).hexdigest() \
        == c["tdx_report_data"]
    held_file = tmp_path / "held.bin"
    held_file.write_bytes(held)
    r = verify(keygate_bin, conf, token, "--jwks-file", str(vector("ita-prod-jwks.json")), "--at", PROD_TIME,
               "--user-data-file", str(held_file))
    assert r.returncode == 0, r.stderr


def test_production_token_crl_require_fails_without_crls(keygate_bin, tmp_path):
    conf = offline_conf(tmp_path, vector("ita-prod-root-ca.pem"))
    r = verify(keygate_bin, conf, vector("ita-tdx-prod-token-v1.jwt"), "--jwks-file",
               str(vector("ita-prod-jwks.json")), "--at", PROD_TIME)
    assert_check(r, "crl_policy = require")


def test_production_token_fails_today_and_under_the_dev_root(keygate_bin, tmp_path):
    jwks = str(vector("ita-prod-jwks.json"))
    token = vector("ita-tdx-prod-token-v1.jwt")
    conf = offline_conf(tmp_path, vector("ita-prod-root-ca.pem"), crl_policy="if-available")
    r = verify(keygate_bin, conf, token, "--jwks-file", jwks)
    assert_check(r, "expired")
    dev_root = tmp_path / "dev-root.pem"
    dev_root.write_bytes(_x5c_pem(vector("ita-dev-jwks.json"), 2))
    conf = offline_conf(tmp_path, dev_root, crl_policy="if-available")
    assert_check(verify(keygate_bin, conf, token, "--jwks-file", jwks, "--at", PROD_TIME), "pinned")


def _x5c_pem(jwks_path, index):
    der = base64.b64decode(json.loads(jwks_path.read_text())["keys"][0]["x5c"][index])
    return x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM)


class _CrlHandler(http.server.BaseHTTPRequestHandler):
    files = {}
    requests = []

    def do_GET(self):
        self.requests.append(self.path)
        body = self.files.get(self.path)
        self.send_response(200 if body else 404)
        self.send_header("Content-Type", "application/pkix-crl")
        self.send_header("Content-Length", str(len(body or b"")))
        self.end_headers()
        self.wfile.write(body or b"")

    def log_message(self, *args):
        pass


@pytest.fixture
def dev_crl_server():
    """Serves the dev CRLs at the CDP URLs in the dev certificates: http://localhost:8081/crl/."""
    _CrlHandler.files = {"/crl/ats-ca-crl.der": vector("ita-dev-ats-ca-crl.der").read_bytes(),
                         "/crl/root-ca-crl.der": vector("ita-dev-root-ca-crl.der").read_bytes()}
    _CrlHandler.requests = []
    try:
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 8081), _CrlHandler)
    except OSError as e:
        pytest.skip(f"127.0.0.1:8081 (the CDP port in the dev certificates) is taken: {e}")
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def test_dev_sgx_token_localhost_cdps_are_refused_preloaded_crls_verify(keygate_bin, tmp_path, dev_crl_server):
    """The dev certificates' CDPs name http://localhost:8081: a host name, not a loopback IP
    literal, so even allow_http_loopback does not let plain http reach it (the CRL server on
    127.0.0.1:8081 sees no request). The same CRLs given with --crl-file verify."""
    dev_root = tmp_path / "dev-root.pem"
    dev_root.write_bytes(_x5c_pem(vector("ita-dev-jwks.json"), 2))
    conf = offline_conf(tmp_path, dev_root, allow_http_loopback="yes")
    token = vector("ita-sgx-dev-token.jwt")
    jwks = str(vector("ita-dev-jwks.json"))
    assert_check(verify(keygate_bin, conf, token, "--jwks-file", jwks, "--at", DEV_TIME),
                 "refusing http://localhost:8081/crl/")
    assert _CrlHandler.requests == []
    crls = ["--crl-file", str(vector("ita-dev-ats-ca-crl.der")), "--crl-file", str(vector("ita-dev-root-ca-crl.der"))]
    # a real SGX token is not a TD's: refused by default, verified when SGX is what we expect
    assert_check(verify(keygate_bin, conf, token, "--jwks-file", jwks, "--at", DEV_TIME, *crls),
                 "attester_type 'SGX' is not the expected 'TDX'")
    sgx = ("--attester-type", "SGX")
    r = verify(keygate_bin, conf, token, "--jwks-file", jwks, "--at", DEV_TIME, "--json", *crls, *sgx)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["claims"]["attester_type"] == "SGX"
    assert_check(verify(keygate_bin, conf, token, "--jwks-file", jwks, *crls, *sgx), "expired")
    conf = offline_conf(tmp_path, vector("ita-prod-root-ca.pem"), allow_http_loopback="yes")
    assert_check(verify(keygate_bin, conf, token, "--jwks-file", jwks, "--at", DEV_TIME, *crls, *sgx), "pinned")
    assert _CrlHandler.requests == []


def test_dev_token_2023_fails_on_unknown_kid(keygate_bin, tmp_path):
    dev_root = tmp_path / "dev-root.pem"
    dev_root.write_bytes(_x5c_pem(vector("ita-dev-jwks.json"), 2))
    conf = offline_conf(tmp_path, dev_root)
    r = verify(keygate_bin, conf, vector("ita-sgx-dev-token-2023.jwt"), "--jwks-file",
               str(vector("ita-dev-jwks.json")), "--at", "2023-12-21T05:33:00Z")
    assert_check(r, "kid")


def test_hs256_resigning_of_the_production_token_fails(keygate_bin, tmp_path):
    import hmac
    token = vector("ita-tdx-prod-token-v1.jwt").read_text().strip()
    header, payload, _ = token.split(".")
    h = json.loads(b64url_dec(header))
    h["alg"] = "HS256"
    leaf = x509.load_der_x509_certificate(
        base64.b64decode(json.loads(vector("ita-prod-jwks.json").read_text())["keys"][0]["x5c"][0]))
    secret = leaf.public_key().public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    signing_input = b64url(json.dumps(h).encode()) + "." + payload
    forged = signing_input + "." + b64url(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest())
    f = tmp_path / "forged.jwt"
    f.write_text(forged)
    conf = offline_conf(tmp_path, vector("ita-prod-root-ca.pem"), crl_policy="if-available")
    assert_check(verify(keygate_bin, conf, f, "--jwks-file", str(vector("ita-prod-jwks.json")), "--at",
                        PROD_TIME), "alg 'HS256' is not allowed")


@pytest.mark.parametrize("fault", [None, "hs256", "revoked_leaf"])
def test_no_leak_or_memory_error_under_valgrind(keygate_bin, ita_stack, tmp_path, fault):
    """The whole CLI path (TLS, nonce, sim quote, token, JWKS, CRLs, verification) on success and
    on failure: no invalid access, no definite leak."""
    if fault:
        ita_stack.set_faults("ita", [{"route": "/attest$", "mode": fault}])
    conf = write_keygate_conf(ita_stack, tmp_path / "k.conf", timeout_ms=30000)
    r = run(["valgrind", "-q", "--leak-check=full", "--errors-for-leak-kinds=definite",
             "--error-exitcode=99", keygate_bin, "-c", str(conf), "token"], timeout=300)
    assert r.returncode == (15 if fault else 0), r.stderr
    assert "Invalid read" not in r.stderr and "definitely lost" not in r.stderr, r.stderr


NONCE_UNKNOWN = ("tdx_report_data is not SHA-512(attester_held_data) and the token echoes no verifier_nonce: "
                 "the nonce it binds is unknown here")


def test_v2_token_without_nonce_echo_is_accepted_only_where_the_binding_holds(keygate_bin, ita_stack, tmp_path):
    """Issue 19, item 5: whether ITA's v2 tokens echo verifier_nonce is unconfirmed. `keygate
    token` accepts one without the echo when REPORTDATA = SHA-512(our nonce || our user data);
    where the binding cannot be checked (no user data; a stored token, whose nonce is unknown)
    it is refused, as are a v1 token without the echo and a v2 token echoing another nonce."""
    ud = tmp_path / "ud.bin"
    ud.write_bytes(os.urandom(388))
    ita_stack.set_faults("ita", [{"route": "/attest$", "mode": "no_nonce_echo"}])
    conf = write_keygate_conf(ita_stack, tmp_path / "k.conf", ita_api_version="v2")
    r = fetch_token(keygate_bin, conf, "--user-data-file", str(ud))
    assert r.returncode == 0, r.stderr
    claims = json.loads(b64url_dec(r.stdout.split(".")[1]))
    assert claims["ver"] == "2.0.0" and "verifier_nonce" not in claims and "verifier_nonce" not in claims["tdx"]
    assert base64.b64decode(claims["tdx"]["attester_held_data"]) == ud.read_bytes()
    token = tmp_path / "token.jwt"
    token.write_text(r.stdout)
    assert_check(verify(keygate_bin, conf, token), NONCE_UNKNOWN)
    assert_check(verify(keygate_bin, conf, token, "--user-data-file", str(ud)), NONCE_UNKNOWN)
    assert_check(fetch_token(keygate_bin, conf),
                 "v2 token has no verifier_nonce echo, and without our user data the REPORTDATA binding, "
                 "which includes the nonce, cannot be checked")
    conf_v1 = write_keygate_conf(ita_stack, tmp_path / "k1.conf")
    assert_check(fetch_token(keygate_bin, conf_v1, "--user-data-file", str(ud)), "token has no verifier_nonce")
    ita_stack.set_faults("ita", [{"route": "/attest$", "mode": "wrong_nonce"}])
    assert_check(fetch_token(keygate_bin, conf, "--user-data-file", str(ud)),
                 "verifier_nonce is not the nonce we fetched")
    ita_stack.clear_faults("ita")
