"""`bgpd fleet`: the summary of sample BGPNodeStatus objects (fields and the whole table),
and the command's paging, output and exit codes against an in-memory API."""

from __future__ import annotations

import contextlib
import io
import json
import time

import pytest

from bgpd import fleet
from bgpd.cli import EXIT_OK, EXIT_PROBLEM, EXIT_UNREACHABLE, build_parser
from bgpd.kube.errors import KubeError
from bgpd.nodestatus import PATH, timestamp

NOW = 1_750_000_000.0  # 2025-06-15T15:06:40Z


def obj(name: str, *, ready=True, reason="ok", updated_ago=60.0, peers=None, held=0,
        hold_reason="", kernel=(), node_rej=None, cluster_rej=None, items=(),
        version="0.1.0", generation="aaaaaaaaaaaa", announced=(3, 0), now=NOW) -> dict:
    peers = peers if peers is not None else [
        {"address": "172.20.0.1", "name": "tor1", "asn": 65000, "state": "established",
         "since": timestamp(now - 86400)}]
    up = sum(1 for p in peers if p["state"] == "established")
    return {"apiVersion": "bgpd.dev/v1alpha1", "kind": "BGPNodeStatus",
            "metadata": {"name": name},
            "status": {
                "ready": ready, "readyReason": reason, "agentVersion": version,
                "configGeneration": generation, "peersUp": f"{up}/{len(peers)}",
                "peers": peers, "lastUpdateTime": timestamp(now - updated_ago),
                "announced": {"ipv4": announced[0], "ipv6": announced[1],
                              "total": sum(announced)},
                "heldWithdrawals": {"count": held, "reason": hold_reason},
                "heldPeers": {"count": 0, "peers": [], "reason": ""},
                "kernel": {"routes": 2, "problems": len(kernel), "firstProblems": list(kernel)},
                "rejections": {"total": sum((node_rej or {}).values())
                               + sum((cluster_rej or {}).values()),
                               "nodeByReason": node_rej or {},
                               "clusterByReason": cluster_rej or {},
                               "listsClusterWide": True, "items": list(items), "omitted": 0},
            }}


EVIL = {"object": "service/team/evil", "address": "192.0.2.10", "use": "external-ip",
        "reason": "outside-pools", "detail": "192.0.2.10/32 lies in no configured pool",
        "scope": "cluster"}
BAD_POD = {"object": "pod/default/b", "address": "192.0.2.99", "use": "pod-external-ip",
           "reason": "outside-pools", "detail": "192.0.2.99/32 lies in no configured pool",
           "scope": "node"}


def fleet_objects() -> list[dict]:
    return [
        obj("node1", cluster_rej={"outside-pools": 1}, items=[EVIL]),
        obj("node2", peers=[{"address": "172.20.0.1", "name": "tor1", "asn": 65000,
                             "state": "connect", "since": timestamp(NOW - 300),
                             "lastError": "notification received 6/2"}],
            held=7, hold_reason="would withdraw 7 of 10 prefixes: 70% > 50%; each held for 30s",
            node_rej={"outside-pools": 1}, cluster_rej={"outside-pools": 1},
            items=[BAD_POD, EVIL], generation="bbbbbbbbbbbb"),
        obj("node3", updated_ago=7200.0, cluster_rej={"outside-pools": 4}),  # stale, outdated
        obj("node4", ready=False, reason="API server unreachable: holding the last known state",
            kernel=["10.244.4.0/24: conflicts with a route this agent does not own"],
            node_rej={"bad-annotation": 2}, cluster_rej={"outside-pools": 1},
            announced=(2, 1)),
    ]


def test_summary_fields():
    s = fleet.summarise(fleet_objects(), now=NOW)
    assert s["ok"] is False
    assert s["nodes"] == {"total": 4, "ready": 2, "notReady": 1, "stale": 1}
    assert [d["node"] for d in s["notReady"]] == ["node4"]
    assert s["stale"] == [{"node": "node3", "lastUpdateTime": timestamp(NOW - 7200),
                           "ageSeconds": 7200}]
    (down,) = s["sessionsDown"]
    assert down["node"] == "node2" and down["peer"] == "172.20.0.1"
    assert down["state"] == "connect" and down["downSeconds"] == 300
    assert s["heldWithdrawals"] == [{"node": "node2", "count": 7, "reason":
                                     "would withdraw 7 of 10 prefixes: 70% > 50%; each held "
                                     "for 30s"}]
    assert s["kernelProblems"][0]["node"] == "node4"
    assert s["versions"] == {"0.1.0": 4}
    assert s["configGenerations"] == {"aaaaaaaaaaaa": 3, "bbbbbbbbbbbb": 1}
    assert s["announced"] == {"ipv4": 11, "ipv6": 1}
    # The Service every node rejects counts once (not 3 times, nor the stale node's 4);
    # the Pod on node2 and node4's two bad annotations add up.
    assert s["rejections"]["byReason"] == {"outside-pools": 2, "bad-annotation": 2}
    items = s["rejections"]["items"]
    assert [(i["object"], i["scope"], i["nodes"]) for i in items] == [
        ("pod/default/b", "node", ["node2"]), ("service/team/evil", "cluster", [])]


def test_all_good_is_ok():
    s = fleet.summarise([obj("node1"), obj("node2")], now=NOW)
    assert s["ok"] is True and s["nodes"]["ready"] == 2
    assert fleet.render(s).endswith("all nodes ready, every session established, nothing held")


def test_no_objects_is_not_ok():
    s = fleet.summarise([], now=NOW)
    assert s["ok"] is False
    assert "no BGPNodeStatus objects" in fleet.render(s)


GOLDEN = """\
4 nodes: 2 ready, 1 not ready, 1 stale
versions: 0.1.0 (4); config generations: aaaaaaaaaaaa (3), bbbbbbbbbbbb (1)
announced: 11 IPv4 and 1 IPv6 prefixes over all nodes

NOT READY
NODE   REASON                                                UPDATED
node4  API server unreachable: holding the last known state  2025-06-15T15:05:40Z

STALE (no status written for 30m or more: agent not running?)
NODE   LAST_UPDATE           AGO
node3  2025-06-15T13:06:40Z  2h

SESSIONS DOWN
NODE   PEER               ASN    STATE    SINCE                 FOR  LAST_ERROR
node2  tor1 (172.20.0.1)  65000  connect  2025-06-15T15:01:40Z  5m   notification received 6/2

HELD WITHDRAWALS
NODE   HELD  REASON
node2  7     would withdraw 7 of 10 prefixes: 70% > 50%; each held for 30s

KERNEL PROBLEMS
NODE   COUNT  FIRST
node4  1      10.244.4.0/24: conflicts with a route this agent does not own

TOP REJECTION REASONS
REASON          ADDRESSES
bad-annotation  2
outside-pools   2

REJECTED
OBJECT             ADDRESS     REASON         NODES  DETAIL
pod/default/b      192.0.2.99  outside-pools  node2  192.0.2.99/32 lies in no configured pool
service/team/evil  192.0.2.10  outside-pools  all    192.0.2.10/32 lies in no configured pool"""


def test_table_golden():
    assert fleet.render(fleet.summarise(fleet_objects(), now=NOW)) == GOLDEN


# ------------------------------------------------------------------ the command


class ListingApi:
    """Serves the objects in pages of two, as the API server does with limit/continue."""

    def __init__(self, objects, error: KubeError | None = None):
        self.objects, self.error = objects, error
        self.queries: list[dict] = []
        self.closed = False

    def request_json(self, method, path, query=None, **_):
        assert (method, path) == ("GET", PATH)
        self.queries.append(dict(query or {}))
        if self.error is not None:
            raise self.error
        start = int((query or {}).get("continue") or 0)
        end = start + 2
        meta = {"continue": str(end)} if end < len(self.objects) else {}
        return {"items": self.objects[start:end], "metadata": meta}

    def close(self):
        self.closed = True


def run_fleet(monkeypatch, api, *argv) -> tuple[int, str, str]:
    monkeypatch.setattr(fleet, "_client", lambda kubeconfig: api)
    args = build_parser().parse_args(["fleet", *argv])
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = args.func(args)
    return code, out.getvalue(), err.getvalue()


def test_command_pages_and_exits_1_on_problems(monkeypatch):
    api = ListingApi(fleet_objects())
    code, out, _ = run_fleet(monkeypatch, api, "--kubeconfig", "x", "-o", "json")
    assert code == EXIT_PROBLEM
    doc = json.loads(out)
    assert doc["nodes"]["total"] == 4  # all three pages read
    assert [q.get("continue") for q in api.queries] == [None, "2"]
    assert api.closed


def test_command_exits_0_when_all_is_well(monkeypatch):
    now = time.time()  # the command reads the clock
    code, out, _ = run_fleet(monkeypatch, ListingApi([obj("node1", now=now),
                                                      obj("node2", now=now)]))
    assert code == EXIT_OK
    assert out.startswith("2 nodes: 2 ready, 0 not ready, 0 stale")


@pytest.mark.parametrize("status,hint", [(None, ""), (404, "CRD installed"), (403, "")])
def test_command_exits_3_when_the_api_does_not_answer(monkeypatch, status, hint):
    api = ListingApi([], KubeError("GET: HTTP error", status=status))
    code, out, err = run_fleet(monkeypatch, api)
    assert code == EXIT_UNREACHABLE and out == ""
    assert "the API server did not answer" in err and hint in err


def test_parser():
    args = build_parser().parse_args(["fleet", "--kubeconfig", "/k", "-o", "json"])
    assert (args.kubeconfig, args.output) == ("/k", "json")
    assert build_parser().parse_args(["fleet"]).output == "table"
