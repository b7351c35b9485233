"""The mass-withdraw guard, table-driven over (current, desired, sync state, time)."""

from __future__ import annotations

import ipaddress

import pytest

from bgpd.config import SafetyConfig
from bgpd.model import Announcement
from bgpd.policy.guard import guard_peer_removals, guard_withdrawals

SAFETY = SafetyConfig(max_withdraw_fraction=0.5, withdraw_hold_seconds=30, guard_min_prefixes=10)


def anns(n, start=0):
    nets = (ipaddress.ip_network(f"198.51.100.{i}/32") for i in range(start, start + n))
    return {p: Announcement(p) for p in nets}


CASES = [
    # id, current, desired, synced, intended, now, since -> (announced, held, hold timer runs)
    # (since: when every withdrawn prefix was first held, None when none was)
    ("nothing withdrawn", anns(20), anns(25), True, False, 0, None, (25, 0, False)),
    ("a small share is withdrawn at once", anns(20), anns(15), True, False, 0, None, (15, 0, False)),
    ("exactly the allowed share passes", anns(20), anns(10), True, False, 0, None, (10, 0, False)),
    ("above the share is held", anns(20), anns(5), True, False, 0, None, (20, 15, True)),
    ("a wipe is held", anns(20), {}, True, False, 0, None, (20, 20, True)),
    ("still held before the hold time", anns(20), {}, True, False, 29, 0, (20, 20, True)),
    ("released after the hold time", anns(20), {}, True, False, 30, 0, (0, 0, False)),
    ("unsynced never withdraws, even a little", anns(20), anns(19), False, False, 0, None,
     (20, 1, False)),
    ("unsynced still adds", anns(20), anns(21, 50), False, False, 0, None, (41, 20, False)),
    ("unsynced stops a running hold timer", anns(20), {}, False, False, 100, 0, (20, 20, False)),
    ("an intended withdrawal (node drained) passes", anns(20), {}, True, True, 0, None,
     (0, 0, False)),
    ("below the minimum size the guard is quiet", anns(5), {}, True, False, 0, None,
     (0, 0, False)),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_guard(case):
    _, current, desired, synced, intended, now, since, (count, held, holding) = case
    held_since = {} if since is None else {p: since for p in current if p not in desired}
    verdict = guard_withdrawals(current, desired, synced=synced, intended=intended, now=now,
                                held_since=held_since, safety=SAFETY)
    assert len(verdict.announce) == count
    assert len(verdict.held) == held
    assert bool(verdict.held_since) == holding
    assert set(desired) <= set(verdict.announce)
    if held:
        assert verdict.reason
    again = guard_withdrawals(current, desired, synced=synced, intended=intended, now=now,
                              held_since=held_since, safety=SAFETY)
    assert again == verdict


def test_withdrawals_spread_over_rounds_are_counted_together():
    """A deletion arriving in slices (each under the share) must not drain the node."""
    current, recent, since = anns(20), (), {}
    remaining = 20
    applied_counts = []
    for round_no in range(5):  # 4 prefixes disappear every 2 s
        remaining -= 4
        desired = anns(remaining)
        verdict = guard_withdrawals(current, desired, synced=True, intended=False,
                                    now=round_no * 2.0, held_since=since, safety=SAFETY,
                                    recent=recent)
        current, recent, since = verdict.announce, verdict.recent, verdict.held_since
        applied_counts.append(len(current))
    assert applied_counts == [16, 12, 12, 12, 12], "the window let the node drain"
    assert "already withdrawn" in verdict.reason


def test_the_window_forgets_old_withdrawals():
    verdict = guard_withdrawals(anns(20), anns(12), synced=True, intended=False, now=100.0,
                                held_since={}, safety=SAFETY, recent=((50.0, 8),))
    assert len(verdict.announce) == 12 and verdict.recent == ((100.0, 8),)


def test_each_held_withdrawal_waits_its_own_hold_time():
    """Withdrawals that join a hold just before the early ones are released wait too."""
    current = anns(20)
    verdict = guard_withdrawals(current, anns(5), synced=True, intended=False, now=0.0,
                                held_since={}, safety=SAFETY)
    assert len(verdict.held) == 15
    late = guard_withdrawals(verdict.announce, {}, synced=True, intended=False, now=29.9,
                             held_since=verdict.held_since, safety=SAFETY)
    assert len(late.held) == 20  # the last five joined the hold at 29.9 s
    release = guard_withdrawals(late.announce, {}, synced=True, intended=False, now=30.0,
                                held_since=late.held_since, safety=SAFETY)
    assert set(release.announce) == set(anns(5))  # only the first fifteen went
    assert "released 15 withdrawals" in release.reason
    final = guard_withdrawals(release.announce, {}, synced=True, intended=False, now=59.9,
                              held_since=release.held_since, safety=SAFETY)
    assert final.announce == {}


def test_a_prefix_wanted_again_leaves_the_hold():
    verdict = guard_withdrawals(anns(20), {}, synced=True, intended=False, now=0.0,
                                held_since={}, safety=SAFETY)
    back = guard_withdrawals(verdict.announce, anns(20), synced=True, intended=False, now=5.0,
                             held_since=verdict.held_since, safety=SAFETY)
    assert back.held_since == {} and not back.held


@pytest.mark.parametrize("current,wanted,since,now,kept", [
    ({"a", "b"}, {"a", "b"}, {}, 0, set()),
    ({"a", "b"}, {"a"}, {}, 0, set()),  # half the peers: at once (a ToR replaced)
    ({"a", "b"}, set(), {}, 0, {"a", "b"}),  # every peer: held
    ({"a"}, {"c"}, {}, 0, {"a"}),  # the only peer swapped for another: the old one waits
    ({"a", "b"}, set(), {"a": 0, "b": 0}, 29, {"a", "b"}),
    ({"a", "b"}, set(), {"a": 0, "b": 0}, 30, set()),  # the wish lasted: released
], ids=["unchanged", "half", "all", "swap", "before the hold time", "after the hold time"])
def test_dropping_most_peers_is_held(current, wanted, since, now, kept):
    verdict = guard_peer_removals(current, wanted, synced=True, now=now, held_since=since,
                                  safety=SAFETY)
    assert verdict.keep == kept
    assert bool(verdict.reason) == bool(kept)


def test_peers_are_never_dropped_while_the_view_is_in_doubt():
    verdict = guard_peer_removals({"a", "b"}, {"a"}, synced=False, now=0, held_since={},
                                  safety=SAFETY)
    assert verdict.keep == {"b"}
