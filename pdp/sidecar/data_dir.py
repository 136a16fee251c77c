"""The data directory's owner lock: one `pdp serve` per data directory, until the fleet store makes a
shared directory a real shared store.

`fcntl.flock` on `<data_dir>/pdp.lock` is held for the life of the process and released by the
kernel when it dies, however it dies, so a lock left by a killed process is never stale. The file
also holds the owner's PID, for the error message only. Exceptions: `DataDirInUse(RuntimeError)`.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from pdp.errors import Unavailable

LOCK_FILE = "pdp.lock"


class DataDirInUse(Unavailable, RuntimeError):
    """Another live process holds this data directory."""


class DataDirLock:
    def __init__(self, data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.path = data_dir / LOCK_FILE
        # O_NOFOLLOW: a planted symlink must not make us truncate some other file
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise DataDirInUse(
                f"data directory {data_dir} is in use by another pdp process (pid {owner}); "
                "two sidecars on one data directory would hand out the same tuple revisions "
                "for different writes"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None
