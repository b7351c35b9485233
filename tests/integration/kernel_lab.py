"""Shared set-up for the kernel adapter's integration tests (not a test module)."""

from __future__ import annotations

import ipaddress
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from bgpd.kernel import DEFAULT_PROTO
from bgpd.model import KernelRoute, NextHop
from tests.netns import NetNS, run, veth

# Repairs are promised within one second; polls give the kernel and thread that long.
REPAIR_DEADLINE_S = 1.0
POLL_INTERVAL_S = 0.02


@contextmanager
def node() -> Iterator[str]:
    """A namespace ``node`` with veth ``v0`` (10.0.0.1/24, 10.0.1.1/24, fd00::1/64) whose
    peer namespace holds the next hops; both are removed whatever happens."""
    with NetNS("kern") as ns, NetNS("peer") as peer:
        veth(ns, "v0", peer, "p0")
        # Servers keep their IPv6 addresses over a link bounce; the default flushes them,
        # which would (rightly) leave IPv6 gateways unreachable after the bounce.
        run(ns, "sysctl", "-qw", "net.ipv6.conf.v0.keep_addr_on_down=1")
        for addr in ("10.0.0.1/24", "10.0.1.1/24"):
            run(ns, "ip", "addr", "add", addr, "dev", "v0")
        run(ns, "ip", "-6", "addr", "add", "fd00::1/64", "dev", "v0", "nodad")
        yield ns.name


def route(prefix: str, *nexthops: NextHop, kind: str = "unicast", metric=None) -> KernelRoute:
    return KernelRoute(ipaddress.ip_network(prefix), tuple(sorted(nexthops)), kind, metric)


def via(gateway: str, device: str | None = None, weight: int = 1) -> NextHop:
    return NextHop(gateway=gateway, device=device, weight=weight)


def all_routes(ns: str) -> list[dict]:
    """Every route of every table and family, as ``ip -j`` shows it."""
    out = []
    for family in ("-4", "-6"):
        out += json.loads(run(ns, "ip", "-j", family, "route", "show", "table", "all") or "[]")
    return out


def owned_prefixes(ns: str, table: str = "main") -> set[str]:
    out = set()
    for family in ("-4", "-6"):
        text = run(
            ns, "ip", "-j", family, "route", "show", "table", table, "proto", str(DEFAULT_PROTO)
        )
        out |= {r["dst"] for r in json.loads(text or "[]")}
    return out


def foreign(routes: list[dict]) -> list[dict]:
    return sorted(
        (r for r in routes if r.get("protocol") not in (str(DEFAULT_PROTO), DEFAULT_PROTO)),
        key=json.dumps,
    )


def wait_for(check: Callable[[], bool], deadline_s: float = REPAIR_DEADLINE_S) -> float:
    """Poll ``check`` until true; return the seconds it took, or fail at the deadline."""
    start = time.monotonic()
    while True:
        if check():
            return time.monotonic() - start
        if time.monotonic() - start > deadline_s:
            raise AssertionError(f"condition not met within {deadline_s} s")
        time.sleep(POLL_INTERVAL_S)
