# SPDX-License-Identifier: Apache-2.0
"""The verification cache (cache_dir, connector/ita_cache.c): ITA's JWKS and CRLs kept on disk
across processes. A new process with a fresh cache performs nonce, attest and transfer only; a
cache entry that fails any check (bad signature, stale CRL, JWKS from another root, truncated,
symlink, group-writable, FIFO, foreign owner) is ignored, downloaded again and replaced, and the
release answers as it would without a cache; concurrent processes leave whole entries only; an
unsafe or absent directory is not used (said once at debug level) and costs nothing else.
Requests are counted from the ITA stand-in's request log (User-Agent keygate)."""
import datetime
import hashlib
import os
import re
import stat
import subprocess

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from conftest import kbs_conf, run
from kglib import new_key, pub_pem, register
from tests.stack import pki

CERTS, ATS_CRL, ROOT_CRL = "/certs", "/crl/ats-ca-crl.der", "/crl/root-ca-crl.der"
NONCE, ATTEST = "nonce", "attest"  # whichever API version and route


class Setup:
    """One registered P-256 key, a cache directory (root-owned here, mode 0700) and a config."""

    def __init__(self, keygate_bin, stack, tmp, cache=None):
        self.bin, self.stack, self.tmp = keygate_bin, stack, tmp
        self.cache = cache if cache is not None else tmp / "vcache"
        if cache is None:
            self.cache.mkdir(mode=0o700)
        self.key = new_key("p256")
        self.key_id = register(stack, self.key)
        self.conf = self.write_conf("k.conf", self.cache)
        self.ita = stack.services["ita"].url

    def write_conf(self, name, cache_dir):
        return kbs_conf(self.stack, self.tmp / name, cache_dir=cache_dir)

    def release(self, conf=None, env=None):
        self.stack.clear_requests("ita")
        r = run([self.bin, "-c", str(conf or self.conf), "release", "--key-id", self.key_id], env=env,
                timeout=120)
        return r, self.keygate_requests()

    def keygate_requests(self):
        """keygate's own requests to ITA (the KBS stand-in's JWKS/CRL fetches excluded)."""
        return [q["path"].rsplit("/", 1)[1] if q["path"].startswith("/appraisal/") else q["path"]
                for q in self.stack.requests("ita") if q.get("user_agent") == "keygate"]

    def entry(self, kind, path):
        """The cache file of a URL path on the ITA stand-in (named by SHA-256 of the URL)."""
        return self.cache / f"{kind}-{hashlib.sha256((self.ita + path).encode()).hexdigest()}"

    def entries(self):
        return {"jwks": self.entry("jwks", CERTS), "ats": self.entry("crl", ATS_CRL),
                "root": self.entry("crl", ROOT_CRL)}

    def assert_cache_whole(self):
        """Exactly the three entries, regular 0600 files, no temporary file left."""
        assert sorted(p.name for p in self.cache.iterdir()) == sorted(p.name for p in self.entries().values())
        for p in self.entries().values():
            st = os.lstat(p)
            assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600 and st.st_nlink == 1, p


@pytest.fixture
def setup(keygate_bin, kbs_stack, tmp_path):
    return Setup(keygate_bin, kbs_stack, tmp_path)


def test_second_process_fetches_neither_jwks_nor_crls(setup):
    r, reqs = setup.release()
    assert r.returncode == 0, r.stderr
    assert r.stdout == pub_pem(setup.key)
    assert sorted(reqs) == sorted([NONCE, ATTEST, CERTS, ATS_CRL, ROOT_CRL])
    setup.assert_cache_whole()
    # the entries are what ITA serves: the JWKS text as downloaded, the CRLs as DER
    assert setup.entries()["jwks"].read_bytes() == setup.stack.http("ita", "GET", CERTS)[1]
    assert setup.entries()["ats"].read_bytes() == setup.stack.http("ita", "GET", ATS_CRL)[1]
    for _ in range(2):
        r, reqs = setup.release()
        assert r.returncode == 0, r.stderr
        assert r.stdout == pub_pem(setup.key)
        assert reqs == [NONCE, ATTEST]  # with the transfer: 3 round trips


def test_without_cache_every_process_fetches_again(setup):
    """The control: cache_dir = none downloads JWKS and CRLs in every process, writes nothing."""
    conf = setup.write_conf("none.conf", "none")
    for _ in range(2):
        r, reqs = setup.release(conf)
        assert r.returncode == 0, r.stderr
        assert sorted(reqs) == sorted([NONCE, ATTEST, CERTS, ATS_CRL, ROOT_CRL])
    assert list(setup.cache.iterdir()) == []


def _stale_crl(setup, which):
    """A CRL correctly signed by the right issuer whose nextUpdate has passed."""
    chain = pki.load_ita_chain(setup.stack.state_dir)
    issuer, key = (chain.ca, chain.ca_key) if which == "ats" else (chain.root, chain.root_key)
    now = datetime.datetime.now(datetime.timezone.utc)
    b = (x509.CertificateRevocationListBuilder().issuer_name(issuer.subject)
         .last_update(now - datetime.timedelta(days=3)).next_update(now - datetime.timedelta(days=1)))
    return b.sign(key, hashes.SHA384()).public_bytes(serialization.Encoding.DER)


def _foreign_jwks(setup):
    """The JWKS with each entry's key and x5c taken from the foreign chain (another root), kid
    and alg kept: the entry keygate selects chains to a root that is not pinned."""
    import json
    real = json.loads(setup.stack.http("ita", "GET", CERTS)[1])
    setup.stack.set_faults("ita", [{"route": "^/certs$", "mode": "foreign_root"}])
    both = json.loads(setup.stack.http("ita", "GET", CERTS)[1])
    setup.stack.clear_faults("ita")
    foreign = [k for k in both["keys"] if k not in real["keys"]]
    assert foreign
    out = []
    for k in real["keys"]:
        f = next(x for x in foreign if x["alg"] == k["alg"])
        out.append(dict(f, kid=k["kid"]))
    return json.dumps({"keys": out}).encode()


def _tamper(setup, what, how):
    p = setup.entries()[what]
    good = p.read_bytes()
    p.unlink()
    if how == "bad-signature":
        p.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    elif how == "stale":
        p.write_bytes(_stale_crl(setup, what))
    elif how == "foreign-root":
        p.write_bytes(_foreign_jwks(setup))
    elif how == "truncated":
        p.write_bytes(good[: len(good) // 2])
    elif how == "symlink":
        (setup.tmp / "elsewhere").write_bytes(good)
        os.symlink(setup.tmp / "elsewhere", p)
        return
    elif how == "group-writable":
        p.write_bytes(good)
        os.chmod(p, 0o620)
        return
    elif how == "fifo":
        os.mkfifo(p, 0o600)
        return
    elif how == "foreign-owner":
        p.write_bytes(good)
        os.chown(p, 65534, 65534)
    os.chmod(p, 0o600)


CASES = [("ats", "bad-signature"), ("root", "bad-signature"), ("ats", "stale"), ("root", "stale"),
         ("ats", "truncated"), ("jwks", "foreign-root"), ("jwks", "truncated"), ("jwks", "symlink"),
         ("ats", "symlink"), ("jwks", "group-writable"), ("root", "group-writable"), ("ats", "fifo"),
         ("jwks", "foreign-owner")]
REFETCH = {"jwks": CERTS, "ats": ATS_CRL, "root": ROOT_CRL}


@pytest.mark.parametrize("what,how", CASES, ids=[f"{w}-{h}" for w, h in CASES])
def test_a_bad_entry_is_refetched_and_replaced(setup, what, how):
    r, _ = setup.release()
    assert r.returncode == 0, r.stderr
    good = setup.entries()[what].read_bytes()
    _tamper(setup, what, how)
    r, reqs = setup.release()
    assert r.returncode == 0, r.stderr
    assert r.stdout == pub_pem(setup.key)
    assert sorted(reqs) == sorted([NONCE, ATTEST, REFETCH[what]])
    # replaced by a whole, valid entry (a rename: a symlink is replaced, never followed)
    setup.assert_cache_whole()
    assert setup.entries()[what].read_bytes() == good
    if how == "symlink":
        assert (setup.tmp / "elsewhere").read_bytes() == good
    r, reqs = setup.release()
    assert r.returncode == 0 and reqs == [NONCE, ATTEST], r.stderr


@pytest.mark.parametrize("what,fault", [("ats", "status"), ("jwks", "status")])
def test_bad_entry_and_bad_network_fail_as_without_cache(setup, what, fault):
    """When the download fails too, the release fails with the same message as a process
    without a cache: the bad entry never decides."""
    r, _ = setup.release()
    assert r.returncode == 0, r.stderr
    _tamper(setup, what, "stale" if what == "ats" else "foreign-root")
    route = {"jwks": "^/certs$", "ats": "ats-ca-crl"}[what]
    setup.stack.set_faults("ita", [{"route": route, "mode": fault, "status": 503}])
    try:
        with_cache, _ = setup.release()
        without, _ = setup.release(setup.write_conf("none.conf", "none"))
    finally:
        setup.stack.clear_faults("ita")
    assert with_cache.returncode != 0 and with_cache.stdout == ""
    assert with_cache.returncode == without.returncode
    def words(r):  # the process id differs
        return re.sub(r"keygate\[[0-9]+\]", "keygate[pid]", r.stderr)

    assert words(with_cache) == words(without)
    assert "503" in with_cache.stderr


def test_concurrent_processes_leave_a_whole_cache(setup):
    procs = [subprocess.Popen([setup.bin, "-c", str(setup.conf), "release", "--key-id", setup.key_id],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(8)]
    outs = [p.communicate(timeout=180) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
        assert out == pub_pem(setup.key)
    setup.assert_cache_whole()
    r, reqs = setup.release()
    assert r.returncode == 0 and reqs == [NONCE, ATTEST], r.stderr


@pytest.mark.parametrize("problem", ["mode-0755", "foreign-owner", "symlink", "absent", "not-a-directory"])
def test_unsafe_or_absent_directory_is_not_used(keygate_bin, kbs_stack, tmp_path, problem):
    d = tmp_path / "vcache"
    if problem == "mode-0755":
        d.mkdir(mode=0o755)
        os.chmod(d, 0o755)
    elif problem == "foreign-owner":
        d.mkdir(mode=0o700)
        os.chown(d, 65534, 65534)
    elif problem == "symlink":
        (tmp_path / "real").mkdir(mode=0o700)
        d.symlink_to(tmp_path / "real")
    elif problem == "not-a-directory":
        d.write_text("")
    s = Setup(keygate_bin, kbs_stack, tmp_path, cache=d)
    for _ in range(2):
        r, reqs = s.release(env={"KEYGATE_DEBUG": "3"})
        assert r.returncode == 0, r.stderr
        assert r.stdout == pub_pem(s.key)
        assert sorted(reqs) == sorted([NONCE, ATTEST, CERTS, ATS_CRL, ROOT_CRL])
        assert r.stderr.count(f"verification cache {d} not used") == 1, r.stderr
    if problem in ("mode-0755", "foreign-owner"):
        assert list(d.iterdir()) == []
    if problem == "symlink":
        assert list((tmp_path / "real").iterdir()) == []
