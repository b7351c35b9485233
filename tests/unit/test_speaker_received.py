"""Routes received from a peer (bgpd.speaker.received): filtered and bounded on arrival,
kept through the peer's restart as RFC 4724's receiving speaker does."""

import ipaddress

import pytest

from bgpd.config import ImportConfig, PrefixRule
from bgpd.model import LearnedRoute
from bgpd.policy import reasons
from bgpd.speaker import received
from bgpd.speaker.received import SAMPLE_MAX, PeerRoutes

net = ipaddress.ip_network
RULES = (PrefixRule(net("172.16.0.0/16"), 24, 32), PrefixRule(net("fd99::/48"), 64, 64))


def route(prefix, hop="10.0.0.1"):
    return LearnedRoute("10.0.0.1", net(prefix), hop)


def rib(**kw):
    return PeerRoutes(ImportConfig(allow=RULES, **kw))


def stored(r):
    return [str(x.prefix) for x in r.installable()]


def test_nothing_is_kept_without_rules_and_the_refusal_is_counted():
    r = PeerRoutes(ImportConfig())
    assert r.announce(route("172.16.1.0/24")) is False
    assert r.installable() == []
    assert r.refused().not_allowed == 1
    assert r.refused().samples == (("172.16.1.0/24", reasons.IMPORT_NOT_ALLOWED),)


def test_only_matching_prefixes_and_lengths_are_kept():
    r = rib()
    for p in ("172.16.1.0/24", "172.16.0.0/16", "10.0.0.0/8", "fd99::/64", "fd99::/56"):
        r.announce(route(p, "fd00::1" if ":" in p else "10.0.0.1"))
    assert stored(r) == ["172.16.1.0/24", "fd99::/64"]
    assert r.refused().not_allowed == 3


def test_max_prefixes_keeps_the_first_routes_and_counts_without_storing_the_rest():
    r = rib(max_prefixes=4)
    sent = [f"172.16.{i // 4}.{i % 4 * 64}/26" for i in range(1000)]
    for p in sent:
        r.announce(route(p))
    assert stored(r) == sent[:4]
    refused = r.refused()
    assert refused.over_limit == 996
    assert len(refused.samples) == SAMPLE_MAX  # bounded memory: a sample, not the flood
    r.withdraw(net(sent[0]))
    assert r.announce(route(sent[999]))  # room again: the next route is taken
    assert stored(r) == sent[1:4] + [sent[999]]


def test_a_reannounced_route_replaces_the_old_one():
    r = rib()
    r.announce(route("172.16.1.0/24", "10.0.0.1"))
    r.announce(route("172.16.1.0/24", "10.0.0.9"))
    assert [x.next_hop for x in r.installable()] == ["10.0.0.9"]


def test_without_graceful_restart_a_lost_session_drops_the_routes():
    r = rib()
    r.peer_open(None, ())
    r.announce(route("172.16.1.0/24"))
    r.session_lost()
    assert r.installable() == []


def test_graceful_restart_keeps_routes_stale_until_end_of_rib():
    r = rib()
    r.peer_open(120, ("ipv4-unicast", "ipv6-unicast"))
    r.announce(route("172.16.1.0/24"))
    r.announce(route("172.16.2.0/24"))
    r.announce(route("fd99::/64", "fd00::1"))
    r.session_lost()
    assert stored(r) == ["172.16.1.0/24", "172.16.2.0/24", "fd99::/64"]  # kept, stale
    assert len(r.stale) == 3 and r.stale_until is not None
    r.peer_open(120, ("ipv4-unicast", "ipv6-unicast"))  # it came back, forwarding kept
    r.announce(route("172.16.1.0/24"))  # sent again: fresh
    assert r.end_of_rib("ipv4-unicast")  # 172.16.2.0/24 was not sent again: gone
    assert stored(r) == ["fd99::/64", "172.16.1.0/24"]
    r.end_of_rib("ipv6-unicast")
    assert stored(r) == ["172.16.1.0/24"] and r.stale_until is None


def test_a_peer_that_comes_back_without_forwarding_state_loses_its_stale_routes():
    r = rib()
    r.peer_open(120, ("ipv4-unicast", "ipv6-unicast"))
    r.announce(route("172.16.1.0/24"))
    r.announce(route("fd99::/64", "fd00::1"))
    r.session_lost()
    r.peer_open(120, ("ipv6-unicast",))  # no F bit for IPv4: its forwarding state is gone
    assert stored(r) == ["fd99::/64"]
    r.session_lost()
    r.peer_open(None, ())  # no longer advertises graceful restart at all
    assert stored(r) == []


def test_stale_routes_expire_after_the_restart_time(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(received.time, "monotonic", lambda: now[0])
    r = rib()
    r.peer_open(30, ("ipv4-unicast",))
    r.announce(route("172.16.1.0/24"))
    r.session_lost()
    now[0] += 29
    assert not r.expire(now[0]) and stored(r)
    r.session_lost()  # ExaBGP flapped again: the timer does not start over
    now[0] += 2
    assert r.expire(now[0]) and stored(r) == []


def test_tighter_rules_apply_to_what_is_stored_wider_ones_ask_for_the_routes_again():
    r = rib()
    r.announce(route("172.16.1.0/24"))
    r.announce(route("10.9.0.0/24"))  # refused, not stored
    tight = ImportConfig(allow=(PrefixRule(net("172.16.2.0/24"), 24, 24),))
    assert r.set_config(tight) is True  # narrower, yet it allows what was refused? no:
    assert stored(r) == []
    wide = ImportConfig(allow=(PrefixRule(net("0.0.0.0/0"), 0, 32),))
    assert r.set_config(wide) is True  # 10.9.0.0/24 was refused: the peer must resend


def test_same_rules_ask_for_nothing():
    r = rib()
    r.announce(route("172.16.1.0/24"))
    assert r.set_config(ImportConfig(allow=RULES)) is False


def test_a_lower_limit_drops_the_newest():
    r = rib()
    for i in range(5):
        r.announce(route(f"172.16.{i}.0/24"))
    r.set_config(ImportConfig(allow=RULES, max_prefixes=2))
    assert stored(r) == ["172.16.0.0/24", "172.16.1.0/24"]
    assert r.refused().over_limit == 3


@pytest.mark.parametrize("restart_time", [None, 0, 120])
def test_adopted_routes_are_ours_to_keep_whatever_the_peer_advertised(restart_time):
    # We restarted (a new agent or speaker), not the peer: our forwarding state is ours
    # to keep until its End-of-RIB (RFC 4724 4.1), even from a peer without the capability.
    r = rib()
    r.adopt({net("172.16.1.0/24"): route("172.16.1.0/24")}, restart_time, 1e12)
    r.peer_open(None, ())  # the peer's flags describe its restarts, not ours
    assert stored(r) == ["172.16.1.0/24"]
    r.end_of_rib("ipv4-unicast")
    assert stored(r) == []


def test_after_our_own_restart_the_peers_flags_do_not_drop_our_forwarding_state():
    r = rib()
    r.peer_open(30, ())  # restart time, but no F bit: FRR without preserve-fw-state
    r.announce(route("172.16.1.0/24"))
    r.session_lost(ours=True)  # ExaBGP was killed
    r.peer_open(30, ())
    assert stored(r) == ["172.16.1.0/24"]
    r.session_lost()  # this time the peer went: by its flags, it kept no forwarding state
    r.peer_open(30, ())
    assert stored(r) == ["172.16.1.0/24"]  # still ours to keep: the restart began on our side
    r.end_of_rib("ipv4-unicast")
    r.announce(route("172.16.1.0/24"))
    r.session_lost()
    r.peer_open(30, ())
    assert stored(r) == []


def test_adopted_routes_stay_until_the_session_sends_end_of_rib():
    r = rib()
    r.adopt({net("172.16.1.0/24"): route("172.16.1.0/24")}, 120, 1e12)
    assert stored(r) == ["172.16.1.0/24"]
    r.peer_open(120, ("ipv4-unicast",))
    r.end_of_rib("ipv4-unicast")
    assert stored(r) == []


@pytest.mark.parametrize("hop", ["::1", "127.0.0.1", "0.0.0.0", "ff02::1", "not-an-ip"])
def test_a_route_whose_next_hop_nothing_can_use_is_refused(hop):
    r = PeerRoutes(ImportConfig(allow=(PrefixRule(net("::/0"), 0, 128),
                                       PrefixRule(net("0.0.0.0/0"), 0, 32))))
    prefix = "fd99::/64" if ":" in hop else "172.16.1.0/24"
    assert r.announce(LearnedRoute("10.0.0.1", net(prefix), hop)) is False
    assert r.refused().samples == ((prefix, reasons.BAD_NEXT_HOP),)
