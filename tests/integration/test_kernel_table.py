"""KernelTable against the real kernel, in throw-away network namespaces."""

from __future__ import annotations

import errno
import select
import socket

import pytest
from pyroute2.netlink.rtnl import RTM_DELROUTE, RTM_NEWROUTE, RTMGRP_IPV4_ROUTE, RTMGRP_IPV6_ROUTE

from bgpd.kernel import DEFAULT_PROTO, KernelError, KernelTable
from bgpd.kernel.netlink import NetlinkChannel, iter_messages
from tests.integration.kernel_lab import (
    all_routes,
    foreign,
    node,
    owned_prefixes,
    route,
    via,
)
from tests.netns import batch, run

pytestmark = pytest.mark.integration

CASES = {
    "an IPv4 route via a gateway moves to another gateway": (
        [route("10.9.0.0/24", via("10.0.0.2"))],
        [route("10.9.0.0/24", via("10.0.1.2"))],
    ),
    "an IPv4 device route gets a gateway": (
        [route("10.9.1.0/24", via(None, "v0"))],
        [route("10.9.1.0/24", via("10.0.0.2", "v0"))],
    ),
    "an IPv4 ECMP route changes its weights": (
        [route("10.9.2.0/24", via("10.0.0.2", weight=2), via("10.0.1.2"))],
        [route("10.9.2.0/24", via("10.0.0.2"), via("10.0.1.2", weight=5))],
    ),
    "an IPv4 blackhole becomes unicast": (
        [route("10.9.3.0/24", kind="blackhole")],
        [route("10.9.3.0/24", via("10.0.0.2"))],
    ),
    "an IPv6 route via a gateway moves to another gateway": (
        [route("fd09::/64", via("fd00::2"))],
        [route("fd09::/64", via("fd00::3"))],
    ),
    "an IPv6 ECMP route changes its weights": (
        [route("fd09:1::/64", via("fd00::2", weight=3), via("fd00::3"))],
        [route("fd09:1::/64", via("fd00::2"), via("fd00::3", weight=4))],
    ),
    "an IPv6 blackhole with a metric becomes unicast": (
        [route("fd09:2::/64", kind="blackhole", metric=50)],
        [route("fd09:2::/64", via("fd00::2"), metric=50)],
    ),
}


@pytest.mark.parametrize(("first", "second"), CASES.values(), ids=CASES.keys())
def test_add_replace_delete_and_resync_writes_nothing(first, second) -> None:
    with node() as ns:
        table = KernelTable(netns=ns)
        try:
            added = table.sync(first)
            assert (added.added, added.ok) == (len(first), True), added
            assert owned_prefixes(ns) == {str(r.prefix) for r in first}
            again = table.sync(first)
            assert (again.writes, again.unchanged) == (0, len(first))

            replaced = table.sync(second)
            assert (replaced.replaced, replaced.ok) == (len(second), True), replaced
            assert table.sync(second).writes == 0
            assert sorted(table.owned()) == sorted(_expected(table, second))

            deleted = table.sync([])
            assert deleted.deleted == len(second)
            assert owned_prefixes(ns) == set()
        finally:
            table.close()


def _expected(table: KernelTable, routes):
    # The kernel resolves a gateway-only next hop to its device (here always v0) and
    # reports the family's default metric.
    out = []
    for r in routes:
        nhs = tuple(
            sorted(
                type(n)(n.gateway, n.device or "v0", n.weight if len(r.nexthops) > 1 else 1)
                for n in r.nexthops
            )
        )
        metric = r.metric or (0 if r.prefix.version == 4 else 1024)
        out.append(type(r)(r.prefix, nhs, r.kind, metric))
    return out


def test_bad_input_is_a_per_route_failure_and_the_rest_applies() -> None:
    good = [route("10.9.0.0/24", via("10.0.0.2")), route("fd09::/64", via("fd00::2"))]
    unreachable = route("10.9.1.0/24", via("10.77.0.1"))
    no_device = route("10.9.2.0/24", via(None, "nosuchdev"))
    with node() as ns:
        table = KernelTable(netns=ns)
        try:
            result = table.sync([unreachable, *good, no_device])
            assert result.added == 2
            failed = {f.route: f.errno for f in result.failures}
            assert failed == {unreachable: errno.ENETUNREACH, no_device: errno.ENODEV}
            assert all(f.message for f in result.failures)
            assert owned_prefixes(ns) == {"10.9.0.0/24", "fd09::/64"}
        finally:
            table.close()


def test_foreign_routes_are_left_exactly_as_they_were() -> None:
    ours = [route(f"10.20.{i}.0/24", via("10.0.0.2")) for i in range(200)]
    conflicting = [route(f"10.21.{i}.0/24", via("10.0.0.2")) for i in range(50)]
    lines = []
    for i in range(1000):
        proto = ("static", "boot", "bird", "zebra", "186")[i % 5]
        if i < 200:  # same prefix as ours, other metric: may coexist
            lines.append(f"route add 10.20.{i}.0/24 via 10.0.1.2 metric 10 proto {proto}")
        elif i < 250:  # exactly our key: a conflict to report, not to fight
            lines.append(f"route add 10.21.{i - 200}.0/24 via 10.0.1.2 proto {proto}")
        elif i < 500:
            lines.append(f"route add fd30:{i}::/64 via fd00::3 proto {proto}")
        else:
            lines.append(f"route add 10.{30 + i // 250}.{i % 250}.0/24 dev v0 proto {proto}")
    with node() as ns:
        batch(ns, lines)
        before = foreign(all_routes(ns))
        table = KernelTable(netns=ns)
        try:
            result = table.sync(ours + conflicting)
            assert result.added == len(ours)
            assert {c.route for c in result.conflicts} == set(conflicting)
            assert all(c.errno == errno.EEXIST for c in result.conflicts)
            assert foreign(all_routes(ns)) == before
            assert table.sync([]).deleted == len(ours)
            assert foreign(all_routes(ns)) == before
        finally:
            table.close(remove=True)
        assert foreign(all_routes(ns)) == before


def test_a_restarted_table_adopts_routes_without_touching_them() -> None:
    routes = [route(f"10.40.{i}.0/24", via("10.0.0.2")) for i in range(100)]
    routes += [route("fd40::/64", via("fd00::2", weight=2), via("fd00::3"))]
    with node() as ns:
        first = KernelTable(netns=ns, table=100)
        assert first.sync(routes).added == len(routes)
        first.close()  # a clean shutdown leaves them in place
        assert len(owned_prefixes(ns, "100")) == len(routes)

        watcher = NetlinkChannel(ns, groups=RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_ROUTE)
        try:
            second = KernelTable(netns=ns, table=100)
            result = second.sync(routes)
            assert (result.writes, result.unchanged) == (0, len(routes))
            assert len(second.owned()) == len(routes)
            run(ns, "ip", "route", "add", "10.99.0.0/24", "via", "10.0.0.2", "table", "100")
            seen = _route_events(watcher, until_prefix=bytes([10, 99, 0, 0]))
            assert seen == [RTM_NEWROUTE], "the adapter wrote to the kernel on adoption"
            second.close(remove=True)
            assert owned_prefixes(ns, "100") == set()
        finally:
            watcher.close()


def _route_events(channel: NetlinkChannel, until_prefix: bytes) -> list[int]:
    """Route message types seen up to (and including) the marker route's addition."""
    seen = []
    while select.select([channel.sock], [], [], 5)[0]:
        buf = channel.sock.recv(1 << 20, socket.MSG_DONTWAIT)
        for off, _, mtype in iter_messages(buf):
            if mtype in (RTM_NEWROUTE, RTM_DELROUTE):
                seen.append(mtype)
                if buf.find(until_prefix, off) > 0:
                    return seen
    raise AssertionError("marker route never seen")


def test_a_missing_namespace_is_a_kernel_error() -> None:
    with pytest.raises(KernelError):
        KernelTable(netns="bgpdtest-does-not-exist")


def test_reserved_proto_is_refused() -> None:
    with pytest.raises(KernelError):
        KernelTable(proto=2)
    assert DEFAULT_PROTO not in (2, 11, 12, 18, 42, 99) and not 186 <= DEFAULT_PROTO <= 198
