"""keygate benchmark driver (issue 10): run by bench/run, which builds first.

    /usr/bin/python3 bench/bench.py --build DIR [--quick] [--only p1,p3,...] [--note TEXT]

Starts the local stack on 127.0.0.1, registers keys, runs P1-P6 and the Intel-client
comparison, writes bench/results.json, bench/plots/*.png and the perf block of bench/RESULTS.md.
"""
import argparse
import datetime
import json
import os
import pathlib
import platform
import shutil
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import goals  # noqa: E402
import harness  # noqa: E402
import report  # noqa: E402

FULL = dict(p1_runs=7, p1_seconds=0.5, callgrind=True, p2_runs=5, p2_conns=300, p3_runs=7, p3_warm=5,
            p4_keys=100, intel_keys=10, p4_runs=5, p5_runs=3, p6_blocks=50, p6_runs=5, latencies=(0, 20))
QUICK = dict(p1_runs=5, p1_seconds=0.05, callgrind=False, p2_runs=2, p2_conns=40, p3_runs=2, p3_warm=2,
             p4_keys=10, intel_keys=3, p4_runs=1, p5_runs=1, p6_blocks=5, p6_runs=1, latencies=(0, 20))
SECTIONS = ("p1", "p2", "p3", "p4", "p5", "p6")


def machine():
    ossl = subprocess.run(["openssl", "version"], capture_output=True, text=True).stdout.strip()
    ngx = subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip()
    cpu = ""
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = os.getloadavg()
    return {"nproc": os.cpu_count(), "cpu": cpu, "openssl": ossl, "nginx": ngx, "kernel": platform.release(),
            "loadavg": [round(x, 2) for x in load],
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "git": subprocess.run(["git", "-C", str(HERE), "rev-parse", "--short", "HEAD"], capture_output=True,
                                  text=True).stdout.strip()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", required=True)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", default=",".join(SECTIONS))
    ap.add_argument("--note", default="", help="a sentence for RESULTS.md (e.g. about machine load)")
    ap.add_argument("--results", default=str(HERE / "RESULTS.md"))
    ap.add_argument("--plots", default=str(HERE / "plots"))
    ap.add_argument("--json", default=str(HERE / "results.json"))
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--from-json", help="only rewrite RESULTS.md and the plots from a results.json")
    args = ap.parse_args()
    if args.from_json:
        res = json.loads(pathlib.Path(args.from_json).read_text())
        res["goals"] = goal_list(res)
        return finish(res, args)
    q = QUICK if args.quick else FULL
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    build = pathlib.Path(args.build).resolve()
    bins = {b: str(build / "bench" / b) for b in ("sign_bench", "release_bench", "rss_bench")}
    work = tempfile.mkdtemp(prefix="keygate-bench-")
    res = {"machine": machine(), "quick": args.quick, "params": q, "note": args.note,
           "command": "bench/run" + (" --quick" if args.quick else "")}
    t_start = time.monotonic()
    st = None
    try:
        print(f"bench: work dir {work}; starting the local stack", flush=True)
        st = harness.Stack(build, work)
        if "p1" in only:
            print("bench: P1 sign ops/s", flush=True)
            res["p1"] = goals.p1_sign(st, bins, q)
        if "p2" in only:
            print("bench: P2 nginx handshakes", flush=True)
            res["p2"] = goals.p2_tls(st, q, work)
        if "p3" in only:
            res["p3"] = {}
            for lat in q["latencies"]:
                print(f"bench: P3 one release, {lat} ms", flush=True)
                res["p3"][str(lat)] = goals.p3_release(st, bins, q, lat)
        if "p4" in only:
            res["p4"] = {}
            for lat in q["latencies"]:
                print(f"bench: P4 {q['p4_keys']} keys and the Intel-client mode, {lat} ms", flush=True)
                res["p4"][str(lat)] = goals.p4_scaling(st, bins, q, lat)
        if "p5" in only:
            print("bench: P5 memory", flush=True)
            res["p5"] = goals.p5_rss(st, bins, q, work)
        if "p6" in only:
            print(f"bench: P6 nginx startup, 1 vs {q['p6_blocks']} server blocks", flush=True)
            res["p6"] = goals.p6_startup(st, q, work)
    finally:
        if st is not None:
            st.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    res["elapsed_s"] = round(time.monotonic() - t_start, 1)
    res["goals"] = goal_list(res)
    pathlib.Path(args.json).write_text(json.dumps(res, indent=1, default=str))
    return finish(res, args)


def finish(res, args):
    plots = report.plot_all(res, args.plots)
    report.write_results(args.results, markdown(res, plots, args.results))
    for g in res["goals"]:
        print(f"  {g['name']:<28} {g['label']:<40} {'met' if g['met'] else 'NOT met'}")
    print(f"bench: wrote {args.results}, {args.json} and {len(plots)} plots in {res['elapsed_s']} s")
    return 0


# ------------------------------------------------------------------ verdicts

def goal_list(res):
    g = []

    def add(name, value, limit, label, higher_better=False):
        score = (limit / value if value else float("inf")) if higher_better else value / limit
        g.append({"name": name, "value": value, "limit": limit, "label": label, "score": score,
                  "met": (value >= limit) if higher_better else (value <= limit)})
    for kind, d in res.get("p1", {}).items():
        add(f"P1 sign {kind}", d["ratio_wall"], 0.97, f"{d['ratio_wall']:.3f} (≥ 0.97)", True)
    for kind, d in res.get("p2", {}).items():
        add(f"P2 TLS 1.3 {kind}", d["TLSv1.3"]["ratio"], 0.97, f"{d['TLSv1.3']['ratio']:.3f} (≥ 0.97)", True)
    for lat, d in res.get("p3", {}).items():
        s = d["summary"]
        add(f"P3 CPU/release {lat} ms", s["cpu_ms"], 5.0, f"{s['cpu_ms']:.1f} ms (≤ 5 ms)")
        add(f"P3 CPU w/o keygen {lat} ms", s["cpu_wo_wrapkey_ms"], 5.0, f"{s['cpu_wo_wrapkey_ms']:.1f} ms (≤ 5 ms)")
        add(f"P3 round trips {lat} ms", s["requests_warm"], 3, f"{s['requests_warm']:.1f} (≤ 3, cached)")
    for lat, d in res.get("p4", {}).items():
        add(f"P4 {d['keys']} keys ÷ 1 {lat} ms", d["ratio_many_one"], 2.0, f"{d['ratio_many_one']:.2f}× (≤ 2×)")
    if "p5" in res:
        mib = res["p5"]["keygate_added_kb"] / 1024
        add("P5 RSS provider+10 keys", mib, 4.0, f"{mib:.2f} MiB (≤ 4 MiB)")
    if "p6" in res:
        d = res["p6"]
        add(f"P6 nginx {d['blocks']} ÷ 1 blocks", d["ratio"], 2.0, f"{d['ratio']:.2f}× (≤ 2×)")
    return g


# ------------------------------------------------------------------ markdown

def f(x, nd=1):
    return f"{x:.{nd}f}"


def markdown(res, plots, results_path):
    m = res["machine"]
    base = pathlib.Path(results_path).parent
    rel = [os.path.relpath(p, base) for p in plots]
    L = ["## Performance (issue 10)", ""]
    L.append(f"Command: `{res['command']}` (elapsed {res['elapsed_s']} s). Machine: nproc {m['nproc']}, {m['cpu']}, "
             f"{m['openssl']}, {m['nginx']}, kernel {m['kernel']}, load average at start {m['loadavg']}, "
             f"{m['date']}, commit {m['git']}.")
    if res.get("quick"):
        L.append("")
        L.append("**Quick smoke pass (`--quick`): too few runs for the figures to mean anything.**")
    if res.get("note"):
        L += ["", f"Note: {res['note']}"]
    L += ["", "Every figure is a ratio of A and B measured in the same run, interleaved (A/B, then B/A), "
          "as medians. The local stack (tests/stack) runs on the same machine; its added latency is "
          "set with its latency knob (per request one RTT, per new connection two).", ""]
    L += ["| goal | measured | limit | verdict |", "| --- | --- | --- | --- |"]
    for g in res["goals"]:
        L.append(f"| {g['name']} | {g['label'].split(' (')[0]} | {g['label'].split(' (')[1].rstrip(')')} | "
                 f"{report.ok(g['met'])} |")
    if rel:
        L += ["", f"![goals]({rel[0]})"]
    if "p1" in res:
        L += ["", "### P1 sign throughput (bench/sign_bench.c)", "",
              "Per operation: new EVP_MD_CTX, EVP_DigestSignInit_ex (SHA-256), EVP_DigestSign of 64 bytes, free "
              "(what a TLS server does per handshake). A = the key through the keygate provider (a key "
              "reference, released at load), B = the same key from a PEM file in the default provider, same "
              f"process. {res['params']['p1_runs']} runs of {res['params']['p1_seconds']} s each, ABBA order.", "",
              "| key | keygate ops/s | PEM ops/s | ratio (wall) | ratio (thread CPU) | instructions/op keygate | PEM | ratio |",
              "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for kind, d in res["p1"].items():
            ins = d.get("instr")
            L.append(f"| {kind} | {f(harness.median(d['a_wall']), 0)} | {f(harness.median(d['b_wall']), 0)} | "
                     f"{f(d['ratio_wall'], 3)} | {f(d['ratio_cpu'], 3)} | "
                     + (f"{f(ins['a'], 0)} | {f(ins['b'], 0)} | {f(d['ratio_instr'], 3)} |" if ins else "– | – | – |"))
    if "p2" in res:
        L += ["", "### P2 nginx full handshakes (h2load)", "",
              f"nginx {m['nginx']}, 1 worker, same certificate, session cache and tickets off; "
              f"`h2load --h1 -c {res['params']['p2_conns']} -n {res['params']['p2_conns']}` (one request per "
              f"new connection), {res['params']['p2_runs']} runs per side, alternating.", "",
              "| key | protocol | keygate hs/s | file hs/s | ratio |", "| --- | --- | --- | --- | --- |"]
        for kind, d in res["p2"].items():
            for proto in ("TLSv1.3", "TLSv1.2"):
                x = d[proto]
                L.append(f"| {kind} | {proto} | {f(harness.median(x['keygate']), 0)} | "
                         f"{f(harness.median(x['file']), 0)} | {f(x['ratio'], 3)} |")
    if "p3" in res:
        L += ["", "### P3 one release (`keygate release --ref`, P-256 key)", "",
              "CPU = user+sys of the `keygate release` process (wait4 rusage); the stack runs in other processes, "
              "so none of its time is in it. The simulated TD's quote signing (evidence step) is client CPU here "
              "but is done by the TDX module and quoting enclave on real hardware. Round trips: requests in the "
              "stack's request log (the KBS stand-in's own JWKS/CRL fetches subtracted); `cold` = a new process, "
              f"`cached` = a process that released before (JWKS and CRLs cached), new attestation each time "
              f"(bench/release_bench.c --mode warm).", "",
              "| added RTT | wall ms | CPU ms | CPU w/o wrapping-key gen | … and w/o sim evidence | round trips cold | cached |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
        for lat, d in res["p3"].items():
            s = d["summary"]
            L.append(f"| {lat} ms | {f(s['wall_ms'])} | {f(s['cpu_ms'])} | {f(s['cpu_wo_wrapkey_ms'])} | "
                     f"{f(s['cpu_wo_wrapkey_evidence_ms'])} | {f(s['requests_cold'], 0)} | {f(s['requests_warm'], 1)} |")
        L += ["", "Per-step wall time (ms, medians, `keygate release -v`):", "",
              "| added RTT | " + " | ".join(report.STEP_NAMES) + " |",
              "| --- |" + " --- |" * len(report.STEP_NAMES)]
        for lat, d in res["p3"].items():
            L.append(f"| {lat} ms | " + " | ".join(f(d["summary"]["steps_ms"][s]) for s in report.STEP_NAMES) + " |")
        first = next(iter(res["p3"].values()))
        L += ["", "Requests of one cold release: " + ", ".join(f"{a} {b}" for a, b in first["runs"][0]["request_list"])
              + ". Cached: " + ", ".join(f"{a} {b}" for a, b in first["warm"]["request_list"][:3]) + "."]
    if "p4" in res:
        L += ["", "### P4 many keys in one process, and the Intel-client approach (bench/release_bench.c)", "",
              "keygate: one kg_release_ctx, kg_release_keys (one attestation, then parallel transfers). "
              "Intel-client approach (`--no-reuse --no-cache`): per key a new context, i.e. a fresh wrapping "
              "key, nonce, quote, attest, JWKS, both CRLs and the transfer, one key after the other.", "",
              "| added RTT | 1 key ms | N keys | N keys ms | ratio N÷1 | Intel 1 key ms | Intel ÷ keygate (1) | "
              "Intel M keys ms | keygate M keys ms | Intel ÷ keygate (M) | requests: 1 / N / Intel M |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for lat, d in res["p4"].items():
            w, r = d["wall_ms"], d["requests"]
            L.append(f"| {lat} ms | {f(w['one'])} | {d['keys']} | {f(w['many'])} | {f(d['ratio_many_one'], 2)}× | "
                     f"{f(w['intel_one'])} | {f(d['intel_ratio_one'], 2)}× | {f(w['intel_many'])} (M={d['intel_keys']}) | "
                     f"{f(w['keygate_intel_n'])} | {f(d['intel_ratio_n'], 2)}× | "
                     f"{f(r['one'], 0)} / {f(r['many'], 0)} / {f(r['intel_many'], 0)} |")
    if "p5" in res:
        d = res["p5"]
        L += ["", "### P5 resident memory (bench/rss_bench.c)", "",
              "VmRSS after OpenSSL with its default provider (base), after loading the configuration that adds the "
              "keygate provider, after loading 10 keys (5 P-256, 5 RSA-2048) through it. Baseline: the same "
              "10 keys from PEM files, default provider only.", "",
              f"- keygate provider alone: +{f(d['provider_added_kb'] / 1024, 2)} MiB",
              f"- keygate provider + 10 released keys: +{f(d['keygate_added_kb'] / 1024, 2)} MiB",
              f"- 10 PEM keys in the default provider: +{f(d['plain_added_kb'] / 1024, 2)} MiB "
              f"(so keygate's own share: +{f(d['net_added_kb'] / 1024, 2)} MiB)",
              f"- of keygate's +{f(d['keygate_added_kb'] / 1024, 2)} MiB: shared libraries it pulls in (libcurl and "
              f"Debian's libcurl dependency tree: gnutls via librtmp, krb5, ldap, ssh2, ...) "
              f"+{f(d.get('keygate_libs_kb', 0) / 1024, 2)} MiB; keygate.so, heap, anonymous and locked memory "
              f"(secure heap, keys, private library context) +{f(d.get('keygate_own_kb', 0) / 1024, 2)} MiB"]
    if "p6" in res:
        d = res["p6"]
        n = d["blocks"]
        L += ["", "### P6 nginx startup", "",
              f"Time from starting nginx (1 worker) until it completes a TLS handshake; {n} server blocks, each "
              "with its own P-256 key and certificate, vs 1; keygate key references vs PEM files.", "",
              f"| keys | 1 block ms | {n} blocks ms | ratio |", "| --- | --- | --- | --- |",
              f"| keygate | {f(d['ms']['keygate_1'])} | {f(d['ms'][f'keygate_{n}'])} | {f(d['ratio'], 2)}× |",
              f"| file | {f(d['ms']['file_1'])} | {f(d['ms'][f'file_{n}'])} | {f(d['file_ratio'], 2)}× |"]
    for p in rel[1:]:
        L += ["", f"![{pathlib.Path(p).stem}]({p})"]
    L += ["", "Raw samples: `bench/results.json`."]
    return "\n".join(L) + "\n"


if __name__ == "__main__":
    sys.exit(main())
