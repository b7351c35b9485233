"""A Claim: one object's wish to have one address announced, and the verdict on it."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from functools import lru_cache
from typing import NamedTuple

from bgpd.config import Pool
from bgpd.model import NO_ATTRIBUTES, Attributes, IPNetwork
from bgpd.policy import reasons
from bgpd.policy.addresses import v4_int

# Uses of an address (also the names pools allow, plus pod-cidr which needs no pool).
POD_CIDR = "pod-cidr"
POD_IP = "pod-ip"
CLUSTER_IP = "cluster-ip"
EXTERNAL_IP = "external-ip"
LOAD_BALANCER_IP = "load-balancer-ip"
POD_EXTERNAL_IP = "pod-external-ip"

# Verdicts that survive the node-independent checks: these take part in conflict resolution,
# so every node picks the same winner whatever its local endpoints are.
CONTENDING = frozenset({reasons.ANNOUNCED, reasons.NO_LOCAL_ENDPOINT, reasons.NO_READY_ENDPOINT,
                        reasons.POD_NOT_READY})


class Claim(NamedTuple):
    """One object's wish for one address, and the verdict on it.

    A NamedTuple rather than a frozen dataclass: a full decision builds ~40,000 of these and
    tuple construction is several times cheaper than a frozen dataclass's __init__.
    """

    value: str  # the address as the object wrote it
    prefix: IPNetwork | None  # None when it did not parse
    use: str
    owner: str  # "service/ns/name", "pod/ns/name" or "node/name"
    created: float  # the owner's creation time, for "oldest wins"
    reason: str
    detail: str
    pool: str | None = None
    attributes: Attributes = NO_ATTRIBUTES
    via: str | None = None  # pod-external-ip: the pod address the kernel route points at
    key: str = ""  # canonical prefix text ("198.51.100.7/32"), "" when it did not parse

    @property
    def announced(self) -> bool:
        return self.reason == reasons.ANNOUNCED

    @property
    def rejected(self) -> bool:
        return self.reason in reasons.REJECTIONS

    def verdict(self, reason: str, detail: str) -> Claim:
        return self._replace(reason=reason, detail=detail)


def pool_for(prefix: IPNetwork, pools: tuple[Pool, ...]) -> Pool | None:
    """The pool holding ``prefix`` (pools never overlap: the config parser checks)."""
    return _pool_for(str(prefix), pools)


def _pool_for(key: str, pools: tuple[Pool, ...], value: int | None = None) -> Pool | None:
    # Uncached: _pool_verdict, which calls it, is cached already. ``value``: the address
    # as an integer when ``key`` is an IPv4 host prefix and the caller has it.
    if value is not None or key.endswith("/32"):  # an IPv4 host: integer compares
        if value is None:
            value = v4_int(key[:-3])
        if value is not None:
            for pool, ranges in _v4_ranges(pools):
                for low, high in ranges:
                    if low <= value <= high:
                        return pool
            return None
    prefix = ipaddress.ip_network(key)
    for pool in pools:
        if pool.contains(prefix):
            return pool
    return None


@lru_cache(maxsize=64)
def _v4_ranges(pools: tuple[Pool, ...]) -> tuple[tuple[Pool, tuple[tuple[int, int], ...]], ...]:
    """Each pool's IPv4 CIDRs as (first, last) integers, in the pools' order: a /32 lies
    in a CIDR exactly when it lies between the two (Pool.contains, for a host)."""
    return tuple((pool, tuple((int(c.network_address), int(c.broadcast_address))
                              for c in pool.cidrs if c.version == 4))
                 for pool in pools)


def pool_verdict(key: str, use: str, pools: tuple[Pool, ...], namespace: str | None = None,
                 ns_labels: Mapping[str, str] | None = None) -> tuple[Pool | None, str, str]:
    """Default deny: an address is allowed only inside a pool that allows its use and, for
    an object in ``namespace`` (whose labels are ``ns_labels``), admits that namespace."""
    pool, reason, detail = _pool_verdict(key, use, pools)
    if (pool is not None and reason == reasons.ANNOUNCED and namespace is not None
            and (pool.namespaces or pool.namespace_selector)  # else it admits everyone
            and not pool.admits(namespace, ns_labels)):
        return pool, reasons.NAMESPACE_FORBIDDEN, (
            f"pool {pool.name!r} does not admit namespace {namespace!r}")
    return pool, reason, detail


POOL_CACHE_SIZE = 1 << 16
"""Verdicts kept (the addresses of ~30,000 Services). Keyed on the text (cached str hash)
and the pools (identity hash, see config.Pool): hashing an ipaddress object runs Python
code, and a full decision asks ~40,000 times. An entry holds no text of its own beyond the
address (the pool's verdict texts are shared), about 300 bytes: at most ~20 MB however
many addresses tenants write and delete."""


def judge_pool(key: str, use: str, pools: tuple[Pool, ...], value: int | None = None
               ) -> tuple[Pool | None, str, str]:
    """pool_verdict() without a namespace, uncached (``value``: see _pool_for), for a
    caller that keeps the answer itself (services._PlainVerdicts)."""
    pool = _pool_for(key, pools, value)
    if pool is None:
        return None, reasons.OUTSIDE_POOLS, f"{key} lies in no configured pool"
    return _pool_use_verdict(pool, use)


_pool_verdict = lru_cache(maxsize=POOL_CACHE_SIZE)(judge_pool)


@lru_cache(maxsize=1024)
def _pool_use_verdict(pool: Pool, use: str) -> tuple[Pool, str, str]:
    """What a pool says to a use: one tuple (and text) per pool and use, shared."""
    if use not in pool.allow:
        return pool, reasons.POOL_FORBIDS_USE, (
            f"pool {pool.name!r} does not allow {use} (allows {', '.join(sorted(pool.allow))})")
    return pool, reasons.ANNOUNCED, f"allowed by pool {pool.name!r}"
