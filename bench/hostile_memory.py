"""The agent's memory under a hostile tenant, against a real kube-apiserver (issue 11).

Starts its own control plane (tests/controlplane, no controller-manager), loads a baseline
(200 ordinary Services and EndpointSlices, a few Pods on the measured node), then runs the
agent's Kubernetes side in a child process: the real watchers (``ClusterCache`` with the
agent's annotation prefix), the policy (``Decider.decide`` on a snapshot after every
change, debounced, with the agent's garbage-collector settings) and the real Event path
(``Agent._record_rejections`` into an ``EventRecorder`` that writes to the API server).
The parent writes the hostile objects (bodies generated lazily, one at a time per loader
thread) and tells the child when to measure, so the figures are the agent's alone.

Phases (each creates its objects, waits until the agent has seen them and decided, then
deletes them and waits again; ``peak`` is VmHWM, reset at each step, and a 10 ms sampler):

    a  1,000 Services with 200 KB of annotations each (non-bgpd blobs, an oversized
       bgpd.dev/communities value and an unknown bgpd.dev/ key);
    b  1,000 patches of one Service, each a new 200 KB bgpd.dev/communities value (each
       rejection message differs, so each is a new Event and a new dedup key);
    c  200 Pods on the measured node with a 200 KB bgpd.dev/external-ips value;
    d  200 EndpointSlices of 1,000 endpoints each;
    e  1,024 Services with 64 distinct valid externalIPs outside every pool (65,536
       distinct addresses: what the policy's address caches keep);
    r  phase a's Services again and, while they exist, a fresh list of everything (what a
       restarted agent does, or every watcher after 410 Gone).

Prints one JSON line: ``rest_mb`` (after syncing the baseline, collected and frozen as the
agent does), ``peak_mb`` / ``peak_growth_mb`` (worst phase), ``after_delete_mb`` (after the
last phase's objects are deleted, ``gc.collect()`` run), ``target_growth_mb``, and per phase
``peak_mb``, ``peak_growth_mb``, ``held_mb`` (objects present), ``after_delete_mb``, the
``retained_mb`` (what it left on top of the phases before), the
slowest policy round and the Event counters. ``diagnostics`` adds what ``malloc_trim(0)``
gives back and the sizes of the policy's LRU caches, to tell live objects from memory the
allocator keeps. Target (issue 11): growth under 20 MB, back near rest after deletion.

``--scale 0.1`` shrinks every count (not the 200 KB sizes); ``--phases a,b`` picks phases.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import http.client
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.agent_scale import LOAD_THREADS, post_all, rss_mb  # noqa: E402

NODE = "hostile-bench-node"
PREFIX = "bgpd.dev"
BASE_NAMESPACES = 4
HOSTILE_NS = "tenant-hostile"
BASE_SERVICES, BASE_PODS = 200, 10
FAT_SERVICES, PATCHES, FAT_PODS, BIG_SLICES, WIDE_SERVICES = 1000, 1000, 200, 200, 1024
ENDPOINTS_PER_BIG_SLICE = 1000  # the API server's maximum per slice
ADDRESSES_PER_WIDE_SERVICE = 64  # bgpd.kube.convert.MAX_ADDRESSES: all of them are kept
ANNOTATION_BYTES = 200 * 1024  # per object; the API server allows 256 KiB in total
BAD_COMMUNITIES_BYTES = 64 * 1024  # of which the oversized bgpd.dev/communities value
BLOB_KEYS = 8  # the rest: non-bgpd annotations
TARGET_GROWTH_MB = 20.0
NEAR_REST_MB = 5.0
"""How far above rest "back near rest" may be (our reading of the issue's words)."""
WAIT_TIMEOUT_S = 300.0
SAMPLE_S = 0.01
PHASES = "abcder"

CONFIG_DOC = {
    "bgp": {"asn": 64512},
    "cluster": {"pod_cidrs": ["10.244.0.0/16"], "service_cidrs": ["10.96.0.0/16"]},
    "pools": [{"name": "ext", "cidrs": ["198.51.100.0/24", "203.0.113.0/24"],
               "allow": ["external-ip", "pod-external-ip"], "communities": ["64512:100"]}],
}


def status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


# =========================================================================== agent side


class BenchAgent:
    """The agent's Kubernetes half: watchers, debounced decisions, Events; and a meter."""

    def __init__(self, kubeconfig: str) -> None:
        from bgpd.config import parse_config
        from bgpd.kube.cache import ClusterCache
        from bgpd.kube.client import KubeClient
        from bgpd.kube.events import EventRecorder
        from bgpd.policy.decide import Decider
        from bgpd.runner import EventsPort
        from bgpd.runtime import tune_gc

        tune_gc()
        self.config = parse_config(CONFIG_DOC)
        self.client = KubeClient.from_kubeconfig(kubeconfig)
        self.wakeup = threading.Event()
        self.stopping = threading.Event()
        self.cache = ClusterCache(self.client, NODE, notify=self.wakeup.set,
                                  prefix=self.config.annotation_prefix)
        self.recorder = EventRecorder(self.client, NODE)
        self.decider = Decider()
        self.decision: Any = None  # the agent keeps its last decision (explain, /debug)
        # What Agent._record_rejections reads from the agent: its Events port and status.
        self.shim = type("AgentShim", (), {})()
        self.shim.events = EventsPort(self.recorder)
        self.shim.status = type("Status", (), {})()
        self.last_round = (0.0, 0.0)  # (started, ended), monotonic
        self.rounds = 0
        self.max_round_s = 0.0
        self.peak_sampled = 0.0
        self.errors: list[str] = []
        self._events_at_mark = self._event_counts()

    # ------------------------------------------------------------------ running

    def start(self) -> dict:
        from bgpd.runtime import freeze_after_sync

        before = rss_mb()
        self.recorder.start()
        self.cache.start()
        if not self.cache.wait_synced(WAIT_TIMEOUT_S):
            raise SystemExit(f"not synced: {self.cache.stats()}")
        threading.Thread(target=self._loop, name="bench-loop", daemon=True).start()
        threading.Thread(target=self._sampler, name="bench-rss", daemon=True).start()
        self._settle()
        freeze_after_sync()  # what the agent does after its first sync
        return {"before_start_mb": round(before, 1), "counts": self.cache.counts(),
                **self.mark(flush=True, collect=True)}

    def _loop(self) -> None:
        """Agent.run/reconcile, minus BGP and the kernel: wait, debounce, snapshot, decide,
        record the rejections through the agent's own code."""
        from bgpd.agent import Agent
        from bgpd.runtime import gc_paused

        config = self.config
        while not self.stopping.is_set():
            self.wakeup.wait(config.resync_seconds)
            if self.stopping.is_set():
                return
            self.stopping.wait(config.debounce_seconds)
            self.wakeup.clear()
            started = time.monotonic()
            try:
                snap = self.cache.snapshot()
                with gc_paused():
                    decision = self.decider.decide(snap, config, NODE)
                self.decision = decision
                Agent._record_rejections(self.shim, decision, snap)  # type: ignore[arg-type]
                del snap, decision
            except Exception as exc:  # noqa: BLE001 - reported in the result
                self.errors.append(f"{type(exc).__name__}: {exc}"[:300])
            ended = time.monotonic()
            self.rounds += 1
            self.max_round_s = max(self.max_round_s, ended - started)
            self.last_round = (started, ended)

    def _sampler(self) -> None:
        """VmRSS every SAMPLE_S, read cheaply (statm's second field), as a cross-check of
        VmHWM where clear_refs cannot reset it."""
        page_mb = os.sysconf("SC_PAGE_SIZE") / 2**20
        fd = os.open("/proc/self/statm", os.O_RDONLY)
        try:
            while not self.stopping.is_set():
                resident = int(os.pread(fd, 128, 0).split()[1]) * page_mb
                if resident > self.peak_sampled:
                    self.peak_sampled = resident
                time.sleep(SAMPLE_S)
        finally:
            os.close(fd)

    def _settle(self, timeout: float = WAIT_TIMEOUT_S) -> None:
        """Return once a whole policy round began after this call (so it saw the cache as
        it is now) and ended."""
        asked = time.monotonic()
        self.wakeup.set()
        deadline = asked + timeout
        while self.last_round[0] < asked:
            if time.monotonic() > deadline:
                raise SystemExit("the policy loop did not run a round")
            time.sleep(0.02)

    # ------------------------------------------------------------------ commands

    def wait(self, counts: dict[str, int], annotation: dict | None,
             timeout: float = WAIT_TIMEOUT_S) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            have = self.cache.counts()
            done = all(have.get(kind) == n for kind, n in counts.items())
            if done and annotation:
                svc = self.cache.snapshot().services.get(annotation["service"])
                done = svc is not None and svc.annotations.get(annotation["key"]) == annotation["value"]
            if done:
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"cache never reached {counts} {annotation}: {have}")
            time.sleep(0.05)
        self._settle()
        return {"counts": have}

    def relist(self) -> dict:
        """A second, fresh ClusterCache syncing everything now on the server (an agent
        restart, or every watch relisting after 410 Gone), then dropped."""
        from bgpd.kube.cache import ClusterCache

        started = time.monotonic()
        fresh = ClusterCache(self.client, NODE, prefix=self.config.annotation_prefix)
        fresh.start()
        try:
            if not fresh.wait_synced(WAIT_TIMEOUT_S):
                raise SystemExit(f"relist never synced: {fresh.stats()}")
        finally:
            fresh.stop()
        took = time.monotonic() - started
        largest = max(st.largest_page_bytes for st in fresh.stats().values())
        del fresh
        return {"relist_s": round(took, 2), "largest_page_mb": round(largest / 2**20, 1)}

    def mark(self, flush: bool = False, collect: bool = False) -> dict:
        """The figures since the previous mark; then start a new measuring step."""
        unflushed = 0
        if flush and not self.recorder.flush(120):
            unflushed = self.recorder._queue.qsize()
        if collect:
            gc.collect()
        peak = max(status_mb("VmHWM"), self.peak_sampled)
        events = self._event_counts()
        result = {
            "rss_mb": round(rss_mb(), 1),
            "peak_mb": round(peak, 1),
            "rounds": self.rounds,
            "max_round_ms": round(self.max_round_s * 1000, 1),
            "events": {k: events[k] - self._events_at_mark[k] for k in events},
            "events_unflushed": unflushed,
        }
        self._events_at_mark = events
        self.rounds, self.max_round_s = 0, 0.0
        try:  # reset VmHWM to the current RSS (Linux >= 4.0)
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            pass
        self.peak_sampled = rss_mb()
        return result

    def _event_counts(self) -> dict[str, int]:
        r = self.recorder
        return {"sent": r.sent, "existing": r.existing, "skipped": r.skipped,
                "dropped": r.dropped, "failed": r.failed}

    def diagnostics(self) -> dict:
        from bgpd.policy import addresses, claims

        caches = {"addresses._host_prefix": addresses._host_prefix,
                  "claims._pool_verdict": claims._pool_verdict,
                  "claims._pool_use_verdict": claims._pool_use_verdict}
        out: dict[str, Any] = {
            "lru_entries": {name: f.cache_info().currsize for name, f in caches.items()},
            "dedup_keys": len(self.recorder._sent),
            "cached": self.cache.counts(),
            "loop_errors": self.errors[:5],
            "watch_skipped": {k: s.skipped for k, s in self.cache.stats().items()},
        }
        gc.collect()
        before = rss_mb()
        for f in caches.values():
            f.cache_clear()
        gc.collect()
        out["lru_cache_clear_frees_mb"] = round(before - rss_mb(), 1)
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
            out["after_cache_clear_and_malloc_trim_mb"] = round(rss_mb(), 1)
        except (OSError, AttributeError):
            pass
        return out

    def stop(self) -> None:
        self.stopping.set()
        self.wakeup.set()
        self.cache.stop()
        self.recorder.stop()
        self.client.close()


def agent_main(kubeconfig: str) -> None:
    """Child mode: answer one JSON command per stdin line with one JSON line."""
    import logging

    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
    agent = BenchAgent(kubeconfig)
    out = sys.stdout
    for line in sys.stdin:
        cmd = json.loads(line)
        op = cmd.pop("cmd")
        if op == "start":
            answer = agent.start()
        elif op == "wait":
            answer = agent.wait(cmd["counts"], cmd.get("annotation"))
        elif op == "mark":
            answer = agent.mark(flush=cmd.get("flush", False), collect=cmd.get("collect", False))
        elif op == "relist":
            answer = agent.relist()
        elif op == "diagnostics":
            answer = agent.diagnostics()
        elif op == "stop":
            agent.stop()
            out.write(json.dumps({"stopped": True}) + "\n")
            out.flush()
            return
        else:
            answer = {"error": f"unknown command {op}"}
        out.write(json.dumps(answer) + "\n")
        out.flush()


# =========================================================================== loader side


def send_all(cp, requests: Iterable[tuple[str, str, dict | None, str]],
             threads: int = LOAD_THREADS, ok: tuple[int, ...] = (200, 201, 202, 404)) -> int:
    """Like agent_scale.post_all for any method: (method, path, body, content type)."""
    work: queue.Queue = queue.Queue(maxsize=threads * 2)
    errors: list[str] = []
    done = [0]
    lock = threading.Lock()

    def worker() -> None:
        conn = http.client.HTTPSConnection("127.0.0.1", cp.port, context=cp._ssl_context(),
                                           timeout=120)
        while (item := work.get()) is not None:
            method, path, body, content_type = item
            data = None if body is None else json.dumps(body).encode()
            del item, body
            conn.request(method, path, body=data,
                         headers={"Content-Type": content_type, "Accept": "application/json"})
            del data
            resp = conn.getresponse()
            answer = resp.read()
            with lock:
                if resp.status in ok:
                    done[0] += 1
                elif len(errors) < 5:
                    errors.append(f"{method} {path}: {resp.status} {answer[:200]!r}")
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
        raise RuntimeError(f"requests failed: {errors}")
    return done[0]


JSON, MERGE = "application/json", "application/merge-patch+json"
IMMEDIATELY = {"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0}


def _filler(text: str, size: int) -> str:
    """``text`` repeated to exactly ``size`` characters."""
    return (text * (size // len(text) + 1))[:size]


def _communities(size: int, seed: int) -> str:
    """A plausible, far too long bgpd.dev/communities value."""
    return _filler(",".join(f"{64512 + seed % 1000}:{k}" for k in range(200)) + ",", size)


def _service(ns: str, name: str, external_ips: list[str], annotations: dict | None = None
             ) -> dict:
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"namespace": ns, "name": name, "annotations": annotations or {}},
        "spec": {"ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
                 "externalIPs": external_ips},
    }


def _base_ns(i: int) -> str:
    return f"tenant-{i % BASE_NAMESPACES}"


def base_service(i: int) -> tuple[str, dict]:
    ns = _base_ns(i)
    pool = "198.51.100" if i % 2 else "203.0.113"
    notes = {f"{PREFIX}/communities": "64512:200"} if i % 10 == 0 else {}
    notes["owner"] = f"team-{i % 7}@example.com"
    return f"/api/v1/namespaces/{ns}/services", _service(
        ns, f"svc-{i}", [f"{pool}.{i // 2 % 254 + 1}"], notes)


def _slice(ns: str, name: str, service: str, endpoints: Iterator[dict]) -> dict:
    return {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"namespace": ns, "name": name,
                     "labels": {"kubernetes.io/service-name": service,
                                "endpointslice.kubernetes.io/managed-by": "tenant.example.com"}},
        "addressType": "IPv4",
        "endpoints": list(endpoints),
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    }


def _endpoint(n: int, node: str) -> dict:
    return {"addresses": [f"10.{64 + (n >> 16) % 64}.{(n >> 8) & 255}.{n & 255}"],
            "conditions": {"ready": True, "serving": True, "terminating": False},
            "nodeName": node}


def base_slice(i: int) -> tuple[str, dict]:
    ns = _base_ns(i)
    eps = (_endpoint(i * 3 + k, NODE if (i + k) % 5 == 0 else f"other-{(i + k) % 50}")
           for k in range(3))
    return (f"/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices",
            _slice(ns, f"svc-{i}-base", f"svc-{i}", eps))


def _pod(ns: str, name: str, annotations: dict | None = None) -> dict:
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"namespace": ns, "name": name, "annotations": annotations or {}},
        "spec": {"nodeName": NODE, "terminationGracePeriodSeconds": 0,
                 "containers": [{"name": "c", "image": "example.invalid/echo:1"}]},
    }


def fat_service(i: int) -> tuple[str, dict]:
    blob = (ANNOTATION_BYTES - BAD_COMMUNITIES_BYTES) // BLOB_KEYS
    notes = {f"tenant.example.com/blob-{k}": _filler(f"{i}.{k}-lorem-ipsum-", blob)
             for k in range(BLOB_KEYS)}
    notes[f"{PREFIX}/communities"] = _communities(BAD_COMMUNITIES_BYTES, i)
    notes[f"{PREFIX}/no-such-annotation-{i}"] = "x" * 100
    return f"/api/v1/namespaces/{HOSTILE_NS}/services", _service(
        HOSTILE_NS, f"fat-{i}", [f"198.51.100.{i % 254 + 1}"], notes)


def wide_service(i: int) -> tuple[str, dict]:
    first = i * ADDRESSES_PER_WIDE_SERVICE
    ips = [f"20.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"
           for n in range(first + 1, first + 1 + ADDRESSES_PER_WIDE_SERVICE)]
    return f"/api/v1/namespaces/{HOSTILE_NS}/services", _service(HOSTILE_NS, f"wide-{i}", ips)


def fat_pod(i: int) -> tuple[str, dict]:
    items = _filler(f"198.51.100.{i % 254 + 1},not-an-address-{i}-padding-padding-padding,",
                    ANNOTATION_BYTES)
    return f"/api/v1/namespaces/{HOSTILE_NS}/pods", _pod(
        HOSTILE_NS, f"fat-pod-{i}", {f"{PREFIX}/external-ips": items})


def big_slice(i: int) -> tuple[str, dict]:
    ns = _base_ns(i)
    eps = (_endpoint(i * ENDPOINTS_PER_BIG_SLICE + k,
                     NODE if k % 100 == 0 else f"other-{k % 50}")
           for k in range(ENDPOINTS_PER_BIG_SLICE))
    return (f"/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices",
            _slice(ns, f"svc-{i % BASE_SERVICES}-big-{i}", f"svc-{i % BASE_SERVICES}", eps))


def deletes(paths: Iterable[str], body: dict | None = None
            ) -> Iterator[tuple[str, str, dict | None, str]]:
    return (("DELETE", p, body, JSON) for p in paths)


# =========================================================================== driver


class Run:
    """The parent's handle on the measured child and the control plane."""

    def __init__(self, cp, child: subprocess.Popen, log_path: Path) -> None:
        self.cp, self.child, self.log_path = cp, child, log_path

    def ask(self, cmd: str, **args: Any) -> dict:
        assert self.child.stdin is not None and self.child.stdout is not None
        self.child.stdin.write(json.dumps({"cmd": cmd, **args}) + "\n")
        self.child.stdin.flush()
        line = self.child.stdout.readline()
        if not line:
            tail = self.log_path.read_text(errors="replace")[-3000:]
            raise SystemExit(f"the measured agent died during {cmd!r}:\n{tail}")
        return json.loads(line)

    def wait(self, annotation: dict | None = None, **counts: int) -> dict:
        return self.ask("wait", counts=counts, annotation=annotation)

    def mark(self, settle_and_collect: bool = False) -> dict:
        return self.ask("mark", flush=settle_and_collect, collect=settle_and_collect)


def step_figures(created: dict, deleted: dict, rest: float) -> dict:
    peak = max(created["peak_mb"], deleted["peak_mb"])
    return {
        "peak_mb": peak,
        "peak_growth_mb": round(peak - rest, 1),
        "held_mb": created["rss_mb"],
        "after_delete_mb": deleted["rss_mb"],
        "after_delete_growth_mb": round(deleted["rss_mb"] - rest, 1),
        "max_round_ms": max(created["max_round_ms"], deleted["max_round_ms"]),
        "events": {k: created["events"][k] + deleted["events"][k] for k in created["events"]},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0,
                        help="multiply every object count by this (sizes stay 200 KB)")
    parser.add_argument("--phases", default=",".join(PHASES),
                        help=f"comma separated subset of {','.join(PHASES)}")
    parser.add_argument("--agent", metavar="KUBECONFIG", help=argparse.SUPPRESS)  # child mode
    args = parser.parse_args()
    if args.agent:
        agent_main(args.agent)
        return
    phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    if any(p not in PHASES for p in phases):
        raise SystemExit(f"--phases: pick from {','.join(PHASES)}")

    def n(count: int) -> int:
        return max(1, round(count * args.scale))

    from tests.controlplane.controlplane import ControlPlane

    started = time.monotonic()
    with ControlPlane(controllers=None) as cp, tempfile.TemporaryDirectory() as tmp:
        namespaces = [_base_ns(i) for i in range(BASE_NAMESPACES)] + [HOSTILE_NS]
        post_all(cp, (("/api/v1/namespaces", {"metadata": {"name": ns}}) for ns in namespaces))
        # No controller-manager: the ServiceAccount the admission plugin wants for Pods.
        post_all(cp, ((f"/api/v1/namespaces/{ns}/serviceaccounts",
                       {"metadata": {"name": "default"}}) for ns in namespaces))
        post_all(cp, [("/api/v1/nodes", {
            "apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE},
            "spec": {"podCIDR": "10.244.0.0/24", "podCIDRs": ["10.244.0.0/24"]}})])
        base_services, base_pods = n(BASE_SERVICES), n(BASE_PODS)
        post_all(cp, (base_service(i) for i in range(base_services)))
        post_all(cp, (base_slice(i) for i in range(base_services)))
        post_all(cp, ((f"/api/v1/namespaces/{_base_ns(0)}/pods", _pod(_base_ns(0), f"base-{i}"))
                      for i in range(base_pods)))

        log_path = Path(tmp) / "agent.log"
        with open(log_path, "w") as log:
            child = subprocess.Popen(
                [sys.executable, __file__, "--agent", str(cp.kubeconfig)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True,
                env={**os.environ, "PYTHONPATH": str(ROOT)})
        run = Run(cp, child, log_path)
        results: dict[str, dict] = {}
        try:
            start = run.ask("start")
            rest = start["rss_mb"]
            # What the agent sees at rest (the `kubernetes` Service too), for the waits.
            base = {k: start["counts"][k] for k in ("Service", "Pod", "EndpointSlice")}
            for phase in phases:
                began = time.monotonic()
                for name, figures in PHASE_RUNNERS[phase](run, base, n, rest).items():
                    results[name] = {**figures, "duration_s": round(time.monotonic() - began, 1)}
            diagnostics = run.ask("diagnostics")
            run.ask("stop")
        finally:
            if child.poll() is None:
                try:
                    child.stdin.close()  # type: ignore[union-attr]
                    child.wait(10)
                except (OSError, subprocess.TimeoutExpired):
                    child.kill()
                    child.wait()
    finished = list(results.values())
    previous = rest
    for figures in finished:  # what each phase left behind, on top of the ones before
        figures["retained_mb"] = round(figures["after_delete_mb"] - previous, 1)
        figures["within_target"] = (figures["peak_growth_mb"] < TARGET_GROWTH_MB
                                    and figures["retained_mb"] <= NEAR_REST_MB)
        previous = figures["after_delete_mb"]
    worst = max(results, key=lambda k: results[k]["peak_mb"]) if results else None
    peak = max((r["peak_mb"] for r in finished), default=rest)
    after = finished[-1]["after_delete_mb"] if finished else rest
    result = {
        "rest_mb": rest,
        "peak_mb": peak,
        "peak_growth_mb": round(peak - rest, 1),
        "worst_phase": worst,
        "after_delete_mb": after,
        "after_delete_growth_mb": round(after - rest, 1),
        "target_growth_mb": TARGET_GROWTH_MB,
        "near_rest_mb": NEAR_REST_MB,
        "target_met": peak - rest < TARGET_GROWTH_MB and after - rest <= NEAR_REST_MB,
        "phases": results,
        "baseline": {**base, "before_start_mb": start["before_start_mb"]},
        "scale": args.scale,
        "duration_s": round(time.monotonic() - started, 1),
        "diagnostics": diagnostics,
    }
    print(json.dumps(result))


# --------------------------------------------------------------------------- phases


def phase_fat_services(run: Run, base: dict, n, rest: float) -> dict:
    count = n(FAT_SERVICES)
    run.mark()
    post_all(run.cp, (fat_service(i) for i in range(count)))
    run.wait(Service=base["Service"] + count)
    created = run.mark()
    _delete_fat_services(run, count, base)
    deleted = run.mark(settle_and_collect=True)
    return {"a_fat_services": {"objects": count, **step_figures(created, deleted, rest)}}


def _delete_fat_services(run: Run, count: int, base: dict) -> None:
    send_all(run.cp, deletes(f"/api/v1/namespaces/{HOSTILE_NS}/services/fat-{i}"
                             for i in range(count)))
    run.wait(Service=base["Service"])


def phase_relist(run: Run, base: dict, n, rest: float) -> dict:
    """Phase a's Services again, then a fresh list of everything while they exist."""
    count = n(FAT_SERVICES)
    post_all(run.cp, (fat_service(i) for i in range(count)))
    run.wait(Service=base["Service"] + count)
    created = run.mark()
    relisted = run.ask("relist")
    relist = run.mark()
    _delete_fat_services(run, count, base)
    deleted = run.mark(settle_and_collect=True)
    figures = step_figures(relist, deleted, rest)
    figures["held_mb"] = created["rss_mb"]
    return {"r_relist_with_fat_services": {"objects": count, **relisted, **figures}}


def phase_patches(run: Run, base: dict, n, rest: float) -> dict:
    count = n(PATCHES)
    path = f"/api/v1/namespaces/{HOSTILE_NS}/services/patched"
    run.mark()
    post_all(run.cp, [(f"/api/v1/namespaces/{HOSTILE_NS}/services",
                       _service(HOSTILE_NS, "patched", ["198.51.100.250"]))])

    def patch(i: int) -> tuple[str, str, dict, str]:
        value = _communities(ANNOTATION_BYTES - i, i)  # a new length: a new message
        return ("PATCH", path, {"metadata": {"annotations": {
            f"{PREFIX}/communities": value, f"{PREFIX}/med": str(i)}}}, MERGE)

    send_all(run.cp, (patch(i) for i in range(count - 1)), threads=4, ok=(200,))
    send_all(run.cp, [patch(count - 1)], threads=1, ok=(200,))  # surely the last one
    run.wait({"service": f"{HOSTILE_NS}/patched", "key": f"{PREFIX}/med",
              "value": str(count - 1)}, Service=base["Service"] + 1)
    created = run.mark(settle_and_collect=True)  # Events flushed: the dedup map is full
    send_all(run.cp, deletes([path]))
    run.wait(Service=base["Service"])
    deleted = run.mark(settle_and_collect=True)
    return {"b_patches_of_one_service": {"objects": count,
                                         **step_figures(created, deleted, rest)}}


def phase_fat_pods(run: Run, base: dict, n, rest: float) -> dict:
    count = n(FAT_PODS)
    run.mark()
    post_all(run.cp, (fat_pod(i) for i in range(count)))
    run.wait(Pod=base["Pod"] + count)
    created = run.mark()
    send_all(run.cp, deletes((f"/api/v1/namespaces/{HOSTILE_NS}/pods/fat-pod-{i}"
                              for i in range(count)), IMMEDIATELY))
    run.wait(Pod=base["Pod"])
    deleted = run.mark(settle_and_collect=True)
    return {"c_short_lived_fat_pods": {"objects": count, **step_figures(created, deleted, rest)}}


def phase_big_slices(run: Run, base: dict, n, rest: float) -> dict:
    count = n(BIG_SLICES)
    run.mark()
    post_all(run.cp, (big_slice(i) for i in range(count)), threads=8)
    run.wait(EndpointSlice=base["EndpointSlice"] + count)
    created = run.mark()
    send_all(run.cp, deletes(
        f"/apis/discovery.k8s.io/v1/namespaces/{_base_ns(i)}/endpointslices/"
        f"svc-{i % BASE_SERVICES}-big-{i}" for i in range(count)))
    run.wait(EndpointSlice=base["EndpointSlice"])
    deleted = run.mark(settle_and_collect=True)
    return {"d_big_endpoint_slices": {"objects": count, **step_figures(created, deleted, rest)}}


def phase_wide_services(run: Run, base: dict, n, rest: float) -> dict:
    count = n(WIDE_SERVICES)
    run.mark()
    post_all(run.cp, (wide_service(i) for i in range(count)))
    run.wait(Service=base["Service"] + count)
    created = run.mark()
    send_all(run.cp, deletes(f"/api/v1/namespaces/{HOSTILE_NS}/services/wide-{i}"
                             for i in range(count)))
    run.wait(Service=base["Service"])
    deleted = run.mark(settle_and_collect=True)
    return {"e_distinct_external_ips": {"objects": count,
                                        "addresses": count * ADDRESSES_PER_WIDE_SERVICE,
                                        **step_figures(created, deleted, rest)}}


PHASE_RUNNERS = {"a": phase_fat_services, "r": phase_relist, "b": phase_patches,
                 "c": phase_fat_pods, "d": phase_big_slices, "e": phase_wide_services}


if __name__ == "__main__":
    main()
