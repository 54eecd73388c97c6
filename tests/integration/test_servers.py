# SPDX-License-Identifier: Apache-2.0
"""nginx 1.22 and haproxy 2.6 with keys released through the provider: real servers on
127.0.0.1 (free ports, temp prefixes, stopped by PID), curl as the client, the local stack's ITA
and KBS behind them. Attestation happens once, in the master, before the workers fork."""
import os
import re
import shutil
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import run
from kglib import HAPROXY, HAPROXY_CFG, Nginx, PAGE, attest_count, curl, free_port, make_cert, nginx_conf, read_log, site, wait_serving  # noqa: F401 (fixtures)

pytestmark = pytest.mark.skipif(not (shutil.which("nginx") and shutil.which("haproxy") and shutil.which("curl")),
                                reason="nginx, haproxy and curl are needed (scripts/setup.sh installs them)")


def transfer_count(stack):
    return sum(1 for q in stack.requests("kbs") if re.search(r"/transfer$", q["path"]))


@pytest.fixture
def servers():
    started = []
    yield started
    for s in started:
        s.stop()


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("kind", ["rsa2048", "p256"])
def test_nginx_serves_https_from_a_reference_and_attests_once(site, kbs_stack, servers, kind, workers):
    cert = make_cert(site, kind)
    before, xfer = attest_count(kbs_stack), transfer_count(kbs_stack)
    ngx = Nginx(site, cert, site.refs[kind], workers)
    servers.append(ngx)
    ngx.start()
    assert len(ngx.workers()) == workers
    for tls, want in ((["--tlsv1.2", "--tls-max", "1.2"], "TLSv1.2"), (["--tlsv1.3"], "TLSv1.3")):
        for _ in range(4):
            r = curl(ngx.port, cert, *tls)
            assert r.returncode == 0, r.stderr
            assert r.stdout == f"{PAGE} {want}\n"
    ngx.stop()
    assert ngx.proc.returncode == 0, ngx.proc.stderr.read().decode()
    # released in the master before the fork; the workers reuse the key
    assert attest_count(kbs_stack) - before == 1
    assert transfer_count(kbs_stack) - xfer == 1
    assert "[emerg]" not in read_log(ngx.errlog)


def test_nginx_t_fails_with_a_keygate_error_when_the_stack_refuses(site, kbs_stack):
    cert = make_cert(site, "p256")
    ngx = Nginx(site, cert, site.refs["p256"])
    r = ngx.check()
    assert r.returncode == 0 and "test is successful" in r.stderr, r.stderr
    kbs_stack.set_faults("kbs", [{"route": "/transfer$", "mode": "deny"}])
    r = ngx.check()
    assert r.returncode != 0
    assert "test failed" in r.stderr
    assert "cannot load certificate key" in r.stderr and "keygate" in r.stderr, r.stderr


def test_nginx_reload_with_the_kbs_down_keeps_the_old_workers_serving(site, kbs_stack, servers):
    cert = make_cert(site, "rsa2048")
    ngx = Nginx(site, cert, site.refs["rsa2048"], workers=2)
    servers.append(ngx)
    ngx.start()
    first = ngx.workers()
    kbs_stack.stop("kbs")
    attests = attest_count(kbs_stack)
    # 1. same configuration: the master reloads the key from its per-process cache, no network
    ngx.proc.send_signal(signal.SIGHUP)
    old = wait_workers_changed(ngx, first)
    assert "cannot load certificate key" not in read_log(ngx.errlog)
    r = curl(ngx.port, cert)
    assert r.returncode == 0 and r.stdout.startswith(PAGE), r.stderr
    assert attest_count(kbs_stack) == attests
    # 2. a key the master has not released yet (a key rotation) with the KBS down: the reload
    # fails loudly and the old workers keep serving the old key
    p256_cert = make_cert_for_reload(site, ngx)
    ngx.conf.write_text(nginx_conf(ngx.pfx, ngx.port, p256_cert, site.refs["p256"], 2))
    ngx.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 30
    while "cannot load certificate key" not in read_log(ngx.errlog):
        assert time.monotonic() < deadline, read_log(ngx.errlog)
        assert ngx.proc.poll() is None
        time.sleep(0.2)
    log = read_log(ngx.errlog)
    failed = log[log.index("cannot load certificate key"):]
    assert "keygate" in failed and "transfer" in failed, log
    for _ in range(5):
        r = curl(ngx.port, cert)
        assert r.returncode == 0 and r.stdout.startswith(PAGE), r.stderr
    assert ngx.workers() == old and ngx.proc.poll() is None


def wait_workers_changed(ngx, old, deadline_s=20):
    deadline = time.monotonic() + deadline_s
    while True:
        now = ngx.workers()
        if now and not set(now) & set(old):
            return now
        assert time.monotonic() < deadline, (old, now, read_log(ngx.errlog))
        time.sleep(0.1)


def make_cert_for_reload(site, ngx):
    """A cert for the P-256 reference, made while the KBS is down: `openssl req` needs the private
    key, so it is signed with a plain key instead; nginx fails at the key load before any check."""
    key = ngx.pfx / "other.key"
    cert = ngx.pfx / "other.crt"
    assert run(["openssl", "req", "-new", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                "-nodes", "-keyout", str(key), "-subj", "/CN=localhost", "-days", "1", "-out",
                str(cert)]).returncode == 0
    return cert


def test_nginx_with_a_plain_key_is_unaffected(site, kbs_stack, servers):
    key, cert = site.tmp / "plain.key", site.tmp / "plain.crt"
    r = site.openssl("req", "-new", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-subj",
                     "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1", "-days", "1", "-out", cert)
    assert r.returncode == 0, r.stderr
    before = attest_count(kbs_stack)
    ngx = Nginx(site, cert, key, workers=2)
    servers.append(ngx)
    ngx.start()
    for tls in (["--tlsv1.2", "--tls-max", "1.2"], ["--tlsv1.3"]):
        r = curl(ngx.port, cert, *tls)
        assert r.returncode == 0 and r.stdout.startswith(PAGE), r.stderr
    assert attest_count(kbs_stack) == before


def haproxy_files(site, kind, layout):
    cert = make_cert(site, kind)
    d = site.tmp / "haproxy"
    d.mkdir()
    if layout == "bundle":
        crt = d / "bundle.pem"
        crt.write_text(cert.read_text() + site.refs[kind].read_text())
    else:
        crt = d / "site.pem"
        crt.write_text(cert.read_text())
        (d / "site.pem.key").write_text(site.refs[kind].read_text())
    return d, cert, crt


@pytest.mark.parametrize("kind,layout", [("p256", "bundle"), ("rsa2048", "sidecar")])
def test_haproxy_handshake_burst(site, kbs_stack, build_dir, kind, layout):
    d, cert, crt = haproxy_files(site, kind, layout)
    port = free_port()
    cfg = d / "haproxy.cfg"
    cfg.write_text(HAPROXY_CFG.format(provdir=build_dir / "provider", port=port, crt=crt, page=PAGE))
    before, xfer = attest_count(kbs_stack), transfer_count(kbs_stack)
    # the ssl-provider lines load keygate without our openssl.cnf section, so the keygate.conf
    # comes from OPENSSL_CONF (site.cnf), which also loads default then keygate
    proc = subprocess.Popen([HAPROXY, "-db", "-f", str(cfg)], env=dict(os.environ, **site.env),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_serving(proc, port, cert)

        def one(i):
            tls = ["--tlsv1.3"] if i % 2 else ["--tlsv1.2", "--tls-max", "1.2"]
            return curl(port, cert, *tls, timeout=30)

        with ThreadPoolExecutor(max_workers=16) as pool:
            results = list(pool.map(one, range(100)))
        failures = [r.stderr for r in results if r.returncode != 0 or r.stdout != PAGE]
        assert not failures, failures[:3]
        assert proc.poll() is None
    finally:
        if proc.poll() is None:
            proc.terminate()
        out = proc.communicate(timeout=15)[0].decode()
    assert attest_count(kbs_stack) - before == 1, out
    assert transfer_count(kbs_stack) - xfer == 1, out


def test_haproxy_check_needs_the_keygate_config(site, kbs_stack, build_dir):
    """ssl-provider alone loads keygate with no configuration: haproxy -c refuses the key with a
    keygate error. With OPENSSL_CONF it passes, with or without the ssl-provider lines."""
    d, cert, crt = haproxy_files(site, "p256", "bundle")
    cfg = d / "haproxy.cfg"
    text = HAPROXY_CFG.format(provdir=build_dir / "provider", port=free_port(), crt=crt, page=PAGE)
    cfg.write_text(text)
    r = run([HAPROXY, "-c", "-f", str(cfg)], env={"OPENSSL_CONF": "/dev/null"})
    assert r.returncode != 0, r.stdout + r.stderr
    assert "No Private Key found" in r.stderr and "keygate" in r.stderr and "no KBS URL" in r.stderr, r.stderr
    r = run([HAPROXY, "-c", "-f", str(cfg)], env=site.env)
    assert r.returncode == 0, r.stdout + r.stderr
    cfg.write_text("".join(l + "\n" for l in text.splitlines() if "ssl-provider" not in l))
    r = run([HAPROXY, "-c", "-f", str(cfg)], env=site.env)
    assert r.returncode == 0, r.stdout + r.stderr
