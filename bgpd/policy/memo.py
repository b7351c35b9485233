"""What each Service was last judged to, shared by every Decider of one (config, node).

A Decider starts from nothing when the drain starts or ends or the config is reloaded,
and ``decide()`` makes a fresh one each time; a Service's claims depend only on the
Service, its EndpointSlices, its namespace, a few config fields (view.py) and the node,
so a Service whose inputs are the very objects judged before gets the very claims made
then, instead of being judged again (about three quarters of a full decision).

An entry, keyed by the Service's key, is the tuple a Decider keeps as that Service's
inputs (``Decider._svc_inputs``): see ``make_entry``. Both hold the same tuple, so the
memo costs a dict entry a Service; the claims, the by-prefix tuple and the Announcement in
it are the very objects the Decider files, so a decision that finds its Services here
builds none of them. It is bounded by the Services the cluster holds: an entry is dropped
when its Service changes (the next full decision makes it again) or is deleted, and
``decide._trim_caches`` empties it when it holds far more entries than there are Services
(deletions a Decider did not see one by one).
"""

from __future__ import annotations

import dataclasses

from bgpd.config import Config
from bgpd.model import Announcement, Attributes, IPNetwork
from bgpd.policy.claims import CONTENDING, Claim
from bgpd.policy.reasons import ANNOUNCED, REJECTIONS
from bgpd.policy.view import service_view

Entry = tuple  # see make_entry

_new = object.__new__
_set_prefix = Announcement.prefix.__set__  # type: ignore[attr-defined]
_set_attributes = Announcement.attributes.__set__  # type: ignore[attr-defined]
_set_next_hop = Announcement.next_hop.__set__  # type: ignore[attr-defined]


def _fast_announcement(prefix: IPNetwork, attributes: Attributes) -> Announcement:
    """``Announcement(prefix, attributes)`` without the frozen dataclass's __init__ (three
    object.__setattr__ calls in Python): a full decision makes ~15,000 of them."""
    ann = _new(Announcement)
    _set_prefix(ann, prefix)
    _set_attributes(ann, attributes)
    _set_next_hop(ann, None)
    return ann


# Only while Announcement has exactly these three fields (a new one would stay unset).
announcement = (_fast_announcement
                if [f.name for f in dataclasses.fields(Announcement)]
                == ["prefix", "attributes", "next_hop"] else Announcement)


def make_entry(svc: object, slices: tuple, ns_info: object, claims: tuple[Claim, ...],
               source: str) -> Entry:
    """(ServiceInfo, its EndpointSlices in key order, its NamespaceInfo or None: what the
    claims were made from; the claims; the source key; then, for the common Service with
    exactly one contending claim, what filing it takes: that claim's prefix key (None
    otherwise: the claims are filed one by one), the by-prefix tuple (claim,), its
    Announcement if announced (else None); whether a claim is rejected)."""
    only = None
    rejected = False
    for c in claims:
        reason = c.reason
        if reason in CONTENDING:
            if c.key:
                if only is not None:
                    return (svc, slices, ns_info, claims, source, None, None, None, False)
                only = c
        elif reason in REJECTIONS:
            rejected = True
    if only is None:
        return (svc, slices, ns_info, claims, source, None, None, None, False)
    return (svc, slices, ns_info, claims, source, only.key, (only,),
            announcement(only.prefix, only.attributes) if only.reason == ANNOUNCED else None,
            rejected)


class _Memo:
    __slots__ = ("config", "node", "view", "entries")

    def __init__(self, config: Config | None, node: str) -> None:
        self.config = config
        self.node = node
        self.view = service_view(config) if config is not None else None
        self.entries: dict[str, Entry] = {}


_memo = _Memo(None, "")


def service_memo(config: Config, node: str) -> dict[str, Entry]:
    """The entries for ``config`` and ``node``. Another config whose fields a Service's
    claims read are equal (view.py: a reload of peers, say) takes the entries over; any
    other pair starts an empty memo (one swap: a Decider never mixes two configs'
    entries)."""
    global _memo
    memo = _memo
    if memo.config is not config or memo.node != node:
        if memo.node == node and memo.view is not None and memo.view == service_view(config):
            memo.config = config
        else:
            memo = _memo = _Memo(config, node)
    return memo.entries


def forget_service(key: str) -> None:
    """Drop the entry of a Service that changed or went (whatever config it is under: at
    worst another config's Decider judges that Service again)."""
    _memo.entries.pop(key, None)


def memo_size() -> int:
    return len(_memo.entries)


def clear_service_memo() -> None:
    global _memo
    _memo = _Memo(None, "")
