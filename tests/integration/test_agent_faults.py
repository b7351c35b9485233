"""Faults and routine restarts on real parts: kube-apiserver, ExaBGP, FRR and BIRD peers, the
node's kernel table. Each test produces the fault and shows nothing is lost.

The agent runs in this process (ExaBGP and the kernel table in the node's namespace), its
config in a file it watches, its state in a folder, as the DaemonSet runs it.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path

import pytest

from tests.integration.agent_world import (
    CLIENT_NET,
    HOLD_SECONDS,
    MD5_KEY,
    NODE2_V4,
    NODE_AS,
    TOR2_AS,
    TOR2_V4,
    TOR_V4,
    RunningAgent,
    key_file,
    node_routes,
    peer_state,
)
from tests.integration.kube_fixtures import eventually
from tests.integration.routers import bird, bird_config, link, netns

pytestmark = pytest.mark.integration

def test_config_changes_reach_the_wire_on_an_idle_agent(agent_world, tmp_path):
    cp, tor, node, router = agent_world
    with netns("faults-tor2") as tor2:
        link(tor2, [f"{TOR2_V4}/24"], node, [f"{NODE2_V4}/24"])
        conf = bird_config(TOR2_AS, {NODE2_V4: NODE_AS}).replace(TOR_V4, TOR2_V4)
        with bird(tor2, conf) as router2:
            agent = RunningAgent(cp, node, tmp_path, password=key_file(tmp_path))
            with agent.running() as a:
                eventually(lambda: peer_state(a, TOR_V4) == "established", "tor1 up")
                assert a.config.resync_seconds == 60  # an idle loop would wait a minute
                started = time.monotonic()
                agent.write(password=str(tmp_path / "tor1.key"), extra_peer=True)
                eventually(lambda: peer_state(a, TOR2_V4) == "established", "tor2 up")
                added_s = time.monotonic() - started
                eventually(lambda: router2.established("n1"), "tor2 sees the session")
                started = time.monotonic()
                agent.write(password=str(tmp_path / "tor1.key"))
                eventually(lambda: not router2.established("n1"), "tor2's session gone")
                removed_s = time.monotonic() - started
                assert peer_state(a, TOR_V4) == "established"  # never touched
    print(f"config to wire: peer added {added_s:.1f} s, removed {removed_s:.1f} s")
    assert added_s < 10 and removed_s < 15  # README: applied within 1 s, then BGP's own time


def test_exabgp_killed_keeps_imported_routes_in_the_kernel(agent_world, tmp_path):
    cp, tor, node, router = agent_world
    with RunningAgent(cp, node, tmp_path, password=key_file(tmp_path)).running() as a:
        eventually(lambda: a.speaker.end_of_rib_from_all(), "the session up, End-of-RIB")
        eventually(lambda: CLIENT_NET in node_routes(node), "the imported route installed")
        (speaker,) = [s for _, s in a.speaker._members.values()]
        pid = speaker.exabgp_pid()
        caps = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                    if line.startswith("CapEff"))
        assert caps.split()[1] == "0000000000000000", "ExaBGP runs with capabilities"
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 20
        samples = 0
        while time.monotonic() < deadline:
            assert CLIENT_NET in node_routes(node), "the imported route left with ExaBGP"
            samples += 1
            if speaker.exabgp_pid() not in (None, pid) and \
                    peer_state(a, TOR_V4) == "established" and a.speaker.end_of_rib_from_all():
                break
            time.sleep(0.1)
        else:
            pytest.fail("ExaBGP did not come back with the session and End-of-RIB")
        assert samples > 3
        assert [p.routes_stale for p in a.speaker.peers()] == [0]  # refreshed, not stale


def test_a_restarted_agent_keeps_imported_routes_and_holds_a_mass_withdrawal(agent_world, tmp_path):
    cp, tor, node, router = agent_world
    ns = "restart"
    cp.api("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                          "metadata": {"name": ns}})
    ips = [f"198.51.100.{i}" for i in range(10, 30)]
    for i, ip in enumerate(ips):
        cp.api("POST", f"/api/v1/namespaces/{ns}/services", {
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": f"s{i}"},
            "spec": {"ports": [{"port": 80}], "externalIPs": [ip]}})
    wanted = {f"{ip}/32" for ip in ips}
    agent = RunningAgent(cp, node, tmp_path, password=key_file(tmp_path))
    with agent.running():
        eventually(lambda: wanted <= set(router.routes("ipv4")), "the 20 addresses at the ToR")
        eventually(lambda: CLIENT_NET in node_routes(node), "the imported route installed")
    # While the agent is down most Services go (a bad apply, a wrong view): 18 of 22.
    for i in range(2, 20):
        cp.api("DELETE", f"/api/v1/namespaces/{ns}/services/s{i}")
    with agent.running() as a:
        # The successor reads what its predecessor announced and what the ToR had sent:
        # the withdrawal is held and the imported route never leaves the kernel.
        samples = 0
        while not (peer_state(a, TOR_V4) == "established" and a.speaker.end_of_rib_from_all()):
            assert CLIENT_NET in node_routes(node), "the successor dropped the imported route"
            samples += 1
            time.sleep(0.1)
            assert samples < 300, "the session did not come back"
        eventually(lambda: a.status.held == 18, "18 withdrawals held")
        assert wanted <= set(router.routes("ipv4")), "the ToR lost routes at the restart"
        started = time.monotonic()
        eventually(lambda: not (wanted - {f"{ip}/32" for ip in ips[:2]}) & set(
            router.routes("ipv4")), "the withdrawals released after the hold time",
            timeout=HOLD_SECONDS + 20)
        assert time.monotonic() - started >= HOLD_SECONDS - 2
    for i in range(2):
        cp.api("DELETE", f"/api/v1/namespaces/{ns}/services/s{i}")


def test_no_secret_reaches_any_log_even_at_debug(agent_world, tmp_path, caplog):
    cp, tor, node, router = agent_world
    caplog.set_level(logging.DEBUG)
    agent = RunningAgent(cp, node, tmp_path, password=key_file(tmp_path), level="debug")
    with agent.running() as a:
        logging.getLogger().setLevel(logging.DEBUG)
        eventually(lambda: peer_state(a, TOR_V4) == "established", "the MD5 session up")
        agent.write(password=str(tmp_path / "tor1.key"), level="debug")  # a reload too
        time.sleep(1.0)  # let the reload's log lines (if any) come out
    import base64

    text = "\n".join(r.getMessage() for r in caplog.records)
    # The capture holds the agent's debug lines and ExaBGP's own output, relayed.
    assert any(r.levelno == logging.DEBUG and r.name.startswith("bgpd") for r in caplog.records)
    assert any(r.name == "bgpd.speaker.exabgp" for r in caplog.records)
    for secret in (MD5_KEY, base64.b64encode(MD5_KEY.encode()).decode()):
        assert secret not in text, "a TCP MD5 key reached the log"
