"""The operator's side of the CLI: ask a running agent's debug endpoint, print tables.

Exit codes: 0 all good, 1 a problem was found (not ready, a peer down, not announced, a
difference), 3 the agent did not answer. ``-o json`` prints the agent's JSON unchanged.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from bgpd.cli import EXIT_OK, EXIT_PROBLEM, EXIT_UNREACHABLE

REQUEST_TIMEOUT_SECONDS = 10.0


class Unreachable(Exception):
    pass


def fetch(endpoint: str, path: str, **query: str) -> Any:
    url = endpoint.rstrip("/") + path
    if query:
        url += "?" + urllib.parse.urlencode(query)
    try:
        with urllib.request.urlopen(url, timeout=REQUEST_TIMEOUT_SECONDS) as resp:
            return json.load(resp)
    except urllib.error.HTTPError as exc:
        try:
            return json.load(exc)
        except ValueError:
            raise Unreachable(f"{url}: HTTP {exc.code}") from exc
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise Unreachable(f"{url}: {getattr(exc, 'reason', exc)}") from exc


def table(rows: list[list[Any]], header: list[str]) -> str:
    cells = [header] + [["-" if v in (None, "") else str(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in cells)


def _status(doc: dict) -> tuple[str, int]:
    lines = [f"{k}: {v}" for k, v in (
        ("node", doc["node"]),
        ("ready", f"{doc['ready']} ({doc['ready_reason']})"),
        ("synced", doc["synced"]), ("api healthy", doc["api_healthy"]),
        ("api outage", f"{doc['api_outage_s']}s"),
        ("peers up", f"{doc['peers_up']}/{doc['peers']}"),
        ("announced", f"{doc['announced']} (desired {doc['desired']})"),
        ("held withdrawals", f"{doc['held_withdrawals']} {doc['hold_reason']}".strip()),
        ("held peers", f"{len(doc['peers_held'])} {doc['peers_held_reason']}".strip()),
        ("kernel routes", doc["kernel_routes"]),
        ("rejections", ", ".join(f"{k}={v}" for k, v in doc["rejections"].items()) or "none"),
        ("last reconcile", f"{doc['last_reconcile_age_s']}s ago, {doc['last_reconcile_ms']} ms"
         if doc["last_reconcile_age_s"] is not None else "never"),
    )]
    for key in ("last_error", "speaker_error"):
        if doc.get(key):
            lines.append(f"{key.replace('_', ' ')}: {doc[key]}")
    for failure in doc.get("kernel_failures", []):
        lines.append(f"kernel failure: {failure}")
    if doc.get("draining"):
        lines.append(f"draining: {doc['draining']} ({doc.get('drained_withdrawn', 0)} "
                     f"withdrawn, {doc.get('drained_less_preferred', 0)} less preferred)")
    if doc.get("weighted"):
        lines.append(f"weighted ECMP: {doc['weighted']} announced with a link bandwidth")
    if doc.get("adopted_kernel_routes"):
        lines.append(f"adopted kernel routes: {doc['adopted_kernel_routes']} (an earlier "
                     "agent's, kept until every peer has sent End-of-RIB)")
    ok = (doc["ready"] and doc["peers_up"] == doc["peers"] and not doc["held_withdrawals"]
          and not doc["peers_held"])
    return "\n".join(lines), EXIT_OK if ok else EXIT_PROBLEM


def _peers(doc: list) -> tuple[str, int]:
    rows = [[p["address"], p["asn"], p["state"], p["uptime_s"],
             ",".join(f.replace("-unicast", "") for f in p["families"]),
             p["graceful_restart"] if p["graceful_restart"] is not None else "no",
             p["prefixes_sent"], p["prefixes_refused"], p["prefixes_received"],
             p["routes_stale"], p["routes_refused"], p["last_error"]] for p in doc]
    text = table(rows, ["PEER", "ASN", "STATE", "UPTIME_S", "FAMILIES", "GR", "SENT",
                        "NOT_SENT", "RECEIVED", "STALE", "REFUSED", "LAST_ERROR"])
    ok = bool(doc) and all(p["state"] == "established" for p in doc)
    return text, EXIT_OK if ok else EXIT_PROBLEM


def _attrs(r: dict) -> str:
    parts = []
    if r.get("communities"):
        parts.append("comm=" + ",".join(r["communities"]))
    if r.get("large_communities"):
        parts.append("lcomm=" + ",".join(r["large_communities"]))
    for k in ("local_pref", "med"):
        if r.get(k) is not None:
            parts.append(f"{k}={r[k]}")
    if r.get("link_bandwidth") is not None:
        parts.append(f"bw={r['link_bandwidth']}")
    if r.get("prepend"):
        parts.append(f"prepend={r['prepend']}")
    return " ".join(parts)


def _routes(doc: list, which: str) -> tuple[str, int]:
    if which == "kernel":
        rows = [[r["prefix"], r["kind"], ", ".join(
            " ".join(f"{k}={v}" for k, v in h.items()) for h in r["nexthops"])] for r in doc]
        return table(rows, ["PREFIX", "KIND", "NEXTHOPS"]), EXIT_OK
    if which == "received":
        rows = [[r["prefix"], r["peer"], r["next_hop"], r["status"], _attrs(r)] for r in doc]
        return table(rows, ["PREFIX", "PEER", "NEXT_HOP", "STATUS", "ATTRIBUTES"]), EXIT_OK
    rows = [[r["prefix"], r["family"], _attrs(r)] for r in doc]
    return table(rows, ["PREFIX", "FAMILY", "ATTRIBUTES"]), EXIT_OK


def _explain(doc: dict) -> tuple[str, int]:
    if "error" in doc:
        return doc["error"], EXIT_PROBLEM
    covered = doc.get("note") == "covered by this node's announced pod CIDR"
    state = "ANNOUNCED" if doc["announced"] else "COVERED" if covered else "NOT ANNOUNCED"
    lines = [f"{doc['target']}: {state}"]
    if doc.get("note"):
        lines.append(f"  note: {doc['note']}")
    for c in doc["claims"]:
        pool = f" pool={c['pool']}" if c.get("pool") else ""
        lines.append(f"  {c['owner']} claims {c['value']} as {c['use']}: {c['verdict']}{pool}"
                     f" - {c['detail']}")
    for peer, why in sorted(doc.get("refused_by_peer", {}).items()):
        lines.append(f"  not sent to peer {peer}: {why}")
    if doc.get("kernel_route"):
        hops = ", ".join(h.get("gateway") or h.get("device", "") for h in
                         doc["kernel_route"]["nexthops"])
        lines.append(f"  kernel route via {hops}")
    return "\n".join(lines), EXIT_OK if doc["announced"] or covered else EXIT_PROBLEM


def _diff(doc: dict) -> tuple[str, int]:
    lines = []
    for key, label in (("to_announce", "to announce"), ("held_withdrawals", "held withdrawal"),
                       ("attribute_changes", "attributes changing")):
        lines += [f"{label}: {p}" for p in doc[key]]
    for peer, d in sorted(doc["peers"].items()):
        lines += [f"peer {peer} missing: {p}" for p in d["missing"]]
        lines += [f"peer {peer} extra: {p}" for p in d["extra"]]
        lines += [f"peer {peer} not sent: {p} ({why})" for p, why in d["refused"].items()]
    same = not lines
    return ("in sync" if same else "\n".join(lines)), EXIT_OK if same else EXIT_PROBLEM


def command(name: str, args) -> int:
    try:
        if name == "status":
            doc = fetch(args.endpoint, "/debug/status")
            text, code = _status(doc)
        elif name == "peers":
            doc = fetch(args.endpoint, "/debug/peers")
            text, code = _peers(doc)
        elif name == "routes":
            which = "received" if args.received else "kernel" if args.kernel else "advertised"
            doc = fetch(args.endpoint, "/debug/routes", kind=which)
            text, code = _routes(doc, which)
        elif name == "explain":
            doc = fetch(args.endpoint, "/debug/explain", target=args.target)
            text, code = _explain(doc)
        else:
            doc = fetch(args.endpoint, "/debug/diff")
            text, code = _diff(doc)
    except Unreachable as exc:
        print(f"bgpd {name}: the agent did not answer: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    print(json.dumps(doc, indent=1) if args.output == "json" else text)
    return code
