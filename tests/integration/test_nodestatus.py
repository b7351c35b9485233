"""The node's BGPNodeStatus against a real kube-apiserver and kube-controller-manager.

The CRD, namespace and RBAC are applied from daemonset/base/ as they ship; the writer runs
with a token of the agent's ServiceAccount (so the RBAC is shown to be enough), over a real
Agent whose ports are the unit tests' fakes (its sessions set up or down by the test).
Writes are counted twice: the requests the writer sent, and the object's resourceVersion.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from bgpd.kube.client import KubeClient
from bgpd.kube.statuswriter import StatusWriter
from bgpd.nodestatus import PATH, StatusSource, StatusTiming
from tests.controlplane.controlplane import ControlPlane
from tests.integration.kube_fixtures import create_node, eventually, start_control_plane
from tests.unit.test_nodestatus import make_agent

pytestmark = pytest.mark.integration

BASE = Path(__file__).resolve().parents[2] / "daemonset" / "base"
SA = "system:serviceaccount:bgpd-system:bgpd"
FAST = StatusTiming(min_interval_s=0.5, counts_interval_s=1.0, refresh_s=2.0,
                    refresh_jitter=0.0, poll_s=0.1, backoff_initial_s=0.2, backoff_max_s=1.0,
                    absent_retry_s=1.0)


@pytest.fixture(scope="module")
def cp():
    # The default controllers include the garbage collector: owner references are honoured.
    plane = start_control_plane()
    try:
        for name in ("namespace.yaml", "rbac.yaml", "bgpnodestatus-crd.yaml"):
            plane.kubectl("apply", "-f", str(BASE / name))
        plane.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                      "customresourcedefinition/bgpnodestatuses.bgpd.dev")
        yield plane
    finally:
        plane.close()


class Counting:
    """The writer's client, counting what it sends."""

    def __init__(self, client: KubeClient):
        self.client = client
        self.calls: list[tuple[str, str]] = []

    def call(self, method, path, **kwargs):
        self.calls.append((method, path))
        return self.client.call(method, path, **kwargs)

    def request_json(self, method, path, **kwargs):
        self.calls.append((method, path))
        return self.client.request_json(method, path, **kwargs)

    def patches(self) -> int:
        return sum(1 for m, p in self.calls if m == "PATCH")


class World:
    def __init__(self, cp: ControlPlane, tmp: Path, timing: StatusTiming):
        self.cp = cp
        self.node = f"ns-{uuid.uuid4().hex[:8]}"
        create_node(cp, self.node, "172.20.1.11", "10.244.1.0/24")
        self.node_uid = cp.api("GET", f"/api/v1/nodes/{self.node}")["metadata"]["uid"]
        kubeconfig = cp.write_token_kubeconfig(tmp / "agent.kubeconfig", "bgpd-system", "bgpd")
        self.kube = KubeClient.from_kubeconfig(str(kubeconfig))
        self.client = Counting(self.kube)
        self.agent, self.speaker = make_agent()
        self.writer = StatusWriter(self.client, self.node, StatusSource(self.agent),
                                   timing=timing)

    @property
    def path(self) -> str:
        return f"{PATH}/{self.node}"

    def get(self) -> dict | None:
        return self.cp.get_or_none(self.path)

    def status(self) -> dict:
        return (self.get() or {}).get("status") or {}

    def close(self) -> None:
        self.writer.stop()
        self.kube.close()


@pytest.fixture
def make_world(cp, tmp_path):
    made: list[World] = []

    def make(timing: StatusTiming = FAST, start: bool = True) -> World:
        world = World(cp, tmp_path, timing)
        made.append(world)
        if start:
            world.writer.start()
        return world

    yield make
    for world in made:
        world.close()


def test_created_owned_by_its_node_with_printer_columns(make_world):
    w = make_world()
    obj = eventually(lambda: w.get() if w.status().get("peersUp") else None,
                     "the BGPNodeStatus written")
    assert obj["metadata"]["ownerReferences"] == [
        {"apiVersion": "v1", "kind": "Node", "name": w.node, "uid": w.node_uid}]
    st = obj["status"]
    assert st["ready"] is True and st["peersUp"] == "1/1"
    assert st["announced"] == {"ipv4": 4, "ipv6": 1, "total": 5}
    assert st["rejections"]["total"] == 2
    header, row = w.cp.kubectl("get", "bgpnodestatuses", w.node).splitlines()
    assert header.split() == ["NAME", "READY", "PEERS", "UP", "ANNOUNCED", "HELD", "REJECTED",
                              "UPDATED", "AGE"]
    assert row.split()[:6] == [w.node, "true", "1/1", "5", "0", "2"]
    header, row = w.cp.kubectl("get", "bgpns", w.node, "-o", "wide").splitlines()
    assert header.split()[-3:] == ["REASON", "VERSION", "CONFIG"]
    assert row.split()[-3:] == ["ok", "0.1.0", st["configGeneration"]]


def test_not_rewritten_when_nothing_changes(make_world):
    # Quick to write any change (0.2 s, counts 0.5 s), but no refresh during the test.
    w = make_world(StatusTiming(min_interval_s=0.2, counts_interval_s=0.5, refresh_s=600.0,
                                poll_s=0.1))
    eventually(lambda: w.status().get("peersUp"), "the first write")
    rv, patches = w.get()["metadata"]["resourceVersion"], w.client.patches()
    deadline = time.monotonic() + 5.0  # 50 looks at the agent, each after a fresh reconcile
    while time.monotonic() < deadline:
        w.agent.reconcile()  # a resync: only lastReconcileTime moves
        time.sleep(0.1)
        assert w.client.patches() == patches, "written although nothing changed"
    assert w.get()["metadata"]["resourceVersion"] == rv


def test_a_session_drop_is_in_the_api_within_seconds(make_world):
    w = make_world(StatusTiming())  # the production pacing
    eventually(lambda: w.status().get("peersUp") == "1/1", "the first write")
    time.sleep(2.5)  # past the minimum interval since that write, as in steady state
    w.speaker.state, w.speaker.since, w.speaker.last_error = "down", time.time(), "hold timer"
    dropped = time.monotonic()
    eventually(lambda: w.status().get("peersUp") == "0/1", "the session down in the API", 10)
    took = time.monotonic() - dropped
    print(f"session drop visible in the API after {took:.2f} s")
    assert took < 3.0
    (peer,) = w.status()["peers"]
    assert peer["state"] == "down" and peer["lastError"] == "hold timer"


def test_a_flapping_session_is_rate_limited(make_world):
    timing = StatusTiming(poll_s=0.05)  # looks 20 times a second; writes at most every 2 s
    w = make_world(timing)
    eventually(lambda: w.status().get("peersUp"), "the first write")
    rv0, patches0 = int(w.get()["metadata"]["resourceVersion"]), w.client.patches()
    started = time.monotonic()
    while time.monotonic() - started < 8.0:
        w.speaker.state = "down" if w.speaker.state == "established" else "established"
        w.speaker.since = time.time()
        time.sleep(0.03)
    w.writer.stop()
    writes = w.client.patches() - patches0
    print(f"{writes} writes while the session flapped 260 times in 8 s")
    most = 8.0 / timing.min_interval_s + 1
    assert 2 <= writes <= most, f"{writes} writes in 8 s"
    # The server saw as many versions (resourceVersions are etcd revisions: they grow,
    # shared with other objects, so only a lower bound on the writes is exact).
    assert int(w.get()["metadata"]["resourceVersion"]) > rv0


def test_a_deleted_object_is_recreated(make_world):
    w = make_world()  # FAST: a refresh every 2 s
    first = eventually(lambda: w.get() if w.status().get("peersUp") else None, "the first write")
    w.cp.api("DELETE", w.path)
    again = eventually(lambda: (o := w.get()) and o["metadata"]["uid"] != first["metadata"]["uid"]
                       and o.get("status", {}).get("peersUp") and o, "the object recreated")
    assert again["metadata"]["ownerReferences"][0]["uid"] == w.node_uid
    assert w.writer.creates == 2


def test_goes_with_its_node(make_world):
    w = make_world()
    eventually(lambda: w.status().get("peersUp"), "the first write")
    w.writer.stop()  # its agent would be gone with the Node
    w.cp.api("DELETE", f"/api/v1/nodes/{w.node}")
    eventually(lambda: w.get() is None, "the garbage collector deleting the status", 60)


def test_the_agent_may_do_exactly_this(cp):
    def can(*args: str) -> bool:
        answer = cp.kubectl("auth", "can-i", f"--as={SA}", *args, check=False).strip()
        assert answer in ("yes", "no"), args
        return answer == "yes"

    assert can("create", "bgpnodestatuses.bgpd.dev")
    assert can("patch", "bgpnodestatuses.bgpd.dev", "--subresource=status")
    for verb in ("get", "list", "watch", "update", "patch", "delete"):
        assert not can(verb, "bgpnodestatuses.bgpd.dev"), verb
    assert not can("update", "bgpnodestatuses.bgpd.dev", "--subresource=status")
    assert not can("create", "customresourcedefinitions.apiextensions.k8s.io")
