# SPDX-License-Identifier: Apache-2.0
"""TLS trust: a configured CA file is the only trust, per service.

keygate runs in a private mount namespace (unshare --mount) whose /etc/ssl/certs, the system
store of Debian's libcurl (CAPATH /etc/ssl/certs, CAINFO /etc/ssl/certs/ca-certificates.crt) and
of OpenSSL (/usr/lib/ssl/certs links there), holds only a rogue CA. A stand-in HTTPS server on
127.0.0.1 with a certificate from that rogue CA logs every request it gets and every handshake
that failed. The local stack's ITA and KBS use the stack's TLS CA (tls-ca.pem).

  * control: without any CA file the system store is trusted, so the rogue server gets the
    request (with the API key, for ITA): the namespace really plants trust;
  * tls_ca_file set to another CA: no request reaches the rogue server (the handshake fails at
    certificate verification), the command fails at its step naming the TLS cause;
  * ita_tls_ca_file / kbs_tls_ca_file select trust for their service only, and take precedence
    over tls_ca_file.
"""
import ipaddress
import json
import os
import pathlib
import shutil
import subprocess
import sys
import time
import uuid

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID

from conftest import kbs_conf, run, write_keygate_conf
from tests.stack import pki

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                                reason="needs root and unshare (a private mount namespace)")

ROGUE_SERVER = r'''
import http.server, json, ssl, sys
cert, key, log, portfile = sys.argv[1:5]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)

def record(rec):
    with open(log, "a") as f:
        f.write(json.dumps(rec) + "\n")

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _any(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        record({"event": "request", "method": self.command, "path": self.path, "body_len": len(body),
                "api_key": any(k.lower() == "x-api-key" for k in self.headers.keys())})
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST = _any

    def log_message(self, *args):
        pass

class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def get_request(self):
        sock, addr = self.socket.accept()
        sock.settimeout(10)
        tls = ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        try:
            tls.do_handshake()
        except OSError as e:
            record({"event": "handshake_failed", "reason": str(e)})
            tls.close()
            raise
        return tls, addr

srv = Server(("127.0.0.1", 0), Handler)
with open(portfile + ".tmp", "w") as f:
    f.write(str(srv.server_address[1]))
import os
os.rename(portfile + ".tmp", portfile)
srv.serve_forever()
'''


class Rogue:
    """A rogue CA planted as the whole system store of a mount namespace, and an HTTPS server on
    127.0.0.1 whose certificate (SAN IP:127.0.0.1) it signed."""

    def __init__(self, tmp):
        self.dir = tmp / "rogue"
        self.certs = self.dir / "etc-ssl-certs"  # bound over /etc/ssl/certs
        self.certs.mkdir(parents=True)
        ca_key, srv_key = pki.new_rsa(2048), pki.new_rsa(2048)
        ca = pki.issue_cert("rogue CA", ca_key, ca=True, days=2, sign_hash=hashes.SHA256())
        srv = pki.issue_cert("rogue server", srv_key, ca, ca_key, days=2, sign_hash=hashes.SHA256(),
                             usage={"digital_signature": True, "content_commitment": False,
                                    "key_encipherment": True, "data_encipherment": False,
                                    "key_agreement": False, "key_cert_sign": False, "crl_sign": False,
                                    "encipher_only": False, "decipher_only": False},
                             san=[x509.IPAddress(ipaddress.IPv4Address("127.0.0.1"))],
                             eku=[ExtendedKeyUsageOID.SERVER_AUTH])
        pki.write_cert(str(self.certs / "rogue-ca.pem"), ca)
        pki.write_cert(str(self.certs / "ca-certificates.crt"), ca)
        r = run(["openssl", "rehash", str(self.certs)])
        assert r.returncode == 0, r.stderr
        assert any(p.is_symlink() for p in self.certs.iterdir()), "openssl rehash made no hash link"
        pki.write_cert(str(self.dir / "server.pem"), srv)
        pki.write_key(str(self.dir / "server.key"), srv_key)
        (self.dir / "server.py").write_text(ROGUE_SERVER)
        self.log = self.dir / "log.jsonl"
        portfile = self.dir / "port"
        self.proc = subprocess.Popen([sys.executable, str(self.dir / "server.py"), str(self.dir / "server.pem"),
                                      str(self.dir / "server.key"), str(self.log), str(portfile)])
        deadline = time.monotonic() + 30
        while not portfile.exists():
            assert self.proc.poll() is None and time.monotonic() < deadline, "rogue server did not start"
            time.sleep(0.05)
        self.url = f"https://127.0.0.1:{int(portfile.read_text())}"

    def events(self):
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def requests(self):
        return [e for e in self.events() if e["event"] == "request"]

    def clear(self):
        self.log.unlink(missing_ok=True)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.wait(timeout=30)

    def keygate(self, keygate_bin, conf, *argv):
        """keygate in a private mount namespace whose /etc/ssl/certs holds only the rogue CA."""
        script = 'mount --bind "$0" /etc/ssl/certs && exec "$@"'
        return run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, str(self.certs),
                    keygate_bin, "-c", str(conf), *map(str, argv)], timeout=120)


@pytest.fixture
def rogue(tmp_path):
    r = Rogue(tmp_path)
    yield r
    r.stop()


def stack_ca(stack):
    return pathlib.Path(stack.state_dir) / "tls-ca.pem"


def assert_tls_refused(r, step, rogue):
    """Failed at step, naming a TLS certificate cause; the rogue server saw no request (its
    handshake failed)."""
    assert r.returncode != 0, r.stderr
    line = [l for l in r.stderr.splitlines() if l.startswith("keygate: ")][-1]
    assert line.startswith(f"keygate: {step}: ") and "certificate" in line.lower(), r.stderr
    # the server records the failed handshake after the client has gone: wait for the record
    deadline = time.monotonic() + 10
    while not any(e["event"] == "handshake_failed" for e in rogue.events()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert any(e["event"] == "handshake_failed" for e in rogue.events()), rogue.events()
    assert rogue.requests() == [], rogue.events()


def test_control_the_planted_system_store_is_trusted(keygate_bin, ita_stack, tmp_path, rogue):
    """Without any CA file, the namespace's system store (the rogue CA) is trusted: `keygate
    token` sends its nonce request, API key included, to the rogue server. This is what the
    tests below must prevent; it shows the namespace really plants the trust."""
    conf = write_keygate_conf(ita_stack, tmp_path / "k.conf", tls_ca_file=None, ita_api_url=rogue.url,
                              ita_base_url=rogue.url, retry_max=0)
    r = rogue.keygate(keygate_bin, conf, "token")
    assert r.returncode != 0 and "HTTP 404" in r.stderr, r.stderr
    reqs = rogue.requests()
    assert len(reqs) == 1 and reqs[0]["path"].endswith("/nonce") and reqs[0]["api_key"], reqs
    # and outside the namespace the rogue CA is trusted by nothing
    rogue.clear()
    r = run([keygate_bin, "-c", str(conf), "token"])
    assert_tls_refused(r, "nonce", rogue)


def test_tls_ca_file_is_the_only_trust(keygate_bin, ita_stack, tmp_path, rogue):
    """tls_ca_file names the stack's TLS CA: a server of the system store's (rogue) CA gets no
    request, neither ITA's API (nonce, with the API key) nor its portal (the JWKS)."""
    conf = write_keygate_conf(ita_stack, tmp_path / "k.conf", ita_api_url=rogue.url, retry_max=0)
    r = rogue.keygate(keygate_bin, conf, "token")
    assert_tls_refused(r, "nonce", rogue)

    # a real token from the stack, then verification with the JWKS host being the rogue
    good = write_keygate_conf(ita_stack, tmp_path / "good.conf")
    r = run([keygate_bin, "-c", str(good), "token"])
    assert r.returncode == 0, r.stderr
    token = tmp_path / "token.jwt"
    token.write_text(r.stdout)
    rogue.clear()
    conf = write_keygate_conf(ita_stack, tmp_path / "v.conf", ita_base_url=rogue.url, retry_max=0)
    r = rogue.keygate(keygate_bin, conf, "verify", "--token", token)
    assert_tls_refused(r, "verify", rogue)
    # control: the same verification against the stack passes in the namespace
    r = rogue.keygate(keygate_bin, good, "verify", "--token", token)
    assert r.returncode == 0, r.stderr


def test_ita_and_kbs_ca_files_select_trust_per_service(keygate_bin, kbs_stack, tmp_path, rogue):
    """ita_tls_ca_file trusts the stack's CA for ITA only, kbs_tls_ca_file for the KBS only; each
    overrides tls_ca_file; a service without its own file and without tls_ca_file uses the
    system store (here: the rogue CA)."""
    ca = stack_ca(kbs_stack)
    key_id = str(uuid.uuid4())

    # ITA trusted through ita_tls_ca_file (the namespace's store alone would refuse the stack);
    # the KBS has no file: the system store, so the rogue KBS gets the transfer (no API key)
    conf = kbs_conf(kbs_stack, tmp_path / "a.conf", tls_ca_file=None, ita_tls_ca_file=ca, kbs_url=rogue.url,
                    retry_max=0)
    r = rogue.keygate(keygate_bin, conf, "release", "--key-id", key_id)
    assert r.returncode != 0 and "HTTP 404" in r.stderr, r.stderr
    reqs = rogue.requests()
    assert reqs and not any(q["api_key"] for q in reqs), reqs
    assert kbs_stack.requests("ita"), "ITA was not reached through ita_tls_ca_file"

    # kbs_tls_ca_file: the rogue KBS is refused at step transfer, after a good ITA token
    rogue.clear()
    conf = kbs_conf(kbs_stack, tmp_path / "b.conf", tls_ca_file=None, ita_tls_ca_file=ca, kbs_tls_ca_file=ca,
                    kbs_url=rogue.url, retry_max=0)
    r = rogue.keygate(keygate_bin, conf, "release", "--key-id", key_id)
    assert_tls_refused(r, "transfer", rogue)

    # kbs_tls_ca_file does not restrict ITA: with no ITA file the rogue ITA gets the nonce
    rogue.clear()
    conf = kbs_conf(kbs_stack, tmp_path / "c.conf", tls_ca_file=None, kbs_tls_ca_file=ca,
                    ita_api_url=rogue.url, retry_max=0)
    r = rogue.keygate(keygate_bin, conf, "token")
    reqs = rogue.requests()
    assert r.returncode != 0 and len(reqs) == 1 and reqs[0]["api_key"], (r.stderr, reqs)

    # ita_tls_ca_file overrides a tls_ca_file that would trust the rogue: refused at nonce
    rogue.clear()
    conf = kbs_conf(kbs_stack, tmp_path / "d.conf", tls_ca_file=rogue.certs / "rogue-ca.pem",
                    ita_tls_ca_file=ca, ita_api_url=rogue.url, retry_max=0)
    r = rogue.keygate(keygate_bin, conf, "token")
    assert_tls_refused(r, "nonce", rogue)
    # and kbs_tls_ca_file overrides it for the KBS
    rogue.clear()
    conf = kbs_conf(kbs_stack, tmp_path / "e.conf", tls_ca_file=rogue.certs / "rogue-ca.pem",
                    ita_tls_ca_file=ca, kbs_tls_ca_file=ca, kbs_url=rogue.url, retry_max=0)
    r = rogue.keygate(keygate_bin, conf, "release", "--key-id", key_id)
    assert_tls_refused(r, "transfer", rogue)
