# SPDX-License-Identifier: Apache-2.0
"""keygate's own crypto stays in its private library context when a process made an ENGINE the
default for everything: nginx 1.22 with `ssl_engine pkcs11;` loads libkeygate-pkcs11.so directly
through the libp11 engine (no p11-kit server in between), so nginx's ENGINE_set_default(ALL)
makes libp11 the default EC/RSA/pkey-method engine of the very process in which keygate
generates its wrapping key, builds the simulated quote, verifies the token and unwraps the key.
A real client handshake checks the served certificate; the stack counts the attestations."""
import os
import shutil
import signal
import subprocess
import time

import pytest
from cryptography import x509

from conftest import run
from kglib import PAGE, attest_count, free_port, kbs_stack, module_stack, module_token, nginx_conf, token  # noqa: F401 (fixtures)

LIBP11 = "/usr/lib/x86_64-linux-gnu/engines-3/pkcs11.so"

pytestmark = pytest.mark.skipif(not (shutil.which("nginx") and shutil.which("openssl") and os.path.exists(LIBP11)),
                                reason="nginx, openssl and libengine-pkcs11-openssl are needed")


def served_cert(port):
    """The leaf certificate the server presents, from a real `openssl s_client` handshake."""
    r = run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "localhost", "-showcerts"],
            input="", timeout=20)
    if "-----BEGIN CERTIFICATE-----" not in r.stdout:
        return None, r.stdout + r.stderr
    pem = r.stdout[r.stdout.index("-----BEGIN CERTIFICATE-----"):]
    pem = pem[:pem.index("-----END CERTIFICATE-----") + len("-----END CERTIFICATE-----")] + "\n"
    return x509.load_pem_x509_certificate(pem.encode()), r.stdout


def fetch(port, cert, *opts):
    return run(["curl", "-sS", "--max-time", "10", "--cacert", str(cert), *opts, f"https://127.0.0.1:{port}/"],
               timeout=20)


class EngineNginx:
    """nginx 1.22 whose `engine:pkcs11:` key comes from libp11 loading libkeygate-pkcs11.so directly
    (MODULE_PATH), 2 workers. ssl_engine: nginx's `ssl_engine pkcs11;` (ENGINE_set_default ALL);
    without it openssl.cnf initialises the engine (init = 1, the default)."""

    def __init__(self, token, tmp_path, kind, ssl_engine):
        self.pfx = tmp_path / "nginx"
        self.pfx.mkdir()
        cnf = tmp_path / "openssl.cnf"
        cnf.write_text("openssl_conf = openssl_init\n[openssl_init]\nengines = engine_section\n"
                       "[engine_section]\npkcs11 = pkcs11_section\n[pkcs11_section]\n"
                       f"dynamic_path = {LIBP11}\nMODULE_PATH = {token.module}\n" + ("init = 0\n" if ssl_engine else ""))
        self.port = free_port()
        self.cert = token.certs[kind]
        conf = self.pfx / "nginx.conf"
        key = f'"engine:pkcs11:pkcs11:token=keygate;object={kind};type=private"'
        # user root: the workers read the test's keygate.conf and files under pytest's tmp
        conf.write_text("user root;\n" + ("ssl_engine pkcs11;\n" if ssl_engine else "") + "env KEYGATE_CONF;\n" +
                        nginx_conf(self.pfx, self.port, self.cert, key, 2))
        self.errlog = self.pfx / "error.log"
        self.proc = subprocess.Popen(["nginx", "-p", str(self.pfx), "-c", str(conf)],
                                     env=dict(os.environ, OPENSSL_CONF=str(cnf), **token.env),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def first_fetch(self):
        deadline = time.monotonic() + 30
        while True:
            r = fetch(self.port, self.cert)
            if r.returncode == 0 or self.proc.poll() is not None or time.monotonic() > deadline:
                return r
            if "internal error" in r.stderr:  # serving, and the handshake failed on the server
                return r
            time.sleep(0.2)

    def log(self):
        log = self.errlog.read_text(errors="replace") if self.errlog.exists() else ""
        return log + (self.proc.stderr.read().decode() if self.proc.poll() is not None else "")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.mark.parametrize("kind", ["p256", "rsa2048"])
def test_nginx_with_the_libp11_engine_loading_the_module_directly(token, kbs_stack, tmp_path, kind):  # noqa: F811
    """The libp11 engine is in nginx's engine list, and keygate's libcurl init would register it
    for EC/RSA/digests (ENGINE_register_all_complete): keygate undoes that, attests inside the
    worker with provider crypto in its private libctx, and the handshake serves our certificate."""
    ngx = EngineNginx(token, tmp_path, kind, ssl_engine=False)
    try:
        r = ngx.first_fetch()
        assert r.returncode == 0, r.stderr + ngx.log()
        assert r.stdout.startswith(PAGE)
        got, text = served_cert(ngx.port)
        want = x509.load_pem_x509_certificate(ngx.cert.read_bytes())
        assert got is not None and got == want, text
        assert got.public_key().public_numbers() == token.keys[kind].public_key().public_numbers()
        for tls, proto in ((["--tlsv1.2", "--tls-max", "1.2"], "TLSv1.2"), (["--tlsv1.3"], "TLSv1.3")):
            for _ in range(3):
                r = fetch(ngx.port, ngx.cert, *tls)
                assert r.returncode == 0 and r.stdout == f"{PAGE} {proto}\n", r.stderr + ngx.log()
        # inside nginx, no agent: once per worker that signed (2 workers), never per handshake
        assert 1 <= attest_count(kbs_stack) <= 2
        log = ngx.log()
        bad = [ln for ln in log.splitlines() if "[emerg]" in ln or "[alert]" in ln or "[crit]" in ln
               or ("keygate[" in ln and " error " in ln)]
        assert not bad, "\n".join(bad)
    finally:
        ngx.stop()


def test_nginx_ssl_engine_makes_keygate_refuse_with_the_cause(token, kbs_stack, tmp_path):  # noqa: F811
    """`ssl_engine pkcs11;` makes libp11 nginx's default ENGINE for everything. OpenSSL 3.0 then puts
    it in front of every EVP_PKEY_CTX for an existing EC/RSA key, whatever the libctx
    (tests/unit/test_engine_isolation.c): keygate refuses at the first step, before any network,
    with a one-line cause, rather than run its keys through a legacy ENGINE method."""
    ngx = EngineNginx(token, tmp_path, "p256", ssl_engine=True)
    try:
        r = ngx.first_fetch()
        assert r.returncode != 0 and "internal error" in r.stderr, r.stdout + r.stderr
        time.sleep(0.5)
        log = ngx.log()
        assert ("wrapping-key: ENGINE 'pkcs11' is this process's default for EC/RSA keys or digests (nginx "
                "ssl_engine") in log, log
        assert "p11-kit server" in log
        assert "cannot create the attestation key" not in log and "PS384" not in log, log
        assert not [q for q in kbs_stack.requests("ita")], "keygate contacted ITA under a foreign ENGINE"
        assert ngx.proc.poll() is None, "nginx died"
    finally:
        ngx.stop()
