"""The fleet in the API, end to end on the single-tor lab: each agent's BGPNodeStatus in
`kubectl get bgpnodestatuses`, a session drop there within seconds, a rejected Service
listed, and `bgpd fleet` summarising it all.

One lab for the module, brought up as test_single_tor.py does (down first, always down at
the end): the lab is a machine-wide resource, so never run this beside another lab. Its
agents run as containers of the image (what a cluster runs; test_single_tor.py covers both
modes), or as $BGPD_E2E_AGENTS says.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from .labtools import CLIENT_IP, SINGLE_TOR, LabHandle, agent_modes, lab_cli, lab_up, wait_for
from .test_single_tor import NODE_IP, POD_CIDR, ROUTE_TIMEOUT, SESSION_TIMEOUT, _requirements

pytestmark = pytest.mark.e2e

TOR_IP = {"node1": "172.20.1.1", "node2": "172.20.2.1"}
DROP_VISIBLE_S = 10.0  # a session drop in `kubectl get bgpnodestatuses` (measured: ~1-2 s)
COUNTS_TIMEOUT = 60.0  # counts are written within 30 s of a change (COUNTS_MIN_INTERVAL_S)


@pytest.fixture(scope="module", params=agent_modes("container"))
def lab(request):
    reason = _requirements()
    if reason:
        pytest.fail(reason)
    try:
        done = lab_up(SINGLE_TOR, request.param)  # down first: leftovers of a broken run
        assert done.returncode == 0, f"lab up failed:\n{done.stderr}"
        handle = LabHandle()
        assert handle.mode == request.param
        for node, ip in NODE_IP.items():
            wait_for(lambda ip=ip: handle.neighbor_state(ip) == "Established",
                     SESSION_TIMEOUT, f"BGP session tor1-{node}")
        for node, cidr in POD_CIDR.items():
            wait_for(lambda cidr=cidr, node=node: handle.next_hops(cidr) == {NODE_IP[node]},
                     ROUTE_TIMEOUT, f"{cidr} via {node} at tor1")
        yield handle
    finally:
        if os.environ.get("BGPD_E2E_KEEP_LAB") != "1":
            lab_cli("down", str(SINGLE_TOR))


def kubectl(lab: LabHandle, *args: str) -> str:
    done = subprocess.run([lab.lab.kubectl_path(), "--kubeconfig", str(lab.lab.kubeconfig),
                           *args], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout


def statuses(lab: LabHandle) -> dict[str, dict]:
    items = json.loads(kubectl(lab, "get", "bgpnodestatuses", "-o", "json"))["items"]
    return {o["metadata"]["name"]: o for o in items}


def fleet(lab: LabHandle, *args: str) -> tuple[int, str]:
    done = subprocess.run([sys.executable, "-m", "bgpd", "fleet", "--kubeconfig",
                           str(lab.lab.kubeconfig), *args], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, done.stdout


def all_up(lab: LabHandle) -> bool:
    objs = statuses(lab)
    return set(objs) == set(NODE_IP) and all(
        o["status"].get("ready") and o["status"].get("peersUp") == "1/1"
        and o["status"].get("announced", {}).get("total", 0) >= 1 for o in objs.values())


def counts_written(lab: LabHandle) -> bool:
    """The received route (192.0.2.0/24) counted in both statuses: counts are written up to
    30 s after a change, so a status can show the session up before it shows the count."""
    return all(p.get("prefixesReceived") == 1 for o in statuses(lab).values()
               for p in o["status"].get("peers", []))


def test_every_node_has_its_status(lab):
    wait_for(lambda: all_up(lab), COUNTS_TIMEOUT, "both nodes ready with 1/1 sessions")
    wait_for(lambda: counts_written(lab), COUNTS_TIMEOUT, "the received route counted")
    objs = statuses(lab)
    for node, obj in objs.items():
        uid = lab.kube.get(f"/api/v1/nodes/{node}")["metadata"]["uid"]
        assert obj["metadata"]["ownerReferences"] == [
            {"apiVersion": "v1", "kind": "Node", "name": node, "uid": uid}]
        (peer,) = obj["status"]["peers"]
        assert peer["address"] == TOR_IP[node] and peer["asn"] == 65000
        assert peer["state"] == "established" and peer["families"] == ["ipv4-unicast"]
        assert peer["prefixesReceived"] == 1  # 192.0.2.0/24, the way to the client
        assert peer["prefixesSent"] == obj["status"]["announced"]["total"]
    header, *rows = kubectl(lab, "get", "bgpnodestatuses").splitlines()
    assert header.split()[:7] == ["NAME", "READY", "PEERS", "UP", "ANNOUNCED", "HELD",
                                  "REJECTED"]
    assert sorted(r.split()[:3] for r in rows) == [["node1", "true", "1/1"],
                                                   ["node2", "true", "1/1"]]
    code, out = fleet(lab)
    assert code == 0, out
    assert out.startswith("2 nodes: 2 ready, 0 not ready, 0 stale")


def test_a_rejected_service_is_listed_once_for_the_fleet(lab):
    lab.create_service("fleet-hijack", {"app": "none"}, [CLIENT_IP], local=False)
    try:
        def listed(node):
            items = statuses(lab)[node]["status"]["rejections"]["items"]
            return [i for i in items if i["object"] == "service/default/fleet-hijack"]

        for node in NODE_IP:  # two nodes: both are drawn to list what every node rejects
            (item,) = wait_for(lambda n=node: listed(n), COUNTS_TIMEOUT,
                               f"the rejection in {node}'s status")
            assert item == {"object": "service/default/fleet-hijack", "address": CLIENT_IP,
                            "use": "external-ip", "reason": "outside-pools",
                            "detail": f"{CLIENT_IP}/32 lies in no configured pool",
                            "scope": "cluster"}
        code, out = fleet(lab, "-o", "json")
        doc = json.loads(out)
        assert doc["rejections"]["byReason"] == {"outside-pools": 1}  # once, not per node
        (item,) = doc["rejections"]["items"]
        assert item["object"] == "service/default/fleet-hijack" and item["scope"] == "cluster"
        assert code == 0, "a tenant's rejected Service is not a fleet problem"
        code, out = fleet(lab)
        assert "TOP REJECTION REASONS" in out and "service/default/fleet-hijack" in out
    finally:
        lab.kube.delete("/api/v1/namespaces/default/services/fleet-hijack")
    wait_for(lambda: not any(statuses(lab)[n]["status"]["rejections"]["total"]
                             for n in NODE_IP), COUNTS_TIMEOUT, "the rejection gone")


def test_a_session_drop_shows_within_seconds(lab):
    wait_for(lambda: all_up(lab), COUNTS_TIMEOUT, "both nodes up")
    try:
        killed = time.monotonic()
        lab.kill("tor1/bgpd", signal.SIGKILL)

        def both_down():
            objs = statuses(lab)
            return all(objs[n]["status"]["peersUp"] == "0/1" for n in NODE_IP) and objs

        objs = wait_for(both_down, DROP_VISIBLE_S, "both sessions down in the API", 0.1)
        took = time.monotonic() - killed
        print(f"session drop visible in `kubectl get bgpnodestatuses` after {took:.1f} s")
        rows = kubectl(lab, "get", "bgpnodestatuses").splitlines()[1:]
        assert sorted(r.split()[:3] for r in rows) == [["node1", "true", "0/1"],
                                                       ["node2", "true", "0/1"]]
        for node in NODE_IP:
            (peer,) = objs[node]["status"]["peers"]
            assert peer["state"] != "established" and peer["since"]
        code, out = fleet(lab)
        print(out)
        assert code == 1, out
        section = out.split("SESSIONS DOWN", 1)[1]
        for node in NODE_IP:
            assert f"{node}  " in section and TOR_IP[node] in section
        doc = json.loads(fleet(lab, "-o", "json")[1])
        assert {(d["node"], d["peer"]) for d in doc["sessionsDown"]} == set(TOR_IP.items())
    finally:
        lab.revive()
    for node, ip in NODE_IP.items():
        wait_for(lambda a=ip: lab.neighbor_state(a) == "Established", SESSION_TIMEOUT,
                 f"tor1-{node} re-established")
    wait_for(lambda: all_up(lab), DROP_VISIBLE_S, "both sessions up again in the API")
    code, out = fleet(lab)
    assert code == 0, out
