"""Bring a containerlab topology up with network namespaces, and down again.

State lives in ``clab-<lab>/state.json`` (which namespaces, which detached processes with
their argv, PID and start time); a registry entry in ``/run/bgpd-lab/<lab>.json`` lets
``status`` find every lab that is up. ``up`` converges: what runs is left alone, a recorded
process that died is restarted with its recorded argv, a half-built lab is torn down and
rebuilt.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from bgpd.lab import topology as topo_mod
from bgpd.lab.containers import RUNC_ROOTS
from bgpd.lab.kubelet import ready_condition
from bgpd.lab.system import (
    LabError,
    ProcRecord,
    adopt,
    netns_delete,
    netns_exists,
    netns_list,
    respawn,
    run,
    spawn,
    stop,
    wait_for,
    write_json,
)
from bgpd.lab.topology import Topology, parse_topology

REPO = Path(__file__).resolve().parents[2]
REGISTRY = Path("/run/bgpd-lab")
FRR_DIR = Path("/usr/lib/frr")
FRR_RUN = Path("/var/run/frr")
FRR_DAEMONS = ("zebra", "bgpd", "staticd", "bfdd")  # the ones a lab may ask for, start order
APISERVER_IN_NODE = "127.0.0.1:6443"
AGENT_DEBUG = "127.0.0.1:9180"
AGENT_METRICS = "127.0.0.1:9181"
# The lab's BGP timers: keepalive 3 s, hold 9 s. Graceful restart time 8 s (< hold): a
# killed agent's routes leave the ToR within the hold time even though the ToR is a GR helper
# (it keeps a dropped peer's routes for the restart time the peer advertised), while an agent
# that restarts within 8 s keeps its routes (zero loss). See bgpd/lab/README.md.
HOLD_TIME, KEEPALIVE, GR_TIME = 9, 3, 8
ZEBRA_GR_SECONDS = 60  # a restarted FRR keeps its predecessor's kernel routes this long
CLUSTER_POD_CIDR = "10.244.0.0/16"
SERVICE_CIDR = "10.96.0.0/16"
EXTERNAL_POOL = "198.51.100.0/24"
LB_POOL = "203.0.113.0/24"
CLIENT_NET = "192.0.2.0/24"
POD_ROUTES = (CLUSTER_POD_CIDR, SERVICE_CIDR, CLIENT_NET, EXTERNAL_POOL, LB_POOL,
              "172.20.0.0/16", "172.21.0.0/16")
EXAMPLES = REPO / "lab" / "examples" / "workloads.yaml"
STATE = "state.json"
# Every request of the agents' ServiceAccount, at Metadata level, in clab-<lab>/audit.log
# (tests/e2e compares it with daemonset/base/rbac.yaml).
AUDIT_POLICY = Path(__file__).resolve().parent / "audit-policy.yaml"
AUDIT_LOG = "audit.log"
AGENT_MODES = ("process", "container")
CP_START_ATTEMPTS = 3
# The node lifecycle controller turns the agents' NetworkUnavailable condition into the
# node.kubernetes.io/network-unavailable taint; the fake kubelet renews the Nodes' Leases.
# Its grace period outlasts the e2e suite's 60 s API outage, so the lab's Nodes are not
# marked unreachable (and their pods NotReady) only because the API server was away.
LAB_CONTROLLERS = ("node-lifecycle-controller",)
NODE_MONITOR_GRACE = "180s"
AGENTS_MODE_ENV = "BGPD_LAB_AGENTS"  # 0/1: start agents or not; process/container: how


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ------------------------------------------------------------------ control plane

def _controlplane_module():
    """tests/controlplane/controlplane.py, imported by path (the lab runs from a checkout)."""
    path = REPO / "tests" / "controlplane" / "controlplane.py"
    if not path.exists():
        raise LabError(f"{path} not found: `bgpd lab` runs from a source checkout")
    spec = importlib.util.spec_from_file_location("bgpd_lab_controlplane", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bgpd_lab_controlplane"] = mod
    spec.loader.exec_module(mod)
    return mod


def agent_available() -> tuple[bool, str]:
    """Is ``bgpd run`` built? (The lab starts agents only then; BGPD_LAB_AGENTS=0/1 forces.)"""
    forced = os.environ.get(AGENTS_MODE_ENV)
    if forced in ("0", "1"):
        return forced == "1", f"{AGENTS_MODE_ENV}={forced}"
    try:
        from bgpd import cli

        args = cli.build_parser().parse_args(["run", "--config", "x"])
    except (ImportError, SystemExit) as exc:
        return False, f"bgpd.cli does not load: {exc}"
    if "_not_built" in getattr(args.func, "__qualname__", ""):
        return False, "`bgpd run` is not built yet"
    return True, "bgpd run is built"


def requested_agents_mode(flag: str | None = None) -> str | None:
    """``--agents`` if given, else $BGPD_LAB_AGENTS when it names a mode, else None."""
    if flag is not None:
        if flag not in AGENT_MODES:
            raise LabError(f"--agents {flag!r}: one of {', '.join(AGENT_MODES)}")
        return flag
    env = os.environ.get(AGENTS_MODE_ENV)
    return env if env in AGENT_MODES else None


def rbac_manifest() -> Path:
    """The agent's RBAC (ServiceAccount bgpd-system/bgpd and its roles) from daemonset/."""
    for candidate in (REPO / "daemonset" / "base" / "rbac.yaml",
                      REPO / "daemonset" / "rbac.yaml"):
        if candidate.exists():
            return candidate
    found = sorted((REPO / "daemonset").rglob("rbac.yaml"))
    if not found:
        raise LabError(f"no rbac.yaml under {REPO / 'daemonset'}")
    return found[0]


def network_unavailable_rbac() -> Path:
    """The optional grant (patch nodes/status) the lab's agents use for
    ``scheduling.network_unavailable``, applied on purpose as an operator would."""
    path = REPO / "daemonset" / "optional" / "network-unavailable" / "rbac.yaml"
    if not path.exists():
        raise LabError(f"{path} not found")
    return path


def crd_manifest() -> Path:
    """The BGPNodeStatus CRD the agents write their node's status into (daemonset/base/)."""
    path = REPO / "daemonset" / "base" / "bgpnodestatus-crd.yaml"
    if not path.exists():
        raise LabError(f"{path} not found")
    return path


# ------------------------------------------------------------------ rendering (pure)

def render_agent_config(topo: Topology, node: topo_mod.Node) -> dict:
    labels = node.labels
    peer_addr = labels[topo_mod.LABEL_PEER]
    peer_name = next((far for _, far, _ in topo.neighbours(node.name)
                      if topo.nodes[far].is_frr or topo.nodes[far].bird_conf), peer_addr)
    return {
        "bgp": {
            "asn": int(labels[topo_mod.LABEL_ASN]),
            "router_id": labels[topo_mod.LABEL_NODE_IP],
            "peers": [{
                "name": peer_name,
                "address": peer_addr,
                "asn": int(labels[topo_mod.LABEL_PEER_ASN]),
                "local_address": labels[topo_mod.LABEL_NODE_IP],
                "hold_time": HOLD_TIME,
                "keepalive": KEEPALIVE,
                "graceful_restart": GR_TIME,
                "families": ["ipv4-unicast"],
            }],
        },
        "cluster": {"pod_cidrs": [CLUSTER_POD_CIDR], "service_cidrs": [SERVICE_CIDR]},
        "advertise": {"pod_cidr": True, "external_ips": True, "load_balancer_ips": True,
                      "pod_external_ips": True},
        "pools": [
            # Weighted ECMP: eTP=Local and pod-owned addresses carry a link bandwidth per
            # local endpoint, which tor1 (FRR) turns into next-hop weights.
            {"name": "external", "cidrs": [EXTERNAL_POOL],
             "allow": ["external-ip", "pod-external-ip"], "weighted_ecmp": True},
            {"name": "lb", "cidrs": [LB_POOL], "allow": ["load-balancer-ip"]},
        ],
        "import": {"enabled": True, "allow": [CLIENT_NET]},
        # The default drain, said out loud: a cordoned node announces its Service and
        # pod-owned addresses with our ASN prepended 3 times, so tor1 prefers the others.
        "drain": {"cordoned": True, "action": "prepend", "prepend": 3},
        # The Node's NetworkUnavailable condition is True until its pod CIDR is out to a
        # peer: the node lifecycle controller's taint keeps new pods off it meanwhile.
        "scheduling": {"network_unavailable": True},
        "http": {"debug_address": AGENT_DEBUG, "metrics_address": AGENT_METRICS},
        "logging": {"format": "keyvalue", "level": "info"},
    }


def node_object(node: topo_mod.Node) -> tuple[dict, dict]:
    """(Node object to create, status to patch) for a lab Kubernetes node."""
    cidr = node.labels[topo_mod.LABEL_POD_CIDR]
    ip = node.labels[topo_mod.LABEL_NODE_IP]
    labels = {"kubernetes.io/hostname": node.name, "kubernetes.io/os": "linux",
              "lab.bgpd.dev/lab-node": "true"}
    for key, value in node.labels.items():
        if key.startswith(("topology.kubernetes.io/", "bgpd.dev/")):
            labels[key] = value
    obj = {"apiVersion": "v1", "kind": "Node",
           "metadata": {"name": node.name, "labels": labels},
           "spec": {"podCIDR": cidr, "podCIDRs": [cidr]}}
    status = {"addresses": [{"type": "InternalIP", "address": ip},
                            {"type": "Hostname", "address": node.name}],
              "conditions": [ready_condition()]}
    return obj, status


def frr_pathspace(topo: Topology, node: str) -> str:
    return f"{topo.name}-{node}"


def vtysh_command(topo: Topology, node: str, command: str) -> str:
    return (f"ip netns exec {topo.netns(node)} vtysh -N {frr_pathspace(topo, node)} "
            f"-c {shlex.quote(command)}")


def enabled_frr_daemons(daemons_file: Path | None) -> list[str]:
    wanted = {"zebra", "bgpd"}
    if daemons_file is not None and daemons_file.exists():
        for line in daemons_file.read_text().splitlines():
            key, _, value = line.partition("=")
            if key.strip() in FRR_DAEMONS and value.strip() == "yes":
                wanted.add(key.strip())
    return [d for d in FRR_DAEMONS if d in wanted]


# ------------------------------------------------------------------ the lab

class Lab:
    def __init__(self, topo: Topology):
        self.topo = topo
        self.dir = topo.lab_dir
        self.state_path = self.dir / STATE
        self.state = self._load()
        self._containers = None

    @property
    def agents_mode(self) -> str:
        """How this lab runs its agents (recorded when the lab was made)."""
        return self.state.get("agents_mode", "process")

    @property
    def containers(self):
        from bgpd.lab.containers import AgentContainers

        if self._containers is None:
            self._containers = AgentContainers(self.topo.name, self.dir,
                                               image=self.state.get("agents_image"))
        return self._containers

    def _load(self) -> dict:
        try:
            return json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            return {}

    def save(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        write_json(self.state_path, self.state)

    @property
    def procs(self) -> dict[str, ProcRecord]:
        return {k: ProcRecord(v) for k, v in self.state.get("procs", {}).items()}

    def record(self, rec: ProcRecord) -> None:
        self.state.setdefault("procs", {})[rec["name"]] = dict(rec)
        self.save()

    def _tmp_prefix(self) -> str:
        return "clt" + hashlib.sha1(self.topo.name.encode()).hexdigest()[:6]

    # ------------------------------------------------------------- network

    def _network_ok(self) -> bool:
        return bool(self.state.get("network_done")) and all(
            netns_exists(self.topo.netns(n)) for n in self.topo.nodes)

    def build_network(self) -> None:
        t = self.topo
        for name, node in t.nodes.items():
            ns = t.netns(name)
            self.state.setdefault("netns", [])
            if ns not in self.state["netns"]:
                self.state["netns"].append(ns)
            self.save()
            run("ip", "netns", "add", ns)
            run("ip", "-n", ns, "link", "set", "lo", "up")
            t.node_dir(name).mkdir(parents=True, exist_ok=True)
            for key, value in node.sysctls.items():
                run("ip", "netns", "exec", ns, "sysctl", "-q", "-w", f"{key}={value}")
        prefix = self._tmp_prefix()
        for i, link in enumerate(t.links):
            tmp_a, tmp_b = f"{prefix}{i:03d}a", f"{prefix}{i:03d}b"
            run("ip", "link", "add", tmp_a, "mtu", str(link.mtu), "type", "veth",
                "peer", "name", tmp_b, "mtu", str(link.mtu))
            for tmp, ep in ((tmp_a, link.a), (tmp_b, link.b)):
                ns = t.netns(ep.node)
                run("ip", "link", "set", tmp, "netns", ns)
                run("ip", "-n", ns, "link", "set", tmp, "name", ep.iface)
                run("ip", "-n", ns, "link", "set", ep.iface, "up")
        for name, node in t.nodes.items():
            for line in node.exec:
                argv = shlex.split(t.expand(line, name))
                run("ip", "netns", "exec", t.netns(name), *argv)
        self.state["network_done"] = True
        self.save()

    # ------------------------------------------------------------- routers

    def start_routers(self) -> None:
        for node in self.topo.routers():
            if node.is_frr:
                self._start_frr(node)
            elif node.bird_conf is not None:
                self._start_bird(node)

    def _start_frr(self, node: topo_mod.Node) -> None:
        t = self.topo
        ps = frr_pathspace(t, node.name)
        rundir = FRR_RUN / ps
        ndir = t.node_dir(node.name)
        daemons = enabled_frr_daemons(node.frr_daemons)
        pending = [d for d in daemons if not self.procs.get(f"{node.name}/{d}", ProcRecord()).alive]
        if not pending:
            return
        rundir.mkdir(parents=True, exist_ok=True)
        shutil.chown(rundir, "frr", "frr")  # the daemons drop to the frr user
        self.state.setdefault("frr_rundirs", [])
        if str(rundir) not in self.state["frr_rundirs"]:
            self.state["frr_rundirs"].append(str(rundir))
        for daemon in pending:
            # A killed daemon leaves its sockets behind: waiting for them below must wait
            # for the new daemon, not find the old files at once.
            stale = [f"{daemon}.vty"] + (["zserv.api"] if daemon == "zebra" else [])
            for name in stale:
                (rundir / name).unlink(missing_ok=True)
            stub = ndir / f"{daemon}.conf"
            stub.write_text(f"hostname {node.name}\n")
            argv = [str(FRR_DIR / daemon), "-N", ps, "-f", str(stub),
                    "-i", str(rundir / f"{daemon}.pid"), "-z", str(rundir / "zserv.api"),
                    "-u", "frr", "-g", "frr", "-P", "0"]
            if daemon == "zebra":
                # A restarted zebra keeps the FIB its predecessor left (graceful restart at
                # the kernel level) instead of flushing it: a control-plane restart of the
                # router does not stop forwarding while BGP re-converges.
                argv += ["-K", str(ZEBRA_GR_SECONDS)]
            rec = spawn(f"{node.name}/{daemon}", argv, ndir / f"{daemon}.log", t.netns(node.name))
            self.record(rec)
            if daemon == "zebra":
                wait_for(lambda: (rundir / "zserv.api").exists(), 20, f"{node.name} zebra")
        for daemon in daemons:
            wait_for(lambda d=daemon: (rundir / f"{d}.vty").exists(), 20,
                     f"{node.name} {daemon} vty")
        # vtysh dispatches each line of the integrated config to the daemon that owns it
        # (what containerlab's FRR image does at boot with /etc/frr/frr.conf).
        conf = t.expand(node.frr_conf.read_text(), node.name)
        applied = ndir / "frr.conf"
        applied.write_text(conf)
        done = run("vtysh", "-N", ps, "-f", str(applied), check=False)
        if done.returncode != 0:
            raise LabError(f"{node.name}: vtysh -f {applied} failed: "
                           f"{(done.stderr or done.stdout).strip()[-800:]}")

    def _start_bird(self, node: topo_mod.Node) -> None:
        key = f"{node.name}/bird"
        if self.procs.get(key, ProcRecord()).alive:
            return
        ndir = self.topo.node_dir(node.name)
        conf = ndir / "bird.conf"
        conf.write_text(self.topo.expand(node.bird_conf.read_text(), node.name))
        argv = ["bird", "-f", "-c", str(conf), "-s", str(ndir / "bird.ctl")]
        self.record(spawn(key, argv, ndir / "bird.log", self.topo.netns(node.name)))

    # ------------------------------------------------------------- kubernetes

    @property
    def cp_dir(self) -> Path:
        return self.dir / "controlplane"

    @property
    def kubeconfig(self) -> Path:
        return self.dir / "kubeconfig"

    @property
    def audit_log(self) -> Path:
        return self.dir / AUDIT_LOG

    def start_controlplane(self) -> None:
        if self.state.get("controlplane_done"):
            return
        cpm = _controlplane_module()
        say("starting etcd, kube-apiserver, kube-controller-manager ...")
        for attempt in range(CP_START_ATTEMPTS):
            cp = cpm.ControlPlane(self.cp_dir, controllers=(
                *cpm.DEFAULT_CONTROLLERS, *LAB_CONTROLLERS), controller_manager_args=[
                f"--node-monitor-grace-period={NODE_MONITOR_GRACE}"], apiserver_args=[
                f"--audit-policy-file={AUDIT_POLICY}",
                f"--audit-log-path={self.audit_log}",
                "--audit-log-format=json",
                "--audit-log-mode=blocking",
            ])
            try:
                cp.start()
                break
            except cpm.ControlPlaneError as exc:
                # ControlPlane picks free ports before its components bind them; an
                # outgoing connection can take one meanwhile. Start again on new ports.
                if "address already in use" not in str(exc) or \
                        attempt + 1 == CP_START_ATTEMPTS:
                    raise
                say(f"control plane: a port was taken meanwhile, starting again ({exc!s:.80})")
                shutil.rmtree(self.cp_dir, ignore_errors=True)
                self.audit_log.unlink(missing_ok=True)
        for name, pid in cp.pids().items():
            self.record(adopt(f"cp/{name}", pid, self.cp_dir / f"{name}.log"))
        cp.write_kubeconfig(self.kubeconfig)
        self.state["apiserver_port"] = cp.port
        self.save()
        from bgpd.lab.kube import Kube

        kube = Kube.for_lab(self.dir)
        kube.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                           "metadata": {"name": "bgpd-system"}})
        for manifest in (rbac_manifest(), network_unavailable_rbac()):
            run(str(cp.bin / "kubectl"), "--kubeconfig", str(self.kubeconfig), "apply",
                "-f", str(manifest), timeout=60)
        # The agents' BGPNodeStatus objects: served before any agent starts writing.
        run(str(cp.bin / "kubectl"), "--kubeconfig", str(self.kubeconfig), "apply",
            "-f", str(crd_manifest()), timeout=60)
        run(str(cp.bin / "kubectl"), "--kubeconfig", str(self.kubeconfig), "wait",
            "--for=condition=Established", "--timeout=60s",
            "customresourcedefinition/bgpnodestatuses.bgpd.dev", timeout=90)
        for node in self.topo.k8s_nodes():
            obj, status = node_object(node)
            kube.create("/api/v1/nodes", obj)
            kube.patch(f"/api/v1/nodes/{node.name}/status", {"status": status}, "strategic")
        wait_for(lambda: kube.get("/api/v1/namespaces/default/serviceaccounts/default",
                                  ok_missing=True), 60, "the default ServiceAccount")
        for node in self.topo.k8s_nodes():
            token = cp.mint_token("bgpd-system", "bgpd", expiration_s=30 * 86400)
            cp.write_kubeconfig(self.topo.node_dir(node.name) / "kubeconfig", token=token,
                                server=f"https://{APISERVER_IN_NODE}")
        self.state["controlplane_done"] = True
        self.save()

    def kubectl_path(self) -> str:
        return str(_controlplane_module().bin_dir() / "kubectl")

    def start_relay(self) -> None:
        if self.procs.get("relay", ProcRecord()).alive or not self.topo.k8s_nodes():
            return
        argv = [sys.executable, "-m", "bgpd.lab.relay",
                "--target", f"127.0.0.1:{self.state['apiserver_port']}",
                "--listen", APISERVER_IN_NODE,
                *[self.topo.netns(n.name) for n in self.topo.k8s_nodes()]]
        self.record(spawn("relay", argv, self.dir / "relay.log", cwd=str(REPO)))

    def start_kubelet(self) -> None:
        if self.procs.get("kubelet", ProcRecord()).alive or not self.topo.k8s_nodes():
            return
        conf = {
            "lab": self.topo.name, "lab_dir": str(self.dir),
            "nodes": {n.name: {"netns": self.topo.netns(n.name),
                               "pod_cidr": n.labels[topo_mod.LABEL_POD_CIDR],
                               "node_ip": n.labels[topo_mod.LABEL_NODE_IP]}
                      for n in self.topo.k8s_nodes()},
            "pod_routes": list(POD_ROUTES),
        }
        path = self.dir / "kubelet" / "config.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(conf, indent=1))
        argv = [sys.executable, "-m", "bgpd.lab.kubelet", "--config", str(path)]
        self.record(spawn("kubelet", argv, self.dir / "kubelet" / "kubelet.log",
                          cwd=str(REPO)))

    def write_agent_configs(self) -> None:
        """Each node's bgpd.yaml, rewritten only when it changes (an agent reloads on every
        change). With container agents the file lives in the ConfigMap volume's folder
        (mounted whole, so an edit reaches the agent as a ConfigMap update does) and
        ``<node>/bgpd.yaml`` links to it."""
        for node in self.topo.k8s_nodes():
            text = "# rendered by `bgpd lab up`\n" + yaml.safe_dump(
                render_agent_config(self.topo, node), sort_keys=False)
            path = self.topo.node_dir(node.name) / "bgpd.yaml"
            if self.agents_mode == "container":
                target = self.containers.config_file(node.name)
                target.parent.mkdir(parents=True, exist_ok=True)
                if not path.is_symlink():
                    path.unlink(missing_ok=True)
                    path.symlink_to(os.path.relpath(target, path.parent))
                path = target
            with contextlib.suppress(OSError):
                if path.read_text() == text:
                    continue
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text(text)
            tmp.chmod(0o644)
            tmp.replace(path)  # atomic: the agent never reads half a file

    def agent_argv(self, node: str) -> list[str]:
        ndir = self.topo.node_dir(node)
        return [sys.executable, "-m", "bgpd", "run", "--config", str(ndir / "bgpd.yaml"),
                "--node", node, "--kubeconfig", str(ndir / "kubeconfig"),
                "--state-dir", str(ndir / "state")]

    def start_agents(self) -> None:
        ok, why = agent_available()
        self.state["agents"] = ok
        self.save()
        if not ok:
            say(f"not starting agents: {why}")
            return
        for node in self.topo.k8s_nodes():
            key = f"{node.name}/agent"
            if self.procs.get(key, ProcRecord()).alive:
                continue
            if self.agents_mode == "container":
                self.record(self.start_agent_container(node.name))
                continue
            env = dict(os.environ, NODE_NAME=node.name, PYTHONUNBUFFERED="1")
            env = {k: v for k, v in env.items() if k in (
                "PATH", "NODE_NAME", "PYTHONUNBUFFERED", "LANG", "LC_ALL", "HOME",
                "BGPD_CACHE")}
            self.record(spawn(key, self.agent_argv(node.name),
                              self.topo.node_dir(node.name) / "bgpd.log",
                              self.topo.netns(node.name), env=env, cwd=str(REPO)))

    def start_agent_container(self, node: str) -> ProcRecord:
        ndir = self.topo.node_dir(node)
        return self.containers.start(f"{node}/agent", node, self.topo.netns(node),
                                     ndir / "bgpd.log", ndir / "kubeconfig",
                                     self.cp_dir / "pki" / "ca.crt")

    # ------------------------------------------------------------- health

    def dead_procs(self) -> list[str]:
        return [k for k, r in self.procs.items() if not r.alive]

    def revive(self) -> list[str]:
        """Restart recorded processes that died, in their recorded order. Routers are left
        to start_routers: a router comes back whole, its daemons and its configuration
        (a bare FRR daemon restarted alone would come back with no BGP instance)."""
        revived = []
        routers = {r.name for r in self.topo.routers()}
        for key, rec in self.procs.items():
            if rec.alive:
                continue
            if key.split("/")[0] in routers:
                revived.append(key)
                continue
            if key.endswith("/agent") and rec.get("container"):
                self.record(self.start_agent_container(key.split("/")[0]))
                revived.append(key)
                continue
            if key.endswith("/agent") and not agent_available()[0]:
                continue
            spawned = time.time()
            self.record(respawn(rec))
            revived.append(key)
            if key == "cp/etcd":
                time.sleep(1)
            if key == "cp/kube-apiserver":
                self.wait_apiserver()
                # Until /readyz a starting API server answers some requests before its
                # authorizer has synced (403 to a granted request): the RBAC test needs
                # to tell those apart from a missing grant.
                self.state.setdefault("apiserver_restarts", []).append(
                    [round(spawned, 3), round(time.time(), 3)])
                self.save()
        return revived

    def wait_apiserver(self, timeout: float = 90) -> None:
        from bgpd.lab.kube import Kube, KubeError

        def ready():
            try:
                Kube.for_lab(self.dir).get("/readyz", timeout=3)
                return True
            except (OSError, KubeError, ValueError):
                return False

        wait_for(ready, timeout, "kube-apiserver /readyz", 0.2)

    # ------------------------------------------------------------- up / down

    def up(self, with_examples: bool = False, agents: str | None = None) -> None:
        """``agents``: process or container (default $BGPD_LAB_AGENTS, else process); fixed
        when the lab is made: a running lab asked for the other mode is an error."""
        t0 = time.monotonic()
        mode = requested_agents_mode(agents)
        if self.state and not self._network_ok():
            say(f"lab {self.topo.name}: found a half-built lab, tearing it down first")
            self.down(quiet=True)
        if self.state and agents is not None and agents != self.agents_mode:
            raise LabError(f"lab {self.topo.name} is up with --agents {self.agents_mode}: "
                           f"`bgpd lab down` it first to use --agents {agents}")
        if not self.state:
            mode = mode or "process"
            if mode == "container" and self.topo.k8s_nodes():
                from bgpd.lab.containers import inspect_image

                # Before anything is built: a missing image fails fast.
                self.state["agents_image"] = inspect_image(self.containers.image).name
            if self.dir.exists():
                shutil.rmtree(self.dir)
            self.dir.mkdir(parents=True)
            self.state = {"lab": self.topo.name, "topology": str(self.topo.path),
                          "created": time.time(), "agents_mode": mode,
                          "agents_image": self.state.get("agents_image")}
            self.save()
            REGISTRY.mkdir(parents=True, exist_ok=True)
            write_json(REGISTRY / f"{self.topo.name}.json",
                       {"lab": self.topo.name, "dir": str(self.dir),
                        "topology": str(self.topo.path)})
            say(f"lab {self.topo.name}: creating namespaces and links")
            self.build_network()
        revived = self.revive()
        if revived:
            say(f"lab {self.topo.name}: restarted {', '.join(revived)}")
        self.start_routers()
        if self.topo.k8s_nodes():
            self.start_controlplane()
            self.start_relay()
            self.write_agent_configs()
            self.start_kubelet()
            self.start_agents()
        if with_examples:
            self.apply_examples()
        self.state["up_seconds"] = round(time.monotonic() - t0, 1)
        self.save()
        self.print_summary(with_examples)

    def apply_examples(self) -> None:
        run(self.kubectl_path(), "--kubeconfig", str(self.kubeconfig), "apply", "-f",
            str(EXAMPLES), timeout=60)

    def print_summary(self, with_examples: bool) -> None:
        t = self.topo
        lines = [f"lab {t.name} is up ({len(t.nodes)} nodes) in {self.dir}"]
        for r in t.routers():
            if r.is_frr:
                lines.append(f"  routes at {r.name}: " + vtysh_command(t, r.name, "show ip bgp"))
        for n in t.k8s_nodes():
            lines.append(f"  agent on {n.name}:  ip netns exec {t.netns(n.name)} "
                         f"{sys.executable} -m bgpd status")
            break
        if "client" in t.nodes:
            lines.append(
                f"  echo from client:  ip netns exec {t.netns('client')} python3 -c "
                "'import socket,sys; s=socket.create_connection((sys.argv[1],8080),3); "
                "print(s.recv(100).decode().strip(), \"via\", s.getpeername()[0])' "
                + ("198.51.100.20" if with_examples else "<pod-ip>"))
        lines.append(f"  kubectl:  {self.kubectl_path()} --kubeconfig {self.kubeconfig} "
                     "get pods -o wide")
        first_tor = next((r.name for r in t.routers() if r.is_frr), None)
        if with_examples and first_tor and "node2" in t.nodes:
            # The examples' eTP=Local Service has 1 pod on node1 and 2 on node2: weighted
            # ECMP shows as kernel next-hop weights 1:2; cordoning node2 makes it prepend.
            lines.append(f"  weighted ECMP:  ip netns exec {t.netns(first_tor)} ip route show "
                         "198.51.100.10   (next-hop weights 1:2, as the echo pods per node)")
            lines.append(f"  drain:  {self.kubectl_path()} --kubeconfig {self.kubeconfig} "
                         "cordon node2   (node2's paths get AS path 64512 x4 at "
                         f"{first_tor}; uncordon to undo)")
        if "node2" in t.nodes and t.nodes["node2"].labels.get(topo_mod.LABEL_PEER_ASN):
            # Its ToR shuts node2's session: the agent's NetworkUnavailable and the node
            # lifecycle controller's taint follow after the gate's debounce.
            n2 = t.nodes["node2"]
            tor = next((far for _, far, _ in t.neighbours("node2") if t.nodes[far].is_frr),
                       None)
            if tor:
                lines.append(
                    f"  scheduling gate:  ip netns exec {t.netns(tor)} vtysh -N "
                    f"{frr_pathspace(t, tor)} -c 'conf t' -c 'router bgp "
                    f"{n2.labels[topo_mod.LABEL_PEER_ASN]}' -c 'neighbor "
                    f"{n2.labels[topo_mod.LABEL_NODE_IP]} shutdown'   (10 s later node2 is "
                    "NetworkUnavailable and tainted node.kubernetes.io/network-unavailable: "
                    "kubectl describe node node2; `no neighbor ...` to undo)")
        if self.agents_mode == "container":
            lines.append(f"  agents: containers of {self.containers.image} under runc "
                         f"(runc --root {self.containers.root} list)")
        if self.state.get("agents") is False:
            lines.append("  (agents not started: `bgpd run` is not built yet)")
        say("\n".join(lines))
        print(self.kubeconfig if t.k8s_nodes() else self.dir, flush=True)

    def down(self, quiet: bool = False) -> None:
        t = self.topo
        # Agents first (their ExaBGP children live in the node namespaces and go with them),
        # then the kubelet and the relay, routers, and the control plane last.
        procs = self.procs
        order = ([k for k in procs if k.endswith("/agent")] + ["kubelet", "relay"]
                 + [k for k in procs if "/" in k and not k.startswith("cp/")
                    and not k.endswith("/agent")]
                 + ["cp/kube-controller-manager", "cp/kube-apiserver", "cp/etcd"])
        seen = set()
        failed = []
        for key in order + list(procs):
            if key in seen or key not in procs:
                continue
            seen.add(key)
            try:
                if procs[key].get("container"):
                    self.containers.stop(procs[key])
                else:
                    stop(procs[key])
            except Exception as exc:  # one stubborn process must not keep the namespaces
                failed.append(f"{key}: {exc}")
        if self.agents_mode == "container" or (RUNC_ROOTS / f"{t.name}.runc").exists():
            # Also containers no record knows (an `up` interrupted while starting them).
            try:
                failed += self.containers.teardown()
            except Exception as exc:  # noqa: BLE001 - the namespaces must still go
                failed.append(f"containers: {exc}")
        if self.cp_dir.exists():
            with contextlib.suppress(Exception):
                _controlplane_module().stop_recorded(self.cp_dir)
        names = set(self.state.get("netns", [])) | {t.netns(n) for n in t.nodes}
        pod_prefixes = tuple(f"{t.netns(n.name)}-pod-" for n in t.k8s_nodes())
        names |= {ns for ns in netns_list() if pod_prefixes and ns.startswith(pod_prefixes)}
        for ns in sorted(names, key=lambda n: ("-pod-" not in n, n)):
            netns_delete(ns)
        prefix = self._tmp_prefix()
        for line in run("ip", "-o", "link", "show", check=False).stdout.splitlines():
            name = line.split(":")[1].strip().split("@")[0] if ":" in line else ""
            if name.startswith(prefix):
                run("ip", "link", "del", name, check=False)
        for rundir in self.state.get("frr_rundirs", []) + [
                str(FRR_RUN / frr_pathspace(t, r.name)) for r in t.routers() if r.is_frr]:
            shutil.rmtree(rundir, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            (REGISTRY / f"{t.name}.json").unlink()
        self.state_path.unlink(missing_ok=True)
        self.state = {}
        for line in failed:
            say(f"could not stop {line}")
        if not quiet:
            say(f"lab {t.name} is down (logs kept in {self.dir})")


# ------------------------------------------------------------------ status / exec

def status_lines() -> list[str]:
    out = []
    entries = sorted(REGISTRY.glob("*.json")) if REGISTRY.exists() else []
    for entry in entries:
        try:
            info = json.loads(entry.read_text())
            state = json.loads((Path(info["dir"]) / STATE).read_text())
        except (OSError, ValueError, KeyError):
            continue
        out.append(f"lab {info['lab']}  ({info['topology']}, agents: "
                   f"{state.get('agents_mode', 'process')})")
        for ns in state.get("netns", []):
            out.append(f"  netns {ns:<32} {'up' if netns_exists(ns) else 'MISSING'}")
        pods = [ns for ns in netns_list() if ns.startswith(f"clab-{info['lab']}-")
                and "-pod-" in ns]
        for ns in pods:
            out.append(f"  pod   {ns}")
        for key, rec in state.get("procs", {}).items():
            r = ProcRecord(rec)
            where = f" in {r['netns']}" if r.get("netns") else ""
            out.append(f"  proc  {key:<28} pid {r['pid']:<8} "
                       f"{'running' if r.alive else 'DEAD'}{where}")
            if r.get("container"):
                c = r["container"]
                out.append(f"        container {c['id']} ({c['runtime']} --root {c['root']}, "
                           f"image {c['image']})")
        out.append(f"  kubeconfig {Path(info['dir']) / 'kubeconfig'}")
    return out


def exec_in(topo: Topology, node: str, cmd: list[str]) -> int:
    if node not in topo.nodes:
        raise LabError(f"no node {node!r} in lab {topo.name}")
    ns = topo.netns(node)
    if not netns_exists(ns):
        raise LabError(f"lab {topo.name} is not up ({ns} does not exist)")
    return subprocess.call(["ip", "netns", "exec", ns, *cmd])


def load(path: str) -> Lab:
    return Lab(parse_topology(path))
