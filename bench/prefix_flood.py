"""Benchmark: a ToR leaks a full table. What does it cost the agent's speaker?

A BIRD peer in one namespace announces N IPv4 /32 prefixes (1,000,000 by default, about a
full table) to the real speaker (bgpd's Speaker driving ExaBGP) in another, whose import
rules allow everything but store at most ``import.max_prefixes`` (10,000, the default).
Measured from the session's Established to the last prefix counted (stored + refused =
N): the RSS growth and CPU time of the agent's process and of ExaBGP, beside a baseline
run in which the peer sends only ``max_prefixes`` prefixes (no flood). Target (issue 12):
RSS growth under 50 MB.

Prints min / median / max over ``--runs`` (default 3) and one JSON line last: the medians
at the top level (``flood_rss_growth_mb``, ``baseline_rss_growth_mb``, ``flood_cpu_s``,
``baseline_cpu_s``, ``exabgp_rss_mb``, ``flood_s``), the rest under ``spread``.

Usage: bench/prefix_flood.py [--prefixes N] [--runs R] [--quick]   (root)
"""

from __future__ import annotations

import argparse
import gc
import ipaddress
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import benchlib  # noqa: E402

from bgpd.config import ImportConfig, PrefixRule  # noqa: E402
from tests.integration import routers  # noqa: E402
from tests.integration.speaker_lab import bgp_config, peers, speaker  # noqa: E402

TOR_AS = 65000
MAX_PREFIXES = 10_000
FIRST = int(ipaddress.IPv4Address("100.64.0.0"))
SESSION_TIMEOUT_S = 60
FLOOD_TIMEOUT_S = 1800


def bird_conf(count: int) -> str:
    lines = [f"router id {routers.TOR_V4};", "protocol device {}",
             "protocol static flood { ipv4;"]
    lines += [f"  route {ipaddress.IPv4Address(FIRST + i)}/32 blackhole;" for i in range(count)]
    lines += ["}",
              f"protocol bgp n1 {{ local {routers.TOR_V4} as {TOR_AS}; "
              f"neighbor {routers.NODE_V4} as 64512; connect delay time 1; "
              "ipv4 { import none; export where proto = \"flood\"; }; }"]
    return "\n".join(lines) + "\n"


def cpu_self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def one_run(count: int) -> dict[str, float]:
    policy = ImportConfig(enabled=True, allow=(PrefixRule(ipaddress.ip_network("0.0.0.0/0"),
                                                          0, 32),), max_prefixes=MAX_PREFIXES)
    gc.collect()
    with routers.tor_and_node("flood") as (tor, node):
        rest = benchlib.rss_mb()
        with speaker(bgp_config(peers(TOR_AS)[0]), node, import_config=policy) as sp, \
                routers.bird(tor, bird_conf(count)):
            routers.wait_for(lambda: sp.peers()[0].state == "established", SESSION_TIMEOUT_S,
                             "the session")
            started, cpu0 = time.monotonic(), cpu_self()
            pid = sp.exabgp_pid()
            exa_cpu0 = benchlib.cpu_seconds(pid)
            peak = rest

            def counted() -> bool:
                nonlocal peak
                peak = max(peak, benchlib.rss_mb())
                st = sp.peers()[0]
                return st.prefixes_received + st.routes_refused >= count

            routers.wait_for(counted, FLOOD_TIMEOUT_S, f"{count} prefixes counted", 0.2)
            took = time.monotonic() - started
            stored = sp.peers()[0].prefixes_received
            assert stored == min(count, MAX_PREFIXES), stored
            return {"s": took, "rss_growth_mb": max(peak, benchlib.rss_mb()) - rest,
                    "cpu_s": cpu_self() - cpu0,
                    "exabgp_cpu_s": benchlib.cpu_seconds(pid) - exa_cpu0,
                    "exabgp_rss_mb": benchlib.rss_mb(pid)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prefixes", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="100,000 prefixes, one run")
    args = parser.parse_args()
    if args.quick:
        args.prefixes, args.runs = 100_000, 1
    tempfile.tempdir = tempfile.mkdtemp(prefix="bgpd-flood-")  # the speaker's work folder
    runs: dict[str, list[float]] = {}
    for run in range(args.runs):
        for label, count in (("baseline", MAX_PREFIXES), ("flood", args.prefixes)):
            result = one_run(count)
            print(f"run {run + 1} {label}: {count} prefixes in {result['s']:.1f} s, agent "
                  f"RSS +{result['rss_growth_mb']:.1f} MB, agent CPU {result['cpu_s']:.1f} s, "
                  f"ExaBGP CPU {result['exabgp_cpu_s']:.1f} s, RSS "
                  f"{result['exabgp_rss_mb']:.0f} MB", file=sys.stderr, flush=True)
            for key, value in result.items():
                runs.setdefault(f"{label}_{key}", []).append(value)
    Path(tempfile.tempdir).rmdir()
    spreads = {name: benchlib.spread(values) for name, values in runs.items()}
    top = benchlib.medians(spreads)
    benchlib.table("prefix flood (ToR leaking a full table)", spreads)
    benchlib.emit({
        "prefixes": args.prefixes, "max_prefixes": MAX_PREFIXES, "runs": args.runs,
        "flood_s": top["flood_s"],
        "flood_rss_growth_mb": top["flood_rss_growth_mb"],
        "baseline_rss_growth_mb": top["baseline_rss_growth_mb"],
        "flood_cpu_s": top["flood_cpu_s"], "baseline_cpu_s": top["baseline_cpu_s"],
        "exabgp_rss_mb": top["flood_exabgp_rss_mb"],
        "exabgp_cpu_s": top["flood_exabgp_cpu_s"],
        "target_rss_growth_mb": 50, "spread": spreads,
    })


if __name__ == "__main__":
    main()
