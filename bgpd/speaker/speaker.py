"""The ExaBGP speaker driver: desired announcements in, BGP sessions and learned routes out.

Threads: the supervisor relays ExaBGP's log and restarts it; the API reader turns ExaBGP's
JSON into peer state and learned routes; the writer turns the desired set into the fewest
commands and records what ExaBGP acknowledged, peer by peer.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import bgpd
from bgpd.config import BgpConfig, ImportConfig
from bgpd.model import Announcement, IPNetwork, LearnedRoute, PeerStatus
from bgpd.policy.imports import filter_learned
from bgpd.speaker import messages
from bgpd.speaker.channel import ApiServer, Connection
from bgpd.speaker.errors import SpeakerError
from bgpd.speaker.process import Supervisor
from bgpd.speaker.render import SpeakerSettings, render_config, render_environment
from bgpd.speaker.routes import (
    Command,
    DesiredIndex,
    commands,
    diff,
    diff_prefixes,
    eor_command,
    peer_view,
)
from bgpd.speaker.state import ESTABLISHED, STATES, PeerState

log = logging.getLogger("bgpd.speaker")

RESYNC_INTERVAL = 30.0  # seconds: the writer re-checks every peer even without a wake-up
ROUND_TIMEOUT = 600.0  # one writer round (a full table to a peer) may take this long
# An ExaBGP error line this recent is taken as the reason for the command it refused.
ERROR_REASON_WINDOW = 5.0
SYNC_POLL = 0.01
STOP_WITHDRAW_TIMEOUT = 30.0
ACCEPT_TIMEOUT = 30.0  # ExaBGP start to its helper connecting


WORKDIR_PREFIX = "bgpd-speaker-"  # + the agent's pid: $TMPDIR/bgpd-speaker-<pid>-<random>


def remove_stale_workdirs() -> list[str]:
    """Delete work folders of agents that died without cleaning up (SIGKILL, OOM): they
    hold ExaBGP's config, MD5 keys included. Returns what was removed."""
    removed = []
    base = Path(tempfile.gettempdir())
    for folder in base.glob(f"{WORKDIR_PREFIX}*"):
        pid_text = folder.name[len(WORKDIR_PREFIX):].split("-", 1)[0]
        if not pid_text.isdecimal():
            continue  # not ours, or the old unnamed form: leave it
        try:
            os.kill(int(pid_text), 0)
            continue  # its agent is alive
        except ProcessLookupError:
            pass
        except PermissionError:
            continue  # alive, another user's
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(str(folder))
    if removed:
        log.info("removed %d stale speaker folders of dead agents", len(removed))
    return removed


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
        self._peers = {p.address: PeerState.for_peer(bgp, p) for p in bgp.peers}
        self._counters = {"commands_sent": 0, "commands_refused": 0, "exabgp_exits": 0}
        self._last_error_line: tuple[float, str] = (0.0, "")
        self._learned_cache: dict[IPNetwork, list[LearnedRoute]] | None = None
        self._workdir: Path | None = None
        self._api: ApiServer | None = None
        self._supervisor: Supervisor | None = None
        self._writer = threading.Thread(
            target=self._writer_loop, name="speaker-writer", daemon=True
        )

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        remove_stale_workdirs()
        self._workdir = Path(tempfile.mkdtemp(prefix=f"{WORKDIR_PREFIX}{os.getpid()}-"))
        socket_path = str(self._workdir / "api.sock")
        self._api = ApiServer(socket_path, self._on_connect, self._on_line, self._on_disconnect)
        settings = SpeakerSettings(
            router_id=self._router_id,
            api_argv=[sys.executable, "-m", "bgpd.speaker.bridge", socket_path],
            log_level=self._log_level,
        )
        conf = self._workdir / "exabgp.conf"
        conf.write_text(render_config(self.bgp, settings, self._read_passwords()))
        conf.chmod(0o600)  # it holds the MD5 secrets
        env = dict(os.environ, **render_environment(self.bgp, settings))
        root = str(Path(bgpd.__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
        argv = [sys.executable, "-m", "bgpd.speaker.exabgp_main", "server", str(conf)]
        if self._netns:
            argv = ["ip", "netns", "exec", self._netns, *argv]
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
            shutil.rmtree(self._workdir, ignore_errors=True)

    # ------------------------------------------------------------------ agent API

    def set_desired(self, announcements: Iterable[Announcement]) -> None:
        """Replace the desired set; returns at once, the writer applies it.

        Passing a set (or frozenset) of the same Announcement objects as last time makes a
        small change cheap: their hashes are reused, not recomputed."""
        desired = frozenset(announcements)
        with self._lock:
            self._desired = desired
        self._wake.set()

    def set_import_config(self, config: ImportConfig) -> None:
        """New import rules, applied to what is already received (no session reset)."""
        with self._lock:
            if config != self.import_config:
                self.import_config = config
                self._learned_cache = None
        self._changed()

    def peers(self) -> list[PeerStatus]:
        self.learned()  # refreshes the import counters shown in last_error
        with self._lock:
            return [st.status() for st in self._peers.values()]

    def announced(self, peer: str) -> set[Announcement]:
        with self._lock:
            st = self._peers.get(peer)
            return set(st.announced.values()) if st and st.state == ESTABLISHED else set()

    def learned(self) -> dict[IPNetwork, list[LearnedRoute]]:
        """Routes received from peers that passed the import policy."""
        with self._lock:
            if self._learned_cache is None:
                result = filter_learned(
                    {a: st.received for a, st in self._peers.items()}, self.import_config
                )
                for address, counts in result.per_peer.items():
                    st = self._peers[address]
                    if counts.over_limit and counts.over_limit != st.routes_refused:
                        st.last_error = (
                            f"{counts.over_limit} received routes over max_prefixes "
                            f"{self.import_config.max_prefixes} refused"
                        )
                        log.warning("peer %s: %s", st.config.label, st.last_error)
                    st.routes_refused = counts.over_limit
                self._learned_cache = result.routes
            return {prefix: list(routes) for prefix, routes in self._learned_cache.items()}

    def counters(self) -> dict[str, int]:
        with self._lock:
            out = dict(self._counters)
            out["exabgp_restarts"] = self._supervisor.restarts if self._supervisor else 0
            out["routes_refused_import"] = sum(st.routes_refused for st in self._peers.values())
            return out

    def exabgp_pid(self) -> int | None:
        return self._supervisor.pid if self._supervisor else None

    def in_sync(self) -> bool:
        """Every established peer holds exactly its view of the desired set (true when no
        session is up: there is nothing to wait for)."""
        with self._lock:
            desired = self._desired
            return all(
                desired is not None
                and not st.needs_refresh
                and st.announced == peer_view(desired, st.target)
                for st in self._peers.values()
                if st.state == ESTABLISHED
            )

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

    def _reset_all(self, state: str, reason: str) -> None:
        with self._lock:
            for st in self._peers.values():
                st.set_state(state, reason)
                st.reset_session()
                st.announced = {}  # a new ExaBGP process starts with nothing
                st.connecting_since = time.time()  # ExaBGP connects to every peer at start
            self._learned_cache = None

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
                state = STATES.get(msg.state, msg.state)
                changed = st.set_state(state, msg.reason)
                if msg.state in ("connected", "up"):
                    st.connecting_since = None
                if state == ESTABLISHED:
                    st.reset_session()
                    # update, not replace: stale may hold late acks of the last session
                    st.stale.update(st.announced)
                    st.announced = {}
                    st.needs_refresh = True
                    self._wake.set()
                elif state == "down":
                    st.reset_session()
                    st.connecting_since = time.time()
                self._learned_cache = None
                log.info("peer %s %s %s", st.config.label, msg.state, msg.reason)
            elif isinstance(msg, messages.Notification) and st is not None:
                st.last_error = (
                    f"notification {msg.direction} {msg.code}/{msg.subcode} {msg.message}".strip()
                )
                log.warning("peer %s: %s", st.config.label, st.last_error)
                changed = True
            elif isinstance(msg, messages.RoutesUpdate) and st is not None:
                for prefix in msg.withdrawn:
                    st.received.pop(prefix, None)
                for route in msg.announced:
                    st.received.pop(route.prefix, None)  # re-announced: moves to the end
                    st.received[route.prefix] = route
                changed = bool(msg.withdrawn or msg.announced)
                if changed:
                    self._learned_cache = None
            elif isinstance(msg, messages.Unknown):
                if msg.reason and line.startswith("{"):
                    log.warning("ExaBGP API line not understood (%s): %s", msg.reason, line[:500])
                else:
                    log.debug("ExaBGP API: %s", line)
        if changed:
            self._changed()

    # ------------------------------------------------------------------ writer

    def _writer_loop(self) -> None:
        while not self._stopping.is_set():
            woken = self._wake.wait(RESYNC_INTERVAL)
            self._wake.clear()
            if self._stopping.is_set():
                return
            try:
                # A periodic full comparison catches anything a failed command left behind.
                self._reconcile_once(full=not woken)
            except Exception:
                log.exception("speaker writer round failed")

    def _plan(self, full: bool) -> list[tuple[PeerState, int, list[Command]]]:
        with self._lock:
            desired = self._desired
        if desired is None:
            # The agent has not said what it wants yet: a peer that is up keeps needs_refresh
            # and gets its whole view (and End-of-RIB) once it has.
            return []
        changed = self._index.update(desired)
        work = []
        with self._lock:
            for st in self._peers.values():
                if st.state != ESTABLISHED:
                    st.dirty = set()  # its next "up" sends the whole view anyway
                    continue
                st.dirty |= changed
                address = st.config.address
                if st.needs_refresh:
                    st.needs_refresh = False
                    view = self._index.view(st.target)
                    stale = [a for p, a in st.stale.items() if p not in view]
                    st.stale = {}
                    cmds = commands(address, list(view.values()), stale)
                    cmds += [eor_command(address, f) for f in st.target.families]
                elif full:
                    cmds = commands(address, *diff(self._index.view(st.target), st.announced))
                else:
                    cmds = commands(
                        address,
                        *diff_prefixes(
                            self._index.view(st.target, st.dirty), st.announced, st.dirty
                        ),
                    )
                st.dirty = set()
                if cmds:
                    work.append((st, st.epoch, cmds))
        return work

    def _reconcile_once(self, full: bool = False) -> None:
        conn = self._api.current if self._api is not None else None
        if conn is None:
            return
        for st, epoch, cmds in self._plan(full):
            for cmd in cmds:
                with self._lock:
                    if st.epoch != epoch:
                        break  # the session went down: its next "up" starts a new round
                if conn.send(cmd.line, functools.partial(self._on_reply, st, epoch, cmd)) is None:
                    return  # ExaBGP went away; the reconnect resets and replays
                with self._lock:
                    self._counters["commands_sent"] += 1
        if not conn.wait_idle(ROUND_TIMEOUT):
            log.warning("writer round ended without every reply (ExaBGP gone or too slow)")

    def _on_reply(self, st: PeerState, epoch: int, cmd: Command, ok: bool) -> None:
        with self._lock:
            if not ok:
                self._counters["commands_refused"] += 1
                when, line = self._last_error_line
                reason = (
                    line if time.monotonic() - when < ERROR_REASON_WINDOW else "no reason logged"
                )
                st.commands_refused += 1
                # retried at the next wake-up or resync, not at once: it may fail again
                st.dirty.update(a.prefix for a in cmd.announced + cmd.withdrawn)
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
                        st.stale.update((ann.prefix, ann) for ann in cmd.announced)
                return
            for ann in cmd.withdrawn:
                st.announced.pop(ann.prefix, None)
            for ann in cmd.announced:
                st.announced[ann.prefix] = ann
