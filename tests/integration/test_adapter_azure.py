# SPDX-License-Identifier: Apache-2.0
"""The azure-tdx adapter against real processes: swtpm as the vTPM, tests/stack/paravisor.py
playing the Azure paravisor (NV 0x01400002 -> HCL report in NV 0x01400001), tests/stack/imds.py
as IMDS (/acc/tdquote) and the local ITA service's Azure routes.

`keygate evidence` and `keygate token` work and the token verifies with binding and local policy;
every fault (index missing, hash never appears, IMDS 500, malformed runtime JSON) is one line
"keygate: evidence: adapter azure-tdx: ..." with exit 13; nothing leaks under valgrind; the
TPM's NV state is left as found except for our index 0x01400002 (and nothing transient stays).
"""
import base64
import hashlib
import json
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import time

import pytest

from conftest import run, write_keygate_conf
from tests.stack import paravisor as pv_mod
from tests.stack import pki
from tests.stack import quote as stack_quote
from tests.stack.simquote import DEFAULTS, make_sim_quote

REPO = pathlib.Path(__file__).resolve().parents[2]
PYTHON = "/usr/bin/python3"
NV_HCL, NV_USER = 0x01400001, 0x01400002
SIM_MRTD = DEFAULTS["mrtd"].hex()
PREFIX = "keygate: evidence: adapter azure-tdx: "

pytestmark = pytest.mark.skipif(shutil.which("swtpm") is None or shutil.which("tpm2_nvread") is None,
                                reason="needs swtpm and tpm2-tools (scripts/setup.sh)")


def b64d(s):
    return base64.b64decode(s)


def free_port_pair():
    """A port P with P and P+1 free on 127.0.0.1 (swtpm server and control ports)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port >= 65535:
            continue
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 1))
            return port
        except OSError:
            continue
    raise RuntimeError("no free port pair")


class Tpm:
    def __init__(self, port):
        self.port = port
        self.tcti = f"swtpm:host=127.0.0.1,port={port}"

    def tool(self, *args, check=True):
        r = subprocess.run(["tpm2_" + args[0], *args[1:]], capture_output=True, timeout=30,
                           env=dict(os.environ, TPM2TOOLS_TCTI=self.tcti))
        if check:
            assert r.returncode == 0, r.stderr
        return r

    def handles(self, kind):
        return {int(h, 16) for h in re.findall(r"0x[0-9a-fA-F]+",
                                               self.tool("getcap", kind).stdout.decode())}

    def nv_read(self, index, size=None):
        extra = ["-s", str(size)] if size else []
        return self.tool("nvread", hex(index), "-C", "o", *extra).stdout

    def state(self):
        """NV indices and anything transient left in the TPM."""
        return {"nv": self.handles("handles-nv-index"),
                "transient": self.handles("handles-transient"),
                "sessions": self.handles("handles-loaded-session")}


def stop_pid(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def swtpm(tmp_path):
    """swtpm (TPM 2.0, socket) on free ports with a temporary state dir; stopped by PID."""
    state = tmp_path / "tpmstate"
    state.mkdir()
    port = free_port_pair()
    log = open(tmp_path / "swtpm.log", "wb")
    proc = subprocess.Popen(
        ["swtpm", "socket", "--tpm2",
         "--server", f"type=tcp,port={port},bindaddr=127.0.0.1",
         "--ctrl", f"type=tcp,port={port + 1},bindaddr=127.0.0.1",
         "--tpmstate", f"dir={state}", "--flags", "not-need-init,startup-clear"],
        stdout=log, stderr=subprocess.STDOUT)
    log.close()
    tpm = Tpm(port)
    deadline = time.monotonic() + 10
    while True:
        assert proc.poll() is None, (tmp_path / "swtpm.log").read_text()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                pass
            break
        except OSError:
            assert time.monotonic() < deadline, "swtpm did not listen"
            time.sleep(0.05)
    yield tpm
    stop_pid(proc)


@pytest.fixture
def paravisor(swtpm, tmp_path):
    """start(mode) runs tests/stack/paravisor.py against swtpm and returns its announce info
    plus a "stop" function (by PID); everything started is stopped at teardown."""
    procs = []

    def start(mode="normal"):
        state = tmp_path / f"paravisor-{len(procs)}"
        state.mkdir()
        log = open(state / "log", "wb")
        proc = subprocess.Popen([PYTHON, "-m", "tests.stack.paravisor", "--tcti", swtpm.tcti,
                                 "--state", str(state), "--mode", mode],
                                cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        procs.append(proc)
        announce = state / "paravisor.json"
        deadline = time.monotonic() + 30
        while not announce.exists():
            assert proc.poll() is None, (state / "log").read_text()
            assert time.monotonic() < deadline, "paravisor did not start"
            time.sleep(0.05)
        return dict(json.loads(announce.read_text()), stop=lambda: stop_pid(proc))

    yield start
    for proc in procs:
        stop_pid(proc)


@pytest.fixture
def imds(ita_stack):
    """The IMDS stand-in over plain http, part of the stack (stopped with it)."""
    return ita_stack.start("imds", "tests.stack.imds", "--http")


def azure_conf(stack, tmp_path, tpm, imds_handle, **keys):
    opts = {"adapter": "azure-tdx", "azure_tcti": tpm.tcti,
            "azure_imds_url": imds_handle.url + "/acc/tdquote", "allow_http_loopback": "yes",
            "azure_report_timeout_ms": 10000, "require_mrtd": SIM_MRTD,
            "require_tcb_status": "UpToDate"}
    opts.update(keys)
    return write_keygate_conf(stack, tmp_path / "k.conf", **opts)


def expect_fault(r, needle, tpm, before, pv=None):
    assert r.returncode == 13, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith(PREFIX), lines[0]
    assert needle in lines[0], lines[0]
    if pv:
        pv["stop"]()  # its own tpm2-tools calls must not be counted
    after = tpm.state()
    assert after["nv"] - before["nv"] <= {NV_USER} and before["nv"] <= after["nv"], (before, after)
    assert after["transient"] == set() and after["sessions"] == set()


# ---------------------------------------------------------------- success paths

def test_evidence_binds_user_data_through_runtime_json(keygate_bin, ita_stack, imds, swtpm,
                                                       paravisor, tmp_path):
    info = paravisor()
    assert info["index_size"] == 2048  # swtpm's TPM2_PT_NV_INDEX_MAX (a real report is 2600)
    before = swtpm.state()
    assert before["nv"] == {NV_HCL}
    ud = tmp_path / "ud.bin"
    ud.write_bytes(os.urandom(300))
    conf = azure_conf(ita_stack, tmp_path, swtpm, imds)
    t0 = time.monotonic()
    r = run([keygate_bin, "-c", str(conf), "evidence", "--user-data-file", str(ud),
             "--out", str(tmp_path / "q.bin")])
    assert r.returncode == 0, r.stderr
    assert time.monotonic() - t0 < 5  # polled, no fixed 3 s sleep per read
    ev = json.loads(r.stdout)
    n = ev["verifier_nonce"]
    h = hashlib.sha512(b64d(n["val"]) + b64d(n["iat"]) + ud.read_bytes()).digest()
    runtime = b64d(ev["runtime_data"])
    rt = json.loads(runtime)
    assert rt["user-data"] == h.hex().upper()  # the paravisor answers in upper case
    assert b64d(ev["report_data"]) == h
    root = pki.load_certs(os.path.join(ita_stack.state_dir, pki.SIM_ROOT + ".pem"))
    q = stack_quote.verify_quote((tmp_path / "q.bin").read_bytes(), root)
    assert q.report_data == hashlib.sha256(runtime).digest() + bytes(32)
    assert q.mrtd.hex() == SIM_MRTD
    assert b64d(ev["quote"]) == (tmp_path / "q.bin").read_bytes()
    # NV: our 64-byte hash in 0x01400002, nothing else added, nothing transient left
    info["stop"]()
    assert swtpm.nv_read(NV_USER) == h
    after = swtpm.state()
    assert after == {"nv": {NV_HCL, NV_USER}, "transient": set(), "sessions": set()}
    assert [(x["method"], x["path"]) for x in ita_stack.requests("imds")] == [
        ("POST", "/acc/tdquote")]


@pytest.mark.parametrize("version,route", [("v1", "/appraisal/v1/attest/azure/tdxvm"),
                                           ("v2", "/appraisal/v2/attest/azure")])
def test_token_verifies_with_binding_and_policy(keygate_bin, ita_stack, imds, swtpm, paravisor,
                                                tmp_path, version, route):
    paravisor()
    ud = tmp_path / "ud.bin"
    ud.write_bytes(b"\x00\x01binary key blob" + os.urandom(64))
    conf = azure_conf(ita_stack, tmp_path, swtpm, imds, ita_api_version=version)
    r = run([keygate_bin, "-c", str(conf), "--json", "token", "--user-data-file", str(ud)])
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["verified"] is True
    c = out["claims"]
    tee = c if version == "v1" else c["tdx"]
    assert c["ver"] == ("1.0.0" if version == "v1" else "2.0.0")
    if version == "v2":
        assert c["appraisal"]["method"] == "azure"
    n = tee["verifier_nonce"]
    h = hashlib.sha512(b64d(n["val"]) + b64d(n["iat"]) + ud.read_bytes()).hexdigest()
    assert tee["attester_runtime_data"]["user-data"].lower() == h
    assert b64d(tee["attester_held_data"]) == ud.read_bytes()
    assert tee["tdx_report_data"].endswith("00" * 32)
    assert tee["tdx_mrtd"] == SIM_MRTD
    reqs = [x for x in ita_stack.requests("ita") if x["method"] == "POST"]
    assert [(x["path"], x["attestation_type"], x["status"]) for x in reqs] == [
        (route, "azure-tdx", 200)]


def test_local_policy_applies_to_azure_tokens(keygate_bin, ita_stack, imds, swtpm, paravisor,
                                              tmp_path):
    paravisor()
    conf = azure_conf(ita_stack, tmp_path, swtpm, imds, require_mrtd="ab" * 48)
    r = run([keygate_bin, "-c", str(conf), "token"])
    assert r.returncode == 15, r.stderr
    assert "require_mrtd" in r.stderr


def test_ita_azure_routes_check_the_runtime_json_binding(ita_stack):
    """The stand-in's Azure routes, driven directly: quote REPORTDATA[0:32] must be
    SHA-256(runtime_data) and the runtime JSON's user-data SHA-512(val || iat || user_data)."""
    key = {"x-api-key": pki.api_key(ita_stack.state_dir)}
    ud = b"our key"

    def body(version, user_data=ud, tamper_runtime=False, upper=True):
        status, data = ita_stack.http("ita", "GET", "/appraisal/v1/nonce", headers=key)
        assert status == 200
        n = json.loads(data)
        h = hashlib.sha512(b64d(n["val"]) + b64d(n["iat"]) + ud).hexdigest()
        runtime = pv_mod.runtime_json(h.upper() if upper else h)
        quote = make_sim_quote(ita_stack.state_dir, hashlib.sha256(runtime).digest() + bytes(32))
        if tamper_runtime:
            runtime = runtime.replace(b'"tpm-persisted":true', b'"tpm-persisted":false')
        ev = {"quote": base64.b64encode(quote).decode(),
              "runtime_data": base64.b64encode(runtime).decode(),
              "user_data": base64.b64encode(user_data).decode(), "verifier_nonce": n}
        return {"tdx": ev} if version == 2 else ev

    for version, path in ((1, "/appraisal/v1/attest/azure/tdxvm"), (2, "/appraisal/v2/attest/azure")):
        status, data = ita_stack.http("ita", "POST", path, body(version), key)
        assert status == 200, data
        status, data = ita_stack.http("ita", "POST", path, body(version, upper=False), key)
        assert status == 200, data
        status, data = ita_stack.http("ita", "POST", path, body(version, user_data=b"other"), key)
        assert status == 400 and b"user-data does not match" in data
        status, data = ita_stack.http("ita", "POST", path, body(version, tamper_runtime=True), key)
        assert status == 400 and b"SHA-256(runtime_data)" in data
    # the plain TDX route still applies the TDX rule to the same evidence
    status, data = ita_stack.http("ita", "POST", "/appraisal/v1/attest", body(1), key)
    assert status == 400 and b"REPORTDATA does not match" in data


# ---------------------------------------------------------------- faults

def test_hcl_index_missing(keygate_bin, ita_stack, imds, swtpm, tmp_path):
    before = swtpm.state()
    conf = azure_conf(ita_stack, tmp_path, swtpm, imds)
    r = run([keygate_bin, "-c", str(conf), "evidence"])
    expect_fault(r, "NV index 0x01400001 (HCL report) is not defined", swtpm, before)
    assert swtpm.state()["nv"] == before["nv"] == set()  # not even 0x01400002 was defined


def test_vtpm_unreachable(keygate_bin, ita_stack, imds, tmp_path):
    tpm = Tpm(free_port_pair())  # nothing listens there
    conf = azure_conf(ita_stack, tmp_path, tpm, imds)
    r = run([keygate_bin, "-c", str(conf), "evidence"])
    assert r.returncode == 13
    assert r.stderr.splitlines() == [
        f"{PREFIX}vTPM: cannot open TCTI '{tpm.tcti}': tcti:IO failure (0xa000a)"]  # TSS logs quiet


def test_hash_never_appears_is_bounded(keygate_bin, ita_stack, imds, swtpm, paravisor, tmp_path):
    pv = paravisor("never")
    before = swtpm.state()
    conf = azure_conf(ita_stack, tmp_path, swtpm, imds, azure_report_timeout_ms=1500)
    t0 = time.monotonic()
    r = run([keygate_bin, "-c", str(conf), "evidence"])
    elapsed = time.monotonic() - t0
    expect_fault(r, "timed out after", swtpm, before, pv)
    assert 1.5 <= elapsed < 6, elapsed
    assert ita_stack.requests("imds") == []


def test_imds_500(keygate_bin, ita_stack, imds, swtpm, paravisor, tmp_path):
    pv = paravisor()
    before = swtpm.state()
    ita_stack.set_faults("imds", [{"route": "/acc/tdquote", "mode": "status", "status": 500}])
    conf = azure_conf(ita_stack, tmp_path, swtpm, imds)
    r = run([keygate_bin, "-c", str(conf), "evidence"])
    expect_fault(r, "IMDS", swtpm, before, pv)
    assert "500" in r.stderr


def test_imds_unreachable(keygate_bin, ita_stack, imds, swtpm, paravisor, tmp_path):
    pv = paravisor()
    before = swtpm.state()
    conf = azure_conf(ita_stack, tmp_path, swtpm, imds,
                      azure_imds_url=f"http://127.0.0.1:{free_port_pair()}/acc/tdquote",
                      retry_max=0)
    r = run([keygate_bin, "-c", str(conf), "evidence"])
    expect_fault(r, "IMDS: POST http://127.0.0.1:", swtpm, before, pv)


def test_malformed_runtime_json_fails_fast(keygate_bin, ita_stack, imds, swtpm, paravisor,
                                          tmp_path):
    pv = paravisor("malformed")
    before = swtpm.state()
    conf = azure_conf(ita_stack, tmp_path, swtpm, imds, azure_report_timeout_ms=20000)
    t0 = time.monotonic()
    r = run([keygate_bin, "-c", str(conf), "evidence"])
    expect_fault(r, "HCL report: runtime data is not a JSON object", swtpm, before, pv)
    assert time.monotonic() - t0 < 10  # a stable malformed report does not wait for the timeout


# ---------------------------------------------------------------- leaks

@pytest.mark.skipif(shutil.which("valgrind") is None, reason="needs valgrind")
def test_no_leaks_under_valgrind(keygate_bin, ita_stack, imds, swtpm, paravisor, tmp_path):
    paravisor()
    vg = ["valgrind", "--leak-check=full", "--errors-for-leak-kinds=definite",
          "--error-exitcode=99", "-q"]
    conf = azure_conf(ita_stack, tmp_path, swtpm, imds, azure_report_timeout_ms=30000,
                      timeout_ms=30000)
    ud = tmp_path / "ud.bin"
    ud.write_bytes(os.urandom(100))
    r = run(vg + [keygate_bin, "-c", str(conf), "evidence", "--user-data-file", str(ud)],
            timeout=180)
    assert r.returncode == 0, r.stderr
    ita_stack.set_faults("imds", [{"route": "/acc/tdquote", "mode": "status", "status": 500}])
    r = run(vg + [keygate_bin, "-c", str(conf), "evidence", "--user-data-file", str(ud)],
            timeout=180)
    assert r.returncode == 13, r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith(PREFIX), r.stderr
