"""A config reload keeps the Service memo and the plain-address tables when the fields a
Service's claims read are equal (bgpd/policy/view.py): the outcome must be exactly the
one reached with both emptied, whatever else the reload changed."""

from __future__ import annotations

import copy
import random

import pytest

from bgpd.config import parse_config
from bgpd.model import NamespaceInfo, Snapshot
from bgpd.policy import memo, services
from bgpd.policy.decide import Decider
from bgpd.policy.services import general_claims, service_claims
from bgpd.policy.view import SERVICE_FIELDS, service_view
from tests.unit.policy_builders import BASE_CONFIG, NODE, OTHER, record_judgements
from tests.unit.test_perf_policy import (
    POOLS_BY_LABEL,
    POOLS_BY_NAME,
    _node,
    _outcome,
    _pod,
    _service,
    _slice,
)


def _base(rnd: random.Random) -> dict:
    raw = copy.deepcopy(BASE_CONFIG)
    raw["pools"] += [copy.deepcopy(p) for p in (POOLS_BY_LABEL, POOLS_BY_NAME)
                     if rnd.random() < 0.5]
    raw["advertise"] = {"cluster_ips": rnd.random() < 0.5,
                        "require_ready_endpoint": rnd.random() < 0.3}
    return raw


def _peers(raw, rnd):
    raw["bgp"]["peers"] = [{"address": f"10.0.0.{rnd.randint(2, 9)}", "asn": 65001}]


def _drain(raw, rnd):
    raw["drain"] = {"action": rnd.choice(["med", "withdraw"])}


def _communities(raw, rnd):
    raw["pools"][0]["communities"] = [f"65000:{rnd.randint(1, 3)}"]


def _weighted_pool(raw, rnd):
    raw["pools"][rnd.randrange(2)]["weighted_ecmp"] = True


def _selector(raw, rnd):
    raw["pools"][0]["namespace_selector"] = {"team": rnd.choice(["a", "b"])}


def _named(raw, rnd):
    raw["pools"][1]["namespaces"] = ["a"]


def _cidr(raw, rnd):
    raw["pools"][0]["cidrs"] = ["198.51.100.0/25", "2001:db8:e::/64"]


def _allow(raw, rnd):
    raw["pools"][1]["allow"] = ["load-balancer-ip", "external-ip"]


def _pool_name(raw, rnd):
    raw["pools"][1]["name"] = "lb2"


def _limits(raw, rnd):
    raw["limits"] = {"max_communities": 1}


def _bandwidth(raw, rnd):
    raw["weighted_ecmp"] = {"bandwidth_per_endpoint": rnd.choice([1000, 2000])}


def _prefix(raw, rnd):
    raw["annotation_prefix"] = "other.dev"


def _advertise(raw, rnd):
    field = rnd.choice(["cluster_ips", "external_ips", "load_balancer_ips",
                        "require_ready_endpoint"])
    default = field in ("external_ips", "load_balancer_ips")
    raw["advertise"][field] = not raw["advertise"].get(field, default)


UNRELATED = [_peers, _drain]  # a Service's claims read none of these
RELATED = [_communities, _weighted_pool, _selector, _named, _cidr, _allow, _pool_name,
           _limits, _bandwidth, _prefix, _advertise]


def _afresh(snap, cfg, node_name, others):
    memo.clear_service_memo()
    services.clear_plain_verdicts()
    return Decider().decide(snap, cfg, node_name, others)


@pytest.mark.parametrize("seed", range(60))
def test_a_reload_decides_as_if_nothing_were_remembered(seed, monkeypatch):
    """Fresh Deciders and a kept one over reloads: each a newly parsed config, the same,
    changed where Services do not look, or changed where they do; the Services, their
    slices and namespaces stay, so whatever is reused is reused from the previous config."""
    rnd = random.Random(7000 + seed)
    judged = record_judgements(monkeypatch)
    nss = ["a", "b", "c"]
    svcs = {s.key: s for s in (_service(rnd, rnd.choice(nss), f"s{i}")
                               for i in range(rnd.randint(1, 12)))}
    slices = {sl.key: sl for sl in (_slice(rnd, rnd.choice(nss), f"e{i}",
                                           f"s{rnd.randint(0, 12)}")
                                    for i in range(rnd.randint(0, 12)))}
    pods = {p.key: p for p in (_pod(rnd, rnd.choice(nss), f"p{i}") for i in range(3))}
    namespaces = {ns: NamespaceInfo(ns, rnd.choice([{}, {"team": "a"}])) for ns in nss}
    snap = Snapshot(node=_node(rnd), pods=pods, services=svcs, endpoint_slices=slices,
                    namespaces=namespaces)
    raw = _base(rnd)
    kept = Decider()
    node_name = NODE
    for step in range(8):
        raw = copy.deepcopy(raw)
        change = rnd.random()
        if change < 0.4:
            rnd.choice(UNRELATED)(raw, rnd)
        elif change < 0.8:
            rnd.choice(RELATED)(raw, rnd)
        cfg = parse_config(raw)
        same_node = rnd.random() < 0.9
        node_name = node_name if same_node else OTHER if node_name == NODE else NODE
        others = rnd.choice([None, True, False])
        before = len(judged)
        got = [Decider().decide(snap, cfg, node_name, others),
               kept.decide(snap, cfg, node_name, others)]
        if step and same_node and (change < 0.4 or change >= 0.8):
            assert len(judged) == before  # kept: nothing a Service's claims read changed
        want = _afresh(snap, cfg, node_name, others)
        for decision in got:
            assert _outcome(decision, rnd.random() < 0.5) == _outcome(want, True), (
                f"seed {seed}, step {step}")
            assert decision.notes == want.notes


class _Recording:
    """A Config that notes every attribute read of it."""

    def __init__(self, config, read: set[str]) -> None:
        self._config = config
        self._read = read

    def __getattr__(self, name):
        self._read.add(name)
        return getattr(self._config, name)


@pytest.mark.parametrize("seed", range(20))
def test_a_services_claims_read_only_the_fields_the_view_compares(seed):
    """What view.py promises: judging a Service (either path) reads no config field
    outside SERVICE_FIELDS, so two configs equal there judge every Service alike."""
    rnd = random.Random(9000 + seed)
    raw = _base(rnd)
    for change in rnd.sample(RELATED, 3):
        change(raw, rnd)
    cfg = parse_config(raw)
    read: set[str] = set()
    for i in range(30):
        ns = rnd.choice(["a", "b", "c"])
        svc = _service(rnd, ns, f"s{i}")
        slices = tuple(_slice(rnd, ns, f"e{i}-{k}", svc.name) for k in range(rnd.randint(0, 2)))
        labels = rnd.choice([None, {}, {"team": "a"}])
        for judge in (service_claims, general_claims):
            judge(svc, slices, NODE, _Recording(cfg, read), labels)
    assert read <= set(SERVICE_FIELDS), read - set(SERVICE_FIELDS)
    read.clear()
    service_view(_Recording(cfg, read))
    assert read == set(SERVICE_FIELDS)


def test_pools_compare_by_value_and_every_field_counts():
    raw = copy.deepcopy(BASE_CONFIG)
    assert service_view(parse_config(raw)) == service_view(parse_config(copy.deepcopy(raw)))
    rnd = random.Random(1)
    for change in RELATED:
        changed = copy.deepcopy(raw)
        changed["advertise"] = {}
        change(changed, rnd)
        assert service_view(parse_config(changed)) != service_view(parse_config(raw)), change
