"""A hostile tenant against the whole agent on real parts (kube-apiserver, ExaBGP, FRR).

The tenant may create and edit Services, Pods and their annotations in its own namespace
only. Each test performs one attack from issue 11 and shows what the README promises: no
BGP session reset, no address moved to or shared with another namespace, the watch never
wedged, the refusal reported on the object.
"""

from __future__ import annotations

import sys
import time

import pytest

from bgpd.kube.events import COMPONENT as EVENTS_COMPONENT
from tests.integration.agent_world import TOR_V4, RunningAgent, key_file, peer_state
from tests.integration.kube_fixtures import eventually, set_pod_status

pytestmark = pytest.mark.integration

POOL_COMMUNITY = "65000:100"
POOLS = [
    {"name": "team-a", "cidrs": ["198.51.100.0/26"], "namespaces": ["team-a"],
     "allow": ["external-ip", "pod-external-ip"], "communities": [POOL_COMMUNITY]},
    {"name": "shared", "cidrs": ["198.51.100.128/26"], "allow": ["external-ip", "pod-external-ip"],
     "communities": [POOL_COMMUNITY]},
]


def namespace(cp, name: str) -> None:
    cp.api("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                          "metadata": {"name": name}})


def service(cp, ns: str, name: str, ips: list[str], annotations: dict | None = None) -> None:
    cp.api("POST", f"/api/v1/namespaces/{ns}/services", {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "annotations": annotations or {}},
        "spec": {"ports": [{"port": 80}], "externalIPs": ips}})


def session_drops(router) -> int:
    info = router.vtysh("show bgp neighbors 10.0.0.2 json").get("10.0.0.2", {})
    return info.get("connectionsDropped", 0)


def communities(router, prefix: str) -> str | None:
    paths = router.vtysh(f"show bgp ipv4 unicast {prefix} json").get("paths", [])
    return paths[0].get("community", {}).get("string", "") if paths else None


def events(cp, ns: str, name: str) -> list[dict]:
    """The agent's Events on ``name`` (not the API server's own on the same Service)."""
    items = cp.api("GET", f"/api/v1/namespaces/{ns}/events")["items"]
    return [e for e in items if e["involvedObject"]["name"] == name
            and e.get("reportingComponent") == EVENTS_COMPONENT]


@pytest.fixture(scope="module")
def tenants(agent_world):
    cp = agent_world[0]
    for name in ("team-a", "team-b"):
        namespace(cp, name)
    return agent_world


@pytest.fixture
def agent(tenants, tmp_path):
    cp, _, node, router = tenants
    running = RunningAgent(cp, node, tmp_path, password=key_file(tmp_path), pools=POOLS)
    with running.running() as a:
        eventually(lambda: peer_state(a, TOR_V4) == "established", "the session up")
        yield a


def test_a_flood_of_communities_does_not_reset_the_session(tenants, agent):
    cp, _, _, router = tenants
    drops = session_drops(router)
    # Under the value limit but over limits.max_communities; and 20,000 of them (220 KB,
    # which the API server takes): ExaBGP would have reset the session for every peer.
    service(cp, "team-b", "many", ["198.51.100.130"],
            {"bgpd.dev/communities": ",".join(f"65001:{i}" for i in range(100))})
    service(cp, "team-b", "flood", ["198.51.100.131"],
            {"bgpd.dev/communities": ",".join(f"65001:{i}" for i in range(20_000))})
    for prefix in ("198.51.100.130/32", "198.51.100.131/32"):
        eventually(lambda p=prefix: communities(router, p) == POOL_COMMUNITY,
                   f"{prefix} at the ToR with the pool's community only")
    time.sleep(2)  # a reset would show within a keepalive or two
    assert session_drops(router) == drops, "the BGP session was reset"
    for name in ("many", "flood"):
        eventually(lambda n=name: [e for e in events(cp, "team-b", n)
                                   if e["reason"] == "bad-annotation"], f"an Event on {name}")
    (flood,) = [e for e in events(cp, "team-b", "flood") if e["reason"] == "bad-annotation"]
    assert "longer than 2048" in flood["message"] and len(flood["message"]) <= 1024


def test_editing_an_old_service_cannot_take_another_namespaces_address(tenants, agent):
    cp, _, _, router = tenants
    # team-b's Service is the older one: by age alone it would win the address.
    service(cp, "team-b", "old", ["198.51.100.140"])
    time.sleep(1.1)  # creation timestamps have one-second resolution
    service(cp, "team-a", "web", ["198.51.100.10"])
    eventually(lambda: communities(router, "198.51.100.10/32") is not None, "team-a's address")
    cp.api("PATCH", "/api/v1/namespaces/team-b/services/old",
           {"spec": {"externalIPs": ["198.51.100.140", "198.51.100.10"]}},
           content_type="application/merge-patch+json")
    eventually(lambda: [e for e in events(cp, "team-b", "old")
                        if e["reason"] == "namespace-forbidden"], "team-b's claim refused")
    claims = agent.decision.explain(agent.decision.announcements["198.51.100.10/32"].prefix)
    assert {(c.owner, c.reason) for c in claims} == {
        ("service/team-a/web", "announced"), ("service/team-b/old", "namespace-forbidden")}


def test_a_pod_of_another_namespace_never_joins_a_pod_owned_address(tenants, agent):
    cp, _, _, _ = tenants
    address = "198.51.100.150"  # in the shared pool
    pods = (("team-a", "a1", "10.244.1.21"), ("team-b", "b1", "10.244.1.22"),
            ("team-a", "a2", "10.244.1.23"))
    for ns, name, ip in pods:
        cp.api("POST", f"/api/v1/namespaces/{ns}/pods", {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "annotations": {"bgpd.dev/external-ips": address}},
            "spec": {"nodeName": "node1", "containers": [{"name": "c", "image": "x"}]}})
        set_pod_status(cp, ns, name, ip, ready=True)
        time.sleep(1.1)  # a1 is the oldest claim, b1 comes between a1 and a2

    def route():
        hops = agent.decision.kernel_routes.get(f"{address}/32") if agent.decision else None
        return hops and {h.gateway for h in hops.nexthops}

    eventually(lambda: route() == {"10.244.1.21", "10.244.1.23"},
               "ECMP across team-a's pods only")
    lost = [c for c in agent.decision.claims if c.owner == "pod/team-b/b1"]
    assert [c.reason for c in lost] == ["conflict"]
    for ns, name, _ in pods:
        cp.api("DELETE", f"/api/v1/namespaces/{ns}/pods/{name}?gracePeriodSeconds=0")


def test_a_deeply_nested_object_does_not_wedge_the_watch(tenants, agent):
    cp, _, _, router = tenants
    # The API server accepts JSON nested up to 10,000 levels (here in managedFields, which
    # any editor of a Service can write); Python's decoder stops near 1,000 by default.
    nested: dict = {}
    cur = nested
    for _ in range(9000):
        cur["f:a"] = {}
        cur = cur["f:a"]
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(20_000)  # for this test's own encoder
    try:
        cp.api("POST", "/api/v1/namespaces/team-b/services", {
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "deep", "managedFields": [{
                "manager": "tenant", "operation": "Update", "apiVersion": "v1",
                "fieldsType": "FieldsV1", "fieldsV1": nested}]},
            "spec": {"ports": [{"port": 80}], "externalIPs": ["198.51.100.160"]}})
    finally:
        sys.setrecursionlimit(limit)
    service(cp, "team-b", "after", ["198.51.100.161"])
    for prefix in ("198.51.100.160/32", "198.51.100.161/32"):
        eventually(lambda p=prefix: communities(router, p) is not None, f"{prefix} announced")
    stats = agent.cluster.stats()["Service"]
    assert stats.watch_restarts == 0 and stats.relists == 0
