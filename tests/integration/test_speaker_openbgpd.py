"""The speaker against OpenBGPD (Debian's `openbgpd`) in network namespaces.

The third implementation, and the strict one: an UPDATE or End-of-RIB for an address family
the session did not negotiate is a malformed UPDATE to OpenBGPD (NOTIFICATION 3/9, "bad
update/withdraw, IPv6 unicast disabled"), where FRR and BIRD let it pass. Our side runs on
the speaker's defaults: every peer lists both families, graceful restart 120 s, hold time 90
(OpenBGPD's 9 s wins the negotiation).
"""

from __future__ import annotations

import os
import signal
import tempfile
import time

import pytest

from bgpd.config import ImportConfig, PeerConfig, PrefixRule
from bgpd.model import Attributes
from bgpd.speaker import process
from bgpd.speaker import speaker as speaker_module
from bgpd.speaker.speaker import Speaker
from bgpd.speaker.state import CONNECT_STALL, PeerState
from tests.integration import routers
from tests.integration.routers import NODE_V4, NODE_V6, TOR_V4, TOR_V6, wait_for
from tests.integration.speaker_lab import (
    NODE_AS,
    ROUTE_TIMEOUT,
    SESSION_TIMEOUT,
    ann,
    bgp_config,
    established,
    speaker,
)

pytestmark = [pytest.mark.integration]

TOR_AS = 65000
TOR_AS4 = 4200000001  # a 4-byte ASN for the ToR in one test: OpenBGPD announces as4byte
RESYNC = 1.0  # seconds: the writer's full comparison, every second instead of every 30
MD5_MISMATCH_OBSERVE = CONNECT_STALL + 4.0  # the stall is reported after CONNECT_STALL
GR_RESTART_DELAY = 3.0  # seconds before the speaker restarts a crashed ExaBGP (0.5)
SAMPLE = 0.2  # seconds between looks at OpenBGPD while watching a session
NO_NOTIFICATIONS = {"sent": 0, "received": 0}
TEST_NET = ann("192.0.2.0/24").prefix


def default_peer(address: str = TOR_V4, asn: int = TOR_AS, **overrides) -> PeerConfig:
    """A peer on the speaker's defaults: both families, graceful restart, hold time 90."""
    local = NODE_V6 if ":" in address else NODE_V4
    return PeerConfig(address, asn, local_address=local, **overrides)


class PeerStates:
    """Every state one peer of the speaker passed through, in order (its notify hook runs
    after each ExaBGP message, so even a session that flaps in milliseconds shows)."""

    def __init__(self, address: str):
        self.address = address
        self.speaker: Speaker | None = None
        self.seen: list[str] = []

    def __call__(self) -> None:
        if self.speaker is not None:
            state = {p.address: p.state for p in self.speaker.peers()}.get(self.address, "")
            if not self.seen or self.seen[-1] != state:
                self.seen.append(state)

    def since_first_up(self) -> list[str]:
        return self.seen[self.seen.index("established"):] if "established" in self.seen else []


def count_full_rounds(monkeypatch) -> list[int]:
    """Counts the writer's full reconcile rounds (the periodic resync) from now on."""
    rounds = [0]
    original = Speaker._reconcile_once

    def counting(self, full: bool = False) -> None:
        if full:
            rounds[0] += 1
        original(self, full)

    monkeypatch.setattr(Speaker, "_reconcile_once", counting)
    return rounds


def next_hops(ob: routers.Openbgpd, neighbor: str) -> dict[str, str]:
    return {p: r["exit_nexthop"] for p, r in ob.routes(neighbor).items()}


def test_an_ipv4_only_session_stays_up_and_reports_ipv6_prefixes_as_refused(monkeypatch):
    """OpenBGPD's neighbor has its default, IPv4 unicast only; ours lists both families and
    the agent wants IPv4 and IPv6 prefixes.

    Before the speaker sent only what was negotiated, it sent End-of-RIB for every
    configured family when the session came up: ExaBGP put an empty MP_UNREACH_NLRI for
    IPv6 on the wire, OpenBGPD logged "bad withdraw, IPv6 unicast disabled", sent
    NOTIFICATION 3/9 (UPDATE message error, optional attribute error) and dropped the
    session; ExaBGP reconnected at once and the same happened again, about once a second
    (25 NOTIFICATIONs in 10 s measured). The speaker itself mostly read "established"
    then, so this test watches OpenBGPD's NOTIFICATION counters and log, not our state.
    test_the_watch_catches_an_end_of_rib_for_a_family_not_negotiated reproduces it."""
    monkeypatch.setattr(speaker_module, "RESYNC_INTERVAL", RESYNC)
    full_rounds = count_full_rounds(monkeypatch)
    with routers.tor_and_node("obgp-v4only") as (tor, node):
        conf = routers.openbgpd_config(TOR_AS, {NODE_V4: NODE_AS})
        states = PeerStates(TOR_V4)
        with (
            routers.openbgpd(tor, conf) as ob,
            speaker(bgp_config(default_peer()), node, notify=states) as sp,
        ):
            states.speaker = sp
            sp.set_desired([ann("10.244.1.0/24"), ann("10.244.2.0/24"), ann("fd10:244:1::/64")])
            wait_for(
                lambda: next_hops(ob, NODE_V4)
                == {"10.244.1.0/24": NODE_V4, "10.244.2.0/24": NODE_V4},
                SESSION_TIMEOUT,
                "the IPv4 routes in OpenBGPD's RIB with our next hop",
            )
            neighbor = ob.neighbor(NODE_V4)
            assert neighbor["session"]["capabilities"]["multiprotocol"] == ["IPv4 unicast"]
            hold = neighbor["session"]["holdtime"]
            assert hold == routers.OPENBGPD_HOLDTIME

            # Two hold times (keepalives carry it) with full resyncs and a change of the
            # desired set halfway: nothing of IPv6 may reach the wire.
            start = time.monotonic()
            observe, changed = 2 * hold, False
            rounds_at_change = 0
            while time.monotonic() - start < observe:
                assert ob.established(NODE_V4), ob.log()[-2000:]
                assert ob.notifications(NODE_V4) == NO_NOTIFICATIONS, ob.log()[-2000:]
                if not changed and time.monotonic() - start > observe / 2:
                    sp.set_desired([ann("10.244.1.0/24"), ann("10.244.3.0/24"),
                                    ann("fd10:244:1::/64"), ann("fd10:244:2::/64")])
                    changed, rounds_at_change = True, full_rounds[0]
                time.sleep(SAMPLE)
            assert full_rounds[0] - rounds_at_change >= 2, "no full resync after the change"

            assert set(ob.routes(NODE_V4)) == {"10.244.1.0/24", "10.244.3.0/24"}
            assert ob.notifications(NODE_V4) == NO_NOTIFICATIONS
            log = ob.log()
            assert log.count("-> Established") == 1, log
            assert "disabled" not in log and "sending notification" not in log, log
            # Our side: one session all along, IPv6 reported, not sent.
            assert states.since_first_up() == ["established"], states.seen
            status = sp.peers()[0]
            assert status.families == ("ipv4-unicast",)
            assert (status.prefixes_sent, status.prefixes_refused) == (2, 2)
            assert status.last_error == ""
            refused = sp.refused(TOR_V4)
            assert {str(p) for p in refused} == {"fd10:244:1::/64", "fd10:244:2::/64"}
            assert all("ipv6-unicast" in reason and "not negotiated" in reason
                       for reason in refused.values()), refused
            assert {str(a.prefix) for a in sp.announced(TOR_V4)} == {
                "10.244.1.0/24", "10.244.3.0/24"}
            assert sp.in_sync()
            assert sp.counters()["commands_refused"] == 0


def test_the_watch_catches_an_end_of_rib_for_a_family_not_negotiated(monkeypatch):
    """The previous test's watch against the old behaviour (the session's target kept every
    configured family whatever was negotiated): OpenBGPD resets the session with 3/9."""

    def old_set_negotiated(self, negotiated):
        self.negotiated = negotiated  # the target stays the configured families

    monkeypatch.setattr(PeerState, "set_negotiated", old_set_negotiated)
    with routers.tor_and_node("obgp-oldbug") as (tor, node):
        conf = routers.openbgpd_config(TOR_AS, {NODE_V4: NODE_AS})
        with routers.openbgpd(tor, conf) as ob, speaker(bgp_config(default_peer()), node) as sp:
            sp.set_desired([ann("10.244.1.0/24")])  # no IPv6 prefix at all: the EoR suffices
            wait_for(
                lambda: ob.notifications(NODE_V4)["sent"] >= 1, SESSION_TIMEOUT, "a NOTIFICATION"
            )
            assert "bad withdraw, IPv6 unicast disabled" in ob.log()
            wait_for(
                lambda: "notification received (3,9)" in sp.peers()[0].last_error,
                ROUTE_TIMEOUT,
                "the NOTIFICATION seen by the speaker",
            )


def test_ipv4_and_ipv6_on_one_ipv4_session_arrive_with_our_next_hops():
    """Dual stack over one IPv4 session (OpenBGPD announces both families to us), with a
    4-byte ToR ASN."""
    with routers.tor_and_node("obgp-dual") as (tor, node):
        conf = routers.openbgpd_config(TOR_AS4, {NODE_V4: NODE_AS}, dual_stack=(NODE_V4,))
        peer = default_peer(asn=TOR_AS4, next_hop_ipv6=NODE_V6)
        with routers.openbgpd(tor, conf) as ob, speaker(bgp_config(peer), node) as sp:
            sp.set_desired([ann("10.244.1.0/24"), ann("fd10:244:1::/64")])
            wait_for(
                lambda: next_hops(ob, NODE_V4)
                == {"10.244.1.0/24": NODE_V4, "fd10:244:1::/64": NODE_V6},
                SESSION_TIMEOUT,
                "both families at OpenBGPD with our next hops",
            )
            assert all(r["valid"] for r in ob.routes(NODE_V4).values())
            assert ob.neighbor(NODE_V4)["session"]["capabilities"]["multiprotocol"] == [
                "IPv4 unicast", "IPv6 unicast"]
            status = sp.peers()[0]
            assert status.families == ("ipv4-unicast", "ipv6-unicast")
            assert (status.prefixes_sent, status.prefixes_refused) == (2, 0)
            assert sp.refused(TOR_V4) == {}
            assert sp.wait_synced(ROUTE_TIMEOUT)
            assert ob.notifications(NODE_V4) == NO_NOTIFICATIONS


def test_an_ipv6_session_carries_ipv6_and_reports_ipv4_as_refused():
    with routers.tor_and_node("obgp-v6") as (tor, node):
        conf = routers.openbgpd_config(TOR_AS, {NODE_V6: NODE_AS})
        with (
            routers.openbgpd(tor, conf) as ob,
            speaker(bgp_config(default_peer(TOR_V6)), node) as sp,
        ):
            sp.set_desired([ann("10.244.1.0/24"), ann("fd10:244:1::/64")])
            wait_for(
                lambda: next_hops(ob, NODE_V6) == {"fd10:244:1::/64": NODE_V6},
                SESSION_TIMEOUT,
                "the IPv6 route at OpenBGPD over the IPv6 session",
            )
            assert sp.wait_synced(ROUTE_TIMEOUT)
            status = sp.peers()[0]
            assert status.families == ("ipv6-unicast",)
            assert (status.prefixes_sent, status.prefixes_refused) == (1, 1)
            [(prefix, reason)] = sp.refused(TOR_V6).items()
            assert str(prefix) == "10.244.1.0/24" and "ipv4-unicast" in reason
            assert set(ob.routes(NODE_V6)) == {"fd10:244:1::/64"}
            assert ob.notifications(NODE_V6) == NO_NOTIFICATIONS


def _password_file(directory: str, secret: str) -> str:
    path = os.path.join(directory, "md5")
    with open(path, "w") as f:
        f.write(secret + "\n")
    return path


@pytest.mark.parametrize(
    "ours, matches", [("s3cret-Key", True), ("wrong-key", False)], ids=["matching", "mismatched"]
)
def test_md5(ours, matches):
    with routers.tor_and_node("obgp-md5") as (tor, node), tempfile.TemporaryDirectory() as tmp:
        conf = routers.openbgpd_config(
            TOR_AS, {NODE_V4: NODE_AS}, passwords={NODE_V4: "s3cret-Key"}
        )
        peer = default_peer(password_file=_password_file(tmp, ours))
        with routers.openbgpd(tor, conf) as ob, speaker(bgp_config(peer), node) as sp:
            sp.set_desired([ann("10.244.1.0/24")])
            if matches:
                wait_for(lambda: established(sp, TOR_V4), SESSION_TIMEOUT, "an MD5 session")
                wait_for(
                    lambda: "10.244.1.0/24" in ob.routes(NODE_V4), ROUTE_TIMEOUT, "the route"
                )
                assert ob.established(NODE_V4)
            else:
                # The peer's kernel drops our SYNs (bad signature): only the stall tells.
                status = wait_for(
                    lambda: next((p for p in sp.peers() if "TCP MD5" in p.last_error), None),
                    MD5_MISMATCH_OBSERVE,
                    "the MD5 hint in last_error",
                )
                assert "no TCP connection for" in status.last_error
                assert "wrong or missing key" in status.last_error
                assert status.state != "established"
                assert not ob.established(NODE_V4)
                assert "-> Established" not in ob.log()
                assert not ob.routes(NODE_V4)


def test_openbgpd_keeps_our_routes_stale_while_exabgp_restarts_until_end_of_rib(monkeypatch):
    """Graceful restart, helper side at OpenBGPD: ExaBGP (restart time 120 s, the default)
    is SIGKILLed; OpenBGPD keeps our routes, stale, until the restarted ExaBGP's End-of-RIB,
    which removes the one the agent stopped wanting meanwhile, long before 120 s."""
    # ExaBGP is back 0.5 s after the crash and up in another 0.5 s, and OpenBGPD's control
    # socket answers its first query after a session loss only about 1 s later: too short
    # a gap to look into. The restart delay is the only thing changed.
    monkeypatch.setattr(process, "RESTART_BACKOFF_INITIAL", GR_RESTART_DELAY)
    with routers.tor_and_node("obgp-gr") as (tor, node):
        conf = routers.openbgpd_config(TOR_AS, {NODE_V4: NODE_AS})
        with routers.openbgpd(tor, conf) as ob, speaker(bgp_config(default_peer()), node) as sp:
            sp.set_desired([ann("10.244.1.0/24"), ann("10.244.2.0/24")])
            wait_for(
                lambda: set(ob.routes(NODE_V4)) == {"10.244.1.0/24", "10.244.2.0/24"},
                SESSION_TIMEOUT,
                "our routes at OpenBGPD",
            )
            assert sp.wait_synced(ROUTE_TIMEOUT)
            restart = ob.neighbor(NODE_V4)["session"]["capabilities"]["graceful_restart"]
            assert restart["timeout"] == 120 and restart["restart"]
            assert not any(r.get("stale") for r in ob.routes(NODE_V4).values())
            # OpenBGPD's session engine counts our End-of-RIB before its route engine has
            # applied it: a drop within those milliseconds ends the restart at once ("keeping
            # routes", then "finished" with nothing stale). Let the session settle first.
            wait_for(
                lambda: ob.neighbor(NODE_V4)["stats"]["update"]["received"]["eor"] >= 1
                and ob.neighbor(NODE_V4)["last_updown_sec"] >= 1,
                ROUTE_TIMEOUT,
                "our End-of-RIB applied at OpenBGPD",
            )

            first_pid = sp.exabgp_pid()
            os.kill(first_pid, signal.SIGKILL)
            wait_for(
                lambda: all(r.get("stale") for r in ob.routes(NODE_V4).values())
                and len(ob.routes(NODE_V4)) == 2,
                ROUTE_TIMEOUT,
                "both routes kept as stale by OpenBGPD",
            )
            # The agent changes its mind during the gap.
            sp.set_desired([ann("10.244.1.0/24"), ann("10.244.3.0/24")])
            dropped_at = time.monotonic()
            # Until the new session's End-of-RIB the kept route never leaves OpenBGPD's RIB.
            deadline = dropped_at + SESSION_TIMEOUT
            while True:
                routes = ob.routes(NODE_V4)
                assert "10.244.1.0/24" in routes, "a kept route was flushed"
                if set(routes) == {"10.244.1.0/24", "10.244.3.0/24"} and not any(
                    r.get("stale") for r in routes.values()
                ):
                    break
                assert time.monotonic() < deadline, f"still {routes}\n{ob.log()[-3000:]}"
                time.sleep(routers.POLL_INTERVAL)
            assert time.monotonic() - dropped_at < 60  # the End-of-RIB, not the 120 s timer
            assert ob.established(NODE_V4)
            assert sp.exabgp_pid() not in (None, first_pid)
            log = ob.log()
            assert "graceful restart of IPv4 unicast, keeping routes" in log
            assert "graceful restart of IPv4 unicast finished" in log
            assert "time-out" not in log
            assert ob.notifications(NODE_V4) == NO_NOTIFICATIONS
            assert sp.wait_synced(ROUTE_TIMEOUT)


def test_import_policy_and_no_stale_routes_from_a_peer_with_restart_time_zero():
    """OpenBGPD announces a default route and a /24; the speaker may import only the
    default. OpenBGPD advertises graceful restart with restart time 0 (it keeps no
    forwarding state for us): when it stops, what we learned from it goes at once."""
    with routers.tor_and_node("obgp-import") as (tor, node):
        conf = routers.openbgpd_config(
            TOR_AS, {NODE_V4: NODE_AS}, networks=["0.0.0.0/0", "192.0.2.0/24"]
        )
        policy = ImportConfig(enabled=True, allow=(PrefixRule(ann("0.0.0.0/0").prefix, 0, 0),))
        states = PeerStates(TOR_V4)
        learned_when_down: list[tuple[str, int, int]] = []

        def notify() -> None:
            states()
            if states.speaker is not None and states.seen[-1:] != ["established"]:
                status = states.speaker.peers()[0]
                learned_when_down.append(
                    (status.state, len(states.speaker.learned()), status.routes_stale)
                )

        with (
            routers.openbgpd(tor, conf) as ob,
            speaker(bgp_config(default_peer()), node, import_config=policy, notify=notify) as sp,
        ):
            states.speaker = sp
            sp.set_desired([ann("10.244.1.0/24")])
            wait_for(
                lambda: (sp.peers()[0].prefixes_received, sp.peers()[0].routes_refused) == (1, 1),
                SESSION_TIMEOUT,
                "the default route learned, the /24 refused",
            )
            learned = sp.learned()
            assert [str(p) for p in learned] == ["0.0.0.0/0"]
            [route] = learned[ann("0.0.0.0/0").prefix]
            assert (route.peer, route.next_hop) == (TOR_V4, TOR_V4)
            stored, stale, refused = sp.received(TOR_V4)
            assert [str(r.prefix) for r in stored] == ["0.0.0.0/0"] and stale == []
            assert (refused.not_allowed, refused.over_limit) == (1, 0)
            assert dict(refused.samples) == {"192.0.2.0/24": "import-not-allowed"}
            assert sp.counters()["routes_refused_import"] == 1
            status = sp.peers()[0]
            assert status.graceful_restart == 0  # OpenBGPD: helper only
            wait_for(lambda: sp.end_of_rib_from_all(), ROUTE_TIMEOUT, "OpenBGPD's End-of-RIB")

            # Wider rules: the refused /24 must be sent again. We disable route refresh, so
            # the speaker restarts the session (ExaBGP closes a graceful-restart session
            # without a NOTIFICATION) and OpenBGPD takes our new connection at once.
            sp.set_import_config(
                ImportConfig(enabled=True, allow=(*policy.allow, PrefixRule(TEST_NET, 24, 24)))
            )
            wait_for(
                lambda: {str(p) for p in sp.learned()} == {"0.0.0.0/0", "192.0.2.0/24"},
                SESSION_TIMEOUT,
                "the /24 learned after the reset",
            )
            assert sp.peers()[0].routes_refused == 0
            assert ob.notifications(NODE_V4) == NO_NOTIFICATIONS
            assert ob.log().count("-> Established") == 2
            wait_for(lambda: sp.end_of_rib_from_all(), ROUTE_TIMEOUT, "OpenBGPD's End-of-RIB")

            learned_when_down.clear()
            ob.stop()  # a Cease to us, then gone
            wait_for(lambda: not established(sp, TOR_V4), ROUTE_TIMEOUT, "the session down")
            assert sp.learned() == {}
            status = sp.peers()[0]
            assert (status.prefixes_received, status.routes_stale) == (0, 0)
            assert sp.received(TOR_V4)[:2] == ([], [])
            # Gone in the very message that took the session down, not later.
            assert learned_when_down and all(
                (count, stale) == (0, 0) for _, count, stale in learned_when_down
            ), learned_when_down


def test_our_restart_keeps_what_openbgpd_sent_until_its_end_of_rib(monkeypatch):
    """RFC 4724 4.1, restarting side: when ExaBGP dies, the routes OpenBGPD sent stay
    (stale) although OpenBGPD advertises restart time 0 and no forwarding state (those
    describe OpenBGPD's restarts, not ours), and are fresh again after its End-of-RIB."""
    monkeypatch.setattr(process, "RESTART_BACKOFF_INITIAL", GR_RESTART_DELAY)
    with routers.tor_and_node("obgp-ourgr") as (tor, node):
        conf = routers.openbgpd_config(TOR_AS, {NODE_V4: NODE_AS}, networks=["0.0.0.0/0"])
        policy = ImportConfig(enabled=True, allow=(PrefixRule(ann("0.0.0.0/0").prefix, 0, 0),))
        box: list[Speaker] = []
        seen: list[tuple[int, int]] = []  # (learned, stale) at every change the speaker saw

        def notify() -> None:
            if box:
                seen.append((len(box[0].learned()), box[0].peers()[0].routes_stale))

        with (
            routers.openbgpd(tor, conf),
            speaker(bgp_config(default_peer()), node, import_config=policy, notify=notify) as sp,
        ):
            box.append(sp)
            sp.set_desired([ann("10.244.1.0/24")])
            wait_for(lambda: sp.end_of_rib_from_all() and sp.learned(), SESSION_TIMEOUT,
                     "the default route learned")
            first_pid = sp.exabgp_pid()
            seen.clear()
            os.kill(first_pid, signal.SIGKILL)
            wait_for(lambda: not established(sp, TOR_V4), ROUTE_TIMEOUT, "the crash noticed")
            assert sp.peers()[0].routes_stale == 1 and len(sp.learned()) == 1
            wait_for(
                lambda: sp.exabgp_pid() not in (None, first_pid) and sp.end_of_rib_from_all(),
                SESSION_TIMEOUT,
                "ExaBGP back and OpenBGPD's End-of-RIB",
            )
            status = sp.peers()[0]
            assert (status.prefixes_received, status.routes_stale) == (1, 0)
            assert [str(p) for p in sp.learned()] == ["0.0.0.0/0"]
            assert seen and all(learned == 1 for learned, _ in seen), seen


# ---------------------------------------------------------------- bugs these tests found
#
# Marked xfail(strict=True): they fail while the bug is there and turn the suite red
# (XPASS) once it is fixed, so that the marker is removed with the fix.

TEARDOWN_HOLD = 30.0  # seconds the speaker keeps a peer over max_prefixes down


def _over_the_limit(ob: routers.Openbgpd) -> bool:
    """The speaker closed the session after OpenBGPD sent more than max_prefixes."""
    return "Established ->" in ob.log()


def _teardown_policy() -> ImportConfig:
    return ImportConfig(
        enabled=True, allow=(PrefixRule(ann("0.0.0.0/0").prefix, 0, 32),), max_prefixes=1,
        max_prefixes_action="teardown", teardown_seconds=TEARDOWN_HOLD,
    )  # fmt: skip


@pytest.mark.parametrize("graceful_restart", [120, 0],
                         ids=["graceful restart (default)", "no graceful restart"])
def test_a_max_prefixes_teardown_sends_cease_maximum_number_of_prefixes(graceful_restart):
    """RFC 4486: a speaker that closes a session over its prefix limit MUST send Cease 1.

    Two bugs this found, now fixed: ExaBGP 5.0.15 closes a graceful-restart session
    silently whatever the teardown's code (bgpd's ExaBGP patch 2 sends the Cease for code 1),
    and the speaker used to stop ExaBGP before the teardown was acted on (it now waits for
    the session's "down")."""
    networks = ["192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24"]
    with routers.tor_and_node("obgp-cease") as (tor, node):
        conf = routers.openbgpd_config(TOR_AS, {NODE_V4: NODE_AS}, networks=networks)
        peer = default_peer(graceful_restart=graceful_restart)
        with (
            routers.openbgpd(tor, conf) as ob,
            speaker(bgp_config(peer), node, import_config=_teardown_policy()) as sp,
        ):
            sp.set_desired([ann("10.244.1.0/24")])
            wait_for(lambda: _over_the_limit(ob), SESSION_TIMEOUT, "the session closed by us")
            assert ob.notifications(NODE_V4)["received"] == 1, ob.log()[-1500:]
            assert "received notification: Cease, received max-prefix exceeded" in ob.log()


def test_a_peer_held_down_over_max_prefixes_says_so_not_that_its_md5_key_is_wrong():
    """While the speaker keeps a peer down over max_prefixes (ExaBGP paused for
    teardown_seconds), ``PeerStatus.last_error`` says so. It used to say "ExaBGP stopped",
    then, CONNECT_STALL seconds later, "no TCP connection for 6s (TCP MD5 in use: a wrong
    or missing key on either side looks like this)", with the right key on both sides."""
    with routers.tor_and_node("obgp-holddown") as (tor, node), tempfile.TemporaryDirectory() as t:
        conf = routers.openbgpd_config(
            TOR_AS, {NODE_V4: NODE_AS}, networks=["192.0.2.0/24", "198.51.100.0/24"],
            passwords={NODE_V4: "s3cret-Key"},
        )  # fmt: skip
        peer = default_peer(password_file=_password_file(t, "s3cret-Key"))
        with (
            routers.openbgpd(tor, conf) as ob,
            speaker(bgp_config(peer), node, import_config=_teardown_policy()) as sp,
        ):
            sp.set_desired([ann("10.244.1.0/24")])
            wait_for(lambda: _over_the_limit(ob), SESSION_TIMEOUT, "the session closed by us")
            closed = time.monotonic()
            wait_for(lambda: time.monotonic() - closed > CONNECT_STALL + 1, CONNECT_STALL + 2,
                     "past the connect-stall report")
            status = sp.peers()[0]
            assert status.state != "established"
            assert "max_prefixes" in status.last_error, status.last_error


def test_a_table_sent_as_packed_lines_arrives_whole_with_its_attributes_and_next_hops():
    """ExaBGP patch 13 on the wire to the strictest of our three peers: IPv4 /32s and /24s
    in the NLRI field, IPv6 /64s in MP_REACH_NLRI with our IPv6 next hop, one IPv4 session,
    attributes carried; then most withdrawn (text withdrawals behind packed announcements)
    and the rest announced again with other attributes."""
    rich = Attributes(communities=("64512:7",), med=9)  # communities: see the BIRD test
    hosts = [ann(f"10.244.{i // 250}.{i % 250 + 1}/32") for i in range(300)]
    nets = [ann(f"10.245.{i}.0/24", rich) for i in range(40)]
    v6 = [ann(f"fd10:244:{i:x}::/64", rich) for i in range(100)]
    with routers.tor_and_node("obgp-packed") as (tor, node):
        conf = routers.openbgpd_config(TOR_AS, {NODE_V4: NODE_AS}, dual_stack=(NODE_V4,))
        peer = default_peer(next_hop_ipv6=NODE_V6)
        with routers.openbgpd(tor, conf) as ob, speaker(bgp_config(peer), node) as sp:
            sp.set_desired(hosts + nets + v6)
            want = {str(a.prefix): (NODE_V6 if a.prefix.version == 6 else NODE_V4)
                    for a in hosts + nets + v6}
            wait_for(lambda: next_hops(ob, NODE_V4) == want, SESSION_TIMEOUT,
                     "every packed route at OpenBGPD with our next hops")
            assert sp.counters()["commands_packed"] >= 3  # one per shape: really packed
            got = ob.routes(NODE_V4)  # (its summary shows MED as "metric", no communities)
            for prefix in ("10.245.0.0/24", "10.245.39.0/24", "fd10:244:63::/64"):
                assert got[prefix]["metric"] == 9 and got[prefix]["aspath"] == str(NODE_AS)
            assert got["10.244.0.1/32"]["metric"] == 0
            sp.set_desired(hosts[:20] + [ann(str(a.prefix)) for a in nets])
            want = {str(a.prefix): NODE_V4 for a in hosts[:20] + nets}
            wait_for(lambda: next_hops(ob, NODE_V4) == want, ROUTE_TIMEOUT,
                     "the withdrawals, and the /24s again without their attributes")
            assert ob.routes(NODE_V4)["10.245.0.0/24"]["metric"] == 0
            assert sp.wait_synced(ROUTE_TIMEOUT)
            assert ob.notifications(NODE_V4) == NO_NOTIFICATIONS
