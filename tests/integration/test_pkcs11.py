# SPDX-License-Identifier: Apache-2.0
"""The PKCS#11 module (libkeygate-pkcs11.so) with real consumers against the local ITA/KBS stack:
pkcs11-tool (objects, every mechanism, --test, --test-fork, --test-threads), p11-kit list-modules,
p11tool and gnutls-serv through an installed p11-kit registration, nginx through the libp11 engine,
and tests/pkcs11/p11_check.c for what tools cannot show (attribute semantics, fork, threads, login).

p11-kit reads only system module directories for root. The "installed" tests run each program in
a private mount namespace (unshare -m) where /usr/share/p11-kit/modules and the p11-kit module
path are bind mounts of a `cmake --install` prefix: the programs see exactly an installed keygate
and nothing of the host's configuration changes."""
import hashlib
import os
import shutil
import signal
import subprocess
import time

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, utils

from conftest import REPO, run
from kglib import Token, kbs_for
from kglib import PAGE, asan_env, attest_count, free_port, kbs_stack, module_stack, module_token, nginx_conf, p11_check, self_signed, token  # noqa: F401 (fixtures)

pytestmark = pytest.mark.skipif(not shutil.which("pkcs11-tool"), reason="opensc (pkcs11-tool) is needed")

SYSTEM_MODULES = "/usr/share/p11-kit/modules"
SYSTEM_MODULE_PATH = "/usr/lib/x86_64-linux-gnu/pkcs11"


def check(p11_check, token, *args, env=None):
    return run([p11_check, token.module, *map(str, args)], env=dict(token.env, **(env or {})), timeout=120)


# ------------------------------------------------------------------ objects and attributes


def test_objects_and_public_attributes_need_no_attestation(token, kbs_stack):
    r = token.tool("--list-objects")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert out.count("Private Key Object") == 2 and out.count("Public Key Object") == 2
    assert out.count("Certificate Object") == 2
    for kind in ("rsa2048", "p256"):
        assert f"label:      {kind}" in out
        assert out.count(token.ids[kind]) == 3  # private, public and certificate share CKA_ID
    assert "Public Key Object; RSA 2048 bits" in out
    point = token.keys["p256"].public_key().public_bytes(serialization.Encoding.X962,
                                                         serialization.PublicFormat.UncompressedPoint).hex()
    assert "EC_POINT:   0441" + point in out
    assert "EC_PARAMS:  06082a8648ce3d030107" in out
    assert "Access:     sensitive, always sensitive, never extractable" in out
    r = token.tool("-L")
    assert r.returncode == 0 and "token label        : keygate" in r.stdout, r.stderr
    serial = hashlib.sha256(kbs_stack.services["kbs"].url.encode()).hexdigest()[:16]
    assert f"serial num         : {serial}" in r.stdout
    assert attest_count(kbs_stack) == 0


def test_attribute_semantics_raw_api(token, kbs_stack, p11_check):
    """CKA_VALUE refused (sensitive on EC, absent on RSA), unknown attributes and size queries in one batch,
    CKR_BUFFER_TOO_SMALL, stable handles across sessions and C_Finalize/C_Initialize, and the
    refusals (wrong key/mechanism/parameters, unsupported calls) that come before any attestation."""
    r = check(p11_check, token, "attrs")
    assert r.returncode == 0 and "ok attrs" in r.stdout, r.stderr
    assert attest_count(kbs_stack) == 0


def test_a_broken_configuration_fails_c_initialize_with_the_cause(token, tmp_path):
    bad = token.tmp / "bad.conf"
    bad.write_text(token.base_conf + f"pkcs11_keys = web:{tmp_path}/missing.ref.pem\n")
    r = token.tool("-L", env={"KEYGATE_CONF": str(bad)})
    assert r.returncode != 0 and "CKR_FUNCTION_FAILED" in r.stderr
    assert "missing.ref.pem" in r.stderr, r.stderr
    other = tmp_path / "other.crt"
    other.write_bytes(self_signed(ec.generate_private_key(ec.SECP256R1())).public_bytes(serialization.Encoding.PEM))
    bad.write_text(token.base_conf + f"pkcs11_keys = web:{token.site.refs['p256']}:{other}\n")
    r = token.tool("-L", env={"KEYGATE_CONF": str(bad)})
    assert r.returncode != 0 and "is not the one of" in r.stderr, r.stderr


# ------------------------------------------------------------------ mechanisms

MECHS = [
    ("p256", "ECDSA", "sha256", []),
    ("p256", "ECDSA-SHA256", None, []),
    ("p256", "ECDSA-SHA384", None, []),
    ("rsa2048", "RSA-PKCS", "digestinfo", []),
    ("rsa2048", "RSA-PKCS-PSS", "sha256", ["--hash-algorithm", "SHA256", "--mgf", "MGF1-SHA256"]),
    ("rsa2048", "SHA256-RSA-PKCS", None, []),
    ("rsa2048", "SHA256-RSA-PKCS-PSS", None, []),
]


@pytest.mark.parametrize("kind,mech,prep,opts", MECHS, ids=[m[1] for m in MECHS])
def test_sign_and_verify_with_each_mechanism(token, kbs_stack, kind, mech, prep, opts):
    data = os.urandom(100)
    digest = hashlib.sha256(data).digest()
    if prep == "sha256":
        tbs = digest
    elif prep == "digestinfo":
        tbs = bytes.fromhex("3031300d060960864801650304020105000420") + digest
    else:
        tbs = data
    (token.tmp / "in.bin").write_bytes(tbs)
    sig = token.tmp / "sig.bin"
    r = token.tool("--sign", "-m", mech, "--id", token.ids[kind], "-i", token.tmp / "in.bin", "-o", sig, *opts)
    assert r.returncode == 0, r.stderr
    s = sig.read_bytes()
    pub = token.keys[kind].public_key()
    if kind == "p256":
        assert len(s) == 64  # r || s, not DER
        der = utils.encode_dss_signature(int.from_bytes(s[:32], "big"), int.from_bytes(s[32:], "big"))
        algo = {"ECDSA": utils.Prehashed(hashes.SHA256()), "ECDSA-SHA256": hashes.SHA256(),
                "ECDSA-SHA384": hashes.SHA384()}[mech]
        pub.verify(der, digest if mech == "ECDSA" else data, ec.ECDSA(algo))
    elif "PSS" in mech:
        pub.verify(s, digest if mech == "RSA-PKCS-PSS" else data, padding.PSS(padding.MGF1(hashes.SHA256()), 32),
                   utils.Prehashed(hashes.SHA256()) if mech == "RSA-PKCS-PSS" else hashes.SHA256())
    else:
        pub.verify(s, digest if mech == "RSA-PKCS" else data, padding.PKCS1v15(),
                   utils.Prehashed(hashes.SHA256()) if mech == "RSA-PKCS" else hashes.SHA256())
    # our C_Verify (the reference's public key, no attestation) agrees, and refuses a bad signature
    r = token.tool("--verify", "-m", mech, "--id", token.ids[kind], "-i", token.tmp / "in.bin", "--signature-file",
                   sig, *opts)
    assert r.returncode == 0 and "Signature is valid" in r.stdout, r.stdout + r.stderr
    sig.write_bytes(s[:-1] + bytes([s[-1] ^ 1]))
    r = token.tool("--verify", "-m", mech, "--id", token.ids[kind], "-i", token.tmp / "in.bin", "--signature-file",
                   sig, *opts)
    assert "Signature is valid" not in r.stdout
    assert attest_count(kbs_stack) == 1  # one pkcs11-tool process signed: one attestation


@pytest.mark.parametrize("mech,opts,pad", [
    ("RSA-PKCS", [], padding.PKCS1v15()),
    # pkcs11-tool 0.23 sends source = 0 and no label: accepted as "no label"
    ("RSA-PKCS-OAEP", ["--hash-algorithm", "SHA256", "--mgf", "MGF1-SHA256"],
     padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)),
    ("RSA-PKCS-OAEP", ["--hash-algorithm", "SHA-1", "--mgf", "MGF1-SHA1"],
     padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None)),
])
def test_decrypt(token, mech, opts, pad):
    secret = os.urandom(32)
    (token.tmp / "ct.bin").write_bytes(token.keys["rsa2048"].public_key().encrypt(secret, pad))
    r = token.tool("--decrypt", "-m", mech, "--id", token.ids["rsa2048"], "-i", token.tmp / "ct.bin", "-o",
                   token.tmp / "pt.bin", *opts)
    assert r.returncode == 0, r.stderr
    assert (token.tmp / "pt.bin").read_bytes() == secret


def test_ecdh_derive(token):
    peer = ec.generate_private_key(ec.SECP256R1())
    (token.tmp / "peer.der").write_bytes(peer.public_key().public_bytes(serialization.Encoding.DER,
                                                                        serialization.PublicFormat.SubjectPublicKeyInfo))
    r = token.tool("--derive", "-m", "ECDH1-DERIVE", "--id", token.ids["p256"], "-i", token.tmp / "peer.der", "-o",
                   token.tmp / "secret.bin")
    assert r.returncode == 0, r.stderr
    assert (token.tmp / "secret.bin").read_bytes() == peer.exchange(ec.ECDH(), token.keys["p256"].public_key())


def test_mechanism_info(token):
    r = token.tool("-M")
    assert r.returncode == 0, r.stderr
    for line in ("ECDSA, keySize={256,521}, sign, verify", "ECDSA-SHA256", "ECDSA-SHA384", "ECDH1-DERIVE",
                 "RSA-PKCS, keySize={1024,16384}, encrypt, decrypt, sign, verify", "RSA-PKCS-PSS, keySize",
                 "SHA256-RSA-PKCS, keySize", "SHA256-RSA-PKCS-PSS", "RSA-PKCS-OAEP, keySize={1024,16384}, encrypt, decrypt"):
        assert line in r.stdout, line


# ------------------------------------------------------------------ pkcs11-tool's own tests, fork, threads


def test_pkcs11_tool_test_suites(token):
    r = token.tool("--test", "--allow-sw", timeout=180)
    assert r.returncode == 0 and "No errors" in r.stdout, r.stdout + r.stderr
    assert "SHA256-RSA-PKCS: OK" in r.stdout and "RSA-PKCS-OAEP" in r.stdout
    r = token.tool("--test-fork")
    assert r.returncode == 0 and "Calling C_Initialize in forked child process" in r.stdout, r.stdout + r.stderr
    r = token.tool("--use-locking", "--test-threads", "IL:GI:SL:T0:GI", "--test-threads", "GI:SL:T0:SL",
                   "--test-threads", "SL:T0:GI:T0", "-L")
    assert r.returncode == 0 and "token label        : keygate" in r.stdout, r.stdout + r.stderr


@pytest.mark.parametrize("label", ["rsa2048", "p256"])
def test_multi_part_sign_and_verify_match_one_shot(token, kbs_stack, p11_check, label):
    """C_SignUpdate/Final and C_VerifyUpdate/Final (hash and raw mechanisms) against C_Sign/C_Verify."""
    r = check(p11_check, token, "multipart", label)
    assert r.returncode == 0 and "ok multipart" in r.stdout, r.stdout + r.stderr


@pytest.mark.parametrize("generation", ["v1.3.0", "2026"])
@pytest.mark.parametrize("mode", ["passport", "background"])
def test_sign_against_each_kbs_generation(keygate_bin, build_dir, kbs_stack, tmp_path, p11_check, generation, mode):
    """Both Intel KBS generations (docs/protocols/intel-kbs.md §8) behind the module, with
    kbs_intel_generation = auto: the key released at first use signs, one- and multi-part."""
    kbs = kbs_for(kbs_stack, generation)
    tok = Token(keygate_bin, build_dir, kbs_stack, tmp_path, kbs=kbs, kbs_mode=mode)
    r = check(p11_check, tok, "multipart", "p256")
    assert r.returncode == 0 and "ok multipart" in r.stdout, r.stdout + r.stderr
    statuses = [q["status"] for q in kbs_stack.requests(kbs) if q["path"].endswith("/transfer")]
    assert statuses == {"passport": [200], "background": [200, 200] if generation == "v1.3.0" else [400, 200]}[mode]


def test_fork_child_uses_the_parents_key_without_attesting(token, kbs_stack, p11_check):
    r = check(p11_check, token, "fork", "p256")
    assert r.returncode == 0 and "ok fork" in r.stdout, r.stderr
    assert attest_count(kbs_stack) == 1


def test_threads_share_one_attestation(token, kbs_stack, p11_check):
    r = check(p11_check, token, "threads", "rsa2048", 8)
    assert r.returncode == 0 and "ok threads" in r.stdout, r.stderr
    assert attest_count(kbs_stack) == 1


def test_release_at_login(token, kbs_stack, p11_check):
    conf = token.write_conf("login.conf", "pkcs11_release = login\n")
    r = check(p11_check, token, "login", "p256", env={"KEYGATE_CONF": str(conf)})
    assert r.returncode == 0 and "ok login" in r.stdout, r.stderr
    assert attest_count(kbs_stack) == 1  # both keys with one attestation


def test_attestation_failures_are_honest_errors(token, kbs_stack, p11_check):
    log = token.tmp / "debug.log"
    kbs_stack.set_faults("kbs", [{"route": "/transfer$", "mode": "deny"}])
    r = check(p11_check, token, "signinit", "p256", env={"KEYGATE_DEBUG": f"{log}:3"})
    assert r.returncode == 0 and "rv=0x30" in r.stdout, r.stdout + r.stderr  # CKR_DEVICE_ERROR
    text = log.read_text(errors="replace")
    assert "PKCS#11 C_SignInit: key 'p256'" in text and "transfer" in text, text
    kbs_stack.clear_faults("kbs")
    # a token our verifier refuses (wrong pinned root) is CKR_FUNCTION_FAILED, naming the step
    state = kbs_stack.state_dir
    conf = token.tmp / "wrong-root.conf"
    conf.write_text(token.conf.read_text().replace(f"{state}/ita-root-ca.pem", f"{state}/tls-ca.pem"))
    r = check(p11_check, token, "signinit", "p256", env={"KEYGATE_CONF": str(conf), "KEYGATE_DEBUG": f"{log}:3"})
    assert r.returncode == 0 and "rv=0x6" in r.stdout, r.stdout + r.stderr  # CKR_FUNCTION_FAILED
    assert "verify" in log.read_text(errors="replace")


# ------------------------------------------------------------------ conformance (issue 20)


def test_c_initialize_refuses_a_reserved_pointer_that_is_not_a_configuration(token, p11_check):
    """pkcs11test's Init.InitArgsBadReserved (pReserved = (void *)1) crashed the module: pointers
    nobody may read, unterminated and foreign strings are CKR_ARGUMENTS_BAD; p11-kit's documented
    x-init-reserved forms still name keygate.conf (KEYGATE_CONF points nowhere here)."""
    r = run([p11_check, token.module, "initargs", token.conf],
            env=dict(asan_env(), KEYGATE_CONF="/nonexistent/keygate.conf"), timeout=120)
    assert r.returncode == 0 and "ok initargs" in r.stdout, f"rc={r.returncode}\n{r.stdout}{r.stderr}"


def test_attributes_an_object_does_not_have_are_type_invalid(token, kbs_stack, p11_check):
    """CKA_PRIME_1 on an EC key or CKA_VALUE on an RSA key: CKR_ATTRIBUTE_TYPE_INVALID;
    CKR_ATTRIBUTE_SENSITIVE only for the private parts the key has (PKCS#11 v2.40 C_GetAttributeValue)."""
    r = check(p11_check, token, "attrtypes")
    assert r.returncode == 0 and "ok attrtypes" in r.stdout, r.stdout + r.stderr
    assert attest_count(kbs_stack) == 0


@pytest.mark.parametrize("value_len", [16, 31, 32, 0])
def test_ecdh_derive_truncation_keeps_the_trailing_bytes(token, p11_check, value_len):
    """PKCS#11 v2.40 2.3.9 (CKD_NULL): truncating the shared secret to CKA_VALUE_LEN removes bytes
    from the leading end; OpenSSL (python cryptography) derives the full secret of the same pair."""
    peer = ec.generate_private_key(ec.SECP256R1())
    point = peer.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    r = check(p11_check, token, "derive", "p256", point.hex(), value_len)
    assert r.returncode == 0 and "ok derive" in r.stdout, r.stdout + r.stderr
    value = bytes.fromhex(r.stdout.split("value=")[1].split()[0])
    full = peer.exchange(ec.ECDH(), token.keys["p256"].public_key())
    assert value == (full[-value_len:] if value_len else full)


SHA_MECHS = [  # (key, CKM_ value, pkcs11-tool's name, hash)
    ("rsa2048", 0x06, "SHA1-RSA-PKCS", hashes.SHA1),
    ("rsa2048", 0x46, "SHA224-RSA-PKCS", hashes.SHA224),
    ("rsa2048", 0x0E, "SHA1-RSA-PKCS-PSS", hashes.SHA1),
    ("rsa2048", 0x47, "SHA224-RSA-PKCS-PSS", hashes.SHA224),
    ("p256", 0x1042, "ECDSA-SHA1", hashes.SHA1),
    ("p256", 0x1043, "ECDSA-SHA224", hashes.SHA224),
]


def _verify(pub, name, md, sig, data):
    """python cryptography (OpenSSL) verifies a module signature (ECDSA as r||s)."""
    if name.startswith("ECDSA"):
        n = len(sig) // 2
        der = utils.encode_dss_signature(int.from_bytes(sig[:n], "big"), int.from_bytes(sig[n:], "big"))
        pub.verify(der, data, ec.ECDSA(md()))
    elif name.endswith("PSS"):
        pub.verify(sig, data, padding.PSS(padding.MGF1(md()), md().digest_size), md())
    else:
        pub.verify(sig, data, padding.PKCS1v15(), md())


def _sign(priv, name, md, data):
    """python cryptography signs what the module must verify (ECDSA as r||s)."""
    if name.startswith("ECDSA"):
        r, s = utils.decode_dss_signature(priv.sign(data, ec.ECDSA(md())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")
    if name.endswith("PSS"):
        return priv.sign(data, padding.PSS(padding.MGF1(md()), md().digest_size), md())
    return priv.sign(data, padding.PKCS1v15(), md())


@pytest.mark.parametrize("kind,mech,name,md", SHA_MECHS, ids=[m[2] for m in SHA_MECHS])
def test_sha1_and_sha224_signature_mechanisms(token, kbs_stack, p11_check, kind, mech, name, md):
    """Listed with sign/verify, single- and multi-part, checked against OpenSSL both ways."""
    r = token.tool("-M")
    lines = [ln for ln in r.stdout.splitlines() if ln.strip().startswith(f"{name}, keySize=")]
    assert r.returncode == 0 and len(lines) == 1 and "sign, verify" in lines[0], r.stdout
    data = os.urandom(77)
    r = check(p11_check, token, "sign", kind, hex(mech), data.hex())
    assert r.returncode == 0 and "ok sign" in r.stdout, r.stdout + r.stderr
    pub = token.keys[kind].public_key()
    for part in ("one", "parts"):
        _verify(pub, name, md, bytes.fromhex(r.stdout.split(part + "=")[1].split()[0]), data)
    sig = _sign(token.keys[kind], name, md, data)
    r = check(p11_check, token, "verify", kind, hex(mech), data.hex(), sig.hex())
    assert r.returncode == 0 and "one=0x0 parts=0x0" in r.stdout, r.stdout + r.stderr
    bad = sig[:-1] + bytes([sig[-1] ^ 1])
    r = check(p11_check, token, "verify", kind, hex(mech), data.hex(), bad.hex())
    assert r.returncode == 0 and "one=0xc0 parts=0xc0" in r.stdout, r.stdout + r.stderr  # CKR_SIGNATURE_INVALID
    assert attest_count(kbs_stack) == 1  # the signing process; verification never attests


@pytest.mark.parametrize("release", ["first-use", "login"])
def test_a_wrong_pin_is_refused_and_releases_nothing(token, kbs_stack, p11_check, release):
    """pkcs11test: C_Login(CKU_USER, "simply-wrong") returned CKR_OK and, with pkcs11_release =
    login, attested and released the keys. The token has a protected authentication path: only
    a NULL or empty PIN logs in."""
    env = {"KEYGATE_CONF": str(token.write_conf("login.conf", "pkcs11_release = login\n"))} if release == "login" else {}
    r = check(p11_check, token, "badpin", "p256", env=env)
    assert r.returncode == 0 and "ok badpin" in r.stdout, r.stdout + r.stderr
    assert attest_count(kbs_stack) == 0


# ------------------------------------------------------------------ installed: p11-kit, p11tool, GnuTLS


@pytest.fixture(scope="session")
def installed(build_dir, tmp_path_factory):
    """`cmake --install` into a prefix, seen by programs as the system's p11-kit configuration."""
    prefix = tmp_path_factory.mktemp("prefix")
    r = run(["cmake", "--install", str(build_dir), "--prefix", str(prefix)])
    assert r.returncode == 0, r.stderr
    probe = run(["unshare", "-m", "--propagation", "private", "true"])
    if probe.returncode != 0:
        pytest.skip(f"no private mount namespace here (unshare -m: {probe.stderr.strip()})")
    return prefix


def in_installed(prefix, *cmd):
    """cmd inside a mount namespace where the prefix's p11-kit modules are the system's."""
    script = ('mount --bind "$0/share/p11-kit/modules" ' + SYSTEM_MODULES +
              ' && mount --bind "$0/lib/pkcs11" ' + SYSTEM_MODULE_PATH + ' && exec "$@"')
    return ["unshare", "-m", "--propagation", "private", "sh", "-c", script, str(prefix), *map(str, cmd)]


def test_p11kit_lists_the_installed_module(installed, token, kbs_stack):
    module_file = (installed / "share/p11-kit/modules/keygate.module").read_text()
    assert "module: libkeygate-pkcs11.so" in module_file
    r = run(in_installed(installed, "p11-kit", "list-modules"), env=token.env)
    assert r.returncode == 0, r.stderr
    serial = hashlib.sha256(kbs_stack.services["kbs"].url.encode()).hexdigest()[:16]
    for want in ("keygate: libkeygate-pkcs11.so", "library-manufacturer: keygate", "token: keygate",
                 f"serial-number: {serial}", "token-initialized"):
        assert want in r.stdout, r.stdout
    assert attest_count(kbs_stack) == 0


def test_x_init_reserved_names_the_configuration(build_dir, token, kbs_stack, tmp_path):
    """p11-kit hands x-init-reserved to C_Initialize: the module finds keygate.conf there."""
    prefix = tmp_path / "xprefix"
    (prefix / "share/p11-kit/modules").mkdir(parents=True)
    (prefix / "lib/pkcs11").mkdir(parents=True)
    shutil.copy(token.module, prefix / "lib/pkcs11/libkeygate-pkcs11.so")
    (prefix / "share/p11-kit/modules/keygate.module").write_text(
        f"module: libkeygate-pkcs11.so\nx-init-reserved: config={token.conf}\n")
    env = dict(asan_env())
    r = run(in_installed(prefix, "p11-kit", "list-modules"), env=env)
    if "Operation not permitted" in r.stderr:
        pytest.skip("no private mount namespace here")
    serial = hashlib.sha256(kbs_stack.services["kbs"].url.encode()).hexdigest()[:16]
    assert r.returncode == 0 and f"serial-number: {serial}" in r.stdout, r.stdout + r.stderr


def test_p11tool_lists_and_signs_by_uri(installed, token, kbs_stack):
    r = run(in_installed(installed, "p11tool", "--list-all", "pkcs11:token=keygate"), env=token.env)
    assert r.returncode == 0, r.stderr
    for kind in ("rsa2048", "p256"):
        for typ in ("private", "public", "cert"):
            assert f"object={kind};type={typ}" in r.stdout, r.stdout
    assert attest_count(kbs_stack) == 0
    for kind in ("p256", "rsa2048"):
        r = run(in_installed(installed, "p11tool", "--test-sign", f"pkcs11:token=keygate;object={kind};type=private"),
                env=token.env, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "Verifying against public key in the token... ok" in r.stdout + r.stderr, r.stdout + r.stderr


@pytest.fixture(scope="session")
def bind_loopback(tmp_path_factory):
    out = tmp_path_factory.mktemp("shim") / "bind_loopback.so"
    cc = subprocess.run(["gcc", "-shared", "-fPIC", "-O1", "-o", str(out), str(REPO / "tests/pkcs11/bind_loopback.c"),
                         "-ldl"], capture_output=True, text=True)
    assert cc.returncode == 0, cc.stderr
    return str(out)


@pytest.mark.skipif(not shutil.which("gnutls-serv"), reason="gnutls-bin is needed")
@pytest.mark.parametrize("kind", ["p256", "rsa2048"])
def test_gnutls_serv_with_a_pkcs11_uri(installed, token, kbs_stack, bind_loopback, kind):
    port = free_port()
    env = dict(os.environ, **token.env)
    env["LD_PRELOAD"] = ":".join(x for x in (env.get("LD_PRELOAD"), bind_loopback) if x)
    srv = subprocess.Popen(in_installed(installed, "gnutls-serv", "--port", port, "--x509certfile",
                                        token.certs[kind], "--x509keyfile",
                                        f"pkcs11:token=keygate;object={kind};type=private", "--echo"),
                           env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        prios = ["NORMAL:-VERS-ALL:+VERS-TLS1.3", "NORMAL:-VERS-ALL:+VERS-TLS1.2"]
        if kind == "rsa2048":  # static RSA key exchange: the server's C_Decrypt with CKM_RSA_PKCS
            prios.append("NORMAL:-VERS-ALL:+VERS-TLS1.2:-KX-ALL:+RSA")
        for prio in prios:
            deadline = time.monotonic() + 20
            while True:
                r = subprocess.run(["gnutls-cli", "--port", str(port), "--x509cafile", str(token.certs[kind]),
                                    "--priority", prio, "127.0.0.1"], input="hello keygate\n",
                                   capture_output=True, text=True, timeout=30)
                if r.returncode == 0 or time.monotonic() > deadline or srv.poll() is not None:
                    break
                time.sleep(0.2)
            assert r.returncode == 0 and "Handshake was completed" in r.stdout, r.stdout + r.stderr
            assert "The certificate is trusted" in r.stdout and "hello keygate" in r.stdout
            assert ("TLS1.3" if "1.3" in prio else "TLS1.2") in r.stdout
            if "+RSA" in prio:
                assert "(TLS1.2-X.509)-(RSA)-" in r.stdout, r.stdout
    finally:
        srv.send_signal(signal.SIGTERM)
        srv.wait(10)
    assert attest_count(kbs_stack) == 1


# ------------------------------------------------------------------ nginx through the libp11 engine


@pytest.mark.skipif(not (shutil.which("nginx") and shutil.which("curl")
                         and os.path.exists("/usr/lib/x86_64-linux-gnu/engines-3/pkcs11.so")),
                    reason="nginx, curl and libengine-pkcs11-openssl are needed")
def test_nginx_through_the_libp11_engine(token, kbs_stack):
    """nginx 1.22 with `ssl_certificate_key engine:pkcs11:<uri>` (libp11 engine); the module runs in
    a `p11-kit server` (the key-holding agent), reached through p11-kit-client. Attestation happens
    in the agent at the first signature, never inside nginx: a process that loaded the libp11
    engine routes its in-process EC/RSA crypto through that engine (docs/pkcs11.md). p11-kit
    server only accepts clients of its own uid, so the workers run as root here (`user root`)."""
    import tempfile

    work = tempfile.mkdtemp(prefix="kg-p11-nginx-")
    procs = []
    try:
        os.chmod(work, 0o755)
        sock = os.path.join(work, "pkcs11.sock")
        server = subprocess.Popen(["p11-kit", "server", "-f", "-n", sock, "--provider", token.module,
                                   "pkcs11:token=keygate"], env=dict(os.environ, **token.env),
                                  stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "agent.log"), "wb"))
        procs.append(server)
        deadline = time.monotonic() + 10
        while not os.path.exists(sock):
            assert server.poll() is None and time.monotonic() < deadline, open(os.path.join(work, "agent.log")).read()
            time.sleep(0.05)
        pfx = os.path.join(work, "nginx")
        os.mkdir(pfx)
        cert = os.path.join(work, "p256.crt")
        shutil.copy(token.certs["p256"], cert)
        cnf = os.path.join(work, "openssl.cnf")
        with open(cnf, "w") as f:
            f.write("openssl_conf = openssl_init\n[openssl_init]\nengines = engine_section\n"
                    "[engine_section]\npkcs11 = pkcs11_section\n[pkcs11_section]\n"
                    "dynamic_path = /usr/lib/x86_64-linux-gnu/engines-3/pkcs11.so\n"
                    "MODULE_PATH = /usr/lib/x86_64-linux-gnu/pkcs11/p11-kit-client.so\n")
        port = free_port()
        conf = os.path.join(pfx, "nginx.conf")
        with open(conf, "w") as f:
            f.write("user root;\nenv P11_KIT_SERVER_ADDRESS;\n" +
                    nginx_conf(pfx, port, cert, '"engine:pkcs11:pkcs11:token=keygate;object=p256;type=private"', 1))
        env = dict(os.environ, OPENSSL_CONF=cnf, P11_KIT_SERVER_ADDRESS=f"unix:path={sock}")
        env.pop("KEYGATE_CONF", None)  # nginx itself never sees keygate's configuration
        ngx = subprocess.Popen(["nginx", "-p", pfx, "-c", conf], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        procs.append(ngx)
        deadline = time.monotonic() + 30
        while True:
            r = run(["curl", "-sS", "--max-time", "10", "--cacert", cert, f"https://127.0.0.1:{port}/"], timeout=20)
            if r.returncode == 0 or ngx.poll() is not None or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        errlog = os.path.join(pfx, "error.log")
        log = open(errlog, errors="replace").read() if os.path.exists(errlog) else ""
        agent = open(os.path.join(work, "agent.log"), errors="replace").read()
        assert r.returncode == 0, r.stderr + log + agent + (ngx.stderr.read().decode() if ngx.poll() is not None else "")
        for tls, want in ((["--tlsv1.2", "--tls-max", "1.2"], "TLSv1.2"), (["--tlsv1.3"], "TLSv1.3")):
            for _ in range(3):
                r = run(["curl", "-sS", "--max-time", "10", "--cacert", cert, *tls, f"https://127.0.0.1:{port}/"],
                        timeout=20)
                assert r.returncode == 0 and r.stdout == f"{PAGE} {want}\n", r.stderr
        assert attest_count(kbs_stack) == 1  # in the agent, once, for the one worker
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGQUIT if p is not procs[0] else signal.SIGTERM)
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        shutil.rmtree(work, ignore_errors=True)
