"""Raw Kubernetes JSON to lean model objects: fields, defaults, and never raising."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from bgpd.kube import convert
from bgpd.model import EndpointSliceInfo, NamespaceInfo, NodeInfo, PodInfo, ServiceInfo

NODE = {
    "metadata": {
        "name": "node1",
        "labels": {"kubernetes.io/hostname": "node1", "rack": "r1"},
        "annotations": {
            "bgpd.dev/asn": "65001",
            "other.io/asn": "65002",
            "kubectl.kubernetes.io/last-applied-configuration": "{}",
        },
        "resourceVersion": "42",
    },
    "spec": {
        "podCIDR": "10.244.1.0/24",
        "podCIDRs": ["10.244.1.0/24", "fd00:1::/64"],
        "unschedulable": True,
    },
    "status": {
        "addresses": [
            {"type": "InternalIP", "address": "10.0.0.1"},
            {"type": "Hostname", "address": "node1"},
        ]
    },
}

POD = {
    "metadata": {
        "namespace": "default",
        "name": "web-1",
        "creationTimestamp": "2024-05-01T10:00:00Z",
        "annotations": {"a": "b", "bgpd.dev/external-ips": "198.51.100.9"},
    },
    "spec": {"nodeName": "node1", "hostNetwork": False},
    "status": {
        "phase": "Running",
        "podIP": "10.244.1.5",
        "podIPs": [{"ip": "10.244.1.5"}, {"ip": "fd00:1::5"}],
        "conditions": [
            {"type": "PodScheduled", "status": "True"},
            {"type": "Ready", "status": "True"},
        ],
    },
}

SERVICE = {
    "metadata": {"namespace": "shop", "name": "web", "creationTimestamp": "2024-05-01T10:00:01Z"},
    "spec": {
        "type": "LoadBalancer",
        "clusterIP": "10.96.0.10",
        "clusterIPs": ["10.96.0.10", "fd00:96::10"],
        "externalIPs": ["198.51.100.7"],
        "externalTrafficPolicy": "Local",
        "internalTrafficPolicy": "Cluster",
    },
    "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.9"}, {"hostname": "lb.example"}]}},
}

SLICE = {
    "metadata": {
        "namespace": "shop",
        "name": "web-abcde",
        "labels": {"kubernetes.io/service-name": "web"},
    },
    "addressType": "IPv4",
    "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}, {"name": None, "port": 9}],
    "endpoints": [
        {
            "addresses": ["10.244.1.5"],
            "nodeName": "node1",
            "conditions": {"ready": True, "serving": True, "terminating": False},
        },
        {"addresses": ["10.244.2.7"], "conditions": {}},
        {"addresses": ["10.244.1.6"], "nodeName": "node1",
         "conditions": {"ready": False, "serving": True, "terminating": True}},
    ],
}


def test_node_fields():
    node = convert.node_from(NODE)
    assert node == NodeInfo(
        name="node1",
        labels={"kubernetes.io/hostname": "node1", "rack": "r1"},
        annotations={"bgpd.dev/asn": "65001"},  # only ours are kept
        pod_cidrs=("10.244.1.0/24", "fd00:1::/64"),
        addresses=(("InternalIP", "10.0.0.1"), ("Hostname", "node1")),
        unschedulable=True,
    )


def test_node_pod_cidr_fallback_and_defaults():
    node = convert.node_from({"metadata": {"name": "n"}, "spec": {"podCIDR": "10.244.3.0/24"}})
    assert node == NodeInfo(name="n", pod_cidrs=("10.244.3.0/24",))


def test_pod_fields():
    pod = convert.pod_from(POD)
    assert pod == PodInfo(
        namespace="default",
        name="web-1",
        node_name="node1",
        ips=("10.244.1.5", "fd00:1::5"),
        phase="Running",
        ready=True,
        annotations={"bgpd.dev/external-ips": "198.51.100.9"},
        created=1714557600.0,
        deleting=False,
        host_network=False,
    )


def test_pod_not_ready_deleting_host_network_and_pod_ip_fallback():
    raw = {
        "metadata": {"namespace": "ns", "name": "p", "deletionTimestamp": "2024-05-01T10:00:00Z"},
        "spec": {"hostNetwork": True},
        "status": {"podIP": "10.0.0.9", "conditions": [{"type": "Ready", "status": "False"}]},
    }
    pod = convert.pod_from(raw)
    assert pod is not None
    assert (pod.ips, pod.ready, pod.deleting, pod.host_network, pod.phase, pod.node_name) == (
        ("10.0.0.9",),
        False,
        True,
        True,
        "Pending",
        "",
    )


def test_service_fields():
    svc = convert.service_from(SERVICE)
    assert svc == ServiceInfo(
        namespace="shop",
        name="web",
        type="LoadBalancer",
        cluster_ips=("10.96.0.10", "fd00:96::10"),
        external_ips=("198.51.100.7",),
        lb_ips=("203.0.113.9",),  # hostname-only ingress entries carry no IP
        external_traffic_policy="Local",
        internal_traffic_policy="Cluster",
        created=1714557601.0,
    )


def test_service_defaults_and_headless():
    svc = convert.service_from(
        {"metadata": {"namespace": "a", "name": "b"}, "spec": {"clusterIP": "None"}}
    )
    assert svc == ServiceInfo(namespace="a", name="b", cluster_ips=("None",))


def test_endpoint_slice_is_kept_as_seen_from_this_node():
    eps = convert.endpoint_slice_from(SLICE, node="node1")
    assert eps == EndpointSliceInfo(
        namespace="shop",
        name="web-abcde",
        service_name="web",
        address_type="IPv4",
        ports=(("http", "TCP"),),  # the port with a null name is one kube-proxy ignores
        local_ready=1,
        local_serving_terminating=1,
        usable=True,
    )
    assert eps.service_key == "shop/web"
    elsewhere = convert.endpoint_slice_from(SLICE, node="node2")
    assert (elsewhere.local_ready, elsewhere.local_serving_terminating, elsewhere.usable) == (
        0, 0, True)


def test_endpoint_slice_without_service_label_is_skipped():
    raw = {"metadata": {"namespace": "a", "name": "s"}, "addressType": "IPv4", "endpoints": []}
    assert convert.endpoint_slice_from(raw) is None


def test_identity_required():
    assert convert.node_from({"metadata": {}}) is None
    assert convert.pod_from({"metadata": {"name": "no-namespace"}}) is None
    assert convert.service_from("not an object") is None
    assert convert.object_key({"metadata": {"namespace": "a", "name": "b"}}) == "a/b"
    assert convert.object_key({"metadata": {"name": "n"}}) == "n"
    assert convert.object_key(None) is None


def test_malformed_fields_fall_back_to_defaults():
    raw = {
        "metadata": {
            "namespace": "a",
            "name": "b",
            "annotations": {"ok": "1", "bad": 5, "bgpd.dev/med": 5},
            "creationTimestamp": "yesterday",
        },
        "spec": {"externalIPs": "198.51.100.1", "clusterIPs": [None, "10.96.0.1", 7], "type": 3},
        "status": {"loadBalancer": {"ingress": "x"}},
    }
    svc = convert.service_from(raw)
    assert svc == ServiceInfo(
        namespace="a", name="b", cluster_ips=("10.96.0.1",),
        problems=("bgpd.dev/med: value is not a string",),
    )


def test_parse_time():
    assert convert.parse_time("1970-01-01T00:01:00Z") == 60.0
    assert convert.parse_time("2024-05-01T10:00:00.5+00:00") == 1714557600.5
    assert convert.parse_time(None) == 0.0
    assert convert.parse_time("garbage") == 0.0


def test_equal_json_gives_equal_objects():
    # The relist diff relies on value equality of the lean objects.
    import copy

    for fn, raw in [
        (convert.node_from, NODE),
        (convert.pod_from, POD),
        (convert.service_from, SERVICE),
        (convert.endpoint_slice_from, SLICE),
    ]:
        assert fn(raw) == fn(copy.deepcopy(raw))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
field_names = st.sampled_from(
    [
        "metadata",
        "spec",
        "status",
        "name",
        "namespace",
        "labels",
        "annotations",
        "podCIDRs",
        "podCIDR",
        "addresses",
        "podIPs",
        "conditions",
        "endpoints",
        "clusterIPs",
        "externalIPs",
        "loadBalancer",
        "ingress",
        "ip",
        "type",
        "address",
        "nodeName",
        "addressType",
        "creationTimestamp",
        "deletionTimestamp",
    ]
)
k8s_like = st.recursive(
    json_values,
    lambda children: (
        st.dictionaries(field_names, children, max_size=6) | st.lists(children, max_size=3)
    ),
    max_leaves=40,
)


@settings(max_examples=300, deadline=None)
@given(k8s_like)
def test_converters_never_raise(obj):
    for fn in (
        convert.node_from,
        convert.pod_from,
        convert.service_from,
        convert.endpoint_slice_from,
    ):
        result = fn(obj)
        assert result is None or result.name
    convert.object_key(obj)
    convert.resource_version(obj)


def test_wrong_container_types_are_ignored():
    assert convert.node_from({"metadata": {"name": "n"}, "status": {"addresses": 5}}) == NodeInfo(
        name="n"
    )
    pod = convert.pod_from(
        {"metadata": {"namespace": "a", "name": "p"}, "status": {"podIPs": 1, "conditions": 2}}
    )
    assert pod == PodInfo(namespace="a", name="p")
    raw = {
        "metadata": {"namespace": "a", "name": "s", "labels": {"kubernetes.io/service-name": "x"}},
        "endpoints": 3,
    }
    assert convert.endpoint_slice_from(raw) == EndpointSliceInfo(
        namespace="a", name="s", service_name="x", ports=()
    )


# ------------------------------------------------------------------ hostile input


def test_only_our_known_annotations_are_kept_and_the_rest_reported():
    raw = {"metadata": {"namespace": "t", "name": "s", "annotations": {
        "bgpd.dev/communities": "65000:1",
        "bgpd.dev/comunities": "65000:2",  # a typo is reported, not kept
        "bgpd.dev/local-pref": "9" * (convert.MAX_ANNOTATION_VALUE + 1),
        "team.example/notes": "x" * 200_000,  # not ours: never kept, never reported
    }}, "spec": {"clusterIP": "10.96.0.1"}}
    svc = convert.service_from(raw)
    assert dict(svc.annotations) == {"bgpd.dev/communities": "65000:1"}
    assert len(svc.problems) == 2
    assert svc.problems[0].startswith("bgpd.dev/comunities: unknown annotation")
    assert svc.problems[1] == (f"bgpd.dev/local-pref: value of "
                               f"{convert.MAX_ANNOTATION_VALUE + 1} characters is longer than "
                               f"{convert.MAX_ANNOTATION_VALUE}; ignored")
    other = convert.service_from(raw, prefix="example.org")
    assert not other.annotations and not other.problems


def test_address_lists_and_problems_are_bounded():
    many = [f"198.51.{i // 256}.{i % 256}" for i in range(10_000)]
    raw = {"metadata": {"namespace": "t", "name": "s",
                        "annotations": {f"bgpd.dev/x{i}": "1" for i in range(500)}},
           "spec": {"clusterIP": "10.96.0.1", "externalIPs": many + ["1" * 5000]}}
    svc = convert.service_from(raw)
    assert svc.external_ips == tuple(many[:convert.MAX_ADDRESSES])
    assert len(svc.problems) == convert.MAX_PROBLEMS
    assert all(len(p) <= convert.MAX_PROBLEM_TEXT for p in svc.problems)
    assert "is not an address" in svc.problems[0]
    assert f"{10_000 - convert.MAX_ADDRESSES} addresses beyond" in svc.problems[1]


def test_proxy_mode_ingress_ips_and_ports():
    raw = {"metadata": {"namespace": "t", "name": "s"},
           "spec": {"clusterIP": "10.96.0.1", "type": "LoadBalancer",
                    "ports": [{"name": "http", "port": 80}, {"name": "dns", "port": 53,
                                                             "protocol": "UDP"}]},
           "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.1", "ipMode": "Proxy"},
                                                   {"ip": "203.0.113.2", "ipMode": "VIP"}]}}}
    svc = convert.service_from(raw)
    assert svc.lb_ips == ("203.0.113.2",)  # a Proxy-mode IP belongs to the load balancer
    assert svc.ports == (("http", "TCP"), ("dns", "UDP"))


def test_namespace_labels():
    raw = {"metadata": {"name": "team-a", "labels": {"tenant": "a"}}}
    assert convert.namespace_from(raw) == NamespaceInfo("team-a", {"tenant": "a"})


def test_uids_are_kept_for_events_and_bounded():
    meta = {"name": "a", "namespace": "ns", "uid": "6f1c0e9e-4b6e-4f5e-9f4e-1d2c3b4a5f60"}
    assert convert.service_from({"metadata": meta, "spec": {}}).uid == meta["uid"]
    assert convert.pod_from({"metadata": meta, "spec": {}, "status": {}}).uid == meta["uid"]
    assert convert.node_from({"metadata": {"name": "n", "uid": "u1"}}).uid == "u1"
    odd = {**meta, "uid": "x" * 65}
    assert convert.service_from({"metadata": odd, "spec": {}}).uid == ""
