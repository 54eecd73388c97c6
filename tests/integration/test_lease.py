# SPDX-License-Identifier: Apache-2.0
"""Key leases (issue 12): background re-attestation before a lease ends, revocation that wipes
the key, on_revoke = keep, and the transient-failure retry path, with `openssl s_server` through
the provider against the local stack. A memory scan of the server (/proc/PID/mem over its
readable mappings) proves the wipe: it finds the RSA prime p before the revocation (the positive
control) and no copy after it, neither big-endian nor as little-endian BIGNUM limbs."""
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import time

import pytest

from conftest import kbs_conf, run
from kglib import kbs2026
from kglib import (HAPROXY, HAPROXY_CFG, PAGE, Nginx, free_port, new_key, openssl_cnf,  # noqa: F401 (fixture)
                   p11_check, private_needles, pub_pem, read_log, register, scan_memory, self_signed)
from tests.stack.kbs_fixture import (create_policy, delete_key, kbs_admin_token, kbs_request,
                                     set_key_policy)

OTHER_MRTD = "ab" * 48  # not the simulated TD's MRTD


# ------------------------------------------------------------------------------- helpers

def scan_until_clean(pid, needles, within_s=3.0):
    """The needles still found after a wipe, polling for up to within_s: the last reference to a
    wiped key may belong to an operation that ends just after the wipe (the key is freed, and
    zeroized, with it)."""
    deadline = time.monotonic() + within_s
    while True:
        time.sleep(0.3)
        found = scan_memory(pid, needles)
        if not found or time.monotonic() > deadline:
            return found


class LeaseSite:
    """One key (RSA-2048 unless kind says) registered in the KBS, its reference, certificate, and a
    lease config."""

    def __init__(self, keygate_bin, build_dir, stack, tmp, kbs="kbs", kind="rsa2048", **conf):
        self.stack, self.tmp, self.kbs = stack, tmp, kbs
        self.key = new_key(kind)
        self.key_id = register(stack, self.key, kbs=kbs)
        kbs = stack.services[kbs].url
        self.policy = json.loads(kbs_request(kbs, "GET", f"/keys/{self.key_id}", None, {
            "Accept": "application/json",
            "Authorization": "Bearer " + kbs_admin_token(kbs, stack.state_dir)})[2])["transfer_policy_id"]
        pub = tmp / "k.pub.pem"
        pub.write_text(pub_pem(self.key))
        self.conf = kbs_conf(stack, tmp / "keygate.conf", kbs_url=kbs, **conf)
        self.cnf = openssl_cnf(build_dir, tmp / "openssl.cnf", self.conf)
        self.ref = tmp / "k.ref.pem"
        r = run([keygate_bin, "-c", str(self.conf), "ref", "create", "--key-id", self.key_id, "--pubkey",
                 str(pub), "-o", str(self.ref)])
        assert r.returncode == 0, r.stderr
        self.log = tmp / "keygate.log"
        self.env = dict(os.environ, OPENSSL_CONF=str(self.cnf), KEYGATE_DEBUG=f"{self.log}:2")
        if os.environ.get("KEYGATE_ASAN_PRELOAD"):
            self.env["LD_PRELOAD"] = os.environ["KEYGATE_ASAN_PRELOAD"]
        self.cert = tmp / "k.cert.pem"
        r = run(["openssl", "req", "-new", "-x509", "-key", str(self.ref), "-subj", "/CN=localhost", "-days", "1",
                 "-addext", "subjectAltName=IP:127.0.0.1", "-out", str(self.cert)], env=self.env)
        assert r.returncode == 0, r.stderr
        self.log.write_text("")
        self.srv = None

    def start_server(self):
        self.port = free_port()
        self.out = open(self.tmp / "s_server.out", "w")
        self.srv = subprocess.Popen(["openssl", "s_server", "-accept", f"127.0.0.1:{self.port}", "-cert",
                                     str(self.cert), "-key", str(self.ref), "-www", "-tls1_3"], env=self.env,
                                    stdout=self.out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while not self.handshake():
            assert self.srv.poll() is None and time.monotonic() < deadline, self.server_output()
            time.sleep(0.1)

    def stop(self):
        if self.srv is not None:
            self.srv.terminate()
            self.srv.wait(10)
            self.out.close()

    def server_output(self):
        return (self.tmp / "s_server.out").read_text() + "\n--- log\n" + self.log.read_text()[-3000:]

    def handshake(self):
        """One full TLS 1.3 handshake (no resumption) and an HTTP GET; True when it worked."""
        ctx = ssl.create_default_context(cafile=str(self.cert))
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=10) as raw:
                with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                    tls.sendall(b"GET / HTTP/1.0\r\n\r\n")
                    return re.match(rb"HTTP/1\.[01] 200 ", tls.recv(64)) is not None
        except (OSError, ssl.SSLError):
            return False

    def events(self, word):
        return len(re.findall(rf"lease: key {self.key_id} {word}", self.log.read_text()))

    def attests(self):
        return sum(1 for q in self.stack.requests("ita") if q["path"].endswith("/attest"))

    def revoke(self):
        """The admin route: bind the key to a policy this TD's MRTD does not match."""
        kbs = self.stack.services["kbs"].url
        admin = kbs_admin_token(kbs, self.stack.state_dir)
        other = create_policy(kbs, admin, {"mrtd": [OTHER_MRTD], "enforce_tcb_upto_date": False})
        set_key_policy(kbs, admin, self.key_id, other)

    def restore(self):
        kbs = self.stack.services["kbs"].url
        set_key_policy(kbs, kbs_admin_token(kbs, self.stack.state_dir), self.key_id, self.policy)


@pytest.fixture
def lease_site(keygate_bin, build_dir, kbs_stack, tmp_path, request):
    conf = dict(getattr(request, "param", {}))
    if conf.get("kbs") == "kbs-2026":
        kbs2026(kbs_stack)
    site = LeaseSite(keygate_bin, build_dir, kbs_stack, tmp_path, **{"key_lease_s": 5, "refresh_before_s": 4, **conf})
    yield site
    site.stop()


def serve_until(site, done, timeout):
    """Handshakes in a loop until done() or timeout; returns (ok, failed) counts."""
    ok = failed = 0
    deadline = time.monotonic() + timeout
    while not done() and time.monotonic() < deadline:
        if site.handshake():
            ok += 1
        else:
            failed += 1
        time.sleep(0.05)
    return ok, failed


# ------------------------------------------------------------------------------- tests

def test_refreshes_keep_serving_then_revocation_wipes(lease_site):
    site = lease_site
    site.stack.clear_requests("ita")
    site.start_server()
    ok, failed = serve_until(site, lambda: site.events("refreshed") >= 10, 60)
    assert site.events("refreshed") >= 10, site.server_output()
    assert failed == 0 and ok > 50, (ok, failed)
    # one attestation per refresh (+ the first release; a refresh may be under way right now)
    # (a refresh slower than the rest of the lease, on a loaded machine, ends the lease: the next
    # handshake then waits for a new release instead of failing, which counts as one more)
    r1, rel1 = site.events("refreshed"), site.events("released")
    attests = site.attests()
    r2, rel2 = site.events("refreshed"), site.events("released")
    # (such a re-release may reuse the front end's still-valid token: no attestation of its own,
    # so the lower bound counts the first release and the refreshes, which always attest)
    assert r1 + 1 <= attests <= r2 + rel2 + 1, (r1, rel1, attests, r2, rel2)

    needles = private_needles(site.key)
    assert scan_memory(site.srv.pid, needles), "positive control: the scan must find the live key"

    site.revoke()
    t0 = time.monotonic()
    ok, failed = serve_until(site, lambda: failed_once(site), 12)
    elapsed = time.monotonic() - t0
    assert not site.handshake(), site.server_output()
    assert elapsed < 5 + 1.5, elapsed  # within one lease (plus the loop's granularity)
    log = site.log.read_text()
    assert re.search(rf"keygate: key {site.key_id} revoked by KBS at \S+Z \(step transfer, HTTP 401, "
                     r"request-id [^)]+\)", log), log[-2000:]
    # a slow refresh on a loaded machine may end a lease first ("wiped (lease ended)", then a new
    # release): what must happen exactly once is the revocation's wipe
    assert site.events(r"wiped \(revoked\)") == 1
    # the failed operations (libssl's signing attempts) carry the revocation message
    assert re.search(rf"prov_key.c:\d+: keygate: key {site.key_id} revoked by KBS at", log), log[-2000:]
    assert "no suitable signature algorithm" in (site.tmp / "s_server.out").read_text()
    # every form of p, big-endian (DER) and as BIGNUM limbs: released keys are parsed in place
    # into the secure heap, never through OpenSSL's decoder, whose DER copy was freed uncleared
    # (tests/unit/test_wrap_hygiene.c)
    assert scan_until_clean(site.srv.pid, needles) == set(), "a copy of the private key is still in memory"
    assert site.srv.poll() is None  # failing handshakes, no crash


@pytest.mark.parametrize("lease_site", [{"key_lease_s": 8, "refresh_before_s": 4},
                                        {"key_lease_s": 8, "refresh_before_s": 4, "kbs_mode": "background"}],
                         indirect=True)
def test_a_refresh_uses_a_wrapping_key_made_ahead(lease_site):
    """Issue 21 item 2: the refresh thread starts ahead of its window (here from 2 s into the
    lease; the window opens at 4 s) and generates the next wrapping key first, so the refresh
    itself does not generate one: its wrapping-key step is 0.0 ms (the key made ahead, handed over
    at once), and the log says so before the attempt."""
    site = lease_site
    site.start_server()
    serve_until(site, lambda: site.events("refreshed") >= 1, 60)
    log = site.log.read_text()
    refreshed = re.findall(rf"lease: key {site.key_id} refreshed \(\d+, in \d+ ms, wrapping key ([0-9.]+) ms\)",
                           log)
    assert len(refreshed) >= 1, site.server_output()
    assert all(ms == "0.0" for ms in refreshed), log[-3000:]
    ahead = log.index(f"lease: key {site.key_id}: next wrapping key made ahead")
    assert ahead < log.index(f"lease: key {site.key_id} refresh (attempt 1)"), log[-3000:]


def failed_once(site):
    return site.events("wiped") > 0 and not site.handshake()


@pytest.mark.parametrize("lease_site", [{"kind": "p256"}], indirect=True)
def test_prepared_signing_contexts_follow_refreshes_and_go_with_the_wipe(lease_site):
    """Issue 21: each ECDSA signature copies a signing context prepared once per key and kept in
    the key's lease. Refreshes install a new key, whose handshakes (signed through contexts
    prepared from it) keep verifying; after the revocation no handshake succeeds (no stale
    prepared context signs), and the wipe frees the prepared contexts with the key: the P-256
    scalar is gone from memory."""
    site = lease_site
    site.start_server()
    ok, failed = serve_until(site, lambda: site.events("refreshed") >= 3, 40)
    assert site.events("refreshed") >= 3, site.server_output()
    assert failed == 0 and ok > 10, (ok, failed)
    needles = private_needles(site.key)
    assert scan_memory(site.srv.pid, needles), "positive control: the scan must find the live key"

    site.revoke()
    serve_until(site, lambda: failed_once(site), 12)
    assert site.events(r"wiped \(revoked\)") == 1, site.server_output()
    assert not any(site.handshake() for _ in range(5)), site.server_output()
    assert re.search(rf"prov_key.c:\d+: keygate: key {site.key_id} revoked by KBS at", site.log.read_text())
    assert scan_until_clean(site.srv.pid, needles) == set(), "a copy of the private key is still in memory"
    assert site.srv.poll() is None


@pytest.mark.parametrize("lease_site", [{"on_revoke": "keep", "key_lease_s": 6, "refresh_before_s": 5}],
                         indirect=True)
def test_on_revoke_keep_serves_until_the_lease_ends(lease_site):
    site = lease_site
    site.start_server()
    site.revoke()
    ok, failed = serve_until(site, lambda: "on_revoke = keep" in site.log.read_text(), 10)
    assert "on_revoke = keep" in site.log.read_text(), site.server_output()
    assert failed == 0
    t_revoked = time.monotonic()
    # kept (and serving) until the lease ends, then wiped; every later handshake fails
    ok, failed = serve_until(site, lambda: site.events("wiped") > 0, 10)
    assert site.events("wiped") == 1, site.server_output()
    assert ok > 0 and time.monotonic() - t_revoked > 1.0
    assert not site.handshake()
    assert re.search(rf"prov_key.c:\d+: keygate: key {site.key_id} revoked by KBS at", site.log.read_text())


@pytest.mark.parametrize("lease_site", [{"key_lease_s": 10, "refresh_before_s": 8}], indirect=True)
def test_transient_failures_are_retried(lease_site):
    site = lease_site
    site.start_server()
    ok, failed = serve_until(site, lambda: site.events("refreshed") >= 1, 15)
    # the next refresh meets 503s (all of one release's own HTTP attempts, retry_max = 2: 3 attempts): the
    # key keeps working, the lease retries with backoff and then renews
    site.stack.set_faults("kbs", [{"route": "/transfer$", "mode": "status", "count": 3,
                                    "status": 503}])
    ok, failed = serve_until(site, lambda: site.events("refreshed") >= 2, 15)
    assert site.events("refreshed") >= 2, site.server_output()
    assert failed == 0 and ok > 0
    assert "refresh failed (transient, HTTP 503" in site.log.read_text()
    assert site.events("wiped") == 0


# a 10 s lease refreshed from 2 s on: a refresh at a flip makes two attempts (the refused one and
# a new nonce, evidence and transfer), which on a loaded 2-core machine could outlast the 4 s the
# default 5 s lease leaves it, and the lease would end (a "wiped" event) with nothing wrong
@pytest.mark.parametrize("lease_site", [{"kbs": "kbs-2026", "kbs_mode": "background", "key_lease_s": 10,
                                         "refresh_before_s": 8}], indirect=True)
def test_kbs_generation_learnt_once_and_a_flip_is_followed(lease_site):
    """Background mode against a 2026 KBS (docs/protocols/intel-kbs.md §8): the generation learnt
    at the first release (one refused empty POST) is remembered by the process, so each refresh
    is one request. The same URL then answers as v1.3.0 (a rollback: the stand-in's as_v1_3
    fault), and later as 2026 again: each flip costs one refused request inside a refresh, which
    keygate follows at once, and no handshake fails and nothing is wiped."""
    site, stack = lease_site, lease_site.stack

    def transfers(since=0):
        return [q["status"] for q in stack.requests(site.kbs) if q["path"].endswith("/transfer")][since:]

    def nonces():
        return sum(1 for q in stack.requests("ita") if q["path"].endswith("/nonce"))

    stack.clear_requests(site.kbs)  # `openssl req` made the certificate in a process of its own
    stack.clear_requests("ita")
    site.start_server()
    ok, failed = serve_until(site, lambda: site.events("refreshed") >= 2, 30)
    assert site.events("refreshed") >= 2, site.server_output()
    seen = transfers()
    assert seen[:2] == [400, 200] and seen.count(400) == 1 and set(seen[2:]) == {200}, seen
    assert nonces() == 0

    # rollback: the KBS now refuses the nonce-less request (runtime_data is no v1.3.0 field)
    n0, r0 = len(transfers()), site.events("refreshed")
    stack.set_faults(site.kbs, [{"route": "/transfer$", "mode": "as_v1_3", "count": None}])
    ok1, failed1 = serve_until(site, lambda: site.events("refreshed") >= r0 + 3, 30)
    after = transfers(n0)
    assert site.events("refreshed") >= r0 + 3, site.server_output()
    assert after.count(400) == 1 and after[-4:] == [200] * 4, after   # then nonce + release per refresh
    assert nonces() >= 2 and "asking its generation again" in site.log.read_text()

    # forward again: the empty POST is refused (400), keygate goes on without a nonce
    n1, r1 = len(transfers()), site.events("refreshed")
    stack.clear_faults(site.kbs)
    ok2, failed2 = serve_until(site, lambda: site.events("refreshed") >= r1 + 3, 30)
    back = transfers(n1)
    assert site.events("refreshed") >= r1 + 3, site.server_output()
    # one 400 per flip (two when a refresh was between its nonce and its transfer at the flip)
    assert 1 <= back.count(400) <= 2 and back[-2:] == [200, 200], back
    assert failed == failed1 == failed2 == 0 and ok + ok1 + ok2 > 0
    assert site.events("wiped") == 0 and "refresh failed" not in site.log.read_text()


# ------------------------------------------------------------------------------- PKCS#11

def test_pkcs11_lease_refresh_and_revocation(keygate_bin, build_dir, kbs_stack, tmp_path, p11_check):
    """The PKCS#11 module: signatures keep working across refreshes; after the policy change
    they fail with CKR_DEVICE_ERROR within one lease, the log names the revocation, and the EC
    scalar is gone from the process's memory (found there before)."""
    from cryptography.hazmat.primitives import serialization

    key = new_key("p256")
    key_id = register(kbs_stack, key)
    pub = tmp_path / "p.pub.pem"
    pub.write_text(pub_pem(key))
    base = kbs_conf(kbs_stack, tmp_path / "base.conf", key_lease_s=5, refresh_before_s=4)
    ref = tmp_path / "p.ref.pem"
    assert run([keygate_bin, "-c", str(base), "ref", "create", "--key-id", key_id, "--pubkey", str(pub),
                "-o", str(ref)]).returncode == 0
    cert = tmp_path / "p.crt"
    cert.write_bytes(self_signed(key).public_bytes(serialization.Encoding.PEM))
    conf = tmp_path / "keygate.conf"
    conf.write_text(base.read_text() + f"pkcs11_keys = web:{ref}:{cert}\n")
    log = tmp_path / "keygate.log"
    out = open(tmp_path / "loop.out", "w")
    proc = subprocess.Popen([p11_check, str(build_dir / "pkcs11" / "libkeygate-pkcs11.so"), "loop", "web", "16"],
                            env=dict(os.environ, KEYGATE_CONF=str(conf), KEYGATE_DEBUG=f"{log}:2"), stdout=out,
                            stderr=subprocess.STDOUT)
    try:
        def events(word):
            return len(re.findall(rf"lease: key {key_id} {word}", log.read_text())) if log.exists() else 0

        deadline = time.monotonic() + 12
        while events("refreshed") < 2 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        assert events("refreshed") >= 2, log.read_text()[-2000:]
        needles = private_needles(key)
        assert scan_memory(proc.pid, needles), "positive control: the scan must find the live key"
        kbs = kbs_stack.services["kbs"].url
        admin = kbs_admin_token(kbs, kbs_stack.state_dir)
        other = create_policy(kbs, admin, {"mrtd": [OTHER_MRTD], "enforce_tcb_upto_date": False})
        set_key_policy(kbs, admin, key_id, other)
        t0 = time.monotonic()
        while "rv=0x30" not in (tmp_path / "loop.out").read_text() and time.monotonic() - t0 < 8:
            time.sleep(0.1)
        assert time.monotonic() - t0 < 5 + 1, (tmp_path / "loop.out").read_text()
        assert scan_until_clean(proc.pid, needles) == set(), "a copy of the private key is still in memory"
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        out.close()
    lines = (tmp_path / "loop.out").read_text().split("\n")
    changes = [ln.split()[1] for ln in lines if ln.startswith("t=")]
    assert changes == ["rv=0x0", "rv=0x30"], lines  # CKR_OK until revoked, then CKR_DEVICE_ERROR
    text = log.read_text()
    assert re.search(rf"PKCS#11 C_SignInit: key 'web': keygate: key {key_id} revoked by KBS at \S+Z "
                     r"\(step transfer, HTTP 401", text), text[-2000:]
    assert events(r"wiped \(revoked\)") == 1  # (a lease that ended under load may add a plain wipe)


# ------------------------------------------------------------------------------- keygate status

def test_status_tells_whether_the_policy_still_releases(keygate_bin, build_dir, kbs_stack, tmp_path):
    site = LeaseSite(keygate_bin, build_dir, kbs_stack, tmp_path)
    kbs_stack.clear_requests("ita")
    kbs_stack.clear_requests("kbs")
    r = run([keygate_bin, "-c", str(site.conf), "status", "--ref", str(site.ref)])
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"key {site.key_id}: would be released (attestation verified, local policy met, KBS " \
                       "transfer allowed)\n"
    # it attested, and the KBS call came last
    assert site.attests() == 1
    kbs_paths = [q["path"] for q in kbs_stack.requests("kbs")]
    assert kbs_paths == [f"/kbs/v1/keys/{site.key_id}/transfer"], kbs_paths
    site.revoke()
    r = run([keygate_bin, "-c", str(site.conf), "status", "--ref", str(site.ref)])
    assert r.returncode == 16, r.stdout + r.stderr
    assert r.stdout.startswith(f"key {site.key_id}: would NOT be released: transfer: ")
    assert "HTTP 401" in r.stdout
    r = run([keygate_bin, "-c", str(site.conf), "status", "--ref", str(site.ref), "--json"])
    doc = json.loads(r.stdout)
    assert r.returncode == 16 and doc["would_release"] is False and doc["revoked"] is True, r.stdout
    assert doc["step"] == "transfer" and doc["http_status"] == 401
    # a deleted key (the other admin route) is a revocation too
    kbs = kbs_stack.services["kbs"].url
    delete_key(kbs, kbs_admin_token(kbs, kbs_stack.state_dir), site.key_id)
    r = run([keygate_bin, "-c", str(site.conf), "status", "--ref", str(site.ref), "--json"])
    doc = json.loads(r.stdout)
    assert r.returncode == 16 and doc["revoked"] is True and doc["http_status"] == 404, r.stdout
    # one-line usage errors, exit 1
    r = run([keygate_bin, "status"])
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "--ref FILE is required" in r.stderr
    r = run([keygate_bin, "-c", str(site.conf), "status", "--ref", str(tmp_path / "missing.pem")])
    assert r.returncode == 10 and r.stderr.count("\n") == 1, r.stderr
    assert "dry run" in run([keygate_bin, "status", "--help"]).stdout


# ------------------------------------------------------------------------------- nginx, haproxy

def load(site, seconds, threads=4):
    """Handshakes from several client threads for seconds; returns (ok, failed)."""
    from concurrent.futures import ThreadPoolExecutor

    def client(_):
        ok = failed = 0
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if site.handshake():
                ok += 1
            else:
                failed += 1
        return ok, failed

    with ThreadPoolExecutor(max_workers=threads) as pool:
        results = list(pool.map(client, range(threads)))
    return sum(r[0] for r in results), sum(r[1] for r in results)


def refreshes_by_pid(site):
    """pid -> number of refreshes; and whether any process ever ran two refreshes of the key at once."""
    by_pid, running, overlap = {}, {}, False
    for m in re.finditer(rf"keygate\[(\d+)\] \w+ kg_lease.c:\d+: lease: key {site.key_id} "
                         r"(refresh \(attempt 1\)|refreshed|wiped)", site.log.read_text()):
        pid, what = int(m.group(1)), m.group(2)
        if what.startswith("refresh ("):
            overlap |= running.get(pid, False)
            running[pid] = True
        else:
            running[pid] = False
            if what == "refreshed":
                by_pid[pid] = by_pid.get(pid, 0) + 1
    return by_pid, overlap


@pytest.mark.skipif(not shutil.which("nginx"), reason="nginx is needed (scripts/setup.sh installs it)")
def test_nginx_two_workers_each_refresh_under_load(lease_site, kbs_stack):

    site = lease_site
    ngx = Nginx(site, site.cert, site.ref, workers=2, env={k: site.env[k] for k in ("OPENSSL_CONF", "KEYGATE_DEBUG")})
    if os.geteuid() == 0:
        # refreshes in a worker read tls_ca_file and ita_trust_anchor (the API key was read in the
        # master, before the fork); the test stack's files are root-only, so no privilege drop here
        ngx.conf.write_text("user root;\n" + ngx.conf.read_text())
    try:
        ngx.start()
        workers = ngx.workers()
        assert len(workers) == 2
        site.port = ngx.port
        ok, failed = load(site, 12)
        assert failed == 0 and ok > 40, (ok, failed)
        by_pid, overlap = refreshes_by_pid(site)
        assert not overlap, site.log.read_text()[-3000:]
        # each worker refreshed on its own; the master (which loaded the key before forking and
        # does no private operations) never started a thread
        assert set(by_pid) == set(workers) and min(by_pid.values()) >= 2, (by_pid, workers)
        assert ngx.proc.poll() is None and ngx.workers() == workers  # no worker crashed
        # revoked: every worker fails within one lease; restoring the policy and reloading nginx
        # (the master releases anew: its own lease has ended) brings service back
        site.revoke()
        t0 = time.monotonic()
        while time.monotonic() - t0 < 8 and load(site, 0.5, threads=2)[0] > 0:
            pass
        assert time.monotonic() - t0 < 5 + 1.5 and load(site, 1, threads=2)[0] == 0, site.log.read_text()[-2000:]
        site.restore()
        ngx.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        while not site.handshake():
            assert time.monotonic() < deadline, read_log(ngx.errlog)[-2000:]
            time.sleep(0.2)
        assert load(site, 2, threads=2)[1] == 0
        assert not set(ngx.workers()) & set(workers)
    finally:
        ngx.stop()
    assert ngx.proc.returncode == 0


@pytest.mark.skipif(not shutil.which("haproxy"), reason="haproxy is needed (scripts/setup.sh installs it)")
def test_haproxy_two_threads_refresh_once_at_a_time_under_load(lease_site, kbs_stack, build_dir):

    site = lease_site
    d = site.tmp / "haproxy"
    d.mkdir()
    crt = d / "bundle.pem"
    crt.write_text(site.cert.read_text() + site.ref.read_text())
    site.port = free_port()
    cfg = d / "haproxy.cfg"
    cfg.write_text(HAPROXY_CFG.format(provdir=build_dir / "provider", port=site.port, crt=crt, page=PAGE))
    proc = subprocess.Popen([HAPROXY, "-db", "-f", str(cfg)], env=site.env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while not site.handshake():
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate(timeout=5)[0]
            time.sleep(0.1)
        ok, failed = load(site, 12, threads=6)
        assert failed == 0 and ok > 40, (ok, failed)
        by_pid, overlap = refreshes_by_pid(site)
        assert not overlap, site.log.read_text()[-3000:]
        assert list(by_pid) == [proc.pid] and by_pid[proc.pid] >= 2, by_pid
        assert proc.poll() is None
    finally:
        if proc.poll() is None:
            proc.terminate()
        proc.communicate(timeout=15)
