"""Policy decision time at scale: 20,000 Services, 20,000 EndpointSlices, 110 local pods.

Prints one JSON line: {"services", "endpointslices", "pods", "announced", "full_ms",
"incremental_ms", "cold_full_ms", "full_ms_default_gc"}. ``full_ms`` is a full decision from
a fresh Decider with the address-parsing caches warm and the agent's garbage-collector
settings (the steady state of a running agent), ``full_ms_default_gc`` the same with
CPython's defaults, ``cold_full_ms`` the very first decision of a process,
``incremental_ms`` a decision after one Service changed.
Targets on the reference machine: full <= 200 ms, incremental <= 5 ms. Medians of a few runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bgpd.config import parse_config  # noqa: E402
from bgpd.model import EndpointInfo, EndpointSliceInfo, NodeInfo, PodInfo, ServiceInfo, Snapshot  # noqa: E402
from bgpd.policy.decide import Decider  # noqa: E402
from bgpd.runner import GC_THRESHOLDS, tune_gc_after_sync  # noqa: E402

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
        sl = EndpointSliceInfo(namespace=ns, name=f"{name}-x", service_name=name, endpoints=eps)
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

    cold = ms(lambda: Decider().decide(snap, CONFIG, NODE))
    default_gc = statistics.median(ms(lambda: Decider().decide(snap, CONFIG, NODE))
                                   for _ in range(args.runs))
    # The agent's own garbage-collector settings (bgpd/runner.py): thresholds raised, and
    # the synced cache frozen out of the collector, as `bgpd run` does after its first sync.
    gc.set_threshold(*GC_THRESHOLDS)
    tune_gc_after_sync()
    full = statistics.median(ms(lambda: Decider().decide(snap, CONFIG, NODE))
                             for _ in range(args.runs))
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
        incremental.append(ms(lambda s=changed: decider.decide(s, CONFIG, NODE)))
    print(json.dumps({
        "services": args.services, "endpointslices": len(snap.endpoint_slices),
        "pods": args.pods, "announced": len(decision.announcements),
        "full_ms": round(full, 1), "incremental_ms": round(statistics.median(incremental), 2),
        "cold_full_ms": round(cold, 1), "full_ms_default_gc": round(default_gc, 1),
    }))


if __name__ == "__main__":
    main()
