"""Hot reload: watch the bundle directory, compile a changed bundle off the request path, swap it in.

A bundle that fails to load is refused and reported; the last good one keeps serving.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

import watchfiles

log = logging.getLogger(__name__)

B = TypeVar("B")


class Reloader(Generic[B]):
    """Runs `load(path)` on every change and hands the result to `apply` (the atomic swap).

    `load` raising means the bundle is refused: `rejected(path, error)` is told, nothing is swapped.
    The reloader owns no engine, health or audit: the composition root passes those in as callbacks.
    """

    def __init__(
        self,
        path: Path,
        *,
        load: Callable[[Path], B],
        apply: Callable[[B], None],
        rejected: Callable[[Path, Exception], None],
        debounce_ms: int = 150,
    ) -> None:
        self.path = path
        self._load = load
        self._apply = apply
        self._rejected = rejected
        self._debounce_ms = debounce_ms
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # One reload at a time: a change arriving mid-compile waits and then compiles the newest.
        self._lock = threading.Lock()

    def reload_now(self) -> bool:
        """Load and swap synchronously; True if the new bundle is now serving."""
        with self._lock:
            try:
                bundle = self._load(self.path)
            except Exception as exc:  # any failure to load refuses the bundle, never crashes
                log.error("bundle at %s refused:\n%s", self.path, exc)
                self._rejected(self.path, exc)
                return False
            self._apply(bundle)
            return True

    def start(self) -> None:
        ready = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(ready,), name="bundle-reloader", daemon=True
        )
        self._thread.start()
        ready.wait(5.0)

    def _run(self, ready: threading.Event) -> None:
        watcher = watchfiles.watch(
            self.path,
            stop_event=self._stop,
            debounce=self._debounce_ms,
            step=20,
            yield_on_timeout=True,
            rust_timeout=200,
            raise_interrupt=False,
        )
        for changes in watcher:
            ready.set()  # the first (timeout) yield means the watch is armed
            if changes:
                log.info("bundle change detected: %d file(s)", len(changes))
                self.reload_now()
        ready.set()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
