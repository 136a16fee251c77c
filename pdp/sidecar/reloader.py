"""Hot reload: watch the bundle directory, compile a changed bundle off the request path, swap it in.

A bundle that fails to load or to apply is refused and reported; the last good one keeps serving.
The watch never dies: it waits for a directory that does not exist yet, follows a directory
replaced by rename, symlink or delete-and-recreate, and turns any failure into a reported refusal.
It is the directory `BundleSource`; a bundle URL is polled by pdp.sidecar.bundle_source instead.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

import watchfiles

log = logging.getLogger(__name__)

B = TypeVar("B")

# (st_dev, st_ino, real path) of the directory the path names now, symlinks followed; None: none.
# A rename or symlink swap changes it; a delete-and-recreate may not (inodes are reused at once),
# which is why the watcher also re-arms when it sees the directory itself deleted.
_Identity = tuple[int, int, str] | None


def _identity(path: Path) -> _Identity:
    try:
        st = os.stat(path)
    except OSError:
        return None
    if not os.path.isdir(path):
        return None
    return (st.st_dev, st.st_ino, os.path.realpath(path))


class Reloader(Generic[B]):
    """Runs `load(path)` on every change and hands the result to `apply` (the atomic swap).

    `load` or `apply` raising means the bundle is refused: `rejected(path, error)` is told, and
    the last good bundle keeps serving. The reloader owns no engine, health or audit: the
    composition root passes those in as callbacks.
    """

    def __init__(
        self,
        path: Path,
        *,
        load: Callable[[Path], B],
        apply: Callable[[B], None],
        rejected: Callable[[Path, Exception], None],
        debounce_ms: int = 150,
        poll_seconds: float = 0.2,
        backoff_seconds: float = 0.5,
    ) -> None:
        self.path = path
        self._load = load
        self._apply = apply
        self._rejected = rejected
        self._debounce_ms = debounce_ms
        self._poll = poll_seconds
        self._backoff = backoff_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # One reload at a time: a change arriving mid-compile waits and then compiles the newest.
        self._lock = threading.Lock()
        self._loaded_from: _Identity = None  # the directory the last reload read

    def reload_now(self) -> bool:
        """Load and swap synchronously; True if the new bundle is now serving."""
        with self._lock:
            self._loaded_from = _identity(self.path)
            try:
                bundle = self._load(self.path)
                self._apply(bundle)
            except Exception as exc:  # load or apply: either refuses the bundle, never crashes
                log.error(
                    "bundle at %s refused: %s",
                    self.path,
                    _one_line(exc),
                    extra={"bundle_path": str(self.path)},
                )
                log.debug("bundle at %s refused", self.path, exc_info=True)
                self._report(exc)
                return False
            return True

    def _report(self, exc: Exception) -> None:
        try:
            self._rejected(self.path, exc)
        except Exception:  # a failing report must not take the watch down with it
            log.exception("reporting a refused bundle failed")

    def start(self) -> None:
        ready = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(ready,), name="bundle-reloader", daemon=True
        )
        self._thread.start()
        ready.wait(5.0)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self, ready: threading.Event) -> None:
        # INVARIANT: this loop ends only on stop(); every failure is reported and watched past.
        first = True
        while not self._stop.is_set():
            try:
                if self._wait_for_directory(ready):
                    self._watch(ready, reload_on_arm=not first)
                first = False
            except Exception as exc:
                first = False
                if self._stop.is_set():
                    break
                if _identity(self.path) is not None:  # not explained by the directory going
                    log.error("bundle watch on %s failed: %s", self.path, _one_line(exc))
                    self._report(exc)
                self._stop.wait(self._backoff)
        ready.set()

    def _wait_for_directory(self, ready: threading.Event) -> bool:
        """Poll until the path names a directory; False if stopped first."""
        if _identity(self.path) is None:
            log.warning("bundle directory %s does not exist; waiting for it", self.path)
            ready.set()  # nothing to arm yet: start() need not wait
        while _identity(self.path) is None:
            if self._stop.wait(self._poll):
                return False
        return True

    def _watch(self, ready: threading.Event, *, reload_on_arm: bool) -> None:
        """Watch the directory the path names now, until it is replaced, deleted or stop()."""
        armed = _identity(self.path)
        if armed is None:
            return
        root_names = {os.path.abspath(self.path), armed[2]}
        watcher = watchfiles.watch(
            armed[2],
            stop_event=self._stop,
            debounce=self._debounce_ms,
            step=20,
            yield_on_timeout=True,
            rust_timeout=int(self._poll * 1000),
            raise_interrupt=False,
        )
        first = True
        for changes in watcher:
            if first:
                # The first yield means the watch is armed: a reload now misses no change. At
                # start the bundle was just loaded; otherwise (a directory that appeared late or
                # was replaced) whatever is there now is loaded.
                first = False
                ready.set()
                if reload_on_arm or armed != self._loaded_from:
                    self.reload_now()
            if self._stop.is_set():
                return
            now = _identity(self.path)
            replaced = now != armed or any(path in root_names for _, path in changes)
            if replaced:
                log.info("bundle directory %s was replaced or removed; re-arming", self.path)
                if now is None:
                    self.reload_now()  # reports the missing bundle; the last good one serves
                return  # the caller waits for a directory and arms a new watch on it
            if changes:
                log.info("bundle change detected: %d file(s)", len(changes))
                self.reload_now()


def _one_line(exc: Exception) -> str:
    text = str(exc).strip().replace("\n", " | ")
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
