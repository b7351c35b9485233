"""Claims made by one Service: its ClusterIPs, externalIPs and LoadBalancer IPs.

The verdict for one Service depends only on that Service, its EndpointSlices, this node's
name and the config, which is what lets the decider reuse it when nothing of it changed.
"""

from __future__ import annotations

from collections.abc import Iterable

from bgpd.config import Config
from bgpd.model import NO_ATTRIBUTES, Attributes, EndpointSliceInfo, ServiceInfo
from bgpd.policy import annotations as ann
from bgpd.policy import reasons
from bgpd.policy.addresses import host_prefix
from bgpd.policy.claims import CLUSTER_IP, EXTERNAL_IP, LOAD_BALANCER_IP, Claim, pool_verdict


def endpoint_state(slices: Iterable[EndpointSliceInfo], node: str) -> tuple[bool, bool]:
    """(a usable endpoint on this node, a ready endpoint anywhere).

    Usable follows kube-proxy: ready (unknown counts as ready), or, when nothing here is
    ready, serving while terminating, so a rolling update does not drop the route early.
    """
    local_ready = local_serving = any_ready = False
    for sl in slices:
        for ep in sl.endpoints:
            ready = ep.ready is not False and ep.terminating is not True
            if ready:
                any_ready = True
            if ep.node_name == node:
                if ready:
                    local_ready = True
                elif ep.serving and ep.terminating:
                    local_serving = True
    return local_ready or local_serving, any_ready


def service_claims(svc: ServiceInfo, slices: tuple[EndpointSliceInfo, ...], node: str,
                   config: Config) -> tuple[Claim, ...]:
    owner = f"service/{svc.key}"
    prefix = config.annotation_prefix
    notes = svc.annotations
    adv = config.advertise
    headless = not svc.cluster_ips or svc.cluster_ips[0] == "None"
    problems: list[str] = []

    def flag(name: str, default: bool) -> bool:
        if not notes:  # the common case: no annotations, nothing to parse
            return default
        value, problem = ann.flag(notes, prefix, name, default)
        if problem:
            problems.append(problem)
        return value

    all_on = flag(ann.ADVERTISE, True)
    wanted = (  # use, addresses, enabled, traffic policy that gates it
        (CLUSTER_IP, () if headless else svc.cluster_ips,
         flag(ann.ADVERTISE_CLUSTER_IP, adv.cluster_ips), svc.internal_traffic_policy),
        (EXTERNAL_IP, svc.external_ips,
         flag(ann.ADVERTISE_EXTERNAL_IPS, adv.external_ips), svc.external_traffic_policy),
        (LOAD_BALANCER_IP, svc.lb_ips if svc.type == "LoadBalancer" else (),
         flag(ann.ADVERTISE_LB_IPS, adv.load_balancer_ips), svc.external_traffic_policy),
    )
    require_ready = flag(ann.REQUIRE_READY, adv.require_ready_endpoint)
    extra, attr_problems = ann.attributes(notes, prefix) if notes else (NO_ATTRIBUTES, [])
    problems.extend(attr_problems)

    ignored = ""
    if svc.type == "ExternalName":
        ignored = "ExternalName Services have no addresses to announce"
    elif headless:
        ignored = "headless Service (clusterIP None)"
    endpoints: tuple[bool, bool] | None = None

    claims: list[Claim] = []
    for use, values, enabled, traffic_policy in wanted:
        for value in values:
            net, key, why = host_prefix(value)
            if net is None:
                claims.append(Claim(value, None, use, owner, svc.created, reasons.BAD_ADDRESS,
                                    why))
                continue
            verdict = ""
            if ignored:
                verdict, why = reasons.IGNORED_KIND, ignored
            elif not all_on:
                verdict, why = reasons.OPTED_OUT, f"{prefix}/{ann.ADVERTISE} is false on {svc.key}"
            elif not enabled:
                verdict, why = reasons.DISABLED, f"{use} advertisement is off"
            if verdict:
                claims.append(Claim(value, net, use, owner, svc.created, verdict, why, None,
                                    NO_ATTRIBUTES, None, key))
                continue
            pool, reason, detail = pool_verdict(net, key, use, config.pools)
            attrs: Attributes = (pool.attributes.merged(extra) if extra is not NO_ATTRIBUTES
                                 else pool.attributes) if pool else extra
            local_policy = traffic_policy == "Local"
            if reason == reasons.ANNOUNCED and (local_policy or require_ready):
                if endpoints is None:  # only gated addresses need the endpoints read
                    endpoints = endpoint_state(slices, node)
                local, anywhere = endpoints
                if local_policy and not local:
                    reason, detail = reasons.NO_LOCAL_ENDPOINT, (
                        f"{traffic_policy} traffic policy and no ready endpoint on node {node}")
                elif not local_policy and not anywhere:
                    reason, detail = (reasons.NO_READY_ENDPOINT,
                                      "require-ready-endpoint and no endpoint is ready")
            claims.append(Claim(value, net, use, owner, svc.created, reason, detail,
                                pool.name if pool else None, attrs, None, key))
    for problem in problems:
        claims.append(Claim(problem, None, "annotation", owner, svc.created,
                            reasons.BAD_ANNOTATION, problem))
    return tuple(claims)
