"""Pure checks of the route wire form: encoding, fast decoding, matching (no kernel)."""

from __future__ import annotations

import errno
import ipaddress
import socket

import pytest
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from bgpd.kernel.messages import (
    EncodeError,
    RouteEncoder,
    parse_route,
    route_to_wire,
    wire_matches,
    wire_to_route,
)
from bgpd.model import KernelRoute, NextHop

LINKS = {"eth0": 2, "eth1": 3}


def route(prefix: str, *nexthops: NextHop, kind: str = "unicast", metric=None) -> KernelRoute:
    return KernelRoute(ipaddress.ip_network(prefix), tuple(sorted(nexthops)), kind, metric)


CASES = {
    "an IPv4 route via a gateway": route("10.1.0.0/24", NextHop(gateway="10.0.0.2")),
    "an IPv4 route on a device": route("10.1.0.0/24", NextHop(device="eth0")),
    "an IPv4 ECMP route with weights": route(
        "10.1.0.0/24",
        NextHop(gateway="10.0.0.2", device="eth0", weight=3),
        NextHop(gateway="10.0.1.2", device="eth1", weight=1),
    ),
    "an IPv4 blackhole with a metric": route("10.2.0.0/16", kind="blackhole", metric=7),
    "an IPv6 route via a gateway": route("fd09::/64", NextHop(gateway="fd00::2")),
    "an IPv6 ECMP route": route(
        "fd09::/64", NextHop(gateway="fd00::2", device="eth0"), NextHop(gateway="fd00::3")
    ),
    "an IPv6 blackhole": route("fd0a::/48", kind="blackhole"),
}


@pytest.mark.parametrize("desired", CASES.values(), ids=CASES.keys())
def test_encoded_message_decodes_to_the_same_wire_form(desired: KernelRoute) -> None:
    key, value = route_to_wire(desired, LINKS, {})
    data = RouteEncoder(table=100, proto=205).add(42, key, value, replace=False)

    assert parse_route(data, 0, len(data)) == (100, 205, key, value)
    reference = rtmsg(data)
    reference.decode()
    assert reference["header"]["sequence_number"] == 42
    assert reference["proto"] == 205
    assert reference.get_attr("RTA_DST") == str(desired.prefix.network_address)


@pytest.mark.parametrize("desired", CASES.values(), ids=CASES.keys())
def test_wire_form_converts_back_to_the_route(desired: KernelRoute) -> None:
    key, value = route_to_wire(desired, LINKS, {})
    back = wire_to_route(key, value, {v: k for k, v in LINKS.items()})
    assert back.prefix == desired.prefix and back.kind == desired.kind
    assert [(n.gateway, n.device) for n in back.nexthops] == [
        (n.gateway, n.device) for n in desired.nexthops
    ]


def test_a_gateway_only_next_hop_matches_whatever_device_the_kernel_chose() -> None:
    gw = socket.inet_pton(socket.AF_INET, "10.0.0.2")
    want = (1, ((gw, 0, 1),))
    assert wire_matches(want, (1, ((gw, 5, 1),)))
    assert not wire_matches(want, (1, ((b"\x0a\0\0\3", 5, 1),)))
    assert not wire_matches((1, ((gw, 4, 1),)), (1, ((gw, 5, 1),)))


def test_ecmp_weights_are_part_of_the_match() -> None:
    a, b = b"\x0a\0\0\2", b"\x0a\0\0\3"
    want = (1, ((a, 0, 2), (b, 0, 1)))
    assert wire_matches(want, (1, ((a, 7, 2), (b, 7, 1))))
    assert not wire_matches(want, (1, ((a, 7, 1), (b, 7, 1))))


def test_an_unknown_device_is_an_encode_error_with_enodev() -> None:
    with pytest.raises(EncodeError) as caught:
        route_to_wire(route("10.1.0.0/24", NextHop(device="nope")), LINKS, {})
    assert caught.value.errno == errno.ENODEV


def test_metric_defaults_follow_the_kernel() -> None:
    v4, _ = route_to_wire(route("10.1.0.0/24", NextHop(device="eth0")), LINKS, {})
    v6, _ = route_to_wire(route("fd00::/64", NextHop(device="eth0"), metric=0), LINKS, {})
    assert v4[3] == 0 and v6[3] == 1024


def test_delete_carries_our_proto_so_the_kernel_spares_foreign_routes() -> None:
    key, value = route_to_wire(route("10.1.0.0/24", NextHop(device="eth0")), LINKS, {})
    data = RouteEncoder(table=254, proto=205).delete(1, key, value)
    msg = rtmsg(data)
    msg.decode()
    assert msg["proto"] == 205 and msg.get_attr("RTA_PRIORITY") == 0


def test_unrelated_route_events_do_not_force_a_full_resync_while_a_conflict_persists():
    """With one route refused (pending), a CNI route in another table or a foreign route at a
    key we do not want must not trigger a full dump+diff: those only hint the rate-limited
    retry. A foreign route at a key we want still does (the conflict may be gone)."""
    import socket
    import threading

    from bgpd.kernel.table import KernelTable

    table = KernelTable.__new__(KernelTable)  # the decision logic only, no netlink socket
    table._lock, table.table, table.proto = threading.RLock(), 254, 205
    wanted = (socket.AF_INET, bytes([10, 244, 1, 5]), 32, 0)
    table._desired = {wanted: (1, ((b"", 3, 1),))}
    table._pending = True
    unrelated = (socket.AF_INET, bytes([172, 16, 9, 0]), 24, 0)
    assert not table.needs_repair(100, 3, unrelated, (1, ()), False)
    assert not table.needs_repair(254, 4, unrelated, (1, ()), False)
    assert table.needs_repair(254, 4, wanted, (1, ()), True)
