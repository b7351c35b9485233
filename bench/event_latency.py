"""Event latency: one more Service, from the API write returning to its prefix in the peer.

A real kube-apiserver, the agent (`bgpd run`, a separate process whose ExaBGP and routes
live in a "node" namespace), and an FRR "ToR" in its own namespace. The apiserver is
loaded with N Services (externalIPs from 198.18.0.0/15), the agent announces them all,
then 50 more Services are created one at a time; each is timed from the POST returning
until FRR's zebra installs the /32 in the ToR's kernel (read from `ip monitor route`).
Prints one JSON line:

    {"services", "tries", "p50_ms", "p99_ms", "max_ms", "load_s", "converge_s"}

Target on the reference machine: p99 <= 500 ms at 10,000 Services.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from agent_scale import post_all  # noqa: E402

from tests.controlplane.controlplane import ControlPlane, free_port  # noqa: E402
from tests.integration.kube_fixtures import create_node  # noqa: E402
from tests.integration.routers import NODE_V4, TOR_V4, frr, frr_config, tor_and_node  # noqa: E402

TOR_AS, NODE_AS = 65000, 64512
NODE = "bench-node"
TRIES = 50
CONVERGE_TIMEOUT_S = 600.0  # the agent announcing the N loaded Services
TRY_TIMEOUT_S = 10.0  # one Service showing up at the ToR


def ext_ip(i: int) -> str:
    return f"198.{18 + (i >> 16)}.{(i >> 8) & 255}.{i & 255}"


def service(i: int) -> tuple[str, dict]:
    return "/api/v1/namespaces/default/services", {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": f"svc-{i}"},
        "spec": {"selector": {"app": f"a{i}"}, "ports": [{"port": 80}],
                 "externalIPs": [ext_ip(i)]}}


def agent_config(path: Path) -> None:
    path.write_text(json.dumps({
        "bgp": {"asn": NODE_AS, "peers": [{"address": TOR_V4, "asn": TOR_AS,
                                            "local_address": NODE_V4,
                                            "families": ["ipv4-unicast"]}]},
        "pools": [{"name": "bench", "cidrs": ["198.18.0.0/15"], "allow": ["external-ip"]}],
        "http": {"debug_address": f"127.0.0.1:{free_port()}",
                 "metrics_address": f"127.0.0.1:{free_port()}"},
        "logging": {"level": "warning"},
        "debounce_seconds": 0.01,
    }))


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


def rib_count(router) -> int:
    peers = router.vtysh("show bgp ipv4 unicast summary json").get("peers", {})
    return int(peers.get(NODE_V4, {}).get("pfxRcd", 0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--services", type=int, default=10_000)
    parser.add_argument("--tries", type=int, default=TRIES)
    args = parser.parse_args()
    n = args.services
    with contextlib.ExitStack() as stack:
        cp = ControlPlane(controllers=None).start()
        stack.callback(cp.close)
        tor, node = stack.enter_context(tor_and_node("latency"))
        router = stack.enter_context(frr(tor, frr_config(TOR_AS, {NODE_V4: NODE_AS})))
        create_node(cp, NODE, NODE_V4, "10.244.1.0/24")
        started = time.monotonic()
        post_all(cp, (service(i) for i in range(n)))
        load_s = time.monotonic() - started

        workdir = Path(tempfile.mkdtemp(prefix="bgpd-bench-"))
        stack.callback(shutil.rmtree, workdir, True)
        config = workdir / "bgpd.yaml"
        agent_config(config)
        started = time.monotonic()
        agent = subprocess.Popen(
            [sys.executable, "-m", "bgpd", "run", "--config", str(config), "--node", NODE,
             "--kubeconfig", str(cp.kubeconfig), "--netns", node],
            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})

        def stop_agent() -> None:
            agent.terminate()
            try:
                agent.wait(30)
            except subprocess.TimeoutExpired:
                agent.kill()
                agent.wait()

        stack.callback(stop_agent)
        deadline = time.monotonic() + CONVERGE_TIMEOUT_S
        while rib_count(router) < n + 1:  # the Services and the pod CIDR
            if time.monotonic() > deadline or agent.poll() is not None:
                raise SystemExit(f"the agent did not converge: {rib_count(router)} of {n + 1}")
            time.sleep(0.5)
        converge_s = time.monotonic() - started

        watch = RouteWatch(tor)
        stack.callback(watch.close)
        latencies = []
        for k in range(args.tries):
            i = n + k
            path, body = service(i)
            cp.api("POST", path, body)
            written = time.monotonic()
            latencies.append((watch.wait_for(ext_ip(i), TRY_TIMEOUT_S) - written) * 1000)
        latencies.sort()
        p99 = latencies[min(len(latencies) - 1, round(0.99 * (len(latencies) - 1)))]
        print(json.dumps({
            "services": n, "tries": args.tries,
            "p50_ms": round(statistics.median(latencies), 1), "p99_ms": round(p99, 1),
            "max_ms": round(latencies[-1], 1), "load_s": round(load_s, 1),
            "converge_s": round(converge_s, 1),
        }))


if __name__ == "__main__":
    main()
