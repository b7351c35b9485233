"""What the speaker knows about each peer. Mutated only under the Speaker's lock."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from bgpd.config import BgpConfig, PeerConfig
from bgpd.model import Announcement, IPNetwork, LearnedRoute, PeerStatus
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
    target: PeerTarget
    state: str = "idle"
    since: float = field(default_factory=time.time)
    last_error: str = ""
    # What ExaBGP acknowledged for this peer since its session came up.
    announced: dict[IPNetwork, Announcement] = field(default_factory=dict)
    # What we had told ExaBGP before the session went down: on the next "up" whatever of it
    # is no longer desired is withdrawn, in case a command was still queued in ExaBGP.
    stale: dict[IPNetwork, Announcement] = field(default_factory=dict)
    # Prefixes whose desired route changed since this peer was last brought up to date.
    dirty: set[IPNetwork] = field(default_factory=set)
    # The session came up (again): send the whole view, not a diff, then End-of-RIB.
    needs_refresh: bool = False
    # Bumped whenever the session or ExaBGP restarts, so late acks of commands sent to an
    # earlier session are not recorded as applied to this one.
    epoch: int = 0
    received: dict[IPNetwork, LearnedRoute] = field(default_factory=dict)
    connecting_since: float | None = None  # since when we wait for a TCP connection
    commands_refused: int = 0
    routes_refused: int = 0  # by the import policy, last time it ran

    @classmethod
    def for_peer(cls, bgp: BgpConfig, peer: PeerConfig) -> PeerState:
        target = PeerTarget(
            peer.address, is_ibgp(bgp, peer), peer.local_address, tuple(peer.families),
            peer.next_hop_ipv6,
        )
        return cls(peer, target)

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
        self.received.clear()

    def connect_stalled_reason(self, now: float) -> str:
        if self.connecting_since is None or now - self.connecting_since < CONNECT_STALL:
            return ""
        reason = f"no TCP connection for {now - self.connecting_since:.0f}s"
        if self.config.password_file:
            reason += " (TCP MD5 in use: a wrong or missing key on either side looks like this)"
        return reason

    def status(self) -> PeerStatus:
        stalled = self.connect_stalled_reason(time.time()) if self.state != ESTABLISHED else ""
        return PeerStatus(
            address=self.config.address,
            asn=self.config.asn,
            state=self.state,
            since=self.since,
            prefixes_sent=len(self.announced),
            prefixes_received=len(self.received),
            last_error=stalled or self.last_error,
        )
