"""The policy's fast paths give exactly what the plain paths give.

* The IPv4 address fast path (bgpd/policy/addresses.py) against ipaddress's own parser.
* The IPv4 pool lookup (bgpd/policy/claims.py) against Pool.contains.
* The Decider's memo (C-level change detection, node/pod memo, the rejections shortcut)
  against a fresh decision, over random sequences of snapshots that change the way the
  cache changes them: new maps of mostly the same objects, equal-but-new objects, maps
  wrapped read-only, objects coming and going.
"""

from __future__ import annotations

import copy
import dataclasses
import ipaddress
import pickle
import random
import sys
from types import MappingProxyType

import pytest

from bgpd.config import parse_config
from bgpd.model import (
    EndpointInfo,
    EndpointSliceInfo,
    NamespaceInfo,
    NodeInfo,
    PodInfo,
    ServiceInfo,
    Snapshot,
)
from bgpd.policy import addresses
from bgpd.policy.claims import _pool_for, pool_for
from bgpd.policy.decide import Decider, decide
from bgpd.policy.endpoints import summarize
from tests.unit.policy_builders import BASE_CONFIG, NODE

# ------------------------------------------------------------------ addresses


def _reference_host_prefix(text):
    """bgpd.policy.addresses.host_prefix as it was before the fast path: ipaddress only."""
    if not isinstance(text, str):
        return None, "", f"{text!r} is not a string"
    if len(text) > addresses._MAX_TEXT:
        return None, "", f"a {len(text)}-character string is not an IP address"
    text = text.strip()
    why = addresses.not_plain(text)
    if why:
        return None, "", why
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None, "", f"{text!r} is not an IP address"
    why = addresses.unroutable(addr)
    if why:
        return None, "", f"{addr} is {why}"
    net = ipaddress.ip_network(addr)
    return net, str(net), ""


EDGE_ADDRESSES = [
    "0.0.0.0", "0.0.0.1", "1.2.3.4", " 1.2.3.4", "1.2.3.4\n", "01.2.3.4", "1.2.3.04", "1.2.3.256",
    "1.2.3", "1.2.3.4.5", "1..3.4", "+1.2.3.4", "1.2.3.-4", "١.2.3.4", "1.2.3.4/32", "1.2.3.4/24",
    "126.255.255.255", "127.0.0.0", "127.255.255.255", "128.0.0.0", "169.253.255.255",
    "169.254.0.0", "169.254.255.255", "169.255.0.0", "223.255.255.255", "224.0.0.0",
    "239.255.255.255", "240.0.0.0", "255.255.255.254", "255.255.255.255", "198.51.100.7",
    "10.96.0.10", "::", "::1", "fe80::1", "2001:db8::7", "::ffff:1.2.3.4", "", " ", "1.2.3.4 ",
    "1.2.3.4%x", "999.1.1.1", "00.0.0.0", "0.00.0.0",
]


def _random_addresses(rnd: random.Random, n: int):
    for _ in range(n):
        kind = rnd.random()
        if kind < 0.6:
            yield ".".join(str(rnd.choice([0, 1, 127, 169, 224, 240, 255, rnd.randrange(256)]))
                           for _ in range(4))
        elif kind < 0.8:
            yield str(ipaddress.IPv4Address(rnd.getrandbits(32)))
        else:
            yield rnd.choice(EDGE_ADDRESSES)


@pytest.mark.parametrize("text", EDGE_ADDRESSES)
def test_the_ipv4_fast_path_parses_like_ipaddress(text):
    assert addresses.host_prefix(text) == _reference_host_prefix(text)


def test_the_ipv4_fast_path_parses_like_ipaddress_at_random():
    addresses._host_prefix.cache_clear()  # parsed here, not remembered from other tests
    rnd = random.Random(16)
    for text in _random_addresses(rnd, 20_000):
        got, want = addresses.host_prefix(text), _reference_host_prefix(text)
        assert got == want, text
        if got[0] is not None:
            assert isinstance(got[0], type(want[0])) and str(got[0]) == got[1]


@pytest.mark.parametrize("value", [0, 1, 0x7F000001, 0xC6336407, 0xFFFFFFFE, 0xFFFFFFFF])
def test_a_fast_host_network_is_the_constructors(value):
    fast, slow = addresses.v4_host_network(value), ipaddress.IPv4Network(value)
    assert fast == slow and hash(fast) == hash(slow) and repr(fast) == repr(slow)
    assert vars(fast).keys() == vars(slow).keys()
    assert list(fast.hosts()) == list(slow.hosts()) == [slow.network_address]
    assert fast.hosts() == slow.hosts() and fast.hosts() is not fast.hosts()  # a new list
    assert sys.getsizeof(vars(fast)["hosts"]) <= 48  # not a closure per address
    assert fast.broadcast_address == slow.broadcast_address
    assert fast.subnet_of(ipaddress.ip_network("0.0.0.0/0"))
    assert fast.num_addresses == 1 and fast.prefixlen == 32
    assert pickle.loads(pickle.dumps(fast)) == slow and copy.copy(fast) == slow


def test_fast_host_networks_and_the_constructors_are_one_dict_key():
    # The fast type hashes by its own formula: equal networks of both kinds must find each
    # other in a dict, and networks derived from a fast one (supernet, subnets, pickling)
    # hash as the constructor's do.
    rnd = random.Random(5)
    values = [rnd.getrandbits(32) for _ in range(2_000)] + [0, 0xFFFFFFFF]
    table = {addresses.v4_host_network(v): v for v in values}
    for v in values:
        slow = ipaddress.IPv4Network(v)
        assert table[slow] == v and hash(slow) == hash(addresses.v4_host_network(v))
    fast = addresses.v4_host_network(0xC6336407)
    for derived in (fast.supernet(8), fast.supernet(31), *fast.subnets(0),
                    pickle.loads(pickle.dumps(fast)), copy.deepcopy(fast)):
        twin = ipaddress.ip_network(str(derived))
        assert derived == twin and hash(derived) == hash(twin) and repr(derived) == repr(twin)
    assert fast not in {ipaddress.ip_network("198.51.100.6/31"),
                        ipaddress.ip_network("::c633:6407/128")}


def test_the_ipv4_pool_lookup_is_pool_contains():
    pools = parse_config(BASE_CONFIG).pools
    rnd = random.Random(7)
    for text in _random_addresses(rnd, 5_000):
        net, key, _ = _reference_host_prefix(text)
        if net is None:
            continue
        want = next((p for p in pools if p.contains(net)), None)
        assert pool_for(net, pools) is want, key
        if net.version == 4:  # the plain Services' tables pass the address's integer
            assert _pool_for(key, pools, int(net.network_address)) is want, key
    for net in map(ipaddress.ip_network, ("198.51.100.0/32", "198.51.100.255/32",
                                          "198.51.101.0/32", "198.51.99.255/32",
                                          "2001:db8:e::7/128", "10.96.0.0/24")):
        assert pool_for(net, pools) is next((p for p in pools if p.contains(net)), None)


# -------------------------------------------------------------- the Decider


POOLS_BY_LABEL = {"name": "team", "cidrs": ["192.0.2.0/24"],
                  "allow": ["external-ip", "load-balancer-ip", "pod-external-ip"],
                  "namespace_selector": {"team": "a"}}
POOLS_BY_NAME = {"name": "named", "cidrs": ["198.18.0.0/24"],
                 "allow": ["external-ip", "load-balancer-ip", "pod-external-ip", "pod-ip"],
                 "namespaces": ["a", "c"]}

ADDRESSES = ["198.51.100.7", "198.51.100.8", "203.0.113.5", "203.0.113.6", "10.96.0.10",
             "10.96.0.11", "2001:db8:e::7", "2001:db8:b::5", "fd00:96::10", "100.64.3.4",
             "10.244.1.5", "10.244.1.6", "192.0.2.5", "198.18.0.3", "172.31.0.9", "127.0.0.1",
             "0.0.0.0", "not-an-ip", "198.51.100.07", "2001:db8:e::7%x"]
ANNOTATIONS = {
    "bgpd.dev/advertise": ["true", "false", "flase"],
    "bgpd.dev/advertise-cluster-ip": ["true", "false"],
    "bgpd.dev/require-ready-endpoint": ["true", "maybe"],
    "bgpd.dev/communities": ["65000:7, 65000:8", "65000:x"],
    "bgpd.dev/local-pref": ["300", "-1"],
}


def _config(rnd: random.Random):
    raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in BASE_CONFIG.items()}
    raw["advertise"] = {f: rnd.random() < 0.5 for f in (
        "pod_cidr", "pod_ips", "cluster_ips", "external_ips", "load_balancer_ips",
        "pod_external_ips", "require_ready_endpoint") if rnd.random() < 0.3}
    raw["pools"] = list(raw["pools"]) + [p for p in (POOLS_BY_LABEL, POOLS_BY_NAME)
                                         if rnd.random() < 0.4]
    return parse_config(raw)


GOOD = ["198.51.100.7", "198.51.100.8", "203.0.113.5", "2001:db8:e::7", "192.0.2.5"]


def _addrs(rnd, k):
    """Mostly addresses some pool allows (so endpoints and conflicts matter), some not."""
    return tuple(rnd.choice(GOOD if rnd.random() < 0.6 else ADDRESSES)
                 for _ in range(rnd.randint(0, k)))


def _service(rnd, ns, name):
    notes = {}
    if rnd.random() < 0.3:
        for key in rnd.sample(sorted(ANNOTATIONS), rnd.randint(1, 2)):
            notes[key] = rnd.choice(ANNOTATIONS[key])
    return ServiceInfo(
        namespace=ns, name=name,
        type=rnd.choice(["ClusterIP", "LoadBalancer", "LoadBalancer", "LoadBalancer",
                         "ExternalName"]),
        cluster_ips=rnd.choice([("10.96.0.10",), ("10.96.0.11", "fd00:96::10"), ("10.96.0.12",),
                                ("None",), ()]),
        external_ips=_addrs(rnd, 2), lb_ips=_addrs(rnd, 2),
        external_traffic_policy=rnd.choice(["Cluster", "Local"]),
        internal_traffic_policy=rnd.choice(["Cluster", "Local"]),
        annotations=notes, created=float(rnd.randint(0, 4)),
        ports=rnd.choice([(("", "TCP"),), (("http", "TCP"),)]),
        problems=rnd.choice([(), (), ("left out",)]))


def _slice(rnd, ns, name, service_name):
    eps = tuple(EndpointInfo(addresses=(f"10.244.9.{i}",),
                             node_name=rnd.choice([NODE, "node2", None]),
                             ready=rnd.choice([True, False, None]),
                             serving=rnd.choice([True, False, None]),
                             terminating=rnd.choice([True, False, None]))
                for i in range(rnd.randint(0, 3)))
    ready, terminating, usable = summarize(eps, NODE)
    return EndpointSliceInfo(ns, name, service_name, rnd.choice(["IPv4", "IPv4", "IPv6"]),
                             rnd.choice([(("", "TCP"),), (("http", "TCP"),)]),
                             ready, terminating, usable)


def _pod(rnd, ns, name):
    notes = {}
    if rnd.random() < 0.4:
        notes["bgpd.dev/external-ips"] = ",".join(_addrs(rnd, 2))
    return PodInfo(namespace=ns, name=name, node_name=NODE,
                   ips=rnd.choice([("10.244.1.5",), ("10.244.1.6", "fd00:244:1::6"),
                                   ("100.64.3.4",), ("172.31.0.9",)]),
                   phase=rnd.choice(["Running", "Running", "Failed"]),
                   ready=rnd.random() < 0.7, annotations=notes,
                   created=float(rnd.randint(0, 4)), deleting=rnd.random() < 0.1)


def _node(rnd):
    labels = {"bgpd.dev/announce": rnd.choice(["false", "flase"])} if rnd.random() < 0.15 else {}
    return NodeInfo(name=NODE, labels=labels, addresses=(("InternalIP", "172.20.1.11"),),
                    pod_cidrs=rnd.choice([("10.244.1.0/24", "fd00:244:1::/64"),
                                          ("198.51.100.7/32", "10.244.1.0/24"),
                                          ("10.244.2.1/24",)]))


def _outcome(decision, claims_first: bool):
    if claims_first:
        claims = decision.claims
        rejections = decision.rejections
    else:
        rejections = decision.rejections  # the shortcut, before claims exist
        claims = decision.claims
        assert rejections == [c for c in claims if c.rejected]
    return (decision.announcements, decision.kernel_routes, claims, rejections,
            decision.node_opted_out, [decision.same_on_every_node(c) for c in claims],
            [decision.explain(ipaddress.ip_network(p))
             for p in ("198.51.100.7/32", "10.244.1.5/32", "2001:db8:e::7/128")])


@pytest.mark.parametrize("seed", range(80))
def test_the_memo_agrees_with_a_fresh_decision_over_a_sequence_of_changes(seed):
    rnd = random.Random(seed)
    cfg = _config(rnd)
    nss = ["a", "b", "c"]
    services, slices, pods = {}, {}, {}
    namespaces = {ns: NamespaceInfo(ns, rnd.choice([{}, {"team": "a"}])) for ns in nss}
    for i in range(rnd.randint(0, 8)):
        s = _service(rnd, rnd.choice(nss), f"s{i}")
        services[s.key] = s
    for i in range(rnd.randint(0, 8)):
        sl = _slice(rnd, rnd.choice(nss), f"e{i}", f"s{rnd.randint(0, 9)}")
        slices[sl.key] = sl
    for i in range(rnd.randint(0, 3)):
        p = _pod(rnd, rnd.choice(nss), f"p{i}")
        pods[p.key] = p
    node = _node(rnd)

    def wrap(d):
        return MappingProxyType(dict(d)) if rnd.random() < 0.3 else dict(d)

    maps = {"s": wrap(services), "e": wrap(slices), "p": wrap(pods), "n": wrap(namespaces)}
    decider = Decider()
    earlier = []  # every decision with what it said: later decisions must not change it
    for step in range(10):
        touched = set()
        for _ in range(rnd.randint(0, 4)):
            what, ns = rnd.random(), rnd.choice(nss)
            if what < 0.3:
                s = _service(rnd, ns, f"s{rnd.randint(0, 9)}")
                if rnd.random() < 0.2:
                    services.pop(s.key, None)
                else:
                    services[s.key] = s
                touched.add("s")
            elif what < 0.4 and services:
                key = rnd.choice(sorted(services))
                services[key] = dataclasses.replace(services[key])  # equal, not identical
                touched.add("s")
            elif what < 0.6:
                # mostly a slice of a Service that exists, so its verdict may change
                target = rnd.choice(sorted(services) or ["a/s0"]).split("/")
                sl = (_slice(rnd, target[0], f"e{rnd.randint(0, 9)}", target[1])
                      if rnd.random() < 0.7 else
                      _slice(rnd, ns, f"e{rnd.randint(0, 9)}", f"s{rnd.randint(0, 9)}"))
                if rnd.random() < 0.2:
                    slices.pop(sl.key, None)
                else:
                    slices[sl.key] = sl
                touched.add("e")
            elif what < 0.75:
                p = _pod(rnd, ns, f"p{rnd.randint(0, 4)}")
                if rnd.random() < 0.2:
                    pods.pop(p.key, None)
                else:
                    pods[p.key] = p
                touched.add("p")
            elif what < 0.85:
                namespaces[ns] = NamespaceInfo(ns, rnd.choice([{}, {"team": "a"}, {"team": "b"}]))
                touched.add("n")
            elif what < 0.95:
                node = _node(rnd) if rnd.random() < 0.7 else dataclasses.replace(node)
            else:
                cfg = _config(rnd)
        for name, source in (("s", services), ("e", slices), ("p", pods), ("n", namespaces)):
            if name in touched:
                maps[name] = wrap(source)
        snap = Snapshot(node=node, pods=maps["p"], services=maps["s"],
                        endpoint_slices=maps["e"], namespaces=maps["n"])
        claims_first = rnd.random() < 0.5
        decision = decider.decide(snap, cfg, NODE)
        fresh = _outcome(decide(snap, cfg, NODE), not claims_first)
        if rnd.random() < 0.5:
            assert _outcome(decision, claims_first) == fresh, f"seed {seed}, step {step}"
        # else: read only after the decisions that follow (its claims are built lazily)
        earlier.append((decision, claims_first, fresh))
        again = decider.decide(snap, cfg, NODE)  # nothing changed: the same answer again
        assert again.announcements == fresh[0]
    for decision, claims_first, fresh in earlier:
        assert _outcome(decision, claims_first) == fresh


def test_one_changed_service_in_a_new_map_is_found():
    """The cache hands out a new map per change: the one new object in it is re-judged,
    and an equal but new object changes nothing."""
    cfg = parse_config(BASE_CONFIG)
    node = NodeInfo(NODE, pod_cidrs=("10.244.1.0/24",),
                    addresses=(("InternalIP", "172.20.1.11"),))
    svcs = {f"default/s{i}": ServiceInfo("default", f"s{i}", cluster_ips=("10.96.0.10",),
                                         external_ips=(f"198.51.100.{i}",))
            for i in range(1, 50)}
    decider = Decider()
    decider.decide(Snapshot(node, services=svcs), cfg, NODE)
    changed = dict(svcs)
    changed["default/s7"] = dataclasses.replace(svcs["default/s7"], external_ips=("192.0.2.1",))
    changed["default/s8"] = dataclasses.replace(svcs["default/s8"])
    del changed["default/s9"]
    got = decider.decide(Snapshot(node, services=MappingProxyType(changed)), cfg, NODE)
    assert got.announcements == decide(Snapshot(node, services=changed), cfg, NODE).announcements
    assert "198.51.100.7/32" not in got.announcements
    assert "198.51.100.9/32" not in got.announcements
    assert "198.51.100.8/32" in got.announcements
    assert [c.reason for c in got.rejections] == ["outside-pools"]


def test_an_endpoint_change_alone_re_judges_its_service():
    """Same Service objects in the same map, only the EndpointSlices map is new."""
    cfg = parse_config(BASE_CONFIG)
    node = NodeInfo(NODE, pod_cidrs=("10.244.1.0/24",),
                    addresses=(("InternalIP", "172.20.1.11"),))
    svcs = {"default/s": ServiceInfo("default", "s", cluster_ips=("10.96.0.10",),
                                     external_ips=("198.51.100.7",),
                                     external_traffic_policy="Local")}

    def slice_(ready):
        eps = (EndpointInfo(addresses=("10.244.1.9",), node_name=NODE, ready=ready),)
        return {"default/s-1": EndpointSliceInfo("default", "s-1", "s", "IPv4",
                                                 (("", "TCP"),), *summarize(eps, NODE))}

    decider = Decider()
    for slices, announced in ((slice_(True), True), (slice_(False), False),
                              (slice_(True), True), ({}, False), (slice_(True), True)):
        got = decider.decide(Snapshot(node, services=svcs, endpoint_slices=slices), cfg, NODE)
        assert ("198.51.100.7/32" in got.announcements) is announced


# ------------------------------------------------------- plain Services' claims


def _plain_config(rnd: random.Random):
    """_config() with, sometimes, a pool that weights ECMP by local endpoints."""
    raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in BASE_CONFIG.items()}
    raw["advertise"] = {f: rnd.random() < 0.5 for f in (
        "cluster_ips", "external_ips", "load_balancer_ips", "require_ready_endpoint")
        if rnd.random() < 0.4}
    pools = [dict(p) for p in raw["pools"]]
    if rnd.random() < 0.5:
        pools[0]["weighted_ecmp"] = True  # "external"
    raw["pools"] = pools + [p for p in (POOLS_BY_LABEL, POOLS_BY_NAME) if rnd.random() < 0.4]
    return parse_config(raw)


def _plain_service(rnd: random.Random, ns: str, name: str) -> ServiceInfo:
    """Mostly Services without annotations or problems (the fast path), with every kind
    of address, family and traffic policy; some that must leave the fast path."""
    junk = [1, None, ["198.51.100.7"], " 198.51.100.8", "x" * 80, "198.51.100.7/32", ""]

    def addrs(k):
        out = list(_addrs(rnd, k))
        if rnd.random() < 0.05:
            out.insert(rnd.randint(0, len(out)), rnd.choice(junk))
        return tuple(out)

    cluster = rnd.choice([("10.96.0.10",), ("fd00:96::10",), ("10.96.0.11", "fd00:96::10"),
                          ("fd00:96::10", "10.96.0.12"), ("None",), (), ("192.0.2.5",)])
    if rnd.random() < 0.05:
        cluster += (rnd.choice(junk),)
    return ServiceInfo(
        namespace=ns, name=name,
        type=rnd.choice(["ClusterIP", "LoadBalancer", "LoadBalancer", "NodePort",
                         "ExternalName"]),
        cluster_ips=cluster, external_ips=addrs(3), lb_ips=addrs(3),
        external_traffic_policy=rnd.choice(["Cluster", "Local", "Local"]),
        internal_traffic_policy=rnd.choice(["Cluster", "Local"]),
        annotations=({"bgpd.dev/advertise": "false"} if rnd.random() < 0.05 else {}),
        created=float(rnd.randint(0, 4)),
        ports=rnd.choice([(("", "TCP"),), (("http", "TCP"),)]),
        problems=("left out",) if rnd.random() < 0.05 else ())


def test_plain_services_claims_are_the_general_paths(monkeypatch):
    """service_claims() judges a plain Service (no annotations, no problems, not headless,
    not ExternalName, every address parses) from per-config address tables; it must give
    exactly what general_claims() gives, tables cold or warm, whatever the config."""
    from bgpd.policy import services

    fast = 0
    general = services.general_claims

    def counting(*args):
        nonlocal fast
        fast -= 1
        return general(*args)

    monkeypatch.setattr(services, "general_claims", counting)
    rnd = random.Random(20)
    cfgs = [_plain_config(rnd) for _ in range(6)]
    calls = 0
    for _ in range(6_000):
        cfg = rnd.choice(cfgs)  # a change of config starts new tables
        ns = rnd.choice(["a", "b", "c"])
        svc = _plain_service(rnd, ns, f"s{rnd.randint(0, 9)}")
        slices = tuple(_slice(rnd, ns, f"e{i}", svc.name) for i in range(rnd.randint(0, 2)))
        labels = rnd.choice([None, {}, {"team": "a"}, {"team": "b"}])
        node = rnd.choice([NODE, "node2"])
        for _ in range(rnd.choice([1, 2])):  # a cold table, then a warm one
            calls += 1
            fast += 1
            got = _result(services.service_claims, svc, slices, node, cfg, labels)
            assert got == _result(general, svc, slices, node, cfg, labels), svc
    assert calls * 0.25 < fast < calls  # many took the fast path, not all


def _result(fn, *args):
    """What ``fn`` returns, with each claim's type, or the exception it raises (a junk
    ClusterIP beside an announced address makes both paths raise alike)."""
    try:
        claims = fn(*args)
    except Exception as exc:  # noqa: BLE001 - compared, not hidden
        return type(exc), str(exc)
    return claims, [type(c) for c in claims]


def test_the_plain_tables_are_bounded_and_emptied_with_the_caches(monkeypatch):
    from bgpd.policy import services
    from bgpd.policy.decide import _trim_caches

    monkeypatch.setattr(services, "PLAIN_TABLE_SIZE", 8)
    cfg = parse_config(BASE_CONFIG)
    for i in range(40):
        svc = ServiceInfo("default", f"s{i}", cluster_ips=("10.96.0.10",),
                          external_ips=(f"198.51.100.{i + 1}",))
        services.service_claims(svc, (), NODE, cfg)
        assert len(services._plain.tables[1]) <= 8  # external-ip
    assert services._plain.config is cfg
    monkeypatch.setattr(addresses._host_prefix, "cache_info",
                        lambda: type("Info", (), {"currsize": 10**9})())
    _trim_caches(0)
    assert services._plain.config is None
    assert not any(services._plain.tables)


def test_plain_addresses_are_parsed_into_their_tables_and_counted_for_the_trim(monkeypatch):
    from bgpd.policy import decide, services

    services.clear_plain_verdicts()
    addresses._host_prefix.cache_clear()
    monkeypatch.setattr(decide, "CACHE_SLACK", 0)
    cfg = parse_config(BASE_CONFIG)
    for i in range(50):
        svc = ServiceInfo("default", f"s{i}", cluster_ips=(f"10.96.1.{i + 1}",),
                          external_ips=(f"198.51.100.{i + 1}",))
        services.service_claims(svc, (), NODE, cfg)
    assert addresses._host_prefix.cache_info().currsize == 0  # not kept twice
    assert services.plain_size() == 100
    decide._trim_caches(50)  # 100 addresses for 50 claims in play: within twice
    assert services.plain_size() == 100
    decide._trim_caches(10)  # their Services deleted: the tables go
    assert services.plain_size() == 0 and services._plain.config is None


@pytest.mark.parametrize("seed", range(60))
def test_a_full_decision_agrees_with_one_reached_service_by_service(seed):
    """A fresh Decider judges every Service in one pass (Decider._judge_all_services) and
    settles there the prefixes no one else claims; a Decider that saw the Services arrive
    a few at a time takes the incremental path (_decide_services, _set_source, _settle).
    Both must say the same: pods and Services on the same addresses, drains included."""
    rnd = random.Random(1000 + seed)
    raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in BASE_CONFIG.items()}
    raw["drain"] = {"action": rnd.choice(["prepend", "med", "withdraw"])}
    cfg = _config(rnd) if rnd.random() < 0.5 else parse_config(raw)
    nss = ["a", "b", "c"]
    services = [_service(rnd, rnd.choice(nss), f"s{i}") for i in range(rnd.randint(1, 30))]
    services = list({s.key: s for s in services}.values())
    slices = {}
    for i in range(rnd.randint(0, 30)):
        sl = _slice(rnd, rnd.choice(nss), f"e{i}", f"s{rnd.randint(0, 30)}")
        slices[sl.key] = sl
    pods = {}
    for i in range(rnd.randint(0, 4)):
        p = _pod(rnd, rnd.choice(nss), f"p{i}")
        pods[p.key] = p
    namespaces = {ns: NamespaceInfo(ns, rnd.choice([{}, {"team": "a"}])) for ns in nss}
    node = _node(rnd)
    if rnd.random() < 0.3:
        node = dataclasses.replace(node, unschedulable=True)  # drains
    others = rnd.choice([None, True, False])

    def snap(svcs):
        return Snapshot(node=node, pods=pods, services={s.key: s for s in svcs},
                        endpoint_slices=slices, namespaces=namespaces)

    full = Decider().decide(snap(services), cfg, NODE, others)
    stepwise = Decider()
    order = rnd.sample(services, len(services))
    cut = 1
    while True:
        got = stepwise.decide(snap(order[:cut]), cfg, NODE, others)
        if cut >= len(order):
            break
        cut += rnd.randint(1, 5)
    assert _outcome(full, rnd.random() < 0.5) == _outcome(got, rnd.random() < 0.5)
    assert full.notes == got.notes and full.drain == got.drain
