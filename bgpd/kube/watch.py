"""List + watch of one resource kind, feeding a ``Store`` with lean model objects.

The loop: paginated list (the store is replaced by diff, so unchanged objects cause no
change), then watch from the list's resourceVersion with bookmarks and a server-side
timeout, resuming from the last seen resourceVersion. HTTP 410 (Gone: resourceVersion
compacted away) means list again. Any other failure keeps the store as it is (an API
outage must not look like "everything was deleted") and retries with jittered
exponential backoff.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

from bgpd.kube import convert
from bgpd.kube.client import KubeClient, discard
from bgpd.kube.errors import GoneError, KubeError
from bgpd.kube.jsonstream import loads

log = logging.getLogger(__name__)

LIST_PAGE_SIZE = 500
"""Objects per list page. A page is decoded as it streams in, one object at a time
(jsonstream.py), so its size costs requests, not memory: a tenant's 500 Services of 200 KB
each are 100 MB of JSON, which a whole-page decode would hold at once on every agent at
every relist."""

WATCH_TIMEOUT_S = 270
"""Server-side timeoutSeconds of one watch: the server ends it cleanly and we resume from
the last resourceVersion, so long-lived connections get rebalanced across API servers."""

WATCH_READ_TIMEOUT_S = 90.0
"""A watch that delivers no byte for this long is presumed dead (a silently dropped
connection). The API server sends a BOOKMARK about once a minute even when idle."""

BACKOFF_INITIAL_S = 0.5
"""First retry delay after a failed list/watch."""

BACKOFF_MAX_S = 20.0
"""Retry delay ceiling: with the jitter, retries 10 to 30 s apart once an outage lasts, so
an API server that comes back is noticed within 30 s, while a fleet of agents spreads its
reconnects over 20 s."""

BACKOFF_FACTOR = 2.0
"""Delay multiplier per consecutive failure."""

BACKOFF_JITTER = 0.5
"""Each delay is scaled by a random factor in [1 - JITTER, 1 + JITTER], so a fleet of
agents does not reconnect in lockstep after an API-server restart."""

HEALTHY_WATCH_S = 10.0
"""A watch that lived this long counts as healthy and resets the backoff."""

MIN_WATCH_S = 1.0
"""A watch that ends cleanly sooner than this without delivering anything is treated as a
failure (backoff), so a misbehaving server or proxy cannot make the watcher spin."""


@dataclass(frozen=True)
class Resource:
    """One watched kind: where to list it and how to convert its objects."""

    kind: str
    path: str
    convert: Callable[[Any], Any]
    field_selector: str | None = None


@dataclass(frozen=True)
class WatchTiming:
    """The timing knobs, overridable together (tests shorten them)."""

    watch_timeout_s: int = WATCH_TIMEOUT_S
    watch_read_timeout_s: float = WATCH_READ_TIMEOUT_S
    backoff_initial_s: float = BACKOFF_INITIAL_S
    backoff_max_s: float = BACKOFF_MAX_S
    page_size: int = LIST_PAGE_SIZE


class Store(Protocol):
    """Where a watcher puts what it sees (implemented by the cache)."""

    def replace(self, kind: str, items: dict[str, Any]) -> None: ...

    def apply(self, kind: str, key: str, value: Any | None) -> None: ...

    def mark_synced(self, kind: str) -> None: ...

    # Optional: ``health_changed(kind)``, called when a list or watch succeeds after a
    # failure, or fails after a success.


class Backoff:
    """Jittered exponential backoff."""

    def __init__(self, initial: float, maximum: float) -> None:
        self.initial, self.maximum, self.failures = initial, maximum, 0

    def next(self) -> float:
        delay = min(self.maximum, self.initial * BACKOFF_FACTOR**self.failures)
        self.failures += 1
        return delay * random.uniform(1 - BACKOFF_JITTER, 1 + BACKOFF_JITTER)

    def reset(self) -> None:
        self.failures = 0


@dataclass
class WatchStats:
    """Counters for metrics; written by the watcher thread only."""

    lists: int = 0  # completed lists, the first included
    relists: int = 0  # lists forced by 410 Gone
    watch_restarts: int = 0  # watches ended by an error (not by the server's timeout)
    events: int = 0
    skipped: int = 0  # objects the converter rejected, events that did not decode
    last_skip: str = ""
    last_error: str = ""
    last_error_at: float = 0.0
    last_ok_at: float = 0.0  # the last list or watch the server accepted: healthy since
    largest_page_bytes: int = 0  # the biggest list page streamed (its bytes, never held)


class Watcher:
    """Runs the list/watch loop of one Resource until ``stop()``."""

    def __init__(
        self, client: KubeClient, resource: Resource, store: Store, timing: WatchTiming
    ) -> None:
        self.client, self.resource, self.store, self.timing = client, resource, store, timing
        self.stats = WatchStats()
        self._stopping = threading.Event()
        self._response: Any = None  # the open watch response, shut down by stop()
        self._resume_rv: str | None = None  # the last resourceVersion applied from a watch

    # ------------------------------------------------------------------ control

    def stop(self) -> None:
        self._stopping.set()
        resp = self._response
        if resp is not None:
            try:
                resp.shutdown()  # wakes the thread blocked reading the stream
            except Exception:  # noqa: BLE001 - best effort, the read timeout is the fallback
                pass

    def run(self) -> None:
        backoff = Backoff(self.timing.backoff_initial_s, self.timing.backoff_max_s)
        rv: str | None = None
        while not self._stopping.is_set():
            try:
                if rv is None:
                    rv = self._list()
                    backoff.reset()
                started, events = time.monotonic(), self.stats.events
                self._resume_rv = rv
                rv = self._watch(rv)
                lasted = time.monotonic() - started
                if lasted >= HEALTHY_WATCH_S:
                    backoff.reset()
                if lasted >= MIN_WATCH_S or self.stats.events > events or self._stopping.is_set():
                    continue  # the server's timeout ended it: resume at once
                # Ended at once with nothing delivered: something is off, do not spin.
                self._error(KubeError(f"watch {self.resource.kind} ended after {lasted:.2f} s"))
            except GoneError as exc:
                log.info("%s: %s; listing again", self.resource.kind, exc)
                self._error(exc)
                if rv is not None:
                    rv = None
                    self.stats.relists += 1
                    continue  # a relist is the remedy: no wait
                # 410 on the list itself (an expired continue token): retry after a pause
            except KubeError as exc:
                if self._stopping.is_set():
                    break
                log.warning("%s watch failed: %s", self.resource.kind, exc)
                self._error(exc)
                if rv is not None:
                    # Resume after the last event applied, not where this watch began:
                    # replaying minutes of events costs, and old versions get 410 sooner.
                    rv = self._resume_rv
            except Exception as exc:  # noqa: BLE001 - the watcher thread must survive anything
                log.exception("%s watcher: unexpected error", self.resource.kind)
                self._error(exc)
            self.stats.watch_restarts += 1
            self._stopping.wait(backoff.next())

    def _ok(self) -> None:
        """The server accepted a list or watch: healthy since now. The first success after
        a failure is told to the store, so readiness follows at once (not at the next
        resync)."""
        recovered = self.stats.last_error_at > self.stats.last_ok_at
        self.stats.last_ok_at = time.time()
        if recovered:
            self._health_changed()

    def _error(self, exc: BaseException) -> None:
        """The server refused or dropped us: unhealthy since now. The first failure after a
        success is told to the store, so readiness drops at once (not at the next resync)."""
        was_ok = self.stats.last_error_at <= self.stats.last_ok_at
        self.stats.last_error = str(exc)
        self.stats.last_error_at = time.time()
        if was_ok:
            self._health_changed()

    def _health_changed(self) -> None:
        notify = getattr(self.store, "health_changed", None)
        if notify is not None:
            notify(self.resource.kind)

    # --------------------------------------------------------------------- list

    def _list(self) -> str:
        """List every object (paginated), replace the store by diff, return the list RV."""
        items: dict[str, Any] = {}
        cont: str | None = None
        add = partial(self._add, items)
        while True:
            page, nbytes = self.client.list_page(
                self.resource.path,
                query={
                    "limit": self.timing.page_size,
                    "continue": cont,
                    "fieldSelector": self.resource.field_selector,
                },
                on_item=add,
            )
            self.stats.largest_page_bytes = max(self.stats.largest_page_bytes, nbytes)
            meta = page.get("metadata") if isinstance(page.get("metadata"), dict) else {}
            cont = meta.get("continue") or None
            if cont is None:
                rv = meta.get("resourceVersion")
                if not isinstance(rv, str) or not rv:
                    raise KubeError(f"list {self.resource.kind}: no resourceVersion")
                break
            del page
        self.store.replace(self.resource.kind, items)
        self.store.mark_synced(self.resource.kind)
        self.stats.lists += 1
        self._ok()
        log.info("%s: listed %d objects at resourceVersion %s", self.resource.kind, len(items), rv)
        return rv

    def _add(self, items: dict[str, Any], obj: Any) -> None:
        key = convert.object_key(obj)
        value = self._convert(obj, key) if key is not None else None
        if value is None:
            self.stats.skipped += 1
            return
        items[key] = value

    def _convert(self, obj: Any, key: str | None) -> Any:
        """The converter's answer; None (reported) if it raised: one object never stops a
        list or a watch."""
        try:
            return self.resource.convert(obj)
        except Exception as exc:  # noqa: BLE001 - a converter bug must cost one object only
            self._skip(f"{key}: cannot convert: {type(exc).__name__}: {exc}")
            return None

    def _skip(self, why: str) -> None:
        self.stats.skipped += 1
        self.stats.last_skip = why[:300]
        log.warning("%s: skipped: %s", self.resource.kind, why[:300])

    # -------------------------------------------------------------------- watch

    def _watch(self, rv: str) -> str:
        """Watch from ``rv`` until the server ends the stream; return the last RV seen."""
        kind = self.resource.kind
        resp = self.client.request(
            "GET",
            self.resource.path,
            query={
                "watch": "true",
                "resourceVersion": rv,
                "allowWatchBookmarks": "true",
                "timeoutSeconds": self.timing.watch_timeout_s,
                "fieldSelector": self.resource.field_selector,
            },
            read_timeout=self.timing.watch_read_timeout_s,
        )
        self._response = resp
        self._ok()
        try:
            if self._stopping.is_set():
                return rv
            for line in KubeClient.lines(resp, f"watch {kind}"):
                rv = self._event(line, rv)
                self._resume_rv = rv
            return rv
        finally:
            self._response = None
            discard(resp)  # the stream may have ended mid-event: never reuse its connection

    def _event(self, line: bytes, rv: str) -> str:
        """Apply one watch event line; return the resourceVersion to resume from.

        A line that does not decode, or an object the converter cannot read, is skipped
        and reported: the stream goes on (the next event of that object replaces it)."""
        kind = self.resource.kind
        try:
            event = loads(line)
            etype, obj = event["type"], event["object"]
        except (ValueError, KeyError, TypeError) as exc:
            self._skip(f"undecodable watch event: {type(exc).__name__}: {exc}")
            return rv
        if etype == "ERROR":
            code = obj.get("code") if isinstance(obj, dict) else None
            message = obj.get("message", "") if isinstance(obj, dict) else str(obj)
            if code == 410:
                raise GoneError(f"watch {kind}: {message}")
            raise KubeError(f"watch {kind}: error event {code}: {message}", status=code)
        new_rv = convert.resource_version(obj) or rv
        if etype == "BOOKMARK":
            return new_rv
        key = convert.object_key(obj)
        if key is None:
            self.stats.skipped += 1
            return new_rv
        self.stats.events += 1
        if etype == "DELETED":
            self.store.apply(kind, key, None)
        elif etype in ("ADDED", "MODIFIED"):
            value = self._convert(obj, key)
            if value is None:
                self.stats.skipped += 1  # no longer usable: forget the old version too
            self.store.apply(kind, key, value)
        return new_rv


DEFAULT_TIMING = WatchTiming()
