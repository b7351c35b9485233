"""KernelMonitor against the real kernel: drift repair, link bounces, overflow recovery."""

from __future__ import annotations

import time

import pytest

from bgpd.kernel import DEFAULT_PROTO, KernelMonitor, KernelTable
from tests.integration.kernel_lab import node, owned_prefixes, route, via, wait_for
from tests.netns import batch, run

pytestmark = pytest.mark.integration

# Long enough for the monitor to have reacted to its own writes if it were going to.
QUIET_PERIOD_S = 0.5
# Generous: the flood itself takes seconds on a busy 2-core machine.
FLOOD_RECOVERY_DEADLINE_S = 20.0
# The kernel's minimum; a flood of tens of thousands of events overflows it for sure.
TINY_RCVBUF = 4096

ROUTES = [
    route("10.50.0.0/24", via("10.0.0.2")),
    route("10.50.1.0/24", via(None, "v0")),
    route("10.50.2.0/24", via("10.0.0.2", weight=2), via("10.0.1.2")),
    route("10.50.3.0/24", kind="blackhole"),
    route("fd50::/64", via("fd00::2")),
]
PREFIXES = {str(r.prefix) for r in ROUTES}


@pytest.fixture
def monitored():
    events: list[str] = []
    with node() as ns:
        table = KernelTable(netns=ns)
        monitor = KernelMonitor(table, notify=lambda reason, result: events.append(reason))
        try:
            assert table.sync(ROUTES).ok
            monitor.start()
            wait_for(lambda: monitor.repairs > 0)  # its start-up resync is done
            yield ns, table, monitor, events
        finally:
            monitor.stop()
            table.close()


def test_own_writes_do_not_start_a_repair_loop(monitored) -> None:
    ns, table, monitor, _ = monitored
    more = ROUTES + [route(f"10.51.{i // 250}.{i % 250}/32", via("10.0.0.2")) for i in range(500)]
    assert table.sync(more).added == 500
    writes = table.writes
    time.sleep(QUIET_PERIOD_S)
    assert table.writes == writes
    assert len(owned_prefixes(ns)) == len(more)


def test_a_foreign_delete_is_repaired_within_a_second(monitored) -> None:
    ns, _, _, events = monitored
    for prefix in ("10.50.0.0/24", "10.50.2.0/24", "fd50::/64"):
        run(ns, "ip", "route", "del", prefix)
        wait_for(lambda: owned_prefixes(ns) == PREFIXES)
    assert "route" in events


def test_a_foreign_replace_with_our_proto_is_undone(monitored) -> None:
    ns, _, _, _ = monitored
    run(
        ns, "ip", "route", "replace", "10.50.0.0/24", "via", "10.0.1.2", "proto", str(DEFAULT_PROTO)
    )
    wait_for(lambda: "via 10.0.0.2" in run(ns, "ip", "route", "show", "10.50.0.0/24"))


def test_a_foreign_takeover_is_reported_as_a_conflict_not_fought(monitored) -> None:
    ns, table, _, _ = monitored
    run(ns, "ip", "route", "replace", "10.50.0.0/24", "via", "10.0.1.2", "proto", "static")
    wait_for(lambda: table.pending)
    assert "proto static" in run(ns, "ip", "route", "show", "10.50.0.0/24")


def test_routes_via_a_bounced_link_come_back(monitored) -> None:
    ns, _, _, events = monitored
    run(ns, "ip", "link", "set", "v0", "down")
    wait_for(lambda: owned_prefixes(ns) == {"10.50.3.0/24"})
    run(ns, "ip", "link", "set", "v0", "up")
    wait_for(lambda: owned_prefixes(ns) == PREFIXES, deadline_s=3.0)
    assert "link" in events


def test_an_overflowing_monitor_recovers_and_converges() -> None:
    with node() as ns:
        table = KernelTable(netns=ns)
        monitor = KernelMonitor(table, rcvbuf=TINY_RCVBUF)
        try:
            table.sync(ROUTES)
            monitor.start()
            lines = []
            for i in range(15_000):
                lines.append(f"route add 10.{60 + i // 250}.{i % 250}.0/24 dev v0 proto static")
            lines += ["route del 10.50.0.0/24", "route del fd50::/64"]
            lines += [line.replace("add", "del", 1) for line in lines[:15_000]]
            # Stall the monitor (it needs the table lock for every route event, as it
            # would while a big sync runs) so the flood surely overflows its socket.
            with table._lock:
                batch(ns, lines)
            wait_for(lambda: monitor.overflows > 0, deadline_s=FLOOD_RECOVERY_DEADLINE_S)
            wait_for(lambda: owned_prefixes(ns) == PREFIXES, deadline_s=FLOOD_RECOVERY_DEADLINE_S)
            assert table.sync(ROUTES).writes == 0
        finally:
            monitor.stop()
            table.close()
