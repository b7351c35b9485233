"""Kubernetes Events (core/v1) about Services and Pods, e.g. why an IP was not announced.

``EventRecorder.record`` never blocks the caller and never raises: Events go through a
bounded queue to a background thread. The same (object, reason, message) is sent at most
once per ``DEDUP_WINDOW_S``, so a steady state that keeps rejecting the same Service does
not spam the API server.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from bgpd.kube.client import KubeClient
from bgpd.kube.errors import KubeError

log = logging.getLogger(__name__)

DEDUP_WINDOW_S = 600.0
"""A repeat of the same (object, reason, message) within this window is not sent again."""

QUEUE_MAX = 1000
"""Events waiting to be sent; beyond this new ones are dropped (and counted) rather than
letting an API outage grow memory."""

DEDUP_MAX = 10_000
"""Remembered (object, reason, message) keys; the oldest are forgotten beyond this."""

MESSAGE_MAX = 1024
"""Event messages are cut to this many characters (the API server limits them too)."""

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

    def __init__(self, client: KubeClient, node_name: str, component: str = COMPONENT) -> None:
        self.client, self.node_name, self.component = client, node_name, component
        self._queue: queue.Queue = queue.Queue(QUEUE_MAX)
        self._sent: dict[tuple, float] = {}  # dedup key -> monotonic time it was queued
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.sent = 0
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

    def record(self, ref: ObjectRef, reason: str, message: str, type_: str = "Warning") -> bool:
        """Queue an Event; False when it was a recent duplicate or the queue is full."""
        key = (ref.kind, ref.namespace, ref.name, reason, message)
        now = time.monotonic()
        with self._lock:
            last = self._sent.get(key)
            if last is not None and now - last < DEDUP_WINDOW_S:
                return False
            self._sent[key] = now
            if len(self._sent) > DEDUP_MAX:
                for old in sorted(self._sent, key=self._sent.__getitem__)[: DEDUP_MAX // 10]:
                    del self._sent[old]
        try:
            self._queue.put_nowait((ref, reason, message[:MESSAGE_MAX], type_))
        except queue.Full:
            self.dropped += 1
            with self._lock:
                self._sent.pop(key, None)  # let a later repeat try again
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
            finally:
                self._queue.task_done()

    def _send(self, ref: ObjectRef, reason: str, message: str, type_: str) -> None:
        namespace = ref.namespace or "default"
        now = _now()
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{ref.name}.{time.time_ns():x}", "namespace": namespace},
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
            "source": {"component": self.component, "host": self.node_name},
            "reportingComponent": self.component,
            "reportingInstance": self.node_name,
        }
        body["involvedObject"] = {k: v for k, v in body["involvedObject"].items() if v is not None}
        try:
            self.client.call("POST", f"/api/v1/namespaces/{namespace}/events", body=body)
            self.sent += 1
        except KubeError as exc:
            self.failed += 1
            self.last_error = str(exc)
            log.warning(
                "event %s on %s %s/%s not recorded: %s", reason, ref.kind, namespace, ref.name, exc
            )
