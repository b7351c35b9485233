"""Claims made by this node and by the Pods running on it."""

from __future__ import annotations

from collections.abc import Mapping

from bgpd.config import Config
from bgpd.model import NO_ATTRIBUTES, IPNetwork, NodeInfo, PodInfo
from bgpd.policy import annotations as ann
from bgpd.policy import reasons
from bgpd.policy.addresses import cidr, host_prefix
from bgpd.policy.claims import POD_CIDR, POD_EXTERNAL_IP, POD_IP, Claim, pool_verdict

_DONE_PHASES = ("Succeeded", "Failed")


def node_claims(node: NodeInfo, config: Config) -> tuple[tuple[Claim, ...], list[IPNetwork]]:
    """The node's own pod CIDRs: announced without any pool (they are the node's own)."""
    owner = f"node/{node.name}"
    claims = [Claim(p, None, "annotation", owner, 0.0, reasons.BAD_ANNOTATION, p)
              for p in node.problems]
    nets = []
    for value in node.pod_cidrs:
        net, key, why = cidr(value)
        if net is None:
            claims.append(Claim(value, None, POD_CIDR, owner, 0.0, reasons.BAD_ADDRESS, why))
            continue
        cluster = config.cluster.pod_cidrs
        if cluster and not _inside(net, list(cluster)):
            # A Node's podCIDR comes from the controller-manager (or whoever can write the
            # Node): when the cluster's range is known, nothing outside it is the node's.
            claims.append(Claim(value, net, POD_CIDR, owner, 0.0, reasons.OUTSIDE_POOLS,
                                f"{net} lies outside cluster.pod_cidrs "
                                f"({', '.join(map(str, cluster))})", key=key))
            continue
        nets.append(net)
        if config.advertise.pod_cidr:
            claims.append(Claim(value, net, POD_CIDR, owner, 0.0, reasons.ANNOUNCED,
                                "the node's own pod CIDR",
                                attributes=config.advertise.pod_cidr_attributes, key=key))
        else:
            claims.append(Claim(value, net, POD_CIDR, owner, 0.0, reasons.DISABLED,
                                "advertise.pod_cidr is off", key=key))
    return tuple(claims), nets


def _inside(net: IPNetwork, cidrs: list[IPNetwork]) -> bool:
    return any(net.version == c.version and net.subnet_of(c) for c in cidrs)  # type: ignore[arg-type]


def pod_claims(pod: PodInfo, pod_cidrs: list[IPNetwork], config: Config,
               ns_labels: Mapping[str, str] | None = None) -> tuple[Claim, ...]:
    if pod.host_network or pod.phase in _DONE_PHASES:
        return ()
    owner = f"pod/{pod.key}"
    claims: list[Claim] = [Claim(p, None, "annotation", owner, pod.created,
                                 reasons.BAD_ANNOTATION, p) for p in pod.problems]
    own_ips: dict[int, str] = {}
    for value in pod.ips:
        net, key, why = host_prefix(value)
        if net is None:
            claims.append(Claim(value, None, POD_IP, owner, pod.created, reasons.BAD_ADDRESS,
                                why))
            continue
        own_ips.setdefault(net.version, str(net.network_address))
        base = Claim(value, net, POD_IP, owner, pod.created, reasons.ANNOUNCED, "", key=key)
        if _inside(net, pod_cidrs):
            if config.advertise.pod_ips:
                claims.append(base.verdict(reasons.ANNOUNCED,
                                           "pod host route inside the node's pod CIDR"))
            continue  # otherwise the pod CIDR covers it; no claim of its own
        pool, reason, detail = pool_verdict(key, POD_IP, config.pools, pod.namespace,
                                            ns_labels)
        claims.append(Claim(value, net, POD_IP, owner, pod.created, reason,
                            f"outside the node's pod CIDR; {detail}",
                            pool.name if pool else None,
                            pool.attributes if pool else NO_ATTRIBUTES, key=key))

    key_name = f"{config.annotation_prefix}/{ann.POD_EXTERNAL_IPS}"
    raw = pod.annotations.get(key_name)
    if raw is None:
        return tuple(claims)
    items = ann.split_list(raw)
    if len(items) > ann.MAX_LIST_ITEMS:
        why = (f"{key_name}: {len(items) - ann.MAX_LIST_ITEMS} addresses beyond the first "
               f"{ann.MAX_LIST_ITEMS} ignored")
        claims.append(Claim(why, None, "annotation", owner, pod.created, reasons.BAD_ANNOTATION,
                            why))
    for value in items[:ann.MAX_LIST_ITEMS]:
        net, key, why = host_prefix(value)
        if net is None:
            claims.append(Claim(value, None, POD_EXTERNAL_IP, owner, pod.created,
                                reasons.BAD_ADDRESS, why))
            continue
        via = own_ips.get(net.version)
        pool, reason, detail = pool_verdict(key, POD_EXTERNAL_IP, config.pools,
                                            pod.namespace, ns_labels)
        claim = Claim(value, net, POD_EXTERNAL_IP, owner, pod.created, reason, detail,
                      pool.name if pool else None, pool.attributes if pool else NO_ATTRIBUTES,
                      via, key)
        if reason == reasons.ANNOUNCED:
            if not config.advertise.pod_external_ips:
                claim = claim.verdict(reasons.DISABLED, "advertise.pod_external_ips is off")
            elif via is None:
                claim = claim.verdict(reasons.WRONG_FAMILY,
                                      f"the pod has no IPv{net.version} address to route "
                                      f"{net.network_address} to")
            elif not pod.ready or pod.deleting:
                claim = claim.verdict(reasons.POD_NOT_READY,
                                      "the pod is terminating" if pod.deleting
                                      else "the pod is not Ready")
        claims.append(claim)
    return tuple(claims)

