"""The speaker against FRR (zebra + bgpd) in network namespaces."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from bgpd.config import BgpConfig, ImportConfig, PeerConfig, PrefixRule
from bgpd.model import Attributes
from bgpd.speaker import Speaker
from bgpd.speaker.workdir import SWEEP_MIN_AGE_S, WORKDIR_PREFIX, remove_stale_workdirs
from tests.integration import routers
from tests.integration.routers import NODE_V4, NODE_V6, TOR_V4, wait_for
from tests.integration.speaker_lab import (
    NODE_AS,
    ROUTE_TIMEOUT,
    SESSION_TIMEOUT,
    ann,
    bgp_config,
    established,
    peers,
    speaker,
)

pytestmark = [pytest.mark.integration]

TOR_AS = 65000
RICH = Attributes(
    communities=("64512:1", "64512:2"), large_communities=("64512:1:2",), local_pref=200, med=5
)
MD5_MISMATCH_OBSERVE = 8.0  # seconds a session with the wrong key must stay down
GR_TIME = 120


def path_of(router: routers.Frr, prefix: str, family: str = "ipv4") -> dict | None:
    paths = router.vtysh(f"show bgp {family} unicast {prefix} json").get("paths") or []
    return paths[0] if paths else None


def frr_prefixes(router: routers.Frr, family: str = "ipv4") -> set[str]:
    return set(router.routes(family))


def test_ebgp_routes_arrive_with_their_attributes_and_withdrawals_remove_them():
    with routers.tor_and_node("frr-ebgp") as (tor, node):
        conf = routers.frr_config(TOR_AS, {NODE_V4: NODE_AS, NODE_V6: NODE_AS})
        with routers.frr(tor, conf) as frr, speaker(bgp_config(*peers(TOR_AS)), node) as sp:
            sp.set_desired(
                [ann("10.244.1.0/24", RICH), ann("10.244.2.0/24"), ann("fd10:244:1::/64", RICH)]
            )
            path = wait_for(
                lambda: path_of(frr, "10.244.1.0/24"), SESSION_TIMEOUT, "the route at FRR"
            )
            assert path["community"]["string"] == "64512:1 64512:2"
            assert path["largeCommunity"]["string"] == "64512:1:2"
            assert path["metric"] == 5
            assert "locPrf" not in path  # LOCAL_PREF is never sent over eBGP
            assert path["nexthops"][0]["ip"] == NODE_V4
            path6 = wait_for(
                lambda: path_of(frr, "fd10:244:1::/64", "ipv6"), ROUTE_TIMEOUT, "the v6 route"
            )
            assert path6["community"]["string"] == "64512:1 64512:2"
            assert path6["nexthops"][0]["ip"] == NODE_V6
            wait_for(lambda: "10.244.2.0/24" in frr_prefixes(frr), ROUTE_TIMEOUT, "second route")

            sp.set_desired([ann("10.244.1.0/24", RICH)])
            wait_for(
                lambda: frr_prefixes(frr) == {"10.244.1.0/24"}, ROUTE_TIMEOUT, "withdrawals at FRR"
            )
            wait_for(lambda: not frr_prefixes(frr, "ipv6"), ROUTE_TIMEOUT, "v6 withdrawal at FRR")
            status = {p.address: p for p in sp.peers()}
            assert status[TOR_V4].state == "established" and status[TOR_V4].prefixes_sent == 1
            assert {str(a.prefix) for a in sp.announced(TOR_V4)} == {"10.244.1.0/24"}
            assert sp.counters()["commands_refused"] == 0


def test_ibgp_carries_local_pref():
    with routers.tor_and_node("frr-ibgp") as (tor, node):
        conf = routers.frr_config(NODE_AS, {NODE_V4: NODE_AS})
        with routers.frr(tor, conf) as frr, speaker(bgp_config(peers(NODE_AS)[0]), node) as sp:
            sp.set_desired([ann("10.244.1.0/24", RICH)])
            path = wait_for(
                lambda: path_of(frr, "10.244.1.0/24"), SESSION_TIMEOUT, "the route at FRR"
            )
            assert path["locPrf"] == 200
            assert path["metric"] == 5


def _password_file(directory: str, secret: str) -> str:
    path = os.path.join(directory, "md5")
    with open(path, "w") as f:
        f.write(secret + "\n")
    return path


@pytest.mark.parametrize(
    "ours, matches", [("s3cret-Key", True), ("wrong-key", False)], ids=["matching", "mismatched"]
)
def test_md5(ours, matches):
    with routers.tor_and_node("frr-md5") as (tor, node), tempfile.TemporaryDirectory() as tmp:
        conf = routers.frr_config(TOR_AS, {NODE_V4: NODE_AS}, passwords={NODE_V4: "s3cret-Key"})
        peer = peers(TOR_AS, password_file=_password_file(tmp, ours))[0]
        with routers.frr(tor, conf) as frr, speaker(bgp_config(peer), node) as sp:
            if matches:
                wait_for(lambda: established(sp, TOR_V4), SESSION_TIMEOUT, "an MD5 session")
                wait_for(
                    lambda: frr.neighbor_state(NODE_V4) == "Established", ROUTE_TIMEOUT, "FRR side"
                )
            else:
                with pytest.raises(TimeoutError):
                    wait_for(lambda: established(sp, TOR_V4), MD5_MISMATCH_OBSERVE, "no session")
                status = sp.peers()[0]
                assert status.state != "established"
                assert status.last_error, "the failure must be visible in peer state"
                assert frr.neighbor_state(NODE_V4) != "Established"


def _kernel_has(frr: routers.Frr, prefix: str) -> bool:
    return any(
        line.startswith(prefix + " ") and "proto bgp" in line
        for line in frr.kernel_routes().splitlines()
    )


def test_killed_exabgp_restarts_and_the_peer_keeps_forwarding_meanwhile():
    with routers.tor_and_node("frr-gr") as (tor, node):
        conf = routers.frr_config(TOR_AS, {NODE_V4: NODE_AS})
        bgp = bgp_config(peers(TOR_AS, graceful_restart=GR_TIME)[0])
        with routers.frr(tor, conf) as frr, speaker(bgp, node) as sp:
            sp.set_desired([ann("10.244.1.0/24"), ann("10.244.2.0/24")])
            wait_for(
                lambda: _kernel_has(frr, "10.244.2.0/24"), SESSION_TIMEOUT, "routes in FRR's FIB"
            )
            first_pid = sp.exabgp_pid()
            os.kill(first_pid, signal.SIGKILL)
            # While the session is down, FRR (GR helper) keeps the routes, marked stale, in its FIB.
            wait_for(
                lambda: frr.neighbor_state(NODE_V4) != "Established",
                ROUTE_TIMEOUT,
                "FRR to see the drop",
            )
            assert _kernel_has(frr, "10.244.1.0/24") and _kernel_has(frr, "10.244.2.0/24")
            stale = path_of(frr, "10.244.1.0/24")
            assert (
                stale is None or stale.get("stale") or frr.neighbor_state(NODE_V4) == "Established"
            )
            # The speaker notices the crash by itself (nothing written to the dead ExaBGP).
            wait_for(lambda: not established(sp, TOR_V4), ROUTE_TIMEOUT, "the drop noticed")
            # The desired set changes during the gap; after the restart FRR holds exactly it.
            sp.set_desired([ann("10.244.1.0/24"), ann("10.244.3.0/24")])
            wait_for(
                lambda: sp.exabgp_pid() not in (None, first_pid), ROUTE_TIMEOUT, "ExaBGP restarted"
            )
            wait_for(
                lambda: frr_prefixes(frr) == {"10.244.1.0/24", "10.244.3.0/24"},
                SESSION_TIMEOUT,
                "FRR's RIB back to the desired set",
            )
            wait_for(
                lambda: not _kernel_has(frr, "10.244.2.0/24"), ROUTE_TIMEOUT, "stale route flushed"
            )
            assert not path_of(frr, "10.244.1.0/24").get("stale")
            assert sp.counters()["exabgp_restarts"] >= 1


def _orphan_bridges(socket_path: str) -> list[int]:
    """API helpers of this speaker left without their ExaBGP (reparented to init)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdecimal():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if (any(a.endswith(b"/bgpd/speaker/bridge.py") for a in argv)
                and socket_path.encode() in argv and ppid == 1):
            found.append(int(entry))
    return found


def test_a_crashed_exabgp_is_noticed_and_restarted_with_nothing_written_to_it():
    """SIGKILL (the OOM killer) with the desired set unchanged: no command goes to the dead
    process, so only the driver's own exit detection can bring the session back."""
    with routers.tor_and_node("frr-crash") as (tor, node):
        conf = routers.frr_config(TOR_AS, {NODE_V4: NODE_AS})
        wanted = {"10.244.1.0/24", "10.244.2.0/24"}
        states: list[str] = []
        box: list = []

        def notify() -> None:
            if box:
                state = {p.address: p.state for p in box[0].peers()}.get(TOR_V4)
                if not states or states[-1] != state:
                    states.append(state)

        with (
            routers.frr(tor, conf) as frr,
            speaker(bgp_config(peers(TOR_AS)[0]), node, notify=notify) as sp,
        ):
            box.append(sp)
            sp.set_desired([ann(p) for p in wanted])
            wait_for(lambda: frr_prefixes(frr) == wanted, SESSION_TIMEOUT, "routes at FRR")
            assert sp.wait_synced(ROUTE_TIMEOUT)
            socket_path = sp._api.path
            first_pid = sp.exabgp_pid()
            states.clear()
            os.kill(first_pid, signal.SIGKILL)
            wait_for(lambda: "down" in states, ROUTE_TIMEOUT, "the speaker to see the crash")
            wait_for(
                lambda: sp.counters()["exabgp_restarts"] >= 1, ROUTE_TIMEOUT, "ExaBGP restarted"
            )
            assert sp.exabgp_pid() not in (None, first_pid)
            wait_for(lambda: established(sp, TOR_V4), SESSION_TIMEOUT, "the session back up")
            assert states.index("down") < len(states) - 1 and states[-1] == "established"
            wait_for(lambda: frr_prefixes(frr) == wanted, SESSION_TIMEOUT, "routes back at FRR")
            assert sp.wait_synced(ROUTE_TIMEOUT)
            assert sp.counters()["exabgp_exits"] == 1
            wait_for(lambda: not _orphan_bridges(socket_path), ROUTE_TIMEOUT, "no orphan bridge")


def test_a_restarted_peer_gets_the_whole_desired_set_back():
    with routers.tor_and_node("frr-peer-restart") as (tor, node):
        conf = routers.frr_config(TOR_AS, {NODE_V4: NODE_AS})
        wanted = {f"10.244.{i}.0/24" for i in range(20)}
        with routers.frr(tor, conf) as frr, speaker(bgp_config(peers(TOR_AS)[0]), node) as sp:
            sp.set_desired([ann(p) for p in wanted])
            wait_for(lambda: frr_prefixes(frr) == wanted, SESSION_TIMEOUT, "routes at FRR")
            frr.kill_bgpd()
            wait_for(
                lambda: not established(sp, TOR_V4), SESSION_TIMEOUT, "the speaker to see the drop"
            )
            frr.start_bgpd()
            wait_for(lambda: frr_prefixes(frr) == wanted, SESSION_TIMEOUT, "routes back at FRR")
            assert sp.wait_synced(ROUTE_TIMEOUT)


def test_routes_beyond_the_import_policy_are_not_learned():
    networks = [f"172.16.{i}.0/24" for i in range(8)] + ["192.0.2.0/24"]
    with routers.tor_and_node("frr-import") as (tor, node):
        conf = routers.frr_config(TOR_AS, {NODE_V4: NODE_AS}, networks=networks)
        policy = ImportConfig(
            enabled=True, allow=(PrefixRule(ann("172.16.0.0/16").prefix, 16, 32),), max_prefixes=5
        )
        with (
            routers.frr(tor, conf),
            speaker(bgp_config(peers(TOR_AS)[0]), node, import_config=policy) as sp,
        ):
            # Stored: the first 5 allowed; the 4 others (1 not allowed, 3 over the limit)
            # are counted, never stored.
            wait_for(
                lambda: (sp.peers()[0].prefixes_received, sp.peers()[0].routes_refused)
                == (5, 4),
                SESSION_TIMEOUT,
                "all received",
            )
            learned = sp.learned()
            assert len(learned) == 5
            assert all(str(p).startswith("172.16.") for p in learned)
            assert all(
                r.next_hop == TOR_V4 and r.peer == TOR_V4
                for routes in learned.values()
                for r in routes
            )
            assert sp.counters()["routes_refused_import"] == 4
            assert "max_prefixes" in sp.peers()[0].last_error


@pytest.mark.parametrize(
    "withdraw", [False, True], ids=["routes left to graceful restart", "routes withdrawn"]
)
def test_stop(withdraw):
    with routers.tor_and_node("frr-stop") as (tor, node):
        conf = routers.frr_config(TOR_AS, {NODE_V4: NODE_AS})
        bgp = bgp_config(peers(TOR_AS, graceful_restart=GR_TIME)[0])
        with routers.frr(tor, conf) as frr:
            with speaker(bgp, node) as sp:
                sp.set_desired([ann("10.244.1.0/24")])
                wait_for(
                    lambda: _kernel_has(frr, "10.244.1.0/24"), SESSION_TIMEOUT, "route in FRR's FIB"
                )
                sp.stop(withdraw=withdraw)
            wait_for(
                lambda: frr.neighbor_state(NODE_V4) != "Established",
                ROUTE_TIMEOUT,
                "session closed",
            )
            if withdraw:
                assert not frr_prefixes(frr)
            else:
                assert path_of(frr, "10.244.1.0/24").get("stale")
                assert _kernel_has(frr, "10.244.1.0/24")


AGENT_SCRIPT = """
import sys, time
from bgpd.config import BgpConfig, PeerConfig
from bgpd.speaker import Speaker
sp = Speaker(BgpConfig(asn=64512, router_id="10.0.0.2", peers=(PeerConfig("10.0.0.1", 65000),)), netns=sys.argv[1])
sp.start()
deadline = time.monotonic() + 20
while sp.counters().get("exabgp_exits") == 0 and sp._api.current is None and time.monotonic() < deadline:
    time.sleep(0.05)
print(sp.exabgp_pid(), flush=True)
time.sleep(60)
"""


def test_a_killed_agent_leaves_no_exabgp_behind():
    with routers.tor_and_node("orphan") as (_, node):
        agent = subprocess.Popen(
            [sys.executable, "-c", AGENT_SCRIPT, node], stdout=subprocess.PIPE, text=True
        )
        try:
            pid = int(agent.stdout.readline())
            agent.kill()
            agent.wait()

            def gone() -> bool:
                try:
                    with open(f"/proc/{pid}/stat") as f:
                        return (
                            f.read().split()[2] == "Z"
                        )  # reparented zombies may wait for a reaper
                except FileNotFoundError:
                    return True

            wait_for(gone, ROUTE_TIMEOUT, "ExaBGP to exit with its agent")
            # Its work folder (ExaBGP's config, MD5 keys) outlived it: the next start sweeps it.
            left = list(Path(tempfile.gettempdir()).glob(f"{WORKDIR_PREFIX}{agent.pid}-*"))
            assert left, "the killed agent had no work folder to sweep"
            for folder in left:  # the sweep leaves folders younger than SWEEP_MIN_AGE_S
                past = time.time() - 2 * SWEEP_MIN_AGE_S
                os.utime(folder, (past, past))
            assert set(map(str, left)) <= set(remove_stale_workdirs())
            assert not any(p.exists() for p in left)
        finally:
            if agent.poll() is None:
                agent.kill()


def test_ipv6_prefixes_ride_an_ipv4_session_with_the_configured_next_hop():
    """Dual-stack pod CIDRs over one IPv4 session per ToR (MP-BGP): without an IPv6 next
    hop ExaBGP refuses them; with `next_hop_ipv6` FRR gets them with that next hop."""
    with routers.tor_and_node("frr-v6nh") as (tor, node):
        conf = routers.frr_config(TOR_AS, {NODE_V4: NODE_AS}).replace(
            f"  no neighbor {NODE_V4} activate", f"  neighbor {NODE_V4} activate")
        peer = PeerConfig(TOR_V4, TOR_AS, local_address=NODE_V4, next_hop_ipv6=NODE_V6)
        with routers.frr(tor, conf) as frr, speaker(bgp_config(peer), node) as sp:
            sp.set_desired([ann("10.244.1.0/24"), ann("fd00:244:1::/64")])

            def v6_next_hops() -> list[str]:
                paths = frr.routes("ipv6").get("fd00:244:1::/64", [])
                return [nh["ip"] for p in paths for nh in p.get("nexthops", [])
                        if nh.get("scope") == "global" or "scope" not in nh]

            wait_for(lambda: NODE_V6 in v6_next_hops(), SESSION_TIMEOUT,
                     "the IPv6 pod CIDR at FRR with our IPv6 next hop")
            assert "10.244.1.0/24" in frr.routes("ipv4")
            assert sp.counters()["commands_refused"] == 0


def _kernel_weights(frr: routers.Frr, prefix: str) -> dict[str, int]:
    """gateway -> weight of the kernel's route for prefix in FRR's namespace (zebra's FIB)."""
    found = json.loads(routers.run("ip", "-n", frr.ns, "-j", "route", "show", prefix))
    if not found:
        return {}
    route = found[0]
    if "nexthops" not in route:
        return {route["gateway"]: 1}
    return {nh["gateway"]: nh.get("weight", 1) for nh in route["nexthops"]}


def test_link_bandwidth_becomes_weighted_ecmp_in_the_routers_kernel():
    """Two nodes announce one /32 with link bandwidth 1:3; FRR 8.4 (its defaults: weighted
    ECMP when every multipath carries the community) installs next-hop weights in that ratio,
    and a changed bandwidth moves them."""
    node1_v4, node2_v4 = "10.0.1.2", "10.0.2.2"
    tor1_v4, tor2_v4 = "10.0.1.1", "10.0.2.1"
    unit = 125_000  # bytes/s: 1 Mbit/s per endpoint
    with routers.netns("lb-tor") as tor, routers.netns("lb-n1") as n1, \
            routers.netns("lb-n2") as n2:
        routers.link(tor, [f"{tor1_v4}/24"], n1, [f"{node1_v4}/24"])
        routers.link(tor, [f"{tor2_v4}/24"], n2, [f"{node2_v4}/24"])
        conf = routers.frr_config(TOR_AS, {node1_v4: NODE_AS, node2_v4: NODE_AS})
        speakers = []

        def start(ns: str, local: str, remote: str) -> Speaker:
            peer = PeerConfig(remote, TOR_AS, local_address=local, families=("ipv4-unicast",))
            sp = Speaker(BgpConfig(asn=NODE_AS, router_id=local, peers=(peer,)), netns=ns)
            sp.start()
            speakers.append(sp)
            return sp

        with routers.frr(tor, conf) as frr:
            try:
                sp1 = start(n1, node1_v4, tor1_v4)
                sp2 = start(n2, node2_v4, tor2_v4)
                sp1.set_desired([ann("198.51.100.10/32", Attributes(link_bandwidth=unit))])
                sp2.set_desired([ann("198.51.100.10/32", Attributes(link_bandwidth=3 * unit))])
                weights = wait_for(
                    lambda: (w := _kernel_weights(frr, "198.51.100.10/32")) and len(w) == 2
                    and w, SESSION_TIMEOUT, "a two-way ECMP route in the ToR's kernel")
                assert abs(weights[node2_v4] / weights[node1_v4] - 3) < 0.1, weights

                sp1.set_desired([ann("198.51.100.10/32", Attributes(link_bandwidth=2 * unit))])
                sp2.set_desired([ann("198.51.100.10/32", Attributes(link_bandwidth=2 * unit))])
                wait_for(lambda: (w := _kernel_weights(frr, "198.51.100.10/32"))
                         and len(w) == 2 and w[node1_v4] == w[node2_v4],
                         ROUTE_TIMEOUT, "equal weights after the bandwidths became equal")
            finally:
                for sp in speakers:
                    sp.stop()
