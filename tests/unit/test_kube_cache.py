"""ClusterCache and watcher logic without an API server: diffs, notifications, snapshots,
watch-event handling and backoff (the real list/watch is in tests/integration)."""

from __future__ import annotations

import json

import pytest

from bgpd.kube import convert
from bgpd.kube.cache import ENDPOINT_SLICE, NAMESPACE, NODE, POD, SERVICE, ClusterCache
from bgpd.kube.errors import GoneError, KubeError
from bgpd.kube.watch import BACKOFF_JITTER, Backoff, Resource, Watcher, WatchTiming
from bgpd.model import NodeInfo, PodInfo, ServiceInfo


class Wakeups:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1


def make_cache() -> tuple[ClusterCache, Wakeups]:
    wakeups = Wakeups()
    return ClusterCache(client=None, node_name="node1", notify=wakeups), wakeups  # type: ignore[arg-type]


def svc(name: str, ip: str = "198.51.100.1") -> ServiceInfo:
    return ServiceInfo(namespace="ns", name=name, external_ips=(ip,))


def test_apply_notifies_only_on_change():
    cache, wakeups = make_cache()
    cache.apply(SERVICE, "ns/a", svc("a"))
    cache.apply(SERVICE, "ns/a", svc("a"))  # equal: no wake-up
    cache.apply(SERVICE, "ns/missing", None)  # deleting nothing: no wake-up
    assert wakeups.count == 1
    cache.apply(SERVICE, "ns/a", None)
    assert wakeups.count == 2 and cache.snapshot().services == {}


def test_replace_diffs_and_keeps_unchanged_instances():
    cache, wakeups = make_cache()
    a, b = svc("a"), svc("b")
    cache.replace(SERVICE, {"ns/a": a, "ns/b": b})
    assert wakeups.count == 1
    cache.replace(SERVICE, {"ns/a": svc("a"), "ns/b": svc("b")})  # a relist finding nothing new
    assert wakeups.count == 1
    cache.replace(SERVICE, {"ns/a": svc("a"), "ns/c": svc("c")})
    assert wakeups.count == 2
    snap = cache.snapshot()
    assert set(snap.services) == {"ns/a", "ns/c"}
    assert snap.services["ns/a"] is a  # unchanged object kept: no delete/add


def test_snapshot_is_consistent_read_only_and_cheap():
    cache, _ = make_cache()
    cache.apply(NODE, "node1", NodeInfo(name="node1"))
    cache.apply(POD, "ns/p", PodInfo(namespace="ns", name="p"))
    cache.apply(SERVICE, "ns/a", svc("a"))
    first = cache.snapshot()
    assert first.node == NodeInfo(name="node1") and not first.synced
    with pytest.raises(TypeError):
        first.services["ns/x"] = svc("x")  # type: ignore[index]
    cache.apply(SERVICE, "ns/b", svc("b"))
    second = cache.snapshot()
    assert set(first.services) == {"ns/a"}  # the old snapshot did not move
    assert set(second.services) == {"ns/a", "ns/b"}
    assert second.pods is first.pods  # unchanged maps are not copied again


def test_synced_when_every_kind_listed():
    cache, wakeups = make_cache()
    for kind in (NODE, POD, SERVICE, NAMESPACE):
        cache.mark_synced(kind)
        assert not cache.synced
    cache.mark_synced(ENDPOINT_SLICE)
    assert cache.synced and cache.snapshot().synced and cache.wait_synced(0)
    assert wakeups.count == 1


class FakeStore:
    def __init__(self) -> None:
        self.items: dict = {}

    def replace(self, kind, items):
        self.items = dict(items)

    def apply(self, kind, key, value):
        if value is None:
            self.items.pop(key, None)
        else:
            self.items[key] = value

    def mark_synced(self, kind):
        pass


def event(type_: str, obj: dict) -> bytes:
    return json.dumps({"type": type_, "object": obj}).encode()


def service_obj(name: str, rv: str, ips=("198.51.100.1",)) -> dict:
    return {
        "metadata": {"namespace": "ns", "name": name, "resourceVersion": rv},
        "spec": {"externalIPs": list(ips)},
    }


def test_watch_events_update_store_and_resource_version():
    store = FakeStore()
    watcher = Watcher(
        None, Resource(SERVICE, "/api/v1/services", convert.service_from), store, WatchTiming()
    )  # type: ignore[arg-type]
    rv = watcher._event(event("ADDED", service_obj("a", "10")), "1")
    assert rv == "10" and store.items["ns/a"].external_ips == ("198.51.100.1",)
    rv = watcher._event(event("MODIFIED", service_obj("a", "11", ["198.51.100.2"])), rv)
    assert store.items["ns/a"].external_ips == ("198.51.100.2",)
    rv = watcher._event(event("BOOKMARK", {"metadata": {"resourceVersion": "15"}}), rv)
    assert rv == "15" and watcher.stats.events == 2
    rv = watcher._event(event("DELETED", service_obj("a", "16")), rv)
    assert rv == "16" and store.items == {}


def test_watch_error_events():
    watcher = Watcher(
        None, Resource(SERVICE, "/x", convert.service_from), FakeStore(), WatchTiming()
    )  # type: ignore[arg-type]
    with pytest.raises(GoneError):
        watcher._event(event("ERROR", {"kind": "Status", "code": 410, "message": "too old"}), "1")
    with pytest.raises(KubeError) as err:
        watcher._event(event("ERROR", {"kind": "Status", "code": 500, "message": "boom"}), "1")
    assert not isinstance(err.value, GoneError)


def test_an_undecodable_event_is_skipped_and_the_stream_goes_on():
    store = FakeStore()
    watcher = Watcher(None, Resource(SERVICE, "/x", convert.service_from), store,
                      WatchTiming())  # type: ignore[arg-type]
    # Not JSON: skipped, and the resume point stays where it was (a line cut by a broken
    # connection is fetched again when the watch resumes).
    assert watcher._event(b"{not json", "7") == "7"
    assert watcher.stats.skipped == 1 and "undecodable" in watcher.stats.last_skip
    svc = {"metadata": {"namespace": "ns", "name": "s", "resourceVersion": "8"},
           "spec": {"clusterIP": "10.96.0.1"}}
    assert watcher._event(event("ADDED", svc), "7") == "8"
    assert "ns/s" in store.items


def test_deeply_nested_json_an_api_server_accepts_still_decodes():
    depth = 9_000  # the API server's Go decoder takes up to 10,000 levels; Python ~1,000
    nested = '{"f:a":' * depth + "{}" + "}" * depth
    svc = (b'{"type":"ADDED","object":{"metadata":{"namespace":"ns","name":"deep",'
           b'"resourceVersion":"9","managedFields":[{"fieldsV1":' + nested.encode()
           + b'}]},"spec":{"clusterIP":"10.96.0.1"}}}')
    store = FakeStore()
    watcher = Watcher(None, Resource(SERVICE, "/x", convert.service_from), store,
                      WatchTiming())  # type: ignore[arg-type]
    assert watcher._event(svc, "8") == "9"
    assert store.items["ns/deep"].cluster_ips == ("10.96.0.1",)


def test_a_converter_that_raises_costs_one_object_not_the_watch():
    def broken(obj):
        if obj["metadata"]["name"] == "bad":
            raise RecursionError("deep")
        return convert.service_from(obj)

    store = FakeStore()
    watcher = Watcher(None, Resource(SERVICE, "/x", broken), store,
                      WatchTiming())  # type: ignore[arg-type]
    for name, rv in (("bad", "2"), ("good", "3")):
        raw = {"metadata": {"namespace": "ns", "name": name, "resourceVersion": rv}}
        assert watcher._event(event("ADDED", raw), "1") == rv
    assert set(store.items) == {"ns/good"}
    assert "cannot convert: RecursionError" in watcher.stats.last_skip


def test_unusable_update_forgets_old_version():
    store = FakeStore()
    watcher = Watcher(
        None, Resource(ENDPOINT_SLICE, "/x", convert.endpoint_slice_from), store, WatchTiming()
    )  # type: ignore[arg-type]
    labelled = {
        "metadata": {"namespace": "ns", "name": "s", "labels": {"kubernetes.io/service-name": "a"}}
    }
    watcher._event(event("ADDED", labelled), "1")
    assert "ns/s" in store.items
    watcher._event(
        event("MODIFIED", {"metadata": {"namespace": "ns", "name": "s"}}), "2"
    )  # label removed
    assert "ns/s" not in store.items


def test_backoff_grows_is_capped_jittered_and_resets():
    backoff = Backoff(0.5, 4.0)
    delays = [backoff.next() for _ in range(8)]
    assert 0.5 * (1 - BACKOFF_JITTER) <= delays[0] <= 0.5 * (1 + BACKOFF_JITTER)
    assert all(d <= 4.0 * (1 + BACKOFF_JITTER) for d in delays)
    assert delays[-1] >= 4.0 * (1 - BACKOFF_JITTER)
    backoff.reset()
    assert backoff.next() <= 0.5 * (1 + BACKOFF_JITTER)
