"""Rate limiting of failed client authentications, per client id and per source address."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable


class FailureLimiter:
    """Counts failures per key in a sliding window; a key over its limit is refused for a while.

    Memory is bounded: at most `max_keys` keys are tracked (the oldest are forgotten first), so a
    flood of random client ids cannot grow it without end.
    """

    def __init__(
        self,
        limit: int,
        window: float = 60.0,
        *,
        max_keys: int = 50_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.window = window
        self.max_keys = max_keys
        self._clock = clock
        self._lock = threading.Lock()
        self._failures: dict[str, deque[float]] = {}

    def retry_after(self, key: str) -> float:
        """Seconds until `key` may try again; 0 if it may try now."""
        with self._lock:
            times = self._failures.get(key)
            if times is None:
                return 0.0
            self._trim(times)
            if len(times) < self.limit:
                return 0.0
            return max(0.0, times[0] + self.window - self._clock())

    def record_failure(self, key: str) -> None:
        with self._lock:
            times = self._failures.get(key)
            if times is None:
                if len(self._failures) >= self.max_keys:
                    del self._failures[next(iter(self._failures))]
                times = self._failures[key] = deque(maxlen=self.limit)
            times.append(self._clock())

    def _trim(self, times: deque[float]) -> None:
        cutoff = self._clock() - self.window
        while times and times[0] <= cutoff:
            times.popleft()
