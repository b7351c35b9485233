"""Run the benches, keep their JSON lines, and draw them.

    bench/report.py [run] [--quick] [--only NAME,...]   run the benches (root), append each
                                                       one's JSON line to
                                                       bench/results/<date>.jsonl, then plot
                                                       (--quick: every bench's smoke mode,
                                                       results and plots under /tmp)
    bench/report.py plot RESULTS.jsonl [...]            only draw (the last line of each
                                                       bench across the files wins)
    bench/report.py table RESULTS.jsonl [...]           only print the markdown table

Plots go to bench/plots/ (PNG, about 100 KB each), each with the machine the figures came
from in its footer, plus bench/plots/README.md (the captions, the machine, the table).
Needs matplotlib (the `bench` extra); the benches themselves do not.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import benchlib  # noqa: E402

RESULTS = HERE / "results"
PLOTS = HERE / "plots"
# The order they run in: quick and independent first.
BENCHES = ("policy", "kernel_sync", "bgp_convergence", "event_latency", "agent_scale",
           "api_outage")
BENCH_TIMEOUT_S = 3600

# ------------------------------------------------------------------------------ running


def run_benches(names: list[str], quick: bool, out: Path) -> list[dict]:
    out.parent.mkdir(parents=True, exist_ok=True)
    results = []
    for name in names:
        argv = [sys.executable, str(HERE / f"{name}.py"), *(["--quick"] if quick else [])]
        benchlib.log(f"report: running {' '.join(argv[1:])}")
        started = time.monotonic()
        done = subprocess.run(argv, stdout=subprocess.PIPE, text=True, timeout=BENCH_TIMEOUT_S)
        elapsed = time.monotonic() - started
        lines = done.stdout.strip().splitlines()
        for line in lines[:-1]:
            print(line)  # the bench's own table
        if done.returncode != 0 or not lines:
            benchlib.log(f"report: {name} failed (exit {done.returncode}); going on")
            continue
        result = json.loads(lines[-1])
        result.setdefault("bench", name)
        result["quick"] = quick
        result["wall_s"] = round(elapsed, 1)
        with out.open("a") as f:
            f.write(json.dumps(result, separators=(",", ":")) + "\n")
        results.append(result)
        benchlib.log(f"report: {name} done in {elapsed:.0f} s -> {out}")
    return results


def read_results(paths: list[Path]) -> dict[str, dict]:
    latest: dict[str, dict] = {}
    for path in paths:
        for line in path.read_text().splitlines():
            line = line.strip()
            if line.startswith("{"):
                doc = json.loads(line)
                latest[doc.get("bench", "?")] = doc
    return latest


# ------------------------------------------------------------------------------ drawing


def footer(fig, doc: dict, extra: str = "") -> None:
    m = doc.get("machine", {})
    load = ""
    if m.get("loadavg_1m") is not None:
        load = f"; load average {m['loadavg_1m']:.1f} at start"
        if m.get("loadavg_1m_end") is not None:
            load += f", {m['loadavg_1m_end']:.1f} at end"
    width = int(fig.get_figwidth() * 19)  # characters of 7-point text per line
    text = "\n".join(textwrap.fill(part, width) for part in
                     [f"Machine: {benchlib.machine_line(m)}{load}", extra] if part)
    fig.text(0.01, 0.012, text, fontsize=7, color="#444444", ha="left", va="bottom")


def save(fig, name: str) -> Path:
    PLOTS.mkdir(parents=True, exist_ok=True)
    path = PLOTS / name
    fig.savefig(path, dpi=100, pil_kwargs={"optimize": True})
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def fmt(s: dict | None, unit: str = "", digits: int = 2) -> str:
    """'median (min–max)' of a spread."""
    if not s or s.get("median") is None:
        return "–"

    def r(x: float) -> str:
        return f"{x:.{digits}f}".rstrip("0").rstrip(".") if digits else f"{x:.0f}"

    return f"{r(s['median'])}{unit} ({r(s['min'])}–{r(s['max'])})"


def plot_bgp(doc: dict) -> tuple[Path, str]:
    import matplotlib.pyplot as plt

    sp = doc["spread"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 5.2))
    for ax, log in zip(axes, (False, True), strict=True):
        for who, color, label in (("ours", "tab:blue", "bgpd + ExaBGP"),
                                  ("bird", "tab:orange", "BIRD (static protocol)")):
            for i, series in enumerate(doc["series"].get(who, [])):
                if not series:
                    continue
                xs = [max(p[0], 1e-3) if log else p[0] for p in series]
                ys = [p[1] for p in series]
                ax.step(xs, ys, where="post", color=color, alpha=0.8, lw=1.3,
                        label=label if i == 0 else None)
        ax.set_xlabel("seconds since the peer's session reached Established"
                      + (" (log scale)" if log else ""))
        ax.set_ylabel("prefixes in the peer's RIB")
        ax.grid(alpha=0.3)
        if log:
            ax.set_xscale("log")
        ax.legend(loc="lower right", fontsize=8)
    gaps = sorted(next((p[0] for p in sr if p[1] > 0), 0.0)
                  for sr in doc["series"].get("ours", []) if sr)
    if gaps:
        gap = gaps[len(gaps) // 2]
        axes[0].annotate(f"{gap * 1000:.0f} ms from Established\nto ExaBGP's first UPDATE\n(median)",
                         xy=(gap, 0), xytext=(0.42, 0.2), textcoords="axes fraction",
                         fontsize=8, ha="left",
                         arrowprops={"arrowstyle": "->", "color": "#555555"})
    axes[0].set_title("linear time", fontsize=10)
    axes[1].set_title("log time (BIRD's curve is visible)", fontsize=10)
    fig.suptitle(f"BGP convergence, {doc['routes']:,} /32s into a BIRD peer, "
                 f"{doc['runs']} runs each", fontsize=12)
    caption = (f"Transfer (Established → last prefix): ours {fmt(sp['transfer_s'], ' s')}, "
               f"BIRD {fmt(sp['bird_transfer_s'], ' s')}, ratio "
               f"{fmt(sp['transfer_ratio'], '×', 1)}; from process start: ours "
               f"{fmt(sp['ours_s'], ' s')}, BIRD {fmt(sp['bird_s'], ' s')}. "
               f"One change: p99 {fmt(sp['incremental_p99_ms'], ' ms', 1)}.")
    fig.subplots_adjust(bottom=0.2, top=0.87, wspace=0.25)
    footer(fig, doc, caption + "  Median (min–max) over runs.")
    return save(fig, "bgp_convergence.png"), caption


def plot_latency(doc: dict) -> tuple[Path, str]:
    import matplotlib.pyplot as plt

    lat = sorted(doc["latencies_ms"])
    sp = doc["spread"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 5.2))
    bins = 40
    ax1.hist(lat, bins=bins, color="tab:blue", alpha=0.75, label="API write → ToR FIB")
    if doc.get("event_to_rib_ms"):
        ax1.hist(doc["event_to_rib_ms"], bins=bins, color="tab:green", alpha=0.6,
                 label="watch event → FRR bgpd received (ours)")
    if doc.get("rib_to_fib_ms"):
        ax1.hist(doc["rib_to_fib_ms"], bins=bins, color="tab:gray", alpha=0.5,
                 label="FRR received → FIB (FRR)")
    target = doc.get("targets", {}).get("p99_ms")
    for ax in (ax1, ax2):
        if target:
            ax.axvline(target, color="tab:red", ls="--", lw=1, label=f"target p99 {target} ms")
        ax.set_xlabel("milliseconds")
        ax.grid(alpha=0.3)
    ax1.set_ylabel("Services")
    ax1.set_title("histogram", fontsize=10)
    ax1.legend(fontsize=7)
    n = len(lat)
    ax2.plot(lat, [(i + 1) / n for i in range(n)], color="tab:blue", label="write → FIB")
    for key, color, label in (("event_to_rib_ms", "tab:green", "watch event → FRR received"),
                              ("rib_to_fib_ms", "tab:gray", "FRR received → FIB")):
        if doc.get(key):
            vals = sorted(doc[key])
            ax2.plot(vals, [(i + 1) / len(vals) for i in range(len(vals))], color=color,
                     label=label)
    ax2.set_ylabel("fraction of Services")
    ax2.set_title("cumulative distribution", fontsize=10)
    ax2.legend(fontsize=7, loc="lower right")
    fig.suptitle(f"Event to FIB: one more Service with {doc['services']:,} announced, "
                 f"{doc['runs']} runs × {doc['tries']} tries", fontsize=12)
    caption = (f"p50 {fmt(sp['p50_ms'], ' ms', 1)}, p99 {fmt(sp['p99_ms'], ' ms', 1)} "
               f"from the POST returning (median (min–max) of the runs' percentiles). "
               f"Split at the watch event and at FRR's bgpd receiving the prefix: ours "
               f"(event → FRR received) p50 {fmt(sp.get('event_to_rib_p50_ms'), ' ms', 1)}, "
               f"p99 {fmt(sp.get('event_to_rib_p99_ms'), ' ms', 1)}; FRR (received → FIB) "
               f"p50 {fmt(sp.get('rib_to_fib_p50_ms'), ' ms', 1)}. Agent debounce: "
               f"{'default' if doc.get('debounce_s') is None else doc['debounce_s']}.")
    fig.subplots_adjust(bottom=0.2, top=0.87, wspace=0.25)
    footer(fig, doc, caption)
    return save(fig, "event_latency.png"), caption


def plot_kernel(doc: dict) -> tuple[Path, str]:
    import matplotlib.pyplot as plt

    sp = doc["spread"]
    bars = [("bgpd KernelTable\n(empty table)", sp["ours_s"], "tab:blue"),
            ("ip -batch\n(empty table)", sp["ip_batch_s"], "tab:orange"),
            ("bgpd no-op resync\n(all present)", sp["resync_noop_s"], "tab:cyan")]
    fig, ax = plt.subplots(figsize=(8, 5.2))
    xs = range(len(bars))
    med = [b[1]["median"] for b in bars]
    lo = [b[1]["median"] - b[1]["min"] for b in bars]
    hi = [b[1]["max"] - b[1]["median"] for b in bars]
    ax.bar(xs, med, yerr=[lo, hi], capsize=8, color=[b[2] for b in bars], alpha=0.85)
    for x, b in zip(xs, bars, strict=True):
        ax.annotate(f"{b[1]['median']:.2f} s", (x, b[1]["max"]), xytext=(0, 4),
                    textcoords="offset points", ha="center", va="bottom", fontsize=9)
    ax.set_xticks(list(xs), [b[0] for b in bars])
    ax.set_ylabel("seconds (bar: median, whiskers: min–max)")
    ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"Kernel sync: {doc['routes']:,} IPv4 /32 routes, {doc['runs']} runs",
                 fontsize=12)
    caption = (f"Ours {fmt(sp['ours_s'], ' s')}, ip -batch {fmt(sp['ip_batch_s'], ' s')}, "
               f"ratio {fmt(sp['ratio'])}; no-op resync {fmt(sp['resync_noop_s'], ' s')}.")
    fig.subplots_adjust(bottom=0.2, top=0.9)
    footer(fig, doc, caption)
    return save(fig, "kernel_sync.png"), caption


def plot_memory(doc: dict) -> tuple[Path, str]:
    import matplotlib.pyplot as plt

    scales = doc["scales"]
    xs = [s["services"] for s in scales]

    def series(key: str) -> tuple[list, list, list]:
        med = [s[key]["median"] for s in scales]
        return med, [m - s[key]["min"] for m, s in zip(med, scales, strict=True)], \
            [s[key]["max"] - m for m, s in zip(med, scales, strict=True)]

    fig, ax = plt.subplots(figsize=(8.5, 5.2))
    med, lo, hi = series("rss_mb")
    ax.errorbar(xs, med, yerr=[lo, hi], marker="o", capsize=5, color="tab:blue",
                label="RSS after sync (median, min–max)")
    if all("rss_decided_mb" in s for s in scales):
        dmed, dlo, dhi = series("rss_decided_mb")
        ax.errorbar(xs, dmed, yerr=[dlo, dhi], marker="D", capsize=5, color="tab:purple",
                    label="RSS after the first decision that follows")
    bmed, blo, bhi = series("rss_before_mb")
    ax.errorbar(xs, bmed, yerr=[blo, bhi], marker="s", capsize=4, color="tab:gray",
                ls="--", label="RSS before the watchers start (interpreter + imports)")
    target = doc.get("targets", {}).get("rss_mb")
    if target:
        ax.axhline(target, color="tab:red", ls=":", lw=1, label=f"target {target:g} MB")
    ax.set_xlabel(f"Services (+ as many EndpointSlices; {doc['nodes']:,} Nodes, "
                  f"{doc['pods']} Pods)")
    ax.set_ylabel("MB resident")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax2 = ax.twinx()
    smed, slo, shi = series("sync_s")
    ax2.errorbar(xs, smed, yerr=[slo, shi], marker="^", capsize=4, color="tab:green",
                 alpha=0.7, label="initial sync (s, right axis)")
    ax2.set_ylabel("seconds to sync", color="tab:green")
    ax2.set_ylim(bottom=0)
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, fontsize=8, loc="center left", bbox_to_anchor=(0.01, 0.45))
    fig.suptitle(f"Agent memory against Services (watchers and policy, {doc['runs']} fresh "
                 "processes per point)", fontsize=12)
    sp = doc["spread"]
    caption = (f"At {doc['services']:,} Services: RSS {fmt(sp['rss_mb'], ' MB', 1)}"
               + (f", {fmt(sp['rss_decided_mb'], ' MB', 1)} once it has decided"
                  if "rss_decided_mb" in sp else "")
               + f", before sync {fmt(sp['rss_before_mb'], ' MB', 1)}, sync "
               f"{fmt(sp['sync_s'], ' s')}.")
    fig.subplots_adjust(bottom=0.2, top=0.9, right=0.88)
    footer(fig, doc, caption)
    return save(fig, "agent_memory.png"), caption


PLOTTERS = {"bgp_convergence": plot_bgp, "event_latency": plot_latency,
            "kernel_sync": plot_kernel, "agent_scale": plot_memory}

# ------------------------------------------------------------------------------ the table


def table(latest: dict[str, dict]) -> str:
    """The README's benchmark table: medians (min–max) beside baselines and targets."""
    rows = ["| bench | measures | median (min–max) | baseline / target |", "|---|---|---|---|"]
    d = latest.get("policy")
    if d:
        s = d["spread"]
        rows.append(
            f"| `bench/policy.py` | decision at {d['services']:,} Services (¼ eTP=Local), "
            f"{d['endpointslices']:,} EndpointSlices, {d['pods']} pods; {d['runs']} fresh "
            f"processes × {d['decisions_per_run']} decisions | full {fmt(s['full_ms'], ' ms', 0)}, "
            f"one change {fmt(s['incremental_ms'], ' ms', 1)}, a process's first "
            f"{fmt(s['cold_full_ms'], ' ms', 0)}"
            + (f", a config reload {fmt(s['reload_full_ms'], ' ms', 0)}"
               if "reload_full_ms" in s else "")
            + (f" ({fmt(s['reload_changed_full_ms'], ' ms', 0)} when it changes what Services "
               "read)" if "reload_changed_full_ms" in s else "")
            + f" (CPython's default GC: full "
            f"{fmt(s['full_ms_default_gc'], ' ms', 0)}, first "
            f"{fmt(s['cold_full_ms_default_gc'], ' ms', 0)}) | targets ≤ 100 ms, ≤ 2 ms, "
            f"≤ 500 ms |")
    d = latest.get("kernel_sync")
    if d:
        s = d["spread"]
        rows.append(
            f"| `bench/kernel_sync.py` | {d['routes']:,} /32 routes into an empty table, "
            f"{d['runs']} runs | {fmt(s['ours_s'], ' s')}; no-op resync "
            f"{fmt(s['resync_noop_s'], ' s')} | `ip -batch` {fmt(s['ip_batch_s'], ' s')} in the "
            f"same runs (ratio {fmt(s['ratio'])}) |")
    d = latest.get("bgp_convergence")
    if d:
        s = d["spread"]
        rows.append(
            f"| `bench/bgp_convergence.py` | {d['routes']:,} /32s into a BIRD peer's RIB, "
            f"{d['runs']} runs each | Established → last prefix "
            f"{fmt(s['transfer_s'], ' s')} (ratio {fmt(s['transfer_ratio'], '×', 1)}); from "
            f"process start {fmt(s['ours_s'], ' s')}; one change p99 "
            f"{fmt(s['incremental_p99_ms'], ' ms', 1)}; ExaBGP RSS "
            f"{fmt(s['speaker_rss_mb'], ' MB', 0)} | BIRD from a static protocol (connect "
            f"delay at its 1 s floor): {fmt(s['bird_transfer_s'], ' s')} Established → last, "
            f"{fmt(s['bird_s'], ' s')} from start; targets ratio ≤ 1.5 (goal 1.0), "
            f"p99 ≤ 20 ms, RSS ≤ 150 MB |")
    d = latest.get("agent_scale")
    if d:
        s = d["spread"]
        rows.append(
            f"| `bench/agent_scale.py` | watchers syncing {d['nodes']:,} Nodes, "
            f"{d['services']:,} Services, {d['endpointslices']:,} EndpointSlices, "
            f"{d['pods']} Pods; {d['runs']} fresh processes | sync {fmt(s['sync_s'], ' s')}, "
            f"RSS {fmt(s['rss_mb'], ' MB', 0)} (before the watchers start: "
            f"{fmt(s['rss_before_mb'], ' MB', 0)})"
            + (f"; after the first decision that follows {fmt(s['rss_decided_mb'], ' MB', 0)}"
               if "rss_decided_mb" in s else "")
            + " | targets ≤ 15 s, ≤ 60 MB (after sync) |")
    d = latest.get("event_latency")
    if d:
        s = d["spread"]
        rows.append(
            f"| `bench/event_latency.py` | with {d['services']:,} Services announced, one "
            f"more: API write returning → /32 in the FRR peer's kernel FIB; {d['runs']} runs "
            f"× {d['tries']} | p50 {fmt(s['p50_ms'], ' ms', 0)}, p99 "
            f"{fmt(s['p99_ms'], ' ms', 0)}; split: watch event → FRR's RIB (ours) p50 "
            f"{fmt(s.get('event_to_rib_p50_ms'), ' ms', 0)}, p99 "
            f"{fmt(s.get('event_to_rib_p99_ms'), ' ms', 0)}; FRR's RIB → FIB p50 "
            f"{fmt(s.get('rib_to_fib_p50_ms'), ' ms', 0)} | target p99 ≤ 100 ms |")
    d = latest.get("api_outage")
    if d:
        s = d["spread"]
        rows.append(
            f"| `bench/api_outage.py` | API server down {d['outage_s_configured']:g} s, "
            f"{d['runs']} runs: API server answering again → agent `/readyz` ok | "
            f"{fmt(s['ready_after_api_s'], ' s', 1)} (the agent noticed the outage in "
            f"{d.get('noticed_runs', '?')} of {d['runs']} runs, after "
            f"{fmt(s.get('detect_s'), ' s', 0)}) | target ≤ 35 s |")
    rows.append("")
    rows.append(machines(latest))
    return "\n".join(rows)


def machines(latest: dict[str, dict]) -> str:
    """One line for the machine, then when and on what code each bench ran."""
    docs = [x for x in latest.values() if x.get("machine")]
    if not docs:
        return ""
    m = docs[0]["machine"]
    head = (f"Measured on {m.get('cores')} cores ({m.get('cpu')}), Linux {m.get('kernel')}, "
            f"{m.get('memory_gb')} GB, Python {m.get('python')}; shared with other work while "
            "measuring (1-minute load average at start → end): ")
    parts = [f"{x['bench']} {x['machine'].get('date', '?')[:16]}, bgpd "
             f"{x['machine'].get('code', '?')}, load {x['machine'].get('loadavg_1m', 0):.1f} → "
             f"{x['machine'].get('loadavg_1m_end', 0):.1f}" for x in docs]
    return head + "; ".join(parts) + "."


def write_readme(latest: dict[str, dict], captions: dict[str, tuple[Path, str]],
                 sources: list[Path]) -> Path:
    lines = ["# Benchmark plots", "",
             "Drawn by `bench/report.py` from "
             + ", ".join(f"`{p.relative_to(HERE.parent) if p.is_relative_to(HERE.parent) else p}`"
                         for p in sources) + ".",
             "", machines(latest), "",
             "Every figure is min / median / max over repeated runs; the machine was shared "
             "with other work while measuring (each plot's footer gives the load average).",
             ""]
    titles = {"bgp_convergence": "BGP convergence against BIRD",
              "event_latency": "Event to FIB latency",
              "kernel_sync": "Kernel sync against `ip -batch`",
              "agent_scale": "Agent memory against Services"}
    for name, (path, caption) in captions.items():
        lines += [f"## {titles.get(name, name)}", "", f"![{titles.get(name, name)}]({path.name})",
                  "", caption, ""]
    lines += ["## Table", "", table(latest), "",
              "## Reproducing", "",
              "As root, with matplotlib installed: `.venv/bin/python bench/report.py` runs "
              "every bench (about 45 minutes on a shared 2-core machine, most of it "
              "`agent_scale` loading 45,000 objects into the API server) and redraws this "
              "folder; `--quick` is a ~3-minute smoke run (results and plots under /tmp); "
              "`plot RESULTS.jsonl` only redraws; `run --only NAME --append RESULTS.jsonl` "
              "re-runs one bench into an existing results file.", "",
              "Notes on method: the BGP bench watches the peer through one long-lived "
              "connection to BIRD's control socket (no process per poll), stamps Established "
              "and every route count the same way for both speakers, and during BIRD runs "
              "also polls the BIRD speaker's control socket, because BIRD 2.0.12 otherwise "
              "often holds its last UPDATE ~3 s (`--no-wake-bird` shows it). In the event "
              "bench about 60 ms of every sample is FRR's own: bgpd's route-processing work "
              "queue holds 50 ms and zebra's RIB queue 10 ms before the kernel sees the "
              "route.", ""]
    out = PLOTS / "README.md"
    out.write_text("\n".join(lines))
    return out


def plot_all(paths: list[Path]) -> None:
    latest = read_results(paths)
    captions = {}
    for name, plotter in PLOTTERS.items():
        if name in latest:
            try:
                captions[name] = plotter(latest[name])
                benchlib.log(f"report: {captions[name][0]}")
            except (KeyError, TypeError, ValueError) as exc:
                benchlib.log(f"report: cannot plot {name}: {type(exc).__name__}: {exc}")
    readme = write_readme(latest, captions, paths)
    benchlib.log(f"report: {readme}")
    print(table(latest))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", nargs="?", default="run", choices=("run", "plot", "table"))
    parser.add_argument("results", nargs="*", type=Path)
    parser.add_argument("--quick", action="store_true", help="every bench's --quick")
    parser.add_argument("--only", help="comma-separated bench names (default: all)")
    parser.add_argument("--append", type=Path, metavar="RESULTS",
                        help="run: append to this results file (and plot all of it) instead "
                        "of starting a new one, e.g. to re-run one bench")
    parser.add_argument("--plots", type=Path, help="where the PNGs and README.md go "
                        "(default bench/plots; with --quick /tmp/bgpd-bench-quick/plots, its results beside)")
    args = parser.parse_args()
    global PLOTS
    if args.plots:
        PLOTS = args.plots.resolve()
    elif args.quick:
        PLOTS = Path("/tmp/bgpd-bench-quick/plots")
    if args.command == "run":
        names = args.only.split(",") if args.only else list(BENCHES)
        unknown = set(names) - set(BENCHES)
        if unknown:
            parser.error(f"unknown benches: {', '.join(sorted(unknown))}")
        stamp = time.strftime("%Y-%m-%d-%H%M")
        # Smoke runs stay out of the tree: their figures are not worth keeping.
        folder = PLOTS.parent / "results" if args.quick else RESULTS
        out = args.append or folder / f"{stamp}{'-quick' if args.quick else ''}.jsonl"
        run_benches(names, args.quick, out)
        plot_all([out])
    elif args.command == "plot":
        if not args.results:
            parser.error("plot needs results files")
        plot_all(args.results)
    else:
        if not args.results:
            parser.error("table needs results files")
        print(table(read_results(args.results)))


if __name__ == "__main__":
    main()
