"""The speaker's bookkeeping, driven through a fake ExaBGP API connection (no processes)."""

import ipaddress
import json
from types import SimpleNamespace

from bgpd.config import BgpConfig, PeerConfig
from bgpd.model import Announcement, Attributes
from bgpd.speaker import Speaker

PEER = "10.0.0.1"


class FakeConnection:
    """Records command lines and answers each at once (``done`` unless told to refuse)."""

    def __init__(self):
        self.lines: list[str] = []
        self.refuse: set[str] = set()
        self.deferred: list = []
        self.defer = False

    def send(self, line, on_reply):
        self.lines.append(line)
        ok = not any(word in line for word in self.refuse)
        if self.defer:
            self.deferred.append((on_reply, ok))
        else:
            on_reply(ok)
        return object()

    def wait_idle(self, timeout):
        return True

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
