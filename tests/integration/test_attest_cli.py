# SPDX-License-Identifier: Apache-2.0
"""`keygate evidence` and `keygate token` against the local ITA service: the simulated TD's
quote binds the nonce and our user data, the token carries what we sent, and every failure is
one line naming the step."""
import base64
import hashlib
import json
import os
import pathlib
import time

import pytest

from conftest import run, write_keygate_conf
from tests.stack import quote as stack_quote

MRTD = "5a" * 48
RTMR2 = "c3" * 48


def token_json(keygate_bin, conf, user_data=None, extra=()):
    cmd = [keygate_bin, "--config", str(conf), "--json", "token", *extra]
    if user_data is not None:
        cmd += ["--user-data-file", str(user_data)]
    r = run(cmd)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout), r


def b64(s):
    return base64.b64decode(s)


def test_token_v1_binds_nonce_and_user_data(keygate_bin, ita_stack, tmp_path):
    ud = tmp_path / "ud.bin"
    ud.write_bytes(os.urandom(388))
    conf = write_keygate_conf(ita_stack, tmp_path / "k.conf", sim_mrtd=MRTD, sim_rtmr2=RTMR2)
    out, r = token_json(keygate_bin, conf, ud)
    assert "simulated TD" in r.stderr  # the sim adapter warns on every use
    assert out["verified"] is True
    assert out["header"]["alg"] == "PS384"
    c = out["claims"]
    assert c["ver"] == "1.0.0" and c["attester_type"] == "TDX"
    assert b64(c["attester_held_data"]) == ud.read_bytes()
    nonce = c["verifier_nonce"]
    want = hashlib.sha512(b64(nonce["val"]) + b64(nonce["iat"]) + ud.read_bytes()).hexdigest()
    assert c["tdx_report_data"] == want
    assert c["tdx_mrtd"] == MRTD and c["tdx_rtmr2"] == RTMR2
    assert c["tdx_is_debuggable"] is False
    reqs = ita_stack.requests("ita")
    paths = [(q["method"], q["path"]) for q in reqs]
    assert paths[:2] == [("GET", "/appraisal/v2/nonce"), ("POST", "/appraisal/v1/attest")]
    # verification fetched the JWKS and both CRLs, and never sent the API key there
    assert sorted(paths[2:]) == [("GET", "/certs"), ("GET", "/crl/ats-ca-crl.der"),
                                 ("GET", "/crl/root-ca-crl.der")]
    assert [q["has_api_key"] for q in reqs] == [True, True, False, False, False]


def test_token_v2_rs256_and_debug_td(keygate_bin, ita_stack, tmp_path):
    conf = write_keygate_conf(ita_stack, tmp_path / "k.conf", ita_api_version="v2",
                              ita_token_alg="RS256", sim_td_attributes="0100001000000000",
                              allow_debug_td="yes")
    out, _ = token_json(keygate_bin, conf)
    assert out["header"]["alg"] == "RS256"
    c = out["claims"]
    assert c["ver"] == "2.0.0"
    assert c["tdx"]["tdx_is_debuggable"] is True
    # no user data: REPORTDATA = SHA-512(val || iat)
    n = c["tdx"]["verifier_nonce"] if "verifier_nonce" in c["tdx"] else c["verifier_nonce"]
    assert c["tdx"]["tdx_report_data"] == hashlib.sha512(b64(n["val"]) + b64(n["iat"])).hexdigest()


def test_evidence_quote_is_real_layout(keygate_bin, ita_stack, tmp_path):
    ud = tmp_path / "ud.bin"
    ud.write_bytes(b"user data")
    qfile = tmp_path / "quote.bin"
    conf = write_keygate_conf(ita_stack, tmp_path / "k.conf", sim_mrtd=MRTD)
    r = run([keygate_bin, "-c", str(conf), "evidence", "--user-data-file", str(ud), "--out", str(qfile)])
    assert r.returncode == 0, r.stderr
    ev = json.loads(r.stdout)
    q = qfile.read_bytes()
    assert b64(ev["quote"]) == q
    nonce = ev["verifier_nonce"]
    report_data = hashlib.sha512(b64(nonce["val"]) + b64(nonce["iat"]) + b"user data").digest()
    assert b64(ev["report_data"]) == report_data
    assert q[568:632] == report_data
    # the stack's independent Python verifier accepts it, pinned to the simulated root only
    sim_root = (pathlib.Path(ita_stack.state_dir) / "sim-sgx-root-ca.pem").read_bytes()
    parsed = stack_quote.verify_quote(q, [sim_root])
    assert parsed.mrtd.hex() == MRTD


def test_quote_v5_from_the_sim_td_end_to_end(keygate_bin, ita_stack, tmp_path):
    """sim_quote_version = 5: the sim TD's v5 quote (body type 3) binds nonce and user data at
    REPORTDATA's v5 offset, the Python verifier and --parse-quote read it, the local ITA verifies it
    and issues a token whose claims carry what the quote says."""
    ud = tmp_path / "ud.bin"
    ud.write_bytes(os.urandom(64))
    qfile = tmp_path / "quote.bin"
    conf = write_keygate_conf(ita_stack, tmp_path / "k.conf", sim_mrtd=MRTD, sim_rtmr2=RTMR2,
                              sim_quote_version=5)
    r = run([keygate_bin, "-c", str(conf), "evidence", "--user-data-file", str(ud), "--out", str(qfile)])
    assert r.returncode == 0, r.stderr
    ev = json.loads(r.stdout)
    q = qfile.read_bytes()
    nonce = ev["verifier_nonce"]
    report_data = hashlib.sha512(b64(nonce["val"]) + b64(nonce["iat"]) + ud.read_bytes()).digest()
    assert q[:2] == b"\x05\x00" and q[48:54] == b"\x03\x00" + (648).to_bytes(4, "little")
    assert q[574:638] == report_data and q[568:632] != report_data
    sim_root = (pathlib.Path(ita_stack.state_dir) / "sim-sgx-root-ca.pem").read_bytes()
    parsed = stack_quote.verify_quote(q, [sim_root])
    assert (parsed.version, parsed.body_type, parsed.mrtd.hex()) == (5, 3, MRTD)
    assert parsed.tee_tcb_svn2 == parsed.tee_tcb_svn and parsed.mrservicetd == bytes(48)
    p = run([keygate_bin, "--json", "evidence", "--parse-quote", str(qfile)])
    assert p.returncode == 0, p.stderr
    shown = json.loads(p.stdout)
    assert (shown["version"], shown["body_type"], shown["mrservicetd"]) == (5, 3, "00" * 48)
    assert shown["report_data"] == report_data.hex()

    for version in ("v1", "v2"):
        conf = write_keygate_conf(ita_stack, tmp_path / f"{version}.conf", sim_mrtd=MRTD, sim_rtmr2=RTMR2,
                                  sim_quote_version=5, ita_api_version=version)
        out, _ = token_json(keygate_bin, conf, ud)
        c = out["claims"] if version == "v1" else out["claims"]["tdx"]
        assert out["verified"] is True
        assert c["tdx_mrtd"] == MRTD and c["tdx_rtmr2"] == RTMR2
        n = c["verifier_nonce"] if "verifier_nonce" in c else out["claims"]["verifier_nonce"]
        assert c["tdx_report_data"] == hashlib.sha512(b64(n["val"]) + b64(n["iat"]) + ud.read_bytes()).hexdigest()


def test_evidence_without_nonce_is_offline(keygate_bin, ita_stack, tmp_path):
    conf = write_keygate_conf(ita_stack, tmp_path / "k.conf", ita_api_url="https://127.0.0.1:1")
    r = run([keygate_bin, "-c", str(conf), "evidence", "--no-nonce"])
    assert r.returncode == 0, r.stderr
    ev = json.loads(r.stdout)
    assert b64(ev["report_data"]) == hashlib.sha512(b"").digest()
    assert "verifier_nonce" not in ev


def test_api_key_file_readable_by_others_is_refused(keygate_bin, ita_stack, tmp_path):
    key = tmp_path / "api-key"
    key.write_text((pathlib.Path(ita_stack.state_dir) / "ita-api-key").read_text())
    key.chmod(0o644)
    conf = write_keygate_conf(ita_stack, tmp_path / "k.conf", ita_api_key_file=key)
    r = run([keygate_bin, "-c", str(conf), "token"])
    assert r.returncode == 10
    assert "readable by group or others" in r.stderr and r.stderr.count("\n") == 1
    assert ita_stack.requests("ita") == []  # nothing was sent


def test_wrong_api_key_is_http_401_at_nonce(keygate_bin, ita_stack, tmp_path):
    key = tmp_path / "api-key"
    key.write_text("not-the-key")
    key.chmod(0o600)
    conf = write_keygate_conf(ita_stack, tmp_path / "k.conf", ita_api_key_file=key)
    r = run([keygate_bin, "-c", str(conf), "token"])
    assert r.returncode == 12
    assert r.stderr.startswith("keygate: nonce: GET https://127.0.0.1:") and "HTTP 401" in r.stderr
    assert "not-the-key" not in r.stderr


def test_retries_503_then_succeeds(keygate_bin, ita_stack, tmp_path):
    ita_stack.set_faults("ita", [{"route": "/appraisal/v1/attest", "mode": "status", "status": 503,
                                  "count": 2}])
    conf = write_keygate_conf(ita_stack, tmp_path / "k.conf")
    token_json(keygate_bin, conf)
    attests = [q for q in ita_stack.requests("ita") if q["path"] == "/appraisal/v1/attest"]
    assert [q["status"] for q in attests] == [503, 503, 200]


def test_gives_up_after_retry_max_with_status_in_message(keygate_bin, ita_stack, tmp_path):
    ita_stack.set_faults("ita", [{"route": "/appraisal/v2/nonce", "mode": "status", "status": 503,
                                  "headers": {"trace-id": "t-123", "request-id": "r-9"}}])
    # retry_max counts retries, as in Intel's Go client: 2 retries = 3 attempts
    conf = write_keygate_conf(ita_stack, tmp_path / "k.conf", retry_max=2)
    r = run([keygate_bin, "-c", str(conf), "token"])
    assert r.returncode == 12
    assert r.stderr.endswith("/appraisal/v2/nonce: HTTP 503, request-id r-9, trace-id t-123\n")
    assert len(ita_stack.requests("ita")) == 3


def test_retry_after_is_honoured(keygate_bin, ita_stack, tmp_path):
    ita_stack.set_faults("ita", [{"route": "/appraisal/v2/nonce", "mode": "status", "status": 429,
                                  "headers": {"Retry-After": "1"}, "count": 1}])
    conf = write_keygate_conf(ita_stack, tmp_path / "k.conf", retry_wait_min_ms=10,
                              retry_wait_max_ms=5000)
    t0 = time.monotonic()
    token_json(keygate_bin, conf)
    assert time.monotonic() - t0 >= 1.0


def test_timeout_on_slow_service(keygate_bin, ita_stack, tmp_path):
    ita_stack.set_faults("ita", [{"route": "/appraisal/v2/nonce", "mode": "delay", "seconds": 5}])
    conf = write_keygate_conf(ita_stack, tmp_path / "k.conf", timeout_ms=500, retry_max=0)
    t0 = time.monotonic()
    r = run([keygate_bin, "-c", str(conf), "token"])
    assert r.returncode == 12 and "Timeout" in r.stderr
    assert time.monotonic() - t0 < 4


@pytest.mark.parametrize("fault,needle", [
    ({"mode": "oversize", "bytes": 200000}, "response larger than 65536 bytes"),
    ({"mode": "malformed_json"}, "not a JSON object"),
    ({"mode": "truncate"}, "nonce: GET"),
    ({"mode": "close"}, "nonce: GET"),
])
def test_bad_nonce_replies_fail_cleanly(keygate_bin, ita_stack, tmp_path, fault, needle):
    ita_stack.set_faults("ita", [dict(fault, route="/appraisal/v2/nonce")])
    conf = write_keygate_conf(ita_stack, tmp_path / "k.conf", retry_max=0)
    r = run([keygate_bin, "-c", str(conf), "token"])
    assert r.returncode == 12, r.stderr
    assert needle in r.stderr and r.stderr.count("\n") == 1


def test_plain_http_refused_without_opt_in(keygate_bin, ita_stack, tmp_path):
    conf = write_keygate_conf(ita_stack, tmp_path / "k.conf", ita_api_url="http://127.0.0.1:9")
    r = run([keygate_bin, "-c", str(conf), "token"])
    assert r.returncode == 12 and "only https://" in r.stderr
    conf = write_keygate_conf(ita_stack, tmp_path / "k.conf", ita_api_url="http://example.com",
                              allow_http_loopback="yes")
    r = run([keygate_bin, "-c", str(conf), "token"])
    assert r.returncode == 12 and "only https://" in r.stderr


def test_tls_verification_is_on(keygate_bin, ita_stack, tmp_path):
    other_ca = pathlib.Path(ita_stack.state_dir) / "ita-root-ca.pem"  # a real CA, but not the TLS one
    conf = write_keygate_conf(ita_stack, tmp_path / "k.conf", tls_ca_file=other_ca, retry_max=0)
    r = run([keygate_bin, "-c", str(conf), "token"])
    assert r.returncode == 12 and "certificate" in r.stderr.lower()
    assert ita_stack.requests("ita") == []


def test_redirects_are_not_followed(keygate_bin, ita_stack, tmp_path):
    """A 302 from the ITA API ends the request: keygate never sends the API key (or anything)
    to where a redirect points, even to a host it trusts (here the same stand-in's /_redirected)."""
    target = ita_stack.services["ita"].url + "/_redirected"
    ita_stack.set_faults("ita", [{"route": "/appraisal/v2/nonce", "mode": "status", "status": 302,
                                  "headers": {"Location": target}, "body": ""}])
    conf = write_keygate_conf(ita_stack, tmp_path / "k.conf", retry_max=0)
    r = run([keygate_bin, "-c", str(conf), "token"])
    ita_stack.clear_faults("ita")
    assert r.returncode == 12 and "HTTP 302" in r.stderr, r.stderr
    paths = [q["path"] for q in ita_stack.requests("ita")]
    assert paths == ["/appraisal/v2/nonce"], paths
