# SPDX-License-Identifier: Apache-2.0
"""The provider with `backend = agent` (issue 22, item 2): the same key references and openssl.cnf
lines, every private operation done by a real `keygate agent` (released from the local ITA and
Intel-KBS stand-ins). The client processes (openssl, nginx) hold no private key bytes, send
nothing to ITA or the KBS, read no API key, and survive the agent's death and restart."""
import hashlib
import os
import shutil
import signal
import tempfile

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, utils

from conftest import run
from kglib import Nginx, Site, curl, make_cert, openssl_cnf, private_needles, read_log, scan_memory
from kglib_agent import Agent

NOBODY = 65534


class AgentProvSite:
    """Keys in the KBS (RSA-2048, P-256), a `keygate agent` serving them to root and to nginx's
    workers (uid 65534, through the socket's group), and a second openssl.cnf whose keygate.conf
    says `backend = agent` and nothing about ITA or the KBS (its API key file does not exist)."""

    def __init__(self, keygate_bin, build_dir, stack, tmp):
        self.bin, self.stack, self.tmp = keygate_bin, stack, tmp
        self.site = Site(keygate_bin, build_dir, stack, tmp)
        self.dir = tempfile.mkdtemp(prefix="kg-agentprov-", dir="/tmp")
        os.chmod(self.dir, 0o755)
        self.sock = os.path.join(self.dir, "agent.sock")
        keys = ",".join(f"{ref}:uid=0:uid={NOBODY}" for ref in self.site.refs.values())
        self.agent_conf = tmp / "agent.conf"
        self.agent_conf.write_text(self.site.conf.read_text() + f"agent_socket = {self.sock}\n"
                                   f"agent_socket_group = {NOBODY}\nagent_keys = {keys}\n")
        self.conf = tmp / "client.conf"
        self.conf.write_text(f"backend = agent\nagent_socket = {self.sock}\nagent_timeout_ms = 3000\n"
                             f"ita_api_key_file = {tmp / 'no-such-api-key'}\n")
        self.cnf = openssl_cnf(build_dir, tmp / "client.cnf", self.conf)
        self.env = dict(self.site.env, OPENSSL_CONF=str(self.cnf))
        self.agent = None
        self.runs = 0

    def start(self):
        self.runs += 1
        self.agent = Agent(self.bin, self.agent_conf, self.sock, self.tmp / f"agent{self.runs}.log").wait_ready()
        return self.agent

    def openssl(self, *args, **kw):
        return run(["openssl", *map(str, args)], env=self.env, **kw)

    def service_requests(self):
        return {name: len(self.stack.requests(name)) for name in ("ita", "kbs")}

    def close(self):
        if self.agent is not None:
            self.agent.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def aps(keygate_bin, build_dir, kbs_stack, tmp_path):
    s = AgentProvSite(keygate_bin, build_dir, kbs_stack, tmp_path)
    yield s
    s.close()


def test_sign_decrypt_derive_through_the_agent(aps, tmp_path):
    aps.start()
    before = aps.service_requests()
    rsa_key, p256 = aps.site.keys["rsa2048"], aps.site.keys["p256"]
    msg = tmp_path / "msg"
    msg.write_bytes(b"signed through the agent")
    digest = tmp_path / "digest"
    digest.write_bytes(hashlib.sha256(msg.read_bytes()).digest())
    sig = tmp_path / "sig"
    # raw sign of a digest: P-256, RSA PSS (salt = digest length) and RSA PKCS#1
    r = aps.openssl("pkeyutl", "-sign", "-inkey", aps.site.refs["p256"], "-in", digest, "-out", sig,
                    "-pkeyopt", "digest:sha256")
    assert r.returncode == 0, r.stderr
    p256.public_key().verify(sig.read_bytes(), digest.read_bytes(), ec.ECDSA(utils.Prehashed(hashes.SHA256())))
    r = aps.openssl("pkeyutl", "-sign", "-inkey", aps.site.refs["rsa2048"], "-in", digest, "-out", sig,
                    "-pkeyopt", "digest:sha256", "-pkeyopt", "rsa_padding_mode:pss", "-pkeyopt",
                    "rsa_pss_saltlen:digest")
    assert r.returncode == 0, r.stderr
    rsa_key.public_key().verify(sig.read_bytes(), msg.read_bytes(), padding.PSS(padding.MGF1(hashes.SHA256()), 32),
                                hashes.SHA256())
    # digest sign (the provider hashes, the agent signs): PSS with the maximum salt, then PKCS#1
    r = aps.openssl("dgst", "-sha384", "-sign", aps.site.refs["rsa2048"], "-sigopt", "rsa_padding_mode:pss",
                    "-sigopt", "rsa_pss_saltlen:max", "-sigopt", "rsa_mgf1_md:sha256", "-out", sig, msg)
    assert r.returncode == 0, r.stderr
    rsa_key.public_key().verify(sig.read_bytes(), msg.read_bytes(),
                                padding.PSS(padding.MGF1(hashes.SHA256()), padding.PSS.MAX_LENGTH), hashes.SHA384())
    r = aps.openssl("dgst", "-sha512", "-sign", aps.site.refs["rsa2048"], "-out", sig, msg)
    assert r.returncode == 0, r.stderr
    rsa_key.public_key().verify(sig.read_bytes(), msg.read_bytes(), padding.PKCS1v15(), hashes.SHA512())
    r = aps.openssl("dgst", "-sha256", "-sign", aps.site.refs["p256"], "-out", sig, msg)
    assert r.returncode == 0, r.stderr
    p256.public_key().verify(sig.read_bytes(), msg.read_bytes(), ec.ECDSA(hashes.SHA256()))
    # RSA decryption: OAEP with a label and SHA-256, and PKCS#1 v1.5
    secret = b"pre-master or session key"
    ct = tmp_path / "ct"
    out = tmp_path / "out"
    ct.write_bytes(rsa_key.public_key().encrypt(
        secret, padding.OAEP(padding.MGF1(hashes.SHA256()), hashes.SHA256(), b"keygate label")))
    r = aps.openssl("pkeyutl", "-decrypt", "-inkey", aps.site.refs["rsa2048"], "-in", ct, "-out", out,
                    "-pkeyopt", "rsa_padding_mode:oaep", "-pkeyopt", "rsa_oaep_md:sha256",
                    "-pkeyopt", "rsa_mgf1_md:sha256", "-pkeyopt", "rsa_oaep_label:" + b"keygate label".hex())
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == secret
    ct.write_bytes(rsa_key.public_key().encrypt(secret, padding.PKCS1v15()))
    r = aps.openssl("pkeyutl", "-decrypt", "-inkey", aps.site.refs["rsa2048"], "-in", ct, "-out", out)
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == secret
    # ECDH with a peer key from a file
    peer = ec.generate_private_key(ec.SECP256R1())
    peer_pub = tmp_path / "peer.pub.pem"
    peer_pub.write_bytes(peer.public_key().public_bytes(serialization.Encoding.PEM,
                                                        serialization.PublicFormat.SubjectPublicKeyInfo))
    r = aps.openssl("pkeyutl", "-derive", "-inkey", aps.site.refs["p256"], "-peerkey", peer_pub, "-out", out)
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == peer.exchange(ec.ECDH(), p256.public_key())
    # none of these processes asked ITA or the KBS for anything
    assert aps.service_requests() == before


def test_agent_down_is_one_clear_error(aps, tmp_path):
    digest = tmp_path / "digest"
    digest.write_bytes(bytes(32))
    r = aps.openssl("pkeyutl", "-sign", "-inkey", aps.site.refs["p256"], "-in", digest, "-out", tmp_path / "sig")
    assert r.returncode != 0
    want = f"keygate: key {aps.site.ids['p256']}: handover: agent: {aps.sock}: connect: No such file or directory"
    assert want in r.stderr, r.stderr


def test_unknown_key_fails_at_load(aps, tmp_path):
    """A reference the agent does not serve fails when the key is loaded (nginx -t), not at the
    first handshake."""
    aps.agent_conf.write_text(aps.agent_conf.read_text().replace(
        "agent_keys = " + f"{aps.site.refs['rsa2048']}:uid=0:uid={NOBODY},", "agent_keys = "))
    aps.start()
    r = aps.openssl("pkey", "-in", aps.site.refs["rsa2048"], "-noout")
    assert r.returncode != 0
    assert f"keygate: key {aps.site.ids['rsa2048']}: handover: agent: {aps.sock}: UNKNOWN_KEY" in r.stderr, r.stderr
    r = aps.openssl("pkey", "-in", aps.site.refs["p256"], "-noout")
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("kind", ["p256", "rsa2048"])
def test_nginx_agent_held_key(aps, kind):
    """nginx (2 workers) serves with an agent-held key: no key bytes in its memory, no request to
    ITA or the KBS; the agent killed, handshakes fail with one clear line in nginx's log; the agent
    back, the same nginx serves again."""
    cert = make_cert(aps.site, kind)  # in local mode, before anything is counted
    aps.start()
    ng = Nginx(aps.site, cert, aps.site.refs[kind], workers=2, name=f"nginx-{kind}", env=aps.env)
    try:
        r = ng.check()
        assert r.returncode == 0, r.stderr
        before = aps.service_requests()
        ng.start()
        for _ in range(5):
            r = curl(ng.port, cert)
            assert r.returncode == 0 and "served by keygate" in r.stdout, r.stderr
        r = curl(ng.port, cert, "--tlsv1.2", "--tls-max", "1.2")
        assert r.returncode == 0, r.stderr
        if kind == "rsa2048":  # TLS 1.2 RSA key exchange: the agent decrypts the pre-master secret
            r = curl(ng.port, cert, "--tlsv1.2", "--tls-max", "1.2", "--ciphers", "AES128-GCM-SHA256", "-v")
            assert r.returncode == 0 and "AES128-GCM-SHA256" in r.stderr, r.stderr
        assert aps.service_requests() == before
        needles = private_needles(aps.site.keys[kind])
        for pid in [ng.proc.pid, *ng.workers()]:
            assert scan_memory(pid, needles) == set(), f"private key bytes in nginx process {pid}"
        # the agent dies: handshakes fail, one line names the socket and the cause
        aps.agent.proc.send_signal(signal.SIGKILL)
        aps.agent.proc.wait(10)
        aps.agent.out.close()
        r = curl(ng.port, cert)
        assert r.returncode != 0
        log = read_log(ng.errlog)
        assert f"handover: agent: {aps.sock}: connect: Connection refused" in log, log[-3000:]
        # back: the same master and workers serve again
        workers = ng.workers()
        aps.start()
        before = aps.service_requests()  # the new agent's release is the agent's
        r = curl(ng.port, cert)
        assert r.returncode == 0 and "served by keygate" in r.stdout, r.stderr + read_log(ng.errlog)[-2000:]
        assert ng.proc.poll() is None and ng.workers() == workers
        assert aps.service_requests() == before
    finally:
        ng.stop()


def test_bare_key_id_refused_in_agent_mode(aps):
    """A keygate:KEY-ID URI has no public key to ask the agent for: a configuration error that
    says what to use instead, and no release (no request to ITA or the KBS)."""
    aps.start()
    before = aps.service_requests()
    r = aps.openssl("pkey", "-in", f"keygate:{aps.site.ids['p256']}", "-pubout")
    assert r.returncode != 0
    assert (f"keygate: key {aps.site.ids['p256']}: backend = agent: no private key in this process" in r.stderr
            and "use the key's KEYGATE KEY REFERENCE" in r.stderr), r.stderr
    assert aps.service_requests() == before
