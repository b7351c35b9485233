"""The Service memo (bgpd/policy/memo.py): claims kept across Deciders of one config and
node must give exactly what judging every Service again gives, and the memo stays bounded."""

from __future__ import annotations

import dataclasses
import random

import pytest

from bgpd.model import NamespaceInfo, ServiceInfo, Snapshot
from bgpd.policy import decide as decide_module
from bgpd.policy import memo
from bgpd.policy.decide import Decider, _trim_caches
from tests.unit.policy_builders import NODE, OTHER, config, record_judgements
from tests.unit.test_perf_policy import _config, _node, _outcome, _pod, _service, _slice


def _judged_afresh(snap, cfg, node_name, others):
    """The decision with nothing remembered: the memo emptied first."""
    memo.clear_service_memo()
    return Decider().decide(snap, cfg, node_name, others)


@pytest.mark.parametrize("seed", range(60))
def test_a_decision_from_the_memo_equals_one_judged_afresh(seed, monkeypatch):
    """Fresh Deciders (and one kept Decider) over a sequence of snapshots in which
    Services, EndpointSlices, namespaces, pods, the node, the node name and the config
    change: whatever the memo holds from earlier steps, the outcome is the one reached
    with an empty memo, and unchanged Services are not judged again."""
    rnd = random.Random(3000 + seed)
    judged = record_judgements(monkeypatch)
    cfgs = [_config(rnd), _config(rnd)]
    cfg = cfgs[0]
    nss = ["a", "b", "c"]
    svcs = {}
    for i in range(rnd.randint(1, 12)):
        s = _service(rnd, rnd.choice(nss), f"s{i}")
        svcs[s.key] = s
    slices = {}
    for i in range(rnd.randint(0, 12)):
        sl = _slice(rnd, rnd.choice(nss), f"e{i}", f"s{rnd.randint(0, 12)}")
        slices[sl.key] = sl
    pods = {p.key: p for p in (_pod(rnd, rnd.choice(nss), f"p{i}") for i in range(3))}
    namespaces = {ns: NamespaceInfo(ns, rnd.choice([{}, {"team": "a"}])) for ns in nss}
    node, node_name = _node(rnd), NODE
    kept = Decider()
    hits = 0
    for step in range(8):
        for _ in range(rnd.randint(0, 3)):
            what, ns = rnd.random(), rnd.choice(nss)
            if what < 0.3:
                s = _service(rnd, ns, f"s{rnd.randint(0, 12)}")
                if rnd.random() < 0.2:
                    svcs.pop(s.key, None)
                else:
                    svcs[s.key] = s
            elif what < 0.4 and svcs:
                key = rnd.choice(sorted(svcs))
                svcs[key] = dataclasses.replace(svcs[key])  # equal, not the same object
            elif what < 0.65:
                target = rnd.choice(sorted(svcs) or ["a/s0"]).split("/")
                sl = _slice(rnd, target[0], f"e{rnd.randint(0, 12)}", target[1])
                if rnd.random() < 0.2:
                    slices.pop(sl.key, None)
                else:
                    slices[sl.key] = sl
            elif what < 0.75:
                namespaces[ns] = NamespaceInfo(ns, rnd.choice([{}, {"team": "a"},
                                                               {"team": "b"}]))
            elif what < 0.82:
                p = _pod(rnd, ns, f"p{rnd.randint(0, 3)}")
                pods[p.key] = p
            elif what < 0.9:
                node = dataclasses.replace(node, unschedulable=not node.unschedulable)
            elif what < 0.95:
                node_name = OTHER if node_name == NODE else NODE
            else:
                cfg = rnd.choice(cfgs)
        snap = Snapshot(node=node, pods=dict(pods), services=dict(svcs),
                        endpoint_slices=dict(slices), namespaces=dict(namespaces))
        others = rnd.choice([None, True, False])
        before = len(judged)
        got = [Decider().decide(snap, cfg, node_name, others)]
        hits += len(svcs) - (len(judged) - before)
        got.append(kept.decide(snap, cfg, node_name, others))
        afresh = _judged_afresh(snap, cfg, node_name, others)
        want = _outcome(afresh, True)
        for decision in got:
            assert _outcome(decision, rnd.random() < 0.5) == want, f"seed {seed}, step {step}"
            assert decision.notes == afresh.notes
    assert hits > 0  # the memo was used, not only filled


def test_a_service_is_judged_again_when_any_of_its_inputs_changes(monkeypatch):
    judged = record_judgements(monkeypatch)
    cfg = config(pools=[{"name": "t", "cidrs": ["198.51.100.0/24"], "allow": ["external-ip"],
                         "namespace_selector": {"team": "a"}}])
    rnd = random.Random(5)
    svc = ServiceInfo("a", "s", cluster_ips=("10.96.0.10",), external_ips=("198.51.100.7",),
                      external_traffic_policy="Local")
    sl = _slice(rnd, "a", "s-1", "s")
    ns = {"a": NamespaceInfo("a", {"team": "a"})}
    snap = Snapshot(node=_node(rnd), services={svc.key: svc},
                    endpoint_slices={sl.key: sl}, namespaces=ns)
    memo.clear_service_memo()
    Decider().decide(snap, cfg, NODE)
    Decider().decide(snap, cfg, NODE)
    assert judged == ["s"]  # the second time from the memo
    for changed in (
            dataclasses.replace(snap, services={svc.key: dataclasses.replace(svc)}),
            dataclasses.replace(snap, endpoint_slices={}),
            dataclasses.replace(snap, namespaces={"a": NamespaceInfo("a", {"team": "b"})})):
        judged.clear()
        want = _judged_afresh(changed, cfg, NODE, None).announcements
        Decider().decide(snap, cfg, NODE)  # the memo holds the first snapshot's claims
        judged.clear()
        assert Decider().decide(changed, cfg, NODE).announcements == want
        assert judged == ["s"]
    judged.clear()
    Decider().decide(snap, cfg, OTHER)  # another node name
    Decider().decide(snap, config(), NODE)  # another config
    assert judged == ["s", "s"]


def test_the_memo_is_bounded_by_the_services_in_play(monkeypatch):
    monkeypatch.setattr(decide_module, "CACHE_SLACK", 4)
    cfg = config()
    node = _node(random.Random(1))
    made = {prefix: [ServiceInfo("a", f"{prefix}{i}", cluster_ips=("10.96.0.10",),
                                 external_ips=(f"198.51.100.{i + 1}",)) for i in range(40)]
            for prefix in "st"}

    def snap(n, prefix="s"):
        return Snapshot(node=node, services={s.key: s for s in made[prefix][:n]})

    memo.clear_service_memo()
    decider = Decider()
    decider.decide(snap(40), cfg, NODE)
    assert memo.memo_size() == 40
    decider.decide(snap(3), cfg, NODE)  # 37 deleted, one by one: their entries go
    assert memo.memo_size() == 3
    changed = snap(3)
    changed.services["a/s0"] = dataclasses.replace(made["s"][0])  # judged again: dropped
    decider.decide(changed, cfg, NODE)
    assert memo.memo_size() == 2
    Decider().decide(snap(40, "t"), cfg, NODE)  # 40 new ones, by a fresh Decider
    assert memo.memo_size() == 42
    Decider().decide(snap(2), cfg, NODE)  # 42 entries for 2 Services: emptied
    assert memo.memo_size() == 0
    Decider().decide(snap(2), cfg, NODE)
    assert memo.memo_size() == 2
    _trim_caches(0, 2)  # within bounds: kept
    assert memo.memo_size() == 2
