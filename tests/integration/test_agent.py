# SPDX-License-Identifier: Apache-2.0
"""`keygate agent` (issue 22, item 1): the real agent against the local ITA and Intel-KBS stand-ins,
spoken to with tests/integration/kglib_agent.py, a Python client written from
docs/protocols/agent.md. Results are checked with python3-cryptography against the keys the KBS
holds; every refusal must also leave one line in the agent's log naming the client and the cause."""
import hashlib
import os
import re
import shutil
import socket
import struct
import tempfile
import time

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, utils

from kglib import Site
from kglib_agent import Agent, AgentClient, header, ref_der, request
from tests.stack.kbs_fixture import create_policy, kbs_admin_token, set_key_policy

NOBODY = 65534
OTHER_MRTD = "ab" * 48  # not the simulated TD's MRTD


class AgentSite:
    """Two keys (RSA-2048, P-256) in the KBS, their references served by an agent whose socket is
    in a root-owned 0755 directory (group nogroup, so that uid 65534 can connect and be refused
    by the allow list, not by the file system)."""

    def __init__(self, keygate_bin, build_dir, stack, tmp, acl=None, **conf):
        self.bin, self.stack, self.tmp = keygate_bin, stack, tmp
        self.site = Site(keygate_bin, build_dir, stack, tmp, **conf)
        self.dir = tempfile.mkdtemp(prefix="kg-agent-", dir="/tmp")
        os.chmod(self.dir, 0o755)
        self.sock = os.path.join(self.dir, "agent.sock")
        self.refs = {k: ref_der(p) for k, p in self.site.refs.items()}
        acl = acl or {"rsa2048": ":uid=0", "p256": ":uid=0:gid=0"}
        keys = ",".join(f"{self.site.refs[k]}{g}" for k, g in acl.items())
        self.conf = self.site.conf
        self.base = self.conf.read_text()
        self.set_conf(agent_keys=keys)
        self.agent = None

    def set_conf(self, **kw):
        self.extra = getattr(self, "extra", {})
        self.extra.update(kw)
        settings = {"agent_socket": self.sock, "agent_socket_group": str(NOBODY), **self.extra}
        self.conf.write_text(self.base + "".join(f"{k} = {v}\n" for k, v in settings.items()))

    def start(self, **kw):
        self.agent = Agent(self.bin, self.conf, self.sock, self.tmp / "agent.log", **kw).wait_ready()
        return self.agent

    def client(self):
        c = AgentClient(self.sock)
        assert c.hello().status == "OK"
        return c

    def log_line(self, pattern):
        """The agent's log has a line matching pattern (a regular expression) that names a client."""
        lines = [ln for ln in self.agent.text().splitlines() if re.search(pattern, ln)]
        assert any(re.search(r"agent: client pid=\d+ uid=\d+ gid=\d+: ", ln) for ln in lines), \
            f"no log line /{pattern}/ naming the client:\n{self.agent.text()[-3000:]}"

    def close(self):
        if self.agent is not None:
            self.agent.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def asite(keygate_bin, build_dir, kbs_stack, tmp_path, request):
    s = AgentSite(keygate_bin, build_dir, kbs_stack, tmp_path, **getattr(request, "param", {}))
    yield s
    s.close()


@pytest.fixture
def agent(asite):
    asite.start()
    return asite


def test_hello_and_pubkey(agent):
    with AgentClient(agent.sock) as c:
        r = c.hello()
        assert r.status == "OK" and r.fields["VERSION"] == b"\x01", r
        assert struct.unpack(">I", r.fields["MAX_BODY"])[0] == 65536
        assert r.message.startswith("keygate agent ")
        for kind, key in agent.site.keys.items():
            r = c.pubkey(agent.refs[kind])
            assert r.status == "OK", r
            assert r.result == key.public_key().public_bytes(serialization.Encoding.DER,
                                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    st = os.stat(agent.sock)
    assert oct(st.st_mode & 0o777) == "0o660" and st.st_gid == NOBODY


def test_sign(agent):
    rsa, p256 = agent.site.keys["rsa2048"], agent.site.keys["p256"]
    msg = b"signed by the agent"
    digest = hashlib.sha256(msg).digest()
    with agent.client() as c:
        r = c.sign(agent.refs["p256"], "ECDSA", digest)
        assert r.status == "OK", r
        p256.public_key().verify(r.result, digest, ec.ECDSA(utils.Prehashed(hashes.SHA256())))
        r = c.sign(agent.refs["rsa2048"], "RSA_PKCS1", digest, digest="SHA256")
        assert r.status == "OK", r
        rsa.public_key().verify(r.result, msg, padding.PKCS1v15(), hashes.SHA256())
        # digest NONE: the DigestInfo is the caller's
        info = bytes.fromhex("3031300d060960864801650304020105000420") + digest
        r = c.sign(agent.refs["rsa2048"], "RSA_PKCS1", info, digest="NONE")
        assert r.status == "OK", r
        rsa.public_key().verify(r.result, msg, padding.PKCS1v15(), hashes.SHA256())
        for salt, expect in ((-1, 48), (-2, padding.PSS.MAX_LENGTH), (-3, 48), (20, 20)):
            d384 = hashlib.sha384(msg).digest()
            r = c.sign(agent.refs["rsa2048"], "RSA_PSS", d384, digest="SHA384", mgf1="SHA256", salt=salt)
            assert r.status == "OK", (salt, r)
            rsa.public_key().verify(r.result, msg, padding.PSS(padding.MGF1(hashes.SHA256()), expect),
                                    hashes.SHA384())
        # the wrong key type is the operation's failure
        r = c.sign(agent.refs["p256"], "RSA_PKCS1", digest, digest="SHA256")
        assert r.status == "OP_FAILED" and "not an RSA key" in r.message, r
    agent.log_line(r"SIGN request \d+: OP_FAILED: key \S+: .*not an RSA key")


def test_decrypt(agent):
    pub = agent.site.keys["rsa2048"].public_key()
    secret = os.urandom(32)
    with agent.client() as c:
        oaep = padding.OAEP(padding.MGF1(hashes.SHA1()), hashes.SHA256(), b"lbl")
        r = c.decrypt(agent.refs["rsa2048"], "OAEP", pub.encrypt(secret, oaep), digest="SHA256", mgf1="SHA1",
                      label=b"lbl")
        assert r.status == "OK" and r.result == secret, r
        r = c.decrypt(agent.refs["rsa2048"], "PKCS1", pub.encrypt(secret, padding.PKCS1v15()))
        assert r.status == "OK" and r.result == secret, r
        # a wrong label: a failure that says nothing of why
        r = c.decrypt(agent.refs["rsa2048"], "OAEP", pub.encrypt(secret, oaep), digest="SHA256", mgf1="SHA1",
                      label=b"other")
        assert r.status == "OP_FAILED" and r.message == "handover: DECRYPT OAEP: decryption failed", r
        # TLS pre-master: 48 bytes, even for garbage (below the modulus: a number over it is no ciphertext)
        pms = b"\x03\x03" + os.urandom(46)
        tls = {"TLS_VERSIONS": struct.pack(">HH", 0x0303, 0x0303)}
        r = c.call("DECRYPT", KEY_REF=agent.refs["rsa2048"], PADDING=b"\x04",
                   DATA=pub.encrypt(pms, padding.PKCS1v15()), **tls)
        assert r.status == "OK" and r.result == pms, r
        r = c.call("DECRYPT", KEY_REF=agent.refs["rsa2048"], PADDING=b"\x04", DATA=b"\x00" + os.urandom(255),
                   **tls)
        assert r.status == "OK" and len(r.result) == 48, r


def test_derive(agent):
    p256 = agent.site.keys["p256"]
    peer = ec.generate_private_key(ec.SECP256R1())
    spki = peer.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    with agent.client() as c:
        r = c.derive(agent.refs["p256"], spki)
        assert r.status == "OK" and r.result == peer.exchange(ec.ECDH(), p256.public_key()), r
        other = ec.generate_private_key(ec.SECP384R1()).public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        r = c.derive(agent.refs["p256"], other)
        assert r.status == "OP_FAILED" and "curve" in r.message, r
    agent.log_line(r"DERIVE request \d+: OP_FAILED: .*curve secp384r1 is not the key's \(prime256v1\)")


def test_unknown_key(agent, keygate_bin, tmp_path):
    # a reference to a key the agent does not serve: the RSA key's id with the P-256 public key
    from kglib import pub_pem
    pub = tmp_path / "mix.pub.pem"
    pub.write_text(pub_pem(agent.site.keys["p256"]))
    out = tmp_path / "mix.ref.pem"
    from conftest import run
    r = run([keygate_bin, "-c", str(agent.conf), "ref", "create", "--key-id", agent.site.ids["rsa2048"], "--pubkey",
             str(pub), "-o", str(out)])
    assert r.returncode == 0, r.stderr
    with agent.client() as c:
        r = c.sign(ref_der(out), "ECDSA", b"\x01" * 32)
        assert r.status == "UNKNOWN_KEY", r
        assert c.pubkey(agent.refs["p256"]).status == "OK"  # the connection goes on
    agent.log_line(r"SIGN request \d+: UNKNOWN_KEY: key \S+ is not served here")
