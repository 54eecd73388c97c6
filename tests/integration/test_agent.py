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

from conftest import run
from kglib import Site, pub_pem
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
    pub = tmp_path / "mix.pub.pem"
    pub.write_text(pub_pem(agent.site.keys["p256"]))
    out = tmp_path / "mix.ref.pem"
    r = run([keygate_bin, "-c", str(agent.conf), "ref", "create", "--key-id", agent.site.ids["rsa2048"], "--pubkey",
             str(pub), "-o", str(out)])
    assert r.returncode == 0, r.stderr
    with agent.client() as c:
        r = c.sign(ref_der(out), "ECDSA", b"\x01" * 32)
        assert r.status == "UNKNOWN_KEY", r
        assert c.pubkey(agent.refs["p256"]).status == "OK"  # the connection goes on
    agent.log_line(r"SIGN request \d+: UNKNOWN_KEY: key \S+ is not served here")


def as_nobody(fn):
    """Runs fn() in a forked child with uid and gid 65534 and returns what it returned (a str)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            out = fn()
        except BaseException as e:  # the parent sees it as the result
            out = f"child error: {e!r}"
        os.write(w, out.encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        out = f.read()
    os.waitpid(pid, 0)
    return out


def sign_status(path, ref):
    with AgentClient(path) as c:
        assert c.hello().status == "OK"
        return c.sign(ref, "ECDSA", b"\x02" * 32).status


def test_uid_not_in_the_allow_list_is_denied(agent):
    ref = agent.refs["p256"]
    assert as_nobody(lambda: sign_status(agent.sock, ref)) == "DENIED"
    agent.log_line(rf"uid={NOBODY} gid={NOBODY}: SIGN request \d+: DENIED: key \S+ does not allow uid {NOBODY}")
    assert sign_status(agent.sock, ref) == "OK"  # root is listed


@pytest.mark.parametrize("grant", [f":uid={NOBODY}", ":user=nobody", f":gid={NOBODY}", ":group=nogroup"])
def test_uid_or_gid_in_the_allow_list_is_allowed(asite, grant):
    asite.set_conf(agent_keys=f"{asite.site.refs['p256']}:uid=0{grant}")
    asite.start()
    ref = asite.refs["p256"]
    assert as_nobody(lambda: sign_status(asite.sock, ref)) == "OK"


def test_rate_limit(asite):
    asite.set_conf(agent_rate=5)
    asite.start()
    with asite.client() as c:
        statuses = [c.pubkey(asite.refs["p256"]).status for _ in range(12)]
        assert statuses[:5] == ["OK"] * 5 and "RATE_LIMITED" in statuses[5:], statuses
        time.sleep(1.1)  # the bucket refills at agent_rate per second
        assert c.pubkey(asite.refs["p256"]).status == "OK"
    asite.log_line(r"PUBKEY request \d+: RATE_LIMITED \(over agent_rate = 5 per second\)")


def test_max_clients_busy(asite):
    asite.set_conf(agent_max_clients=2)
    asite.start()
    a, b = asite.client(), asite.client()
    with AgentClient(asite.sock) as c:
        r = c.recv()
        assert r is not None and r.op == 0x80 and r.id == 0 and r.status == "BUSY", r
        assert c.closed()
    asite.log_line(r"BUSY: agent_max_clients = 2 connections served already; closed")
    a.close()
    time.sleep(0.3)
    with asite.client() as c:  # a slot is free again
        assert c.pubkey(asite.refs["p256"]).status == "OK"
    b.close()


def test_oversize_header_refused_before_the_body(agent):
    with agent.client() as c:
        c.send_raw(header(3, 65537))  # no body follows: the agent must answer from the header
        r = c.recv()
        assert r.op == 0x80 and r.id == 0 and r.status == "TOO_LARGE", r
        assert c.closed()
    agent.log_line(r"TOO_LARGE: .*header: .*; closed")


def test_garbage(agent):
    with agent.client() as c:
        c.send_raw(b"GET / HTTP/1.1\r\n\r\n")
        r = c.recv()
        assert r.op == 0x80 and r.status == "BAD_REQUEST", r
        assert c.closed()
    # a well-framed body that breaks the rules: answered with its id, the connection stays
    with agent.client() as c:
        c.send_raw(request("SIGN", 7, KEY_REF=agent.refs["p256"], SIGN_SCHEME=b"\x01\x01\x01", DATA=b"x" * 32))
        r = c.recv()
        assert r.op == 0x83 and r.id == 7 and r.status == "BAD_REQUEST" and "SIGN_SCHEME" in r.message, r
        assert c.pubkey(agent.refs["p256"]).status == "OK"
    agent.log_line(r"BAD_REQUEST: .*magic")
    agent.log_line(r"SIGN request 7: BAD_REQUEST: .*field SIGN_SCHEME")


def test_request_before_hello_refused(agent):
    with AgentClient(agent.sock) as c:
        r = c.pubkey(agent.refs["p256"])
        assert r.status == "BAD_REQUEST" and "HELLO" in r.message, r
        assert c.closed()
    agent.log_line(r"PUBKEY request \d+: BAD_REQUEST: HELLO must come first; closed")


def test_sigterm_unlinks_the_socket(agent):
    c = agent.client()  # an open connection does not hold the agent up
    assert os.path.exists(agent.sock)
    assert agent.agent.stop() == 0
    assert not os.path.exists(agent.sock)
    assert "agent: stopped" in agent.agent.text()
    assert c.closed()
    c.close()


def test_world_writable_socket_directory_refused(asite):
    os.chmod(asite.dir, 0o777)
    a = Agent(asite.bin, asite.conf, asite.sock, asite.tmp / "agent.log")
    assert a.proc.wait(30) == 10, a.text()
    assert re.search(r"agent_socket: directory \S+ \(owner uid 0, mode 0777\) is writable by others", a.text())
    a.out.close()
    assert not os.path.exists(asite.sock)


@pytest.mark.parametrize("asite", [{"key_lease_s": 5, "refresh_before_s": 4}], indirect=True)
def test_revocation_reaches_clients_within_one_lease(agent):
    ref = agent.refs["p256"]
    with agent.client() as c:
        assert c.sign(ref, "ECDSA", b"\x03" * 32).status == "OK"
        kbs = agent.stack.services["kbs"].url
        admin = kbs_admin_token(kbs, agent.stack.state_dir)
        other = create_policy(kbs, admin, {"mrtd": [OTHER_MRTD], "enforce_tcb_upto_date": False})
        set_key_policy(kbs, admin, agent.site.ids["p256"], other)
        t0 = time.monotonic()
        while time.monotonic() - t0 < 5 + 3:
            r = c.sign(ref, "ECDSA", b"\x03" * 32)
            if r.status != "OK":
                break
            time.sleep(0.2)
        assert r.status == "REVOKED" and "revoked" in r.message, r
    with agent.client() as c:  # every client, at once
        assert c.sign(ref, "ECDSA", b"\x03" * 32).status == "REVOKED"
        assert c.sign(agent.refs["rsa2048"], "RSA_PKCS1", b"\x04" * 32, digest="SHA256").status == "OK"
    agent.log_line(rf"SIGN request \d+: REVOKED: key {agent.site.ids['p256']}: ")


def test_socket_activation(asite):
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(asite.sock)
    os.chmod(asite.sock, 0o660)
    listener.listen(16)
    fd = listener.fileno()

    # LISTEN_PID must be the agent's own pid: the shell moves the socket to fd 3, sets LISTEN_PID to
    # $$ and execs the agent in place (bash: dash takes no fd numbers over 9)
    wrapper = ["bash", "-c", f'exec 3<&{fd}; [ {fd} = 3 ] || exec {fd}<&-; LISTEN_PID=$$ LISTEN_FDS=1 exec "$@"', "sh"]
    asite.set_conf(agent_socket=os.path.join(asite.dir, "unused.sock"))
    asite.start(pass_fds=(fd,), wrapper=wrapper)
    listener.close()
    assert "serving on the socket systemd passed" in asite.agent.text()
    with asite.client() as c:
        assert c.pubkey(asite.refs["p256"]).status == "OK"
    assert not os.path.exists(os.path.join(asite.dir, "unused.sock"))
    assert asite.agent.stop() == 0
    assert os.path.exists(asite.sock)  # systemd's socket is not the agent's to remove


def test_stalled_client_blocks_nobody_and_is_closed(asite):
    asite.set_conf(agent_timeout_ms=500)
    asite.start()
    with AgentClient(asite.sock) as stalled:
        stalled.send_raw(request("HELLO", 1, VERSION=b"\x01")[:5])  # a header started, never finished
        t0 = time.monotonic()
        with asite.client() as c:  # served meanwhile
            assert c.pubkey(asite.refs["p256"]).status == "OK"
        assert time.monotonic() - t0 < 0.5
        assert stalled.closed()  # after agent_timeout_ms
        assert 0.4 < time.monotonic() - t0 < 5
    asite.log_line(r"closed: a header cut short, a timeout \(agent_timeout_ms\) or a read error")
