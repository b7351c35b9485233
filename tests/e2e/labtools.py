"""Helpers for the end-to-end tests: drive `bgpd lab`, ask the ToR, talk from the client."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from bgpd.lab.kube import Kube
from bgpd.lab.runner import frr_pathspace, load
from bgpd.lab.system import ProcRecord

REPO = Path(__file__).resolve().parents[2]
SINGLE_TOR = REPO / "lab" / "single-tor.clab.yml"
CLIENT_IP = "192.0.2.10"
BUILD_SCRIPT = REPO / "daemonset" / "image" / "build.sh"
IMAGE = "localhost/bgpd:dev"
BUILD_TIMEOUT_S = 1800  # a first build on a fresh machine: apt-get, mmdebstrap, PyPI
MODES_ENV = "BGPD_E2E_AGENTS"  # e.g. "container" or "process,container"
T = TypeVar("T")
_built: dict[str, float] = {}


def agent_modes(default: str) -> list[str]:
    """How a module's lab runs its agents: $BGPD_E2E_AGENTS (comma separated) or ``default``.
    Each mode is one lab for the whole module (pytest runs the module once per mode)."""
    modes = [m.strip() for m in os.environ.get(MODES_ENV, default).split(",") if m.strip()]
    wrong = [m for m in modes if m not in ("process", "container")]
    assert modes and not wrong, f"{MODES_ENV}: process and/or container, not {wrong}"
    return modes


def ensure_image() -> float:
    """Build localhost/bgpd:dev from the working tree with daemonset/image/build.sh, once per
    test session (cached by the script: seconds when nothing changed). Returns its time."""
    if IMAGE not in _built:
        start = time.monotonic()
        done = subprocess.run([str(BUILD_SCRIPT)], capture_output=True, text=True,
                              timeout=BUILD_TIMEOUT_S, env=dict(os.environ, BGPD_IMAGE=IMAGE))
        assert done.returncode == 0, f"build.sh failed:\n{done.stdout}\n{done.stderr[-6000:]}"
        _built[IMAGE] = time.monotonic() - start
        print(f"image {IMAGE} built (or up to date) in {_built[IMAGE]:.0f} s")
    return _built[IMAGE]


def lab_up(path: Path, mode: str) -> subprocess.CompletedProcess:
    """`bgpd lab up PATH --agents MODE` on a clean slate (leftovers of an interrupted run
    brought down first); a container lab needs the image, built first."""
    if mode == "container":
        ensure_image()
    lab_cli("down", str(path))
    return lab_cli("up", str(path), "--agents", mode)

# One TCP exchange with a pod's echo service, from inside the client namespace:
# prints {"line": what the pod saw as our address, "peer": the address we talked to}.
_ECHO = """
import json, socket, sys
s = socket.create_connection((sys.argv[1], 8080), timeout=3)
line = s.makefile().readline().strip()
print(json.dumps({"line": line, "peer": s.getpeername()[0], "local": s.getsockname()[0]}))
"""


def lab_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bgpd.lab.cli", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def wait_for(probe: Callable[[], T], timeout: float, what: str, interval: float = 0.2) -> T:
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = probe()
            if value:
                return value
            last = value
        except (OSError, ValueError, subprocess.SubprocessError, RuntimeError) as exc:
            last = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} "
                                 f"(last: {last!r})")
        time.sleep(interval)


class LabHandle:
    def __init__(self, path: Path = SINGLE_TOR):
        self.path = path
        self.lab = load(str(path))
        self.topo = self.lab.topo

    def refresh(self) -> None:
        self.lab = load(str(self.path))

    @property
    def mode(self) -> str:
        """process or container: how this lab runs its agents."""
        return self.lab.agents_mode

    @property
    def kube(self) -> Kube:
        return Kube.for_lab(self.lab.dir)

    def netns(self, node: str) -> str:
        return self.topo.netns(node)

    def ns_run(self, node: str, *argv: str, timeout: float = 30,
               check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run(["ip", "netns", "exec", self.netns(node), *argv],
                              capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise RuntimeError(f"{node}: {' '.join(argv)}: {done.stderr.strip()}")
        return done

    # ------------------------------------------------------------ routers

    def vtysh(self, router: str, command: str):
        done = self.ns_run(router, "vtysh", "-N", frr_pathspace(self.topo, router),
                           "-c", command)
        return json.loads(done.stdout) if done.stdout.strip() else {}

    def bgp_routes(self, router: str = "tor1") -> dict[str, list[dict]]:
        return self.vtysh(router, "show ip bgp json").get("routes", {})

    def next_hops(self, prefix: str, router: str = "tor1") -> set[str]:
        """Next hops of ``prefix`` installed in the router's kernel FIB (via zebra)."""
        data = self.vtysh(router, f"show ip route {prefix} json")
        hops = set()
        for route in data.get(prefix, []):
            if route.get("protocol") != "bgp" or not route.get("installed"):
                continue
            for nh in route.get("nexthops", []):
                if nh.get("active") and nh.get("ip"):
                    hops.add(nh["ip"])
        return hops

    def fib_snapshot(self, router: str = "tor1") -> dict[str, frozenset[str]]:
        data = self.vtysh(router, "show ip route bgp json")
        return {prefix: frozenset(nh.get("ip") for r in routes for nh in r.get("nexthops", [])
                                  if nh.get("active"))
                for prefix, routes in data.items()}

    def neighbor_state(self, address: str, router: str = "tor1") -> str:
        data = self.vtysh(router, f"show bgp neighbors {address} json")
        return data.get(address, {}).get("bgpState", "")

    # ------------------------------------------------------------ client

    def echo(self, address: str) -> dict:
        done = self.ns_run("client", sys.executable, "-c", _ECHO, address, timeout=10)
        return json.loads(done.stdout)

    # ------------------------------------------------------------ kubernetes

    def create_pod(self, name: str, node: str, labels: dict | None = None,
                   annotations: dict | None = None, namespace: str = "default") -> None:
        self.kube.create(f"/api/v1/namespaces/{namespace}/pods", {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": labels or {}, "annotations": annotations or {}},
            "spec": {"nodeName": node, "containers": [{"name": "echo", "image": "lab/echo"}]},
        }, exist_ok=False)

    def wait_pod_ip(self, name: str, namespace: str = "default", timeout: float = 30) -> str:
        def ready():
            pod = self.kube.get(f"/api/v1/namespaces/{namespace}/pods/{name}")
            st = pod.get("status", {})
            conds = {c["type"]: c["status"] for c in st.get("conditions", [])}
            return st.get("podIP") if conds.get("Ready") == "True" else None

        return wait_for(ready, timeout, f"pod {name} running and ready")

    def delete_pod(self, name: str, namespace: str = "default", wait: bool = True) -> None:
        self.kube.delete(f"/api/v1/namespaces/{namespace}/pods/{name}")
        if wait:
            wait_for(lambda: self.kube.get(f"/api/v1/namespaces/{namespace}/pods/{name}",
                                           ok_missing=True) is None, 30, f"pod {name} gone")

    def set_ready(self, name: str, ready: bool, namespace: str = "default") -> None:
        self.kube.patch(f"/api/v1/namespaces/{namespace}/pods/{name}",
                        {"metadata": {"annotations": {
                            "lab.bgpd.dev/ready": "true" if ready else "false"}}})

    def create_service(self, name: str, selector: dict, external_ips: list[str],
                       local: bool = True, namespace: str = "default") -> None:
        self.kube.create(f"/api/v1/namespaces/{namespace}/services", {
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name},
            "spec": {"selector": selector, "externalIPs": external_ips,
                     "externalTrafficPolicy": "Local" if local else "Cluster",
                     "ports": [{"port": 8080, "targetPort": 8080, "protocol": "TCP"}]},
        }, exist_ok=False)

    def events_for(self, kind: str, name: str, namespace: str = "default") -> list[dict]:
        items = self.kube.get(f"/api/v1/namespaces/{namespace}/events").get("items", [])
        return [e for e in items if e.get("involvedObject", {}).get("kind") == kind
                and e["involvedObject"].get("name") == name]

    # ------------------------------------------------------------ processes

    def proc(self, key: str) -> ProcRecord:
        self.refresh()
        return self.lab.procs[key]

    def kill(self, key: str, sig: int = signal.SIGKILL) -> None:
        """Signal a recorded process. A container agent's record holds the agent's own pid
        (its container's PID 1 as the host sees it): SIGKILL takes its whole PID namespace,
        ExaBGP included, as when a kubelet kills the container."""
        rec = self.proc(key)
        assert rec.alive, f"{key} is not running"
        os.kill(rec["pid"], sig)
        wait_for(lambda: not rec.alive, 15, f"{key} to exit")

    def stop(self, key: str) -> None:
        from bgpd.lab.system import stop

        rec = self.proc(key)
        assert rec.alive, f"{key} is not running"
        if rec.get("container"):
            self.lab.containers.stop(rec)
        else:
            stop(rec)

    def orphans(self, node: str) -> list[str]:
        """Processes in the node's namespace that no recorded lab process started."""
        self.refresh()
        recorded = {r["pid"] for r in self.lab.procs.values() if r.alive}
        out = []
        for pid in self.ns_run(node, "true", check=False) and subprocess.run(
                ["ip", "netns", "pids", self.netns(node)], capture_output=True,
                text=True).stdout.split():
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat[stat.rindex(")") + 2:].split()[1])
            if int(pid) not in recorded and ppid not in recorded:
                out.append(f"{pid} {' '.join(Path(f'/proc/{pid}/cmdline').read_text().split(chr(0)))[:120]}")
        return out

    @staticmethod
    def kill_pids(entries: list[str]) -> None:
        for entry in entries:
            try:
                os.kill(int(entry.split()[0]), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass

    def revive(self) -> None:
        """`bgpd lab up` again: restarts whatever recorded process died."""
        done = lab_cli("up", str(self.path))
        assert done.returncode == 0, done.stderr
