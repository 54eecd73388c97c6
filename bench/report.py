# SPDX-License-Identifier: Apache-2.0
"""RESULTS.md (between the perf markers, everything else kept) and the PNG plots."""
import os
import pathlib

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

BEGIN, END = "<!-- perf:begin -->", "<!-- perf:end -->"
STEP_NAMES = ("wrapkey", "nonce", "evidence", "token", "verify", "transfer", "unwrap", "match")


def ok(flag):
    return "**met**" if flag else "**NOT met**"


# the goal table of docs/performance.md (bench.py --headline)
HEADLINE_BEGIN, HEADLINE_END = "<!-- perf-headline:begin -->", "<!-- perf-headline:end -->"


def write_results(path, text, begin=BEGIN, end=END, append=True):
    """Replaces what lies between the markers (or appends the block when append); keeps
    everything else. Returns 1 if the file was written."""
    path = pathlib.Path(path)
    old = path.read_text() if path.exists() else "# keygate benchmark results\n"
    block = f"{begin}\n{text.rstrip()}\n{end}"
    if begin in old and end in old and old.index(begin) < old.index(end):
        new = old[:old.index(begin)] + block + old[old.index(end) + len(end):]
    elif append:
        new = old.rstrip() + "\n\n" + block + "\n"
    else:
        return 0
    path.write_text(new)
    return 1


# ------------------------------------------------------------------ plots

def plot_all(res, plots):
    os.makedirs(plots, exist_ok=True)
    made = []
    if "goals" in res:
        made.append(plot_goals(res["goals"], os.path.join(plots, "goals.png")))
    if "p1" in res:
        made.append(plot_p1(res["p1"], os.path.join(plots, "p1_sign.png")))
    if "p2" in res:
        made.append(plot_p2(res["p2"], os.path.join(plots, "p2_tls.png")))
    if "p3" in res:
        made.append(plot_p3(res["p3"], os.path.join(plots, "p3_steps.png")))
        if any("cache_steps_start_ms" in d["summary"] for d in res["p3"].values()):
            made.append(plot_p3_overlap(res["p3"], os.path.join(plots, "p3_overlap.png")))
    if "p4" in res:
        made.append(plot_p4(res["p4"], os.path.join(plots, "p4_scaling.png")))
    return made


def save(fig, path):
    """Writes a finished figure as PNG and frees it; returns path."""
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_goals(goals, path):
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(goals) + 1.2))
    names = [g["name"] for g in goals]
    vals = [g["score"] for g in goals]
    colors = ["tab:green" if g["met"] else "tab:red" for g in goals]
    ax.barh(names, [v - 0.5 for v in vals], left=0.5, color=colors)
    ax.axvline(1.0, color="black", linestyle="--", linewidth=1)
    ax.invert_yaxis()
    ax.set_xlabel("measured ÷ limit, log scale (≤ 1 meets the goal; for ≥ goals: limit ÷ measured)")
    ax.set_title("keygate performance goals (issue 10)")
    for i, g in enumerate(goals):
        ax.text(vals[i], i, f"  {g['label']}", va="center", fontsize=8)
    ax.set_xscale("log")
    ax.set_xlim(0.5, max(3.0, max(vals) * 4))
    return save(fig, path)


def plot_p1(p1, path):
    fig, ax = plt.subplots(figsize=(6, 3.5))
    kinds = list(p1)
    x = range(len(kinds))
    ax.bar([i - 0.2 for i in x], [p1[k]["ratio_wall"] for k in kinds], 0.4, label="wall-clock ops/s ratio")
    ax.bar([i + 0.2 for i in x], [p1[k]["ratio_cpu"] for k in kinds], 0.4, label="CPU-time ops/s ratio")
    for i, k in enumerate(kinds):
        rr = p1[k]["run_ratios"]
        ax.plot([i - 0.2] * len(rr), rr, "k.", markersize=3)
    ax.axhline(0.97, color="red", linestyle="--", linewidth=1, label="goal 0.97")
    ax.set_xticks(list(x), kinds)
    ax.set_ylim(0.8, 1.1)
    ax.set_ylabel("keygate ÷ PEM (default provider)")
    ax.set_title("P1 EVP_DigestSign throughput")
    ax.legend(fontsize=7, loc="lower right")
    return save(fig, path)


def plot_p2(p2, path):
    fig, ax = plt.subplots(figsize=(6, 3.5))
    labels, vals = [], []
    for kind, d in p2.items():
        for proto in ("TLSv1.3", "TLSv1.2"):
            labels.append(f"{kind}\n{proto}")
            vals.append(d[proto]["ratio"])
    ax.bar(labels, vals, color="tab:blue")
    ax.axhline(0.97, color="red", linestyle="--", linewidth=1, label="goal 0.97")
    ax.set_ylim(0.7, 1.15)
    ax.set_ylabel("handshakes/s keygate ÷ file key")
    ax.set_title("P2 nginx full handshakes (1 worker, h2load)")
    ax.legend(fontsize=7)
    return save(fig, path)


def plot_p3(p3, path):
    fig, ax = plt.subplots(figsize=(7, 3.5))
    lat = sorted(p3, key=float)
    bottom = [0.0] * len(lat)
    for s in STEP_NAMES:
        v = [p3[l]["summary"]["steps_ms"].get(s, 0) for l in lat]
        ax.barh([f"{l} ms added RTT" for l in lat], v, left=bottom, label=s)
        bottom = [b + x for b, x in zip(bottom, v)]
    ax.set_xlabel("wall time per step, ms (median of runs of `keygate release`)")
    ax.set_title("P3 one release: where the time goes")
    ax.legend(fontsize=7, ncol=4, loc="lower right")
    return save(fig, path)


def plot_p3_overlap(p3, path):
    """One release as a time line per added RTT: each step from its start to its end (medians of a
    new process with the verification cache), so that steps run side by side show."""
    lat = sorted((l for l in p3 if "cache_steps_start_ms" in p3[l]["summary"]), key=float)
    fig, axes = plt.subplots(len(lat), 1, figsize=(7, 1.9 * len(lat) + 0.6), squeeze=False)
    for ax, l in zip(axes[:, 0], lat):
        s = p3[l]["summary"]
        names = list(STEP_NAMES)
        starts = [s["cache_steps_start_ms"][n] for n in names]
        durs = [s["cache_steps_ms"][n] for n in names]
        ax.barh(names, durs, left=starts, color=["tab:red" if n == "wrapkey" else "tab:blue" for n in names])
        ax.axvline(s["cache_wall_ms"], color="black", linestyle="--", linewidth=1)
        ax.text(s["cache_wall_ms"], len(names) - 1, " process wall", fontsize=7, va="center")
        ax.invert_yaxis()
        ax.tick_params(axis="y", labelsize=7)
        ax.set_title(f"{l} ms added RTT", fontsize=8)
    axes[-1, 0].set_xlabel("ms after the release began (median start → median start + duration)")
    fig.suptitle("P3 one release: key generation (red) overlaps the nonce", fontsize=9)
    return save(fig, path)


def plot_p4(p4, path):
    fig, ax = plt.subplots(figsize=(7, 3.8))
    for lat, d in sorted(p4.items(), key=lambda kv: float(kv[0])):
        w = d["wall_ms"]
        ax.plot([1, d["intel_keys"], d["keys"]], [w["one"], w["keygate_intel_n"], w["many"]], "o-",
                label=f"keygate, {lat} ms RTT")
        ax.plot([1, d["intel_keys"]], [w["intel_one"], w["intel_many"]], "s--",
                label=f"Intel-client approach, {lat} ms RTT")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("keys released in one process")
    ax.set_ylabel("wall time, ms")
    ax.set_title("P4 many keys: one attestation + parallel keep-alive transfers")
    ax.legend(fontsize=7)
    return save(fig, path)
