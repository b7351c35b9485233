"""The reconcile loop driven through fakes: event sequences in, speaker/kernel calls out."""

from __future__ import annotations

import dataclasses
import ipaddress

import pytest

from bgpd.agent import Agent
from bgpd.model import Snapshot
from tests.unit.fakes import FakeCluster, FakeEvents, FakeKernel, Speakers, learned
from tests.unit.policy_builders import NODE, config, node, pod, service, snapshot

POD_CIDRS = {"10.244.1.0/24", "fd00:244:1::/64"}


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def make(snap, cfg=None, healthy=True, **kw):
    speakers, kernel, events, clock = Speakers(), FakeKernel(), FakeEvents(), Clock()
    cluster = FakeCluster(snap, healthy)
    agent = Agent(cfg or config(), NODE, cluster, speakers, kernel, events, clock=clock, **kw)
    return agent, cluster, speakers, kernel, events, clock


def externals(n, start=1):
    return [service(f"s{i}", external_ips=(f"198.51.100.{i}",)) for i in range(start, start + n)]


def announced(speakers):
    return {str(a.prefix) for a in speakers.made[-1].desired}


def test_nothing_happens_before_the_first_sync():
    agent, cluster, speakers, kernel, _, _ = make(snapshot(synced=False))
    agent.reconcile()
    assert speakers.made == [] and kernel.syncs == 0
    assert agent.ready() == (False, "waiting for the first sync with the API server")


def test_first_sync_starts_the_speaker_with_the_nodes_peering_and_announces():
    agent, cluster, speakers, kernel, _, _ = make(snapshot(services=externals(2)))
    agent.reconcile()
    assert len(speakers.made) == 1
    sp = speakers.made[0]
    assert sp.router_id == "172.20.1.11" and [p.address for p in sp.bgp.peers] == ["10.0.0.1"]
    assert announced(speakers) == POD_CIDRS | {"198.51.100.1/32", "198.51.100.2/32"}
    assert agent.ready()[0]


def test_a_second_reconcile_with_the_same_input_changes_nothing():
    snap = snapshot(services=externals(2),
                    pods=[pod("a", annotations={"bgpd.dev/external-ips": "198.51.100.50"})])
    agent, cluster, speakers, kernel, _, _ = make(snap)
    agent.reconcile()
    calls, syncs = list(speakers.made[0].calls), kernel.syncs
    agent.reconcile()
    assert speakers.made[0].calls[len(calls):] == [calls[-1]]  # the same desired set again
    assert kernel.syncs == syncs == 1
    assert set(kernel.routes) == {"198.51.100.50/32"}


def test_api_outage_holds_everything_even_a_wipe():
    agent, cluster, speakers, kernel, _, clock = make(snapshot(services=externals(30)))
    agent.reconcile()
    before = announced(speakers)
    cluster.is_healthy = False
    cluster.snap = snapshot()  # a broken relist showing nothing
    clock.now += 5
    agent.reconcile()
    assert announced(speakers) == before
    assert agent.ready() == (False, "API server unreachable: holding the last known state")
    clock.now += 60
    agent.reconcile()
    assert announced(speakers) == before
    assert agent.outage_seconds() == pytest.approx(60)  # noticed at the second round


def test_api_outage_still_adds_new_objects_it_knows_of():
    agent, cluster, speakers, _, _, _ = make(snapshot(services=externals(3)))
    agent.reconcile()
    cluster.is_healthy = False
    cluster.snap = snapshot(services=externals(1, start=10))
    agent.reconcile()
    assert "198.51.100.10/32" in announced(speakers) and "198.51.100.1/32" in announced(speakers)


def test_unsynced_snapshot_after_a_sync_never_withdraws():
    agent, cluster, speakers, _, _, _ = make(snapshot(services=externals(3)))
    agent.reconcile()
    cluster.snap = dataclasses.replace(snapshot(), synced=False)
    agent.reconcile()
    assert "198.51.100.3/32" in announced(speakers)


def test_mass_withdrawal_is_held_then_released_after_the_hold_time():
    agent, cluster, speakers, _, events, clock = make(snapshot(services=externals(30)))
    agent.reconcile()
    cluster.snap = snapshot(services=externals(5))
    clock.now += 1
    agent.reconcile()
    assert len(announced(speakers)) == 32  # nothing withdrawn yet
    assert agent.status.held == 25 and agent.status.holds_total == 1
    assert [e[3] for e in events.events] == ["WithdrawalsHeld"]
    clock.now += 29
    agent.reconcile()
    assert len(announced(speakers)) == 32
    clock.now += 1
    agent.reconcile()
    assert announced(speakers) == POD_CIDRS | {f"198.51.100.{i}/32" for i in range(1, 6)}
    assert agent.status.held == 0


def test_small_withdrawal_goes_at_once():
    agent, cluster, speakers, _, _, _ = make(snapshot(services=externals(30)))
    agent.reconcile()
    cluster.snap = snapshot(services=externals(29))
    agent.reconcile()
    assert "198.51.100.30/32" not in announced(speakers) and agent.status.held == 0


def test_flapping_object_converges_to_the_last_state():
    svc = externals(1)[0]
    agent, cluster, speakers, _, _, _ = make(snapshot(services=externals(20, start=10) + [svc]))
    agent.reconcile()
    for i in range(10):
        present = i % 2 == 1
        cluster.snap = snapshot(services=externals(20, start=10) + ([svc] if present else []))
        agent.reconcile()
    assert "198.51.100.1/32" in announced(speakers)
    cluster.snap = snapshot(services=externals(20, start=10))
    agent.reconcile()
    assert "198.51.100.1/32" not in announced(speakers)


def test_node_labelled_out_withdraws_everything_without_the_guard():
    agent, cluster, speakers, _, _, _ = make(snapshot(services=externals(30)))
    agent.reconcile()
    cluster.snap = snapshot(node(labels={"bgpd.dev/announce": "false"}), services=externals(30))
    agent.reconcile()
    assert announced(speakers) == set() and agent.status.held == 0


def test_rejections_become_events_on_the_object():
    snap = snapshot(services=[service("evil", ns="team", external_ips=("192.0.2.10",),
                                      uid="0b7c-evil")])
    agent, _, _, _, events, _ = make(snap)
    agent.reconcile()
    assert ("Service", "team", "evil", "outside-pools",
            "192.0.2.10: 192.0.2.10/32 lies in no configured pool") in events.events
    assert events.uids == ["0b7c-evil"]  # kubectl describe selects Events by uid too
    assert agent.status.rejections_by_reason == {"outside-pools": 1}


def test_peering_change_restarts_the_speaker_other_changes_do_not():
    agent, cluster, speakers, _, _, clock = make(snapshot(services=externals(2)))
    agent.reconcile()
    agent.apply_config(config(advertise={"cluster_ips": True}))
    agent.reconcile()
    assert len(speakers.made) == 1
    agent.apply_config(config(bgp={"asn": 64512, "peers": [{"address": "10.0.0.2", "asn": 65000}]}))
    agent.reconcile()
    assert len(speakers.made) == 2 and speakers.made[1].bgp.peers[0].address == "10.0.0.2"
    assert "198.51.100.1/32" in announced(speakers)
    # The node's only peer was swapped for another: the old session waits the hold time
    # (its loss would withdraw everything through it), then goes.
    assert speakers.made[0].stopped_with is None
    assert agent.status.peers_held == ("10.0.0.1:179",)
    clock.now += 30
    agent.reconcile()
    assert speakers.made[0].stopped_with is False and agent.status.peers_held == ()


def test_learned_routes_are_installed_when_import_is_enabled():
    cfg = config(**{"import": {"enabled": True, "allow": ["0.0.0.0/0"]}})
    agent, _, speakers, kernel, _, _ = make(snapshot(), cfg)
    agent.reconcile()
    speakers.made[0].learned_routes = {
        ipaddress.ip_network("0.0.0.0/0"): [learned("10.0.0.1", "0.0.0.0/0", "10.0.0.1"),
                                            learned("10.0.0.2", "0.0.0.0/0", "10.0.0.2")],
        ipaddress.ip_network("10.244.1.0/24"): [learned("10.0.0.1", "10.244.1.0/24", "10.0.0.1")],
    }
    agent.reconcile()
    assert set(kernel.routes) == {"0.0.0.0/0"}  # our own pod CIDR is never taken from a peer
    assert [h.gateway for h in kernel.routes["0.0.0.0/0"].nexthops] == ["10.0.0.1", "10.0.0.2"]


def test_shutdown_leaves_routes_by_default_and_withdraws_when_asked():
    for withdraw in (False, True):
        agent, cluster, speakers, kernel, _, _ = make(snapshot(), withdraw_on_exit=withdraw)
        agent.reconcile()
        agent.shutdown()
        assert speakers.made[0].stopped_with is withdraw
        assert kernel.closed_with is withdraw and cluster.stopped


def test_no_router_id_is_reported_not_crashed():
    from bgpd.model import NodeInfo

    agent, cluster, speakers, _, _, _ = make(Snapshot(node=NodeInfo(NODE)))
    agent.reconcile()
    assert speakers.made == [] and "router id" in agent.ready()[1]


def test_changing_one_peer_leaves_the_other_session_alone():
    two = {"bgp": {"asn": 64512, "peers": [{"address": "10.0.0.1", "asn": 65000},
                                            {"address": "10.0.0.2", "asn": 65000}]}}
    agent, _, speakers, _, _, _ = make(snapshot(services=externals(2)), config(**two))
    agent.reconcile()
    first, second = speakers.made
    assert [p.address for p in first.bgp.peers] == ["10.0.0.1"]
    changed = {"bgp": {"asn": 64512, "peers": [{"address": "10.0.0.1", "asn": 65000},
                                                {"address": "10.0.0.2", "asn": 65099}]}}
    agent.apply_config(config(**changed))
    agent.reconcile()
    assert first.stopped_with is None, "the unchanged peer's speaker was restarted"
    assert second.stopped_with is False and len(speakers.made) == 3
    assert speakers.made[2].bgp.peers[0].asn == 65099
    assert {str(a.prefix) for a in speakers.made[2].desired} == announced(speakers)
    assert len(agent.speaker.peers()) == 2


def test_a_speaker_that_fails_to_start_is_retried_and_reported():
    class Failing(Speakers):
        fail = True

        def __call__(self, bgp, router_id):
            speaker = super().__call__(bgp, router_id)
            if self.fail:
                def boom():
                    raise RuntimeError("exabgp missing")
                speaker.start = boom
            return speaker

    speakers = Failing()
    cluster = FakeCluster(snapshot(services=externals(1)))
    clock = Clock()
    agent = Agent(config(), NODE, cluster, speakers, FakeKernel(), FakeEvents(), clock=clock)
    agent.reconcile()
    assert "exabgp missing" in agent.ready()[1] and len(agent.speaker) == 0
    speakers.fail = False
    agent.reconcile()  # within the backoff: no retry yet
    assert len(speakers.made) == 1
    clock.now += 6
    agent.reconcile()
    assert len(agent.speaker) == 1 and agent.ready()[0]


def test_outage_time_does_not_count_toward_releasing_a_mass_withdrawal():
    agent, cluster, speakers, _, _, clock = make(snapshot(services=externals(30)))
    agent.reconcile()
    cluster.is_healthy, cluster.snap = False, snapshot()  # an empty relist, API unreachable
    agent.reconcile()
    clock.now += 60
    cluster.is_healthy = True  # back, and the view is still empty
    agent.reconcile()
    assert len(announced(speakers)) == 32, "released at once: the outage counted as hold time"
    clock.now += 30
    agent.reconcile()
    assert announced(speakers) == POD_CIDRS


def test_a_kernel_failure_keeps_views_true_and_the_guard_steady():
    class BrokenKernel(FakeKernel):
        def sync(self, desired):
            raise OSError("netlink socket gone")

    owner = [pod("a", annotations={"bgpd.dev/external-ips": "198.51.100.50"})]  # a kernel route
    cluster = FakeCluster(snapshot(services=externals(30), pods=owner))
    speakers, clock = Speakers(), Clock()
    agent = Agent(config(), NODE, cluster, speakers, BrokenKernel(), FakeEvents(), clock=clock)
    agent.reconcile()
    cluster.snap = snapshot(services=externals(5), pods=owner)
    seen = []
    for _ in range(4):
        clock.now += 31
        agent.reconcile()
        seen.append(len(announced(speakers)))
    assert seen == [33, 8, 8, 8], "the guard flapped: withdrawn, then announced again"
    assert len(agent.applied) == 8 and agent.decision is not None
    assert agent.status.kernel_failures == ["kernel sync failed: netlink socket gone"]


def test_a_failed_round_makes_the_agent_unready_and_a_good_one_clears_it():
    agent, cluster, _, _, _, _ = make(snapshot(services=externals(2)))
    agent.reconcile()
    agent.status.last_error = "ValueError: boom"  # as run() records a raising round
    assert agent.ready() == (False, "the last reconcile failed: ValueError: boom")
    agent.reconcile()
    assert agent.ready() == (True, "ok")


def test_adding_a_peer_leaves_the_existing_session_alone():
    agent, _, speakers, _, _, _ = make(snapshot(services=externals(2)))
    agent.reconcile()
    first = speakers.made[0]
    two = {"bgp": {"asn": 64512, "peers": [{"address": "10.0.0.1", "asn": 65000},
                                            {"address": "10.0.0.2", "asn": 65000}]}}
    agent.apply_config(config(**two))
    agent.reconcile()
    assert first.stopped_with is None and len(speakers.made) == 2


def test_a_node_missing_from_the_view_does_not_stop_sessions():
    rack = {"bgp": {"asn": 64512, "peers": [{"address": "10.0.0.1", "asn": 65000,
                                             "node_selector": {"rack": "r1"}}],
                    "router_id": "172.20.1.11"}}
    agent, cluster, speakers, _, _, _ = make(
        snapshot(node(labels={"rack": "r1"}), services=externals(2)), config(**rack))
    agent.reconcile()
    cluster.snap = Snapshot(node=None, services=snapshot(services=externals(2)).services)
    agent.reconcile()
    assert speakers.made[0].stopped_with is None and len(agent.speaker) == 1


def test_import_rules_reach_running_speakers_without_a_restart():
    agent, _, speakers, _, _, _ = make(snapshot())
    agent.reconcile()
    tighter = config(**{"import": {"enabled": True, "allow": ["10.0.0.0/8"], "max_prefixes": 5}})
    agent.apply_config(tighter)
    agent.reconcile()
    assert len(speakers.made) == 1
    assert speakers.made[0].import_config.max_prefixes == 5


# ------------------------------------------------------------------ restarts and faults


def test_a_restarted_agent_judges_its_first_withdrawals_against_what_was_announced(tmp_path):
    from bgpd.statefile import StateStore

    first, _, speakers, _, _, _ = make(snapshot(services=externals(40)),
                                       state=StateStore(tmp_path))
    first.reconcile()
    first.shutdown()  # writes the state
    assert len(announced(speakers)) == 42
    # The successor starts with a wrong view of the cluster (most Services missing).
    agent, _, speakers, _, _, clock = make(snapshot(services=externals(5)),
                                           state=StateStore(tmp_path))
    agent.reconcile()
    assert len(announced(speakers)) == 42, "the restart let a mass withdrawal through"
    assert agent.status.held == 35
    clock.now += 30
    agent.reconcile()
    assert len(announced(speakers)) == 7  # the wish lasted the hold time: released


def test_a_restarted_agent_hands_what_peers_sent_to_its_speakers(tmp_path):
    from bgpd.statefile import StateStore

    cfg = config(**{"import": {"enabled": True, "allow": ["0.0.0.0/0"]}})
    first, _, speakers, _, _, _ = make(snapshot(), cfg, state=StateStore(tmp_path))
    first.reconcile()
    route = learned("10.0.0.1", "0.0.0.0/0", "10.0.0.1")
    speakers.made[0].exported = {"10.0.0.1": ({route.prefix: route}, 120)}
    first.reconcile()
    first.shutdown()
    agent, _, speakers, _, _, _ = make(snapshot(), cfg, state=StateStore(tmp_path))
    agent.reconcile()
    ((received, elapsed),) = speakers.made[0].adopted
    assert received == {"10.0.0.1": ({route.prefix: route}, 120)} and elapsed < 60


def test_kernel_routes_of_an_earlier_agent_stay_until_every_peer_sent_everything():
    from bgpd.model import KernelRoute, NextHop

    agent, _, speakers, kernel, _, clock = make(snapshot())
    default = KernelRoute(ipaddress.ip_network("0.0.0.0/0"), (NextHop(gateway="10.0.0.1"),))
    kernel.routes = {"0.0.0.0/0": default}  # left by the previous agent
    agent.reconcile()
    assert "0.0.0.0/0" in kernel.routes, "the default route went before the peer was back"
    agent.reconcile()
    assert agent.status.adopted_kernel_routes == 1
    speakers.made[0].all_end_of_rib = True
    clock.now += 1
    agent.reconcile()
    assert "0.0.0.0/0" not in kernel.routes and agent.status.adopted_kernel_routes == 0


def test_a_node_selector_typo_does_not_drop_the_sessions_at_once():
    agent, _, speakers, _, events, clock = make(snapshot(services=externals(2)))
    agent.reconcile()
    typo = config(bgp={"asn": 64512, "peers": [{"address": "10.0.0.1", "asn": 65000,
                                                "node_selector": {"rack": "r9"}}]})
    agent.apply_config(typo)
    agent.reconcile()
    assert speakers.made[0].stopped_with is None
    assert "no longer selects 1 of this node's 1 BGP peers" in agent.status.peers_held_reason
    assert any(e[3] == "PeersHeld" for e in events.events)
    clock.now += 29
    agent.reconcile()
    assert speakers.made[0].stopped_with is None
    agent.apply_config(config())  # fixed within the hold time: nothing happened
    agent.reconcile()
    assert agent.status.peers_held == () and speakers.made[0].stopped_with is None


def test_a_rotated_md5_key_restarts_only_that_session(tmp_path):
    key = tmp_path / "rack1"
    key.write_text("old")
    cfg = config(bgp={"asn": 64512, "peers": [
        {"address": "10.0.0.1", "asn": 65000, "password_file": str(key)},
        {"address": "10.0.0.2", "asn": 65000}]})
    agent, _, speakers, _, _, _ = make(snapshot(), cfg)
    agent.reconcile()
    agent.reconcile()
    assert len(speakers.made) == 2
    key.write_text("new key")
    agent.reconcile()
    assert len(speakers.made) == 3 and speakers.made[2].bgp.peers[0].address == "10.0.0.1"
    assert [s.stopped_with for s in speakers.made[:2]] == [False, None]
