"""One Event per object and decision, cluster-wide (issue 11), against a real kube-apiserver.

200 Nodes and 200 simulated agents (real ``EventRecorder`` instances, one per Node, a few
sharing one client) meet one bad Service: every agent reaches the same rejection, yet at
most one Event is created per dedup period, and only the few agents the hash draws even
try. Everything is deterministic: the recorders share a fixed clock, and which agents are
drawn is a pure function of (node, Event name), so the periods used are found by search.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from bgpd.config import parse_config
from bgpd.kube import convert
from bgpd.kube import events as kube_events
from bgpd.kube.client import KubeClient
from bgpd.kube.events import DEDUP_WINDOW_S, EVENT_NAME_MAX, EventRecorder, ObjectRef
from bgpd.model import NodeInfo, Snapshot
from bgpd.policy import reasons
from bgpd.policy.decide import Decider
from tests.integration.kube_fixtures import (
    ensure_namespace,
    node_body,
    pod_body,
    service_body,
    start_control_plane,
)

pytestmark = pytest.mark.integration

AGENTS = 200
NODES = [f"node-{i:03d}" for i in range(AGENTS)]
RECORDERS_PER_CLIENT = 20
NS = "tenant"
MOST_ATTEMPTS = 12
"""POSTs allowed for one cluster-wide Event: REPORTERS_PER_EVENT (4) expected, with room
for the draw's spread at 200 nodes (P(more than 12) < 1e-3; this test is deterministic)."""
START = 1_750_000_200.0  # a fixed "now": the periods in Event names do not depend on the day
CONFIG = parse_config({
    "bgp": {"asn": 64512},
    "pools": [{"name": "ext", "cidrs": ["198.51.100.0/24"], "allow": ["external-ip"]}],
})
DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


class Clock:
    """The recorders' shared clock, set by the test."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def cp():
    plane = start_control_plane(controllers=None)  # nothing else may create Nodes
    try:
        for name in NODES:
            plane.api("POST", "/api/v1/nodes", node_body(name))
        ensure_namespace(plane, NS)
        # No controller-manager: the ServiceAccount the admission plugin wants for Pods.
        plane.api("POST", f"/api/v1/namespaces/{NS}/serviceaccounts",
                  {"metadata": {"name": "default"}})
        yield plane
    finally:
        plane.close()


@pytest.fixture(scope="module")
def clock() -> Clock:
    return Clock()


@pytest.fixture(scope="module")
def recorders(cp, clock) -> Iterator[list[EventRecorder]]:
    clients = [KubeClient.from_kubeconfig(str(cp.kubeconfig))
               for _ in range(0, AGENTS, RECORDERS_PER_CLIENT)]
    agents = [EventRecorder(clients[i // RECORDERS_PER_CLIENT], node, clock=clock)
              for i, node in enumerate(NODES)]
    try:
        for recorder in agents:
            recorder.start()
        yield agents
    finally:
        for recorder in agents:
            recorder.stop()
        for client in clients:
            client.close()


def counters(recorders: list[EventRecorder]) -> list[tuple[int, int, int, int]]:
    return [(r.sent, r.existing, r.failed, r.skipped) for r in recorders]


def delta(before: list[tuple[int, ...]], recorders: list[EventRecorder]
          ) -> list[tuple[int, ...]]:
    return [tuple(b - a for a, b in zip(old, new, strict=True))
            for old, new in zip(before, counters(recorders), strict=True)]


def flush_all(recorders: list[EventRecorder]) -> None:
    for recorder in recorders:
        assert recorder.flush(30), f"{recorder.node_name}: Events still queued"


def events_about(cp, namespace: str, name: str) -> list[dict]:
    """The agents' Events on ``name``: the API server writes its own on the same Service
    (its repair loop's ClusterIPNotAllocated), whenever that loop happens to run."""
    items = cp.api("GET", f"/api/v1/namespaces/{namespace}/events"
                          f"?fieldSelector=involvedObject.name={name}")["items"]
    return [e for e in items if e.get("reportingComponent") == kube_events.COMPONENT]


def period_start(period: int) -> float:
    return period * DEDUP_WINDOW_S


# ---------------------------------------------------------------------------------------


def test_the_api_server_counts_nodes_for_the_draw(cp):
    """The draw divides by the cluster's node count, read as ``list nodes?limit=1``:
    the first item plus ``metadata.remainingItemCount``."""
    client = KubeClient.from_kubeconfig(str(cp.kubeconfig))
    try:
        page = client.request_json("GET", "/api/v1/nodes", query={"limit": 1})
        probe = EventRecorder(client, NODES[0])
        assert probe._node_count() == AGENTS
    finally:
        client.close()
    assert len(page["items"]) == 1
    assert page["metadata"].get("remainingItemCount") == AGENTS - 1, page["metadata"]


def test_one_bad_service_and_200_agents_make_one_event_per_period(cp, recorders, clock):
    # The rejection, as the agent's policy words it: an externalIP outside every pool.
    svc = cp.api("POST", f"/api/v1/namespaces/{NS}/services",
                 service_body(NS, "bad", external_ips=["203.0.113.10"]))
    info = convert.service_from(svc)
    decision = Decider().decide(
        Snapshot(node=NodeInfo(NODES[0]), services={info.key: info}), CONFIG, NODES[0])
    [claim] = [c for c in decision.rejections if c.owner == f"service/{NS}/bad"]
    assert claim.reason == reasons.OUTSIDE_POOLS
    assert decision.same_on_every_node(claim)  # so the agent records it cluster_wide=True
    ref = ObjectRef("Service", NS, "bad", uid=svc["metadata"]["uid"])
    reason, message = claim.reason, f"{claim.value}: {claim.detail}"  # Agent._record_rejections
    key = kube_events._digest(ref.kind, ref.namespace, ref.name, reason, message)

    def drawn(period: int) -> tuple[str, list[EventRecorder]]:
        name = recorders[0].event_name(ref, key, period_start(period))
        return name, [r for r in recorders if r.is_reporter(name)]

    # A period nobody is drawn for, followed by one somebody is (about 2 % of periods).
    first = int(START // DEDUP_WINDOW_S)
    empty = next(p for p in range(first, first + 5000) if not drawn(p)[1] and drawn(p + 1)[1])
    name, reporters = drawn(empty + 1)
    assert 1 <= len(reporters) <= MOST_ATTEMPTS, len(reporters)

    # Period `empty`: every agent records the rejection, none is drawn, nothing is written.
    clock.now = period_start(empty) + 1
    before = counters(recorders)
    assert all(r.record(ref, reason, message, cluster_wide=True) for r in recorders)
    flush_all(recorders)
    assert all(d == (0, 0, 0, 1) for d in delta(before, recorders))
    assert events_about(cp, NS, "bad") == []

    # The next period draws another set: exactly one Event, and only the drawn agents try.
    clock.now = period_start(empty + 1) + 1
    before = counters(recorders)
    assert all(r.record(ref, reason, message, cluster_wide=True) for r in recorders)
    clock.now += 1  # the same rejection again, later in the period: deduplicated
    assert not any(r.record(ref, reason, message, cluster_wide=True) for r in recorders)
    flush_all(recorders)
    changes = delta(before, recorders)
    attempts = {r.node_name: sent + existing + failed
                for r, (sent, existing, failed, _) in zip(recorders, changes, strict=True)}
    assert {n for n, tries in attempts.items() if tries} == {r.node_name for r in reporters}
    assert sum(attempts.values()) == len(reporters) <= MOST_ATTEMPTS
    assert sum(c[0] for c in changes) == 1, "exactly one agent created the Event"
    assert sum(c[1] for c in changes) == len(reporters) - 1  # the others found it there
    assert sum(c[2] for c in changes) == 0, [r.last_error for r in recorders if r.last_error]
    assert sum(c[3] for c in changes) == AGENTS - len(reporters)

    [event] = events_about(cp, NS, "bad")
    assert event["metadata"]["name"] == name
    assert event["involvedObject"] == {"apiVersion": "v1", "kind": "Service", "namespace": NS,
                                       "name": "bad", "uid": svc["metadata"]["uid"]}
    assert (event["reason"], event["message"], event["type"]) == (reason, message, "Warning")
    assert event["source"] == {"component": "bgpd"}  # no host: it speaks for every node
    assert event["reportingInstance"] in {r.node_name for r in reporters}


def test_a_node_scoped_rejection_from_three_agents_is_one_event(cp, recorders, clock):
    clock.now = START + 7 * DEDUP_WINDOW_S
    three = recorders[:3]
    ref = ObjectRef("Pod", NS, "claims-too-much")
    message = "not-an-address: 'not-an-address' is not a plain IP address"
    before = counters(three)
    assert all(r.record(ref, reasons.BAD_ADDRESS, message) for r in three)
    flush_all(three)
    changes = delta(before, three)
    assert sorted(changes) == [(0, 1, 0, 0), (0, 1, 0, 0), (1, 0, 0, 0)]  # same name: 1 POST wins
    [event] = events_about(cp, NS, "claims-too-much")
    assert event["involvedObject"] == {"apiVersion": "v1", "kind": "Pod", "namespace": NS,
                                       "name": "claims-too-much"}
    assert (event["reason"], event["message"]) == (reasons.BAD_ADDRESS, message)
    assert event["source"]["host"] in {r.node_name for r in three}


def test_event_names_stay_valid_for_253_character_pod_names(cp, recorders, clock):
    clock.now = START + 11 * DEDUP_WINDOW_S
    recorder = recorders[0]
    # Where the name gets cut to make room for the suffix: put '.' and '-' right there.
    cut = EVENT_NAME_MAX - len(recorder.event_name(ObjectRef("Pod", NS, "x"), "0" * 16,
                                                   clock.now).removeprefix("x"))
    names = [
        "p" * 253,
        "a" * (cut - 1) + "." + "b" * (253 - cut),
        "a" * (cut - 1) + "-" + "b" * (253 - cut),
        "a" * (cut - 2) + "--" + "b" * (253 - cut),
        ".".join(["c" * 62] * 4)[:253].rstrip("."),
    ]
    pods = {}
    for name in names:
        assert DNS_SUBDOMAIN.fullmatch(name) and len(name) <= 253
        pods[name] = cp.api("POST", f"/api/v1/namespaces/{NS}/pods", pod_body(NS, name, NODES[0]))
    before = counters([recorder])
    for name, pod in pods.items():
        ref = ObjectRef("Pod", NS, name, uid=pod["metadata"]["uid"])
        assert recorder.record(ref, reasons.BAD_ANNOTATION, f"bgpd.dev/external-ips on {name}")
    flush_all([recorder])
    [(sent, existing, failed, _)] = delta(before, [recorder])
    assert (sent, existing, failed) == (len(names), 0, 0), recorder.last_error
    for name, pod in pods.items():
        [event] = events_about(cp, NS, name)
        assert len(event["metadata"]["name"]) <= EVENT_NAME_MAX
        assert DNS_SUBDOMAIN.fullmatch(event["metadata"]["name"]), event["metadata"]["name"]
        assert event["involvedObject"]["name"] == name
        assert event["involvedObject"]["uid"] == pod["metadata"]["uid"]
        assert event["message"] == f"bgpd.dev/external-ips on {name}"
