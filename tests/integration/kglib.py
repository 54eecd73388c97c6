# SPDX-License-Identifier: Apache-2.0
"""The shared test library of tests/integration: keys registered in the KBS stand-in, key
references and openssl.cnf files (Site), PKCS#11 tokens (Token), nginx and haproxy helpers, free
ports, certificates, and the fixtures several test modules use. Test modules import from here
(and from conftest), never from one another.

Fixtures defined here take effect in a module that imports them by name (`from kglib import
site`); test_pkcs11's module-scoped stack (module_stack, module_token, kbs_stack, token) is meant
for modules that want one stack per file."""
import datetime
import hashlib
import ipaddress
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from conftest import REPO, kbs_conf, run
from tests.stack.kbs_fixture import create_policy, kbs_admin_token, register_key, start_kbs


def new_key(kind):
    if kind.startswith("rsa"):
        return rsa.generate_private_key(public_exponent=65537, key_size=int(kind[3:]))
    return ec.generate_private_key({"p256": ec.SECP256R1(), "p384": ec.SECP384R1()}[kind])


def pub_pem(key):
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def register(stack, key, attributes=None, kbs="kbs"):
    """Registers key (as PKCS#8) in the KBS stand-in of that service name; returns its id."""
    kbs = stack.services[kbs].url
    admin = kbs_admin_token(kbs, stack.state_dir)
    policy = create_policy(kbs, admin, attributes if attributes is not None else {"enforce_tcb_upto_date": False})
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    return register_key(kbs, admin, pem, policy)


def kmip_kbs(stack, sec1_form="full"):
    """A second KBS stand-in beside the stack's "kbs", with the KMIP key manager (it releases
    PKCS#1 RSAPrivateKey / SEC1 ECPrivateKey DER; tests/stack/kbs.py): its service name."""
    name = f"kbs-kmip-{sec1_form}"
    if name not in stack.services:
        start_kbs(stack, name=name, key_manager="kmip", sec1_form=sec1_form)
    return name


def kbs2026(stack):
    """A KBS stand-in of the 2026 generation beside the stack's "kbs" (tests/stack/kbs.py
    --generation 2026; docs/protocols/intel-kbs.md §8): its service name, with its request log
    and faults cleared."""
    name = "kbs-2026"
    if name not in stack.services:
        start_kbs(stack, name=name, generation="2026")
    stack.clear_faults(name)
    stack.clear_requests(name)
    return name


def kbs_for(stack, generation):
    """The service name of the stack's KBS of that generation ("v1.3.0" or "2026")."""
    return "kbs" if generation == "v1.3.0" else kbs2026(stack)


def openssl_cnf(build_dir, path, keygate_conf, extra=""):
    path.write_text(
        "openssl_conf = openssl_init\nconfig_diagnostics = 1\n"
        "[openssl_init]\nproviders = provider_sect\n"
        "[provider_sect]\ndefault = default_sect\nkeygate = keygate_sect\n"
        "[default_sect]\nactivate = 1\n"
        f"[keygate_sect]\nmodule = {build_dir / 'provider' / 'keygate.so'}\nactivate = 1\n"
        f"config = {keygate_conf}\n{extra}")
    return path


class Site:
    """A released-key setup: keys registered in the KBS (the stack's service named kbs), their
    references, an openssl.cnf; conf: more keygate.conf keys (e.g. kbs_mode)."""

    def __init__(self, keygate_bin, build_dir, stack, tmp, kinds=("rsa2048", "p256"), kbs="kbs", **conf):
        self.tmp = tmp
        self.conf = kbs_conf(stack, tmp / "keygate.conf", kbs_url=stack.services[kbs].url, **conf)
        self.cnf = openssl_cnf(build_dir, tmp / "openssl.cnf", self.conf)
        self.env = {"OPENSSL_CONF": str(self.cnf)}
        # an ASan-built provider inside uninstrumented hosts (scripts/test.sh sets this)
        if os.environ.get("KEYGATE_ASAN_PRELOAD"):
            self.env["LD_PRELOAD"] = os.environ["KEYGATE_ASAN_PRELOAD"]
        self.keys, self.refs, self.ids = {}, {}, {}
        for kind in kinds:
            key = new_key(kind)
            key_id = register(stack, key, kbs=kbs)
            pub = tmp / f"{kind}.pub.pem"
            pub.write_text(pub_pem(key))
            ref = tmp / f"{kind}.ref.pem"
            r = run([keygate_bin, "-c", str(self.conf), "ref", "create", "--key-id", key_id, "--pubkey", str(pub),
                     "-o", str(ref)])
            assert r.returncode == 0, r.stderr
            self.keys[kind], self.refs[kind], self.ids[kind] = key, ref, key_id

    def openssl(self, *args, **kw):
        return run(["openssl", *map(str, args)], env=self.env, **kw)


@pytest.fixture
def site(keygate_bin, build_dir, kbs_stack, tmp_path):
    return Site(keygate_bin, build_dir, kbs_stack, tmp_path)


def attest_count(stack):
    return sum(1 for q in stack.requests("ita") if q["path"] == "/appraisal/v1/attest")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_cert(site, kind):
    cert = site.tmp / f"{kind}.cert.pem"
    r = site.openssl("req", "-new", "-x509", "-key", site.refs[kind], "-subj", "/CN=localhost", "-days", "1",
                     "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-out", cert)
    assert r.returncode == 0, r.stderr
    return cert


PEM_READER = r'''
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/provider.h>
#include <openssl/ssl.h>
#include <stdio.h>
int main(int argc, char **argv)
{
    FILE *fp = fopen(argv[1], "r");
    EVP_PKEY *k = PEM_read_PrivateKey(fp, NULL, NULL, NULL);
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (fp) fclose(fp);
    if (k == NULL) { ERR_print_errors_fp(stderr); return 1; }
    printf("type=%s bits=%d provider=%s\n", EVP_PKEY_get0_type_name(k), EVP_PKEY_get_bits(k),
           OSSL_PROVIDER_get0_name(EVP_PKEY_get0_provider(k)));
    if (SSL_CTX_use_certificate_file(ctx, argv[2], SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, argv[1], SSL_FILETYPE_PEM) != 1 || SSL_CTX_check_private_key(ctx) != 1) {
        ERR_print_errors_fp(stderr); return 2;
    }
    printf("check_private_key=1\n");
    EVP_PKEY_free(k);
    SSL_CTX_free(ctx);
    return 0;
}
'''


def asan_env():
    """An ASan-built module inside uninstrumented hosts (scripts/test.sh sets this)."""
    pre = os.environ.get("KEYGATE_ASAN_PRELOAD")
    return {"LD_PRELOAD": pre} if pre else {}


def self_signed(key):
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.utcnow()
    delta = datetime.timedelta
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - delta(hours=1))
            .not_valid_after(now + delta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           False)
            .sign(key, hashes.SHA256()))


def cka_id(key):
    """SHA-1 of the subjectPublicKey bits, as the module computes CKA_ID."""
    pub = key.public_key()
    if isinstance(pub, rsa.RSAPublicKey):
        bits = pub.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
    else:
        bits = pub.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    return hashlib.sha1(bits).hexdigest()


class Token:
    """Keys registered in the KBS, their references and certificates, and a keygate.conf whose
    pkcs11_keys lists them (site: Site's kbs and conf keywords)."""

    def __init__(self, keygate_bin, build_dir, stack, tmp, extra="", **site):
        self.site = Site(keygate_bin, build_dir, stack, tmp, **site)
        self.stack, self.tmp, self.keys = stack, tmp, self.site.keys
        self.module = str(build_dir / "pkcs11" / "libkeygate-pkcs11.so")
        self.certs, items = {}, []
        for kind, key in self.keys.items():
            cert = tmp / f"{kind}.crt"
            cert.write_bytes(self_signed(key).public_bytes(serialization.Encoding.PEM))
            self.certs[kind] = cert
            items.append(f"{kind}:{self.site.refs[kind]}:{cert}")
        self.base_conf = self.site.conf.read_text()
        self.conf = self.write_conf("keygate.conf", extra)
        self.env = dict(asan_env(), KEYGATE_CONF=str(self.conf))
        self.ids = {kind: cka_id(key) for kind, key in self.keys.items()}

    def write_conf(self, name, extra=""):
        items = [f"{k}:{self.site.refs[k]}:{self.certs[k]}" for k in self.keys]
        path = self.tmp / name
        path.write_text(self.base_conf + "pkcs11_keys = " + ", ".join(items) + "\n" + extra)
        return path

    def tool(self, *args, env=None, **kw):
        return run(["pkcs11-tool", "--module", self.module, *map(str, args)], env=dict(self.env, **(env or {})),
                   **kw)


@pytest.fixture(scope="module")
def module_stack(stack_dir, tmp_path_factory):
    """One ITA + KBS stack for this file (key registration is the slow part); every test starts
    with empty request logs and no faults (the kbs_stack fixture below)."""
    from tests.stack.fixtures import copy_state
    from tests.stack.kbs_fixture import start_kbs

    stack = copy_state(stack_dir, tmp_path_factory.mktemp("p11-stack") / "state")
    stack.start_ita()
    start_kbs(stack)
    yield stack
    stack.stop_all()


@pytest.fixture(scope="module")
def module_token(keygate_bin, build_dir, module_stack, tmp_path_factory):
    return Token(keygate_bin, build_dir, module_stack, tmp_path_factory.mktemp("p11-token"))


@pytest.fixture
def kbs_stack(module_stack):
    for name in ("ita", "kbs"):
        module_stack.clear_faults(name)
        module_stack.clear_requests(name)
    return module_stack


@pytest.fixture
def token(module_token, kbs_stack):
    return module_token


def build_host(out, source, *libs):
    """Compiles a one-file C test host with warnings as errors, the p11-kit headers and
    tests/pkcs11/p11_host.h (the hosts' shared CHECK and session helpers) on the include path. source: a
    pathlib.Path of a file, or the C text itself (written next to out). Returns out as a string."""
    if not isinstance(source, pathlib.Path):
        out.with_suffix(".c").write_text(source)
        source = out.with_suffix(".c")
    cc = subprocess.run(["gcc", "-Wall", "-Werror", "-O1", "-g", "-o", str(out), str(source), "-I/usr/include/p11-kit-1",
                         f"-I{REPO / 'tests/pkcs11'}", *libs], capture_output=True, text=True)
    assert cc.returncode == 0, cc.stderr
    return str(out)


@pytest.fixture(scope="session")
def p11_check(tmp_path_factory):
    return build_host(tmp_path_factory.mktemp("p11check") / "p11_check", REPO / "tests/pkcs11/p11_check.c", "-ldl",
                      "-lpthread")


@pytest.fixture(scope="session")
def p11_client(tmp_path_factory):
    """tests/pkcs11/p11_client.c: PIN login, signing throughput, a client that holds a session."""
    return build_host(tmp_path_factory.mktemp("p11client") / "p11_client", REPO / "tests/pkcs11/p11_client.c", "-ldl")


P11KIT_CLIENT = "/usr/lib/x86_64-linux-gnu/pkcs11/p11-kit-client.so"
P11KIT_PROXY = "/usr/lib/x86_64-linux-gnu/p11-kit-proxy.so"


class P11KitServer:
    """`p11-kit server` in the foreground serving a module's token on a unix socket in a private
    temp dir (p11-kit's remoting: each client connection gets a `p11-kit-remote` child that
    loads the module), stopped by its PID. env: the server's environment (KEYGATE_CONF)."""

    def __init__(self, module, env, token="pkcs11:token=keygate"):
        import tempfile

        self.dir = tempfile.mkdtemp(prefix="kg-p11kit-")
        os.chmod(self.dir, 0o755)
        self.sock = os.path.join(self.dir, "pkcs11.sock")
        self.log = pathlib.Path(self.dir) / "server.log"
        self.proc = subprocess.Popen(["p11-kit", "server", "-f", "-n", self.sock, "--provider", module, token],
                                     env=dict(os.environ, **env), stdout=subprocess.DEVNULL,
                                     stderr=open(self.log, "wb"))
        deadline = time.monotonic() + 10
        while not os.path.exists(self.sock):
            assert self.proc.poll() is None and time.monotonic() < deadline, read_log(self.log)
            time.sleep(0.05)
        self.env = {"P11_KIT_SERVER_ADDRESS": f"unix:path={self.sock}"}

    def children(self):
        """PIDs of the per-connection p11-kit-remote processes."""
        r = run(["ps", "-o", "pid=", "--ppid", str(self.proc.pid)])
        return sorted(int(x) for x in r.stdout.split())

    def stop(self):
        for pid in self.children() if self.proc.poll() is None else []:
            try:
                os.kill(pid, signal.SIGTERM)  # the per-connection children we started
            except ProcessLookupError:
                pass
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def scan_memory(pid, needles):
    """The indexes of the needles (bytes) found in the readable mappings of process pid."""
    found = set()
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", 0) as mem:
        for line in maps:
            fields = line.split()
            if "r" not in fields[1] or (len(fields) > 5 and fields[5] in ("[vvar]", "[vsyscall]")):
                continue
            start, end = (int(x, 16) for x in fields[0].split("-"))
            try:
                mem.seek(start)
                data = mem.read(end - start)
            except (OSError, ValueError, OverflowError):
                continue
            found.update(i for i, nd in enumerate(needles) if nd in data)
    return found


def private_needles(key):
    """Distinctive private bytes of key: 32-byte windows of p (RSA) or the scalar (EC), in
    big-endian order and as OpenSSL's little-endian 64-bit BIGNUM limbs."""
    secret = key.private_numbers().p if isinstance(key, rsa.RSAPrivateKey) else key.private_numbers().private_value
    n = (secret.bit_length() + 7) // 8
    big, little = secret.to_bytes(n, "big"), secret.to_bytes(n, "little")
    return [big[:32], big[-32:], little[:32], little[-32:]]


NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"


PAGE = "served by keygate"


def nginx_conf(pfx, port, cert, key, workers=1):
    p = str(pfx)
    return (f"daemon off;\nmaster_process on;\nworker_processes {workers};\n"
            f"pid {p}/nginx.pid;\nerror_log {p}/error.log info;\n"
            "events { worker_connections 64; }\n"
            "http {\n"
            f"  access_log {p}/access.log;\n"
            f"  client_body_temp_path {p}/body; proxy_temp_path {p}/proxy; fastcgi_temp_path {p}/fastcgi;\n"
            f"  uwsgi_temp_path {p}/uwsgi; scgi_temp_path {p}/scgi;\n"
            "  server {\n"
            f"    listen 127.0.0.1:{port} ssl;\n"
            f"    ssl_certificate     {cert};\n"
            f"    ssl_certificate_key {key};\n"
            "    ssl_protocols       TLSv1.2 TLSv1.3;\n"
            f"    location / {{ default_type text/plain; return 200 \"{PAGE} $ssl_protocol\\n\"; }}\n"
            "  }\n"
            "}\n")


def curl(port, cert, *opts, timeout=15):
    return run(["curl", "-sS", "--max-time", "10", "--cacert", str(cert), *opts, f"https://127.0.0.1:{port}/"],
               timeout=timeout)


def read_log(path):
    """The log as text: keygate messages may carry bytes that are not UTF-8."""
    return path.read_bytes().decode("utf-8", "replace") if path.exists() else ""


def wait_serving(proc, port, cert, errlog=None, deadline_s=20):
    deadline = time.monotonic() + deadline_s
    while True:
        r = curl(port, cert)
        if r.returncode == 0:
            return r
        if proc.poll() is not None or time.monotonic() > deadline:
            log = read_log(errlog) if errlog is not None else ""
            pytest.fail(f"server not serving (exit {proc.poll()}): {r.stderr}\n{log}")
        time.sleep(0.1)


class Nginx:
    """One nginx under a temp prefix, foreground (daemon off), stopped by the master's PID."""

    def __init__(self, site, cert, key, workers=1, name="nginx", env=None):
        self.pfx = site.tmp / name
        self.pfx.mkdir()
        self.port = free_port()
        self.cert = cert
        self.conf = self.pfx / "nginx.conf"
        self.conf.write_text(nginx_conf(self.pfx, self.port, cert, key, workers))
        self.errlog = self.pfx / "error.log"
        self.env = site.env if env is None else env
        self.proc = None

    def cmd(self, *extra):
        return [NGINX, "-p", str(self.pfx), "-c", str(self.conf), *extra]

    def check(self):
        return run(self.cmd("-t"), env=self.env)

    def start(self):
        self.proc = subprocess.Popen(self.cmd(), env=dict(os.environ, **self.env), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        return wait_serving(self.proc, self.port, self.cert, self.errlog)

    def workers(self):
        r = run(["ps", "-o", "pid=", "--ppid", str(self.proc.pid)])
        return sorted(int(x) for x in r.stdout.split())

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)  # graceful shutdown of the master we started
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


HAPROXY_CFG = """global
    ssl-provider-path {provdir}
    ssl-provider keygate
    ssl-provider default
    nbthread 2
    log stderr format raw local0
defaults
    mode http
    log global
    timeout connect 5s
    timeout client 5s
    timeout server 5s
frontend fe
    bind 127.0.0.1:{port} ssl crt {crt} ssl-min-ver TLSv1.2
    http-request return status 200 content-type text/plain string "{page}"
"""


# --------------------------------------------------------------------------- Trustee (ITA or EAR)

# The sim TD of an EAR-backed Trustee: its reference values (tests/stack/ear.py) affirm these
EAR_MRTD = hashlib.sha384(b"keygate EAR reference TD").hexdigest()
EAR_XFAM = "e700060000000000"


def start_trustee_stack(stack_dir, tmp, token="ita"):
    """A copy of the session's state with ITA and a Trustee stand-in started: ITA-backed
    (token "ita") or with its own attestation service (token "ear", reference values affirming a
    sim TD with EAR_MRTD, EAR_XFAM and zero RTMRs). ITA runs in both: keygate.conf names it, and
    an EAR test can show that nobody asked it. stack.trustee_token records the kind."""
    from tests.stack.fixtures import copy_state
    from tests.stack.trustee_fixture import start_trustee, write_reference_values

    stack = copy_state(stack_dir, pathlib.Path(tmp) / "state")
    stack.start_ita()
    if token == "ear":
        rv = write_reference_values(stack, mr_td=EAR_MRTD, xfam=EAR_XFAM, rtmr_1="00" * 48, rtmr_2="00" * 48)
        start_trustee(stack, token="ear", reference_values=rv)
    else:
        start_trustee(stack)
    stack.trustee_token = token
    return stack


def trustee_conf(stack, path, **overrides):
    """keygate.conf for kbs_type = trustee against the stack of start_trustee_stack: with
    trustee_token = ear, the AS certificate pinned and the sim TD its reference values affirm."""
    from conftest import write_keygate_conf
    from tests.stack.trustee_fixture import as_cert

    keys = {"kbs_url": stack.services["trustee"].url, "kbs_type": "trustee"}
    if getattr(stack, "trustee_token", "ita") == "ear":
        keys.update(trustee_token="ear", trustee_as_cert=as_cert(stack), sim_mrtd=EAR_MRTD, sim_xfam=EAR_XFAM)
    keys.update(overrides)
    return write_keygate_conf(stack, path, **keys)


def assert_fails(r, code, *needles):
    """r, a finished keygate command, failed as a user must see it: exit code code, nothing on
    stdout (no key printed), and exactly one "keygate: " line on stderr, holding every needle."""
    assert r.returncode == code, (r.returncode, r.stderr)
    assert r.stdout == "", "no key may be printed on failure"
    errors = [line for line in r.stderr.splitlines() if line.startswith("keygate: ")]
    assert len(errors) == 1, r.stderr
    for needle in needles:
        assert needle in errors[0], r.stderr
