"""Per-peer views, diffs and ExaBGP command lines (bgpd.speaker.routes)."""

import ipaddress

import pytest

from bgpd.model import NO_ATTRIBUTES, Announcement, Attributes
from bgpd.speaker.routes import (
    DesiredIndex,
    PeerTarget,
    commands,
    diff,
    diff_prefixes,
    eor_command,
    peer_view,
    resolve,
)

EBGP = PeerTarget("10.0.0.1", ibgp=False, local_address="10.0.0.2")
IBGP = PeerTarget("10.0.0.1", ibgp=True, local_address="10.0.0.2")
NO_LOCAL = PeerTarget("10.0.0.1", ibgp=False, local_address=None)
DUAL = PeerTarget("10.0.0.1", ibgp=False, local_address="10.0.0.2", next_hop_ipv6="fd00::2")
V4_ONLY = PeerTarget("10.0.0.1", ibgp=False, local_address="10.0.0.2", families=("ipv4-unicast",))
RICH = Attributes(
    communities=("65000:1", "65000:2"), large_communities=("65000:1:2",), local_pref=200, med=10
)


def ann(prefix, attrs=NO_ATTRIBUTES, next_hop=None):
    return Announcement(ipaddress.ip_network(prefix), attrs, next_hop)


@pytest.mark.parametrize(
    "target, route, expected_next_hop, expected_local_pref",
    [
        (EBGP, ann("10.1.0.0/24", RICH), "10.0.0.2", None),
        (IBGP, ann("10.1.0.0/24", RICH), "10.0.0.2", 200),
        (NO_LOCAL, ann("10.1.0.0/24"), "self", None),
        (EBGP, ann("10.1.0.0/24", next_hop="10.0.0.9"), "10.0.0.9", None),
        (EBGP, ann("fd00:1::/64"), "self", None),
        (DUAL, ann("fd00:1::/64"), "fd00::2", None),
        (DUAL, ann("10.1.0.0/24"), "10.0.0.2", None),
    ],
    ids=[
        "ebgp peers never get local-pref and get our local address as next hop",
        "ibgp peers keep local-pref",
        "without a local address the next hop is ExaBGP's self",
        "an explicit next hop is kept",
        "an ipv6 route over an ipv4 session falls back to self",
        "an ipv6 route over an ipv4 session takes the configured ipv6 next hop",
        "the configured ipv6 next hop leaves ipv4 routes alone",
    ],
)
def test_resolve(target, route, expected_next_hop, expected_local_pref):
    out = resolve(route, target)
    assert out.next_hop == expected_next_hop
    assert out.attributes.local_pref == expected_local_pref
    assert out.attributes.communities == route.attributes.communities


def test_a_session_without_the_family_gets_nothing_of_it():
    assert resolve(ann("fd00:1::/64"), V4_ONLY) is None
    assert peer_view([ann("fd00:1::/64"), ann("10.1.0.0/24")], V4_ONLY).keys() == {
        ipaddress.ip_network("10.1.0.0/24")
    }


def test_two_claims_on_one_prefix_resolve_the_same_whatever_the_order():
    a, b = ann("10.1.0.0/24", Attributes(med=1)), ann("10.1.0.0/24", Attributes(med=2))
    assert peer_view([a, b], EBGP) == peer_view([b, a], EBGP)


def test_diff_announces_changes_and_withdraws_what_is_gone():
    old = peer_view([ann("10.1.0.0/24"), ann("10.2.0.0/24"), ann("10.3.0.0/24", RICH)], EBGP)
    new = peer_view([ann("10.1.0.0/24"), ann("10.3.0.0/24"), ann("10.4.0.0/24")], EBGP)
    to_announce, to_withdraw = diff(new, old)
    assert sorted(str(a.prefix) for a in to_announce) == ["10.3.0.0/24", "10.4.0.0/24"]
    assert [str(a.prefix) for a in to_withdraw] == ["10.2.0.0/24"]
    assert diff(new, new) == ([], [])  # applying twice changes nothing


def test_index_updates_incrementally_to_the_same_view_as_a_rebuild():
    index = DesiredIndex()
    first = frozenset(ann(f"10.0.{i}.0/24") for i in range(50))
    index.update(first)
    second = frozenset(list(first)[:40] + [ann("10.9.0.0/24", RICH)])
    changed = index.update(second)
    assert len(changed) == 11
    assert index.view(EBGP) == peer_view(second, EBGP)
    current = peer_view(first, EBGP)
    incremental = diff_prefixes(index.view(EBGP, changed), current, changed)
    full = diff(index.view(EBGP), current)
    assert [set(part) for part in incremental] == [set(part) for part in full]
    assert index.update(second) == set()


def test_commands_group_by_attributes_and_next_hop_many_prefixes_a_line():
    routes = [ann(f"10.0.{i}.0/24") for i in range(5)] + [
        ann("10.9.0.0/24", RICH),
        ann("fd00:1::/64", next_hop="fd00::2"),
    ]
    view = peer_view(routes, IBGP)
    lines = [c.line for c in commands("10.0.0.1", view.values(), [], max_per_command=3)]
    assert lines == [
        "neighbor 10.0.0.1 announce attributes next-hop 10.0.0.2 origin igp med 10 local-preference 200 "
        "community [ 65000:1 65000:2 ] large-community [ 65000:1:2 ] nlri 10.9.0.0/24",
        "neighbor 10.0.0.1 announce attributes next-hop 10.0.0.2 origin igp nlri 10.0.0.0/24 10.0.1.0/24 10.0.2.0/24",
        "neighbor 10.0.0.1 announce attributes next-hop 10.0.0.2 origin igp nlri 10.0.3.0/24 10.0.4.0/24",
        "neighbor 10.0.0.1 announce attributes next-hop fd00::2 origin igp nlri fd00:1::/64",
    ]


def test_withdrawals_come_after_announcements_and_carry_the_routes():
    out = commands(
        "10.0.0.1",
        [ann("10.1.0.0/24", next_hop="10.0.0.2")],
        [ann("10.2.0.0/24", RICH, "10.0.0.2")],
    )
    assert [c.line for c in out] == [
        "neighbor 10.0.0.1 announce attributes next-hop 10.0.0.2 origin igp nlri 10.1.0.0/24",
        "neighbor 10.0.0.1 withdraw attributes next-hop 10.0.0.2 nlri 10.2.0.0/24",
    ]
    assert out[0].announced and not out[0].withdrawn
    assert out[1].withdrawn and not out[1].announced


def test_eor_command():
    assert (
        eor_command("fd00::1", "ipv6-unicast").line == "neighbor fd00::1 announce eor ipv6 unicast"
    )


def test_a_prefix_that_would_split_the_command_line_is_never_sent():
    """Defence in depth: the policy refuses zone indexes, but if one ever came through, one
    API line must not become two ExaBGP commands."""
    evil = Announcement(ipaddress.ip_network("2001:db8::1%x\nneighbor 10.0.0.1 teardown 2\n#/128"),
                        NO_ATTRIBUTES, "self")
    good = ann("fd00:1::/64", next_hop="self")
    lines = [c.line for c in commands("10.0.0.1", [evil, good], [])]
    assert all("\n" not in line and "teardown" not in line for line in lines)


def test_a_less_preferred_route_is_prepended_to_ebgp_and_lowered_in_ibgp():
    drained = ann("198.51.100.7/32", Attributes(prepend=3, med=5))
    ebgp = resolve(drained, PeerTarget("10.0.0.1", False, "10.0.0.2", local_asn=64512))
    assert ebgp.attributes.as_path == (64512,) * 4 and ebgp.attributes.prepend == 0
    ibgp = resolve(drained, PeerTarget("10.0.0.1", True, "10.0.0.2", local_asn=64512))
    # Our own ASN in an iBGP path would be a loop to the peer: the lowest local pref instead.
    assert ibgp.attributes.as_path == () and ibgp.attributes.local_pref == 0
    (line,) = [c.line for c in commands("10.0.0.1", [ebgp], [])]
    assert "as-path [ 64512 64512 64512 64512 ]" in line and "med 5" in line


def test_the_link_bandwidth_goes_out_as_an_extended_community():
    weighted = ann("198.51.100.7/32", Attributes(link_bandwidth=375000))
    (line,) = [c.line for c in commands("10.0.0.1", [resolve(weighted, EBGP)], [])]
    assert "extended-community [ bandwidth:0:375000 ]" in line


@pytest.mark.parametrize("target", [EBGP, IBGP, NO_LOCAL, DUAL, V4_ONLY],
                         ids=["ebgp", "ibgp", "no local address", "dual", "ipv4 only"])
def test_a_view_resolves_each_route_as_resolve_does(target):
    """view() resolves once per (attributes, next hop, IP version): for any mix of those,
    it must equal resolving every route on its own."""
    import random

    rng = random.Random(11)
    shapes = [NO_ATTRIBUTES, RICH, Attributes(prepend=3), Attributes(local_pref=50),
              Attributes(link_bandwidth=125000, communities=("65000:9",))]
    routes = set()
    for i in range(600):
        v6 = rng.random() < 0.3
        prefix = f"fd00:{i:x}::/64" if v6 else f"10.{i // 256}.{i % 256}.0/24"
        hop = rng.choice([None, None, "fd00::9" if v6 else "10.0.0.9"])
        routes.add(ann(prefix, rng.choice(shapes), hop))
    index = DesiredIndex()
    index.update(frozenset(routes))
    expected = {r.prefix: resolve(r, target) for r in routes}
    assert index.view(target) == {p: a for p, a in expected.items() if a is not None}
    some = [r.prefix for r in list(routes)[:50]]
    assert index.view(target, some) == {p: expected[p] for p in some
                                        if expected[p] is not None}


def test_a_change_of_most_of_the_index_is_reported_as_everything_and_a_small_one_listed():
    index = DesiredIndex()
    first = frozenset(ann(f"10.{i // 256}.{i % 256}.0/24") for i in range(3000))
    assert index.update(first) is None  # the caller compares whole views
    second = frozenset(list(first)[:2990])
    assert index.update(second) == {a.prefix for a in first - second}
    assert index.view(EBGP) == peer_view(second, EBGP)
    # a second claim on a prefix, then the first withdrawn: one claim held as itself again
    a, b = ann("10.99.0.0/24", Attributes(med=1)), ann("10.99.0.0/24", Attributes(med=2))
    index.update(second | {a, b})
    assert index.claims(a.prefix) == {a, b} and index.chosen(a.prefix) == a
    index.update(second | {b})
    assert index.by_prefix[a.prefix] is b and index.claims(a.prefix) == {b}


def test_a_large_change_goes_packed_by_prefix_length_and_the_rest_as_text():
    from bgpd.speaker.routes import MAX_PACKED_PER_COMMAND

    nets = [ann(f"10.{i // 256}.{i % 256}.0/24", next_hop="10.0.0.2")
            for i in range(MAX_PACKED_PER_COMMAND + 10)]
    few = [ann(f"10.200.0.{i}/32", next_hop="10.0.0.2") for i in range(5)]  # too few
    selfs = [ann(f"10.201.{i}.0/24", next_hop="self") for i in range(20)]  # never packed
    out = commands("10.0.0.1", nets + few + selfs, [], packed=True)
    packed = [c for c in out if c.is_packed]
    assert [len(c.announced) for c in packed] == [MAX_PACKED_PER_COMMAND, 10]
    for cmd in packed:
        words = cmd.line.split()
        assert words[2:6] == ["announce", "packed", "ipv4", "24"]
        raw = bytes.fromhex(words[6])
        assert [ipaddress.ip_network((int.from_bytes(raw[i:i + 3]) << 8, 24))
                for i in range(0, len(raw), 3)] == [a.prefix for a in cmd.announced]
        assert words[7:] == ["next-hop", "10.0.0.2", "origin", "igp"]
    text = [c for c in out if not c.is_packed]
    assert sorted(a.prefix for c in text for a in c.announced) == sorted(
        a.prefix for a in few + selfs)
    assert not any(c.is_packed for c in commands("10.0.0.1", nets, [], packed=False))
