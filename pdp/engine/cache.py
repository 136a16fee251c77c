"""The decision cache: short TTL, bounded size, keys that hold every input a decision read.

The engine owns what goes in a key (bundle snapshot, tuple revision, read attributes); this module
only stores immutable decisions and counts hits and misses.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from dataclasses import replace
from typing import Any

from pdp.model import Decision


class DecisionCache:
    """Decisions by key, each good for `ttl_seconds` of `clock` (seconds, never going back).

    The clock is injected so a test can expire an entry by moving time, not by sleeping."""

    def __init__(
        self,
        ttl_seconds: float,
        max_entries: int = 100_000,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl_seconds
        self.max_entries = max_entries
        self._clock = clock
        self.hits = 0
        self.misses = 0
        # key -> [decision, expiry, the decision marked cached (made at the first hit)]
        self._entries: dict[Hashable, list[Any]] = {}

    def get(self, key: Hashable) -> Decision | None:
        item = self._entries.get(key)
        if item is not None:
            if item[1] > self._clock():
                self.hits += 1
                hit: Decision | None = item[2]
                if hit is None:  # the first hit marks its copy (two racing threads: both equal)
                    hit = item[2] = replace(item[0], cached=True)
                return hit
            self._entries.pop(key, None)
        self.misses += 1
        return None

    def put(self, key: Hashable, decision: Decision) -> None:
        entries = self._entries
        if len(entries) >= self.max_entries:
            try:  # evict the oldest insertion; another thread may race us, which is harmless
                entries.pop(next(iter(entries)), None)
            except (StopIteration, RuntimeError):
                pass
        # The copy marked `cached` is made at the first hit, not here: a miss that is never hit
        # again (most, on a stream of distinct requests) would pay ~3 µs for nothing.
        entries[key] = [decision, self._clock() + self.ttl, None]

    def clear(self) -> None:
        self._entries = {}

    def stats(self) -> dict[str, int]:
        return {"hits": self.hits, "misses": self.misses, "size": len(self._entries)}
