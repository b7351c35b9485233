"""Parse and vet addresses taken from Kubernetes objects: never raise, always say why."""

from __future__ import annotations

import ipaddress
from functools import lru_cache

from bgpd.model import IPNetwork
from bgpd.values import is_plain_address

# Parsing dominates a full decision over 20,000 Services; objects repeat across decisions.
# Only addresses that parse are cached (a failure raises, which lru_cache never keeps), and
# nothing longer than an address is looked up: strings a tenant writes and deletes again
# cannot pile up here. Bounded: about 200 bytes an entry, 13 MB when full.
_PARSE_CACHE_SIZE = 1 << 16
_MAX_TEXT = 64  # "ffff:ffff:...:255.255.255.255/128" is 49 characters


class _Invalid(ValueError):
    pass


def host_prefix(text: object) -> tuple[IPNetwork | None, str, str]:
    """``"198.51.100.7"`` -> (198.51.100.7/32, "198.51.100.7/32", ""); bad -> (None, "", why).

    The canonical text is the policy's dictionary key: str hashes are cached, while
    ``ipaddress`` objects recompute theirs in Python on every lookup.
    """
    if not isinstance(text, str):
        return None, "", f"{text!r} is not a string"
    try:
        return _host_prefix(text if len(text) <= _MAX_TEXT else _too_long(text))
    except _Invalid as exc:
        return None, "", str(exc)


def _too_long(text: str) -> str:
    raise _Invalid(f"a {len(text)}-character string is not an IP address")


@lru_cache(maxsize=_PARSE_CACHE_SIZE)
def _host_prefix(text: str) -> tuple[IPNetwork, str, str]:
    text = text.strip()
    why = not_plain(text)
    if why:
        raise _Invalid(why)
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        raise _Invalid(f"{text!r} is not an IP address") from None
    why = unroutable(addr)
    if why:
        raise _Invalid(f"{addr} is {why}")
    net = ipaddress.ip_network(addr)
    return net, str(net), ""


def cidr(text: object) -> tuple[IPNetwork | None, str, str]:
    """A node's pod CIDR: a network, strictly written, and routable."""
    if not isinstance(text, str):
        return None, "", f"{text!r} is not a string"
    try:
        return _cidr(text if len(text) <= _MAX_TEXT else _too_long(text))
    except _Invalid as exc:
        return None, "", str(exc)


@lru_cache(maxsize=4096)
def _cidr(text: str) -> tuple[IPNetwork, str, str]:
    text = text.strip()
    why = not_plain(text)
    if why:
        raise _Invalid(why)
    try:
        net = ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        raise _Invalid(f"{text!r} is not a CIDR prefix ({exc})") from None
    if net.prefixlen == 0:
        raise _Invalid(f"{net} covers every address")
    why = unroutable(net.network_address)
    if why:
        raise _Invalid(f"{net} is {why}")
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
