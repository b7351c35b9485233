"""Small builders for policy tests: a config and snapshot objects with readable defaults."""

from __future__ import annotations

from bgpd.config import parse_config
from bgpd.model import EndpointInfo, EndpointSliceInfo, NodeInfo, PodInfo, ServiceInfo, Snapshot
from bgpd.policy.endpoints import summarize

NODE = "node1"
OTHER = "node2"

BASE_CONFIG = {
    "bgp": {"asn": 64512, "peers": [{"address": "10.0.0.1", "asn": 65000}]},
    "cluster": {"pod_cidrs": ["10.244.0.0/16", "fd00:244::/32"], "service_cidrs": ["10.96.0.0/16"]},
    "pools": [
        {"name": "external", "cidrs": ["198.51.100.0/24", "2001:db8:e::/64"],
         "allow": ["external-ip", "pod-external-ip"], "communities": ["65000:100"]},
        {"name": "lb", "cidrs": ["203.0.113.0/24", "2001:db8:b::/64"],
         "allow": ["load-balancer-ip"], "local_pref": 200},
        {"name": "services", "cidrs": ["10.96.0.0/16"], "allow": ["cluster-ip"]},
        {"name": "pods-elsewhere", "cidrs": ["100.64.0.0/16"], "allow": ["pod-ip"]},
    ],
}


def config(**overrides):
    raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in BASE_CONFIG.items()}
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key] = {**raw[key], **value}
        else:
            raw[key] = value
    return parse_config(raw)


def node(name=NODE, pod_cidrs=("10.244.1.0/24", "fd00:244:1::/64"), labels=None,
         annotations=None):
    return NodeInfo(name=name, labels=labels or {}, annotations=annotations or {},
                    pod_cidrs=tuple(pod_cidrs), addresses=(("InternalIP", "172.20.1.11"),))


def pod(name, ips=("10.244.1.5",), ready=True, annotations=None, created=1.0, ns="default",
        **kw):
    return PodInfo(namespace=ns, name=name, node_name=NODE, ips=tuple(ips), phase="Running",
                   ready=ready, annotations=annotations or {}, created=created, **kw)


def service(name, ns="default", created=1.0, **kw):
    kw.setdefault("cluster_ips", ("10.96.0.10",))
    return ServiceInfo(namespace=ns, name=name, created=created, **kw)


def slice_for(svc_name, *endpoints, ns="default", name=None, address_type="IPv4",
              ports=(("", "TCP"),), node_name=NODE):
    """A slice as ``node_name``'s agent keeps it; endpoints are (node, ready, serving,
    terminating) tuples."""
    v6 = address_type == "IPv6"
    eps = tuple(EndpointInfo(addresses=(f"fd00:244:9::{i + 1}" if v6 else f"10.244.9.{i}",),
                             node_name=n, ready=r, serving=s, terminating=t)
                for i, (n, r, s, t) in enumerate(endpoints))
    local_ready, local_st, usable = summarize(eps, node_name)
    return EndpointSliceInfo(namespace=ns, name=name or f"{svc_name}-abc",
                             service_name=svc_name, address_type=address_type,
                             ports=tuple(ports), local_ready=local_ready,
                             local_serving_terminating=local_st, usable=usable)


def snapshot(node_info=None, pods=(), services=(), slices=(), synced=True, namespaces=()):
    return Snapshot(
        node=node_info if node_info is not None else node(),
        pods={p.key: p for p in pods},
        services={s.key: s for s in services},
        endpoint_slices={s.key: s for s in slices},
        synced=synced,
        namespaces={n.name: n for n in namespaces},
    )


def record_judgements(monkeypatch) -> list[str]:
    """The names of the Services decide.py judges from now on (calls of service_claims),
    in order: what a memo or a kept table spares shows as names missing here."""
    from bgpd.policy import decide, services

    judged: list[str] = []
    real = services.service_claims

    def recording(svc, *rest):
        judged.append(svc.name)
        return real(svc, *rest)

    monkeypatch.setattr(decide, "service_claims", recording)
    return judged
