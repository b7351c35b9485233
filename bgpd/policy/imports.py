"""Import policy for routes learned from BGP peers (pure: no adapter imports).

Default deny: a learned route passes only if an ``allow`` rule matches it, and each peer
contributes at most ``max_prefixes`` routes, taken in the order the peer sent them, so a
peer that floods us cannot push out routes we already installed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from bgpd.config import ImportConfig
from bgpd.model import IPNetwork, LearnedRoute

REASON_NOT_ALLOWED = "notAllowedByImportRules"
REASON_OVER_LIMIT = "overMaxPrefixes"


@dataclass
class PeerImport:
    accepted: int = 0
    not_allowed: int = 0
    over_limit: int = 0


@dataclass
class ImportResult:
    routes: dict[IPNetwork, list[LearnedRoute]] = field(default_factory=dict)
    per_peer: dict[str, PeerImport] = field(default_factory=dict)


def allowed(route: LearnedRoute, config: ImportConfig) -> bool:
    return any(rule.matches(route.prefix) for rule in config.allow)


def filter_learned(
    learned: Mapping[str, Mapping[IPNetwork, LearnedRoute]], config: ImportConfig
) -> ImportResult:
    """``learned`` maps peer -> prefix -> route in arrival order (dicts keep it)."""
    result = ImportResult()
    for peer in sorted(learned):
        counts = result.per_peer.setdefault(peer, PeerImport())
        for route in learned[peer].values():
            if not allowed(route, config):
                counts.not_allowed += 1
            elif counts.accepted >= config.max_prefixes:
                counts.over_limit += 1
            else:
                counts.accepted += 1
                result.routes.setdefault(route.prefix, []).append(route)
    return result
