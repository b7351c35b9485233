"""Claims made by one Service: its ClusterIPs, externalIPs and LoadBalancer IPs.

The verdict for one Service depends only on that Service, its EndpointSlices, its
namespace's labels, this node's name and the config, which is what lets the decider reuse
it when nothing of it changed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from bgpd.config import Config, LimitsConfig, Pool
from bgpd.model import NO_ATTRIBUTES, Attributes, EndpointSliceInfo, ServiceInfo
from bgpd.policy import annotations as ann
from bgpd.policy import reasons
from bgpd.policy.addresses import _MAX_TEXT, _host_prefix, _Invalid, host_prefix
from bgpd.policy.attributes import BGP_MAX_MESSAGE, encoded_size
from bgpd.policy.claims import (
    CLUSTER_IP,
    EXTERNAL_IP,
    LOAD_BALANCER_IP,
    Claim,
    judge_pool,
    pool_verdict,
)
from bgpd.policy.endpoints import local_and_anywhere
from bgpd.policy.view import service_view
from bgpd.policy.weights import link_bandwidth

_parse_uncached = _host_prefix.__wrapped__  # see _PlainVerdicts.judge

# A full decision judges every address of 20,000 Services here: claims are built with
# tuple.__new__ (what Claim(...) does, without its Python-level __new__), and the texts
# that do not depend on the Service are made once.
_claim = tuple.__new__
_ANNOUNCED = reasons.ANNOUNCED
_OFF = {use: f"{use} advertisement is off" for use in (CLUSTER_IP, EXTERNAL_IP, LOAD_BALANCER_IP)}


def announced_attributes(pool: Pool | None, extra: Attributes, limits: LimitsConfig,
                         version: int) -> tuple[Attributes, str]:
    """The pool's attributes with the Service's added, unless together they pass a limit:
    then the pool's alone, and why (the Service is still announced)."""
    base = pool.attributes if pool else NO_ATTRIBUTES
    if extra is NO_ATTRIBUTES:
        return base, ""
    merged = base.merged(extra)
    why = ""
    if len(merged.communities) > limits.max_communities:
        why = (f"{len(merged.communities)} communities exceed limits.max_communities "
               f"{limits.max_communities}")
    elif len(merged.large_communities) > limits.max_large_communities:
        why = (f"{len(merged.large_communities)} large communities exceed "
               f"limits.max_large_communities {limits.max_large_communities}")
    elif encoded_size(merged, version) > BGP_MAX_MESSAGE:
        why = (f"the attributes make a {encoded_size(merged, version)}-byte UPDATE, over the "
               f"{BGP_MAX_MESSAGE}-byte BGP message")
    return (base, why) if why else (merged, "")


def _cluster_ip_versions(svc: ServiceInfo) -> frozenset[int]:
    # The API server validates ClusterIPs: a ":" is all that tells the families apart.
    return frozenset(6 if ":" in value else 4 for value in svc.cluster_ips)


def service_claims(svc: ServiceInfo, slices: tuple[EndpointSliceInfo, ...], node: str,
                   config: Config, ns_labels: Mapping[str, str] | None = None
                   ) -> tuple[Claim, ...]:
    cluster_ips = svc.cluster_ips
    kind = svc.type
    if (svc.annotations or svc.problems or not cluster_ips or cluster_ips[0] == "None"
            or kind == "ExternalName"):
        return general_claims(svc, slices, node, config, ns_labels)
    # A plain Service (see _PlainVerdicts): general_claims() with what the address, its use
    # and the config decide looked up, and the Service's own checks (namespace, family,
    # endpoints) made here.
    verdicts = _plain
    if verdicts.config is not config:
        verdicts = _plain_verdicts(config)
    owner = f"service/{svc.namespace}/{svc.name}"  # f"service/{svc.key}"
    created = svc.created
    endpoints: dict[int, tuple[int, bool]] | None = None
    claims = []
    cluster_table, external_table, lb_table = verdicts.tables
    for use, values, table in (
            (CLUSTER_IP, cluster_ips, cluster_table),
            (EXTERNAL_IP, svc.external_ips, external_table),
            (LOAD_BALANCER_IP, svc.lb_ips if kind == "LoadBalancer" else (), lb_table)):
        for value in values:
            try:
                entry = table.get(value)
            except TypeError:  # unhashable junk: general_claims() says what is wrong
                entry = None
            if entry is None:
                entry = verdicts.judge(table, value, use)
                if entry is None:  # not an address: the general path, with its reason
                    return general_claims(svc, slices, node, config, ns_labels)
            net, key, version, pool, pool_name, reason, detail, attrs, restricted = entry
            if reason == _ANNOUNCED:  # the Service's own checks, in general_claims' order
                traffic_policy = (svc.internal_traffic_policy if use == CLUSTER_IP
                                  else svc.external_traffic_policy)
                if restricted and not pool.admits(svc.namespace, ns_labels):
                    reason, detail = reasons.NAMESPACE_FORBIDDEN, (
                        f"pool {pool_name!r} does not admit namespace {svc.namespace!r}")
                # The first ClusterIP's family, when it matches, answers at once (every
                # ClusterIP was looked up above, so each is an address).
                elif (use != CLUSTER_IP and (":" in cluster_ips[0]) != (version == 6)
                      and version not in _cluster_ip_versions(svc)):
                    reason, detail = reasons.WRONG_FAMILY, (
                        f"the Service has no IPv{version} ClusterIP, so kube-proxy does "
                        f"not forward its IPv{version} addresses")
                elif verdicts.require_ready or traffic_policy == "Local":
                    if endpoints is None:
                        endpoints = {}
                    local = traffic_policy == "Local"
                    reason, detail = _endpoint_gate(version, svc, slices, node, endpoints,
                                                    local, traffic_policy, detail)
                    if reason == _ANNOUNCED and local and pool.weighted_ecmp:
                        bandwidth, why = link_bandwidth(endpoints[version][0],
                                                        "local endpoint", "",
                                                        config.weighted_ecmp)
                        attrs = replace(attrs, link_bandwidth=bandwidth)
                        detail = f"{detail}; {why}"
            claims.append(_claim(Claim, (value, net, use, owner, created, reason, detail,
                                         pool_name, attrs, None, key)))
    return tuple(claims)


class _PlainVerdicts:
    """What one config says to an address of a plain Service, per use: most Services carry
    no annotation of ours and no problem, and are neither headless nor ExternalName. Then
    a claim's verdict depends only on the address, its use and the config, up to three
    checks of the Service's own (its namespace against the pool, its ClusterIP family, its
    endpoints). A full decision looks up 40,000 addresses: one dict lookup each, instead
    of the parse and pool caches (each builds and hashes a key tuple) and the per-Service
    branches of general_claims().

    Entries: (prefix, key, IP version, pool, pool name, reason, detail, attributes,
    whether the pool admits only some namespaces). Only addresses that parse are kept, at
    most PLAIN_TABLE_SIZE a use (then the table starts again); decide._trim_caches empties
    them with the parse cache.
    """

    __slots__ = ("config", "view", "tables", "require_ready", "_enabled")

    def __init__(self, config: Config | None) -> None:
        self.config = config
        self.view = service_view(config) if config is not None else None
        # cluster-ip, external-ip, load-balancer-ip: address text -> entry
        self.tables: tuple[dict[str, tuple], ...] = ({}, {}, {})
        adv = config.advertise if config is not None else None
        self.require_ready = adv is not None and adv.require_ready_endpoint
        self._enabled = {CLUSTER_IP: adv is not None and adv.cluster_ips,
                         EXTERNAL_IP: adv is not None and adv.external_ips,
                         LOAD_BALANCER_IP: adv is not None and adv.load_balancer_ips}

    def judge(self, table: dict[str, tuple], value: object, use: str) -> tuple | None:
        """The entry for ``value`` (kept in ``table``), None if it is not an address."""
        if not isinstance(value, str) or len(value) > _MAX_TEXT:
            return None
        try:
            # Parsed uncached: this table is the cache. Through the parse cache every plain
            # address was kept twice (5.7 MB at 20,000 Services); a reload that changes the
            # pools parses them again (about 100 ms at 20,000 Services).
            net, key, _ = _parse_uncached(value)
        except _Invalid:
            return None
        version = 6 if ":" in key else 4
        if not self._enabled[use]:
            entry: tuple = (net, key, version, None, None, reasons.DISABLED, _OFF[use],
                            NO_ATTRIBUTES, False)
        else:
            assert self.config is not None
            # Uncached: this table is the cache (the address's integer spares a parse).
            pool, reason, detail = judge_pool(key, use, self.config.pools,
                                              int(net.network_address) if version == 4
                                              else None)
            if pool is None:
                entry = (net, key, version, None, None, reason, detail, NO_ATTRIBUTES, False)
            else:
                entry = (net, key, version, pool, pool.name, reason, detail, pool.attributes,
                         not pool.shared)
        if len(table) >= PLAIN_TABLE_SIZE:
            table.clear()
        table[value] = entry
        return entry


PLAIN_TABLE_SIZE = 1 << 16
_plain = _PlainVerdicts(None)


def _plain_verdicts(config: Config) -> _PlainVerdicts:
    """The tables for ``config``: kept when the fields a Service's claims read are equal
    (view.py: a reload of peers, say), else empty ones (one swap, so a decision never
    mixes two configs' tables)."""
    global _plain
    plain = _plain
    if plain.view is not None and plain.view == service_view(config):
        plain.config = config  # its pools equal config.pools, field by field
    else:
        plain = _plain = _PlainVerdicts(config)
    return plain


def plain_size() -> int:
    """Addresses the plain tables hold, every use together."""
    return sum(map(len, _plain.tables))


def clear_plain_verdicts() -> None:
    global _plain
    _plain = _PlainVerdicts(None)


def general_claims(svc: ServiceInfo, slices: tuple[EndpointSliceInfo, ...], node: str,
                   config: Config, ns_labels: Mapping[str, str] | None = None
                   ) -> tuple[Claim, ...]:
    """service_claims() for any Service (annotations, problems, headless, ExternalName,
    addresses that do not parse); the plain Services' path must agree with it."""
    owner = f"service/{svc.namespace}/{svc.name}"  # f"service/{svc.key}"
    created = svc.created
    prefix = config.annotation_prefix
    notes = svc.annotations
    adv = config.advertise
    headless = not svc.cluster_ips or svc.cluster_ips[0] == "None"
    problems: list[str] = list(svc.problems)
    if notes:
        def flag(name: str, default: bool) -> bool:
            value, problem = ann.flag(notes, prefix, name, default)
            if problem:
                problems.append(problem)
            return value

        all_on = flag(ann.ADVERTISE, True)
        on_cluster = flag(ann.ADVERTISE_CLUSTER_IP, adv.cluster_ips)
        on_external = flag(ann.ADVERTISE_EXTERNAL_IPS, adv.external_ips)
        on_lb = flag(ann.ADVERTISE_LB_IPS, adv.load_balancer_ips)
        require_ready = flag(ann.REQUIRE_READY, adv.require_ready_endpoint)
        weighted: bool | None = None  # absent or bad: the pool decides
        if f"{prefix}/{ann.WEIGHTED_ECMP}" in notes:
            value, problem = ann.flag(notes, prefix, ann.WEIGHTED_ECMP, False)
            if problem:
                problems.append(problem)
            else:
                weighted = value
        extra, attr_problems = ann.attributes(notes, prefix)
        problems.extend(attr_problems)
    else:  # the common case: no annotations, nothing to parse
        all_on, extra = True, NO_ATTRIBUTES
        on_cluster, on_external, on_lb = adv.cluster_ips, adv.external_ips, adv.load_balancer_ips
        require_ready = adv.require_ready_endpoint
        weighted = None
    wanted = (  # use, addresses, enabled, traffic policy that gates it
        (CLUSTER_IP, () if headless else svc.cluster_ips, on_cluster,
         svc.internal_traffic_policy),
        (EXTERNAL_IP, svc.external_ips, on_external, svc.external_traffic_policy),
        (LOAD_BALANCER_IP, svc.lb_ips if svc.type == "LoadBalancer" else (), on_lb,
         svc.external_traffic_policy),
    )

    ignored = ""
    if svc.type == "ExternalName":
        ignored = "ExternalName Services have no addresses to announce"
    elif headless:
        ignored = "headless Service (clusterIP None)"
    endpoints: dict[int, tuple[int, bool]] = {}  # per IP version, read only when gated
    cluster_versions: frozenset[int] | None = None
    limit_problem = ""

    claims: list[Claim] = []
    for use, values, enabled, traffic_policy in wanted:
        for value in values:
            if isinstance(value, str) and len(value) <= _MAX_TEXT:
                try:  # host_prefix(value), inlined
                    net, key, why = _host_prefix(value)
                except _Invalid as exc:
                    net, key, why = None, "", str(exc)
            else:
                net, key, why = host_prefix(value)
            if net is None:
                claims.append(Claim(value, None, use, owner, created, reasons.BAD_ADDRESS,
                                    why))
                continue
            verdict = ""
            if ignored:
                verdict, why = reasons.IGNORED_KIND, ignored
            elif not all_on:
                verdict, why = reasons.OPTED_OUT, f"{prefix}/{ann.ADVERTISE} is false on {svc.key}"
            elif not enabled:
                verdict, why = reasons.DISABLED, _OFF[use]
            if verdict:
                claims.append(_claim(Claim, (value, net, use, owner, created, verdict, why,
                                             None, NO_ATTRIBUTES, None, key)))
                continue
            pool, reason, detail = pool_verdict(key, use, config.pools, svc.namespace, ns_labels)
            version = 6 if ":" in key else 4  # net.version, without a Python-level property
            if extra is NO_ATTRIBUTES:  # announced_attributes() without a Service's own
                attrs = pool.attributes if pool else NO_ATTRIBUTES
            else:
                attrs, too_big = announced_attributes(pool, extra, config.limits, version)
                limit_problem = limit_problem or too_big
            if reason == _ANNOUNCED and use != CLUSTER_IP:
                if cluster_versions is None:
                    cluster_versions = _cluster_ip_versions(svc)
                if version not in cluster_versions:
                    # kube-proxy programs a family's external addresses only for a Service
                    # with a ClusterIP of that family: nothing on this node would forward.
                    reason, detail = reasons.WRONG_FAMILY, (
                        f"the Service has no IPv{version} ClusterIP, so kube-proxy does "
                        f"not forward its IPv{version} addresses")
            if reason == _ANNOUNCED and (require_ready or traffic_policy == "Local"):
                reason, detail = _endpoint_gate(version, svc, slices, node, endpoints,
                                                traffic_policy == "Local", traffic_policy,
                                                detail)
                if (reason == _ANNOUNCED and traffic_policy == "Local" and pool is not None
                        and (pool.weighted_ecmp if weighted is None else weighted)):
                    bandwidth, why = link_bandwidth(endpoints[version][0], "local endpoint",
                                                    "", config.weighted_ecmp)
                    attrs, detail = replace(attrs, link_bandwidth=bandwidth), f"{detail}; {why}"
            claims.append(_claim(Claim, (value, net, use, owner, created, reason, detail,
                                         pool.name if pool else None, attrs, None, key)))
    if limit_problem:
        problems.append(f"{prefix}/{ann.COMMUNITIES}, {prefix}/{ann.LARGE_COMMUNITIES}: "
                        f"{limit_problem}; announced with the pool's attributes only")
    for problem in problems:
        claims.append(Claim(problem, None, "annotation", owner, created,
                            reasons.BAD_ANNOTATION, problem))
    return tuple(claims)


def _endpoint_gate(version: int, svc: ServiceInfo, slices: tuple[EndpointSliceInfo, ...],
                   node: str, cache: dict[int, tuple[int, bool]], local: bool,
                   traffic_policy: str, detail: str) -> tuple[str, str]:
    """Announce only where kube-proxy has somewhere to send the traffic (see endpoints.py):
    Local policy needs a usable endpoint here, require-ready-endpoint one anywhere."""
    state = cache.get(version)
    if state is None:
        state = cache[version] = local_and_anywhere(svc.ports, slices, version)
    here, anywhere = state
    if local and not here:
        return reasons.NO_LOCAL_ENDPOINT, (
            f"{traffic_policy} traffic policy and no usable IPv{version} endpoint on "
            f"node {node}")
    if not local and not anywhere:
        return reasons.NO_READY_ENDPOINT, (
            f"require-ready-endpoint and no usable IPv{version} endpoint anywhere")
    return reasons.ANNOUNCED, detail
