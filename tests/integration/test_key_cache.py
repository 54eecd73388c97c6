# SPDX-License-Identifier: Apache-2.0
"""The one key source (release/kg_keysource.h) under both front ends.

The provider's cache of released keys is keyed by (key id, KBS URL, public key) (issue 17,
finding 6), through a real host: Python's ssl module loading certificates and references
(PEM_read_bio_PrivateKey + SSL_CTX_check_private_key) in one process.

Before the fix the cache was keyed by key id alone: a second reference with the same id but
another public key got the first key, and the keymgmt's match then vouched for a certificate the
key cannot sign for; a reference naming another KBS got the key of the first KBS without asking
its own. Now each such reference is released (and matched) on its own terms.

Releases are locked per key (issue 18, one key source): with the KBS holding the first key's
transfer for 2 s, the second key's first use, 300 ms later in another thread, is done long before
the first, and both share one attestation; in the provider (two threads loading references) and
in the PKCS#11 module (two threads signing). Before, the provider held its provider-wide lock and
the module its release_lock across the network: the second key waited the full 2 s."""
import json

import pytest
from cryptography.hazmat.primitives import serialization

from conftest import run
from kglib import Site, Token, build_host, free_port, new_key, p11_check, pub_pem, self_signed  # noqa: F401 (fixture)

HOST = r"""
import json, ssl, sys
out = []
for cert, ref in zip(sys.argv[1::2], sys.argv[2::2]):
    c = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        c.load_cert_chain(cert, ref)
        out.append("ok")
    except OSError as e:  # ssl.SSLError, or OSError when errno is set (Python checks it first)
        out.append("error: " + str(e))
print(json.dumps(out))
"""


@pytest.fixture
def site(keygate_bin, build_dir, kbs_stack, tmp_path):
    return Site(keygate_bin, build_dir, kbs_stack, tmp_path, kinds=("p256",))


def write_cert(path, key):
    path.write_bytes(self_signed(key).public_bytes(serialization.Encoding.PEM))
    return path


def make_ref(keygate_bin, site, name, key_id, pubkey, kbs_url=None):
    pub = site.tmp / f"{name}.pub.pem"
    pub.write_text(pub_pem(pubkey))
    ref = site.tmp / f"{name}.ref.pem"
    cmd = [keygate_bin, "-c", str(site.conf), "ref", "create", "--key-id", key_id, "--pubkey", str(pub), "-o",
           str(ref)]
    if kbs_url:
        cmd += ["--kbs-url", kbs_url]
    r = run(cmd)
    assert r.returncode == 0, r.stderr
    return ref


def load_in_one_process(site, pairs):
    log = site.tmp / "host.log"
    r = run(["/usr/bin/python3", "-c", HOST, *[str(p) for pair in pairs for p in pair]],
            env=dict(site.env, KEYGATE_DEBUG=f"{log}:2"), timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout), r.stderr + (log.read_text() if log.exists() else "")


def transfers(stack):
    return sum(1 for q in stack.requests("kbs") if q["path"].endswith("/transfer"))


def test_same_reference_twice_is_released_once(keygate_bin, site, kbs_stack):
    key, key_id = site.keys["p256"], site.ids["p256"]
    cert = write_cert(site.tmp / "a.crt", key)
    again = make_ref(keygate_bin, site, "again", key_id, key)  # another file, same (id, KBS, key)
    kbs_stack.clear_requests("kbs")
    out, _ = load_in_one_process(site, [(cert, site.refs["p256"]), (cert, again)])
    assert out == ["ok", "ok"]
    assert transfers(kbs_stack) == 1  # the cache serves the second reference


def test_same_id_other_public_key_is_not_served_from_the_cache(keygate_bin, site, kbs_stack):
    key, key_id = site.keys["p256"], site.ids["p256"]
    other = new_key("p256")
    forged = make_ref(keygate_bin, site, "forged", key_id, other)  # A's id, B's public key
    out, log = load_in_one_process(site, [(write_cert(site.tmp / "a.crt", key), site.refs["p256"]),
                                          (write_cert(site.tmp / "b.crt", other), forged)])
    assert out[0] == "ok"
    # before: "ok" (A's private key behind B's certificate); now its own release fails the match
    assert out[1].startswith("error"), out
    assert "match" in log and "not the reference's" in log, log[-2000:]


def test_same_id_other_kbs_is_released_from_that_kbs(keygate_bin, site, kbs_stack):
    key, key_id = site.keys["p256"], site.ids["p256"]
    cert = write_cert(site.tmp / "a.crt", key)
    elsewhere = f"https://127.0.0.1:{free_port()}"  # nothing listens there
    other_kbs = make_ref(keygate_bin, site, "elsewhere", key_id, key, kbs_url=elsewhere)
    out, log = load_in_one_process(site, [(cert, site.refs["p256"]), (cert, other_kbs)])
    assert out[0] == "ok"
    # before: "ok" from the first KBS's cached key; now it asks its own KBS, which is down
    assert out[1].startswith("error"), out
    assert "transfer" in log and elsewhere in log, log[-2000:]


# ------------------------------------------- one key source: a release in flight blocks no other key

OVERLAP_HOST = r"""
#include <openssl/err.h>
#include <openssl/pem.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
static double t0;
static double now(void) { struct timespec ts; clock_gettime(CLOCK_MONOTONIC, &ts); return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6; }
struct arg { const char *ref; long delay_ms; double end_ms; };
static void *load(void *p)
{
    struct arg *a = p;
    struct timespec d = {a->delay_ms / 1000, (a->delay_ms % 1000) * 1000000L};
    FILE *fp;
    EVP_PKEY *k;
    nanosleep(&d, NULL);
    fp = fopen(a->ref, "r");
    k = fp ? PEM_read_PrivateKey(fp, NULL, NULL, NULL) : NULL; /* release = eager: the release */
    if (fp) fclose(fp);
    if (k == NULL) { ERR_print_errors_fp(stderr); exit(1); }
    a->end_ms = now() - t0;
    EVP_PKEY_free(k);
    return NULL;
}
int main(int argc, char **argv)
{
    struct arg a[2] = {{argv[1], 0, 0}, {argv[2], atol(argv[3]), 0}};
    pthread_t t[2];
    t0 = now();
    for (int i = 0; i < 2; i++) pthread_create(&t[i], NULL, load, &a[i]);
    for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
    printf("first_ms=%.0f second_ms=%.0f\n", a[0].end_ms, a[1].end_ms);
    return 0;
}
"""

DELAY_S = 2
SECOND_AFTER_MS = 300


def check_overlap(stdout, stack):
    times = dict(w.split("=") for w in stdout.split() if "=" in w)
    first, second = float(times["first_ms"]), float(times["second_ms"])
    # the first key's transfer is held 2 s; the second key's first use does not wait for it
    assert first >= DELAY_S * 1000, times
    assert second < first - 500, times
    # and both first uses share one attestation
    assert sum(1 for q in stack.requests("ita") if q["path"].endswith("/attest")) == 1


def slow_first_transfer(stack, key_id):
    stack.set_faults("kbs", [{"route": f"/keys/{key_id}/transfer", "mode": "delay", "seconds": DELAY_S}])


@pytest.fixture
def two_keys(keygate_bin, build_dir, kbs_stack, tmp_path):
    return Site(keygate_bin, build_dir, kbs_stack, tmp_path, kinds=("p256", "rsa2048"))


def test_provider_first_uses_of_two_keys_overlap(two_keys, kbs_stack):
    exe = build_host(two_keys.tmp / "overlap", OVERLAP_HOST, "-lcrypto", "-lpthread")
    kbs_stack.clear_requests("ita")
    slow_first_transfer(kbs_stack, two_keys.ids["p256"])
    try:
        r = run([str(exe), str(two_keys.refs["p256"]), str(two_keys.refs["rsa2048"]), str(SECOND_AFTER_MS)],
                env=two_keys.env, timeout=60)
    finally:
        kbs_stack.clear_faults("kbs")
    assert r.returncode == 0, r.stderr
    check_overlap(r.stdout, kbs_stack)


def test_pkcs11_first_uses_of_two_keys_overlap(keygate_bin, build_dir, kbs_stack, tmp_path, p11_check):
    token = Token(keygate_bin, build_dir, kbs_stack, tmp_path)
    kbs_stack.clear_requests("ita")
    slow_first_transfer(kbs_stack, token.site.ids["p256"])
    try:
        r = run([p11_check, token.module, "overlap", "p256", "rsa2048", str(SECOND_AFTER_MS)], env=token.env,
                timeout=60)
    finally:
        kbs_stack.clear_faults("kbs")
    assert r.returncode == 0, r.stderr
    check_overlap(r.stdout, kbs_stack)
