"""The desired table grouped for a session's whole-view refresh (pure).

When a session comes up (a ToR rebooted, a new peer) it is sent everything. Resolving,
grouping and encoding 100,000 routes one by one took the driver about a second after
Established, while ExaBGP and the peer need under a tenth of one for the same routes
once they are packed (bench/bgp_convergence.py). A :class:`Snapshot` does the per-route
part once per desired set, before any session asks: routes grouped by what their
resolution and encoding depend on (IP version, prefix length, attributes, next hop), and
each group's addresses packed into one byte string. A refresh then costs a few
operations per group and a slice of bytes per command line.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from bgpd.model import Announcement, Attributes, IPNetwork
from bgpd.policy.attributes import BGP_MAX_MESSAGE, encoded_size
from bgpd.speaker.received import family
from bgpd.speaker.routes import (
    PACKED_MIN_PREFIXES,
    Command,
    DesiredIndex,
    PeerTarget,
    attribute_words,
    commands,
    pack_addresses,
    packable,
    packed_lines,
    resolve,
)


class Resolved(Sequence):
    """Routes of one resolved shape, as Announcements made only when read: a refresh's
    commands exist before their 100,000 announcements need to (when acknowledged)."""

    __slots__ = ("prefixes", "attributes", "next_hop")

    def __init__(self, prefixes: Sequence[IPNetwork], attributes: Attributes, next_hop):
        self.prefixes = prefixes
        self.attributes = attributes
        self.next_hop = next_hop

    def __len__(self) -> int:
        return len(self.prefixes)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return Resolved(self.prefixes[index], self.attributes, self.next_hop)
        return Announcement(self.prefixes[index], self.attributes, self.next_hop)

    def __iter__(self) -> Iterator[Announcement]:
        attributes, next_hop = self.attributes, self.next_hop
        return (Announcement(p, attributes, next_hop) for p in self.prefixes)


class _Group:
    __slots__ = ("version", "bits", "attributes", "next_hop", "prefixes", "_packed")

    def __init__(self, version: int, bits: int, attributes: Attributes, next_hop):
        self.version, self.bits = version, bits
        self.attributes, self.next_hop = attributes, next_hop
        self.prefixes: list[IPNetwork] = []
        self._packed: bytes | None = None

    def packed(self) -> bytes:
        """The group's addresses, each cut to the octets its length covers, in order."""
        if self._packed is None:
            self._packed = pack_addresses(self.prefixes, self.version, self.bits)
        return self._packed

    def order(self) -> tuple:
        return (self.version, self.bits, self.next_hop or "", repr(self.attributes))


class Snapshot:
    """One desired set (``index.source``) grouped by shape; see the module docstring."""

    def __init__(self, index: DesiredIndex):
        self.source = index.source
        self.by_prefix = index.by_prefix  # for membership only (what a refresh withdraws)
        by_shape: dict[tuple, _Group] = {}
        chosen = index.chosen
        for prefix, ann in index.by_prefix.items():
            if type(ann) is not Announcement:
                ann = chosen(prefix)  # several claims
            # keyed by the attributes' identity: the policy shares one object among the
            # routes of a shape, and hashing a whole Attributes per route cost 0.5 µs each
            key = (type(prefix), prefix.prefixlen, id(ann.attributes), ann.next_hop)
            try:
                by_shape[key].prefixes.append(prefix)
            except KeyError:
                group = by_shape[key] = _Group(prefix.version, key[1], ann.attributes,
                                               ann.next_hop)
                group.prefixes.append(prefix)
        merged: dict[tuple, _Group] = {}  # equal attributes held by distinct objects
        for group in by_shape.values():
            key = (group.version, group.bits, group.attributes, group.next_hop)
            if key in merged:
                merged[key].prefixes += group.prefixes
            else:
                merged[key] = group
        self.groups = sorted(merged.values(), key=_Group.order)

    def warm(self) -> None:
        """Pack every group that a packed command may carry, ahead of any session."""
        for group in self.groups:
            if len(group.prefixes) >= PACKED_MIN_PREFIXES:
                group.packed()

    def carries(self, prefix: IPNetwork, target: PeerTarget) -> bool:
        return prefix in self.by_prefix and family(prefix) in target.families

    def commands(self, peer_address: str, target: PeerTarget, packed: bool) -> Iterator[Command]:
        """Every route ``target`` should hold, as announce commands, group by group."""
        for group in self.groups:
            resolved = resolve(Announcement(group.prefixes[0], group.attributes, group.next_hop),
                               target)
            if resolved is None:
                continue  # the session does not carry this family
            routes = Resolved(group.prefixes, resolved.attributes, resolved.next_hop)
            if (packed and packable(len(routes), group.bits, resolved.next_hop)
                    and encoded_size(resolved.attributes, group.version) <= BGP_MAX_MESSAGE):
                words = ["next-hop", resolved.next_hop, *attribute_words(resolved.attributes)]
                for start, end, line in packed_lines(peer_address, group.version, group.bits,
                                                     group.packed(), len(routes), words):
                    yield Command(line, announced=routes[start:end])
            else:
                yield from commands(peer_address, list(routes), [])
