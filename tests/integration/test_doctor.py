# SPDX-License-Identifier: Apache-2.0
"""`keygate doctor` against the local stack: all ✓ on a healthy sim setup, and the right ✗ line
with its fix for each broken thing (stack down, wrong root, bad API key, readable key file,
openssl.cnf without keygate, no configfs-tsm). Doctor never makes a KBS transfer or an
attestation unless --release-test is given (the stack's request logs)."""
import json
import pathlib
import re
import shutil

import pytest

from conftest import kbs_conf, run
from kglib import new_key, openssl_cnf, pub_pem, register

LINE = re.compile(r"^([✓✗-]) (\S+)\s+(.*)$")


def parse(stdout):
    """{check name: (mark, detail, fix)} from doctor's text output."""
    out, last = {}, None
    for line in stdout.splitlines():
        m = LINE.match(line)
        if m:
            last = m.group(2)
            out[last] = [m.group(1), m.group(3), ""]
        elif line.strip().startswith("fix: ") and last:
            out[last][2] = line.strip()[5:]
    return out


class Setup:
    def __init__(self, keygate_bin, build_dir, stack, tmp):
        self.bin, self.build_dir, self.stack, self.tmp = keygate_bin, build_dir, stack, tmp
        self.conf = kbs_conf(stack, tmp / "keygate.conf")
        self.cnf = openssl_cnf(build_dir, tmp / "openssl.cnf", self.conf)
        key = new_key("p256")
        self.key_id = register(stack, key)
        pub = tmp / "pub.pem"
        pub.write_text(pub_pem(key))
        self.ref = tmp / "ref.pem"
        r = run([keygate_bin, "-c", str(self.conf), "ref", "create", "--key-id", self.key_id, "--pubkey", str(pub),
                 "-o", str(self.ref)])
        assert r.returncode == 0, r.stderr

    def doctor(self, *args, conf=None, cnf=None, **kw):
        cmd = [self.bin, "doctor", "-c", str(conf or self.conf), "--openssl-conf", str(cnf or self.cnf),
               "--ref", str(self.ref), *args]
        return run(cmd, timeout=120, **kw)

    def conf_with(self, name, **overrides):
        return kbs_conf(self.stack, self.tmp / name, **overrides)


@pytest.fixture
def setup(keygate_bin, build_dir, kbs_stack, tmp_path):
    return Setup(keygate_bin, build_dir, kbs_stack, tmp_path)


def transfers(stack):
    return [q for q in stack.requests("kbs") if "/transfer" in q["path"]]


def attests(stack):
    return [q for q in stack.requests("ita") if "/attest" in q["path"]]


def assert_only_failed(result, *names):
    """Exit 21, and exactly the named checks are ✗, each with a fix line."""
    checks = parse(result.stdout)
    assert result.returncode == 21, result.stdout + result.stderr
    failed = sorted(n for n, (mark, _, _) in checks.items() if mark == "✗")
    assert failed == sorted(names), result.stdout
    for n in names:
        assert checks[n][2], f"{n} has no fix line:\n{result.stdout}"
    return checks


def test_healthy_sim_stack_is_all_green_and_makes_no_transfer(setup, kbs_stack):
    kbs_stack.clear_requests("kbs")
    kbs_stack.clear_requests("ita")
    r = setup.doctor()
    assert r.returncode == 0, r.stdout + r.stderr
    checks = parse(r.stdout)
    for name in ("config", "files", "platform", "ita-api", "ita-certs", "clock", "trust-anchor", "kbs",
                 "openssl-cnf"):
        assert checks[name][0] == "✓", r.stdout
    # p11-kit: ✓ when the module is registered on this machine, else skipped (never ✗ here)
    assert checks["p11-kit"][0] in ("✓", "-"), r.stdout
    assert "release-test" not in checks
    assert "SIMULATED TD" in checks["platform"][1]
    assert "API key accepted" in checks["ita-api"][1]
    assert "keygate" in checks["openssl-cnf"][1] and "active" in checks["openssl-cnf"][1]
    assert r.stdout.rstrip().endswith("all checks passed")
    # no key released, no attestation, no transfer: only nonce, /certs and the KBS version
    assert transfers(kbs_stack) == [] and attests(kbs_stack) == []
    assert {q["path"] for q in kbs_stack.requests("kbs")} == {"/kbs/v1/version"}
    assert "PRIVATE" not in r.stdout + r.stderr


def test_json_output(setup, kbs_stack):
    r = setup.doctor("--json")
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.loads(r.stdout)
    assert doc["ok"] is True and doc["failed"] == 0
    names = [c["name"] for c in doc["checks"]]
    assert names[:3] == ["config", "files", "platform"] and "release-test" not in names
    assert all(set(c) == {"name", "status", "detail", "fix"} for c in doc["checks"])
    assert all(c["status"] in ("ok", "skip") for c in doc["checks"])


def test_release_test_releases_once_on_request(setup, kbs_stack):
    kbs_stack.clear_requests("kbs")
    r = setup.doctor("--release-test", str(setup.ref))
    assert r.returncode == 0, r.stdout + r.stderr
    checks = parse(r.stdout)
    assert checks["release-test"][0] == "✓" and setup.key_id in checks["release-test"][1]
    assert "equal to the reference" in checks["release-test"][1]
    assert len(transfers(kbs_stack)) == 1
    assert "PRIVATE" not in r.stdout + r.stderr
    # by key id, against a key the KBS does not hold: ✗ naming the transfer step
    r = setup.doctor("--release-test", "6b7f9a4c-2f0e-4c1a-9d3b-1e2f3a4b5c6d")
    checks = assert_only_failed(r, "release-test")
    assert checks["release-test"][1].startswith("transfer: "), r.stdout


def test_stack_down(setup, kbs_stack):
    kbs_stack.stop_all()
    r = setup.doctor()
    checks = assert_only_failed(r, "ita-api", "ita-certs", "kbs", "trust-anchor")
    assert "ita_api_url" in checks["ita-api"][2] and "reachable" in checks["ita-api"][2]
    assert "kbs_url" in checks["kbs"][2]
    assert checks["clock"][0] == "-"
    for line in r.stdout.splitlines():
        assert len(line) < 1200


def test_wrong_trust_anchor(setup):
    state = pathlib.Path(setup.stack.state_dir)
    conf = setup.conf_with("wrong-root.conf", ita_trust_anchor=state / "tls-ca.pem")
    r = setup.doctor(conf=conf)
    checks = assert_only_failed(r, "trust-anchor")
    assert "no JWKS signing key chains to the pinned" in checks["trust-anchor"][1]
    assert "ita_trust_anchor" in checks["trust-anchor"][2]
    # not a certificate at all
    junk = setup.tmp / "junk.pem"
    junk.write_text("not a certificate\n")
    r = setup.doctor(conf=setup.conf_with("junk-root.conf", ita_trust_anchor=junk))
    assert_only_failed(r, "trust-anchor")


def test_bad_api_key(setup):
    bad = setup.tmp / "bad-key"
    bad.write_text("not-the-key\n")
    bad.chmod(0o600)
    r = setup.doctor(conf=setup.conf_with("bad-key.conf", ita_api_key_file=bad))
    checks = assert_only_failed(r, "ita-api")
    assert "API key rejected" in checks["ita-api"][1] and "HTTP 401" in checks["ita-api"][1]
    assert "not-the-key" not in r.stdout + r.stderr


def test_world_readable_and_missing_key_file(setup):
    state = pathlib.Path(setup.stack.state_dir)
    loose = setup.tmp / "loose-key"
    shutil.copy(state / "ita-api-key", loose)
    loose.chmod(0o644)
    r = setup.doctor(conf=setup.conf_with("loose.conf", ita_api_key_file=loose))
    checks = assert_only_failed(r, "files", "ita-api")
    assert "mode 644" in checks["files"][1] and "chmod 600" in checks["files"][2]
    missing = setup.tmp / "no-such-key"
    r = setup.doctor(conf=setup.conf_with("missing.conf", ita_api_key_file=missing))
    checks = assert_only_failed(r, "files", "ita-api")
    assert "No such file" in checks["files"][1]


def test_api_key_from_stdin(setup):
    state = pathlib.Path(setup.stack.state_dir)
    missing = setup.tmp / "no-such-key"
    conf = setup.conf_with("stdin.conf", ita_api_key_file=missing)
    r = setup.doctor("--api-key-file", "-", conf=conf, input=(state / "ita-api-key").read_text())
    assert r.returncode == 0, r.stdout + r.stderr
    assert "key from stdin" in parse(r.stdout)["files"][1]


def test_openssl_cnf_without_keygate(setup):
    plain = setup.tmp / "plain.cnf"
    plain.write_text("openssl_conf = openssl_init\n[openssl_init]\nproviders = p\n[p]\ndefault = d\n[d]\nactivate = 1\n")
    r = setup.doctor(cnf=plain)
    checks = assert_only_failed(r, "openssl-cnf")
    assert "not an active provider" in checks["openssl-cnf"][1]
    assert "keygate_sect" in checks["openssl-cnf"][2] and f"OPENSSL_CONF={plain}" in checks["openssl-cnf"][2]
    # a provider section whose module does not exist
    broken = openssl_cnf(setup.build_dir, setup.tmp / "broken.cnf", setup.conf)
    broken.write_text(broken.read_text().replace(str(setup.build_dir / "provider" / "keygate.so"), "/nonexistent/keygate.so"))
    r = setup.doctor(cnf=broken)
    assert_only_failed(r, "openssl-cnf")
    # the environment's OPENSSL_CONF is what doctor checks when --openssl-conf is not given
    r = run([setup.bin, "doctor", "-c", str(setup.conf)], env={"OPENSSL_CONF": str(plain)}, timeout=120)
    checks = assert_only_failed(r, "openssl-cnf")
    assert str(plain) in checks["openssl-cnf"][1]


def test_no_configfs_tsm(setup):
    conf = setup.conf_with("tdx.conf", adapter="tdx", tsm_report_dir=setup.tmp / "no-tsm")
    r = setup.doctor(conf=conf)
    checks = assert_only_failed(r, "platform")
    assert "configfs-tsm not found" in checks["platform"][1]
    assert "mount -t configfs" in checks["platform"][2] and "6.7" in checks["platform"][2]


def test_bad_config_is_one_failed_line(setup):
    conf = setup.tmp / "bad.conf"
    conf.write_text("adapter = sim\nno_such_key = 1\n")
    r = setup.doctor(conf=conf)
    checks = parse(r.stdout)
    assert r.returncode == 21 and checks["config"][0] == "✗" and "no_such_key" in checks["config"][1]
    assert all(checks[n][0] == "-" for n in ("platform", "ita-api", "kbs"))


def test_tls_not_verifying(setup):
    state = pathlib.Path(setup.stack.state_dir)
    r = setup.doctor(conf=setup.conf_with("tls.conf", tls_ca_file=state / "ita-root-ca.pem"))
    checks = assert_only_failed(r, "ita-api", "ita-certs", "kbs", "trust-anchor")
    for name in ("ita-api", "ita-certs", "kbs"):
        assert checks[name][2].startswith("TLS verification failed: set tls_ca_file"), r.stdout


def test_clock_skew_against_ita_date(setup):
    """The local clock shifted by libfaketime (the stack keeps the real time): ✗ clock beyond
    token_leeway_s, ✓ within it."""
    if shutil.which("faketime") is None:
        pytest.fail("faketime missing: scripts/setup.sh installs it")
    r = run(["faketime", "-f", "+300s", setup.bin, "doctor", "-c", str(setup.conf), "--openssl-conf", str(setup.cnf)],
            timeout=120)
    checks = assert_only_failed(r, "clock")
    assert re.match(r"local clock is 3\d\d s ahead of ITA's Date header \(token_leeway_s = 60\)", checks["clock"][1]), r.stdout
    assert "timedatectl set-ntp true" in checks["clock"][2]
    r = run(["faketime", "-f", "-20s", setup.bin, "doctor", "-c", str(setup.conf), "--openssl-conf", str(setup.cnf)],
            timeout=120)
    assert r.returncode == 0, r.stdout
    assert re.match(r"local clock within 2\d s of ITA's Date header", parse(r.stdout)["clock"][1]), r.stdout
