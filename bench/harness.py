# SPDX-License-Identifier: Apache-2.0
"""bench/ plumbing: the local stack with registered keys, nginx instances, process timing, stats.

Everything runs on 127.0.0.1 with free ports; every process started here is stopped by its PID.
Keys are generated with python3-cryptography, registered in the stack's Intel-KBS stand-in and
written both as plain PEM files (the baseline) and as keygate key references (`keygate ref
create --pubkey`, no attestation needed).
"""
import json
import os
import pathlib
import resource
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec, rsa  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402

from tests.stack.fixtures import LocalStack  # noqa: E402
from tests.stack.kbs_fixture import (KbsHttpError, create_policy, kbs_admin_token, register_key,  # noqa: E402
                                     start_kbs)

NGINX = "/usr/sbin/nginx"
# what the KBS stand-in fetches from ITA to verify one passport token: /certs and two CRLs
# (in its normal mode; in fixed-cost mode it caches them)
KBS_ITA_FETCHES_PER_TRANSFER = 3
# the User-Agent of the KBS stand-in's own requests to ITA (urllib); keygate (libcurl) sends none
KBS_USER_AGENT = "Python-urllib/"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def median(v):
    return statistics.median(v) if v else float("nan")


def new_key(kind):
    if kind.startswith("rsa"):
        return rsa.generate_private_key(public_exponent=65537, key_size=int(kind[3:]))
    return ec.generate_private_key({"p256": ec.SECP256R1(), "p384": ec.SECP384R1()}[kind])


class Stack:
    """ITA + Intel KBS stand-ins, a keygate.conf for the sim adapter, and registered keys."""

    def __init__(self, build, work):
        self.build = pathlib.Path(build)
        self.keygate = str(self.build / "cli" / "keygate")
        self.provider = str(self.build / "provider" / "keygate.so")
        self.work = pathlib.Path(work)
        self.keydir = self.work / "keys"
        self.keydir.mkdir(parents=True, exist_ok=True)
        self.stack = LocalStack(self.work / "state").init()
        self.ita = self.stack.start_ita()
        self.kbs = start_kbs(self.stack)
        state = self.stack.state_dir
        self.admin = kbs_admin_token(self.kbs.url, state)
        self.policy = create_policy(self.kbs.url, self.admin, {"enforce_tcb_upto_date": False})
        self.conf = self.work / "keygate.conf"
        keys = {
            "adapter": "sim", "ita_api_url": self.ita.url, "ita_base_url": self.ita.url,
            "ita_api_key_file": f"{state}/ita-api-key", "ita_trust_anchor": f"{state}/ita-root-ca.pem",
            "tls_ca_file": f"{state}/tls-ca.pem", "sim_pck_key": f"{state}/sim-pck.key",
            "sim_pck_chain": f"{state}/sim-pck-chain.pem", "kbs_url": self.kbs.url, "kbs_type": "intel",
            "log_level": 1,
            "cache_dir": "none",  # the host's /var/cache/keygate never counts; P3 measures both
        }
        self.conf_keys = keys
        self.conf.write_text("".join(f"{k} = {v}\n" for k, v in keys.items()))
        # the same with a verification cache of its own (P3 cold-with-cache)
        cache = self.work / "vcache"
        cache.mkdir(mode=0o700, exist_ok=True)
        self.conf_cached = self.work / "keygate-cached.conf"
        self.conf_cached.write_text("".join(f"{k} = {cache if k == 'cache_dir' else v}\n" for k, v in keys.items()))
        self.cnf = self.openssl_cnf(self.work / "openssl.cnf")
        self.env = dict(os.environ, OPENSSL_CONF=str(self.cnf))
        self.env.pop("KEYGATE_DEBUG", None)
        self.keys = {}

    def openssl_cnf(self, path, extra="", conf=None):
        path.write_text(
            "openssl_conf = openssl_init\n[openssl_init]\nproviders = provider_sect\n"
            "[provider_sect]\ndefault = default_sect\nkeygate = keygate_sect\n"
            "[default_sect]\nactivate = 1\n"
            f"[keygate_sect]\nmodule = {self.provider}\nactivate = 1\nconfig = {conf or self.conf}\n{extra}")
        return path

    def variant(self, name, **extra):
        """keygate-NAME.conf = the bench's keygate.conf plus extra keys, and an environment whose
        OPENSSL_CONF loads the provider with it. Returns (conf path, env)."""
        conf = self.work / f"keygate-{name}.conf"
        conf.write_text("".join(f"{k} = {v}\n" for k, v in {**self.conf_keys, **extra}.items()))
        cnf = self.openssl_cnf(self.work / f"openssl-{name}.cnf", conf=conf)
        return conf, dict(self.env, OPENSSL_CONF=str(cnf))

    def config_accepts(self, conf):
        """(True, "") if keygate's configuration loader accepts conf (checked with `keygate ref
        create --pubkey`, which loads and checks it without attesting), else (False, its error)."""
        k = next(iter(self.keys.values()))
        out = self.work / "config-check.ref.pem"
        r = subprocess.run([self.keygate, "-c", str(conf), "ref", "create", "--key-id", k["id"], "--pubkey",
                            str(k["pub"]), "-o", str(out)], capture_output=True, text=True, timeout=60)
        return r.returncode == 0, r.stderr.strip()

    def add_key(self, name, kind, cert=False):
        """Generate, register and write NAME.pem (plain), NAME.ref.pem (reference) and, with
        cert, NAME.crt (self-signed, CN/SAN localhost). Returns the paths."""
        key = new_key(kind)
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        try:
            key_id = register_key(self.kbs.url, self.admin, pem, self.policy)
        except KbsHttpError as e:  # the admin token lives minutes; a long run outlives it
            if e.status != 401:
                raise
            self.admin = kbs_admin_token(self.kbs.url, self.stack.state_dir)
            key_id = register_key(self.kbs.url, self.admin, pem, self.policy)
        paths = {"id": key_id, "kind": kind, "pem": self.keydir / f"{name}.pem",
                 "pub": self.keydir / f"{name}.pub.pem", "ref": self.keydir / f"{name}.ref.pem"}
        paths["pem"].write_bytes(pem)
        paths["pub"].write_bytes(key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
        r = subprocess.run([self.keygate, "-c", str(self.conf), "ref", "create", "--key-id", key_id,
                            "--pubkey", str(paths["pub"]), "-o", str(paths["ref"])],
                           capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise RuntimeError(f"keygate ref create: {r.stderr.strip()}")
        if cert:
            paths["crt"] = self.keydir / f"{name}.crt"
            paths["crt"].write_bytes(self_signed(key).public_bytes(serialization.Encoding.PEM))
        self.keys[name] = paths
        return paths

    # ---------------------------------------------------------------- request log

    def clear_logs(self):
        for svc in ("ita", "kbs"):
            self.stack.clear_requests(svc)

    def client_requests(self, since=None):
        """Requests the client made: (ita, kbs) lists of (method, path). The KBS stand-in's own
        fetches from ITA (JWKS and two CRLs per transfer to verify the token, fewer in its
        fixed-cost mode) are left out: they carry urllib's User-Agent."""
        ita = [q for q in self.stack.requests("ita") if since is None or q["t"] >= since - 0.0005]
        kbs = [q for q in self.stack.requests("kbs") if since is None or q["t"] >= since - 0.0005]
        client_ita = [(q["method"], q["path"]) for q in ita
                      if not (q.get("user_agent") or "").startswith(KBS_USER_AGENT)]
        return client_ita, [(q["method"], q["path"]) for q in kbs]

    def kbs_transfers(self):
        """The KBS's transfer records since its log was last cleared: {"n", "released", "over_cost",
        "max_inflight", "work_ms" (median, fixed-cost mode)}."""
        t = [q for q in self.stack.requests("kbs") if q["path"].endswith("/transfer")]
        fixed = [q for q in t if "cost_ms" in q]
        return {"n": len(t), "released": len(fixed) or sum(1 for q in t if q["status"] == 200),
                "over_cost": sum(1 for q in fixed if q.get("over_cost")),
                "max_inflight": max((q.get("inflight", 0) for q in t), default=0),
                "work_ms": median([q["work_ms"] for q in fixed]) if fixed else None}

    def stack_cpu_ms(self):
        """user+sys CPU the stack's processes (ITA, KBS) have used so far, from /proc."""
        tick = os.sysconf("SC_CLK_TCK")
        total = 0
        for svc in ("ita", "kbs"):
            with open(f"/proc/{self.stack.services[svc].pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
        return total * 1000.0 / tick

    def set_latency(self, ms):
        for svc in ("ita", "kbs"):
            self.stack.set_latency(svc, ms)

    def set_transfer_cost(self, ms):
        """The KBS stand-in's fixed-cost mode: ms per released key (token verification cached per
        token), None = off (its normal mode: JWKS, CRLs and verification per transfer)."""
        return self.stack.control("kbs", "PUT", "/_stack/transfer-cost", {"ms": ms})["ms"]

    def warm_kbs(self, ref):
        """One untimed `keygate release`, so that the KBS stand-in in fixed-cost mode has its JWKS
        and CRLs cached, as a long-running KBS would have (setting the mode empties its caches)."""
        r = subprocess.run([self.keygate, "-c", str(self.conf), "release", "--ref", str(ref)], env=self.env,
                           capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise RuntimeError(f"keygate release (KBS warm-up): {r.stderr[-1000:]}")

    def stop(self):
        self.stack.stop_all()


def self_signed(key):
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = time.time()
    import datetime
    t = datetime.datetime.fromtimestamp(now, datetime.timezone.utc)
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(t - datetime.timedelta(hours=1))
            .not_valid_after(t + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .sign(key, hashes.SHA256()))


def run_timed(cmd, env=None, timeout=600):
    """Runs cmd; returns (CompletedProcess-like dict, wall_ms, user+sys CPU ms of that child)."""
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = p.communicate(timeout=timeout)
    wall = (time.monotonic() - t0) * 1e3
    # the child is reaped by communicate(); its rusage is in RUSAGE_CHILDREN deltas instead
    return p.returncode, out.decode(errors="replace"), err.decode(errors="replace"), wall


def child_cpu_ms():
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (ru.ru_utime + ru.ru_stime) * 1e3


def run_cpu(cmd, env=None, timeout=600):
    """Runs cmd; returns (rc, stdout, stderr, wall_ms, cpu_ms) with cpu = user+sys of the child."""
    c0 = child_cpu_ms()
    rc, out, err, wall = run_timed(cmd, env, timeout)
    return rc, out, err, wall, child_cpu_ms() - c0


# -------------------------------------------------------------------- nginx

class Nginx:
    """nginx in the foreground under its own prefix; servers = [(listen_port, protocols, cert,
    key, server_name)]. Stopped by the master's PID."""

    def __init__(self, prefix, servers, env, workers=1):
        self.pfx = pathlib.Path(prefix)
        self.pfx.mkdir(parents=True, exist_ok=True)
        self.env = env
        blocks = []
        for port, protos, cert, key, name in servers:
            blocks.append(
                "  server {\n"
                f"    listen 127.0.0.1:{port} ssl;\n    server_name {name};\n"
                f"    ssl_certificate {cert};\n    ssl_certificate_key {key};\n"
                f"    ssl_protocols {protos};\n    ssl_session_cache off;\n    ssl_session_tickets off;\n"
                "    location / { default_type text/plain; return 200 \"ok\\n\"; }\n  }\n")
        p = str(self.pfx)
        self.conf = self.pfx / "nginx.conf"
        self.conf.write_text(
            f"daemon off;\nmaster_process on;\nworker_processes {workers};\n"
            f"pid {p}/nginx.pid;\nerror_log {p}/error.log warn;\n"
            "events { worker_connections 4096; }\n"
            f"http {{\n  access_log off;\n  client_body_temp_path {p}/body; proxy_temp_path {p}/proxy;\n"
            f"  fastcgi_temp_path {p}/fastcgi; uwsgi_temp_path {p}/uwsgi; scgi_temp_path {p}/scgi;\n"
            + "".join(blocks) + "}\n")
        self.port = servers[0][0]
        self.proc = None

    def start(self, deadline_s=120):
        """Starts nginx; returns ms until it completes a TLS handshake on its first port."""
        t0 = time.monotonic()
        self.proc = subprocess.Popen([NGINX, "-p", str(self.pfx), "-c", str(self.conf)], env=self.env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                    with ctx.wrap_socket(s, server_hostname="localhost"):
                        return (time.monotonic() - t0) * 1e3
            except OSError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited with {self.proc.returncode}: "
                                   f"{self.proc.stderr.read().decode(errors='replace')[-2000:]}"
                                   f"{(self.pfx / 'error.log').read_text(errors='replace')[-2000:]}")
            if time.monotonic() - t0 > deadline_s:
                self.stop()
                raise RuntimeError("nginx did not serve in time")
            time.sleep(0.002)

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def h2load(port, conns):
    """Full handshakes per second: `conns` clients, one connection and one request each."""
    r = subprocess.run(["h2load", "--h1", "-t", "1", "-c", str(conns), "-n", str(conns), "-m", "1",
                        f"https://127.0.0.1:{port}/"], capture_output=True, text=True, timeout=300)
    for line in r.stdout.splitlines():
        if line.startswith("finished in"):
            rps = float(line.split(",")[1].split()[0])
        if line.startswith("requests:"):
            ok = int(line.split(",")[3].split()[0])
    if r.returncode != 0 or ok != conns:
        raise RuntimeError(f"h2load: {r.stdout[-1500:]} {r.stderr[-500:]}")
    return rps


def dump(path, obj):
    pathlib.Path(path).write_text(json.dumps(obj, indent=1))
