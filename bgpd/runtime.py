"""Process-level tuning of CPython's garbage collector for the agent.

The cache holds ~100,000 long-lived objects at 20,000 Services, and a full policy decision
allocates ~200,000 short-lived ones. With CPython's defaults the collector rescans the
long-lived ones again and again: a full decision took ~40 % longer (bench/policy.py).
So: fewer young collections, the synced cache frozen out of the collector, and no
collection at all in the middle of a decision (its structures hold no reference cycles;
refcounting frees them, and anything cyclic is collected right after).
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

GC_THRESHOLDS = (50_000, 20, 20)


def tune_gc() -> None:
    gc.set_threshold(*GC_THRESHOLDS)


def freeze_after_sync() -> None:
    """Move everything alive now (the synced cache, imported modules) out of the collector's
    sight; it is still freed by refcounting when dropped."""
    gc.collect()
    gc.freeze()


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
