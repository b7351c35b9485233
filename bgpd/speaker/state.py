"""What the speaker knows about each peer. Mutated only under the Speaker's lock."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from bgpd.config import BgpConfig, ImportConfig, PeerConfig
from bgpd.model import Announcement, IPNetwork, PeerStatus
from bgpd.speaker.messages import Negotiated
from bgpd.speaker.received import PeerRoutes
from bgpd.speaker.render import is_ibgp
from bgpd.speaker.routes import PeerTarget

ESTABLISHED = "established"
# A TCP connect left unanswered this long is reported: peers drop SYNs silently when the TCP
# MD5 key is wrong or missing, so this is all the evidence of a key mismatch there is.
CONNECT_STALL = 5.0
STATES = {"connected": "connect", "up": ESTABLISHED, "down": "down"}


@dataclass
class PeerState:
    config: PeerConfig
    configured: PeerTarget  # what the config asks this session to carry
    rib: PeerRoutes  # what the peer sent us
    state: str = "idle"
    since: float = field(default_factory=time.time)
    last_error: str = ""
    # What this session carries: the configured families the peer negotiated too.
    target: PeerTarget | None = None
    negotiated: Negotiated | None = None
    # What ExaBGP acknowledged for this peer since its session came up: see announced.
    _announced: dict[IPNetwork, Announcement] = field(default_factory=dict, repr=False)
    # Acknowledged packed commands' routes not yet in _announced: recording 100,000 routes
    # is ~0.1 s of CPU, which during a session's first transfer was taken from ExaBGP and
    # the peer (two cores, three busy processes). Recorded when announced is read, or by
    # the writer once its round is acknowledged (settle_some).
    _acked: list[Iterable[Announcement]] = field(default_factory=list, repr=False)
    # What we had told ExaBGP before the session went down: on the next "up" whatever of it
    # is no longer desired is withdrawn, in case a command was still queued in ExaBGP.
    leftover: dict[IPNetwork, Announcement] = field(default_factory=dict)
    # Ours that this session cannot carry, and why (a family it did not negotiate, ...).
    refused: dict[IPNetwork, str] = field(default_factory=dict)
    # Prefixes whose desired route changed since this peer was last brought up to date.
    dirty: set[IPNetwork] = field(default_factory=set)
    # The session came up (again): send the whole view, not a diff, then End-of-RIB.
    needs_refresh: bool = False
    # Bumped whenever the session or ExaBGP restarts, so late acks of commands sent to an
    # earlier session are not recorded as applied to this one.
    epoch: int = 0
    connecting_since: float | None = None  # since when we wait for a TCP connection
    commands_refused: int = 0
    torn_down: bool = False  # sent a Cease for max_prefixes this session
    held_down_until: float | None = None  # monotonic: the session stays down until then
    held_down_why: str = ""

    @property
    def announced(self) -> dict[IPNetwork, Announcement]:
        while self._acked:
            self.settle_some()
        return self._announced

    @announced.setter
    def announced(self, value: dict[IPNetwork, Announcement]) -> None:
        self._announced, self._acked = value, []

    def acknowledged(self, routes: Iterable[Announcement]) -> None:
        """``routes`` (one packed command's) are this session's now; recorded later."""
        self._acked.append(routes)

    def settle_some(self) -> bool:
        """Record one acknowledged command's routes; False if none was waiting."""
        if not self._acked:
            return False
        announced = self._announced
        for ann in self._acked.pop(0):
            announced[ann.prefix] = ann
        return True

    @classmethod
    def for_peer(cls, bgp: BgpConfig, peer: PeerConfig, imports: ImportConfig) -> PeerState:
        target = PeerTarget(
            peer.address, is_ibgp(bgp, peer), peer.local_address, tuple(peer.families),
            peer.next_hop_ipv6, bgp.asn,
        )
        return cls(peer, target, PeerRoutes(imports), target=target)

    def set_negotiated(self, negotiated: Negotiated) -> None:
        """Carry only what both sides agreed on: ExaBGP acknowledges routes and End-of-RIB
        of any family and sends the End-of-RIB anyway, which strict peers reset for."""
        self.negotiated = negotiated
        families = tuple(f for f in self.configured.families if f in negotiated.families)
        self.target = replace(self.configured, families=families)

    def set_state(self, state: str, reason: str = "") -> bool:
        """Record a state change; True if it changed anything."""
        changed = state != self.state
        if changed:
            self.state = state
            self.since = time.time()
        if reason and reason != self.last_error:
            self.last_error = reason
            changed = True
        return changed

    def reset_session(self) -> None:
        self.epoch += 1
        self.needs_refresh = False
        self.torn_down = False

    def session_lost(self, ours: bool = False) -> None:
        """The session went away (``ours``: ExaBGP did): what the peer sent goes stale
        (kept under graceful restart), what it negotiated is forgotten."""
        self.reset_session()
        self.rib.session_lost(ours)
        self.negotiated = None
        self.target = self.configured
        self.refused = {}

    def held_down(self) -> str:
        """Why the session is kept down on purpose, and for how long more; "" if it is not."""
        left = (self.held_down_until or 0.0) - time.monotonic()
        return f"{self.held_down_why}: session kept down {left:.0f}s more" if left > 0 else ""

    def connect_stalled_reason(self, now: float) -> str:
        if self.held_down():
            return ""  # nothing connects during a hold-down: no stall to explain
        if self.connecting_since is None or now - self.connecting_since < CONNECT_STALL:
            return ""
        reason = f"no TCP connection for {now - self.connecting_since:.0f}s"
        if self.config.password_file:
            reason += " (TCP MD5 in use: a wrong or missing key on either side looks like this)"
        return reason

    def status(self) -> PeerStatus:
        stalled = self.connect_stalled_reason(time.time()) if self.state != ESTABLISHED else ""
        refused = self.rib.refused()
        return PeerStatus(
            address=self.config.address,
            asn=self.config.asn,
            state=self.state,
            since=self.since,
            prefixes_sent=len(self.announced),
            prefixes_received=len(self.rib.routes),
            last_error=self.held_down() or stalled or self.last_error,
            families=self.negotiated.families if self.negotiated else (),
            graceful_restart=self.rib.restart_time,
            prefixes_refused=len(self.refused),
            routes_refused=refused.not_allowed + refused.over_limit,
            routes_stale=len(self.rib.stale),
        )
