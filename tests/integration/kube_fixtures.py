"""Helpers for the Kubernetes integration tests: a real control plane, object builders,
the cache under test, and polling with deadlines (never sleep-and-hope)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import pytest

from bgpd.kube import convert
from bgpd.kube.cache import ClusterCache
from bgpd.kube.client import KubeClient
from bgpd.kube.watch import WatchTiming
from tests.controlplane.controlplane import ControlPlane, ControlPlaneError, find_binaries

EVENTUALLY_TIMEOUT_S = 30.0
"""Default deadline for a change to show up (in the cache or on the server)."""

POLL_S = 0.1

FAST_TIMING = WatchTiming(
    watch_timeout_s=60,
    watch_read_timeout_s=5.0,  # a stalled stream is noticed within seconds
    backoff_initial_s=0.2,
    backoff_max_s=2.0,  # reconnects quickly once the API server is back
    page_size=50,  # several pages even with few objects: exercises `continue`
)
"""Watch timing for fault tests: the production defaults would make them take minutes."""

STEADY_TIMING = WatchTiming(page_size=50)
"""Production timing (small pages to exercise `continue`): no fault, so no restart either."""


def start_control_plane(**kwargs: Any) -> ControlPlane:
    """Start a control plane; FAIL (not skip) when the binaries were not built."""
    try:
        find_binaries()
    except ControlPlaneError as exc:
        pytest.fail(str(exc), pytrace=False)
    return ControlPlane(**kwargs).start()


def eventually(check: Callable[[], Any], what: str, timeout: float = EVENTUALLY_TIMEOUT_S) -> Any:
    """Poll ``check`` until it returns a truthy value; fail with the last value on timeout."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except AssertionError as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(POLL_S)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}; last: {last!r}"[:2000])


class WakeupCounter:
    """The ``notify`` callback under test: counts calls (from the watcher threads)."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1


@contextlib.contextmanager
def running_cache(
    kubeconfig: str, node: str, timing: WatchTiming = FAST_TIMING
) -> Iterator[ClusterCache]:
    """A started ClusterCache, stopped (threads joined) afterwards whatever happens."""
    client = KubeClient.from_kubeconfig(str(kubeconfig))
    wakeups = WakeupCounter()
    cache = ClusterCache(client, node, notify=wakeups, timing=timing)
    cache.wakeups = wakeups  # type: ignore[attr-defined]  # for tests counting notifications
    cache.start()
    try:
        yield cache
    finally:
        cache.stop()
        client.close()


# ------------------------------------------------------------------ object builders


def node_body(name: str, labels: dict | None = None) -> dict:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels or {}}}


def create_node(cp: ControlPlane, name: str, address: str, pod_cidr: str) -> None:
    """A Node as a kubelet would leave it: pod CIDR set, InternalIP in its status."""
    cp.api("POST", "/api/v1/nodes", {
        "apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
        "spec": {"podCIDR": pod_cidr, "podCIDRs": [pod_cidr]}})
    cp.api("PATCH", f"/api/v1/nodes/{name}/status",
           {"status": {"addresses": [{"type": "InternalIP", "address": address}]}},
           content_type="application/merge-patch+json")


def pod_body(namespace: str, name: str, node: str, labels: dict | None = None) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"namespace": namespace, "name": name, "labels": labels or {}},
        "spec": {
            "nodeName": node,  # bound directly: no scheduler runs
            "containers": [{"name": "c", "image": "example.invalid/echo:1"}],
            "terminationGracePeriodSeconds": 0,
        },
    }


def service_body(
    namespace: str,
    name: str,
    selector: dict | None = None,
    external_ips: list[str] | None = None,
    type_: str = "ClusterIP",
) -> dict:
    spec: dict = {"type": type_, "ports": [{"port": 8080, "targetPort": 8080, "protocol": "TCP"}]}
    if selector:
        spec["selector"] = selector
    if external_ips:
        spec["externalIPs"] = external_ips
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"namespace": namespace, "name": name},
        "spec": spec,
    }


def set_pod_status(cp: ControlPlane, namespace: str, name: str, ip: str, ready: bool) -> dict:
    """Write what a kubelet would: Running, the pod IP, the Ready condition."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    status = {
        "phase": "Running",
        "podIP": ip,
        "podIPs": [{"ip": ip}],
        "hostIP": "127.0.0.1",
        "startTime": now,
        "conditions": [
            {"type": "Ready", "status": "True" if ready else "False", "lastTransitionTime": now},
            {
                "type": "ContainersReady",
                "status": "True" if ready else "False",
                "lastTransitionTime": now,
            },
        ],
    }
    return cp.api(
        "PATCH",
        f"/api/v1/namespaces/{namespace}/pods/{name}/status",
        {"status": status},
        content_type="application/merge-patch+json",
    )


def ensure_namespace(cp: ControlPlane, name: str) -> None:
    status, _ = cp.request("POST", "/api/v1/namespaces", {"metadata": {"name": name}})
    assert status in (201, 409), status


# ------------------------------------------------------------------ server truth


def _list_all(cp: ControlPlane, path: str) -> list[dict]:
    items, cont = [], ""
    while True:
        page = cp.api("GET", f"{path}{'&' if '?' in path else '?'}limit=500&continue={cont}")
        items += page.get("items", [])
        cont = page["metadata"].get("continue", "")
        if not cont:
            return items


def server_state(cp: ControlPlane, node: str) -> dict[str, dict[str, Any]]:
    """What the cache should hold, computed from a fresh admin list and the same converters."""

    def convert_all(items: list[dict], fn: Callable) -> dict[str, Any]:
        out = {}
        for obj in items:
            value = fn(obj)
            if value is not None:
                out[convert.object_key(obj)] = value
        return out

    return {
        "node": convert_all(
            _list_all(cp, f"/api/v1/nodes?fieldSelector=metadata.name={node}"), convert.node_from
        ),
        "pods": convert_all(
            _list_all(cp, f"/api/v1/pods?fieldSelector=spec.nodeName={node}"), convert.pod_from
        ),
        "services": convert_all(_list_all(cp, "/api/v1/services"), convert.service_from),
        "endpoint_slices": convert_all(
            _list_all(cp, "/apis/discovery.k8s.io/v1/endpointslices"),
            partial(convert.endpoint_slice_from, node=node),
        ),
        "namespaces": convert_all(_list_all(cp, "/api/v1/namespaces"), convert.namespace_from),
    }


def cache_state(cache: ClusterCache) -> dict[str, dict[str, Any]]:
    snap = cache.snapshot()
    return {
        "node": {snap.node.name: snap.node} if snap.node else {},
        "pods": dict(snap.pods),
        "services": dict(snap.services),
        "endpoint_slices": dict(snap.endpoint_slices),
        "namespaces": dict(snap.namespaces),
    }


def cache_matches_server(cp: ControlPlane, cache: ClusterCache, node: str) -> bool:
    """True when equal, else a short description of the first difference (for messages)."""
    want, got = server_state(cp, node), cache_state(cache)
    for kind in want:
        if want[kind] != got[kind]:
            missing = sorted(set(want[kind]) - set(got[kind]))[:3]
            extra = sorted(set(got[kind]) - set(want[kind]))[:3]
            changed = sorted(
                k for k in set(want[kind]) & set(got[kind]) if want[kind][k] != got[kind][k]
            )[:3]
            return _Diff(f"{kind}: missing {missing} extra {extra} changed {changed}")
    return True


class _Diff(str):
    """A falsy description of a difference, so ``eventually`` keeps polling but reports it."""

    def __bool__(self) -> bool:
        return False
