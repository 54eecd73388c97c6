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
