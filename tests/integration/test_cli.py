# SPDX-License-Identifier: Apache-2.0
"""The keygate command as a whole: every subcommand takes --config, --json and --api-key-file,
documents the exit codes in --help, prints errors as one line naming the step (or 'usage'),
gives valid JSON with --json (failures too), and never takes a secret on argv."""
import json
import pathlib
import re

import pytest

from conftest import kbs_conf, run, write_keygate_conf
from kglib import new_key, pub_pem, register

COMMANDS = [["evidence"], ["token"], ["verify"], ["release"], ["ref"], ["ref", "create"], ["ref", "show"],
            ["doctor"], ["version"]]
EXIT_CODES = ("0 ok, 1 usage, 10 config, 11 wrapping key, 12 nonce, 13 evidence, 14 token,",
              "15 verify, 16 transfer, 17 unwrap, 18 handover, 19 internal, 20 match",
              "21 doctor")


def one_line(stderr):
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    # the simulated TD warns on every quote; that warning is not the error line
    lines = [ln for ln in lines if "simulated TD" not in ln]
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.mark.parametrize("cmd", [[]] + COMMANDS, ids=lambda c: "-".join(c) or "keygate")
def test_help_documents_common_options_and_exit_codes(keygate_bin, cmd):
    r = run([keygate_bin, *cmd, "--help"])
    assert r.returncode == 0 and r.stderr == "", r.stderr
    text = " ".join(r.stdout.split())
    for opt in ("--config", "--json", "--api-key-file"):
        assert opt in text, (cmd, r.stdout)
    for codes in EXIT_CODES:
        assert " ".join(codes.split()) in text, (cmd, r.stdout)
    assert "never put a secret on the command line" in text


def test_top_level_lists_every_command(keygate_bin):
    r = run([keygate_bin, "--help"])
    for cmd in ("evidence", "token", "verify", "release", "ref", "doctor", "version"):
        assert re.search(rf"^  {cmd}\s", r.stdout, re.M), r.stdout


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: "-".join(c))
def test_unknown_option_is_one_usage_line(keygate_bin, cmd):
    r = run([keygate_bin, *cmd, "--no-such-option"])
    assert r.returncode == 1, r.stderr
    line = one_line(r.stderr)
    assert line.startswith("keygate: usage: "), line
    assert "--no-such-option" in line or "unknown verb" in line, line
    assert r.stdout == ""


@pytest.mark.parametrize("cmd", [["token", "--api-key", "s3cr3t"], ["release", "--api-key=s3cr3t"],
                                 ["doctor", "--api-k", "s3cr3t"], ["--api", "s3cr3t", "token"]],
                         ids=["token", "release", "doctor", "global"])
def test_no_option_takes_the_api_key_itself(keygate_bin, cmd):
    """getopt would take '--api-key X' as an abbreviation of --api-key-file X and name X in its
    error: keygate refuses every such form without echoing the value."""
    r = run([keygate_bin, *cmd])
    assert r.returncode == 1
    line = one_line(r.stderr)
    assert "secrets never go on the command line" in line
    assert "s3cr3t" not in r.stdout + r.stderr


@pytest.mark.parametrize("args,needle", [
    (["verify"], "--token FILE is required"),
    (["release"], "--key-id ID or --ref FILE is required"),
    (["ref", "create", "--key-id", "x"], "-o FILE are required"),
    (["ref", "show"], "FILE is required"),
    (["ref", "frobnicate"], "unknown verb 'frobnicate'"),
    (["evidence", "--replay", "--parse-quote", "q"], "do not go together"),
    (["version", "extra"], "unexpected argument 'extra'"),
    (["no-such-command"], "unknown command"),
    ([], "no command given"),
])
def test_usage_errors(keygate_bin, args, needle):
    r = run([keygate_bin, *args])
    assert r.returncode == 1
    line = one_line(r.stderr)
    assert line.startswith("keygate: usage: ") and needle in line, line


def test_usage_error_with_json_is_json(keygate_bin):
    r = run([keygate_bin, "--json", "release"])
    assert r.returncode == 1
    doc = json.loads(r.stdout)
    assert doc == {"ok": False, "step": "usage", "exit_code": 1, "error": "--key-id ID or --ref FILE is required"}


@pytest.mark.parametrize("cmd", [["token"], ["evidence"], ["release", "--key-id", "x"], ["doctor"],
                                 ["verify", "--token", "/dev/null"]], ids=lambda c: c[0])
def test_missing_config_is_exit_10_one_line(keygate_bin, tmp_path, cmd):
    missing = tmp_path / "missing.conf"
    r = run([keygate_bin, "--config", str(missing), *cmd])
    if cmd[0] == "doctor":  # doctor reports it as its config line
        assert r.returncode == 21 and re.search(r"^✗ config .*missing\.conf", r.stdout, re.M), r.stdout
        return
    assert r.returncode == 10, r.stderr
    line = one_line(r.stderr)
    assert line.startswith("keygate: config: ") and str(missing) in line, line
    # the same with --json after the command: one JSON error object on stdout
    r = run([keygate_bin, *cmd[:1], "--json", "--config", str(missing), *cmd[1:]])
    assert r.returncode == 10
    doc = json.loads(r.stdout)
    assert doc["ok"] is False and doc["step"] == "config" and doc["exit_code"] == 10
    assert str(missing) in doc["error"]


def test_stack_down_names_the_nonce_step(keygate_bin, ita_stack, tmp_path):
    conf = write_keygate_conf(ita_stack, tmp_path / "k.conf", retry_max=0)
    ita_stack.stop_all()
    for cmd in (["token"], ["evidence"]):
        r = run([keygate_bin, "-c", str(conf), *cmd])
        assert r.returncode == 12
        line = one_line(r.stderr)
        assert line.startswith("keygate: nonce: GET https://127.0.0.1:") and "/appraisal/v2/nonce" in line


class Site:
    def __init__(self, keygate_bin, stack, tmp):
        self.bin, self.tmp, self.stack = keygate_bin, tmp, stack
        self.conf = kbs_conf(stack, tmp / "k.conf")
        self.key = new_key("p256")
        self.key_id = register(stack, self.key)
        self.pub = tmp / "pub.pem"
        self.pub.write_text(pub_pem(self.key))

    def kg(self, *args, **kw):
        return run([self.bin, *map(str, args)], timeout=120, **kw)


@pytest.fixture
def site(keygate_bin, kbs_stack, tmp_path):
    return Site(keygate_bin, kbs_stack, tmp_path)


def test_json_of_every_subcommand(site):
    c = site.conf
    r = site.kg("version", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["version"]
    r = site.kg("--json", "version")
    assert json.loads(r.stdout)["openssl"].startswith("OpenSSL 3")

    r = site.kg("evidence", "-c", c, "--json")
    assert r.returncode == 0, r.stderr
    ev = json.loads(r.stdout)
    assert {"quote", "report_data", "verifier_nonce"} <= set(ev)

    quote = site.tmp / "q.bin"
    assert site.kg("evidence", "-c", c, "--no-nonce", "--out", quote).returncode == 0
    r = site.kg("evidence", "--parse-quote", quote, "--json")
    assert r.returncode == 0 and "mrtd" in json.dumps(json.loads(r.stdout)).lower()

    r = site.kg("token", "-c", c, "--json")
    assert r.returncode == 0, r.stderr
    tok = json.loads(r.stdout)
    assert tok["verified"] is True and tok["token"].count(".") == 2
    token = site.tmp / "t.jwt"
    token.write_text(tok["token"])

    r = site.kg("verify", "-c", c, "--token", token, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["verified"] is True

    ref = site.tmp / "ref.pem"
    r = site.kg("ref", "create", "-c", c, "--key-id", site.key_id, "--pubkey", site.pub, "-o", ref, "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["ok"] and doc["file"] == str(ref) and doc["public_key"] == pub_pem(site.key)

    for args in (["ref", "show", ref, "--json"], ["ref", "show", "--json", "-c", c, ref], ["--json", "ref", "show", ref]):
        r = site.kg(*args)
        assert r.returncode == 0, r.stderr
        doc = json.loads(r.stdout)
        assert doc["key_id"] == site.key_id and doc["public_key"] == pub_pem(site.key)

    r = site.kg("release", "-c", c, "--ref", ref, "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["ok"] and doc["released"] == 1 and doc["attested"] is True
    assert doc["keys"] == [{"key_id": site.key_id, "ok": True, "key_type": "EC", "bits": 256,
                            "public_key": pub_pem(site.key)}]
    assert "PRIVATE" not in r.stdout + r.stderr

    r = site.kg("doctor", "-c", c, "--json")
    doc = json.loads(r.stdout)
    assert [x["name"] for x in doc["checks"]][0] == "config"


def test_release_json_reports_each_key(site):
    other = new_key("p256")
    other_id = register(site.stack, other)
    wrong = site.tmp / "wrong.ref.pem"  # names other_id but expects site.key
    assert site.kg("ref", "create", "-c", site.conf, "--key-id", other_id, "--pubkey", site.pub, "-o",
                   wrong).returncode == 0
    r = site.kg("release", "-c", site.conf, "--key-id", site.key_id, "--ref", wrong, "--json")
    assert r.returncode == 20, r.stderr
    doc = json.loads(r.stdout)
    assert doc["ok"] is False and doc["released"] == 1
    by_id = {k["key_id"]: k for k in doc["keys"]}
    assert by_id[site.key_id]["ok"] is True
    assert by_id[other_id]["ok"] is False and by_id[other_id]["step"] == "match"
    assert one_line(r.stderr).startswith("keygate: match: ")


def test_api_key_from_stdin(site):
    state = pathlib.Path(site.stack.state_dir)
    key = (state / "ita-api-key").read_text()
    conf = kbs_conf(site.stack, site.tmp / "nokey.conf", ita_api_key_file=site.tmp / "absent")
    r = site.kg("token", "-c", conf, "--api-key-file", "-", input=key)
    assert r.returncode == 0, r.stderr
    r = site.kg("--api-key-file", "-", "-c", conf, "release", "--key-id", site.key_id, input=key)
    assert r.returncode == 0 and r.stdout == pub_pem(site.key), r.stderr
    ref = site.tmp / "r.pem"
    r = site.kg("ref", "create", "-c", conf, "-A", "-", "--key-id", site.key_id, "-o", ref, input=key)
    assert r.returncode == 0, r.stderr
    r = site.kg("evidence", "-c", conf, "-A", "-", input=key)
    assert r.returncode == 0, r.stderr
    # without it, the absent file is named
    r = site.kg("token", "-c", conf)
    assert r.returncode == 10 and "absent" in one_line(r.stderr)
    # an empty stdin, or two lines, is refused in one line without echoing anything
    for bad in ("", "\n", "a\nb\n"):
        r = site.kg("token", "-c", conf, "--api-key-file", "-", input=bad)
        assert r.returncode == 10
        line = one_line(r.stderr)
        assert line.startswith("keygate: config: --api-key-file -: stdin must hold the ITA API key")
    # a wrong key from stdin is a 401 at the nonce step, never printed
    r = site.kg("token", "-c", conf, "--api-key-file", "-", input="wrong-key-123\n")
    assert r.returncode == 12 and "HTTP 401" in r.stderr and "wrong-key-123" not in r.stderr
    # --api-key-file FILE overrides ita_api_key_file
    r = site.kg("token", "-c", conf, "--api-key-file", state / "ita-api-key")
    assert r.returncode == 0, r.stderr


def test_unknown_option_is_named_without_its_value(keygate_bin):
    r = run([keygate_bin, "token", "--password=hunter2"])
    assert r.returncode == 1
    line = one_line(r.stderr)
    assert "'--password'" in line and "hunter2" not in r.stderr + r.stdout
    r = run([keygate_bin, "verify", "--token"])
    assert r.returncode == 1 and "option '--token' is unknown or lacks its value" in one_line(r.stderr)


def test_log_level_sets_what_stderr_shows(keygate_bin, ita_stack, tmp_path):
    """keygate.conf's log_level: warnings by default (the simulated TD's warning always shows),
    info lines (here: kg_http's retry after a 503) at 2, KEYGATE_DEBUG overriding it; below
    warnings is refused."""
    def token(env=None, **conf):
        ita_stack.set_faults("ita", [{"route": "/appraisal/v2/nonce", "mode": "status", "status": 503, "count": 1}])
        c = write_keygate_conf(ita_stack, tmp_path / "k.conf", retry_wait_min_ms=10, **conf)
        return run([keygate_bin, "-c", str(c), "token"], env=env)

    r = token()
    assert r.returncode == 0, r.stderr
    assert " warn " in r.stderr and "simulated TD" in r.stderr and " info " not in r.stderr
    r = token(log_level=2)
    assert r.returncode == 0, r.stderr
    assert re.search(r"keygate\[\d+\] info kg_http.c:\d+: GET \S+: HTTP 503, retrying", r.stderr), r.stderr
    r = token(env={"KEYGATE_DEBUG": "stderr:1"}, log_level=2)
    assert r.returncode == 0 and " info " not in r.stderr and " warn " in r.stderr, r.stderr
    r = token(log_level=0)
    assert r.returncode == 10 and "log_level" in r.stderr, r.stderr
    ita_stack.clear_faults("ita")


V2_INTEL_REFUSAL = ("keygate: config: ita_api_version = v2 cannot be used with kbs_type = intel, kbs_mode = "
                    "passport and kbs_intel_generation = v1.3 (the Intel KBS v1.3.0 reads attester_type and "
                    "attester_held_data at the top level of a v1 token and refuses a v2 token with 401); use "
                    "ita_api_version = v1")


def test_v2_tokens_for_an_intel_kbs_are_refused_before_anything_is_sent(keygate_bin, ita_stack, tmp_path):
    """Issue 19, items 1 and 4 (docs/supported-combinations.md): a v2 token can never pass the
    Intel KBS v1.3.0. Pinned (kbs_intel_generation = v1.3) with the KBS named in keygate.conf, the
    file fails at load, for every command; with the KBS named only on the command line, the release
    refuses before it attests. With auto, the release asks the KBS its version first, and attests
    nothing when it cannot tell (the generations themselves: test_release_cli.py). Without a KBS,
    v2 is what `keygate token` asks for."""
    conf = write_keygate_conf(ita_stack, tmp_path / "k.conf", ita_api_version="v2", kbs_url="https://127.0.0.1:1",
                              kbs_intel_generation="v1.3")
    for cmd in (["token"], ["evidence"], ["release", "--key-id", "6d0a4b8e-9c3f-4e1a-8b2d-5f7e9a1c3b4d"]):
        r = run([keygate_bin, "-c", str(conf), *cmd])
        assert r.returncode == 10 and one_line(r.stderr) == V2_INTEL_REFUSAL, (cmd, r.stderr)
    conf = write_keygate_conf(ita_stack, tmp_path / "k2.conf", ita_api_version="v2", kbs_intel_generation="v1.3")
    r = run([keygate_bin, "-c", str(conf), "release", "--key-id", "6d0a4b8e-9c3f-4e1a-8b2d-5f7e9a1c3b4d",
             "--kbs-url", "https://127.0.0.1:1"])
    assert r.returncode == 10 and one_line(r.stderr) == V2_INTEL_REFUSAL, r.stderr
    auto = write_keygate_conf(ita_stack, tmp_path / "k3.conf", ita_api_version="v2", kbs_url="https://127.0.0.1:1")
    r = run([keygate_bin, "-c", str(auto), "release", "--key-id", "6d0a4b8e-9c3f-4e1a-8b2d-5f7e9a1c3b4d"])
    assert r.returncode != 0 and "127.0.0.1:1" in r.stderr, r.stderr
    assert ita_stack.requests("ita") == []  # no nonce, no attest: nothing left keygate
    r = run([keygate_bin, "-c", str(conf), "--json", "token"])
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["claims"]["ver"] == "2.0.0"


@pytest.mark.parametrize("keys,needle", [
    ({"adapter": "azure-tdx", "kbs_mode": "background"},
     "adapter = azure-tdx cannot be used with kbs_type = intel and kbs_mode = background (the Intel KBS sends "
     "the quote to ITA's plain /appraisal/v1/attest route, not the Azure one, /appraisal/v1/attest/azure/tdxvm)"),
    ({"adapter": "azure-tdx", "kbs_type": "trustee"}, "adapter = azure-tdx cannot be used with kbs_type = trustee"),
    ({"adapter": "tdx-ioctl"}, "adapter = tdx-ioctl is not built yet"),
], ids=["azure-background", "azure-trustee", "tdx-ioctl"])
def test_combinations_that_cannot_work_fail_at_load(keygate_bin, ita_stack, tmp_path, keys, needle):
    conf = write_keygate_conf(ita_stack, tmp_path / "k.conf", kbs_url="https://127.0.0.1:1", **keys)
    r = run([keygate_bin, "-c", str(conf), "evidence"])
    assert r.returncode == 10, r.stderr
    line = one_line(r.stderr)
    assert line.startswith("keygate: config: " + needle), line
    assert ita_stack.requests("ita") == []
