"""Writes this node's ``BGPNodeStatus`` (bgpd/nodestatus.py builds it) from a daemon thread.

The thread reads the agent's views every ``poll_s`` through ``source`` and writes when
``nodestatus.Pacer`` says so: promptly on a change of state, later for counts, and a
rewrite every ten minutes (which also recreates a deleted object). It never blocks the
reconcile loop and never raises; an API outage only delays writes (retried with backoff).

API use, all the RBAC needs (daemonset/base/rbac.yaml):

* ``PATCH .../bgpnodestatuses/<node>/status`` with a JSON patch replacing ``/status``
  whole (so a field that disappears is removed too): every ordinary write;
* when that answers 404: ``GET /api/v1/nodes/<node>`` for the Node's uid (the agent's
  NodeInfo has none; read fresh, as a Node recreated under the same name has a new one),
  ``POST .../bgpnodestatuses`` with the ownerReference to the Node, then the PATCH again
  (the status subresource ignores ``status`` on create);
* ``GET /api/v1/nodes?limit=1`` once an hour: the node count, for the reporter draw.

Rejections every node reaches the same way (a Service's bad externalIP) are listed by about
``REPORTERS`` nodes only, drawn anew every ``REPORTER_PERIOD_S`` by a hash of (node,
period) against the node count, as bgpd/kube/events.py draws Event reporters: otherwise
5,000 objects would carry the same list, and a tenant churning bad Services would change
all of them. Every node still counts them (``clusterByReason``).
"""

from __future__ import annotations

import hashlib
import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any

from bgpd.kube.client import KubeClient
from bgpd.kube.errors import KubeError
from bgpd.nodestatus import API_VERSION, KIND, PATH, Pacer, StatusTiming

log = logging.getLogger(__name__)

REPORTERS = 5
"""Nodes expected to list the cluster-wide rejections. The chance that none is drawn in a
period is about e**-5 (0.7 %); the next period draws others."""

REPORTER_PERIOD_S = 3600.0

NODE_COUNT_REFRESH_S = 3600.0
NODE_COUNT_RETRY_S = 60.0  # after a failed count (every node lists meanwhile)

SURPRISE_RETRY_S = 5.0  # after an unexpected exception in a turn (a bug: logged)

JSON_PATCH = "application/json-patch+json"


class StatusWriter:
    """``source(list_cluster_wide) -> status dict``: the document to publish now."""

    def __init__(self, client: KubeClient, node_name: str,
                 source: Callable[[bool], dict[str, Any]], *,
                 timing: StatusTiming | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time,
                 rand: Callable[[], float] = random.random) -> None:
        self.client, self.node_name, self.source = client, node_name, source
        self.timing = timing = timing or StatusTiming()
        self._clock, self._wall, self._rand = clock, wall, rand
        self.pacer = Pacer(timing, rand)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._nodes: tuple[float, int] | None = None  # (read at, node count)
        self._retry_at = 0.0
        self._backoff = timing.backoff_initial_s
        self._last_logged = ""
        self.writes = 0  # successful status writes
        self.creates = 0  # objects created (the first, or after a deletion)
        self.failures = 0
        self.last_error = ""

    @property
    def path(self) -> str:
        return f"{PATH}/{self.node_name}"

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="kube-nodestatus",
                                            daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    # ------------------------------------------------------------------ the thread

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                wait = self.step()
            except Exception:  # the writer must outlive any surprise
                log.exception("node status writer failed")
                wait = SURPRISE_RETRY_S
            self._stop.wait(wait)

    def step(self) -> float:
        """One turn: write if due; return how long to wait before the next turn."""
        t = self.timing
        now = self._clock()
        if now < self._retry_at:
            return min(self._retry_at - now, t.poll_s)
        status = self.source(self.lists_cluster_wide())
        due = self.pacer.due_in(status, now)
        if due is None:
            return min(t.poll_s, self.pacer.refresh_in(now))
        if due > 0:
            return min(t.poll_s, due)
        retry = self.write(status)
        if retry is None:
            self.pacer.written(status, self._clock())
            self._backoff = t.backoff_initial_s
            return t.poll_s
        self._retry_at = self._clock() + retry
        return min(retry, t.poll_s)

    # ------------------------------------------------------------------ the API

    def write(self, status: dict[str, Any]) -> float | None:
        """Publish ``status``; None when done, else seconds to wait before trying again."""
        try:
            try:
                self._patch(status)
            except KubeError as exc:
                if exc.status != 404:
                    raise
                self._create()
                self._patch(status)
        except KubeError as exc:
            return self._failed(exc)
        self.writes += 1
        if self._last_logged:
            log.info("event=node_status_written after=%r", self._last_logged)
            self._last_logged = ""
        return None

    def _patch(self, status: dict[str, Any]) -> None:
        self.client.call("PATCH", f"{self.path}/status",
                         body=[{"op": "add", "path": "/status", "value": status}],
                         content_type=JSON_PATCH)

    def _create(self) -> None:
        node = self.client.request_json("GET", f"/api/v1/nodes/{self.node_name}")
        uid = (node.get("metadata") or {}).get("uid") if isinstance(node, dict) else None
        if not uid:
            raise KubeError(f"Node {self.node_name} has no uid")
        body = {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": {
                "name": self.node_name,
                "labels": {"app.kubernetes.io/name": "bgpd"},
                # Goes with its Node (garbage collector). No blockOwnerDeletion: that needs
                # update on nodes/finalizers where OwnerReferencesPermissionEnforcement runs.
                "ownerReferences": [{"apiVersion": "v1", "kind": "Node",
                                     "name": self.node_name, "uid": uid}],
            },
        }
        try:
            self.client.call("POST", PATH, body=body)
        except KubeError as exc:
            if exc.status != 409:  # 409: another writer (an older agent) was first
                raise
        self.creates += 1

    def _failed(self, exc: KubeError) -> float:
        self.failures += 1
        self.last_error = str(exc)
        if exc.status in (403, 404):
            # Not allowed, or no such resource (the CRD is not installed, the Node is
            # gone): nothing a quick retry fixes.
            retry = self.timing.absent_retry_s
        else:
            retry = self._backoff * (0.5 + self._rand())
            self._backoff = min(self._backoff * 2, self.timing.backoff_max_s)
        # One warning per distinct problem (an outage makes many identical failures).
        if str(exc) != self._last_logged:
            log.warning("event=node_status_not_written error=%r retry_s=%.0f", str(exc), retry)
            self._last_logged = str(exc)
        return retry

    # ------------------------------------------------------------------ reporters

    def lists_cluster_wide(self) -> bool:
        """Is this node one of those listing the cluster-wide rejections this period?"""
        nodes = self._node_count()
        if nodes <= REPORTERS:
            return True
        period = int(self._wall() // REPORTER_PERIOD_S)
        digest = hashlib.sha256(f"{self.node_name}\0{period}".encode()).hexdigest()[:15]
        return int(digest, 16) / 16**15 < REPORTERS / nodes

    def _node_count(self) -> int:
        now = self._clock()
        if self._nodes is None or now - self._nodes[0] > NODE_COUNT_REFRESH_S:
            count = self._nodes[1] if self._nodes else 1
            try:
                page = self.client.request_json("GET", "/api/v1/nodes", query={"limit": 1})
                meta = page.get("metadata") or {}
                count = len(page.get("items") or ()) + int(meta.get("remainingItemCount") or 0)
            except (KubeError, AttributeError, TypeError, ValueError) as exc:
                log.info("cannot count nodes (%s): this node lists every rejection", exc)
                now -= NODE_COUNT_REFRESH_S - NODE_COUNT_RETRY_S  # ask again sooner
            self._nodes = (now, max(1, count))
        return self._nodes[1]
