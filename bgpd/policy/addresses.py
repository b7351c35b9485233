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
    value = v4_int(text)
    if value is not None:  # the common case, without ipaddress's string parser
        if value >> 24 in _V4_SPECIAL_TOP:
            why = _v4_unroutable(value)
            if why:
                raise _Invalid(f"{text} is {why}")
        return v4_host_network(value), text + "/32", ""
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


# ------------------------------------------------- the IPv4 fast path (a cold decision)
#
# A process's first decision parses every address once: through ipaddress that is about
# 20 us an address (string parser, then ip_network() formats and parses it again), most of
# a cold decision at 20,000 Services. The canonical dotted quad ("198.51.100.7": no
# leading zeros, no spaces, each part 0..255) is what the API server writes; exactly those
# strings take this path and give the same objects and texts. Anything else (IPv6, a
# malformed or non-canonical address) takes ipaddress's path and its error messages.

_OCTETS = {str(i): i for i in range(256)}  # only canonical octets: "7", never "07" or "+7"


def v4_int(text: str) -> int | None:
    """The integer of a canonical dotted-quad IPv4 address, else None (no exception)."""
    parts = text.split(".")
    if len(parts) != 4:
        return None
    octets = _OCTETS
    a = octets.get(parts[0])
    b = octets.get(parts[1])
    c = octets.get(parts[2])
    d = octets.get(parts[3])
    if a is None or b is None or c is None or d is None:
        return None
    return (a << 24) | (b << 16) | (c << 8) | d


# First octets of the addresses _v4_unroutable may refuse: only those are asked.
_V4_SPECIAL_TOP = frozenset({0, 127, 169, *range(224, 256)})


def _v4_unroutable(value: int) -> str:
    """``unroutable`` for an IPv4 address given as an integer (same order, same words)."""
    if value == 0:
        return "the unspecified address"
    top = value >> 24
    if top == 127:  # 127.0.0.0/8
        return "a loopback address"
    if value >> 16 == 0xA9FE:  # 169.254.0.0/16
        return "a link-local address"
    if top >> 4 == 0xE:  # 224.0.0.0/4
        return "a multicast address"
    if top >> 4 == 0xF:  # 240.0.0.0/4, 255.255.255.255 included
        return "a reserved address"
    return ""


_new = object.__new__
_IPv4Address = ipaddress.IPv4Address
_IPv4Network = ipaddress.IPv4Network


def _slow_v4_host_network(value: int) -> ipaddress.IPv4Network:
    return _IPv4Network(value)


class _HostsOf32:
    """hosts() of a /32, as IPv4Network.__init__ sets it (a new one-address list each
    call): a slotted object of 40 bytes instead of its lambda and closure cell (about 200),
    for every address the policy keeps (40,000 at 20,000 Services). Made without __init__
    (a Python call per address): see _fast_v4_host_network."""

    __slots__ = ("_value",)

    def __call__(self) -> list[ipaddress.IPv4Address]:
        return [_IPv4Address(self._value)]


_set_hosts_value = _HostsOf32._value.__set__  # type: ignore[attr-defined]


class _QuickHashV4Network(_IPv4Network):
    """An IPv4Network whose hash is one Python call instead of three (IPv4Network's calls
    int() on its address and on its netmask, each a Python __int__): hashing is most of
    indexing a table by prefix (100,000 routes in the speaker, every set of
    Announcements in the policy). The value is IPv4Network's for every IPv4 network
    (address ^ netmask is below 2**32, and such an int hashes to itself), so both kinds
    mix as dict keys and compare equal; repr is IPv4Network's too."""

    __slots__ = ()

    def __hash__(self) -> int:
        return self.network_address._ip ^ self.netmask._ip

    def __repr__(self) -> str:
        return f"IPv4Network({str(self)!r})"


def _fast_v4_host_network(value: int) -> ipaddress.IPv4Network:
    # What IPv4Network(value).__init__ leaves behind, without its ~10 Python calls: the
    # address, the shared /32 netmask, the prefix length, and hosts() of a /32.
    addr = _new(_IPv4Address)
    addr._ip = value
    net = _new(_QuickHashV4Network)
    net.network_address = addr
    net.netmask = _MASK32
    net._prefixlen = 32
    hosts = _new(_HostsOf32)
    _set_hosts_value(hosts, value)
    net.hosts = hosts
    return net


def _fast_path_works() -> bool:
    """The fast constructor relies on ipaddress internals: use it only where it builds
    exactly what the constructor builds (checked once, at import)."""
    try:
        for value in (0, 1, 0xC6336407, 0xFFFFFFFF):
            fast, slow = _fast_v4_host_network(value), _IPv4Network(value)
            if (fast != slow or hash(fast) != hash(slow) or str(fast) != str(slow)
                    or repr(fast) != repr(slow) or not isinstance(fast, _IPv4Network)
                    or vars(fast).keys() != vars(slow).keys()
                    or list(fast.hosts()) != list(slow.hosts())
                    or fast.broadcast_address != slow.broadcast_address
                    or fast.netmask is not slow.netmask):
                return False
        return True
    except Exception:  # noqa: BLE001 - another Python's internals: use the slow path
        return False


try:
    _MASK32 = _IPv4Network._make_netmask(32)[0]  # the shared, cached /32 netmask
except Exception:  # noqa: BLE001 - another Python's internals: use the slow path
    _MASK32 = None
v4_host_network = (_fast_v4_host_network if _MASK32 is not None and _fast_path_works()
                   else _slow_v4_host_network)
"""``IPv4Network(value)`` for a /32, about 4x faster."""
