"""The whole agent against a real kube-apiserver, ExaBGP and an FRR peer in namespaces.

The agent runs in this process (its adapters put ExaBGP and the kernel table in the node's
namespace); the API server runs on this namespace's loopback.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import threading
import time

import pytest

from bgpd import client as cli_client
from bgpd.config import parse_config
from bgpd.kube.client import KubeClient
from bgpd.kube.events import COMPONENT as EVENTS_COMPONENT
from bgpd.runner import build
from tests.controlplane.controlplane import free_port
from tests.integration.kube_fixtures import create_node, eventually, start_control_plane
from tests.integration.routers import NODE_V4, TOR_V4, frr, frr_config, tor_and_node

pytestmark = pytest.mark.integration

TOR_AS, NODE_AS = 65000, 64512
NODE = "node1"
GR_SECONDS = 30
RESTART_GAP_SECONDS = 5.0  # how long the agent stays down in the graceful-restart test


def agent_config(debug: int, metrics: int):
    return parse_config({
        "bgp": {"asn": NODE_AS, "peers": [{"address": TOR_V4, "asn": TOR_AS, "hold_time": 9,
                                            "keepalive": 3, "graceful_restart": GR_SECONDS,
                                            "families": ["ipv4-unicast"]}]},
        "cluster": {"pod_cidrs": ["10.244.0.0/16"], "service_cidrs": ["10.96.0.0/16"]},
        "pools": [{"name": "external", "cidrs": ["198.51.100.0/24"], "allow": ["external-ip"]}],
        "http": {"debug_address": f"127.0.0.1:{debug}", "metrics_address": f"127.0.0.1:{metrics}"},
        "debounce_seconds": 0.02,
    })


@pytest.fixture(scope="module")
def world():
    with contextlib.ExitStack() as stack:
        cp = start_control_plane()
        stack.callback(cp.close)
        tor, node = stack.enter_context(tor_and_node("agent"))
        conf = frr_config(TOR_AS, {NODE_V4: NODE_AS},
                          extra=f" bgp graceful-restart\n bgp graceful-restart restart-time {GR_SECONDS}")
        router = stack.enter_context(frr(tor, conf))
        create_node(cp, NODE, NODE_V4, "10.244.1.0/24")
        yield cp, tor, node, router


@contextlib.contextmanager
def running_agent(cp, node_ns):
    debug, metrics = free_port(), free_port()
    config = agent_config(debug, metrics)
    kube = KubeClient.from_kubeconfig(str(cp.kubeconfig))
    parts = build(config, NODE, kube, netns=node_ns)
    stop = threading.Event()
    parts.start()
    thread = threading.Thread(target=parts.agent.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield parts.agent, f"http://127.0.0.1:{debug}"
    finally:
        stop.set()
        parts.agent.wake()
        thread.join(30)
        parts.stop()
        kube.close()
        assert not thread.is_alive(), "the agent did not stop"


def tor_prefixes(router) -> set[str]:
    return set(router.routes("ipv4"))


def cli(command: str, endpoint: str, **kw) -> tuple[int, str]:
    args = argparse.Namespace(endpoint=endpoint, output="json", received=False, kernel=False,
                              advertised=True, **kw)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli_client.command(command, args)
    return code, out.getvalue()


def service(name: str, external_ip: str) -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"selector": {"app": name}, "ports": [{"port": 80}],
                     "externalIPs": [external_ip]}}


def ours(events: list[dict]) -> list[dict]:
    """The agent's Events only: the API server writes its own on the same Service (its
    repair loop's ClusterIPNotAllocated for a Service created without a cluster IP)."""
    return [e for e in events if e.get("reportingComponent") == EVENTS_COMPONENT]


def events_for(cp, name: str) -> list[dict]:
    items = cp.api("GET", "/api/v1/namespaces/default/events")["items"]
    return ours([e for e in items if e["involvedObject"]["name"] == name])


def test_services_are_announced_withdrawn_and_rejected_as_the_policy_says(world):
    cp, tor, node, router = world
    with running_agent(cp, node) as (agent, endpoint):
        eventually(lambda: "10.244.1.0/24" in tor_prefixes(router), "pod CIDR at the ToR")
        cp.api("POST", "/api/v1/namespaces/default/services", service("web", "198.51.100.10"))
        cp.api("POST", "/api/v1/namespaces/default/services", service("evil", "192.0.2.10"))
        eventually(lambda: "198.51.100.10/32" in tor_prefixes(router), "externalIP at the ToR")

        code, out = cli("explain", endpoint, target="198.51.100.10")
        doc = json.loads(out)
        assert code == 0 and doc["announced"]
        assert [(c["owner"], c["verdict"], c["pool"]) for c in doc["claims"]] == [
            ("service/default/web", "announced", "external")]

        eventually(lambda: events_for(cp, "evil"), "an Event on the rejected Service")
        event = events_for(cp, "evil")[0]
        assert event["reason"] == "outside-pools" and "192.0.2.10" in event["message"]
        # kubectl describe finds an object's Events by kind, name, namespace *and* uid.
        uid = cp.api("GET", "/api/v1/namespaces/default/services/evil")["metadata"]["uid"]
        described = cp.api("GET", "/api/v1/namespaces/default/events?fieldSelector="
                           "involvedObject.kind=Service,involvedObject.name=evil,"
                           f"involvedObject.namespace=default,involvedObject.uid={uid}")
        assert [e["reason"] for e in ours(described["items"])] == ["outside-pools"]
        code, out = cli("explain", endpoint, target="192.0.2.10")
        doc = json.loads(out)
        assert code == 1 and not doc["announced"]
        assert [c["verdict"] for c in doc["claims"]] == ["outside-pools"]
        assert "192.0.2.10/32" not in tor_prefixes(router)

        cp.api("DELETE", "/api/v1/namespaces/default/services/web")
        eventually(lambda: "198.51.100.10/32" not in tor_prefixes(router), "the withdrawal")
        assert "10.244.1.0/24" in tor_prefixes(router)
        assert "192.0.2.10/32" not in tor_prefixes(router)
        code, out = cli("status", endpoint)
        status = json.loads(out)
        assert status["peers_up"] == 1 and status["rejections"] == {"outside-pools": 1}
        cp.api("DELETE", "/api/v1/namespaces/default/services/evil")


def test_graceful_restart_keeps_the_tor_forwarding_while_the_agent_restarts(world):
    cp, tor, node, router = world

    def in_fib() -> bool:
        return "10.244.1.0/24" in router.kernel_routes("ipv4")

    with running_agent(cp, node):
        eventually(in_fib, "the pod CIDR in the ToR's FIB")
    # The agent is gone (SIGTERM path: no withdraw); sample the ToR's FIB across the gap.
    gap_end = time.monotonic() + RESTART_GAP_SECONDS
    samples = 0
    while time.monotonic() < gap_end:
        assert in_fib(), "the ToR dropped the route while the agent was down"
        samples += 1
        time.sleep(0.2)
    assert samples >= 10
    with running_agent(cp, node) as (agent, endpoint):
        eventually(lambda: cli("peers", endpoint)[0] == 0, "the session back up")
        assert in_fib()
