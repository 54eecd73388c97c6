# SPDX-License-Identifier: Apache-2.0
"""The built artefacts are real: the provider loads and names itself, the PKCS#11 module answers
C_GetInfo, the CLI prints version and help, and the install layout is docs/design.md §3's."""
import pathlib
import re
import subprocess

from conftest import REPO, run


def write_cnf(path, module, extra=""):
    path.write_text(
        "openssl_conf = openssl_init\nconfig_diagnostics = 1\n"
        "[openssl_init]\nproviders = provider_sect\n"
        "[provider_sect]\ndefault = default_sect\nkeygate = keygate_sect\n"
        "[default_sect]\nactivate = 1\n"
        f"[keygate_sect]\nmodule = {module}\nactivate = 1\n{extra}")
    return path


def test_provider_listed_through_openssl_cnf(build_dir, tmp_path):
    conf = tmp_path / "keygate.conf"
    conf.write_text("adapter = tdx\ntimeout_ms = 1234\n")
    cnf = write_cnf(tmp_path / "openssl.cnf", build_dir / "provider" / "keygate.so", f"config = {conf}\n")
    r = run(["openssl", "list", "-providers", "-verbose"], env={"OPENSSL_CONF": str(cnf)})
    assert r.returncode == 0, r.stderr
    assert "keygate" in r.stdout
    assert "name: keygate attested-key provider" in r.stdout
    assert "version: 0.1.0" in r.stdout
    assert re.search(r"build info: keygate 0\.1\.0", r.stdout)
    assert "status: active" in r.stdout.split("keygate", 1)[1]


def test_provider_listed_through_command_line(build_dir):
    r = run(["openssl", "list", "-providers", "-provider-path", str(build_dir / "provider"),
             "-provider", "keygate", "-provider", "default"])
    assert r.returncode == 0, r.stderr
    assert "name: keygate attested-key provider" in r.stdout


def test_provider_refuses_bad_inline_key(build_dir, tmp_path):
    """A bad key in the provider section fails provider init (OpenSSL then hides the provider,
    which is why health checks must look at `openssl list -providers`)."""
    log = tmp_path / "debug.log"
    cnf = write_cnf(tmp_path / "openssl.cnf", build_dir / "provider" / "keygate.so", "timeout_ms = soon\n")
    r = run(["openssl", "list", "-providers"], env={"OPENSSL_CONF": str(cnf), "KEYGATE_DEBUG": f"{log}:2"})
    assert "keygate attested-key provider" not in r.stdout
    assert "timeout_ms: 'soon' is not an integer" in log.read_text()


def test_provider_refuses_unknown_key_in_conf_file(build_dir, tmp_path):
    conf = tmp_path / "keygate.conf"
    conf.write_text("adapter = sim\nno_such_key = 1\n")
    log = tmp_path / "debug.log"
    cnf = write_cnf(tmp_path / "openssl.cnf", build_dir / "provider" / "keygate.so", f"config = {conf}\n")
    r = run(["openssl", "list", "-providers"], env={"OPENSSL_CONF": str(cnf), "KEYGATE_DEBUG": f"{log}:2"})
    assert "keygate attested-key provider" not in r.stdout
    assert f"{conf}:2: unknown key 'no_such_key'" in log.read_text()


def exported(lib):
    out = subprocess.run(["nm", "-D", "--defined-only", str(lib)], capture_output=True, text=True,
                         check=True).stdout
    return sorted(line.split()[-1] for line in out.splitlines() if line.strip())


def test_modules_export_only_their_entry_points(build_dir):
    assert exported(build_dir / "provider" / "keygate.so") == ["OSSL_provider_init"]
    assert exported(build_dir / "pkcs11" / "libkeygate-pkcs11.so") == ["C_GetFunctionList"]


def test_libkeygate_exports_exactly_its_public_api(build_dir):
    """libkeygate.so exports the checked-in list (release/libkeygate.symbols), each symbol under
    the KEYGATE_0 version, and every one of them is declared in include/keygate/*.h. A new export
    must be added to the list on purpose."""
    lib = build_dir / "release" / "libkeygate.so"
    names = exported(lib)
    want = (REPO / "release" / "libkeygate.symbols").read_text().split()
    assert sorted(n.split("@")[0] for n in names if n != "KEYGATE_0") == sorted(want)
    assert all(n == "KEYGATE_0" or n.endswith("@@KEYGATE_0") for n in names), names
    headers = "".join(p.read_text() for p in (REPO / "include" / "keygate").glob("*.h*"))
    for name in want:
        assert name.startswith(("keygate_", "kg_")), name
        assert f"{name}(" in headers, f"{name} is exported but not declared in include/keygate"


def test_pkcs11_module_answers_c_getinfo(build_dir):
    r = run(["pkcs11-tool", "--module", str(build_dir / "pkcs11" / "libkeygate-pkcs11.so"), "-I"])
    # one slot with the keygate token, present even when keygate.conf lists no key
    assert r.returncode == 0 and r.stderr == "Using slot 0 with a present token (0x1)\n", r.stderr
    assert re.search(r"Cryptoki version 2\.40", r.stdout)
    assert re.search(r"Manufacturer\s+keygate", r.stdout)
    assert re.search(r"Library\s+keygate attested keys \(ver 0\.1\)", r.stdout)


def test_cli_version_and_help(keygate_bin):
    r = run([keygate_bin, "--version"])
    assert r.returncode == 0
    assert r.stdout.startswith("keygate 0.1.0")
    assert "OpenSSL 3." in r.stdout
    r = run([keygate_bin, "--help"])
    assert r.returncode == 0
    for word in ("evidence", "token", "exit codes", "--config"):
        assert word in r.stdout
    for cmd in ("token", "evidence"):
        r = run([keygate_bin, cmd, "--help"])
        assert r.returncode == 0 and f"keygate {cmd}" in r.stdout


def test_cli_usage_errors(keygate_bin):
    r = run([keygate_bin])
    assert r.returncode == 1
    r = run([keygate_bin, "frobnicate"])
    assert r.returncode == 1 and "unknown command 'frobnicate'" in r.stderr
    r = run([keygate_bin, "token", "--no-nonce"])
    assert r.returncode == 1


def test_cli_config_errors_are_one_line_and_exit_10(keygate_bin, tmp_path):
    bad = tmp_path / "bad.conf"
    bad.write_text("adapter = sim\nita_api_version = v3\n")
    r = run([keygate_bin, "--config", str(bad), "token"])
    assert r.returncode == 10
    assert r.stderr == f"keygate: config: {bad}:2: ita_api_version: 'v3' is not one of v1|v2\n"
    r = run([keygate_bin, "token"], env={"KEYGATE_CONF": str(tmp_path / "missing.conf")})
    assert r.returncode == 10 and "cannot open" in r.stderr
    sim_without_pck = tmp_path / "sim.conf"
    sim_without_pck.write_text("adapter = sim\n")
    r = run([keygate_bin, "-c", str(sim_without_pck), "evidence", "--no-nonce"])
    assert r.returncode == 10 and "sim_pck_key" in r.stderr


def test_install_layout(build_dir, tmp_path):
    prefix = tmp_path / "prefix"
    r = run(["cmake", "--install", str(build_dir), "--prefix", str(prefix)])
    assert r.returncode == 0, r.stderr
    files = {str(p.relative_to(prefix)) for p in prefix.rglob("*") if p.is_file() or p.is_symlink()}
    libdir = next(p.parent.relative_to(prefix) for p in prefix.rglob("libkeygate.so.0"))
    expect = {
        "bin/keygate",
        f"{libdir}/libkeygate.so.0",
        f"{libdir}/libkeygate.so",
        f"{libdir}/libkeygate.a",
        f"{libdir}/ossl-modules/keygate.so",
        f"{libdir}/pkcs11/libkeygate-pkcs11.so",
        f"{libdir}/pkgconfig/libkeygate.pc",
        "share/p11-kit/modules/keygate.module",
        "etc/keygate/keygate.conf.example",
        "etc/keygate/openssl-keygate.cnf.example",
    }
    assert expect <= files, expect - files
    soname = subprocess.run(["objdump", "-p", str(prefix / libdir / "libkeygate.so.0.1.0")],
                            capture_output=True, text=True).stdout
    assert "SONAME               libkeygate.so.0" in soname
    # the installed CLI runs from the prefix (RPATH to its lib dir)
    r = run([str(prefix / "bin" / "keygate"), "--version"])
    assert r.returncode == 0 and "keygate 0.1.0" in r.stdout
    # the installed provider loads by bare name from its modules dir
    r = run(["openssl", "list", "-providers", "-provider-path", str(prefix / libdir / "ossl-modules"),
             "-provider", "keygate", "-provider", "default"])
    assert "keygate attested-key provider" in r.stdout
    pc_env = {"PKG_CONFIG_PATH": str(prefix / libdir / "pkgconfig")}
    assert run(["pkg-config", "--modversion", "libkeygate"], env=pc_env).stdout == "0.1.0\n"
    pc = run(["pkg-config", "--cflags", "--libs", "libkeygate"], env=pc_env)
    assert pc.returncode == 0 and "-lkeygate" in pc.stdout, pc.stderr
    inc = pathlib.Path(pc.stdout.split("-I", 1)[1].split()[0]).resolve()
    assert inc == (prefix / "include").resolve() and (inc / "keygate" / "version.h").exists()
