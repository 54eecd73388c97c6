# SPDX-License-Identifier: Apache-2.0
"""The Debian packages: `dpkg-buildpackage -us -uc -b` on a copy of the source tree, their file
lists, and an attested key used through the extracted (installed) files only: the packaged
keygate CLI writes the reference, the packaged provider serves `openssl pkey -in ref -pubout`.
Also: the man pages render without warnings and keygate.conf(5) lists every key."""
import os
import re
import shutil
import subprocess

import pytest

from conftest import REPO, kbs_conf, run
from kglib import new_key, pub_pem, register

MULTIARCH = "x86_64-linux-gnu"
PACKAGES = ("libkeygate0", "libkeygate-dev", "keygate", "keygate-provider", "keygate-pkcs11")


def source_copy(dest):
    """The tree as git sees it (tracked + untracked, minus ignored), without build dirs."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           capture_output=True, check=True).stdout.split(b"\0")
    for f in files:
        name = f.decode()
        if not name or name.startswith("build") or not (REPO / name).is_file():
            continue
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, target)
    return dest


@pytest.fixture(scope="module")
def debs(tmp_path_factory):
    if shutil.which("dpkg-buildpackage") is None:
        pytest.fail("dpkg-buildpackage missing: scripts/setup.sh installs dpkg-dev, debhelper, fakeroot")
    work = tmp_path_factory.mktemp("deb")
    src = source_copy(work / "keygate")
    env = dict(os.environ, DEB_BUILD_OPTIONS="nocheck parallel=2")
    r = subprocess.run(["dpkg-buildpackage", "-us", "-uc", "-b"], cwd=src, env=env, capture_output=True,
                       text=True, timeout=1200)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    found = {p.name.split("_")[0]: p for p in work.glob("*.deb")}
    assert set(found) >= set(PACKAGES), sorted(found)
    return found


def contents(deb):
    out = run(["dpkg-deb", "-c", str(deb)]).stdout
    return {re.sub(r"^\./", "/", ln.split()[5]) for ln in out.splitlines()}


def field(deb, name):
    return run(["dpkg-deb", "-f", str(deb), name]).stdout.strip()


def test_packages_hold_the_right_files(debs):
    lib = contents(debs["libkeygate0"])
    assert f"/usr/lib/{MULTIARCH}/libkeygate.so.0" in lib and f"/usr/lib/{MULTIARCH}/libkeygate.so.0.1.0" in lib
    dev = contents(debs["libkeygate-dev"])
    for f in (f"/usr/lib/{MULTIARCH}/libkeygate.so", f"/usr/lib/{MULTIARCH}/pkgconfig/libkeygate.pc",
              "/usr/include/keygate/ita.h", "/usr/include/keygate/version.h"):
        assert f in dev, f
    modules = run(["openssl", "version", "-m"]).stdout.split('"')[1]
    prov = contents(debs["keygate-provider"])
    assert f"{modules}/keygate.so" in prov and "/usr/share/man/man7/keygate-provider.7.gz" in prov
    p11 = contents(debs["keygate-pkcs11"])
    assert f"/usr/lib/{MULTIARCH}/pkcs11/libkeygate-pkcs11.so" in p11
    assert "/usr/share/p11-kit/modules/keygate.module" in p11
    cli = contents(debs["keygate"])
    for f in ("/usr/bin/keygate", "/etc/keygate/keygate.conf.example", "/etc/keygate/openssl-keygate.cnf.example",
              "/usr/share/doc/keygate/examples/nginx-keygate.conf", "/usr/share/man/man1/keygate.1.gz",
              "/usr/share/man/man5/keygate.conf.5.gz", "/usr/share/keygate/ita-root-ca.pem"):
        assert f in cli, f
    # the soname and the dependencies dpkg-shlibdeps computed
    # the command links libkeygate statically (libkeygate.so exports the public API only), so it
    # depends on what libkeygate depends on, not on libkeygate0
    assert "libkeygate0" not in field(debs["keygate"], "Depends")
    assert "libssl3" in field(debs["keygate"], "Depends") and "libcurl4" in field(debs["keygate"], "Depends")
    assert "libssl3" in field(debs["libkeygate0"], "Depends")
    assert field(debs["keygate-provider"], "Multi-Arch") == "same"
    # the verification cache directory, as keygate requires it: root-owned, mode 0700
    for name in ("keygate", "keygate-provider", "keygate-pkcs11"):
        listing = run(["dpkg-deb", "-c", str(debs[name])]).stdout.splitlines()
        assert any(ln.split()[:2] == ["drwx------", "root/root"] and ln.split()[5] == "./var/cache/keygate/"
                   for ln in listing), (name, [ln for ln in listing if "cache" in ln])


def test_installed_files_only_serve_an_attested_key(debs, kbs_stack, tmp_path):
    root = tmp_path / "root"
    for name in PACKAGES:
        assert run(["dpkg-deb", "-x", str(debs[name]), str(root)]).returncode == 0
    libdir = root / "usr" / "lib" / MULTIARCH
    provider = libdir / "ossl-modules" / "keygate.so"
    keygate = root / "usr" / "bin" / "keygate"
    assert provider.is_file() and keygate.is_file()
    # keygate.conf and openssl.cnf from the packaged examples, pointed at the local stack
    conf = kbs_conf(kbs_stack, tmp_path / "keygate.conf")
    cnf = tmp_path / "openssl.cnf"
    example = (root / "etc" / "keygate" / "openssl-keygate.cnf.example").read_text()
    cnf.write_text(example.replace("module = keygate", f"module = {provider}")
                   .replace("config = /etc/keygate/keygate.conf", f"config = {conf}"))
    env = {"LD_LIBRARY_PATH": str(libdir), "OPENSSL_CONF": str(cnf), "PATH": "/usr/bin:/bin"}

    key = new_key("p256")
    key_id = register(kbs_stack, key)
    ref = tmp_path / "site.ref.pem"
    r = run([str(keygate), "-c", str(conf), "ref", "create", "--key-id", key_id, "-o", str(ref)], env=env,
            timeout=120)
    assert r.returncode == 0, r.stderr
    kbs_stack.clear_requests("kbs")
    r = run(["openssl", "pkey", "-in", str(ref), "-pubout"], env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout == pub_pem(key)
    assert len([q for q in kbs_stack.requests("kbs") if q["path"].endswith("/transfer")]) == 1
    # the provider that answered is the packaged one
    r = run(["openssl", "list", "-providers", "-verbose"], env=env)
    assert "keygate" in r.stdout and "status: active" in r.stdout
    # and the packaged CLI's doctor agrees with the packaged files
    r = run([str(keygate), "doctor", "-c", str(conf), "--openssl-conf", str(cnf), "--ref", str(ref)], env=env,
            timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    # the packaged man pages render
    for page in ("man1/keygate.1.gz", "man5/keygate.conf.5.gz", "man7/keygate-provider.7.gz"):
        r = run(["man", "--warnings", "-E", "UTF-8", "-l", str(root / "usr" / "share" / "man" / page)],
                env={"MANWIDTH": "80", "LC_ALL": "C.UTF-8"})
        assert r.returncode == 0 and r.stderr == "", (page, r.stderr)


@pytest.mark.parametrize("page", ["keygate.1", "keygate.conf.5", "keygate-provider.7"])
def test_man_page_renders_without_warnings(build_dir, page):
    path = build_dir / "docs" / "man" / page
    assert path.is_file(), "the build generates the man pages (docs/man/CMakeLists.txt)"
    r = run(["man", "--warnings", "-E", "UTF-8", "-l", str(path)], env={"MANWIDTH": "80", "LC_ALL": "C.UTF-8"})
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert len(r.stdout) > 1500


def test_keygate_conf_5_lists_every_key_of_the_parser(build_dir):
    text = run(["man", "-l", str(build_dir / "docs" / "man" / "keygate.conf.5")],
               env={"MANWIDTH": "200", "LC_ALL": "C.UTF-8"}).stdout
    listed = re.findall(r"^ {7}([a-z][a-z0-9_]+)(?: \(default: .*\))?$", text, re.M)
    doc = (REPO / "docs" / "configuration.md").read_text()
    doc = doc[doc.index("<!-- config-keys:begin -->"):doc.index("<!-- config-keys:end -->")]
    in_doc = re.findall(r"^\| `([a-z0-9_]+)` \|", doc, re.M)
    assert listed and listed == in_doc


def test_cmake_install_puts_man_pages_in_place(build_dir, tmp_path):
    assert run(["cmake", "--install", str(build_dir), "--prefix", str(tmp_path)]).returncode == 0
    for page in ("man1/keygate.1", "man5/keygate.conf.5", "man7/keygate-provider.7"):
        assert (tmp_path / "share" / "man" / page).is_file(), page
    assert (tmp_path / "share" / "doc" / "keygate" / "examples" / "nginx-keygate.conf").is_file()
    # the shipped ITA root is the production token-signing root of the real JWKS (x5c[2])
    root = tmp_path / "share" / "keygate" / "ita-root-ca.pem"
    vector = REPO / "tests" / "vectors" / "ita-prod-root-ca.pem"
    assert root.read_bytes() == vector.read_bytes()
    fp = run(["openssl", "x509", "-in", str(root), "-noout", "-fingerprint", "-sha256", "-subject"]).stdout
    assert "DE:77:BA:BF:DD:CA:9F:26:88:1A:F2:8A:71:E3:7A:F8:36:A1:1A:12:5F:2A:C8:A8:89:40:EF:A2:32:C3:59:EA" in fp
    assert "Intel Trust Authority Root CA" in fp
    # the fingerprint docs/platforms.md tells the reader to compare
    assert fp.split("Fingerprint=")[1].split()[0] in (REPO / "docs" / "platforms.md").read_text()
