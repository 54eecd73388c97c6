# SPDX-License-Identifier: Apache-2.0
"""Runs README.md's fenced shell blocks tagged ```sh runnable, in order, in one bash with
`set -euo pipefail`, from the top of the tree as a reader would: they start the local stack,
create a key in the KBS, write a reference, and use it with openssl, nginx and haproxy."""
import os
import pathlib
import re
import signal
import subprocess

from conftest import REPO, run

BLOCK = re.compile(r"^```sh runnable\n(.*?)^```$", re.S | re.M)


def runnable_blocks():
    return BLOCK.findall((REPO / "README.md").read_text())


def stop_pidfile(path, name):
    """Stops the process a pid file names, by its pid, if it is still that program."""
    try:
        pid = int(path.read_text().split()[0])
        cmdline = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError, IndexError):
        return
    if name.encode() in cmdline:
        os.kill(pid, signal.SIGTERM)


def test_runnable_blocks_exist_and_only_in_the_try_it_section():
    blocks = runnable_blocks()
    assert len(blocks) >= 5
    text = (REPO / "README.md").read_text()
    start = text.index("### Try it on this machine")
    end = text.index("\n## ", start)
    assert all(text.index(b) > start and text.index(b) < end for b in blocks)


def test_readme_runnable_blocks(build_dir, tmp_path):
    script = "set -euo pipefail\n" + "\n".join(runnable_blocks())
    workdir = tmp_path / "keygate-try"
    env = {"KEYGATE_BUILD_DIR": str(build_dir), "TMPDIR": str(tmp_path)}
    env.pop("KEYGATE_CONF", None)
    try:
        r = run(["bash", "-c", script], env=env, cwd=REPO, timeout=300)
    finally:
        stop_pidfile(workdir / "nginx.pid", "nginx")
        stop_pidfile(workdir / "haproxy.pid", "haproxy")
        subprocess.run(["/usr/bin/python3", str(REPO / "scripts" / "local-stack.py"), "stop", str(workdir)],
                       timeout=60)
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
    # nothing was written into the source tree
    status = run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=REPO).stdout
    assert "site.ref.pem" not in status and "quote.bin" not in status
