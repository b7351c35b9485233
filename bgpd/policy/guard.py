"""The mass-withdraw guard: a cluster-wide glitch must not black-hole a data centre.

Pure: given what is announced now, what the policy wants, and the time the guard started
holding, it says what to announce this round. Withdrawals above the allowed share are held
back; they are released all at once after ``withdraw_hold_seconds`` of the same wish.
"""

from __future__ import annotations

from dataclasses import dataclass

from bgpd.config import SafetyConfig
from bgpd.model import Announcement, IPNetwork


@dataclass(frozen=True)
class GuardVerdict:
    announce: dict[IPNetwork, Announcement]  # what to apply now
    held: frozenset[IPNetwork]  # withdrawals postponed
    holding_since: float | None  # when the current hold began (None: not holding)
    reason: str = ""  # why, for logs and Events; "" when nothing is held


def guard_withdrawals(current: dict[IPNetwork, Announcement],
                      desired: dict[IPNetwork, Announcement], *, synced: bool,
                      intended: bool, now: float, holding_since: float | None,
                      safety: SafetyConfig) -> GuardVerdict:
    """Decide how much of ``current - desired`` may be withdrawn now.

    ``synced`` False (watchers not synced, API unreachable): withdraw nothing at all, but do
    add what is new. ``intended`` (node labelled out, withdraw-on-exit) bypasses the share
    limit: the operator asked for it.
    """
    withdrawn = [p for p in current if p not in desired]
    if not withdrawn:
        return GuardVerdict(dict(desired), frozenset(), None)
    if not synced:
        merged = dict(desired)
        for p in withdrawn:
            merged[p] = current[p]
        # No clock runs while the view is in doubt: the hold time starts at the first
        # trusted round, so an outage can never count toward releasing a mass withdrawal.
        return GuardVerdict(merged, frozenset(withdrawn), None,
                            "cluster state not synced: withdrawals wait for the API")
    if intended:
        return GuardVerdict(dict(desired), frozenset(), None)
    share = len(withdrawn) / len(current)
    small = len(current) < safety.guard_min_prefixes
    if small or share <= safety.max_withdraw_fraction:
        return GuardVerdict(dict(desired), frozenset(), None)
    since = holding_since if holding_since is not None else now
    if now - since >= safety.withdraw_hold_seconds:
        return GuardVerdict(dict(desired), frozenset(), None,
                            f"released {len(withdrawn)} held withdrawals after "
                            f"{safety.withdraw_hold_seconds:g}s")
    merged = dict(desired)
    for p in withdrawn:
        merged[p] = current[p]
    return GuardVerdict(merged, frozenset(withdrawn), since,
                        f"would withdraw {len(withdrawn)} of {len(current)} prefixes "
                        f"({share:.0%} > {safety.max_withdraw_fraction:.0%}); holding for "
                        f"{safety.withdraw_hold_seconds:g}s")
