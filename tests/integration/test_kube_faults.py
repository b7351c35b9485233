"""The watchers under faults, injected by a TCP proxy between them and a real kube-apiserver:
cut connections, stalled streams, an API-server outage, 410 Gone after etcd compaction.
Afterwards the cache equals the server; during an outage it keeps its last state."""

from __future__ import annotations

import time

import pytest

from tests.controlplane.faultproxy import FaultProxy
from tests.integration.kube_fixtures import (
    FAST_TIMING,
    cache_matches_server,
    cache_state,
    ensure_namespace,
    eventually,
    node_body,
    pod_body,
    running_cache,
    service_body,
    set_pod_status,
    start_control_plane,
)

pytestmark = pytest.mark.integration

NODE = "node1"
NS = "faults"

OUTAGE_S = 20.0
"""How long the API server stays down in the outage test (long enough for several
reconnect attempts with FAST_TIMING's backoff, short enough for CI)."""

RECOVERY_S = FAST_TIMING.watch_read_timeout_s + FAST_TIMING.backoff_max_s * 2 + 10
"""Deadline for the cache to catch up after a fault ends: detection + backoff + slack."""


@pytest.fixture(scope="module")
def cp():
    # No watch cache: watches are served by etcd itself, so compacting etcd makes a watch
    # from an older resourceVersion fail with 410 Gone, deterministically.
    plane = start_control_plane(watch_cache=False)
    try:
        plane.api("POST", "/api/v1/nodes", node_body(NODE))
        ensure_namespace(plane, NS)
        for i in range(3):
            plane.api(
                "POST",
                f"/api/v1/namespaces/{NS}/pods",
                pod_body(NS, f"pod-{i}", NODE, {"app": "web"}),
            )
            set_pod_status(plane, NS, f"pod-{i}", f"10.244.1.{i + 10}", ready=True)
        for i in range(60):  # more than one list page (FAST_TIMING.page_size)
            plane.api(
                "POST",
                f"/api/v1/namespaces/{NS}/services",
                service_body(NS, f"svc-{i}", {"app": "web"}, [f"198.51.100.{i + 1}"]),
            )
        yield plane
    finally:
        plane.close()


@pytest.fixture
def proxied(cp, tmp_path):
    """(proxy, cache): the cache reaches the API server only through the proxy."""
    with FaultProxy(cp.port) as proxy:
        kubeconfig = cp.write_kubeconfig(tmp_path / "proxied.kubeconfig", server=proxy.url)
        with running_cache(kubeconfig, NODE) as cache:
            assert cache.wait_synced(30), cache.stats()
            eventually(lambda: cache_matches_server(cp, cache, NODE), "initial sync")
            yield proxy, cache


def _restarts(cache) -> int:
    return sum(s.watch_restarts for s in cache.stats().values())


def test_cut_connections_are_resumed(cp, proxied):
    proxy, cache = proxied
    before = _restarts(cache)
    assert proxy.cut() >= 4  # one watch per kind at least
    cp.api(
        "PATCH",
        f"/api/v1/namespaces/{NS}/services/svc-0",
        {"spec": {"externalIPs": ["198.51.100.200"]}},
        content_type="application/merge-patch+json",
    )
    eventually(
        lambda: cache.snapshot().services[f"{NS}/svc-0"].external_ips == ("198.51.100.200",),
        "update made after the cut",
        RECOVERY_S,
    )
    assert _restarts(cache) > before
    eventually(
        lambda: cache_matches_server(cp, cache, NODE), "cache equal to the server", RECOVERY_S
    )


def test_stalled_stream_is_detected(cp, proxied):
    proxy, cache = proxied
    proxy.stall()  # open connections go silent; new ones work
    try:
        cp.api(
            "POST",
            f"/api/v1/namespaces/{NS}/services",
            service_body(NS, "after-stall", external_ips=["198.51.100.201"]),
        )
        eventually(
            lambda: f"{NS}/after-stall" in cache.snapshot().services,
            "a change made while the old stream was stalled",
            RECOVERY_S,
        )
    finally:
        proxy.resume()
    eventually(
        lambda: cache_matches_server(cp, cache, NODE), "cache equal to the server", RECOVERY_S
    )


def test_gone_relists_without_touching_unchanged_objects(cp, proxied):
    proxy, cache = proxied
    unchanged = cache.snapshot().services[f"{NS}/svc-30"]
    relists_before = cache.stats()["Service"].relists

    proxy.stall(new_connections=True)  # the cache hears nothing from now on
    try:
        cp.api(
            "POST",
            f"/api/v1/namespaces/{NS}/services",
            service_body(NS, "during-gap", external_ips=["198.51.100.202"]),
        )
        cp.api(
            "PATCH",
            f"/api/v1/namespaces/{NS}/services/svc-1",
            {"spec": {"externalIPs": ["198.51.100.203"]}},
            content_type="application/merge-patch+json",
        )
        cp.api("DELETE", f"/api/v1/namespaces/{NS}/services/svc-2")
        set_pod_status(cp, NS, "pod-0", "10.244.1.10", ready=False)
        cp.compact_etcd()  # every resourceVersion the cache knows is now too old
        proxy.cut()
    finally:
        proxy.resume()

    eventually(
        lambda: cache_matches_server(cp, cache, NODE),
        "cache equal to the server after 410",
        RECOVERY_S,
    )
    snap = cache.snapshot()
    assert f"{NS}/during-gap" in snap.services and f"{NS}/svc-2" not in snap.services
    assert snap.services[f"{NS}/svc-1"].external_ips == ("198.51.100.203",)
    assert not snap.pods[f"{NS}/pod-0"].ready
    assert cache.stats()["Service"].relists > relists_before
    # The relist diff kept the very same object for what did not change: no delete/add.
    assert snap.services[f"{NS}/svc-30"] is unchanged


def _quiet_state(cache, settle_s: float = 0.5):
    """The cache's state if it did not change for ``settle_s``, else None."""
    first = cache_state(cache)
    time.sleep(settle_s)
    return first if cache_state(cache) == first else None


def test_apiserver_outage_keeps_last_state(cp, proxied):
    proxy, cache = proxied
    cp.stop_apiserver()
    try:
        # Controllers may still have been updating (an EndpointSlice after the previous
        # test's pod change) and events already on the wire may land just after the stop:
        # the outage starts from the first state that holds still.
        before = eventually(lambda: _quiet_state(cache), "a quiet cache after the stop")
        deadline = time.monotonic() + OUTAGE_S
        while time.monotonic() < deadline:  # the whole outage: nothing may disappear
            assert cache_state(cache) == before
            assert cache.synced
            time.sleep(0.5)
        assert _restarts(cache) > 0
        assert any(s.last_error for s in cache.stats().values())
    finally:
        cp.start_apiserver()  # same port, same etcd data
    cp.api(
        "POST",
        f"/api/v1/namespaces/{NS}/services",
        service_body(NS, "after-outage", external_ips=["198.51.100.204"]),
    )
    eventually(
        lambda: f"{NS}/after-outage" in cache.snapshot().services,
        "a change after the outage",
        RECOVERY_S,
    )
    eventually(
        lambda: cache_matches_server(cp, cache, NODE), "cache equal to the server", RECOVERY_S
    )
