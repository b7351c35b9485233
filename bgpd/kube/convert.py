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

from bgpd.model import EndpointInfo, EndpointSliceInfo, NodeInfo, PodInfo, ServiceInfo

log = logging.getLogger(__name__)

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
"""Label the EndpointSlice controller sets to the owning Service's name."""

DROPPED_ANNOTATIONS = frozenset({"kubectl.kubernetes.io/last-applied-configuration"})
"""Annotations never kept: a copy of the whole object, large and never read by the policy."""

_EMPTY: Mapping[str, str] = MappingProxyType({})  # shared by every object without labels

Converter = Callable[[Any], Any]


def parse_time(value: Any) -> float:
    """RFC 3339 timestamp (``2024-05-01T10:00:00Z``) to unix seconds; 0.0 when absent/bad."""
    if not isinstance(value, str) or not value:
        return 0.0
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def _str_map(value: Any) -> Mapping[str, str]:
    """Labels/annotations as a read-only mapping of str to str; non-string entries dropped."""
    if not isinstance(value, dict) or not value:
        return _EMPTY
    kept = {
        k: v
        for k, v in value.items()
        if isinstance(k, str) and isinstance(v, str) and k not in DROPPED_ANNOTATIONS
    }
    return MappingProxyType(kept) if kept else _EMPTY


def _strs(value: Any) -> tuple[str, ...]:
    """A list of strings as a tuple; anything that is not a non-empty string is dropped."""
    if not isinstance(value, list):
        return ()
    return tuple(v for v in value if isinstance(v, str) and v)


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


def node_from(obj: Any) -> NodeInfo | None:
    ident = _name(obj, "Node", namespaced=False)
    if ident is None:
        return None
    meta, spec, status = (_dict(obj.get(k)) for k in ("metadata", "spec", "status"))
    pod_cidrs = _strs(spec.get("podCIDRs"))
    if not pod_cidrs and isinstance(spec.get("podCIDR"), str) and spec["podCIDR"]:
        pod_cidrs = (spec["podCIDR"],)  # clusters older than dual-stack set only podCIDR
    addresses = tuple(
        (sys.intern(a["type"]), a["address"])
        for a in _list(status.get("addresses"))
        if isinstance(a, dict)
        and isinstance(a.get("type"), str)
        and isinstance(a.get("address"), str)
    )
    return NodeInfo(
        name=ident[1],
        labels=_str_map(meta.get("labels")),
        annotations=_str_map(meta.get("annotations")),
        pod_cidrs=pod_cidrs,
        addresses=addresses,
        unschedulable=spec.get("unschedulable") is True,
    )


def _pod_ready(status: dict) -> bool:
    for cond in _list(status.get("conditions")):
        if isinstance(cond, dict) and cond.get("type") == "Ready":
            return cond.get("status") == "True"
    return False


def pod_from(obj: Any) -> PodInfo | None:
    ident = _name(obj, "Pod", namespaced=True)
    if ident is None:
        return None
    meta, spec, status = (_dict(obj.get(k)) for k in ("metadata", "spec", "status"))
    ips = tuple(
        p["ip"]
        for p in _list(status.get("podIPs"))
        if isinstance(p, dict) and isinstance(p.get("ip"), str) and p["ip"]
    )
    if not ips and isinstance(status.get("podIP"), str) and status["podIP"]:
        ips = (status["podIP"],)
    phase = status.get("phase")
    node_name = spec.get("nodeName")
    return PodInfo(
        namespace=ident[0],
        name=ident[1],
        node_name=sys.intern(node_name) if isinstance(node_name, str) else "",
        ips=ips,
        phase=sys.intern(phase) if isinstance(phase, str) and phase else "Pending",
        ready=_pod_ready(status),
        annotations=_str_map(meta.get("annotations")),
        created=parse_time(meta.get("creationTimestamp")),
        deleting=bool(meta.get("deletionTimestamp")),
        host_network=spec.get("hostNetwork") is True,
    )


def service_from(obj: Any) -> ServiceInfo | None:
    ident = _name(obj, "Service", namespaced=True)
    if ident is None:
        return None
    meta, spec, status = (_dict(obj.get(k)) for k in ("metadata", "spec", "status"))
    cluster_ips = _strs(spec.get("clusterIPs"))
    if not cluster_ips and isinstance(spec.get("clusterIP"), str) and spec["clusterIP"]:
        cluster_ips = (spec["clusterIP"],)
    ingress = _list(_dict(status.get("loadBalancer")).get("ingress"))
    lb_ips = tuple(
        i["ip"] for i in ingress if isinstance(i, dict) and isinstance(i.get("ip"), str) and i["ip"]
    )

    def text(field: str, default: str) -> str:
        value = spec.get(field)
        return sys.intern(value) if isinstance(value, str) and value else default

    return ServiceInfo(
        namespace=ident[0],
        name=ident[1],
        type=text("type", "ClusterIP"),
        cluster_ips=cluster_ips,
        external_ips=_strs(spec.get("externalIPs")),
        lb_ips=lb_ips,
        external_traffic_policy=text("externalTrafficPolicy", "Cluster"),
        internal_traffic_policy=text("internalTrafficPolicy", "Cluster"),
        annotations=_str_map(meta.get("annotations")),
        created=parse_time(meta.get("creationTimestamp")),
    )


def _tristate(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def _endpoint_from(ep: Any) -> EndpointInfo | None:
    if not isinstance(ep, dict):
        return None
    cond = _dict(ep.get("conditions"))
    node_name = ep.get("nodeName")
    return EndpointInfo(
        addresses=_strs(ep.get("addresses")),
        node_name=sys.intern(node_name) if isinstance(node_name, str) and node_name else None,
        ready=_tristate(cond.get("ready")),
        serving=_tristate(cond.get("serving")),
        terminating=_tristate(cond.get("terminating")),
    )


def endpoint_slice_from(obj: Any) -> EndpointSliceInfo | None:
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
    endpoints = tuple(e for e in map(_endpoint_from, _list(obj.get("endpoints"))) if e is not None)
    return EndpointSliceInfo(
        namespace=ident[0],
        name=ident[1],
        service_name=service_name,
        address_type=sys.intern(address_type)
        if isinstance(address_type, str) and address_type
        else "IPv4",
        endpoints=endpoints,
    )
