# SPDX-License-Identifier: Apache-2.0
"""Runs the fenced shell blocks tagged ```sh runnable of the documentation as a reader would,
from the top of the tree, each file's blocks in order in one bash with `set -euo pipefail`:
the README's quickstart (the local stack, keygate doctor, a verified token) and docs/try-it.md
(the local stack, a key in the KBS, a reference, openssl, nginx and haproxy)."""
import os
import pathlib
import re
import signal
import subprocess

from conftest import REPO, run

BLOCK = re.compile(r"^```sh runnable\n(.*?)^```$", re.S | re.M)
# the only files with runnable blocks, each run on its own
RUNNABLE = ("README.md", "docs/try-it.md")


def runnable_blocks(name):
    return BLOCK.findall((REPO / name).read_text())


def stop_pidfile(path, name):
    """Stops the process a pid file names, by its pid, if it is still that program."""
    try:
        pid = int(path.read_text().split()[0])
        cmdline = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError, IndexError):
        return
    if name.encode() in cmdline:
        os.kill(pid, signal.SIGTERM)


def run_blocks(name, build_dir, tmp_path):
    script = "set -euo pipefail\n" + "\n".join(runnable_blocks(name))
    env = {"KEYGATE_BUILD_DIR": str(build_dir), "TMPDIR": str(tmp_path)}
    env.pop("KEYGATE_CONF", None)
    return run(["bash", "-c", script], env=env, cwd=REPO, timeout=300)


def stop_stack(state):
    subprocess.run(["/usr/bin/python3", str(REPO / "scripts" / "local-stack.py"), "stop", str(state)], timeout=60)


def assert_tree_untouched():
    status = run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=REPO).stdout
    assert "site.ref.pem" not in status and "quote.bin" not in status and "keygate-" not in status, status


def test_runnable_blocks_are_where_the_test_runs_them():
    """A block tagged runnable anywhere else would never run: every Markdown file is checked."""
    tracked = run(["git", "ls-files", "*.md"], cwd=REPO).stdout.split()
    assert "README.md" in tracked and "docs/try-it.md" in tracked
    elsewhere = [f for f in tracked if f not in RUNNABLE and runnable_blocks(f)]
    assert not elsewhere, elsewhere
    assert len(runnable_blocks("docs/try-it.md")) >= 5
    readme = runnable_blocks("README.md")
    assert len(readme) == 1 and len(readme[0].strip().splitlines()) <= 10  # the ten-line quickstart
    text = (REPO / "README.md").read_text()
    start = text.index("## Quickstart")
    end = text.index("\n## ", start)
    assert start < text.index(readme[0]) < end


def test_readme_quickstart(build_dir, tmp_path):
    try:
        r = run_blocks("README.md", build_dir, tmp_path)
    finally:
        stop_stack(tmp_path / "keygate-quickstart")
    out = r.stdout
    assert r.returncode == 0, out[-3000:] + r.stderr[-3000:]
    assert "keygate doctor: all checks passed" in out
    # the MRTD the quote carries is the one ITA's token claims and keygate verified
    quoted = re.search(r"^MRTD\s+([0-9a-f]{96})$", out, re.M)
    claimed = re.search(r'"tdx_mrtd":\s*"([0-9a-f]{96})"', out)
    assert quoted and claimed, out[-3000:]
    assert quoted.group(1) == claimed.group(1)
    assert '"tdx_is_debuggable":\tfalse' in out or '"tdx_is_debuggable": false' in out
    assert_tree_untouched()


def test_try_it_blocks(build_dir, tmp_path):
    workdir = tmp_path / "keygate-try"
    try:
        r = run_blocks("docs/try-it.md", build_dir, tmp_path)
    finally:
        stop_pidfile(workdir / "nginx.pid", "nginx")
        stop_pidfile(workdir / "haproxy.pid", "haproxy")
        stop_stack(workdir)
    out = r.stdout
    assert r.returncode == 0, out[-3000:] + r.stderr[-3000:]
    assert "keygate doctor: all checks passed" in out
    assert re.search(r"^key [0-9a-f-]{36} under policy [0-9a-f-]{36}$", out, re.M)
    pubs = re.findall(r"-----BEGIN PUBLIC KEY-----\n.*?-----END PUBLIC KEY-----\n", out, re.S)
    assert len(pubs) == 2 and pubs[0] == pubs[1]  # ref show, then openssl pkey -pubout
    assert "private export refused" in out
    assert not (workdir / "clear.pem").exists() or "PRIVATE" not in (workdir / "clear.pem").read_text()
    assert "served with an attested key" in out
    assert "Configuration file is valid" in out
    assert "haproxy with an attested key" in out
    assert_tree_untouched()
