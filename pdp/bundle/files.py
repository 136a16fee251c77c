"""Reading a bundle directory into memory as one consistent whole.

A file rewritten in place (truncate, then write) is, for a moment, empty or half written. So a
stable read reads every file, waits a quiet period, reads again, and returns only when nothing
changed in between: same file list, same bytes, same inode, size and mtime for every file. What
the loader parses is exactly those bytes, never a third read.

BundleUnstable(BundleReadError) — the bundle kept changing until the deadline.
BundleReadError(OSError)        — the path is not a directory.
"""

from __future__ import annotations

import hashlib
import os
import stat
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pdp.errors import Unavailable

# Names starting with a dot are not part of a bundle: editors' temporary files, `.git/`, and the
# bundle's own file manifest and signature (read separately, see META_FILES).
HIDDEN_PREFIX = "."
MANIFEST_FILE = ".manifest.json"
SIGNATURES_FILE = ".signatures.json"
META_FILES = (MANIFEST_FILE, SIGNATURES_FILE)

# The defaults the sidecar reads with: a writer's pause shorter than QUIET_SECONDS is never seen;
# a bundle still changing after SETTLE_TIMEOUT_SECONDS is refused (and retried on the next change).
QUIET_SECONDS = 0.25
SETTLE_TIMEOUT_SECONDS = 5.0


class BundleReadError(Unavailable):
    """The bundle directory cannot be read as a whole."""


class BundleUnstable(BundleReadError):
    """The files kept changing: no two reads a quiet period apart agreed before the deadline."""

    def __init__(self, message: str, changed: tuple[str, ...]) -> None:
        super().__init__(message)
        self.changed = changed


# What a file looked like when read: (sha256 of the bytes, inode, size, mtime in ns). The stat
# fields catch a file that changed and changed back between two reads (a truncate-then-write
# cycle seen twice at the same point).
_Stamp = tuple[bytes, int, int, int]


@dataclass(frozen=True, slots=True)
class BundleFiles:
    """Every file of a bundle as read: the bundle's files by relative POSIX path, in sorted order,
    the meta files (`.manifest.json`, `.signatures.json`) found at the top, and files that exist
    but could not be read (relative path -> reason)."""

    root: Path
    files: Mapping[str, bytes]
    meta: Mapping[str, bytes]
    unreadable: Mapping[str, str]
    stamps: Mapping[str, _Stamp] = field(repr=False, compare=False)
    directory: tuple[int, int] = (0, 0)  # (st_dev, st_ino) of the root, symlinks followed

    def sha256(self, name: str) -> str:
        return self.stamps[name][0].hex()

    def changed_since(self, other: BundleFiles) -> tuple[str, ...]:
        """Relative paths that differ between two reads (empty: the two reads agree)."""
        if self.directory != other.directory:
            return (".",)
        names = set(self.stamps) | set(other.stamps)
        names |= set(self.unreadable) | set(other.unreadable)
        return tuple(
            sorted(
                n
                for n in names
                if self.stamps.get(n) != other.stamps.get(n)
                or self.unreadable.get(n) != other.unreadable.get(n)
            )
        )


def read_files(root: Path) -> BundleFiles:
    """One read of every file under `root` (dot names skipped, symlinked files followed, symlinked
    directories not descended, as `Path.rglob` does)."""
    try:
        st = os.stat(root)
    except OSError as exc:
        raise BundleReadError(f"`{root}` is not a bundle directory ({exc.strerror})") from None
    if not os.path.isdir(root):
        raise BundleReadError(f"`{root}` is not a bundle directory")
    files: dict[str, bytes] = {}
    meta: dict[str, bytes] = {}
    unreadable: dict[str, str] = {}
    stamps: dict[str, _Stamp] = {}
    for name in META_FILES:
        _read_one(root / name, name, meta, unreadable, stamps)
    found: list[tuple[tuple[str, ...], str]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(HIDDEN_PREFIX)]
        rel_dir = os.path.relpath(dirpath, root)
        parts = () if rel_dir == "." else tuple(Path(rel_dir).parts)
        for filename in filenames:
            if not filename.startswith(HIDDEN_PREFIX):
                found.append(((*parts, filename), os.path.join(dirpath, filename)))
    found.sort()  # by path components: the order `sorted(root.rglob(...))` gave
    for parts, full in found:
        _read_one(Path(full), "/".join(parts), files, unreadable, stamps)
    return BundleFiles(root, files, meta, unreadable, stamps, (st.st_dev, st.st_ino))


def _read_one(
    path: Path,
    name: str,
    into: dict[str, bytes],
    unreadable: dict[str, str],
    stamps: dict[str, _Stamp],
) -> None:
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return  # a socket or a fifo (opening one could block): not a bundle file
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            data = f.read()
    except FileNotFoundError:
        return  # gone since the listing (or a dangling symlink): a second read will tell
    except OSError as exc:
        unreadable[name] = exc.strerror or type(exc).__name__
        return
    into[name] = data
    stamps[name] = (hashlib.sha256(data).digest(), st.st_ino, st.st_size, st.st_mtime_ns)


def read_stable(
    root: Path,
    *,
    quiet_seconds: float = QUIET_SECONDS,
    timeout_seconds: float = SETTLE_TIMEOUT_SECONDS,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> BundleFiles:
    """Read until two reads `quiet_seconds` apart agree; the second one is returned.

    `quiet_seconds` 0 reads once (the authoring commands: nobody is writing). Raises BundleUnstable
    when no two reads agree within `timeout_seconds`.
    """
    deadline = clock() + timeout_seconds
    previous = read_files(root)
    if quiet_seconds <= 0:
        return previous
    while True:
        sleep(quiet_seconds)
        current = read_files(root)
        changed = current.changed_since(previous)
        if not changed:
            return current
        if clock() >= deadline:
            raise BundleUnstable(
                f"bundle files kept changing for {timeout_seconds:g}s; not loaded", changed
            )
        previous = current
