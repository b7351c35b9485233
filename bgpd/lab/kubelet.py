"""The lab's fake kubelet: realises Pods bound to lab nodes as network namespaces.

For each Pod whose ``spec.nodeName`` is a lab node:

- a namespace ``clab-<lab>-<node>-pod-<namespace>-<name>`` (hashed when too long), wired
  to the node namespace by a veth (node side ``bp<hash>`` holding 169.254.1.1/32, pod side
  ``eth0``, Calico style), an address from the node's pod CIDR on ``eth0``, and routes for the
  lab's prefixes via 169.254.1.1 (no default route: traffic stays in the lab);
- on the node, a /32 route to the pod (``proto static``: never the agent's protocol), and one
  per pod-owned external IP (annotation ``bgpd.dev/external-ips``), which also go on the
  pod's loopback;
- the echo service on TCP 8080 inside the pod namespace: every connection gets one line,
  the source address the pod saw, then close (a listening socket made in the pod's namespace
  by this process; no extra process per pod);
- Pod status: phase Running, podIP(s), hostIP, conditions Ready / ContainersReady True,
  unless the Pod carries ``lab.bgpd.dev/ready: "false"`` (readiness toggle for tests);
- on deletion (deletionTimestamp) the namespace goes and the Pod is deleted for good
  (grace period 0), as a kubelet confirms termination;
- heartbeats, as a kubelet's: each node's Lease in ``kube-node-lease`` renewed every
  ``HEARTBEAT_S``, and its Ready condition set True again whenever someone else (the node
  lifecycle controller, after an API outage) changed it, or once a ``NODE_STATUS_S``. The
  lab runs the node lifecycle controller, which turns the agents' NetworkUnavailable
  condition into the ``node.kubernetes.io/network-unavailable`` taint.

State (one JSON file per realised pod) lives in ``clab-<lab>/kubelet/pods/`` so a restarted
kubelet adopts what exists.

    python -m bgpd.lab.kubelet --config clab-<lab>/kubelet/config.json
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import ipaddress
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from bgpd.lab.kube import Kube, KubeError
from bgpd.lab.system import LabError, in_netns, netns_delete, netns_exists, run

log = logging.getLogger("bgpd.lab.kubelet")

ECHO_PORT = 8080
GATEWAY = "169.254.1.1"
READY_ANNOTATION = "lab.bgpd.dev/ready"
EXTERNAL_IPS_ANNOTATION = "bgpd.dev/external-ips"
FIRST_HOST = 10  # pods get .10 upwards of the node's /24
WATCH_TIMEOUT_S = 30
RETRY_S = 1.0
HEARTBEAT_S = 10.0  # a kubelet's lease renew interval and nodeStatusUpdateFrequency
LEASE_DURATION_S = 40  # a kubelet's default nodeLeaseDurationSeconds
NODE_STATUS_S = 60.0  # Ready's lastHeartbeatTime refreshed at least this often
LEASES = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases"


def ready_condition(heartbeat: str | None = None) -> dict:
    """The Ready condition this kubelet keeps on its Nodes (the runner writes the first)."""
    cond = {"type": "Ready", "status": "True", "reason": "LabKubelet",
            "message": "bgpd lab fake kubelet"}
    if heartbeat:
        cond["lastHeartbeatTime"] = heartbeat
    return cond


def pod_netns(lab: str, node: str, namespace: str, name: str, uid: str) -> str:
    full = f"clab-{lab}-{node}-pod-{namespace}-{name}"
    if len(full) <= 120:
        return full
    return f"clab-{lab}-{node}-pod-{hashlib.sha1(uid.encode()).hexdigest()[:16]}"


def host_ifname(uid: str) -> str:
    """Node-side veth name: 13 characters, unique per pod uid (IFNAMSIZ is 16 with NUL)."""
    return "bp" + hashlib.sha1(uid.encode()).hexdigest()[:11]


@dataclass
class PodState:
    uid: str
    namespace: str
    name: str
    node: str
    netns: str
    ifname: str
    ip: str
    external_ips: list[str] = field(default_factory=list)
    started: str = ""


def _parse_ips(raw: str | None) -> list[str]:
    out = []
    for item in (raw or "").split(","):
        item = item.strip()
        if not item:
            continue
        with contextlib.suppress(ValueError):
            addr = ipaddress.ip_address(item)
            if addr.version == 4:
                out.append(str(addr))
    return sorted(set(out))


class Echo:
    """The pod's TCP echo service: a listening socket in the pod namespace, one thread."""

    def __init__(self, netns: str):
        with in_netns(netns):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("0.0.0.0", ECHO_PORT))
            sock.listen(64)
        self.sock = sock
        self.thread = threading.Thread(target=self._serve, daemon=True, name=f"echo-{netns}")
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, peer = self.sock.accept()
            except OSError:
                return
            try:
                conn.settimeout(2)
                conn.sendall(f"{peer[0]}\n".encode())
            except OSError:
                pass
            finally:
                conn.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


class Kubelet:
    def __init__(self, config: dict):
        self.lab = config["lab"]
        self.lab_dir = Path(config["lab_dir"])
        self.nodes: dict[str, dict] = config["nodes"]  # name -> {netns, pod_cidr, node_ip}
        self.pod_routes: list[str] = config["pod_routes"]
        self.state_dir = self.lab_dir / "kubelet" / "pods"
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.kube = Kube.for_lab(self.lab_dir)
        self.pods: dict[str, PodState] = {}
        self.echo: dict[str, Echo] = {}
        self.status_sent: dict[str, str] = {}
        self.status_beat: dict[str, float] = {}  # node -> monotonic time of the last post
        self._load()

    # ------------------------------------------------------------- state

    def _load(self) -> None:
        for path in sorted(self.state_dir.glob("*.json")):
            try:
                st = PodState(**json.loads(path.read_text()))
            except (OSError, ValueError, TypeError):
                path.unlink(missing_ok=True)
                continue
            if not netns_exists(st.netns):
                path.unlink(missing_ok=True)
                continue
            self.pods[st.uid] = st
            try:
                self.echo[st.uid] = Echo(st.netns)
            except OSError as exc:
                log.warning("echo for %s/%s: %s", st.namespace, st.name, exc)

    def _save(self, st: PodState) -> None:
        (self.state_dir / f"{st.uid}.json").write_text(json.dumps(asdict(st)))

    # ------------------------------------------------------------- realise

    def _allocate(self, node: str) -> str:
        net = ipaddress.ip_network(self.nodes[node]["pod_cidr"])
        used = {p.ip for p in self.pods.values() if p.node == node}
        for i, host in enumerate(net.hosts(), start=1):
            if i >= FIRST_HOST and str(host) not in used:
                return str(host)
        raise LabError(f"pod CIDR {net} of {node} is full")

    def realise(self, pod: dict) -> PodState:
        meta, spec = pod["metadata"], pod["spec"]
        uid, node = meta["uid"], spec["nodeName"]
        node_ns = self.nodes[node]["netns"]
        st = PodState(uid=uid, namespace=meta["namespace"], name=meta["name"], node=node,
                      netns=pod_netns(self.lab, node, meta["namespace"], meta["name"], uid),
                      ifname=host_ifname(uid), ip=self._allocate(node),
                      started=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
        netns_delete(st.netns)  # leftovers of an earlier pod of the same name
        run("ip", "-n", node_ns, "link", "del", st.ifname, check=False)
        self.pods[uid] = st
        self._save(st)  # recorded first, so a crash mid-build still leaves it to tear down
        try:
            self._build(st, node_ns)
        except Exception:
            self.teardown(uid)  # forgotten, so the next sync builds it again
            raise
        log.info("pod %s/%s on %s: %s in %s", st.namespace, st.name, node, st.ip, st.netns)
        return st

    def _build(self, st: PodState, node_ns: str) -> None:
        uid = st.uid
        run("ip", "netns", "add", st.netns)
        run("ip", "-n", st.netns, "link", "set", "lo", "up")
        run("ip", "-n", node_ns, "link", "add", st.ifname, "type", "veth",
            "peer", "name", "eth0", "netns", st.netns)
        batch_node = [f"link set {st.ifname} up",
                      f"addr add {GATEWAY}/32 dev {st.ifname}",
                      f"route replace {st.ip}/32 dev {st.ifname} proto static"]
        batch_pod = [f"addr add {st.ip}/32 dev eth0", "link set eth0 up",
                     f"route add {GATEWAY} dev eth0 scope link"]
        batch_pod += [f"route add {p} via {GATEWAY} dev eth0 src {st.ip}"
                      for p in self.pod_routes]
        run("ip", "-n", node_ns, "-batch", "-", input="\n".join(batch_node) + "\n")
        run("ip", "-n", st.netns, "-batch", "-", input="\n".join(batch_pod) + "\n")
        self.echo[uid] = Echo(st.netns)

    def sync_external_ips(self, st: PodState, wanted: list[str]) -> None:
        if wanted == st.external_ips:
            return
        node_ns = self.nodes[st.node]["netns"]
        for ip in sorted(set(st.external_ips) - set(wanted)):
            run("ip", "-n", st.netns, "addr", "del", f"{ip}/32", "dev", "lo", check=False)
            run("ip", "-n", node_ns, "route", "del", f"{ip}/32", "dev", st.ifname, check=False)
        for ip in sorted(set(wanted) - set(st.external_ips)):
            run("ip", "-n", st.netns, "addr", "replace", f"{ip}/32", "dev", "lo")
            run("ip", "-n", node_ns, "route", "replace", f"{ip}/32", "dev", st.ifname,
                "proto", "static")
        st.external_ips = list(wanted)
        self._save(st)
        log.info("pod %s/%s external IPs: %s", st.namespace, st.name, wanted or "none")

    def teardown(self, uid: str) -> None:
        st = self.pods.pop(uid, None)
        echo = self.echo.pop(uid, None)
        self.status_sent.pop(uid, None)
        if echo is not None:
            echo.close()
        if st is None:
            return
        node_ns = self.nodes.get(st.node, {}).get("netns")
        if node_ns:
            for ip in st.external_ips:
                run("ip", "-n", node_ns, "route", "del", f"{ip}/32", "dev", st.ifname,
                    check=False)
            run("ip", "-n", node_ns, "route", "del", f"{st.ip}/32", "dev", st.ifname,
                check=False)
        netns_delete(st.netns)
        if node_ns:
            run("ip", "-n", node_ns, "link", "del", st.ifname, check=False)
        (self.state_dir / f"{uid}.json").unlink(missing_ok=True)
        log.info("pod %s/%s removed", st.namespace, st.name)

    # ------------------------------------------------------------- API side

    def _status(self, pod: dict, st: PodState) -> dict:
        ready = str(pod["metadata"].get("annotations", {}).get(READY_ANNOTATION, "true")
                    ).strip().lower() != "false"
        flag = "True" if ready else "False"
        node_ip = self.nodes[st.node]["node_ip"]
        return {
            "phase": "Running",
            "hostIP": node_ip,
            "hostIPs": [{"ip": node_ip}],
            "podIP": st.ip,
            "podIPs": [{"ip": st.ip}],
            "startTime": st.started,
            "conditions": [
                {"type": "PodScheduled", "status": "True"},
                {"type": "Initialized", "status": "True"},
                {"type": "ContainersReady", "status": flag},
                {"type": "Ready", "status": flag},
            ],
            "containerStatuses": [
                {"name": c["name"], "image": c.get("image", ""), "imageID": "",
                 "ready": ready, "started": True, "restartCount": 0,
                 "state": {"running": {"startedAt": st.started}}}
                for c in pod["spec"].get("containers", [])
            ],
        }

    @staticmethod
    def _status_matches(pod: dict, want: dict) -> bool:
        have = pod.get("status") or {}
        if have.get("phase") != want["phase"] or have.get("podIP") != want["podIP"]:
            return False
        conds = {c.get("type"): c.get("status") for c in have.get("conditions") or []}
        return all(conds.get(c["type"]) == c["status"] for c in want["conditions"])

    def sync_pod(self, pod: dict) -> None:
        meta = pod["metadata"]
        uid = meta["uid"]
        if pod["spec"].get("nodeName") not in self.nodes:
            return
        if meta.get("deletionTimestamp"):
            self.teardown(uid)
            with contextlib.suppress(KubeError):
                self.kube.delete(
                    f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}",
                    {"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0,
                     "preconditions": {"uid": uid}})
            return
        st = self.pods.get(uid)
        if st is None:
            st = self.realise(pod)
        annotations = meta.get("annotations") or {}
        self.sync_external_ips(st, _parse_ips(annotations.get(EXTERNAL_IPS_ANNOTATION)))
        want = self._status(pod, st)
        if not self._status_matches(pod, want):
            self.kube.patch(
                f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/status",
                {"status": want})

    def sync_all(self, pods: list[dict]) -> None:
        live = set()
        for pod in pods:
            if pod["spec"].get("nodeName") in self.nodes:
                live.add(pod["metadata"]["uid"])
                self._safe_sync(pod)
        for uid in list(self.pods):
            if uid not in live:
                self.teardown(uid)

    def _safe_sync(self, pod: dict) -> None:
        try:
            self.sync_pod(pod)
        except (LabError, KubeError, OSError) as exc:
            meta = pod["metadata"]
            log.error("pod %s/%s: %s", meta.get("namespace"), meta.get("name"), exc)

    # ------------------------------------------------------------- heartbeats

    def heartbeat(self, node: str) -> None:
        """Renew the node's Lease (created when missing) and keep its Ready condition True."""
        now = datetime.now(UTC)
        spec = {"holderIdentity": node, "leaseDurationSeconds": LEASE_DURATION_S,
                "renewTime": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")}
        try:
            self.kube.patch(f"{LEASES}/{node}", {"spec": spec})
        except KubeError as exc:
            if exc.status != 404:
                raise
            self.kube.create(LEASES, {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                                      "metadata": {"name": node}, "spec": spec})
        obj = self.kube.get(f"/api/v1/nodes/{node}")
        ready = next((c for c in (obj.get("status") or {}).get("conditions") or []
                      if c.get("type") == "Ready"), {})
        stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
        last = self.status_beat.get(node, 0.0)
        if ready.get("status") == "True" and time.monotonic() - last < NODE_STATUS_S:
            return
        cond = ready_condition(stamp)
        if ready.get("status") != "True":
            cond["lastTransitionTime"] = stamp
            log.info("node %s: Ready was %s (%s); setting True", node, ready.get("status"),
                     ready.get("reason"))
        # Strategic merge keys conditions by type: the agents' NetworkUnavailable stays.
        self.kube.patch(f"/api/v1/nodes/{node}/status", {"status": {"conditions": [cond]}},
                        "strategic")
        self.status_beat[node] = time.monotonic()

    def heartbeat_forever(self) -> None:
        while True:
            for node in self.nodes:
                try:
                    self.heartbeat(node)
                except (OSError, KubeError, ValueError) as exc:
                    log.warning("heartbeat of %s: %s", node, exc)
            time.sleep(HEARTBEAT_S)

    def run_forever(self) -> None:
        threading.Thread(target=self.heartbeat_forever, daemon=True, name="heartbeat").start()
        while True:
            try:
                listing = self.kube.get("/api/v1/pods")
                self.sync_all(listing.get("items", []))
                rv = listing["metadata"]["resourceVersion"]
                for event in self.kube.watch("/api/v1/pods", rv, WATCH_TIMEOUT_S):
                    kind, obj = event.get("type"), event.get("object", {})
                    if kind == "BOOKMARK":
                        continue
                    if kind == "ERROR":
                        break
                    if kind == "DELETED":
                        self.teardown(obj["metadata"]["uid"])
                    else:
                        self._safe_sync(obj)
            except (OSError, KubeError, ValueError, KeyError) as exc:
                log.warning("API: %s; retrying", exc)
                time.sleep(RETRY_S)
            except Exception:  # never die on one bad object: log and relist
                log.exception("unexpected error; relisting")
                time.sleep(RETRY_S)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bgpd.lab.kubelet")
    p.add_argument("--config", required=True)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    kubelet = Kubelet(json.loads(Path(args.config).read_text()))
    kubelet.run_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
