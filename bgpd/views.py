"""Read-only JSON views of a running agent, served under /debug/ and read by the CLI."""

from __future__ import annotations

import ipaddress
import time
from typing import Any

from bgpd.agent import Agent
from bgpd.model import Announcement, Attributes, KernelRoute
from bgpd.policy import reasons
from bgpd.policy.decide import LESS_PREFERRED, WITHDRAWN


def _attrs(a: Attributes) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if a.communities:
        out["communities"] = list(a.communities)
    if a.large_communities:
        out["large_communities"] = list(a.large_communities)
    if a.local_pref is not None:
        out["local_pref"] = a.local_pref
    if a.med is not None:
        out["med"] = a.med
    if a.link_bandwidth is not None:
        out["link_bandwidth"] = a.link_bandwidth
    if a.prepend:
        out["prepend"] = a.prepend
    return out


def _ann(a: Announcement) -> dict[str, Any]:
    return {"prefix": str(a.prefix), "family": a.family, **_attrs(a.attributes)}


def _route(r: KernelRoute) -> dict[str, Any]:
    hops = [{k: v for k, v in (("gateway", h.gateway), ("device", h.device),
                               ("weight", h.weight)) if v is not None} for h in r.nexthops]
    return {"prefix": str(r.prefix), "kind": r.kind, "nexthops": hops}


def _by_address(item: tuple[str, Any]) -> tuple[int, int, int]:
    net = ipaddress.ip_network(item[0])
    return net.version, int(net.network_address), net.prefixlen


def peers(agent: Agent) -> list[dict[str, Any]]:
    speaker = agent.speaker
    if speaker is None:
        return []
    now = time.time()
    return [{"address": p.address, "asn": p.asn, "state": p.state,
             "uptime_s": round(now - p.since, 1) if p.state == "established" and p.since else 0,
             "prefixes_sent": p.prefixes_sent, "prefixes_received": p.prefixes_received,
             "families": list(p.families), "graceful_restart": p.graceful_restart,
             "prefixes_refused": p.prefixes_refused, "routes_refused": p.routes_refused,
             "routes_stale": p.routes_stale, "last_error": p.last_error}
            for p in speaker.peers()]


def status(agent: Agent) -> dict[str, Any]:
    st = agent.status
    ready, why = agent.ready()
    views = agent.snapshot_views()
    peer_list = peers(agent)
    return {
        "node": agent.node_name,
        "ready": ready, "ready_reason": why,
        "synced": st.synced, "api_healthy": st.api_healthy,
        "api_outage_s": round(agent.outage_seconds(), 1),
        "peers_up": sum(1 for p in peer_list if p["state"] == "established"),
        "peers": len(peer_list),
        "announced": len(views["applied"]),
        "desired": len(views["decision"].announcements) if views["decision"] else 0,
        "held_withdrawals": st.held, "hold_reason": st.hold_reason,
        "peers_held": list(st.peers_held), "peers_held_reason": st.peers_held_reason,
        "adopted_kernel_routes": st.adopted_kernel_routes,
        **traffic_summary(views["decision"], views["applied"]),
        "kernel_routes": len(views["kernel"]),
        "kernel_failures": st.kernel_failures[:20],
        "rejections": dict(sorted(st.rejections_by_reason.items())),
        "reconciles": st.reconciles,
        "last_reconcile_age_s": round(time.time() - st.last_reconcile_at, 1)
        if st.last_reconcile_at else None,
        "last_reconcile_ms": round(st.last_duration_s * 1000, 2),
        "last_error": st.last_error, "speaker_error": st.speaker_error,
    }


def traffic_summary(decision: Any, applied: dict[str, Any]) -> dict[str, Any]:
    """The drain and weighted ECMP at a glance: why this node drains, how many addresses
    it withdrew or made less preferred for it, how many carry a link bandwidth."""
    effects = {WITHDRAWN: 0, LESS_PREFERRED: 0}
    for effect, _ in (decision.notes.values() if decision is not None else ()):
        if effect in effects:
            effects[effect] += 1
    return {"draining": decision.drain if decision is not None else "",
            "drained_withdrawn": effects[WITHDRAWN],
            "drained_less_preferred": effects[LESS_PREFERRED],
            "weighted": sum(1 for a in applied.values()
                            if a.attributes.link_bandwidth is not None)}


def routes(agent: Agent, which: str) -> list[dict[str, Any]]:
    views = agent.snapshot_views()
    if which == "kernel":
        return [_route(r) for _, r in sorted(views["kernel"].items(), key=_by_address)]
    if which == "received":
        return received(agent)
    return [_ann(a) for _, a in sorted(views["applied"].items(), key=_by_address)]


def received(agent: Agent) -> list[dict[str, Any]]:
    """Every route each peer sent: stored ones (stale when kept through the peer's
    restart), and what was refused, with the reason (a sample of those: they are counted,
    not stored)."""
    out = []
    speaker = agent.speaker
    for peer in (speaker.peers() if speaker is not None else []):
        got = speaker.received(peer.address)
        if got is None:
            continue
        stored, stale, refused = got
        for status, routes in (("stale", stale), ("installable", stored)):
            out += [{"prefix": str(r.prefix), "peer": peer.address, "next_hop": r.next_hop,
                     "status": status, **_attrs(r.attributes)}
                    for r in sorted(routes, key=lambda r: _by_address((str(r.prefix), r)))]
        out += [{"prefix": prefix, "peer": peer.address, "next_hop": None, "status": reason}
                for prefix, reason in refused.samples]
        hidden = refused.not_allowed + refused.over_limit - len(refused.samples)
        if hidden > 0:
            out.append({"prefix": f"... {hidden} more refused", "peer": peer.address,
                        "next_hop": None, "status": "counted"})
    return out


def diff(agent: Agent) -> dict[str, Any]:
    """Desired (policy) against applied (after the guard) and against each peer's view."""
    views = agent.snapshot_views()
    desired = views["decision"].announcements if views["decision"] else {}
    applied = views["applied"]
    out: dict[str, Any] = {
        "to_announce": sorted(k for k in desired if k not in applied),
        "held_withdrawals": sorted(k for k in applied if k not in desired),
        "attribute_changes": sorted(k for k in desired if k in applied
                                    and desired[k] != applied[k]),
        "peers": {},
    }
    speaker = agent.speaker
    if speaker is not None:
        for p in speaker.peers():
            if p.state != "established":
                continue
            sent = {str(a.prefix) for a in speaker.announced(p.address)}
            refused = {str(k): why for k, why in speaker.refused(p.address).items()}
            out["peers"][p.address] = {
                "missing": sorted(k for k in applied if k not in sent and k not in refused)[:1000],
                "extra": sorted(k for k in sent if k not in applied)[:1000],
                "refused": dict(sorted(refused.items())[:1000]),
            }
    return out


def explain(agent: Agent, target: str) -> dict[str, Any]:
    try:
        net = ipaddress.ip_network(target, strict=False)
    except ValueError:
        return {"target": target, "error": f"{target!r} is not an IP address or prefix"}
    views = agent.snapshot_views()
    decision = views["decision"]
    key = str(net)
    out: dict[str, Any] = {"target": key, "announced": key in views["applied"],
                           "desired": bool(decision and key in decision.announcements),
                           "claims": []}
    if decision is None:
        out["note"] = "no decision yet: the agent has not synced with the API server"
        return out
    for c in decision.explain(net):
        out["claims"].append({"owner": c.owner, "use": c.use, "value": c.value,
                              "verdict": c.reason, "detail": c.detail, "pool": c.pool,
                              "rejected": c.rejected, **_attrs(c.attributes)})
    covered = any(c["use"] == "pod-cidr" and c["verdict"] == reasons.ANNOUNCED
                  for c in out["claims"])
    if key not in views["applied"] and covered:
        out["note"] = "covered by this node's announced pod CIDR"
    if out["desired"] and not out["announced"]:
        out["note"] = "desired but not yet applied (guard hold or reconcile pending)"
    if not out["desired"] and out["announced"]:
        out["note"] = f"withdrawal held back: {agent.status.hold_reason}"
    speaker = agent.speaker
    if speaker is not None and out["announced"]:
        refusals = {p.address: speaker.refused(p.address).get(net)
                    for p in speaker.peers() if p.state == "established"}
        out["refused_by_peer"] = {peer: why for peer, why in refusals.items() if why}
    if key in views["kernel"]:
        out["kernel_route"] = _route(views["kernel"][key])
    if not out["claims"]:
        out["note"] = "no Service, Pod or Node claims this address"
    return out
