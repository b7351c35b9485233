"""The lab's containerlab topologies: valid against containerlab's schema, and realisable by
the namespace runner with the lab contract's names and address plan."""

from __future__ import annotations

import ipaddress
import json
import re
from pathlib import Path

import pytest
import yaml

from bgpd.config import parse_config
from bgpd.lab import runner
from bgpd.lab.kubelet import host_ifname, pod_netns
from bgpd.lab.topology import TopologyError, parse_endpoint, parse_topology

REPO = Path(__file__).resolve().parents[2]
SCHEMA = REPO / "lab" / "schema" / "clab.schema.json"  # containerlab's, kept in the repo
TOPOLOGIES = {"single-tor": REPO / "lab" / "single-tor.clab.yml",
              "leaf-spine": REPO / "lab" / "leaf-spine.clab.yml"}


def _validator():
    import jsonschema  # a test dependency: a missing one fails, never skips

    text = SCHEMA.read_text()
    # Python's re has no \p{..} classes: letters and digits in an interface-zone suffix.
    text = text.replace(r"\\p{N}\\p{L}", r"0-9A-Za-z")
    schema = json.loads(text)
    return jsonschema.Draft7Validator(schema)


@pytest.mark.parametrize("lab", sorted(TOPOLOGIES))
def test_topology_is_valid_containerlab(lab):
    validator = _validator()
    data = yaml.safe_load(TOPOLOGIES[lab].read_text())
    errors = sorted(validator.iter_errors(data), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)
    # draft-07 ignores prefixItems: check the brief endpoint form ourselves.
    for link in data["topology"]["links"]:
        assert len(link["endpoints"]) == 2
        for ep in link["endpoints"]:
            assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*:[A-Za-z0-9_.-]{1,15}", ep), ep
            assert ep.split(":")[0] in data["topology"]["nodes"], ep
    for name, node in data["topology"]["nodes"].items():
        assert node["kind"] == "linux", name
        for bind in node.get("binds", []):
            source = TOPOLOGIES[lab].parent / bind.split(":")[0]
            assert source.is_file(), f"{name}: bind source {source} missing"


def test_single_tor_contract():
    topo = parse_topology(TOPOLOGIES["single-tor"])
    assert topo.name == "single-tor"
    assert set(topo.nodes) == {"tor1", "node1", "node2", "client"}
    assert [n.name for n in topo.routers()] == ["tor1"]
    assert [n.name for n in topo.k8s_nodes()] == ["node1", "node2"]
    assert topo.netns("node1") == "clab-single-tor-node1"
    assert topo.lab_dir == REPO / "lab" / "clab-single-tor"
    # client is reached only through tor1
    assert [far for _, far, _ in topo.neighbours("client")] == ["tor1"]


def test_leaf_spine_contract():
    topo = parse_topology(TOPOLOGIES["leaf-spine"])
    assert topo.name == "leaf-spine"
    assert {n.name for n in topo.routers()} == {"spine1", "leaf1", "leaf2"}
    assert [n.name for n in topo.k8s_nodes()] == ["node1", "node2", "node3", "node4"]
    assert [far for _, far, _ in topo.neighbours("client")] == ["spine1"]
    racks = {n.name: {far for _, far, _ in topo.neighbours(n.name)} for n in topo.k8s_nodes()}
    assert racks == {"node1": {"leaf1"}, "node2": {"leaf1"}, "node3": {"leaf2"},
                     "node4": {"leaf2"}}


@pytest.mark.parametrize("lab", sorted(TOPOLOGIES))
def test_address_plan_and_router_configs_agree(lab):
    topo = parse_topology(TOPOLOGIES[lab])
    pods = ipaddress.ip_network("10.244.0.0/16")
    for node in topo.k8s_nodes():
        n = int(node.name.removeprefix("node"))
        cidr = ipaddress.ip_network(node.labels["lab.bgpd.dev/pod-cidr"])
        assert cidr == ipaddress.ip_network(f"10.244.{n}.0/24") and cidr.subnet_of(pods)
        peer = node.labels["lab.bgpd.dev/peer"]
        (router,) = [far for _, far, _ in topo.neighbours(node.name)]
        conf = topo.nodes[router].frr_conf.read_text()
        assert f"ip address {peer}/24" in conf
        assert f"neighbor {node.labels['lab.bgpd.dev/node-ip']} peer-group NODES" in conf
        assert f"router bgp {node.labels['lab.bgpd.dev/peer-asn']}" in conf
        assert f"ip addr add {node.labels['lab.bgpd.dev/node-ip']}/24 dev eth1" in node.exec
    for router in topo.routers():
        conf = router.frr_conf.read_text()
        for needle in ("bgp bestpath as-path multipath-relax", "maximum-paths",
                       "bgp graceful-restart", "198.51.100.0/24 le 32",
                       "203.0.113.0/24 le 32", "10.244.0.0/16 ge 24 le 32"):
            assert needle in conf, f"{router.name}: {needle!r} missing"
    client = topo.nodes["client"]
    assert "ip addr add 192.0.2.10/24 dev eth1" in client.exec
    # no lab namespace gets a default route (traffic stays in the lab)
    for node in topo.nodes.values():
        assert not any(" default " in f" {line} " for line in node.exec), node.name


@pytest.mark.parametrize("lab", sorted(TOPOLOGIES))
def test_rendered_agent_config_is_valid(lab):
    topo = parse_topology(TOPOLOGIES[lab])
    for node in topo.k8s_nodes():
        config = parse_config(runner.render_agent_config(topo, node))
        (peer,) = config.bgp.peers
        assert peer.address == node.labels["lab.bgpd.dev/peer"]
        assert peer.hold_time == 9 and peer.keepalive == 3
        # GR restart time below the hold time: a killed agent's routes leave the ToR
        # within the hold time, a restarted one keeps them.
        assert 0 < peer.graceful_restart < peer.hold_time
        assert config.http.debug_address == "127.0.0.1:9180"


def test_node_object_has_pod_cidr_and_address():
    topo = parse_topology(TOPOLOGIES["single-tor"])
    obj, status = runner.node_object(topo.nodes["node2"])
    assert obj["spec"]["podCIDRs"] == ["10.244.2.0/24"]
    assert {"type": "InternalIP", "address": "172.20.2.2"} in status["addresses"]


def test_endpoint_form_is_checked():
    assert str(parse_endpoint("tor1:eth1", "x")) == "tor1:eth1"
    for bad in ("tor1", "tor1:eth1:x", ":eth1", "tor1:an-interface-name-too-long"):
        with pytest.raises(TopologyError):
            parse_endpoint(bad, "x")


def test_bad_topology_names_the_field(tmp_path):
    path = tmp_path / "t.clab.yml"
    path.write_text("name: t\ntopology:\n  nodes:\n    a: {kind: linux}\n"
                    "  links:\n    - endpoints: ['a:eth1', 'b:eth1']\n")
    with pytest.raises(TopologyError, match=r"links\[0\].*unknown node 'b'"):
        parse_topology(path)


def test_placeholders_expand(tmp_path):
    path = tmp_path / "x.clab.yml"
    path.write_text("name: x\ntopology:\n  nodes:\n    a:\n      kind: linux\n"
                    "      exec: ['echo __clabNodeName__ __clabLabName__ __clabNodeDir__']\n")
    topo = parse_topology(path)
    assert topo.expand(topo.nodes["a"].exec[0], "a") == \
        f"echo a x {tmp_path / 'clab-x' / 'a'}"


def test_pod_names_fit_kernel_limits():
    assert len(host_ifname("0" * 36)) <= 15
    assert host_ifname("a") != host_ifname("b")
    long = pod_netns("single-tor", "node1", "n" * 63, "p" * 253, "uid-1")
    assert len(long) < 200 and long.startswith("clab-single-tor-node1-pod-")
    assert pod_netns("l", "node1", "default", "echo", "u") == "clab-l-node1-pod-default-echo"


def test_vtysh_pathspace():
    topo = parse_topology(TOPOLOGIES["single-tor"])
    assert runner.vtysh_command(topo, "tor1", "show ip bgp") == \
        "ip netns exec clab-single-tor-tor1 vtysh -N single-tor-tor1 -c 'show ip bgp'"
