"""ExaBGP patch 13 (``announce packed``) against ExaBGP's own encoder, in process.

The reference is ExaBGP 5.0.15 itself: the same routes parsed by its ``announce
attributes`` parser and encoded by its ``Update.messages`` must give the same bytes."""

import ipaddress
import random
import tempfile
from types import SimpleNamespace

import pytest

from bgpd.speaker import exabgp_packed as xp
from bgpd.speaker.routes import pack_addresses

PEER = "10.0.0.1"
CONF = """
neighbor 10.0.0.1 {
    router-id 10.0.0.2;
    local-address 10.0.0.2;
    local-as 65001;
    peer-as 65000;
    adj-rib-out false;
    group-updates true;
    family { ipv4 unicast; ipv6 unicast; }
}
"""


@pytest.fixture(scope="module")
def exabgp():
    from exabgp.configuration.check import _negotiated
    from exabgp.configuration.configuration import Configuration
    from exabgp.environment import getenv
    from exabgp.logger import log
    from exabgp.reactor.api import API

    log.init(getenv())
    with tempfile.NamedTemporaryFile("w", suffix=".conf") as f:
        f.write(CONF)
        f.flush()
        config = Configuration([f.name])
        assert config.reload(), config.error
    name, neighbor = next(iter(config.neighbors.items()))
    api = API(SimpleNamespace())
    api.configuration = config
    return SimpleNamespace(api=api, name=name, neighbor=neighbor,
                           negotiated=_negotiated(neighbor), config=config)


def _networks(rng, version, bits, count):
    width = 32 if version == 4 else 128
    nets = set()
    while len(nets) < count:
        value = rng.getrandbits(bits) << (width - bits)
        if version == 4 and 224 <= value >> 24 < 240:
            continue  # ExaBGP files these under IPv4 multicast; the patch refuses them
        nets.add(ipaddress.ip_network((value, bits)))
    return sorted(nets, key=lambda n: int(n.network_address))


def _exabgps_own(exabgp, words, nets):
    from exabgp.bgp.message import Action
    from exabgp.bgp.message.update import Update

    changes = exabgp.api.api_attributes(
        f"announce attributes {words} nlri " + " ".join(map(str, nets)), [exabgp.name])
    for change in changes:
        change.nlri.action = Action.ANNOUNCE
    return list(Update([c.nlri for c in changes], changes[0].attributes)
                .messages(exabgp.negotiated))


def _packed_update(exabgp, text):
    packed = xp.parse(text)
    change, = exabgp.api.api_attributes(
        f"announce attributes {packed.attribute_words} nlri {packed.first_prefix()}",
        [exabgp.name])
    return xp.packed_update_class()(packed, change.attributes, change.nlri.nexthop)


@pytest.mark.parametrize("version, bits, next_hop", [
    (4, 32, "10.0.0.2"), (4, 24, "10.0.0.2"), (4, 19, "10.0.0.2"), (4, 32, "fd00::2"),
    (6, 128, "fd00::2"), (6, 64, "fd00::2"), (6, 57, "fd00::2"),
])
@pytest.mark.parametrize("count", [1, 7, 1000, 5000])
@pytest.mark.parametrize("msg_size", [4096, 65535])
def test_packed_messages_are_byte_for_byte_exabgps_own(exabgp, version, bits, next_hop,
                                                        count, msg_size):
    rng = random.Random(f"{version}{bits}{next_hop}{count}")
    nets = _networks(rng, version, bits, count)
    words = (f"next-hop {next_hop} origin igp med 7 community [ 65000:1 65000:2 ] "
             "as-path [ 65001 65001 ]")
    hexed = pack_addresses(nets, version, bits).hex()
    exabgp.negotiated.msg_size = msg_size
    expected = _exabgps_own(exabgp, words, nets)
    assert expected  # the comparison is not between two empty lists
    update = _packed_update(exabgp, f"announce packed ipv{version} {bits} {hexed} {words}")
    assert list(update.messages(exabgp.negotiated)) == expected
    assert [n.prefix() for n in update.nlris_expanded()] == [str(n) for n in nets]


def test_address_packing_is_the_addresses_packed_form_cut_to_the_length():
    rng = random.Random(3)
    for version, bits in [(4, 32), (4, 24), (4, 9), (6, 128), (6, 48)]:
        nets = _networks(rng, version, bits, 50)
        octets = (bits + 7) // 8
        assert pack_addresses(nets, version, bits) == b"".join(
            n.network_address.packed[:octets] for n in nets)


@pytest.mark.parametrize("text, reason", [
    ("announce packed ipv4 33 0a000001 next-hop 10.0.0.2", "prefix length 33"),
    ("announce packed ipv6 0 next-hop fd00::2", "expected"),
    ("announce packed ipv4 24 0a0000 0a next-hop 10.0.0.2", "expected"),
    ("announce packed ipv4 24 0a00000a next-hop 10.0.0.2", "whole 3-octet"),
    ("announce packed ipv4 23 0a0001 next-hop 10.0.0.2", "beyond /23"),
    ("announce packed ipv4 32 e0000001 next-hop 10.0.0.2", "multicast"),
    ("announce packed ipv4 32 0A000001 next-hop 10.0.0.2", "expected"),
    ("announce packed ipv4 32 0a000001", "expected"),
    ("announce packed ipv4 8 " + "0a" * (xp.MAX_PACKED_ROUTES + 1) + " next-hop 10.0.0.2",
     "limit"),
], ids=["length over the family", "no addresses", "two hex words", "not whole addresses",
        "host bits", "multicast", "upper-case hex", "no attributes", "too many routes"])
def test_a_malformed_packed_command_is_refused_with_the_reason(text, reason):
    with pytest.raises(xp.PackedError, match=reason):
        xp.parse(text)


class _RIB:
    """Enough of ExaBGP's OutgoingRIB for queue(): what it was given, in order."""

    def __init__(self, pending=False):
        self._new_nlri = {"x": 1} if pending else {}
        self._refresh_changes = []
        self.added = []

    def add_to_rib(self, change):
        self.added.append(str(change.nlri))


def test_packed_routes_queue_as_one_entry_unless_changes_wait_ahead_of_them(exabgp):
    update = _packed_update(exabgp, "announce packed ipv4 24 0a01000a0200 next-hop 10.0.0.2")
    idle, busy = _RIB(), _RIB(pending=True)
    assert xp.queue(idle, update) == 2 and idle.bgpd_packed == [update] and not idle.added
    # behind queued changes they join the RIB route by route, so nothing overtakes them
    assert xp.queue(busy, update) == 2 and "bgpd_packed" not in vars(busy)
    assert busy.added == ["10.1.0.0/24 next-hop 10.0.0.2", "10.2.0.0/24 next-hop 10.0.0.2"]


def test_the_rib_sends_packed_routes_before_changes_queued_after_them(exabgp):
    from exabgp.bgp.message import Action
    from exabgp.bgp.message.update import Update
    from exabgp.rib.outgoing import OutgoingRIB

    xp.apply()
    xp.apply()  # once only
    assert not hasattr(OutgoingRIB.pending.__wrapped__, "__wrapped__")
    rib = OutgoingRIB(False, [(1, 1)])
    assert not rib.pending()
    update = _packed_update(exabgp, "announce packed ipv4 24 0a0100 next-hop 10.0.0.2")
    xp.queue(rib, update)
    assert rib.pending()
    change, = exabgp.api.api_attributes("announce attributes next-hop 10.0.0.2 nlri "
                                        "10.1.0.0/24", [exabgp.name])
    change.nlri.action = Action.WITHDRAW
    rib.add_to_rib(change)  # withdrawn after it was announced: must go out after
    sent = list(rib.updates(True))
    assert sent[0] is update and isinstance(sent[1], Update) and len(sent) == 2
    assert not rib.pending() and list(rib.updates(True)) == []


def test_exabgp_dispatches_our_lines_to_the_packed_command():
    from exabgp.reactor.api import API
    from exabgp.reactor.api.command.command import Command

    xp.apply()
    seen = []
    api = SimpleNamespace(functions=Command.functions,
                          callback={"text": {**Command.callback["text"],
                                             "announce packed": lambda *a: seen.append(a[3])}})
    line = (f"neighbor {PEER} announce packed ipv4 32 0a000001 next-hop 10.0.0.2 origin igp "
            "med 5 local-preference 100 community [ 65000:1 ] large-community [ 1:2:3 ] "
            "as-path [ 65001 ] extended-community [ bandwidth:0:1000 ]")
    assert API.response(api, None, None, line, False) is None
    assert seen == [line]
