"""A list page decoded as it streams in: the same objects as a whole-page decode, whatever
the chunking, and never more than about one object in memory."""

from __future__ import annotations

import json
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bgpd.kube.jsonstream import JSON_MAX_DEPTH, loads, stream_list

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**12, 10**12)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=20)


def chunked(data: bytes, sizes: list[int]) -> list[bytes]:
    out, i, k = [], 0, 0
    while i < len(data):
        n = sizes[k % len(sizes)] if sizes else len(data)
        out.append(data[i:i + n])
        i, k = i + n, k + 1
    return out


def decode(data: bytes, sizes: list[int]) -> tuple[list, dict, int]:
    items: list = []
    rest, nbytes = stream_list(chunked(data, sizes), items.append)
    return items, rest, nbytes


@settings(max_examples=300, deadline=None)
@given(items=st.lists(st.dictionaries(st.text(max_size=8), json_values, max_size=5),
                      max_size=8),
       extra=st.dictionaries(st.sampled_from(["kind", "apiVersion", "metadata", "x"]),
                             json_values, max_size=4),
       items_first=st.booleans(), indent=st.sampled_from([None, 0, 2]),
       sizes=st.lists(st.integers(1, 40), min_size=1, max_size=5))
def test_streamed_equals_whole(items, extra, items_first, indent, sizes):
    doc = {"items": items, **extra} if items_first else {**extra, "items": items}
    data = json.dumps(doc, indent=indent, ensure_ascii=False).encode()
    got, rest, nbytes = decode(data, sizes)
    assert got == items
    assert rest == extra
    assert nbytes == len(data)


def test_kubernetes_list_shape_and_numbers_cut_at_a_chunk_edge():
    data = (b'{"kind":"ServiceList","apiVersion":"v1","metadata":{"resourceVersion":"123",'
            b'"continue":"abc"},"items":[{"metadata":{"name":"a"}},{"n":1234567}],"z":98765}')
    for size in range(1, len(data) + 1):
        items, rest, _ = decode(data, [size])
        assert items == [{"metadata": {"name": "a"}}, {"n": 1234567}], size
        assert rest == {"kind": "ServiceList", "apiVersion": "v1", "z": 98765,
                        "metadata": {"resourceVersion": "123", "continue": "abc"}}, size


def test_multibyte_text_split_between_chunks():
    data = json.dumps({"items": [{"name": "grüße-✓-🙂"}]}, ensure_ascii=False).encode()
    for size in range(1, 8):
        assert decode(data, [size])[0] == [{"name": "grüße-✓-🙂"}]


def depth(obj) -> int:
    n = 0
    while isinstance(obj, dict) and "a" in obj:
        obj, n = obj["a"], n + 1
    return n


def test_an_object_nested_as_deep_as_the_api_server_allows():
    deep = '{"a":' * 9_000 + '{"spec":0}' + "}" * 9_000  # json.dumps itself cannot write it
    data = ('{"items":[' + deep + ',{"b":1}],"metadata":{}}').encode()
    items, _, _ = decode(data, [65536])
    assert len(items) == 2 and items[1] == {"b": 1} and depth(items[0]) == 9_000
    assert depth(loads(deep)) == 9_000
    too_deep = "[" * (2 * JSON_MAX_DEPTH) + "]" * (2 * JSON_MAX_DEPTH)
    with pytest.raises(ValueError):
        loads(too_deep)


@pytest.mark.parametrize("data", [
    b'{"items":[{"a":1},]}', b'{"items":[{"a":1}', b'{"items":[{"a":1}] "x":1}', b"[]",
    b"", b'{"items":[1 2]}', b'{1:2}'])
def test_broken_bodies_are_value_errors(data):
    with pytest.raises(ValueError):
        decode(data, [3])


def test_memory_holds_one_object_not_the_page():
    """100 objects of 200 KB (a tenant's fat Services): 20 MB of JSON streamed with at most
    a few objects' worth allocated at any time."""
    blob = "x" * 200_000

    def body():
        yield b'{"kind":"ServiceList","metadata":{"resourceVersion":"1"},"items":['
        for i in range(100):
            item = json.dumps({"metadata": {"name": f"s{i}", "annotations": {"a": blob}}})
            yield (item + ("," if i < 99 else "")).encode()
        yield b"]}"

    seen = []
    tracemalloc.start()
    try:
        rest, nbytes = stream_list(
            (piece[i:i + 65536] for piece in body() for i in range(0, len(piece), 65536)),
            lambda obj: seen.append(obj["metadata"]["name"]))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(seen) == 100 and nbytes > 20_000_000 and rest["metadata"]["resourceVersion"] == "1"
    assert peak < 3_000_000, f"peak {peak / 1e6:.1f} MB while streaming 20 MB"
