"""The decision: from a Snapshot and the Config to announcements, kernel routes and reasons.

``Decider.decide`` returns what a pure function of (snapshot, config, node) would; the Decider
only remembers, per source object, the claims it produced and the per-prefix outcome, so that
after one Service changes it re-judges that Service and the prefixes it touches instead of
20,000 Services. ``decide()`` below is the memo-less form; tests check both agree.

Where the time goes, and why it is cheap (bench/policy.py, 20,000 Services):

* Finding what changed. A snapshot's maps are new objects whenever anything in them
  changed (the cache copies a map per change), so one changed Service still means a new
  20,000-entry map. Unchanged objects are the same instances, so the Decider compares
  each value's identity against its own copy of what it last judged, in C
  (``compress``/``map``/``is_not``): no Python-level loop over 20,000 entries.
* The node and its pods are re-judged only when the Node, the pods map or (for pools that
  select namespaces by label) a namespace changed, and then only the pods that changed.
* Claims are only built for what changed; ``Decision.rejections`` (read every round for
  Events and metrics) reads only the sources that hold a rejection or lost a contest,
  instead of building and sorting every claim; ``Decision.claims`` is still built on first
  use, for ``bgpd explain`` and the debug views.
* The announcements and the per-source claims are handed to the Decision as they are and
  copied before the Decider's next write to them (copy on write): a decision that changes
  no announcement shares the previous one's dict. Nobody writes to a Decision's maps.

A full decision (a fresh Decider: the first round, a config reload, a drain starting or
ending) goes over every Service in one loop (_judge_all_services) that files its claims
directly, settling a prefix only it claims on the spot. A Service judged before under the
same config (or a reloaded one equal in what Services read: view.py) and node, from the
very same inputs, takes its claims and what filing them needs from the memo (memo.py):
about 2.5 us a Service on the 2-core reference machine (bench/policy.py), a quarter of it
grouping the EndpointSlices by Service. Otherwise plain
Services (no annotations of ours, the common case) look their addresses up in per-config
tables (services.py); a process's first decision also parses every address once (the
IPv4 fast path in addresses.py makes that a third of what ipaddress took).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from itertools import compress
from operator import is_not

from bgpd.config import Config
from bgpd.model import (
    Announcement,
    Attributes,
    ChangeLog,
    EndpointSliceInfo,
    IPNetwork,
    KernelRoute,
    NamespaceInfo,
    NextHop,
    NodeInfo,
    PodInfo,
    ServiceInfo,
    Snapshot,
)
from bgpd.policy import addresses, reasons
from bgpd.policy import annotations as ann
from bgpd.policy import claims as claim_rules
from bgpd.policy.claims import (
    CLUSTER_IP,
    CONTENDING,
    EXTERNAL_IP,
    LOAD_BALANCER_IP,
    POD_CIDR,
    POD_EXTERNAL_IP,
    Claim,
)
from bgpd.policy.drain import drain_trigger, less_preferred, withdraws
from bgpd.policy.memo import announcement as _announcement
from bgpd.policy.memo import (
    clear_service_memo,
    forget_service,
    make_entry,
    memo_size,
    service_memo,
)
from bgpd.policy.pods import node_claims, pod_claims
from bgpd.policy.services import clear_plain_verdicts, plain_size, service_claims
from bgpd.policy.weights import link_bandwidth

# Source keys order the claims: the node first, then pods, then Services, each by name.
_NODE = "0"
_POD = "1:"
_SVC = "2:"

_ANNOUNCED = reasons.ANNOUNCED
_REJECTIONS = reasons.REJECTIONS
_NO_NODE = object()  # "no Node judged yet" (None is a Node the snapshot lacks)

# Uses a drain touches (never the pod CIDR or pod IPs: only this node reaches those pods)
# and the uses whose announcement can carry a weight.
_DRAINABLE = frozenset({CLUSTER_IP, EXTERNAL_IP, LOAD_BALANCER_IP, POD_EXTERNAL_IP})
WITHDRAWN, LESS_PREFERRED = "withdrawn", "less-preferred"  # what a drain did to an address


def _contender(claim: Claim) -> str:
    # Pods of one namespace sharing an address are one contender: that is how ECMP is
    # asked for. Pods of another namespace are another contender, never a next hop of it.
    if claim.use == POD_EXTERNAL_IP:
        return claim.owner.rpartition("/")[0] + "/*"
    return claim.owner


def _unique(keys: list[str]) -> list[str]:
    return list(dict.fromkeys(keys))


def _changed_keys(current: Mapping, seen: Mapping) -> list:
    """Keys of ``current`` whose value is not the very object ``seen`` holds (new keys
    included), found in C: ``current`` may hold 20,000 entries of which one changed."""
    return list(compress(current, map(is_not, current.values(), map(seen.get, current))))


def _ordered_slices(group: Mapping[str, EndpointSliceInfo] | None
                    ) -> tuple[EndpointSliceInfo, ...]:
    """A Service's EndpointSlices sorted by key, so comparing a Service's inputs does not
    depend on the order its slices arrived in."""
    if not group:
        return ()
    if len(group) == 1:
        return tuple(group.values())
    return tuple(group[k] for k in sorted(group))


def changed_and_removed(current: Mapping, seen: Mapping) -> tuple[list, set]:
    """(keys of ``current`` whose value is not the very object ``seen`` holds, new keys
    included; keys only ``seen`` has). The second is looked for only when the counts say
    something is gone, so a map where one entry changed costs one pass in C."""
    keys = _changed_keys(current, seen)
    added = sum(1 for k in keys if k not in seen)
    gone = seen.keys() - current.keys() if len(seen) + added > len(current) else set()
    return keys, gone


class Decision:
    """The outcome of one decision, keyed by canonical prefix text ("198.51.100.7/32"). ``claims`` (every candidate with its verdict) is built on
    first use: a reconcile needs the announcements at once, ``explain`` the claims later."""

    def __init__(self, announcements: dict[str, Announcement],
                 kernel_routes: dict[str, KernelRoute],
                 sources: Mapping[str, tuple[Claim, ...]],
                 winners: Mapping[str, tuple[float, str]],
                 node_opted_out: bool, synced: bool, opt_out_note: str = "",
                 rejecting: frozenset[str] | None = None, drain: str = "",
                 notes: Mapping[str, tuple[str, str]] | None = None):
        self.announcements = announcements
        self.kernel_routes = kernel_routes
        self.node_opted_out = node_opted_out  # withdrawing everything is intended
        self.synced = synced
        self.drain = drain  # why this node drains ("" when it does not)
        # Per prefix, what the outcome adds to its announced claims' verdict: (the drain's
        # effect: WITHDRAWN, LESS_PREFERRED or "", text for explain), e.g. a link bandwidth.
        self.notes: Mapping[str, tuple[str, str]] = notes or {}
        self._sources = sources
        self._winners = winners
        self._opt_out_note = opt_out_note
        # Source keys that can hold a rejection: a rejected claim, or a lost contest (None:
        # unknown, look at every source).
        self._rejecting = rejecting
        self._claims: tuple[Claim, ...] | None = None
        self._index: dict[IPNetwork, list[Claim]] | None = None

    def _judged(self, key: str) -> list[Claim]:
        """The claims of one source with the verdicts only the whole decision knows: a
        contest lost to an older owner, the node's opt-out."""
        out = []
        winners = self._winners
        notes = self.notes
        for c in self._sources[key]:
            win = winners.get(c.key) if c.key else None
            if (win is not None and c.reason in CONTENDING and c.use != POD_CIDR
                    and _contender(c) != win[1]):
                c = c.verdict(reasons.CONFLICT, f"{c.prefix} is claimed by {win[1]} (older)")
            elif self.node_opted_out and c.announced:
                c = c.verdict(reasons.OPTED_OUT, self._opt_out_note)
            elif notes and c.announced and c.use in _DRAINABLE and c.key in notes:
                effect, text = notes[c.key]
                c = (c.verdict(reasons.DRAINED, text) if effect == WITHDRAWN
                     else c.verdict(c.reason, f"{c.detail}; {text}"))
            out.append(c)
        return out

    @property
    def claims(self) -> tuple[Claim, ...]:
        if self._claims is None:
            self._claims = tuple(c for key in sorted(self._sources) for c in self._judged(key))
        return self._claims

    @property
    def rejections(self) -> list[Claim]:
        if self._claims is None and self._rejecting is not None:
            # The same list as below, from the few sources that can hold one.
            return [c for key in sorted(self._rejecting) for c in self._judged(key)
                    if c.reason in _REJECTIONS]
        return [c for c in self.claims if c.rejected]

    def same_on_every_node(self, claim: Claim) -> bool:
        """Does every node reach this verdict, word for word? True for a Service's, unless
        it lost to pods (which only their node sees); so one node may report it for all."""
        if not claim.owner.startswith("service/"):
            return False
        if claim.reason != reasons.CONFLICT:
            return True
        win = self._winners.get(claim.key)
        return win is not None and win[1].startswith("service/")

    def explain(self, prefix: IPNetwork) -> list[Claim]:
        """Every claim on ``prefix``, or on a prefix containing it (a pod CIDR, say)."""
        index = self._index
        if index is None:  # built aside, then published: HTTP threads may ask at once
            index = {}
            for claim in self.claims:
                if claim.prefix is not None:
                    index.setdefault(claim.prefix, []).append(claim)
            self._index = index
        found = list(index.get(prefix, ()))
        for net, claims in index.items():
            if net != prefix and net.version == prefix.version and prefix.subnet_of(net):  # type: ignore[arg-type]
                found.extend(claims)
        return found


class Decider:
    """Incremental decisions; the answer equals ``decide()`` for the same arguments.

    Snapshots' maps must not be changed in place once decided on (the cache hands out
    read-only copies): a map that is the same object as last time is taken as unchanged.
    """

    def __init__(self) -> None:
        self._reset(None, "")

    def _reset(self, config: Config | None, node_name: str) -> None:
        self._config = config
        self._node_name = node_name
        self._slices: Mapping[str, EndpointSliceInfo] = {}
        self._slices_seen: dict[str, EndpointSliceInfo] = {}  # what _slices_of was built from
        self._slices_of: dict[str, dict[str, EndpointSliceInfo]] = {}  # service key -> slices
        self._services: Mapping[str, ServiceInfo] = {}
        self._services_seen: dict[str, ServiceInfo] = {}  # the Services judged, by key
        self._namespaces: Mapping[str, NamespaceInfo] = {}
        # Per Service, (ServiceInfo, its slices, its NamespaceInfo) last judged: a memo
        # entry (memo.py) after a full decision, those three alone after a change.
        self._svc_inputs: dict[str, tuple] = {}
        # The node and its pods: the inputs last judged and what came of them.
        self._node: object = _NO_NODE
        self._node_judged: tuple[tuple[Claim, ...] | None, list[IPNetwork], bool, str] = (
            None, [], False, "")
        self._pods: Mapping[str, PodInfo] | None = None
        self._pod_memo: dict[str, tuple[PodInfo, tuple[IPNetwork, ...],
                                        Mapping[str, str] | None, tuple[Claim, ...]]] = {}
        self._local_keys: set[str] = set()
        self._sources: dict[str, tuple[Claim, ...]] = {}
        self._n_claims = 0  # claims in _sources: how many parsed addresses are in play
        self._rejecting: set[str] = set()  # sources holding a rejected claim
        self._by_prefix: dict[str, dict[str, tuple[Claim, ...]]] = {}
        self._ann: dict[str, Announcement] = {}
        # _sources and _ann are handed to the Decision as they are, and copied before the
        # next write (copy on write): a decision that changes no announcement shares the
        # previous one's dict instead of copying 20,000 entries.
        self._sources_shared = self._ann_shared = False
        self._routes: dict[str, KernelRoute] = {}
        self._winners: dict[str, tuple[float, str]] = {}
        # The drain: (why this node drains, whether another undrained node is known to
        # exist); any change re-judges every prefix (rare: a cordon, an uncordon).
        self._drain: tuple[str, bool | None] = ("", None)
        self._notes: dict[str, tuple[str, str]] = {}  # see Decision.notes
        self._weighted_pools = frozenset(p.name for p in config.pools
                                         if p.weighted_ecmp) if config else frozenset()
        # Per logged map ("services", "endpoint_slices"): the (cache, generation) our
        # copy of it matches, so the next snapshot's ChangeLog names what changed since.
        self._marks: dict[str, tuple[object, int]] = {}

    def decide(self, snapshot: Snapshot, config: Config, node_name: str,
               others_available: bool | None = None) -> Decision:
        """``others_available``: whether the API showed another undrained node
        (bgpd/kube/drainpeers.py); None when unknown. Read only while this node drains
        with ``drain.action: withdraw``."""
        trigger = drain_trigger(snapshot.node, config.drain)
        drain = (trigger, others_available if trigger and config.drain.action == "withdraw"
                 else None)
        if (config is not self._config or node_name != self._node_name
                or drain != self._drain):
            self._reset(config, node_name)
            self._drain = drain
        dirty: set[str] = set()
        by_label = config.selects_namespaces
        namespaces = snapshot.namespaces
        changed_ns = self._diff_namespaces(namespaces) if by_label else set()

        if (snapshot.node is not self._node or snapshot.pods is not self._pods
                or changed_ns):
            self._decide_local(snapshot.node, snapshot.pods, config, by_label, namespaces,
                               dirty)
        _, _, opted_out, note = self._node_judged

        changes = snapshot.changes
        changed_services = self._diff_slices(snapshot.endpoint_slices,
                                             self._logged(changes, "endpoint_slices"))
        services = snapshot.services
        logged = self._logged(changes, "services")
        if services is not self._services or changed_services or changed_ns:
            self._decide_services(services, changed_services, changed_ns, namespaces,
                                  by_label, config, node_name, dirty, logged)

        self._settle_all(dirty)
        rejecting = self._rejecting
        if self._winners:  # the losers of a contest are rejected too (conflict)
            by_prefix = self._by_prefix
            rejecting = rejecting.union(*(by_prefix.get(p, ()) for p in self._winners))
        if not opted_out:
            self._ann_shared = True
        self._sources_shared = True
        _trim_caches(self._n_claims, len(self._services_seen))
        return Decision({} if opted_out else self._ann,
                        {} if opted_out else dict(self._routes),
                        self._sources, dict(self._winners), opted_out, snapshot.synced,
                        note, frozenset(rejecting), trigger, dict(self._notes))

    def _logged(self, changes: Mapping[str, ChangeLog], name: str) -> list[str] | None:
        """Keys of map ``name`` changed since the one we last decided on, from the
        snapshot's ChangeLog (None: compare the maps instead). Moves our mark along."""
        log = changes.get(name)
        if log is None:
            self._marks.pop(name, None)
            return None
        mark = self._marks.get(name)
        self._marks[name] = (log.source, log.generation)
        if mark is None:
            return None
        keys = log.since(*mark)
        return None if keys is None else _unique(keys)

    def _ann_writable(self) -> dict[str, Announcement]:
        if self._ann_shared:  # a Decision holds it: copy first
            self._ann = dict(self._ann)
            self._ann_shared = False
        return self._ann

    def _sources_writable(self) -> dict[str, tuple[Claim, ...]]:
        if self._sources_shared:  # a Decision holds it: copy first
            self._sources = dict(self._sources)
            self._sources_shared = False
        return self._sources

    # ------------------------------------------------------------ node and pods

    def _decide_local(self, node: NodeInfo | None, pods: Mapping[str, PodInfo],
                      config: Config, by_label: bool,
                      namespaces: Mapping[str, NamespaceInfo], dirty: set[str]) -> None:
        if node is not self._node:
            self._node = node
            self._node_judged = self._judge_node(node, config)
        node_judged, pod_cidrs, _, _ = self._node_judged
        self._pods = pods
        local: dict[str, tuple[Claim, ...]] = {}
        if node_judged is not None:
            local[_NODE] = node_judged
        cidrs = tuple(pod_cidrs)
        memo = self._pod_memo
        judged = {}
        for key, pod in pods.items():
            labels = None
            if by_label:
                ns = namespaces.get(pod.namespace)
                labels = ns.labels if ns is not None else None
            seen = memo.get(key)
            if (seen is not None and seen[0] is pod and seen[1] == cidrs
                    and (seen[2] is labels or seen[2] == labels)):
                claims = seen[3]
            else:
                claims = pod_claims(pod, pod_cidrs, config, labels)
            judged[key] = (pod, cidrs, labels, claims)
            local[_POD + key] = claims
        self._pod_memo = judged
        for key in [k for k in self._local_keys if k not in local]:
            self._set_source(key, (), dirty)
        for key, claims in local.items():
            if self._sources.get(key) != claims:
                self._set_source(key, claims, dirty)
        self._local_keys = set(local)

    @staticmethod
    def _judge_node(node: NodeInfo | None, config: Config
                    ) -> tuple[tuple[Claim, ...] | None, list[IPNetwork], bool, str]:
        """(the node's claims, its pod CIDRs, whether it opted out, why)."""
        if node is None:
            return None, [], False, ""
        value, problem = ann.flag(node.labels, config.annotation_prefix, ann.NODE_ANNOUNCE,
                                  True)
        claims, pod_cidrs = node_claims(node, config)
        if problem:  # e.g. "flase": the node keeps announcing, and says why
            claims += (Claim(problem, None, "label", f"node/{node.name}", 0.0,
                             reasons.BAD_ANNOTATION, problem),)
        note = "" if value else (
            f"node label {config.annotation_prefix}/{ann.NODE_ANNOUNCE} is false")
        return claims, pod_cidrs, not value, note

    # ---------------------------------------------------------------- Services

    def _decide_services(self, services: Mapping[str, ServiceInfo], changed: set[str],
                         changed_ns: set[str], namespaces: Mapping[str, NamespaceInfo],
                         by_label: bool, config: Config, node_name: str,
                         dirty: set[str], logged: list[str] | None = None) -> None:
        """``logged``: the keys that changed since the last decision (from the cache's
        ChangeLog), so one change costs one lookup, not a pass over 20,000 Services."""
        seen = self._services_seen
        inputs = self._svc_inputs
        first = not seen  # nothing judged yet: every Service is new
        if first and services is not self._services:
            # Every Service is judged with its current slices and namespace, so what
            # changed since does not matter.
            self._services = services
            self._judge_all_services(services, namespaces, by_label, config, node_name, dirty)
            return
        todo: list[tuple[str, ServiceInfo]] = []
        if services is not self._services:
            if logged is not None:
                for key in logged:
                    svc = services.get(key)
                    if svc is None:
                        if seen.pop(key, None) is not None:  # deleted
                            inputs.pop(key, None)
                            forget_service(key)
                            self._set_source(_SVC + key, (), dirty)
                    elif seen.get(key) is not svc:
                        todo.append((key, svc))
            else:
                keys, gone = changed_and_removed(services, seen)
                for key in gone:
                    del seen[key]
                    inputs.pop(key, None)
                    forget_service(key)
                    self._set_source(_SVC + key, (), dirty)
                todo = [(k, services[k]) for k in keys]
            self._services = services
        if changed and not first:  # their EndpointSlices changed
            todo.extend((k, services[k]) for k in changed if k in services)
        if changed_ns:  # their namespace's labels changed
            todo.extend((k, svc) for k, svc in services.items() if svc.namespace in changed_ns)
        slices_of = self._slices_of
        set_source = self._set_source
        for key, svc in todo:
            seen[key] = svc
            slices = _ordered_slices(slices_of.get(key))
            ns_info = namespaces.get(svc.namespace) if by_label else None
            old = inputs.get(key)
            if (old is not None and old[0] is svc and old[1] == slices
                    and old[2] == ns_info):
                continue
            # The memo keeps what a full decision judged; a change only drops its entry
            # (making one costs more than the next full decision saves).
            forget_service(key)
            inputs[key] = (svc, slices, ns_info)
            set_source(_SVC + key, service_claims(
                svc, slices, node_name, config, ns_info.labels if ns_info else None), dirty)

    def _judge_all_services(self, services: Mapping[str, ServiceInfo],
                            namespaces: Mapping[str, NamespaceInfo], by_label: bool,
                            config: Config, node_name: str, dirty: set[str]) -> None:
        """Judge every Service when none has been judged yet: the loop above and
        _set_source() in one, without what only a change needs (there are no earlier
        inputs to compare and no earlier claims to take back: every Service source is new).
        A full decision does this 20,000 times, so it is kept to few steps a Service.

        Unless the node drains, a prefix that no one claims but this Service is settled
        here, as _settle_all() would settle one claim (no contest, no route, no note),
        instead of being marked dirty: nothing was announced for it unless something
        earlier in this decision took its claims back, and then it is dirty already and
        settled again. A second claim on it marks it dirty, to be settled with the others.

        A Service whose inputs are those the memo holds (memo.py) keeps the claims made
        then."""
        self._services_seen.update(services)
        slices_of = self._slices_of
        inputs = self._svc_inputs
        memo = service_memo(config, node_name)
        sources = self._sources_writable()
        by_prefix = self._by_prefix
        rejecting = self._rejecting
        n_claims = 0
        settle_here = not self._drain[0]
        ann = self._ann_writable() if settle_here else {}
        memo_get = memo.get
        for key, svc in services.items():
            group = slices_of.get(key)  # _ordered_slices(), inlined for its common cases
            slices = (() if group is None else tuple(group.values()) if len(group) == 1
                      else _ordered_slices(group))
            ns_info = namespaces.get(svc.namespace) if by_label else None
            entry = memo_get(key)
            if (entry is None or entry[0] is not svc or entry[1] != slices
                    or (entry[2] is not ns_info and entry[2] != ns_info)):
                claims = service_claims(svc, slices, node_name, config,
                                        ns_info.labels if ns_info else None)
                entry = memo[key] = make_entry(svc, slices, ns_info, claims, _SVC + key)
            inputs[key] = entry
            _, _, _, claims, source, prefix, one, announced, rejected = entry
            if not claims:
                continue
            sources[source] = claims
            n_claims += len(claims)
            if prefix is not None:  # one contending claim: make_entry() did the sorting
                holders = by_prefix.get(prefix)
                if holders is None:
                    by_prefix[prefix] = {source: one}
                    if settle_here:
                        if announced is not None:
                            ann[prefix] = announced
                    else:
                        dirty.add(prefix)
                else:  # pods or another Service claim it too
                    holders[source] = holders.get(source, ()) + one
                    dirty.add(prefix)
                if rejected:
                    rejecting.add(source)
                continue
            for c in claims:  # what _set_source() does for a source that had no claims
                reason = c.reason
                if reason in CONTENDING:
                    prefix = c.key
                    if prefix:
                        holders = by_prefix.get(prefix)
                        if holders is None:
                            by_prefix[prefix] = {source: (c,)}
                            if settle_here:
                                if reason == _ANNOUNCED:
                                    ann[prefix] = _announcement(c.prefix, c.attributes)
                                continue
                        else:  # pods claim it too, or this Service twice
                            holders[source] = holders.get(source, ()) + (c,)
                        dirty.add(prefix)
                elif reason in _REJECTIONS:
                    rejecting.add(source)
        self._n_claims += n_claims

    def _diff_namespaces(self, namespaces: Mapping[str, NamespaceInfo]) -> set[str]:
        """Names of namespaces whose labels changed (or that came or went)."""
        prev = self._namespaces
        if namespaces is prev:
            return set()
        self._namespaces = namespaces
        changed = {name for name in prev.keys() - namespaces.keys()}
        changed.update(name for name, ns in namespaces.items() if prev.get(name) != ns)
        return changed

    def _diff_slices(self, slices: Mapping[str, EndpointSliceInfo],
                     logged: list[str] | None = None) -> set[str]:
        """Service keys whose EndpointSlices changed since the last decision (``logged``:
        the slice keys that changed, from the cache's ChangeLog)."""
        if slices is self._slices:
            return set()
        self._slices = slices
        seen = self._slices_seen
        slices_of = self._slices_of
        if not seen:  # the first slices (a fresh Decider): every one is new
            seen.update(slices)
            slices_of.clear()  # at most emptied groups: every slice in a group is in seen
            for key, sl in slices.items():
                skey = f"{sl.namespace}/{sl.service_name}"  # sl.service_key, inlined
                group = slices_of.get(skey)
                if group is None:
                    slices_of[skey] = {key: sl}
                else:
                    group[key] = sl
            return set(slices_of)
        changed: set[str] = set()
        if logged is not None:
            keys = []
            for key in logged:
                if key in slices:
                    if seen.get(key) is not slices[key]:
                        keys.append(key)
                elif key in seen:  # deleted
                    changed.add(self._forget_slice(key))
        else:
            keys, gone = changed_and_removed(slices, seen)
            changed.update(self._forget_slice(key) for key in gone)
        for key in keys:
            sl = slices[key]
            old = seen.get(key)
            seen[key] = sl
            skey = sl.service_key
            if old is not None and old.service_key != skey:
                slices_of.get(old.service_key, {}).pop(key, None)
                changed.add(old.service_key)
            group = slices_of.get(skey)
            if group is None:
                slices_of[skey] = {key: sl}
            else:
                group[key] = sl
            changed.add(skey)
        return changed

    def _forget_slice(self, key: str) -> str:
        """Drop a deleted EndpointSlice; returns the key of the Service it belonged to."""
        old = self._slices_seen.pop(key)
        self._slices_of.get(old.service_key, {}).pop(key, None)
        return old.service_key

    # ------------------------------------------------------------ per prefix

    def _set_source(self, key: str, claims: tuple[Claim, ...], dirty: set[str]) -> None:
        by_prefix = self._by_prefix
        old = self._sources.get(key)
        self._n_claims += len(claims) - (len(old) if old is not None else 0)
        if old is not None:
            for c in old:
                if c.key and c.reason in CONTENDING:
                    group = by_prefix.get(c.key)
                    if group is not None:
                        group.pop(key, None)
                        if not group:
                            del by_prefix[c.key]
                    dirty.add(c.key)
        if not claims:
            if old is not None:
                del self._sources_writable()[key]
                self._rejecting.discard(key)
            return
        if old is not claims:
            self._sources_writable()[key] = claims
        # Only contending claims can change an outcome; the rest wait in _sources for explain.
        contending = []
        rejected = False
        for c in claims:
            if c.reason in CONTENDING:
                if c.key:
                    contending.append(c)
            elif c.reason in _REJECTIONS:
                rejected = True
        if rejected:
            self._rejecting.add(key)
        elif old is not None:
            self._rejecting.discard(key)
        if len(contending) == 1:  # the common case (one address per Service), kept cheap
            c = contending[0]
            group = by_prefix.get(c.key)
            if group is None:
                by_prefix[c.key] = {key: (c,)}
            else:
                group[key] = (c,)
            dirty.add(c.key)
            return
        mine: dict[str, list[Claim]] = {}
        for c in contending:
            mine.setdefault(c.key, []).append(c)
        for prefix, cs in mine.items():
            by_prefix.setdefault(prefix, {})[key] = tuple(cs)
            dirty.add(prefix)

    def _settle_all(self, prefixes: set[str]) -> None:
        """``_settle()`` each prefix, with its commonest case here: one claim on it and no
        drain (a Service's own address), where there is no contest, note or route. A full
        decision settles ~20,000 prefixes, most of them that case."""
        settle = self._settle
        if self._drain[0]:  # every address may be drained: the general path
            for prefix in prefixes:
                settle(prefix)
            return
        by_prefix = self._by_prefix
        notes, winners, routes = self._notes, self._winners, self._routes
        for prefix in prefixes:
            group = by_prefix.get(prefix)
            if group is None or len(group) != 1:
                settle(prefix)
                continue
            (only,) = group.values()
            if len(only) != 1 or only[0].use == POD_EXTERNAL_IP:
                settle(prefix)
                continue
            c = only[0]  # one claim: no contest
            if notes:
                notes.pop(prefix, None)
            if winners:
                winners.pop(prefix, None)
            if routes:
                routes.pop(prefix, None)
            if c.reason == _ANNOUNCED:
                old = self._ann.get(prefix)
                if old is None or (old.attributes is not c.attributes
                                   and old.attributes != c.attributes):
                    self._ann_writable()[prefix] = _announcement(c.prefix, c.attributes)
            elif prefix in self._ann:
                del self._ann_writable()[prefix]

    def _settle(self, prefix: str) -> None:
        """Re-judge one prefix: the contest between owners, then the announcement and route.

        Only claims that passed the node-independent checks contend, oldest first, then by
        owner name, so every node picks the same winner whatever endpoints it runs. (One
        claim and no drain: see _settle_all.)
        """
        group = self._by_prefix.get(prefix)
        # By source key, so attributes merge the same way whatever order sources arrived in.
        claims = [c for _, cs in sorted((group or {}).items()) for c in cs]
        contenders: dict[str, float] = {}
        for c in claims:
            if c.reason in CONTENDING and c.use != POD_CIDR:
                owner = _contender(c)
                contenders[owner] = min(c.created, contenders.get(owner, c.created))
        winner = None
        if len(contenders) > 1:
            winner = min((created, owner) for owner, created in contenders.items())
            self._winners[prefix] = winner
        else:
            self._winners.pop(prefix, None)
        attrs = None
        net = None
        vias: set[str] = set()
        used: list[Claim] = []
        for c in claims:
            if c.reason != _ANNOUNCED:
                continue
            if winner is not None and c.use != POD_CIDR and _contender(c) != winner[1]:
                continue
            attrs = c.attributes if attrs is None else attrs.merged(c.attributes)
            net = c.prefix
            used.append(c)
            if c.use == POD_EXTERNAL_IP and c.via:
                vias.add(c.via)
        if attrs is not None and used and all(c.use in _DRAINABLE for c in used):
            attrs, withdrawn = self._adjust(prefix, attrs, used, len(vias))
            if withdrawn:
                net = None
        elif self._notes:
            self._notes.pop(prefix, None)
        if net is None or attrs is None:
            if prefix in self._ann:
                del self._ann_writable()[prefix]
        else:
            announcement = _announcement(net, attrs)
            if self._ann.get(prefix) != announcement:
                self._ann_writable()[prefix] = announcement
        if vias and net is not None:
            self._routes[prefix] = KernelRoute(net, tuple(NextHop(gateway=v)
                                                          for v in sorted(vias)))
        else:
            self._routes.pop(prefix, None)

    def _adjust(self, prefix: str, attrs: Attributes, used: list[Claim], pods: int
                ) -> tuple[Attributes, bool]:
        """What the outcome adds to a Service or pod-owned address: a link bandwidth for
        pods behind a weighted pool (a Service's own is set in services.py), and the
        drain. Returns the attributes and whether the drain withdraws the address."""
        config = self._config
        assert config is not None
        texts = []
        if pods and any(c.pool in self._weighted_pools for c in used
                        if c.use == POD_EXTERNAL_IP):
            bandwidth, why = link_bandwidth(pods, "pod", " on this node", config.weighted_ecmp)
            attrs = dataclasses.replace(attrs, link_bandwidth=bandwidth)
            texts.append(why)
        trigger, others = self._drain
        effect = ""
        if trigger:
            drain = config.drain
            if withdraws(drain, all(self._any_node_delivers(c) for c in used), others):
                effect = WITHDRAWN
                texts = [f"withdrawn: {trigger} and another undrained node serves it "
                         f"(drain.action withdraw)"]
            else:
                attrs = less_preferred(attrs, drain)
                effect = LESS_PREFERRED
                how = (f"MED {drain.med}" if drain.action == "med"
                       else f"AS path +{drain.prepend} (local preference 0 to iBGP)")
                texts.append(f"less preferred: {trigger} ({how})")
        if texts:
            self._notes[prefix] = (effect, "; ".join(texts))
        else:
            self._notes.pop(prefix, None)
        return attrs, effect == WITHDRAWN

    def _any_node_delivers(self, claim: Claim) -> bool:
        """Can every node deliver this address (cluster IPs, eTP=Cluster addresses)?"""
        if claim.use == POD_EXTERNAL_IP or not claim.owner.startswith("service/"):
            return False
        svc = self._services.get(claim.owner[len("service/"):])
        if svc is None:
            return False
        policy = (svc.internal_traffic_policy if claim.use == CLUSTER_IP
                  else svc.external_traffic_policy)
        return policy != "Local"


CACHE_SLACK = 8192
"""Parsed addresses the caches may hold beyond twice the claims in play."""


def _trim_caches(live: int, services: int = 0) -> None:
    """Empty the address caches when they hold far more than the addresses still in play:
    a tenant who writes 65,536 distinct addresses and deletes them must not leave ~75 MB of
    parsed addresses in every agent until the caches cycle. In steady state every cached
    address belongs to a claim, so the caches are never emptied. Likewise the Service memo
    against the ``services`` in play."""
    # Plain Services' addresses are parsed into their tables, not the parse cache: both
    # count.
    cached = addresses._host_prefix.cache_info().currsize + plain_size()
    if cached > 2 * live + CACHE_SLACK:
        addresses._host_prefix.cache_clear()
        claim_rules._pool_verdict.cache_clear()
        clear_plain_verdicts()
    if memo_size() > 2 * services + CACHE_SLACK:
        clear_service_memo()


def decide(snapshot: Snapshot, config: Config, node_name: str) -> Decision:
    """One-shot decision by a fresh Decider (tests, ``bgpd explain`` offline)."""
    return Decider().decide(snapshot, config, node_name)
