"""Scheduling gated on BGP against a real kube-apiserver and the node lifecycle controller:
the condition the agent writes becomes the controller's NoSchedule taint, and goes away.

The agent behind the writer is a stand-in whose sessions the test brings down and up (the
lab's e2e drives the real ones); what is real is the condition written with the
ServiceAccount's optional RBAC, and Kubernetes' own reaction to it.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from bgpd.kube.client import KubeClient
from bgpd.kube.nodecondition import ConditionWriter
from bgpd.model import Announcement, PeerStatus
from bgpd.policy.claims import Claim
from tests.controlplane.controlplane import DEFAULT_CONTROLLERS
from tests.integration.kube_fixtures import create_node, eventually, start_control_plane

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
NODE = "gate-node"
CIDR = "10.244.7.0/24"
TAINT = "node.kubernetes.io/network-unavailable"
DEBOUNCE = 2.0


class Agent:
    """What ConditionWriter reads: the decision, the speaker's sessions, the status."""

    def __init__(self) -> None:
        import ipaddress

        net = ipaddress.ip_network(CIDR)
        claim = Claim(CIDR, net, "pod-cidr", f"node/{NODE}", 0.0, "announced", "", key=CIDR)
        self.decision = SimpleNamespace(claims=(claim,))
        self.up = False
        self.status = SimpleNamespace(synced=True, api_healthy=True, held=0, peers_held=())
        self.speaker = SimpleNamespace(
            peers=lambda: [PeerStatus("10.0.0.1", 65000, "established" if self.up else "down")],
            announced=lambda peer: {Announcement(net)} if self.up else set())

    def snapshot_views(self):
        return {"decision": self.decision}


def apply_manifests(cp, *paths: Path) -> None:
    for path in paths:
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc:
                continue
            kind = doc["kind"]
            plural = {"ServiceAccount": "serviceaccounts", "ClusterRole": "clusterroles",
                      "ClusterRoleBinding": "clusterrolebindings", "Role": "roles",
                      "RoleBinding": "rolebindings"}[kind]
            ns = doc["metadata"].get("namespace")
            group = "/api/v1" if kind == "ServiceAccount" else \
                "/apis/rbac.authorization.k8s.io/v1"
            base = f"{group}/namespaces/{ns}/{plural}" if ns else f"{group}/{plural}"
            cp.api("POST", base, doc)


def keep_ready(cp, stop: threading.Event) -> None:
    """A kubelet's heartbeat, so the lifecycle controller never calls the node unreachable."""
    while not stop.wait(5.0):
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        cp.request("PATCH", f"/api/v1/nodes/{NODE}/status", {"status": {"conditions": [
            {"type": "Ready", "status": "True", "reason": "Test", "lastHeartbeatTime": now,
             "lastTransitionTime": now}]}}, content_type="application/strategic-merge-patch+json")


def taints(cp) -> set[str]:
    node = cp.api("GET", f"/api/v1/nodes/{NODE}")
    return {t["key"] for t in node.get("spec", {}).get("taints") or ()}


def condition(cp) -> str | None:
    node = cp.api("GET", f"/api/v1/nodes/{NODE}")
    return next((c["status"] for c in node["status"].get("conditions", ())
                 if c["type"] == "NetworkUnavailable"), None)


def test_the_condition_becomes_the_taint_and_goes(tmp_path):
    cp = start_control_plane(controllers=(*DEFAULT_CONTROLLERS, "node-lifecycle-controller"))
    stop = threading.Event()
    try:
        cp.api("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                              "metadata": {"name": "bgpd-system"}})
        apply_manifests(cp, REPO / "daemonset" / "base" / "rbac.yaml",
                        REPO / "daemonset" / "optional" / "network-unavailable" / "rbac.yaml")
        create_node(cp, NODE, "10.0.0.2", CIDR)
        threading.Thread(target=keep_ready, args=(cp, stop), daemon=True).start()
        token = cp.mint_token("bgpd-system", "bgpd")
        cp.write_kubeconfig(tmp_path / "agent.kubeconfig", token=token)
        client = KubeClient.from_kubeconfig(str(tmp_path / "agent.kubeconfig"))
        agent = Agent()
        writer = ConditionWriter(client, NODE, agent, debounce_seconds=DEBOUNCE)
        writer.start()
        try:
            # Sessions down since the start: after the debounce the condition, then the taint.
            eventually(lambda: condition(cp) == "True", "NetworkUnavailable=True")
            eventually(lambda: TAINT in taints(cp), "the network-unavailable taint")
            agent.up = True
            started = time.monotonic()
            eventually(lambda: condition(cp) == "False", "NetworkUnavailable=False")
            eventually(lambda: TAINT not in taints(cp), "the taint gone")
            print(f"taint gone {time.monotonic() - started:.1f} s after the session came up")
            writes = writer.writes
            agent.up = False  # a short reset: back before the debounce, nothing written
            time.sleep(DEBOUNCE / 2)
            agent.up = True
            time.sleep(DEBOUNCE)
            assert writer.writes == writes and condition(cp) == "False"
        finally:
            writer.stop()
            client.close()
    finally:
        stop.set()
        cp.close()
