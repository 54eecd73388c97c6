# SPDX-License-Identifier: Apache-2.0
"""Agent mode against in-process (issue 22, item 5), in one run:

    /usr/bin/python3 bench/agent_bench.py --build build-bench-run [--quick] [--no-results]

(bench/run builds build-bench-run with -DKEYGATE_BENCH=ON.) Starts the local stack, registers
RSA-2048 and P-256 keys with certificates and starts `keygate agent` serving them (socket in a
root-owned 0755 directory; allowed: uid 0 and nginx's workers, uid 65534). Then per key:

- TLS 1.3 full handshakes/s (h2load, as P2): nginx with 1 worker and `backend = local` (the key
  released into nginx) against nginx with 1 worker and `backend = agent`; interleaved (ABBA),
  medians, ratio agent / in-process. Goal: >= 0.90 RSA-2048, >= 0.80 P-256.
- signatures/s for 1, 2, 4, 8 clients: N sign_bench processes signing in a loop through the
  provider (EVP_DigestSign, a new context per signature, as a TLS server), summed; agent against
  in-process, interleaved.

Prints the result as JSON and writes a "## Agent mode (issue 22, item 5)" section into
bench/RESULTS.md (outside the perf markers). Every process it starts is stopped by its PID.
"""
import argparse
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench  # noqa: E402
from harness import Nginx, Stack, free_port, h2load, median  # noqa: E402

NOBODY = 65534  # nginx's workers (no `user` directive, master as root)
GOALS = {"rsa2048": 0.90, "p256": 0.80}
FULL = dict(rounds=5, conns=300, clients=(1, 2, 4, 8), sign_rounds=3, sign_runs=7, sign_seconds=0.25)
QUICK = dict(rounds=2, conns=40, clients=(1, 2, 4, 8), sign_rounds=1, sign_runs=5, sign_seconds=0.05)
SECTION = "## Agent mode (issue 22, item 5)"


class Agent:
    """`keygate -c CONF agent` in the foreground, its output in LOG; stopped by PID."""

    def __init__(self, keygate, conf, log, env):
        self.log = pathlib.Path(log)
        self.out = open(self.log, "a")
        self.proc = subprocess.Popen([keygate, "-c", str(conf), "agent"], env=env, stdout=self.out,
                                     stderr=subprocess.STDOUT)

    def wait_ready(self, deadline_s=60):
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"keygate agent exited: {self.log.read_text()[-2000:]}")
            if "key(s) released; serving on" in self.log.read_text():
                return self
            time.sleep(0.05)
        raise RuntimeError(f"keygate agent not ready: {self.log.read_text()[-2000:]}")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.out.close()


def ratio(a, b):
    return a / b if b else float("nan")


def sign_rate(sign_bench, ref, env, n, runs, seconds):
    """N sign_bench processes at once, each signing with ref in 2 x runs periods of `seconds`, all
    starting at the same instant (--start-at: after loading the provider and the key, in-process
    also attesting and releasing, and the warm-up); the sum over the processes of each one's
    median rate (wall clock). Returns (sum, how late the latest process started, s)."""
    start_at = time.time() + 1.0 + 0.25 * n
    cmd = [sign_bench, "--a", str(ref), "--b", str(ref), "--runs", str(runs), "--seconds", str(seconds),
           "--start-at", f"{start_at:.3f}"]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(n)]
    total, late = 0.0, 0.0
    errors = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        if p.returncode != 0:
            errors.append(err.decode(errors="replace")[-800:])
            continue
        r = json.loads(out)
        total += median(r["a_wall"] + r["b_wall"])
        late = max(late, r.get("late_s", 0.0))
    if errors:
        raise RuntimeError(f"sign_bench: {errors[0]}")
    if late > seconds / 4:
        print(f"agent_bench: warning: a sign_bench process started {late:.2f} s late", file=sys.stderr)
    return total, late


def measure(st, q, work, agent_env, sign_bench):
    out = {}
    for kind in ("rsa2048", "p256"):
        k = st.keys[kind]
        servers = {}
        try:
            for side, env in (("agent", agent_env), ("inproc", st.env)):
                port = free_port()
                n = Nginx(os.path.join(work, f"nginx-{kind}-{side}"),
                          [(port, "TLSv1.3", k["crt"], k["ref"], "localhost")], env, workers=1)
                servers[side] = (n, port)
                n.start()
            hs = {"agent": [], "inproc": []}
            for r in range(q["rounds"]):
                order = ("agent", "inproc") if r % 2 == 0 else ("inproc", "agent")
                for side in order:
                    hs[side].append(h2load(servers[side][1], q["conns"]))
        finally:
            for n, _ in servers.values():
                n.stop()
        res = {"handshakes": {**hs, "agent_median": median(hs["agent"]), "inproc_median": median(hs["inproc"])}}
        res["handshakes"]["ratio"] = ratio(res["handshakes"]["agent_median"], res["handshakes"]["inproc_median"])
        res["handshakes"]["goal"] = GOALS[kind]
        res["handshakes"]["met"] = res["handshakes"]["ratio"] >= GOALS[kind]
        sig = {}
        for c in q["clients"]:
            d = {"agent": [], "inproc": []}
            for r in range(q["sign_rounds"]):
                order = ("agent", "inproc") if r % 2 == 0 else ("inproc", "agent")
                for side in order:
                    rate, late = sign_rate(sign_bench, k["ref"], agent_env if side == "agent" else st.env, c,
                                           q["sign_runs"], q["sign_seconds"])
                    d[side].append(rate)
                    d["late_s"] = max(d.get("late_s", 0.0), late)
            d["agent_median"], d["inproc_median"] = median(d["agent"]), median(d["inproc"])
            d["ratio"] = ratio(d["agent_median"], d["inproc_median"])
            sig[str(c)] = d
        res["signatures"] = sig
        out[kind] = res
    return out


def markdown(res, cmd):
    m = res["machine"]
    lines = [SECTION, "",
             "Agent mode (`backend = agent`, every private-key operation one round trip to `keygate agent`) "
             "against in-process (`backend = local`, the key released into the process), measured in one run "
             "by `bench/agent_bench.py`:", "", "```", cmd, "```", "",
             f"{m['date']}, git {m['git']}, {m['nproc']} cores ({m['cpu']}), {m['openssl']}, {m['nginx']}; "
             f"load average at start {m['loadavg']}, at end {res['loadavg_end']} (shared machine).", "",
             f"TLS 1.3 full handshakes/s, nginx with 1 worker, h2load {res['params']['conns']} connections "
             f"(one request each), {res['params']['rounds']} interleaved rounds (ABBA), medians:", "",
             "| key | in-process | agent | agent ÷ in-process | goal | |", "| --- | ---: | ---: | ---: | ---: | --- |"]
    names = {"rsa2048": "RSA-2048", "p256": "P-256"}
    for kind, r in res["results"].items():
        h = r["handshakes"]
        lines.append(f"| {names[kind]} | {h['inproc_median']:,.0f} | {h['agent_median']:,.0f} | **{h['ratio']:.2f}** "
                     f"| ≥ {h['goal']:.2f} | {'met' if h['met'] else '**not met**'} |")
    p = res["params"]
    late = max(d["late_s"] for r in res["results"].values() for d in r["signatures"].values())
    lines += ["", f"Signatures/s (EVP_DigestSign with SHA-256, a new context per signature) summed over N "
              f"`sign_bench` processes signing at once (each: its median over {2 * p['sign_runs']} periods of "
              f"{p['sign_seconds']:g} s, all N starting at the same instant after loading the key; the latest "
              f"started {late * 1000:.0f} ms late), {p['sign_rounds']} interleaved round(s) (ABBA), medians:", "",
              "| key | clients | in-process | agent | agent ÷ in-process |", "| --- | ---: | ---: | ---: | ---: |"]
    for kind, r in res["results"].items():
        for c, d in r["signatures"].items():
            lines.append(f"| {names[kind]} | {c} | {d['inproc_median']:,.0f} | {d['agent_median']:,.0f} "
                         f"| {d['ratio']:.2f} |")
    lines += ["", "All processes (nginx, the agent, h2load, the clients) share the machine's cores: with more "
              "clients than cores, the in-process side is bound by the cores and the agent side also by its one "
              "serving process, so the ratios above 2 clients say how the agent scales on this machine, not on "
              "a larger TD.", ""]
    return "\n".join(lines)


def write_section(path, text):
    """Replaces the section (up to the next '## ' heading) or appends it; the perf markers are
    not touched."""
    doc = pathlib.Path(path).read_text()
    text = text.rstrip("\n") + "\n"
    i = doc.find(SECTION + "\n")
    if i < 0:
        doc = doc.rstrip("\n") + "\n\n" + text
    else:
        j = doc.find("\n## ", i + len(SECTION))
        doc = doc[:i] + text + ("\n" + doc[j + 1:] if j >= 0 else "")
    pathlib.Path(path).write_text(doc)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", required=True)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--results", default=str(HERE / "RESULTS.md"))
    ap.add_argument("--no-results", action="store_true", help="print the JSON only")
    args = ap.parse_args()
    q = dict(QUICK if args.quick else FULL)
    build = pathlib.Path(args.build).resolve()
    sign_bench = str(build / "bench" / "sign_bench")
    if not os.access(sign_bench, os.X_OK):
        sys.exit(f"agent_bench: {sign_bench} missing (configure with -DKEYGATE_BENCH=ON)")
    mach = bench.machine()
    work = tempfile.mkdtemp(prefix="kg-agentbench-")
    sockdir = tempfile.mkdtemp(prefix="kg-agentbench-sock-", dir="/tmp")
    os.chmod(sockdir, 0o755)
    st = agent = None
    try:
        st = Stack(build, work)
        for kind in ("rsa2048", "p256"):
            st.add_key(kind, kind, cert=True)
        sock = os.path.join(sockdir, "agent.sock")
        allow = ",".join(f"{k['ref']}:uid=0:uid={NOBODY}" for k in st.keys.values())
        agent_conf = pathlib.Path(work) / "agent.conf"
        agent_conf.write_text(st.conf.read_text() + f"agent_socket = {sock}\nagent_socket_group = {NOBODY}\n"
                              f"agent_keys = {allow}\n")
        client_conf = pathlib.Path(work) / "client.conf"
        client_conf.write_text(f"backend = agent\nagent_socket = {sock}\n")
        agent_env = dict(st.env, OPENSSL_CONF=str(st.openssl_cnf(pathlib.Path(work) / "client.cnf",
                                                                  conf=client_conf)))
        agent = Agent(st.keygate, agent_conf, pathlib.Path(work) / "agent.log", st.env).wait_ready()
        results = measure(st, q, work, agent_env, sign_bench)
    finally:
        if agent is not None:
            agent.stop()
        if st is not None:
            st.stop()
        shutil.rmtree(sockdir, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    res = {"machine": mach, "loadavg_end": [round(x, 2) for x in os.getloadavg()], "quick": args.quick,
           "params": {k: (list(v) if isinstance(v, tuple) else v) for k, v in q.items()}, "results": results}
    print(json.dumps(res, indent=1))
    if not args.no_results:
        cmd = "/usr/bin/python3 bench/agent_bench.py --build build-bench-run" + (" --quick" if args.quick else "")
        write_section(args.results, markdown(res, cmd))
    return 0


if __name__ == "__main__":
    sys.exit(main())
