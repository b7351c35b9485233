"""``ClusterCache``: the four watched kinds held as lean model objects, and their snapshots.

One watcher thread per kind writes into the cache; the agent's loop reads consistent
``Snapshot`` values. ``notify`` is called after every change (the agent passes its
size-1 wake-up signal). A snapshot shares the maps themselves (read-only views); the first
change after a snapshot copies that one map (copy on write), so taking one per reconcile
stays cheap at 40,000 objects and a quiet cache holds each map once, not twice.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from functools import partial
from types import MappingProxyType
from typing import Any

from bgpd.kube import convert
from bgpd.kube.client import KubeClient
from bgpd.kube.watch import DEFAULT_TIMING, Resource, Watcher, WatchStats, WatchTiming
from bgpd.model import ChangeLog, NodeInfo, Snapshot

log = logging.getLogger(__name__)

NODE, POD, SERVICE, ENDPOINT_SLICE, NAMESPACE = (
    "Node", "Pod", "Service", "EndpointSlice", "Namespace")
KINDS = (NODE, POD, SERVICE, ENDPOINT_SLICE, NAMESPACE)

CHANGE_LOG_KEYS = 4096
"""Keys a change log keeps before it starts over (readers then compare the maps once):
bounds its memory, while a reader that decides every few changes never falls back."""

_LOGGED = {SERVICE: "services", ENDPOINT_SLICE: "endpoint_slices"}  # Snapshot field names

STOP_JOIN_TIMEOUT_S = 5.0
"""How long ``stop()`` waits for each watcher thread to end (they are daemon threads, so a
thread stuck in a TLS handshake cannot keep the process alive anyway)."""


def resources(node_name: str, prefix: str = convert.DEFAULT_PREFIX) -> tuple[Resource, ...]:
    """What the agent on ``node_name`` watches; ``prefix``: its annotation prefix (only
    annotations under it are kept)."""
    return (
        Resource(NODE, "/api/v1/nodes", partial(convert.node_from, prefix=prefix),
                 f"metadata.name={node_name}"),
        Resource(POD, "/api/v1/pods", partial(convert.pod_from, prefix=prefix),
                 f"spec.nodeName={node_name}"),
        Resource(SERVICE, "/api/v1/services", partial(convert.service_from, prefix=prefix)),
        Resource(ENDPOINT_SLICE, "/apis/discovery.k8s.io/v1/endpointslices",
                 partial(convert.endpoint_slice_from, node=node_name)),
        Resource(NAMESPACE, "/api/v1/namespaces", convert.namespace_from),
    )


class ClusterCache:
    """Watches this node's Node and Pods, all Services, EndpointSlices and Namespaces."""

    def __init__(
        self,
        client: KubeClient,
        node_name: str,
        notify: Callable[[], None] | None = None,
        timing: WatchTiming = DEFAULT_TIMING,
        prefix: str = convert.DEFAULT_PREFIX,
    ) -> None:
        self.node_name = node_name
        self._notify = notify or (lambda: None)
        self._lock = threading.Lock()
        self._maps: dict[str, dict[str, Any]] = {k: {} for k in KINDS}
        self._generation = {k: 0 for k in KINDS}  # bumped on every change of that map
        self._frozen: dict[str, tuple[int, Mapping[str, Any]]] = {}  # kind -> (generation, view)
        self._shared: set[str] = set()  # kinds whose map a snapshot holds: copy before writing
        # kind -> (generation the log starts after, the keys changed since, in order)
        self._logs: dict[str, tuple[int, list[str]]] = {k: (0, []) for k in _LOGGED}
        self._synced_kinds: set[str] = set()
        self._synced = threading.Event()
        self._watchers = {r.kind: Watcher(client, r, self, timing)
                          for r in resources(node_name, prefix)}
        self._threads: list[threading.Thread] = []

    # --------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Start one daemon thread per watched kind."""
        if self._threads:
            return
        for kind, watcher in self._watchers.items():
            thread = threading.Thread(target=watcher.run, name=f"watch-{kind}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """Stop the watchers and wait (bounded) for their threads."""
        for watcher in self._watchers.values():
            watcher.stop()
        for thread in self._threads:
            thread.join(STOP_JOIN_TIMEOUT_S)
        self._threads = []

    # ------------------------------------------------------------------ reading

    @property
    def synced(self) -> bool:
        """True once every kind completed its first list (stays True through outages)."""
        return self._synced.is_set()

    def synced_kinds(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._synced_kinds)

    def wait_synced(self, timeout: float | None = None) -> bool:
        return self._synced.wait(timeout)

    def snapshot(self) -> Snapshot:
        """A consistent view: all four maps as they were at one instant, read-only."""
        with self._lock:
            maps = {kind: self._frozen_map(kind) for kind in KINDS}
            synced = self._synced.is_set()
            changes = {field: ChangeLog(self, self._generation[kind], *self._logs[kind])
                       for kind, field in _LOGGED.items()}
        node = maps[NODE].get(self.node_name)
        return Snapshot(
            node=node if isinstance(node, NodeInfo) else None,
            pods=maps[POD],
            services=maps[SERVICE],
            endpoint_slices=maps[ENDPOINT_SLICE],
            synced=synced,
            namespaces=maps[NAMESPACE],
            changes=changes,
        )

    def _frozen_map(self, kind: str) -> Mapping[str, Any]:
        generation = self._generation[kind]
        cached = self._frozen.get(kind)
        if cached is None or cached[0] != generation:
            cached = (generation, MappingProxyType(self._maps[kind]))
            self._frozen[kind] = cached
            self._shared.add(kind)
        return cached[1]

    def stats(self) -> dict[str, WatchStats]:
        """Per-kind counters (lists, relists, watch restarts, last error) for metrics."""
        return {kind: w.stats for kind, w in self._watchers.items()}

    def counts(self) -> dict[str, int]:
        with self._lock:
            return {kind: len(m) for kind, m in self._maps.items()}

    # --------------------------------------------- Store protocol (watchers only)

    def replace(self, kind: str, items: dict[str, Any]) -> None:
        """Make ``kind``'s map equal ``items``, touching only what differs."""
        with self._lock:
            current = self._maps[kind]
            changed = len(current) != len(items)
            for key, value in items.items():
                old = current.get(key)
                if old == value:
                    items[key] = old  # keep the instance: unchanged stays identical
                else:
                    changed = True
            if changed:
                self._maps[kind] = items
                self._shared.discard(kind)
                self._generation[kind] += 1
                if kind in self._logs:  # many keys at once: readers compare the maps
                    self._logs[kind] = (self._generation[kind], [])
        if changed:
            self._notify()

    def apply(self, kind: str, key: str, value: Any | None) -> None:
        """Set (or, for None, delete) one object."""
        with self._lock:
            current = self._maps[kind]
            if value is None:
                changed = current.get(key) is not None
                if changed:
                    del self._writable(kind)[key]
            else:
                changed = current.get(key) != value
                if changed:
                    self._writable(kind)[key] = value
            if changed:
                self._generation[kind] += 1
                log_ = self._logs.get(kind)
                if log_ is not None:
                    if len(log_[1]) >= CHANGE_LOG_KEYS:  # a new list: snapshots keep theirs
                        self._logs[kind] = (self._generation[kind] - 1, [key])
                    else:
                        log_[1].append(key)
        if changed:
            self._notify()

    def _writable(self, kind: str) -> dict[str, Any]:
        """``kind``'s map, copied first if a snapshot holds it (call with the lock held)."""
        current = self._maps[kind]
        if kind in self._shared:
            current = self._maps[kind] = dict(current)
            self._shared.discard(kind)
        return current

    def health_changed(self, kind: str) -> None:
        """``kind``'s watcher got an answer again after failing, or failed after answers:
        the agent re-reads the API's health (readiness, the outage clock) now rather than
        at its next resync."""
        self._notify()

    def mark_synced(self, kind: str) -> None:
        with self._lock:
            self._synced_kinds.add(kind)
            newly = len(self._synced_kinds) == len(KINDS) and not self._synced.is_set()
            if newly:
                self._synced.set()
        if newly:
            log.info("cache synced: %s", self.counts())
            self._notify()
