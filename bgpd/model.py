"""Small immutable domain types shared by the policy and the adapters.

The Kubernetes adapter produces the ``*Info`` snapshot types (only the fields the policy
reads, so 20,000 Services stay small in memory); the policy turns a ``Snapshot`` into
``Announcement`` and ``KernelRoute`` sets; the speaker and kernel adapters consume those.
Nothing here imports an adapter library.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def family_of(prefix: IPNetwork) -> str:
    """``ipv4`` or ``ipv6``: the address family name used in config, metrics and the CLI."""
    return "ipv4" if prefix.version == 4 else "ipv6"


# --------------------------------------------------------------------------- BGP


@dataclass(frozen=True, slots=True)
class Attributes:
    """Path attributes the agent sets on an announcement.

    Communities are ``"asn:value"`` strings, large communities ``"global:local1:local2"``,
    both kept sorted so equal attribute sets compare (and group) equal.
    """

    communities: tuple[str, ...] = ()
    large_communities: tuple[str, ...] = ()
    local_pref: int | None = None
    med: int | None = None

    def merged(self, other: Attributes) -> Attributes:
        """Union of communities; scalar values of ``other`` win where set."""
        return Attributes(
            communities=tuple(sorted(set(self.communities) | set(other.communities))),
            large_communities=tuple(
                sorted(set(self.large_communities) | set(other.large_communities))
            ),
            local_pref=other.local_pref if other.local_pref is not None else self.local_pref,
            med=other.med if other.med is not None else self.med,
        )


NO_ATTRIBUTES = Attributes()


@dataclass(frozen=True, slots=True)
class Announcement:
    """One prefix this node announces. ``next_hop`` None means "next-hop self"."""

    prefix: IPNetwork
    attributes: Attributes = NO_ATTRIBUTES
    next_hop: str | None = None

    @property
    def family(self) -> str:
        return family_of(self.prefix)


@dataclass(frozen=True, slots=True)
class LearnedRoute:
    """A route received from a BGP peer (after the import policy)."""

    peer: str
    prefix: IPNetwork
    next_hop: str
    attributes: Attributes = NO_ATTRIBUTES


@dataclass(frozen=True, slots=True)
class PeerStatus:
    """What the speaker knows of one BGP session, for metrics and ``bgpd peers``."""

    address: str
    asn: int
    state: str  # "idle" | "connect" | "established" | "down"
    since: float = 0.0  # unix time of the last state change
    prefixes_sent: int = 0
    prefixes_received: int = 0
    last_error: str = ""


# ------------------------------------------------------------------------ kernel


@dataclass(frozen=True, slots=True, order=True)
class NextHop:
    """One path of a kernel route: a gateway, a device, or both; ``weight`` for ECMP."""

    gateway: str | None = None
    device: str | None = None
    weight: int = 1


@dataclass(frozen=True, slots=True)
class KernelRoute:
    """A route the agent owns in the kernel. Several next hops make an ECMP route.

    ``kind`` is ``unicast`` or ``blackhole`` (a blackhole has no next hops). Next hops are
    kept sorted so that equal routes compare equal whatever order they were built in.
    """

    prefix: IPNetwork
    nexthops: tuple[NextHop, ...] = ()
    kind: str = "unicast"
    metric: int | None = None

    @property
    def family(self) -> str:
        return family_of(self.prefix)


# --------------------------------------------------------- Kubernetes snapshot


@dataclass(frozen=True, slots=True)
class NodeInfo:
    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    pod_cidrs: tuple[str, ...] = ()
    addresses: tuple[tuple[str, str], ...] = ()  # (type, address), e.g. ("InternalIP", "10.0.0.1")
    unschedulable: bool = False


@dataclass(frozen=True, slots=True)
class PodInfo:
    namespace: str
    name: str
    node_name: str = ""
    ips: tuple[str, ...] = ()
    phase: str = "Pending"
    ready: bool = False
    annotations: Mapping[str, str] = field(default_factory=dict)
    created: float = 0.0  # unix time of metadata.creationTimestamp
    deleting: bool = False  # metadata.deletionTimestamp is set
    host_network: bool = False

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class ServiceInfo:
    namespace: str
    name: str
    type: str = "ClusterIP"  # ClusterIP | NodePort | LoadBalancer | ExternalName
    cluster_ips: tuple[str, ...] = ()  # ("None",) for a headless Service
    external_ips: tuple[str, ...] = ()
    lb_ips: tuple[str, ...] = ()  # status.loadBalancer.ingress[].ip
    external_traffic_policy: str = "Cluster"
    internal_traffic_policy: str = "Cluster"
    annotations: Mapping[str, str] = field(default_factory=dict)
    created: float = 0.0

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class EndpointInfo:
    addresses: tuple[str, ...] = ()
    node_name: str | None = None
    ready: bool | None = None  # None means unknown, which Kubernetes says to read as ready
    serving: bool | None = None
    terminating: bool | None = None


@dataclass(frozen=True, slots=True)
class EndpointSliceInfo:
    namespace: str
    name: str
    service_name: str  # label kubernetes.io/service-name
    address_type: str = "IPv4"
    endpoints: tuple[EndpointInfo, ...] = ()

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def service_key(self) -> str:
        return f"{self.namespace}/{self.service_name}"


@dataclass(frozen=True)
class Snapshot:
    """A consistent view of the cluster as this node's agent sees it.

    ``pods`` holds only Pods bound to this node. Mappings are keyed ``namespace/name``.
    ``synced`` is False until every watcher has completed its initial list.
    """

    node: NodeInfo | None
    pods: Mapping[str, PodInfo] = field(default_factory=dict)
    services: Mapping[str, ServiceInfo] = field(default_factory=dict)
    endpoint_slices: Mapping[str, EndpointSliceInfo] = field(default_factory=dict)
    synced: bool = True
