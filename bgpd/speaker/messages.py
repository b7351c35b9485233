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
    eor: str = ""  # the family of an End-of-RIB marker ("ipv4-unicast"), "" otherwise


@dataclass(frozen=True)
class Negotiated:
    """What ExaBGP and the peer agreed on (``api { negotiated; }``), sent before "up"."""

    peer: str
    families: tuple[str, ...]  # "ipv4-unicast", "ipv6-unicast", ... (ours: config names)
    message_size: int = 4096
    asn4: bool = True
    refresh: bool = False  # the peer accepts ROUTE-REFRESH


@dataclass(frozen=True)
class PeerOpen:
    """The peer's OPEN (``receive { open; }``): its graceful-restart capability."""

    peer: str
    graceful_restart: int | None  # restart time in seconds; None: not advertised
    restart_state: bool = False  # R bit: the peer has just restarted
    forwarding: tuple[str, ...] = ()  # families whose forwarding state it kept (F bit)
    route_refresh: bool = False


@dataclass(frozen=True)
class Shutdown:
    pass


@dataclass(frozen=True)
class Unknown:
    text: str = field(repr=False)
    reason: str = ""  # why it was not understood, when it looked like ours


Message = StateChange | Notification | RoutesUpdate | Negotiated | PeerOpen | Shutdown | Unknown

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


def family_name(text: str) -> str:
    """ExaBGP's "ipv4 unicast" or "ipv4/unicast" -> our "ipv4-unicast"."""
    return text.replace(" ", "-").replace("/", "-")


def _update(peer: str, body: dict) -> RoutesUpdate:
    message = body.get("message", {})
    if "eor" in message:
        eor = message["eor"]
        return RoutesUpdate(peer, eor=family_name(f"{eor['afi']} {eor['safi']}"))
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
    """One line from ExaBGP (not ``done``/``error``, which the channel consumes).

    Never raises: whatever cannot be understood comes back as Unknown, with the reason."""
    try:
        data = json.loads(line)
    except ValueError as exc:
        return Unknown(line, f"not JSON: {exc}")
    if not isinstance(data, dict):
        return Unknown(line, "not a JSON object")
    try:
        return _parse(line, data)
    except Exception as exc:  # odd JSON must never take the API connection down
        return Unknown(line, f"{type(exc).__name__}: {exc}")


def _parse(line: str, data: dict) -> Message:
    kind = data.get("type")
    neighbor = data.get("neighbor", {})
    if not isinstance(neighbor, dict):
        return Unknown(line, "neighbor is not an object")
    address = neighbor.get("address", {})
    if not isinstance(address, dict):
        return Unknown(line, "neighbor address is not an object")
    peer = address.get("peer", "")
    if not isinstance(peer, str):
        return Unknown(line, "peer address is not a string")
    if kind == "state" and peer:
        state, reason = neighbor.get("state", ""), neighbor.get("reason", "")
        if not isinstance(state, str) or not isinstance(reason, str):
            return Unknown(line, "state or reason is not a string")
        return StateChange(peer, state, reason)
    if kind == "notification" and not neighbor:
        return Shutdown() if data.get("notification") == "shutdown" else Unknown(line)
    if kind == "notification":
        note = neighbor.get("notification") or neighbor.get("message", {}).get("notification", {})
        if not isinstance(note, dict):
            return Unknown(line, "notification is not an object")
        return Notification(
            peer,
            str(neighbor.get("direction", "")),
            _int(note.get("code", 0)),
            _int(note.get("subcode", 0)),
            str(note.get("message", "")),
        )
    if kind == "update" and peer:
        try:
            return _update(peer, neighbor)
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            return Unknown(line, f"bad update: {type(exc).__name__}: {exc}")
    if kind == "negotiated" and peer:
        return _negotiated(peer, neighbor.get("negotiated"))
    if kind == "open" and peer:
        if neighbor.get("direction") != "receive":
            return Unknown(line)  # our own OPEN
        return _open(peer, neighbor.get("open"))
    return Unknown(line)


def _negotiated(peer: str, body: dict) -> Negotiated:
    families = tuple(family_name(f) for f in body["families"] if isinstance(f, str))
    return Negotiated(peer, families, _int(body.get("message_size", 4096)),
                      body.get("asn4") is True, body.get("refresh") in ("normal", "enhanced"))


def _open(peer: str, body: dict) -> PeerOpen:
    """Capabilities of a received OPEN are keyed by number; the names inside are ExaBGP's.

    ExaBGP 5.0 prints the graceful-restart flags under swapped labels (its graceful.py): a
    family listed with "restart" has the Forwarding bit, and "forwarding" in
    "restart-flags" is the Restart bit. Read them by what the bits are."""
    gr: int | None = None
    restart_state = False
    forwarding: list[str] = []
    refresh = False
    for cap in (body.get("capabilities") or {}).values():
        if not isinstance(cap, dict):
            continue
        name = cap.get("name")
        if name == "graceful restart":
            gr = _int(cap.get("time", 0))
            restart_state = "forwarding" in (cap.get("restart-flags") or ())
            flags = cap.get("address-family-flags") or {}
            forwarding = [family_name(f) for f, bits in flags.items() if "restart" in bits]
        elif name in ("route-refresh", "enhanced-route-refresh"):
            refresh = True
    return PeerOpen(peer, gr if gr is None or gr >= 0 else None, restart_state,
                    tuple(sorted(forwarding)), refresh)


def _int(value) -> int:
    """A code as ExaBGP sends it (an int, maybe a numeric string); -1 when it is neither."""
    if isinstance(value, bool):
        return -1
    if isinstance(value, int):
        return value
    try:
        return int(str(value))
    except ValueError:
        return -1
