"""Drain before eviction: a node on its way out stops attracting Service traffic first.

A node drains while any configured trigger holds: cordoned (``spec.unschedulable``), a
configured label present, a configured taint key present. Its Service addresses (external,
LoadBalancer, cluster IPs) and pod-owned external IPs are then announced less preferred, or
withdrawn, depending on ``drain.action``; its pod CIDR and pod IPs never change (the pods
still run there until they are evicted, and only this node can reach them).

Why ``prepend`` is the default and ``withdraw`` is careful: a less-preferred path still
carries traffic when it is the only one left, so cordoning every node at once changes
nothing for a Service that has endpoints. A withdrawal does not have that property, so it
is applied only where some other node is known to serve the same address:

* eTP=Cluster external and LoadBalancer IPs, and cluster IPs: every node can deliver them,
  so they are withdrawn once the API server has shown another node that is neither
  cordoned nor carries a drain label (``others_available``); until then, and whenever the
  API cannot answer, they are announced less preferred;
* eTP=Local addresses and pod-owned external IPs: only nodes with local endpoints can
  deliver them, and this node cannot see whether those others are draining too, so they
  are announced less preferred; the eviction that follows the drain withdraws them.
"""

from __future__ import annotations

from dataclasses import replace

from bgpd.config import DrainConfig
from bgpd.model import Attributes, NodeInfo


def drain_trigger(node: NodeInfo | None, drain: DrainConfig) -> str:
    """Why ``node`` drains (for explain, status and Events), or "" when it does not."""
    if node is None:
        return ""
    if drain.cordoned and node.unschedulable:
        return "node is cordoned (spec.unschedulable)"
    for key in drain.labels:
        if key in node.labels:
            return f"node has label {key}"
    for key in drain.taints:
        if key in node.taints:
            return f"node has taint {key}"
    return ""


def less_preferred(attrs: Attributes, drain: DrainConfig) -> Attributes:
    """``attrs`` made worse than any undrained path's by ``drain.action`` (withdraw falls
    back to prepend wherever it cannot withdraw)."""
    if drain.action == "med":
        return replace(attrs, med=drain.med if attrs.med is None else max(attrs.med, drain.med))
    return replace(attrs, prepend=max(attrs.prepend, drain.prepend))


def withdraws(drain: DrainConfig, any_node_delivers: bool, others_available: bool | None
              ) -> bool:
    """Does a draining node withdraw an address (rather than announce it less preferred)?

    ``any_node_delivers``: the address is a cluster IP or an eTP=Cluster Service address.
    ``others_available``: the API showed another undrained node (None: not known).
    """
    return drain.action == "withdraw" and any_node_delivers and others_available is True
