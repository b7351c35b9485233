"""Every announcement rule, table-driven: a snapshot in, announced prefixes and reasons out.

Each case is decided twice with one Decider (the second time from its memo) and once from
scratch; all three must agree, which proves the decision idempotent and the memo faithful.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

import pytest

from bgpd.model import NamespaceInfo
from bgpd.policy import reasons as R
from bgpd.policy.decide import Decider, decide
from tests.unit.policy_builders import NODE, OTHER, config, node, pod, service, slice_for, snapshot

READY = (NODE, True, True, False)
READY_ELSEWHERE = (OTHER, True, True, False)
UNREADY_HERE = (NODE, False, False, False)
TERMINATING_SERVING_HERE = (NODE, False, True, True)
UNKNOWN_HERE = (NODE, None, None, None)
POD_CIDRS = {"10.244.1.0/24", "fd00:244:1::/64"}


@dataclass
class Case:
    id: str
    snap: object
    cfg: object = field(default_factory=config)
    announced: set[str] = field(default_factory=set)  # besides the node's pod CIDRs
    verdicts: dict[str, str] = field(default_factory=dict)  # value as written -> reason
    with_pod_cidrs: bool = True


def net(text):
    return ipaddress.ip_network(text)


CASES = [
    Case("the node's IPv4 and IPv6 pod CIDRs are announced without any pool",
         snapshot()),
    Case("pod CIDR advertisement can be switched off",
         snapshot(), cfg=config(advertise={"pod_cidr": False}), with_pod_cidrs=False,
         verdicts={"10.244.1.0/24": R.DISABLED}),
    Case("a malformed pod CIDR on the Node is rejected, the good one still announced",
         snapshot(node(pod_cidrs=("10.244.1.0/24", "10.244.2.1/24"))), with_pod_cidrs=False,
         announced={"10.244.1.0/24"}, verdicts={"10.244.2.1/24": R.BAD_ADDRESS}),
    Case("pods inside the pod CIDR need no host route by default",
         snapshot(pods=[pod("a")])),
    Case("per-pod host routes when configured, IPv4 and IPv6",
         snapshot(pods=[pod("a", ips=("10.244.1.5", "fd00:244:1::5"))]),
         cfg=config(advertise={"pod_ips": True}),
         announced={"10.244.1.5/32", "fd00:244:1::5/128"}),
    Case("a pod IP outside the pod CIDR gets a host route when a pool allows pod-ip",
         snapshot(pods=[pod("a", ips=("100.64.3.4",))]), announced={"100.64.3.4/32"}),
    Case("a pod IP outside the pod CIDR and every pool is denied",
         snapshot(pods=[pod("a", ips=("172.31.0.9",))]),
         verdicts={"172.31.0.9": R.OUTSIDE_POOLS}),
    Case("hostNetwork pods claim nothing",
         snapshot(pods=[pod("a", ips=("172.31.0.9",), host_network=True)])),
    Case("ClusterIPs are not announced unless opted in",
         snapshot(services=[service("s")]), verdicts={"10.96.0.10": R.DISABLED}),
    Case("ClusterIPs announced when the config opts in",
         snapshot(services=[service("s")]), cfg=config(advertise={"cluster_ips": True}),
         announced={"10.96.0.10/32"}),
    Case("a Service annotation opts its ClusterIP in",
         snapshot(services=[service("s", annotations={"bgpd.dev/advertise-cluster-ip": "true"})]),
         announced={"10.96.0.10/32"}),
    Case("internalTrafficPolicy=Local ClusterIP needs a local ready endpoint",
         snapshot(services=[service("s", internal_traffic_policy="Local")],
                  slices=[slice_for("s", READY_ELSEWHERE)]),
         cfg=config(advertise={"cluster_ips": True}),
         verdicts={"10.96.0.10": R.NO_LOCAL_ENDPOINT}),
    Case("externalIPs in an allowing pool are announced with the pool's communities",
         snapshot(services=[service("s", external_ips=("198.51.100.7",))]),
         announced={"198.51.100.7/32"}),
    Case("dual-stack Service: both families announced",
         snapshot(services=[service("s", cluster_ips=("10.96.0.10", "fd00:96::10"),
                                    external_ips=("198.51.100.7", "2001:db8:e::7"))]),
         announced={"198.51.100.7/32", "2001:db8:e::7/128"}),
    Case("an IPv6 externalIP on a Service without an IPv6 ClusterIP: kube-proxy does not "
         "forward it, so it is the wrong family",
         snapshot(services=[service("s", external_ips=("198.51.100.7", "2001:db8:e::7"))]),
         announced={"198.51.100.7/32"}, verdicts={"2001:db8:e::7": R.WRONG_FAMILY}),
    Case("eTP=Local judges each family on its own slices: an IPv4 endpoint here does not "
         "announce the IPv6 address",
         snapshot(services=[service("s", cluster_ips=("10.96.0.10", "fd00:96::10"),
                                    external_ips=("198.51.100.7", "2001:db8:e::7"),
                                    external_traffic_policy="Local")],
                  slices=[slice_for("s", READY, name="s-v4"),
                          slice_for("s", READY_ELSEWHERE, name="s-v6", address_type="IPv6")]),
         announced={"198.51.100.7/32"}, verdicts={"2001:db8:e::7": R.NO_LOCAL_ENDPOINT}),
    Case("a slice whose ports match no port of the Service gives it no endpoint",
         snapshot(services=[service("s", external_ips=("198.51.100.7",),
                                    external_traffic_policy="Local",
                                    ports=(("http", "TCP"),))],
                  slices=[slice_for("s", READY, ports=(("metrics", "TCP"),))]),
         verdicts={"198.51.100.7": R.NO_LOCAL_ENDPOINT}),
    Case("an externalIP outside every pool is denied (CVE-2020-8554)",
         snapshot(services=[service("s", external_ips=("192.0.2.10",))]),
         verdicts={"192.0.2.10": R.OUTSIDE_POOLS}),
    Case("an externalIP in a pool that only allows LoadBalancer IPs is denied",
         snapshot(services=[service("s", external_ips=("203.0.113.5",))]),
         verdicts={"203.0.113.5": R.POOL_FORBIDS_USE}),
    Case("LoadBalancer ingress IPs in the lb pool are announced",
         snapshot(services=[service("s", type="LoadBalancer", lb_ips=("203.0.113.5",))]),
         announced={"203.0.113.5/32"}),
    Case("LoadBalancer IPs on a non-LoadBalancer Service are ignored",
         snapshot(services=[service("s", type="ClusterIP", lb_ips=("203.0.113.5",))])),
    Case("eTP=Local with a ready local endpoint is announced",
         snapshot(services=[service("s", external_ips=("198.51.100.7",),
                                    external_traffic_policy="Local")],
                  slices=[slice_for("s", READY)]),
         announced={"198.51.100.7/32"}),
    Case("eTP=Local with the only ready endpoint on another node is withdrawn here",
         snapshot(services=[service("s", external_ips=("198.51.100.7",),
                                    external_traffic_policy="Local")],
                  slices=[slice_for("s", READY_ELSEWHERE, UNREADY_HERE)]),
         verdicts={"198.51.100.7": R.NO_LOCAL_ENDPOINT}),
    Case("eTP=Local counts a serving, terminating local endpoint",
         snapshot(services=[service("s", external_ips=("198.51.100.7",),
                                    external_traffic_policy="Local")],
                  slices=[slice_for("s", TERMINATING_SERVING_HERE)]),
         announced={"198.51.100.7/32"}),
    Case("eTP=Local reads an unknown ready condition as ready",
         snapshot(services=[service("s", external_ips=("198.51.100.7",),
                                    external_traffic_policy="Local")],
                  slices=[slice_for("s", UNKNOWN_HERE)]),
         announced={"198.51.100.7/32"}),
    Case("eTP=Cluster is announced from every node, endpoints or not",
         snapshot(services=[service("s", external_ips=("198.51.100.7",))]),
         announced={"198.51.100.7/32"}),
    Case("eTP=Cluster with require_ready_endpoint and nothing ready anywhere is withdrawn",
         snapshot(services=[service("s", external_ips=("198.51.100.7",))],
                  slices=[slice_for("s", UNREADY_HERE)]),
         cfg=config(advertise={"require_ready_endpoint": True}),
         verdicts={"198.51.100.7": R.NO_READY_ENDPOINT}),
    Case("eTP=Cluster with require_ready_endpoint and a ready endpoint elsewhere is announced",
         snapshot(services=[service("s", external_ips=("198.51.100.7",))],
                  slices=[slice_for("s", READY_ELSEWHERE)]),
         cfg=config(advertise={"require_ready_endpoint": True}),
         announced={"198.51.100.7/32"}),
    Case("the advertise annotation opts a whole Service out",
         snapshot(services=[service("s", external_ips=("198.51.100.7",),
                                    annotations={"bgpd.dev/advertise": "false"})]),
         verdicts={"198.51.100.7": R.OPTED_OUT}),
    Case("externalIP advertisement off in the config, opted back in by annotation",
         snapshot(services=[service("s", external_ips=("198.51.100.7",),
                                    annotations={"bgpd.dev/advertise-external-ips": "true"}),
                            service("t", external_ips=("198.51.100.8",))]),
         cfg=config(advertise={"external_ips": False}),
         announced={"198.51.100.7/32"}, verdicts={"198.51.100.8": R.DISABLED}),
    Case("a bad annotation value is reported and the Service still announced",
         snapshot(services=[service("s", external_ips=("198.51.100.7",),
                                    annotations={"bgpd.dev/local-pref": "high"})]),
         announced={"198.51.100.7/32"}),
    Case("a superscript digit in local-pref is a bad annotation, not a crash",
         snapshot(services=[service("s", external_ips=("198.51.100.7",),
                                    annotations={"bgpd.dev/local-pref": "²"})]),
         announced={"198.51.100.7/32"}, verdicts={"bgpd.dev/local-pref: '²' must be an "
                                                  "integer 0..4294967295": R.BAD_ANNOTATION}),
    Case("a 5,000-digit local-pref is a bad annotation, not a crash",
         snapshot(services=[service("s", external_ips=("198.51.100.7",),
                                    annotations={"bgpd.dev/local-pref": "9" * 5000})]),
         announced={"198.51.100.7/32"}),
    Case("a misspelt drain label keeps the node announcing and says why",
         snapshot(node(labels={"bgpd.dev/announce": "flase"}),
                  services=[service("s", external_ips=("198.51.100.7",))]),
         announced={"198.51.100.7/32"},
         verdicts={"bgpd.dev/announce: 'flase' must be true or false": R.BAD_ANNOTATION}),
    Case("ExternalName Services are ignored",
         snapshot(services=[service("s", type="ExternalName", cluster_ips=(),
                                    external_ips=("198.51.100.7",))]),
         verdicts={"198.51.100.7": R.IGNORED_KIND}),
    Case("headless Services are ignored",
         snapshot(services=[service("s", cluster_ips=("None",),
                                    external_ips=("198.51.100.7",))]),
         verdicts={"198.51.100.7": R.IGNORED_KIND}),
    Case("pod-owned external IP: announced, with a host route to the pod",
         snapshot(pods=[pod("a", annotations={"bgpd.dev/external-ips": "198.51.100.20"})]),
         announced={"198.51.100.20/32"}),
    Case("pod-owned external IP of a pod that is not Ready is not announced",
         snapshot(pods=[pod("a", ready=False,
                            annotations={"bgpd.dev/external-ips": "198.51.100.20"})]),
         verdicts={"198.51.100.20": R.POD_NOT_READY}),
    Case("pod-owned IPv6 external IP on an IPv4-only pod is the wrong family",
         snapshot(pods=[pod("a", annotations={"bgpd.dev/external-ips": "2001:db8:e::20"})]),
         verdicts={"2001:db8:e::20": R.WRONG_FAMILY}),
    Case("pod-owned external IP outside the pools is denied",
         snapshot(pods=[pod("a", annotations={"bgpd.dev/external-ips": "192.0.2.1"})]),
         verdicts={"192.0.2.1": R.OUTSIDE_POOLS}),
    Case("two Services claiming one IP: the older wins",
         snapshot(services=[service("new", created=20.0, external_ips=("198.51.100.7",)),
                            service("old", created=10.0, external_ips=("198.51.100.7",))]),
         announced={"198.51.100.7/32"}),
    Case("a Service and a pod claiming one IP: the older (the Service) wins",
         snapshot(services=[service("s", created=1.0, external_ips=("198.51.100.20",))],
                  pods=[pod("a", created=5.0,
                            annotations={"bgpd.dev/external-ips": "198.51.100.20"})]),
         announced={"198.51.100.20/32"}),
    Case("a Node's pod CIDR outside cluster.pod_cidrs is refused",
         snapshot(node(pod_cidrs=("10.244.1.0/24", "10.99.0.0/24"))), with_pod_cidrs=False,
         announced={"10.244.1.0/24"}, verdicts={"10.99.0.0/24": R.OUTSIDE_POOLS}),
    Case("a pool restricted to namespaces refuses a Service of another namespace",
         snapshot(services=[service("s", ns="team-b", external_ips=("198.51.100.7",)),
                            service("t", ns="team-a", external_ips=("198.51.100.8",))]),
         cfg=config(pools=[{"name": "a", "cidrs": ["198.51.100.0/24"], "allow": ["external-ip"],
                            "namespaces": ["team-a"]}]),
         with_pod_cidrs=True, announced={"198.51.100.8/32"},
         verdicts={"198.51.100.7": R.NAMESPACE_FORBIDDEN}),
    Case("a pool admitting namespaces by label: a labelled namespace may claim, an "
         "unlabelled or unknown one may not",
         snapshot(services=[service("s", ns="team-a", external_ips=("198.51.100.7",)),
                            service("t", ns="team-b", external_ips=("198.51.100.8",)),
                            service("u", ns="ghost", external_ips=("198.51.100.9",))],
                  namespaces=[NamespaceInfo("team-a", {"tenant": "a"}),
                              NamespaceInfo("team-b", {"tenant": "b"})]),
         cfg=config(pools=[{"name": "a", "cidrs": ["198.51.100.0/24"], "allow": ["external-ip"],
                            "namespace_selector": {"tenant": "a"}}]),
         announced={"198.51.100.7/32"},
         verdicts={"198.51.100.8": R.NAMESPACE_FORBIDDEN,
                   "198.51.100.9": R.NAMESPACE_FORBIDDEN}),
    Case("a pod-owned external IP from a namespace the pool does not admit is refused",
         snapshot(pods=[pod("a", ns="team-b",
                            annotations={"bgpd.dev/external-ips": "198.51.100.20"})]),
         cfg=config(pools=[{"name": "a", "cidrs": ["198.51.100.0/24"],
                            "allow": ["pod-external-ip"], "namespaces": ["team-a"]}]),
         verdicts={"198.51.100.20": R.NAMESPACE_FORBIDDEN}),
    Case("more communities than limits.max_communities: announced with the pool's only",
         snapshot(services=[service("s", external_ips=("198.51.100.7",), annotations={
             "bgpd.dev/communities": ",".join(f"65001:{i}" for i in range(40))})]),
         announced={"198.51.100.7/32"}),
    Case("a Node labelled out withdraws everything",
         snapshot(node(labels={"bgpd.dev/announce": "false"}),
                  services=[service("s", external_ips=("198.51.100.7",))]),
         with_pod_cidrs=False, verdicts={"198.51.100.7": R.OPTED_OUT}),
]

BAD_VALUES = ["2001:db8:e::7%x\nneighbor 10.0.0.1 teardown 2\n#", "2001:db8:e::7%eth0",
              "198.51.100.7\n198.51.100.8", "not-an-ip", "0.0.0.0", "127.0.0.1", "169.254.1.1", "224.0.0.5", "::1",
              "fe80::1", "ff02::1", "255.255.255.255", "198.51.100.7/24", "", "1.2.3.4.5"]
CASES += [
    Case(f"bad externalIP {value!r} is rejected, never an exception",
         snapshot(services=[service("s", external_ips=(value, "198.51.100.9"))]),
         announced={"198.51.100.9/32"}, verdicts={value: R.BAD_ADDRESS})
    for value in BAD_VALUES
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_rule(case: Case):
    decider = Decider()
    first = decider.decide(case.snap, case.cfg, NODE)
    second = decider.decide(case.snap, case.cfg, NODE)
    fresh = decide(case.snap, case.cfg, NODE)
    assert first.announcements == second.announcements == fresh.announcements
    assert first.kernel_routes == second.kernel_routes == fresh.kernel_routes
    assert first.claims == second.claims == fresh.claims

    expected = {str(net(p)) for p in case.announced}
    if case.with_pod_cidrs:
        expected |= {str(net(p)) for p in POD_CIDRS}
    assert set(first.announcements) == expected
    for value, reason in case.verdicts.items():
        got = [c.reason for c in first.claims if c.value == value]
        assert reason in got, f"{value}: expected {reason}, got {got}"
        detail = [c.detail for c in first.claims if c.value == value and c.reason == reason]
        assert all(detail), "every verdict carries a human-readable detail"


def test_pool_attributes_and_annotations_are_merged():
    snap = snapshot(services=[service("s", type="LoadBalancer", lb_ips=("203.0.113.5",),
                                      annotations={"bgpd.dev/communities": "65000:7, 65000:8",
                                                   "bgpd.dev/large-communities": "65000:1:2",
                                                   "bgpd.dev/med": "50"})])
    ann = decide(snap, config(), NODE).announcements["203.0.113.5/32"]
    assert ann.attributes.local_pref == 200  # from the lb pool
    assert ann.attributes.communities == ("65000:7", "65000:8")
    assert ann.attributes.large_communities == ("65000:1:2",)
    assert ann.attributes.med == 50


def test_bad_annotation_is_a_rejection_with_the_value():
    snap = snapshot(services=[service("s", external_ips=("198.51.100.7",),
                                      annotations={"bgpd.dev/communities": "65000:x"})])
    rejected = decide(snap, config(), NODE).rejections
    assert [c.reason for c in rejected] == [R.BAD_ANNOTATION]
    assert "65000:x" in rejected[0].detail and rejected[0].owner == "service/default/s"


def test_pod_owned_external_ip_on_two_pods_is_one_ecmp_route():
    snap = snapshot(pods=[
        pod("a", ips=("10.244.1.5",), annotations={"bgpd.dev/external-ips": "198.51.100.20"}),
        pod("b", ips=("10.244.1.6",), annotations={"bgpd.dev/external-ips": "198.51.100.20"}),
    ])
    route = decide(snap, config(), NODE).kernel_routes["198.51.100.20/32"]
    assert [h.gateway for h in route.nexthops] == ["10.244.1.5", "10.244.1.6"]


def test_conflict_loser_names_the_winner():
    snap = snapshot(services=[service("new", created=20.0, external_ips=("198.51.100.7",)),
                              service("old", created=10.0, external_ips=("198.51.100.7",))])
    loser = [c for c in decide(snap, config(), NODE).claims if c.owner == "service/default/new"]
    assert [c.reason for c in loser if c.value == "198.51.100.7"] == [R.CONFLICT]
    assert "service/default/old" in [c for c in loser if c.reason == R.CONFLICT][0].detail


def test_conflict_tie_on_age_is_broken_by_name():
    snap = snapshot(services=[service("b", external_ips=("198.51.100.7",)),
                              service("a", external_ips=("198.51.100.7",))])
    won = [c.owner for c in decide(snap, config(), NODE).claims if c.announced
           and c.value == "198.51.100.7"]
    assert won == ["service/default/a"]


def test_conflict_winner_does_not_depend_on_local_endpoints():
    """Node 1 has no local endpoint of the older Service: it must not announce the newer one."""
    snap = snapshot(
        services=[service("old", created=1.0, external_ips=("198.51.100.7",),
                          external_traffic_policy="Local"),
                  service("new", created=2.0, external_ips=("198.51.100.7",))],
        slices=[slice_for("old", READY_ELSEWHERE)])
    decision = decide(snap, config(), NODE)
    assert "198.51.100.7/32" not in decision.announcements


def test_explain_finds_a_pod_ip_inside_the_pod_cidr():
    claims = decide(snapshot(), config(), NODE).explain(net("10.244.1.77/32"))
    assert [(c.use, c.reason) for c in claims] == [("pod-cidr", R.ANNOUNCED)]


def test_memo_sees_an_endpoint_change():
    svc = service("s", external_ips=("198.51.100.7",), external_traffic_policy="Local")
    decider = Decider()
    before = decider.decide(snapshot(services=[svc], slices=[slice_for("s", READY)]),
                            config(), NODE)
    after = decider.decide(snapshot(services=[svc], slices=[slice_for("s", UNREADY_HERE)]),
                           config(), NODE)
    assert "198.51.100.7/32" in before.announcements
    assert "198.51.100.7/32" not in after.announcements


def test_a_zone_index_cannot_smuggle_an_address_past_the_conflict_check():
    """2001:db8:e::7%x is the same address as a Service's 2001:db8:e::7 to the kernel and
    to BGP; it must be refused, never judged as a different prefix."""
    evil = "2001:db8:e::7%x"
    snap = snapshot(services=[service("owner", created=1.0, external_ips=("2001:db8:e::7",))],
                    pods=[pod("p", ips=("10.244.1.5", "fd00:244:1::5"), created=9.0,
                              annotations={"bgpd.dev/external-ips": evil})])
    decision = decide(snap, config(), NODE)
    assert [c.reason for c in decision.claims if c.value == evil] == [R.BAD_ADDRESS]
    assert not decision.kernel_routes
    assert all("%" not in key for key in decision.announcements)


def test_memo_merges_attributes_like_a_fresh_decision():
    """A Service IP equal to a /32 pod CIDR: both claims are announced and merged; the merge
    must not depend on the order the memo saw the sources in."""
    cfg = config(advertise={"pod_cidr_attributes": {"local_pref": 50}})
    svc = service("s", external_ips=("198.51.100.7",), annotations={"bgpd.dev/local-pref": "300"})
    decider = Decider()
    decider.decide(snapshot(node(pod_cidrs=("198.51.100.7/32",)), services=[svc]), cfg, NODE)
    later = snapshot(node(pod_cidrs=("198.51.100.7/32", "10.244.1.0/24")), services=[svc])
    memo = decider.decide(later, cfg, NODE).announcements["198.51.100.7/32"]
    fresh = decide(later, cfg, NODE).announcements["198.51.100.7/32"]
    assert memo.attributes == fresh.attributes


def test_oversized_annotation_attributes_fall_back_to_the_pools():
    many = ",".join(f"65001:{i}" for i in range(40))
    snap = snapshot(services=[service("s", external_ips=("198.51.100.7",),
                                      annotations={"bgpd.dev/communities": many})])
    d = decide(snap, config(), NODE)
    assert d.announcements["198.51.100.7/32"].attributes.communities == ("65000:100",)
    (bad,) = d.rejections
    assert bad.reason == R.BAD_ANNOTATION
    assert "41 communities exceed limits.max_communities 32" in bad.detail


def test_attributes_too_big_for_one_message_fall_back_even_under_a_raised_limit():
    # 1,000 communities fit one message with an IPv4 prefix, not with an IPv6 one (the
    # MP_REACH_NLRI attribute is bigger than NEXT_HOP plus the IPv4 NLRI).
    many = ",".join(f"1:{i}" for i in range(999))
    cfg = config(limits={"max_communities": 1000})
    snap = snapshot(services=[service("s", cluster_ips=("10.96.0.10", "fd00:96::10"),
                                      external_ips=("198.51.100.7", "2001:db8:e::7"),
                                      annotations={"bgpd.dev/communities": many})])
    d = decide(snap, cfg, NODE)
    assert len(d.announcements["198.51.100.7/32"].attributes.communities) == 1000
    assert d.announcements["2001:db8:e::7/128"].attributes.communities == ("65000:100",)
    (bad,) = d.rejections
    assert "byte UPDATE, over the 4096-byte BGP message" in bad.detail


def test_pods_of_two_namespaces_on_one_address_never_share_it():
    ann = {"bgpd.dev/external-ips": "198.51.100.20"}
    snap = snapshot(pods=[pod("a1", ns="team-a", created=1.0, annotations=ann),
                          pod("a2", ns="team-a", created=3.0, ips=("10.244.1.6",),
                              annotations=ann),
                          pod("b1", ns="team-b", created=2.0, ips=("10.244.1.7",),
                              annotations=ann)])
    d = decide(snap, config(), NODE)
    route = d.kernel_routes["198.51.100.20/32"]
    assert {h.gateway for h in route.nexthops} == {"10.244.1.5", "10.244.1.6"}  # team-a only
    (lost,) = [c for c in d.claims if c.reason == R.CONFLICT]
    assert lost.owner == "pod/team-b/b1" and "pod/team-a/*" in lost.detail
