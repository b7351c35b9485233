"""Import policy for routes learned from BGP peers (pure: no adapter imports).

Default deny: a learned route passes only if an ``allow`` rule matches it. The speaker
applies this to each route as it arrives (bgpd/speaker/received.py), and stores at most
``max_prefixes`` allowed routes per peer, in the order the peer sent them, so a peer that
floods us cannot push out routes we already installed.
"""

from __future__ import annotations

from bgpd.config import ImportConfig
from bgpd.model import LearnedRoute


def allowed(route: LearnedRoute, config: ImportConfig) -> bool:
    return any(rule.matches(route.prefix) for rule in config.allow)
