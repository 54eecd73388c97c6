# SPDX-License-Identifier: Apache-2.0
"""tlsfuzzer, a TLS test suite keygate's authors did not write, against nginx serving a keygate
key and nginx serving the same key from a PEM file: the per-probe results must be identical.

Some probes fail on both servers by setup (no RSA-PSS certificate, P-256 only, OpenSSL 3.0's
choice of alert): that is no finding. A probe that passes with one key and fails with the other
is. The RSA key is also served on a port with RSA key exchange (`@SECLEVEL=0`), where
test-bleichenbacher-workaround and test-invalid-rsa-key-exchange-messages drive the provider's
RSA decryption with malformed and mis-padded premaster secrets.

The sources come from ../shared/third_party (tlsfuzzer and tlslite-ng tarballs, see the README
there), or the directory named by KEYGATE_THIRD_PARTY_DIR; the tests skip when they are absent.
"""
import os
import re
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from conftest import REPO
from kglib import NGINX, free_port, make_cert, read_log, site, wait_serving  # noqa: F401 (fixtures)

THIRD_PARTY = Path(os.environ.get("KEYGATE_THIRD_PARTY_DIR", REPO.parent / "shared" / "third_party"))
PYTHON = "/usr/bin/python3"


def tarball(prefix):
    found = sorted(THIRD_PARTY.glob(f"{prefix}-*.tar.gz"))
    return found[-1] if found else None


TLSFUZZER, TLSLITE = tarball("tlsfuzzer"), tarball("tlslite-ng")


def have_ecdsa():
    return subprocess.run([PYTHON, "-c", "import ecdsa"], capture_output=True).returncode == 0


pytestmark = [
    pytest.mark.skipif(TLSFUZZER is None or TLSLITE is None,
                       reason=f"tlsfuzzer and tlslite-ng tarballs not found in {THIRD_PARTY} "
                              "(set KEYGATE_THIRD_PARTY_DIR; see ../shared/third_party/README.md)"),
    pytest.mark.skipif(not have_ecdsa(), reason="python3-ecdsa is needed (scripts/setup.sh installs it)"),
    pytest.mark.skipif(not os.path.exists(NGINX), reason="nginx is needed (scripts/setup.sh installs it)"),
]

# (script, server port, extra arguments). "rsa" and "p256" take nginx's default ciphers, TLS 1.2
# and 1.3; "rsa_kx" adds RSA key exchange. test-conversation negotiates RSA key exchange unless
# given -d ((EC)DHE).
SCRIPTS = [
    ("test-tls13-rsa-signatures", "rsa", []),
    ("test-tls13-signature-algorithms", "rsa", ["-n", "40"]),
    ("test-sig-algs", "rsa", []),
    ("test-tls13-conversation", "rsa", []),
    ("test-tls13-conversation", "p256", []),
    ("test-conversation", "rsa_kx", []),
    ("test-conversation", "rsa", ["-d"]),
    ("test-conversation", "p256", ["-d"]),
    ("test-ecdsa-sig-flexibility", "p256", []),
    ("test-tls13-ecdsa-support", "p256", []),
    ("test-invalid-rsa-key-exchange-messages", "rsa_kx", []),
    ("test-bleichenbacher-workaround", "rsa_kx", ["--no-sni", "-n", "50"]),
]
# Scripts that run a random sample of their probes (-n) draw it from Python's random module: the
# same seed on both sides makes them run the same probes, with the same random bytes.
SEEDED = ("import random, runpy, sys; random.seed(20261207); sys.argv = sys.argv[1:]; "
          "runpy.run_path(sys.argv[0], run_name='__main__')")


@pytest.fixture(scope="module")
def tlsfuzzer(tmp_path_factory):
    """tlsfuzzer's scripts directory and the PYTHONPATH holding tlsfuzzer and tlslite-ng."""
    root = tmp_path_factory.mktemp("tlsfuzzer")
    for tgz in (TLSFUZZER, TLSLITE):
        subprocess.run(["tar", "-xzf", str(tgz), "-C", str(root)], check=True)
    fuzzer = next(root.glob("tlsfuzzer-*"))
    lite = next(root.glob("tlslite-ng-*"))
    return fuzzer / "scripts", f"{fuzzer}{os.pathsep}{lite}"


def server_block(port, cert, key, ciphers=None):
    return ("  server {\n"
            f"    listen 127.0.0.1:{port} ssl;\n"
            f"    ssl_certificate {cert};\n    ssl_certificate_key {key};\n"
            "    ssl_protocols TLSv1.2 TLSv1.3;\n"
            + (f"    ssl_ciphers \"{ciphers}\";\n" if ciphers else "")
            + "    location / { default_type text/plain; return 200 \"tlsfuzzer\\n\"; }\n  }\n")


class Servers:
    """One nginx (one worker) serving the RSA key on two ports and the P-256 key on a third,
    with its keys given as keygate references or as PEM files."""

    def __init__(self, tmp, name, certs, keys, env):
        self.pfx = tmp / name
        self.pfx.mkdir()
        self.ports = {kind: free_port() for kind in ("rsa", "rsa_kx", "p256")}
        p = str(self.pfx)
        blocks = (server_block(self.ports["rsa"], certs["rsa"], keys["rsa"])
                  + server_block(self.ports["rsa_kx"], certs["rsa"], keys["rsa"], "ALL:@SECLEVEL=0")
                  + server_block(self.ports["p256"], certs["p256"], keys["p256"]))
        conf = self.pfx / "nginx.conf"
        conf.write_text(
            f"daemon off;\nmaster_process on;\nworker_processes 1;\npid {p}/nginx.pid;\n"
            f"error_log {p}/error.log info;\nevents {{ worker_connections 256; }}\n"
            f"http {{\n  access_log off;\n  client_body_temp_path {p}/body; proxy_temp_path {p}/proxy;\n"
            f"  fastcgi_temp_path {p}/fastcgi; uwsgi_temp_path {p}/uwsgi; scgi_temp_path {p}/scgi;\n"
            f"{blocks}}}\n")
        self.errlog = self.pfx / "error.log"
        self.proc = subprocess.Popen([NGINX, "-p", p, "-c", str(conf)], env=env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        for kind in ("rsa", "rsa_kx", "p256"):
            wait_serving(self.proc, self.ports[kind], certs["p256" if kind == "p256" else "rsa"], self.errlog)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()  # the master we started, by its PID
            self.proc.wait(15)


@pytest.fixture(scope="module")
def pair(keygate_bin, build_dir, session_kbs_stack, tmp_path_factory):
    """nginx with keygate keys and nginx with the same keys in PEM files, both running."""
    from kglib import Site

    tmp = tmp_path_factory.mktemp("tlsfuzzer-servers")
    st = Site(keygate_bin, build_dir, session_kbs_stack, tmp)
    certs = {"rsa": make_cert(st, "rsa2048"), "p256": make_cert(st, "p256")}
    files = {}
    for kind, key in (("rsa", st.keys["rsa2048"]), ("p256", st.keys["p256"])):
        files[kind] = tmp / f"{kind}.key.pem"
        files[kind].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()))
        files[kind].chmod(0o600)
    plain_env = {k: v for k, v in os.environ.items() if k != "OPENSSL_CONF"}
    servers = {}
    try:
        servers["keygate"] = Servers(tmp, "keygate", certs, {"rsa": st.refs["rsa2048"], "p256": st.refs["p256"]},
                                     dict(os.environ, **st.env))
        servers["file"] = Servers(tmp, "file", certs, files, plain_env)
        yield servers
    finally:
        for s in servers.values():
            s.stop()
    for s in servers.values():
        log = read_log(s.errlog)
        assert "[alert]" not in log and "[emerg]" not in log, log[-2000:]


def run_script(tlsfuzzer, script, port, args, timeout=240):
    """(names of the probes run, names of those that failed, the output) of one tlsfuzzer run."""
    scripts, pythonpath = tlsfuzzer
    r = subprocess.run([PYTHON, "-c", SEEDED, str(scripts / f"{script}.py"), "-h", "127.0.0.1", "-p", str(port),
                        *args],
                       env=dict(os.environ, PYTHONPATH=pythonpath), capture_output=True, text=True,
                       timeout=timeout)
    out = r.stdout
    names = set(re.findall(r"^(.+) \.\.\.$", out, re.M))
    summary = out.rsplit("Test end", 1)
    assert len(summary) == 2 and "TOTAL:" in summary[1], f"{script} did not finish:\n{out[-3000:]}\n{r.stderr[-2000:]}"
    failed = set()
    if "FAILED:" in summary[1]:
        block = summary[1].split("FAILED:", 1)[1]
        for line in block.splitlines()[1:]:
            if not line.startswith("\t"):
                break
            failed.add(eval(line.strip(), {}))  # tlsfuzzer prints repr() of each name
    assert failed <= names, (failed - names, out[-2000:])
    return names, failed, out


@pytest.mark.parametrize("script,kind,args", SCRIPTS, ids=[f"{s}-{k}{''.join(a[:1])}" for s, k, a in SCRIPTS])
def test_tlsfuzzer_probes_agree_with_a_file_key(tlsfuzzer, pair, script, kind, args):
    with ThreadPoolExecutor(2) as ex:
        a = ex.submit(run_script, tlsfuzzer, script, pair["keygate"].ports[kind], args)
        b = ex.submit(run_script, tlsfuzzer, script, pair["file"].ports[kind], args)
        (names, kg_failed, kg_out), (file_names, file_failed, file_out) = a.result(), b.result()
    assert names == file_names, f"the two runs chose different probes: {sorted(names ^ file_names)}"
    differ = sorted(kg_failed ^ file_failed)
    assert not differ, (
        f"{script}: probes whose result differs between the keygate key and the file key: "
        f"{[(n, 'fails with keygate' if n in kg_failed else 'fails with the file key') for n in differ]}\n"
        f"--- keygate:\n{kg_out[-3000:]}\n--- file:\n{file_out[-3000:]}")
    # the servers answered: some probe passes on both (the failures are setup, the same on both)
    assert names - kg_failed, kg_out[-3000:]
    if "-n" in args:
        assert len(names) > int(args[args.index("-n") + 1]), "fewer probes ran than asked for"


def test_the_comparison_sees_a_difference(tlsfuzzer, pair):
    """Control: the same script against the P-256 key and against the RSA key differs."""
    names, p256_failed, out = run_script(tlsfuzzer, "test-tls13-ecdsa-support", pair["keygate"].ports["p256"], [])
    _, rsa_failed, _ = run_script(tlsfuzzer, "test-tls13-ecdsa-support", pair["file"].ports["rsa"], [])
    assert "Test with ecdsa_secp256r1_sha256" in names - p256_failed, out[-2000:]
    assert "Test with ecdsa_secp256r1_sha256" in rsa_failed
