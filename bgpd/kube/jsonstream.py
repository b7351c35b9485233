"""JSON the API server sends, decoded without holding more than one object at a time.

A list page is ``{"kind": ..., "metadata": {...}, "items": [...]}``. Decoding it whole
holds the page's bytes and every object at once: a tenant's Services of 200 KB each made a
500-object page 100 MB of JSON and about 300 MB of Python objects, on every agent at every
relist (a restart, a 410 Gone), above the DaemonSet's memory limit. ``stream_list`` reads
the body in chunks and hands each element of ``items`` to the caller as soon as it is
decoded (by the C decoder, ``JSONDecoder.raw_decode``), so memory holds the one object
being decoded plus a chunk: at most one object the API server accepts (1.5 MB).

``decode_deep`` is the fallback for nesting deeper than Python's recursion limit (the API
server accepts 10,000 levels, e.g. in ``managedFields``): it decodes in a thread with a big
stack and a raised limit.
"""

from __future__ import annotations

import codecs
import json
import sys
import threading
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

CHUNK_BYTES = 64 * 1024
"""Bytes read from the response at a time."""

JSON_MAX_DEPTH = 12_000
"""Nesting that is decoded. The API server's Go decoder stops at 10,000 levels, so
anything it stores fits; Python's own limit (about 1,000) would let one object with deeply
nested ``managedFields`` make a list or watch fail forever."""

_DEEP_STACK_BYTES = 64 * 1024 * 1024
_deep_lock = threading.Lock()
_decoder = json.JSONDecoder()
_WHITESPACE = " \t\n\r"


def decode_deep(fn: Callable[[], Any]) -> Any:
    """``fn()`` (a JSON decode) in a thread with a big stack and a recursion limit above
    JSON_MAX_DEPTH; its exception is raised here (RecursionError as ValueError)."""
    result: list[Any] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            result.append(fn())
        except (RecursionError, ValueError) as exc:
            failure.append(exc)

    with _deep_lock:  # the limit is process-wide; raised only while this thread decodes
        old_limit, old_stack = sys.getrecursionlimit(), threading.stack_size()
        sys.setrecursionlimit(max(old_limit, JSON_MAX_DEPTH + 1000))
        threading.stack_size(_DEEP_STACK_BYTES)
        try:
            thread = threading.Thread(target=run, name="json-deep")
            thread.start()
        finally:
            threading.stack_size(old_stack)
        thread.join()
        sys.setrecursionlimit(old_limit)
    if failure:
        exc = failure[0]
        if isinstance(exc, RecursionError):
            raise ValueError(f"JSON nested deeper than {JSON_MAX_DEPTH}: {exc}") from exc
        raise exc
    return result[0]


def loads(data: bytes | str) -> Any:
    """``json.loads``, which also decodes what the API server accepts but Python's default
    recursion limit refuses."""
    try:
        return json.loads(data)
    except RecursionError:
        return decode_deep(partial(json.loads, data))


class _Reader:
    """Text from byte chunks, with a cursor; consumed text is dropped as it goes."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._utf8 = codecs.getincrementaldecoder("utf-8")()
        self.buf = ""
        self.pos = 0
        self.done = False
        self.nbytes = 0

    def more(self) -> bool:
        """Append the next chunk's text; False once the body has ended."""
        if self.done:
            return False
        for chunk in self._chunks:
            self.nbytes += len(chunk)
            text = self._utf8.decode(chunk)
            if text:
                self.buf = self.buf[self.pos:] + text
                self.pos = 0
                return True
        self.buf = self.buf[self.pos:] + self._utf8.decode(b"", final=True)
        self.pos = 0
        self.done = True
        return False

    def peek(self) -> str:
        """The next non-blank character (not consumed), "" at the end of the body."""
        while True:
            buf, pos = self.buf, self.pos
            while pos < len(buf) and buf[pos] in _WHITESPACE:
                pos += 1
            self.pos = pos
            if pos < len(buf):
                return buf[pos]
            if not self.more():
                return ""

    def take(self, expected: str) -> None:
        found = self.peek()
        if found != expected:
            raise ValueError(f"expected {expected!r}, found {found or 'the end'!r} at byte "
                             f"~{self.nbytes}")
        self.pos += 1

    def value(self) -> Any:
        """Decode the next JSON value. A value cut by the end of the text read so far is
        decoded again once there is more (at least twice as much), so a big object costs
        a few decodes, never one per chunk."""
        self.peek()
        while True:
            start = self.pos
            try:
                try:
                    obj, end = _decoder.raw_decode(self.buf, start)
                except RecursionError:
                    obj, end = decode_deep(partial(_decoder.raw_decode, self.buf, start))
            except ValueError:
                if not self._grow():
                    raise
                continue
            if not self.done and _maybe_cut(obj, self.buf, end) and self._grow():
                continue  # a number at the end of what was read may go on: read on
            self.pos = end
            return obj

    def _grow(self) -> bool:
        """Read until the unconsumed text has doubled (or the body ended)."""
        want = 2 * max(len(self.buf) - self.pos, 1)
        grew = False
        while len(self.buf) - self.pos < want and self.more():
            grew = True
        return grew


def _maybe_cut(obj: Any, buf: str, end: int) -> bool:
    """Could more text change the value just decoded? Only a number can be cut short
    ("12" of "1234", "0" of "0.5", "1" of "1e3"); anything else ends with its own
    delimiter (a quote, a bracket) or fails to decode when cut."""
    if end >= len(buf):
        return True
    return isinstance(obj, (int, float)) and not isinstance(obj, bool) and buf[end] in ".eE+-"


def stream_list(chunks: Iterable[bytes], on_item: Callable[[Any], None]
                ) -> tuple[dict[str, Any], int]:
    """Decode a list object from ``chunks``, calling ``on_item`` with each element of its
    ``items`` as it is decoded; returns (the object's other fields, bytes read). Raises
    ValueError when the body is not such an object."""
    reader = _Reader(chunks)
    reader.take("{")
    rest: dict[str, Any] = {}
    if reader.peek() == "}":
        reader.pos += 1
        return rest, reader.nbytes
    while True:
        key = reader.value()
        if not isinstance(key, str):
            raise ValueError(f"a list's key is {type(key).__name__}, not a string")
        reader.take(":")
        if key == "items" and reader.peek() == "[":
            reader.pos += 1
            if reader.peek() == "]":
                reader.pos += 1
            else:
                while True:
                    on_item(reader.value())
                    sep = reader.peek()
                    reader.take(sep if sep in ",]" else ",")
                    if sep == "]":
                        break
        else:
            rest[key] = reader.value()
        sep = reader.peek()
        reader.take(sep if sep in ",}" else "}")
        if sep == "}":
            return rest, reader.nbytes
