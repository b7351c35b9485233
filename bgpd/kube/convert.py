"""Raw Kubernetes JSON (dicts from ``json.loads``) to the lean ``bgpd.model`` snapshot types.

Pure functions, no client import. Each converter returns ``None`` (and logs why) for an
object it cannot use instead of raising: one malformed object must never stop a watch.
Missing optional fields take the model's defaults. Strings repeated across thousands of
objects (namespaces, node names, phases) are interned to keep 20,000 Services small.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Mapping
from datetime import datetime
from types import MappingProxyType
from typing import Any

from bgpd.model import (
    EndpointInfo,
    EndpointSliceInfo,
    NamespaceInfo,
    NodeInfo,
    PodInfo,
    ServiceInfo,
)
from bgpd.policy import annotations as ann
from bgpd.policy.endpoints import summarize

log = logging.getLogger(__name__)

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
"""Label the EndpointSlice controller sets to the owning Service's name."""

DEFAULT_PREFIX = "bgpd.dev"

MAX_ANNOTATION_VALUE = 2048
"""Characters of one of our annotations' value that are kept. Longer values are refused
(reported, never stored): 32 large communities or 64 IPv6 addresses fit well below it."""

MAX_ADDRESSES = 64
"""Addresses kept from one list (spec.externalIPs, LoadBalancer ingress, pod IPs); the rest
is reported. The API server bounds neither list; every agent would parse them all."""

MAX_ADDRESS_TEXT = 64
"""A longer string in an address list is not an address: reported, not kept."""

MAX_TAINTS = 64
"""Taint keys kept per Node (drain.taints): only admins and the kubelet write Nodes, but a
bound keeps a scripted mistake from costing every agent memory."""

MAX_PROBLEMS = 8
"""Conversion problems kept per object (the policy reports each; more would only repeat)."""

MAX_PROBLEM_TEXT = 200

_EMPTY: Mapping[str, str] = MappingProxyType({})  # shared by every object without labels

MAX_SHARED_PORTS = 4096
"""Distinct port lists shared between objects (most Services and slices have one of a few,
such as ``(("http", "TCP"),)``); beyond this many, a list is kept per object."""

_PORTS: dict[tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]] = {}


def _shared_ports(ports: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    """One tuple object per distinct port list: 20,000 objects then hold a reference each,
    not two tuples each (~100 bytes). Bounded: tenants choose port names."""
    shared = _PORTS.get(ports)
    if shared is not None:
        return shared
    if len(_PORTS) < MAX_SHARED_PORTS:
        return _PORTS.setdefault(ports, ports)
    return ports

Converter = Callable[[Any], Any]


def parse_time(value: Any) -> float:
    """RFC 3339 timestamp (``2024-05-01T10:00:00Z``) to unix seconds; 0.0 when absent/bad."""
    if not isinstance(value, str) or not value:
        return 0.0
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


class _Problems(list):
    """Bounded list of what conversion left out, for the policy to report."""

    def add(self, text: str) -> None:
        if len(self) < MAX_PROBLEMS:
            self.append(text[:MAX_PROBLEM_TEXT])

    def frozen(self) -> tuple[str, ...]:
        return tuple(self)


def _str_map(value: Any) -> Mapping[str, str]:
    """Labels as a read-only mapping of str to str; non-string entries dropped. Only for
    objects a tenant cannot write (Nodes, Namespaces): theirs are never kept whole."""
    if not isinstance(value, dict) or not value:
        return _EMPTY
    kept = {k: v for k, v in value.items() if isinstance(k, str) and isinstance(v, str)}
    return MappingProxyType(kept) if kept else _EMPTY


def _ours(value: Any, prefix: str, known: frozenset[str], problems: _Problems
          ) -> Mapping[str, str]:
    """Only our annotations (``<prefix>/<known name>``) with a bounded value; an unknown
    name under the prefix or an oversized value is reported instead of kept."""
    if not isinstance(value, dict) or not value:
        return _EMPTY
    head = prefix + "/"
    kept = {}
    for key, text in value.items():
        if not isinstance(key, str) or not key.startswith(head):
            continue
        if key[len(head):] not in known:
            problems.add(f"{key[:100]}: unknown annotation (known: "
                         f"{', '.join(sorted(known))})")
        elif not isinstance(text, str):
            problems.add(f"{key}: value is not a string")
        elif len(text) > MAX_ANNOTATION_VALUE:
            problems.add(f"{key}: value of {len(text)} characters is longer than "
                         f"{MAX_ANNOTATION_VALUE}; ignored")
        else:
            kept[key] = text
    return MappingProxyType(kept) if kept else _EMPTY


def _strs(value: Any) -> tuple[str, ...]:
    """A list of strings as a tuple; anything that is not a non-empty string is dropped."""
    if not isinstance(value, list):
        return ()
    return tuple(v for v in value if isinstance(v, str) and v)


def _addresses(values: Any, what: str, problems: _Problems) -> tuple[str, ...]:
    """At most MAX_ADDRESSES address strings of a bounded length."""
    kept = []
    dropped = 0
    for v in values if isinstance(values, list | tuple) else ():
        if not isinstance(v, str) or not v:
            continue
        if len(v) > MAX_ADDRESS_TEXT:
            problems.add(f"{what}: a {len(v)}-character entry is not an address; ignored")
        elif len(kept) < MAX_ADDRESSES:
            kept.append(v)
        else:
            dropped += 1
    if dropped:
        problems.add(f"{what}: {dropped} addresses beyond the first {MAX_ADDRESSES} ignored")
    return tuple(kept)


def _dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list:
    return value if isinstance(value, list) else []


def _name(obj: Any, kind: str, namespaced: bool) -> tuple[str, str] | None:
    """(namespace, name) of an object, or None (logged) when it has no usable identity."""
    if not isinstance(obj, dict):
        log.warning("skipping %s: not a JSON object (%s)", kind, type(obj).__name__)
        return None
    meta = _dict(obj.get("metadata"))
    name = meta.get("name")
    namespace = meta.get("namespace", "") if namespaced else ""
    if not isinstance(name, str) or not name:
        log.warning("skipping %s: metadata.name missing", kind)
        return None
    if namespaced and (not isinstance(namespace, str) or not namespace):
        log.warning("skipping %s %s: metadata.namespace missing", kind, name)
        return None
    return sys.intern(namespace), name


def object_key(obj: Any) -> str | None:
    """``namespace/name`` (or ``name`` for cluster-scoped objects) of a raw object."""
    if not isinstance(obj, dict):
        return None
    meta = _dict(obj.get("metadata"))
    name = meta.get("name")
    if not isinstance(name, str) or not name:
        return None
    namespace = meta.get("namespace")
    return f"{namespace}/{name}" if isinstance(namespace, str) and namespace else name


def resource_version(obj: Any) -> str | None:
    """metadata.resourceVersion of a raw object or list, None when absent."""
    if not isinstance(obj, dict):
        return None
    rv = _dict(obj.get("metadata")).get("resourceVersion")
    return rv if isinstance(rv, str) and rv else None


def _uid(meta: dict) -> str:
    """metadata.uid, for the Events about the object: ``kubectl describe`` finds an
    object's Events by name *and* uid."""
    uid = meta.get("uid")
    return uid if isinstance(uid, str) and len(uid) <= 64 else ""


def node_from(obj: Any, prefix: str = DEFAULT_PREFIX) -> NodeInfo | None:
    ident = _name(obj, "Node", namespaced=False)
    if ident is None:
        return None
    meta, spec, status = (_dict(obj.get(k)) for k in ("metadata", "spec", "status"))
    problems = _Problems()
    pod_cidrs = _strs(spec.get("podCIDRs"))[:MAX_ADDRESSES]
    if not pod_cidrs and isinstance(spec.get("podCIDR"), str) and spec["podCIDR"]:
        pod_cidrs = (spec["podCIDR"],)  # clusters older than dual-stack set only podCIDR
    addresses = tuple(
        (sys.intern(a["type"]), a["address"])
        for a in _list(status.get("addresses"))
        if isinstance(a, dict)
        and isinstance(a.get("type"), str)
        and isinstance(a.get("address"), str)
    )[:MAX_ADDRESSES]
    return NodeInfo(
        name=ident[1],
        # All labels: peers' node_selector matches any of them; only the kubelet and
        # cluster admins can write a Node.
        labels=_str_map(meta.get("labels")),
        annotations=_ours(meta.get("annotations"), prefix, ann.NODE_KEYS, problems),
        pod_cidrs=pod_cidrs,
        addresses=addresses,
        unschedulable=spec.get("unschedulable") is True,
        uid=_uid(meta),
        taints=tuple(sorted({sys.intern(t["key"]) for t in _list(spec.get("taints"))
                             if isinstance(t, dict) and isinstance(t.get("key"), str)
                             and 0 < len(t["key"]) <= 317}))[:MAX_TAINTS],
        problems=problems.frozen(),
    )


def namespace_from(obj: Any) -> NamespaceInfo | None:
    ident = _name(obj, "Namespace", namespaced=False)
    if ident is None:
        return None
    return NamespaceInfo(name=ident[1], labels=_str_map(_dict(obj.get("metadata")).get("labels")))


def _pod_ready(status: dict) -> bool:
    for cond in _list(status.get("conditions")):
        if isinstance(cond, dict) and cond.get("type") == "Ready":
            return cond.get("status") == "True"
    return False


def pod_from(obj: Any, prefix: str = DEFAULT_PREFIX) -> PodInfo | None:
    ident = _name(obj, "Pod", namespaced=True)
    if ident is None:
        return None
    meta, spec, status = (_dict(obj.get(k)) for k in ("metadata", "spec", "status"))
    problems = _Problems()
    ips = _addresses([p.get("ip") for p in _list(status.get("podIPs")) if isinstance(p, dict)],
                     "status.podIPs", problems)
    if not ips and isinstance(status.get("podIP"), str) and status["podIP"]:
        ips = _addresses([status["podIP"]], "status.podIP", problems)
    phase = status.get("phase")
    node_name = spec.get("nodeName")
    return PodInfo(
        namespace=ident[0],
        name=ident[1],
        node_name=sys.intern(node_name) if isinstance(node_name, str) else "",
        ips=ips,
        phase=sys.intern(phase) if isinstance(phase, str) and phase else "Pending",
        ready=_pod_ready(status),
        annotations=_ours(meta.get("annotations"), prefix, ann.POD_KEYS, problems),
        created=parse_time(meta.get("creationTimestamp")),
        uid=_uid(meta),
        deleting=bool(meta.get("deletionTimestamp")),
        host_network=spec.get("hostNetwork") is True,
        problems=problems.frozen(),
    )


def _service_ports(spec: dict) -> tuple[tuple[str, str], ...]:
    ports = []
    for p in _list(spec.get("ports"))[:MAX_ADDRESSES]:
        if isinstance(p, dict):
            name, proto = p.get("name") or "", p.get("protocol") or "TCP"
            if isinstance(name, str) and isinstance(proto, str):
                ports.append((sys.intern(name), sys.intern(proto)))
    return _shared_ports(tuple(ports)) if ports else (("", "TCP"),)


def service_from(obj: Any, prefix: str = DEFAULT_PREFIX) -> ServiceInfo | None:
    ident = _name(obj, "Service", namespaced=True)
    if ident is None:
        return None
    meta, spec, status = (_dict(obj.get(k)) for k in ("metadata", "spec", "status"))
    problems = _Problems()
    cluster_ips = _addresses(spec.get("clusterIPs"), "spec.clusterIPs", problems)
    if not cluster_ips and isinstance(spec.get("clusterIP"), str) and spec["clusterIP"]:
        cluster_ips = _addresses([spec["clusterIP"]], "spec.clusterIP", problems)
    # An ingress IP in ipMode Proxy belongs to the load balancer, which proxies to the
    # nodes: kube-proxy programs nothing for it and no node may announce it.
    ingress = [i.get("ip") for i in _list(_dict(status.get("loadBalancer")).get("ingress"))
               if isinstance(i, dict) and i.get("ipMode") != "Proxy"]

    def text(field: str, default: str) -> str:
        value = spec.get(field)
        return sys.intern(value) if isinstance(value, str) and value else default

    return ServiceInfo(
        namespace=ident[0],
        name=ident[1],
        type=text("type", "ClusterIP"),
        cluster_ips=cluster_ips,
        external_ips=_addresses(spec.get("externalIPs"), "spec.externalIPs", problems),
        lb_ips=_addresses(ingress, "status.loadBalancer.ingress", problems),
        external_traffic_policy=text("externalTrafficPolicy", "Cluster"),
        internal_traffic_policy=text("internalTrafficPolicy", "Cluster"),
        annotations=_ours(meta.get("annotations"), prefix, ann.SERVICE_KEYS, problems),
        created=parse_time(meta.get("creationTimestamp")),
        uid=_uid(meta),
        ports=_service_ports(spec),
        problems=problems.frozen(),
    )


def _tristate(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def _endpoint_from(ep: Any) -> EndpointInfo | None:
    if not isinstance(ep, dict):
        return None
    cond = _dict(ep.get("conditions"))
    node_name = ep.get("nodeName")
    addresses = ep.get("addresses")
    first = addresses[0] if isinstance(addresses, list) and addresses else None
    return EndpointInfo(
        addresses=(first,) if isinstance(first, str) and first else (),  # kube-proxy reads only the first
        node_name=node_name if isinstance(node_name, str) and node_name else None,
        ready=_tristate(cond.get("ready")),
        serving=_tristate(cond.get("serving")),
        terminating=_tristate(cond.get("terminating")),
    )


def _slice_ports(raw: Any) -> tuple[tuple[str, str], ...]:
    """(name, protocol) of the slice's ports kube-proxy uses: a null name or a missing or
    zero port number is ignored (it would mean "all ports", which kube-proxy never did)."""
    ports = set()
    for p in _list(raw)[:MAX_ADDRESSES]:
        if not isinstance(p, dict):
            continue
        name, number, proto = p.get("name"), p.get("port"), p.get("protocol") or "TCP"
        if isinstance(name, str) and isinstance(number, int) and number and isinstance(proto, str):
            ports.add((sys.intern(name), sys.intern(proto)))
    return _shared_ports(tuple(sorted(ports)))


def endpoint_slice_from(obj: Any, node: str = "") -> EndpointSliceInfo | None:
    """The slice as ``node``'s agent needs it: its ports and three numbers (see
    bgpd/policy/endpoints.py), never its endpoints."""
    ident = _name(obj, "EndpointSlice", namespaced=True)
    if ident is None:
        return None
    labels = _dict(_dict(obj.get("metadata")).get("labels"))
    service_name = labels.get(SERVICE_NAME_LABEL)
    if not isinstance(service_name, str) or not service_name:
        # Slices without the label belong to no Service (custom controllers): nothing to use.
        log.debug("skipping EndpointSlice %s/%s: no %s label", *ident, SERVICE_NAME_LABEL)
        return None
    address_type = obj.get("addressType")
    endpoints = (e for e in map(_endpoint_from, _list(obj.get("endpoints"))) if e is not None)
    local_ready, local_st, usable = summarize(endpoints, node)
    return EndpointSliceInfo(
        namespace=ident[0],
        name=ident[1],
        service_name=service_name,
        address_type=sys.intern(address_type)
        if isinstance(address_type, str) and address_type
        else "IPv4",
        ports=_slice_ports(obj.get("ports")),
        local_ready=local_ready,
        local_serving_terminating=local_st,
        usable=usable,
    )
