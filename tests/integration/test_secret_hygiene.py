# SPDX-License-Identifier: Apache-2.0
"""Secret hygiene: every front end runs at the highest debug level (KEYGATE_DEBUG=<file>:4) and
everything it leaves behind -- the debug log, stdout, stderr and the argv of every program
spawned meanwhile (sampled from /proc/<pid>/cmdline of our descendants while they run, plus the
argv we passed) -- is searched for the secrets of the run:

  * the ITA API key (as text, and in base64 at any alignment);
  * attestation tokens: the token `keygate token` printed, and any compact JWS at all (the
    passport tokens `keygate release` and the provider use internally are never printed);
  * the released private keys: every private component (EC d; RSA d, p, q, dP, dQ, qInv) in hex
    (lower, upper, openssl's xx:xx text form) and base64/base64url at any alignment, which also
    covers the PKCS#8 DER and its PEM body.

A third test forces a core dump of a program using a released key and searches it for the
private components (MADV_DONTDUMP promise): true for EC keys; for RSA it documents a known leak (xfail, strict).
Two more: `keygate` writes no core when aborted (not dumpable), and a gcore of `keygate token`
mid-request holds the ITA API key only in the request in flight. The PKCS#11 module with
pkcs11_pin_file (right and wrong PINs through pkcs11-tool and the raw API) leaks neither the PIN
nor the keys.

Where a command prints a secret by design (the token on the stdout of `keygate token`, also with
--json), only that output is exempt from that one secret. Each needle is first shown to find the secret in a rendering that
does contain it, so the search cannot pass vacuously.
"""
import base64
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from conftest import REPO, kbs_conf, run, write_keygate_conf
from kglib import (PEM_READER, Site, Token, free_port, kmip_kbs, make_cert, new_key, p11_client,  # noqa: F401
                   pub_pem, register)
from tests.stack import pki

sys.path.insert(0, str(REPO / "bench" / "lib"))
from soak import Background  # noqa: E402

JWS = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{16,}")


# ------------------------------------------------------------------------------- needles

def b64_any_alignment(data, urlsafe=False):
    """Base64 texts that occur in the encoding of any byte stream containing data, whatever
    its offset: for each of the 3 alignments, the characters not influenced by neighbours."""
    enc = base64.urlsafe_b64encode if urlsafe else base64.b64encode
    out = []
    for k in range(3):
        text = enc(data[k:]).decode().rstrip("=")
        whole = (len(data) - k) // 3 * 4          # characters that encode full 3-byte groups
        if whole >= 16:
            out.append(text[:whole])
    return out


def byte_needles(label, data):
    hx = data.hex()
    needles = [(label + " hex", hx), (label + " HEX", hx.upper()),
               (label + " xx:xx", ":".join(hx[i:i + 2] for i in range(0, len(hx), 2)))]
    needles += [(label + " base64", t) for t in b64_any_alignment(data)]
    needles += [(label + " base64url", t) for t in b64_any_alignment(data, urlsafe=True)]
    return needles


def int_bytes(n):
    return n.to_bytes((n.bit_length() + 7) // 8, "big")


def key_needles(name, key):
    if isinstance(key, ec.EllipticCurvePrivateKey):
        size = (key.curve.key_size + 7) // 8
        parts = {"d": key.private_numbers().private_value.to_bytes(size, "big")}
    else:
        n = key.private_numbers()
        parts = {"d": int_bytes(n.d), "p": int_bytes(n.p), "q": int_bytes(n.q), "dP": int_bytes(n.dmp1),
                 "dQ": int_bytes(n.dmq1), "qInv": int_bytes(n.iqmp)}
    needles = []
    for part, data in parts.items():
        needles += byte_needles(f"{name} private {part}", data)
    # control: the needles find the key in its own PKCS#8 PEM body and DER hex
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    pem_body = "".join(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()).decode().splitlines()[1:-1])
    for part, data in parts.items():
        assert data.hex() in der.hex(), part
        assert any(t in pem_body for t in b64_any_alignment(data)), part
    return needles


def api_key_needles(api_key):
    return [("API key", api_key)] + [("API key base64", t) for t in b64_any_alignment(api_key.encode())]


# ------------------------------------------------------------------------------- argv watch

class ArgvWatch(Background):
    """Samples /proc/<pid>/cmdline of this process's descendants every 10 ms while active."""

    def __init__(self):
        self.argv = set()
        super().__init__()

    def add(self, argv):
        self.argv.add(" ".join(map(str, argv)))

    def _loop(self):
        me = os.getpid()
        while not self._stop.is_set():
            parents = {}
            for entry in os.listdir("/proc"):
                if not entry.isdigit():
                    continue
                try:
                    with open(f"/proc/{entry}/stat") as f:
                        stat = f.read()
                    parents[int(entry)] = int(stat[stat.rindex(")") + 2:].split()[1])
                except (OSError, ValueError):
                    continue
            for pid in parents:
                p, seen = pid, 0
                while p in parents and p != me and seen < 64:
                    p, seen = parents[p], seen + 1
                if p == me and pid != me:
                    try:
                        with open(f"/proc/{pid}/cmdline", "rb") as f:
                            cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
                    except OSError:
                        continue
                    if cmd:
                        self.argv.add(cmd)
            self._stop.wait(0.01)


# ------------------------------------------------------------------------------- checks

def find_leaks(sources, needles, exempt=()):
    """[(secret label, source)] for every needle found in a source; exempt: (label, source)."""
    leaks = []
    for source, text in sources.items():
        for label, needle in needles:
            if needle in text and (label.split(" ")[0], source) not in exempt:
                leaks.append((label, source))
        for m in JWS.finditer(text):
            if ("token", source) not in exempt:
                leaks.append((f"a compact JWS ({m.group(0)[:24]}...)", source))
    return sorted(set(leaks))


def debug_env(tmp_path):
    log = tmp_path / "keygate-debug.log"
    return log, {"KEYGATE_DEBUG": f"{log}:4"}


def test_cli_release_token_and_verify_leak_nothing(keygate_bin, kbs_stack, tmp_path):
    keys = {kind: new_key(kind) for kind in ("p256", "rsa2048")}
    ids = {kind: register(kbs_stack, key) for kind, key in keys.items()}
    log, env = debug_env(tmp_path)
    conf = kbs_conf(kbs_stack, tmp_path / "k.conf", log_level=4)
    conf_bg = kbs_conf(kbs_stack, tmp_path / "k-bg.conf", log_level=4, kbs_mode="background")
    token_file = tmp_path / "token.jwt"
    outputs = {}
    with ArgvWatch() as watch:
        def cmd(name, argv):
            argv = [keygate_bin, *map(str, argv)]
            watch.add(argv)
            r = run(argv, env=env, timeout=120)
            outputs[name + " stdout"], outputs[name + " stderr"] = r.stdout, r.stderr
            return r

        for name, c in (("release passport", conf), ("release background", conf_bg)):
            r = cmd(name, ["-c", c, "release", "--key-id", ids["p256"], "--key-id", ids["rsa2048"], "-v"])
            assert r.returncode == 0, r.stderr
            assert r.stdout == pub_pem(keys["p256"]) + pub_pem(keys["rsa2048"])
        r = cmd("token", ["-c", conf, "token", "--steps"])
        assert r.returncode == 0, r.stderr
        token = r.stdout.strip()
        assert JWS.fullmatch(token), token[:40]
        token_file.write_text(token + "\n")
        r = cmd("token json", ["-c", conf, "--json", "token", "--claims"])
        assert r.returncode == 0, r.stderr
        r = cmd("verify", ["-c", conf, "verify", "--token", token_file])
        assert r.returncode == 0, r.stderr
        r = cmd("verify json", ["-c", conf, "--json", "verify", "--token", token_file])
        assert r.returncode == 0, r.stderr
    sources = dict(outputs)
    sources["debug log"] = log.read_text() if log.exists() else ""
    sources["argv"] = "\n".join(sorted(watch.argv))
    assert any("release" in a for a in watch.argv)

    needles = api_key_needles(pki.api_key(kbs_stack.state_dir)) + [("token", token)]
    needles += byte_needles("token signature", base64.urlsafe_b64decode(token.split(".")[2] + "=="))
    for kind, key in keys.items():
        needles += key_needles(kind, key)
    # `keygate token` prints the token: that is its job (--json prints it in its JSON object)
    exempt = {("token", "token stdout"), ("token", "token json stdout")}
    assert token in outputs["token stdout"]
    assert find_leaks(sources, needles, exempt) == []


def test_provider_hosts_leak_nothing(keygate_bin, build_dir, kbs_stack, tmp_path):
    site = Site(keygate_bin, build_dir, kbs_stack, tmp_path)
    log, debug = debug_env(tmp_path)
    env = dict(site.env, **debug)
    outputs = {}
    data = tmp_path / "data.bin"
    data.write_bytes(os.urandom(32))
    certs = {kind: make_cert(site, kind) for kind in site.refs}
    reader = tmp_path / "reader"
    (tmp_path / "reader.c").write_text(PEM_READER)
    assert run(["cc", "-o", str(reader), str(tmp_path / "reader.c"), "-lssl", "-lcrypto"]).returncode == 0
    with ArgvWatch() as watch:
        def cmd(name, argv, **kw):
            argv = list(map(str, argv))
            watch.add(argv)
            r = run(argv, env=env, **kw)
            outputs[name + " stdout"], outputs[name + " stderr"] = r.stdout, r.stderr
            return r

        for kind, ref in site.refs.items():
            assert cmd(f"pkey -pubout {kind}", ["openssl", "pkey", "-in", ref, "-pubout"]).returncode == 0
            cmd(f"pkey -text {kind}", ["openssl", "pkey", "-in", ref, "-text", "-noout"])
            cmd(f"pkey private {kind}", ["openssl", "pkey", "-in", ref])          # refused: no export
            r = cmd(f"pkeyutl -sign {kind}", ["openssl", "pkeyutl", "-sign", "-inkey", ref, "-in", data,
                                               "-pkeyopt", "digest:sha256", "-out", tmp_path / f"{kind}.sig"])
            assert r.returncode == 0, r.stderr
            r = cmd(f"PEM_read {kind}", [reader, ref, certs[kind]])
            assert r.returncode == 0 and "provider=keygate" in r.stdout, r.stderr
            cmd(f"storeutl {kind}", ["openssl", "storeutl", "-noout", "-text", f"keygate:{site.ids[kind]}"])

            port = free_port()
            argv = ["openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-cert", str(certs[kind]), "-key",
                    str(ref), "-www", "-tls1_3"]
            watch.add(argv)
            srv = subprocess.Popen(argv, env=dict(os.environ, **env), stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
            try:
                deadline = time.monotonic() + 20
                while True:
                    r = cmd(f"s_client {kind}", ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-CAfile",
                                                 certs[kind], "-verify_return_error", "-brief"],
                            input="GET / HTTP/1.0\r\n\r\n", timeout=30)
                    if r.returncode == 0 or time.monotonic() > deadline or srv.poll() is not None:
                        break
                    time.sleep(0.2)
                assert r.returncode == 0, r.stderr
            finally:
                srv.terminate()
                out, err = srv.communicate(timeout=10)
            outputs[f"s_server {kind} stdout"], outputs[f"s_server {kind} stderr"] = out, err
    sources = dict(outputs)
    sources["debug log"] = log.read_text()
    sources["argv"] = "\n".join(sorted(watch.argv))
    # the log really is at trace level: the provider's debug lines are there
    assert "keygate provider" in sources["debug log"] and "releasing key" in sources["debug log"]
    assert any("s_server" in a for a in watch.argv)

    needles = api_key_needles(pki.api_key(kbs_stack.state_dir))
    for kind, key in site.keys.items():
        needles += key_needles(kind, key)
    assert find_leaks(sources, needles) == []


def test_pkcs11_pin_and_keys_leak_nothing(keygate_bin, build_dir, kbs_stack, tmp_path, p11_client):
    """pkcs11_pin_file at KEYGATE_DEBUG level 4: pkcs11-tool logs in with the PIN and signs, a
    wrong PIN is refused, p11_client's pin mode (every wrong neighbour, then the PIN); the PIN
    is only in the argv we gave (exempt), never in the log or any output."""
    token = Token(keygate_bin, build_dir, kbs_stack, tmp_path)
    pin = "hygiene-" + os.urandom(12).hex()
    pin_file = tmp_path / "pkcs11.pin"
    pin_file.write_text(pin + "\n")
    os.chmod(pin_file, 0o600)
    conf = token.write_conf("pin.conf", f"pkcs11_release = login\npkcs11_pin_file = {pin_file}\n")
    log, debug = debug_env(tmp_path)
    env = dict(token.env, KEYGATE_CONF=str(conf), **debug)
    data = tmp_path / "data.bin"
    data.write_bytes(os.urandom(32))
    outputs = {}

    def cmd(name, argv):
        r = run(list(map(str, argv)), env=env, timeout=120)
        outputs[name + " stdout"], outputs[name + " stderr"] = r.stdout, r.stderr
        return r

    tool = ["pkcs11-tool", "--module", token.module]
    r = cmd("sign", tool + ["--login", "--pin", pin, "--sign", "-m", "ECDSA-SHA256", "--id", token.ids["p256"],
                            "-i", data, "-o", tmp_path / "sig"])
    assert r.returncode == 0, r.stderr
    r = cmd("wrong pin", tool + ["--login", "--pin", pin[:-1] + "x", "--list-objects"])
    assert r.returncode != 0 and "CKR_PIN_INCORRECT" in r.stderr, r.stderr
    r = cmd("p11_client", [p11_client, token.module, "pin", "rsa2048", pin])
    assert r.returncode == 0 and "ok pin" in r.stdout, r.stdout + r.stderr
    sources = dict(outputs)
    sources["debug log"] = log.read_text(errors="replace")
    assert "PKCS#11" in sources["debug log"] and "released" in sources["debug log"], sources["debug log"][-2000:]
    needles = [("PIN", pin)] + [("PIN base64", t) for t in b64_any_alignment(pin.encode())]
    needles += api_key_needles(pki.api_key(kbs_stack.state_dir))
    for kind, key in token.keys.items():
        needles += key_needles(kind, key)
    assert find_leaks(sources, needles) == []


CORE_DUMPER = r'''
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <unistd.h>
int main(int argc, char **argv)
{
    struct rlimit rl = {RLIM_INFINITY, RLIM_INFINITY};
    unsigned char sig[512];
    size_t len = sizeof(sig);
    FILE *fp = fopen(argv[1], "r");
    EVP_PKEY *k = PEM_read_PrivateKey(fp, NULL, NULL, NULL); /* the release runs here */
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    if (k == NULL || EVP_DigestSignInit_ex(md, NULL, "SHA256", NULL, NULL, k, NULL) <= 0 ||
        EVP_DigestSign(md, sig, &len, (const unsigned char *)"abc", 3) <= 0) {
        ERR_print_errors_fp(stderr);
        return 1;
    }
    printf("signed\n");
    fflush(stdout);
    if (setrlimit(RLIMIT_CORE, &rl) != 0 || chdir(argv[2]) != 0)
        return 2;
    abort(); /* a core of a process that holds a released key in use */
}
'''


def private_parts(key):
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return {"d": key.private_numbers().private_value}
    n = key.private_numbers()
    return {"d": n.d, "p": n.p, "q": n.q, "dP": n.dmp1, "dQ": n.dmq1, "qInv": n.iqmp}


def in_core(core, value):
    """The value as a big-endian byte string or as a BIGNUM (64-bit limbs, least significant first,
    i.e. little-endian bytes), by its 24 most significant bytes' worth of either layout."""
    be = int_bytes(value)
    le = value.to_bytes(len(be), "little")
    return be[:24] in core or le[-24:] in core


@pytest.mark.skipif(not os.path.exists("/proc/sys/kernel/core_pattern") or
                    open("/proc/sys/kernel/core_pattern").read().strip() not in ("core", "core.%p"),
                    reason="core_pattern does not write a plain core file here")
@pytest.mark.parametrize("kind,form", [
    # EC keys are parsed in place into a secure-heap scalar (kg_wrap.c): nothing in the core, from
    ("p256", None),  # PKCS#8 (the Vault key manager),
    ("p256", "full"),  # SEC1 with its curve and public key (KMIP),
    ("p256", "bare"),  # SEC1 scalar alone: curve from the reference, public point computed (KMIP)
    pytest.param("rsa2048", None, marks=pytest.mark.xfail(strict=True, reason=(
        "KNOWN LEAK (issue 9): OpenSSL 3.0's RSA keeps Montgomery contexts of p and q (and the "
        "PKCS#8 decoder's uncleared DER copy) in ordinary heap while the key lives, so RSA private "
        "components are in a core dump. Disable core dumps for servers holding keygate RSA keys "
        "(LimitCORE=0); remove this marker when the RSA key path is fixed."))),
])
def test_core_dump_holds_no_private_key(keygate_bin, build_dir, kbs_stack, tmp_path, kind, form):
    """The issue's promise: keys live in OpenSSL's secure heap (MADV_DONTDUMP) and every plaintext
    copy is zeroized, so a forced core of a process using a released key holds none of its
    private components, while its public point/modulus (ordinary heap) is there -- which shows
    the search works. RSA still fails (see its xfail reason); the test stays to prove the fix."""
    site = Site(keygate_bin, build_dir, kbs_stack, tmp_path, kinds=(kind,),
                kbs=kmip_kbs(kbs_stack, form) if form else "kbs")
    src, exe = tmp_path / "dumper.c", tmp_path / "dumper"
    src.write_text(CORE_DUMPER)
    assert run(["cc", "-o", str(exe), str(src), "-lssl", "-lcrypto"]).returncode == 0
    for kind, key in site.keys.items():
        cores = tmp_path / f"cores-{kind}"
        cores.mkdir()
        r = run([str(exe), str(site.refs[kind]), str(cores)], env=site.env, timeout=120)
        assert r.returncode < 0 and "signed" in r.stdout, r.stderr  # killed by SIGABRT after signing
        files = list(cores.iterdir())
        assert len(files) == 1, files
        core = files[0].read_bytes()
        pub = key.public_key().public_numbers()
        public = pub.n if kind.startswith("rsa") else pub.x
        assert in_core(core, public), f"{kind}: public part not found: the search is broken"
        leaked = [part for part, value in private_parts(key).items() if in_core(core, value)]
        assert leaked == [], f"{kind}: private {leaked} in the core dump"


# ------------------------------------------------------------------ the ITA API key in a core

def _token_waiting_for_jwks(keygate_bin, stack, tmp_path, cwd):
    """`keygate token` stopped between its API-key requests and the end: the JWKS reply is held
    back, so when /appraisal/v1/attest has been answered (nonce and attest, the two requests
    that carry the key, are done) keygate waits on /certs. Returns the Popen, core limit
    unlimited, working directory cwd (where the kernel writes a "core" file here)."""
    stack.set_faults("ita", [{"route": "^/certs$", "mode": "delay", "seconds": 30}])
    conf = write_keygate_conf(stack, tmp_path / "core.conf", retry_max=0, timeout_ms=60000)
    unlimited = (resource.RLIM_INFINITY, resource.RLIM_INFINITY)
    p = subprocess.Popen([keygate_bin, "-c", str(conf), "token"], cwd=cwd, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_CORE, unlimited))
    deadline = time.monotonic() + 30
    while not any(r["path"].endswith("/attest") for r in stack.requests("ita")):
        assert p.poll() is None and time.monotonic() < deadline, "keygate token never reached attest"
        time.sleep(0.05)
    time.sleep(0.5)  # into the JWKS request
    assert p.poll() is None
    return p


def _stop(p):
    if p.poll() is None:
        p.kill()
    p.wait(timeout=30)


@pytest.mark.skipif(not os.path.exists("/proc/sys/kernel/core_pattern") or
                    open("/proc/sys/kernel/core_pattern").read().strip() not in ("core", "core.%p"),
                    reason="core_pattern does not write a plain core file here")
def test_keygate_cli_writes_no_core(keygate_bin, ita_stack, tmp_path):
    """keygate is not dumpable (PR_SET_DUMPABLE 0): a SIGABRT after its API-key requests leaves
    no core. Control: sleep(1), aborted the same way in the same directory, leaves one."""
    control, cores = tmp_path / "control", tmp_path / "cores"
    control.mkdir()
    cores.mkdir()
    unlimited = (resource.RLIM_INFINITY, resource.RLIM_INFINITY)
    s = subprocess.Popen(["sleep", "60"], cwd=control,
                         preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_CORE, unlimited))
    time.sleep(0.2)
    s.send_signal(signal.SIGABRT)
    s.wait(timeout=30)
    assert list(control.iterdir()) != [], "the control wrote no core: the check is broken"
    p = _token_waiting_for_jwks(keygate_bin, ita_stack, tmp_path, cores)
    try:
        p.send_signal(signal.SIGABRT)
        assert p.wait(timeout=30) == -signal.SIGABRT
    finally:
        _stop(p)
    files = list(cores.iterdir())
    key = pki.api_key(ita_stack.state_dir).encode()
    assert files == [], f"keygate wrote a core ({[f.read_bytes().count(key) for f in files]} API key copies)"


@pytest.mark.skipif(shutil.which("gcore") is None, reason="gcore (gdb) is not installed: scripts/setup.sh")
def test_core_of_keygate_token_holds_no_freed_api_key(keygate_bin, ita_stack, tmp_path):
    """A core taken with gcore (root's ptrace, so not stopped by non-dumpability; like the kernel
    it leaves out the secure heap's MADV_DONTDUMP pages) of `keygate token` while ITA holds back
    its attest reply: the nonce request is over, the attest request is sent. The API key is
    found only where the request in flight needs it (libcurl's header list entry, and the
    request libcurl built, which it keeps for HTTPS until the exchange ends); the finished nonce
    request left no copy: keygate wipes its header lists and the CLI has libcurl wipe what it
    frees (on d061f19: 4 to 6 copies, freed nonce and attest request buffers). The configured
    ITA URL is found, which shows the search works."""
    ita_stack.set_faults("ita", [{"route": "/attest$", "mode": "delay", "seconds": 30}])
    conf = write_keygate_conf(ita_stack, tmp_path / "core.conf", retry_max=0, timeout_ms=60000)
    p = subprocess.Popen([keygate_bin, "-c", str(conf), "token"], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not any(r["path"].endswith("/nonce") for r in ita_stack.requests("ita")):
            assert p.poll() is None and time.monotonic() < deadline, "keygate token never got a nonce"
            time.sleep(0.05)
        time.sleep(1.0)  # evidence (sim), then the attest request, held by the stack
        assert p.poll() is None
        r = run(["gcore", "-o", str(tmp_path / "gcore"), str(p.pid)], timeout=120)
    finally:
        _stop(p)
    files = list(tmp_path.glob("gcore*"))
    assert r.returncode == 0 and len(files) == 1, (r.stdout, r.stderr)
    core = files[0].read_bytes()
    assert ita_stack.services["ita"].url.encode() in core, "the search is broken"
    key = pki.api_key(ita_stack.state_dir).encode()
    copies = [m.start() for m in re.finditer(re.escape(key), core)]
    # what each copy is: the in-flight request's header list entry, its request as libcurl
    # built it ("POST /appraisal/v1/attest ..." a few header lines before), or anything else
    # (the finished nonce request, a freed buffer)
    header = [i for i in copies if core[i - 11:i] == b"x-api-key: " and core[i + len(key)] == 0]
    inflight = [i for i in copies if b"POST /appraisal/v1/attest HTTP/1.1\r\n" in core[max(0, i - 160):i]]
    other = [core[max(0, i - 60):i + len(key) + 4] for i in copies if i not in header + inflight]
    assert len(header) <= 1 and len(inflight) <= 1 and other == [], \
        f"{len(copies)} copies of the ITA API key in the core; not of the request in flight: {other}"
