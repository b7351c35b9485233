"""Watch netlink for drift of owned routes and repair it.

A thread listens to the route (IPv4, IPv6) and link multicast groups. Events only say
"something changed": the repair is always ``KernelTable.resync()``, a full dump-diff-apply
from the last desired set, so lost or reordered events cannot leave drift behind.

* Our own writes match the desired set, so ``KernelTable.needs_repair`` ignores them and
  no repair loop starts.
* The kernel drops IPv4 routes via a device that goes down *without* telling anyone, so
  every link state change (up/down/carrier, new or deleted link) triggers a resync too;
  the one after the link comes back restores the routes.
* A socket that fell behind (ENOBUFS) has lost events: it is re-created and a resync
  re-reads the kernel.
* Routes the kernel refused (gateway unreachable, device missing, foreign conflict) are
  retried with a backoff, and sooner when a foreign route or link event hints that the
  reason may be gone.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import socket
import threading
import time
from collections.abc import Callable

from pyroute2.netlink.rtnl import (
    RTM_DELLINK,
    RTM_DELROUTE,
    RTM_NEWLINK,
    RTM_NEWROUTE,
    RTMGRP_IPV4_ROUTE,
    RTMGRP_IPV6_ROUTE,
    RTMGRP_LINK,
)

from bgpd.kernel.errors import KernelError, SyncResult
from bgpd.kernel.messages import parse_link, parse_route
from bgpd.kernel.netlink import RECV_BYTES, NetlinkChannel, iter_messages
from bgpd.kernel.table import KernelTable

log = logging.getLogger(__name__)

GROUPS = RTMGRP_LINK | RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_ROUTE
# Room for a burst of foreign changes; a smaller buffer only means more resyncs.
DEFAULT_MONITOR_RCVBUF = 4 * 1024 * 1024
# Wait this long after the first event so a burst costs one resync, not hundreds.
DEBOUNCE_S = 0.05
# After an unexpected error in the monitor thread, it starts over after this long.
CRASH_RETRY_S = 1.0
# A retry hinted by unrelated events is not made more often than this.
HINT_MIN_INTERVAL_S = 1.0
RETRY_MIN_S = 0.25
RETRY_MAX_S = 30.0
STOP_TIMEOUT_S = 10.0
# Link flags whose change can add or remove routes: IFF_UP, IFF_RUNNING, IFF_LOWER_UP.
LINK_STATE_FLAGS = 0x1 | 0x40 | 0x10000

Notify = Callable[[str, SyncResult], None]


class KernelMonitor:
    """Repairs drift of ``table``'s owned routes within about DEBOUNCE_S of the event.

    ``notify(reason, result)`` (optional) is called from the monitor thread after a
    repair changed something or left failures/conflicts; reasons: ``route``, ``link``,
    ``overflow``, ``retry``, ``start``.
    """

    def __init__(
        self,
        table: KernelTable,
        notify: Notify | None = None,
        *,
        rcvbuf: int = DEFAULT_MONITOR_RCVBUF,
    ) -> None:
        self.table = table
        self.notify = notify
        self.rcvbuf = rcvbuf
        self.repairs = 0
        self.overflows = 0
        self.failures = 0  # unexpected errors the thread survived
        self._channel: NetlinkChannel | None = None
        self._links: dict[int, tuple[str, int]] = {}
        self._thread: threading.Thread | None = None
        self._wake_r, self._wake_w = -1, -1
        self._stopping = False

    def start(self) -> KernelMonitor:
        """Subscribe (errors raise here, in the caller) and start the thread."""
        self._channel = NetlinkChannel(self.table.netns, groups=GROUPS, rcvbuf=self.rcvbuf)
        self._links = self.table.link_states()
        self._wake_r, self._wake_w = os.pipe()
        self._thread = threading.Thread(target=self._run, name="kernel-monitor", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is None:
            return
        self._stopping = True
        os.write(self._wake_w, b"x")
        self._thread.join(STOP_TIMEOUT_S)
        self._thread = None
        for fd in (self._wake_r, self._wake_w):
            os.close(fd)
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    def __enter__(self) -> KernelMonitor:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    # ------------------------------------------------------------------ the thread

    def _run(self) -> None:
        """The monitor thread: an unexpected error must not end drift repair silently."""
        while not self._stopping:
            try:
                self._loop()
                return
            except Exception:  # a bug or a broken socket: log, wait, start over (full resync)
                log.exception("kernel monitor failed; restarting it in %.0f s", CRASH_RETRY_S)
                self.failures += 1
                time.sleep(CRASH_RETRY_S)

    def _loop(self) -> None:
        dirty: str | None = "start"  # catches changes made before we subscribed
        dirty_since = time.monotonic()
        retry_at: float | None = None
        backoff = RETRY_MIN_S
        last_repair = 0.0
        while not self._stopping:
            now = time.monotonic()
            due = dirty is not None and now >= dirty_since + DEBOUNCE_S
            if due or (retry_at is not None and now >= retry_at):
                retry = self._repair(dirty or "retry")
                dirty, last_repair = None, time.monotonic()
                if retry:
                    retry_at = last_repair + backoff
                    backoff = min(backoff * 2, RETRY_MAX_S)
                else:
                    retry_at, backoff = None, RETRY_MIN_S
                continue
            deadlines = [t for t in (retry_at,) if t is not None]
            if dirty is not None:
                deadlines.append(dirty_since + DEBOUNCE_S)
            timeout = max(0.0, min(deadlines) - now) if deadlines else None
            ready = select.select([self._channel.sock, self._wake_r], [], [], timeout)[0]
            if self._wake_r in ready:
                return
            if not ready:
                continue
            reason, hint = self._read()
            if reason is not None and dirty is None:
                dirty, dirty_since = reason, time.monotonic()
            if hint and retry_at is not None:
                retry_at = min(retry_at, max(time.monotonic(), last_repair + HINT_MIN_INTERVAL_S))

    def _read(self) -> tuple[str | None, bool]:
        """Drain what is queued; return (repair reason or None, retry hint)."""
        try:
            buf = self._channel.sock.recv(RECV_BYTES, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return None, False
        except OSError as exc:
            if exc.errno != errno.ENOBUFS:
                log.error("kernel monitor socket failed: %s; re-creating it", exc)
            self.overflows += 1
            self._reopen()
            return "overflow", False
        reason = None
        hint = False
        table = self.table
        for off, length, mtype in iter_messages(buf):
            if mtype == RTM_NEWROUTE or mtype == RTM_DELROUTE:
                parsed = parse_route(buf, off, length)
                if parsed is None:
                    continue
                rt_table, proto, key, value = parsed
                if table.needs_repair(rt_table, proto, key, value, mtype == RTM_DELROUTE):
                    reason = reason or "route"
                elif table.pending:
                    hint = True
            elif mtype == RTM_NEWLINK or mtype == RTM_DELLINK:
                if self._link_changed(buf, off, length, mtype == RTM_DELLINK):
                    reason = "link"
        return reason, hint

    def _link_changed(self, buf: bytes, off: int, length: int, gone: bool) -> bool:
        index, name, flags = parse_link(buf, off, length)
        before = self._links.get(index)
        if gone:
            self._links.pop(index, None)
            return before is not None
        now = (name, flags & LINK_STATE_FLAGS)
        self._links[index] = now
        return before != now

    def _reopen(self) -> None:
        old = self._channel
        while not self._stopping:
            try:
                self._channel = NetlinkChannel(self.table.netns, groups=GROUPS, rcvbuf=self.rcvbuf)
                self._links = self.table.link_states()
                break
            except KernelError as exc:
                log.error("kernel monitor cannot re-subscribe: %s", exc)
                time.sleep(RETRY_MIN_S)
        if old is not None:
            old.close()

    def _repair(self, reason: str) -> bool:
        """Resync; True when it should be retried later."""
        try:
            result = self.table.resync()
        except KernelError as exc:
            log.error("kernel repair (%s) failed: %s", reason, exc)
            return True
        if result is None:
            return False
        self.repairs += 1
        if result.changed or not result.ok:
            log.info("kernel repair (%s): %s", reason, result)
            if self.notify is not None:
                try:
                    self.notify(reason, result)
                except Exception:
                    log.exception("kernel monitor notify callback failed")
        return self.table.pending
