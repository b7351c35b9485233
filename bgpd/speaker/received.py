"""Routes received from one peer: filtered as they arrive, bounded, kept through restarts.

* Import rules apply on arrival (``bgpd.policy.imports``): a route that is not allowed is
  counted, never stored; an allowed one beyond ``import.max_prefixes`` likewise. A leak of
  a full table costs a counter, not a copy of the table (one sample per reason is kept for
  ``bgpd routes --received``).
* Graceful restart (RFC 4724). When the peer goes away (receiving side, 4.2) its routes
  stay, marked stale, for the restart time it advertised; a new session refreshes them,
  and its End-of-RIB for a family (or the timer) removes the stale ones it did not send
  again. A peer that did not advertise graceful restart, or comes back without forwarding
  state for a family, loses them at once. When *we* went away (ExaBGP restarted, the
  agent restarted, a session reset for a config change) we are the restarting speaker
  (4.1): our forwarding state is ours to keep until the peer's End-of-RIB, whatever the
  peer's own flags say (they describe the peer's restarts, not ours).

Mutated only under the Speaker's lock.
"""

from __future__ import annotations

import ipaddress
import time
from collections import deque
from dataclasses import dataclass

from bgpd.config import ImportConfig
from bgpd.model import IPNetwork, LearnedRoute, family_of
from bgpd.policy import reasons
from bgpd.policy.imports import allowed

SAMPLE_MAX = 100  # refused prefixes remembered per peer and reason, for the CLI
# After our own restart, how long the peer's routes are kept at most when it advertised no
# restart time of its own (the usual graceful-restart time).
OWN_RESTART_KEEP_SECONDS = 120.0
# After the session is back, stale routes wait this long for the peer's End-of-RIB at most
# (FRR's stalepath-time default, RFC 4724's "selection deferral" bound).
STALE_PATH_SECONDS = 360.0


def family(prefix: IPNetwork) -> str:
    return f"{family_of(prefix)}-unicast"


def usable_next_hop(text: str) -> bool:
    try:
        hop = ipaddress.ip_address(text)
    except ValueError:
        return False
    return not (hop.is_loopback or hop.is_unspecified or hop.is_multicast)


@dataclass(frozen=True)
class Refused:
    """What a peer sent that was not kept, for ``bgpd routes --received``."""

    not_allowed: int
    over_limit: int
    samples: tuple[tuple[str, str], ...]  # (prefix, reason), at most SAMPLE_MAX per reason


class PeerRoutes:
    def __init__(self, config: ImportConfig):
        self.config = config
        self.routes: dict[IPNetwork, LearnedRoute] = {}  # allowed, in arrival order
        self.stale: dict[IPNetwork, LearnedRoute] = {}
        self.stale_until: float | None = None
        self.not_allowed = 0
        self.over_limit = 0
        self._samples: dict[str, deque[str]] = {
            reason: deque(maxlen=SAMPLE_MAX) for reason in (
                reasons.IMPORT_NOT_ALLOWED, reasons.OVER_MAX_PREFIXES, reasons.BAD_NEXT_HOP)}
        self.restart_time: int | None = None  # from the peer's last OPEN
        self.forwarding: tuple[str, ...] = ()
        self.eor_seen: set[str] = set()  # families the peer has sent all of, this session
        self.restarting = False  # the stale routes are kept through our restart, not its

    # ------------------------------------------------------------------ the session

    def announce(self, route: LearnedRoute) -> bool:
        """Store one received route if allowed and room is left; True if stored."""
        prefix = route.prefix
        self.stale.pop(prefix, None)  # sent again: fresh
        if not allowed(route, self.config):
            self._refuse(prefix, reasons.IMPORT_NOT_ALLOWED)
            return self.routes.pop(prefix, None) is not None
        if not usable_next_hop(route.next_hop):
            # OpenBGPD on Linux sends IPv6 routes over an IPv4 session with next hop ::1.
            self._refuse(prefix, reasons.BAD_NEXT_HOP)
            return self.routes.pop(prefix, None) is not None
        if prefix in self.routes:
            del self.routes[prefix]  # re-announced: moves to the end, like a new arrival
        elif len(self.routes) + len(self.stale) >= self.config.max_prefixes:
            self._refuse(prefix, reasons.OVER_MAX_PREFIXES)
            return False
        self.routes[prefix] = route
        return True

    def withdraw(self, prefix: IPNetwork) -> bool:
        stale = self.stale.pop(prefix, None) is not None
        return self.routes.pop(prefix, None) is not None or stale

    def _refuse(self, prefix: IPNetwork, reason: str) -> None:
        if reason == reasons.OVER_MAX_PREFIXES:
            self.over_limit += 1
        else:
            self.not_allowed += 1  # by the rules, or with a next hop nothing can use
        self._samples[reason].append(str(prefix))

    def peer_open(self, restart_time: int | None, forwarding: tuple[str, ...]) -> None:
        """The peer's OPEN of a new session: stale routes of a family it no longer keeps
        forwarding state for (or all, without graceful restart) go now; the others wait
        for its End-of-RIB."""
        if self.stale:
            if not self.restarting:
                keep = set(forwarding) if restart_time is not None else set()
                self.stale = {p: r for p, r in self.stale.items() if family(p) in keep}
            self.stale_until = time.monotonic() + STALE_PATH_SECONDS if self.stale else None
        self.restart_time, self.forwarding = restart_time, forwarding

    def end_of_rib(self, fam: str) -> bool:
        """The peer has sent everything of ``fam``: whatever is still stale of it goes."""
        self.eor_seen.add(fam)
        gone = [p for p in self.stale if family(p) == fam]
        for p in gone:
            del self.stale[p]
        if not self.stale:
            self.stale_until, self.restarting = None, False
        return bool(gone)

    def session_lost(self, ours: bool = False) -> None:
        """The session went away. ``ours``: because of our side (ExaBGP or the session
        restarted here): keep the routes until the peer's End-of-RIB. Otherwise keep them
        for the restart time the peer advertised, or drop them if it advertised none."""
        kept = {**self.stale, **self.routes}
        self.routes = {}
        self.eor_seen = set()
        self.not_allowed = self.over_limit = 0
        keep_for = (self.restart_time or OWN_RESTART_KEEP_SECONDS) if ours else self.restart_time
        if keep_for and kept:
            self.stale = kept
            self.restarting = self.restarting or ours
            # A flapping session does not start the clock over: the routes expire the
            # restart time after the first loss, as if the peer never came back.
            until = time.monotonic() + keep_for
            self.stale_until = min(until, self.stale_until or until)
        else:
            self.stale, self.stale_until, self.restarting = {}, None, False

    def clear(self) -> None:
        """Forget everything the peer sent (it was cut off, not restarting)."""
        self.routes, self.stale, self.stale_until, self.restarting = {}, {}, None, False

    def adopt(self, routes: dict[IPNetwork, LearnedRoute], restart_time: int | None,
              until: float) -> None:
        """Routes an earlier speaker (or agent) held for this peer, kept as stale until
        ``until`` (monotonic) unless this peer's session refreshes them sooner: we are the
        restarting speaker."""
        if routes:
            self.stale.update(routes)
            self.stale_until = until
            self.restart_time = restart_time
            self.restarting = True

    def expire(self, now: float) -> bool:
        if self.stale_until is not None and now >= self.stale_until:
            self.stale, self.stale_until, self.restarting = {}, None, False
            return True
        return False

    # ------------------------------------------------------------------ rules

    def set_config(self, config: ImportConfig) -> bool:
        """New import rules, applied to what is stored. Returns True when the rules may
        now allow routes that were refused (not stored): the peer must send them again."""
        old, self.config = self.config, config
        self.routes = {p: r for p, r in self.routes.items() if allowed(r, config)}
        self.stale = {p: r for p, r in self.stale.items() if allowed(r, config)}
        excess = len(self.routes) - config.max_prefixes
        if excess > 0:  # a lower limit: the newest go, as if they had arrived over it
            for p in list(self.routes)[-excess:]:
                del self.routes[p]
                self._refuse(p, reasons.OVER_MAX_PREFIXES)
        widened = config.allow != old.allow or config.max_prefixes > old.max_prefixes
        return widened and (self.not_allowed > 0 or self.over_limit > 0)

    # ------------------------------------------------------------------ views

    def installable(self) -> list[LearnedRoute]:
        return [*self.stale.values(), *self.routes.values()]

    def refused(self) -> Refused:
        return Refused(self.not_allowed, self.over_limit, tuple(
            (prefix, reason) for reason, sample in self._samples.items() for prefix in sample))
