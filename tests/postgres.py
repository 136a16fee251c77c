"""A real PostgreSQL for the tests: the machine's own binaries (`initdb`, `pg_ctl` of the Debian
postgresql package), a fresh cluster in a temporary directory, on a free loopback port, its socket
in that directory, stopped when the test is done.

PostgreSQL refuses to run as root, and CI runs as root: then the cluster belongs to, and runs as,
the `postgres` system user (`runuser -u postgres`). Without the binaries the tests skip, except under
`CI=true`, where they fail: CI installs the package, so a missing one is a broken CI, not a skip.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

BIN_DIRS = [Path("/usr/lib/postgresql/15/bin"), *sorted(Path("/usr/lib/postgresql").glob("*/bin"))]
START_TIMEOUT = 60.0


def _bin_dir() -> Path | None:
    for d in BIN_DIRS:
        if (d / "initdb").exists() and (d / "pg_ctl").exists():
            return d
    return None


def require_postgres() -> Path:
    """The binaries' directory; skips the test when missing, fails instead under CI."""
    found = _bin_dir()
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("PostgreSQL binaries missing under CI: .ci/run installs `postgresql`")
        pytest.skip("PostgreSQL binaries not installed (apt-get install postgresql)")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Postgres:
    """One running cluster: `dsn` reaches its `postgres` database over loopback TCP."""

    bin_dir: Path
    data_dir: Path
    port: int
    as_user: list[str]

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _pg_ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.as_user, str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), *args],
            capture_output=True,
            text=True,
            check=check,
            timeout=START_TIMEOUT,
        )

    def start(self) -> None:
        options = f"-p {self.port} -k {self.data_dir} -c listen_addresses=127.0.0.1"
        self._pg_ctl(
            "-w",
            "-t",
            str(int(START_TIMEOUT)),
            "-o",
            options,
            "-l",
            str(self.data_dir / "server.log"),
            "start",
        )
        self.wait_ready()

    def stop(self, mode: str = "fast") -> None:
        self._pg_ctl("-w", "-m", mode, "stop", check=False)

    def kill(self) -> None:
        """kill -9 of the postmaster: the crash the durability tests inflict."""
        pid_file = self.data_dir / "postmaster.pid"
        with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError):
            os.kill(int(pid_file.read_text().split()[0]), 9)
        # Its backends die when they notice the postmaster is gone; wait until the port is free.
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and _accepts(self.port):
            time.sleep(0.05)

    def wait_ready(self) -> None:
        import psycopg

        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                with psycopg.connect(self.dsn, connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)


def _accepts(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


@contextlib.contextmanager
def running_postgres() -> Iterator[Postgres]:
    """A fresh cluster for the duration of the block, always stopped and removed after."""
    bin_dir = require_postgres()
    root = Path(tempfile.mkdtemp(prefix="pdp-pg-"))
    data_dir = root / "data"
    as_user: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses root: the cluster is the postgres user's
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(root, "postgres")
    data_dir.mkdir()
    if as_user:
        shutil.chown(data_dir, "postgres")
    subprocess.run(
        [
            *as_user,
            str(bin_dir / "initdb"),
            "-D",
            str(data_dir),
            "-U",
            "postgres",
            "--auth=trust",
            "--no-instructions",
            "-E",
            "UTF8",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    pg = Postgres(bin_dir, data_dir, free_port(), as_user)
    try:
        pg.start()
        yield pg
    finally:
        pg.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)
