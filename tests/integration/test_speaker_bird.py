"""The speaker against BIRD 2 in network namespaces."""

from __future__ import annotations

import pytest

from bgpd.config import ImportConfig, PrefixRule
from bgpd.model import Attributes
from tests.integration import routers
from tests.integration.routers import NODE_V4, NODE_V6, TOR_V4, TOR_V6, wait_for
from tests.integration.speaker_lab import (
    NODE_AS,
    ROUTE_TIMEOUT,
    SESSION_TIMEOUT,
    ann,
    bgp_config,
    peers,
    speaker,
)

pytestmark = [pytest.mark.integration]

TOR_AS = 65000
RICH = Attributes(communities=("64512:7",), large_communities=("64512:7:8",), local_pref=300, med=9)


def test_ebgp_v4_and_v6_with_attributes_then_withdrawn():
    with routers.tor_and_node("bird-ebgp") as (tor, node):
        conf = routers.bird_config(TOR_AS, {NODE_V4: NODE_AS, NODE_V6: NODE_AS})
        with routers.bird(tor, conf) as bird, speaker(bgp_config(*peers(TOR_AS)), node) as sp:
            sp.set_desired(
                [ann("10.244.1.0/24", RICH), ann("10.244.9.9/32"), ann("fd10:244:1::/64", RICH)]
            )
            v4 = wait_for(
                lambda: len(bird.bgp_routes("n1")) == 2 and bird.bgp_routes("n1"),
                SESSION_TIMEOUT,
                "v4",
            )
            attrs = v4["10.244.1.0/24"]
            assert attrs["BGP.community"] == "(64512,7)"
            assert attrs["BGP.large_community"] == "(64512, 7, 8)"
            assert attrs["BGP.med"] == "9"
            assert attrs["BGP.next_hop"] == NODE_V4
            assert attrs.get("BGP.local_pref") != "300"  # not sent over eBGP
            v6 = wait_for(lambda: bird.bgp_routes("n2"), SESSION_TIMEOUT, "v6")
            assert v6["fd10:244:1::/64"]["BGP.community"] == "(64512,7)"
            assert v6["fd10:244:1::/64"]["BGP.next_hop"].split()[0] == NODE_V6

            sp.set_desired([ann("10.244.9.9/32")])
            wait_for(
                lambda: set(bird.bgp_routes("n1")) == {"10.244.9.9/32"},
                ROUTE_TIMEOUT,
                "v4 withdrawal",
            )
            wait_for(lambda: not bird.bgp_routes("n2"), ROUTE_TIMEOUT, "v6 withdrawal")
            assert {p.address: p.state for p in sp.peers()} == {
                TOR_V4: "established",
                TOR_V6: "established",
            }


def test_ibgp_carries_local_pref():
    with routers.tor_and_node("bird-ibgp") as (tor, node):
        conf = routers.bird_config(NODE_AS, {NODE_V4: NODE_AS})
        with routers.bird(tor, conf) as bird, speaker(bgp_config(peers(NODE_AS)[0]), node) as sp:
            sp.set_desired([ann("10.244.1.0/24", RICH)])
            routes = wait_for(lambda: bird.bgp_routes("n1"), SESSION_TIMEOUT, "the route at BIRD")
            assert routes["10.244.1.0/24"]["BGP.local_pref"] == "300"
            assert routes["10.244.1.0/24"]["BGP.med"] == "9"


def test_routes_beyond_the_import_policy_are_not_learned():
    networks = [f"172.16.{i}.0/24" for i in range(6)] + ["198.18.0.0/15", "172.16.0.0/25"]
    with routers.tor_and_node("bird-import") as (tor, node):
        conf = routers.bird_config(TOR_AS, {NODE_V4: NODE_AS}, networks=networks)
        policy = ImportConfig(
            enabled=True, allow=(PrefixRule(ann("172.16.0.0/16").prefix, 24, 24),), max_prefixes=4
        )
        with (
            routers.bird(tor, conf),
            speaker(bgp_config(peers(TOR_AS)[0]), node, import_config=policy) as sp,
        ):
            # Stored: 4 allowed; counted, not stored: 2 not allowed, 2 over the limit.
            wait_for(
                lambda: (sp.peers()[0].prefixes_received, sp.peers()[0].routes_refused)
                == (4, 4),
                SESSION_TIMEOUT,
                "all received",
            )
            learned = sp.learned()
            assert len(learned) == 4
            assert all(p.prefixlen == 24 and str(p).startswith("172.16.") for p in learned)
            assert all(r.next_hop == TOR_V4 for routes in learned.values() for r in routes)
            stored, stale, refused = sp.received(TOR_V4)
            assert (refused.not_allowed, refused.over_limit, stale) == (2, 2, [])
            allowed = {f"172.16.{i}.0/24" for i in range(6)}
            assert dict(refused.samples) == {
                "198.18.0.0/15": "import-not-allowed", "172.16.0.0/25": "import-not-allowed",
                **{p: "over-max-prefixes" for p in allowed - set(map(str, learned))}}


def test_packed_routes_carry_every_attribute_to_bird():
    """ExaBGP patch 13 (``announce packed``): what BIRD stores for routes sent packed, IPv4
    in the NLRI field and IPv6 in MP_REACH_NLRI, is what the text path gives them above."""
    v4 = [ann(f"10.244.{i}.0/24", RICH) for i in range(40)]
    v6 = [ann(f"fd10:244:{i:x}::/64", RICH) for i in range(30)]
    with routers.tor_and_node("bird-packed") as (tor, node):
        conf = routers.bird_config(TOR_AS, {NODE_V4: NODE_AS, NODE_V6: NODE_AS})
        with routers.bird(tor, conf) as bird, speaker(bgp_config(*peers(TOR_AS)), node) as sp:
            sp.set_desired(v4 + v6)
            got4 = wait_for(lambda: len(bird.bgp_routes("n1")) == 40 and bird.bgp_routes("n1"),
                            SESSION_TIMEOUT, "the IPv4 routes")
            got6 = wait_for(lambda: len(bird.bgp_routes("n2")) == 30 and bird.bgp_routes("n2"),
                            SESSION_TIMEOUT, "the IPv6 routes")
            assert sp.counters()["commands_packed"] == 2  # one per session: really packed
            assert set(got4) == {str(a.prefix) for a in v4}
            assert set(got6) == {str(a.prefix) for a in v6}
            for attrs in got4.values():
                assert attrs["BGP.community"] == "(64512,7)"
                assert attrs["BGP.large_community"] == "(64512, 7, 8)"
                assert attrs["BGP.med"] == "9" and attrs["BGP.next_hop"] == NODE_V4
            for attrs in got6.values():
                assert attrs["BGP.community"] == "(64512,7)"
                assert attrs["BGP.next_hop"].split()[0] == NODE_V6
