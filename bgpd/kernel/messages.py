"""Netlink route messages: the wire form of a route, encoding and fast decoding.

A route is handled here as a ``key`` and a ``value`` made of plain tuples and bytes so that
100,000 of them can be diffed and encoded in well under a second:

* key   ``(family, dst_bytes, dst_len, metric)`` -- what the kernel uses to tell routes of
  one table apart (we never set TOS or a source prefix);
* value ``(rtn_type, nexthops)`` with nexthops a sorted tuple of
  ``(gateway_bytes or b"", ifindex or 0, weight)``.

Encoding goes through pyroute2's ``rtmsg`` once per message *shape* (operation, family,
prefix length, metric, next hops); every route of that shape is then the cached template
with its sequence number and destination bytes patched in. Decoding dumps with pyroute2's
generic parser costs ~20 us a message (2 s for 100k routes), so route messages are walked
here with ``struct``; links, which are few, are decoded by pyroute2's ``ifinfmsg``.
"""

from __future__ import annotations

import errno
import socket
import struct
from collections.abc import Mapping

from pyroute2.netlink import (
    NLM_F_ACK,
    NLM_F_ACK_TLVS,
    NLM_F_CAPPED,
    NLM_F_CREATE,
    NLM_F_DUMP,
    NLM_F_EXCL,
    NLM_F_REPLACE,
    NLM_F_REQUEST,
    NLMSG_NOOP,
    nlmsg,
)
from pyroute2.netlink.rtnl import RTM_DELROUTE, RTM_GETLINK, RTM_GETROUTE, RTM_NEWROUTE
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from bgpd.model import KernelRoute, NextHop

RTN_UNICAST = 1
RTN_BLACKHOLE = 6
KIND_TO_RTN = {"unicast": RTN_UNICAST, "blackhole": RTN_BLACKHOLE}
RTN_TO_KIND = {v: k for k, v in KIND_TO_RTN.items()}

RT_SCOPE_UNIVERSE = 0
RT_SCOPE_LINK = 253
RT_SCOPE_NOWHERE = 255
RT_TABLE_UNSPEC = 0
RTM_F_CLONED = 0x200
# rtm_table is one byte; larger table ids travel only in RTA_TABLE.
MAX_RTM_TABLE = 255
# The kernel turns IPv6 metric 0 into this "user" default (IP6_RT_PRIO_USER).
IPV6_DEFAULT_METRIC = 1024
NLMSGERR_ATTR_MSG = 1

RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_PRIORITY, RTA_MULTIPATH, RTA_TABLE = 1, 4, 5, 6, 9, 15

HDR = struct.Struct("=IHHII")
_RTM = struct.Struct("=BBBBBBBBI")
_RTA = struct.Struct("=HH")
_U32 = struct.Struct("=I")
_I32 = struct.Struct("=i")
_RTNH = struct.Struct("=HBBi")
_SEQ_OFFSET = 8
# Templates put RTA_DST first: header (16) + rtmsg (12) + attribute header (4).
_DST_OFFSET = 32

FAMILY = {4: socket.AF_INET, 6: socket.AF_INET6}
ADDR_LEN = {socket.AF_INET: 4, socket.AF_INET6: 16}

Key = tuple  # (family, dst_bytes, dst_len, metric)
Value = tuple  # (rtn_type, ((gw_bytes, ifindex, weight), ...))


class EncodeError(ValueError):
    """A desired route that cannot become a netlink message (unknown device, bad gateway)."""

    def __init__(self, err: int, message: str) -> None:
        super().__init__(message)
        self.errno = err


def default_metric(family: int) -> int:
    return IPV6_DEFAULT_METRIC if family == socket.AF_INET6 else 0


def route_key(route: KernelRoute) -> Key:
    # Hot path (100k routes a sync): the family follows from the address length, which
    # spares two ipaddress property calls per route.
    prefix = route.prefix
    dst = prefix.network_address.packed
    family = socket.AF_INET if len(dst) == 4 else socket.AF_INET6
    metric = route.metric or (IPV6_DEFAULT_METRIC if family == socket.AF_INET6 else 0)
    return (family, dst, prefix.prefixlen, metric)


def route_to_wire(
    route: KernelRoute, ifindex: Mapping[str, int], gw_cache: dict
) -> tuple[Key, Value]:
    """Desired route to (key, value); ``ifindex`` maps device names to indexes."""
    key = route_key(route)
    return key, route_value(route, key[0], ifindex, gw_cache)


def route_value(
    route: KernelRoute, family: int, ifindex: Mapping[str, int], gw_cache: dict
) -> Value:
    """The value part of the wire form; depends only on kind, next hops and family, so
    callers cache it per ``(kind, nexthops, family)``."""
    rtype = KIND_TO_RTN.get(route.kind)
    if rtype is None:
        raise EncodeError(errno.EINVAL, f"unsupported route kind {route.kind!r}")
    if rtype == RTN_BLACKHOLE:
        if route.nexthops:
            raise EncodeError(errno.EINVAL, "a blackhole route has no next hops")
        return (rtype, ())
    if not route.nexthops:
        raise EncodeError(errno.EINVAL, "a unicast route needs a next hop")
    single = len(route.nexthops) == 1
    nhs = []
    for nh in route.nexthops:
        nhs.append(
            (
                _gateway_bytes(nh.gateway, family, gw_cache),
                _device_index(nh.device, ifindex),
                1 if single else nh.weight,
            )
        )
    return (rtype, tuple(sorted(nhs)))


def _gateway_bytes(gateway: str | None, family: int, cache: dict) -> bytes:
    if gateway is None:
        return b""
    packed = cache.get((family, gateway))
    if packed is None:
        try:
            packed = socket.inet_pton(family, gateway)
        except OSError as exc:
            raise EncodeError(errno.EINVAL, f"bad gateway {gateway!r} for this family") from exc
        cache[(family, gateway)] = packed
    return packed


def _device_index(device: str | None, ifindex: Mapping[str, int]) -> int:
    if device is None:
        return 0
    index = ifindex.get(device)
    if index is None:
        raise EncodeError(errno.ENODEV, f"no such device {device!r}")
    return index


def wire_matches(want: Value, got: Value) -> bool:
    """Does the kernel's ``got`` satisfy ``want``? A next hop given by gateway only
    matches whatever device the kernel resolved it to."""
    if want == got:
        return True
    if want[0] != got[0] or len(want[1]) != len(got[1]):
        return False
    if len(want[1]) == 1:
        w, g = want[1][0], got[1][0]
        return w[0] == g[0] and w[2] == g[2] and (w[1] == 0 or w[1] == g[1])
    blind = {w[0] for w in want[1] if w[1] == 0}
    masked = sorted((g[0], 0 if g[0] in blind else g[1], g[2]) for g in got[1])
    return tuple(masked) == want[1]


def wire_to_route(key: Key, value: Value, ifname: Mapping[int, str]) -> KernelRoute:
    """Back to the domain type, for reports (slow; not used on the hot path)."""
    import ipaddress

    family, dst, dst_len, metric = key
    prefix = ipaddress.ip_network((dst, dst_len))
    nexthops = tuple(
        sorted(
            NextHop(
                gateway=socket.inet_ntop(family, gw) if gw else None,
                device=ifname.get(oif, f"if{oif}") if oif else None,
                weight=weight,
            )
            for gw, oif, weight in value[1]
        )
    )
    kind = RTN_TO_KIND.get(value[0], f"type{value[0]}")
    return KernelRoute(prefix=prefix, nexthops=nexthops, kind=kind, metric=metric)


class RouteEncoder:
    """Builds RTM_NEWROUTE / RTM_DELROUTE bytes from cached per-shape templates."""

    def __init__(self, table: int, proto: int) -> None:
        self.table = table
        self.proto = proto
        self._templates: dict[tuple, tuple[bytes, bytes, bytes]] = {}

    def add(self, seq: int, key: Key, value: Value, replace: bool) -> bytes:
        flags = NLM_F_REQUEST | NLM_F_CREATE | (NLM_F_REPLACE if replace else NLM_F_EXCL)
        return self._build(seq, (RTM_NEWROUTE, flags, key[0], key[2], key[3], value), key[1])

    def delete(self, seq: int, key: Key, value: Value) -> bytes:
        # Only the key and our proto: the kernel then deletes our route at that key and
        # never a foreign one (it matches rtm_protocol when it is set).
        shape = (RTM_DELROUTE, NLM_F_REQUEST, key[0], key[2], key[3], (value[0], None))
        return self._build(seq, shape, key[1])

    def _build(self, seq: int, shape: tuple, dst: bytes) -> bytes:
        parts = self._templates.get(shape)
        if parts is None:
            parts = self._templates[shape] = self._template(shape)
        head, mid, tail = parts
        return head + _U32.pack(seq) + mid + dst + tail

    def _template(self, shape: tuple) -> tuple[bytes, bytes, bytes]:
        mtype, flags, family, dst_len, metric, (rtype, nhs) = shape
        msg = rtmsg()
        msg["header"]["type"] = mtype
        msg["header"]["flags"] = flags
        msg["family"] = family
        msg["dst_len"] = dst_len
        msg["table"] = self.table if self.table <= MAX_RTM_TABLE else RT_TABLE_UNSPEC
        msg["proto"] = self.proto
        msg["type"] = rtype
        zero = socket.inet_ntop(family, bytes(ADDR_LEN[family]))
        attrs = [("RTA_DST", zero), ("RTA_TABLE", self.table), ("RTA_PRIORITY", metric)]
        if nhs is None:
            msg["scope"] = RT_SCOPE_NOWHERE
        else:
            has_gw = any(gw for gw, _, _ in nhs)
            local = family == socket.AF_INET and nhs and not has_gw
            msg["scope"] = RT_SCOPE_LINK if local else RT_SCOPE_UNIVERSE
            if nhs:
                attrs.extend(_nexthop_attrs(family, nhs))
        msg["attrs"] = attrs
        msg.encode()
        data = bytes(msg.data)
        assert _RTA.unpack_from(data, _DST_OFFSET - 4)[1] == RTA_DST
        alen = ADDR_LEN[family]
        return data[:_SEQ_OFFSET], data[_SEQ_OFFSET + 4 : _DST_OFFSET], data[_DST_OFFSET + alen :]


def _nexthop_attrs(family: int, nhs: tuple) -> list:
    if len(nhs) == 1:
        gw, oif, _ = nhs[0]
        attrs = [("RTA_GATEWAY", socket.inet_ntop(family, gw))] if gw else []
        return attrs + ([("RTA_OIF", oif)] if oif else [])
    paths = []
    for gw, oif, weight in nhs:
        sub = [("RTA_GATEWAY", socket.inet_ntop(family, gw))] if gw else []
        paths.append({"hops": weight - 1, "oif": oif, "attrs": sub})
    return [("RTA_MULTIPATH", paths)]


def route_dump_request(seq: int, table: int, proto: int) -> bytes:
    """RTM_GETROUTE for both families; with NETLINK_GET_STRICT_CHK the kernel itself
    filters by table and protocol, so only owned routes cross into Python."""
    msg = rtmsg()
    msg["header"]["type"] = RTM_GETROUTE
    msg["header"]["flags"] = NLM_F_REQUEST | NLM_F_DUMP
    msg["header"]["sequence_number"] = seq
    msg["family"] = socket.AF_UNSPEC
    msg["table"] = table if table <= MAX_RTM_TABLE else RT_TABLE_UNSPEC
    msg["proto"] = proto
    msg["attrs"] = [("RTA_TABLE", table)]
    msg.encode()
    return bytes(msg.data)


def link_dump_request(seq: int) -> bytes:
    msg = ifinfmsg()
    msg["header"]["type"] = RTM_GETLINK
    msg["header"]["flags"] = NLM_F_REQUEST | NLM_F_DUMP
    msg["header"]["sequence_number"] = seq
    msg.encode()
    return bytes(msg.data)


def barrier_request(seq: int) -> bytes:
    """NLMSG_NOOP with an ACK request: the kernel answers it after everything sent before."""
    msg = nlmsg()
    msg["header"]["type"] = NLMSG_NOOP
    msg["header"]["flags"] = NLM_F_REQUEST | NLM_F_ACK
    msg["header"]["sequence_number"] = seq
    msg.encode()
    return bytes(msg.data)


def parse_route(buf: bytes, off: int, length: int) -> tuple[int, int, Key, Value] | None:
    """One RTM_NEWROUTE/RTM_DELROUTE to ``(table, proto, key, value)``; None for what we
    never own (other families, cached clones, source- or TOS-specific routes)."""
    family, dst_len, src_len, tos, table, proto, _scope, rtype, flags = _RTM.unpack_from(
        buf, off + 16
    )
    if family not in ADDR_LEN or src_len or tos or flags & RTM_F_CLONED:
        return None
    dst = None
    gw = b""
    oif = 0
    metric = 0
    paths = None
    pos = off + 28
    end = off + length
    while pos + 4 <= end:
        alen, atype = _RTA.unpack_from(buf, pos)
        if alen < 4:
            break
        if atype == RTA_DST:
            dst = buf[pos + 4 : pos + alen]
        elif atype == RTA_GATEWAY:
            gw = buf[pos + 4 : pos + alen]
        elif atype == RTA_OIF:
            oif = _U32.unpack_from(buf, pos + 4)[0]
        elif atype == RTA_PRIORITY:
            metric = _U32.unpack_from(buf, pos + 4)[0]
        elif atype == RTA_TABLE:
            table = _U32.unpack_from(buf, pos + 4)[0]
        elif atype == RTA_MULTIPATH:
            paths = _parse_multipath(buf, pos + 4, pos + alen)
        pos += (alen + 3) & ~3
    if dst is None:
        dst = bytes(ADDR_LEN[family])
    if rtype != RTN_UNICAST:
        nhs: tuple = ()
    elif paths is not None:
        nhs = tuple(sorted(paths))
    else:
        nhs = ((gw, oif, 1),)
    return table, proto, (family, dst, dst_len, metric), (rtype, nhs)


def _parse_multipath(buf: bytes, pos: int, end: int) -> list:
    paths = []
    while pos + 8 <= end:
        nh_len, _flags, hops, oif = _RTNH.unpack_from(buf, pos)
        if nh_len < 8:
            break
        gw = b""
        apos = pos + 8
        while apos + 4 <= pos + nh_len:
            alen, atype = _RTA.unpack_from(buf, apos)
            if alen < 4:
                break
            if atype == RTA_GATEWAY:
                gw = buf[apos + 4 : apos + alen]
            apos += (alen + 3) & ~3
        paths.append((gw, oif, hops + 1))
        pos += (nh_len + 3) & ~3
    return paths


def parse_error(buf: bytes, off: int, length: int) -> tuple[int, int, str]:
    """NLMSG_ERROR to ``(errno, seq of the request, extended-ack text)``; errno 0 is an ACK."""
    err = -_I32.unpack_from(buf, off + 16)[0]
    orig_len, _, _, seq, _ = HDR.unpack_from(buf, off + 20)
    flags = HDR.unpack_from(buf, off)[2]
    text = ""
    if flags & NLM_F_ACK_TLVS:
        pos = off + 20 + (16 if flags & NLM_F_CAPPED else orig_len)
        while pos + 4 <= off + length:
            alen, atype = _RTA.unpack_from(buf, pos)
            if alen < 4:
                break
            if atype == NLMSGERR_ATTR_MSG:
                text = bytes(buf[pos + 4 : pos + alen]).rstrip(b"\0").decode(errors="replace")
            pos += (alen + 3) & ~3
    return err, seq, text


def parse_link(buf: bytes, off: int, length: int) -> tuple[int, str, int]:
    """RTM_NEWLINK/RTM_DELLINK to ``(ifindex, name, flags)`` via pyroute2's ifinfmsg."""
    msg = ifinfmsg(bytes(buf[off : off + length]))
    msg.decode()
    return msg["index"], msg.get_attr("IFLA_IFNAME") or "", msg["flags"]
