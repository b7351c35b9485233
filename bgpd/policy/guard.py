"""The mass-withdraw guard: a cluster-wide glitch must not black-hole a data centre.

Pure: given what is announced now, what the policy wants, the withdrawals already made
recently, and the time the guard started holding, it says what to announce this round.

Withdrawals are counted over a sliding window of ``withdraw_hold_seconds``, not one round
at a time: a namespace deletion or a bad `kubectl apply` that arrives over several
debounce windows must not drain a node half a round at a time. When the share withdrawn in
the window would pass ``max_withdraw_fraction``, this round's withdrawals are held back and
released all at once after ``withdraw_hold_seconds`` of the same wish.
"""

from __future__ import annotations

from dataclasses import dataclass

from bgpd.config import SafetyConfig
from bgpd.model import Announcement

Recent = tuple[tuple[float, int], ...]  # (time, prefixes withdrawn) inside the window


@dataclass(frozen=True)
class GuardVerdict:
    announce: dict[str, Announcement]  # what to apply now
    held: frozenset[str]  # withdrawals postponed
    holding_since: float | None  # when the current hold began (None: no hold timer runs)
    reason: str = ""  # why, for logs and Events; "" when nothing is held
    recent: Recent = ()  # withdrawals applied inside the window, this round's included


def guard_withdrawals(current: dict[str, Announcement], desired: dict[str, Announcement], *,
                      synced: bool, intended: bool, now: float, holding_since: float | None,
                      safety: SafetyConfig, recent: Recent = ()) -> GuardVerdict:
    """Decide how much of ``current - desired`` may be withdrawn now.

    ``synced`` False (watchers not synced, API unreachable): withdraw nothing at all, but do
    add what is new; no hold timer runs meanwhile. ``intended`` (node labelled out,
    withdraw-on-exit) bypasses the share limit: the operator asked for it.
    """
    window = safety.withdraw_hold_seconds
    recent = tuple((t, n) for t, n in recent if now - t < window)
    withdrawn = [p for p in current if p not in desired]
    if not withdrawn:
        return GuardVerdict(dict(desired), frozenset(), None, recent=recent)
    if not synced:
        merged = dict(desired)
        for p in withdrawn:
            merged[p] = current[p]
        # No clock runs while the view is in doubt: the hold time starts at the first
        # trusted round, so an outage can never count toward releasing a mass withdrawal.
        return GuardVerdict(merged, frozenset(withdrawn), None,
                            "cluster state not synced: withdrawals wait for the API",
                            recent)
    if intended:
        return GuardVerdict(dict(desired), frozenset(), None, recent=recent)
    already = sum(n for _, n in recent)
    baseline = len(current) + already  # what was announced when the window began
    share = (already + len(withdrawn)) / baseline
    applied = (*recent, (now, len(withdrawn)))
    if baseline < safety.guard_min_prefixes or share <= safety.max_withdraw_fraction:
        return GuardVerdict(dict(desired), frozenset(), None, recent=applied)
    since = holding_since if holding_since is not None else now
    if now - since >= window:
        return GuardVerdict(dict(desired), frozenset(), None,
                            f"released {len(withdrawn)} held withdrawals after {window:g}s",
                            applied)
    merged = dict(desired)
    for p in withdrawn:
        merged[p] = current[p]
    earlier = f" (with {already} already withdrawn in the last {window:g}s)" if already else ""
    return GuardVerdict(merged, frozenset(withdrawn), since,
                        f"would withdraw {len(withdrawn)} of {len(current)} prefixes{earlier}: "
                        f"{share:.0%} > {safety.max_withdraw_fraction:.0%}; holding for "
                        f"{window:g}s", recent)
