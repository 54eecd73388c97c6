# SPDX-License-Identifier: Apache-2.0
"""A small client of the keygate agent protocol, version 1, written from docs/protocols/agent.md
(a second implementation beside agent/kg_agent_proto.c): frames, fields, requests and replies,
plus the `keygate agent` process helper the agent tests share."""
import base64
import os
import re
import socket
import struct
import subprocess
import time

MAGIC = b"KGA"
HEADER = struct.Struct(">3sBBBHI")  # magic, version, op, flags, reserved, body length
OPS = {"HELLO": 1, "PUBKEY": 2, "SIGN": 3, "DECRYPT": 4, "DERIVE": 5}
ERROR_OP = 0x80
STATUS = ["OK", "BAD_REQUEST", "VERSION", "UNKNOWN_KEY", "DENIED", "REVOKED", "UNAVAILABLE", "RATE_LIMITED",
          "TOO_LARGE", "INTERNAL", "OP_FAILED", "BUSY"]
TAG = {"VERSION": 1, "MAX_BODY": 2, "KEY_REF": 3, "SIGN_SCHEME": 4, "DIGEST": 5, "MGF1_DIGEST": 6, "SALT_LEN": 7,
       "PADDING": 8, "OAEP_LABEL": 9, "TLS_VERSIONS": 0xA, "DATA": 0xB, "PEER_KEY": 0xC, "STATUS": 0x10,
       "MESSAGE": 0x11, "RESULT": 0x12}
TAG_NAME = {v: k for k, v in TAG.items()}
SCHEME = {"ECDSA": 1, "RSA_PKCS1": 2, "RSA_PSS": 3}
DIGEST = {"NONE": 1, "SHA1": 2, "SHA224": 3, "SHA256": 4, "SHA384": 5, "SHA512": 6}
PADDING = {"PKCS1": 1, "OAEP": 2, "NONE": 3, "PKCS1_TLS": 4}


def header(op, body_len, version=1, flags=0, reserved=0, magic=MAGIC):
    return HEADER.pack(magic, version, op, flags, reserved, body_len)


def body(rid, fields):
    """fields: {tag name: bytes}; written in ascending tag order (§3)."""
    out = struct.pack(">I", rid)
    for tag in sorted(TAG[n] for n in fields):
        value = fields[TAG_NAME[tag]]
        out += struct.pack(">HH", tag, len(value)) + value
    return out


def request(op, rid, **fields):
    b = body(rid, fields)
    return header(OPS[op], len(b)) + b


def ref_der(path):
    """The DER inside a KEYGATE KEY REFERENCE PEM file (what KEY_REF carries)."""
    m = re.search(r"-----BEGIN KEYGATE KEY REFERENCE-----(.*?)-----END KEYGATE KEY REFERENCE-----",
                  open(path).read(), re.S)
    return base64.b64decode("".join(m.group(1).split()))


class Reply:
    def __init__(self, op, rid, fields):
        self.op, self.id, self.fields = op, rid, fields
        self.status = STATUS[struct.unpack(">I", fields["STATUS"])[0]]
        self.message = fields.get("MESSAGE", b"").decode()
        self.result = fields.get("RESULT")

    def __repr__(self):
        return f"Reply(op=0x{self.op:02x}, id={self.id}, {self.status}, {self.message!r})"


def parse_reply(hdr, data):
    magic, version, op, flags, reserved, n = HEADER.unpack(hdr)
    assert (magic, version, flags, reserved) == (MAGIC, 1, 0, 0) and 4 <= n <= 65536 and len(data) == n
    rid, fields, off, last = struct.unpack(">I", data[:4])[0], {}, 4, 0
    while off < n:
        tag, length = struct.unpack(">HH", data[off:off + 4])
        assert tag > last and off + 4 + length <= n, data
        fields[TAG_NAME.get(tag, tag)] = data[off + 4:off + 4 + length]
        off, last = off + 4 + length, tag
    return Reply(op, rid, fields)


class AgentClient:
    def __init__(self, path, timeout=30):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(str(path))
        self.next_id = 1

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send_raw(self, data):
        self.sock.sendall(data)

    def _read(self, n):
        out = b""
        while len(out) < n:
            chunk = self.sock.recv(n - len(out))
            if not chunk:
                return None
            out += chunk
        return out

    def recv(self):
        """The next reply, or None when the agent closed the connection."""
        hdr = self._read(12)
        if hdr is None:
            return None
        data = self._read(HEADER.unpack(hdr)[5])
        return None if data is None else parse_reply(hdr, data)

    def closed(self):
        """Whether the agent closed the connection (EOF, or a reset)."""
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True

    def call(self, op, **fields):
        rid = self.next_id
        self.next_id += 1
        self.send_raw(request(op, rid, **fields))
        r = self.recv()
        assert r is None or r.id == rid and r.op == OPS[op] | 0x80, r
        return r

    def hello(self):
        return self.call("HELLO", VERSION=b"\x01")

    def pubkey(self, ref):
        return self.call("PUBKEY", KEY_REF=ref)

    def sign(self, ref, scheme, data, digest=None, mgf1=None, salt=None):
        f = {"KEY_REF": ref, "SIGN_SCHEME": bytes([SCHEME[scheme]]), "DATA": data}
        if digest:
            f["DIGEST"] = bytes([DIGEST[digest]])
        if mgf1:
            f["MGF1_DIGEST"] = bytes([DIGEST[mgf1]])
        if salt is not None:
            f["SALT_LEN"] = struct.pack(">i", salt)
        return self.call("SIGN", **f)

    def decrypt(self, ref, padding, data, digest=None, mgf1=None, label=None):
        f = {"KEY_REF": ref, "PADDING": bytes([PADDING[padding]]), "DATA": data}
        if digest:
            f["DIGEST"] = bytes([DIGEST[digest]])
        if mgf1:
            f["MGF1_DIGEST"] = bytes([DIGEST[mgf1]])
        if label:
            f["OAEP_LABEL"] = label
        return self.call("DECRYPT", **f)

    def derive(self, ref, peer_spki):
        return self.call("DERIVE", KEY_REF=ref, PEER_KEY=peer_spki)


class Agent:
    """`keygate agent -c CONF` in the foreground, its stderr in LOG; stopped by PID."""

    def __init__(self, keygate_bin, conf, sock, log, env=None, pass_fds=(), wrapper=None):
        self.sock, self.log = sock, log
        full = dict(os.environ)
        full.pop("KEYGATE_DEBUG", None)
        full.update(env or {})
        cmd = [keygate_bin, "-c", str(conf), "agent"]
        if wrapper:
            cmd = wrapper + cmd
        self.out = open(log, "a")
        self.proc = subprocess.Popen(cmd, env=full, stdout=self.out, stderr=subprocess.STDOUT, pass_fds=pass_fds)

    def wait_ready(self, deadline_s=30):
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            assert self.proc.poll() is None, self.text()
            if "key(s) released; serving on" in self.text():
                return self
            time.sleep(0.05)
        raise AssertionError("agent not ready: " + self.text())

    def text(self):
        if not self.out.closed:
            self.out.flush()
        return open(self.log).read()

    def client(self):
        return AgentClient(self.sock)

    def stop(self, sig=15, timeout=15):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.out.close()
        return self.proc.returncode
