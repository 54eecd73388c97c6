# SPDX-License-Identifier: Apache-2.0
"""Teardown while a key lease refresh runs (issue 17, finding 3).

A host signs with a keygate key, waits into the lease's refresh window, signs again (which starts
the background refresh), then unloads keygate: C_Finalize + dlclose for the PKCS#11 module (what
p11-kit does), OSSL_PROVIDER_unload + OSSL_LIB_CTX_free for the provider. Twenty times in one
process (tests/teardown/teardown_check.c). Every other round the KBS stand-in holds the refresh's
transfer for 60 s, so teardown meets a refresh blocked on the network.

Before the fix the refresh threads were detached and never stopped: the host died with SIGSEGV
once the module was unmapped under a running refresh, and without dlclose the thread ran on freed
state and wiped the key with a false "revoked by local policy". Now teardown aborts and joins
every refresh: the host survives all rounds, each teardown is quick (not the KBS's 60 s), the
module is really unmapped, no round logs a revocation, and under ASan (scripts/test.sh) nothing
is used after free or leaked."""
import os
import subprocess

import pytest

from conftest import REPO
from kglib import Token, asan_env, build_host, openssl_cnf

ROUNDS = int(os.environ.get("KEYGATE_TEARDOWN_ROUNDS", "20"))
LEASE = "key_lease_s = 2\nkey_lease_max_s = 2\nrefresh_before_s = 1\n"
WAIT_MS = 1200  # past the start of the refresh window (lease 2 s, refresh 1 s before its end)
SLOW_TRANSFER = [{"route": "/transfer", "mode": "delay", "seconds": 60}]


@pytest.fixture(scope="module")
def teardown_check(tmp_path_factory):
    return build_host(tmp_path_factory.mktemp("teardown") / "teardown_check", REPO / "tests/teardown/teardown_check.c",
                      "-ldl", "-lcrypto")


def drive(cmd, env, stack, log):
    """Runs teardown_check, setting the slow-transfer fault on odd rounds between its release and
    its refresh; returns the teardown times and 'mapped' flags of every round."""
    p = subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    rounds = []
    try:
        for line in p.stdout:
            words = line.split()
            if words[:1] == ["released"]:
                i = int(words[1])
                if i % 2:
                    stack.set_faults("kbs", SLOW_TRANSFER)
                else:
                    stack.clear_faults("kbs")
                p.stdin.write("go\n")
                p.stdin.flush()
            elif words[:1] == ["finalized"]:
                stack.clear_faults("kbs")
                fields = dict(w.split("=") for w in words[2:])
                rounds.append((float(fields["ms"]), int(fields["mapped"])))
        p.wait(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        stack.clear_faults("kbs")
    err = p.stderr.read()
    assert p.returncode == 0, f"host died (rc {p.returncode}) after {len(rounds)} rounds:\n{err[-4000:]}"
    text = log.read_text() if log.exists() else ""
    assert "revoked" not in text, text[-3000:]
    return rounds, text


def check_rounds(rounds, text):
    assert len(rounds) == ROUNDS
    # the refreshes really ran (else the test would prove nothing), and teardown stopped them
    assert text.count("refresh (attempt") >= ROUNDS // 2, text[-3000:]
    for i, (ms, still_mapped) in enumerate(rounds):
        assert still_mapped == 0, f"round {i}: keygate was not unloaded (dlclose kept it mapped)"
        # a refresh blocked on the 60 s transfer is aborted, not waited for (the bound leaves room
        # for a refresh caught in its wrapping-key generation on a loaded 2-core machine)
        assert ms < 15000, f"round {i}: teardown took {ms} ms"


@pytest.fixture
def token(keygate_bin, build_dir, kbs_stack, tmp_path):
    return Token(keygate_bin, build_dir, kbs_stack, tmp_path)


def test_pkcs11_finalize_and_dlclose_during_refresh(token, kbs_stack, teardown_check, tmp_path):
    conf = token.write_conf("lease.conf", LEASE)
    log = tmp_path / "p11.log"
    env = dict(os.environ, **asan_env(), KEYGATE_CONF=str(conf), KEYGATE_DEBUG=f"{log}:3")
    rounds, text = drive([teardown_check, "p11", token.module, "p256", str(ROUNDS), str(WAIT_MS)], env, kbs_stack,
                         log)
    check_rounds(rounds, text)


def test_provider_unload_during_refresh(token, kbs_stack, build_dir, teardown_check, tmp_path):
    conf = tmp_path / "provider.conf"
    conf.write_text(token.base_conf + LEASE)
    cnf = openssl_cnf(build_dir, tmp_path / "openssl.cnf", conf)
    log = tmp_path / "provider.log"
    env = dict(os.environ, **asan_env(), KEYGATE_DEBUG=f"{log}:3")
    env.pop("OPENSSL_CONF", None)
    rounds, text = drive([teardown_check, "provider", str(cnf), str(token.site.refs["p256"]), str(ROUNDS),
                          str(WAIT_MS)], env, kbs_stack, log)
    check_rounds(rounds, text)
