"""Policy decision time at scale: 20,000 Services, 20,000 EndpointSlices, 110 local pods.

Every repetition (``--runs``, default 9) is a fresh process per GC setting, so the cold
figure is really a process's first decision:

- ``agent`` child: the agent's own settings (bgpd/runtime.py, as bgpd/runner.py applies
  them): ``tune_gc()`` at start, the snapshot built (the synced cache), ``freeze_after_sync()``,
  then every decision inside ``gc_paused()``. ``cold_full_ms`` is its first decision (address
  caches cold: the agent's first round after a restart), ``full_ms`` a full decision from a
  fresh Decider with caches warm, same config and snapshot (what the agent does when a drain
  starts or ends: the Service memo applies), ``reload_full_ms`` a fresh Decider with a
  newly parsed Config of the same content (a reload that leaves what Services read as it
  was, e.g. of peers: the memo and plain-address tables are kept), ``reload_changed_full_ms``
  one whose pool communities changed (every Service judged afresh),
  ``incremental_ms`` a decision after one Service changed (written into a ClusterCache and
  decided on its snapshot, with its change log, as the agent does).
- ``default`` child: CPython's default GC, nothing frozen: ``cold_full_ms_default_gc`` and
  ``full_ms_default_gc``.

Samples are pooled over the repetitions (``--decisions`` full / incremental decisions per
child); the top-level figures are medians, ``spread`` holds min / median / max. Prints a
table, then one JSON line. Targets (issue 16): full <= 100 ms, one change <= 2 ms, a
process's first decision <= 500 ms.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import benchlib  # noqa: E402

from bgpd.config import parse_config  # noqa: E402
from bgpd.model import (  # noqa: E402
    EndpointInfo,
    EndpointSliceInfo,
    NodeInfo,
    PodInfo,
    ServiceInfo,
    Snapshot,
)
from bgpd.policy.decide import Decider  # noqa: E402
from bgpd.policy.endpoints import summarize  # noqa: E402
from bgpd.runtime import freeze_after_sync, gc_paused, tune_gc  # noqa: E402

NODE = "node-0001"
CONFIG_DOC = {
    "bgp": {"asn": 64512},
    "cluster": {"pod_cidrs": ["10.244.0.0/16"], "service_cidrs": ["10.96.0.0/12"]},
    "pools": [{"name": "ext", "cidrs": ["198.18.0.0/15"], "allow": ["external-ip"]},
              {"name": "lb", "cidrs": ["100.64.0.0/16"], "allow": ["load-balancer-ip"],
               "communities": ["64512:100"]}],
}
CONFIG = parse_config(CONFIG_DOC)
def _with_lb_community(community: str) -> dict:
    doc = {**CONFIG_DOC, "pools": [dict(p) for p in CONFIG_DOC["pools"]]}
    doc["pools"][1]["communities"] = [community]
    return doc


TARGETS = {"full_ms": 100, "incremental_ms": 2, "cold_full_ms": 500}


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


def child(mode: str, services: int, pods: int, decisions: int) -> dict:
    """One fresh process's figures (see the module docstring)."""
    agent = mode == "agent"
    if agent:
        tune_gc()
    snap = build(services, pods)
    if agent:
        freeze_after_sync()

    def decide(decider: Decider, snapshot, config=CONFIG) -> None:
        if agent:
            with gc_paused():
                decider.decide(snapshot, config, NODE)
        else:
            decider.decide(snapshot, config, NODE)

    first = Decider()
    cold = ms(lambda: decide(first, snap))
    announced = len(first.decide(snap, CONFIG, NODE).announcements)
    # Fresh Deciders are made before and dropped after the timing: freeing one costs tens
    # of milliseconds that an agent, which keeps its Decider, never pays.
    deciders = [Decider() for _ in range(decisions)]
    full = [ms(lambda d=d: decide(d, snap)) for d in deciders]
    del deciders
    # A config reload: a new Config object. With the same content (or other peers): what
    # Services read is equal (policy/view.py), so the memo and the plain-address tables are
    # kept. With a pool's communities changed, every Service is judged afresh: each reload
    # here changes them from the one before.
    reloads = [(Decider(), parse_config(CONFIG_DOC)) for _ in range(decisions)]
    reload = [ms(lambda d=d, c=c: decide(d, snap, c)) for d, c in reloads]
    reloads = [(Decider(), parse_config(_with_lb_community(f"64512:{200 + i}")))
               for i in range(decisions)]
    reload_changed = [ms(lambda d=d, c=c: decide(d, snap, c)) for d, c in reloads]
    del reloads
    out = {"mode": mode, "cold_ms": cold, "full_ms": full, "reload_ms": reload,
           "reload_changed_ms": reload_changed,
           "announced": announced, "endpointslices": len(snap.endpoint_slices)}
    if agent:
        from bgpd.kube.cache import ENDPOINT_SLICE, POD, SERVICE, ClusterCache
        from bgpd.kube.cache import NODE as NODE_KIND

        cache = ClusterCache(client=None, node_name=NODE)  # type: ignore[arg-type]
        cache.replace(NODE_KIND, {NODE: snap.node})
        cache.replace(POD, dict(snap.pods))
        cache.replace(SERVICE, dict(snap.services))
        cache.replace(ENDPOINT_SLICE, dict(snap.endpoint_slices))
        decider = Decider()
        decide(decider, cache.snapshot())
        incremental = []
        for run in range(decisions):
            i = run * 7
            key = f"ns{i % 50}/svc{i}"
            svc = snap.services[key]
            cache.apply(SERVICE, key, dataclasses.replace(
                svc, external_traffic_policy="Cluster", created=svc.created + 0.5))
            changed = cache.snapshot()
            incremental.append(ms(lambda s=changed: decide(decider, s)))
        out["incremental_ms"] = incremental
    return out


def spawn(mode: str, args) -> dict:
    done = subprocess.run(
        [sys.executable, __file__, "--child", mode, "--services", str(args.services),
         "--pods", str(args.pods), "--decisions", str(args.decisions)],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(HERE.parent)})
    if done.returncode != 0:
        raise SystemExit(f"policy child ({mode}) failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=20_000)
    parser.add_argument("--pods", type=int, default=110)
    parser.add_argument("--runs", type=int, default=9,
                        help="fresh processes per GC setting (each gives one first decision)")
    parser.add_argument("--decisions", type=int, default=5,
                        help="full and incremental decisions timed per process")
    parser.add_argument("--quick", action="store_true", help="smoke run: 3 runs, 3 decisions")
    parser.add_argument("--child", choices=("agent", "default"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.services, args.pods, args.decisions)))
        return
    if args.quick:
        args.runs, args.decisions = min(args.runs, 3), min(args.decisions, 3)
    machine = benchlib.machine()
    agent_runs, default_runs = [], []
    for r in range(args.runs):
        benchlib.log(f"policy run {r + 1}/{args.runs}")
        agent_runs.append(spawn("agent", args))
        default_runs.append(spawn("default", args))
    spreads = {
        "full_ms": benchlib.spread([x for c in agent_runs for x in c["full_ms"]], 1),
        "incremental_ms": benchlib.spread(
            [x for c in agent_runs for x in c["incremental_ms"]], 2),
        "cold_full_ms": benchlib.spread([c["cold_ms"] for c in agent_runs], 1),
        "reload_full_ms": benchlib.spread([x for c in agent_runs for x in c["reload_ms"]], 1),
        "reload_changed_full_ms": benchlib.spread(
            [x for c in agent_runs for x in c["reload_changed_ms"]], 1),
        "full_ms_default_gc": benchlib.spread(
            [x for c in default_runs for x in c["full_ms"]], 1),
        "cold_full_ms_default_gc": benchlib.spread([c["cold_ms"] for c in default_runs], 1),
    }
    benchlib.table(f"policy: {args.services} Services, {args.pods} pods, {args.runs} processes "
                   f"x {args.decisions} decisions", spreads)
    benchlib.emit({
        "bench": "policy",
        "services": args.services, "endpointslices": agent_runs[0]["endpointslices"],
        "pods": args.pods, "announced": agent_runs[0]["announced"], "runs": args.runs,
        "decisions_per_run": args.decisions,
        **benchlib.medians(spreads),
        "spread": spreads,
        "targets": TARGETS,
        "machine": machine,
    })


if __name__ == "__main__":
    main()
