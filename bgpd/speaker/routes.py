"""What each peer should be sent, the diff against what it has, and ExaBGP command lines (pure).

ExaBGP runs one reactor step per prefix of a command, but parses and acknowledges per
command, so many prefixes that share attributes and next hop go into one
``announce attributes ... nlri P1 P2 ...`` line.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import operator
import re
import struct
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace

from bgpd.model import Announcement, Attributes, DesiredSet, IPNetwork
from bgpd.policy.attributes import BGP_MAX_MESSAGE, encoded_size
from bgpd.speaker.received import family

# Prefixes per command line. Larger lines cost ExaBGP nothing more per prefix and save a
# parse + ack round per line; the line stays far below ExaBGP's 1 MiB command limit.
MAX_PREFIXES_PER_COMMAND = 1000
# ``announce packed`` (ExaBGP patch 13, PATCHES.md): routes of one prefix length and one set
# of attributes as hex addresses, never made into per-route text or objects on either side.
# Groups smaller than this stay readable ``announce attributes`` lines (single changes, the
# ones an operator reads in a debug log); larger ones go this many to a line (32 KiB of hex
# for /32s, far below ExaBGP's 1 MiB command limit and its own per-command bound).
PACKED_COMMAND = " announce packed "
PACKED_MIN_PREFIXES = 16
MAX_PACKED_PER_COMMAND = 4096
_SAFE_LINE = re.compile(r"[0-9A-Za-z:./\[\] -]+")  # printable, one line
log = logging.getLogger("bgpd.speaker")
NEXT_HOP_SELF = "self"

View = dict[IPNetwork, Announcement]


@dataclass(frozen=True)
class PeerTarget:
    """The facts about one session that shape what it is sent."""

    address: str
    ibgp: bool
    local_address: str | None
    families: tuple[str, ...] = ("ipv4-unicast", "ipv6-unicast")
    next_hop_ipv6: str | None = None  # for IPv6 prefixes when the session runs over IPv4
    local_asn: int = 0  # ours: what a less-preferred announcement repeats in its AS path

    @functools.cached_property
    def local_version(self) -> int | None:
        """4 or 6 for ``local_address``: parsed once, not once per route."""
        return ipaddress.ip_address(self.local_address).version if self.local_address else None


@dataclass(frozen=True)
class Command:
    """One API line and the announcements it changes, so its ack can be recorded.

    A Command with ``refused`` set and no line is not sent: those announcements cannot be
    (their attributes do not fit one BGP message), and the writer records why."""

    line: str
    announced: Sequence[Announcement] = ()  # a tuple, or a snapshot's lazy Resolved
    withdrawn: Sequence[Announcement] = ()
    refused: tuple[Announcement, ...] = ()

    @property
    def is_packed(self) -> bool:
        """An ``announce packed`` line (its third and fourth words)."""
        return self.line.split(" ", 4)[2:4] == ["announce", "packed"]


def _next_hop_for(ann: Announcement, target: PeerTarget) -> str:
    if ann.next_hop:
        return ann.next_hop
    # An explicit next hop equal to the session's local address is what "self" means, and
    # it spares ExaBGP its slow "self" path (a deepcopy per route, see BASELINES.md).
    if target.local_address and target.local_version == ann.prefix.version:
        return target.local_address
    if ann.prefix.version == 6 and target.next_hop_ipv6:
        return target.next_hop_ipv6
    return NEXT_HOP_SELF


def resolve(ann: Announcement, target: PeerTarget) -> Announcement | None:
    """What ``target`` is sent for ``ann``: None if the session does not carry its family;
    otherwise the next hop resolved, and LOCAL_PREF kept only on iBGP sessions (RFC 4271
    5.1.5: it is not sent to eBGP peers)."""
    if family(ann.prefix) not in target.families:
        return None
    attrs = ann.attributes
    if attrs.prepend:
        # Less preferred: towards eBGP peers a longer AS path (ours repeated); towards iBGP
        # peers, where our ASN in the path would look like a loop, the lowest local pref.
        attrs = (replace(attrs, prepend=0, local_pref=0) if target.ibgp else
                 replace(attrs, prepend=0, as_path=(target.local_asn,) * (1 + attrs.prepend)))
    if not target.ibgp and attrs.local_pref is not None:
        attrs = replace(attrs, local_pref=None)
    return Announcement(ann.prefix, attrs, _next_hop_for(ann, target))


def _sort_key(ann: Announcement) -> tuple:
    return (ann.next_hop or "", repr(ann.attributes))


# An index change touching more routes than this (and than half the index) is reported as
# "everything changed" rather than as the set of its prefixes.
EVERYTHING_CHANGED_MIN = 1000


class _Claims(set):
    """Two or more announcements of one prefix (which the policy should not produce)."""

    __slots__ = ()


class DesiredIndex:
    """The desired set indexed by prefix, updated by set difference so that one changed
    route out of 100,000 costs microseconds, not a rebuild.

    Two claims on one prefix (which the policy should not produce) resolve to the first in
    a fixed order, so the outcome never depends on set iteration order.
    """

    def __init__(self) -> None:
        self.source: frozenset[Announcement] = frozenset()
        # One claim is held as itself (no set per prefix, no hash of an Announcement per
        # route: that was most of indexing 100,000 routes); several as a _Claims set.
        self.by_prefix: dict[IPNetwork, Announcement | _Claims] = {}

    def update(self, desired: frozenset[Announcement]) -> set[IPNetwork] | None:
        """Adopt ``desired``; returns the prefixes whose claims changed, or None when the
        change is most of the set (the caller compares everything: listing 100,000
        changed prefixes cost as much as indexing them)."""
        if desired is self.source:
            return set()
        delta = desired.delta_from(self.source) if isinstance(desired, DesiredSet) else None
        if delta is not None:
            added, removed = delta  # the agent's own change: no whole-set comparison
        elif not self.source:
            added, removed = desired, ()
        else:
            added, removed = desired - self.source, self.source - desired
        by_prefix = self.by_prefix
        for ann in removed:
            claims = by_prefix.get(ann.prefix)
            if type(claims) is _Claims:
                claims.discard(ann)
                if len(claims) == 1:
                    by_prefix[ann.prefix] = next(iter(claims))
            elif claims is not None and claims == ann:
                del by_prefix[ann.prefix]
        for ann in added:
            claims = by_prefix.setdefault(ann.prefix, ann)
            if claims is not ann:
                self.add_claim(claims, ann)
        self.source = desired
        if len(added) + len(removed) > max(EVERYTHING_CHANGED_MIN, len(by_prefix) // 2):
            return None
        return {a.prefix for a in added} | {a.prefix for a in removed}

    def add_claim(self, claims: Announcement | _Claims, ann: Announcement) -> None:
        """Record ``ann`` as one more claim on a prefix already held by ``claims``."""
        if type(claims) is _Claims:
            claims.add(ann)
        elif claims != ann:
            self.by_prefix[ann.prefix] = _Claims((claims, ann))

    def adopt(self, desired: frozenset[Announcement],
              by_prefix: dict[IPNetwork, Announcement | _Claims]) -> None:
        """Take ``by_prefix``, built from ``desired`` by someone else's pass (see
        Snapshot.indexing), as this empty index's own."""
        assert not self.by_prefix, "adopt() fills an empty index only"
        self.source, self.by_prefix = desired, by_prefix

    def claims(self, prefix: IPNetwork) -> frozenset[Announcement]:
        found = self.by_prefix.get(prefix)
        if found is None:
            return frozenset()
        return frozenset(found) if type(found) is _Claims else frozenset((found,))

    def chosen(self, prefix: IPNetwork) -> Announcement | None:
        claims = self.by_prefix.get(prefix)
        if type(claims) is _Claims:
            return min(claims, key=_sort_key)
        return claims

    def view(self, target: PeerTarget, prefixes: Iterable[IPNetwork] | None = None) -> View:
        """``target``'s routes for ``prefixes`` (all by default)."""
        out: View = {}
        # What resolve() makes of a route depends only on its attributes, next hop and IP
        # version: resolved once per such shape, not once per route (100,000 routes share
        # a handful of shapes).
        shapes: dict[tuple, tuple[Attributes, str] | None] = {}
        for prefix in self.by_prefix if prefixes is None else prefixes:
            ann = self.chosen(prefix)
            if ann is None:
                continue
            key = (ann.attributes, ann.next_hop, prefix.version)
            try:
                shape = shapes[key]
            except KeyError:
                resolved = resolve(ann, target)
                shape = shapes[key] = (None if resolved is None
                                       else (resolved.attributes, resolved.next_hop))
            if shape is not None:
                out[prefix] = Announcement(prefix, shape[0], shape[1])
        return out


def peer_view(announcements: Iterable[Announcement], target: PeerTarget) -> View:
    """The routes ``target`` should hold for ``announcements``."""
    index = DesiredIndex()
    index.update(frozenset(announcements))
    return index.view(target)


def diff_prefixes(
    desired: Mapping[IPNetwork, Announcement],
    current: Mapping[IPNetwork, Announcement],
    prefixes: Iterable[IPNetwork],
):
    """Like :func:`diff`, restricted to ``prefixes`` (those known to have changed)."""
    to_announce, to_withdraw = [], []
    for prefix in prefixes:
        want, have = desired.get(prefix), current.get(prefix)
        if want is not None and want != have:
            to_announce.append(want)
        elif want is None and have is not None:
            to_withdraw.append(have)
    return to_announce, to_withdraw


def diff(desired: Mapping[IPNetwork, Announcement], current: Mapping[IPNetwork, Announcement]):
    """``(to_announce, to_withdraw)``: changed or new routes, and routes no longer wanted."""
    to_announce = [a for p, a in desired.items() if current.get(p) != a]
    to_withdraw = [a for p, a in current.items() if p not in desired]
    return to_announce, to_withdraw


def attribute_words(attrs: Attributes) -> list[str]:
    words = ["origin", "igp"]
    if attrs.med is not None:
        words += ["med", str(attrs.med)]
    if attrs.local_pref is not None:
        words += ["local-preference", str(attrs.local_pref)]
    if attrs.communities:
        words += ["community", "[", *attrs.communities, "]"]
    if attrs.large_communities:
        words += ["large-community", "[", *attrs.large_communities, "]"]
    if attrs.as_path:
        words += ["as-path", "[", *map(str, attrs.as_path), "]"]
    if attrs.link_bandwidth is not None:
        # The link-bandwidth extended community (non-transitive, 0x40 0x04); the AS part
        # is informational: 0 here.
        words += ["extended-community", "[", f"bandwidth:0:{attrs.link_bandwidth}", "]"]
    return words


def _prefix_order(ann: Announcement) -> tuple[int, int]:
    return int(ann.prefix.network_address), ann.prefix.prefixlen


def _grouped(routes: Iterable[Announcement]) -> dict[tuple, list[Announcement]]:
    groups: dict[tuple, list[Announcement]] = {}
    for ann in routes:
        groups.setdefault((ann.prefix.version, ann.next_hop, ann.attributes), []).append(ann)
    return groups


def safe_line(line: str) -> bool:
    if _SAFE_LINE.fullmatch(line):
        return True
    # The policy never lets such text through; if it ever did, one API line must not
    # become two commands.
    log.error("refusing an ExaBGP command with unexpected characters: %r", line[:200])
    return False


# An address's integer (either family), read straight from the object: int() on 100,000
# addresses cost three times as much as the packing itself. ``_ip`` is where CPython's
# ipaddress has kept it since 3.3; tests/unit/test_speaker_packed.py compares with
# ``.packed``.
_ADDRESS_INT = operator.attrgetter("network_address._ip")


def pack_addresses(prefixes: Sequence[IPNetwork], version: int, bits: int) -> bytes:
    """``prefixes``' network addresses, each cut to the octets ``bits`` cover."""
    return pack_ints(list(map(_ADDRESS_INT, prefixes)), version, bits)


def pack_ints(addresses: Sequence[int], version: int, bits: int) -> bytes:
    """Network addresses given as integers, each cut to the octets ``bits`` cover."""
    octets = (bits + 7) // 8
    if version == 6:
        return b"".join([a.to_bytes(16, "big")[:octets] for a in addresses])
    whole = struct.pack(f">{len(addresses)}I", *addresses)
    if octets == 4:
        return whole
    out = bytearray(octets * len(addresses))
    for j in range(octets):
        out[j::octets] = whole[j::4]
    return bytes(out)


def packable(count: int, bits: int, next_hop: str) -> bool:
    """Whether ``count`` routes of one length, attributes and next hop go packed."""
    return count >= PACKED_MIN_PREFIXES and bits > 0 and next_hop != NEXT_HOP_SELF


def packed_lines(peer_address: str, version: int, bits: int, addresses: bytes, count: int,
                 words: list[str]) -> Iterator[tuple[int, int, str]]:
    """``(start, end, line)``: the packed commands for ``count`` routes whose addresses are
    ``addresses`` (as pack_addresses makes them), MAX_PACKED_PER_COMMAND a line."""
    head = f"neighbor {peer_address}{PACKED_COMMAND}ipv{version} {bits} "
    tail = " " + " ".join(words)
    octets = (bits + 7) // 8
    for start in range(0, count, MAX_PACKED_PER_COMMAND):
        end = min(start + MAX_PACKED_PER_COMMAND, count)
        line = f"{head}{addresses[start * octets : end * octets].hex()}{tail}"
        if safe_line(line):
            yield start, end, line


def _packed_commands(peer_address: str, version: int, next_hop: str, group: list[Announcement],
                     words: list[str], out: list[Command]) -> list[Announcement]:
    """Packed lines for the runs of one prefix length in ``group`` (sorted) that are large
    enough; returns what is left for text lines."""
    by_length: dict[int, list[Announcement]] = {}
    for ann in group:
        by_length.setdefault(ann.prefix.prefixlen, []).append(ann)
    rest: list[Announcement] = []
    for bits, same in by_length.items():
        if not packable(len(same), bits, next_hop):
            rest += same
            continue
        addresses = pack_addresses([a.prefix for a in same], version, bits)
        for start, end, line in packed_lines(peer_address, version, bits, addresses,
                                             len(same), words):
            out.append(Command(line, announced=tuple(same[start:end])))
    if len(rest) == len(group):
        return group  # nothing packed: as sorted
    rest.sort(key=_prefix_order)
    return rest


def commands(
    peer_address: str,
    to_announce: Iterable[Announcement],
    to_withdraw: Iterable[Announcement],
    max_per_command: int = MAX_PREFIXES_PER_COMMAND,
    packed: bool = False,
) -> list[Command]:
    """Command lines for one peer: announcements first (make before break), then withdrawals.

    ``packed``: large groups of announcements go as ``announce packed`` lines (ExaBGP with
    bgpd's patch 13 only)."""
    out: list[Command] = []
    for action, routes in (("announce", to_announce), ("withdraw", to_withdraw)):
        # Sorted so the same change always gives the same lines (tests, logs, golden files).
        groups = sorted(
            _grouped(routes).items(), key=lambda kv: (kv[0][0], kv[0][1], repr(kv[0][2]))
        )
        for (version, next_hop, attrs), group in groups:
            group.sort(key=_prefix_order)
            if action == "announce" and encoded_size(attrs, version) > BGP_MAX_MESSAGE:
                # The policy never lets such attributes through; if it ever did, ExaBGP
                # would acknowledge them and then drop the route (or reset the session).
                out.append(Command("", refused=tuple(group)))
                continue
            words = ["next-hop", next_hop]
            if action == "announce":
                words += attribute_words(attrs)
                if packed and len(group) >= PACKED_MIN_PREFIXES:
                    group = _packed_commands(peer_address, version, next_hop, group, words,
                                             out)
            head = f"neighbor {peer_address} {action} attributes {' '.join(words)} nlri "
            for start in range(0, len(group), max_per_command):
                chunk = tuple(group[start : start + max_per_command])
                line = head + " ".join(str(a.prefix) for a in chunk)
                if not safe_line(line):
                    continue
                if action == "announce":
                    out.append(Command(line, announced=chunk))
                else:
                    out.append(Command(line, withdrawn=chunk))
    return out


TOO_BIG = f"its attributes do not fit one {BGP_MAX_MESSAGE}-byte BGP message"


def eor_command(peer_address: str, family: str) -> Command:
    afi = "ipv4" if family == "ipv4-unicast" else "ipv6"
    return Command(f"neighbor {peer_address} announce eor {afi} unicast")
