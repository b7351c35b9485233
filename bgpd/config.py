"""The agent's configuration: one YAML file, parsed and validated by pure functions.

Every error names the field path and the bad value (``bgp.peers[1].asn: 70000000000 is not
a valid ASN (1..4294967295)``) and parsing reports *all* errors at once, so an operator fixes
a broken ConfigMap in one round. Nothing here imports an adapter library.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bgpd.model import Attributes, IPNetwork
from bgpd.policy.attributes import BGP_MAX_MESSAGE, encoded_size
from bgpd.values import is_plain_address, parse_community

# Defaults an operator would expect; each is documented in README "Configuration".
DEFAULT_HOLD_TIME = 90  # seconds, RFC 4271's suggested value
DEFAULT_GRACEFUL_RESTART = 120  # seconds the peer keeps our routes while we restart
DEFAULT_KERNEL_PROTO = 205  # unused by iproute2, FRR (186-198), BIRD (12), keepalived (18); see README
DEFAULT_KERNEL_TABLE = 254  # "main"
DEFAULT_MAX_WITHDRAW_FRACTION = 0.5
DEFAULT_WITHDRAW_HOLD_SECONDS = 30.0
DEFAULT_GUARD_MIN_PREFIXES = 10  # below this many announcements the guard stays quiet
DEFAULT_IMPORT_MAX_PREFIXES = 10_000  # per peer
DEFAULT_TEARDOWN_SECONDS = 300.0  # a peer over max_prefixes stays down this long (teardown)
DEFAULT_ANNOTATION_PREFIX = "bgpd.dev"
DEFAULT_DEBUG_ADDRESS = "127.0.0.1:9180"
DEFAULT_METRICS_ADDRESS = "0.0.0.0:9181"
DEFAULT_RESYNC_SECONDS = 60.0
DEFAULT_DEBOUNCE_SECONDS = 0.05
# Communities one announcement may carry (pool and Service annotation together): what an
# operator's routers match on is a handful; thousands only serve to blow up UPDATEs.
DEFAULT_GATE_DEBOUNCE_SECONDS = 10.0  # pod CIDR announced to no peer this long: unavailable
DEFAULT_MAX_COMMUNITIES = 32
# Weighted ECMP: the link-bandwidth value one local endpoint stands for (bytes/s: 1 Mbit/s,
# small enough that no realistic weight overflows the 32-bit float) and where weights stop.
DEFAULT_BANDWIDTH_PER_ENDPOINT = 125_000
DEFAULT_MAX_WEIGHT_ENDPOINTS = 1000
# A draining node: what it does to its Service addresses, and by how much.
DRAIN_ACTIONS = ("prepend", "med", "withdraw")
DEFAULT_DRAIN_PREPEND = 3  # our ASN added 3 more times: worse than any undrained path
DEFAULT_DRAIN_MED = 4_294_967_294  # the worst MED short of 2^32-1, which some read as "unusable"
DEFAULT_DRAIN_LABELS = ("node.kubernetes.io/exclude-from-external-load-balancers",)
DEFAULT_DRAIN_TAINTS = ("ToBeDeletedByClusterAutoscaler",)
DEFAULT_DRAIN_CHECK_SECONDS = 30.0  # withdraw action: how long "another node is available" holds
DEFAULT_MAX_LARGE_COMMUNITIES = 32
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")

FAMILIES = ("ipv4-unicast", "ipv6-unicast")

# What a pool may be used for. The node's own pod CIDRs need no pool.
USES = (
    "cluster-ip",  # Service .spec.clusterIPs (opt-in, see advertise.cluster_ips)
    "external-ip",  # Service .spec.externalIPs
    "load-balancer-ip",  # Service .status.loadBalancer.ingress[].ip
    "pod-ip",  # a pod's own IP outside the node's pod CIDR (host route)
    "pod-external-ip",  # addresses a pod claims through the external-ips annotation
)


class ConfigError(ValueError):
    """Raised with every problem found; ``errors`` holds one ``path: message`` line each."""

    def __init__(self, errors: list[str]):
        self.errors = errors
        super().__init__("\n".join(errors))


@dataclass(frozen=True)
class PeerConfig:
    address: str
    asn: int
    port: int = 179
    local_address: str | None = None  # None: the kernel picks the source address
    next_hop_ipv6: str | None = None  # IPv6 prefixes over an IPv4 session need one (MP-BGP)
    hold_time: int = DEFAULT_HOLD_TIME
    keepalive: int | None = None  # None: hold_time / 3
    ttl: int | None = None  # outgoing TTL; None: 1 for eBGP (directly connected), 64 for iBGP
    ttl_security: bool = False  # GTSM (RFC 5082): expect incoming TTL 255, send 255
    password_file: str | None = None  # TCP MD5 key, read at start (mounted Secret)
    families: tuple[str, ...] = FAMILIES
    graceful_restart: int = DEFAULT_GRACEFUL_RESTART  # 0 disables
    passive: bool = False  # wait for the peer to connect (needs bgp.listen_port)
    node_selector: dict[str, str] = field(default_factory=dict)  # matchLabels; empty = all
    name: str = ""  # label in metrics and the CLI; defaults to the address

    @property
    def label(self) -> str:
        return self.name or self.address


@dataclass(frozen=True)
class BgpConfig:
    asn: int
    router_id: str = "auto"  # "auto": the node's first IPv4 InternalIP
    listen_port: int = 0  # 0: never listen; ExaBGP only connects out
    peers: tuple[PeerConfig, ...] = ()
    node_annotations: bool = True  # honour per-node ASN/peer overrides on the Node


@dataclass(frozen=True)
class AdvertiseConfig:
    pod_cidr: bool = True
    pod_ips: bool = False  # a /32 or /128 per pod even inside the pod CIDR
    cluster_ips: bool = False
    external_ips: bool = True
    load_balancer_ips: bool = True
    pod_external_ips: bool = True
    require_ready_endpoint: bool = False  # Cluster policy: only while some endpoint is ready
    pod_cidr_attributes: Attributes = Attributes()


@dataclass(frozen=True, eq=False)  # identity hash: the policy caches lookups per pool set
class Pool:
    name: str
    cidrs: tuple[IPNetwork, ...]
    allow: frozenset[str]
    attributes: Attributes = Attributes()
    # Which namespaces may claim addresses of this pool (MetalLB's serviceAllocation):
    # listed by name, or by their labels (matchLabels); neither set means every namespace.
    namespaces: frozenset[str] = frozenset()
    namespace_selector: Mapping[str, str] = field(default_factory=dict)
    # Announce eTP=Local and pod-owned addresses with a link bandwidth per local endpoint.
    weighted_ecmp: bool = False

    def contains(self, prefix: IPNetwork) -> bool:
        return any(
            prefix.version == c.version and prefix.subnet_of(c)  # type: ignore[arg-type]
            for c in self.cidrs
        )

    @property
    def shared(self) -> bool:
        """Open to every namespace (no restriction set)."""
        return not self.namespaces and not self.namespace_selector

    def admits(self, namespace: str, labels: Mapping[str, str] | None) -> bool:
        """May objects of ``namespace`` (whose labels are ``labels``, None if unknown)
        claim addresses here?"""
        if namespace in self.namespaces or self.shared:
            return True
        if not self.namespace_selector or labels is None:
            return False
        return all(labels.get(k) == v for k, v in self.namespace_selector.items())


@dataclass(frozen=True)
class PrefixRule:
    """Allow a learned prefix inside ``prefix`` whose length is within [ge, le]."""

    prefix: IPNetwork
    ge: int
    le: int

    def matches(self, candidate: IPNetwork) -> bool:
        return (
            candidate.version == self.prefix.version
            and self.ge <= candidate.prefixlen <= self.le
            and candidate.subnet_of(self.prefix)  # type: ignore[arg-type]
        )


@dataclass(frozen=True)
class ImportConfig:
    enabled: bool = False  # install routes learned from peers into the kernel
    allow: tuple[PrefixRule, ...] = ()  # default deny: nothing learned is installed
    max_prefixes: int = DEFAULT_IMPORT_MAX_PREFIXES  # allowed routes stored per peer
    # Over max_prefixes: "refuse" the excess (default), or "teardown": close the session
    # (Cease, maximum number of prefixes reached) and keep it down for teardown_seconds.
    max_prefixes_action: str = "refuse"
    teardown_seconds: float = DEFAULT_TEARDOWN_SECONDS


@dataclass(frozen=True)
class KernelConfig:
    table: int = DEFAULT_KERNEL_TABLE
    proto: int = DEFAULT_KERNEL_PROTO


@dataclass(frozen=True)
class SafetyConfig:
    max_withdraw_fraction: float = DEFAULT_MAX_WITHDRAW_FRACTION
    withdraw_hold_seconds: float = DEFAULT_WITHDRAW_HOLD_SECONDS
    guard_min_prefixes: int = DEFAULT_GUARD_MIN_PREFIXES


@dataclass(frozen=True)
class LimitsConfig:
    max_communities: int = DEFAULT_MAX_COMMUNITIES
    max_large_communities: int = DEFAULT_MAX_LARGE_COMMUNITIES


@dataclass(frozen=True)
class SchedulingConfig:
    # Set the Node's NetworkUnavailable condition while its pod CIDR is announced to no
    # peer, so the node lifecycle controller's taint keeps new pods off (needs the optional
    # RBAC in daemonset/optional/network-unavailable/).
    network_unavailable: bool = False
    debounce_seconds: float = DEFAULT_GATE_DEBOUNCE_SECONDS


@dataclass(frozen=True)
class WeightedEcmpConfig:
    # Link bandwidth (bytes/s) announced per local endpoint, and the endpoint count where
    # the weight stops growing (one node cannot claim the whole rack's traffic).
    bandwidth_per_endpoint: int = DEFAULT_BANDWIDTH_PER_ENDPOINT
    max_endpoints: int = DEFAULT_MAX_WEIGHT_ENDPOINTS


@dataclass(frozen=True)
class DrainConfig:
    """When a node is draining and what its Service addresses do meanwhile (never its pod
    CIDR or pod IPs). Any one trigger drains: ``cordoned`` (spec.unschedulable), a label
    in ``labels`` (present, whatever its value), a taint key in ``taints``."""

    cordoned: bool = True
    labels: tuple[str, ...] = DEFAULT_DRAIN_LABELS
    taints: tuple[str, ...] = DEFAULT_DRAIN_TAINTS
    action: str = "prepend"  # or "med", or "withdraw" (see README: Drain)
    prepend: int = DEFAULT_DRAIN_PREPEND
    med: int = DEFAULT_DRAIN_MED
    check_seconds: float = DEFAULT_DRAIN_CHECK_SECONDS


@dataclass(frozen=True)
class ClusterConfig:
    pod_cidrs: tuple[IPNetwork, ...] = ()
    service_cidrs: tuple[IPNetwork, ...] = ()


@dataclass(frozen=True)
class HttpConfig:
    debug_address: str = DEFAULT_DEBUG_ADDRESS
    metrics_address: str = DEFAULT_METRICS_ADDRESS


@dataclass(frozen=True)
class Config:
    bgp: BgpConfig
    advertise: AdvertiseConfig = AdvertiseConfig()
    pools: tuple[Pool, ...] = ()
    cluster: ClusterConfig = ClusterConfig()
    import_: ImportConfig = ImportConfig()
    kernel: KernelConfig = KernelConfig()
    safety: SafetyConfig = SafetyConfig()
    http: HttpConfig = HttpConfig()
    limits: LimitsConfig = LimitsConfig()
    scheduling: SchedulingConfig = SchedulingConfig()
    weighted_ecmp: WeightedEcmpConfig = WeightedEcmpConfig()
    drain: DrainConfig = DrainConfig()
    annotation_prefix: str = DEFAULT_ANNOTATION_PREFIX
    log_format: str = "keyvalue"  # or "json"
    log_level: str = "info"
    resync_seconds: float = DEFAULT_RESYNC_SECONDS
    debounce_seconds: float = DEFAULT_DEBOUNCE_SECONDS

    @property
    def selects_namespaces(self) -> bool:
        """Some pool admits namespaces by label: the policy needs namespace labels."""
        return any(p.namespace_selector for p in self.pools)


# ------------------------------------------------------------------ parsing


class _Errors:
    """Collects ``path: message`` lines so one pass reports every problem."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, path: str, message: str) -> None:
        self.lines.append(f"{path}: {message}")


_MISSING = object()


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def _mapping(raw: Any, path: str, errs: _Errors, known: tuple[str, ...]) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        errs.add(path or "(top)", f"must be a mapping, got {type(raw).__name__} {_show(raw)}")
        return {}
    for key in raw:
        if key not in known:
            errs.add(f"{path}.{key}" if path else str(key),
                     f"unknown field (known: {', '.join(known)})")
    return raw


def _int(raw: dict, key: str, path: str, errs: _Errors, default: Any,
         lo: int, hi: int) -> Any:
    value = raw.get(key, _MISSING)
    if value is _MISSING or value is None:
        if default is _MISSING:
            errs.add(f"{path}.{key}", "is required")
        return None if default is _MISSING else default
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        errs.add(f"{path}.{key}", f"{_show(value)} must be an integer in {lo}..{hi}")
        return default if default is not _MISSING else None
    return value


def _float(raw: dict, key: str, path: str, errs: _Errors, default: float,
           lo: float, hi: float) -> float:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        errs.add(f"{path}.{key}", f"{_show(value)} must be a number in {lo}..{hi}")
        return default
    return float(value)


def _bool(raw: dict, key: str, path: str, errs: _Errors, default: bool) -> bool:
    value = raw.get(key, default)
    if not isinstance(value, bool):
        errs.add(f"{path}.{key}", f"{_show(value)} must be true or false")
        return default
    return value


def _str(raw: dict, key: str, path: str, errs: _Errors, default: Any,
         choices: tuple[str, ...] | None = None) -> Any:
    value = raw.get(key, default)
    if value is _MISSING:
        errs.add(f"{path}.{key}", "is required")
        return None
    if value is None:
        return None
    if not isinstance(value, str) or (choices and value not in choices):
        want = f"one of {', '.join(choices)}" if choices else "a string"
        errs.add(f"{path}.{key}", f"{_show(value)} must be {want}")
        return default if default is not _MISSING else None
    return value


def _list(raw: dict, key: str, path: str, errs: _Errors) -> list[Any]:
    value = raw.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        errs.add(f"{path}.{key}", f"{_show(value)} must be a list")
        return []
    return value


def parse_ip(value: Any, path: str, errs: _Errors) -> str | None:
    if not is_plain_address(value):
        errs.add(path, f"{_show(value)} is not an IP address")
        return None
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        errs.add(path, f"{_show(value)} is not an IP address")
        return None


def parse_network(value: Any, path: str, errs: _Errors) -> IPNetwork | None:
    if not is_plain_address(value):
        errs.add(path, f"{_show(value)} is not a CIDR prefix")
        return None
    try:
        net = ipaddress.ip_network(value.strip(), strict=True)
    except (ValueError, TypeError) as exc:
        errs.add(path, f"{_show(value)} is not a CIDR prefix ({exc})")
        return None
    if net.prefixlen == 0:
        errs.add(path, f"{_show(value)} covers every address; a /0 is never allowed here")
        return None
    return net


def _community(value: Any, path: str, errs: _Errors, parts: int) -> str | None:
    canonical = parse_community(value, parts)
    if canonical is None:
        kind = "community (asn:value, each 0..65535)" if parts == 2 else \
            "large community (global:local1:local2, each 0..4294967295)"
        errs.add(path, f"{_show(value)} is not a {kind}")
    return canonical


def parse_attributes(raw: dict, path: str, errs: _Errors) -> Attributes:
    comms = [_community(v, f"{path}.communities[{i}]", errs, 2)
             for i, v in enumerate(_list(raw, "communities", path, errs))]
    large = [_community(v, f"{path}.large_communities[{i}]", errs, 3)
             for i, v in enumerate(_list(raw, "large_communities", path, errs))]
    return Attributes(
        communities=tuple(sorted({c for c in comms if c})),
        large_communities=tuple(sorted({c for c in large if c})),
        local_pref=_int(raw, "local_pref", path, errs, None, 0, 0xFFFFFFFF),
        med=_int(raw, "med", path, errs, None, 0, 0xFFFFFFFF),
    )


_ATTR_KEYS = ("communities", "large_communities", "local_pref", "med")
_PEER_KEYS = ("address", "asn", "port", "local_address", "next_hop_ipv6", "hold_time", "keepalive", "ttl",
              "ttl_security", "password_file", "families", "graceful_restart", "passive",
              "node_selector", "name")


def _parse_peer(raw: Any, path: str, errs: _Errors) -> PeerConfig | None:
    raw = _mapping(raw, path, errs, _PEER_KEYS)
    if not raw:
        errs.add(path, "a peer needs at least address and asn")
        return None
    address = raw.get("address")
    address = parse_ip(address, f"{path}.address", errs) if address is not None else \
        errs.add(f"{path}.address", "is required")
    local = raw.get("local_address")
    if local is not None:
        local = parse_ip(local, f"{path}.local_address", errs)
    next_hop_ipv6 = raw.get("next_hop_ipv6")
    if next_hop_ipv6 is not None:
        next_hop_ipv6 = parse_ip(next_hop_ipv6, f"{path}.next_hop_ipv6", errs)
        if next_hop_ipv6 and ":" not in next_hop_ipv6:
            errs.add(f"{path}.next_hop_ipv6", f"{next_hop_ipv6} is not an IPv6 address")
            next_hop_ipv6 = None
    hold = _int(raw, "hold_time", path, errs, DEFAULT_HOLD_TIME, 0, 65535)
    if hold is not None and 0 < hold < 3:
        errs.add(f"{path}.hold_time", f"{hold} must be 0 or at least 3 (RFC 4271)")
    keepalive = _int(raw, "keepalive", path, errs, None, 1, 21845)
    if keepalive is not None and hold and keepalive >= hold:
        errs.add(f"{path}.keepalive", f"{keepalive} must be less than hold_time {hold}")
    families = _list(raw, "families", path, errs) or list(FAMILIES)
    for i, fam in enumerate(families):
        if fam not in FAMILIES:
            errs.add(f"{path}.families[{i}]", f"{_show(fam)} must be one of {', '.join(FAMILIES)}")
    selector = _labels(raw, "node_selector", path, errs)
    password_file = _str(raw, "password_file", path, errs, None)
    if password_file is not None and not password_file.startswith("/"):
        errs.add(f"{path}.password_file", f"{_show(password_file)} must be an absolute path")
    peer = PeerConfig(
        address=address or "",
        asn=_int(raw, "asn", path, errs, _MISSING, 1, 0xFFFFFFFF) or 0,
        port=_int(raw, "port", path, errs, 179, 1, 65535),
        local_address=local,
        next_hop_ipv6=next_hop_ipv6,
        hold_time=hold if hold is not None else DEFAULT_HOLD_TIME,
        keepalive=keepalive,
        ttl=_int(raw, "ttl", path, errs, None, 1, 255),
        ttl_security=_bool(raw, "ttl_security", path, errs, False),
        password_file=password_file,
        families=tuple(f for f in families if f in FAMILIES),
        graceful_restart=_int(raw, "graceful_restart", path, errs, DEFAULT_GRACEFUL_RESTART,
                              0, 4095),
        passive=_bool(raw, "passive", path, errs, False),
        node_selector=dict(selector),
        name=_str(raw, "name", path, errs, "") or "",
    )
    return peer


def _labels(raw: dict, key: str, path: str, errs: _Errors) -> dict[str, str]:
    """A matchLabels mapping (label name -> value)."""
    selector = raw.get(key) or {}
    if not isinstance(selector, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in selector.items()):
        errs.add(f"{path}.{key}", f"{_show(selector)} must map label names to strings")
        return {}
    return dict(selector)


def _check_attribute_limits(attrs: Attributes, limits: LimitsConfig, path: str,
                            errs: _Errors) -> None:
    """Configured attributes must leave room within the limits annotations are held to."""
    if len(attrs.communities) > limits.max_communities:
        errs.add(f"{path}.communities", f"{len(attrs.communities)} communities exceed "
                                        f"limits.max_communities {limits.max_communities}")
    if len(attrs.large_communities) > limits.max_large_communities:
        errs.add(f"{path}.large_communities",
                 f"{len(attrs.large_communities)} large communities exceed "
                 f"limits.max_large_communities {limits.max_large_communities}")
    size = encoded_size(attrs, 6)
    if size > BGP_MAX_MESSAGE:
        errs.add(path, f"its attributes make a {size}-byte UPDATE, over the "
                       f"{BGP_MAX_MESSAGE}-byte BGP message")


def _parse_bgp(raw: Any, errs: _Errors) -> BgpConfig:
    raw = _mapping(raw, "bgp", errs, ("asn", "router_id", "listen_port", "peers",
                                      "node_annotations"))
    if not raw:
        errs.add("bgp", "is required (at least bgp.asn)")
    router_id = raw.get("router_id", "auto")
    if router_id != "auto":
        try:
            ipaddress.IPv4Address(router_id)
        except ValueError:
            errs.add("bgp.router_id", f"{_show(router_id)} must be 'auto' or an IPv4 address")
            router_id = "auto"
    peers = []
    seen: set[tuple[str, int]] = set()
    for i, item in enumerate(_list(raw, "peers", "bgp", errs)):
        peer = _parse_peer(item, f"bgp.peers[{i}]", errs)
        if peer is None:
            continue
        if (peer.address, peer.port) in seen and not peer.node_selector:
            errs.add(f"bgp.peers[{i}].address", f"{peer.address} is listed twice")
        seen.add((peer.address, peer.port))
        peers.append(peer)
    listen_port = _int(raw, "listen_port", "bgp", errs, 0, 0, 65535)
    for i, peer in enumerate(peers):
        if peer.passive and not listen_port:
            errs.add(f"bgp.peers[{i}].passive", "a passive peer needs bgp.listen_port")
    return BgpConfig(
        asn=_int(raw, "asn", "bgp", errs, _MISSING, 1, 0xFFFFFFFF) or 0,
        router_id=router_id,
        listen_port=listen_port,
        peers=tuple(peers),
        node_annotations=_bool(raw, "node_annotations", "bgp", errs, True),
    )


def _networks(raw: dict, key: str, path: str, errs: _Errors) -> tuple[IPNetwork, ...]:
    nets = (parse_network(v, f"{path}.{key}[{i}]", errs)
            for i, v in enumerate(_list(raw, key, path, errs)))
    return tuple(n for n in nets if n is not None)


def _parse_pools(items: list[Any], cluster: ClusterConfig, errs: _Errors) -> tuple[Pool, ...]:
    pools: list[Pool] = []
    names: set[str] = set()
    for i, item in enumerate(items):
        path = f"pools[{i}]"
        raw = _mapping(item, path, errs, ("name", "cidrs", "allow", "namespaces",
                                          "namespace_selector", "weighted_ecmp") + _ATTR_KEYS)
        name = _str(raw, "name", path, errs, _MISSING) or f"pool{i}"
        if name in names:
            errs.add(f"{path}.name", f"{_show(name)} is used by another pool")
        names.add(name)
        cidrs = _networks(raw, "cidrs", path, errs)
        if not cidrs and "cidrs" in raw:
            pass  # each bad entry already reported
        elif not cidrs:
            errs.add(f"{path}.cidrs", "is required (one or more CIDR prefixes)")
        allow = _list(raw, "allow", path, errs)
        for j, use in enumerate(allow):
            if use not in USES:
                errs.add(f"{path}.allow[{j}]", f"{_show(use)} must be one of {', '.join(USES)}")
        uses = frozenset(u for u in allow if u in USES)
        if not allow:
            errs.add(f"{path}.allow", f"is required (one or more of {', '.join(USES)})")
        for j, cidr in enumerate(cidrs):
            _check_pool_overlap(cidr, uses, cluster, f"{path}.cidrs[{j}]", errs)
        namespaces = []
        for j, ns in enumerate(_list(raw, "namespaces", path, errs)):
            if isinstance(ns, str) and _DNS_LABEL.fullmatch(ns):
                namespaces.append(ns)
            else:
                errs.add(f"{path}.namespaces[{j}]", f"{_show(ns)} is not a namespace name")
        pools.append(Pool(name=name, cidrs=cidrs, allow=uses,
                          attributes=parse_attributes(raw, path, errs),
                          namespaces=frozenset(namespaces),
                          namespace_selector=_labels(raw, "namespace_selector", path, errs),
                          weighted_ecmp=_bool(raw, "weighted_ecmp", path, errs, False)))
    for a in range(len(pools)):
        for b in range(a + 1, len(pools)):
            for ca in pools[a].cidrs:
                for cb in pools[b].cidrs:
                    if ca.version == cb.version and ca.overlaps(cb):  # type: ignore[arg-type]
                        errs.add(f"pools[{b}].cidrs",
                                 f"{cb} overlaps {ca} of pool {_show(pools[a].name)}")
    return tuple(pools)


def _check_pool_overlap(cidr: IPNetwork, uses: frozenset[str], cluster: ClusterConfig,
                        path: str, errs: _Errors) -> None:
    """A pool may reach into the cluster's own ranges only for the use that lives there."""
    for net in cluster.service_cidrs:
        if cidr.version == net.version and cidr.overlaps(net) and uses - {"cluster-ip"}:  # type: ignore[arg-type]
            errs.add(path, f"{cidr} overlaps the service CIDR {net}; only 'cluster-ip' may "
                           f"be allowed there")
    for net in cluster.pod_cidrs:
        if cidr.version == net.version and cidr.overlaps(net) and uses - {"pod-ip"}:  # type: ignore[arg-type]
            errs.add(path, f"{cidr} overlaps the pod CIDR {net}; only 'pod-ip' may be "
                           f"allowed there")


def _parse_import(raw: Any, errs: _Errors) -> ImportConfig:
    raw = _mapping(raw, "import", errs, ("enabled", "allow", "max_prefixes",
                                         "max_prefixes_action", "teardown_seconds"))
    rules = []
    for i, item in enumerate(_list(raw, "allow", "import", errs)):
        path = f"import.allow[{i}]"
        if isinstance(item, str):
            item = {"prefix": item}
        rule = _mapping(item, path, errs, ("prefix", "ge", "le"))
        value = rule.get("prefix")
        try:
            # A default route is the usual thing to import, so /0 is fine here.
            net = ipaddress.ip_network(value, strict=True)
        except (ValueError, TypeError):
            errs.add(f"{path}.prefix", f"{_show(value)} is not a CIDR prefix")
            continue
        top = net.max_prefixlen
        ge = _int(rule, "ge", path, errs, net.prefixlen, net.prefixlen, top)
        le = _int(rule, "le", path, errs, ge if "ge" in rule else net.prefixlen, 0, top)
        if le < ge:
            errs.add(f"{path}.le", f"{le} must be at least ge {ge}")
        rules.append(PrefixRule(prefix=net, ge=ge, le=le))
    return ImportConfig(
        enabled=_bool(raw, "enabled", "import", errs, False),
        allow=tuple(rules),
        max_prefixes=_int(raw, "max_prefixes", "import", errs, DEFAULT_IMPORT_MAX_PREFIXES,
                          1, 10_000_000),
        max_prefixes_action=_str(raw, "max_prefixes_action", "import", errs, "refuse",
                                 ("refuse", "teardown")),
        teardown_seconds=_float(raw, "teardown_seconds", "import", errs,
                                DEFAULT_TEARDOWN_SECONDS, 1.0, 86400.0),
    )


def _parse_address(raw: dict, key: str, path: str, errs: _Errors, default: str) -> str:
    value = _str(raw, key, path, errs, default)
    host, _, port = (value or "").rpartition(":")
    try:
        ipaddress.ip_address(host.strip("[]"))
        if not 0 < int(port) < 65536:
            raise ValueError
    except ValueError:
        errs.add(f"{path}.{key}", f"{_show(value)} must be HOST:PORT with an IP host")
        return default
    return value


# The link-bandwidth community carries an IEEE float32 of bytes/s; routers convert it to
# integers of their own, so the largest weight stays within 32 bits (34 Gbit/s).
_MAX_LINK_BANDWIDTH = 2**32 - 1
_LABEL_KEY = re.compile(r"([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")


def _parse_drain(raw: Any, errs: _Errors) -> DrainConfig:
    d_raw = _mapping(raw, "drain", errs, ("cordoned", "labels", "taints", "action", "prepend",
                                          "med", "check_seconds"))
    keys = {}
    for field_name, default in (("labels", DEFAULT_DRAIN_LABELS),
                                ("taints", DEFAULT_DRAIN_TAINTS)):
        if d_raw.get(field_name) is None:
            keys[field_name] = default
            continue
        found = []
        for i, key in enumerate(_list(d_raw, field_name, "drain", errs)):
            if isinstance(key, str) and _LABEL_KEY.fullmatch(key):
                found.append(key)
            else:
                errs.add(f"drain.{field_name}[{i}]", f"{_show(key)} is not a label or taint key")
        keys[field_name] = tuple(found)
    return DrainConfig(
        cordoned=_bool(d_raw, "cordoned", "drain", errs, True),
        labels=keys["labels"], taints=keys["taints"],
        action=_str(d_raw, "action", "drain", errs, "prepend", DRAIN_ACTIONS),
        prepend=_int(d_raw, "prepend", "drain", errs, DEFAULT_DRAIN_PREPEND, 1, 10),
        med=_int(d_raw, "med", "drain", errs, DEFAULT_DRAIN_MED, 0, 2**32 - 1),
        check_seconds=_float(d_raw, "check_seconds", "drain", errs,
                             DEFAULT_DRAIN_CHECK_SECONDS, 1.0, 3600.0),
    )


_TOP_KEYS = ("bgp", "advertise", "pools", "cluster", "import", "kernel", "safety", "http",
             "limits", "scheduling", "weighted_ecmp", "drain", "annotation_prefix", "logging",
             "resync_seconds", "debounce_seconds")


def parse_config(raw: Any) -> Config:
    """Turn the YAML document (already loaded) into a Config, or raise ConfigError."""
    errs = _Errors()
    top = _mapping(raw, "", errs, _TOP_KEYS)
    bgp = _parse_bgp(top.get("bgp"), errs)

    adv_raw = _mapping(top.get("advertise"), "advertise", errs, (
        "pod_cidr", "pod_ips", "cluster_ips", "external_ips", "load_balancer_ips",
        "pod_external_ips", "require_ready_endpoint", "pod_cidr_attributes"))
    pod_attrs_raw = _mapping(adv_raw.get("pod_cidr_attributes"),
                             "advertise.pod_cidr_attributes", errs, _ATTR_KEYS)
    advertise = AdvertiseConfig(
        **{k: _bool(adv_raw, k, "advertise", errs, getattr(AdvertiseConfig, k))
           for k in ("pod_cidr", "pod_ips", "cluster_ips", "external_ips",
                     "load_balancer_ips", "pod_external_ips", "require_ready_endpoint")},
        pod_cidr_attributes=parse_attributes(pod_attrs_raw, "advertise.pod_cidr_attributes",
                                             errs),
    )

    cl_raw = _mapping(top.get("cluster"), "cluster", errs, ("pod_cidrs", "service_cidrs"))
    cluster = ClusterConfig(pod_cidrs=_networks(cl_raw, "pod_cidrs", "cluster", errs),
                            service_cidrs=_networks(cl_raw, "service_cidrs", "cluster", errs))
    pools = _parse_pools(_list(top, "pools", "", errs), cluster, errs)

    k_raw = _mapping(top.get("kernel"), "kernel", errs, ("table", "proto"))
    kernel = KernelConfig(
        table=_int(k_raw, "table", "kernel", errs, DEFAULT_KERNEL_TABLE, 1, 0xFFFFFFFF),
        proto=_int(k_raw, "proto", "kernel", errs, DEFAULT_KERNEL_PROTO, 5, 255),
    )
    s_raw = _mapping(top.get("safety"), "safety", errs, (
        "max_withdraw_fraction", "withdraw_hold_seconds", "guard_min_prefixes"))
    safety = SafetyConfig(
        max_withdraw_fraction=_float(s_raw, "max_withdraw_fraction", "safety", errs,
                                     DEFAULT_MAX_WITHDRAW_FRACTION, 0.0, 1.0),
        withdraw_hold_seconds=_float(s_raw, "withdraw_hold_seconds", "safety", errs,
                                     DEFAULT_WITHDRAW_HOLD_SECONDS, 0.0, 86400.0),
        guard_min_prefixes=_int(s_raw, "guard_min_prefixes", "safety", errs,
                                DEFAULT_GUARD_MIN_PREFIXES, 0, 10_000_000),
    )
    l_raw = _mapping(top.get("limits"), "limits", errs, ("max_communities",
                                                         "max_large_communities"))
    limits = LimitsConfig(
        max_communities=_int(l_raw, "max_communities", "limits", errs,
                             DEFAULT_MAX_COMMUNITIES, 0, 1000),
        max_large_communities=_int(l_raw, "max_large_communities", "limits", errs,
                                   DEFAULT_MAX_LARGE_COMMUNITIES, 0, 330),
    )
    for i, pool in enumerate(pools):
        _check_attribute_limits(pool.attributes, limits, f"pools[{i}]", errs)
    _check_attribute_limits(advertise.pod_cidr_attributes, limits,
                            "advertise.pod_cidr_attributes", errs)
    g_raw = _mapping(top.get("scheduling"), "scheduling", errs,
                     ("network_unavailable", "debounce_seconds"))
    scheduling = SchedulingConfig(
        network_unavailable=_bool(g_raw, "network_unavailable", "scheduling", errs, False),
        debounce_seconds=_float(g_raw, "debounce_seconds", "scheduling", errs,
                                DEFAULT_GATE_DEBOUNCE_SECONDS, 0.0, 3600.0),
    )
    w_raw = _mapping(top.get("weighted_ecmp"), "weighted_ecmp", errs,
                     ("bandwidth_per_endpoint", "max_endpoints"))
    weighted = WeightedEcmpConfig(
        bandwidth_per_endpoint=_int(w_raw, "bandwidth_per_endpoint", "weighted_ecmp", errs,
                                    DEFAULT_BANDWIDTH_PER_ENDPOINT, 1, 10**9),
        max_endpoints=_int(w_raw, "max_endpoints", "weighted_ecmp", errs,
                           DEFAULT_MAX_WEIGHT_ENDPOINTS, 1, 100_000),
    )
    if weighted.bandwidth_per_endpoint * weighted.max_endpoints > _MAX_LINK_BANDWIDTH:
        errs.add("weighted_ecmp", f"bandwidth_per_endpoint x max_endpoints = "
                                  f"{weighted.bandwidth_per_endpoint * weighted.max_endpoints}"
                                  f" exceeds the link-bandwidth community's range "
                                  f"({_MAX_LINK_BANDWIDTH} bytes/s)")
    drain = _parse_drain(top.get("drain"), errs)
    h_raw = _mapping(top.get("http"), "http", errs, ("debug_address", "metrics_address"))
    http = HttpConfig(
        debug_address=_parse_address(h_raw, "debug_address", "http", errs,
                                     DEFAULT_DEBUG_ADDRESS),
        metrics_address=_parse_address(h_raw, "metrics_address", "http", errs,
                                       DEFAULT_METRICS_ADDRESS),
    )
    log_raw = _mapping(top.get("logging"), "logging", errs, ("format", "level"))
    prefix = _str(top, "annotation_prefix", "", errs, DEFAULT_ANNOTATION_PREFIX)
    if not prefix or "/" in prefix:
        errs.add("annotation_prefix", f"{_show(prefix)} must be a DNS-style prefix like bgpd.dev")
        prefix = DEFAULT_ANNOTATION_PREFIX
    config = Config(
        bgp=bgp, advertise=advertise, pools=pools, cluster=cluster,
        import_=_parse_import(top.get("import"), errs), kernel=kernel, safety=safety,
        http=http, limits=limits, scheduling=scheduling, weighted_ecmp=weighted, drain=drain,
        annotation_prefix=prefix,
        log_format=_str(log_raw, "format", "logging", errs, "keyvalue", ("keyvalue", "json")),
        log_level=_str(log_raw, "level", "logging", errs, "info",
                       ("debug", "info", "warning", "error")),
        resync_seconds=_float(top, "resync_seconds", "", errs, DEFAULT_RESYNC_SECONDS,
                              1.0, 86400.0),
        debounce_seconds=_float(top, "debounce_seconds", "", errs, DEFAULT_DEBOUNCE_SECONDS,
                                0.0, 10.0),
    )
    if errs.lines:
        raise ConfigError(errs.lines)
    return config


def load_config(path: str) -> Config:
    """Read and parse a YAML file; YAML syntax errors become ConfigError too."""
    import yaml  # PyYAML is a plain parser, not an adapter: fine in this pure layer

    try:
        with open(path, encoding="utf-8") as fh:
            raw = yaml.safe_load(fh)
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read ({exc.strerror})"]) from exc
    except yaml.YAMLError as exc:
        raise ConfigError([f"{path}: not valid YAML ({exc})"]) from exc
    except (UnicodeDecodeError, ValueError) as exc:  # not UTF-8, an absurd integer literal
        raise ConfigError([f"{path}: cannot be read as a YAML config ({exc})"]) from exc
    return parse_config(raw)
