"""Import policy for learned routes (bgpd.policy.imports)."""

import ipaddress

from bgpd.config import ImportConfig, PrefixRule
from bgpd.model import LearnedRoute
from bgpd.policy.imports import filter_learned

net = ipaddress.ip_network
RULES = (PrefixRule(net("172.16.0.0/16"), 24, 32), PrefixRule(net("fd99::/48"), 64, 64))


def routes(peer, *prefixes):
    return {net(p): LearnedRoute(peer, net(p), "10.0.0.1") for p in prefixes}


def test_nothing_passes_without_rules():
    result = filter_learned({"a": routes("a", "172.16.1.0/24")}, ImportConfig())
    assert result.routes == {}
    assert result.per_peer["a"].not_allowed == 1


def test_only_matching_prefixes_and_lengths_pass():
    learned = {
        "a": routes("a", "172.16.1.0/24", "172.16.0.0/16", "10.0.0.0/8", "fd99::/64", "fd99::/56")
    }
    result = filter_learned(learned, ImportConfig(allow=RULES))
    assert set(map(str, result.routes)) == {"172.16.1.0/24", "fd99::/64"}
    assert result.per_peer["a"].not_allowed == 3


def test_max_prefixes_keeps_the_first_routes_a_peer_sent_and_counts_the_rest():
    sent = [f"172.16.{i}.0/24" for i in range(10)]
    learned = {"a": routes("a", "10.0.0.0/8", *sent), "b": routes("b", "172.16.0.0/24")}
    result = filter_learned(learned, ImportConfig(allow=RULES, max_prefixes=4))
    assert [str(p) for p in result.routes if result.routes[p][0].peer == "a"] == sent[:4]
    assert (result.per_peer["a"].accepted, result.per_peer["a"].over_limit) == (4, 6)
    assert [r.peer for r in result.routes[net("172.16.0.0/24")]] == ["a", "b"]  # per peer limit
    assert filter_learned(learned, ImportConfig(allow=RULES, max_prefixes=4)) == result  # pure
