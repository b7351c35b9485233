"""In-memory fakes of the agent's ports (bgpd/ports.py), recording every call."""

from __future__ import annotations

from dataclasses import dataclass, field

from bgpd.model import Announcement, KernelRoute, LearnedRoute, PeerStatus, Snapshot


class FakeCluster:
    def __init__(self, snapshot: Snapshot, healthy: bool = True):
        self.snap = snapshot
        self.is_healthy = healthy
        self.started = self.stopped = False

    def start(self):
        self.started = True

    def stop(self):
        self.stopped = True

    def snapshot(self):
        return self.snap

    def healthy(self):
        return self.is_healthy

    def stats(self):
        return {}


class FakeSpeaker:
    def __init__(self, bgp, router_id):
        self.bgp, self.router_id = bgp, router_id
        self.calls: list[tuple] = []
        self.desired: set[Announcement] = set()
        self.learned_routes: dict = {}
        self.exported: dict = {}
        self.adopted: list = []
        self.all_end_of_rib = False
        self.started = False
        self.stopped_with: bool | None = None

    def start(self):
        self.started = True
        self.calls.append(("start",))

    def stop(self, withdraw=False):
        self.stopped_with = withdraw
        self.calls.append(("stop", withdraw))

    def set_import_config(self, config):
        self.import_config = config

    def set_desired(self, announcements):
        self.desired = set(announcements)
        self.calls.append(("set_desired", frozenset(str(a.prefix) for a in self.desired)))

    def peers(self):
        return [PeerStatus(p.address, p.asn, "established", 1.0, len(self.desired))
                for p in self.bgp.peers]

    def announced(self, peer):
        return set(self.desired)

    def learned(self) -> dict:
        return self.learned_routes

    def refused(self, peer):
        return {}

    def received(self, peer):
        return None

    def export_received(self):
        return self.exported

    def adopt_received(self, received, elapsed=0.0):
        self.adopted.append((received, elapsed))

    def end_of_rib_from_all(self):
        return self.all_end_of_rib

    def counters(self):
        return {"exabgp_restarts": 0}


@dataclass
class SyncResult:
    failures: list = field(default_factory=list)
    conflicts: list = field(default_factory=list)


class FakeKernel:
    def __init__(self):
        self.routes: dict[str, KernelRoute] = {}
        self.syncs = 0
        self.closed_with: bool | None = None

    def sync(self, desired):
        self.syncs += 1
        self.routes = {str(r.prefix): r for r in desired}
        return SyncResult()

    def owned(self):
        return list(self.routes.values())

    def close(self, remove=False):
        self.closed_with = remove


class FakeEvents:
    def __init__(self):
        self.events: list[tuple[str, str, str, str, str]] = []
        self.cluster_wide: list[bool] = []
        self.uids: list[str] = []

    def record(self, kind, namespace, name, reason, message, cluster_wide=False, uid=""):
        self.events.append((kind, namespace, name, reason, message))
        self.cluster_wide.append(cluster_wide)
        self.uids.append(uid)


class Speakers:
    """A speaker factory remembering every speaker it made."""

    def __init__(self):
        self.made: list[FakeSpeaker] = []

    def __call__(self, bgp, router_id):
        speaker = FakeSpeaker(bgp, router_id)
        self.made.append(speaker)
        return speaker


def learned(peer, prefix, next_hop):
    import ipaddress

    return LearnedRoute(peer, ipaddress.ip_network(prefix), next_hop)
