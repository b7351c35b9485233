"""The cache's change log: a Decider fed the cache's snapshots finds what changed from the
log (one lookup per change, not a pass over every Service), and decides exactly what a
fresh Decider decides from the same maps, through adds, updates, deletes, relists, log
overflows and skipped snapshots."""

from __future__ import annotations

import dataclasses
import random

import pytest

from bgpd.kube import cache as cache_mod
from bgpd.kube.cache import ENDPOINT_SLICE, NODE, SERVICE, ClusterCache
from bgpd.model import ChangeLog, Snapshot
from bgpd.policy import decide as decide_mod
from bgpd.policy.decide import Decider
from tests.unit.policy_builders import NODE as NODE_NAME
from tests.unit.policy_builders import OTHER, config, node, service, slice_for

CONFIG = config(pools=[
    {"name": "external", "cidrs": ["198.51.100.0/24"], "allow": ["external-ip"]},
    {"name": "services", "cidrs": ["10.96.0.0/16"], "allow": ["cluster-ip"]}],
    advertise={"cluster_ips": True})


def make_cache() -> ClusterCache:
    cache = ClusterCache(client=None, node_name=NODE_NAME)  # type: ignore[arg-type]
    cache.apply(NODE, NODE_NAME, node())
    return cache


def random_service(rnd: random.Random, i: int):
    return service(f"s{i}", cluster_ips=(f"10.96.0.{i + 1}",),
                   external_ips=(f"198.51.100.{rnd.randrange(1, 40)}",),
                   external_traffic_policy=rnd.choice(("Local", "Cluster")),
                   created=float(rnd.randrange(100)))


def random_slice(rnd: random.Random, i: int):
    endpoints = [(rnd.choice((NODE_NAME, OTHER)), rnd.random() < 0.7, True, False)
                 for _ in range(rnd.randrange(0, 3))]
    return slice_for(f"s{i}", *endpoints, name=f"s{i}-{rnd.randrange(2)}")


def without_log(snap: Snapshot) -> Snapshot:
    return dataclasses.replace(snap, changes={})


def check(decider: Decider, snap: Snapshot) -> None:
    got = decider.decide(snap, CONFIG, NODE_NAME)
    want = Decider().decide(without_log(snap), CONFIG, NODE_NAME)
    assert got.announcements == want.announcements
    assert sorted(got.claims) == sorted(want.claims)


@pytest.mark.parametrize("seed", range(12))
def test_decisions_from_the_log_equal_fresh_decisions(seed, monkeypatch):
    rnd = random.Random(seed)
    monkeypatch.setattr(cache_mod, "CHANGE_LOG_KEYS", rnd.choice((3, 50, 4096)))
    cache, decider = make_cache(), Decider()
    for _ in range(120):
        op = rnd.random()
        i = rnd.randrange(30)
        if op < 0.4:
            cache.apply(SERVICE, f"default/s{i}", random_service(rnd, i))
        elif op < 0.55:
            cache.apply(SERVICE, f"default/s{i}", None)
        elif op < 0.8:
            sl = random_slice(rnd, i)
            cache.apply(ENDPOINT_SLICE, sl.key, sl)
        elif op < 0.9:
            cache.apply(ENDPOINT_SLICE, f"default/s{i}-{rnd.randrange(2)}", None)
        elif op < 0.95:  # a relist: the whole map at once
            items = {f"default/s{j}": random_service(rnd, j) for j in range(rnd.randrange(30))}
            cache.replace(SERVICE, items)
        if rnd.random() < 0.6:  # the agent does not decide on every change
            check(decider, cache.snapshot())
    check(decider, cache.snapshot())


def test_one_change_is_found_from_the_log_without_comparing_the_maps(monkeypatch):
    cache, decider = make_cache(), Decider()
    for i in range(200):
        cache.apply(SERVICE, f"default/s{i}", service(f"s{i}", cluster_ips=(f"10.96.1.{i}",)))
    decider.decide(cache.snapshot(), CONFIG, NODE_NAME)
    compared = []
    real = decide_mod._changed_keys
    monkeypatch.setattr(decide_mod, "_changed_keys",
                        lambda current, seen: compared.append(len(current)) or real(current, seen))
    cache.apply(SERVICE, "default/s7", service("s7", cluster_ips=("10.96.1.7",),
                                               external_ips=("198.51.100.7",)))
    cache.apply(SERVICE, "default/s8", None)
    d = decider.decide(cache.snapshot(), CONFIG, NODE_NAME)
    assert compared == [], "the Decider compared the maps although the log named the change"
    assert "198.51.100.7/32" in d.announcements and "10.96.1.8/32" not in d.announcements


def test_a_log_that_started_over_makes_the_reader_compare():
    log = ChangeLog(source="cache", generation=10, base=8, keys=["a", "b"])
    assert log.since("cache", 8) == ["a", "b"] and log.since("cache", 9) == ["b"]
    assert log.since("cache", 10) == []
    assert log.since("cache", 7) is None  # before the log starts: compare the maps
    assert log.since("other cache", 9) is None


def test_addresses_of_deleted_objects_leave_the_caches():
    """A tenant writes 10,000 distinct addresses (outside every pool) and deletes them: the
    agent's address caches are emptied, not kept until they cycle."""
    from bgpd.policy import addresses

    many = [service(f"w{i}", cluster_ips=(), external_ips=(f"192.0.{i >> 8}.{i & 255}",
                                                             f"100.{i >> 8}.{i & 255}.1"))
            for i in range(10_000)]
    decider = Decider()
    addresses._host_prefix.cache_clear()
    decider.decide(Snapshot(node=node(), services={s.key: s for s in many}), CONFIG, NODE_NAME)
    held = addresses._host_prefix.cache_info().currsize
    assert held >= 20_000  # in play: kept (a full decision reuses them)
    decider.decide(Snapshot(node=node(), services={}), CONFIG, NODE_NAME)
    assert addresses._host_prefix.cache_info().currsize < 100
