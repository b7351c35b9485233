"""What of a Config the judgement of a Service reads, so a reload can keep that judgement.

A config reload makes a new Config object, and most reloads leave everything a Service's
claims depend on as it was: they change peers, BGP or drain settings, or nothing at all (a
file rewritten the same). Claims made under the old Config are then exactly those the new
one would make, and the Service memo (memo.py) and the plain-address tables (services.py)
are kept instead of judging 20,000 Services and their addresses again.

``service_view`` lists those fields: services.py reads ``config.annotation_prefix``,
``advertise``, ``pools``, ``limits`` and ``weighted_ecmp`` and nothing else (a unit test
records every attribute it reads). Pools compare by their fields: ``Pool`` hashes by
identity (config.py), and a reload builds new ones.
"""

from __future__ import annotations

import dataclasses

from bgpd.config import Config, Pool

# Every field, so a field added to Pool is compared without anyone remembering to.
_POOL_FIELDS = tuple(f.name for f in dataclasses.fields(Pool))

SERVICE_FIELDS = ("annotation_prefix", "advertise", "pools", "limits", "weighted_ecmp")


def _pool_value(pool: Pool) -> tuple:
    return tuple(getattr(pool, name) for name in _POOL_FIELDS)


def service_view(config: Config) -> tuple:
    """The values of the Config fields a Service's claims are made from, comparable."""
    return (config.annotation_prefix, config.advertise,
            tuple(_pool_value(p) for p in config.pools), config.limits,
            config.weighted_ecmp)
