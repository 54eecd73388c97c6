# SPDX-License-Identifier: Apache-2.0
"""Starts or stops the local ITA + Intel-KBS stand-ins (tests/stack) for trying keygate on a
machine without TDX, as docs/try-it.md and the README's quickstart do (and their test runs).

    /usr/bin/python3 scripts/local-stack.py start DIR [--build BUILD_DIR]
    /usr/bin/python3 scripts/local-stack.py stop DIR

start: creates the stack's PKI in DIR (once), starts both services on free 127.0.0.1 ports
(they keep running after this script exits), and writes
    DIR/keygate.conf   the simulated TD (adapter = sim) against those services
    DIR/openssl.cnf    loads default, then keygate (BUILD_DIR/provider/keygate.so)
    DIR/env            shell exports: KEYGATE_CONF, KEYGATE_OPENSSL_CNF, ITA_URL, KBS_URL,
                       TLS_CA (the stack's TLS CA), KBS_ADMIN (the KBS admin's credentials file)
stop: stops the services started in DIR, by their PIDs.
The simulated TD is for trying and testing only: its quotes verify only against this stack.
"""
import argparse
import json
import os
import pathlib
import signal
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.stack import pki  # noqa: E402
from tests.stack.fixtures import LocalStack  # noqa: E402
from tests.stack.kbs_fixture import start_kbs  # noqa: E402


def start(state, build):
    state.mkdir(parents=True, exist_ok=True)
    stop(state)  # a second start replaces the first
    stack = LocalStack(str(state)).init()
    ita = stack.start_ita()
    kbs = start_kbs(stack)
    provider = (REPO / build / "provider" / "keygate.so").resolve()
    conf = state / "keygate.conf"
    conf.write_text(
        "# the simulated TD against the local stack (scripts/local-stack.py)\n"
        "adapter = sim\n"
        f"ita_api_url = {ita.url}\nita_base_url = {ita.url}\n"
        f"ita_api_key_file = {state / 'ita-api-key'}\nita_trust_anchor = {state / 'ita-root-ca.pem'}\n"
        f"tls_ca_file = {state / 'tls-ca.pem'}\n"
        f"sim_pck_key = {state / 'sim-pck.key'}\nsim_pck_chain = {state / 'sim-pck-chain.pem'}\n"
        f"kbs_url = {kbs.url}\nkbs_type = intel\n")
    conf.chmod(0o644)  # keygate refuses a keygate.conf others may write (a umask of 002)
    cnf = state / "openssl.cnf"
    cnf.write_text(
        "openssl_conf = openssl_init\nconfig_diagnostics = 1\n[openssl_init]\nproviders = provider_sect\n"
        "[provider_sect]\ndefault = default_sect\nkeygate = keygate_sect\n[default_sect]\nactivate = 1\n"
        f"[keygate_sect]\nmodule = {provider}\nactivate = 1\nconfig = {conf}\n")
    env = {"KEYGATE_CONF": conf, "KEYGATE_OPENSSL_CNF": cnf, "ITA_URL": ita.url, "KBS_URL": kbs.url,
           "TLS_CA": state / "tls-ca.pem", "KBS_ADMIN": state / pki.KBS_ADMIN_FILE}
    (state / "env").write_text("".join(f"export {k}='{v}'\n" for k, v in env.items()))
    print(f"local stack: ITA {ita.url} (pid {ita.pid}), KBS {kbs.url} (pid {kbs.pid}); . {state / 'env'}")


def stop(state):
    for name in ("ita", "kbs"):
        try:
            info = json.loads((state / f"{name}.json").read_text())
            pid = int(info["pid"])
            # only a stack service of this state dir: never another process that reused the pid
            cmdline = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError, KeyError):
            continue
        if b"tests.stack." + name.encode() not in cmdline or str(state).encode() not in cmdline:
            continue
        os.kill(pid, signal.SIGTERM)
        for _ in range(100):
            if not pathlib.Path(f"/proc/{pid}").exists():
                break
            time.sleep(0.05)
        (state / f"{name}.json").unlink(missing_ok=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("action", choices=["start", "stop"])
    ap.add_argument("dir")
    ap.add_argument("--build", default=os.environ.get("KEYGATE_BUILD_DIR", "build"))
    args = ap.parse_args()
    state = pathlib.Path(args.dir).resolve()
    if args.action == "start":
        start(state, args.build)
    else:
        stop(state)


if __name__ == "__main__":
    main()
