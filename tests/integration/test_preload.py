# SPDX-License-Identifier: Apache-2.0
"""preload (issue 21, item 4): the first release in a process releases every key reference the
setting names, with one attestation and parallel transfers, so that later loads find their keys
ready (nginx loading one key per server block, a PKCS#11 application using several keys).

Real hosts against the local ITA and Intel-KBS stand-ins: Python's ssl module loading
certificates and references (PEM_read_bio_PrivateKey + SSL_CTX_check_private_key, as nginx
does), `openssl pkeyutl`, and pkcs11-tool through the PKCS#11 module. The stand-ins' request logs
show what happened: how many attestations reached ITA, which keys were transferred, and whether
transfers were in flight at the same time (each entry has its end time and duration)."""
import json

from cryptography.hazmat.primitives import serialization

from conftest import kbs_conf, run
from kglib import Site, Token, attest_count, new_key, pub_pem, register, self_signed

N_KEYS = 5
DELAY_S = 0.6

HOST = r"""
import json, ssl, sys
out = []
for cert, ref in zip(sys.argv[1::2], sys.argv[2::2]):
    c = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        c.load_cert_chain(cert, ref)
        out.append("ok")
    except OSError as e:
        out.append("error: " + str(e))
print(json.dumps(out))
"""


def transfers(stack):
    return [q for q in stack.requests("kbs") if q["path"].endswith("/transfer")]


def transferred_ids(stack):
    return sorted(q["path"].split("/")[-2] for q in transfers(stack) if q["status"] == 200)


def max_in_flight(reqs):
    """The largest number of requests whose [start, end] intervals overlap (end = t, start = t - ms)."""
    edges = sorted([(q["t"] - q["ms"] / 1000, 1) for q in reqs] + [(q["t"], -1) for q in reqs],
                   key=lambda e: (e[0], e[1]))
    now = best = 0
    for _, d in edges:
        now += d
        best = max(best, now)
    return best


def preload_site(keygate_bin, build_dir, stack, tmp, **conf):
    """A Site whose references are all in tmp/*.ref.pem (N_KEYS keys, RSA and P-256) and whose
    keygate.conf preloads that glob, with a certificate per key."""
    kinds = tuple("rsa2048" if i % 2 else "p256" for i in range(N_KEYS))
    site = Site(keygate_bin, build_dir, stack, tmp, kinds=(), **conf)
    site.names = []
    for i, kind in enumerate(kinds):
        name = f"k{i}"
        key = new_key(kind)
        key_id = register(stack, key)
        (tmp / f"{name}.pub.pem").write_text(pub_pem(key))
        ref = tmp / f"{name}.ref.pem"
        r = run([keygate_bin, "-c", str(site.conf), "ref", "create", "--key-id", key_id, "--pubkey",
                 str(tmp / f"{name}.pub.pem"), "-o", str(ref)])
        assert r.returncode == 0, r.stderr
        cert = tmp / f"{name}.crt"
        cert.write_bytes(self_signed(key).public_bytes(serialization.Encoding.PEM))
        site.keys[name], site.refs[name], site.ids[name] = key, ref, key_id
        site.names.append(name)
    site.certs = {n: tmp / f"{n}.crt" for n in site.names}
    return site


def with_preload(site, value):
    site.conf.write_text(site.conf.read_text() + f"preload = {value}\n")


def load_in_one_process(site, names):
    log = site.tmp / "host.log"
    log.unlink(missing_ok=True)
    args = [str(p) for n in names for p in (site.certs[n], site.refs[n])]
    r = run(["/usr/bin/python3", "-c", HOST, *args], env=dict(site.env, KEYGATE_DEBUG=f"{log}:2"), timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout), (log.read_text() if log.exists() else "")


def test_first_load_releases_every_preloaded_key_in_parallel_with_one_attestation(keygate_bin, build_dir,
                                                                                 kbs_stack, tmp_path):
    site = preload_site(keygate_bin, build_dir, kbs_stack, tmp_path)
    # control, without preload: loading one key releases that key only
    kbs_stack.clear_requests("kbs")
    kbs_stack.clear_requests("ita")
    out, _ = load_in_one_process(site, site.names[:1])
    assert out == ["ok"]
    assert transferred_ids(kbs_stack) == [site.ids["k0"]]

    with_preload(site, f"{tmp_path}/*.ref.pem")
    kbs_stack.clear_requests("kbs")
    kbs_stack.clear_requests("ita")
    # every transfer held DELAY_S: one after the other they would never overlap
    kbs_stack.set_faults("kbs", [{"route": "/transfer$", "mode": "delay", "seconds": DELAY_S}])
    try:
        out, log = load_in_one_process(site, site.names[:1])
    finally:
        kbs_stack.clear_faults("kbs")
    assert out == ["ok"]
    # the one load released all N_KEYS keys, with one attestation, transfers side by side
    assert transferred_ids(kbs_stack) == sorted(site.ids.values())
    assert attest_count(kbs_stack) == 1
    assert max_in_flight(transfers(kbs_stack)) >= 2, transfers(kbs_stack)
    assert f"preload: {N_KEYS} of {N_KEYS} key(s) released" in log, log[-2000:]

    # loading every key in one process: the first load preloads, the later ones find them ready
    kbs_stack.clear_requests("kbs")
    kbs_stack.clear_requests("ita")
    out, _ = load_in_one_process(site, site.names)
    assert out == ["ok"] * N_KEYS
    assert transferred_ids(kbs_stack) == sorted(site.ids.values())
    assert attest_count(kbs_stack) == 1


def test_a_key_outside_the_preload_list_is_released_with_the_batch(keygate_bin, build_dir, kbs_stack, tmp_path):
    site = preload_site(keygate_bin, build_dir, kbs_stack, tmp_path)
    with_preload(site, ", ".join(str(site.refs[n]) for n in site.names[1:3]))  # a list of paths, no glob
    kbs_stack.clear_requests("kbs")
    kbs_stack.clear_requests("ita")
    out, _ = load_in_one_process(site, ["k0"])  # not listed: released with the listed ones
    assert out == ["ok"]
    assert transferred_ids(kbs_stack) == sorted(site.ids[n] for n in ("k0", "k1", "k2"))
    assert attest_count(kbs_stack) == 1


def test_bad_preload_entries_are_logged_and_skipped(keygate_bin, build_dir, kbs_stack, tmp_path):
    site = preload_site(keygate_bin, build_dir, kbs_stack, tmp_path)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "garbage.ref.pem").write_text("-----BEGIN KEYGATE KEY REFERENCE-----\nAAAA\n"
                                         "-----END KEYGATE KEY REFERENCE-----\n")
    # a key the KBS does not hold: its transfer fails in the batch, the others are released
    unknown = new_key("p256")
    (bad / "unknown.pub.pem").write_text(pub_pem(unknown))
    r = run([keygate_bin, "-c", str(site.conf), "ref", "create", "--key-id", "00000000-0000-4000-8000-000000000000",
             "--pubkey", str(bad / "unknown.pub.pem"), "-o", str(bad / "unknown.ref.pem")])
    assert r.returncode == 0, r.stderr
    with_preload(site, f"{site.refs['k1']}, {tmp_path}/nothing-*.pem, {tmp_path}/missing.ref.pem, "
                       f"{bad}/*.ref.pem")
    kbs_stack.clear_requests("kbs")
    out, log = load_in_one_process(site, ["k0"])
    assert out == ["ok"]
    assert transferred_ids(kbs_stack) == sorted(site.ids[n] for n in ("k0", "k1"))
    warnings = [line for line in log.splitlines() if "preload: " in line and "WARN" in line.upper()]
    assert any("nothing-*.pem: no such file" in w for w in warnings), log[-3000:]
    assert any("missing.ref.pem: no such file" in w for w in warnings), log[-3000:]
    assert any("garbage.ref.pem: " in w for w in warnings), log[-3000:]
    assert any("key 00000000-0000-4000-8000-000000000000: " in w and "transfer" in w for w in warnings), log[-3000:]
    assert "preload: 2 of 3 key(s) released" in log, log[-3000:]


def test_the_key_that_triggers_a_failing_preload_fails_once_with_its_own_error(keygate_bin, build_dir,
                                                                              kbs_stack, tmp_path):
    site = preload_site(keygate_bin, build_dir, kbs_stack, tmp_path)
    with_preload(site, f"{tmp_path}/*.ref.pem")
    kbs_stack.clear_requests("kbs")
    kbs_stack.set_faults("kbs", [{"route": f"/keys/{site.ids['k0']}/transfer$", "mode": "status", "status": 403}])
    try:
        out, log = load_in_one_process(site, ["k0"])
    finally:
        kbs_stack.clear_faults("kbs")
    assert out[0].startswith("error"), out
    # refused once, in the batch; not asked again alone; the others were released
    k0 = [q for q in transfers(kbs_stack) if site.ids["k0"] in q["path"]]
    assert len(k0) == 1, k0
    assert transferred_ids(kbs_stack) == sorted(site.ids[n] for n in site.names[1:])
    assert "403" in log, log[-2000:]


def test_pkeyutl_with_preload_releases_the_batch(keygate_bin, build_dir, kbs_stack, tmp_path):
    site = preload_site(keygate_bin, build_dir, kbs_stack, tmp_path)
    with_preload(site, f"{tmp_path}/k[0-2].ref.pem")
    data = tmp_path / "data"
    data.write_bytes(b"x" * 32)
    kbs_stack.clear_requests("kbs")
    r = site.openssl("pkeyutl", "-sign", "-inkey", site.refs["k1"], "-in", data, "-out", tmp_path / "sig",
                     "-rawin", "-digest", "sha256")
    assert r.returncode == 0, r.stderr
    assert transferred_ids(kbs_stack) == sorted(site.ids[n] for n in ("k0", "k1", "k2"))


def test_pkcs11_first_use_releases_the_preloaded_keys(keygate_bin, build_dir, kbs_stack, tmp_path):
    token = Token(keygate_bin, build_dir, kbs_stack, tmp_path)
    token.conf = token.write_conf("preload.conf", f"preload = {tmp_path}/*.ref.pem\n")
    token.env["KEYGATE_CONF"] = str(token.conf)
    tbs = tmp_path / "tbs"
    tbs.write_bytes(b"\x01" * 32)
    kbs_stack.clear_requests("kbs")
    kbs_stack.clear_requests("ita")
    r = token.tool("--sign", "--id", token.ids["p256"], "-m", "ECDSA", "-i", tbs, "-o", tmp_path / "sig", timeout=120)
    assert r.returncode == 0, r.stderr
    # one signature with one key released both of the token's keys, with one attestation
    assert transferred_ids(kbs_stack) == sorted(token.site.ids.values())
    assert attest_count(kbs_stack) == 1


def test_relative_preload_paths_are_refused_at_load(keygate_bin, kbs_stack, tmp_path):
    key = new_key("p256")
    key_id = register(kbs_stack, key)
    site_conf = tmp_path / "k.conf"
    kbs_conf(kbs_stack, site_conf, preload="refs/*.ref.pem")
    r = run([keygate_bin, "-c", str(site_conf), "release", "--key-id", key_id])
    assert r.returncode != 0
    errors = [line for line in r.stderr.splitlines() if line.startswith("keygate: ")]
    assert len(errors) == 1 and "preload: expected comma-separated absolute paths" in errors[0], r.stderr


def test_a_failed_attestation_fails_the_batch_once(keygate_bin, build_dir, kbs_stack, tmp_path):
    """ITA refuses the attestation: the batch's keys fail with that error instead of attesting again
    one after the other (N_KEYS refused attestations, each with its timeouts and retries)."""
    site = preload_site(keygate_bin, build_dir, kbs_stack, tmp_path)
    with_preload(site, f"{tmp_path}/*.ref.pem")
    kbs_stack.clear_requests("ita")
    kbs_stack.clear_requests("kbs")
    kbs_stack.set_faults("ita", [{"route": "/attest$", "mode": "status", "status": 403}])
    try:
        out, log = load_in_one_process(site, ["k0"])
    finally:
        kbs_stack.clear_faults("ita")
    assert out[0].startswith("error"), out
    assert attest_count(kbs_stack) == 1
    assert transfers(kbs_stack) == []
    assert f"preload: 0 of {N_KEYS} key(s) released" in log, log[-2000:]
