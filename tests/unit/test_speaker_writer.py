"""The speaker's bookkeeping, driven through a fake ExaBGP API connection (no processes)."""

import ipaddress
import json
from types import SimpleNamespace

import pytest

from bgpd.config import BgpConfig, PeerConfig
from bgpd.model import Announcement, Attributes
from bgpd.speaker import Speaker
from bgpd.speaker.snapshot import Snapshot

PEER = "10.0.0.1"


class FakeConnection:
    """Records command lines and answers each at once (``done`` unless told to refuse)."""

    def __init__(self):
        self.lines: list[str] = []
        self.refuse: set[str] = set()
        self.deferred: list = []
        self.defer = False
        self.on_send = None  # called with each line before it is answered
        self.closed = False
        self.generation = 1

    def send(self, line, on_reply):
        self.lines.append(line)
        if self.on_send is not None:
            self.on_send(line)
        ok = not any(word in line for word in self.refuse)
        if self.defer:
            self.deferred.append((on_reply, ok))
        else:
            on_reply(ok)
        return object()

    def wait_idle(self, timeout):
        return True

    def close(self):
        self.closed = True

    def take(self):
        lines, self.lines = self.lines, []
        return lines


def state_line(state, reason=""):
    neighbor = {"address": {"local": "10.0.0.2", "peer": PEER}, "state": state, "reason": reason}
    return json.dumps({"type": "state", "neighbor": neighbor})


def make_speaker():
    notified = []
    bgp = BgpConfig(
        asn=64512,
        peers=(PeerConfig(PEER, 65000, local_address="10.0.0.2", families=("ipv4-unicast",)),),
    )
    sp = Speaker(bgp, router_id="10.0.0.2", notify=lambda: notified.append(1))
    conn = FakeConnection()
    sp._api = SimpleNamespace(current=conn)
    return sp, conn, notified


def ann(prefix, med=None):
    return Announcement(ipaddress.ip_network(prefix), Attributes(med=med))


def test_nothing_is_sent_before_the_session_is_up_then_everything_and_end_of_rib():
    sp, conn, notified = make_speaker()
    sp.set_desired({ann("10.1.0.0/24"), ann("10.2.0.0/24")})
    sp._reconcile_once()
    assert conn.take() == []
    sp._on_line(conn, state_line("up"))
    assert notified
    sp._reconcile_once()
    assert conn.take() == [
        f"neighbor {PEER} announce attributes next-hop 10.0.0.2 origin igp nlri 10.1.0.0/24 10.2.0.0/24",
        f"neighbor {PEER} announce eor ipv4 unicast",
    ]
    assert sp.in_sync()
    sp._reconcile_once()
    assert conn.take() == []  # reconciled twice: nothing more to do


def test_small_changes_send_only_the_difference():
    sp, conn, _ = make_speaker()
    first = {ann(f"10.0.{i}.0/24") for i in range(100)}
    sp.set_desired(first)
    sp._on_line(conn, state_line("up"))
    sp._reconcile_once()
    conn.take()
    second = (first - {ann("10.0.5.0/24")}) | {ann("10.9.0.0/24", med=3)}
    sp.set_desired(second)
    sp._reconcile_once()
    assert conn.take() == [
        f"neighbor {PEER} announce attributes next-hop 10.0.0.2 origin igp med 3 nlri 10.9.0.0/24",
        f"neighbor {PEER} withdraw attributes next-hop 10.0.0.2 nlri 10.0.5.0/24",
    ]
    assert len(sp.announced(PEER)) == 100


def test_a_session_coming_back_gets_the_whole_set_and_only_stale_routes_withdrawn():
    sp, conn, _ = make_speaker()
    sp.set_desired({ann("10.1.0.0/24"), ann("10.2.0.0/24")})
    sp._on_line(conn, state_line("up"))
    sp._reconcile_once()
    sp._on_line(conn, state_line("down", "hold timer expired"))
    assert sp.peers()[0].last_error == "hold timer expired"
    sp.set_desired({ann("10.1.0.0/24"), ann("10.3.0.0/24")})
    sp._reconcile_once()
    conn.take()
    sp._on_line(conn, state_line("up"))
    sp._reconcile_once()
    assert conn.take() == [
        f"neighbor {PEER} announce attributes next-hop 10.0.0.2 origin igp nlri 10.1.0.0/24 10.3.0.0/24",
        f"neighbor {PEER} withdraw attributes next-hop 10.0.0.2 nlri 10.2.0.0/24",
        f"neighbor {PEER} announce eor ipv4 unicast",
    ]
    assert sp.in_sync()


def test_a_refused_command_is_counted_reported_and_retried():
    sp, conn, _ = make_speaker()
    sp._on_log_line("processes       command could not parse route in : something")
    conn.refuse = {"10.66.0.0/24"}
    sp.set_desired({ann("10.66.0.0/24")})
    sp._on_line(conn, state_line("up"))
    sp._reconcile_once()
    assert sp.counters()["commands_refused"] == 1
    assert "could not parse" in sp.peers()[0].last_error
    assert sp.announced(PEER) == set()
    conn.take()
    conn.refuse = set()
    sp._reconcile_once()
    assert conn.take() == [
        f"neighbor {PEER} announce attributes next-hop 10.0.0.2 origin igp nlri 10.66.0.0/24"
    ]
    assert sp.in_sync()


def test_late_acknowledgements_from_a_previous_session_are_not_recorded():
    sp, conn, _ = make_speaker()
    sp._on_line(conn, state_line("up"))
    sp._reconcile_once()
    conn.defer = True
    sp.set_desired({ann("10.1.0.0/24")})
    sp._reconcile_once()
    sp._on_line(conn, state_line("down", "peer reset"))
    for on_reply, ok in conn.deferred:
        on_reply(ok)
    assert sp.announced(PEER) == set()
    assert sp._peers[PEER].announced == {}


ANNOUNCE_10_1 = f"neighbor {PEER} announce attributes next-hop 10.0.0.2 origin igp nlri 10.1.0.0/24"
WITHDRAW_10_1 = f"neighbor {PEER} withdraw attributes next-hop 10.0.0.2 nlri 10.1.0.0/24"
EOR = f"neighbor {PEER} announce eor ipv4 unicast"


def _up_and_in_sync(sp, conn, desired=()):
    sp.set_desired(set(desired))
    sp._on_line(conn, state_line("up"))
    sp._reconcile_once()
    conn.take()


def test_a_route_acknowledged_after_a_flap_is_withdrawn_once_no_longer_desired():
    # ExaBGP processes a command after the session reset and queues the route for the next
    # session; its "done" comes after "down". That route must not be forgotten.
    sp, conn, _ = make_speaker()
    _up_and_in_sync(sp, conn)
    conn.defer = True
    sp.set_desired({ann("10.1.0.0/24")})
    sp._reconcile_once()  # announce 10.1.0.0/24 in flight
    sp._on_line(conn, state_line("down", "peer reset"))
    for on_reply, ok in conn.deferred:
        on_reply(ok)
    conn.defer = False
    assert set(sp._peers[PEER].leftover) == {ann("10.1.0.0/24").prefix}
    sp.set_desired(set())  # the pod went away meanwhile
    sp._reconcile_once()
    conn.take()
    sp._on_line(conn, state_line("up"))
    sp._reconcile_once()
    assert conn.take() == [WITHDRAW_10_1, EOR]
    assert sp.in_sync()


def test_a_late_acknowledgement_after_the_refresh_was_planned_is_diffed_away():
    sp, conn, _ = make_speaker()
    _up_and_in_sync(sp, conn)
    conn.defer = True
    sp.set_desired({ann("10.1.0.0/24")})
    sp._reconcile_once()
    sp._on_line(conn, state_line("down", "peer reset"))
    sp.set_desired(set())
    sp._on_line(conn, state_line("up"))
    sp._reconcile_once()  # the refresh (only End-of-RIB) is planned before the late "done"
    assert conn.lines[-1] == EOR
    sp._wake.clear()
    for on_reply, ok in conn.deferred:
        on_reply(ok)
    conn.defer = False
    conn.take()
    assert sp._wake.is_set(), "the writer must be woken to withdraw it"
    assert not sp.in_sync()
    sp._reconcile_once()
    assert conn.take() == [WITHDRAW_10_1]
    assert sp.in_sync()


def test_a_session_that_drops_mid_round_gets_no_more_of_that_round():
    sp, conn, _ = make_speaker()
    sp.set_desired({ann("10.1.0.0/24"), ann("10.2.0.0/24", med=1), ann("10.3.0.0/24", med=2)})
    sp._on_line(conn, state_line("up"))

    def drop_after_first(line):
        conn.on_send = None
        sp._on_line(conn, state_line("down", "hold timer expired"))

    conn.on_send = drop_after_first
    sp._reconcile_once()
    assert len(conn.take()) == 1  # not the rest of the old session's round, nor its EOR
    sp._on_line(conn, state_line("up"))
    sp._reconcile_once()
    lines = conn.take()
    assert len(lines) == 4 and lines[-1] == EOR
    assert sp.in_sync()


def test_nothing_is_sent_before_the_agent_first_says_what_it_wants():
    sp, conn, _ = make_speaker()
    sp._on_line(conn, state_line("up"))  # a graceful-restart peer that kept our old routes
    sp._reconcile_once()
    sp._reconcile_once(full=True)
    assert conn.take() == []  # above all no lone End-of-RIB: it would flush them
    assert not sp.in_sync()
    sp.set_desired({ann("10.1.0.0/24")})
    sp._reconcile_once()
    assert conn.take() == [ANNOUNCE_10_1, EOR]
    assert sp.in_sync()


def test_changes_are_not_remembered_for_a_peer_that_is_down():
    sp, conn, _ = make_speaker()
    base = int(ipaddress.ip_address("2001:db8::"))
    for i in range(500):  # pod churn while the peer is unreachable
        sp.set_desired({ann(str(ipaddress.ip_network(ipaddress.ip_address(base + i))))})
        sp._reconcile_once()
    assert sp._peers[PEER].dirty == set()
    sp.set_desired({ann("10.1.0.0/24")})
    sp._on_line(conn, state_line("up"))
    sp._reconcile_once()
    assert conn.take() == [ANNOUNCE_10_1, EOR]


def test_an_exabgp_exit_closes_its_api_connection():
    sp, conn, _ = make_speaker()
    sp._on_exit(-9)
    assert conn.closed
    assert sp.counters()["exabgp_exits"] == 1


def test_a_malformed_api_line_changes_nothing():
    sp, conn, notified = make_speaker()
    _up_and_in_sync(sp, conn, {ann("10.1.0.0/24")})
    notified.clear()
    for line in (
        '{"type": "state", "neighbor": {"address": {"peer": ["10.0.0.1"]}, "state": "down"}}',
        '{"type": "state", "neighbor": {"address": {"peer": "10.0.0.1"}, "state": ["down"]}}',
        '{"type": "notification", "neighbor": {"address": {"peer": "10.0.0.1"}, '
        '"notification": {"code": "x"}}}',
    ):
        sp._on_line(conn, line)
    assert sp.peers()[0].state == "established"
    assert sp.in_sync()


# ------------------------------------------------------------------ what was negotiated


def neighbor(kind, body):
    return json.dumps({"type": kind, "neighbor": {"address": {"local": "10.0.0.2", "peer": PEER},
                                                  **body}})


def negotiated(*families, refresh="absent"):
    return neighbor("negotiated", {"negotiated": {
        "message_size": 4096, "hold_time": 90, "asn4": True, "refresh": refresh,
        "families": list(families)}})


def received_open(gr_time=None, forwarding=()):
    caps = {"1": {"name": "multiprotocol", "families": ["ipv4/unicast"]}}
    if gr_time is not None:
        # ExaBGP 5.0's labels are swapped: "restart" marks a family's Forwarding bit.
        caps["64"] = {"name": "graceful restart", "time": gr_time, "restart-flags": [],
                      "address-family-flags": {f.replace("-", "/"): ["restart"]
                                               for f in forwarding}}
    return neighbor("open", {"direction": "receive", "open": {"capabilities": caps}})


def update(*prefixes, withdraw=(), eor=None):
    if eor:
        message = {"eor": {"afi": eor.split("-")[0], "safi": "unicast"}}
    else:
        update = {}
        if prefixes:
            update["announce"] = {"ipv4 unicast": {"10.0.0.1": [{"nlri": p} for p in prefixes]}}
        if withdraw:
            update["withdraw"] = {"ipv4 unicast": [{"nlri": p} for p in withdraw]}
        message = {"update": update}
    return neighbor("update", {"direction": "receive", "message": message})


def dual_stack_speaker(**imports):
    from bgpd.config import ImportConfig, PrefixRule

    bgp = BgpConfig(asn=64512, peers=(PeerConfig(PEER, 65000, local_address="10.0.0.2"),))
    sp = Speaker(bgp, router_id="10.0.0.2", import_config=ImportConfig(
        allow=(PrefixRule(ipaddress.ip_network("0.0.0.0/0"), 0, 32),), **imports))
    conn = FakeConnection()
    sp._api = SimpleNamespace(current=conn)
    return sp, conn


def test_only_negotiated_families_are_sent_and_the_rest_is_reported():
    sp, conn = dual_stack_speaker()
    sp.set_desired({ann("10.1.0.0/24"), ann("2001:db8::/64")})
    sp._on_line(conn, negotiated("ipv4 unicast"))  # the peer did not take IPv6
    sp._on_line(conn, state_line("up"))
    sp._reconcile_once()
    # No IPv6 route and, above all, no IPv6 End-of-RIB: strict peers reset for either.
    assert conn.take() == [ANNOUNCE_10_1, EOR]
    assert sp.refused(PEER) == {ipaddress.ip_network("2001:db8::/64"):
                                "ipv6-unicast was not negotiated with the peer"}
    status = sp.peers()[0]
    assert status.families == ("ipv4-unicast",) and status.prefixes_refused == 1
    assert sp.in_sync()
    sp._on_line(conn, state_line("down"))
    sp._on_line(conn, negotiated("ipv4 unicast", "ipv6 unicast"))
    sp._on_line(conn, state_line("up"))
    sp._reconcile_once()
    assert conn.take()[-2:] == [EOR, f"neighbor {PEER} announce eor ipv6 unicast"]
    assert sp.refused(PEER) == {}


def test_attributes_too_big_for_a_message_are_never_handed_to_exabgp():
    from bgpd.model import Attributes

    sp, conn, _ = make_speaker()
    huge = Announcement(ipaddress.ip_network("10.9.0.0/24"),
                        Attributes(communities=tuple(f"1:{i}" for i in range(1100))))
    sp.set_desired({ann("10.1.0.0/24"), huge})
    sp._on_line(conn, state_line("up"))
    sp._reconcile_once()
    assert conn.take() == [ANNOUNCE_10_1, EOR]
    assert "do not fit one 4096-byte BGP message" in sp.refused(PEER)[huge.prefix]
    assert sp.in_sync()


def test_received_routes_stay_through_an_exabgp_restart_until_end_of_rib():
    sp, conn = dual_stack_speaker()
    sp._on_line(conn, received_open(gr_time=120, forwarding=("ipv4-unicast",)))
    sp._on_line(conn, state_line("up"))
    sp._on_line(conn, update("0.0.0.0/0", "192.0.2.0/24"))
    assert set(map(str, sp.learned())) == {"0.0.0.0/0", "192.0.2.0/24"}
    sp._on_connect(SimpleNamespace(generation=2))  # ExaBGP crashed and came back
    assert set(map(str, sp.learned())) == {"0.0.0.0/0", "192.0.2.0/24"}  # kept, stale
    assert sp.peers()[0].routes_stale == 2
    sp._on_line(conn, received_open(gr_time=120, forwarding=("ipv4-unicast",)))
    sp._on_line(conn, state_line("up"))
    sp._on_line(conn, update("0.0.0.0/0"))
    sp._on_line(conn, update(eor="ipv4-unicast"))
    assert set(map(str, sp.learned())) == {"0.0.0.0/0"}  # the one not sent again is gone


def test_a_peer_without_graceful_restart_takes_its_routes_with_it():
    sp, conn = dual_stack_speaker()
    sp._on_line(conn, received_open())
    sp._on_line(conn, state_line("up"))
    sp._on_line(conn, update("0.0.0.0/0"))
    sp._on_line(conn, state_line("down", "hold timer expired"))
    assert sp.learned() == {}


def test_over_max_prefixes_with_teardown_closes_the_session_once():
    sp, conn = dual_stack_speaker(max_prefixes=2, max_prefixes_action="teardown")
    sp._on_line(conn, state_line("up"))
    sp._on_line(conn, update("10.1.0.0/24", "10.2.0.0/24", "10.3.0.0/24"))
    sp._on_line(conn, update("10.4.0.0/24"))
    assert conn.take() == [f"neighbor {PEER} teardown 1"]
    assert sp.learned() == {}  # cut off, not restarting: what it sent goes
    status = sp.peers()[0]
    assert "more than import.max_prefixes 2: session kept down" in status.last_error
    assert status.routes_refused == 1  # the one over the limit; after the Cease, nothing is read
    paused = []
    sp._supervisor = SimpleNamespace(pause=paused.append)
    sp._on_line(conn, state_line("down", "notification sent (6,1)"))  # the Cease is out
    assert paused and 299 < paused[0] <= 300  # ExaBGP stopped for the hold-down
    sp._reset_all("down", "ExaBGP stopped")
    assert "session kept down" in sp.peers()[0].last_error  # not an MD5 hint, not "stopped"


def test_wider_import_rules_ask_the_peer_again():
    from bgpd.config import ImportConfig, PrefixRule

    sp, conn = dual_stack_speaker(max_prefixes=1)
    sp._on_line(conn, negotiated("ipv4 unicast", refresh="normal"))
    sp._on_line(conn, state_line("up"))
    sp._on_line(conn, update("10.1.0.0/24", "10.2.0.0/24"))
    conn.take()
    sp.set_import_config(ImportConfig(allow=(PrefixRule(ipaddress.ip_network("0.0.0.0/0"), 0,
                                                        32),), max_prefixes=10))
    assert conn.take() == [f"neighbor {PEER} announce route-refresh ipv4 unicast"]


def _announced_prefixes(lines):
    """Every prefix announced by ``lines``, text or packed, in order."""
    out = []
    for line in lines:
        if " announce attributes " in line:
            out += line.split(" nlri ")[1].split()
        elif " announce packed " in line:
            words = line.split()
            at = words.index("packed")
            afi, bits, hexed = words[at + 1], int(words[at + 2]), words[at + 3]
            width, octets = (4 if afi == "ipv4" else 16), (bits + 7) // 8
            raw = bytes.fromhex(hexed)
            out += [f"{ipaddress.ip_address(raw[i:i + octets] + bytes(width - octets))}/{bits}"
                    for i in range(0, len(raw), octets)]
    return out


@pytest.mark.parametrize("packed", [False, True], ids=["text lines", "packed lines"])
def test_a_refresh_comes_from_the_snapshot_made_while_the_peer_was_down(packed, monkeypatch):
    """The whole view of a session coming back: every desired route exactly once (large
    groups packed when ExaBGP takes it, small ones as text), a route of the last session no
    longer desired withdrawn after every announcement, End-of-RIB last; and the table was
    grouped while the peer was down, not when it came up."""
    from bgpd.speaker import speaker as speaker_mod

    made = []
    monkeypatch.setattr(speaker_mod, "Snapshot",
                        lambda index: made.append(1) or Snapshot(index))
    sp, conn, _ = make_speaker()
    sp._packed = packed
    routes = {ann(f"10.{i // 256}.{i % 256}.0/24", med=i % 3) for i in range(300)}
    routes |= {ann(f"10.250.0.{i}/32") for i in range(5)}  # too few to pack
    sp.set_desired(routes | {ann("10.200.0.0/24")})
    sp._on_line(conn, state_line("up"))
    sp._reconcile_once()
    sp._on_line(conn, state_line("down", "reset"))
    sp.set_desired(routes)
    sp._reconcile_once()  # the peer is down: the new table is grouped now
    assert len(made) == 2
    conn.take()
    sp._on_line(conn, state_line("up"))
    sp._reconcile_once()
    assert len(made) == 2  # the session came up to a table grouped already
    lines = conn.take()
    announced = _announced_prefixes(lines)
    assert sorted(announced) == sorted(str(r.prefix) for r in routes)
    assert len(announced) == len(set(announced)) == len(routes)
    assert sum(" announce packed " in line for line in lines) == (3 if packed else 0)
    withdrawn = [i for i, line in enumerate(lines) if " withdraw " in line]
    assert [lines[i].split(" nlri ")[1] for i in withdrawn] == ["10.200.0.0/24"]
    last_announce = max(i for i, line in enumerate(lines) if " announce " in line
                        and " eor " not in line)
    assert withdrawn[0] > last_announce
    assert lines[-1] == f"neighbor {PEER} announce eor ipv4 unicast"
    assert sp.in_sync()


def test_a_refused_packed_line_is_sent_again_as_text_and_packing_stops():
    sp, conn, _ = make_speaker()
    sp._packed = True
    routes = {ann(f"10.1.{i}.0/24") for i in range(40)}
    conn.refuse = {" announce packed "}
    sp.set_desired(routes)
    sp._on_line(conn, state_line("up"))
    sp._reconcile_once()
    assert not sp._packed and not sp.in_sync()
    assert sp._peers[PEER].commands_refused == 1
    conn.take()
    sp._reconcile_once()  # the retry: the same routes, as text
    lines = conn.take()
    assert not any(" announce packed " in line for line in lines)
    assert sorted(_announced_prefixes(lines)) == sorted(str(r.prefix) for r in routes)
    assert sp.in_sync()


def test_a_table_changing_while_the_peer_is_down_is_grouped_at_most_once_an_interval(
        monkeypatch):
    """A churning table and a peer that stays down (a dead ToR) cost a snapshot per
    SNAPSHOT_WARM_INTERVAL, not one per change; an out-of-date one is not kept."""
    from bgpd.speaker import speaker as speaker_mod

    made = []
    monkeypatch.setattr(speaker_mod, "Snapshot",
                        lambda index: made.append(1) or Snapshot(index))
    sp, conn, _ = make_speaker()
    sp.set_desired({ann("10.1.0.0/24")})
    sp._reconcile_once()
    assert len(made) == 1 and sp._snapshot is not None
    for i in range(5):
        sp.set_desired({ann(f"10.2.{i}.0/24")})
        sp._reconcile_once()
    assert len(made) == 1 and sp._snapshot is None
    sp._snapshot_warmed -= speaker_mod.SNAPSHOT_WARM_INTERVAL
    sp._reconcile_once()
    assert len(made) == 2 and sp._snapshot.source is sp._index.source


def test_packed_acknowledgements_are_recorded_after_the_round_in_order():
    # A packed command's routes are recorded once the writer's round is acknowledged (or
    # when read before that), never out of order with the text commands after them.
    sp, conn, _ = make_speaker()
    sp._packed = True
    routes = {ann(f"10.3.{i}.0/24") for i in range(40)}
    sp.set_desired(routes)
    sp._on_line(conn, state_line("up"))
    st = sp._peers[PEER]
    pending = []
    conn.on_send = lambda line: pending.append(len(st._acked))
    sp._reconcile_once()
    assert any(" announce packed " in line for line in conn.take())
    assert max(pending) == 1  # the packed ack waited while the round went on
    assert st._acked == [] and len(st._announced) == 40 and sp.in_sync()
    # read before being settled: recorded first, then the later withdrawal applies on top
    gone = ann("10.3.7.0/24")
    st.announced = {}
    st.acknowledged(list(routes))
    st.announced.pop(gone.prefix)
    assert set(st._announced) == {r.prefix for r in routes} - {gone.prefix}
    st.acknowledged([gone])
    st.announced = {}  # a new session: nothing acknowledged earlier is this one's
    assert st._acked == [] and st.announced == {}
