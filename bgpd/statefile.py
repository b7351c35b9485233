"""What an agent leaves for its successor: ``<state dir>/state.json``.

Restarts are routine (OOM kill, liveness kill, rollout), and two pieces of forwarding
state must survive them:

* what the peers were last told (``applied``): the mass-withdraw guard judges the next
  agent's first withdrawals against it, so a restart with a wrong view of the cluster is
  held back like a running agent's mistake;
* what each peer sent (``received``) with the restart time it advertised: the next agent
  keeps those routes in the kernel, stale, until the sessions are back and each peer has
  sent End-of-RIB (or its restart time runs out), as graceful restart intends.

In the DaemonSet the folder is the pod's memory-backed emptyDir, which outlives container
restarts (the OOM and liveness cases). Written atomically (temporary file, then rename),
at most every SAVE_INTERVAL_S, by a background thread: the reconcile loop only hands over
references. A file that cannot be read is reported and ignored (the agent starts as if
there was none).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from bgpd.model import Announcement, Attributes, LearnedRoute
from bgpd.ports import Received

log = logging.getLogger("bgpd.state")

STATE_FILE = "state.json"
FORMAT = 1
SAVE_INTERVAL_S = 1.0  # at most one write a second, whatever the churn
MAX_FILE_BYTES = 64 * 1024 * 1024  # a bigger file is not ours to trust


@dataclass(frozen=True)
class Saved:
    saved_at: float  # unix time
    applied: dict[str, Announcement]
    received: Received


def encode(applied: Mapping[str, Announcement], received: Received, now: float) -> dict:
    groups: dict[tuple, list[str]] = {}
    for key, ann in applied.items():
        a = ann.attributes
        groups.setdefault((a.communities, a.large_communities, a.local_pref, a.med,
                           ann.next_hop), []).append(key)
    return {
        "format": FORMAT, "saved_at": now,
        "applied": [{"communities": list(c), "large_communities": list(lc), "local_pref": lp,
                     "med": med, "next_hop": nh, "prefixes": prefixes}
                    for (c, lc, lp, med, nh), prefixes in groups.items()],
        "received": {peer: {"restart_time": restart,
                            "routes": [[str(r.prefix), r.next_hop] for r in routes.values()]}
                     for peer, (routes, restart) in received.items()},
    }


def decode(doc: dict) -> Saved:
    """The saved state, or ValueError/KeyError/TypeError for anything unexpected."""
    if doc.get("format") != FORMAT:
        raise ValueError(f"format {doc.get('format')!r}, not {FORMAT}")
    applied: dict[str, Announcement] = {}
    for group in doc["applied"]:
        attrs = Attributes(tuple(group["communities"]), tuple(group["large_communities"]),
                           group["local_pref"], group["med"])
        for text in group["prefixes"]:
            net = ipaddress.ip_network(text)
            applied[str(net)] = Announcement(net, attrs, group["next_hop"])
    received: Received = {}
    for peer, item in doc["received"].items():
        routes = {}
        for prefix, hop in item["routes"]:
            net = ipaddress.ip_network(prefix)
            routes[net] = LearnedRoute(peer, net, str(ipaddress.ip_address(hop)))
        received[peer] = (routes, item["restart_time"])
    return Saved(float(doc["saved_at"]), applied, received)


class StateStore:
    def __init__(self, directory: str | os.PathLike):
        self.path = Path(directory) / STATE_FILE
        self._cond = threading.Condition()
        self._pending: tuple[Mapping[str, Announcement], Callable[[], Received]] | None = None
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.writes = 0
        self.last_error = ""

    def load(self) -> Saved | None:
        try:
            if self.path.stat().st_size > MAX_FILE_BYTES:
                raise ValueError(f"{self.path.stat().st_size} bytes")
            saved = decode(json.loads(self.path.read_text()))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("event=state_unreadable path=%s error=%r", self.path, str(exc))
            return None
        log.info("event=state_loaded path=%s applied=%d peers=%d age_s=%.0f", self.path,
                 len(saved.applied), len(saved.received), time.time() - saved.saved_at)
        return saved

    def save(self, applied: Mapping[str, Announcement], received: Callable[[], Received]
             ) -> None:
        """Queue the latest state (``applied`` must not change afterwards; ``received``
        is called on the writer thread)."""
        with self._cond:
            self._pending = (applied, received)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="state", daemon=True)
                self._thread.start()
            self._cond.notify()

    def close(self) -> None:
        """Write what is pending, then stop."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(10.0)
        self._write_pending()

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._pending is not None or self._stopping)
                if self._stopping:
                    return
            self._write_pending()
            time.sleep(SAVE_INTERVAL_S)

    def _write_pending(self) -> None:
        with self._cond:
            pending, self._pending = self._pending, None
        if pending is None:
            return
        applied, received = pending
        try:
            text = json.dumps(encode(applied, received(), time.time()), separators=(",", ":"))
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(text)
            os.replace(tmp, self.path)
            self.writes += 1
        except (OSError, ValueError, TypeError) as exc:
            self.last_error = str(exc)
            log.error("event=state_not_saved path=%s error=%r", self.path, str(exc))
