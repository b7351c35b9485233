"""End to end on the leaf-spine lab: routes propagate node -> leaf -> spine, ECMP across the
two racks for a pod-owned external IP, and a pod two router hops from the client answers
with no NAT. One lab for the module, always brought down."""

from __future__ import annotations

import ipaddress

import pytest

from bgpd.lab.system import netns_list

from .labtools import CLIENT_IP, REPO, LabHandle, lab_cli, wait_for
from .test_single_tor import _requirements

pytestmark = pytest.mark.e2e

LEAF_SPINE = REPO / "lab" / "leaf-spine.clab.yml"
LEAF_OF = {"node1": "leaf1", "node2": "leaf1", "node3": "leaf2", "node4": "leaf2"}
LEAF_IP = {"leaf1": "172.21.1.2", "leaf2": "172.21.2.2"}  # their side of the spine links
ROUTE_TIMEOUT = 60  # four agents starting, then two BGP hops


@pytest.fixture(scope="module")
def lab():
    reason = _requirements()
    if reason:
        pytest.fail(reason)
    lab_cli("down", str(LEAF_SPINE))  # leftovers of an interrupted run
    try:
        done = lab_cli("up", str(LEAF_SPINE))
        assert done.returncode == 0, f"lab up failed:\n{done.stderr}"
        yield LabHandle(LEAF_SPINE)
    finally:
        lab_cli("down", str(LEAF_SPINE))
    left = [ns for ns in netns_list() if ns.startswith("clab-leaf-spine")]
    assert not left, f"lab down left namespaces: {left}"


def test_each_racks_pod_cidrs_reach_the_spine_through_their_leaf(lab):
    for node, leaf in sorted(LEAF_OF.items()):
        cidr = f"10.244.{node[-1]}.0/24"
        wait_for(lambda cidr=cidr, leaf=leaf: lab.next_hops(cidr, "spine1") == {LEAF_IP[leaf]},
                 ROUTE_TIMEOUT, f"{cidr} of {node} at spine1 via {leaf}")


def test_pod_owned_ip_on_two_racks_is_ecmp_at_the_spine_and_answers_without_nat(lab):
    eip = "198.51.100.30"
    ann = {"bgpd.dev/external-ips": eip}
    lab.create_pod("far", "node3", annotations=ann)
    lab.create_pod("near", "node1", annotations=ann)
    try:
        far_ip = lab.wait_pod_ip("far")
        lab.wait_pod_ip("near")
        assert ipaddress.ip_address(far_ip) in ipaddress.ip_network("10.244.3.0/24")
        wait_for(lambda: lab.next_hops(f"{eip}/32", "spine1") == set(LEAF_IP.values()),
                 ROUTE_TIMEOUT, f"{eip} at spine1 via both leafs")
        reply = wait_for(lambda: lab.echo(far_ip), 15, "echo from the pod on node3")
        assert reply["line"] == CLIENT_IP and reply["peer"] == far_ip
        reply = wait_for(lambda: lab.echo(eip), 15, "echo from the pod-owned address")
        assert reply["line"] == CLIENT_IP and reply["peer"] == eip
    finally:
        lab.delete_pod("far", wait=False)
        lab.delete_pod("near")
    wait_for(lambda: not lab.next_hops(f"{eip}/32", "spine1"), ROUTE_TIMEOUT,
             f"{eip} withdrawn at spine1")
