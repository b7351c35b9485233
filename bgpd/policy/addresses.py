"""Parse and vet addresses taken from Kubernetes objects: never raise, always say why."""

from __future__ import annotations

import ipaddress
from functools import lru_cache

from bgpd.model import IPNetwork
from bgpd.values import is_plain_address

# Parsing dominates a full decision over 20,000 Services; objects repeat across decisions.
_PARSE_CACHE_SIZE = 1 << 17


def host_prefix(text: object) -> tuple[IPNetwork | None, str, str]:
    """``"198.51.100.7"`` -> (198.51.100.7/32, "198.51.100.7/32", ""); bad -> (None, "", why).

    The canonical text is the policy's dictionary key: str hashes are cached, while
    ``ipaddress`` objects recompute theirs in Python on every lookup.
    """
    if not isinstance(text, str):
        return None, "", f"{text!r} is not a string"
    return _host_prefix(text)


@lru_cache(maxsize=_PARSE_CACHE_SIZE)
def _host_prefix(text: str) -> tuple[IPNetwork | None, str, str]:
    text = text.strip()
    why = not_plain(text)
    if why:
        return None, "", why
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None, "", f"{text!r} is not an IP address"
    why = unroutable(addr)
    if why:
        return None, "", f"{addr} is {why}"
    net = ipaddress.ip_network(addr)
    return net, str(net), ""


def cidr(text: object) -> tuple[IPNetwork | None, str, str]:
    """A node's pod CIDR: a network, strictly written, and routable."""
    if not isinstance(text, str):
        return None, "", f"{text!r} is not a string"
    return _cidr(text)


@lru_cache(maxsize=4096)
def _cidr(text: str) -> tuple[IPNetwork | None, str, str]:
    text = text.strip()
    why = not_plain(text)
    if why:
        return None, "", why
    try:
        net = ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        return None, "", f"{text!r} is not a CIDR prefix ({exc})"
    if net.prefixlen == 0:
        return None, "", f"{net} covers every address"
    why = unroutable(net.network_address)
    if why:
        return None, "", f"{net} is {why}"
    return net, str(net), ""


def not_plain(text: str) -> str:
    """Why ``text`` is not a plain address or prefix (see values.is_plain_address), or ""."""
    if not is_plain_address(text):
        return f"{text[:60]!r} is not a plain IP address (only digits, ':', '.', '/')"
    return ""


def unroutable(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """Why an address must never be announced, or "" when it may be."""
    if addr.is_unspecified:
        return "the unspecified address"
    if addr.is_loopback:
        return "a loopback address"
    if addr.is_link_local:
        return "a link-local address"
    if addr.is_multicast:
        return "a multicast address"
    if addr.version == 4 and (addr in _V4_RESERVED or addr == _V4_BROADCAST):
        return "a reserved address"
    return ""


_V4_RESERVED = ipaddress.ip_network("240.0.0.0/4")
_V4_BROADCAST = ipaddress.ip_address("255.255.255.255")
