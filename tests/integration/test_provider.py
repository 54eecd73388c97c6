# SPDX-License-Identifier: Apache-2.0
"""The OpenSSL provider with real programs: openssl pkey/pkeyutl/req/s_server/s_client, a C
program on the strict PEM_read_bio_PrivateKey path, and Python's ssl module, against keys
released from the local stack. Ordinary keys behave exactly as without keygate."""
import os
import subprocess
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding

from conftest import run
from kglib import PEM_READER, attest_count, free_port, make_cert, openssl_cnf, pub_pem, site  # noqa: F401 (fixtures)
from kglib import Site, kbs_for, kmip_kbs


def test_public_operations_need_no_attestation(keygate_bin, build_dir, kbs_stack, site):
    """-pubin loads only the public key; with release = lazy even a private-key load defers the
    release to the first private operation. (With the default release = eager, loading a
    reference as a private key attests, so that nginx -t fails loudly.)"""
    for kind in ("rsa2048", "p256"):
        r = site.openssl("pkey", "-pubin", "-in", site.refs[kind], "-pubout")
        assert r.returncode == 0, r.stderr
        assert r.stdout == pub_pem(site.keys[kind])
    assert attest_count(kbs_stack) == 0
    lazy = openssl_cnf(build_dir, site.tmp / "lazy.cnf", site.conf, "release = lazy\n")
    for kind in ("rsa2048", "p256"):
        r = run(["openssl", "pkey", "-in", str(site.refs[kind]), "-pubout"], env=dict(site.env, OPENSSL_CONF=str(lazy)))
        assert r.returncode == 0 and r.stdout == pub_pem(site.keys[kind]), r.stderr
        r = run(["openssl", "pkey", "-in", str(site.refs[kind]), "-text", "-noout"], env=dict(site.env, OPENSSL_CONF=str(lazy)))
        assert r.returncode == 0 and "keygate attested key " + site.ids[kind] in r.stdout, r.stderr
    assert attest_count(kbs_stack) == 0
    # eager (the default): loading the private key attests once per process
    r = site.openssl("pkey", "-in", site.refs["p256"], "-pubout")
    assert r.returncode == 0 and attest_count(kbs_stack) == 1


def test_private_export_is_refused(site):
    for kind in ("rsa2048", "p256"):
        out = site.tmp / f"clear-{kind}.pem"
        r = site.openssl("pkey", "-in", site.refs[kind], "-out", out)
        assert r.returncode != 0
        assert not out.exists() or "PRIVATE KEY" not in out.read_text()
        r = site.openssl("pkey", "-in", site.refs[kind], "-outform", "DER")
        assert r.returncode != 0 and "PRIVATE" not in r.stdout


@pytest.mark.parametrize("kind,opts", [
    ("rsa2048", []),
    ("rsa2048", ["-pkeyopt", "rsa_padding_mode:pss", "-pkeyopt", "rsa_pss_saltlen:32"]),
    ("p256", []),
])
def test_pkeyutl_sign_verifies_with_the_public_key(site, kind, opts):
    data = site.tmp / "data.bin"
    data.write_bytes(os.urandom(32))  # a SHA-256-sized digest
    sig = site.tmp / "sig.bin"
    r = site.openssl("pkeyutl", "-sign", "-inkey", site.refs[kind], "-in", data, "-out", sig,
                     "-pkeyopt", "digest:sha256", *opts)
    assert r.returncode == 0, r.stderr
    pub = site.keys[kind].public_key()
    if kind == "p256":
        pub.verify(sig.read_bytes(), data.read_bytes(), ec.ECDSA(_prehashed()))
    elif opts:
        pub.verify(sig.read_bytes(), data.read_bytes(), padding.PSS(padding.MGF1(hashes.SHA256()), 32), _prehashed())
    else:
        pub.verify(sig.read_bytes(), data.read_bytes(), padding.PKCS1v15(), _prehashed())
    # and our verify path accepts it too
    r = site.openssl("pkeyutl", "-verify", "-inkey", site.refs[kind], "-in", data, "-sigfile", sig,
                     "-pkeyopt", "digest:sha256", *opts)
    assert r.returncode == 0 and "Signature Verified Successfully" in r.stdout, r.stderr


@pytest.mark.parametrize("kind,form", [("rsa3072", "full"), ("p384", "bare")])
def test_pkeyutl_sign_with_a_key_from_a_kmip_key_store(keygate_bin, build_dir, kbs_stack, tmp_path, kind, form):
    """A KBS on a KMIP key store releases PKCS#1 RSAPrivateKey / SEC1 ECPrivateKey (here SEC1 with
    neither curve nor public key, which the reference supplies): openssl signs through the
    reference and the signature verifies with the key's public half."""
    site = Site(keygate_bin, build_dir, kbs_stack, tmp_path, kinds=(kind,), kbs=kmip_kbs(kbs_stack, form))
    data, sig = site.tmp / "data.bin", site.tmp / "sig.bin"
    data.write_bytes(os.urandom(32))
    r = site.openssl("pkeyutl", "-sign", "-inkey", site.refs[kind], "-in", data, "-out", sig,
                     "-pkeyopt", "digest:sha256")
    assert r.returncode == 0, r.stderr
    pub = site.keys[kind].public_key()
    if kind.startswith("rsa"):
        pub.verify(sig.read_bytes(), data.read_bytes(), padding.PKCS1v15(), _prehashed())
    else:
        pub.verify(sig.read_bytes(), data.read_bytes(), ec.ECDSA(_prehashed()))


@pytest.mark.parametrize("generation", ["v1.3.0", "2026"])
@pytest.mark.parametrize("mode", ["passport", "background"])
def test_pkeyutl_sign_against_each_kbs_generation(keygate_bin, build_dir, kbs_stack, tmp_path, generation, mode):
    """Both Intel KBS generations (docs/protocols/intel-kbs.md §8), kbs_intel_generation = auto:
    the 2026 KBS refuses the empty POST of background mode, and keygate goes on without a nonce."""
    kbs = kbs_for(kbs_stack, generation)
    site = Site(keygate_bin, build_dir, kbs_stack, tmp_path, kinds=("rsa3072",), kbs=kbs, kbs_mode=mode)
    data, sig = site.tmp / "data.bin", site.tmp / "sig.bin"
    data.write_bytes(os.urandom(32))
    r = site.openssl("pkeyutl", "-sign", "-inkey", site.refs["rsa3072"], "-in", data, "-out", sig,
                     "-pkeyopt", "digest:sha256")
    assert r.returncode == 0, r.stderr
    site.keys["rsa3072"].public_key().verify(sig.read_bytes(), data.read_bytes(), padding.PKCS1v15(), _prehashed())
    statuses = [q["status"] for q in kbs_stack.requests(kbs) if q["path"].endswith("/transfer")]
    assert statuses == {"passport": [200], "background": [200, 200] if generation == "v1.3.0" else [400, 200]}[mode]


def _prehashed():
    from cryptography.hazmat.primitives.asymmetric import utils
    return utils.Prehashed(hashes.SHA256())


def test_pkeyutl_decrypt_oaep(site):
    secret = os.urandom(32)
    ct = site.keys["rsa2048"].public_key().encrypt(
        secret, padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None))
    cfile = site.tmp / "ct.bin"
    cfile.write_bytes(ct)
    r = subprocess.run(["openssl", "pkeyutl", "-decrypt", "-inkey", str(site.refs["rsa2048"]), "-in", str(cfile),
                        "-pkeyopt", "rsa_padding_mode:oaep", "-pkeyopt", "rsa_oaep_md:sha256", "-pkeyopt",
                        "rsa_mgf1_md:sha256"], env=dict(os.environ, **site.env), capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout == secret


def test_pkeyutl_derive_ecdh(site):
    peer = ec.generate_private_key(ec.SECP256R1())
    peer_pub = site.tmp / "peer.pem"
    peer_pub.write_text(pub_pem(peer))
    r = subprocess.run(["openssl", "pkeyutl", "-derive", "-inkey", str(site.refs["p256"]), "-peerkey",
                        str(peer_pub)], env=dict(os.environ, **site.env), capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout == peer.exchange(ec.ECDH(), site.keys["p256"].public_key())


def test_req_x509_and_store_uri(site):
    cert = site.tmp / "cert.pem"
    r = site.openssl("req", "-new", "-x509", "-key", site.refs["p256"], "-subj", "/CN=localhost", "-days", "1",
                     "-out", cert)
    assert r.returncode == 0, r.stderr
    c = x509.load_pem_x509_certificate(cert.read_bytes())
    assert pub_pem(site.keys["p256"]) == c.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    c.public_key().verify(c.signature, c.tbs_certificate_bytes, ec.ECDSA(hashes.SHA256()))
    r = site.openssl("pkey", "-in", f"keygate:{site.ids['rsa2048']}", "-pubout")
    assert r.returncode == 0 and r.stdout == pub_pem(site.keys["rsa2048"]), r.stderr


@pytest.mark.parametrize("kind", ["rsa2048", "p256"])
@pytest.mark.parametrize("tls", ["-tls1_2", "-tls1_3"])
def test_s_server_with_a_reference(site, kind, tls):
    cert = make_cert(site, kind)
    port = free_port()
    srv = subprocess.Popen(["openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-cert", str(cert), "-key",
                            str(site.refs[kind]), "-www", tls], env=dict(os.environ, **site.env),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 15
        while True:
            r = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-CAfile", str(cert),
                                "-verify_return_error", "-brief", tls], input="GET / HTTP/1.0\r\n\r\n",
                               capture_output=True, text=True, timeout=30)
            if r.returncode == 0 or time.monotonic() > deadline or srv.poll() is not None:
                break
            time.sleep(0.2)
        assert r.returncode == 0, r.stderr + (srv.stderr.read().decode() if srv.poll() is not None else "")
        assert "Verification: OK" in r.stderr
        assert ("TLSv1.3" if tls == "-tls1_3" else "TLSv1.2") in r.stderr
    finally:
        srv.terminate()
        srv.wait(10)


def test_strict_pem_read_path_and_python_ssl(site):
    src = site.tmp / "reader.c"
    src.write_text(PEM_READER)
    exe = site.tmp / "reader"
    r = run(["cc", "-Wall", "-Werror", "-o", str(exe), str(src), "-lssl", "-lcrypto"])
    assert r.returncode == 0, r.stderr
    for kind, typ in (("rsa2048", "RSA"), ("p256", "EC")):
        cert = make_cert(site, kind)
        r = run([str(exe), str(site.refs[kind]), str(cert)], env=site.env)
        assert r.returncode == 0, r.stderr
        assert f"type={typ}" in r.stdout and "provider=keygate" in r.stdout and "check_private_key=1" in r.stdout
        r = run(["/usr/bin/python3", "-c",
                 "import ssl,sys; c=ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); c.load_cert_chain(sys.argv[1], sys.argv[2]);"
                 "print('ok')", str(cert), str(site.refs[kind])], env=site.env)
        assert r.returncode == 0 and "ok" in r.stdout, r.stderr


def test_ordinary_keys_and_tls_behave_as_without_keygate(site):
    key = site.tmp / "plain.key"
    assert site.openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out",
                        key).returncode == 0
    assert site.openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out",
                        site.tmp / "plain-rsa.key").returncode == 0
    cert = site.tmp / "plain.crt"
    r = site.openssl("req", "-new", "-x509", "-key", key, "-subj", "/CN=plain", "-days", "1", "-out", cert)
    assert r.returncode == 0, r.stderr
    r = site.openssl("pkey", "-in", key, "-out", site.tmp / "copy.key")
    assert r.returncode == 0 and "PRIVATE KEY" in (site.tmp / "copy.key").read_text()
    r = site.openssl("dgst", "-sha256", "-sign", site.tmp / "plain-rsa.key", "-out", site.tmp / "s", cert)
    assert r.returncode == 0, r.stderr
    src = site.tmp / "reader.c"
    src.write_text(PEM_READER)
    exe = site.tmp / "reader"
    r = run(["cc", "-Wall", "-Werror", "-o", str(exe), str(src), "-lssl", "-lcrypto"])
    assert r.returncode == 0, r.stderr
    r = run([str(exe), str(key), str(cert)], env=site.env)
    assert r.returncode == 0 and "provider=default" in r.stdout, r.stderr


@pytest.mark.parametrize("args", [
    ["pkey", "-in", "{p256}", "-pubout"],
    ["pkeyutl", "-sign", "-inkey", "{rsa2048}", "-in", "{data}", "-pkeyopt", "digest:sha256"],
])
def test_openssl_paths_under_valgrind(site, args):
    data = site.tmp / "data.bin"
    data.write_bytes(os.urandom(32))
    argv = [a.format(p256=site.refs["p256"], rsa2048=site.refs["rsa2048"], data=data) for a in args]
    r = subprocess.run(["valgrind", "-q", "--leak-check=full", "--errors-for-leak-kinds=definite",
                        "--error-exitcode=99", "openssl", *argv], env=dict(os.environ, **site.env),
                       capture_output=True, timeout=300)
    err = r.stderr.decode(errors="replace")
    assert r.returncode == 0, err
    assert "definitely lost" not in err and "Invalid read" not in err, err


FORK_SIGNER = r'''
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

static EVP_PKEY *key;

static int sign_once(void)
{
    unsigned char sig[512];
    size_t len = sizeof(sig);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    int ok = EVP_DigestSignInit_ex(md, NULL, "SHA256", NULL, NULL, key, NULL) > 0 &&
             EVP_DigestSign(md, sig, &len, (const unsigned char *)"abc", 3) > 0;
    EVP_MD_CTX_free(md);
    return ok;
}

static void *signer(void *arg)
{
    for (int i = 0; i < 200; i++)
        if (!sign_once())
            return (void *)1;
    return NULL;
}

int main(int argc, char **argv)
{
    FILE *fp = fopen(argv[1], "r");
    pthread_t t[4];
    int status, failed = 0;
    void *rv;

    key = PEM_read_PrivateKey(fp, NULL, NULL, NULL); /* release = eager: attests here */
    if (key == NULL) { ERR_print_errors_fp(stderr); return 1; }
    for (int i = 0; i < 4; i++) /* threads share the key */
        pthread_create(&t[i], NULL, signer, NULL);
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], &rv);
        failed |= rv != NULL;
    }
    for (int c = 0; c < 3; c++) { /* forked children sign with the parent's key, no new release */
        pid_t pid = fork();
        if (pid == 0)
            _exit(sign_once() ? 0 : 3);
        waitpid(pid, &status, 0);
        failed |= !WIFEXITED(status) || WEXITSTATUS(status) != 0;
    }
    printf(failed ? "failed\n" : "signed in 4 threads and 3 children\n");
    EVP_PKEY_free(key);
    return failed;
}
'''


def test_threads_and_fork_share_one_release(site, kbs_stack):
    src = site.tmp / "fork.c"
    src.write_text(FORK_SIGNER)
    exe = site.tmp / "fork"
    r = run(["cc", "-Wall", "-Werror", "-pthread", "-o", str(exe), str(src), "-lcrypto"])
    assert r.returncode == 0, r.stderr
    before = attest_count(kbs_stack)
    for kind in ("rsa2048", "p256"):
        r = run([str(exe), str(site.refs[kind])], env=site.env, timeout=120)
        assert r.returncode == 0 and "signed in 4 threads and 3 children" in r.stdout, r.stderr
    assert attest_count(kbs_stack) - before == 2  # one attestation per process, not per thread or child
