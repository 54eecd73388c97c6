# SPDX-License-Identifier: Apache-2.0
"""The `tdx` adapter (configfs-tsm) against a FUSE stand-in of the kernel ABI
(tests/fuse/tsm_fs.py) and the local ITA stack, plus the offline tools
`keygate evidence --replay` and `--parse-quote` on the real vectors.

Only the kernel is simulated: keygate does its real mkdir/read/write/rmdir on the mount, and the
stand-in answers with sim-TD quotes chained to the stack's simulated PCK root. After every test
the report directory must be empty (no entry left behind on any path).
"""
import base64
import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import time

import pytest

from conftest import REPO, run, write_keygate_conf

PYTHON = "/usr/bin/python3"
TSM_FS = REPO / "tests" / "fuse" / "tsm_fs.py"
VECTORS = pathlib.Path(os.environ.get("KEYGATE_VECTORS_DIR", REPO / "tests" / "vectors"))
CCEL_TABLE = VECTORS / "tdx-ccel-table-gcp-cos113.bin"
CCEL_DATA = VECTORS / "tdx-ccel-data-gcp-cos113.bin"
GCP_QUOTE = VECTORS / "tdx-quote-gcp-cos113.bin"

# tests/vectors/README.md §2: what each real quote carries
REAL_QUOTES = {
    "tdx-quote-gcp-cos113.bin": {
        "mrtd": "dae67181d3d65e073ad8f95b7907d5e927bfe9761c9ff3e9b89734a45d8954dba41394c7717cb2735396c1d04231f94a",
        "rtmr0": "3fa2f61f395b7f5feefb4ec2df61297f109ad8abcd6410c1b7df60f21f37b19297fc35e544039c7e1edece752afd17f6",
        "rtmr1": "f62dbc072bd5d3f3438b7b35c39a727f5aea2ffc2473f43723953f530daf62504f0a7944aa62c41a86e8a878c2b122c1",
        "rtmr2": "4969684dc87381fc3b3134176c8d8806eaf0a901859f5f70cfae8d17714b46c10a8de219048c9fc09f11f381a6fbe7c1",
        "rtmr3": "00" * 48,
        "debug": False,
        "td_attributes": "0000001000000000",
        "xfam": "e700060000000000",
        "tee_tcb_svn": "04010700000000000000000000000000",
        "mrseam": "ffc97a88587660fb04e1f7c851300c96ae0b5a463ac46d035d16c2d9f36d0ed1d23775bcbd27deb219e3a3cc28023895",
        "report_data": "00" * 64,
        "quote_len": 4935,
    },
    "tdx-quote-trustee-v4-debug.bin": {
        "mrtd": "705ee9381b8633a9fbe532b52345e8433343d2868959f57889d84ca377c395b689cac1599ccea1b7d420483a9ce5f031",
        "rtmr0": "e940da7c2712d2790e2961e00484f4fa8e6f9eed71361655ae22699476b14f9e63867eb41edd4b480fef0c59f496b288",
        "rtmr1": "559cfcf42716ed6c40a48a73d5acb7da255435012f0a9f00fbe8c1c57612ede486a5684c4c9ff3ddf52315fcdca3a596",
        "rtmr2": "00" * 48,
        "rtmr3": "00" * 48,
        "debug": True,
        "td_attributes": "0100001000000000",
        "xfam": "e742060000000000",
        "tee_tcb_svn": "03000500000000000000000000000000",
        "mrseam": "2fd279c16164a93dd5bf373d834328d46008c2b693af9ebb865b08b2ced320c9a89b4869a9fab60fbe9d0c5a5363c656",
        "report_data": "7c71fe2c86eff65a7cf8dbc22b3275689fd0464a267baced1bf94fc1324656aeb755da3d44d098c0c87382f3a5f85b45c8a28fee1d3bdb38342bf96671501429",
        "quote_len": 4936,
    },
    "tdx-quote-azure.bin": {
        "mrtd": "024a32b070383331181619fa387cb4d55d1e38879f989933055ccad5bc2db795d1737b66205949d15469dc8c1ba7ab7b",
        "rtmr0": "00" * 48,
        "rtmr1": "00" * 48,
        "rtmr2": "00" * 48,
        "rtmr3": "00" * 48,
        "debug": False,
        "td_attributes": "0000000000000000",
        "xfam": "e718060000000000",
        "tee_tcb_svn": "02010600000000000000000000000000",
        "mrseam": "360304d34a16aace0a18e09ad2d07d2b9fd3c174378e5bf108388079827f89ff62acc5f8c473dd40706324834e202946",
        "report_data": "9734504f161d104c74e3165c15f779b06a9bb40dfa71937817d7eee68e593839" + "00" * 32,
        "quote_len": 4936,
    },
}


class TsmMount:
    """One running tsm_fs.py: mounted at .mnt, report dir .report, stopped by PID."""

    def __init__(self, base, state_dir, *args):
        self.mnt = pathlib.Path(base)
        self.mnt.mkdir(parents=True, exist_ok=True)
        self.report = self.mnt / "report"
        self.log_path = self.mnt.parent / (self.mnt.name + ".log")
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([PYTHON, str(TSM_FS), str(self.mnt), "--state", str(state_dir),
                                      *map(str, args)], stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + 15
        while not (os.path.ismount(self.mnt) and self.report.is_dir()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"tsm_fs did not mount: {self.log_path.read_text()}")
            time.sleep(0.05)

    def stats(self):
        return json.loads((self.mnt / "stats").read_text())

    def entries(self):
        return sorted(os.listdir(self.report))

    def stop(self):
        if os.path.ismount(self.mnt):
            subprocess.run(["fusermount3", "-u", str(self.mnt)], capture_output=True, timeout=10)
        if self.proc.poll() is None:
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.terminate()   # this process only, by its PID
                try:
                    self.proc.wait(5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
        if os.path.ismount(self.mnt):
            subprocess.run(["fusermount3", "-u", "-z", str(self.mnt)], capture_output=True, timeout=10)


@pytest.fixture
def tsm(ita_stack, tmp_path):
    """Factory: tsm(*flags) mounts a stand-in for this test's stack; every mount is checked to
    have no report entry left, then unmounted and stopped."""
    if shutil.which("fusermount3") is None or not os.path.exists("/dev/fuse"):
        pytest.skip("FUSE is not available (fuse3 and /dev/fuse are needed)")
    mounts = []

    def start(*flags):
        m = TsmMount(tmp_path / f"tsm{len(mounts)}", ita_stack.state_dir, *flags)
        mounts.append(m)
        return m

    yield start
    leftovers = {}
    for m in mounts:
        try:
            if m.proc.poll() is None and os.path.ismount(m.mnt) and m.entries():
                leftovers[str(m.report)] = m.entries()
        finally:
            m.stop()
    assert not leftovers, f"report entries left behind: {leftovers}"


def tdx_conf(stack, path, mount, **keys):
    return write_keygate_conf(stack, path, adapter="tdx", tsm_report_dir=mount.report,
                              sim_pck_key=None, sim_pck_chain=None, **keys)


def b64(s):
    return base64.b64decode(s)


def parse_quote(keygate_bin, path):
    r = run([keygate_bin, "--json", "evidence", "--parse-quote", str(path)])
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


# ---------------------------------------------------------------------- evidence and token


def test_evidence_through_configfs_tsm(keygate_bin, ita_stack, tsm, tmp_path):
    m = tsm()
    ud = tmp_path / "ud.bin"
    ud.write_bytes(os.urandom(200))
    qfile = tmp_path / "quote.bin"
    conf = tdx_conf(ita_stack, tmp_path / "k.conf", m)
    r = run([keygate_bin, "-c", str(conf), "evidence", "--user-data-file", str(ud), "--out", str(qfile)])
    assert r.returncode == 0, r.stderr
    assert "simulated TD" not in r.stderr      # the real adapter, not the sim one
    ev = json.loads(r.stdout)
    q = qfile.read_bytes()
    assert b64(ev["quote"]) == q
    assert b64(ev["runtime_data"]) == ud.read_bytes()
    n = ev["verifier_nonce"]
    want = hashlib.sha512(b64(n["val"]) + b64(n["iat"]) + ud.read_bytes()).digest()
    assert b64(ev["report_data"]) == want
    assert q[568:632] == want                   # the stand-in's quote carries what keygate wrote
    assert "event_log" not in ev                # tdx_event_log defaults to no
    st = m.stats()
    assert st["created"] == 1 and st["removed"] == 1 and st["writes"] == 1 and st["quotes"] == 1
    assert m.entries() == []


def test_token_verifies_with_binding_and_policy(keygate_bin, ita_stack, tsm, tmp_path):
    m = tsm()
    ud = tmp_path / "ud.bin"
    ud.write_bytes(b"tdx adapter user data")
    conf = tdx_conf(ita_stack, tmp_path / "k.conf", m)
    r = run([keygate_bin, "-c", str(conf), "--json", "token", "--user-data-file", str(ud)])
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["verified"] is True
    c = out["claims"]
    assert c["attester_type"] == "TDX"
    assert b64(c["attester_held_data"]) == ud.read_bytes()
    n = c["verifier_nonce"]
    assert c["tdx_report_data"] == hashlib.sha512(b64(n["val"]) + b64(n["iat"]) + ud.read_bytes()).hexdigest()
    assert c["tdx_is_debuggable"] is False
    paths = [(q["method"], q["path"]) for q in ita_stack.requests("ita")]
    assert paths[:2] == [("GET", "/appraisal/v2/nonce"), ("POST", "/appraisal/v1/attest")]
    assert m.stats()["created"] == 1


def test_concurrent_writer_is_survived_by_retry(keygate_bin, ita_stack, tsm, tmp_path):
    m = tsm("--fault", "concurrent-writer")
    conf = tdx_conf(ita_stack, tmp_path / "k.conf", m)
    r = run([keygate_bin, "-c", str(conf), "--json", "token"], env={"KEYGATE_DEBUG": "stderr:2"})
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["verified"] is True
    assert "another writer" in r.stderr        # logged at info level
    st = m.stats()
    # the first entry's data was dropped, a fresh entry gave the quote; both were removed
    assert st["created"] == 2 and st["removed"] == 2 and st["writes"] == 2


def test_writer_that_never_stops_gives_up_cleanly(keygate_bin, ita_stack, tsm, tmp_path):
    m = tsm("--fault", "busy-writer")
    conf = tdx_conf(ita_stack, tmp_path / "k.conf", m)
    r = run([keygate_bin, "-c", str(conf), "evidence"])
    one_line_error(r, "giving up after 3 attempts: generation of the report entry changed under us "
                      "(2 after reading outblob, expected 1)")
    st = m.stats()
    assert st["created"] == st["removed"] == 3


def test_event_log_travels_with_the_quote(keygate_bin, ita_stack, tsm, tmp_path):
    m = tsm()
    conf = tdx_conf(ita_stack, tmp_path / "k.conf", m, tdx_event_log="yes", ccel_table=CCEL_TABLE,
                    ccel_data=CCEL_DATA, ita_api_version="v2")
    r = run([keygate_bin, "-c", str(conf), "evidence"])
    assert r.returncode == 0, r.stderr
    log = b64(json.loads(r.stdout)["event_log"])
    # trimmed at the end of the events (vectors README §2.1: 18101 bytes, then 0xFF fill)
    assert log == CCEL_DATA.read_bytes()[:18101]
    r = run([keygate_bin, "-c", str(conf), "--json", "token"])
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["verified"] is True
    assert ("POST", "/appraisal/v2/attest") in [(q["method"], q["path"]) for q in ita_stack.requests("ita")]


def test_event_log_missing_is_an_adapter_error(keygate_bin, ita_stack, tsm, tmp_path):
    m = tsm()
    conf = tdx_conf(ita_stack, tmp_path / "k.conf", m, tdx_event_log="yes",
                    ccel_table=tmp_path / "no-table", ccel_data=CCEL_DATA)
    r = run([keygate_bin, "-c", str(conf), "evidence", "--no-nonce"])
    assert r.returncode == 13
    assert r.stderr.startswith("keygate: evidence: adapter tdx: CCEL table") and r.stderr.count("\n") == 1


# ---------------------------------------------------------------------- faults


def one_line_error(r, needle):
    assert r.returncode == 13, (r.returncode, r.stdout, r.stderr)
    assert r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith("keygate: evidence: adapter tdx: "), r.stderr
    assert needle in r.stderr, r.stderr
    assert r.stdout == ""


def test_wrong_provider(keygate_bin, ita_stack, tsm, tmp_path):
    m = tsm("--provider", "sev_guest")
    conf = tdx_conf(ita_stack, tmp_path / "k.conf", m)
    r = run([keygate_bin, "-c", str(conf), "evidence"])
    one_line_error(r, "provider is 'sev_guest', not tdx_guest")
    assert m.stats()["writes"] == 0            # nothing was written to a foreign provider
    assert m.stats()["created"] == m.stats()["removed"] == 1


@pytest.mark.parametrize("length,needle", [
    (0, "outblob is empty"),
    (300, "outblob holds 300 bytes, less than a TD quote (632)"),
    (1000, "outblob is not a complete TD quote"),
])
def test_short_outblob(keygate_bin, ita_stack, tsm, tmp_path, length, needle):
    m = tsm("--fault", "short-outblob", "--short-len", length)
    conf = tdx_conf(ita_stack, tmp_path / "k.conf", m)
    r = run([keygate_bin, "-c", str(conf), "token"])
    one_line_error(r, needle)
    assert m.stats()["created"] == m.stats()["removed"] == 1   # no retry for a bad quote
    assert not [q for q in ita_stack.requests("ita") if "attest" in q["path"]]


@pytest.mark.parametrize("where", ["missing", "empty"])
def test_missing_configfs(keygate_bin, ita_stack, tmp_path, where):
    report = tmp_path / "no-configfs" / "report"
    if where == "empty":
        report.mkdir(parents=True)
    conf = write_keygate_conf(ita_stack, tmp_path / "k.conf", adapter="tdx", tsm_report_dir=report,
                              sim_pck_key=None, sim_pck_chain=None)
    r = run([keygate_bin, "-c", str(conf), "evidence"])
    one_line_error(r, f"configfs-tsm not found at {report} (Linux 6.7+ with the tdx_guest module is needed)")
    if where == "empty":
        assert os.listdir(report) == []          # the probe entry was removed again


# ---------------------------------------------------------------------- offline tools


def test_replay_equals_the_quote_rtmrs(keygate_bin):
    if not CCEL_DATA.exists():
        pytest.fail(f"missing test vectors in {VECTORS} (tests/vectors/README.md lists them)")
    r = run([keygate_bin, "--json", "evidence", "--replay", "--ccel-table", str(CCEL_TABLE),
             "--ccel-data", str(CCEL_DATA)])
    assert r.returncode == 0, r.stderr
    replay = json.loads(r.stdout)
    quote = parse_quote(keygate_bin, GCP_QUOTE)
    for i in range(3):
        assert replay[f"rtmr{i}"] == quote[f"rtmr{i}"]
    assert replay["rtmr3"] == "00" * 48 == quote["rtmr3"]
    assert replay["table"] == {"revision": 1, "oem_id": "INTEL ", "oem_table_id": "EDK2    ", "cc_type": 2,
                               "cc_subtype": 0, "laml": 0x40000, "lasa": 0xBEDBF000}
    assert replay["events_len"] == 18101
    events = replay["events"]
    assert len(events) == 44 and events[0]["number"] == 0 and events[0]["sha384"] is None
    assert all(len(e["sha384"]) == 96 for e in events[1:])
    assert {e["mr"] for e in events[1:]} == {"RTMR0", "RTMR1", "RTMR2"}
    # the text form prints every event and the same RTMRs
    r = run([keygate_bin, "evidence", "--replay", "--ccel-table", str(CCEL_TABLE), "--ccel-data", str(CCEL_DATA)])
    assert r.returncode == 0, r.stderr
    assert "CC type 2 (TDX)" in r.stdout and "EV_SEPARATOR" in r.stdout
    for i in range(4):
        assert f"RTMR{i}             {replay[f'rtmr{i}']}" in r.stdout
    assert "43 events after the Spec ID event, 18101 bytes" in r.stdout


def test_replay_defaults_come_from_the_config(keygate_bin, tmp_path):
    conf = tmp_path / "k.conf"
    conf.write_text(f"ccel_table = {CCEL_TABLE}\nccel_data = {CCEL_DATA}\n")
    r = run([keygate_bin, "--json", "-c", str(conf), "evidence", "--replay"])
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["rtmr0"] == REAL_QUOTES["tdx-quote-gcp-cos113.bin"]["rtmr0"]


def test_replay_errors(keygate_bin, tmp_path):
    bad = tmp_path / "bad.bin"
    bad.write_bytes(CCEL_DATA.read_bytes()[:5000])     # cut inside an event
    r = run([keygate_bin, "evidence", "--replay", "--ccel-data", str(bad)])
    assert r.returncode == 13 and "truncated" in r.stderr and r.stderr.count("\n") == 1, r.stderr
    not_table = tmp_path / "not-a-table.bin"
    not_table.write_bytes(GCP_QUOTE.read_bytes()[:56])
    r = run([keygate_bin, "evidence", "--replay", "--ccel-table", str(not_table), "--ccel-data", str(CCEL_DATA)])
    assert r.returncode == 13 and "signature is not 'CCEL'" in r.stderr, r.stderr
    big = tmp_path / "big.bin"
    big.write_bytes(b"CCEL" + bytes(5000))
    r = run([keygate_bin, "evidence", "--replay", "--ccel-table", str(big), "--ccel-data", str(CCEL_DATA)])
    assert r.returncode == 13 and "larger than 4096 bytes" in r.stderr, r.stderr
    r = run([keygate_bin, "evidence", "--replay", "--ccel-table", str(tmp_path / "none"),
             "--ccel-data", str(CCEL_DATA)])
    assert r.returncode == 13 and "CCEL table" in r.stderr, r.stderr
    r = run([keygate_bin, "evidence", "--ccel-data", str(CCEL_DATA)])
    assert r.returncode == 1


@pytest.mark.parametrize("name", sorted(REAL_QUOTES))
def test_parse_quote_on_real_quotes(keygate_bin, name):
    path = VECTORS / name
    if not path.exists():
        pytest.fail(f"missing test vectors in {VECTORS} (tests/vectors/README.md lists them)")
    q = parse_quote(keygate_bin, path)
    assert (q["version"], q["att_key_type"], q["tee_type"]) == (4, 2, 0x81)
    # v4 carries a TD report 1.0 without descriptor: no TDX 1.5 fields
    assert (q["body_type"], q["body_size"], q["tee_tcb_svn2"], q["mrservicetd"]) == (2, 584, None, None)
    for key, value in REAL_QUOTES[name].items():
        assert q[key] == value, key
    assert q["file_len"] == path.stat().st_size
    r = run([keygate_bin, "evidence", "--parse-quote", str(path)])
    assert r.returncode == 0, r.stderr
    assert f"MRTD              {q['mrtd']}" in r.stdout
    assert f"REPORTDATA        {q['report_data']}" in r.stdout
    assert f"DEBUG={int(q['debug'])}" in r.stdout


V5_QUOTE = VECTORS / "tdx-quote-trustee-v5.bin"


def test_parse_quote_v5(keygate_bin, tmp_path):
    """The real v5 quote (tests/vectors/README.md §2.2): body type 3, the two TDX 1.5 fields, and
    the body fields 6 bytes further on, in --json and in text."""
    q = parse_quote(keygate_bin, V5_QUOTE)
    assert (q["version"], q["att_key_type"], q["tee_type"]) == (5, 2, 0x81)
    assert (q["body_type"], q["body_size"], q["quote_len"], q["file_len"]) == (3, 648, 5006, 5006)
    assert q["tee_tcb_svn"] == q["tee_tcb_svn2"] == "05010200000000000000000000000000"
    assert q["mrservicetd"] == ("383c87d3bbb047b2d171eaca95312ede99f258088dc788f6"
                                "ae2ccf8b6dd848fe8d47629e08b3f6cbd4a00dd47a5a033d")
    assert q["mrtd"] == ("dfba221b48a22af8511542ee796603f37382800840dcd978"
                         "703909bf8e64d4c8a1e9de86e7c9638bfcba422f3886400a")
    assert q["report_data"] == V5_QUOTE.read_bytes()[574:638].hex()
    assert (q["td_attributes"], q["debug"]) == ("0000001000000000", False)
    r = run([keygate_bin, "evidence", "--parse-quote", str(V5_QUOTE)])
    assert r.returncode == 0, r.stderr
    assert "version           5\n" in r.stdout
    assert "body_type         3 (TD report 1.5), 648 bytes\n" in r.stdout
    assert f"TEE_TCB_SVN2      {q['tee_tcb_svn2']}\n" in r.stdout
    assert f"MRSERVICETD       {q['mrservicetd']}\n" in r.stdout
    assert f"REPORTDATA        {q['report_data']}\n" in r.stdout
    # an unknown body type is refused in one line
    bad = tmp_path / "type4.bin"
    bad.write_bytes(V5_QUOTE.read_bytes()[:48] + b"\x04\x00" + V5_QUOTE.read_bytes()[50:])
    r = run([keygate_bin, "evidence", "--parse-quote", str(bad)])
    assert r.returncode == 13 and r.stderr == \
        "keygate: evidence: quote v5 body type 4 is not a TD report (2: TDX 1.0, 3: TDX 1.5)\n", r.stderr


def test_parse_quote_rejects_garbage(keygate_bin, tmp_path):
    bad = tmp_path / "bad.bin"
    bad.write_bytes(GCP_QUOTE.read_bytes()[:700])
    r = run([keygate_bin, "evidence", "--parse-quote", str(bad)])
    assert r.returncode == 13 and r.stderr.startswith("keygate: evidence: quote") and r.stderr.count("\n") == 1
