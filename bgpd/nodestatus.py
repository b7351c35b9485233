"""The node's ``BGPNodeStatus`` (bgpd.dev/v1alpha1): what its agent knows, in the API.

One cluster-scoped object per node, named after it, owned by its Node (so it goes with the
Node). This module only builds the ``status`` document and decides when it is worth
writing; ``bgpd/kube/statuswriter.py`` writes it from a background thread. Nothing here
imports an adapter: the agent is read through the attributes its views use (duck-typed),
and the result is plain JSON-ready data.

Write pacing (``Pacer``), so that 5,000 idle nodes do not write continuously:

* a change of state (readiness, a session up or down, held withdrawals, kernel problems,
  version, config) is written at most ``STATUS_MIN_INTERVAL_S`` after the previous write;
* a change of counts only (prefixes announced, sent, received, rejections, a peer's last
  error text) waits until ``COUNTS_MIN_INTERVAL_S`` after the previous write: a tenant
  churning Services changes the counts of every node, and must not make every node write
  every few seconds;
* nothing changed: one rewrite every ``REFRESH_S`` (jittered), a heartbeat that also
  recreates an object someone deleted; ``bgpd fleet`` calls a node stale when its object
  was not written for ``STALE_AFTER_S``.

Times that move by themselves (last reconcile, this write) are not part of the comparison.
"""

from __future__ import annotations

import dataclasses
import hashlib
import heapq
import json
import random
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bgpd import __version__

GROUP = "bgpd.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "BGPNodeStatus"
PLURAL = "bgpnodestatuses"
PATH = f"/apis/{GROUP}/{VERSION}/{PLURAL}"

STATUS_MIN_INTERVAL_S = 2.0
"""At most one write per node per this many seconds, whatever changes (a flapping session
included)."""

COUNTS_MIN_INTERVAL_S = 30.0
"""A change of counts only is written this long after the previous write at the earliest."""

REFRESH_S = 600.0
"""Rewritten at least this often (± REFRESH_JITTER) even when nothing changed."""

REFRESH_JITTER = 0.2

STALE_AFTER_S = 1800.0
"""``bgpd fleet``: an object not written for this long (about three refreshes) is stale,
its agent presumably not running."""

POLL_S = 1.0
"""How often the writer reads the agent's views (cheap: costly parts are cached)."""

MAX_PEERS = 64
MAX_REJECTIONS_LISTED = 20
MAX_KERNEL_PROBLEMS_LISTED = 5
MAX_REASONS = 32  # distinct rejection reasons kept per map (there are 7 today)
TEXT_MAX = 256  # reasons, details, errors
ADDRESS_MAX = 64  # an address as an object wrote it (may be garbage)
OBJECT_MAX = 330  # "service/" + namespace (63) + "/" + name (253)

ESTABLISHED = "established"
VOLATILE = ("lastReconcileTime", "lastUpdateTime")
PEER_COUNTS = ("prefixesSent", "prefixesReceived", "prefixesNotSent", "routesRefused",
               "routesStale", "lastError")


def timestamp(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_timestamp(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    except (TypeError, ValueError):
        return None


_COUNTDOWNS = (  # the speaker's (bgpd/speaker/state.py)
    (re.compile(r"(no TCP connection) for \d+(?:\.\d+)?s"), r"\1"),
    (re.compile(r"(session kept down) \d+(?:\.\d+)?s more"), r"\1"),
)


def steady(text: str, limit: int = TEXT_MAX) -> str:
    """A peer's error without the elapsed times and countdowns that change every second
    (the object says since when instead), cut to ``limit`` characters."""
    for pattern, repl in _COUNTDOWNS:
        text = pattern.sub(repl, text)
    return text[:limit]


# ------------------------------------------------------------------ config generation


def _canonical(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _canonical(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (set, frozenset)):
        items = [_canonical(v) for v in value]
        return sorted(items, key=lambda v: json.dumps(v, sort_keys=True))
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)  # addresses, networks


def config_generation(config: Any) -> str:
    """A short hash of the parsed config: equal on nodes running the same config whatever
    the YAML's layout or comments, different when any setting differs. (It hashes
    ``password_file`` paths, never a key.)"""
    text = json.dumps(_canonical(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


# ------------------------------------------------------------------ facts


@dataclass(frozen=True)
class Rejection:
    object: str  # "service/ns/name", "pod/ns/name", "node/name"
    address: str
    use: str
    reason: str
    detail: str

    def doc(self, scope: str) -> dict[str, str]:
        return {"object": self.object[:OBJECT_MAX], "address": self.address[:ADDRESS_MAX],
                "use": self.use, "reason": self.reason, "detail": self.detail[:TEXT_MAX],
                "scope": scope}


@dataclass(frozen=True)
class Rejections:
    """Summary of one decision's rejections: counts per reason and the first few, split
    into node-local ones and those every node reaches the same way (Services)."""

    node_by_reason: Mapping[str, int] = field(default_factory=dict)
    cluster_by_reason: Mapping[str, int] = field(default_factory=dict)
    node_first: tuple[Rejection, ...] = ()
    cluster_first: tuple[Rejection, ...] = ()


def summarise_rejections(decision: Any, limit: int = MAX_REJECTIONS_LISTED) -> Rejections:
    if decision is None:
        return Rejections()
    node: list[Rejection] = []
    cluster: list[Rejection] = []
    counts: tuple[dict[str, int], dict[str, int]] = ({}, {})
    for claim in decision.rejections:
        wide = decision.same_on_every_node(claim)
        by_reason = counts[1 if wide else 0]
        by_reason[claim.reason] = by_reason.get(claim.reason, 0) + 1
        (cluster if wide else node).append(
            Rejection(claim.owner, claim.value, claim.use, claim.reason, claim.detail))

    def first(items: list[Rejection]) -> tuple[Rejection, ...]:
        return tuple(heapq.nsmallest(limit, items, key=lambda r: (r.object, r.address, r.reason)))

    return Rejections(counts[0], counts[1], first(node), first(cluster))


@dataclass(frozen=True)
class Facts:
    """Everything the status says, read from the agent at one moment."""

    node: str
    version: str
    config_generation: str
    ready: bool
    ready_reason: str
    synced: bool
    api_healthy: bool
    peers: tuple[Any, ...] = ()  # model.PeerStatus
    peer_names: Mapping[str, str] = field(default_factory=dict)
    announced: Mapping[str, int] = field(default_factory=dict)  # family -> prefixes
    held: int = 0
    hold_reason: str = ""
    peers_held: tuple[str, ...] = ()
    peers_held_reason: str = ""
    kernel_routes: int = 0
    kernel_problems: tuple[str, ...] = ()
    rejections: Rejections = Rejections()
    last_reconcile_at: float = 0.0


def _families(applied: Mapping[str, Any]) -> dict[str, int]:
    v6 = sum(1 for key in applied if ":" in key)  # keys are canonical prefix texts
    return {"ipv4": len(applied) - v6, "ipv6": v6}


class AgentReader:
    """Reads ``Facts`` from a running Agent, from any thread: the same attributes the
    /debug views read. What costs time at scale (counting 100,000 announcements, walking
    40,000 claims, hashing the config) is recomputed only when the object it comes from is
    replaced, or after another reconcile round (in case one was changed in place)."""

    def __init__(self, agent: Any, version: str = __version__):
        self.agent = agent
        self.version = version
        self._cache: dict[str, tuple[Any, int, Any]] = {}

    def _cached(self, name: str, source: Any, round_: int,
                compute: Callable[[Any], Any]) -> Any:
        hit = self._cache.get(name)
        if hit is not None and hit[0] is source and hit[1] == round_:
            return hit[2]
        value = compute(source)
        self._cache[name] = (source, round_, value)  # keeps ``source`` alive: `is` is sound
        return value

    def facts(self) -> Facts:
        agent = self.agent
        st = agent.status
        round_ = st.reconciles
        ready, why = agent.ready()
        views = agent.snapshot_views()
        config = views["config"]
        speaker = agent.speaker
        peers = tuple(speaker.peers()) if speaker is not None else ()
        return Facts(
            node=agent.node_name,
            version=self.version,
            config_generation=self._cached("config", config, 0, config_generation),
            ready=ready,
            ready_reason=why,
            synced=st.synced,
            api_healthy=st.api_healthy,
            peers=peers,
            peer_names={p.address: p.name for p in config.bgp.peers if p.name},
            announced=self._cached("applied", views["applied"], round_, _families),
            held=st.held,
            hold_reason=st.hold_reason,
            peers_held=tuple(st.peers_held),
            peers_held_reason=st.peers_held_reason,
            kernel_routes=len(views["kernel"]),
            kernel_problems=tuple(st.kernel_failures),
            rejections=self._cached("decision", views["decision"], round_,
                                    summarise_rejections),
            last_reconcile_at=st.last_reconcile_at,
        )


# ------------------------------------------------------------------ the document


def _peer(p: Any, name: str | None, previous: Mapping[str, Any] | None) -> dict[str, Any]:
    since = timestamp(p.since) if p.since else None
    if (p.state != ESTABLISHED and previous is not None
            and previous.get("state") != ESTABLISHED and previous.get("since")):
        # Not established before either: "since" stays the moment it stopped being
        # established, however often it moves between idle, connect and down meanwhile.
        since = previous["since"]
    out: dict[str, Any] = {"address": p.address, "asn": p.asn, "state": p.state}
    if name and name != p.address:
        out["name"] = name[:TEXT_MAX]
    if since:
        out["since"] = since
    out["families"] = list(p.families)
    if p.graceful_restart is not None:
        out["gracefulRestartTime"] = p.graceful_restart
    out.update(prefixesSent=p.prefixes_sent, prefixesReceived=p.prefixes_received,
               prefixesNotSent=p.prefixes_refused, routesRefused=p.routes_refused,
               routesStale=p.routes_stale, lastError=steady(p.last_error or ""))
    return out


def build_status(facts: Facts, *, previous: Mapping[str, Any] | None = None,
                 list_cluster_wide: bool = True, now: float | None = None) -> dict[str, Any]:
    """The ``status`` of the node's BGPNodeStatus. ``previous``: the last document built,
    for peers' "since"; ``list_cluster_wide``: list the rejections every node reaches the
    same way too (only a few nodes do: see bgpd/kube/statuswriter.py)."""
    now = time.time() if now is None else now
    before = {p["address"]: p for p in (previous or {}).get("peers", ())}
    peers = sorted(facts.peers, key=lambda p: p.address)[:MAX_PEERS]
    peer_docs = [_peer(p, facts.peer_names.get(p.address), before.get(p.address))
                 for p in peers]
    up = sum(1 for p in peers if p.state == ESTABLISHED)
    rej = facts.rejections
    listed = [r.doc("node") for r in rej.node_first]
    if list_cluster_wide:
        listed += [r.doc("cluster") for r in rej.cluster_first]
    node_total = sum(rej.node_by_reason.values())
    cluster_total = sum(rej.cluster_by_reason.values())
    reachable = node_total + (cluster_total if list_cluster_wide else 0)
    listed = listed[:MAX_REJECTIONS_LISTED]
    status: dict[str, Any] = {
        "ready": facts.ready,
        "readyReason": facts.ready_reason[:TEXT_MAX],
        "synced": facts.synced,
        "apiHealthy": facts.api_healthy,
        "agentVersion": facts.version,
        "configGeneration": facts.config_generation,
        "peersUp": f"{up}/{len(facts.peers)}",
        "peers": peer_docs,
        "announced": {"ipv4": facts.announced.get("ipv4", 0),
                      "ipv6": facts.announced.get("ipv6", 0),
                      "total": sum(facts.announced.values())},
        "heldWithdrawals": {"count": facts.held,
                            "reason": facts.hold_reason[:TEXT_MAX] if facts.held else ""},
        "heldPeers": {"count": len(facts.peers_held),
                      "peers": list(facts.peers_held[:MAX_PEERS]),
                      "reason": facts.peers_held_reason[:TEXT_MAX] if facts.peers_held
                      else ""},
        "kernel": {"routes": facts.kernel_routes, "problems": len(facts.kernel_problems),
                   "firstProblems": [t[:TEXT_MAX] for t in
                                     facts.kernel_problems[:MAX_KERNEL_PROBLEMS_LISTED]]},
        "rejections": {
            "total": node_total + cluster_total,
            "nodeByReason": dict(sorted(rej.node_by_reason.items())[:MAX_REASONS]),
            "clusterByReason": dict(sorted(rej.cluster_by_reason.items())[:MAX_REASONS]),
            "listsClusterWide": list_cluster_wide,
            "items": listed,
            "omitted": max(0, reachable - len(listed)),
        },
        "lastUpdateTime": timestamp(now),
    }
    if facts.last_reconcile_at:
        status["lastReconcileTime"] = timestamp(facts.last_reconcile_at)
    return status


# ------------------------------------------------------------------ change detection


def _key(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def full_key(status: Mapping[str, Any]) -> str:
    """Everything but the times that move by themselves."""
    return _key({k: v for k, v in status.items() if k not in VOLATILE})


def state_key(status: Mapping[str, Any]) -> str:
    """What is written promptly: everything but counts, error texts and the exact name of
    a non-established session's state (idle, connect and down alike are "not up")."""
    out = {k: v for k, v in status.items()
           if k not in VOLATILE and k not in ("announced", "rejections", "peers", "kernel")}
    out["peers"] = [{**{k: v for k, v in p.items() if k not in PEER_COUNTS},
                     "state": ESTABLISHED if p.get("state") == ESTABLISHED else "down"}
                    for p in status.get("peers", ())]
    kernel = status.get("kernel", {})
    out["kernel"] = {k: v for k, v in kernel.items() if k != "routes"}
    return _key(out)


@dataclass(frozen=True)
class StatusTiming:
    min_interval_s: float = STATUS_MIN_INTERVAL_S
    counts_interval_s: float = COUNTS_MIN_INTERVAL_S
    refresh_s: float = REFRESH_S
    refresh_jitter: float = REFRESH_JITTER
    poll_s: float = POLL_S
    backoff_initial_s: float = 1.0  # a failed write is retried after this, doubling ...
    backoff_max_s: float = 120.0  # ... up to this (an API outage only delays writes)
    absent_retry_s: float = 600.0  # the CRD is not installed or RBAC forbids: try again later


class Pacer:
    """When the next write is due, from what was last written and when (no I/O; the
    caller's monotonic clock)."""

    def __init__(self, timing: StatusTiming = StatusTiming(),
                 rand: Callable[[], float] = random.random):
        self.timing = timing
        self._rand = rand
        self.written_at: float | None = None
        self._state: str | None = None
        self._full: str | None = None
        self._refresh_at = 0.0

    def due_in(self, status: Mapping[str, Any], now: float) -> float | None:
        """Seconds until ``status`` should be written (0: now); None when it need not be
        (until the refresh, which ``refresh_in`` tells)."""
        if self.written_at is None:
            return 0.0
        t = self.timing
        since = now - self.written_at
        if state_key(status) != self._state:
            return max(0.0, t.min_interval_s - since)
        if full_key(status) != self._full:
            return max(0.0, max(t.min_interval_s, t.counts_interval_s) - since)
        if now >= self._refresh_at:
            return 0.0
        return None

    def refresh_in(self, now: float) -> float:
        return max(0.0, self._refresh_at - now)

    def written(self, status: Mapping[str, Any], now: float) -> None:
        t = self.timing
        self.written_at = now
        self._state, self._full = state_key(status), full_key(status)
        spread = t.refresh_jitter * (2 * self._rand() - 1)
        self._refresh_at = now + t.refresh_s * (1 + spread)


class StatusSource:
    """The callable the writer polls: the agent's current status document."""

    def __init__(self, agent: Any, clock: Callable[[], float] = time.time):
        self.reader = AgentReader(agent)
        self._clock = clock
        self._previous: dict[str, Any] | None = None

    @property
    def node(self) -> str:
        return self.reader.agent.node_name

    def __call__(self, list_cluster_wide: bool = True) -> dict[str, Any]:
        status = build_status(self.reader.facts(), previous=self._previous,
                              list_cluster_wide=list_cluster_wide, now=self._clock())
        self._previous = status
        return status
