"""ExaBGP patch 13: a table load handed over as packed addresses (see PATCHES.md).

Runs inside the ExaBGP process (``bgpd.speaker.exabgp_main`` applies it). The agent writes

    neighbor <peer> announce packed <ipv4|ipv6> <prefix length> <hex> <attributes>

where ``<hex>`` is the addresses of routes of that one length, each cut to the octets the
length covers, and ``<attributes>`` are the words of ``announce attributes`` (``next-hop``
first). ExaBGP parses the attributes once, and the routes stay one byte string until they
are cut into UPDATE messages: no per-route object, text or dictionary entry on the way.
The messages are byte for byte those ExaBGP's own ``Update.messages`` makes of the same
routes (tests/unit/test_speaker_packed.py compares them).
"""

from __future__ import annotations

import re

# One command's routes. The agent sends far fewer (MAX_PACKED_PER_COMMAND in routes.py);
# the bound keeps one line from holding the reactor for long whatever wrote it.
MAX_PACKED_ROUTES = 16_384
FAMILY_BITS = {"ipv4": 32, "ipv6": 128}
_V4_MULTICAST_TOP = bytes(1 if 224 <= b < 240 else 0 for b in range(256))  # first octets
_HEAD = re.compile(r"announce packed (ipv4|ipv6) (\d{1,3}) ([0-9a-f]+) (next-hop .+)\Z")


class PackedError(ValueError):
    """A packed command that cannot be taken as it is; the text says what is wrong."""


class Packed:
    """Routes of one family and prefix length sharing one set of attributes, as bytes."""

    __slots__ = ("afi_name", "bits", "addresses", "attribute_words", "count", "octets")

    def __init__(self, afi_name: str, bits: int, addresses: bytes, attribute_words: str):
        self.afi_name = afi_name
        self.bits = bits
        self.addresses = addresses
        self.attribute_words = attribute_words
        self.octets = (bits + 7) // 8
        self.count = len(addresses) // self.octets

    def first_prefix(self) -> str:
        """The first route as ExaBGP's parser reads a prefix (to parse the attributes with)."""
        import ipaddress

        width = FAMILY_BITS[self.afi_name] // 8
        raw = self.addresses[: self.octets] + bytes(width - self.octets)
        return f"{ipaddress.ip_address(raw)}/{self.bits}"

    def wire(self) -> bytes:
        """The routes as NLRI without path ids: length, address octets, one after another."""
        octets, count = self.octets, self.count
        step = 1 + octets
        out = bytearray(step * count)
        out[0::step] = bytes((self.bits,)) * count
        for j in range(octets):
            out[1 + j :: step] = self.addresses[j::octets]
        return bytes(out)


def _host_mask(bits: int) -> int:
    """The bits of an address's last covered octet that lie beyond the prefix length."""
    return (1 << (8 - bits % 8)) - 1 if bits % 8 else 0


def parse(command: str) -> Packed:
    """``announce packed ...`` (without the neighbor part) → Packed, or PackedError."""
    match = _HEAD.match(command)
    if match is None:
        raise PackedError("expected: announce packed <ipv4|ipv6> <length> <hex> next-hop ...")
    afi_name, bits_text, hex_text, words = match.groups()
    bits = int(bits_text)
    if not 1 <= bits <= FAMILY_BITS[afi_name]:
        raise PackedError(f"prefix length {bits} is not 1-{FAMILY_BITS[afi_name]} for {afi_name}")
    octets = (bits + 7) // 8
    if len(hex_text) % (2 * octets):
        raise PackedError(f"{len(hex_text)} hex digits are not whole {octets}-octet addresses")
    addresses = bytes.fromhex(hex_text)
    if len(addresses) // octets > MAX_PACKED_ROUTES:
        raise PackedError(f"{len(addresses) // octets} routes in one command (limit "
                          f"{MAX_PACKED_ROUTES})")
    mask = _host_mask(bits)
    if mask:
        last = addresses[octets - 1 :: octets]
        if last.translate(bytes(b & mask for b in range(256))).strip(b"\0"):
            raise PackedError(f"an address has bits set beyond /{bits}")
    if afi_name == "ipv4" and addresses[::octets].translate(_V4_MULTICAST_TOP).strip(b"\0"):
        # ExaBGP's own parser files these under IPv4 multicast: not this path's family
        raise PackedError("an IPv4 address is in 224.0.0.0/4 (multicast)")
    return Packed(afi_name, bits, addresses, words)


def _update_class():
    from exabgp.bgp.message import Action
    from exabgp.bgp.message.update import Update
    from exabgp.bgp.message.update.attribute.mprnlri import MPRNLRI
    from exabgp.bgp.message.update.nlri.nlri import NLRI
    from exabgp.logger import log
    from exabgp.protocol.family import AFI, SAFI

    HEADER = 19 + 4  # BGP header, then the withdrawn and attribute length fields

    class PackedUpdate(Update):
        """An UPDATE source like ExaBGP's ``Update``, for routes held as Packed bytes."""

        def __init__(self, packed: Packed, attributes, nexthop):
            Update.__init__(self, [], attributes)
            self.packed = packed
            self.afi = AFI.ipv4 if packed.afi_name == "ipv4" else AFI.ipv6
            self.safi = SAFI.unicast
            self.nexthop = nexthop

        def nlris_expanded(self) -> list:
            """The routes as ExaBGP's own NLRI objects (slow: for the rare fallbacks)."""
            wire, out = self.packed.wire(), []
            while wire:
                nlri, wire = NLRI.unpack_nlri(self.afi, self.safi, wire, Action.ANNOUNCE, False)
                nlri.nexthop = self.nexthop
                out.append(nlri)
            return out

        def messages(self, negotiated, include_withdraw=True):
            family = (self.afi, self.safi)
            if family not in negotiated.families:
                return  # as Update._split_nlris drops a family the session lacks
            if negotiated.addpath.send(*family):
                # bgpd never negotiates ADD-PATH; if a session ever did, ExaBGP's own
                # encoder decides what a path id is
                yield from Update(self.nlris_expanded(), self.attributes).messages(negotiated)
                return
            attr = self.attributes.pack(negotiated)
            wire = self.packed.wire()
            step = 1 + self.packed.octets
            room = negotiated.msg_size - HEADER - len(attr)
            if self.afi == AFI.ipv4 and self.nexthop.afi == AFI.ipv4:
                yield from self._native(wire, step, attr, room)
            else:
                yield from self._mp(wire, step, attr, room, negotiated)

        def _native(self, wire, step, attr, room):
            if room < step:
                log.critical(lambda: "attributes size is so large we can not even pack one NLRI",
                             "parser")
                return
            per = room - room % step
            head = Update.prefix(b"") + Update.prefix(attr)
            for start in range(0, len(wire), per):
                yield self._message(head + wire[start : start + per])

        def _mp(self, wire, step, attr, room, negotiated):
            reach = MPRNLRI(self.afi, self.safi, [])
            nexthop = self.nexthop.ton(negotiated, self.afi)
            header = self.afi.pack() + self.safi.pack() + bytes([len(nexthop)]) + nexthop + b"\0"
            if room <= 0 or reach._len(header + wire[:step]) > room:
                log.critical(lambda: "can not pack one NLRI in an MP_REACH_NLRI, not announcing it",
                             "parser")
                return
            # As many routes as fit even with a 4-octet attribute header, then more while
            # ExaBGP's own length rule allows (a round or two, near 255 octets)
            per = max(step, (room - 4 - len(header)) // step * step)
            while per + step <= len(wire) and reach._len(header + bytes(per + step)) <= room:
                per += step
            for start in range(0, len(wire), per):
                mp = reach._attribute(header + wire[start : start + per])
                yield self._message(Update.prefix(b"") + Update.prefix(attr + mp))

    return PackedUpdate


_PACKED_UPDATE = []


def packed_update_class():
    if not _PACKED_UPDATE:
        _PACKED_UPDATE.append(_update_class())
    return _PACKED_UPDATE[0]


def queue(outgoing, update) -> int:
    """Put ``update`` in one peer's outgoing RIB; returns the routes queued.

    Packed updates go out before the RIB's other changes, so they may be queued as such
    only while the RIB holds none (anything queued later is sent after them). Behind
    queued changes, their routes join the RIB one by one, in order, as ExaBGP's own path."""
    from exabgp.rib.change import Change

    if outgoing._new_nlri or outgoing._refresh_changes:
        for nlri in update.nlris_expanded():
            outgoing.add_to_rib(Change(nlri, update.attributes))
        return update.packed.count
    outgoing.__dict__.setdefault("bgpd_packed", []).append(update)
    return update.packed.count


def pending_with_packed(original):
    def pending(self):
        return bool(self.__dict__.get("bgpd_packed")) or original(self)

    pending.__wrapped__ = original
    return pending


_END = object()


def updates_packed_first(original):
    def updates(self, grouped):
        packed = self.__dict__.get("bgpd_packed") or []
        self.__dict__["bgpd_packed"] = []
        rest = original(self, grouped)
        # ExaBGP's generator takes its snapshot of the RIB at its first step: taken here, at
        # the same moment as the packed list's, so nothing queued between the two can be
        # sent ahead of what was queued before it.
        first = next(rest, _END)
        yield from packed
        if first is not _END:
            yield first
            yield from rest

    updates.__wrapped__ = original
    return updates


def command(api, reactor, service, line, use_json):
    """``neighbor <peer> announce packed ...``: one reactor step for the whole command."""
    from exabgp.bgp.message import Action
    from exabgp.reactor.api.command.limit import extract_neighbors, match_neighbors

    def callback():
        try:
            descriptions, text = extract_neighbors(line)
            peers = match_neighbors(reactor.peers(service), descriptions)
            neighbors = reactor.configuration.neighbors
            targets = [name for name in neighbors if name in peers]
            if len(targets) != 1:
                raise PackedError(f"a packed command names exactly one neighbor ({len(targets)} "
                                  "matched)")
            packed = parse(text)
            changes = api.api_attributes(
                f"announce attributes {packed.attribute_words} nlri {packed.first_prefix()}",
                peers)
            if len(changes) != 1:
                raise PackedError("its attributes could not be parsed")
            change = changes[0]
            if change.nlri.nexthop.SELF:
                raise PackedError("next-hop self is not taken in a packed command")
            neighbor = neighbors[targets[0]]
            update = packed_update_class()(packed, change.attributes, change.nlri.nexthop)
            if (update.afi, update.safi) not in neighbor.families():
                raise PackedError(f"{packed.afi_name} unicast is not configured for {targets[0]}")
            change.nlri.action = Action.ANNOUNCE
            count = queue(neighbor.rib.outgoing, update)
            api.log_message(f"{count} routes /{packed.bits} added to {targets[0]} (packed)")
            reactor.processes.answer_done(service)
        except (PackedError, ValueError, IndexError) as exc:
            api.log_failure(f"packed announcement refused: {exc}")
            reactor.processes.answer_error(service)
        yield True

    reactor.asynchronous.schedule(service, line, callback())
    return True


def apply() -> None:
    from exabgp.reactor.api.command.command import Command
    from exabgp.rib.outgoing import OutgoingRIB

    if hasattr(OutgoingRIB.pending, "__wrapped__"):
        return
    OutgoingRIB.pending = pending_with_packed(OutgoingRIB.pending)
    OutgoingRIB.updates = updates_packed_first(OutgoingRIB.updates)
    Command.register("announce packed")(command)
