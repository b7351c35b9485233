"""The Event recorder's dedup map under a flood of distinct rejections (no API server:
nothing is sent, record() only decides and queues)."""

from __future__ import annotations

from collections import OrderedDict

from bgpd.kube import events
from bgpd.kube.events import EventRecorder, ObjectRef


class CountingMap(OrderedDict):
    """The recorder's dedup map, counting how many entries were walked by iteration."""

    walked = 0

    def __iter__(self):
        for key in super().__iter__():
            CountingMap.walked += 1
            yield key

    def items(self):
        for key in self:
            yield key, self[key]

    def values(self):
        for key in self:
            yield self[key]


def recorder(monkeypatch, clock):
    monkeypatch.setattr(events, "DEDUP_MAX", 100)
    monkeypatch.setattr(events, "QUEUE_MAX", 10_000)
    rec = EventRecorder(client=None, node_name="node1", clock=lambda: clock[0])  # type: ignore[arg-type]
    rec._sent = CountingMap()
    return rec


def record(rec, i: int) -> bool:
    return rec.record(ObjectRef("Service", "tenant", f"s{i}"), "OutsidePools", f"10.0.{i}: no")


def test_a_full_map_is_not_walked_again_for_every_new_rejection(monkeypatch):
    clock = [1000.0]
    rec = recorder(monkeypatch, clock)
    assert all(record(rec, i) for i in range(100))
    CountingMap.walked = 0
    # 5,000 more distinct rejections while all 100 remembered ones are in their window:
    # each is dropped (counted), after looking at the oldest entry only.
    assert not any(record(rec, i) for i in range(100, 5100))
    assert rec.dropped == 5000
    # Neither rebuilt (a new map per call) nor walked whole: 100 entries per call before.
    assert isinstance(rec._sent, CountingMap), type(rec._sent)
    assert CountingMap.walked <= 5000, CountingMap.walked


def test_entries_leave_oldest_first_once_out_of_their_window(monkeypatch):
    clock = [1000.0]
    rec = recorder(monkeypatch, clock)
    for i in range(50):
        record(rec, i)
    clock[0] += events.DEDUP_WINDOW_S / 2
    for i in range(50, 100):
        record(rec, i)
    clock[0] += events.DEDUP_WINDOW_S / 2  # the first 50 are out of their window now
    assert record(rec, 0)  # sent again: a new period; it moves to the end
    assert len(rec._sent) == 51, len(rec._sent)  # 0..49 forgotten, 50..99 and 0 again
    assert not record(rec, 60)  # still in its window: a duplicate
    assert record(rec, 1000)  # room again for a new one
    assert list(rec._sent)[-2:] == [events._digest("Service", "tenant", "s0", "OutsidePools",
                                                   "10.0.0: no"),
                                    events._digest("Service", "tenant", "s1000",
                                                   "OutsidePools", "10.0.1000: no")]
