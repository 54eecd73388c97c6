# SPDX-License-Identifier: Apache-2.0
"""The provider's errors in OpenSSL's own error output, not only in keygate's log.

Each test sets a fault on the local stack, runs the real tool (`openssl pkey`, `openssl pkeyutl`,
nginx) with KEYGATE_DEBUG unset and looks for the line OpenSSL prints for keygate's error, with
ERR_print_errors (openssl):

    <thread>:error:<code>:keygate:<function>:<reason string>:<file>:<line>:keygate: key <id>: <step>: <cause>

or ngx_ssl_error (nginx's error log, next to "cannot load certificate key"):

    error:<code>:keygate:<function>:<reason string>:keygate: key <id>: <step>: <cause>

The reason string must be the one docs/man/keygate-provider.7.md lists for the failed step, and
the cause must carry the URL, HTTP status and request-id of the failed exchange. keygate's own
log line ("keygate[PID] error FILE:LINE: ...", on stderr at error level) does not count.
"""
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess

import pytest

from conftest import kbs_conf, run
from kglib import new_key, openssl_cnf, pub_pem, register

REPO = pathlib.Path(__file__).resolve().parents[2]
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
MAN = REPO / "docs" / "man" / "keygate-provider.7.md"
# a small, fast configuration: every fault below fails within a few seconds
CFG = {"timeout_ms": 2000, "retry_max": 2, "retry_wait_min_ms": 50, "retry_wait_max_ms": 200}
TRANSFER, ATTEST = r"/transfer$", r"/attest$"


def documented_reasons():
    """{code: reason string} from the man page's Errors section ("CODE `STRING`" terms)."""
    text = MAN.read_text()
    section = text[text.index("# Errors"):]
    section = section[:section.index("\n# ", 1)]
    table = {int(c): s for c, s in re.findall(r"^(\d+) `([^`]+)`$", section, re.M)}
    assert table, "docs/man/keygate-provider.7.md lists no reason codes"
    return table


STEP_CODES = {"config": 10, "wrapping-key": 11, "nonce": 12, "evidence": 13, "token": 14, "verify": 15,
              "transfer": 16, "unwrap": 17, "handover": 18, "internal": 19, "match": 20}


def err_lines(text):
    """The keygate errors OpenSSL printed: (reason string, data) of each
    `...:error:CODE:keygate:FUNC:REASON:FILE:LINE:DATA` (ERR_print_errors) or
    `error:CODE:keygate:FUNC:REASON:DATA` (ERR_error_string_n + data, as nginx logs it)."""
    out = []
    for m in re.finditer(r"error:[0-9A-F]{8}:keygate:[^:\n]*:(?P<reason>[^:\n]+):"
                         r"(?:(?P<file>[^:\n]+\.c):(?P<line>\d+):)?(?P<data>[^\n]*?)(?=\)?$| error:|\n)",
                         text, re.M):
        out.append((m.group("reason"), m.group("data")))
    return out


def assert_step_error(text, step, key_id, cause):
    """OpenSSL's output names the step's documented reason and carries keygate's message."""
    reason = documented_reasons()[STEP_CODES[step]]
    lines = err_lines(text)
    assert lines, f"no keygate error in OpenSSL's error output:\n{text}"
    hits = [d for r, d in lines if r == reason]
    assert hits, f"no error with the reason {reason!r} for step {step}: {lines}\n{text}"
    want = rf"keygate: key {re.escape(key_id)}: {re.escape(step)}: (?P<cause>.*)"
    found = [re.search(want, d) for d in hits]
    found = [f for f in found if f]
    assert found, f"the {reason!r} error does not carry keygate's message for {step}: {hits}"
    assert any(re.search(cause, f.group("cause")) for f in found), \
        f"cause does not match {cause!r}: {[f.group('cause') for f in found]}"


# ------------------------------------------------------------------------------------ the stack


class ErrSite:
    """Two keys (P-256, RSA-2048) registered in the session KBS, their references, and two
    openssl.cnf: release = eager (the default) and release = lazy."""

    def __init__(self, stack, build_dir, keygate_bin, tmp):
        self.stack, self.tmp, self.build_dir = stack, tmp, build_dir
        self.ids, self.refs, self.keys = {}, {}, {}
        self.conf = tmp / "keygate.conf"
        self.lazy_conf = tmp / "keygate-lazy.conf"
        kbs_conf(stack, self.conf, **CFG)
        kbs_conf(stack, self.lazy_conf, release="lazy", **CFG)
        for kind in ("p256", "rsa2048"):
            key = new_key(kind)
            self.keys[kind] = key
            self.ids[kind] = register(stack, key)
            pub = tmp / f"{kind}.pub.pem"
            pub.write_text(pub_pem(key))
            self.refs[kind] = tmp / f"{kind}.ref.pem"
            r = run([keygate_bin, "-c", str(self.conf), "ref", "create", "--key-id", self.ids[kind], "--pubkey",
                     str(pub), "-o", str(self.refs[kind])])
            assert r.returncode == 0, r.stderr
        self.env = self._env(openssl_cnf(build_dir, tmp / "openssl.cnf", self.conf))
        self.lazy_env = self._env(openssl_cnf(build_dir, tmp / "openssl-lazy.cnf", self.lazy_conf))

    @staticmethod
    def _env(cnf):
        env = {"OPENSSL_CONF": str(cnf)}
        if os.environ.get("KEYGATE_ASAN_PRELOAD"):
            env["LD_PRELOAD"] = os.environ["KEYGATE_ASAN_PRELOAD"]
        return env

    def openssl(self, *args, lazy=False):
        r = run(["openssl", *map(str, args)], env=self.lazy_env if lazy else self.env, timeout=120)
        assert "KEYGATE_DEBUG" not in os.environ or "debug" not in r.stderr
        return r


@pytest.fixture(scope="module")
def esite(session_kbs_stack, build_dir, keygate_bin, tmp_path_factory):
    return ErrSite(session_kbs_stack, build_dir, keygate_bin, tmp_path_factory.mktemp("provider-errors"))


@pytest.fixture
def fault(esite):
    """fault(service, route, mode, **params): sets one fault on every request of the route for
    the test; cleared (and checked to have fired) at teardown."""
    set_on = []

    def put(service, route, mode, **params):
        esite.stack.set_faults(service, [{"route": route, "mode": mode, "count": 1000, **params}])
        set_on.append(service)

    yield put
    for service in set_on:
        left = esite.stack.control(service, "GET", "/_stack/faults")["faults"]
        esite.stack.clear_faults(service)
        assert left and left[0]["count"] < 1000, f"the {service} fault never fired"


# (fault service, route, mode, params, step, cause): the cause carries URL, HTTP status, request-id
FAULTS = {
    "kbs_deny": ("kbs", TRANSFER, "deny", {}, "transfer",
                 r"^POST https://127\.0\.0\.1:\d+/kbs/v1/keys/{id}/transfer: HTTP 401\b"),
    # ITA's error replies carry request-id and trace-id headers
    "ita_500": ("ita", ATTEST, "status", {"status": 500, "headers": {"request-id": "req-kg-500",
                                                                       "trace-id": "trace-kg-500"}}, "token",
                r"^POST https://127\.0\.0\.1:\d+/appraisal/v\d/attest: HTTP 500, request-id req-kg-500, "
                r"trace-id trace-kg-500"),
    "token_tampered": ("ita", ATTEST, "tampered", {}, "verify", r"token signature does not verify"),
    "kbs_wrong_key": ("kbs", TRANSFER, "wrong_key", {}, "match", r"not the reference's"),
}


def set_fault(fault, name):
    service, route, mode, params, step, cause = FAULTS[name]
    fault(service, route, mode, **params)
    return step, cause


# ------------------------------------------------------------------------------------ openssl pkey


@pytest.mark.parametrize("name", list(FAULTS))
def test_openssl_pkey_prints_the_step_and_keygates_message(esite, fault, name):
    """`openssl pkey -in REF.pem` loads through OSSL_STORE's file: loader and the decoders; the
    cause must survive the marks OpenSSL's store and decoder set around each attempt."""
    step, cause = set_fault(fault, name)
    key_id = esite.ids["p256"]
    out = esite.tmp / f"pkey-{name}.pem"
    r = esite.openssl("pkey", "-in", esite.refs["p256"], "-pubout", "-out", out)
    assert r.returncode != 0 and not (out.exists() and out.stat().st_size), r.stderr
    assert re.search(r"Could not (read|find private) key", r.stderr), r.stderr  # OpenSSL 3.0 | 3.5
    assert_step_error(r.stderr, step, key_id, cause.format(id=re.escape(key_id)))
    # the cause comes first: no generic "unsupported" hides it
    first = [l for l in r.stderr.splitlines() if ":error:" in l][0]
    assert ":keygate:" in first, r.stderr


def test_openssl_pkey_keygate_uri_prints_the_step(esite, fault):
    """The keygate: store loader (provider/store.c) path."""
    step, cause = set_fault(fault, "kbs_deny")
    key_id = esite.ids["p256"]
    r = esite.openssl("pkey", "-in", f"keygate:{key_id}", "-pubout")
    assert r.returncode != 0 and "BEGIN" not in r.stdout, r.stderr
    assert_step_error(r.stderr, step, key_id, cause.format(id=re.escape(key_id)))


# ------------------------------------------------------------------------------------ openssl pkeyutl


def test_openssl_pkeyutl_sign_lazy_prints_the_step(esite, fault):
    """release = lazy: the key loads without a release; the signature's first use releases, and
    its failure is the signature operation's error (provider/signature.c)."""
    data = esite.tmp / "digest.bin"
    data.write_bytes(os.urandom(32))
    step, cause = set_fault(fault, "kbs_deny")
    key_id = esite.ids["p256"]
    sig = esite.tmp / "sig.bin"
    r = esite.openssl("pkeyutl", "-sign", "-inkey", esite.refs["p256"], "-in", data, "-out", sig, lazy=True)
    assert r.returncode != 0 and not (sig.exists() and sig.stat().st_size), r.stderr
    assert_step_error(r.stderr, step, key_id, cause.format(id=re.escape(key_id)))


def test_openssl_pkeyutl_derive_lazy_prints_the_step(esite, fault):
    """ECDH (provider/keyexch.c) on a lazy key."""
    from cryptography.hazmat.primitives.asymmetric import ec
    peer = esite.tmp / "peer.pub.pem"
    peer.write_text(pub_pem(ec.generate_private_key(ec.SECP256R1())))
    step, cause = set_fault(fault, "ita_500")
    key_id = esite.ids["p256"]
    r = esite.openssl("pkeyutl", "-derive", "-inkey", esite.refs["p256"], "-peerkey", peer, "-out",
                      esite.tmp / "secret.bin", lazy=True)
    assert r.returncode != 0, r.stderr
    assert_step_error(r.stderr, step, key_id, cause.format(id=re.escape(key_id)))


def test_openssl_pkeyutl_decrypt_lazy_prints_the_step(esite, fault):
    """RSA decryption (provider/asym_cipher.c) on a lazy key."""
    ct = esite.tmp / "ct.bin"
    r = run(["openssl", "pkeyutl", "-encrypt", "-pubin", "-inkey", str(esite.tmp / "rsa2048.pub.pem"), "-out",
             str(ct)], input="keygate")
    assert r.returncode == 0, r.stderr
    step, cause = set_fault(fault, "kbs_wrong_key")
    key_id = esite.ids["rsa2048"]
    r = esite.openssl("pkeyutl", "-decrypt", "-inkey", esite.refs["rsa2048"], "-in", ct, lazy=True)
    assert r.returncode != 0 and "keygate" not in r.stdout, r.stderr
    assert_step_error(r.stderr, step, key_id, cause.format(id=re.escape(key_id)))


# ------------------------------------------------------------------------------------ nginx


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not shutil.which("nginx") and not os.path.exists(NGINX), reason="nginx is needed")
@pytest.mark.parametrize("name", ["kbs_deny", "ita_500"])
def test_nginx_error_log_names_the_step(esite, fault, name):
    """nginx (master + worker, daemon off) with ssl_certificate_key = REF: it exits at startup
    with "cannot load certificate key" and OpenSSL's error queue (keygate's error) in its log."""
    pfx = esite.tmp / f"nginx-{name}"
    pfx.mkdir()
    cert = pfx / "cert.pem"
    r = run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", str(pfx / "throwaway.key"), "-subj", "/CN=localhost", "-days", "1", "-out", str(cert)])
    assert r.returncode == 0, r.stderr
    errlog = pfx / "error.log"
    conf = pfx / "nginx.conf"
    p = str(pfx)
    conf.write_text(f"daemon off;\nmaster_process on;\nworker_processes 1;\npid {p}/nginx.pid;\n"
                    f"error_log {p}/error.log info;\nevents {{ worker_connections 16; }}\n"
                    f"http {{\n  access_log {p}/access.log;\n  client_body_temp_path {p}/body;\n"
                    f"  proxy_temp_path {p}/proxy; fastcgi_temp_path {p}/fastcgi; uwsgi_temp_path {p}/uwsgi;\n"
                    f"  scgi_temp_path {p}/scgi;\n  server {{\n    listen 127.0.0.1:{free_port()} ssl;\n"
                    f"    ssl_certificate {cert};\n    ssl_certificate_key {esite.refs['p256']};\n  }}\n}}\n")
    step, cause = set_fault(fault, name)
    env = dict(os.environ, **esite.env)
    env.pop("KEYGATE_DEBUG", None)
    proc = subprocess.Popen([NGINX, "-e", str(errlog), "-p", p, "-c", str(conf)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _, stderr = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)  # the master we started, by its PID: it should have failed
        proc.communicate(timeout=15)
        pytest.fail("nginx started although the release must fail")
    assert proc.returncode != 0
    log = errlog.read_bytes().decode("utf-8", "replace")
    lines = [l for l in log.splitlines() if "cannot load certificate key" in l and "[emerg]" in l]
    assert lines, f"nginx did not log the key failure: {log}\n{stderr.decode(errors='replace')}"
    key_id = esite.ids["p256"]
    assert_step_error(lines[0], step, key_id, cause.format(id=re.escape(key_id)))


# ------------------------------------------------------------------------------------ every operation

PROBE = r'''
/* Calls each operation of keygate.so with a key object that is not keygate's (all zero: no
 * magic) and prints, per call, its result and the errors it raised; then the provider's reason
 * strings, as ERR_reason_error_string gives them. */
#include <openssl/core.h>
#include <openssl/core_dispatch.h>
#include <openssl/err.h>
#include <openssl/provider.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

static OSSL_PROVIDER *prov;
static void *provctx;
static unsigned long lib;
static uint64_t bogus[64]; /* not a keygate key: no magic */

static void (*fn(int op, int id))(void)
{
    int no_cache = 0;
    const OSSL_ALGORITHM *a = OSSL_PROVIDER_query_operation(prov, op, &no_cache);

    for (const OSSL_DISPATCH *d = a != NULL ? a[0].implementation : NULL; d != NULL && d->function_id; d++)
        if (d->function_id == id)
            return d->function;
    return NULL;
}

static void report(const char *what, int ok)
{
    unsigned long e;
    const char *data;
    int flags;

    printf("%s rc=%d\n", what, ok);
    while ((e = ERR_get_error_all(NULL, NULL, NULL, &data, &flags)) != 0) {
        if (lib == 0 && strcmp(ERR_lib_error_string(e) ? ERR_lib_error_string(e) : "", "keygate") == 0)
            lib = (unsigned long)ERR_GET_LIB(e);
        printf("  raised %s: %s: %s\n", ERR_lib_error_string(e) ? ERR_lib_error_string(e) : "?",
               ERR_reason_error_string(e) ? ERR_reason_error_string(e) : "?",
               (flags & ERR_TXT_STRING) ? data : "");
    }
}

int main(void)
{
    void *ctx;

    if ((prov = OSSL_PROVIDER_load(NULL, "keygate")) == NULL) {
        ERR_print_errors_fp(stderr);
        return 1;
    }
    provctx = OSSL_PROVIDER_get0_provider_ctx(prov);
    ERR_clear_error();

    ctx = ((OSSL_FUNC_signature_newctx_fn *)fn(OSSL_OP_SIGNATURE, OSSL_FUNC_SIGNATURE_NEWCTX))(provctx, NULL);
    report("signature sign_init", ((OSSL_FUNC_signature_sign_init_fn *)fn(OSSL_OP_SIGNATURE,
           OSSL_FUNC_SIGNATURE_SIGN_INIT))(ctx, bogus, NULL));
    report("signature verify_init", ((OSSL_FUNC_signature_verify_init_fn *)fn(OSSL_OP_SIGNATURE,
           OSSL_FUNC_SIGNATURE_VERIFY_INIT))(ctx, bogus, NULL));
    report("signature digest_sign_init", ((OSSL_FUNC_signature_digest_sign_init_fn *)fn(OSSL_OP_SIGNATURE,
           OSSL_FUNC_SIGNATURE_DIGEST_SIGN_INIT))(ctx, "SHA256", bogus, NULL));
    report("signature digest_verify_init", ((OSSL_FUNC_signature_digest_verify_init_fn *)fn(OSSL_OP_SIGNATURE,
           OSSL_FUNC_SIGNATURE_DIGEST_VERIFY_INIT))(ctx, "SHA256", bogus, NULL));
    ((OSSL_FUNC_signature_freectx_fn *)fn(OSSL_OP_SIGNATURE, OSSL_FUNC_SIGNATURE_FREECTX))(ctx);

    ctx = ((OSSL_FUNC_asym_cipher_newctx_fn *)fn(OSSL_OP_ASYM_CIPHER, OSSL_FUNC_ASYM_CIPHER_NEWCTX))(provctx);
    report("asym_cipher decrypt_init", ((OSSL_FUNC_asym_cipher_decrypt_init_fn *)fn(OSSL_OP_ASYM_CIPHER,
           OSSL_FUNC_ASYM_CIPHER_DECRYPT_INIT))(ctx, bogus, NULL));
    ((OSSL_FUNC_asym_cipher_freectx_fn *)fn(OSSL_OP_ASYM_CIPHER, OSSL_FUNC_ASYM_CIPHER_FREECTX))(ctx);

    ctx = ((OSSL_FUNC_keyexch_newctx_fn *)fn(OSSL_OP_KEYEXCH, OSSL_FUNC_KEYEXCH_NEWCTX))(provctx);
    report("keyexch init", ((OSSL_FUNC_keyexch_init_fn *)fn(OSSL_OP_KEYEXCH,
           OSSL_FUNC_KEYEXCH_INIT))(ctx, bogus, NULL));
    ((OSSL_FUNC_keyexch_freectx_fn *)fn(OSSL_OP_KEYEXCH, OSSL_FUNC_KEYEXCH_FREECTX))(ctx);

    report("keymgmt load", ((OSSL_FUNC_keymgmt_load_fn *)fn(OSSL_OP_KEYMGMT,
           OSSL_FUNC_KEYMGMT_LOAD))(bogus, sizeof(bogus)) != NULL);

    ctx = ((OSSL_FUNC_encoder_newctx_fn *)fn(OSSL_OP_ENCODER, OSSL_FUNC_ENCODER_NEWCTX))(provctx);
    report("encoder encode", ((OSSL_FUNC_encoder_encode_fn *)fn(OSSL_OP_ENCODER,
           OSSL_FUNC_ENCODER_ENCODE))(ctx, NULL, bogus, NULL, OSSL_KEYMGMT_SELECT_PUBLIC_KEY, NULL, NULL));
    ((OSSL_FUNC_encoder_freectx_fn *)fn(OSSL_OP_ENCODER, OSSL_FUNC_ENCODER_FREECTX))(ctx);

    report("store open", ((OSSL_FUNC_store_open_fn *)fn(OSSL_OP_STORE,
           OSSL_FUNC_STORE_OPEN))(provctx, "keygate:not a key id") != NULL);

    for (int code = 1; lib != 0 && code < 64; code++) {
        const char *s = ERR_reason_error_string(ERR_PACK(lib, 0, code));
        if (s != NULL)
            printf("reason %d %s\n", code, s);
    }
    return 0;
}
'''

OPERATIONS = ["signature sign_init", "signature verify_init", "signature digest_sign_init",
              "signature digest_verify_init", "asym_cipher decrypt_init", "keyexch init", "keymgmt load",
              "encoder encode", "store open"]


@pytest.fixture(scope="module")
def probe(esite):
    src = esite.tmp / "probe.c"
    src.write_text(PROBE)
    exe = esite.tmp / "probe"
    r = run(["cc", "-Wall", "-Werror", "-o", str(exe), str(src), "-lcrypto"])
    assert r.returncode == 0, r.stderr
    r = run([str(exe)], env=esite.env)
    assert r.returncode == 0, r.stderr
    return r.stdout


def probe_calls(out):
    """{operation: (its "rc=N" line, [the errors it raised])} from the probe's output."""
    calls, op = {}, None
    for line in out.splitlines():
        m = re.match(r"^(.+) (rc=\d+)$", line)
        if m:
            op = m.group(1)
            calls[op] = (m.group(2), [])
        elif line.startswith("  raised ") and op is not None:
            calls[op][1].append(line[len("  raised "):])
        else:
            op = None
    return calls


@pytest.mark.parametrize("op", OPERATIONS)
def test_every_operation_raises_on_a_foreign_key(probe, op):
    """Each entry point fails on a key object that is not keygate's, and says so in the queue
    (signature.c and keymgmt load said nothing before)."""
    rc, raised = probe_calls(probe)[op]
    assert rc == "rc=0", probe
    assert any(e.startswith("keygate: ") for e in raised), f"{op} failed without a keygate error:\n{probe}"


def test_reason_strings_are_the_documented_ones(probe):
    """The reason codes and strings keygate.so registers (get_reason_strings) are exactly the
    table in keygate-provider(7), and every pipeline step has its own."""
    registered = {int(c): s for c, s in re.findall(r"^reason (\d+) (.+)$", probe, re.M)}
    assert registered == documented_reasons(), probe
    for step, code in STEP_CODES.items():
        assert code in registered, f"no reason code for the step {step}"
    assert len({registered[c] for c in STEP_CODES.values()}) == len(STEP_CODES)
