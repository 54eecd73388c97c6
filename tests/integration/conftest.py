# SPDX-License-Identifier: Apache-2.0
"""Fixtures for tests of the built artefacts (CLI, provider, PKCS#11 module)."""
import os
import pathlib
import subprocess

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def build_dir():
    d = pathlib.Path(os.environ.get("KEYGATE_BUILD_DIR", REPO / "build"))
    if not (d / "cli" / "keygate").exists():
        pytest.fail(f"no build in {d}: run scripts/test.sh or set KEYGATE_BUILD_DIR")
    return d


@pytest.fixture(scope="session")
def keygate_bin(build_dir):
    return str(build_dir / "cli" / "keygate")


def run(cmd, env=None, timeout=60, **kw):
    """Runs a command, returns CompletedProcess with text output."""
    full_env = dict(os.environ)
    full_env.pop("KEYGATE_DEBUG", None)
    if env:
        full_env.update(env)
    return subprocess.run(cmd, env=full_env, capture_output=True, text=True, timeout=timeout, **kw)


@pytest.fixture
def ita_stack(local_stack):
    """The shared LocalStack fixture (tests/conftest.py): ITA running on a copy of the session
    PKI, stopped by PID at teardown."""
    return local_stack


def write_keygate_conf(stack, path, **overrides):
    """keygate.conf for the sim adapter against the stack's ITA; overrides replace keys."""
    state = pathlib.Path(stack.state_dir)
    ita = stack.services["ita"].url
    keys = {
        "adapter": "sim",
        "ita_api_url": ita,
        "ita_base_url": ita,
        "ita_api_key_file": state / "ita-api-key",
        "ita_trust_anchor": state / "ita-root-ca.pem",
        "tls_ca_file": state / "tls-ca.pem",
        "sim_pck_key": state / "sim-pck.key",
        "sim_pck_chain": state / "sim-pck-chain.pem",
        "retry_wait_min_ms": 50,
        "retry_wait_max_ms": 400,
        # hermetic: never the host's /var/cache/keygate (test_verification_cache sets its own)
        "cache_dir": "none",
    }
    keys.update(overrides)
    path.write_text("".join(f"{k} = {v}\n" for k, v in keys.items() if v is not None))
    return path


@pytest.fixture
def kbs_stack(local_stack):
    """The local stack with ITA and the Intel-KBS stand-in running."""
    from tests.stack.kbs_fixture import start_kbs

    start_kbs(local_stack)
    return local_stack


def kbs_conf(stack, path, **overrides):
    """keygate.conf for the sim adapter against the stack's ITA and KBS."""
    keys = {"kbs_url": stack.services["kbs"].url, "kbs_type": "intel"}
    keys.update(overrides)
    return write_keygate_conf(stack, path, **keys)


@pytest.fixture(scope="session")
def session_kbs_stack(session_stack):
    """The session stack (tests/conftest.py) with the Intel-KBS stand-in started once. Tests that
    set faults on it must clear them (it is shared by every test of the session)."""
    from tests.stack.kbs_fixture import start_kbs

    if "kbs" not in session_stack.services:
        start_kbs(session_stack)
    return session_stack
