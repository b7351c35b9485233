"""Kubernetes Events (core/v1) about Services and Pods, e.g. why an IP was not announced.

``EventRecorder.record`` never blocks the caller and never raises: Events go through a
bounded queue to a background thread. The same (object, reason, message) is sent at most
once per ``DEDUP_WINDOW_S``, so a steady state that keeps rejecting the same Service does
not spam the API server.

A rejection every node reaches the same way (a Service's bad externalIP) is one Event for
the whole cluster, not one per node: its name is derived from (object, reason, message,
dedup period), so every agent would create the same object and all but the first get
"already exists"; and only about ``REPORTERS_PER_EVENT`` agents even try, chosen without
coordination by a hash of (node, Event name) against the cluster's node count. What only
this node can see (its Pods, its Node) is always reported by this node.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from bgpd.kube.client import KubeClient
from bgpd.kube.errors import KubeError

log = logging.getLogger(__name__)

DEDUP_WINDOW_S = 600.0
"""A repeat of the same (object, reason, message) within this window is not sent again; it
is also the period in a cluster-wide Event's name (a new Event per period)."""

QUEUE_MAX = 1000
"""Events waiting to be sent; beyond this new ones are dropped (and counted) rather than
letting an API outage grow memory."""

DEDUP_MAX = 10_000
"""Remembered dedup keys (16-character digests, so at most about 1 MB); the oldest are
forgotten beyond this."""

MESSAGE_MAX = 1024
"""Event messages are cut to this many characters (the API server limits them too)."""

REPORTERS_PER_EVENT = 4
"""Agents expected to try writing one cluster-wide Event. The chance that none is chosen
in a period is about e**-4 (2 %); the next period draws other agents."""

NODE_COUNT_REFRESH_S = 3600.0
"""How often the cluster's node count (for the reporter draw) is read again: one
``list nodes?limit=1`` per agent per hour."""

EVENT_NAME_MAX = 253  # a DNS subdomain

COMPONENT = "bgpd"


@dataclass(frozen=True)
class ObjectRef:
    """The object an Event is about."""

    kind: str  # "Service" | "Pod" | "Node"
    namespace: str  # "" for cluster-scoped objects (Events for them go to "default")
    name: str
    uid: str = ""
    api_version: str = "v1"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class EventRecorder:
    """Sends deduplicated Events from a daemon thread."""

    def __init__(self, client: KubeClient, node_name: str, component: str = COMPONENT,
                 clock: Callable[[], float] = time.time) -> None:
        self.client, self.node_name, self.component = client, node_name, component
        self._clock = clock
        self._queue: queue.Queue = queue.Queue(QUEUE_MAX)
        # dedup digest -> clock time it was queued, oldest first
        self._sent: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._nodes: tuple[float, int] | None = None  # (read at, node count)
        self.sent = 0  # Events this agent created
        self.existing = 0  # cluster-wide Events another agent had created already
        self.skipped = 0  # cluster-wide Events left to other agents (not drawn)
        self.dropped = 0
        self.failed = 0
        self.last_error = ""

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="kube-events", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        if self._thread is not None:
            self._queue.put(None)  # may block briefly when full: the sender drains it
            self._thread.join(timeout)
            self._thread = None

    def record(self, ref: ObjectRef, reason: str, message: str, type_: str = "Warning",
               cluster_wide: bool = False) -> bool:
        """Queue an Event; False when it was a recent duplicate or the queue is full.

        ``cluster_wide``: every agent reaches this same Event (see the module docstring)."""
        message = message[:MESSAGE_MAX]
        key = _digest(ref.kind, ref.namespace, ref.name, reason, message)
        now = self._clock()
        with self._lock:
            sent = self._sent
            last = sent.get(key)
            if last is not None and now - last < DEDUP_WINDOW_S:
                return False
            if len(sent) >= DEDUP_MAX:
                # Oldest first (a key queued again moves to the end): forget only what has
                # left its window. Never a scan of the whole map per call: a tenant with
                # 65,536 bad addresses made every round rescan 10,000 keys 65,536 times
                # (over a minute of the reconcile loop, on every node).
                while sent and now - next(iter(sent.values())) >= DEDUP_WINDOW_S:
                    sent.popitem(last=False)
                if len(sent) >= DEDUP_MAX:
                    # Every remembered Event is still in its window: forgetting one would
                    # send it again at the next round. This one waits instead (counted).
                    self.dropped += 1
                    return False
            # Remembered even when the queue is full: a flood of rejections must not be
            # retried every round (each a new attempt); it is reported next period.
            sent[key] = now
            sent.move_to_end(key)
        try:
            self._queue.put_nowait((ref, reason, message, type_, cluster_wide, key, now))
        except queue.Full:
            self.dropped += 1
            return False
        return True

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued Event was sent (or failed); for tests and shutdown."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.05)
        return not self._queue.unfinished_tasks

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                self._send(*item)
            except Exception:  # the sender thread must outlive any surprise
                log.exception("event sender failed")
            finally:
                self._queue.task_done()

    def event_name(self, ref: ObjectRef, key: str, at: float) -> str:
        """Deterministic: the same object, reason, message and period give the same name on
        every node. Valid for any object name length (cut, never past a DNS subdomain)."""
        suffix = f".{key}{int(at // DEDUP_WINDOW_S):x}"
        stem = ref.name[: EVENT_NAME_MAX - len(suffix)].rstrip(".-") or "x"
        return stem + suffix

    def is_reporter(self, name: str) -> bool:
        """Drawn to write cluster-wide Event ``name``? About REPORTERS_PER_EVENT agents
        out of the cluster's nodes are."""
        nodes = self._node_count()
        if nodes <= REPORTERS_PER_EVENT:
            return True
        draw = int(hashlib.sha256(f"{self.node_name}\0{name}".encode()).hexdigest()[:15], 16)
        return draw / 16**15 < REPORTERS_PER_EVENT / nodes

    def _node_count(self) -> int:
        now = time.monotonic()
        if self._nodes is None or now - self._nodes[0] > NODE_COUNT_REFRESH_S:
            count = self._nodes[1] if self._nodes else 1
            try:
                page = self.client.request_json("GET", "/api/v1/nodes", query={"limit": 1})
                meta = page.get("metadata") or {}
                count = len(page.get("items") or ()) + int(meta.get("remainingItemCount") or 0)
            except (KubeError, AttributeError, TypeError, ValueError) as exc:
                log.info("cannot count nodes (%s): every agent reports", exc)
            self._nodes = (now, max(1, count))
        return self._nodes[1]

    def _send(self, ref: ObjectRef, reason: str, message: str, type_: str,
              cluster_wide: bool, key: str, at: float) -> None:
        name = self.event_name(ref, key, at)
        if cluster_wide and not self.is_reporter(name):
            self.skipped += 1
            return
        namespace = ref.namespace or "default"
        now = _now()
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": namespace},
            "involvedObject": {
                "apiVersion": ref.api_version,
                "kind": ref.kind,
                "namespace": ref.namespace or None,
                "name": ref.name,
                "uid": ref.uid or None,
            },
            "reason": reason,
            "message": message,
            "type": type_,
            "count": 1,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "source": {"component": self.component,
                       **({} if cluster_wide else {"host": self.node_name})},
            "reportingComponent": self.component,
            "reportingInstance": self.node_name,
        }
        body["involvedObject"] = {k: v for k, v in body["involvedObject"].items() if v is not None}
        try:
            self.client.call("POST", f"/api/v1/namespaces/{namespace}/events", body=body)
            self.sent += 1
        except KubeError as exc:
            if exc.status == 409:  # another agent wrote this very Event first
                self.existing += 1
                return
            self.failed += 1
            self.last_error = str(exc)
            log.warning(
                "event %s on %s %s/%s not recorded: %s", reason, ref.kind, namespace, ref.name, exc
            )


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]
