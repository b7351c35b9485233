"""The Kubernetes adapter's memory and recovery paths: maps shared with snapshots until the
next write (copy on write), port lists shared between objects, and a watcher that gets an
answer again after failing telling the store at once (readiness follows)."""

from __future__ import annotations

from bgpd.kube import convert
from bgpd.kube.cache import SERVICE, ClusterCache
from bgpd.kube.errors import KubeError
from bgpd.kube.watch import Resource, Watcher, WatchTiming
from bgpd.model import ServiceInfo


def svc(name: str, ip: str = "198.51.100.1") -> ServiceInfo:
    return ServiceInfo(namespace="ns", name=name, external_ips=(ip,))


def make_cache() -> tuple[ClusterCache, list[int]]:
    wakeups = [0]

    def notify() -> None:
        wakeups[0] += 1

    return ClusterCache(client=None, node_name="node1", notify=notify), wakeups  # type: ignore[arg-type]


def test_a_quiet_cache_holds_each_map_once():
    cache, _ = make_cache()
    cache.replace(SERVICE, {"ns/a": svc("a"), "ns/b": svc("b")})
    first = cache.snapshot().services
    assert cache.snapshot().services is first  # no change, no new map
    live = cache._maps[SERVICE]
    assert dict(first) == live and first == live  # the view is of the live map itself


def test_a_write_after_a_snapshot_copies_and_leaves_the_snapshot_alone():
    cache, wakeups = make_cache()
    a, b = svc("a"), svc("b")
    cache.replace(SERVICE, {"ns/a": a, "ns/b": b})
    before = cache.snapshot().services
    cache.apply(SERVICE, "ns/c", svc("c"))
    cache.apply(SERVICE, "ns/a", None)
    cache.apply(SERVICE, "ns/b", svc("b", "198.51.100.2"))
    assert dict(before) == {"ns/a": a, "ns/b": b}
    after = cache.snapshot().services
    assert set(after) == {"ns/b", "ns/c"} and after["ns/b"].external_ips == ("198.51.100.2",)
    assert wakeups[0] == 4
    cache.apply(SERVICE, "ns/d", svc("d"))  # one copy per snapshot, not per write
    assert set(after) == {"ns/b", "ns/c"}
    assert set(cache.snapshot().services) == {"ns/b", "ns/c", "ns/d"}


def test_a_relist_replaces_a_shared_map_without_touching_the_snapshot():
    cache, _ = make_cache()
    cache.replace(SERVICE, {"ns/a": svc("a")})
    before = cache.snapshot().services
    cache.replace(SERVICE, {"ns/b": svc("b")})
    cache.apply(SERVICE, "ns/c", svc("c"))
    assert set(before) == {"ns/a"}
    assert set(cache.snapshot().services) == {"ns/b", "ns/c"}


def test_port_lists_are_shared():
    def raw(name: str) -> dict:
        return {"metadata": {"name": name, "namespace": "ns"},
                "spec": {"ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}}

    first, second = convert.service_from(raw("a")), convert.service_from(raw("b"))
    assert first.ports == (("http", "TCP"),) and first.ports is second.ports

    def slice_raw(name: str) -> dict:
        return {"metadata": {"name": name, "namespace": "ns",
                             "labels": {convert.SERVICE_NAME_LABEL: "a"}},
                "addressType": "IPv4", "endpoints": [],
                "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}

    one, two = (convert.endpoint_slice_from(slice_raw(n)) for n in ("a-1", "a-2"))
    assert one.ports == (("http", "TCP"),) and one.ports is two.ports is first.ports


class Store:
    def __init__(self) -> None:
        self.changed_kinds: list[str] = []

    def replace(self, kind, items) -> None:
        pass

    def apply(self, kind, key, value) -> None:
        pass

    def mark_synced(self, kind) -> None:
        pass

    def health_changed(self, kind: str) -> None:
        self.changed_kinds.append(kind)


class Client:
    """Lists succeed or fail as told."""

    def __init__(self) -> None:
        self.fail = False

    def list_page(self, path, query, on_item):
        if self.fail:
            raise KubeError("connection refused")
        return {"metadata": {"resourceVersion": "7"}}, 60


def test_the_first_failure_and_the_first_answer_after_it_are_told_to_the_store():
    store, client = Store(), Client()
    watcher = Watcher(client, Resource(SERVICE, "/x", convert.service_from), store,
                      WatchTiming())
    watcher._list()
    assert store.changed_kinds == []  # healthy from the start: nothing to tell
    client.fail = True
    for _ in range(2):
        try:
            watcher._list()
        except KubeError as exc:
            watcher._error(exc)
    assert store.changed_kinds == [SERVICE]  # once, at the first failure
    client.fail = False
    watcher._list()
    watcher._list()
    assert store.changed_kinds == [SERVICE, SERVICE]  # and once at the first success


def test_a_cache_wakes_the_agent_when_a_watchers_health_changes():
    cache, wakeups = make_cache()
    cache.health_changed(SERVICE)
    assert wakeups[0] == 1
