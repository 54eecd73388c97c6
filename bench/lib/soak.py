# SPDX-License-Identifier: Apache-2.0
"""Shared parts of the soak scripts (bench/soak-tls, bench/soak-reload, bench/soak-release) and of
their light CI variant (tests/integration/test_soak.py).

Everything runs on 127.0.0.1: the local ITA + Intel-KBS stand-ins (tests/stack), nginx and
haproxy under temp prefixes on free ports, h2load and Python TLS clients. Every process is
started here and stopped by its PID. Nothing here knows pytest.

    site = Site.create(build_dir, workdir)        # own stack (bench) ...
    site = Site(build_dir, workdir, local_stack)  # ... or a running one (tests)
    ngx = Nginx(site, workers=2); ngx.start()
    result = h2load(ngx.url, handshakes=10000)
    ngx.stop(); site.close()
"""
import datetime
import ipaddress
import json
import os
import pathlib
import re
import resource
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time

REPO = pathlib.Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec, rsa  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402

from tests.stack.fixtures import LocalStack  # noqa: E402
from tests.stack.kbs_fixture import create_policy, kbs_admin_token, register_key, start_kbs  # noqa: E402

NGINX = "/usr/sbin/nginx"
HAPROXY = "/usr/sbin/haproxy"
H2LOAD = "/usr/bin/h2load"
PAGE = "served by keygate"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(cmd, env=None, timeout=120, **kw):
    full = dict(os.environ)
    full.pop("KEYGATE_DEBUG", None)
    full.update(env or {})
    return subprocess.run([str(c) for c in cmd], env=full, capture_output=True, text=True, timeout=timeout, **kw)


# ------------------------------------------------------------------------------------ the site


def new_key(kind):
    if kind == "p256":
        return ec.generate_private_key(ec.SECP256R1())
    if kind.startswith("rsa"):
        return rsa.generate_private_key(public_exponent=65537, key_size=int(kind[3:]))
    raise ValueError(kind)


def self_signed(key):
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    san = x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=2)).add_extension(san, critical=False)
            .sign(key, hashes.SHA256()))


class Site:
    """The stack (ITA + KBS), a keygate.conf for the sim adapter, an openssl.cnf loading
    keygate.so with it, and keys registered in the KBS with their references and certificates.
    The private keys stay in this (test driver) process only to make the certificates."""

    def __init__(self, build_dir, workdir, stack, own_stack=False, conf_overrides=None):
        self.build = pathlib.Path(build_dir).resolve()
        self.keygate = self.build / "cli" / "keygate"
        self.dir = pathlib.Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.stack = stack
        self.own_stack = own_stack
        if "kbs" not in stack.services:
            start_kbs(stack)
        self.conf = self.dir / "keygate.conf"
        self.write_conf(**(conf_overrides or {}))
        self.cnf = self.dir / "openssl.cnf"
        self.cnf.write_text(
            "openssl_conf = openssl_init\nconfig_diagnostics = 1\n[openssl_init]\nproviders = provider_sect\n"
            "[provider_sect]\ndefault = default_sect\nkeygate = keygate_sect\n[default_sect]\nactivate = 1\n"
            f"[keygate_sect]\nmodule = {self.build / 'provider' / 'keygate.so'}\nactivate = 1\n"
            f"config = {self.conf}\n")
        self.env = {"OPENSSL_CONF": str(self.cnf)}
        self.keys = {}

    @classmethod
    def create(cls, build_dir, workdir, **kw):
        """A site on its own new stack (state dir under workdir; takes ~10 s of key generation)."""
        stack = LocalStack(str(pathlib.Path(workdir) / "stack")).init()
        stack.start_ita()
        return cls(build_dir, workdir, stack, own_stack=True, **kw)

    def write_conf(self, **overrides):
        state = pathlib.Path(self.stack.state_dir)
        ita = self.stack.services["ita"].url
        keys = {"adapter": "sim", "ita_api_url": ita, "ita_base_url": ita,
                "ita_api_key_file": state / "ita-api-key", "ita_trust_anchor": state / "ita-root-ca.pem",
                "tls_ca_file": state / "tls-ca.pem", "sim_pck_key": state / "sim-pck.key",
                "sim_pck_chain": state / "sim-pck-chain.pem", "kbs_url": self.stack.services["kbs"].url,
                "kbs_type": "intel"}
        keys.update(overrides)
        self.conf.write_text("".join(f"{k} = {v}\n" for k, v in keys.items() if v is not None))

    def add_key(self, name, kind="p256"):
        """Registers a new key in the KBS; writes {name}.ref.pem, {name}.cert.pem and a haproxy
        bundle {name}.bundle.pem (certificate + reference). Returns the key id."""
        key = new_key(kind)
        kbs = self.stack.services["kbs"].url
        admin = kbs_admin_token(kbs, self.stack.state_dir)
        policy = create_policy(kbs, admin, {"enforce_tcb_upto_date": False})
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        key_id = register_key(kbs, admin, pem, policy)
        pub = self.dir / f"{name}.pub.pem"
        pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                      serialization.PublicFormat.SubjectPublicKeyInfo))
        ref = self.dir / f"{name}.ref.pem"
        r = run([self.keygate, "-c", self.conf, "ref", "create", "--key-id", key_id, "--pubkey", pub, "-o", ref])
        if r.returncode != 0:
            raise RuntimeError(f"keygate ref create: {r.stderr}")
        cert = self.dir / f"{name}.cert.pem"
        cert.write_bytes(self_signed(key).public_bytes(serialization.Encoding.PEM))
        (self.dir / f"{name}.bundle.pem").write_text(cert.read_text() + ref.read_text())
        self.keys[name] = {"id": key_id, "ref": ref, "cert": cert, "pub": pub,
                           "bundle": self.dir / f"{name}.bundle.pem", "kind": kind, "private": key}
        return key_id

    def plain_key(self, name):
        """For control runs only: the key as an ordinary PEM file ({name}.plain.key, 0600) and a
        haproxy bundle with it ({name}.plain.bundle.pem). Returns the key file."""
        k = self.keys[name]
        path = self.dir / f"{name}.plain.key"
        pem = k["private"].private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption())
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        bundle = self.dir / f"{name}.plain.bundle.pem"
        fd = os.open(bundle, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(k["cert"].read_bytes() + pem)
        k["plain"], k["plain_bundle"] = path, bundle
        return path

    def requests(self, service):
        return self.stack.requests(service) if service in self.stack.services else []

    def count(self, service, pattern):
        return sum(1 for q in self.requests(service) if re.search(pattern, q["path"]))

    def close(self):
        if self.own_stack:
            self.stack.stop_all()


# ------------------------------------------------------------------------------------ processes


def rss_kb(pid):
    """Resident set size of a process in KiB (VmRSS), or None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def children(pid):
    """PIDs whose parent is pid (the workers of an nginx master)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(entry))
    return sorted(out)


class Background:
    """A daemon thread running self._loop() while the with-block runs; self._stop tells the
    loop to end (it waits on it between rounds)."""

    def __init__(self):
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self):
        raise NotImplementedError

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


class RssSampler(Background):
    """Samples VmRSS of a set of processes (a function returning {label: pid}) every period
    seconds in a thread; mark(name) records a labelled snapshot."""

    def __init__(self, procs, period=0.25):
        self.procs, self.period = procs, period
        self.samples = []  # (t, {label: kB})
        self.marks = {}
        super().__init__()

    def snapshot(self):
        return {label: rss_kb(pid) for label, pid in self.procs().items()}

    def mark(self, name):
        self.marks[name] = self.snapshot()
        return self.marks[name]

    def _loop(self):
        t0 = time.monotonic()
        while not self._stop.is_set():
            self.samples.append((round(time.monotonic() - t0, 2), self.snapshot()))
            self._stop.wait(self.period)

    def peak(self):
        peak = {}
        for _, snap in self.samples:
            for label, kb in snap.items():
                if kb is not None:
                    peak[label] = max(peak.get(label, 0), kb)
        return peak


def handshake(port, cafile, path="/", timeout=5):
    """One new TLS connection (certificate verified against cafile) with one HTTP/1.1 GET;
    returns the response body, raises on any failure."""
    ctx = ssl.create_default_context(cafile=str(cafile))
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"bad response: {head[:80]!r}")
    return body.decode()


class HandshakeLoop(Background):
    """A client thread doing one new verified TLS connection + GET after another until
    stopped; counts successes and keeps every failure (time, error)."""

    def __init__(self, port, cafile, pause=0.0):
        self.port, self.cafile, self.pause = port, cafile, pause
        self.ok, self.failures = 0, []
        super().__init__()

    def _loop(self):
        while not self._stop.is_set():
            try:
                if PAGE not in handshake(self.port, self.cafile):
                    raise RuntimeError("unexpected page")
                self.ok += 1
            except Exception as e:  # every failure is a finding: keep it
                self.failures.append((time.time(), repr(e)))
            if self.pause:
                self._stop.wait(self.pause)


def wait_for(predicate, timeout, what, period=0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(period)


class Nginx:
    """nginx 1.22, master + workers, foreground (daemon off) under a prefix in the site dir;
    full handshakes only (no session cache, no tickets); access log with $ssl_session_reused."""

    def __init__(self, site, key, workers=2, name="nginx", http2=False, plain=False):
        self.site = site
        self.pfx = site.dir / name
        self.pfx.mkdir(exist_ok=True)
        self.port = free_port()
        self.workers_n, self.http2 = workers, http2
        self.conf = self.pfx / "nginx.conf"
        self.errlog = self.pfx / "error.log"
        self.accesslog = self.pfx / "access.log"
        self.plain = plain
        self.set_key(key)
        self.proc = None

    @property
    def url(self):
        return f"https://127.0.0.1:{self.port}/"

    def set_key(self, key):
        """Writes the config for the site key `key` (a name of site.keys); a running nginx
        picks it up on reload()."""
        k = self.site.keys[key]
        self.cert = k["cert"]
        p = self.pfx
        self.conf.write_text(
            f"daemon off;\nmaster_process on;\nworker_processes {self.workers_n};\n"
            f"pid {p}/nginx.pid;\nerror_log {p}/error.log info;\n"
            "events { worker_connections 1024; }\n"
            "http {\n"
            "  log_format hs '$connection $ssl_protocol $ssl_session_reused $status';\n"
            f"  access_log {p}/access.log hs;\n"
            f"  client_body_temp_path {p}/body; proxy_temp_path {p}/proxy; fastcgi_temp_path {p}/fastcgi;\n"
            f"  uwsgi_temp_path {p}/uwsgi; scgi_temp_path {p}/scgi;\n"
            "  server {\n"
            f"    listen 127.0.0.1:{self.port} ssl{' http2' if self.http2 else ''};\n"
            f"    ssl_certificate     {k['cert']};\n"
            f"    ssl_certificate_key {k['plain'] if self.plain else k['ref']};\n"
            "    ssl_protocols TLSv1.2 TLSv1.3;\n"
            "    ssl_session_cache off; ssl_session_tickets off;\n"
            "    keepalive_timeout 0;\n"
            f"    location / {{ default_type text/plain; return 200 \"{PAGE}\\n\"; }}\n"
            "  }\n"
            "}\n")

    def cmd(self, *extra):
        return [NGINX, "-e", self.errlog, "-p", self.pfx, "-c", self.conf, *extra]

    def start(self, timeout=60):
        self.proc = subprocess.Popen([str(c) for c in self.cmd()], env=dict(os.environ, **self.site.env),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

        def serving():
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited with {self.proc.returncode}: {self.log()}")
            try:
                return handshake(self.port, self.cert)
            except (OSError, ssl.SSLError, RuntimeError):
                return None
        wait_for(serving, timeout, "nginx serving")
        wait_for(lambda: len(self.workers()) == self.workers_n, timeout, "nginx workers")
        return self

    def workers(self):
        return children(self.proc.pid)

    def procs(self):
        out = {"master": self.proc.pid}
        out.update({f"worker{i}": pid for i, pid in enumerate(self.workers())})
        return out

    def log(self):
        return self.errlog.read_bytes().decode("utf-8", "replace") if self.errlog.exists() else ""

    def reload(self):
        self.proc.send_signal(signal.SIGHUP)

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)  # graceful shutdown of the master we started
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None and self.proc.stderr:
            self.proc.stderr.close()


class Haproxy:
    """haproxy 2.6 with nbthread threads, keygate via ssl-provider + OPENSSL_CONF, the site key's
    bundle (certificate + reference); no session cache, no tickets (full handshakes)."""

    def __init__(self, site, key, threads=2, name="haproxy", plain=False):
        self.site = site
        self.dir = site.dir / name
        self.dir.mkdir(exist_ok=True)
        self.port = free_port()
        k = site.keys[key]
        self.cert = k["cert"]
        self.cfg = self.dir / "haproxy.cfg"
        self.cfg.write_text(
            "global\n"
            f"    ssl-provider-path {site.build / 'provider'}\n    ssl-provider keygate\n    ssl-provider default\n"
            f"    nbthread {threads}\n    tune.ssl.cachesize 0\n    maxconn 4096\n"
            f"    stats socket {self.dir / 'stats.sock'} mode 600 level user\n"
            "    log stdout format raw local0 info\n"
            "defaults\n    mode http\n    log global\n    option httpclose\n"
            "    log-format \"hs %[ssl_fc_is_resumed] %ST\"\n"
            "    timeout connect 5s\n    timeout client 10s\n    timeout server 10s\n"
            "frontend fe\n"
            f"    bind 127.0.0.1:{self.port} ssl crt {k['plain_bundle'] if plain else k['bundle']} ssl-min-ver TLSv1.2 no-tls-tickets alpn h2,http/1.1\n"
            f"    http-request return status 200 content-type text/plain string \"{PAGE}\\n\"\n")
        self.out = self.dir / "haproxy.out"
        self.proc = None

    @property
    def url(self):
        return f"https://127.0.0.1:{self.port}/"

    def start(self, timeout=60):
        with open(self.out, "wb") as out:
            self.proc = subprocess.Popen([HAPROXY, "-db", "-f", str(self.cfg)], env=dict(os.environ, **self.site.env),
                                         stdout=out, stderr=subprocess.STDOUT)

        def serving():
            if self.proc.poll() is not None:
                raise RuntimeError(f"haproxy exited with {self.proc.returncode}: {self.out.read_text()}")
            try:
                return handshake(self.port, self.cert)
            except (OSError, ssl.SSLError, RuntimeError):
                return None
        wait_for(serving, timeout, "haproxy serving")
        return self

    def procs(self):
        return {"haproxy": self.proc.pid}

    def info(self):
        """haproxy's `show info` counters (CumSslConns: TLS connections accepted so far)."""
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(self.dir / "stats.sock"))
            s.sendall(b"show info\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        return dict(l.split(": ", 1) for l in data.decode().splitlines() if ": " in l)

    def log_counts(self):
        """From haproxy's log: requests, full handshakes (ssl_fc_is_resumed 0), statuses 200."""
        lines = [l.split() for l in self.out.read_text(errors="replace").splitlines() if l.startswith("hs ")]
        return {"requests": len(lines), "full_handshakes": sum(1 for l in lines if l[1] == "0"),
                "status_200": sum(1 for l in lines if l[2] == "200")}

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# ------------------------------------------------------------------------------------ h2load

H2_REQ = re.compile(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                    r"(\d+) errored, (\d+) timeout")
H2_STATUS = re.compile(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx")
H2_FINISHED = re.compile(r"finished in ([\d.]+)(m?s)")


def h2load(url, handshakes, clients=16, threads=2, timeout=900):
    """h2load over HTTP/1.1 with `clients` concurrent clients and `handshakes` requests in all.
    The servers here close the connection after every response (nginx keepalive_timeout 0,
    haproxy option httpclose) and h2load then reconnects, so every request is a new connection
    and, with no session cache or tickets on the server, a full TLS handshake; the servers' logs
    prove it (parse_access_log, Haproxy.log_counts). Returns the parsed counters."""
    cmd = [H2LOAD, "--h1", "-n", handshakes, "-c", clients, "-t", threads, "-T", "10s", "-N", "10s", url]
    t0 = time.monotonic()
    r = run(cmd, timeout=timeout)
    wall = time.monotonic() - t0
    m, s = H2_REQ.search(r.stdout), H2_STATUS.search(r.stdout)
    if not m or not s:
        raise RuntimeError(f"h2load output not understood (exit {r.returncode}):\n{r.stdout}\n{r.stderr}")
    total, started, done, ok, failed, errored, tmo = map(int, m.groups())
    return {"cmd": " ".join(map(str, cmd)), "exit": r.returncode, "total": total, "done": done, "succeeded": ok,
            "failed": failed, "errored": errored, "timeout": tmo, "status_2xx": int(s.group(1)),
            "wall_s": round(wall, 2), "rate_per_s": round(ok / wall, 1) if wall else 0.0,
            "stdout": r.stdout}


def parse_access_log(path):
    """Counts of the nginx access log written with the `hs` format: requests, distinct
    connections ($connection), full handshakes ($ssl_session_reused == "."), statuses 200."""
    lines = [l.split() for l in (path.read_text().splitlines() if path.exists() else [])]
    return {"requests": len(lines), "connections": len({l[0] for l in lines}),
            "full_handshakes": sum(1 for l in lines if l[2] == "."),
            "status_200": sum(1 for l in lines if l[3] == "200")}


def mib(kb):
    return None if kb is None else round(kb / 1024, 1)


def dump_json(path, obj):
    pathlib.Path(path).write_text(json.dumps(obj, indent=2, default=str) + "\n")


# ------------------------------------------------------------------------------------ releases


def concurrent_releases(site, key, n, timeout=300):
    """Starts n `keygate release --ref` processes at once and waits for all of them. Returns
    per-process results and what the stand-ins saw: the nonce digests the ITA issued and the
    ones its attests consumed (tests/stack/ita.py logs nonce_sha256), and the KBS transfers."""
    k = site.keys[key]
    expected_pub = k["pub"].read_text()
    site.stack.clear_requests("ita")
    site.stack.clear_requests("kbs")
    env = dict(os.environ)
    env.pop("KEYGATE_DEBUG", None)
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    procs = [(subprocess.Popen([str(site.keygate), "-c", str(site.conf), "release", "-v", "--ref", str(k["ref"])],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True), time.monotonic())
             for _ in range(n)]
    results = []
    for p, started in procs:
        out, err = p.communicate(timeout=timeout)
        steps = {m.group(1): float(m.group(2)) for m in re.finditer(r"^  ([a-z-]+)\s+([0-9.]+) ms", err, re.M)}
        results.append({"rc": p.returncode, "ok": p.returncode == 0 and out == expected_pub,
                        "stderr": err.strip()[-300:], "done_s": round(time.monotonic() - t0, 2), "steps_ms": steps})
    wall = time.monotonic() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)  # the n keygate processes, all reaped
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    ita = site.requests("ita")
    issued = [q.get("nonce_sha256") for q in ita if q["path"].endswith("/nonce") and q["status"] == 200]
    consumed = [q.get("nonce_sha256") for q in ita if q["path"].endswith("/attest") and q["status"] == 200]
    transfers = [q for q in site.requests("kbs") if q["path"].endswith("/transfer")]
    done = sorted(r["done_s"] for r in results)
    step_names = [name for name in results[0]["steps_ms"]] if results else []
    medians = {}
    for name in step_names:
        v = sorted(r["steps_ms"].get(name, 0.0) for r in results)
        medians[name] = v[len(v) // 2]
    return {
        "step_median_ms": medians,
        "n": n, "succeeded": sum(r["ok"] for r in results), "wall_s": round(wall, 2),
        "keygate_cpu_s": round(cpu, 2),
        "done_s": {"first": done[0], "median": done[len(done) // 2], "last": done[-1]},
        "failures": [r for r in results if not r["ok"]],
        "ita_nonces_issued": len(issued), "ita_nonces_issued_distinct": len(set(issued)),
        "ita_attests_ok": len(consumed), "ita_attest_nonces_distinct": len(set(consumed)),
        "attest_nonces_all_issued": set(consumed) <= set(issued),
        "ita_non_200": sorted({(q["path"], q["status"]) for q in ita if q["status"] != 200}),
        "kbs_transfers_ok": sum(1 for q in transfers if q["status"] == 200),
        "kbs_non_200": sorted({q["status"] for q in transfers if q["status"] != 200}),
    }


def check_releases(r):
    """The problems in a concurrent_releases result (empty = all good)."""
    problems = []
    if r["succeeded"] != r["n"]:
        problems.append(f"{r['n'] - r['succeeded']} of {r['n']} releases failed: {r['failures'][:3]}")
    if r["ita_attests_ok"] != r["n"] or r["ita_attest_nonces_distinct"] != r["n"]:
        problems.append(f"{r['ita_attests_ok']} attests for {r['n']} releases with "
                        f"{r['ita_attest_nonces_distinct']} distinct nonces: a nonce was shared")
    if not r["attest_nonces_all_issued"]:
        problems.append("an attest used a nonce the ITA never issued")
    if None in (r["ita_attest_nonces_distinct"], r["ita_nonces_issued_distinct"]):
        problems.append("the ITA request log has no nonce digests")
    if r["kbs_transfers_ok"] != r["n"]:
        problems.append(f"{r['kbs_transfers_ok']} KBS transfers for {r['n']} releases")
    return problems


# ------------------------------------------------------------------------------------ TLS soak


def tls_soak(site, kind, server, handshakes, rounds, clients, slack_kib, log, keygate=True):
    """Starts server, warms up, runs the rounds, stops it; returns the figures and problems."""
    attests0 = site.count("ita", r"/attest$")
    xfer0 = site.count("kbs", r"/transfer$")
    t0 = time.monotonic()
    server.start()
    start_s = time.monotonic() - t0
    warm = h2load(server.url, 200, clients=clients)
    ssl0 = int(server.info()["CumSslConns"]) if kind == "haproxy" else None
    per_round = handshakes // rounds
    steady_from = f"round{max(1, rounds // 2)}"
    runs = []
    label = f"{kind} ({'keygate key' if keygate else 'control: plain key file'})"
    with RssSampler(server.procs) as sampler:
        before = sampler.mark("before")
        for i in range(rounds):
            runs.append(h2load(server.url, per_round, clients=clients))
            snap = sampler.mark(f"round{i + 1}")
            r = runs[-1]
            log(f"  {label} round {i + 1}/{rounds}: {r['succeeded']}/{r['total']} ok, failed {r['failed']}, "
                f"errored {r['errored']}, timeout {r['timeout']}, {r['rate_per_s']} handshakes/s; RSS "
                + ", ".join(f"{k} {mib(v)} MiB" for k, v in snap.items()))
        time.sleep(1)
        after = sampler.mark("after")
    if kind == "nginx":
        conns = parse_access_log(server.accesslog)
    else:
        conns = dict(server.log_counts(), tls_connections=int(server.info()["CumSslConns"]) - ssl0)
    server.stop()
    total_ok = sum(r["succeeded"] for r in runs)
    bad = sum(r["failed"] + r["errored"] + r["timeout"] for r in [warm, *runs])
    mid = sampler.marks[steady_from]
    growth = {k: (after[k] - mid[k]) if after.get(k) and mid.get(k) else None for k in after}
    res = {
        "server": kind, "keygate": keygate, "handshakes": per_round * rounds, "clients": clients,
        "succeeded": total_ok, "failed_handshakes": bad, "warmup": warm["succeeded"], "start_s": round(start_s, 2),
        "rate_per_s": round(total_ok / sum(r["wall_s"] for r in runs), 1),
        "attests": site.count("ita", r"/attest$") - attests0, "transfers": site.count("kbs", r"/transfer$") - xfer0,
        "rss_kib": {"before": before, **{f"round{i + 1}": sampler.marks[f"round{i + 1}"] for i in range(rounds)},
                    "after": after, "peak": sampler.peak()},
        "steady_from": steady_from, "rss_growth_kib_steady": growth, "connections": conns,
        "h2load_cmd": runs[0]["cmd"],
    }
    problems = []
    if bad or total_ok != per_round * rounds:
        problems.append(f"{bad} failed handshakes, {total_ok} of {per_round * rounds} succeeded")
    expected_releases = 1 if keygate else 0
    if res["attests"] != expected_releases or res["transfers"] != expected_releases:
        problems.append(f"expected {expected_releases} release(s), saw {res['attests']} attests and "
                        f"{res['transfers']} transfers")
    # every request was a new connection with a full handshake (warm-up included; nginx also logs
    # the readiness probe of start())
    if kind == "nginx":
        want = total_ok + warm["succeeded"] + 1
        if not (conns["requests"] == conns["connections"] == conns["full_handshakes"] == conns["status_200"] == want):
            problems.append(f"access log {conns}, expected {want} requests = connections = full handshakes")
    else:
        want = total_ok
        if conns["tls_connections"] != want or conns["full_handshakes"] != conns["requests"]:
            problems.append(f"haproxy counted {conns}, expected {want} TLS connections, no resumption")
    if keygate:
        for k, g in growth.items():
            if g is None or g > slack_kib:
                problems.append(f"RSS of {k} grew by {g} KiB from the end of {steady_from} to the end (> {slack_kib})")
    res["problems"] = problems
    return res


# ------------------------------------------------------------------------------------ reload soak


def reload_and_wait(ngx, timeout=30):
    """SIGHUP; waits until the master runs a full set of workers none of which existed before
    and the old ones have exited. Returns (seconds, new worker PIDs)."""
    old = set(ngx.workers())
    t0 = time.monotonic()
    ngx.reload()
    wait_for(lambda: (lambda now: len(now) == ngx.workers_n and not now & old)(set(ngx.workers())),
                  timeout, "new workers after reload")
    return time.monotonic() - t0, ngx.workers()


def reload_soak(site, up, down, workers, kind, log):
    site.add_key("site", kind)
    site.add_key("rotated", kind)
    ngx = Nginx(site, "site", workers=workers, http2=False)
    problems = []
    result = {"up": up, "down": down, "workers": workers}
    try:
        ngx.start()
        attests0, xfer0 = site.count("ita", r"/attest$"), site.count("kbs", r"/transfer$")
        rss0 = rss_kb(ngx.proc.pid)
        with HandshakeLoop(ngx.port, ngx.cert) as client:
            time.sleep(0.5)
            times_up = []
            for i in range(up):
                dt, _ = reload_and_wait(ngx)
                times_up.append(dt)
            ita_before_down = len(site.requests("ita"))
            kbs_before_down = len(site.requests("kbs"))
            result["requests_during_up_reloads"] = {
                "ita_attest": site.count("ita", r"/attest$") - attests0,
                "kbs_transfer": site.count("kbs", r"/transfer$") - xfer0}
            log(f"{up} reloads with the stack up: {min(times_up):.2f}-{max(times_up):.2f} s each; "
                f"client {client.ok} ok, {len(client.failures)} failed; "
                f"ITA attests {result['requests_during_up_reloads']['ita_attest']}, "
                f"KBS transfers {result['requests_during_up_reloads']['kbs_transfer']}")
            site.stack.stop("kbs")
            site.stack.stop("ita")
            ok_at_down = client.ok
            times_down = []
            for i in range(down):
                dt, _ = reload_and_wait(ngx)
                times_down.append(dt)
            log(f"{down} reloads with the ITA and KBS stopped: {min(times_down):.2f}-{max(times_down):.2f} s each; "
                f"client {client.ok - ok_at_down} ok meanwhile, {len(client.failures)} failed in all")
            # a key rotation while the stack is down: the reload must fail and change nothing
            before = ngx.workers()
            log_len = len(ngx.log())
            ngx.set_key("rotated")
            t0 = time.monotonic()
            ngx.reload()
            wait_for(lambda: "cannot load certificate key" in ngx.log()[log_len:], 60, "the rotation to fail")
            rotate_s = time.monotonic() - t0
            time.sleep(1)
            failed_line = next(l for l in ngx.log()[log_len:].splitlines() if "cannot load certificate key" in l)
            if ngx.workers() != before or ngx.proc.poll() is not None:
                problems.append(f"the failed rotation changed the workers {before} -> {ngx.workers()}")
            # the master's attestation session (token valid >= 30 s more) is reused for the new
            # key, so the first step to need the network is the transfer; with the token expired
            # it would be the nonce
            if not re.search(r"keygate: key " + site.keys["rotated"]["id"] + r": (transfer|nonce): ", failed_line):
                problems.append(f"the failed rotation does not name keygate's step: {failed_line}")
            log(f"rotation to a new key with the stack down: failed in {rotate_s:.2f} s, workers unchanged: "
                f"{ngx.workers() == before}; nginx logged: {failed_line.split('[emerg]')[-1].strip()[:300]}")
            # back to the released key: works again with the stack still down
            ngx.set_key("site")
            dt, _ = reload_and_wait(ngx)
            log(f"reload back to the released key (stack still down): {dt:.2f} s")
            time.sleep(0.5)
        rss1 = rss_kb(ngx.proc.pid)
        result.update({
            "reload_s_up": [round(t, 3) for t in times_up], "reload_s_down": [round(t, 3) for t in times_down],
            "rotation_fail_s": round(rotate_s, 3), "rotation_error": failed_line.split("[emerg]")[-1].strip(),
            "client_ok": client.ok, "client_failures": client.failures,
            "master_rss_kib": {"before": rss0, "after": rss1},
            "ita_requests_before_down": ita_before_down, "kbs_requests_before_down": kbs_before_down,
        })
        if client.failures:
            problems.append(f"{len(client.failures)} client failures, first: {client.failures[:3]}")
        if any(result["requests_during_up_reloads"].values()):
            problems.append(f"reloads went to the stack: {result['requests_during_up_reloads']}")
        log(f"client: {client.ok} handshakes + GETs, {len(client.failures)} failures; master RSS "
            f"{mib(rss0)} -> {mib(rss1)} MiB over {up + down + 2} reloads")
    finally:
        ngx.stop()
    result["problems"] = problems
    return result
