"""The Kubernetes watchers against a real kube-apiserver + controller-manager (no mocks):
create/update/delete of every watched kind reaches the cache, EndpointSlices follow pod
readiness, the RBAC of daemonset/base/rbac.yaml is enough (and no more), Events are recorded."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes import utils as k8s_utils

from bgpd.kube.client import KubeClient
from bgpd.kube.errors import KubeError
from bgpd.kube.events import EventRecorder, ObjectRef
from tests.integration.kube_fixtures import (
    STEADY_TIMING,
    cache_matches_server,
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

REPO = Path(__file__).resolve().parents[2]
NODE = "node1"
OTHER_NODE = "node2"


@pytest.fixture(scope="module")
def cp():
    plane = start_control_plane()
    try:
        for name in (NODE, OTHER_NODE):
            plane.api("POST", "/api/v1/nodes", node_body(name, {"kubernetes.io/hostname": name}))
        yield plane
    finally:
        plane.close()


def test_crud_of_every_kind_reaches_the_cache(cp):
    ns = "crud"
    ensure_namespace(cp, ns)
    cp.api("POST", f"/api/v1/namespaces/{ns}/pods", pod_body(ns, "before", NODE))
    cp.api("POST", f"/api/v1/namespaces/{ns}/pods", pod_body(ns, "elsewhere", OTHER_NODE))
    cp.api(
        "POST",
        f"/api/v1/namespaces/{ns}/services",
        service_body(ns, "svc-a", {"app": "a"}, ["198.51.100.1"]),
    )

    with running_cache(cp.kubeconfig, NODE, STEADY_TIMING) as cache:
        assert cache.wait_synced(30), f"not synced: {cache.synced_kinds()} {cache.stats()}"
        eventually(lambda: cache_matches_server(cp, cache, NODE), "initial state in the cache")
        snap = cache.snapshot()
        assert snap.synced and snap.node is not None and snap.node.name == NODE
        assert (
            f"{ns}/before" in snap.pods and f"{ns}/elsewhere" not in snap.pods
        )  # only this node's pods
        assert snap.services[f"{ns}/svc-a"].external_ips == ("198.51.100.1",)
        # node-ipam gives the Node a pod CIDR shortly after creation: watched as an update
        eventually(lambda: cache.snapshot().node.pod_cidrs, "the Node's podCIDRs from node-ipam")

        # creates
        cp.api("POST", f"/api/v1/namespaces/{ns}/pods", pod_body(ns, "after", NODE))
        cp.api(
            "POST",
            f"/api/v1/namespaces/{ns}/services",
            service_body(ns, "svc-b", type_="LoadBalancer"),
        )
        eventually(lambda: f"{ns}/after" in cache.snapshot().pods, "new Pod")
        eventually(lambda: f"{ns}/svc-b" in cache.snapshot().services, "new Service")

        # updates (spec, status subresource, metadata)
        cp.api(
            "PATCH",
            f"/api/v1/namespaces/{ns}/services/svc-a",
            {"spec": {"externalIPs": ["198.51.100.2"]}},
            content_type="application/merge-patch+json",
        )
        cp.api(
            "PATCH",
            f"/api/v1/namespaces/{ns}/services/svc-b/status",
            {"status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.5"}]}}},
            content_type="application/merge-patch+json",
        )
        set_pod_status(cp, ns, "after", "10.244.1.10", ready=True)
        cp.api(
            "PATCH",
            f"/api/v1/nodes/{NODE}",
            {"metadata": {"labels": {"rack": "r1"}}, "spec": {"unschedulable": True}},
            content_type="application/merge-patch+json",
        )
        eventually(
            lambda: cache.snapshot().services[f"{ns}/svc-a"].external_ips == ("198.51.100.2",),
            "externalIPs update",
        )
        eventually(
            lambda: cache.snapshot().services[f"{ns}/svc-b"].lb_ips == ("203.0.113.5",),
            "LB ingress update",
        )
        eventually(lambda: cache.snapshot().pods[f"{ns}/after"].ready, "Pod Ready")
        assert cache.snapshot().pods[f"{ns}/after"].ips == ("10.244.1.10",)
        eventually(lambda: cache.snapshot().node.labels.get("rack") == "r1", "Node label")
        assert cache.snapshot().node.unschedulable

        # deletes
        cp.api("DELETE", f"/api/v1/namespaces/{ns}/pods/before?gracePeriodSeconds=0")
        cp.api("DELETE", f"/api/v1/namespaces/{ns}/services/svc-a")
        eventually(lambda: f"{ns}/before" not in cache.snapshot().pods, "Pod deletion")
        eventually(lambda: f"{ns}/svc-a" not in cache.snapshot().services, "Service deletion")

        eventually(lambda: cache_matches_server(cp, cache, NODE), "cache equal to the server")
        assert cache.wakeups.count > 0
        stats = cache.stats()
        assert all(
            s.lists == 1 and s.relists == 0 and s.watch_restarts == 0 for s in stats.values()
        ), stats


def test_endpoint_slices_follow_pod_readiness(cp):
    ns = "eps"
    ensure_namespace(cp, ns)
    with running_cache(cp.kubeconfig, NODE, STEADY_TIMING) as cache:
        assert cache.wait_synced(30)
        cp.api("POST", f"/api/v1/namespaces/{ns}/pods", pod_body(ns, "web-1", NODE, {"app": "web"}))
        cp.api("POST", f"/api/v1/namespaces/{ns}/services", service_body(ns, "web", {"app": "web"}))
        set_pod_status(cp, ns, "web-1", "10.244.1.21", ready=True)

        def slices():
            return [e for e in cache.snapshot().endpoint_slices.values()
                    if e.service_key == f"{ns}/web"]

        # The cache keeps each slice as this node sees it: a ready endpoint here.
        eventually(lambda: any(e.local_ready == 1 and e.usable for e in slices()),
                   "a ready local endpoint in the Service's EndpointSlice")
        (sl,) = slices()
        assert sl.address_type == "IPv4" and sl.local_serving_terminating == 0

        set_pod_status(cp, ns, "web-1", "10.244.1.21", ready=False)

        def not_ready():
            return slices() and all(e.local_ready == 0 and not e.usable for e in slices())

        eventually(not_ready, "the endpoint turning not-ready")

        cp.api("DELETE", f"/api/v1/namespaces/{ns}/services/web")
        eventually(
            lambda: (
                not any(
                    e.service_key == f"{ns}/web" for e in cache.snapshot().endpoint_slices.values()
                )
            ),
            "the EndpointSlice garbage-collected with its Service",
        )


def _apply_yaml(admin: k8s_client.ApiClient, path: Path) -> None:
    for doc in yaml.safe_load_all(path.read_text()):
        if not doc:
            continue
        try:
            k8s_utils.create_from_dict(admin, doc)
        except k8s_utils.FailToCreateError as exc:
            if any(getattr(e, "status", None) != 409 for e in exc.api_exceptions):
                raise


def test_rbac_role_is_enough_and_no_more(cp, tmp_path):
    admin = k8s_config.new_client_from_config(config_file=str(cp.kubeconfig))
    try:
        _apply_yaml(admin, REPO / "daemonset" / "base" / "namespace.yaml")
        _apply_yaml(admin, REPO / "daemonset" / "base" / "rbac.yaml")
    finally:
        admin.close()
    for name in ("bgpd-bgp-passwords", "other"):
        status, _ = cp.request(
            "POST",
            "/api/v1/namespaces/bgpd-system/secrets",
            {"metadata": {"name": name}, "stringData": {"k": "v"}},
        )
        assert status in (201, 409)
    ensure_namespace(cp, "rbac")
    cp.api(
        "POST",
        "/api/v1/namespaces/rbac/services",
        service_body("rbac", "svc", external_ips=["198.51.100.9"]),
    )

    kubeconfig = cp.write_token_kubeconfig(tmp_path / "bgpd.kubeconfig", "bgpd-system", "bgpd")

    with running_cache(kubeconfig, NODE, STEADY_TIMING) as cache:
        assert cache.wait_synced(30), f"SA token could not sync: {cache.stats()}"
        eventually(
            lambda: cache_matches_server(cp, cache, NODE), "cache equal to the server (SA token)"
        )
        assert "rbac/svc" in cache.snapshot().services

    client = KubeClient.from_kubeconfig(str(kubeconfig))
    try:
        with pytest.raises(KubeError) as denied:
            client.request_json("GET", "/api/v1/secrets")
        assert denied.value.status == 403
        with pytest.raises(KubeError) as denied:
            client.request_json("GET", "/api/v1/namespaces/bgpd-system/secrets/other")
        assert denied.value.status == 403
        # Not even the agent's own password Secret: the kubelet mounts it as files.
        with pytest.raises(KubeError) as denied:
            client.request_json(
                "GET", "/api/v1/namespaces/bgpd-system/secrets/bgpd-bgp-passwords"
            )
        assert denied.value.status == 403

        # Events: allowed for the SA, and a steady state does not repeat them.
        recorder = EventRecorder(client, NODE)
        recorder.start()
        try:
            ref = ObjectRef("Service", "rbac", "svc")
            assert recorder.record(ref, "ExternalIPRejected", "198.51.100.9 is outside every pool")
            assert not recorder.record(
                ref, "ExternalIPRejected", "198.51.100.9 is outside every pool"
            )
            assert recorder.record(ref, "ExternalIPRejected", "another message")
            assert recorder.flush(10)
            assert recorder.sent == 2 and recorder.failed == 0, recorder.last_error
        finally:
            recorder.stop()
    finally:
        client.close()
    events = cp.api("GET", "/api/v1/namespaces/rbac/events")["items"]
    mine = [e for e in events if e["reason"] == "ExternalIPRejected"]
    assert len(mine) == 2
    assert {e["involvedObject"]["name"] for e in mine} == {"svc"}
    assert mine[0]["source"]["component"] == "bgpd"
