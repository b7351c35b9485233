"""Initial sync of the Kubernetes watchers at scale, against a real kube-apiserver.

Starts its own control plane (tests/controlplane, no controller-manager: the EndpointSlices
are written directly), loads 5,000 Nodes and 110 Pods on the measured node, then Services
(externalIPs from 198.51.100.0/24 and 203.0.113.0/24) with one EndpointSlice of 3
endpoints each, step by step up to each of ``--scales`` (default 0, 5,000, 10,000, 20,000
Services). At each scale it runs the watchers for that node ``--runs`` times (default 3),
each in a fresh child process (so the resident memory measured is the agent's, not the
loader's, and no run inherits another's heap).

``sync_s`` runs from starting the watchers to every kind listed; ``rss_mb`` is VmRSS after
sync, ``rss_decided_mb`` after the first policy decision that follows (what an agent holds
once it has decided: the cache frozen and one full decision, as the agent does),
``rss_before_mb`` the same process just before starting (Python + imports).
Prints a table, then one JSON line: the top-level ``sync_s`` / ``rss_mb`` are the medians
at the largest scale, ``spread`` their min / median / max, ``scales`` every scale's spreads
(for the memory-against-Services plot). Targets (issue 16): sync_s <= 15, rss_mb <= 60.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

NODES, SERVICES, PODS, ENDPOINTS_PER_SLICE = 5000, 20000, 110, 3
DECIDE_CONFIG = {  # the loaded addresses' pools, as an operator would configure them
    "bgp": {"asn": 64512},
    "cluster": {"pod_cidrs": ["10.244.0.0/16"], "service_cidrs": ["10.96.0.0/12"]},
    "pools": [{"name": "ext", "cidrs": ["198.51.100.0/24", "203.0.113.0/24"],
               "allow": ["external-ip", "load-balancer-ip"]}],
}
NAMESPACES = 20  # Services spread over this many namespaces, like a real cluster
NODE = "bench-node-0000"  # the measured node
LOAD_THREADS = 24
"""Concurrent POSTs while loading: enough to keep the API server's two cores busy."""
SYNC_TIMEOUT_S = 300.0
"""Give up waiting for the watchers' initial sync after this long."""
TARGET_SYNC_S, TARGET_RSS_MB = 15.0, 60.0
DEFAULT_SCALES = (0, 5_000, 10_000, 20_000)
QUICK_NODES, QUICK_SCALES = 500, (0, 1_000, 2_000)


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


# --------------------------------------------------------------------------- objects


def node(i: int) -> tuple[str, dict]:
    name = f"bench-node-{i:04d}"
    return "/api/v1/nodes", {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "topology.kubernetes.io/zone": f"zone-{i % 3}",
                "rack": f"rack-{i // 40}",
            },
            "annotations": {"node.alpha.kubernetes.io/ttl": "0"},
        },
        "spec": {
            "podCIDR": f"10.{64 + i // 256}.{i % 256}.0/24",
            "podCIDRs": [f"10.{64 + i // 256}.{i % 256}.0/24"],
        },
    }


def service(i: int) -> tuple[str, dict]:
    ns = f"bench-{i % NAMESPACES}"
    pool = "198.51.100" if i % 2 else "203.0.113"
    return f"/api/v1/namespaces/{ns}/services", {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": f"svc-{i}",
            "namespace": ns,
            "labels": {"app": f"app-{i}", "team": f"team-{i % 37}"},
            "annotations": {
                "bgpd.io/communities": "64512:100",
                "owner": f"team-{i % 37}@example.com",
            },
        },
        "spec": {
            "selector": {"app": f"app-{i}"},
            "externalIPs": [f"{pool}.{i % 254 + 1}"],
            "externalTrafficPolicy": "Local" if i % 3 == 0 else "Cluster",
            "ports": [{"name": "http", "port": 8080, "targetPort": 8080, "protocol": "TCP"}],
        },
    }


def endpoint_slice(i: int) -> tuple[str, dict]:
    ns = f"bench-{i % NAMESPACES}"
    endpoints = []
    for k in range(ENDPOINTS_PER_SLICE):
        n = (i * ENDPOINTS_PER_SLICE + k) % NODES
        endpoints.append(
            {
                "addresses": [f"10.{64 + n // 256}.{n % 256}.{(i % 250) + 2}"],
                "conditions": {"ready": True, "serving": True, "terminating": False},
                "nodeName": f"bench-node-{n:04d}",
                "targetRef": {"kind": "Pod", "namespace": ns, "name": f"app-{i}-{k}"},
            }
        )
    return f"/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices", {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"svc-{i}-abcde",
            "namespace": ns,
            "labels": {
                "kubernetes.io/service-name": f"svc-{i}",
                "endpointslice.kubernetes.io/managed-by": "bench.bgpd.io",
            },
        },
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    }


def pod(i: int) -> tuple[str, dict]:
    return "/api/v1/namespaces/bench-pods/pods", {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"pod-{i}", "namespace": "bench-pods", "labels": {"app": f"app-{i}"}},
        "spec": {
            "nodeName": NODE,
            "containers": [{"name": "c", "image": "example.invalid/echo:1"}],
        },
    }


# --------------------------------------------------------------------------- loading


def post_all(cp, requests: Iterator[tuple[str, dict]], threads: int = LOAD_THREADS) -> int:
    """POST every (path, body) with ``threads`` keep-alive connections; return the count."""
    work: queue.Queue = queue.Queue(maxsize=threads * 4)
    errors: list[str] = []
    done = [0]
    lock = threading.Lock()

    def worker() -> None:
        conn = http.client.HTTPSConnection(
            "127.0.0.1", cp.port, context=cp._ssl_context(), timeout=60
        )
        while (item := work.get()) is not None:
            path, body = item
            conn.request(
                "POST",
                path,
                body=json.dumps(body).encode(),
                headers={"Content-Type": "application/json", "Accept": "application/json"},
            )
            resp = conn.getresponse()
            answer = resp.read()
            with lock:
                if resp.status in (200, 201, 409):
                    done[0] += 1
                elif len(errors) < 5:
                    errors.append(f"{path}: {resp.status} {answer[:200]!r}")
        conn.close()

    pool = [threading.Thread(target=worker, daemon=True) for _ in range(threads)]
    for t in pool:
        t.start()
    for item in requests:
        work.put(item)
    for _ in pool:
        work.put(None)
    for t in pool:
        t.join()
    if errors:
        raise RuntimeError(f"loading failed: {errors}")
    return done[0]


def load_base(cp, nodes: int) -> None:
    """Namespaces, ``nodes`` Nodes and the measured node's Pods (Running, Ready)."""
    namespaces = [f"bench-{i}" for i in range(NAMESPACES)] + ["bench-pods"]
    post_all(cp, (("/api/v1/namespaces", {"metadata": {"name": ns}}) for ns in namespaces))
    # No controller-manager: create the ServiceAccount the admission plugin wants for Pods.
    post_all(
        cp, [("/api/v1/namespaces/bench-pods/serviceaccounts", {"metadata": {"name": "default"}})]
    )
    post_all(cp, (node(i) for i in range(nodes)))
    post_all(cp, (pod(i) for i in range(PODS)))
    for i in range(PODS):  # what a kubelet would write
        cp.api(
            "PATCH",
            f"/api/v1/namespaces/bench-pods/pods/pod-{i}/status",
            {
                "status": {
                    "phase": "Running",
                    "podIP": f"10.64.0.{i + 2}",
                    "podIPs": [{"ip": f"10.64.0.{i + 2}"}],
                    "conditions": [{"type": "Ready", "status": "True"}],
                }
            },
            content_type="application/merge-patch+json",
        )


def load_services(cp, first: int, last: int) -> None:
    """Services ``first`` .. ``last - 1`` and their EndpointSlices."""
    post_all(cp, (service(i) for i in range(first, last)))
    post_all(cp, (endpoint_slice(i) for i in range(first, last)))


# --------------------------------------------------------------------------- measuring


def measure(kubeconfig: str, node_name: str) -> dict:
    """In the child process: start the watchers, wait for sync, report time and memory."""
    import logging

    from bgpd.config import parse_config
    from bgpd.kube.cache import ClusterCache
    from bgpd.kube.client import KubeClient
    from bgpd.policy.decide import Decider
    from bgpd.runtime import freeze_after_sync, gc_paused, tune_gc

    logging.basicConfig(level=logging.WARNING)
    tune_gc()  # as the agent does at start
    client = KubeClient.from_kubeconfig(kubeconfig)
    cache = ClusterCache(client, node_name)
    before = rss_mb()
    start = time.monotonic()
    cache.start()
    if not cache.wait_synced(SYNC_TIMEOUT_S):
        raise SystemExit(f"not synced after {SYNC_TIMEOUT_S} s: {cache.stats()}")
    sync_s = time.monotonic() - start
    snap = cache.snapshot()
    synced_mb = rss_mb()
    # What the agent does next: freeze the synced cache, decide. The decision's claims,
    # announcements and tables are memory the agent holds too.
    freeze_after_sync()
    with gc_paused():
        decision = Decider().decide(snap, parse_config(DECIDE_CONFIG), node_name)
    result = {
        "sync_s": round(sync_s, 2),
        "rss_mb": round(synced_mb, 1),
        "rss_decided_mb": round(rss_mb(), 1),
        "announced": len(decision.announcements),
        "rss_before_mb": round(before, 1),
        "cached": cache.counts(),
        "snapshot_node": snap.node.name if snap.node else None,
    }
    cache.stop()
    return result


def measure_child(kubeconfig: Path) -> dict:
    child = subprocess.run(
        [sys.executable, __file__, "--measure", str(kubeconfig)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    if child.returncode != 0:
        raise SystemExit(f"measuring child failed:\n{child.stderr[-3000:]}")
    return json.loads(child.stdout.strip().splitlines()[-1])


def main() -> None:
    global NODES
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--measure", metavar="KUBECONFIG", help=argparse.SUPPRESS)  # child mode
    parser.add_argument("--scales", help="comma-separated Service counts (default "
                        + ",".join(map(str, DEFAULT_SCALES)) + ")")
    parser.add_argument("--nodes", type=int)
    parser.add_argument("--runs", type=int, default=3, help="fresh watcher processes per scale")
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run: {QUICK_NODES} Nodes, scales "
                        + ",".join(map(str, QUICK_SCALES)))
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, NODE)))
        return

    import benchlib

    from tests.controlplane.controlplane import ControlPlane

    NODES = args.nodes or (QUICK_NODES if args.quick else NODES)
    scales = sorted({int(x) for x in args.scales.split(",")} if args.scales
                    else set(QUICK_SCALES if args.quick else DEFAULT_SCALES))
    machine = benchlib.machine()
    per_scale = []
    with ControlPlane(controllers=None) as cp:
        start = time.monotonic()
        load_base(cp, NODES)
        loaded = 0
        load_s = time.monotonic() - start
        for scale in scales:
            start = time.monotonic()
            load_services(cp, loaded, scale)
            loaded = scale
            load_s += time.monotonic() - start
            runs = []
            for r in range(args.runs):
                runs.append(measure_child(cp.kubeconfig))
                benchlib.log(f"agent_scale {scale} Services, run {r + 1}/{args.runs}: "
                             f"sync {runs[-1]['sync_s']} s, rss {runs[-1]['rss_mb']} MB")
            per_scale.append({
                "services": scale,
                "sync_s": benchlib.spread([x["sync_s"] for x in runs], 2),
                "rss_mb": benchlib.spread([x["rss_mb"] for x in runs], 1),
                "rss_decided_mb": benchlib.spread([x["rss_decided_mb"] for x in runs], 1),
                "rss_before_mb": benchlib.spread([x["rss_before_mb"] for x in runs], 1),
                "cached": runs[-1]["cached"],
            })
    for entry in per_scale:
        benchlib.table(f"agent_scale: {NODES} Nodes, {entry['services']} Services, "
                       f"{args.runs} runs", {k: entry[k] for k in
                                             ("sync_s", "rss_mb", "rss_decided_mb",
                                              "rss_before_mb")})
    top = per_scale[-1]
    spreads = {"sync_s": top["sync_s"], "rss_mb": top["rss_mb"],
               "rss_decided_mb": top["rss_decided_mb"], "rss_before_mb": top["rss_before_mb"]}
    result = {
        "bench": "agent_scale",
        "nodes": NODES,
        "services": top["services"],
        "endpointslices": top["services"],
        "pods": PODS,
        "runs": args.runs,
        "load_s": round(load_s, 1),
        **benchlib.medians(spreads),
        "spread": spreads,
        "cached": top["cached"],
        "scales": per_scale,
        "targets": {"sync_s": TARGET_SYNC_S, "rss_mb": TARGET_RSS_MB},
        "machine": machine,
    }
    benchlib.emit(result)


if __name__ == "__main__":
    main()
