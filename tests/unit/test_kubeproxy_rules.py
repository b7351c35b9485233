"""kube-proxy's endpoint rules, transcribed from its own tests, run against our policy.

Sources (kubernetes/kubernetes, v1.33-1.36 line): pkg/proxy/topology_test.go
TestCategorizeEndpoints (the cases that are not about zone or node hints: hints narrow the
cluster set but never empty it, so they cannot change an announcement), the
packet-verdict cases of pkg/proxy/nftables/proxier_test.go (TestTerminatingEndpoints...),
and the unset-condition rules of endpointslicecache.go / endpoint.go, which no upstream
test covers.

kube-proxy works on derived booleans: R ready, S serving, T terminating, L local to this
node. We announce an address with Local policy when kube-proxy's *local* set is non-empty
on this node, and (with require_ready_endpoint) with Cluster policy when its *cluster*
set is non-empty; ``local_and_anywhere`` answers exactly those two questions.
"""

from __future__ import annotations

import pytest

from bgpd.model import EndpointInfo, EndpointSliceInfo
from bgpd.policy.endpoints import local_and_anywhere, summarize

NODE = "node-a"
PORTS = (("", "TCP"),)


def ep(flags: str, i: int) -> EndpointInfo:
    """An endpoint with explicit conditions: 'R', 'S', 'T' set to true, others false;
    'L' puts it on this node (else on another)."""
    return EndpointInfo(addresses=(f"10.0.0.{i}",), node_name=NODE if "L" in flags else "node-b",
                        ready="R" in flags, serving="S" in flags, terminating="T" in flags)


def decide(endpoints: list[EndpointInfo], address_type: str = "IPv4") -> tuple[int, bool]:
    ready, terminating, usable = summarize(endpoints, NODE)
    sl = EndpointSliceInfo("ns", "s", "svc", address_type, PORTS, ready, terminating, usable)
    return local_and_anywhere(PORTS, [sl], 4)


# (topology_test.go case, endpoints as flags, kube-proxy's local set size or None when the
#  case does not compute it, whether its cluster set / hasAnyEndpoints is non-empty)
TOPOLOGY_CASES = [
    ("12 iTP Local, no endpoints at all", [], 0, False),
    ("13 iTP Local, all endpoints remote: local empty, service has endpoints",
     ["R", "R"], 0, True),
    ("14 iTP Local, all endpoints local", ["RL", "RL"], 2, True),
    ("15 iTP Local, some endpoints local", ["RL", "R"], 1, True),
    ("16 Cluster, no endpoint ready, none serving-terminating", ["", ""], None, False),
    ("17 Cluster, some ready", ["", "R"], None, True),
    ("18 Cluster, all serving+terminating: the cluster fallback", ["STL", "ST"], None, True),
    ("19 iTP Local, eTP Cluster, some local", ["RL", "R"], 1, True),
    ("20 eTP Local, some local", ["RL", "R"], 1, True),
    ("21 iTP and eTP Local, some local", ["RL", "R"], 1, True),
    ("22 iTP and eTP Local, all remote", ["R", "R"], 0, True),
    ("23 all remote and serving-terminating: cluster fallback, local empty",
     ["ST", "ST"], 0, True),
    ("24 eTP Local: ready elsewhere (no cluster fallback), local falls back to S+T here",
     ["R", "L", "STL", "ST"], 1, True),
    ("A5 eTP Local, no endpoints", [], 0, False),
    ("A6 eTP Local, all remote", ["R", "R"], 0, True),
    ("A7 eTP Local, all local", ["RL", "RL"], 2, True),
    ("A8 eTP Local, some local", ["RL", "R"], 1, True),
]


@pytest.mark.parametrize("case", TOPOLOGY_CASES, ids=[c[0] for c in TOPOLOGY_CASES])
def test_categorize_endpoints(case):
    _, flags, local, anywhere = case
    got_local, got_anywhere = decide([ep(f, i) for i, f in enumerate(flags)])
    assert got_anywhere == anywhere
    if local is not None:
        assert got_local == local


# nftables proxier_test.go: (ready, serving, terminating, on this node) per endpoint, and
# the verdict for external traffic with eTP Local (local endpoints or DROP) and for traffic
# to the Service with any policy (cluster endpoints or REJECT).
VERDICT_CASES = [
    ("P1 Local: ready endpoints here", [(1, 1, 0, 1), (1, 1, 0, 1), (0, 1, 1, 1), (0, 0, 1, 1),
                                        (1, 1, 0, 0)], 2, True),
    ("P2 Local: only terminating here, ready elsewhere: the local fallback",
     [(0, 1, 1, 1), (0, 1, 1, 1), (0, 0, 1, 1), (1, 1, 0, 0)], 2, True),
    ("P3 Local: only terminating, remote: DROP here, the cluster fallback elsewhere",
     [(0, 1, 1, 0)], 0, True),
    ("P4 Local: nothing usable anywhere: REJECT", [(0, 0, 1, 1), (0, 0, 1, 0)], 0, False),
    ("P5 Cluster: ready endpoints", [(1, 1, 0, 1), (1, 1, 0, 1), (0, 1, 1, 0), (0, 0, 1, 0),
                                     (1, 1, 0, 0)], 2, True),
    ("P6 Cluster: only terminating", [(0, 1, 1, 1), (0, 1, 1, 1), (0, 0, 1, 0), (0, 1, 1, 0)],
     2, True),
    ("P7 Cluster: terminating on another node only", [(0, 1, 1, 0)], 0, True),
    ("P8 Cluster: nothing usable", [(0, 0, 1, 1), (0, 0, 1, 0)], 0, False),
]


@pytest.mark.parametrize("case", VERDICT_CASES, ids=[c[0] for c in VERDICT_CASES])
def test_packet_verdicts(case):
    _, endpoints, local, anywhere = case
    eps = [EndpointInfo(addresses=(f"10.0.1.{i}",), node_name=NODE if here else "node-b",
                        ready=bool(r), serving=bool(s), terminating=bool(t))
           for i, (r, s, t, here) in enumerate(endpoints)]
    assert decide(eps) == (local, anywhere)


# endpointslicecache.go / endpoint.go: how unset (null) conditions read.
UNSET_CASES = [
    ("unset ready reads as ready", dict(ready=None), 1, True),
    ("unset serving reads as serving: not ready but terminating is the fallback",
     dict(ready=False, serving=None, terminating=True), 1, True),
    ("unset terminating reads as not terminating: not ready, serving, not terminating is in "
     "no set", dict(ready=False, serving=True, terminating=None), 0, False),
    ("ready and terminating together count as ready (publishNotReadyAddresses)",
     dict(ready=True, serving=True, terminating=True), 1, True),
    ("ready unset and terminating true still counts as ready",
     dict(ready=None, terminating=True), 1, True),
    ("ready false, serving false, terminating true: not usable",
     dict(ready=False, serving=False, terminating=True), 0, False),
]


@pytest.mark.parametrize("case", UNSET_CASES, ids=[c[0] for c in UNSET_CASES])
def test_unset_conditions(case):
    _, conditions, local, anywhere = case
    assert decide([EndpointInfo(addresses=("10.0.2.1",), node_name=NODE, **conditions)]) == (
        local, anywhere)


def test_an_endpoint_without_a_node_name_is_never_local_but_counts_for_the_cluster():
    assert decide([EndpointInfo(addresses=("10.0.3.1",), node_name=None, ready=True)]) == (
        0, True)


def test_an_endpoint_without_an_address_is_ignored():
    assert decide([EndpointInfo(addresses=(), node_name=NODE, ready=True)]) == (0, False)


@pytest.mark.parametrize("address_type", ["IPv6", "FQDN"])
def test_only_slices_of_the_address_family_count(address_type):
    assert decide([ep("RL", 1)], address_type=address_type) == (0, False)


def test_a_slice_counts_only_for_the_service_ports_it_lists():
    ready, terminating, usable = summarize([ep("RL", 1)], NODE)
    metrics = EndpointSliceInfo("ns", "a", "svc", "IPv4", (("metrics", "TCP"),), ready,
                                terminating, usable)
    http = (("http", "TCP"),)
    assert local_and_anywhere(http, [metrics], 4) == (0, False)
    assert local_and_anywhere((("metrics", "UDP"),), [metrics], 4) == (0, False)
    assert local_and_anywhere((*http, ("metrics", "TCP")), [metrics], 4) == (1, True)


def test_the_local_fallback_is_per_port_across_slices():
    """Ready here on one port, only terminating here on another: each port decides alone."""
    a = EndpointSliceInfo("ns", "a", "svc", "IPv4", (("http", "TCP"),), 0, 3, True)
    b = EndpointSliceInfo("ns", "b", "svc", "IPv4", (("http", "TCP"),), 2, 0, True)
    # kube-proxy: the ready local endpoints of the port win over its terminating ones.
    assert local_and_anywhere((("http", "TCP"),), [a, b], 4) == (2, True)
