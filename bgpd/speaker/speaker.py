"""The ExaBGP speaker driver: desired announcements in, BGP sessions and learned routes out.

Threads: the supervisor relays ExaBGP's log and restarts it; the API reader turns ExaBGP's
JSON into peer state and received routes; the writer turns the desired set into the fewest
commands and records what ExaBGP acknowledged, peer by peer.

ExaBGP acknowledges what it will not send (routes and End-of-RIB of a family the session
did not negotiate, attributes too big for a message): so the writer sends each session
only what it negotiated and fits, and records the rest as refused, with the reason.
"""

from __future__ import annotations

import functools
import itertools
import logging
import os
import pwd
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import bgpd
from bgpd.config import BgpConfig, ImportConfig
from bgpd.model import Announcement, IPNetwork, LearnedRoute, PeerStatus, as_frozenset
from bgpd.ports import Received
from bgpd.speaker import bridge, exabgp_main, messages
from bgpd.speaker.channel import ApiServer, Connection
from bgpd.speaker.errors import SpeakerError
from bgpd.speaker.process import Supervisor
from bgpd.speaker.received import OWN_RESTART_KEEP_SECONDS, Refused, family
from bgpd.speaker.render import SpeakerSettings, render_config, render_environment
from bgpd.speaker.routes import (
    EVERYTHING_CHANGED_MIN,
    TOO_BIG,
    Command,
    DesiredIndex,
    PeerTarget,
    commands,
    diff,
    diff_prefixes,
    eor_command,
)
from bgpd.speaker.snapshot import Snapshot
from bgpd.speaker.state import ESTABLISHED, STATES, PeerState
from bgpd.speaker.workdir import WORKDIR_PREFIX, Workdir, remove_stale_workdirs

log = logging.getLogger("bgpd.speaker")

__all__ = ["WORKDIR_PREFIX", "Speaker", "remove_stale_workdirs"]

RESYNC_INTERVAL = 30.0  # seconds: the writer re-checks every peer even without a wake-up
ROUND_TIMEOUT = 600.0  # one writer round (a full table to a peer) may take this long
# An ExaBGP error line this recent is taken as the reason for the command it refused.
ERROR_REASON_WINDOW = 5.0
SYNC_POLL = 0.01
# While a peer is down, the desired table is grouped and packed ahead of its session
# (a Snapshot: ~0.15 s of CPU at 100,000 routes) at most this often, so that a table
# changing every second costs a down peer's node little; a refresh that finds the
# snapshot out of date makes it then.
SNAPSHOT_WARM_INTERVAL = 5.0
STOP_WITHDRAW_TIMEOUT = 30.0
CEASE_MAX_PREFIXES = 1  # RFC 4486 Cease subcode: maximum number of prefixes reached
# ExaBGP for the speaker: an interpreter without the agent's file capability, if the image
# has one (belt and braces: bgpd.speaker.launch drops every capability anyway).
SPEAKER_PYTHON_ENV = "BGPD_SPEAKER_PYTHON"



class Speaker:
    """Drive one ExaBGP process for ``bgp``; see the module docstring for the threads."""

    def __init__(
        self,
        bgp: BgpConfig,
        router_id: str | None = None,
        import_config: ImportConfig | None = None,
        notify: Callable[[], None] | None = None,
        netns: str | None = None,
        log_level: str = "INFO",
    ):
        rid = router_id or (bgp.router_id if bgp.router_id != "auto" else None)
        if not rid:
            raise SpeakerError("bgp.router_id is 'auto': pass the node's router id to the speaker")
        self.bgp = bgp
        self.import_config = import_config or ImportConfig()
        self._notify = notify
        self._netns = netns
        self._log_level = log_level
        self._router_id = rid
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        # None until the agent first says what it wants: until then nothing, not even an
        # End-of-RIB, goes to a peer (a graceful-restart peer would flush what it kept of us).
        self._desired: frozenset[Announcement] | None = None
        self._index = DesiredIndex()  # the writer thread's own: no lock needed
        self._unplanned: set = set()  # prefixes indexed as changed, not yet planned for peers
        self._unplanned_all = False  # ... or all of them: compare every peer's whole view
        self._snapshot: Snapshot | None = None  # the writer's own, for self._index.source
        self._snapshot_warmed = -SNAPSHOT_WARM_INTERVAL  # monotonic time of the last warm-up
        self._peers = {p.address: PeerState.for_peer(bgp, p, self.import_config)
                       for p in bgp.peers}
        self._counters = {"commands_sent": 0, "commands_packed": 0, "commands_refused": 0,
                          "exabgp_exits": 0}
        # Large groups of routes go as ``announce packed`` (ExaBGP patch 13): only to an
        # ExaBGP that has the patch, and never again once one refused such a line.
        self._packed = False
        self._last_error_line: tuple[float, str] = (0.0, "")
        self._learned_cache: dict[IPNetwork, list[LearnedRoute]] | None = None
        self._workdir: Workdir | None = None
        self._api: ApiServer | None = None
        self._supervisor: Supervisor | None = None
        self._writer = threading.Thread(
            target=self._writer_loop, name="speaker-writer", daemon=True
        )

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        remove_stale_workdirs()
        self._workdir = Workdir()
        folder = self._workdir.path
        socket_path = str(folder / "api.sock")
        self._api = ApiServer(socket_path, self._on_connect, self._on_line, self._on_disconnect)
        python = os.environ.get(SPEAKER_PYTHON_ENV) or sys.executable
        settings = SpeakerSettings(
            router_id=self._router_id,
            api_argv=bridge.argv(python, socket_path),
            log_level=self._log_level,
        )
        conf = folder / "exabgp.conf"
        conf.write_text(render_config(self.bgp, settings, self._read_passwords()))
        conf.chmod(0o600)  # it holds the MD5 secrets
        env = dict(os.environ, **render_environment(self.bgp, settings))
        self._packed = exabgp_main.unpatched_reason(env) is None
        if os.getuid() == 0 or os.getgid() == 0:
            # ExaBGP run by uid or gid 0 always switches to exabgp.daemon.user; it starts
            # without any capability (bgpd.speaker.launch), so it can only "switch" to
            # itself.
            env["exabgp_daemon_user"] = pwd.getpwuid(os.getuid()).pw_name
        root = str(Path(bgpd.__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
        launch = [sys.executable, "-m", "bgpd.speaker.launch"]
        if self._netns:
            launch += ["--netns", self._netns]
        argv = [*launch, "--", python, "-m", "bgpd.speaker.exabgp_main", "server", str(conf)]
        self._supervisor = Supervisor(argv, env, on_line=self._on_log_line, on_exit=self._on_exit)
        self._writer.start()
        try:
            self._supervisor.start()
        except SpeakerError:
            self.stop()
            raise

    def _read_passwords(self) -> dict[str, str]:
        passwords = {}
        for peer in self.bgp.peers:
            if peer.password_file:
                try:
                    passwords[peer.address] = Path(peer.password_file).read_text().rstrip("\r\n")
                except OSError as exc:
                    raise SpeakerError(
                        f"peer {peer.label}: cannot read password_file: {exc}"
                    ) from exc
        return passwords

    def stop(self, withdraw: bool = False) -> None:
        """Stop ExaBGP. By default peers keep our routes under graceful restart (ExaBGP
        closes a GR session without a NOTIFICATION); ``withdraw=True`` withdraws them first."""
        if withdraw and self._api is not None and self._api.current is not None:
            self.set_desired(())
            if not self.wait_synced(STOP_WITHDRAW_TIMEOUT):
                log.error("not every withdrawal was acknowledged before stopping")
        self._stopping.set()
        self._wake.set()
        if self._supervisor is not None:
            self._supervisor.stop()
        if self._api is not None:
            self._api.close()
        if self._writer.is_alive():
            self._writer.join(STOP_WITHDRAW_TIMEOUT)
        if self._workdir is not None:
            self._workdir.remove()

    # ------------------------------------------------------------------ agent API

    def set_desired(self, announcements: Iterable[Announcement]) -> None:
        """Replace the desired set; returns at once, the writer applies it.

        Passing a set (or frozenset) of the same Announcement objects as last time makes a
        small change cheap: their hashes are reused, not recomputed. A frozenset is kept as
        it is, not copied; a :class:`DesiredSet` made from the last one passed costs only
        its difference."""
        desired = as_frozenset(announcements)
        with self._lock:
            self._desired = desired
        self._wake.set()

    def set_import_config(self, config: ImportConfig) -> None:
        """New import rules, applied to what is already stored (no session reset). When
        they may now accept routes that were refused (and so not kept), the peer is asked
        for its routes again: a route refresh if it supports one, else the session is
        restarted (graceful restart keeps forwarding on both sides meanwhile)."""
        again = []
        with self._lock:
            if config == self.import_config:
                return
            self.import_config = config
            for address, st in self._peers.items():
                if st.rib.set_config(config) and st.state == ESTABLISHED:
                    refresh = st.negotiated is not None and st.negotiated.refresh
                    again.append((address, st.target.families if refresh else ()))
            self._learned_cache = None
        for address, families in again:
            for fam in families:
                self._command(f"neighbor {address} announce route-refresh "
                              f"{fam.replace('-', ' ')}")
            if not families:  # RFC 4486 Cease 4: administrative reset
                self._command(f"neighbor {address} teardown 4")
        self._changed()

    def peers(self) -> list[PeerStatus]:
        with self._lock:
            return [st.status() for st in self._peers.values()]

    def announced(self, peer: str) -> set[Announcement]:
        with self._lock:
            st = self._peers.get(peer)
            return set(st.announced.values()) if st and st.state == ESTABLISHED else set()

    def refused(self, peer: str) -> dict[IPNetwork, str]:
        """Our announcements this session cannot carry, with the reason."""
        with self._lock:
            st = self._peers.get(peer)
            return dict(st.refused) if st else {}

    def learned(self) -> dict[IPNetwork, list[LearnedRoute]]:
        """Routes received from peers that passed the import policy, stale ones included."""
        with self._lock:
            if self._learned_cache is None:
                merged: dict[IPNetwork, list[LearnedRoute]] = {}
                for st in self._peers.values():
                    for route in st.rib.installable():
                        merged.setdefault(route.prefix, []).append(route)
                self._learned_cache = merged
            return {prefix: list(routes) for prefix, routes in self._learned_cache.items()}

    def received(self, peer: str) -> tuple[list[LearnedRoute], list[LearnedRoute], Refused]:
        """(stored, stale, refused) of what ``peer`` sent, for ``bgpd routes --received``."""
        with self._lock:
            st = self._peers.get(peer)
            if st is None:
                return [], [], Refused(0, 0, ())
            return list(st.rib.routes.values()), list(st.rib.stale.values()), st.rib.refused()

    def export_received(self) -> Received:
        """What each peer sent (stale or not) and its restart time, for the next speaker
        of the same peer or the next agent: they keep it while the session comes back."""
        with self._lock:
            return {address: ({r.prefix: r for r in st.rib.installable()}, st.rib.restart_time)
                    for address, st in self._peers.items() if st.rib.installable()}

    def adopt_received(self, received: Received, elapsed: float = 0.0) -> None:
        """Routes an earlier speaker or agent held, lost ``elapsed`` seconds ago: stale
        here (we are the restarting speaker) for the rest of their peer's restart time,
        unless the session refreshes them first."""
        now = time.monotonic()
        with self._lock:
            for address, (routes, restart_time) in received.items():
                st = self._peers.get(address)
                keep_for = restart_time or OWN_RESTART_KEEP_SECONDS
                if st is not None and elapsed < keep_for:
                    st.rib.adopt(routes, restart_time, now + keep_for - elapsed)
            self._learned_cache = None
        self._wake.set()  # the writer watches the stale timer

    def end_of_rib_from_all(self) -> bool:
        """Every peer is up and has sent everything it has (End-of-RIB for each family)."""
        with self._lock:
            return all(st.state == ESTABLISHED and st.negotiated is not None
                       and set(st.target.families) <= st.rib.eor_seen
                       for st in self._peers.values())

    def counters(self) -> dict[str, int]:
        with self._lock:
            out = dict(self._counters)
            out["exabgp_restarts"] = self._supervisor.restarts if self._supervisor else 0
            refused = [st.rib.refused() for st in self._peers.values()]
            out["routes_refused_import"] = sum(r.not_allowed + r.over_limit for r in refused)
            return out

    def exabgp_pid(self) -> int | None:
        return self._supervisor.pid if self._supervisor else None

    def in_sync(self) -> bool:
        """Every established peer holds exactly its view of the desired set, less what it
        cannot carry (true when no session is up: there is nothing to wait for)."""
        with self._lock:
            desired = self._desired
            if desired is None:
                return False
            index = DesiredIndex()
            index.update(desired)
            for st in self._peers.values():
                if st.state != ESTABLISHED:
                    continue
                want = {p: a for p, a in index.view(st.target).items() if p not in st.refused}
                if st.needs_refresh or st.announced != want:
                    return False
            return True

    def wait_synced(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self.in_sync():
            if time.monotonic() > deadline:
                return False
            time.sleep(SYNC_POLL)
        return True

    # ------------------------------------------------------------------ ExaBGP events

    def _changed(self) -> None:
        if self._notify is not None:
            try:
                self._notify()
            except Exception:
                log.exception("speaker notify callback failed")

    def _command(self, line: str) -> None:
        """A command whose answer changes no bookkeeping (route refresh, teardown)."""
        conn = self._api.current if self._api is not None else None
        if conn is not None:
            conn.send(line, lambda ok: ok or log.error("ExaBGP refused %r", line))

    def _reset_all(self, state: str, reason: str) -> None:
        with self._lock:
            for st in self._peers.values():
                st.set_state(state, reason if not st.held_down() else "")
                st.session_lost(ours=True)  # ExaBGP itself went or came: our restart
                st.announced = {}  # a new ExaBGP process starts with nothing
                # ExaBGP connects to every peer at start (not during a hold-down)
                st.connecting_since = None if st.held_down() else time.time()
            self._learned_cache = None
        self._wake.set()  # the stale timer

    def _on_connect(self, conn: Connection) -> None:
        log.info("ExaBGP API connected (generation %d)", conn.generation)
        self._reset_all("idle", "")
        self._changed()

    def _on_disconnect(self, conn: Connection) -> None:
        if self._stopping.is_set():
            return
        newer = self._api.current if self._api is not None else None
        if newer is not None and newer is not conn:
            return  # a new ExaBGP already connected and reset everything
        log.warning("ExaBGP API connection %d lost", conn.generation)
        self._reset_all("down", "ExaBGP stopped")
        self._changed()

    def _on_exit(self, code: int) -> None:
        with self._lock:
            self._counters["exabgp_exits"] += 1
        # Its sessions died with it. Normally its API helper has closed our connection
        # already; if not, close it here so every peer is reported down at once.
        conn = self._api.current if self._api is not None else None
        if conn is not None:
            log.warning("ExaBGP exited (%s): closing its API connection %d", code, conn.generation)
            conn.close()

    def _on_log_line(self, line: str) -> None:
        if "error" in line.lower() or "failure" in line.lower() or "could not" in line.lower():
            with self._lock:
                self._last_error_line = (time.monotonic(), line)
                for address, st in self._peers.items():
                    if address in line and st.state != ESTABLISHED:
                        st.last_error = line  # e.g. a connect failure while MD5 mismatches

    def _on_line(self, conn: Connection, line: str) -> None:
        msg = messages.parse_message(line)
        changed = False
        with self._lock:
            st = self._peers.get(getattr(msg, "peer", ""))
            if isinstance(msg, messages.StateChange) and st is not None:
                changed = self._on_state(st, msg)
            elif isinstance(msg, messages.Negotiated) and st is not None:
                st.set_negotiated(msg)
                log.info("peer %s negotiated %s", st.config.label, ", ".join(msg.families))
            elif isinstance(msg, messages.PeerOpen) and st is not None:
                log.info("peer %s graceful restart: %s", st.config.label,
                         f"{msg.graceful_restart} s, forwarding kept for "
                         f"{', '.join(msg.forwarding) or 'no family'}"
                         if msg.graceful_restart is not None else "not advertised")
                st.rib.peer_open(msg.graceful_restart, msg.forwarding)
                self._learned_cache = None
                changed = True
            elif isinstance(msg, messages.Notification) and st is not None:
                st.last_error = (
                    f"notification {msg.direction} {msg.code}/{msg.subcode} {msg.message}".strip()
                )
                log.warning("peer %s: %s", st.config.label, st.last_error)
                changed = True
            elif isinstance(msg, messages.RoutesUpdate) and st is not None:
                changed = self._on_routes(st, msg)
            elif isinstance(msg, messages.Unknown):
                if msg.reason and line.startswith("{"):
                    log.warning("ExaBGP API line not understood (%s): %s", msg.reason, line[:500])
                else:
                    log.debug("ExaBGP API: %s", line[:500])
        if changed:
            self._changed()

    def _on_state(self, st: PeerState, msg: messages.StateChange) -> bool:
        state = STATES.get(msg.state, msg.state)
        changed = st.set_state(state, msg.reason)
        if msg.state in ("connected", "up"):
            st.connecting_since = None
        if state == ESTABLISHED:
            st.reset_session()  # keeps what was negotiated: that message comes before "up"
            # update, not replace: leftover may hold late acks of the last session
            st.leftover.update(st.announced)
            st.announced = {}
            st.needs_refresh = True
            self._wake.set()
        elif state == "down":
            st.session_lost()
            st.connecting_since = time.time()
            self._wake.set()  # the stale timer
            left = (st.held_down_until or 0.0) - time.monotonic()
            if left > 0 and self._supervisor is not None and len(self._peers) == 1:
                # The Cease is out (the session is down): ExaBGP would reconnect at once, and
                # its process serves only this peer, so it is stopped for the hold-down.
                st.connecting_since = None
                self._supervisor.pause(left)
        self._learned_cache = None
        log.info("peer %s %s %s", st.config.label, msg.state, msg.reason)
        return changed

    def _on_routes(self, st: PeerState, msg: messages.RoutesUpdate) -> bool:
        if st.torn_down:
            return False  # cut off: nothing more it sends this session is taken
        changed = False
        for prefix in msg.withdrawn:
            changed |= st.rib.withdraw(prefix)
        for route in msg.announced:
            changed |= st.rib.announce(route)
        if msg.eor:
            changed |= st.rib.end_of_rib(msg.eor)
        if changed:
            self._learned_cache = None
        config = self.import_config
        if st.rib.over_limit and config.max_prefixes_action == "refuse":
            first = "max_prefixes" not in st.last_error
            st.last_error = (f"{st.rib.over_limit} routes over import.max_prefixes "
                             f"{config.max_prefixes} refused (counted, not stored)")
            if first:
                log.warning("peer %s: %s", st.config.label, st.last_error)
        if (st.rib.over_limit and config.max_prefixes_action == "teardown"
                and not st.torn_down):
            # Cut off, as a router's maximum-prefix does: a Cease (bgpd's ExaBGP patch sends
            # it even under graceful restart), what the peer sent is dropped, and the session
            # stays down for teardown_seconds (ExaBGP is stopped once the session is down).
            st.torn_down = True
            st.held_down_until = time.monotonic() + config.teardown_seconds
            st.held_down_why = f"sent more than import.max_prefixes {config.max_prefixes}"
            st.rib.clear()
            changed = True
            self._learned_cache = None
            log.error("peer %s %s: Cease, session kept down %gs", st.config.label,
                      st.held_down_why, config.teardown_seconds)
            self._command(f"neighbor {st.config.address} teardown {CEASE_MAX_PREFIXES}")
        return changed

    # ------------------------------------------------------------------ writer

    def _writer_loop(self) -> None:
        while not self._stopping.is_set():
            woken = self._wake.wait(self._next_wait())
            self._wake.clear()
            if self._stopping.is_set():
                return
            try:
                self._expire_stale()
                # A periodic full comparison catches anything a failed command left behind.
                self._reconcile_once(full=not woken)
            except Exception:
                log.exception("speaker writer round failed")

    def _next_wait(self) -> float:
        with self._lock:
            deadlines = [st.rib.stale_until for st in self._peers.values()
                         if st.rib.stale_until is not None]
        if not deadlines:
            return RESYNC_INTERVAL
        return max(0.0, min(RESYNC_INTERVAL, min(deadlines) - time.monotonic()))

    def _expire_stale(self) -> None:
        now = time.monotonic()
        with self._lock:
            expired = [st for st in self._peers.values() if st.rib.expire(now)]
            for st in expired:
                log.warning("peer %s: stale routes expired (no End-of-RIB within the restart "
                            "time)", st.config.label)
            if expired:
                self._learned_cache = None
        if expired:
            self._changed()

    def _refusals(self, st: PeerState, prefixes: Iterable[IPNetwork]) -> None:
        """Record which of ``prefixes`` this session cannot carry for its family."""
        sendable, configured = st.target.families, st.configured.families
        if sendable == configured:
            if st.refused:  # usually empty: then 100,000 prefixes need not be hashed
                for prefix in prefixes:
                    st.refused.pop(prefix, None)
            return
        for prefix in prefixes:
            fam = family(prefix)
            if fam in configured and fam not in sendable and self._index.chosen(prefix):
                st.refused[prefix] = f"{fam} was not negotiated with the peer"
            else:
                st.refused.pop(prefix, None)

    def _index_desired(self) -> bool:
        """Bring the index up to the agent's latest desired set, remembering the prefixes
        whose claims changed until a plan hands them to the peers; False while the agent
        has not said what it wants yet."""
        with self._lock:
            desired = self._desired
        if desired is None:
            return False
        if not self._index.by_prefix and len(desired) > EVERYTHING_CHANGED_MIN:
            # A first large table: every session that comes up is sent all of it, so it
            # is indexed, grouped and packed for them at once, in one pass.
            self._snapshot = Snapshot.indexing(self._index, desired)
            changed = None
        else:
            changed = self._index.update(desired)
        if changed is None:
            self._unplanned_all, self._unplanned = True, set()
        else:
            self._unplanned |= changed
        return True

    def _plan(self, full: bool) -> list[tuple[PeerState, int, Iterable[Command]]]:
        if not self._index_desired():
            # A peer that is up keeps needs_refresh and gets its whole view (and
            # End-of-RIB) once the agent has said what it wants.
            return []
        changed, self._unplanned = self._unplanned, set()
        full, self._unplanned_all = full or self._unplanned_all, False
        work = []
        with self._lock:
            for st in self._peers.values():
                if st.state != ESTABLISHED:
                    st.dirty = set()  # its next "up" sends the whole view anyway
                    continue
                st.dirty |= changed
                address = st.config.address
                if st.needs_refresh or full:
                    st.refused = {}
                    self._refusals(st, self._index.by_prefix)
                else:
                    self._refusals(st, st.dirty)
                if st.needs_refresh:
                    st.needs_refresh = False
                    cmds = self._refresh_commands(address, st.target, st.leftover)
                    st.leftover = {}
                elif full:
                    cmds = commands(address, *diff(self._index.view(st.target), st.announced),
                                    packed=self._packed)
                else:
                    cmds = commands(
                        address,
                        *diff_prefixes(
                            self._index.view(st.target, st.dirty), st.announced, st.dirty
                        ),
                        packed=self._packed,
                    )
                st.dirty = set()
                if cmds:
                    work.append((st, st.epoch, cmds))
        return work

    def _refresh_commands(self, address: str, target: PeerTarget,
                          leftover: dict[IPNetwork, Announcement]) -> Iterator[Command]:
        """A session's whole view, from the snapshot of the desired table (made ahead of the
        session when it could be), then what the last session had that is no longer wanted,
        then End-of-RIB."""
        snapshot = self._current_snapshot()
        yield from snapshot.commands(address, target, self._packed)
        yield from commands(address, [], [a for p, a in leftover.items()
                                          if not snapshot.carries(p, target)])
        # End-of-RIB only for what the session negotiated: ExaBGP sends one for any family
        # it is told, and strict peers reset the session for it.
        for fam in target.families:
            yield eor_command(address, fam)

    def _current_snapshot(self) -> Snapshot:
        if self._snapshot is None or self._snapshot.source is not self._index.source:
            self._snapshot = Snapshot(self._index)
        return self._snapshot

    def _warm_snapshot(self) -> None:
        """Make the snapshot a down peer's next session will be sent, while nothing waits."""
        if self._snapshot is not None and self._snapshot.source is self._index.source:
            return  # kept while the table stays the same: for the next peer that comes up
        self._snapshot = None  # out of date: its memory is not held
        with self._lock:
            if all(st.state == ESTABLISHED for st in self._peers.values()):
                return
        if time.monotonic() - self._snapshot_warmed < SNAPSHOT_WARM_INTERVAL:
            return
        self._snapshot_warmed = time.monotonic()
        snapshot = self._current_snapshot()
        if self._packed:
            snapshot.warm()

    def _reconcile_once(self, full: bool = False) -> None:
        conn = self._api.current if self._api is not None else None
        if conn is None:
            # ExaBGP's API is not connected yet: index the desired set now, so the first
            # session's full view does not wait for it (0.3-0.7 s at 100,000 routes).
            if self._index_desired():
                self._warm_snapshot()
            return
        for st, epoch, cmds in self._plan(full):
            for cmd in cmds:
                # Read without the lock: the API reader holds it while it takes in what a
                # peer sent (up to a full table), and the next line must not wait for
                # that. A session that dropped a moment ago and is missed here
                # is handled as any late command: its acknowledgement sees the new epoch.
                if st.epoch != epoch:
                    break  # the session went down: its next "up" starts a new round
                if cmd.refused:
                    with self._lock:
                        for ann in cmd.refused:
                            st.refused[ann.prefix] = TOO_BIG
                if not cmd.line:
                    continue  # refused: never handed to ExaBGP
                if conn.send(cmd.line, functools.partial(self._on_reply, st, epoch, cmd)) is None:
                    return  # ExaBGP went away; the reconnect resets and replays
                # the writer's own counters (read under the lock)
                self._counters["commands_sent"] += 1
                if cmd.is_packed:
                    self._counters["commands_packed"] += 1
        if not conn.wait_idle(ROUND_TIMEOUT):
            log.warning("writer round ended without every reply (ExaBGP gone or too slow)")
        self._settle_acknowledged()
        if self._desired is not None:
            self._warm_snapshot()

    def _settle_acknowledged(self) -> None:
        """Record what the round's packed commands carried, a command at a time: the API
        reader (received routes, session changes) waits for the lock for no longer."""
        for st in self._peers.values():
            while True:
                with self._lock:
                    if not st.settle_some():
                        break

    def _on_reply(self, st: PeerState, epoch: int, cmd: Command, ok: bool) -> None:
        with self._lock:
            if not ok:
                self._counters["commands_refused"] += 1
                when, line = self._last_error_line
                reason = (
                    line if time.monotonic() - when < ERROR_REASON_WINDOW else "no reason logged"
                )
                st.commands_refused += 1
                if cmd.is_packed and self._packed:
                    self._packed = False  # its routes are retried below, as text lines
                    log.warning("ExaBGP refused a packed announcement: sending text lines "
                                "from now on")
                # retried at the next wake-up or resync, not at once: it may fail again
                st.dirty.update(a.prefix for a in itertools.chain(cmd.announced, cmd.withdrawn))
                if cmd.announced or cmd.withdrawn:
                    st.last_error = f"ExaBGP refused {cmd.line[:200]!r}: {reason}"
                log.error("ExaBGP refused command %r: %s", cmd.line[:500], reason)
                return
            if epoch != st.epoch:
                # Acknowledged for a session that has since gone down. ExaBGP keeps such a
                # route for the peer's next session, so it must be accounted for: on the
                # refresh of the next "up" it is withdrawn if no longer desired.
                if cmd.announced:
                    if st.state == ESTABLISHED and not st.needs_refresh:
                        # that refresh was planned already: let the next diff handle it
                        for ann in cmd.announced:
                            st.announced[ann.prefix] = ann
                            st.dirty.add(ann.prefix)
                        self._wake.set()
                    else:
                        st.leftover.update((ann.prefix, ann) for ann in cmd.announced)
                return
            if cmd.is_packed and not cmd.withdrawn:
                st.acknowledged(cmd.announced)  # recorded after the round: see PeerState
                return
            announced = st.announced
            for ann in cmd.withdrawn:
                announced.pop(ann.prefix, None)
            for ann in cmd.announced:
                announced[ann.prefix] = ann
