"""The operator CLI against a live agent (fakes behind it) over real HTTP.

Tables are compared with golden files in tests/unit/golden/cli/; JSON is checked field by
field. Set BGPD_UPDATE_GOLDEN=1 to rewrite the golden files after a deliberate change,
then read the diff before committing it.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import socket
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from bgpd import client
from bgpd.agent import Agent
from bgpd.http import HttpServers
from tests.unit.fakes import FakeCluster, FakeEvents, FakeKernel, Speakers
from tests.unit.policy_builders import NODE, config, pod, service, snapshot

GOLDEN = Path(__file__).parent / "golden" / "cli"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def endpoint():
    snap = snapshot(
        services=[service("web", external_ips=("198.51.100.7",),
                          annotations={"bgpd.dev/communities": "65000:7"}),
                  service("lb", type="LoadBalancer", lb_ips=("203.0.113.5",)),
                  service("evil", ns="team", external_ips=("192.0.2.10",))],
        pods=[pod("a", annotations={"bgpd.dev/external-ips": "198.51.100.20"})])
    agent = Agent(config(), NODE, FakeCluster(snap), Speakers(), FakeKernel(), FakeEvents(),
                  clock=lambda: 1000.0)
    agent.reconcile()
    debug, metrics = free_port(), free_port()
    servers = HttpServers(agent, f"127.0.0.1:{debug}", f"127.0.0.1:{metrics}")
    servers.start()
    try:
        yield f"http://127.0.0.1:{debug}", f"http://127.0.0.1:{metrics}", agent
    finally:
        servers.stop()


def run(command: str, endpoint: str, output: str = "table", **kw) -> tuple[int, str]:
    defaults = {"received": False, "kernel": False, "advertised": False}
    args = argparse.Namespace(endpoint=endpoint, output=output, **{**defaults, **kw})
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = client.command(command, args)
    return code, out.getvalue()


def golden(name: str, text: str) -> None:
    path = GOLDEN / f"{name}.txt"
    if os.environ.get("BGPD_UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert text == path.read_text(), f"{name}: output differs from {path}"


@pytest.mark.parametrize("name,command,kw,code", [
    ("routes-advertised", "routes", {"advertised": True}, 0),
    ("routes-kernel", "routes", {"kernel": True}, 0),
    ("explain-announced", "explain", {"target": "198.51.100.7"}, 0),
    ("explain-rejected", "explain", {"target": "192.0.2.10"}, 1),
    ("explain-pod-cidr", "explain", {"target": "10.244.1.77"}, 0),
    ("explain-unclaimed", "explain", {"target": "203.0.113.99"}, 1),
    ("diff", "diff", {}, 0),
])
def test_tables_match_the_golden_files(endpoint, name, command, kw, code):
    debug, _, _ = endpoint
    got_code, text = run(command, debug, **kw)
    assert got_code == code
    golden(name, text)


def test_peers_table_and_exit_code(endpoint):
    debug, _, _ = endpoint
    code, text = run("peers", debug)
    assert code == 0
    header, row = text.splitlines()
    assert header.split() == ["PEER", "ASN", "STATE", "UPTIME_S", "FAMILIES", "GR", "SENT",
                              "NOT_SENT", "RECEIVED", "STALE", "REFUSED", "LAST_ERROR"]
    assert row.split()[:3] == ["10.0.0.1", "65000", "established"]


def test_status_json_and_table(endpoint):
    debug, _, _ = endpoint
    code, text = run("status", debug, output="json")
    doc = json.loads(text)
    assert code == 0 and doc["ready"] and doc["peers_up"] == 1
    assert doc["announced"] == 5  # two pod CIDRs, 198.51.100.7, 198.51.100.20, 203.0.113.5
    assert doc["rejections"] == {"outside-pools": 1}
    code, table = run("status", debug)
    assert "peers up: 1/1" in table and "rejections: outside-pools=1" in table


def test_json_output_is_the_agents_json(endpoint):
    debug, _, _ = endpoint
    code, text = run("explain", debug, output="json", target="192.0.2.10")
    doc = json.loads(text)
    assert code == 1 and doc["announced"] is False
    assert doc["claims"] == [{"owner": "service/team/evil", "use": "external-ip",
                              "value": "192.0.2.10", "verdict": "outside-pools",
                              "detail": "192.0.2.10/32 lies in no configured pool",
                              "pool": None, "rejected": True}]


def test_unreachable_agent_exits_3(capsys):
    code, _ = run("status", f"http://127.0.0.1:{free_port()}")
    assert code == 3 and "did not answer" in capsys.readouterr().err


def test_http_is_read_only_and_debug_stays_off_the_metrics_port(endpoint):
    debug, metrics, _ = endpoint
    for base in (debug, metrics):
        req = urllib.request.Request(base + "/debug/status", data=b"{}", method="POST")
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=5)
        assert err.value.code == 405
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(metrics + "/debug/status", timeout=5)
    assert err.value.code == 404
    for path in ("/healthz", "/readyz"):
        with urllib.request.urlopen(metrics + path, timeout=5) as resp:
            assert resp.status == 200


def test_metrics_names_and_values(endpoint):
    _, metrics, _ = endpoint
    with urllib.request.urlopen(metrics + "/metrics", timeout=5) as resp:
        text = resp.read().decode()
    samples = {line.split(" ")[0]: line.split(" ")[1] for line in text.splitlines()
               if line and not line.startswith("#")}
    assert samples['bgpd_peer_session_up{peer="10.0.0.1"}'] == "1.0"
    assert samples['bgpd_announced_prefixes{family="ipv4"}'] == "4.0"
    assert samples['bgpd_announced_prefixes{family="ipv6"}'] == "1.0"
    assert samples['bgpd_rejections{reason="outside-pools"}'] == "1.0"
    assert samples["bgpd_kernel_routes_owned"] == "1.0"
    assert samples["bgpd_reconcile_duration_seconds_count"] == "1.0"
    assert samples["bgpd_withdrawals_held"] == "0.0"
    assert all(name.startswith("bgpd_") for name in samples)


def test_readyz_says_why_when_not_ready():
    agent = Agent(config(), NODE, FakeCluster(snapshot(synced=False)), Speakers(), FakeKernel())
    agent.reconcile()
    port = free_port()
    servers = HttpServers(agent, f"127.0.0.1:{port}", f"127.0.0.1:{port}")
    servers.start()
    try:
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5)
        assert err.value.code == 503 and b"first sync" in err.value.read()
    finally:
        servers.stop()
