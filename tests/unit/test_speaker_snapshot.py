"""Snapshot.indexing (a first table indexed, grouped and packed in one pass) against the
three-pass way it replaces: DesiredIndex.update, then Snapshot(index), then packing."""

from __future__ import annotations

import ipaddress
import random

import pytest

from bgpd.model import Announcement, Attributes, announcements
from bgpd.policy.addresses import v4_host_network
from bgpd.speaker.routes import DesiredIndex, PeerTarget
from bgpd.speaker.snapshot import Snapshot

TARGET = PeerTarget("10.0.0.1", ibgp=False, local_address="10.0.0.2",
                    next_hop_ipv6="fd00::2")


def _table(rnd: random.Random, n: int, duplicates: int) -> frozenset[Announcement]:
    # Shapes as the policy makes them: a few shared Attributes objects, one of them equal
    # by value to another but a distinct object (grouped apart, then merged), /32s from
    # the policy's fast constructor, other IPv4 lengths and IPv6 from ipaddress.
    shared = [Attributes(), Attributes(med=10), Attributes(communities=("64512:1",))]
    twin = Attributes(med=10)
    hops = [None, "192.0.2.9", "192.0.2.10"]
    routes = set()
    for i in range(n):
        kind = rnd.random()
        if kind < 0.6:
            prefix = v4_host_network(0x64400000 + i)
        elif kind < 0.8:
            prefix = ipaddress.ip_network(f"10.{i % 256}.{i // 256 % 256}.0/24")
        else:
            prefix = ipaddress.ip_network(f"2001:db8:{i % 65536:x}::/48")
        attributes = rnd.choice([*shared, twin])
        hop = rnd.choice(hops) if prefix.version == 4 else None
        routes.add(Announcement(prefix, attributes, hop))
    some = rnd.sample(sorted(routes, key=str), duplicates)
    for ann in some:  # a second claim on a prefix, with other attributes
        routes.add(Announcement(ann.prefix, Attributes(local_pref=7), ann.next_hop))
    return frozenset(routes)


def _lines(snapshot: Snapshot, packed: bool) -> list[str]:
    return [c.line for c in snapshot.commands(TARGET.address, TARGET, packed)]


@pytest.mark.parametrize("seed,n,duplicates", [(1, 3_000, 0), (2, 3_000, 5), (3, 40, 0),
                                               (4, 1, 1), (5, 0, 0)])
def test_one_pass_indexes_groups_and_packs_as_three_passes_do(seed, n, duplicates):
    desired = _table(random.Random(seed), n, duplicates)
    three = DesiredIndex()
    three.update(desired)
    reference = Snapshot(three)
    one = DesiredIndex()
    snapshot = Snapshot.indexing(one, desired)
    assert one.source is desired and snapshot.source is desired
    assert one.by_prefix.keys() == three.by_prefix.keys()
    for prefix in three.by_prefix:
        assert one.claims(prefix) == three.claims(prefix)
        assert one.chosen(prefix) == three.chosen(prefix)
    for packed in (True, False):
        assert _lines(snapshot, packed) == _lines(reference, packed)
    # the index it filled goes on by differences as any other
    removed = set(list(desired)[: n // 3])
    assert one.update(desired - removed) == three.update(desired - removed)
    assert one.view(TARGET) == three.view(TARGET)


def test_one_pass_packs_the_groups_a_packed_command_carries_and_only_them():
    desired = _table(random.Random(6), 2_000, 0)
    snapshot = Snapshot.indexing(DesiredIndex(), desired)
    reference = Snapshot(_indexed(desired))
    reference.warm()
    for group, twin in zip(snapshot.groups, reference.groups, strict=True):
        assert group.prefixes == twin.prefixes
        assert group._packed == twin._packed  # both None below PACKED_MIN_PREFIXES


def test_one_pass_fills_only_an_empty_index():
    index = _indexed(frozenset({Announcement(ipaddress.ip_network("10.0.0.0/24"))}))
    with pytest.raises(AssertionError):
        Snapshot.indexing(index, frozenset({Announcement(v4_host_network(1))}))


def _indexed(desired: frozenset[Announcement]) -> DesiredIndex:
    index = DesiredIndex()
    index.update(desired)
    return index


def test_announcements_made_fast_are_the_constructors():
    attributes = Attributes(med=5, communities=("64512:7",))
    prefixes = [v4_host_network(0x0A000001), ipaddress.ip_network("2001:db8::/64")]
    for next_hop in (None, "192.0.2.1"):
        made = list(announcements(prefixes, attributes, next_hop))
        want = [Announcement(p, attributes, next_hop) for p in prefixes]
        assert made == want and [hash(a) for a in made] == [hash(a) for a in want]
        assert [repr(a) for a in made] == [repr(a) for a in want]
        assert all(a.attributes is attributes and a.next_hop == next_hop for a in made)
        with pytest.raises(AttributeError):  # still frozen
            made[0].next_hop = "192.0.2.2"


def test_one_pass_with_a_shape_per_route_packs_nothing_and_keeps_no_addresses():
    # A tenant giving every Service its own communities annotation makes one shape per
    # route: each is a group of one, sent as text, with nothing packed or kept beside it.
    desired = frozenset(Announcement(v4_host_network(0x0A000000 + i),
                                     Attributes(communities=(f"64512:{i}",)))
                        for i in range(2_000))
    snapshot = Snapshot.indexing(DesiredIndex(), desired)
    assert len(snapshot.groups) == 2_000
    assert all(g._packed is None and g.addresses is None for g in snapshot.groups)
    lines = _lines(snapshot, packed=True)
    assert not any(" announce packed " in line for line in lines)
    assert lines == _lines(Snapshot(_indexed(desired)), packed=True)
