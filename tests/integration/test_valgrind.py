# SPDX-License-Identifier: Apache-2.0
"""valgrind (memcheck) over `keygate release` (the whole pipeline: wrapping key, nonce, sim
evidence, token, verification, passport transfer, unwrap; and a refused release) and over the
provider's `openssl pkey` store path (keygate:<id>).

Each run must end with 0 errors and 0 definitely lost bytes (--errors-for-leak-kinds=definite,
--error-exitcode). test_provider.py::test_openssl_paths_under_valgrind already covers
`openssl pkey -pubout` and `pkeyutl -sign` (a release inside the provider) on reference files;
this module adds what it does not. valgrind is slow: the module is kept to three runs.
tests/integration/valgrind.supp lists the third-party noise that is suppressed, each entry
explained; it is empty unless a documented library issue needs one.
"""
import os
import pathlib
import re
import shutil
import subprocess

import pytest

from conftest import kbs_conf
from kglib import Site, new_key, pub_pem, register

SUPP = pathlib.Path(__file__).with_name("valgrind.supp")
ERRORS = re.compile(r"ERROR SUMMARY: (\d+) errors")
DEFINITE = re.compile(r"definitely lost: ([\d,]+) bytes")

pytestmark = pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind not installed")


def memcheck(argv, env=None, timeout=600):
    """Runs argv under memcheck; returns (CompletedProcess, valgrind log text)."""
    full_env = dict(os.environ)
    full_env.pop("KEYGATE_DEBUG", None)
    full_env.pop("LD_PRELOAD", None)  # never with the ASan runtime (scripts/test.sh's ASan step)
    full_env.update(env or {})
    log = pathlib.Path(full_env.get("TMPDIR", "/tmp")) / f"keygate-vg-{os.getpid()}-{id(argv)}.log"
    cmd = ["valgrind", "--leak-check=full", "--errors-for-leak-kinds=definite", "--show-leak-kinds=definite",
           "--error-exitcode=99", f"--suppressions={SUPP}", f"--log-file={log}", *map(str, argv)]
    try:
        r = subprocess.run(cmd, env=full_env, capture_output=True, text=True, timeout=timeout)
        text = log.read_text()
    finally:
        log.unlink(missing_ok=True)
    return r, text


def assert_clean(r, text):
    errors = ERRORS.findall(text)
    assert errors and errors[-1] == "0", text[-4000:]
    lost = DEFINITE.findall(text)
    assert all(n == "0" for n in lost), text[-4000:]  # no line at all: every block was freed
    assert r.returncode != 99, text[-4000:]


def test_keygate_release_under_valgrind(keygate_bin, kbs_stack, tmp_path):
    key = new_key("p256")
    key_id = register(kbs_stack, key)
    conf = kbs_conf(kbs_stack, tmp_path / "k.conf", timeout_ms=60000)
    r, text = memcheck([keygate_bin, "-c", conf, "release", "--key-id", key_id])
    assert_clean(r, text)
    assert r.returncode == 0, r.stderr
    assert r.stdout == pub_pem(key)


@pytest.mark.parametrize("failure", ["unknown-key", "corrupt-wrap"])
def test_keygate_release_failure_under_valgrind(keygate_bin, kbs_stack, tmp_path, failure):
    """A refused release unwinds every step's allocations too: a key the KBS does not know (fails
    at transfer), and a wrap that does not open (fails at unwrap, after everything else)."""
    key_id = "00000000-0000-4000-8000-000000000000"
    if failure == "corrupt-wrap":
        key_id = register(kbs_stack, new_key("p256"))
        kbs_stack.set_faults("kbs", [{"route": "/transfer$", "mode": "corrupt_wrap"}])
    conf = kbs_conf(kbs_stack, tmp_path / "k.conf", timeout_ms=60000, retry_max=0)
    try:
        r, text = memcheck([keygate_bin, "-c", conf, "release", "--key-id", key_id])
    finally:
        kbs_stack.clear_faults("kbs")
    assert_clean(r, text)
    want = (1 if failure == "unknown-key" else 17, "transfer" if failure == "unknown-key" else "unwrap")
    assert r.returncode != 0 and want[1] in r.stderr, r.stderr
    if failure == "corrupt-wrap":
        assert r.returncode == want[0], r.stderr


@pytest.fixture
def site(keygate_bin, build_dir, kbs_stack, tmp_path):
    return Site(keygate_bin, build_dir, kbs_stack, tmp_path, kinds=("p256",))


def test_openssl_pkey_store_uri_under_valgrind(site):
    r, text = memcheck(["openssl", "pkey", "-in", f"keygate:{site.ids['p256']}", "-pubout"], env=site.env)
    assert_clean(r, text)
    assert r.returncode == 0, r.stderr
    assert r.stdout == pub_pem(site.keys["p256"])
