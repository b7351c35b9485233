"""The whole agent on real parts for fault and hostile-input tests: a real kube-apiserver, a
ToR (FRR, graceful restart, TCP MD5) in a namespace, the agent in this process with ExaBGP
and the kernel table in the node's namespace, its config in a file it watches and its
state in a folder, as the DaemonSet runs it."""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path

import pytest
import yaml

from bgpd.config import load_config
from bgpd.kube.client import KubeClient
from bgpd.runner import build
from tests.controlplane.controlplane import free_port
from tests.integration.kube_fixtures import create_node, start_control_plane
from tests.integration.routers import NODE_V4, TOR_V4, frr, frr_config, run, tor_and_node

TOR_AS, TOR2_AS, NODE_AS = 65000, 65001, 64512
NODE = "node1"
GR_SECONDS = 30
HOLD_SECONDS = 8.0  # the guard's hold time in these tests (30 s by default)
TOR2_V4, NODE2_V4 = "10.0.1.1", "10.0.1.2"
CLIENT_NET = "192.0.2.0/24"
MD5_KEY = "s3cret-Never-Logged"


POOLS = [{"name": "external", "cidrs": ["198.51.100.0/24"], "allow": ["external-ip"]}]


def config_doc(debug: int, metrics: int, *, extra_peer: bool = False, password: str = "",
               level: str = "info", pools: list | None = None) -> dict:
    peer = {"address": TOR_V4, "asn": TOR_AS, "local_address": NODE_V4, "hold_time": 9,
            "keepalive": 3, "graceful_restart": GR_SECONDS, "families": ["ipv4-unicast"]}
    if password:
        peer["password_file"] = password
    peers = [peer]
    if extra_peer:
        peers.append({"address": TOR2_V4, "asn": TOR2_AS, "local_address": NODE2_V4,
                      "hold_time": 9, "keepalive": 3, "families": ["ipv4-unicast"]})
    return {
        "bgp": {"asn": NODE_AS, "router_id": NODE_V4, "peers": peers},
        "cluster": {"pod_cidrs": ["10.244.0.0/16"], "service_cidrs": ["10.96.0.0/16"]},
        "pools": pools if pools is not None else POOLS,
        "import": {"enabled": True, "allow": [CLIENT_NET]},
        "safety": {"withdraw_hold_seconds": HOLD_SECONDS},
        "http": {"debug_address": f"127.0.0.1:{debug}", "metrics_address": f"127.0.0.1:{metrics}"},
        "logging": {"level": level},
        "debounce_seconds": 0.02,
    }


@pytest.fixture(scope="module")
def agent_world():
    """(control plane, ToR namespace, node namespace, the ToR's FRR), one per test module."""
    with contextlib.ExitStack() as stack:
        cp = start_control_plane()
        stack.callback(cp.close)
        tor, node = stack.enter_context(tor_and_node("faults"))
        conf = frr_config(
            TOR_AS, {NODE_V4: NODE_AS}, networks=[CLIENT_NET],
            passwords={NODE_V4: MD5_KEY},
            extra=f" bgp graceful-restart\n bgp graceful-restart restart-time {GR_SECONDS}")
        router = stack.enter_context(frr(tor, conf))
        create_node(cp, NODE, NODE_V4, "10.244.1.0/24")
        yield cp, tor, node, router


class RunningAgent:
    def __init__(self, cp, node_ns: str, folder: Path, **doc_kw):
        self.cp, self.node_ns, self.folder = cp, node_ns, folder
        self.debug, self.metrics = free_port(), free_port()
        self.path = folder / "bgpd.yaml"
        self.doc_kw = doc_kw
        self.write(**doc_kw)

    def write(self, **doc_kw) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump(config_doc(self.debug, self.metrics, **doc_kw)))
        os.replace(tmp, self.path)  # as an editor or the kubelet does: a new file

    @contextlib.contextmanager
    def running(self):
        kube = KubeClient.from_kubeconfig(str(self.cp.kubeconfig))
        parts = build(load_config(str(self.path)), NODE, kube, netns=self.node_ns,
                      state_dir=str(self.folder / "state"), config_path=str(self.path))
        stop = threading.Event()
        parts.start()
        thread = threading.Thread(target=parts.agent.run, args=(stop,), daemon=True)
        thread.start()
        try:
            yield parts.agent
        finally:
            stop.set()
            parts.agent.wake()
            thread.join(30)
            parts.stop()
            kube.close()
            assert not thread.is_alive(), "the agent did not stop"


def peer_state(agent, address: str) -> str:
    return next((p.state for p in agent.speaker.peers() if p.address == address), "")


def node_routes(node_ns: str) -> str:
    return run("ip", "-n", node_ns, "-4", "route", "show")


def key_file(folder: Path) -> str:
    key = folder / "tor1.key"
    key.write_text(MD5_KEY + "\n")
    key.chmod(0o600)
    return str(key)
