"""When a call is tried again: a read or a decision, after UNAVAILABLE only (the sidecar was not
reached, or could not serve: nothing happened), with jittered exponential backoff, never past the
call's deadline. Writes are never retried (pdp.client.errors.OutcomeUnknown says why)."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

RETRYABLE = frozenset({"UNAVAILABLE"})


@dataclass(frozen=True, slots=True)
class Retry:
    """At most `attempts` tries in all; pauses grow from `initial_backoff` by `multiplier` up to
    `max_backoff`, each drawn within ±`jitter` of that. `Retry(attempts=1)` never retries."""

    attempts: int = 8
    initial_backoff: float = 0.02
    max_backoff: float = 0.5
    multiplier: float = 2.0
    jitter: float = 0.2


DEFAULT = Retry()
NEVER = Retry(attempts=1)


class Tries:
    """The tries of one call under one deadline, `timeout` seconds from now."""

    def __init__(self, policy: Retry, timeout: float) -> None:
        self._policy = policy
        self._deadline = time.monotonic() + timeout
        self._backoff = policy.initial_backoff
        self.count = 0

    def start(self) -> float:
        """Begin a try: the time it may take, what is left of the deadline."""
        self.count += 1
        return max(self._deadline - time.monotonic(), 0.0)

    def pause(self, code: str) -> float | None:
        """After a try failed with `code`: how long to wait before the next, or None to give up
        (not retryable, out of tries, or the pause would reach the deadline)."""
        policy = self._policy
        if code not in RETRYABLE or self.count >= policy.attempts:
            return None
        pause = self._backoff * random.uniform(1 - policy.jitter, 1 + policy.jitter)
        self._backoff = min(self._backoff * policy.multiplier, policy.max_backoff)
        if time.monotonic() + pause >= self._deadline:
            return None
        return pause
