"""Weighted ECMP: the link bandwidth an address is announced with, from what this node
serves of it (local endpoints of an eTP=Local Service, pods owning an address). Routers
such as FRR turn the ratio between nodes into next-hop weights."""

from __future__ import annotations

from bgpd.config import WeightedEcmpConfig


def link_bandwidth(count: int, noun: str, where: str, w: WeightedEcmpConfig
                   ) -> tuple[int, str]:
    """(bytes/s, text for explain) for ``count`` of ``noun`` (singular) ``where``: one
    ``bandwidth_per_endpoint`` each, up to ``max_endpoints`` (one node cannot claim the
    rack's traffic)."""
    bandwidth = min(count, w.max_endpoints) * w.bandwidth_per_endpoint
    capped = (f", capped at weighted_ecmp.max_endpoints {w.max_endpoints}"
              if count > w.max_endpoints else "")
    return bandwidth, (f"link bandwidth {bandwidth} B/s for {count} {noun}"
                       f"{'' if count == 1 else 's'}{where}{capped}")
