"""Following the store's changelog: every committed change, from any sidecar, applied to this
sidecar's engine in revision order.

The follower starts at the revision the state was booted from (`start_at`), then applies
`changes_since(applied)` whenever the store wakes it (LISTEN/NOTIFY, or a poll), and on a timer
besides. A change that is not exactly the next revision is never applied: revisions are dense, so
a gap means the read was incomplete, and the next pass reads again. When the store is down it
keeps the state it has (checks go on deciding from memory at that revision), says so in `state`,
and retries with a capped backoff; once back it catches up from its last revision.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from pdp.engine import Engine
from pdp.sidecar.store import Change, Store, StoreUnavailable

log = logging.getLogger(__name__)

BATCH = 500  # revisions read per query
IDLE_POLL = 1.0  # seconds: read the changelog at least this often, wake-up or not
MAX_BACKOFF = 5.0


@dataclass(frozen=True, slots=True)
class FollowerState:
    """What the follower reports: is the store reachable, which revision is applied, the newest
    revision seen in the store, and when the store last answered (monotonic seconds)."""

    connected: bool
    applied: int
    head: int
    last_contact: float
    error: str = ""


class Follower:
    def __init__(
        self, store: Store, engine: Engine, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._store = store
        self._engine = engine
        self._clock = clock
        self._applied: int | None = None  # None until booted: nothing to follow yet
        self._head = 0
        self._connected = True
        self._error = ""
        self._last_contact = clock()
        self._cond = threading.Condition()
        self._apply_lock = threading.Lock()  # one applier at a time, in revision order
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- boot and lifecycle
    def start_at(self, revision: int) -> None:
        """The state was booted from a snapshot at `revision`: follow from there."""
        with self._apply_lock, self._cond:
            self._applied = revision
            self._head = max(self._head, revision)
            self._cond.notify_all()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="store-follower", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=IDLE_POLL + MAX_BACKOFF + 1)

    @property
    def state(self) -> FollowerState:
        with self._cond:
            return FollowerState(
                self._connected,
                self._applied or 0,
                self._head,
                self._last_contact,
                self._error,
            )

    # ---- applying
    def applied_own(self, revision: int, change: Change) -> None:
        """A write call of this sidecar committed at `revision`: apply it now if it is the next
        revision (no read back), else catch up through it from the store."""
        with self._apply_lock:
            if self._applied is not None and self._applied == revision - 1:
                self._apply(change)
                return
        self.catch_up()

    def catch_up(self) -> None:
        """Apply every committed change after the applied revision. Raises StoreUnavailable."""
        with self._apply_lock:
            if self._applied is None:
                return
            while True:
                changes = self._store.changes_since(self._applied, BATCH)
                self._contact()
                for change in changes:
                    if change.revision != self._applied + 1:
                        log.warning(
                            "changelog gap after revision %d (read %d); reading again",
                            self._applied,
                            change.revision,
                        )
                        return
                    self._apply(change)
                if len(changes) < BATCH:
                    return

    def _apply(self, change: Change) -> None:
        self._engine.restore_tuples(change.writes, change.deletes, change.revision)
        with self._cond:
            self._applied = change.revision
            self._head = max(self._head, change.revision)
            self._cond.notify_all()

    def wait_for(self, revision: int, timeout: float) -> bool:
        """Block until `revision` is applied or `timeout` seconds pass; True if it is."""
        if timeout <= 0:
            return (self._applied or 0) >= revision
        with self._cond:
            return self._cond.wait_for(lambda: (self._applied or 0) >= revision, timeout)

    # ---- the loop
    def _run(self) -> None:
        backoff = 0.05
        while not self._stop.is_set():
            try:
                self.catch_up()
                self._store.wait_for_change(IDLE_POLL)
                backoff = 0.05
            except StoreUnavailable as exc:
                self._lost(str(exc))
                self._stop.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
            except Exception:  # never die: a follower that stops is a sidecar that goes stale
                log.exception("store follower pass failed")
                self._stop.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)

    def _contact(self) -> None:
        with self._cond:
            if not self._connected:
                log.warning("tuple store %s reachable again", self._store.location)
            self._connected = True
            self._error = ""
            self._last_contact = self._clock()

    def _lost(self, error: str) -> None:
        with self._cond:
            if self._connected:
                log.error(
                    "tuple store unreachable; deciding from memory at revision %d: %s",
                    self._applied or 0,
                    error,
                )
            self._connected = False
            self._error = error
