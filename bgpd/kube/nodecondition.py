"""Writes the Node's NetworkUnavailable condition (``scheduling.network_unavailable``).

A daemon thread reads the agent's views every POLL_S, asks bgpd/policy/netgate.py what the
condition should say, and patches ``nodes/<name>/status`` only when that changes (a
strategic merge keyed by the condition's type, so the kubelet's own conditions are left
alone). It never blocks the loop and never raises: a failed write is retried with backoff.
The permission it needs (``patch`` on ``nodes/status``) is not in the base RBAC: an
operator adds daemonset/optional/network-unavailable/ on purpose.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from bgpd.kube.client import KubeClient
from bgpd.kube.errors import KubeError
from bgpd.policy.netgate import CONDITION, GateView, decide_condition

log = logging.getLogger(__name__)

POLL_S = 1.0
BACKOFF_INITIAL_S = 1.0
BACKOFF_MAX_S = 60.0
STRATEGIC = "application/strategic-merge-patch+json"


def gate_view(agent: Any) -> GateView:
    """What the agent knows now: its announced pod CIDRs and the peers holding them all."""
    views = agent.snapshot_views()
    decision = views["decision"]
    cidrs = tuple(sorted(c.key for c in (decision.claims if decision else ())
                         if c.use == "pod-cidr" and c.announced))
    speaker = agent.speaker
    holders = []
    if cidrs:
        for peer in speaker.peers():
            if peer.state == "established":
                sent = {str(a.prefix) for a in speaker.announced(peer.address)}
                if set(cidrs) <= sent:
                    holders.append(peer.address)
    st = agent.status
    return GateView(cidrs, tuple(holders), st.synced and st.api_healthy,
                    bool(st.held or st.peers_held))


class ConditionWriter:
    def __init__(self, client: KubeClient, node_name: str, agent: Any, *,
                 debounce_seconds: float, clock: Callable[[], float] = time.monotonic):
        self.client, self.node_name, self.agent = client, node_name, agent
        self.debounce_seconds = debounce_seconds
        self._clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._bad_since: float | None = None
        self._written: str | None = None
        self._retry_at = 0.0
        self._backoff = BACKOFF_INITIAL_S
        self.writes = 0
        self.last_error = ""

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="node-condition", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)

    def _run(self) -> None:
        while not self._stop.wait(POLL_S):
            try:
                self.turn()
            except Exception:  # a bug must not end the thread: logged, tried again
                log.exception("event=node_condition_failed")

    def turn(self) -> None:
        now = self._clock()
        if self.agent.decision is None or now < self._retry_at:
            return
        verdict = decide_condition(gate_view(self.agent), now=now, bad_since=self._bad_since,
                                   debounce_seconds=self.debounce_seconds)
        self._bad_since = verdict.bad_since
        if verdict.status is None or verdict.status == self._written:
            return
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {"status": {"conditions": [{
            "type": CONDITION, "status": verdict.status, "reason": verdict.reason,
            "message": verdict.message, "lastTransitionTime": stamp, "lastHeartbeatTime": stamp,
        }]}}
        try:
            self.client.call("PATCH", f"/api/v1/nodes/{self.node_name}/status", body=body,
                             content_type=STRATEGIC)
        except KubeError as exc:
            self.last_error = str(exc)
            self._retry_at = now + self._backoff
            self._backoff = min(self._backoff * 2, BACKOFF_MAX_S)
            log.warning("event=node_condition_not_written status=%s error=%r", verdict.status,
                        str(exc))
            return
        self._written, self.writes = verdict.status, self.writes + 1
        self._backoff = BACKOFF_INITIAL_S
        log.info("event=node_condition condition=%s status=%s reason=%s", CONDITION,
                 verdict.status, verdict.reason)
