"""The node's BGPNodeStatus document, its change detection and the writer's pacing.

The document comes from a real Agent over the fakes of its ports; the writer runs against
an in-memory API with a fake clock, turn by turn (``StatusWriter.step``), so rate limits
are counted exactly, with no thread and no sleep.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace

import pytest

from bgpd.agent import Agent
from bgpd.kube.errors import KubeError
from bgpd.kube.statuswriter import REPORTERS, StatusWriter
from bgpd.model import PeerStatus
from bgpd.nodestatus import (
    MAX_REJECTIONS_LISTED,
    PATH,
    Facts,
    Pacer,
    StatusSource,
    StatusTiming,
    build_status,
    config_generation,
    full_key,
    state_key,
    steady,
    timestamp,
)
from tests.unit.fakes import FakeCluster, FakeEvents, FakeKernel, FakeSpeaker, Speakers
from tests.unit.policy_builders import NODE, config, pod, service, snapshot

NOW = 1_750_000_000.0


class Clock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


class FlappySpeaker(FakeSpeaker):
    """A FakeSpeaker whose sessions the test sets up or down."""

    state = "established"
    since = 1.0
    last_error = ""

    def peers(self):
        return [replace(p, state=self.state, since=self.since, last_error=self.last_error,
                        families=("ipv4-unicast",), graceful_restart=120)
                for p in super().peers()]


class FlappySpeakers(Speakers):
    def __call__(self, bgp, router_id):
        speaker = FlappySpeaker(bgp, router_id)
        self.made.append(speaker)
        return speaker


def make_agent(extra_pods=(), extra_services=()):
    snap = snapshot(
        services=[service("web", external_ips=("198.51.100.7",)),
                  service("lb", type="LoadBalancer", lb_ips=("203.0.113.5",)),
                  service("evil", ns="team", external_ips=("192.0.2.10",)), *extra_services],
        pods=[pod("a", annotations={"bgpd.dev/external-ips": "198.51.100.20"}),
              pod("b", annotations={"bgpd.dev/external-ips": "192.0.2.99"}), *extra_pods])
    speakers = FlappySpeakers()
    agent = Agent(config(), NODE, FakeCluster(snap), speakers, FakeKernel(), FakeEvents(),
                  clock=lambda: 1000.0)
    agent.reconcile()
    return agent, speakers.made[0]


# ------------------------------------------------------------------ the document


def test_document_from_a_real_agent():
    agent, _ = make_agent()
    status = StatusSource(agent, clock=lambda: NOW)(True)
    assert status["ready"] is True and status["readyReason"] == "ok"
    assert status["synced"] is True and status["apiHealthy"] is True
    assert status["agentVersion"] == "0.1.0"
    assert status["configGeneration"] == config_generation(agent.config)
    assert status["peersUp"] == "1/1"
    (peer,) = status["peers"]
    assert peer == {"address": "10.0.0.1", "asn": 65000, "state": "established",
                    "since": "1970-01-01T00:00:01Z", "families": ["ipv4-unicast"],
                    "gracefulRestartTime": 120, "prefixesSent": 5, "prefixesReceived": 0,
                    "prefixesNotSent": 0, "routesRefused": 0, "routesStale": 0,
                    "lastError": ""}
    # two pod CIDRs (one IPv6), 198.51.100.7, 198.51.100.20, 203.0.113.5
    assert status["announced"] == {"ipv4": 4, "ipv6": 1, "total": 5}
    assert status["heldWithdrawals"] == {"count": 0, "reason": ""}
    assert status["heldPeers"] == {"count": 0, "peers": [], "reason": ""}
    assert status["kernel"] == {"routes": 1, "problems": 0, "firstProblems": []}
    assert status["lastUpdateTime"] == timestamp(NOW)
    assert status["lastReconcileTime"] == timestamp(agent.status.last_reconcile_at)
    rej = status["rejections"]
    assert rej["total"] == 2
    assert rej["nodeByReason"] == {"outside-pools": 1}  # the Pod: only this node sees it
    assert rej["clusterByReason"] == {"outside-pools": 1}  # the Service: every node does
    assert rej["listsClusterWide"] is True and rej["omitted"] == 0
    assert rej["items"] == [
        {"object": "pod/default/b", "address": "192.0.2.99", "use": "pod-external-ip",
         "reason": "outside-pools", "detail": "192.0.2.99/32 lies in no configured pool",
         "scope": "node"},
        {"object": "service/team/evil", "address": "192.0.2.10", "use": "external-ip",
         "reason": "outside-pools", "detail": "192.0.2.10/32 lies in no configured pool",
         "scope": "cluster"},
    ]


def test_nodes_not_drawn_count_but_do_not_list_cluster_wide_rejections():
    agent, _ = make_agent()
    rej = StatusSource(agent)(False)["rejections"]
    assert rej["total"] == 2 and rej["clusterByReason"] == {"outside-pools": 1}
    assert [i["object"] for i in rej["items"]] == ["pod/default/b"]
    assert rej["listsClusterWide"] is False and rej["omitted"] == 0


def test_rejections_listed_are_bounded_and_the_rest_counted():
    bad = [pod(f"bad-{i:02d}", ips=(f"10.244.1.{i + 10}",),
               annotations={"bgpd.dev/external-ips": f"192.0.2.{i + 100}"}) for i in range(30)]
    agent, _ = make_agent(extra_pods=bad)
    rej = StatusSource(agent)(True)["rejections"]
    assert rej["total"] == 32
    assert len(rej["items"]) == MAX_REJECTIONS_LISTED
    assert rej["omitted"] == 32 - MAX_REJECTIONS_LISTED
    assert all(i["scope"] == "node" for i in rej["items"])  # node-local ones come first


def test_since_stays_while_a_session_is_not_established():
    def facts(state, since, error=""):
        peer = PeerStatus("10.0.0.1", 65000, state, since, last_error=error)
        return Facts(NODE, "0.1.0", "g", True, "ok", True, True, peers=(peer,))

    up = build_status(facts("established", 100.0))
    down = build_status(facts("down", 200.0, "notification received 6/2"), previous=up)
    assert down["peers"][0]["since"] == timestamp(200.0)
    connect = build_status(facts("connect", 300.0, "no TCP connection for 7s"), previous=down)
    assert connect["peers"][0]["since"] == timestamp(200.0), "down since the session dropped"
    assert connect["peers"][0]["lastError"] == "no TCP connection"
    idle = build_status(facts("idle", 310.0, "no TCP connection for 17s"), previous=connect)
    assert state_key(idle) == state_key(connect), "idle/connect/down alike: no prompt write"
    assert full_key(idle) != full_key(connect)  # the exact state goes with the counts
    back = build_status(facts("established", 400.0), previous=idle)
    assert back["peers"][0]["since"] == timestamp(400.0)
    assert state_key(back) != state_key(idle)


@pytest.mark.parametrize("text,want", [
    ("no TCP connection for 12s (TCP MD5 in use: a wrong or missing key)",
     "no TCP connection (TCP MD5 in use: a wrong or missing key)"),
    ("sent more than import.max_prefixes 100: session kept down 25s more",
     "sent more than import.max_prefixes 100: session kept down"),
    ("notification received 6/2 hold time 9s", "notification received 6/2 hold time 9s"),
    ("each held for 30s", "each held for 30s"),
    ("x" * 1000, "x" * 256),
])
def test_countdowns_are_stripped_from_texts(text, want):
    assert steady(text) == want


def test_config_generation_is_stable_across_processes_and_follows_the_config():
    a, b = config(), config()
    assert config_generation(a) == config_generation(b)
    assert config_generation(config(advertise={"cluster_ips": True})) != config_generation(a)
    code = ("from tests.unit.policy_builders import config; "
            "from bgpd.nodestatus import config_generation as g; print(g(config()))")
    seen = set()
    for seed in ("1", "2", "3"):  # pools hold frozensets: their order follows the hash seed
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              env={**os.environ, "PYTHONHASHSEED": seed}, timeout=60)
        assert done.returncode == 0, done.stderr
        seen.add(done.stdout.strip())
    assert seen == {config_generation(a)}


# ------------------------------------------------------------------ pacing


def _status(**changes):
    base = build_status(Facts(NODE, "0.1.0", "g", True, "ok", True, True,
                              peers=(PeerStatus("10.0.0.1", 65000, "established", 5.0),),
                              announced={"ipv4": 3}), now=NOW)
    return {**base, **changes}


def test_pacer_rules():
    pacer = Pacer(StatusTiming(), rand=lambda: 0.5)  # no jitter: refresh exactly at 600 s
    first = _status()
    assert pacer.due_in(first, 0.0) == 0.0
    pacer.written(first, 0.0)
    assert pacer.due_in(first, 1.0) is None
    # times that move by themselves are no reason to write
    assert pacer.due_in(_status(lastUpdateTime="x", lastReconcileTime="y"), 1.0) is None
    # a change of state: 2 s after the last write at the earliest
    assert pacer.due_in(_status(ready=False), 0.5) == pytest.approx(1.5)
    assert pacer.due_in(_status(ready=False), 3.0) == 0.0
    # counts only: 30 s after the last write
    more = _status(announced={"ipv4": 4, "ipv6": 0, "total": 4})
    assert pacer.due_in(more, 10.0) == pytest.approx(20.0)
    assert pacer.due_in(more, 31.0) == 0.0
    # nothing changed: the refresh
    assert pacer.refresh_in(100.0) == pytest.approx(500.0)
    assert pacer.due_in(first, 599.0) is None
    assert pacer.due_in(first, 600.0) == 0.0


def test_refresh_is_jittered():
    times = set()
    for r in (0.0, 0.5, 1.0):
        pacer = Pacer(StatusTiming(), rand=lambda r=r: r)
        pacer.written(_status(), 0.0)
        times.add(round(pacer.refresh_in(0.0)))
    assert times == {480, 600, 720}


# ------------------------------------------------------------------ the writer


class FakeApi:
    """The few API calls the writer makes, kept in memory; ``down`` fails them all."""

    def __init__(self, nodes: int = 2):
        self.objects: dict[str, dict] = {}
        self.calls: list[tuple[str, str]] = []
        self.down: KubeError | None = None
        self.nodes = nodes
        self.node_uid = "uid-1"

    def _check(self, method, path):
        self.calls.append((method, path))
        if self.down is not None:
            raise self.down

    def request_json(self, method, path, query=None, **_):
        self._check(method, path)
        if path == "/api/v1/nodes":
            return {"items": [{}], "metadata": {"remainingItemCount": self.nodes - 1}}
        if path == f"/api/v1/nodes/{NODE}":
            return {"metadata": {"name": NODE, "uid": self.node_uid}}
        raise KubeError(f"GET {path}: HTTP 404", status=404)

    def call(self, method, path, body=None, content_type="application/json", **_):
        self._check(method, path)
        if method == "POST" and path == PATH:
            name = body["metadata"]["name"]
            if name in self.objects:
                raise KubeError("exists", status=409)
            self.objects[name] = {**body, "status": {}}
            return
        if method == "PATCH" and path.endswith("/status"):
            name = path.split("/")[-2]
            if name not in self.objects:
                raise KubeError(f"PATCH {path}: HTTP 404", status=404)
            assert content_type == "application/json-patch+json"
            (op,) = body
            assert op["op"] == "add" and op["path"] == "/status"
            self.objects[name]["status"] = op["value"]
            return
        raise AssertionError(f"unexpected {method} {path}")

    def count(self, method, suffix=""):
        return sum(1 for m, p in self.calls if m == method and p.endswith(suffix))


def run_writer(writer: StatusWriter, clock: Clock, seconds: float, each=None) -> None:
    """Turn the writer for ``seconds`` of fake time, as its thread would."""
    end = clock.now + seconds
    while clock.now < end:
        if each is not None:
            each(clock.now)
        wait = writer.step()
        assert 0 < wait <= writer.timing.poll_s
        clock.now += wait


def make_writer(source, api=None, clock=None):
    api = api or FakeApi()
    clock = clock or Clock()
    return StatusWriter(api, NODE, source, clock=clock, wall=lambda: NOW,
                        rand=lambda: 0.5), api, clock


def test_first_write_creates_the_object_owned_by_its_node_then_patches_status():
    agent, _ = make_agent()
    writer, api, clock = make_writer(StatusSource(agent))
    run_writer(writer, clock, 1.0)
    obj = api.objects[NODE]
    assert obj["apiVersion"] == "bgpd.dev/v1alpha1" and obj["kind"] == "BGPNodeStatus"
    assert obj["metadata"]["ownerReferences"] == [
        {"apiVersion": "v1", "kind": "Node", "name": NODE, "uid": "uid-1"}]
    assert obj["status"]["peersUp"] == "1/1"
    patch = f"{PATH}/{NODE}/status"
    assert [c for c in api.calls if c[0] != "GET" or c[1] != "/api/v1/nodes"] == [
        ("PATCH", patch), ("GET", f"/api/v1/nodes/{NODE}"), ("POST", PATH), ("PATCH", patch)]
    assert writer.writes == 1 and writer.creates == 1


def test_an_idle_node_writes_only_its_refreshes():
    agent, _ = make_agent()
    writer, api, clock = make_writer(StatusSource(agent))

    def resync(now):  # a full reconcile every 60 s changes lastReconcileTime, nothing else
        if int(now) % 60 == 0:
            agent.reconcile()

    run_writer(writer, clock, 3600.0, each=resync)
    # the first write, then one every 600 s (no jitter here): 0, 600, ..., 3000
    assert writer.writes == 6
    assert api.count("POST") == 1


def test_a_flapping_session_writes_at_most_every_min_interval():
    agent, speaker = make_agent()
    writer, api, clock = make_writer(StatusSource(agent))
    run_writer(writer, clock, 1.0)
    before = writer.writes

    def flap(now):  # up or down at every look the writer takes (every poll_s)
        speaker.state = "down" if speaker.state == "established" else "established"
        speaker.since = now

    run_writer(writer, clock, 60.0, each=flap)
    interval = writer.timing.min_interval_s
    assert 60.0 / interval - 2 <= writer.writes - before <= 60.0 / interval + 1


def test_a_session_drop_is_written_promptly_and_counts_later():
    agent, speaker = make_agent()
    writer, api, clock = make_writer(StatusSource(agent))
    run_writer(writer, clock, 5.0)
    written = writer.writes
    speaker.state, speaker.since = "down", NOW
    dropped = clock.now
    while api.objects[NODE]["status"]["peersUp"] != "0/1":
        assert clock.now - dropped <= writer.timing.poll_s + 0.001, "not written promptly"
        clock.now += writer.step()
    assert writer.writes == written + 1
    # a count-only change (a new announcement) waits for the counts interval
    agent.cluster.snap = snapshot(services=[service("new", external_ips=("198.51.100.8",))])
    agent.reconcile()
    changed = clock.now
    while api.objects[NODE]["status"]["announced"]["total"] != 3:
        clock.now += writer.step()
        assert clock.now - changed <= writer.timing.counts_interval_s + 1.001
    assert clock.now - changed >= writer.timing.counts_interval_s - 1.001


def test_an_api_outage_delays_writes_and_never_raises():
    agent, speaker = make_agent()
    writer, api, clock = make_writer(StatusSource(agent))
    run_writer(writer, clock, 2.0)
    api.down = KubeError("PATCH: connection refused")
    speaker.state = "down"
    calls = len(api.calls)
    run_writer(writer, clock, 300.0)
    tries = len(api.calls) - calls
    assert 3 <= tries <= 12, f"backoff: {tries} tries in 300 s"
    assert writer.failures == tries and "connection refused" in writer.last_error
    api.down = None
    run_writer(writer, clock, writer.timing.backoff_max_s * 1.5 + 2)
    assert api.objects[NODE]["status"]["peersUp"] == "0/1"


def test_a_deleted_object_is_recreated_by_the_refresh():
    agent, _ = make_agent()
    writer, api, clock = make_writer(StatusSource(agent))
    run_writer(writer, clock, 2.0)
    del api.objects[NODE]
    api.node_uid = "uid-2"  # the uid is read anew: a Node recreated under the same name
    run_writer(writer, clock, 601.0)
    assert api.objects[NODE]["metadata"]["ownerReferences"][0]["uid"] == "uid-2"
    assert writer.creates == 2


def test_missing_crd_or_rbac_is_retried_slowly():
    agent, _ = make_agent()
    writer, api, clock = make_writer(StatusSource(agent))
    api.down = KubeError("forbidden", status=403)
    run_writer(writer, clock, 1200.0)
    assert 2 <= writer.failures <= 3  # every absent_retry_s (600 s)


def test_a_few_nodes_list_the_cluster_wide_rejections():
    api = FakeApi(nodes=5000)
    drawn = sum(StatusWriter(api, f"node-{i}", lambda _: {}, wall=lambda: NOW)
                .lists_cluster_wide() for i in range(5000))
    assert 1 <= drawn <= 3 * REPORTERS
    later = sum(StatusWriter(api, f"node-{i}", lambda _: {}, wall=lambda: NOW + 3600)
                .lists_cluster_wide() for i in range(5000))
    assert 1 <= later <= 3 * REPORTERS
    assert StatusWriter(FakeApi(nodes=2), NODE, lambda _: {}).lists_cluster_wide()


def test_holds_and_kernel_problems_are_written_promptly():
    base = Facts(NODE, "0.1.0", "g", True, "ok", True, True, announced={"ipv4": 10})
    held = replace(base, held=7, hold_reason="would withdraw 7 of 10 prefixes: 70% > 50%; "
                   "each held for 30s", peers_held=("10.0.0.2:179",),
                   peers_held_reason="the config no longer selects 1 of this node's 1 BGP peers",
                   kernel_problems=tuple(f"10.244.{i}.0/24: conflicts with a route this agent "
                                         "does not own" for i in range(9)))
    a, b = build_status(base, now=NOW), build_status(held, now=NOW)
    assert b["heldWithdrawals"] == {"count": 7, "reason": held.hold_reason}
    assert b["heldPeers"] == {"count": 1, "peers": ["10.0.0.2:179"],
                              "reason": held.peers_held_reason}
    assert b["kernel"]["problems"] == 9 and len(b["kernel"]["firstProblems"]) == 5
    assert state_key(a) != state_key(b)
    # counts alone are not state
    more = build_status(replace(base, announced={"ipv4": 11}), now=NOW)
    assert state_key(more) == state_key(a) and full_key(more) != full_key(a)
