"""Parse ExaBGP's JSON API messages (encoder json, version 5.0.0 format) into small records.

Pure: recorded samples in tests/unit/ exercise it without a running ExaBGP.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, field

from bgpd.model import Attributes, IPNetwork, LearnedRoute


@dataclass(frozen=True)
class StateChange:
    peer: str
    state: str  # "connected" | "up" | "down"
    reason: str = ""


@dataclass(frozen=True)
class Notification:
    peer: str
    direction: str  # "send" | "receive"
    code: int
    subcode: int
    message: str = ""


@dataclass(frozen=True)
class RoutesUpdate:
    peer: str
    announced: tuple[LearnedRoute, ...] = ()
    withdrawn: tuple[IPNetwork, ...] = ()
    eor: bool = False


@dataclass(frozen=True)
class Shutdown:
    pass


@dataclass(frozen=True)
class Unknown:
    text: str = field(repr=False)


Message = StateChange | Notification | RoutesUpdate | Shutdown | Unknown

_UNICAST = {"ipv4 unicast", "ipv6 unicast"}


def _communities(values: list) -> tuple[str, ...]:
    return tuple(sorted(":".join(str(part) for part in value) for value in values))


def parse_attributes(attribute: dict) -> Attributes:
    return Attributes(
        communities=_communities(attribute.get("community", [])),
        large_communities=_communities(attribute.get("large-community", [])),
        local_pref=attribute.get("local-preference"),
        med=attribute.get("med"),
    )


def _nlri_prefix(entry) -> IPNetwork:
    text = entry["nlri"] if isinstance(entry, dict) else entry
    return ipaddress.ip_network(text, strict=False)


def _update(peer: str, body: dict) -> RoutesUpdate:
    message = body.get("message", {})
    if "eor" in message:
        return RoutesUpdate(peer, eor=True)
    update = message.get("update", {})
    attributes = parse_attributes(update.get("attribute", {}))
    announced: dict[IPNetwork, LearnedRoute] = {}
    for family, by_next_hop in update.get("announce", {}).items():
        if family not in _UNICAST:
            continue
        for next_hop, entries in by_next_hop.items():
            # IPv6 routes come with a global and a link-local next hop, each listing the
            # same prefixes; the global one is the one a kernel route can use anywhere.
            link_local = ipaddress.ip_address(next_hop).is_link_local
            for entry in entries:
                prefix = _nlri_prefix(entry)
                if link_local and prefix in announced:
                    continue
                if (
                    prefix not in announced
                    or ipaddress.ip_address(announced[prefix].next_hop).is_link_local
                ):
                    announced[prefix] = LearnedRoute(peer, prefix, next_hop, attributes)
    withdrawn: list[IPNetwork] = []
    for family, entries in update.get("withdraw", {}).items():
        if family in _UNICAST:
            withdrawn.extend(_nlri_prefix(entry) for entry in entries)
    return RoutesUpdate(peer, tuple(announced.values()), tuple(withdrawn))


def parse_message(line: str) -> Message:
    """One line from ExaBGP (not ``done``/``error``, which the channel consumes)."""
    try:
        data = json.loads(line)
    except ValueError:
        return Unknown(line)
    if not isinstance(data, dict):
        return Unknown(line)
    kind = data.get("type")
    neighbor = data.get("neighbor", {})
    peer = neighbor.get("address", {}).get("peer", "")
    if kind == "state" and peer:
        return StateChange(peer, neighbor.get("state", ""), neighbor.get("reason", ""))
    if kind == "notification" and not neighbor:
        return Shutdown() if data.get("notification") == "shutdown" else Unknown(line)
    if kind == "notification":
        note = neighbor.get("notification") or neighbor.get("message", {}).get("notification", {})
        return Notification(
            peer,
            neighbor.get("direction", ""),
            int(note.get("code", 0)),
            int(note.get("subcode", 0)),
            str(note.get("message", "")),
        )
    if kind == "update" and peer:
        try:
            return _update(peer, neighbor)
        except (AttributeError, KeyError, TypeError, ValueError):
            return Unknown(line)
    return Unknown(line)
