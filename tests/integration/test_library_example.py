# SPDX-License-Identifier: Apache-2.0
"""The C example of docs/library.md compiles against the installed libkeygate (pkg-config) and runs
against the local stack."""
import pathlib
import re

from conftest import REPO, run, write_keygate_conf


def test_library_example_compiles_and_runs(build_dir, ita_stack, tmp_path):
    text = (REPO / "docs" / "library.md").read_text()
    code = re.search(r"<!-- example:begin -->\n```c\n(.*?)```\n<!-- example:end -->", text, re.S).group(1)
    src = tmp_path / "example.c"
    src.write_text(code)
    prefix = tmp_path / "prefix"
    assert run(["cmake", "--install", str(build_dir), "--prefix", str(prefix)]).returncode == 0
    libdir = next(prefix.rglob("libkeygate.so.0")).parent
    env = {"PKG_CONFIG_PATH": str(libdir / "pkgconfig")}
    flags = run(["pkg-config", "--cflags", "--libs", "libkeygate"], env=env).stdout.split()
    exe = tmp_path / "example"
    r = run(["cc", "-Wall", "-Wextra", "-Werror", "-o", str(exe), str(src), *flags])
    assert r.returncode == 0, r.stderr

    conf = write_keygate_conf(ita_stack, tmp_path / "k.conf")
    r = run([str(build_dir / "cli" / "keygate"), "-c", str(conf), "token"])
    assert r.returncode == 0, r.stderr
    token = tmp_path / "token.jwt"
    token.write_text(r.stdout)

    state = pathlib.Path(ita_stack.state_dir)
    url = ita_stack.services["ita"].url
    args = [url, url, state / "ita-api-key", state / "ita-root-ca.pem", state / "tls-ca.pem", token]
    r = run([str(exe), *map(str, args)], env={"LD_LIBRARY_PATH": str(libdir)})
    assert r.returncode == 0, r.stderr
    assert re.search(r"nonce of 88 bytes \(HTTP 200, trace-id \S+\)", r.stdout)
    assert "verified: TDX, TCB UpToDate, debuggable 0" in r.stdout
    # a tampered token is refused, with the check named
    bad = tmp_path / "bad.jwt"
    h, p, sig = token.read_text().strip().split(".")
    bad.write_text(".".join([h, p[:-4] + ("AAAA" if p[-4:] != "AAAA" else "BBBB"), sig]))
    r = run([str(exe), *map(str, args[:-1]), str(bad)], env={"LD_LIBRARY_PATH": str(libdir)})
    assert r.returncode == 1 and r.stderr.startswith("verify: ")
