"""The reconcile loop: one wake-up signal, one consistent snapshot, everything reconciled.

Every watch event, speaker event and kernel event only sets the signal; the loop debounces,
takes a snapshot, runs the pure policy and hands the result to the speaker and the kernel.
Safety lives here, in this order: nothing is announced or withdrawn before the first full
sync; an unsynced or unreachable API never withdraws; a large withdrawal is held back.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from bgpd.config import Config
from bgpd.model import Announcement, DesiredSet, KernelRoute, NextHop, Snapshot
from bgpd.policy import reasons
from bgpd.policy.decide import Decider, Decision, changed_and_removed
from bgpd.policy.drain import drain_trigger
from bgpd.policy.guard import PeerVerdict, guard_peer_removals, guard_withdrawals
from bgpd.policy.peers import peering_for
from bgpd.ports import Cluster, Events, Kernel, SpeakerFactory
from bgpd.runtime import gc_paused
from bgpd.speakers import SpeakerSet, peer_key, split
from bgpd.statefile import StateStore

log = logging.getLogger("bgpd.agent")

LOOP_STALL_SECONDS = 120.0  # /healthz fails when the loop has not turned for this long
RESTART_BACKOFF_SECONDS = 5.0  # wait before retrying a speaker that failed to start
DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
# Kernel routes of an earlier agent (ours by rtproto) are kept at most this long after a
# start without saved state, waiting for the peers' End-of-RIB (the largest configured
# graceful_restart when smaller).
ADOPT_MAX_SECONDS = 120.0
RELEASE_SLACK_S = 0.05  # wake this long after a hold falls due, so it has


class SecretDigests:
    """Digests of the TCP MD5 key files, re-read only when a file changes (the kubelet
    swaps a mounted Secret's files in place): a rotated key re-keys that peer's session."""

    def __init__(self) -> None:
        self._seen: dict[str, tuple[tuple[float, int, int], str]] = {}

    def read(self, paths: Iterable[str]) -> dict[str, str]:
        out = {}
        for path in paths:
            try:
                st = os.stat(path)
                stamp = (st.st_mtime, st.st_ino, st.st_size)
                seen = self._seen.get(path)
                if seen is None or seen[0] != stamp:
                    with open(path, "rb") as fh:
                        digest = hashlib.sha256(fh.read(4096)).hexdigest()[:16]
                    self._seen[path] = seen = (stamp, digest)
                out[path] = seen[1]
            except OSError:
                out[path] = "unreadable"  # the speaker reports why when it starts
        return out


@dataclass
class Status:
    """What the last reconcile did, for /debug/status, metrics and readiness."""

    started_at: float = field(default_factory=time.time)
    loop_at: float = 0.0  # monotonic time the loop last turned
    reconciles: int = 0
    last_reconcile_at: float = 0.0
    last_duration_s: float = 0.0
    durations: list[float] = field(default_factory=list)  # since the last metrics scrape
    ever_synced: bool = False
    synced: bool = False
    api_healthy: bool = False
    api_outage_s: float = 0.0  # total seconds the API was unreachable since start
    held: int = 0  # withdrawals held back right now
    hold_reason: str = ""
    holds_total: int = 0
    peers_held: tuple[str, ...] = ()  # peers kept although the config no longer selects them
    peers_held_reason: str = ""
    adopted_kernel_routes: int = 0  # kept from an earlier agent until every peer's End-of-RIB
    last_error: str = ""
    speaker_error: str = ""
    kernel_failures: list[str] = field(default_factory=list)
    rejections_by_reason: dict[str, int] = field(default_factory=dict)


class Agent:
    def __init__(self, config: Config, node_name: str, cluster: Cluster,
                 speaker_factory: SpeakerFactory, kernel: Kernel | None,
                 events: Events | None = None, *, withdraw_on_exit: bool = False,
                 clock: Callable[[], float] = time.monotonic,
                 after_first_sync: Callable[[], None] | None = None,
                 state: StateStore | None = None, drain_peers: Any = None):
        self.config = config
        # drain.action withdraw: asks the API whether another undrained node exists
        # (bgpd/kube/drainpeers.OthersAvailable); None: unknown, never withdraw.
        self._drain_peers = drain_peers
        self.node_name = node_name
        self.cluster = cluster
        self.kernel = kernel
        self.events = events
        self.withdraw_on_exit = withdraw_on_exit
        self._speaker_factory = speaker_factory
        self._clock = clock
        self._after_first_sync = after_first_sync
        self._signal = threading.Event()
        self._lock = threading.RLock()  # guards the views below against the HTTP threads
        self._decider = Decider()
        self.speaker = SpeakerSet(speaker_factory)
        self._speaker_retry_at = 0.0
        self.decision: Decision | None = None
        self.applied: dict[str, Announcement] = {}  # what the speaker was last told
        self.kernel_applied: dict[str, KernelRoute] = {}
        self._held_since: dict[str, float] = {}
        self._peer_held_since: dict[str, float] = {}
        self._recent_withdrawals: tuple[tuple[float, int], ...] = ()
        self._outage_since: float | None = None
        self._round_ended = -math.inf  # clock time the last round ended (debounce)
        self._desired_from: dict[str, Announcement] = {}  # see _desired_set
        self._desired_objs: set[Announcement] = set()
        self._desired_last: DesiredSet = DesiredSet()
        self._secrets = SecretDigests()
        self.status = Status()
        self._state = state
        # Kernel routes an earlier agent left (ours by rtproto) and that nothing here wants
        # yet: kept until every peer has sent End-of-RIB, or ADOPT_MAX_SECONDS. None: not
        # looked at yet; only when no saved state says what the peers had sent.
        self._adopted: dict[str, KernelRoute] | None = None
        self._adopted_until = 0.0
        saved = state.load() if state is not None else None
        if saved is not None:
            # What the peers were told before the restart: the guard judges against it.
            self.applied = saved.applied
            self.speaker.adopt_on_start(saved.received, max(0.0, time.time() - saved.saved_at))
            self._adopted = {}

    # ------------------------------------------------------------------ the loop

    def wake(self) -> None:
        """Called from any thread by any adapter: something changed."""
        self._signal.set()

    def run(self, stop: threading.Event) -> None:
        """Reconcile until ``stop`` is set; then leave routes to graceful restart (or not)."""
        self.cluster.start()
        try:
            while not stop.is_set():
                self.status.loop_at = self._clock()
                self._signal.wait(self._next_wait())
                if stop.is_set():
                    break
                # Adaptive debounce: a wake-up after a quiet spell is handled at once; one
                # that comes during a round or soon after it (a burst) waits until the
                # round ended debounce_seconds ago, so the burst is batched into one round.
                since = self._clock() - self._round_ended
                if since < self.config.debounce_seconds:
                    stop.wait(self.config.debounce_seconds - since)
                self._signal.clear()
                try:
                    self.reconcile()
                except Exception as exc:  # one bad round must not kill the agent
                    log.exception("reconcile failed")
                    self.status.last_error = f"{type(exc).__name__}: {exc}"
                    self._signal.set()
                    stop.wait(RESTART_BACKOFF_SECONDS)
                self._round_ended = self._clock()
        finally:
            self.shutdown()

    def _next_wait(self) -> float:
        """Until the next resync, or sooner when a held withdrawal or peer, or adopted
        kernel routes, fall due: a quiet cluster must not delay their release."""
        now = self._clock()
        hold = self.config.safety.withdraw_hold_seconds
        due = [since + hold for since in (*self._held_since.values(),
                                          *self._peer_held_since.values())]
        if self._adopted:
            due.append(self._adopted_until)
        wait = self.config.resync_seconds
        if due:
            wait = min(wait, max(0.0, min(due) - now) + RELEASE_SLACK_S)
        return wait

    def apply_config(self, config: Config) -> None:
        """A new config takes effect at the next reconcile; BGP sessions restart only when
        this node's peering itself changed."""
        if config.kernel != self.config.kernel:
            log.warning("event=config_change_ignored field=kernel reason=\"needs a restart\"")
            config = replace(config, kernel=self.config.kernel)
        if config.http != self.config.http:
            log.warning("event=config_change_ignored field=http reason=\"needs a restart\"")
            config = replace(config, http=self.config.http)
        with self._lock:
            self.config = config
        log.info("event=config_reloaded")
        self._signal.set()

    def shutdown(self) -> None:
        withdraw = self.withdraw_on_exit
        log.info("event=shutdown withdraw=%s", withdraw)
        try:
            self.cluster.stop()
        finally:
            if self._state is not None:
                if withdraw:  # everything goes: the next agent starts from nothing
                    self._state.save({}, dict)
                self._state.close()  # while the speakers still know what peers sent
            self.speaker.stop(withdraw=withdraw)
            if self.kernel is not None:
                self.kernel.close(remove=withdraw)

    # ------------------------------------------------------------------ one round

    def reconcile(self) -> None:
        start = self._clock()
        config = self.config
        snap = self.cluster.snapshot()
        st = self.status
        st.reconciles += 1
        if snap.synced and not st.ever_synced:
            st.ever_synced = True
            if self._after_first_sync is not None:
                self._after_first_sync()
        st.synced = snap.synced
        if not st.ever_synced:
            # Nothing is known yet: announcing from an empty view, or withdrawing because of
            # it, would both be wrong. Wait for the first full list.
            return
        self._track_api(start)
        trusted = snap.synced and st.api_healthy
        if trusted and snap.node is not None:
            # Sessions change only on a view we trust: a Node missing from a broken relist
            # must not deselect peers (their speakers would stop, the routes expire).
            self._ensure_speaker(config, snap.node, start)
        self.speaker.set_import_config(config.import_)
        others = self._others_available(snap.node, config)
        with gc_paused():
            decision = self._decider.decide(snap, config, self.node_name,
                                            others_available=others)
        verdict = guard_withdrawals(self.applied, decision.announcements, synced=trusted,
                                    intended=decision.node_opted_out, now=start,
                                    held_since=self._held_since, safety=config.safety,
                                    recent=self._recent_withdrawals)
        self._recent_withdrawals = verdict.recent
        self._note_hold(verdict.held, verdict.reason, verdict.held_since)
        self.speaker.set_desired(self._desired_set(verdict.announce))
        with self._lock:  # what the speaker was told is what the guard compares next time
            self.decision = decision
            self.applied = verdict.announce
        kernel_wanted = self._kernel_routes(decision, config)
        if not trusted:  # keep installed routes too while the cluster view is in doubt
            kernel_wanted = {**self.kernel_applied, **kernel_wanted}
        self._sync_kernel(self._with_adopted(kernel_wanted, config, start))
        if self._state is not None:
            self._state.save(verdict.announce, self.speaker.export_received)
        self._record_rejections(decision, snap)
        st.last_error = ""
        took = self._clock() - start
        st.last_reconcile_at = time.time()
        st.last_duration_s = took
        st.durations.append(took)
        del st.durations[:-1000]
        log.debug("event=reconcile announced=%d held=%d took_ms=%.1f", len(verdict.announce),
                  len(verdict.held), took * 1000)

    def _others_available(self, node: Any, config: Config) -> bool | None:
        """Only a node draining with drain.action withdraw asks; the answer arrives in
        the background (and wakes the loop), so a round never waits for the API."""
        peers = self._drain_peers
        if peers is None:
            return None
        if config.drain.action == "withdraw" and drain_trigger(node, config.drain):
            return peers.get(config.drain)
        peers.not_needed()
        return None

    def _desired_set(self, announce: dict[str, Announcement]) -> DesiredSet:
        """``frozenset(announce.values())``, made from last round's set and what changed
        (found by identity, in C): hashing 10,000 Announcements in Python took ~30 ms a
        round, while a frozenset copied from a set keeps its hashes. It carries that
        difference, so the speaker does not compare two whole sets either."""
        prev, objs = self._desired_from, self._desired_objs
        changed, withdrawn = changed_and_removed(announce, prev)
        added, removed = [], [prev[key] for key in withdrawn]
        for key in changed:
            old = prev.get(key)
            if old is not None:
                removed.append(old)
            added.append(announce[key])
        objs.difference_update(removed)
        objs.update(added)
        self._desired_from, self._desired_objs = announce, objs
        self._desired_last = DesiredSet(objs, base=self._desired_last, added=frozenset(added),
                                        removed=frozenset(removed))
        return self._desired_last

    def _track_api(self, now: float) -> None:
        healthy = self.cluster.healthy()
        st = self.status
        if not healthy and self._outage_since is None:
            self._outage_since = now
            log.warning("event=api_unreachable action=\"holding last known state\"")
        elif healthy and self._outage_since is not None:
            st.api_outage_s += now - self._outage_since
            log.info("event=api_back outage_s=%.1f", now - self._outage_since)
            self._outage_since = None
        st.api_healthy = healthy

    def outage_seconds(self) -> float:
        since = self._outage_since  # read once: the loop may clear it meanwhile
        current = self._clock() - since if since is not None else 0.0
        return self.status.api_outage_s + current

    def _ensure_speaker(self, config: Config, node, now: float) -> None:
        peering = peering_for(config, node)
        for problem in peering.problems:
            if self.events is not None:
                self.events.record("Node", "", self.node_name, reasons.BAD_ANNOTATION, problem)
        if peering.router_id is None:
            self.status.speaker_error = "no router id: set bgp.router_id or give the Node an IPv4 InternalIP"
            return
        if now < self._speaker_retry_at:
            return
        wanted = {peer_key(p): p for p in peering.peers}
        running = self.speaker.peer_configs()
        held = guard_peer_removals(set(running), set(wanted), synced=True, now=now,
                                   held_since=self._peer_held_since, safety=config.safety)
        for key in held.keep:  # losing most peers at once waits, like a mass withdrawal
            wanted[key] = running[key]
        self._note_peer_hold(held)
        bgp = replace(config.bgp, asn=peering.asn, peers=tuple(wanted.values()))
        secrets = self._secrets.read(p.password_file for p in bgp.peers if p.password_file)
        errors = self.speaker.converge(split(bgp, peering.router_id, secrets))
        if errors:
            for line in errors:
                log.error("event=speaker_start_failed error=%r", line)
            self._speaker_retry_at = now + RESTART_BACKOFF_SECONDS
            self._signal.set()
        self.status.speaker_error = "; ".join(errors) or (
            "" if bgp.peers else "no BGP peers selected for this node")

    def _note_peer_hold(self, verdict: PeerVerdict) -> None:
        st = self.status
        keep = tuple(sorted(verdict.keep))
        if keep and keep != st.peers_held:
            log.warning("event=peers_held peers=%s reason=%r", ",".join(keep), verdict.reason)
            if self.events is not None:
                self.events.record("Node", "", self.node_name, "PeersHeld", verdict.reason)
        elif st.peers_held and not keep:
            log.warning("event=peers_released peers=%s", ",".join(st.peers_held))
        self._peer_held_since = verdict.held_since
        st.peers_held, st.peers_held_reason = keep, verdict.reason

    def _with_adopted(self, wanted: dict[str, KernelRoute], config: Config, now: float
                      ) -> dict[str, KernelRoute]:
        """Keep kernel routes an earlier agent left (imported ones, above all the default
        route) while the peers that sent them are not yet back with everything: with no
        saved state nothing else says what they were."""
        if self.kernel is None:
            return wanted
        if self._adopted is None:
            self._adopted = {str(r.prefix): r for r in self.kernel.owned()
                             if str(r.prefix) not in wanted}
            restart = max((p.graceful_restart for p in config.bgp.peers), default=0)
            self._adopted_until = now + min(restart or ADOPT_MAX_SECONDS, ADOPT_MAX_SECONDS)
            if self._adopted:
                log.info("event=kernel_routes_adopted count=%d until_s=%.0f",
                         len(self._adopted), self._adopted_until - now)
        if self._adopted and (now >= self._adopted_until
                              or self.speaker.end_of_rib_from_all()):
            log.info("event=kernel_routes_adoption_over count=%d", len(self._adopted))
            self._adopted = {}
        self.status.adopted_kernel_routes = len(self._adopted)
        if not self._adopted:
            return wanted
        return {**self._adopted, **wanted}

    def _kernel_routes(self, decision: Decision, config: Config) -> dict[str, KernelRoute]:
        routes = dict(decision.kernel_routes)
        if config.import_.enabled:
            for prefix, learned in self.speaker.learned().items():
                key = str(prefix)
                if key in routes or key in decision.announcements:
                    continue  # our own routes win over what peers tell us
                hops = tuple(sorted({NextHop(gateway=r.next_hop) for r in learned}))
                routes[key] = KernelRoute(prefix, hops)
        return routes

    def _sync_kernel(self, wanted: dict[str, KernelRoute]) -> None:
        if self.kernel is None or wanted == self.kernel_applied:
            return  # the kernel monitor repairs drift between changes
        try:
            result = self.kernel.sync(wanted.values())
        except Exception as exc:  # netlink itself broke: report, retry at the next round
            log.error("event=kernel_sync_failed error=%r", str(exc))
            self.status.kernel_failures = [f"kernel sync failed: {exc}"]
            self._signal.set()
            return
        with self._lock:
            self.kernel_applied = wanted
        self.note_kernel_result(result)

    def note_kernel_result(self, result: Any) -> None:
        """What a sync really did, from the agent or from the kernel monitor's repairs, so
        status and metrics follow the kernel and not only our own writes."""
        failures = [f"{f.route.prefix} {f.op}: {f.message}" for f in result.failures]
        failures += [f"{r.prefix}: conflicts with a route this agent does not own"
                     for r in result.conflicts]
        for line in failures:
            log.warning("event=kernel_route_failed detail=%r", line)
        self.status.kernel_failures = failures

    def _note_hold(self, held: frozenset, reason: str, since: dict[str, float]) -> None:
        st = self.status
        if held and not st.held:
            st.holds_total += 1
            log.warning("event=withdrawals_held count=%d reason=%r", len(held), reason)
            if self.events is not None:
                self.events.record("Node", "", self.node_name, "WithdrawalsHeld", reason)
        elif reason and (not held or "released" in reason):
            log.warning("event=withdrawals_released detail=%r", reason)
        self._held_since = since
        st.held = len(held)
        st.hold_reason = reason

    def _record_rejections(self, decision: Decision, snap: Snapshot) -> None:
        counts: dict[str, int] = {}
        for claim in decision.rejections:
            counts[claim.reason] = counts.get(claim.reason, 0) + 1
            kind, _, rest = claim.owner.partition("/")
            namespace, _, name = rest.rpartition("/")
            uid = _uid(snap, kind, rest)
            log.debug("event=rejected owner=%s value=%r reason=%s detail=%r", claim.owner,
                      claim.value, claim.reason, claim.detail)
            if self.events is not None:
                self.events.record(kind.capitalize(), namespace, name, claim.reason,
                                   f"{claim.value}: {claim.detail}",
                                   cluster_wide=decision.same_on_every_node(claim), uid=uid)
        self.status.rejections_by_reason = counts

    # ------------------------------------------------------------------ views

    def ready(self) -> tuple[bool, str]:
        st = self.status
        if not st.ever_synced:
            return False, "waiting for the first sync with the API server"
        if not st.api_healthy:
            return False, "API server unreachable: holding the last known state"
        if st.speaker_error:
            return False, st.speaker_error
        if st.last_error:
            return False, f"the last reconcile failed: {st.last_error}"
        return True, "ok"

    def healthy(self) -> tuple[bool, str]:
        idle = self._clock() - self.status.loop_at
        if self.status.loop_at and idle > max(LOOP_STALL_SECONDS, 2 * self.config.resync_seconds):
            return False, f"reconcile loop stalled for {idle:.0f}s"
        return True, "ok"

    def snapshot_views(self) -> dict[str, Any]:
        """A consistent set of references for the debug views (read-only use)."""
        with self._lock:
            return {"decision": self.decision, "applied": self.applied,
                    "kernel": self.kernel_applied, "config": self.config}


def _uid(snap: Snapshot, kind: str, key: str) -> str:
    """The uid of a claim's owner ("service", "ns/name"), for its Events ("" if unknown)."""
    if kind == "service":
        obj: Any = snap.services.get(key)
    elif kind == "pod":
        obj = snap.pods.get(key)
    else:
        obj = snap.node if snap.node is not None and snap.node.name == key else None
    return getattr(obj, "uid", "") or ""
