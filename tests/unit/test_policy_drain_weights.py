"""Weighted ECMP and the drain, decided: what each node announces with which weight, and
what a draining node does to each kind of address (never its pod CIDR or pod IPs).

Every case is decided incrementally across the transitions (cordon, uncordon, pods
coming and going) and compared with a fresh decision of the same inputs.
"""

from __future__ import annotations

import ipaddress
from dataclasses import replace

import pytest

from bgpd.config import ConfigError, parse_config
from bgpd.kube import convert
from bgpd.policy import reasons
from bgpd.policy.decide import Decider, decide
from tests.unit.policy_builders import (
    BASE_CONFIG,
    NODE,
    OTHER,
    config,
    node,
    pod,
    service,
    slice_for,
    snapshot,
)

UNIT = 125_000  # weighted_ecmp.bandwidth_per_endpoint's default
EXT = "198.51.100.7"
POD_CIDR = "10.244.1.0/24"


def pools(weighted: bool) -> list[dict]:
    out = [dict(p) for p in BASE_CONFIG["pools"]]
    out[0]["weighted_ecmp"] = weighted  # "external": external-ip, pod-external-ip
    return out


def local_svc(name="web", policy="Local", annotations=None, created=1.0):
    return service(name, external_ips=(EXT,), external_traffic_policy=policy,
                   annotations=annotations or {}, created=created)


def endpoints(here: int, there: int = 1, svc="web"):
    eps = [(NODE, True, True, False)] * here + [(OTHER, True, True, False)] * there
    return slice_for(svc, *eps)


def announced(decision, prefix):
    return decision.announcements.get(str(ipaddress.ip_network(prefix)))


def verdicts(decision, prefix):
    return [(c.reason, c.detail) for c in decision.explain(ipaddress.ip_network(prefix))]


def check_incremental(decider: Decider, snap, cfg, others=None):
    """The Decider's answer, after checking it equals a fresh decision's."""
    got = decider.decide(snap, cfg, NODE, others_available=others)
    fresh = Decider().decide(snap, cfg, NODE, others_available=others)
    assert got.announcements == fresh.announcements
    assert got.kernel_routes == fresh.kernel_routes
    assert sorted(got.claims) == sorted(fresh.claims)
    return got


# ------------------------------------------------------------------ weighted ECMP


@pytest.mark.parametrize("here,expected", [(1, UNIT), (3, 3 * UNIT), (7, 5 * UNIT)])
def test_a_weighted_pool_announces_bandwidth_per_local_endpoint_up_to_the_cap(here, expected):
    cfg = config(pools=pools(True), weighted_ecmp={"max_endpoints": 5})
    d = decide(snapshot(services=[local_svc()], slices=[endpoints(here)]), cfg, NODE)
    assert announced(d, f"{EXT}/32").attributes.link_bandwidth == expected
    (detail,) = [t for r, t in verdicts(d, f"{EXT}/32") if r == reasons.ANNOUNCED]
    assert f"link bandwidth {expected} B/s for {here} local endpoint" in detail
    assert ("capped" in detail) == (here > 5)


def test_weights_are_opt_in_and_only_for_local_traffic_policy():
    snap = snapshot(services=[local_svc()], slices=[endpoints(3)])
    assert announced(decide(snap, config(), NODE), f"{EXT}/32").attributes.link_bandwidth \
        is None, "a pool without weighted_ecmp must not send link bandwidth"
    cluster = snapshot(services=[local_svc(policy="Cluster")], slices=[endpoints(3)])
    assert announced(decide(cluster, config(pools=pools(True)), NODE),
                     f"{EXT}/32").attributes.link_bandwidth is None, \
        "every node delivers eTP=Cluster traffic to every endpoint: weights would lie"


def test_the_service_annotation_overrides_the_pool_either_way():
    on = local_svc(annotations={"bgpd.dev/weighted-ecmp": "true"})
    off = local_svc(annotations={"bgpd.dev/weighted-ecmp": "false"})
    bw_on = announced(decide(snapshot(services=[on], slices=[endpoints(2)]), config(), NODE),
                      f"{EXT}/32").attributes.link_bandwidth
    bw_off = announced(decide(snapshot(services=[off], slices=[endpoints(2)]),
                              config(pools=pools(True)), NODE),
                       f"{EXT}/32").attributes.link_bandwidth
    assert (bw_on, bw_off) == (2 * UNIT, None)


def test_a_bad_weighted_annotation_is_reported_and_the_pool_decides():
    svc = local_svc(annotations={"bgpd.dev/weighted-ecmp": "sometimes"})
    d = decide(snapshot(services=[svc], slices=[endpoints(2)]), config(pools=pools(True)), NODE)
    assert announced(d, f"{EXT}/32").attributes.link_bandwidth == 2 * UNIT
    assert any(c.reason == reasons.BAD_ANNOTATION and "weighted-ecmp" in c.detail
               for c in d.rejections)


def test_the_weight_follows_endpoints_as_they_come_and_go():
    cfg, decider, svc = config(pools=pools(True)), Decider(), local_svc()
    seen = []
    for here in (1, 3, 2, 0, 1):
        d = check_incremental(decider, snapshot(services=[svc], slices=[endpoints(here)]), cfg)
        a = announced(d, f"{EXT}/32")
        seen.append(a.attributes.link_bandwidth if a else None)
    assert seen == [UNIT, 3 * UNIT, 2 * UNIT, None, UNIT]


def test_pod_owned_addresses_weigh_by_their_pods_on_this_node():
    cfg, decider = config(pools=pools(True)), Decider()
    note = {"bgpd.dev/external-ips": EXT}
    ps = [pod(f"p{i}", ips=(f"10.244.1.{10 + i}",), annotations=note) for i in range(3)]
    seen = []
    for count in (1, 3, 2):
        d = check_incremental(decider, snapshot(pods=ps[:count]), cfg)
        seen.append(announced(d, f"{EXT}/32").attributes.link_bandwidth)
        assert len(d.kernel_routes[f"{EXT}/32"].nexthops) == count
    assert seen == [UNIT, 3 * UNIT, 2 * UNIT]
    assert any(f"link bandwidth {2 * UNIT} B/s for 2 pods on this node" in t
               for _, t in verdicts(d, f"{EXT}/32"))
    unweighted = decide(snapshot(pods=ps), config(), NODE)
    assert announced(unweighted, f"{EXT}/32").attributes.link_bandwidth is None


# --------------------------------------------------------------------------- drain


def cordoned(**kw):
    return replace(node(**kw), unschedulable=True)


def mixed_snapshot(node_info, ready_here=True):
    """One of each: an eTP=Cluster external IP, an eTP=Local LB IP with a local endpoint, a
    cluster IP, a pod-owned external IP, a pod IP (announced via a pod-ip pool)."""
    cluster_svc = service("web", external_ips=(EXT,), cluster_ips=("10.96.0.10",))
    local_lb = service("lb", type="LoadBalancer", lb_ips=("203.0.113.9",),
                       cluster_ips=("10.96.0.11",), external_traffic_policy="Local")
    owner = pod("owner", ips=("10.244.1.20",),
                annotations={"bgpd.dev/external-ips": "198.51.100.50"})
    elsewhere = pod("odd", ips=("100.64.0.5",))
    return snapshot(node_info, pods=[owner, elsewhere], services=[cluster_svc, local_lb],
                    slices=[endpoints(1, svc="lb")])


DRAINED = ["198.51.100.7/32", "203.0.113.9/32", "10.96.0.10/32", "10.96.0.11/32",
           "198.51.100.50/32"]
UNTOUCHED = [POD_CIDR, "100.64.0.5/32"]


def test_a_cordoned_node_announces_service_addresses_less_preferred_never_its_pods():
    cfg = config(advertise={"cluster_ips": True})
    normal = decide(mixed_snapshot(node()), cfg, NODE)
    drained = decide(mixed_snapshot(cordoned()), cfg, NODE)
    for prefix in DRAINED:
        assert announced(normal, prefix).attributes.prepend == 0, prefix
        assert announced(drained, prefix).attributes.prepend == 3, prefix
        assert any(r == reasons.ANNOUNCED and "less preferred: node is cordoned" in t
                   for r, t in verdicts(drained, prefix)), prefix
    for prefix in UNTOUCHED:
        assert announced(drained, prefix) == announced(normal, prefix), prefix
    assert drained.kernel_routes == normal.kernel_routes
    assert drained.drain == "node is cordoned (spec.unschedulable)"


def test_med_action_sets_the_configured_med():
    cfg = config(advertise={"cluster_ips": True}, drain={"action": "med", "med": 1000})
    d = decide(mixed_snapshot(cordoned()), cfg, NODE)
    assert {announced(d, p).attributes.med for p in DRAINED} == {1000}
    assert {announced(d, p).attributes.prepend for p in DRAINED} == {0}


def test_withdraw_only_what_any_node_delivers_and_only_when_another_node_is_known():
    cfg = config(advertise={"cluster_ips": True}, drain={"action": "withdraw"})
    snap = mixed_snapshot(cordoned())
    unknown = decide(snap, cfg, NODE)  # the API has not answered: never withdraw
    assert all(announced(unknown, p).attributes.prepend == 3 for p in DRAINED)
    alone = Decider().decide(snap, cfg, NODE, others_available=False)
    assert all(announced(alone, p).attributes.prepend == 3 for p in DRAINED)
    d = Decider().decide(snap, cfg, NODE, others_available=True)
    # eTP=Cluster external IP and both cluster IPs (iTP=Cluster): any node delivers them.
    for prefix in ("198.51.100.7/32", "10.96.0.10/32", "10.96.0.11/32"):
        assert announced(d, prefix) is None, prefix
        assert [r for r, _ in verdicts(d, prefix)] == [reasons.DRAINED], prefix
    # eTP=Local and pod-owned: only nodes with endpoints deliver them: less preferred.
    for prefix in ("203.0.113.9/32", "198.51.100.50/32"):
        assert announced(d, prefix).attributes.prepend == 3, prefix
    for prefix in UNTOUCHED:
        assert announced(d, prefix) is not None, prefix
    assert all(c.reason != reasons.DRAINED for c in d.rejections)  # a choice, not an error


@pytest.mark.parametrize("drain,node_info,draining", [
    ({}, node(labels={"node.kubernetes.io/exclude-from-external-load-balancers": ""}), True),
    ({}, replace(node(), taints=("ToBeDeletedByClusterAutoscaler",)), True),
    ({"labels": [], "taints": []}, replace(node(), taints=("ToBeDeletedByClusterAutoscaler",)),
     False),
    ({"cordoned": False}, cordoned(), False),
    ({}, replace(node(), taints=("node.kubernetes.io/unreachable",)), False),
])
def test_drain_triggers(drain, node_info, draining):
    d = decide(mixed_snapshot(node_info), config(drain=drain), NODE)
    assert (announced(d, f"{EXT}/32").attributes.prepend == 3) == draining
    assert bool(d.drain) == draining


def test_cordon_and_uncordon_incrementally_return_to_the_same_announcements():
    cfg, decider = config(advertise={"cluster_ips": True}, drain={"action": "withdraw"}), Decider()
    before = check_incremental(decider, mixed_snapshot(node()), cfg)
    check_incremental(decider, mixed_snapshot(cordoned()), cfg, others=None)
    gone = check_incremental(decider, mixed_snapshot(cordoned()), cfg, others=True)
    assert announced(gone, f"{EXT}/32") is None
    back = check_incremental(decider, mixed_snapshot(node()), cfg, others=True)
    assert back.announcements == before.announcements
    assert not back.notes and not back.drain


def test_a_drained_and_weighted_address_carries_both_and_says_both():
    cfg = config(pools=pools(True))
    d = decide(snapshot(cordoned(), services=[local_svc()], slices=[endpoints(2)]), cfg, NODE)
    attrs = announced(d, f"{EXT}/32").attributes
    assert (attrs.link_bandwidth, attrs.prepend) == (2 * UNIT, 3)
    (detail,) = [t for r, t in verdicts(d, f"{EXT}/32") if r == reasons.ANNOUNCED]
    assert "link bandwidth" in detail and "less preferred" in detail


# ------------------------------------------------------------------ config, convert


def test_node_taint_keys_are_read_and_bounded():
    raw = {"metadata": {"name": "n1"},
           "spec": {"taints": [{"key": "b", "effect": "NoSchedule"}, {"key": "a"},
                               {"effect": "NoSchedule"}, {"key": 7},
                               *({"key": f"k{i}"} for i in range(500))]}}
    info = convert.node_from(raw)
    assert info.taints[:2] == ("a", "b")
    assert len(info.taints) == convert.MAX_TAINTS


@pytest.mark.parametrize("raw,message", [
    ({"drain": {"action": "evict"}}, "drain.action"),
    ({"drain": {"prepend": 0}}, "drain.prepend"),
    ({"drain": {"labels": ["not a key!"]}}, "drain.labels[0]"),
    ({"weighted_ecmp": {"bandwidth_per_endpoint": 10**9, "max_endpoints": 1000}},
     "weighted_ecmp"),
])
def test_bad_drain_and_weight_config_names_the_field(raw, message):
    with pytest.raises(ConfigError) as err:
        parse_config({**BASE_CONFIG, **raw})
    assert any(line.startswith(message) for line in err.value.errors), err.value.errors
