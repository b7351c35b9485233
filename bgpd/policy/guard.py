"""The mass-withdraw guard: a cluster-wide glitch must not black-hole a data centre.

Pure: given what is announced now, what the policy wants, the withdrawals already made
recently, and since when each held withdrawal has been wished, it says what to announce
this round.

Withdrawals are counted over a sliding window of ``withdraw_hold_seconds``, not one round
at a time: a namespace deletion or a bad `kubectl apply` that arrives over several
debounce windows must not drain a node half a round at a time. When the share withdrawn in
the window would pass ``max_withdraw_fraction``, this round's withdrawals are held back.
Each held withdrawal is released once the same wish has lasted ``withdraw_hold_seconds``
for *it*: one that joined the hold a moment before a release waits its own time.

``current`` is what the peers were last told, which after a restart is what the previous
agent had announced (kept on disk): a restarted agent with a wrong view of the cluster is
held back like a running one.

The same rule guards the BGP sessions themselves: dropping more than that share of a
node's peers (a typo in a peer's ``node_selector``, a relabelled rack) would withdraw
everything through them once graceful restart runs out, so it waits the hold time too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from bgpd.config import SafetyConfig
from bgpd.model import Announcement

Recent = tuple[tuple[float, int], ...]  # (time, prefixes withdrawn) inside the window


@dataclass(frozen=True)
class GuardVerdict:
    announce: dict[str, Announcement]  # what to apply now
    held: frozenset[str]  # withdrawals postponed
    held_since: dict[str, float] = field(default_factory=dict)  # when each wish began
    reason: str = ""  # why, for logs and Events; "" when nothing is held or released
    recent: Recent = ()  # withdrawals applied inside the window, this round's included


def guard_withdrawals(current: dict[str, Announcement], desired: dict[str, Announcement], *,
                      synced: bool, intended: bool, now: float,
                      held_since: Mapping[str, float], safety: SafetyConfig,
                      recent: Recent = ()) -> GuardVerdict:
    """Decide how much of ``current - desired`` may be withdrawn now.

    ``synced`` False (watchers not synced, API unreachable): withdraw nothing at all, but do
    add what is new; no hold time runs meanwhile. ``intended`` (node labelled out,
    withdraw-on-exit) bypasses the share limit: the operator asked for it.
    """
    window = safety.withdraw_hold_seconds
    recent = tuple((t, n) for t, n in recent if now - t < window)
    # Nothing withdrawn is the usual round: checked in C (current.keys() <= desired.keys()).
    withdrawn = [] if current.keys() <= desired.keys() else [p for p in current
                                                               if p not in desired]
    if not withdrawn:
        return GuardVerdict(dict(desired), frozenset(), recent=recent)
    if not synced:
        # No clock runs while the view is in doubt: hold times start again at the first
        # trusted round, so an outage can never count toward releasing a withdrawal.
        return GuardVerdict({**desired, **{p: current[p] for p in withdrawn}},
                            frozenset(withdrawn), {},
                            "cluster state not synced: withdrawals wait for the API", recent)
    if intended:
        return GuardVerdict(dict(desired), frozenset(), recent=recent)
    # A withdrawal held for the whole hold time is confirmed: it goes, and does not count
    # against the share (it was held for exactly that). One held for less stays held,
    # whatever the share: each waits its own time. New ones join a running hold.
    due = [p for p in withdrawn if p in held_since and now - held_since[p] >= window]
    pending = [p for p in withdrawn if p in held_since and now - held_since[p] < window]
    new = [p for p in withdrawn if p not in held_since]
    already = sum(n for _, n in recent)
    baseline = len(current) + already  # what was announced when the window began
    share = (already + len(new) + len(pending)) / baseline
    released = f"released {len(due)} withdrawals held for {window:g}s" if due else ""
    if not pending and (baseline < safety.guard_min_prefixes
                        or share <= safety.max_withdraw_fraction):
        return GuardVerdict(dict(desired), frozenset(), reason=released,
                            recent=(*recent, (now, len(new))) if new else recent)
    hold = pending + new
    keep = {p: held_since.get(p, now) for p in hold}
    announce = {**desired, **{p: current[p] for p in hold}}
    earlier = f" (with {already} already withdrawn in the last {window:g}s)" if already else ""
    reason = (f"would withdraw {len(hold)} of {len(current)} prefixes{earlier}: "
              f"{share:.0%} > {safety.max_withdraw_fraction:.0%}; each held for {window:g}s")
    if pending and share <= safety.max_withdraw_fraction:
        reason = f"{len(hold)} withdrawals held, each for {window:g}s from its first wish"
    if released:
        reason += f"; {released}"
    return GuardVerdict(announce, frozenset(hold), keep, reason, recent)


@dataclass(frozen=True)
class PeerVerdict:
    keep: frozenset[str]  # peers to keep although the config no longer selects them
    held_since: dict[str, float]
    reason: str = ""


def guard_peer_removals(current: set[str], wanted: set[str], *, synced: bool, now: float,
                        held_since: Mapping[str, float], safety: SafetyConfig) -> PeerVerdict:
    """Which of the peers that ``wanted`` drops keep their session for now.

    Dropping up to ``max_withdraw_fraction`` of the node's peers happens at once (a ToR
    replaced by another); dropping more is held, each peer for its own hold time."""
    window = safety.withdraw_hold_seconds
    removed = current - wanted
    if not removed:
        return PeerVerdict(frozenset(), {})
    if not synced:
        return PeerVerdict(frozenset(removed), {},
                           "cluster state not synced: peers are kept until the API answers")
    due = {p for p in removed if p in held_since and now - held_since[p] >= window}
    fresh = removed - due
    if not fresh or len(fresh) / len(current) <= safety.max_withdraw_fraction:
        return PeerVerdict(frozenset(), {})
    keep = {p: held_since.get(p, now) for p in fresh}
    return PeerVerdict(frozenset(fresh), keep,
                       f"the config no longer selects {len(fresh)} of this node's "
                       f"{len(current)} BGP peers ({', '.join(sorted(fresh))}): "
                       f"{len(fresh) / len(current):.0%} > "
                       f"{safety.max_withdraw_fraction:.0%}; kept for {window:g}s")
