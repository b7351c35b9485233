"""Is another node available to take this draining node's Service traffic? (drain: withdraw)

Asked only while this node drains with ``drain.action: withdraw``; the answer decides
whether eTP=Cluster addresses are withdrawn or merely announced less preferred
(bgpd/policy/drain.py). One list request per ``drain.check_seconds``, filtered by the API
server and cut to one item, so a draining node costs the API server what a single small
list costs, whatever the cluster's size::

    GET /api/v1/nodes?fieldSelector=spec.unschedulable=false,metadata.name!=<this node>
                     &labelSelector=!<drain label>,...&limit=1

A node whose only drain trigger is a taint still counts as available (taints cannot be
selected on); the README says so. The answer is kept for three check periods: an API that
stops answering turns it into "unknown", which never withdraws.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from bgpd.config import DrainConfig
from bgpd.kube.client import KubeClient
from bgpd.kube.errors import KubeError

log = logging.getLogger(__name__)

STALE_AFTER_CHECKS = 3  # an answer older than this many periods is "unknown"


def node_query(node_name: str, drain: DrainConfig) -> dict[str, str]:
    """The list query for "an undrained node other than ``node_name``"."""
    fields = [f"metadata.name!={node_name}"]
    if drain.cordoned:
        fields.insert(0, "spec.unschedulable=false")
    query = {"fieldSelector": ",".join(fields), "limit": "1"}
    if drain.labels:
        query["labelSelector"] = ",".join(f"!{key}" for key in drain.labels)
    return query


class OthersAvailable:
    """A background answer to "does another undrained node exist?", never blocking."""

    def __init__(self, client: KubeClient, node_name: str, *,
                 on_change: Callable[[], None] = lambda: None,
                 clock: Callable[[], float] = time.monotonic):
        self.client, self.node_name = client, node_name
        self._on_change = on_change
        self._clock = clock
        self._lock = threading.Lock()
        self._wanted: DrainConfig | None = None
        self._answer: tuple[float, bool] | None = None  # (when, available)
        self._kick = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def get(self, drain: DrainConfig) -> bool | None:
        """The latest fresh answer for ``drain``; asks for one in the background if none."""
        with self._lock:
            if self._wanted != drain:
                self._wanted = drain
                self._answer = None
                self._kick.set()
            answer = self._answer
        if answer is None or self._clock() - answer[0] > STALE_AFTER_CHECKS * drain.check_seconds:
            return None
        return answer[1]

    def not_needed(self) -> None:
        """No longer draining (or another action): stop asking."""
        with self._lock:
            self._wanted = None
            self._answer = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="drain-peers", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._kick.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def check_once(self) -> None:
        with self._lock:
            drain = self._wanted
        if drain is None:
            return
        try:
            page = self.client.request_json("GET", "/api/v1/nodes",
                                            query=node_query(self.node_name, drain))
            available = bool(page.get("items"))
            if not available and (page.get("metadata") or {}).get("continue"):
                return  # an empty page with more to come says nothing: ask again later
        except (KubeError, AttributeError, TypeError, ValueError) as exc:
            log.info("cannot tell whether another node is available (%s): drained "
                     "addresses stay announced, less preferred", exc)
            return
        with self._lock:
            if self._wanted != drain:
                return
            before = self._answer[1] if self._answer else None
            self._answer = (self._clock(), available)
        if before != available:
            log.info("another undrained node is %savailable", "" if available else "not ")
            self._on_change()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.check_once()
            with self._lock:
                period = self._wanted.check_seconds if self._wanted else None
            self._kick.wait(period)
            self._kick.clear()
