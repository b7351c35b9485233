"""The decision: from a Snapshot and the Config to announcements, kernel routes and reasons.

``Decider.decide`` returns what a pure function of (snapshot, config, node) would; the Decider
only remembers, per source object, the claims it produced and the per-prefix outcome, so that
after one Service changes it re-judges that Service and the prefixes it touches instead of
20,000 Services. ``decide()`` below is the memo-less form; tests check both agree.
"""

from __future__ import annotations

from collections.abc import Mapping

from bgpd.config import Config
from bgpd.model import (
    Announcement,
    EndpointSliceInfo,
    IPNetwork,
    KernelRoute,
    NamespaceInfo,
    NextHop,
    ServiceInfo,
    Snapshot,
)
from bgpd.policy import annotations as ann
from bgpd.policy import reasons
from bgpd.policy.claims import CONTENDING, POD_CIDR, POD_EXTERNAL_IP, Claim
from bgpd.policy.pods import node_claims, pod_claims
from bgpd.policy.services import service_claims

# Source keys order the claims: the node first, then pods, then Services, each by name.
_NODE = "0"
_POD = "1:"
_SVC = "2:"


def _contender(claim: Claim) -> str:
    # Pods of one namespace sharing an address are one contender: that is how ECMP is
    # asked for. Pods of another namespace are another contender, never a next hop of it.
    if claim.use == POD_EXTERNAL_IP:
        return claim.owner.rpartition("/")[0] + "/*"
    return claim.owner


class Decision:
    """The outcome of one decision, keyed by canonical prefix text ("198.51.100.7/32"). ``claims`` (every candidate with its verdict) is built on
    first use: a reconcile needs the announcements at once, ``explain`` the claims later."""

    def __init__(self, announcements: dict[str, Announcement],
                 kernel_routes: dict[str, KernelRoute],
                 sources: Mapping[str, tuple[Claim, ...]],
                 winners: Mapping[str, tuple[float, str]],
                 node_opted_out: bool, synced: bool, opt_out_note: str = ""):
        self.announcements = announcements
        self.kernel_routes = kernel_routes
        self.node_opted_out = node_opted_out  # withdrawing everything is intended
        self.synced = synced
        self._sources = sources
        self._winners = winners
        self._opt_out_note = opt_out_note
        self._claims: tuple[Claim, ...] | None = None
        self._index: dict[IPNetwork, list[Claim]] | None = None

    @property
    def claims(self) -> tuple[Claim, ...]:
        if self._claims is None:
            out = []
            winners = self._winners
            for key in sorted(self._sources):
                for c in self._sources[key]:
                    win = winners.get(c.key) if c.key else None
                    if (win is not None and c.reason in CONTENDING and c.use != POD_CIDR
                            and _contender(c) != win[1]):
                        c = c.verdict(reasons.CONFLICT,
                                      f"{c.prefix} is claimed by {win[1]} (older)")
                    elif self.node_opted_out and c.announced:
                        c = c.verdict(reasons.OPTED_OUT, self._opt_out_note)
                    out.append(c)
            self._claims = tuple(out)
        return self._claims

    @property
    def rejections(self) -> list[Claim]:
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
    """Incremental decisions; the answer equals ``decide()`` for the same arguments."""

    def __init__(self) -> None:
        self._reset(None, "")

    def _reset(self, config: Config | None, node_name: str) -> None:
        self._config = config
        self._node_name = node_name
        self._slices: Mapping[str, EndpointSliceInfo] = {}
        self._slices_of: dict[str, dict[str, EndpointSliceInfo]] = {}  # service key -> slices
        self._services: Mapping[str, ServiceInfo] = {}
        self._namespaces: Mapping[str, NamespaceInfo] = {}
        self._svc_inputs: dict[str, tuple[ServiceInfo, tuple[EndpointSliceInfo, ...],
                                          NamespaceInfo | None]] = {}
        self._sources: dict[str, tuple[Claim, ...]] = {}
        self._by_prefix: dict[str, dict[str, tuple[Claim, ...]]] = {}
        self._ann: dict[str, Announcement] = {}
        self._routes: dict[str, KernelRoute] = {}
        self._winners: dict[str, tuple[float, str]] = {}

    def decide(self, snapshot: Snapshot, config: Config, node_name: str) -> Decision:
        if config is not self._config or node_name != self._node_name:
            self._reset(config, node_name)
        dirty: set[str] = set()
        node = snapshot.node

        local: dict[str, tuple[Claim, ...]] = {}
        pod_cidrs: list[IPNetwork] = []
        opted_out = False
        if node is not None:
            value, problem = ann.flag(node.labels, config.annotation_prefix, ann.NODE_ANNOUNCE,
                                      True)
            opted_out = not value
            local[_NODE], pod_cidrs = node_claims(node, config)
            if problem:  # e.g. "flase": the node keeps announcing, and says why
                local[_NODE] += (Claim(problem, None, "label", f"node/{node.name}", 0.0,
                                       reasons.BAD_ANNOTATION, problem),)
        by_label = config.selects_namespaces
        namespaces = snapshot.namespaces

        def labels(name: str) -> Mapping[str, str] | None:
            if not by_label:
                return None
            ns = namespaces.get(name)
            return ns.labels if ns is not None else None

        for key, pod in snapshot.pods.items():
            local[_POD + key] = pod_claims(pod, pod_cidrs, config, labels(pod.namespace))
        for key in [k for k in self._sources if k[0] in "01" and k not in local]:
            self._set_source(key, (), dirty)
        for key, claims in local.items():
            if self._sources.get(key) != claims:
                self._set_source(key, claims, dirty)

        changed_services = self._diff_slices(snapshot.endpoint_slices)
        changed_ns = self._diff_namespaces(namespaces) if by_label else set()
        services = snapshot.services
        if services is not self._services or changed_services or changed_ns:
            inputs = self._svc_inputs
            for key in self._services.keys() - services.keys():
                inputs.pop(key, None)
                self._set_source(_SVC + key, (), dirty)
            for key, svc in services.items():
                seen = inputs.get(key)
                if (seen is not None and seen[0] is svc and key not in changed_services
                        and svc.namespace not in changed_ns):
                    continue
                group = self._slices_of.get(key)
                if not group:
                    slices: tuple[EndpointSliceInfo, ...] = ()
                elif len(group) == 1:
                    slices = tuple(group.values())
                else:  # sorted, so the comparison below does not depend on arrival order
                    slices = tuple(group[k] for k in sorted(group))
                ns_info = namespaces.get(svc.namespace) if by_label else None
                if (seen is not None and seen[0] is svc and seen[1] == slices
                        and seen[2] == ns_info):
                    continue
                inputs[key] = (svc, slices, ns_info)
                self._set_source(_SVC + key, service_claims(
                    svc, slices, node_name, config, ns_info.labels if ns_info else None),
                    dirty)
            self._services = services

        for prefix in dirty:
            self._settle(prefix)
        note = ""
        if opted_out:
            note = f"node label {config.annotation_prefix}/{ann.NODE_ANNOUNCE} is false"
        return Decision({} if opted_out else dict(self._ann),
                        {} if opted_out else dict(self._routes),
                        dict(self._sources), dict(self._winners), opted_out, snapshot.synced,
                        note)

    def _diff_namespaces(self, namespaces: Mapping[str, NamespaceInfo]) -> set[str]:
        """Names of namespaces whose labels changed (or that came or went)."""
        prev = self._namespaces
        if namespaces is prev:
            return set()
        self._namespaces = namespaces
        changed = {name for name in prev.keys() - namespaces.keys()}
        changed.update(name for name, ns in namespaces.items() if prev.get(name) != ns)
        return changed

    def _diff_slices(self, slices: Mapping[str, EndpointSliceInfo]) -> set[str]:
        """Service keys whose EndpointSlices changed since the last decision."""
        if slices is self._slices:
            return set()
        changed: set[str] = set()
        prev = self._slices
        for key in prev.keys() - slices.keys():
            old = prev[key]
            changed.add(old.service_key)
            self._slices_of.get(old.service_key, {}).pop(key, None)
        slices_of = self._slices_of
        for key, sl in slices.items():
            old = prev.get(key)
            if old is sl:
                continue
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
        self._slices = slices
        return changed

    def _set_source(self, key: str, claims: tuple[Claim, ...], dirty: set[str]) -> None:
        by_prefix = self._by_prefix
        old = self._sources.get(key)
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
                del self._sources[key]
            return
        self._sources[key] = claims
        # Only contending claims can change an outcome; the rest wait in _sources for explain.
        contending = [c for c in claims if c.key and c.reason in CONTENDING]
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

    def _settle(self, prefix: str) -> None:
        """Re-judge one prefix: the contest between owners, then the announcement and route.

        Only claims that passed the node-independent checks contend, oldest first, then by
        owner name, so every node picks the same winner whatever endpoints it runs.
        """
        group = self._by_prefix.get(prefix)
        if group is not None and len(group) == 1:
            (only,) = group.values()
            if len(only) == 1 and only[0].use != POD_EXTERNAL_IP:  # one claim: no contest
                c = only[0]
                if prefix in self._winners:
                    del self._winners[prefix]
                if prefix in self._routes:
                    del self._routes[prefix]
                if c.reason == reasons.ANNOUNCED:
                    old = self._ann.get(prefix)
                    if old is None or old.attributes != c.attributes:
                        self._ann[prefix] = Announcement(c.prefix, c.attributes)
                else:
                    self._ann.pop(prefix, None)
                return
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
        for c in claims:
            if c.reason != reasons.ANNOUNCED:
                continue
            if winner is not None and c.use != POD_CIDR and _contender(c) != winner[1]:
                continue
            attrs = c.attributes if attrs is None else attrs.merged(c.attributes)
            net = c.prefix
            if c.use == POD_EXTERNAL_IP and c.via:
                vias.add(c.via)
        if net is None or attrs is None:
            self._ann.pop(prefix, None)
        else:
            self._ann[prefix] = Announcement(net, attrs)
        if vias and net is not None:
            self._routes[prefix] = KernelRoute(net, tuple(NextHop(gateway=v)
                                                          for v in sorted(vias)))
        else:
            self._routes.pop(prefix, None)


def decide(snapshot: Snapshot, config: Config, node_name: str) -> Decision:
    """One-shot decision without memo (tests, ``bgpd explain`` offline)."""
    return Decider().decide(snapshot, config, node_name)
