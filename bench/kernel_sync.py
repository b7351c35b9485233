"""Benchmark: KernelTable installing N IPv4 /32 routes vs `ip -batch`, in one run.

Each tool gets a fresh namespace with a veth whose peer (the next hop) sits in a second
namespace; both install the same N routes into the same table with the same proto. Prints
exactly one JSON line:

    {"routes": N, "ours_s": ..., "ip_batch_s": ..., "ratio": ..., "resync_noop_s": ...}

Usage: bench/kernel_sync.py [--routes N]   (root; namespaces are always removed)
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--routes", type=int, default=100_000)
    args = parser.parse_args()
    nets = prefixes(args.routes)
    with ExitStack() as stack:
        ours_ns = namespace_pair(stack, "ours")
        batch_ns = namespace_pair(stack, "ipb")
        ip_batch = bench_ip_batch(batch_ns, nets)
        ours, noop = bench_ours(ours_ns, nets)
        for ns in (ours_ns, batch_ns):
            if count_routes(ns) != args.routes:
                raise SystemExit(f"{ns}: wrong route count")
    print(
        json.dumps(
            {
                "routes": args.routes,
                "ours_s": round(ours, 3),
                "ip_batch_s": round(ip_batch, 3),
                "ratio": round(ours / ip_batch, 3),
                "resync_noop_s": round(noop, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
