# SPDX-License-Identifier: Apache-2.0
"""pkcs11_pin_file (issue 20, item 3): an optional user PIN for the PKCS#11 token.

With it set, the token drops CKF_PROTECTED_AUTHENTICATION_PATH and says CKF_LOGIN_REQUIRED in
both release modes; C_Login(CKU_USER) takes exactly the file's content (trailing newline
stripped), compared in constant time; NULL, empty and wrong PINs are CKR_PIN_INCORRECT and
release nothing (counted at the ITA stand-in). The file is a secret: C_Initialize refuses it
when group or others may read it, when it is a symlink, empty, or not one line. Consumers:
tests/pkcs11/p11_client.c (raw API), pkcs11-tool --login --pin, and nginx through libp11 with
pin-value in the PKCS#11 URI (the module in a p11-kit server, as in docs/pkcs11.md)."""
import hashlib
import os
import shutil
import signal
import subprocess
import time

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, utils

from conftest import run
from kglib import (PAGE, P11KitServer, attest_count, free_port, kbs_stack, module_stack, module_token,  # noqa: F401
                   nginx_conf, p11_client, read_log, token)

pytestmark = pytest.mark.skipif(not shutil.which("pkcs11-tool"), reason="opensc (pkcs11-tool) is needed")

PIN = "correct horse 7 battery"


def pin_conf(token, name, pin=PIN, mode=0o600, release="first-use", content=None):
    pin_file = token.tmp / f"{name}.pin"
    if pin_file.exists() or pin_file.is_symlink():
        pin_file.unlink()
    pin_file.write_text(content if content is not None else pin + "\n")
    os.chmod(pin_file, mode)
    return token.write_conf(f"{name}.conf", f"pkcs11_release = {release}\npkcs11_pin_file = {pin_file}\n"), pin_file


def client(p11_client, token, conf, *args):
    return run([p11_client, token.module, *map(str, args)], env=dict(token.env, KEYGATE_CONF=str(conf)), timeout=120)


@pytest.mark.parametrize("release", ["first-use", "login"])
def test_the_right_pin_logs_in_and_signs(token, kbs_stack, p11_client, release):
    """Wrong neighbours of the PIN first (NULL, empty, prefix, with a NUL, longer, a newline, a
    flipped first or last byte, 4 KiB longer): refused; then the PIN: logged in, signs; after
    C_Logout refused again; a second C_Login signs without attesting again."""
    conf, _ = pin_conf(token, f"right-{release}", release=release)
    r = client(p11_client, token, conf, "pin", "p256", PIN)
    assert r.returncode == 0 and "ok pin" in r.stdout, r.stdout + r.stderr
    assert attest_count(kbs_stack) == 1


@pytest.mark.parametrize("release", ["first-use", "login"])
def test_wrong_empty_and_null_pins_release_nothing(token, kbs_stack, p11_client, release):
    conf, _ = pin_conf(token, f"wrong-{release}", release=release)
    r = client(p11_client, token, conf, "wrongpin", "rsa2048", PIN)
    assert r.returncode == 0 and "ok wrongpin" in r.stdout, r.stdout + r.stderr
    assert attest_count(kbs_stack) == 0


BAD_FILES = [  # (id, mode, content, symlink, expected message)
    ("group-readable", 0o640, PIN, False, "readable by group or others (mode 640); chmod 600 it"),
    ("world-readable", 0o604, PIN, False, "readable by group or others (mode 604); chmod 600 it"),
    ("empty", 0o600, "\n", False, "empty or not one line"),
    ("two-lines", 0o600, PIN + "\nsecond\n", False, "empty or not one line"),
    ("too-long", 0o600, "x" * 300, False, "unreadable or longer than 256 bytes"),
    ("symlink", 0o600, PIN, True, "Too many levels of symbolic links"),
]


@pytest.mark.parametrize("name,mode,content,symlink,message", BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_a_pin_file_others_may_read_or_that_is_no_pin_is_refused(token, kbs_stack, name, mode, content, symlink,
                                                                   message):
    conf, pin_file = pin_conf(token, f"bad-{name}", mode=mode, content=content)
    if symlink:
        target = token.tmp / f"bad-{name}.target"
        pin_file.rename(target)
        pin_file.symlink_to(target)
    r = token.tool("-L", env={"KEYGATE_CONF": str(conf)})
    assert r.returncode != 0 and "CKR_FUNCTION_FAILED" in r.stderr, r.stdout + r.stderr
    assert f"pkcs11_pin_file {pin_file}: {message}" in r.stderr, r.stderr
    assert PIN not in r.stderr and PIN not in r.stdout
    assert attest_count(kbs_stack) == 0


def test_pkcs11_tool_logs_in_with_the_pin(token, kbs_stack):
    """The file ends in a newline (stripped); pkcs11-tool --login --pin signs, a wrong --pin is
    CKR_PIN_INCORRECT; -L shows a login-required token with a PIN and no PIN pad."""
    conf, _ = pin_conf(token, "tool")
    env = {"KEYGATE_CONF": str(conf)}
    r = token.tool("-L", env=env)
    assert r.returncode == 0, r.stderr
    flags = next(ln for ln in r.stdout.splitlines() if "token flags" in ln)
    assert "login required" in flags and "PIN initialized" in flags and "PIN pad present" not in flags, flags
    assert "pin min/max        : 1/256" in r.stdout, r.stdout
    data = os.urandom(64)
    (token.tmp / "tool.in").write_bytes(data)
    sig = token.tmp / "tool.sig"
    args = ("--sign", "-m", "ECDSA-SHA256", "--id", token.ids["p256"], "-i", token.tmp / "tool.in", "-o", sig)
    r = token.tool("--login", "--pin", PIN + "x", *args, env=env)
    assert r.returncode != 0 and "CKR_PIN_INCORRECT" in r.stderr, r.stdout + r.stderr
    assert attest_count(kbs_stack) == 0
    r = token.tool(*args, env=env)  # no --pin: pkcs11-tool cannot log in, the key is not there
    assert r.returncode != 0, r.stdout + r.stderr
    r = token.tool("--login", "--pin", PIN, *args, env=env)
    assert r.returncode == 0, r.stderr
    s = sig.read_bytes()
    der = utils.encode_dss_signature(int.from_bytes(s[:32], "big"), int.from_bytes(s[32:], "big"))
    token.keys["p256"].public_key().verify(der, data, ec.ECDSA(hashes.SHA256()))
    assert attest_count(kbs_stack) == 1


def test_without_a_pin_file_the_token_keeps_its_protected_path(token, kbs_stack):
    r = token.tool("-L")
    flags = next(ln for ln in r.stdout.splitlines() if "token flags" in ln)
    assert r.returncode == 0 and "PIN pad present" in flags and "login required" not in flags, r.stdout
    r = token.tool("--login", "--pin", PIN, "--list-objects")
    assert r.returncode != 0 and "CKR_PIN_INCORRECT" in r.stderr, r.stdout + r.stderr


LIBP11 = "/usr/lib/x86_64-linux-gnu/engines-3/pkcs11.so"


@pytest.mark.skipif(not (shutil.which("nginx") and shutil.which("curl") and os.path.exists(LIBP11)),
                    reason="nginx, curl and libengine-pkcs11-openssl are needed")
def test_nginx_libp11_with_pin_value(token, kbs_stack, tmp_path):
    """nginx through the libp11 engine and p11-kit-client (docs/pkcs11.md, "Through a key
    agent"), the module in a p11-kit server with pkcs11_pin_file set: `pin-value` in the
    PKCS#11 URI logs in and nginx serves; a wrong pin-value fails `nginx -t` with nothing attested."""
    conf, _ = pin_conf(token, "nginx")
    server = P11KitServer(token.module, dict(token.env, KEYGATE_CONF=str(conf)))
    ngx = None
    try:
        cnf = tmp_path / "openssl.cnf"
        cnf.write_text("openssl_conf = openssl_init\n[openssl_init]\nengines = engine_section\n"
                       "[engine_section]\npkcs11 = pkcs11_section\n[pkcs11_section]\n"
                       f"dynamic_path = {LIBP11}\nMODULE_PATH = /usr/lib/x86_64-linux-gnu/pkcs11/p11-kit-client.so\n")
        env = dict(os.environ, OPENSSL_CONF=str(cnf), **server.env)
        env.pop("KEYGATE_CONF", None)  # nginx never sees keygate's configuration

        def write(name, pin):
            pfx = tmp_path / name
            pfx.mkdir()
            port = free_port()
            uri = f'"engine:pkcs11:pkcs11:token=keygate;object=p256;type=private;pin-value={pin}"'
            (pfx / "nginx.conf").write_text("user root;\nenv P11_KIT_SERVER_ADDRESS;\n" +
                                            nginx_conf(pfx, port, token.certs["p256"], uri, 1))
            return pfx, port

        pfx, _ = write("wrong", "not-" + PIN.replace(" ", "%20"))
        r = run(["nginx", "-t", "-p", str(pfx), "-c", str(pfx / "nginx.conf")], env=env, timeout=60)
        assert r.returncode != 0, r.stdout + r.stderr
        assert attest_count(kbs_stack) == 0
        pfx, port = write("right", PIN.replace(" ", "%20"))
        ngx = subprocess.Popen(["nginx", "-p", str(pfx), "-c", str(pfx / "nginx.conf")], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 30
        while True:
            r = run(["curl", "-sS", "--max-time", "10", "--cacert", str(token.certs["p256"]),
                     f"https://127.0.0.1:{port}/"], timeout=20)
            if r.returncode == 0 or ngx.poll() is not None or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert r.returncode == 0 and r.stdout.startswith(PAGE), r.stderr + read_log(pfx / "error.log") + \
            read_log(server.log)
        assert attest_count(kbs_stack) == 1
    finally:
        if ngx is not None and ngx.poll() is None:
            ngx.send_signal(signal.SIGQUIT)
            try:
                ngx.wait(15)
            except subprocess.TimeoutExpired:
                ngx.kill()
                ngx.wait()
        server.stop()


def test_serial_is_unchanged_by_a_pin(token, kbs_stack):
    """The PIN changes the login, not the token's identity (URIs keep matching)."""
    conf, _ = pin_conf(token, "serial")
    r = token.tool("-L", env={"KEYGATE_CONF": str(conf)})
    serial = hashlib.sha256(kbs_stack.services["kbs"].url.encode()).hexdigest()[:16]
    assert r.returncode == 0 and f"serial num         : {serial}" in r.stdout, r.stdout + r.stderr
