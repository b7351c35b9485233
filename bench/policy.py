"""Policy decision time at scale: 20,000 Services, 20,000 EndpointSlices, 110 local pods.

Prints one JSON line: {"services", "endpointslices", "pods", "announced", "full_ms",
"incremental_ms", "cold_full_ms", "full_ms_default_gc"}. ``full_ms`` is a full decision from
a fresh Decider with the address-parsing caches warm and the agent's garbage-collector
settings, bgpd/runtime.py (the steady state of a running agent), ``full_ms_default_gc`` the same with
CPython's defaults, ``cold_full_ms`` the very first decision of a process,
``incremental_ms`` a decision after one Service changed.
Targets on the reference machine: full <= 200 ms, incremental <= 5 ms. Medians of a few runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bgpd.config import parse_config  # noqa: E402
from bgpd.model import EndpointInfo, EndpointSliceInfo, NodeInfo, PodInfo, ServiceInfo, Snapshot  # noqa: E402
from bgpd.policy.decide import Decider  # noqa: E402
from bgpd.policy.endpoints import summarize  # noqa: E402
from bgpd.runtime import freeze_after_sync, gc_paused, tune_gc  # noqa: E402

NODE = "node-0001"
CONFIG = parse_config({
    "bgp": {"asn": 64512},
    "cluster": {"pod_cidrs": ["10.244.0.0/16"], "service_cidrs": ["10.96.0.0/12"]},
    "pools": [{"name": "ext", "cidrs": ["198.18.0.0/15"], "allow": ["external-ip"]},
              {"name": "lb", "cidrs": ["100.64.0.0/16"], "allow": ["load-balancer-ip"],
               "communities": ["64512:100"]}],
})


def build(services: int, pods: int):
    svcs, slices = {}, {}
    for i in range(services):
        ns, name = f"ns{i % 50}", f"svc{i}"
        local = i % 4 == 0
        lb = i % 2 == 1
        svc = ServiceInfo(
            namespace=ns, name=name, type="LoadBalancer" if lb else "ClusterIP",
            cluster_ips=(f"10.{96 + (i >> 16)}.{(i >> 8) & 255}.{i & 255}",),
            external_ips=() if lb else (f"198.18.{(i >> 8) & 255}.{i & 255}",),
            lb_ips=(f"100.64.{(i >> 8) & 255}.{i & 255}",) if lb else (),
            external_traffic_policy="Local" if local else "Cluster", created=float(i))
        svcs[svc.key] = svc
        eps = tuple(EndpointInfo(addresses=(f"10.244.{(i + k) & 255}.{k + 2}",),
                                 node_name=f"node-{(i + k) % 5000:04d}", ready=True)
                    for k in range(3))
        ready, terminating, usable = summarize(eps, NODE)
        sl = EndpointSliceInfo(namespace=ns, name=f"{name}-x", service_name=name,
                               local_ready=ready, local_serving_terminating=terminating,
                               usable=usable)
        slices[sl.key] = sl
    pod_map = {}
    for i in range(pods):
        pod = PodInfo(namespace="default", name=f"pod{i}", node_name=NODE,
                      ips=(f"10.244.1.{i + 2}",), phase="Running", ready=True)
        pod_map[pod.key] = pod
    node = NodeInfo(NODE, pod_cidrs=("10.244.1.0/24",), addresses=(("InternalIP", "172.20.0.1"),))
    return Snapshot(node=node, pods=pod_map, services=svcs, endpoint_slices=slices)


def ms(fn) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--services", type=int, default=20_000)
    parser.add_argument("--pods", type=int, default=110)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    snap = build(args.services, args.pods)

    def full_runs(decide) -> float:
        # Fresh Deciders are made before and dropped after the timing: freeing one costs
        # tens of milliseconds that an agent, which keeps its Decider, never pays.
        deciders = [Decider() for _ in range(args.runs)]
        times = [ms(lambda d=d: decide(d, snap)) for d in deciders]
        del deciders
        return statistics.median(times)

    def plain(decider: Decider, snapshot) -> None:
        decider.decide(snapshot, CONFIG, NODE)

    def decide(decider: Decider, snapshot) -> None:
        with gc_paused():
            decider.decide(snapshot, CONFIG, NODE)

    first = Decider()
    cold = ms(lambda: plain(first, snap))
    default_gc = full_runs(plain)
    # The agent's own garbage-collector settings (bgpd/runtime.py): thresholds raised, the
    # synced cache frozen out of the collector, no collection inside a decision.
    tune_gc()
    freeze_after_sync()
    full = full_runs(decide)
    decider = Decider()
    decision = decider.decide(snap, CONFIG, NODE)
    incremental = []
    for run in range(args.runs):
        i = run * 7
        key = f"ns{i % 50}/svc{i}"
        services = dict(snap.services)
        services[key] = dataclasses.replace(services[key], external_traffic_policy="Cluster",
                                            created=services[key].created + 0.5)
        changed = dataclasses.replace(snap, services=services)
        incremental.append(ms(lambda s=changed: decide(decider, s)))
    print(json.dumps({
        "services": args.services, "endpointslices": len(snap.endpoint_slices),
        "pods": args.pods, "announced": len(decision.announcements),
        "full_ms": round(full, 1), "incremental_ms": round(statistics.median(incremental), 2),
        "cold_full_ms": round(cold, 1), "full_ms_default_gc": round(default_gc, 1),
    }))


if __name__ == "__main__":
    main()
