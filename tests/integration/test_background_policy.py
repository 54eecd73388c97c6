# SPDX-License-Identifier: Apache-2.0
"""kbs_mode = background (issue 17, finding 1): keygate never sees a token there, so it applies
the local policy it can check to its own quote before the evidence leaves the machine (the TD's
DEBUG attribute, require_mrtd, require_rtmr0..3), refuses at config load the one setting it cannot
enforce (require_tcb_status: the TCB status is in ITA's token, which only the KBS sees), and makes
a fresh wrapping key for every transfer. Real `keygate release` against the local ITA and
Intel-KBS stand-ins; the KBS's request log shows what reached it: a background transfer with
evidence carries Attestation-Type TDX and the digest of its user data (the wrapping key)."""
import re

from conftest import kbs_conf, run
from kglib import new_key, pub_pem, register

DEBUG_ATTRIBUTES = "0100001000000000"  # little-endian TDATTRIBUTES: DEBUG | SEPT_VE_DISABLE
MRTD = "5a" * 48
RTMR2 = "c3" * 48


def release(keygate_bin, conf, *key_ids):
    return run([keygate_bin, "-c", str(conf), "release", *[a for k in key_ids for a in ("--key-id", k)]],
               timeout=120)


def evidence_transfers(stack):
    """The KBS transfer requests that carried evidence (the nonce request has no Attestation-Type)."""
    return [q for q in stack.requests("kbs") if q["path"].endswith("/transfer") and q["attestation_type"]]


def nonce_requests(stack):
    return [q for q in stack.requests("kbs") if q["path"].endswith("/transfer") and not q["attestation_type"]]


def assert_refused_locally(stack, r, *needles):
    """Refused at step verify (exit code 15) with one line naming the check, before any evidence
    reached the KBS (it only handed out its nonce) and before ITA saw a quote."""
    assert r.returncode == 15, (r.returncode, r.stderr)
    assert r.stdout == ""
    errors = [line for line in r.stderr.splitlines() if "simulated TD" not in line]  # the sim's warning
    assert len(errors) == 1 and re.match(r"keygate: (\S+: )?verify: ", errors[0]), r.stderr
    for n in needles:
        assert n in r.stderr, r.stderr
    assert len(nonce_requests(stack)) == 1
    assert evidence_transfers(stack) == []
    assert not [q for q in stack.requests("ita") if q["path"].endswith("/attest")]


def test_debug_td_is_refused_in_background_mode_unless_allowed(keygate_bin, kbs_stack, tmp_path):
    key = new_key("p256")
    key_id = register(kbs_stack, key)
    conf = kbs_conf(kbs_stack, tmp_path / "k.conf", kbs_mode="background",
                    sim_td_attributes=DEBUG_ATTRIBUTES)
    kbs_stack.clear_requests("kbs")
    kbs_stack.clear_requests("ita")
    assert_refused_locally(kbs_stack, release(keygate_bin, conf, key_id), "TD is debuggable",
                           "allow_debug_td = no")

    # the same debug TD with allow_debug_td = yes: released (the KBS policy does not look at it)
    conf = kbs_conf(kbs_stack, tmp_path / "k2.conf", kbs_mode="background",
                    sim_td_attributes=DEBUG_ATTRIBUTES, allow_debug_td="yes")
    r = release(keygate_bin, conf, key_id)
    assert r.returncode == 0, r.stderr
    assert r.stdout == pub_pem(key)
    assert [q["status"] for q in evidence_transfers(kbs_stack)] == [200]


def test_require_mrtd_and_rtmr_are_enforced_on_our_own_quote(keygate_bin, kbs_stack, tmp_path):
    key = new_key("p256")
    key_id = register(kbs_stack, key)
    common = {"kbs_mode": "background", "sim_mrtd": MRTD, "sim_rtmr2": RTMR2}
    # no allowed MRTD matches: refused, nothing sent
    conf = kbs_conf(kbs_stack, tmp_path / "m.conf", require_mrtd="a5" * 48 + ", " + "00" * 48, **common)
    kbs_stack.clear_requests("kbs")
    kbs_stack.clear_requests("ita")
    assert_refused_locally(kbs_stack, release(keygate_bin, conf, key_id), MRTD, "require_mrtd")

    # an RTMR2 allow-list our RTMR2 is not in: refused, nothing sent
    conf = kbs_conf(kbs_stack, tmp_path / "r.conf", require_rtmr2="3c" * 48, **common)
    kbs_stack.clear_requests("kbs")
    assert_refused_locally(kbs_stack, release(keygate_bin, conf, key_id), "RTMR2", "require_rtmr2")

    # matching lists (hex of any case, our value second in the list): released
    conf = kbs_conf(kbs_stack, tmp_path / "ok.conf", require_mrtd="a5" * 48 + "," + MRTD.upper(),
                    require_rtmr2=RTMR2.upper(), **common)
    kbs_stack.clear_requests("kbs")
    r = release(keygate_bin, conf, key_id)
    assert r.returncode == 0, r.stderr
    assert r.stdout == pub_pem(key)
    assert [q["status"] for q in evidence_transfers(kbs_stack)] == [200]


def test_require_tcb_status_with_background_mode_fails_at_config_load(keygate_bin, kbs_stack, tmp_path):
    key_id = register(kbs_stack, new_key("p256"))
    conf = kbs_conf(kbs_stack, tmp_path / "k.conf", kbs_mode="background", require_tcb_status="UpToDate")
    kbs_stack.clear_requests("kbs")
    kbs_stack.clear_requests("ita")
    r = release(keygate_bin, conf, key_id)
    assert r.returncode == 10, (r.returncode, r.stderr)
    assert r.stderr == ("keygate: config: require_tcb_status cannot be enforced with kbs_mode = background "
                        "(the TCB status is in ITA's token, which only the KBS sees)\n")
    assert kbs_stack.requests("kbs") == [] and kbs_stack.requests("ita") == []
    # left unset (the default) or empty, background mode loads: the KBS's policy decides
    for extra in ({}, {"require_tcb_status": ""}):
        conf = kbs_conf(kbs_stack, tmp_path / "k2.conf", kbs_mode="background", **extra)
        r = release(keygate_bin, conf, key_id)
        assert r.returncode == 0, r.stderr


def test_each_background_transfer_has_a_fresh_wrapping_key(keygate_bin, kbs_stack, tmp_path):
    keys = [new_key("p256"), new_key("rsa2048"), new_key("p256")]
    ids = [register(kbs_stack, k) for k in keys]
    conf = kbs_conf(kbs_stack, tmp_path / "k.conf", kbs_mode="background")
    kbs_stack.clear_requests("kbs")
    r = release(keygate_bin, conf, *ids)  # one process, kg_release_keys over three keys
    assert r.returncode == 0, r.stderr
    assert r.stdout == "".join(pub_pem(k) for k in keys)
    transfers = evidence_transfers(kbs_stack)
    assert [q["status"] for q in transfers] == [200, 200, 200]
    digests = [q["user_data_sha256"] for q in transfers]
    assert all(re.fullmatch(r"[0-9a-f]{64}", d) for d in digests), digests
    assert len(set(digests)) == 3, digests
