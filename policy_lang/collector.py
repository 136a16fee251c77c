"""Pausing Python's cyclic garbage collector while a load builds a large structure that stays
alive: the parse, check and compile of a 10,000-rule bundle make about a million objects, and the
collector, triggered again and again by them, walks them all each time to free nothing (a third of
such a load). Used by the bundle loader and the compiler; nesting and threads are counted, so the
collector resumes when the last pause ends, and only if it was running when the first began.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class _Pauses:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.count = 0
        self.was_enabled = False


_pauses = _Pauses()


@contextmanager
def paused() -> Iterator[None]:
    with _pauses.lock:
        if _pauses.count == 0:
            _pauses.was_enabled = gc.isenabled()
            gc.disable()
        _pauses.count += 1
    try:
        yield
    finally:
        with _pauses.lock:
            _pauses.count -= 1
            if _pauses.count == 0 and _pauses.was_enabled:
                gc.enable()
