"""One BGP speaker per peer, seen by the agent as one.

Each peer gets its own ExaBGP process, so changing or adding one peer in the config
restarts that peer's session only: every other session stays up (MetalLB #1944, #2049:
config changes must not flap unrelated sessions). The cost is one small ExaBGP process per
peer (~32 MB RSS at 100,000 prefixes; nodes usually have two ToRs). When the agent listens
for passive peers (bgp.listen_port) one process must own the port, so all peers share one.

A speaker restarted for a changed peer (or a rotated TCP MD5 key) hands what that peer
sent to its successor, which keeps it as stale until the new session refreshes it
(graceful restart, receiving side): the node keeps forwarding meanwhile.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import replace

from bgpd.config import BgpConfig, ImportConfig, PeerConfig
from bgpd.model import Announcement, IPNetwork, LearnedRoute, PeerStatus, as_frozenset
from bgpd.ports import Received, Speaker, SpeakerFactory

log = logging.getLogger("bgpd.speakers")

# What one speaker runs: its BGP config, router id, and digests of its peers' TCP MD5 keys
# (a rotated key in the mounted Secret changes the spec, so the session is re-keyed).
Spec = tuple[BgpConfig, str, tuple[str, ...]]


def peer_key(peer: PeerConfig) -> str:
    return f"{peer.address}:{peer.port}"


def split(bgp: BgpConfig, router_id: str, secrets: Mapping[str, str] | None = None
          ) -> dict[str, Spec]:
    """The speakers a peering needs, keyed by a stable name. ``secrets`` maps a peer's
    password_file to a digest of its content."""
    secrets = secrets or {}

    def digests(peers: Iterable[PeerConfig]) -> tuple[str, ...]:
        return tuple(secrets.get(p.password_file, "") for p in peers if p.password_file)

    if not bgp.peers:
        return {}
    if bgp.listen_port:
        return {"all": (bgp, router_id, digests(bgp.peers))}
    return {peer_key(p): (replace(bgp, peers=(p,)), router_id, digests((p,)))
            for p in bgp.peers}


class SpeakerSet:
    """Implements the Speaker port over several speakers; ``converge`` changes the members.

    The members dict is replaced, never changed in place: HTTP threads (metrics, /debug)
    iterate it while the loop converges.
    """

    def __init__(self, factory: SpeakerFactory):
        self._factory = factory
        self._members: dict[str, tuple[Spec, Speaker]] = {}
        # None until the agent first says what it wants: a speaker is never handed an empty
        # set by default (a graceful-restart peer would flush everything at End-of-RIB).
        self._desired: frozenset[Announcement] | None = None
        self._import: ImportConfig | None = None
        # What an earlier agent held of each peer (from its saved state), and how long ago
        # that was: given to the speakers as they start.
        self._adopt: tuple[Received, float] | None = None

    def adopt_on_start(self, received: Received, elapsed: float) -> None:
        self._adopt = (received, elapsed)

    def converge(self, specs: dict[str, Spec]) -> list[str]:
        """Stop members whose spec changed or went away, start the missing ones.

        Returns one error line per speaker that failed to start (retried next time)."""
        members = dict(self._members)
        handed: Received = {}
        for name in list(members):
            spec, speaker = members[name]
            if specs.get(name) != spec:
                log.info("event=speaker_stop name=%s reason=%s", name,
                         "changed" if name in specs else "removed")
                del members[name]
                self._members = dict(members)
                if name in specs:  # the same peer again: its successor keeps its routes
                    handed.update(speaker.export_received())
                speaker.stop(withdraw=False)
        errors = []
        for name, spec in specs.items():
            if name in members:
                continue
            try:
                speaker = self._factory(spec[0], spec[1])
                if self._import is not None:
                    speaker.set_import_config(self._import)
                if self._adopt is not None:
                    speaker.adopt_received(*self._adopt)
                if handed:
                    speaker.adopt_received(handed, 0.0)
                speaker.start()
            except Exception as exc:  # a speaker that cannot start is reported, not fatal
                errors.append(f"{name}: {type(exc).__name__}: {exc}")
                continue
            if self._desired is not None:
                speaker.set_desired(self._desired)
            members[name] = (spec, speaker)
            self._members = dict(members)
            log.info("event=speaker_start name=%s", name)
        return errors

    def peer_configs(self) -> dict[str, PeerConfig]:
        """The peers the running speakers serve, keyed like ``peer_key``."""
        return {peer_key(p): p for (bgp, _, _), _ in self._members.values() for p in bgp.peers}

    def start(self) -> None:
        """Members start in ``converge``."""

    def stop(self, withdraw: bool = False) -> None:
        members, self._members = self._members, {}
        for _, speaker in members.values():
            speaker.stop(withdraw=withdraw)

    def set_desired(self, announcements: Iterable[Announcement]) -> None:
        self._desired = as_frozenset(announcements)  # a DesiredSet reaches every member
        for _, speaker in self._members.values():
            speaker.set_desired(self._desired)

    def set_import_config(self, config: ImportConfig) -> None:
        """Import rules apply to running sessions at once (no reset): a route leak is
        stopped by tightening the config."""
        if config == self._import:
            return
        self._import = config
        for _, speaker in self._members.values():
            speaker.set_import_config(config)

    def peers(self) -> list[PeerStatus]:
        return [p for _, s in self._members.values() for p in s.peers()]

    def _serving(self, peer: str) -> Speaker | None:
        for (bgp, _, _), speaker in self._members.values():
            if any(p.address == peer for p in bgp.peers):
                return speaker
        return None

    def announced(self, peer: str) -> set[Announcement]:
        speaker = self._serving(peer)
        return speaker.announced(peer) if speaker is not None else set()

    def refused(self, peer: str) -> dict[IPNetwork, str]:
        speaker = self._serving(peer)
        return speaker.refused(peer) if speaker is not None else {}

    def received(self, peer: str):
        speaker = self._serving(peer)
        return speaker.received(peer) if speaker is not None else None

    def learned(self) -> dict[IPNetwork, list[LearnedRoute]]:
        merged: dict[IPNetwork, list[LearnedRoute]] = {}
        for _, speaker in self._members.values():
            for prefix, routes in speaker.learned().items():
                merged.setdefault(prefix, []).extend(routes)
        return merged

    def export_received(self) -> Received:
        out: Received = {}
        for _, speaker in self._members.values():
            out.update(speaker.export_received())
        return out

    def end_of_rib_from_all(self) -> bool:
        return bool(self._members) and all(
            s.end_of_rib_from_all() for _, s in self._members.values())

    def counters(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for _, speaker in self._members.values():
            for key, value in speaker.counters().items():
                total[key] = total.get(key, 0) + value
        return total

    def __len__(self) -> int:
        return len(self._members)
