"""Starting the speaker against the routers of routers.py, always stopped afterwards."""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Iterator

from bgpd.config import BgpConfig, ImportConfig, PeerConfig
from bgpd.model import NO_ATTRIBUTES, Announcement, Attributes
from bgpd.speaker import Speaker
from tests.integration.routers import NODE_V4, NODE_V6, TOR_V4, TOR_V6

NODE_AS = 64512
SESSION_TIMEOUT = 30.0  # connect + OPEN + our replay, on a loaded 2-core machine
ROUTE_TIMEOUT = 20.0


def peers(tor_as: int, **overrides) -> tuple[PeerConfig, PeerConfig]:
    """One IPv4 and one IPv6 session to the ToR."""
    return (
        PeerConfig(TOR_V4, tor_as, local_address=NODE_V4, families=("ipv4-unicast",), **overrides),
        PeerConfig(TOR_V6, tor_as, local_address=NODE_V6, families=("ipv6-unicast",), **overrides),
    )


def bgp_config(*peer_configs: PeerConfig) -> BgpConfig:
    return BgpConfig(asn=NODE_AS, router_id=NODE_V4, peers=peer_configs)


@contextlib.contextmanager
def speaker(
    bgp: BgpConfig, netns: str, import_config: ImportConfig | None = None, **kwargs
) -> Iterator[Speaker]:
    sp = Speaker(bgp, netns=netns, import_config=import_config, **kwargs)
    sp.start()
    try:
        yield sp
    finally:
        sp.stop()


def ann(prefix: str, attributes: Attributes = NO_ATTRIBUTES) -> Announcement:
    return Announcement(ipaddress.ip_network(prefix), attributes)


def established(sp: Speaker, *addresses: str) -> bool:
    states = {p.address: p.state for p in sp.peers()}
    return all(states.get(a) == "established" for a in addresses)
