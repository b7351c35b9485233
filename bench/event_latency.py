"""Event latency: one more Service, from the API write returning to its prefix in the peer.

A real kube-apiserver (one per bench, loaded once with N Services, externalIPs from
198.18.0.0/15), and for every run (``--runs``, default 3) a fresh "ToR" (FRR in its own
namespace, no stale routes from an earlier run) and a fresh agent process (`bgpd run`,
ExaBGP and routes in a "node" namespace, the agent's default config). The agent announces
the N Services, then ``--tries`` more Services are created one at a time (POSTs on one
kept-alive HTTPS connection: no TLS handshake inside the figure). Each is timed until
FRR's zebra installs the /32 in the ToR's kernel (read from `ip monitor route`, stamped as
it arrives), and split at two more moments:

- ``event``: this bench's own watch on Services (the same kind of watch the agent holds)
  delivers the ADDED event: when the agent can know at the earliest;
- ``rib``: FRR's bgpd logs receiving the prefix (``debug bgp updates in``, microsecond log
  stamps).

Figures (ms): ``p50_ms`` / ``p99_ms`` from the POST returning to the FIB (the issue's
definition); ``event_to_fib``; ``event_to_rib`` (ours: the agent's debounce and decision,
ExaBGP, the wire); ``rib_to_fib`` (FRR's, not ours: bgpd holds its route-processing work
queue 50 ms and zebra its RIB queue 10 ms by default, so ~60 ms is FRR's floor); ``post``
(the POST's round trip; the watch event may come before it returns).
``--debounce`` overrides the agent's ``debounce_seconds``.

Per run p50 / p99 (nearest rank); the top-level ``p50_ms`` / ``p99_ms`` are the medians
over runs, ``spread`` holds min / median / max, ``latencies_ms`` etc. every sample (for the
plot). Prints a table, then one JSON line. Target (issue 16): p99 <= 100 ms at 10,000
Services.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import queue
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import benchlib  # noqa: E402
from agent_scale import post_all  # noqa: E402

from tests.controlplane.controlplane import ControlPlane, free_port  # noqa: E402
from tests.integration.kube_fixtures import create_node  # noqa: E402
from tests.integration.routers import NODE_V4, TOR_V4, frr, frr_config, tor_and_node  # noqa: E402

TOR_AS, NODE_AS = 65000, 64512
NODE = "bench-node"
TRIES = 100  # per run: p99 of 100 is the 99th, not simply the maximum
RUNS = 3
TARGET_P99_MS = 100
CONVERGE_TIMEOUT_S = 600.0  # the agent announcing the N loaded Services
TRY_TIMEOUT_S = 10.0  # one Service showing up at the ToR


def ext_ip(i: int) -> str:
    return f"198.{18 + (i >> 16)}.{(i >> 8) & 255}.{i & 255}"


def service(i: int) -> tuple[str, dict]:
    return "/api/v1/namespaces/default/services", {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": f"svc-{i}"},
        "spec": {"selector": {"app": f"a{i}"}, "ports": [{"port": 80}],
                 "externalIPs": [ext_ip(i)]}}


def agent_config(path: Path, debounce: float | None = None) -> None:
    """The agent's config: its own defaults (debounce included) unless ``debounce``."""
    doc = {
        "bgp": {"asn": NODE_AS, "peers": [{"address": TOR_V4, "asn": TOR_AS,
                                            "local_address": NODE_V4,
                                            "families": ["ipv4-unicast"]}]},
        "pools": [{"name": "bench", "cidrs": ["198.18.0.0/15"], "allow": ["external-ip"]}],
        "http": {"debug_address": f"127.0.0.1:{free_port()}",
                 "metrics_address": f"127.0.0.1:{free_port()}"},
        "logging": {"level": "warning"},
    }
    if debounce is not None:
        doc["debounce_seconds"] = debounce
    path.write_text(json.dumps(doc))


class RouteWatch:
    """`ip monitor route` in the ToR's namespace: when each /32 was installed."""

    def __init__(self, ns: str):
        self.proc = subprocess.Popen(["ip", "-netns", ns, "monitor", "route"],
                                     stdout=subprocess.PIPE, text=True)
        self.seen: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            now = time.monotonic()
            if not line.startswith("Deleted"):
                self.seen.put((line.split()[0], now))

    def wait_for(self, prefix: str, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{prefix} never reached the ToR's FIB")
            try:
                dst, at = self.seen.get(timeout=left)
            except queue.Empty:
                continue
            if dst in (prefix, prefix + "/32"):
                return at

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(5)


class ServiceEvents:
    """This bench's own watch on Services: when each ADDED event arrived (monotonic)."""

    def __init__(self, cp):
        listing = cp.api("GET", "/api/v1/namespaces/default/services?limit=1")
        rv = listing["metadata"]["resourceVersion"]
        self.conn = http.client.HTTPSConnection("127.0.0.1", cp.port, context=cp._ssl_context(),
                                                timeout=600)
        self.conn.request("GET", f"/api/v1/namespaces/default/services?watch=true"
                          f"&resourceVersion={rv}&timeoutSeconds=590",
                          headers={"Accept": "application/json"})
        self.resp = self.conn.getresponse()
        if self.resp.status != 200:
            raise SystemExit(f"watch Services: HTTP {self.resp.status}")
        self.added: dict[str, float] = {}
        self.cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            while line := self.resp.readline():
                now = time.monotonic()
                event = json.loads(line)
                if event.get("type") == "ADDED":
                    with self.cond:
                        self.added[event["object"]["metadata"]["name"]] = now
                        self.cond.notify_all()
        except Exception:  # noqa: BLE001 - closed under it (close) or the server ended it
            pass

    def when(self, name: str, timeout: float) -> float | None:
        with self.cond:
            self.cond.wait_for(lambda: name in self.added, timeout)
            return self.added.get(name)

    def close(self) -> None:
        # Shut the socket down first: the reader thread is blocked in a read that holds the
        # response's buffer lock, and closing under it would wait for the server.
        with contextlib.suppress(OSError):
            if self.conn.sock is not None:
                self.conn.sock.shutdown(socket.SHUT_RDWR)
        self.conn.close()


class Poster:
    """POSTs on one kept-alive HTTPS connection (as a controller's client would)."""

    def __init__(self, cp):
        self.conn = http.client.HTTPSConnection("127.0.0.1", cp.port, context=cp._ssl_context(),
                                                timeout=60)

    def warm(self) -> None:
        """One GET first, so the TLS handshake is not inside the first try."""
        self.conn.request("GET", "/api/v1/namespaces/default/services?limit=1",
                          headers={"Accept": "application/json"})
        self.conn.getresponse().read()

    def post(self, path: str, body: dict) -> None:
        self.conn.request("POST", path, body=json.dumps(body).encode(),
                          headers={"Content-Type": "application/json",
                                   "Accept": "application/json"})
        resp = self.conn.getresponse()
        answer = resp.read()
        if resp.status not in (200, 201):
            raise SystemExit(f"POST {path}: HTTP {resp.status}: {answer[:300]!r}")

    def close(self) -> None:
        self.conn.close()


def rib_count(router) -> int:
    peers = router.vtysh("show bgp ipv4 unicast summary json").get("peers", {})
    return int(peers.get(NODE_V4, {}).get("pfxRcd", 0))


def enable_update_log(router) -> None:
    """FRR's bgpd logs each received prefix, stamped to the microsecond, to its stdout
    (the work folder's bgpd.log)."""
    subprocess.run(["vtysh", "-N", router.ns, "-c", "configure terminal",
                    "-c", "log timestamp precision 6", "-c", "log stdout debugging",
                    "-c", "debug bgp updates in"], check=True, capture_output=True, timeout=20)


def rib_times(router, prefixes: set[str]) -> dict[str, float]:
    """When FRR's bgpd logged receiving each of ``prefixes`` (CLOCK_MONOTONIC seconds)."""
    offset = time.time() - time.monotonic()
    found: dict[str, float] = {}
    log = router.workdir / "bgpd.log"
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return found
    for line in lines:
        if " rcvd " not in line:
            continue
        words = line.split()
        try:
            i = words.index("rcvd")
        except ValueError:
            continue
        if i + 1 >= len(words):
            continue
        prefix = words[i + 1].removesuffix("/32")
        if prefix in prefixes and prefix not in found:
            try:
                stamp = time.mktime(time.strptime(f"{words[0]} {words[1][:8]}",
                                                  "%Y/%m/%d %H:%M:%S"))
                stamp += float("0" + words[1][8:])
            except (ValueError, IndexError):
                continue
            found[prefix] = stamp - offset
    return found


def one_run(cp, present: int, tries: int, tag: str, debounce: float | None) -> dict:
    """A fresh ToR and agent; ``present`` Services exist already (the first ``n`` loaded
    plus earlier runs' tries). Returns this run's latencies."""
    with contextlib.ExitStack() as stack:
        tor, node = stack.enter_context(tor_and_node(f"latency{tag}"))
        router = stack.enter_context(frr(tor, frr_config(TOR_AS, {NODE_V4: NODE_AS})))
        workdir = Path(tempfile.mkdtemp(prefix="bgpd-bench-"))
        stack.callback(shutil.rmtree, workdir, True)
        config = workdir / "bgpd.yaml"
        agent_config(config, debounce)
        started = time.monotonic()
        agent = benchlib.start_agent(stack, config, NODE, cp.kubeconfig, node)
        deadline = time.monotonic() + CONVERGE_TIMEOUT_S
        while rib_count(router) < present + 1:  # the Services and the pod CIDR
            if time.monotonic() > deadline or agent.poll() is not None:
                raise SystemExit(f"the agent did not converge: {rib_count(router)} of "
                                 f"{present + 1}")
            time.sleep(0.5)
        converge_s = time.monotonic() - started
        enable_update_log(router)

        watch = RouteWatch(tor)
        stack.callback(watch.close)
        events = ServiceEvents(cp)
        stack.callback(events.close)
        poster = Poster(cp)
        stack.callback(poster.close)
        poster.warm()
        samples = []
        for k in range(tries):
            i = present + k
            path, body = service(i)
            time.sleep(random.uniform(0.05, 0.15))  # no phase lock with any timer
            posting = time.monotonic()
            poster.post(path, body)
            written = time.monotonic()
            fib = watch.wait_for(ext_ip(i), TRY_TIMEOUT_S)
            samples.append({"ip": ext_ip(i), "posting": posting, "written": written,
                            "fib": fib, "event": events.when(f"svc-{i}", TRY_TIMEOUT_S)})
        rib = rib_times(router, {x["ip"] for x in samples})
        out: dict[str, list[float]] = {k: [] for k in (
            "latencies_ms", "event_to_fib_ms", "event_to_rib_ms", "rib_to_fib_ms", "post_ms",
            "write_to_event_ms")}
        for x in samples:
            out["latencies_ms"].append((x["fib"] - x["written"]) * 1000)
            out["post_ms"].append((x["written"] - x["posting"]) * 1000)
            if x["event"] is not None:
                out["event_to_fib_ms"].append((x["fib"] - x["event"]) * 1000)
                out["write_to_event_ms"].append((x["event"] - x["posting"]) * 1000)
            if x["ip"] in rib:
                out["rib_to_fib_ms"].append((x["fib"] - rib[x["ip"]]) * 1000)
                if x["event"] is not None:
                    out["event_to_rib_ms"].append((rib[x["ip"]] - x["event"]) * 1000)
        return {**out, "converge_s": converge_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int)
    parser.add_argument("--tries", type=int)
    parser.add_argument("--runs", type=int, default=RUNS)
    parser.add_argument("--debounce", type=float,
                        help="the agent's debounce_seconds (default: the agent's own default)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 1,000 Services, 3 runs of 20 tries")
    args = parser.parse_args()
    n = args.services or (1_000 if args.quick else 10_000)
    tries = args.tries or (20 if args.quick else TRIES)
    machine = benchlib.machine()
    with contextlib.ExitStack() as stack:
        cp = ControlPlane(controllers=None).start()
        stack.callback(cp.close)
        create_node(cp, NODE, NODE_V4, "10.244.1.0/24")
        started = time.monotonic()
        post_all(cp, (service(i) for i in range(n)))
        load_s = time.monotonic() - started
        runs = []
        present = n
        for r in range(args.runs):
            benchlib.log(f"event_latency run {r + 1}/{args.runs}: {present} Services")
            runs.append(one_run(cp, present, tries, str(r), args.debounce))
            present += tries
            benchlib.log(f"  p50 {benchlib.percentile(runs[-1]['latencies_ms'], 50):.1f} ms, "
                         f"p99 {benchlib.percentile(runs[-1]['latencies_ms'], 99):.1f} ms")

    def per_run(key: str, p: float) -> list[float]:
        return [benchlib.percentile(r[key], p) for r in runs if r[key]]

    spreads = {
        "p50_ms": benchlib.spread(per_run("latencies_ms", 50), 1),
        "p99_ms": benchlib.spread(per_run("latencies_ms", 99), 1),
        "max_ms": benchlib.spread(per_run("latencies_ms", 100), 1),
        "event_to_fib_p50_ms": benchlib.spread(per_run("event_to_fib_ms", 50), 1),
        "event_to_fib_p99_ms": benchlib.spread(per_run("event_to_fib_ms", 99), 1),
        "event_to_rib_p50_ms": benchlib.spread(per_run("event_to_rib_ms", 50), 1),
        "event_to_rib_p99_ms": benchlib.spread(per_run("event_to_rib_ms", 99), 1),
        "rib_to_fib_p50_ms": benchlib.spread(per_run("rib_to_fib_ms", 50), 1),
        "rib_to_fib_p99_ms": benchlib.spread(per_run("rib_to_fib_ms", 99), 1),
        "post_p50_ms": benchlib.spread(per_run("post_ms", 50), 1),
        "write_to_event_p50_ms": benchlib.spread(per_run("write_to_event_ms", 50), 1),
        "converge_s": benchlib.spread([r["converge_s"] for r in runs], 1),
    }
    benchlib.table(f"event_latency: {n} Services, {args.runs} runs x {tries} tries", spreads)
    benchlib.emit({
        "bench": "event_latency", "services": n, "runs": args.runs, "tries": tries,
        **benchlib.medians({k: spreads[k] for k in ("p50_ms", "p99_ms")}),
        "load_s": round(load_s, 1),
        "debounce_s": args.debounce,  # None: the agent's default
        "spread": spreads,
        **{key: [round(x, 2) for r in runs for x in r[key]] for key in (
            "latencies_ms", "event_to_fib_ms", "event_to_rib_ms", "rib_to_fib_ms", "post_ms")},
        "targets": {"p99_ms": TARGET_P99_MS},
        "machine": machine,
    })


if __name__ == "__main__":
    main()
