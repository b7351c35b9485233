"""The agent loop's latency paths: the adaptive debounce and the desired set handed to the
speakers (built from last round's set, so its hashes are not recomputed)."""

from __future__ import annotations

import ipaddress
import random

from bgpd.agent import Agent
from bgpd.model import Announcement, Attributes
from bgpd.speaker.routes import DesiredIndex
from tests.unit.fakes import FakeCluster, FakeEvents, FakeKernel, Speakers
from tests.unit.policy_builders import NODE, config, service, snapshot


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Stop:
    """A stop event for ``Agent.run``: records the (debounce) waits instead of sleeping, and
    is set after ``rounds`` reconciles."""

    def __init__(self, rounds: int) -> None:
        self.rounds = rounds
        self.waits: list[float | None] = []

    def is_set(self) -> bool:
        return self.rounds <= 0

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(timeout)
        return self.is_set()


def run_rounds(debounce: float, rounds: int, gap: float) -> list[float | None]:
    """Run the loop for ``rounds`` reconciles, each wake-up seen ``gap`` seconds after the
    previous round ended (an event arriving meanwhile); return the waits."""
    clock = Clock()
    agent = Agent(config(debounce_seconds=debounce), NODE,
                  FakeCluster(snapshot(services=[service("s", external_ips=("198.51.100.7",))])),
                  Speakers(), FakeKernel(), FakeEvents(), clock=clock)
    stop = Stop(rounds)
    reconcile = agent.reconcile

    def counted() -> None:
        reconcile()
        stop.rounds -= 1

    def woken(timeout: float | None = None) -> bool:
        clock.now += gap
        return True

    agent.reconcile = counted  # type: ignore[method-assign]
    agent._signal.wait = woken  # type: ignore[method-assign]
    agent.run(stop)
    return stop.waits


def test_a_wake_up_after_a_quiet_spell_is_handled_at_once():
    # The very first wake-up, and one coming longer than debounce_seconds after the last
    # round: no wait at all.
    assert run_rounds(debounce=0.05, rounds=3, gap=1.0) == []


def test_wake_ups_right_after_a_round_are_batched():
    waits = run_rounds(debounce=0.05, rounds=3, gap=0.0)
    # The first round runs at once; each later one waits until the previous round ended
    # debounce_seconds ago.
    assert len(waits) == 2
    assert all(abs(w - 0.05) < 1e-9 for w in waits), waits


def test_a_wake_up_partway_through_the_gap_waits_only_the_rest():
    waits = run_rounds(debounce=0.05, rounds=2, gap=0.03)
    assert len(waits) == 1 and abs(waits[0] - 0.02) < 1e-9, waits


def test_no_debounce_means_no_wait():
    assert run_rounds(debounce=0.0, rounds=3, gap=0.0) == []


def _ann(i: int, attrs: Attributes) -> Announcement:
    return Announcement(ipaddress.ip_network(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}/32"),
                        attrs)


def test_the_desired_set_is_the_announcements_round_after_round():
    agent = Agent(config(), NODE, FakeCluster(snapshot()), Speakers(), FakeKernel(),
                  FakeEvents())
    rnd = random.Random(5)
    attrs = [Attributes(), Attributes(communities=("65000:1",)), Attributes(med=5)]
    current: dict[str, Announcement] = {}
    index, used_delta = DesiredIndex(), 0
    for _ in range(200):
        announce = dict(current)  # a new dict each round, mostly the same objects
        for _ in range(rnd.randint(0, 20)):
            i = rnd.randrange(300)
            ann = _ann(i, rnd.choice(attrs))
            if rnd.random() < 0.3:
                announce.pop(str(ann.prefix), None)
            elif rnd.random() < 0.2:
                announce[str(ann.prefix)] = Announcement(ann.prefix, ann.attributes)  # equal, new
            else:
                announce[str(ann.prefix)] = ann
        if rnd.random() < 0.05:
            announce = {}
        got = agent._desired_set(announce)
        assert isinstance(got, frozenset)
        assert got == frozenset(announce.values())
        current = announce
        # The speaker's index follows by the carried difference when it saw the set before
        # (and by comparison when it skipped one): either way it ends as a rebuild would,
        # and every prefix whose claims changed is reported.
        if rnd.random() < 0.8:
            before = {p: index.claims(p) for p in index.by_prefix}
            used_delta += got.delta_from(index.source) is not None
            changed = index.update(got)
            fresh = DesiredIndex()
            fresh.update(frozenset(got))
            assert index.by_prefix == fresh.by_prefix
            differ = {p for p in before.keys() | index.by_prefix.keys()
                      if before.get(p, frozenset()) != index.claims(p)}
            if changed is None:  # "everything": only for a change of most of the set
                assert len(differ) > len(index.by_prefix) // 2
            else:
                assert changed >= differ
    assert used_delta > 100  # the difference was really used, not only the fallback
