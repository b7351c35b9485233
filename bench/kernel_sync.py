"""Benchmark: KernelTable installing N IPv4 /32 routes vs `ip -batch`, repeated.

Each run gives each tool a fresh namespace with a veth whose peer (the next hop) sits in a
second namespace; both install the same N routes into the same table with the same proto
(runs alternate which tool goes first). ``ours_s``: a KernelTable from construction to the
end of its first sync into the empty table; ``resync_noop_s``: a second sync of the same
routes (nothing to write); ``ratio``: ours / ``ip -batch`` in the same run. Prints a table
of min / median / max over ``--runs`` (default 5), then one JSON line whose top-level
figures are the medians (``spread`` holds the rest).

Usage: bench/kernel_sync.py [--routes N] [--runs R] [--quick]   (root; namespaces are
always removed)
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import secrets
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import benchlib  # noqa: E402

from bgpd.kernel import DEFAULT_PROTO, KernelTable  # noqa: E402
from bgpd.model import KernelRoute, NextHop  # noqa: E402

TABLE = 100
GATEWAY = "10.0.0.2"
FIRST_ROUTE = int(ipaddress.IPv4Address("10.128.0.0"))
# Installing 100k routes takes seconds; anything near this means the kernel is stuck.
COMMAND_TIMEOUT_S = 300


def sh(*argv: str, stdin=None) -> None:
    subprocess.run(argv, check=True, stdin=stdin, timeout=COMMAND_TIMEOUT_S)


def namespace_pair(stack: ExitStack, label: str) -> str:
    """Namespace ``bench`` with veth ``vb0`` (10.0.0.1/24) to a peer namespace holding
    the next hop 10.0.0.2; returns the bench namespace's name."""
    tag = f"bgpdtest-bench-{label}-{os.getpid()}-{secrets.token_hex(2)}"
    ours, peer = f"{tag}-a", f"{tag}-b"
    for name in (ours, peer):
        sh("ip", "netns", "add", name)
        stack.callback(subprocess.run, ["ip", "netns", "del", name], check=False)
    sh("ip", "-n", ours, "link", "add", "vb0", "type", "veth", "peer", "name", "vb1", "netns", peer)
    sh("ip", "-n", ours, "addr", "add", "10.0.0.1/24", "dev", "vb0")
    sh("ip", "-n", peer, "addr", "add", GATEWAY + "/24", "dev", "vb1")
    for ns, dev in ((ours, "vb0"), (peer, "vb1"), (ours, "lo")):
        sh("ip", "-n", ns, "link", "set", dev, "up")
    return ours


def prefixes(n: int) -> list[ipaddress.IPv4Network]:
    return [ipaddress.IPv4Network((FIRST_ROUTE + i, 32)) for i in range(n)]


def bench_ours(netns: str, nets: list) -> tuple[float, float]:
    routes = [KernelRoute(prefix=p, nexthops=(NextHop(gateway=GATEWAY),)) for p in nets]
    start = time.perf_counter()
    table = KernelTable(netns=netns, table=TABLE, proto=DEFAULT_PROTO)
    result = table.sync(routes)
    ours = time.perf_counter() - start
    if result.added != len(routes) or not result.ok:
        raise SystemExit(
            f"adapter did not install everything: {result.added} {result.failures[:3]}"
        )
    start = time.perf_counter()
    again = table.sync(routes)
    noop = time.perf_counter() - start
    if again.writes or again.unchanged != len(routes):
        raise SystemExit(f"no-op resync wrote {again.writes} messages")
    table.close()
    return ours, noop


def bench_ip_batch(netns: str, nets: list) -> float:
    with tempfile.TemporaryFile("w+") as script:
        for p in nets:
            script.write(f"route add {p} via {GATEWAY} table {TABLE} proto {DEFAULT_PROTO}\n")
        script.flush()
        script.seek(0)
        start = time.perf_counter()
        sh("ip", "-n", netns, "-batch", "-", stdin=script)
        return time.perf_counter() - start


def count_routes(netns: str) -> int:
    out = subprocess.run(
        ["ip", "-n", netns, "route", "show", "table", str(TABLE), "proto", str(DEFAULT_PROTO)],
        check=True,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
    ).stdout
    return out.count("\n")


def one_run(nets: list, ours_first: bool) -> dict:
    n = len(nets)
    with ExitStack() as stack:
        ours_ns = namespace_pair(stack, "ours")
        batch_ns = namespace_pair(stack, "ipb")
        if ours_first:
            ours, noop = bench_ours(ours_ns, nets)
            ip_batch = bench_ip_batch(batch_ns, nets)
        else:
            ip_batch = bench_ip_batch(batch_ns, nets)
            ours, noop = bench_ours(ours_ns, nets)
        for ns in (ours_ns, batch_ns):
            if count_routes(ns) != n:
                raise SystemExit(f"{ns}: wrong route count")
    return {"ours_s": ours, "ip_batch_s": ip_batch, "ratio": ours / ip_batch,
            "resync_noop_s": noop}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--routes", type=int)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="smoke run: 10,000 routes, 3 runs")
    args = parser.parse_args()
    n = args.routes or (10_000 if args.quick else 100_000)
    runs = min(args.runs, 3) if args.quick else args.runs
    machine = benchlib.machine()
    nets = prefixes(n)
    results = []
    for r in range(runs):
        results.append(one_run(nets, ours_first=r % 2 == 1))
        benchlib.log(f"kernel_sync run {r + 1}/{runs}: ours {results[-1]['ours_s']:.3f} s, "
                     f"ip -batch {results[-1]['ip_batch_s']:.3f} s")
    spreads = {k: benchlib.spread([x[k] for x in results]) for k in results[0]}
    benchlib.table(f"kernel_sync: {n} routes, {runs} runs", spreads)
    benchlib.emit({
        "bench": "kernel_sync", "routes": n, "runs": runs,
        **benchlib.medians(spreads),
        "spread": spreads,
        "machine": machine,
    })


if __name__ == "__main__":
    main()
