"""drain.action withdraw asks the real API server whether another undrained node exists,
with the agent's own ServiceAccount: cordons, drain labels and this node itself are
filtered out by the server, and an unreachable API means "unknown" (never withdraw)."""

from __future__ import annotations

import pytest

from bgpd.config import DrainConfig
from bgpd.kube.client import KubeClient
from bgpd.kube.drainpeers import OthersAvailable
from tests.integration.kube_fixtures import create_node, eventually, start_control_plane
from tests.integration.test_netgate import REPO, apply_manifests

pytestmark = pytest.mark.integration

ME, OTHER = "drain-me", "drain-other"
DRAIN = DrainConfig(action="withdraw", check_seconds=1.0)
EXCLUDE = "node.kubernetes.io/exclude-from-external-load-balancers"


def _patch(cp, name: str, body: dict) -> None:
    cp.api("PATCH", f"/api/v1/nodes/{name}", body,
           content_type="application/merge-patch+json")


def test_another_undrained_node_is_found_by_the_api_server(tmp_path):
    cp = start_control_plane()
    try:
        cp.api("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                              "metadata": {"name": "bgpd-system"}})
        apply_manifests(cp, REPO / "daemonset" / "base" / "rbac.yaml")
        create_node(cp, ME, "10.0.0.2", "10.244.1.0/24")
        _patch(cp, ME, {"spec": {"unschedulable": True}})  # this node drains
        create_node(cp, OTHER, "10.0.0.3", "10.244.2.0/24")
        token = cp.mint_token("bgpd-system", "bgpd")
        cp.write_kubeconfig(tmp_path / "agent.kubeconfig", token=token)
        client = KubeClient.from_kubeconfig(str(tmp_path / "agent.kubeconfig"))
        changes = []
        others = OthersAvailable(client, ME, on_change=lambda: changes.append(1))
        others.start()
        try:
            assert others.get(DRAIN) is None  # nothing asked yet: unknown
            eventually(lambda: others.get(DRAIN) is True, "the other node found available")

            _patch(cp, OTHER, {"spec": {"unschedulable": True}})
            eventually(lambda: others.get(DRAIN) is False, "no node left once both cordoned")
            # Cordons are not a trigger in this config: the other node counts again.
            eventually(lambda: others.get(DrainConfig(action="withdraw", cordoned=False,
                                                      check_seconds=1.0)) is True,
                       "cordoned nodes available when cordons do not drain")

            _patch(cp, OTHER, {"spec": {"unschedulable": False},
                               "metadata": {"labels": {EXCLUDE: ""}}})
            eventually(lambda: others.get(DRAIN) is False, "a drain label excludes it too")
            _patch(cp, OTHER, {"metadata": {"labels": {EXCLUDE: None}}})
            eventually(lambda: others.get(DRAIN) is True, "back once the label is gone")
            assert len(changes) >= 3
        finally:
            others.stop()
            client.close()

        # An API server that stops answering: the answer ages into "unknown".
        client = KubeClient.from_kubeconfig(str(tmp_path / "agent.kubeconfig"))
        now = [0.0]
        others = OthersAvailable(client, ME, clock=lambda: now[0])
        others.get(DRAIN)
        others.check_once()
        assert others.get(DRAIN) is True
        cp.stop_apiserver()
        now[0] += 1.0
        others.check_once()  # fails: the last answer stands while fresh
        assert others.get(DRAIN) is True
        now[0] += 10 * DRAIN.check_seconds
        assert others.get(DRAIN) is None
        client.close()
    finally:
        cp.close()
