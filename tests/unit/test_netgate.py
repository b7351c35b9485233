"""Scheduling gated on BGP (bgpd.policy.netgate): when the NetworkUnavailable condition is
set, cleared, or left alone."""

from __future__ import annotations

import pytest

from bgpd.policy.netgate import REASON_ANNOUNCED, REASON_NOT_ANNOUNCED, GateView, decide_condition

CIDRS = ("10.244.1.0/24",)


def view(announced_to=(), trusted=True, holding=False, cidrs=CIDRS):
    return GateView(cidrs, tuple(announced_to), trusted, holding)


def test_announced_to_a_peer_clears_it_at_once():
    v = decide_condition(view(["10.0.0.1"]), now=5.0, bad_since=1.0, debounce_seconds=10)
    assert (v.status, v.reason, v.bad_since) == ("False", REASON_ANNOUNCED, None)
    assert "announced to 10.0.0.1" in v.message


def test_announced_to_nobody_sets_it_after_the_debounce_only():
    first = decide_condition(view(), now=100.0, bad_since=None, debounce_seconds=10)
    assert first.status is None and first.bad_since == 100.0
    later = decide_condition(view(), now=109.9, bad_since=first.bad_since, debounce_seconds=10)
    assert later.status is None
    due = decide_condition(view(), now=110.0, bad_since=first.bad_since, debounce_seconds=10)
    assert (due.status, due.reason) == ("True", REASON_NOT_ANNOUNCED)
    assert "announced to no BGP peer for 10s" in due.message


@pytest.mark.parametrize("trusted,holding", [(False, False), (True, True)],
                         ids=["the API is unreachable", "the guard holds something"])
def test_never_set_while_the_view_is_in_doubt_and_no_clock_runs(trusted, holding):
    v = decide_condition(view(trusted=trusted, holding=holding), now=1000.0, bad_since=0.0,
                         debounce_seconds=10)
    assert v.status is None and v.bad_since is None


def test_a_node_without_a_pod_cidr_is_left_alone():
    assert decide_condition(view(cidrs=()), now=1.0, bad_since=None,
                            debounce_seconds=0).status is None
