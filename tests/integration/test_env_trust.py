# SPDX-License-Identifier: Apache-2.0
"""Environment variables and trust (issue 17, finding 4). p11-kit loads the PKCS#11 module into
every GnuTLS program, setuid ones included, so the environment of a privileged host is the
caller's: KEYGATE_CONF (trust anchor, ITA URL, API key file) and KEYGATE_DEBUG (a file the host
creates or appends to) are read with secure_getenv, and the debug log is opened 0600, never
through a symlink and only if it is a regular file.

The secure_getenv proofs run a setgid copy of a real host (the keygate CLI, pkcs11-tool with the
module) as root, with a group other than root's: the kernel then sets AT_SECURE, which is what
secure_getenv tests (a setuid-root program run by a user gets the same flag). That AT_SECURE
really is set is shown first with glibc's own rule: the dynamic loader ignores LD_DEBUG in a
secure process. File capabilities would not do for root: the kernel does not count them as a
gain for uid 0 (security/commoncap.c), so AT_SECURE stays clear.
"""
import os
import pathlib
import re
import shutil
import socket
import stat

import pytest

from conftest import REPO, run

VECTORS = pathlib.Path(os.environ.get("KEYGATE_VECTORS_DIR", REPO / "tests" / "vectors"))
PROD_TIME = "2023-12-05T00:10:00Z"
NOGROUP = 65534
PROXY = [None]  # the dead_proxy of this module


@pytest.fixture(autouse=True)
def _proxy(dead_proxy):
    PROXY[0] = dead_proxy


@pytest.fixture(scope="module")
def dead_proxy():
    """A 127.0.0.1 port nobody listens on, as HTTPS proxy: the CRL downloads of the production
    chain (portal.trustauthority.intel.com) fail there instead of leaving the machine."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    yield f"http://127.0.0.1:{s.getsockname()[1]}"
    s.close()


def offline_verify(keygate_bin, tmp_path, env, umask=None, binary=None, conf=True):
    """`keygate verify` of the production token, offline, crl_policy if-available: it logs the
    unavailable-CRL warning (so KEYGATE_DEBUG's file is opened) and exits 0."""
    c = tmp_path / "offline.conf"
    c.write_text(f"ita_trust_anchor = {VECTORS / 'ita-prod-root-ca.pem'}\ncrl_policy = if-available\n"
                 "require_tcb_status = UpToDate, OutOfDate\nretry_max = 0\ntimeout_ms = 2000\n")
    env = dict(env, https_proxy=PROXY[0], HTTPS_PROXY=PROXY[0], no_proxy="", NO_PROXY="")
    args = [binary or keygate_bin] + (["-c", str(c)] if conf else []) + [
        "verify", "--token", str(VECTORS / "ita-tdx-prod-token-v1.jwt"),
        "--jwks-file", str(VECTORS / "ita-prod-jwks.json"), "--at", PROD_TIME]
    preexec = (lambda: os.umask(umask)) if umask is not None else None
    return run(args, env=env, timeout=30, preexec_fn=preexec)


def test_debug_log_is_created_0600_under_umask_000(keygate_bin, tmp_path):
    log = tmp_path / "kg.log"
    r = offline_verify(keygate_bin, tmp_path, {"KEYGATE_DEBUG": f"{log}:3"}, umask=0)
    assert r.returncode == 0, r.stderr
    assert log.exists() and "CRL" in log.read_text(), r.stderr
    assert stat.S_IMODE(log.stat().st_mode) == 0o600, oct(log.stat().st_mode)
    # an existing log is appended to, its mode left alone
    log.chmod(0o640)
    r = offline_verify(keygate_bin, tmp_path, {"KEYGATE_DEBUG": f"{log}:3"}, umask=0)
    assert r.returncode == 0 and log.read_text().count("CRL") >= 2, r.stderr
    assert stat.S_IMODE(log.stat().st_mode) == 0o640


def test_debug_log_through_a_symlink_or_to_a_fifo_is_refused(keygate_bin, tmp_path):
    target = tmp_path / "target"
    target.write_text("")
    link = tmp_path / "link.log"
    link.symlink_to(target)
    r = offline_verify(keygate_bin, tmp_path, {"KEYGATE_DEBUG": f"{link}:3"})
    assert r.returncode == 0, r.stderr
    assert target.read_text() == "", "the host wrote through a symlink"
    warn = [l for l in r.stderr.splitlines() if "KEYGATE_DEBUG" in l]
    assert len(warn) == 1 and str(link) in warn[0] and "not logging" in warn[0], r.stderr
    # refused means not logging at level 3 to stderr either (only the default warnings)
    assert not re.search(r"^keygate\[\d+\] (info|debug) ", r.stderr, re.M), r.stderr
    # a FIFO (without a reader an open for writing would block the host) and a directory
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path in (fifo, tmp_path):
        r = offline_verify(keygate_bin, tmp_path, {"KEYGATE_DEBUG": f"{path}:3"})
        assert r.returncode == 0 and "KEYGATE_DEBUG" in r.stderr and "not logging" in r.stderr, r.stderr


# ------------------------------------------------------------------------ secure_getenv

def setgid_copy(src, dst):
    """dst: a copy of src, setgid to a group that is not ours, so exec sets AT_SECURE."""
    if os.geteuid() != 0:
        pytest.skip("needs root to make a setgid copy")
    if os.environ.get("KEYGATE_ASAN_PRELOAD"):
        pytest.skip("an ASan module needs LD_PRELOAD, which a secure process ignores")
    if os.getegid() == NOGROUP:
        pytest.skip("running as nogroup")
    shutil.copy(src, dst)
    os.chown(dst, -1, NOGROUP)
    os.chmod(dst, 0o2755)
    return str(dst)


def assert_at_secure(binary, plain, args):
    """glibc's loader prints LD_DEBUG output for the plain copy but not for the setgid one:
    AT_SECURE is set for it (else the tests below would prove nothing)."""
    r = run([plain, *args], env={"LD_DEBUG": "libs"})
    assert "find library=" in r.stderr, r.stderr[-2000:]
    r = run([binary, *args], env={"LD_DEBUG": "libs"})
    assert "find library=" not in r.stderr, "AT_SECURE is not set for the setgid copy"


def test_a_secure_cli_ignores_keygate_conf_and_keygate_debug(keygate_bin, tmp_path):
    plain = tmp_path / "keygate-plain"
    shutil.copy(keygate_bin, plain)
    sgid = setgid_copy(keygate_bin, tmp_path / "keygate-sgid")
    assert_at_secure(sgid, str(plain), ["--version"])
    conf = tmp_path / "offline.conf"
    log = tmp_path / "planted.log"
    # the plain copy follows the environment: planted configuration, debug log created
    offline_verify(keygate_bin, tmp_path, {}, binary=str(plain))  # writes conf
    env = {"KEYGATE_CONF": str(conf), "KEYGATE_DEBUG": f"{log}:3"}
    r = offline_verify(keygate_bin, tmp_path, env, binary=str(plain), conf=False)
    assert r.returncode == 0 and log.exists(), r.stderr
    log.unlink()
    # the secure one ignores both: no log file, and not the planted configuration
    r = offline_verify(keygate_bin, tmp_path, env, binary=sgid, conf=False)
    assert not log.exists(), "a secure process created the KEYGATE_DEBUG file"
    assert r.returncode != 0 and str(conf) not in r.stderr, r.stderr
    assert "/etc/keygate/keygate.conf" in r.stderr or "ita_trust_anchor is not set" in r.stderr, r.stderr


@pytest.mark.skipif(not shutil.which("pkcs11-tool"), reason="opensc (pkcs11-tool) is needed")
def test_a_secure_pkcs11_host_ignores_keygate_conf(build_dir, tmp_path):
    module = str(build_dir / "pkcs11" / "libkeygate-pkcs11.so")
    plain = tmp_path / "pkcs11-tool-plain"
    shutil.copy(shutil.which("pkcs11-tool"), plain)
    sgid = setgid_copy(shutil.which("pkcs11-tool"), tmp_path / "pkcs11-tool-sgid")
    assert_at_secure(sgid, str(plain), ["--version"])
    if os.path.exists("/etc/keygate/keygate.conf"):
        pytest.skip("/etc/keygate/keygate.conf exists: the module's default would be read")
    planted = tmp_path / "planted.conf"
    planted.write_text(f"pkcs11_keys = web:{tmp_path}/planted-missing.ref.pem\n")
    env = {"KEYGATE_CONF": str(planted)}
    r = run([str(plain), "--module", module, "-L"], env=env)
    assert r.returncode != 0 and "planted-missing.ref.pem" in r.stderr, r.stderr
    r = run([sgid, "--module", module, "-L"], env=env)
    assert r.returncode == 0 and "planted" not in r.stderr + r.stdout, r.stderr
