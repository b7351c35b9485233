"""Make one kernel routing table hold exactly the desired set of *owned* routes.

Owned means: in our table and carrying our rtproto number. Everything else in the kernel
is foreign and is never replaced or deleted, even when it covers the same prefix; an add
refused because a foreign route holds the same key is a conflict, reported and not fought.

Each ``sync`` dumps what we own (the kernel filters by table and proto), diffs it with the
desired set, sends the minimum in one bulk netlink exchange and records what really got
applied, so ``owned()`` reflects the kernel even after a partial failure. A new instance
adopts what an earlier run left behind: the first sync with the same desired set writes
nothing.
"""

from __future__ import annotations

import errno
import threading
from collections.abc import Iterable

from pyroute2.netlink.rtnl import RTM_NEWLINK, RTM_NEWROUTE

from bgpd.kernel.errors import KernelError, RouteFailure, SyncResult
from bgpd.kernel.messages import (
    EncodeError,
    Key,
    RouteEncoder,
    Value,
    link_dump_request,
    parse_link,
    parse_route,
    route_dump_request,
    route_key,
    route_value,
    wire_matches,
    wire_to_route,
)
from bgpd.kernel.netlink import DEFAULT_RCVBUF, NetlinkChannel
from bgpd.model import KernelRoute

# 205: not in iproute2's rt_protos (0-18, 42 babel, 99 openr, 186-192) nor FRR's
# rt_protos.d/frr.conf (186-198 incl. static, sharp, pbr, srte), BIRD 12, keepalived 18,
# Calico 80 and other agents' choices seen in the wild (129, 201). Configurable anyway.
DEFAULT_PROTO = 205
MAIN_TABLE = 254
MAX_PROTO = 255
MAX_TABLE = 0xFFFFFFFF
# Ids 0 (unspec), 253 (default) and 255 (local) belong to the kernel.
RESERVED_TABLES = frozenset({0, 253, 255})
RESERVED_PROTOS = frozenset({0, 1, 2})  # unspec, redirect, kernel


class KernelTable:
    """Owned-route programmer for one routing table of one network namespace.

    Thread-safe: ``sync`` may be called by the agent while a ``KernelMonitor`` repairs.
    ``writes`` counts every route-changing netlink message ever sent.
    """

    def __init__(
        self,
        netns: str | None = None,
        table: int = MAIN_TABLE,
        proto: int = DEFAULT_PROTO,
        *,
        rcvbuf: int = DEFAULT_RCVBUF,
    ) -> None:
        if not 0 < table <= MAX_TABLE or table in RESERVED_TABLES:
            raise KernelError(f"table {table} is not a usable routing table id")
        if not 0 < proto <= MAX_PROTO or proto in RESERVED_PROTOS:
            raise KernelError(f"proto {proto} is reserved or out of range 3..255")
        self.netns = netns
        self.table = table
        self.proto = proto
        self.writes = 0
        self._lock = threading.RLock()
        self._channel = NetlinkChannel(netns, rcvbuf=rcvbuf)
        self._encoder = RouteEncoder(table, proto)
        self._gw_cache: dict = {}
        self._ifindex: dict[str, int] = {}
        self._ifname: dict[int, str] = {}
        self._desired: dict[Key, Value] | None = None
        self._desired_routes: list[KernelRoute] = []
        self._pending = False
        self._state: dict[Key, Value] = self._dump_owned()

    # ------------------------------------------------------------------ public API

    def sync(self, desired: Iterable[KernelRoute]) -> SyncResult:
        """Make the owned routes of the table equal ``desired``; never raises for a
        single bad route (see ``SyncResult.failures``), only for netlink breakdowns."""
        with self._lock:
            routes = list(desired)
            self._refresh_links()
            want, routes_by_key, failures = self._encode(routes)
            have = self._dump_owned()
            ops, unchanged = self._diff(want, have)
            result = self._apply(ops, have, routes_by_key, failures, unchanged)
            self._desired = want
            self._desired_routes = routes
            self._pending = bool(result.failures or result.conflicts)
            return result

    def resync(self) -> SyncResult | None:
        """Sync again with the last desired set; None before the first ``sync`` (so a
        monitor never deletes adopted routes the agent has not yet spoken about)."""
        with self._lock:
            if self._desired is None:
                return None
            return self.sync(self._desired_routes)

    def owned(self) -> list[KernelRoute]:
        """Owned routes as last seen or applied (slow for huge tables: adoption at start,
        debug views), with their devices named as the kernel names them now."""
        with self._lock:
            self._refresh_links()
            return [wire_to_route(k, v, self._ifname) for k, v in self._state.items()]

    def close(self, remove: bool = False) -> None:
        """Leave owned routes in place (a restarted agent adopts them) unless ``remove``."""
        with self._lock:
            try:
                if remove:
                    self._refresh_links()
                    have = self._dump_owned()
                    ops = [("delete", k, v) for k, v in have.items()]
                    self._apply(ops, have, {}, [], 0)
            finally:
                self._channel.close()

    # ------------------------------------------------------------ monitor support

    def needs_repair(self, table: int, proto: int, key: Key, value: Value, gone: bool) -> bool:
        """Would a route change seen on the monitor make the kernel differ from what we
        want? Our own writes match the desired set, so they never trigger a repair."""
        with self._lock:
            if self._desired is None:
                return False
            if table != self.table:
                return False
            want = self._desired.get(key)
            if proto == self.proto:
                if gone:
                    return want is not None
                return want is None or not wire_matches(want, value)
            # A foreign route at a key we want: a conflict may have appeared or gone. Other
            # foreign events only hint the rate-limited retry of pending failures (monitor).
            return want is not None

    def link_states(self) -> dict[int, tuple[str, int]]:
        """``{ifindex: (name, flags)}`` of the namespace's links, for the monitor."""
        with self._lock:
            links = self._channel.dump(link_dump_request, RTM_NEWLINK)
            return {i: (name, flags) for i, name, flags in (parse_link(*x) for x in links)}

    @property
    def pending(self) -> bool:
        """The last sync left failures or conflicts worth retrying."""
        return self._pending

    # ------------------------------------------------------------------ internals

    def _refresh_links(self) -> None:
        links = [parse_link(*item) for item in self._channel.dump(link_dump_request, RTM_NEWLINK)]
        self._ifindex = {name: index for index, name, _ in links}
        self._ifname = {index: name for index, name, _ in links}

    def _dump_owned(self) -> dict[Key, Value]:
        owned: dict[Key, Value] = {}
        table, proto = self.table, self.proto

        def request(seq: int) -> bytes:
            return route_dump_request(seq, table, proto)

        for buf, off, length in self._channel.dump(request, RTM_NEWROUTE):
            parsed = parse_route(buf, off, length)
            # Filter again: kernels without strict dump checking ignore the filter.
            if parsed is not None and parsed[0] == table and parsed[1] == proto:
                owned[parsed[2]] = parsed[3]
        return owned

    def _encode(self, routes: list[KernelRoute]):
        want: dict[Key, Value] = {}
        by_key: dict[Key, KernelRoute] = {}
        failures: list[RouteFailure] = []
        # Many routes share their next hops: encode each (kind, next hops, family) once.
        values: dict[tuple, Value | EncodeError] = {}
        for route in routes:
            try:
                key = route_key(route)
                shape = (route.kind, route.nexthops, key[0])
                value = values.get(shape)
                if value is None:
                    try:
                        value = route_value(route, key[0], self._ifindex, self._gw_cache)
                    except EncodeError as exc:
                        value = exc
                    values[shape] = value
            except (AttributeError, TypeError, ValueError) as exc:
                failures.append(RouteFailure(route, "add", errno.EINVAL, f"bad route: {exc}"))
                continue
            if isinstance(value, EncodeError):
                failures.append(RouteFailure(route, "add", value.errno, str(value)))
                continue
            seen = want.get(key)
            if seen is not None and seen != value:
                msg = f"duplicate prefix/metric with different next hops: {by_key[key]}"
                failures.append(RouteFailure(route, "add", errno.EINVAL, msg))
                continue
            want[key] = value
            by_key[key] = route
        return want, by_key, failures

    @staticmethod
    def _diff(want: dict[Key, Value], have: dict[Key, Value]):
        ops = []
        unchanged = 0
        for key, value in want.items():
            got = have.get(key)
            if got is None:
                ops.append(("add", key, value))
            elif wire_matches(value, got):
                unchanged += 1
            else:
                ops.append(("replace", key, value))
        ops.extend(("delete", key, value) for key, value in have.items() if key not in want)
        return ops, unchanged

    def _apply(self, ops, have, routes_by_key, failures, unchanged) -> SyncResult:
        channel, encoder = self._channel, self._encoder
        seqs = []
        messages = []
        for op, key, value in ops:
            seq = channel.next_seq()
            seqs.append(seq)
            if op == "delete":
                messages.append(encoder.delete(seq, key, value))
            else:
                messages.append(encoder.add(seq, key, value, replace=op == "replace"))
        errors = channel.send_bulk(messages) if messages else {}
        self.writes += len(messages)
        if channel.lost_errors:
            # The error queue overflowed: what happened is only knowable from the kernel.
            reality = self._dump_owned()
            errors = {
                seq: _lost_error(op, key, value, reality)
                for seq, (op, key, value) in zip(seqs, ops, strict=True)
            }
            errors = {seq: err for seq, err in errors.items() if err is not None}
            have.clear()
            have.update(reality)
        counts = {"add": 0, "replace": 0, "delete": 0}
        conflicts: list[RouteFailure] = []
        for seq, (op, key, value) in zip(seqs, ops, strict=True):
            err = errors.get(seq)
            if err is None:
                counts[op] += 1
                if op == "delete":
                    have.pop(key, None)
                else:
                    have[key] = value
                continue
            route = routes_by_key.get(key) or wire_to_route(key, value, self._ifname)
            failure = RouteFailure(route, op, err[0], err[1])
            (conflicts if op == "add" and err[0] == errno.EEXIST else failures).append(failure)
        self._state = have
        return SyncResult(
            added=counts["add"],
            replaced=counts["replace"],
            deleted=counts["delete"],
            unchanged=unchanged,
            failures=tuple(failures),
            conflicts=tuple(conflicts),
            writes=len(messages),
        )


def _lost_error(op: str, key: Key, value: Value, reality: dict) -> tuple[int, str] | None:
    got = reality.get(key)
    if op == "delete":
        ok = got is None
    else:
        ok = got is not None and wire_matches(value, got)
    return None if ok else (errno.EIO, "refused by the kernel (error report lost)")


__all__ = ["DEFAULT_PROTO", "KernelTable", "route_key"]
