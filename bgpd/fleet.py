"""``bgpd fleet``: every node's BGPNodeStatus from the API, summarised.

Nodes by state (ready, not ready, stale: not written for ``STALE_AFTER_S``), sessions
down, held withdrawals and peers, kernel problems, and the rejections with their top
reasons. Exit codes as the other operator commands: 0 all good, 1 something is wrong (a
node not ready or stale, a session down, something held, a kernel problem, or no status
at all), 3 the API server did not answer (or refused).

``summarise`` is pure (tests feed it sample objects); only ``command`` talks to the API.
Rejections are counted once however many nodes report them: those only one node sees
(``nodeByReason``) add up over nodes, those every node reaches the same way
(``clusterByReason``, a Service's) are the same on every node and counted once.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterable, Mapping
from typing import Any

from bgpd.nodestatus import PATH, STALE_AFTER_S, parse_timestamp, timestamp

PAGE_SIZE = 500
ITEMS_MAX = 500  # rejection items kept in the summary (the table shows TABLE_ROWS)
TABLE_ROWS = 20
CELL_MAX = 80


def _age(seconds: float | None) -> str:
    """Like kubectl's ages: 45s, 12m, 5h, 3d."""
    if seconds is None:
        return "-"
    s = max(0, int(seconds))
    if s < 120:
        return f"{s}s"
    if s < 2 * 3600:
        return f"{s // 60}m"
    if s < 48 * 3600:
        return f"{s // 3600}h"
    return f"{s // 86400}d"


def _node_state(status: Mapping[str, Any], now: float) -> str:
    updated = parse_timestamp(status.get("lastUpdateTime"))
    if updated is None or now - updated > STALE_AFTER_S:
        return "stale"
    return "ready" if status.get("ready") is True else "not ready"


def summarise(objects: Iterable[Mapping[str, Any]], now: float | None = None) -> dict[str, Any]:
    """The fleet from BGPNodeStatus objects (as the API lists them)."""
    now = time.time() if now is None else now
    nodes = sorted(objects, key=lambda o: o.get("metadata", {}).get("name", ""))
    states = {"ready": 0, "not ready": 0, "stale": 0}
    not_ready, stale, down, held, held_peers, kernel = [], [], [], [], [], []
    versions: dict[str, int] = {}
    generations: dict[str, int] = {}
    by_reason: dict[str, int] = {}
    cluster_counts: dict[str, int] = {}
    # What every node reaches the same way is taken from nodes that are not stale (when
    # there are any): a stale node's list may name a Service fixed since.
    any_fresh = any(_node_state(o.get("status") or {}, now) != "stale" for o in nodes)
    items: dict[tuple[str, str, str], dict[str, Any]] = {}
    announced = {"ipv4": 0, "ipv6": 0}
    for obj in nodes:
        name = obj.get("metadata", {}).get("name", "")
        st = obj.get("status") or {}
        state = _node_state(st, now)
        states[state] += 1
        updated = parse_timestamp(st.get("lastUpdateTime"))
        if state == "stale":
            stale.append({"node": name, "lastUpdateTime": st.get("lastUpdateTime"),
                          "ageSeconds": round(now - updated) if updated else None})
        elif state == "not ready":
            not_ready.append({"node": name, "reason": st.get("readyReason", ""),
                              "lastUpdateTime": st.get("lastUpdateTime")})
        version, generation = st.get("agentVersion"), st.get("configGeneration")
        if version:
            versions[version] = versions.get(version, 0) + 1
        if generation:
            generations[generation] = generations.get(generation, 0) + 1
        for fam in announced:
            announced[fam] += int((st.get("announced") or {}).get(fam) or 0)
        for p in st.get("peers") or ():
            if p.get("state") == "established":
                continue
            since = parse_timestamp(p.get("since"))
            down.append({"node": name, "peer": p.get("address", ""), "name": p.get("name"),
                         "asn": p.get("asn"), "state": p.get("state", ""),
                         "since": p.get("since"), "downSeconds":
                         round(now - since) if since is not None else None,
                         "lastError": p.get("lastError", ""), "stale": state == "stale"})
        hw = st.get("heldWithdrawals") or {}
        if hw.get("count"):
            held.append({"node": name, "count": hw["count"], "reason": hw.get("reason", "")})
        hp = st.get("heldPeers") or {}
        if hp.get("count"):
            held_peers.append({"node": name, "peers": hp.get("peers", []),
                               "reason": hp.get("reason", "")})
        k = st.get("kernel") or {}
        if k.get("problems"):
            kernel.append({"node": name, "count": k["problems"],
                           "first": list(k.get("firstProblems") or [])})
        rej = st.get("rejections") or {}
        for reason, n in (rej.get("nodeByReason") or {}).items():
            by_reason[reason] = by_reason.get(reason, 0) + int(n)
        trusted = state != "stale" or not any_fresh
        if trusted:  # the same on every node: counted once
            for reason, n in (rej.get("clusterByReason") or {}).items():
                cluster_counts[reason] = max(cluster_counts.get(reason, 0), int(n))
        for item in rej.get("items") or ():
            if item.get("scope") == "cluster" and not trusted:
                continue
            key = (item.get("object", ""), item.get("address", ""), item.get("reason", ""))
            entry = items.get(key)
            if entry is None:
                if len(items) >= ITEMS_MAX:
                    continue
                entry = items[key] = {**{k: item.get(k, "") for k in
                                         ("object", "address", "use", "reason", "detail")},
                                      "scope": item.get("scope", "node"), "nodes": []}
            if item.get("scope") != "cluster":
                entry["nodes"].append(name)
    for reason, n in cluster_counts.items():
        by_reason[reason] = by_reason.get(reason, 0) + n
    top = sorted(((r, n) for r, n in by_reason.items() if n), key=lambda rn: (-rn[1], rn[0]))
    listed = sorted(items.values(), key=lambda i: (i["reason"], i["object"], i["address"]))
    down.sort(key=lambda d: (d["node"], d["peer"]))
    problems = (states["not ready"] + states["stale"] + len(down) + len(held)
                + len(held_peers) + len(kernel))
    return {
        "time": timestamp(now),
        "ok": bool(nodes) and problems == 0,
        "nodes": {"total": len(nodes), "ready": states["ready"],
                  "notReady": states["not ready"], "stale": states["stale"]},
        "notReady": not_ready,
        "stale": stale,
        "sessionsDown": down,
        "heldWithdrawals": held,
        "heldPeers": held_peers,
        "kernelProblems": kernel,
        "announced": announced,
        "versions": dict(sorted(versions.items())),
        "configGenerations": dict(sorted(generations.items(), key=lambda g: (-g[1], g[0]))),
        "rejections": {"byReason": dict(top), "items": listed},
    }


# ------------------------------------------------------------------ the table


def _cell(text: Any) -> str:
    text = "" if text is None else str(text)
    return text if len(text) <= CELL_MAX else text[:CELL_MAX - 3] + "..."


def _nodes(names: list[str]) -> str:
    return ",".join(names[:3]) + (f" +{len(names) - 3}" if len(names) > 3 else "")


def render(summary: Mapping[str, Any]) -> str:
    from bgpd.client import table

    n = summary["nodes"]
    out = [f"{n['total']} nodes: {n['ready']} ready, {n['notReady']} not ready, "
           f"{n['stale']} stale"]
    if not n["total"]:
        out = ["no BGPNodeStatus objects: are the CRD (daemonset/base/bgpnodestatus-crd.yaml) "
               "and the agents installed?"]
    if summary["versions"]:
        gens = ", ".join(f"{g} ({c})" for g, c in summary["configGenerations"].items())
        out.append("versions: " + ", ".join(f"{v} ({c})" for v, c in
                                            summary["versions"].items())
                   + (f"; config generations: {gens}" if gens else ""))
    a = summary["announced"]
    out.append(f"announced: {a['ipv4']} IPv4 and {a['ipv6']} IPv6 prefixes over all nodes")

    def section(title: str, header: list[str], rows: list[list[Any]]) -> None:
        if rows:
            shown = rows[:TABLE_ROWS]
            out.extend(["", title, table([[_cell(c) for c in r] for r in shown], header)])
            if len(rows) > len(shown):
                out.append(f"... {len(rows) - len(shown)} more (-o json lists them all)")

    section("NOT READY", ["NODE", "REASON", "UPDATED"],
            [[d["node"], d["reason"], d["lastUpdateTime"]] for d in summary["notReady"]])
    section(f"STALE (no status written for {_age(STALE_AFTER_S)} or more: agent not running?)",
            ["NODE", "LAST_UPDATE", "AGO"],
            [[d["node"], d["lastUpdateTime"], _age(d["ageSeconds"])] for d in summary["stale"]])
    section("SESSIONS DOWN", ["NODE", "PEER", "ASN", "STATE", "SINCE", "FOR", "LAST_ERROR"],
            [[d["node"] + (" (stale)" if d["stale"] else ""),
              f"{d['name']} ({d['peer']})" if d.get("name") else d["peer"], d["asn"],
              d["state"], d["since"], _age(d["downSeconds"]), d["lastError"]]
             for d in summary["sessionsDown"]])
    section("HELD WITHDRAWALS", ["NODE", "HELD", "REASON"],
            [[d["node"], d["count"], d["reason"]] for d in summary["heldWithdrawals"]])
    section("HELD PEERS", ["NODE", "PEERS", "REASON"],
            [[d["node"], ",".join(d["peers"]), d["reason"]] for d in summary["heldPeers"]])
    section("KERNEL PROBLEMS", ["NODE", "COUNT", "FIRST"],
            [[d["node"], d["count"], (d["first"] or [""])[0]]
             for d in summary["kernelProblems"]])
    rej = summary["rejections"]
    section("TOP REJECTION REASONS", ["REASON", "ADDRESSES"],
            [[r, c] for r, c in rej["byReason"].items()])
    section("REJECTED", ["OBJECT", "ADDRESS", "REASON", "NODES", "DETAIL"],
            [[i["object"], i["address"], i["reason"],
              "all" if i["scope"] == "cluster" else _nodes(i["nodes"]), i["detail"]]
             for i in rej["items"]])
    if summary["ok"]:
        out.extend(["", "all nodes ready, every session established, nothing held"])
    return "\n".join(out)


# ------------------------------------------------------------------ the API


def _client(kubeconfig: str | None):
    from bgpd.kube.client import KubeClient

    if kubeconfig:
        return KubeClient.from_kubeconfig(kubeconfig)
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        return KubeClient.in_cluster()
    return KubeClient.from_kubeconfig(None)  # $KUBECONFIG or ~/.kube/config, as kubectl


def list_statuses(client: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cont = None
    while True:
        page = client.request_json("GET", PATH, query={"limit": PAGE_SIZE, "continue": cont})
        items += page.get("items") or []
        cont = (page.get("metadata") or {}).get("continue")
        if not cont:
            return items


def command(args: Any) -> int:
    from bgpd.cli import EXIT_OK, EXIT_PROBLEM, EXIT_UNREACHABLE
    from bgpd.kube.errors import KubeError

    try:
        client = _client(args.kubeconfig)
    except KubeError as exc:
        print(f"bgpd fleet: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    try:
        objects = list_statuses(client)
    except KubeError as exc:
        hint = (" (is the BGPNodeStatus CRD installed? kubectl apply -k daemonset/)"
                if exc.status == 404 else "")
        print(f"bgpd fleet: the API server did not answer: {exc}{hint}", file=sys.stderr)
        return EXIT_UNREACHABLE
    finally:
        client.close()
    summary = summarise(objects)
    print(json.dumps(summary, indent=1) if args.output == "json" else render(summary))
    return EXIT_OK if summary["ok"] else EXIT_PROBLEM
