# SPDX-License-Identifier: Apache-2.0
"""keygate.conf and the files that decide what keygate trusts (ita_trust_anchor, tls_ca_file) are
refused when group or others may write them (issue 17, 10c), with one line naming the file, its
mode and the fix, before anything is sent; read-only for others (0644) is fine. The real CLI
against the local ITA stand-in."""
import pathlib
import shutil

import pytest

from conftest import run, write_keygate_conf


def token(keygate_bin, conf):
    return run([keygate_bin, "-c", str(conf), "token"], timeout=120)


def test_world_writable_keygate_conf_is_refused(keygate_bin, ita_stack, tmp_path):
    conf = write_keygate_conf(ita_stack, tmp_path / "k.conf")
    conf.chmod(0o666)
    r = token(keygate_bin, conf)
    assert r.returncode == 10, r.stderr
    assert r.stderr == f"keygate: config: {conf}: writable by group or others (mode 666); chmod go-w it\n"
    assert ita_stack.requests("ita") == []
    conf.chmod(0o644)
    r = token(keygate_bin, conf)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("key,source,mode", [("ita_trust_anchor", "ita-root-ca.pem", 0o664),
                                             ("tls_ca_file", "tls-ca.pem", 0o646)])
def test_writable_trust_file_is_refused(keygate_bin, ita_stack, tmp_path, key, source, mode):
    copy = tmp_path / source
    shutil.copyfile(pathlib.Path(ita_stack.state_dir) / source, copy)
    copy.chmod(mode)
    conf = write_keygate_conf(ita_stack, tmp_path / "k.conf", **{key: copy})
    r = token(keygate_bin, conf)
    assert r.returncode == 10, r.stderr
    assert r.stderr == (f"keygate: config: {key} {copy}: writable by group or others (mode {mode:03o}); "
                        "chmod go-w it\n")
    assert ita_stack.requests("ita") == []
    copy.chmod(0o644)
    r = token(keygate_bin, conf)
    assert r.returncode == 0, r.stderr
