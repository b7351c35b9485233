"""ExaBGP JSON API messages (bgpd.speaker.messages), from lines recorded against FRR 8.4."""

import ipaddress
from pathlib import Path

from bgpd.model import Attributes
from bgpd.speaker.messages import (
    Notification,
    RoutesUpdate,
    Shutdown,
    StateChange,
    Unknown,
    parse_message,
)

SAMPLES = (Path(__file__).parent / "samples" / "exabgp_api.jsonl").read_text().splitlines()


def parsed():
    return [parse_message(line) for line in SAMPLES]


def test_every_recorded_line_is_understood():
    assert not [m for m in parsed() if isinstance(m, Unknown)]


def test_state_changes_name_the_peer_and_the_reason():
    states = [m for m in parsed() if isinstance(m, StateChange)]
    assert StateChange("10.0.0.1", "up") in states
    assert StateChange("fd00::1", "down", "closing connection") in states


def test_updates_carry_prefixes_next_hops_and_attributes():
    updates = [m for m in parsed() if isinstance(m, RoutesUpdate) and m.announced]
    v4 = next(u for u in updates if u.peer == "10.0.0.1")
    assert {str(r.prefix) for r in v4.announced} == {"172.16.0.0/24", "172.16.1.0/24"}
    route = v4.announced[0]
    assert route.next_hop == "10.0.0.1"
    assert route.attributes == Attributes(
        communities=("65000:100", "65000:200"), large_communities=("65000:1:1",), med=7
    )
    v6 = next(u for u in updates if u.peer == "fd00::1")
    assert [str(r.prefix) for r in v6.announced] == ["fd99::/64"]


def test_withdrawals_and_end_of_rib():
    msgs = parsed()
    withdrawn = {p for m in msgs if isinstance(m, RoutesUpdate) for p in m.withdrawn}
    assert withdrawn == {ipaddress.ip_network("172.16.1.0/24"), ipaddress.ip_network("fd99::/64")}
    assert sum(1 for m in msgs if isinstance(m, RoutesUpdate) and m.eor) == 2
    assert isinstance(msgs[-1], Shutdown)


def test_a_notification_names_code_and_subcode():
    line = (
        '{ "exabgp": "5.0.0", "time": 1.0, "host" : "vm", "pid" : 1, "ppid" : 1, "counter": 2, '
        '"type": "notification", "neighbor": { "address": { "local": "fd00::2", "peer": "fd00::1" }, '
        '"asn": { "local": 65001, "peer": 65000 }, "router-id": "10.0.0.2" , "direction": "receive", '
        '"notification": { "code": 6, "subcode": 2, "data": "0x", "message": "" }  } }'
    )  # recorded from FRR's `neighbor shutdown`, shortened
    assert parse_message(line) == Notification("fd00::1", "receive", 6, 2, "")


def test_garbage_is_unknown_not_an_exception():
    assert isinstance(parse_message("not json"), Unknown)
    assert isinstance(
        parse_message('{"type": "update", "neighbor": {"address": {"peer": "x"}, "message": 5}}'),
        Unknown,
    )


def test_odd_json_never_raises_and_says_why():
    lines = [
        '{"type": "state", "neighbor": []}',
        '{"type": "state", "neighbor": {"address": "10.0.0.1", "state": "up"}}',
        '{"type": "state", "neighbor": {"address": {"peer": ["10.0.0.1"]}, "state": "up"}}',
        '{"type": "state", "neighbor": {"address": {"peer": {"a": 1}}, "state": "up"}}',
        '{"type": "state", "neighbor": {"address": {"peer": "10.0.0.1"}, "state": {"x": 1}}}',
        '{"type": "notification", "neighbor": {"address": {"peer": "10.0.0.1"}, "notification": 3}}',
        '{"type": "notification", "neighbor": {"address": {"peer": "10.0.0.1"}, "message": 3}}',
        '{"type": "update", "neighbor": {"address": {"peer": "10.0.0.1"}, '
        '"message": {"update": {"announce": {"ipv4 unicast": {"bogus": ["10.1.0.0/24"]}}}}}}',
        '{"type": "update", "neighbor": {"address": {"peer": "10.0.0.1"}, '
        '"message": {"update": {"withdraw": {"ipv4 unicast": [{"no-nlri": 1}]}}}}}',
        '{"type": 5, "neighbor": null}',
        "[1, 2]",
        '"text"',
        "{",
    ]
    for line in lines:
        message = parse_message(line)
        assert isinstance(message, Unknown), line
        if line.startswith('{"type": "'):
            assert message.reason, line


def test_a_notification_code_that_is_not_a_number_does_not_fail_the_line():
    line = (
        '{"type": "notification", "neighbor": {"address": {"peer": "10.0.0.1"}, '
        '"direction": "receive", "notification": {"code": "x", "subcode": "2", "message": 7}}}'
    )
    assert parse_message(line) == Notification("10.0.0.1", "receive", -1, 2, "7")
