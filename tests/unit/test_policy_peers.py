"""Per-node peering: selectors, Node annotation overrides, router id."""

from __future__ import annotations

from bgpd.policy.peers import peering_for
from tests.unit.policy_builders import config, node

PEERS = {"bgp": {"asn": 64512, "peers": [
    {"address": "10.0.1.1", "asn": 65001, "node_selector": {"rack": "r1"}},
    {"address": "10.0.2.1", "asn": 65002, "node_selector": {"rack": "r2"}},
    {"address": "10.0.0.254", "asn": 65000},
]}}


def addresses(peering):
    return [(p.address, p.asn) for p in peering.peers]


def test_node_selector_picks_the_racks_peers():
    peering = peering_for(config(**PEERS), node(labels={"rack": "r2"}))
    assert addresses(peering) == [("10.0.2.1", 65002), ("10.0.0.254", 65000)]
    assert peering.asn == 64512 and peering.router_id == "172.20.1.11"


def test_node_annotations_set_asn_and_add_peers():
    n = node(labels={"rack": "r1"}, annotations={
        "bgpd.dev/asn": "64600", "bgpd.dev/peer-ips": "10.0.1.2, 10.0.1.1",
        "bgpd.dev/peer-asns": "65011"})
    peering = peering_for(config(**PEERS), n)
    assert peering.asn == 64600
    assert addresses(peering) == [("10.0.1.1", 65011), ("10.0.0.254", 65000), ("10.0.1.2", 65011)]
    assert peering.problems == ()


def test_bad_node_annotations_are_reported_and_ignored():
    n = node(annotations={"bgpd.dev/asn": "big", "bgpd.dev/peer-ips": "tor,10.9.9.9",
                          "bgpd.dev/peer-asns": "1,x"})
    peering = peering_for(config(**PEERS), n)
    assert peering.asn == 64512
    assert addresses(peering) == [("10.0.0.254", 65000)]
    assert len(peering.problems) == 3


def test_annotations_ignored_when_disabled():
    raw = {"bgp": {**PEERS["bgp"], "node_annotations": False}}
    peering = peering_for(config(**raw), node(annotations={"bgpd.dev/asn": "64600"}))
    assert peering.asn == 64512


def test_no_ipv4_address_means_no_router_id():
    from bgpd.model import NodeInfo

    peering = peering_for(config(), NodeInfo("n", addresses=(("InternalIP", "fd00::1"),)))
    assert peering.router_id is None
