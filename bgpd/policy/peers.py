"""Which BGP peers this node has, and with which ASN and router id: pure, from Node + Config.

Peers in the config apply to the nodes their ``node_selector`` (matchLabels) selects; with
``bgp.node_annotations`` on, a Node may add peers and set its own ASN through annotations
(``bgpd.dev/asn``, ``bgpd.dev/peer-ips``, ``bgpd.dev/peer-asns``), as kube-router does, so a
rack's ToRs can be set per node by whoever provisions the node.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, replace

from bgpd.config import Config, PeerConfig
from bgpd.model import NodeInfo
from bgpd.policy import annotations as ann
from bgpd.policy.addresses import not_plain
from bgpd.values import parse_uint


@dataclass(frozen=True)
class NodePeering:
    asn: int
    router_id: str | None  # None: could not be derived (no IPv4 InternalIP)
    peers: tuple[PeerConfig, ...]
    problems: tuple[str, ...] = ()  # bad annotations, reported and ignored


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def router_id_for(config: Config, node: NodeInfo | None) -> str | None:
    if config.bgp.router_id != "auto":
        return config.bgp.router_id
    if node is None:
        return None
    for kind in ("InternalIP", "ExternalIP"):
        for addr_type, value in node.addresses:
            if addr_type != kind:
                continue
            try:
                if ipaddress.ip_address(value).version == 4:
                    return value
            except ValueError:
                continue
    return None


def peering_for(config: Config, node: NodeInfo | None) -> NodePeering:
    labels = dict(node.labels) if node else {}
    notes = dict(node.annotations) if node else {}
    prefix = config.annotation_prefix
    problems: list[str] = []
    peers = [p for p in config.bgp.peers if selects(p.node_selector, labels)]
    asn = config.bgp.asn
    if config.bgp.node_annotations and node is not None:
        raw_asn = notes.get(f"{prefix}/{ann.NODE_ASN}")
        if raw_asn is not None:
            parsed = parse_uint(raw_asn)
            if parsed:
                asn = parsed
            else:
                problems.append(f"{prefix}/{ann.NODE_ASN}: {raw_asn!r} is not a valid ASN")
        ips = ann.split_list(notes.get(f"{prefix}/{ann.NODE_PEER_IPS}", ""))
        asns = ann.split_list(notes.get(f"{prefix}/{ann.NODE_PEER_ASNS}", ""))
        if ips and len(asns) not in (1, len(ips)):
            problems.append(f"{prefix}/{ann.NODE_PEER_ASNS}: needs one ASN, or one per peer IP "
                            f"({len(ips)})")
        elif ips:
            known = {p.address for p in peers}
            for i, ip in enumerate(ips):
                peer_asn = asns[0] if len(asns) == 1 else asns[i]
                try:
                    if not_plain(ip):
                        raise ValueError(ip)
                    address = str(ipaddress.ip_address(ip))
                except ValueError:
                    problems.append(f"{prefix}/{ann.NODE_PEER_IPS}: {ip!r} is not an IP address")
                    continue
                peer_asn_value = parse_uint(peer_asn)
                if not peer_asn_value:
                    problems.append(f"{prefix}/{ann.NODE_PEER_ASNS}: {peer_asn!r} is not a "
                                    f"valid ASN")
                    continue
                if address in known:
                    # The annotation overrides the ASN of a configured peer with that address.
                    peers = [replace(p, asn=peer_asn_value) if p.address == address else p
                             for p in peers]
                else:
                    peers.append(PeerConfig(address=address, asn=peer_asn_value))
                    known.add(address)
    return NodePeering(asn, router_id_for(config, node), tuple(peers), tuple(problems))
