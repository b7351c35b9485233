"""The DaemonSet, for real: `kubectl apply -k daemonset/overlays/lab` on a cluster whose nodes
run a real kubelet and containerd (tests/kubelet/lab.py), in the single-tor lab's topology
(two nodes, each behind its own link to an FRR ToR with lab/single-tor/tor1/frr.conf).

What the kubelet enforces is checked on the running processes, not on the manifest: the
agents become Ready on every node, in the node's network namespace; the agent's effective
capabilities are exactly NET_ADMIN and ExaBGP's none, as uid/gid 65532, under no_new_privs and
seccomp; the root filesystem is read-only; each node's BGP session comes up and its pod CIDR
reaches the ToR (and the ToR's client prefix reaches the node's kernel through the agent);
the BGPNodeStatus objects appear; a ConfigMap edit reaches the running agents; scheduling is
gated on BGP (the overlay turns scheduling.network_unavailable on, with the optional RBAC): a
node whose session is shut at the ToR gets NetworkUnavailable=True after the debounce and the
node lifecycle controller's network-unavailable NoSchedule taint, both gone once the session
is back, the other node untouched; the readiness probe takes a hung agent's pod out of Ready,
and puts it back.

One lab for the module (~1 min up, DaemonSet rolled out), always torn down; tests run in file
order: the gating test shuts one session at the ToR and always restores it, and the last one
(readiness) is the only one that disturbs an agent. Needs root and `make kubelet` (`make
test` does both); fails, not skips, without them.
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.e2e.probes import WRITE_PROBE
from tests.kubelet import lab as kl

pytestmark = pytest.mark.e2e

OVERLAY = kl.REPO / "daemonset" / "overlays" / "lab"
NAMESPACE = "bgpd-system"
SELECTOR = "app.kubernetes.io/name=bgpd"
UID = 65532
CAP_NET_ADMIN = 1 << 12
SECCOMP_FILTER = 2
CLIENT_NET = "192.0.2.0/24"  # tor1's eth3, which it sends the nodes (lab/single-tor)

ROLLOUT_TIMEOUT_S = 180.0  # apply to every agent Ready: ~10 s
SESSION_TIMEOUT_S = 60.0  # an agent Ready to its session Established and routes at the ToR
CONFIG_TIMEOUT_S = 90.0  # ConfigMap edit to the agent's reload: ≤ syncFrequency (10 s) + ~1 s
READINESS_TIMEOUT_S = 60.0  # a hung agent to NotReady: 3 failed probes every 5 s (+ timeouts)
# Scheduling gated on BGP (scheduling.network_unavailable in the overlay's bgpd.yaml):
GATE_DOWN_TIMEOUT_S = 60.0  # session down to NetworkUnavailable=True: the debounce (10 s)
#                             + the writer's 1 s poll; to the taint: the node lifecycle
#                             controller reacting to the Node update (~1 s)
GATE_UP_TIMEOUT_S = 60.0  # session re-enabled to False and taint gone: tor1's connect timer
#                           (2 s), the session and the announcement, then as above: ~5 s
TOR_ASN = 65000  # router bgp 65000 in lab/single-tor/tor1/frr.conf
NETWORK_UNAVAILABLE = "NetworkUnavailable"
NETWORK_UNAVAILABLE_TAINT = "node.kubernetes.io/network-unavailable"


@pytest.fixture(scope="module")
def lab() -> Iterator[kl.KubeletLab]:
    why = kl.requirements()
    if why:
        pytest.fail(f"the kubelet lab cannot run: {why}", pytrace=False)
    the_lab = kl.KubeletLab().start()  # builds and imports localhost/bgpd:dev too
    try:
        yield the_lab
    finally:
        t1 = time.monotonic()
        try:
            the_lab.close()
        finally:
            the_lab.timings["teardown"] = time.monotonic() - t1
            print("\nkubelet lab timings (s): " + ", ".join(
                f"{k} {v:.1f}" for k, v in the_lab.timings.items()))


def _pods(lab: kl.KubeletLab) -> list[dict]:
    return lab.get("pods", "-n", NAMESPACE, "-l", SELECTOR)["items"]


def _ready(pod: dict) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True"
               for c in pod.get("status", {}).get("conditions", []))


@pytest.fixture(scope="module")
def deployed(lab: kl.KubeletLab) -> dict[str, dict]:
    """The lab overlay applied as a user applies it; {node: its agent pod} once all Ready."""
    t0 = time.monotonic()
    lab.kubectl("apply", "-k", str(OVERLAY))

    def rolled_out() -> dict[str, dict] | None:
        ds = lab.get("daemonset", "-n", NAMESPACE, "bgpd")
        s = ds.get("status", {})
        want = len(lab.nodes)
        if not (s.get("desiredNumberScheduled") == s.get("numberReady") ==
                s.get("updatedNumberScheduled") == want):
            return None
        pods = {p["spec"].get("nodeName"): p for p in _pods(lab)}
        return pods if set(pods) == set(lab.nodes) and all(map(_ready, pods.values())) else None

    pods = kl.wait_for(rolled_out, ROLLOUT_TIMEOUT_S, "the DaemonSet rolled out", lab.diagnose)
    lab.timings["apply to all agents Ready"] = time.monotonic() - t0
    return pods


def _agent_processes(lab: kl.KubeletLab, node: str) -> tuple[kl.ProcStatus, list[kl.ProcStatus]]:
    """(the agent, the pod's other processes) among the node's processes: the pod's are
    those of its user (the pause container runs as 65535, the rest as root)."""
    pod = [p for p in lab.node_processes(node) if p.uid[0] == UID]
    agents = [p for p in pod if len(p.argv) > 2 and p.argv[1].endswith("/bgpd")
              and "run" in p.argv]
    assert len(agents) == 1, f"{node}: expected one agent among {[p.argv for p in pod]}"
    return agents[0], [p for p in pod if p is not agents[0]]


# ------------------------------------------------------------------ the pods


def test_agents_become_ready_on_every_node(lab, deployed):
    for node, pod in deployed.items():
        assert pod["status"]["podIP"] == lab.nodes[node].ip, "hostNetwork: the node's IP"
        (status,) = pod["status"]["containerStatuses"]
        assert status["ready"] and status["restartCount"] == 0, status
        assert status["image"] == kl.AGENT_IMAGE
    nodes = lab.get("nodes")["items"]
    runtimes = {n["metadata"]["name"]: n["status"]["nodeInfo"]["containerRuntimeVersion"]
                for n in nodes}
    assert all(r.startswith("containerd://2.") for r in runtimes.values()), runtimes


def test_the_pod_runs_in_the_node_network_namespace(lab, deployed):
    host = os.readlink("/proc/self/ns/net")
    for node in deployed:
        agent, others = _agent_processes(lab, node)
        want = lab.nodes[node].netns_inode()
        assert want != host
        assert {p.netns for p in (agent, *others)} == {want}, node


def test_capabilities_user_and_privileges_as_the_kubelet_set_them(lab, deployed):
    for node in deployed:
        agent, others = _agent_processes(lab, node)
        # Exactly NET_ADMIN: from capabilities.add (bounding, permitted) and the image's
        # file capability on the agent's interpreter (effective); nothing ambient.
        assert (agent.cap_eff, agent.cap_prm, agent.cap_bnd, agent.cap_amb) == (
            CAP_NET_ADMIN, CAP_NET_ADMIN, CAP_NET_ADMIN, 0), (node, agent)
        speakers = [p for p in others if any("exabgp" in a for a in p.argv)]
        assert speakers, f"{node}: no ExaBGP among {[p.argv for p in others]}"
        for p in (agent, *others):
            assert set(p.uid) == {UID} and set(p.gid) == {UID}, (node, p.argv, p.uid, p.gid)
            assert p.no_new_privs == 1, (node, p.argv)  # allowPrivilegeEscalation: false
            assert p.seccomp == SECCOMP_FILTER, (node, p.argv)  # RuntimeDefault
        for p in others:  # ExaBGP and the agent's other helpers: no capability at all
            assert p.cap_eff == 0 and p.cap_prm == 0, (node, p.argv, hex(p.cap_eff))


def test_root_filesystem_is_read_only(lab, deployed):
    for node in deployed:
        agent, _ = _agent_processes(lab, node)
        mounts = {}
        for line in Path(f"/proc/{agent.pid}/mountinfo").read_text().splitlines():
            fields = line.split()
            mounts[fields[4]] = fields[5].split(",")
        assert "ro" in mounts["/"], (node, mounts["/"])
        assert "ro" in mounts["/etc/bgpd/config"]
        # Root in the container's mount namespace (so only the mount can refuse): the image
        # is read-only, the emptyDirs are not.
        paths = ["/probe", "/opt/bgpd/probe", "/etc/probe", "/var/tmp/probe",
                 "/run/bgpd/probe", "/tmp/probe"]
        proc = subprocess.run(
            ["nsenter", f"--target={agent.pid}", "--mount", "--",
             "/opt/bgpd/bin/python-speaker", "-c", WRITE_PROBE, *paths],
            capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin"})
        assert proc.returncode == 0, proc.stderr
        result = json.loads(proc.stdout)
        assert result == {**{p: "EROFS" for p in paths[:4]},
                          "/run/bgpd/probe": "ok", "/tmp/probe": "ok"}, (node, result)


# ------------------------------------------------------------------ BGP, end to end


def test_sessions_come_up_and_pod_cidrs_reach_the_tor(lab, deployed):
    assert lab.tor is not None
    tor = lab.tor
    cidrs = {n["metadata"]["name"]: n["spec"]["podCIDR"] for n in lab.get("nodes")["items"]}
    for node, n in lab.nodes.items():
        kl.wait_for(lambda n=n: tor.neighbor_state(n.ip) == "Established", SESSION_TIMEOUT_S,
                    f"tor1's session with {node}", lab.diagnose)

    def announced(node: str) -> bool:
        paths = tor.routes().get(cidrs[node], [])
        return any(h.get("ip") == lab.nodes[node].ip
                   for p in paths for h in p.get("nexthops", []))

    for node in lab.nodes:
        kl.wait_for(lambda node=node: announced(node), SESSION_TIMEOUT_S,
                    f"{node}'s pod CIDR {cidrs[node]} at tor1", lab.diagnose)
        # In tor1's kernel too (zebra), via the node.
        fib = kl.run("ip", "-n", lab.tor_netns, "route", "show", cidrs[node]).stdout
        assert f"via {lab.nodes[node].ip}" in fib, fib
    # The other way: tor1's client prefix, imported by the agent (import.allow) and put in
    # the node's kernel with its NET_ADMIN, in the node's namespace.
    for node, n in lab.nodes.items():
        def installed(n=n) -> bool:
            out = kl.run("ip", "-n", n.netns, "route", "show", CLIENT_NET).stdout
            return f"via {n.tor_ip}" in out

        kl.wait_for(installed, SESSION_TIMEOUT_S, f"{CLIENT_NET} in {node}'s kernel",
                    lab.diagnose)


def _statuses(lab: kl.KubeletLab) -> dict[str, dict]:
    return {o["metadata"]["name"]: o.get("status", {})
            for o in lab.get("bgpnodestatuses")["items"]}


def test_bgpnodestatus_per_node(lab, deployed):
    def all_up() -> dict[str, dict] | None:
        statuses = _statuses(lab)
        ok = set(statuses) == set(lab.nodes) and all(
            s.get("ready") is True and s.get("peersUp") == "1/1" for s in statuses.values())
        return statuses if ok else None

    statuses = kl.wait_for(all_up, SESSION_TIMEOUT_S, "a Ready BGPNodeStatus per node, 1/1 up",
                           lambda: json.dumps(_statuses(lab), indent=1)[-4000:])
    for node, status in statuses.items():
        assert status["announced"]["ipv4"] >= 1, (node, status["announced"])
    # What a user types.
    table = lab.kubectl("get", "bgpnodestatuses")
    assert "node1" in table and "node2" in table and "1/1" in table, table


# ------------------------------------------------------------------ the kubelet's update paths


def _reloads(lab: kl.KubeletLab, pods: dict[str, dict]) -> dict[str, int]:
    return {node: lab.pod_log(NAMESPACE, pod["metadata"]["name"], "bgpd").count(
                "config_reloaded") for node, pod in pods.items()}


def test_configmap_update_reaches_the_running_agents(lab, deployed):
    """The README's config path: edit the ConfigMap, no restart; the kubelet updates the
    mounted file (at the pod's next sync), the agent reloads it."""
    before = _reloads(lab, deployed)
    generations = {n: s.get("configGeneration") for n, s in _statuses(lab).items()}
    cm = lab.get("configmap", "-n", NAMESPACE, "bgpd-config")
    config = yaml.safe_load(cm["data"]["bgpd.yaml"])
    assert config["advertise"]["cluster_ips"] is False
    config["advertise"]["cluster_ips"] = True  # harmless here: tor1 filters ClusterIPs out
    cm["data"]["bgpd.yaml"] = yaml.safe_dump(config, sort_keys=False)
    t0 = time.monotonic()
    lab.kubectl("replace", "-f", "-", input=json.dumps(cm))

    kl.wait_for(lambda: all(n > before[node] for node, n in _reloads(lab, deployed).items()),
                CONFIG_TIMEOUT_S, "event=config_reloaded in every agent's log", lab.diagnose)
    lab.timings["ConfigMap edit to every agent reloaded"] = time.monotonic() - t0
    # The agents acted on it: their status carries the new config's generation.
    kl.wait_for(lambda: all(s.get("configGeneration") not in (None, generations.get(n))
                            for n, s in _statuses(lab).items()),
                CONFIG_TIMEOUT_S, "the new configGeneration in every BGPNodeStatus")
    for pod in _pods(lab):  # no restart on the way
        assert pod["status"]["containerStatuses"][0]["restartCount"] == 0


# ------------------------------------------------------------------ scheduling gated on BGP


def _gate(lab: kl.KubeletLab) -> dict[str, tuple[dict | None, list[dict]]]:
    """{node: (its NetworkUnavailable condition or None, its network-unavailable taints)}."""
    gate = {}
    for n in lab.get("nodes")["items"]:
        conditions = n.get("status", {}).get("conditions", [])
        condition = next((c for c in conditions if c["type"] == NETWORK_UNAVAILABLE), None)
        taints = [t for t in n.get("spec", {}).get("taints") or ()
                  if t["key"] == NETWORK_UNAVAILABLE_TAINT]
        gate[n["metadata"]["name"]] = (condition, taints)
    return gate


def _available(gate: dict, node: str) -> bool:
    """NetworkUnavailable=False, written by the agent (its reason names BGP), and no taint."""
    condition, taints = gate[node]
    return (condition is not None and condition["status"] == "False"
            and "BGP" in condition.get("reason", "") and not taints)


def _tor_neighbor(lab: kl.KubeletLab, address: str, *, shutdown: bool) -> None:
    """Administratively shut (or re-enable) tor1's session with a node, as an operator would."""
    kl.run("vtysh", "-N", lab.tor_netns, "-c", "configure terminal",
           "-c", f"router bgp {TOR_ASN}",
           "-c", f"{'' if shutdown else 'no '}neighbor {address} shutdown")


def test_network_unavailable_gates_scheduling_on_bgp(lab, deployed):
    """The overlay's scheduling.network_unavailable with the optional RBAC: the agent keeps
    its Node's NetworkUnavailable condition, and Kubernetes' node lifecycle controller turns
    it into the network-unavailable NoSchedule taint. node2's session is shut at tor1: after
    the debounce the condition is True and the node tainted; back up, both clear. node1,
    whose session never moves, stays available throughout."""
    assert lab.tor is not None
    tor = lab.tor
    victim, bystander = "node2", "node1"
    address = lab.nodes[victim].ip
    config = yaml.safe_load((OVERLAY / "bgpd.yaml").read_text())
    assert config["scheduling"]["network_unavailable"] is True
    debounce = float(config["scheduling"].get("debounce_seconds", 10.0))

    # Sessions up (earlier tests): every node available, written by its agent.
    gate = kl.wait_for(lambda: (g := _gate(lab)) and all(_available(g, n) for n in lab.nodes)
                       and g, SESSION_TIMEOUT_S, "NetworkUnavailable=False on every node",
                       lambda: json.dumps(_gate(lab), indent=1))
    for node in lab.nodes:
        condition, _ = gate[node]
        assert lab.nodes[node].tor_ip in condition["message"], (node, condition)  # its peer
    assert tor.neighbor_state(address) == "Established"

    def bystander_unaffected(g: dict) -> dict:
        assert _available(g, bystander), (bystander, g[bystander])
        return g

    t0 = time.monotonic()
    _tor_neighbor(lab, address, shutdown=True)
    try:
        kl.wait_for(lambda: tor.neighbor_state(address) != "Established", SESSION_TIMEOUT_S,
                    f"tor1's session with {victim} down")

        def unavailable() -> bool:
            g = bystander_unaffected(_gate(lab))
            condition, _ = g[victim]
            return (condition is not None and condition["status"] == "True"
                    and "BGP" in condition.get("reason", ""))

        kl.wait_for(unavailable, GATE_DOWN_TIMEOUT_S, f"NetworkUnavailable=True on {victim}",
                    lambda: json.dumps(_gate(lab), indent=1))
        to_condition = time.monotonic() - t0
        # Not before the debounce: a session reset shorter than that changes nothing.
        assert to_condition >= debounce, (to_condition, debounce)

        def tainted() -> list[dict]:
            return bystander_unaffected(_gate(lab))[victim][1]

        (taint,) = kl.wait_for(tainted, GATE_DOWN_TIMEOUT_S,
                               f"the {NETWORK_UNAVAILABLE_TAINT} taint on {victim}",
                               lambda: json.dumps(_gate(lab), indent=1))
        to_taint = time.monotonic() - t0
        assert taint["effect"] == "NoSchedule", taint
        condition, _ = _gate(lab)[victim]
        assert condition["status"] == "True", condition  # still: the session is still shut
    finally:
        t1 = time.monotonic()
        _tor_neighbor(lab, address, shutdown=False)
    kl.wait_for(lambda: tor.neighbor_state(address) == "Established", SESSION_TIMEOUT_S,
                f"tor1's session with {victim} back", lab.diagnose)
    kl.wait_for(lambda: _available(bystander_unaffected(_gate(lab)), victim), GATE_UP_TIMEOUT_S,
                f"NetworkUnavailable=False and no taint on {victim}",
                lambda: json.dumps(_gate(lab), indent=1))
    cleared = time.monotonic() - t1
    lab.timings["session down to NetworkUnavailable=True"] = to_condition
    lab.timings["session down to the taint"] = to_taint
    lab.timings["session re-enabled to condition False, no taint"] = cleared
    print(f"\n{victim}: session down -> NetworkUnavailable=True {to_condition:.1f} s "
          f"(debounce {debounce:.0f} s), -> taint {to_taint:.1f} s; "
          f"re-enabled -> False and untainted {cleared:.1f} s")


def test_readiness_probe_gates_the_pod(lab, deployed):
    """A hung agent (SIGSTOP: its HTTP server stops answering) loses Ready through the
    kubelet's readiness probe (and the DaemonSet counts it out), then gets it back."""
    node = "node1"
    name = deployed[node]["metadata"]["name"]
    agent, _ = _agent_processes(lab, node)

    def pod_ready() -> bool:
        return _ready(lab.get("pod", "-n", NAMESPACE, name))

    t0 = time.monotonic()
    os.kill(agent.pid, signal.SIGSTOP)
    try:
        kl.wait_for(lambda: not pod_ready(), READINESS_TIMEOUT_S, f"{name} not Ready",
                    lab.diagnose)
        lab.timings["agent hung to pod NotReady"] = time.monotonic() - t0
        kl.wait_for(lambda: lab.get("daemonset", "-n", NAMESPACE, "bgpd")["status"].get(
            "numberReady") == len(lab.nodes) - 1, READINESS_TIMEOUT_S,
            "the DaemonSet counting the pod out")
    finally:
        os.kill(agent.pid, signal.SIGCONT)
    kl.wait_for(pod_ready, READINESS_TIMEOUT_S, f"{name} Ready again", lab.diagnose)

    def probe_failures() -> list[str]:
        events = lab.get("events", "-n", NAMESPACE,
                         "--field-selector", f"involvedObject.name={name}")["items"]
        return [e.get("message", "") for e in events if e.get("reason") == "Unhealthy"
                and e.get("message", "").startswith("Readiness probe failed")]

    kl.wait_for(probe_failures, 30, "the kubelet's 'Readiness probe failed' event")
    # Not long enough for the liveness probe (6 × 10 s): the same container carries on.
    pod = lab.get("pod", "-n", NAMESPACE, name)
    assert pod["status"]["containerStatuses"][0]["restartCount"] == 0
    assert ipaddress.ip_address(pod["status"]["podIP"]) == ipaddress.ip_address(
        lab.nodes[node].ip)
