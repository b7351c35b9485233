"""Properties that must hold for any input: default deny, order independence, no crash."""

from __future__ import annotations

import ipaddress
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from bgpd.model import EndpointInfo, EndpointSliceInfo, PodInfo, ServiceInfo, Snapshot
from bgpd.policy.claims import pool_for
from bgpd.policy.decide import decide
from bgpd.policy.endpoints import summarize
from tests.unit.policy_builders import NODE, config, node

CFG = config(advertise={"cluster_ips": True, "pod_ips": True})
NODE_INFO = node()

# Addresses from everywhere: pools, the cluster ranges, outside, and garbage.
_ADDRESSES = st.one_of(
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(str),
    st.sampled_from(["198.51.100.7", "203.0.113.9", "10.96.0.1", "10.244.1.9", "100.64.0.2",
                     "2001:db8:e::1", "192.0.2.1", "127.0.0.1", "0.0.0.0", "::"]),
    st.text(max_size=12),
)
_ADDRS = st.lists(_ADDRESSES, max_size=3).map(tuple)
_ANNOTATIONS = st.dictionaries(
    st.sampled_from(["bgpd.dev/advertise", "bgpd.dev/communities", "bgpd.dev/local-pref",
                     "bgpd.dev/med", "bgpd.dev/external-ips", "bgpd.dev/large-communities",
                     "bgpd.dev/advertise-cluster-ip", "other"]),
    st.one_of(st.text(max_size=10), _ADDRESSES), max_size=3)

_SERVICES = st.builds(
    ServiceInfo, namespace=st.sampled_from(["a", "b"]), name=st.text("xyz", min_size=1, max_size=3),
    type=st.sampled_from(["ClusterIP", "LoadBalancer", "ExternalName", "NodePort", "weird"]),
    cluster_ips=_ADDRS, external_ips=_ADDRS, lb_ips=_ADDRS,
    external_traffic_policy=st.sampled_from(["Cluster", "Local", ""]),
    internal_traffic_policy=st.sampled_from(["Cluster", "Local"]),
    annotations=_ANNOTATIONS, created=st.floats(0, 100, allow_nan=False))
_PODS = st.builds(
    PodInfo, namespace=st.just("a"), name=st.text("pq", min_size=1, max_size=3),
    node_name=st.just(NODE), ips=_ADDRS, phase=st.sampled_from(["Running", "Pending", "Failed"]),
    ready=st.booleans(), annotations=_ANNOTATIONS, created=st.floats(0, 100, allow_nan=False),
    deleting=st.booleans(), host_network=st.booleans())
_ENDPOINTS = st.builds(EndpointInfo, addresses=_ADDRS,
                       node_name=st.sampled_from([NODE, "node2", None]),
                       ready=st.sampled_from([True, False, None]),
                       serving=st.sampled_from([True, False, None]),
                       terminating=st.sampled_from([True, False, None]))
def _slice(namespace, name, service_name, address_type, endpoints):
    local_ready, local_st, usable = summarize(endpoints, NODE)
    return EndpointSliceInfo(namespace, name, service_name, address_type,
                             local_ready=local_ready, local_serving_terminating=local_st,
                             usable=usable)


_SLICES = st.builds(_slice, namespace=st.sampled_from(["a", "b"]),
                    name=st.text("klm", min_size=1, max_size=3),
                    service_name=st.text("xyz", min_size=1, max_size=3),
                    address_type=st.sampled_from(["IPv4", "IPv6", "FQDN"]),
                    endpoints=st.lists(_ENDPOINTS, max_size=3).map(tuple))


# Kubernetes keys objects by namespace/name: a snapshot never holds two with one key.
_UNIQUE_SERVICES = st.lists(_SERVICES, max_size=6, unique_by=lambda s: s.key)
_UNIQUE_PODS = st.lists(_PODS, max_size=4, unique_by=lambda p: p.key)
_UNIQUE_SLICES = st.lists(_SLICES, max_size=4, unique_by=lambda s: s.key)


def _snapshot(services, pods, slices):
    return Snapshot(node=NODE_INFO, pods={p.key: p for p in pods},
                    services={s.key: s for s in services},
                    endpoint_slices={s.key: s for s in slices})


def _allowed(prefix, use) -> bool:
    if use == "pod-cidr":
        return str(prefix) in NODE_INFO.pod_cidrs
    pod_cidrs = [ipaddress.ip_network(c) for c in NODE_INFO.pod_cidrs]
    if use == "pod-ip" and any(prefix.version == c.version and prefix.subnet_of(c)
                               for c in pod_cidrs):
        return True
    pool = pool_for(prefix, CFG.pools)
    return pool is not None and use in pool.allow


@settings(max_examples=200, deadline=None)
@given(_UNIQUE_SERVICES, _UNIQUE_PODS, _UNIQUE_SLICES)
def test_every_announcement_is_the_nodes_own_or_in_an_allowing_pool(services, pods, slices):
    decision = decide(_snapshot(services, pods, slices), CFG, NODE)
    for key, announcement in decision.announcements.items():
        prefix = announcement.prefix
        assert str(prefix) == key
        winners = [c for c in decision.claims if c.prefix == prefix and c.announced]
        assert winners, f"{prefix} announced without an announced claim"
        assert all(_allowed(prefix, c.use) for c in winners), (prefix, winners)
    for route in decision.kernel_routes.values():
        assert str(route.prefix) in decision.announcements


@settings(max_examples=100, deadline=None)
@given(_UNIQUE_SERVICES, _UNIQUE_PODS, _UNIQUE_SLICES, st.randoms())
def test_the_result_does_not_depend_on_input_order(services, pods, slices, rnd: random.Random):
    first = decide(_snapshot(services, pods, slices), CFG, NODE)
    for items in (services, pods, slices):
        rnd.shuffle(items)
    second = decide(_snapshot(services, pods, slices), CFG, NODE)
    assert first.announcements == second.announcements
    assert first.kernel_routes == second.kernel_routes
    assert sorted(map(repr, first.claims)) == sorted(map(repr, second.claims))


_JUNK = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                     lambda inner: st.lists(inner, max_size=3)
                     | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=8)


@settings(max_examples=200, deadline=None)
@given(st.builds(ServiceInfo, namespace=st.text(max_size=3), name=st.text(max_size=3),
                 type=_JUNK, cluster_ips=st.lists(_JUNK, max_size=2).map(tuple),
                 external_ips=st.lists(_JUNK, max_size=2).map(tuple),
                 lb_ips=st.lists(_JUNK, max_size=2).map(tuple),
                 external_traffic_policy=_JUNK,
                 annotations=st.dictionaries(st.text(max_size=20), _JUNK, max_size=3)),
       st.builds(PodInfo, namespace=st.text(max_size=3), name=st.text(max_size=3),
                 ips=st.lists(_JUNK, max_size=2).map(tuple),
                 annotations=st.dictionaries(st.just("bgpd.dev/external-ips"), _JUNK)))
def test_malformed_objects_never_raise(svc, pod):
    decision = decide(_snapshot([svc], [pod], []), CFG, NODE)
    assert isinstance(decision.claims, tuple)
