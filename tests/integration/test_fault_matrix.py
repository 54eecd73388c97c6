# SPDX-License-Identifier: Apache-2.0
"""Fault matrix: every fault mode of the local stack through every front end.

One table of faults (FAULTS) times one table of front ends (FRONT_ENDS). For each pair the test
sets the fault on the session stack (ITA + Intel-KBS stand-ins), runs the front end once against
one key reference and asserts:

* the outcome: ``recover`` (the retries absorb a single 503/429/..., the key is released) or
  ``fail`` (no key);
* that a failure names the pipeline step (``keygate: [key ID: ]<step>: <cause>``) in the front
  end's own error channel: the CLI's one error line and exit code, openssl's stderr, nginx's
  error log next to "cannot load certificate key", the PKCS#11 module's CKR (CKR_DEVICE_ERROR
  when a service fails, CKR_FUNCTION_FAILED when our checks refuse) and its KEYGATE_DEBUG line;
* that it finishes within a bound derived from the test configuration (timeout_ms, retry_max,
  retry_wait_*_ms), and for 429 + Retry-After not before the server asked;
* that no key is present afterwards: nothing printed, no PEM written, nginx not serving, no
  signature (and a signature made is checked against the reference's public key);
* that the fault really fired (the service's request log shows it), so no row passes by accident.

A front end is one object with ``name`` (test id), ``label`` (column of the docs table), ``overhead_s``
(its own start-up cost, added to every bound), ``run(stack, ref) -> Result(rc, stderr, elapsed,
key_present)`` and ``error_line(stack, result, step) -> str`` (asserts the front end's own
failure signal and returns the line that must name the step); ``stack`` is the MatrixStack
(.conf = keygate.conf for KEYGATE_CONF, .env = OPENSSL_CONF, .build_dir, .tmp, .cert, .key_id,
.pub_pem). Add one to FRONT_ENDS and every fault runs through it. The "Fault matrix" table of
docs/robustness.md is generated from these tables:
    /usr/bin/python3 tests/integration/test_fault_matrix.py --update
and test_docs_table_matches_the_test_table keeps it from drifting.
"""
import hashlib
import os
import pathlib
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
if __name__ == "__main__":  # run as a script to update the docs table
    sys.path[:0] = [str(REPO), str(REPO / "tests" / "integration")]

from conftest import kbs_conf, run  # noqa: E402
from kglib import NGINX, new_key, nginx_conf, openssl_cnf, pub_pem, register

# The keygate.conf timing of every row: small, so that the whole matrix stays fast, and the
# source of every time bound below.
CFG = {"timeout_ms": 1000, "retry_max": 1, "retry_wait_min_ms": 50, "retry_wait_max_ms": 1500}
# One release (RSA-3072 wrapping key, whose two-prime generation alone can take seconds under
# load; attestation in the Python stand-ins; transfer) plus the front end's process start, on the shared 2-core machine; the faults add to it.
RELEASE_S = 12.0
RETRY_AFTER_S = 1
SLOW_S = 30  # a "slow" reply takes this long: far past timeout_ms and past every bound below
# The "slow" rows wait out every attempt: they run with half of CFG's timeout_ms (still far above
# what one request of a healthy release takes), which saves a second per cell.
SLOW_TIMEOUT_MS = 500


def attempts():
    return CFG["retry_max"] + 1  # retry_max counts retries after the first attempt


def backoff_s():
    """The longest the client may sleep between its attempts of one request (kg_http.c:
    exponential with full jitter, uniform in [min, min(max, min * 2^attempt)])."""
    lo, hi = CFG["retry_wait_min_ms"], CFG["retry_wait_max_ms"]
    return sum(min(hi, lo << a) for a in range(1, attempts())) / 1000


def per_try_s(timeout_ms=None):
    return (timeout_ms or CFG["timeout_ms"]) / 1000


# ------------------------------------------------------------------------------------ faults

@dataclass(frozen=True)
class Fault:
    """One row: what to inject and what must come of it.

    service/faults: fault objects for the control API of that service (tests/stack/server.py,
    ita.py, kbs.py); conf: keygate.conf overrides (``DEAD`` = the URL of a port nobody listens
    on); outcome: "recover" or "fail"; step: the step a failure names; needle: a regex the
    error line must contain; extra_s(): the worst time the fault may add to a release;
    min_s: the least time the run may take (Retry-After honoured, timeouts waited out)."""
    name: str
    doc: str
    outcome: str
    service: str = None
    faults: tuple = ()
    conf: tuple = ()
    step: str = ""
    needle: str = ""
    extra_s: object = lambda: 0.0
    min_s: float = 0.0
    fires: object = 1  # requests the fault must answer in one run: an int, or a function of CFG

    @property
    def id(self):
        return self.name


EVERY = 1000  # "every request": a count no run exhausts, so what is left shows how often it fired


def _fault(route, mode, count=EVERY, **params):
    return {"route": route, "mode": mode, "count": count, **params}


ATTEST, NONCE, CERTS, TRANSFER = r"/attest$", r"/nonce$", r"/certs$", r"/transfer$"
AFTER = rf"\(after {attempts()} attempts\)"  # what kg_http says once the retries are spent
DEAD = "DEAD"  # replaced by the dead URL of the module


def _retries_only():
    return backoff_s()


def _slow():
    return attempts() * per_try_s(SLOW_TIMEOUT_MS) + backoff_s()


def _status_rows(service, route, step, what):
    rows = [Fault(f"{service}_503_once", f"{what}: one 503, then normal", "recover", service,
                  (_fault(route, "status", 1, status=503),), extra_s=_retries_only)]
    for status in (500, 503, 504):
        rows.append(Fault(f"{service}_{status}", f"{what}: HTTP {status} on every attempt", "fail", service,
                          (_fault(route, "status", status=status),), step=step, needle=rf"HTTP {status}\b",
                          fires=attempts, extra_s=_retries_only))
    rows += [
        Fault(f"{service}_429_retry_after", f"{what}: one 429 with Retry-After: {RETRY_AFTER_S}", "recover",
              service, (_fault(route, "status", 1, status=429, headers={"Retry-After": str(RETRY_AFTER_S)}),),
              extra_s=lambda: min(RETRY_AFTER_S, CFG["retry_wait_max_ms"] / 1000),
              min_s=min(RETRY_AFTER_S, CFG["retry_wait_max_ms"] / 1000)),
        Fault(f"{service}_slow", f"{what}: reply after {SLOW_S} s (past timeout_ms = {SLOW_TIMEOUT_MS})", "fail",
              service, (_fault(route, "delay", seconds=SLOW_S),), conf=(("timeout_ms", SLOW_TIMEOUT_MS),), step=step,
              needle=r"Timeout was reached.*" + AFTER, fires=attempts, extra_s=_slow,
              min_s=attempts() * per_try_s(SLOW_TIMEOUT_MS)),  # every attempt waited out its timeout
        Fault(f"{service}_truncated", f"{what}: half the body, then the connection drops", "fail", service,
              (_fault(route, "truncate"),), step=step, needle=r"POST https://127\.0\.0\.1:\d+/.*" + AFTER,
              fires=attempts, extra_s=_retries_only),
        # the attest POST goes over the connection the nonce GET left open; libcurl silently
        # resends a request once when a reused connection dies before any reply byte
        Fault(f"{service}_close", f"{what}: connection closed without a reply", "fail", service,
              (_fault(route, "close"),), step=step, needle=r"POST https://127\.0\.0\.1:\d+/.*" + AFTER,
              fires=(lambda: attempts() + 1) if service == "ita" else attempts, extra_s=_retries_only),
        Fault(f"{service}_64mib", f"{what}: 64 MiB body", "fail", service, (_fault(route, "oversize"),), step=step,
              needle=r"response larger than \d+ bytes"),
        Fault(f"{service}_malformed_json", f"{what}: 200 with a body that is not JSON", "fail", service,
              (_fault(route, "malformed_json"),), step=step, needle=r"reply is not a JSON object"),
        Fault(f"{service}_html_error", f"{what}: 400 HTML page of a load balancer", "fail", service,
              (_fault(route, "html_error"),), step=step, needle=r"HTTP 400\b"),
    ]
    return rows


TOKEN_FAULTS = [
    ("hs256", "HS256 token (alg confusion with the leaf public key)", r"alg 'HS256' is not allowed"),
    ("alg_none", "alg none, empty signature", r"alg 'none' is not allowed"),
    ("expired", "exp in the past", r"token expired at"),
    ("not_yet_valid", "nbf/iat an hour ahead", r"not valid before|issued in the future"),
    ("foreign_root", "signed by a chain under another root", r"certificate chain to the pinned root"),
    ("revoked_leaf", "signed by a leaf the CRL lists", r"certificate revoked"),
    ("tampered", "payload changed after signing", r"token signature does not verify"),
    ("wrong_nonce", "verifier_nonce is another nonce", r"verifier_nonce is not the nonce we fetched"),
    ("no_nonce_echo", "no verifier_nonce echo (a v1 token must echo it; v2: docs/protocols/ita-api.md §8)",
     r"token has no verifier_nonce"),
    ("wrong_held_data", "attester_held_data is not our wrapping key", r"attester_held_data is not our user data"),
    ("debug_td", "claims say the TD is debuggable", r"allow_debug_td = no"),
]

KBS_FAULTS = [
    ("wrong_key", "releases another key of the same type", "match", r"not the reference's"),
    ("wrong_scalar", "releases the right public key with another private key", "unwrap",
     r"the released private key does not match its own public key"),
    ("corrupt_wrap", "wrapped_key ciphertext flipped", "unwrap", r"AES-256-GCM authentication"),
    ("corrupt_swk", "wrapped_swk flipped", "unwrap", r"wrapped_swk does not decrypt"),
    ("bad_header", "wrapped_key header lies about its lengths", "unwrap", r"wrapped_key header"),
    ("deny", "policy denial (401)", "transfer", r"HTTP 401\b"),
    ("not_found", "unknown key (404)", "transfer", r"HTTP 404\b"),
]

FAULTS = [
    Fault("ita_down", "ITA not listening", "fail", conf=(("ita_api_url", DEAD), ("ita_base_url", DEAD)),
          step="nonce", needle=r"GET https://127\.0\.0\.1:\d+/appraisal/v2/nonce: Couldn't connect.*" + AFTER,
          extra_s=_retries_only),
    Fault("kbs_down", "KBS not listening", "fail", conf=(("kbs_url", DEAD),), step="transfer",
          needle=r"POST https://127\.0\.0\.1:\d+/kbs/v1/keys/[0-9a-f-]+/transfer: Couldn't connect.*" + AFTER,
          extra_s=_retries_only),
    Fault("nonce_503_once", "ITA nonce: one 503, then normal", "recover", "ita",
          (_fault(NONCE, "status", 1, status=503),), extra_s=_retries_only),
    Fault("nonce_malformed_json", "ITA nonce: 200 with a body that is not JSON", "fail", "ita",
          (_fault(NONCE, "malformed_json"),), step="nonce", needle=r"reply is not a JSON object"),
    *_status_rows("ita", ATTEST, "token", "ITA attest"),
    Fault("ita_unknown_fields", "ITA attest: reply has an extra top-level field (tolerated)", "recover", "ita",
          (_fault(ATTEST, "unknown_fields"),)),
    *[Fault(f"token_{mode}", f"forged token: {doc}", "fail", "ita", (_fault(ATTEST, mode),), step="verify",
            needle=needle) for mode, doc, needle in TOKEN_FAULTS],
    Fault("jwks_503_once", "ITA JWKS: one 503, then normal", "recover", "ita", (_fault(CERTS, "status", 1, status=503),),
          extra_s=_retries_only),
    Fault("jwks_malformed_json", "ITA JWKS: 200 with a body that is not JSON", "fail", "ita",
          (_fault(CERTS, "malformed_json"),), step="verify", needle=r"JWKS is not a JSON object"),
    *_status_rows("kbs", TRANSFER, "transfer", "KBS transfer"),
    Fault("kbs_unknown_fields", "KBS transfer: reply has an extra field (refused, strict schema)", "fail", "kbs",
          (_fault(TRANSFER, "unknown_fields"),), step="transfer", needle=r"unknown field"),
    *[Fault(f"kbs_{mode}", f"KBS: {doc}", "fail", "kbs", (_fault(TRANSFER, mode),), step=step, needle=needle)
      for mode, doc, step, needle in KBS_FAULTS],
    # a 2026 KBS answering as v1.3.0 (a generation flip); the matrix's KBS is v1.3.0 in passport
    # mode, where both generations agree: the flips themselves are test_lease.py's
    Fault("kbs_as_v1_3", "KBS: answers as v1.3.0 (a generation flip; the same answer in passport mode)", "recover",
          "kbs", (_fault(TRANSFER, "as_v1_3"),)),
]

# ------------------------------------------------------------------------------------ front ends


@dataclass
class Result:
    rc: int
    stderr: str
    elapsed: float
    key_present: bool


# "keygate: <step>: ..." (CLI), "...keygate: key ID: <step>: ..." (the provider's error queue, as
# nginx logs it), "keygate[PID] error FILE:LINE: key ID: <step>: ..." (the provider's log line) or
# "keygate[PID] error FILE:LINE: PKCS#11 C_SignInit: key 'LABEL' (ID): <step>: ..." (the PKCS#11 log line)
ERROR_LINE = (r"keygate(?::|\[\d+\] error \S+:) (?:key [0-9a-f-]+: |PKCS#11 \w+: key '[^']*' \([0-9a-f-]+\): )?"
              r"{step}: (?P<cause>.*)")


class CliFrontEnd:
    """`keygate release --ref REF`: exit code = the step's code, one `keygate: <step>: ...` line,
    the public key PEM on stdout only on success."""
    name, label, overhead_s = "cli", "CLI `keygate release`", 0.0

    def run(self, stack, ref):
        t0 = time.monotonic()
        r = run([stack.keygate_bin, "-c", str(stack.conf), "release", "--ref", str(ref)], timeout=120)
        elapsed = time.monotonic() - t0
        return Result(r.returncode, r.stderr, elapsed, "-----BEGIN PUBLIC KEY-----" in r.stdout
                      or "PRIVATE" in r.stdout)

    def error_line(self, stack, result, step):
        lines = [l for l in result.stderr.splitlines() if l.startswith("keygate: ")]
        assert len(lines) == 1, f"the CLI must print exactly one error line: {result.stderr}"
        assert result.rc == STEP_CODES[step], (result.rc, result.stderr)
        return lines[0]


class ProviderFrontEnd:
    """`openssl pkey -in REF -pubout -out F` through keygate.so (OPENSSL_CONF): the release runs
    when openssl loads the private key (release = eager); F is written only on success."""
    name, label, overhead_s = "provider", "provider `openssl pkey`", 0.5

    def run(self, stack, ref):
        out = stack.tmp / "provider-out.pem"
        out.unlink(missing_ok=True)
        t0 = time.monotonic()
        r = run(["openssl", "pkey", "-in", str(ref), "-pubout", "-out", str(out)], env=stack.env, timeout=120)
        elapsed = time.monotonic() - t0
        written = out.exists() and "BEGIN" in out.read_text()
        return Result(r.returncode, r.stderr, elapsed, written or "BEGIN" in r.stdout)

    def error_line(self, stack, result, step):
        assert result.rc != 0, result.stderr
        assert "Could not read key" in result.stderr, result.stderr
        # the step is named in OpenSSL's own error output (ERR_print_errors), not only in keygate's
        # log line: the provider's decoder keeps the cause through OSSL_STORE (provider/decoder.c)
        lines = [l for l in result.stderr.splitlines()
                 if ":error:" in l and ":keygate:" in l and re.search(ERROR_LINE.format(step=r"\S+"), l)]
        assert lines, f"openssl's error output has no keygate error: {result.stderr}"
        return lines[0]


class NginxStartup:
    """nginx 1.22 started (master + 1 worker, daemon off) with ssl_certificate_key = REF: it either
    serves a TLS handshake (key present) or exits with "cannot load certificate key" and the
    keygate error in its error log (not serving afterwards). One prefix per module, a new port and
    a fresh error log per run."""
    name, label, overhead_s = "nginx", "nginx start", 1.0

    def run(self, stack, ref):
        pfx = stack.tmp / "nginx"
        pfx.mkdir(exist_ok=True)
        errlog = pfx / "error.log"
        errlog.unlink(missing_ok=True)
        port = free_port()
        conf = pfx / "nginx.conf"
        conf.write_text(nginx_conf(pfx, port, stack.cert, ref, workers=1))
        t0 = time.monotonic()
        proc = subprocess.Popen([NGINX, "-e", str(errlog), "-p", str(pfx), "-c", str(conf)],
                                env=dict(os.environ, **stack.env), stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        served = False
        try:
            deadline = t0 + 120
            while proc.poll() is None and time.monotonic() < deadline:
                if handshake(port, stack.cert):
                    served = True
                    break
                time.sleep(0.05)
            elapsed = time.monotonic() - t0
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)  # the master we started, by its PID
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            stderr = proc.stderr.read().decode("utf-8", "replace")
            proc.stderr.close()
        log = errlog.read_bytes().decode("utf-8", "replace") if errlog.exists() else ""
        still = handshake(port, stack.cert)  # nothing may serve after a failed start
        rc = 0 if served else proc.returncode
        return Result(rc, stderr + log, elapsed, served or still)

    def error_line(self, stack, result, step):
        assert result.rc != 0, result.stderr
        lines = [l for l in result.stderr.splitlines() if "cannot load certificate key" in l and "[emerg]" in l]
        assert lines, f"nginx did not log the key failure: {result.stderr}"
        return lines[0]


class Pkcs11Sign:
    """`pkcs11-tool --sign` (CKM_ECDSA over a SHA-256 hash) through libkeygate-pkcs11.so, the
    reference listed in pkcs11_keys (KEYGATE_CONF): the release runs at the first private-key
    operation (C_SignInit). A failure is the CKR of the step's class (CKR_DEVICE_ERROR when the
    attestation services fail, CKR_FUNCTION_FAILED when our own checks refuse) and the keygate
    debug log (KEYGATE_DEBUG) names the step; the signature file is written only on success and
    must verify under the reference's public key."""
    name, label, overhead_s = "pkcs11", "PKCS#11 `pkcs11-tool --sign`", 0.5
    CKR = {"nonce": "CKR_DEVICE_ERROR", "evidence": "CKR_DEVICE_ERROR", "token": "CKR_DEVICE_ERROR",
           "transfer": "CKR_DEVICE_ERROR", "verify": "CKR_FUNCTION_FAILED", "unwrap": "CKR_FUNCTION_FAILED",
           "match": "CKR_FUNCTION_FAILED", "config": "CKR_FUNCTION_FAILED"}
    DATA = b"keygate fault matrix"

    def run(self, stack, ref):
        if not shutil.which("pkcs11-tool"):
            pytest.skip("opensc (pkcs11-tool) is needed")
        p11 = stack.tmp / "pkcs11"
        p11.mkdir(exist_ok=True)
        conf, tbs, sig, log = (p11 / n for n in ("keygate.conf", "tbs.bin", "sig.bin", "debug.log"))
        conf.write_text(stack.conf.read_text() + f"pkcs11_keys = matrix:{ref}\n")
        tbs.write_bytes(hashlib.sha256(self.DATA).digest())
        for f in (sig, log):
            f.unlink(missing_ok=True)
        env = {"KEYGATE_CONF": str(conf), "KEYGATE_DEBUG": f"{log}:0"}
        if os.environ.get("KEYGATE_ASAN_PRELOAD"):
            env["LD_PRELOAD"] = os.environ["KEYGATE_ASAN_PRELOAD"]
        t0 = time.monotonic()
        r = run(["pkcs11-tool", "--module", str(stack.build_dir / "pkcs11" / "libkeygate-pkcs11.so"), "--sign",
                 "--label", "matrix", "-m", "ECDSA", "-i", str(tbs), "-o", str(sig)], env=env, timeout=120)
        elapsed = time.monotonic() - t0
        signed = sig.exists() and sig.stat().st_size > 0
        if signed:  # a signature is only "a key" if it is the reference's key that made it
            from cryptography.hazmat.primitives import hashes, serialization
            from cryptography.hazmat.primitives.asymmetric import ec, utils
            s = sig.read_bytes()
            der = utils.encode_dss_signature(int.from_bytes(s[:32], "big"), int.from_bytes(s[32:], "big"))
            serialization.load_pem_public_key(stack.pub_pem.encode()).verify(der, self.DATA, ec.ECDSA(hashes.SHA256()))
        text = log.read_text(errors="replace") if log.exists() else ""
        return Result(r.returncode, r.stderr + text, elapsed, signed)

    def error_line(self, stack, result, step):
        assert result.rc != 0, result.stderr
        want = self.CKR[step]
        assert re.search(rf"C_SignInit failed: rv = {want} \(0x", result.stderr), f"not {want}: {result.stderr}"
        lines = [l for l in result.stderr.splitlines() if "PKCS#11 C_SignInit: key 'matrix'" in l]
        assert len(lines) == 1, f"the debug log must name the failure once: {result.stderr}"
        return lines[0]


FRONT_ENDS = [CliFrontEnd(), ProviderFrontEnd(), NginxStartup(), Pkcs11Sign()]

STEP_CODES = {"config": 10, "wrapping-key": 11, "nonce": 12, "evidence": 13, "token": 14, "verify": 15,
              "transfer": 16, "unwrap": 17, "handover": 18, "internal": 19, "match": 20}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def handshake(port, cafile):
    ctx = ssl.create_default_context(cafile=str(cafile))
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost"):
                return True
    except (OSError, ssl.SSLError):
        return False


# ------------------------------------------------------------------------------------ the stack


class MatrixStack:
    """The session stack with one registered P-256 key, its reference, a certificate for nginx,
    a keygate.conf rewritten per row (CFG + the row's overrides) and an openssl.cnf loading
    keygate.so with it."""

    def __init__(self, stack, build_dir, keygate_bin, tmp):
        from cryptography.hazmat.primitives import serialization

        self.stack, self.tmp, self.keygate_bin, self.build_dir = stack, tmp, keygate_bin, build_dir
        key = new_key("p256")
        self.key_id = register(stack, key)
        self.pub_pem = pub_pem(key)
        self.conf = tmp / "keygate.conf"
        self.configure()
        pub = tmp / "pub.pem"
        pub.write_text(self.pub_pem)
        self.ref = tmp / "key.ref.pem"
        r = run([keygate_bin, "-c", str(self.conf), "ref", "create", "--key-id", self.key_id, "--pubkey", str(pub),
                 "-o", str(self.ref)])
        assert r.returncode == 0, r.stderr
        self.cnf = openssl_cnf(build_dir, tmp / "openssl.cnf", self.conf)
        self.env = {"OPENSSL_CONF": str(self.cnf)}
        if os.environ.get("KEYGATE_ASAN_PRELOAD"):
            self.env["LD_PRELOAD"] = os.environ["KEYGATE_ASAN_PRELOAD"]
        self.cert = tmp / "cert.pem"
        self.cert.write_bytes(self_signed(key).public_bytes(serialization.Encoding.PEM))
        # a port that is bound but never listens: connections to it are refused, and nobody
        # else can take it while the module runs
        self.dead_sock = socket.socket()
        self.dead_sock.bind(("127.0.0.1", 0))
        self.dead_url = "https://127.0.0.1:%d" % self.dead_sock.getsockname()[1]
        self.cleaned = False

    def configure(self, **overrides):
        keys = dict(CFG)
        keys.update({k: (self.dead_url if v == DEAD else v) for k, v in overrides.items()})
        kbs_conf(self.stack, self.conf, **keys)

    def close(self):
        self.dead_sock.close()


def self_signed(key):
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID
    import ipaddress

    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))


@pytest.fixture(scope="module")
def matrix(session_kbs_stack, build_dir, keygate_bin, tmp_path_factory):
    m = MatrixStack(session_kbs_stack, build_dir, keygate_bin, tmp_path_factory.mktemp("fault-matrix"))
    yield m
    m.close()


@pytest.fixture
def clean(matrix):
    """Every row starts with no fault set (the module starts clean, each row clears what it set)
    and the default keygate.conf."""
    if not matrix.cleaned:
        for svc in ("ita", "kbs"):
            matrix.stack.clear_faults(svc)
        matrix.cleaned = True
    yield matrix
    matrix.configure()


# ------------------------------------------------------------------------------------ the test


@pytest.mark.parametrize("front", FRONT_ENDS, ids=lambda f: f.name)
@pytest.mark.parametrize("fault", FAULTS, ids=lambda f: f.id)
def test_fault(clean, fault, front):
    m = clean
    m.configure(**dict(fault.conf))
    if fault.service:
        m.stack.set_faults(fault.service, list(fault.faults))
    try:
        result = front.run(m, m.ref)
    finally:
        left = []
        if fault.service:
            left = m.stack.control(fault.service, "GET", "/_stack/faults")["faults"]
            m.stack.clear_faults(fault.service)
    bound = RELEASE_S + front.overhead_s + fault.extra_s()
    context = f"{fault.name} via {front.name}: rc={result.rc} elapsed={result.elapsed:.2f}s\n{result.stderr}"

    if fault.outcome == "recover":
        assert result.rc == 0 and result.key_present, context
    else:
        assert not result.key_present, "a key is present after a failed release: " + context
        line = front.error_line(m, result, fault.step)
        found = re.search(ERROR_LINE.format(step=re.escape(fault.step)), line)
        assert found, f"the error does not name the step {fault.step!r}: {line}\n{context}"
        assert re.search(fault.needle, found.group("cause")), f"cause does not match {fault.needle!r}: {line}"
    assert result.elapsed <= bound, f"took {result.elapsed:.2f} s, bound {bound:.2f} s: {context}"
    assert result.elapsed >= fault.min_s, f"returned before {fault.min_s:.2f} s (Retry-After, timeouts): {context}"

    if fault.service:  # the fault fired, as often as the retry settings allow (no more, no less)
        injected = fault.faults[0]
        remaining = sum(f["count"] for f in left if f["mode"] == injected["mode"])
        fired = injected["count"] - remaining
        want = fault.fires() if callable(fault.fires) else fault.fires
        assert fired == want, f"fault {injected['mode']} answered {fired} requests, expected {want}: {context}"


# ------------------------------------------------------------------------------- the docs table

DOC = REPO / "docs" / "robustness.md"  # its "Fault matrix" section holds the generated table
TABLE_BEGIN, TABLE_END = "<!-- fault-matrix:begin -->\n", "<!-- fault-matrix:end -->"


def docs_table():
    head = "| fault | what the stand-in does | " + " | ".join(f.label for f in FRONT_ENDS) + " |"
    rows = [head, "|" + " --- |" * (2 + len(FRONT_ENDS))]
    for f in FAULTS:
        cell = "✅ recovers" if f.outcome == "recover" else f"✅ fails at `{f.step}`"
        rows.append(f"| `{f.name}` | {f.doc} | " + " | ".join([cell] * len(FRONT_ENDS)) + " |")
    return "\n".join(rows) + "\n"


def test_docs_table_matches_the_test_table():
    text = DOC.read_text()
    assert TABLE_BEGIN in text and TABLE_END in text, f"{DOC} lacks the fault-matrix markers"
    table = text[text.index(TABLE_BEGIN) + len(TABLE_BEGIN):text.index(TABLE_END)]
    assert table == docs_table(), f"the fault matrix in {DOC} is stale: run " \
        "/usr/bin/python3 tests/integration/test_fault_matrix.py --update"


def test_every_stand_in_fault_mode_is_in_the_matrix():
    """A fault mode added to a stand-in must get a row here."""
    from tests.stack import ita, kbs, server

    used = {f["mode"] for row in FAULTS for f in row.faults}
    declared = set(server.GENERIC_FAULTS)
    declared |= set(re.findall(r"^    (\w+)\s{2,}", ita.__doc__.split("Service-specific faults")[1], re.M))
    declared |= set(re.findall(r"^    (\w+)\s{2,}", kbs.__doc__.split("KBS-specific faults")[1], re.M))
    assert declared - used == set(), f"fault modes without a matrix row: {declared - used}"


if __name__ == "__main__":
    if "--update" in sys.argv:
        text = DOC.read_text()
        a, b = text.index(TABLE_BEGIN) + len(TABLE_BEGIN), text.index(TABLE_END)
        DOC.write_text(text[:a] + docs_table() + text[b:])
    else:
        sys.stdout.write(docs_table())
