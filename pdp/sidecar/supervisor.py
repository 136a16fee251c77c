"""`pdp serve --processes N`: N server processes on one gRPC port (and one HTTP port), supervised.

Each child is a whole sidecar (pdp.sidecar.app) built from the parent's merged settings: it loads
and watches the bundle, follows the store, and listens with SO_REUSEPORT, so the kernel spreads
new connections over the N of them. State shared between them lives where it already is shared
between sidecars: tuples in the store (a write at one child is in the changelog every other child
follows, so `min_tuple_revision` means at each what it means across a fleet), tokens in the token
database. Decision caches, metrics, the audit stream and the token endpoint's failure limiter are
per process.

Only the N children of one `pdp serve` may share the port:
- the parent first binds the address the plain way (no SO_REUSEPORT), as a single sidecar does:
  anything already on the port, with SO_REUSEPORT or not, refuses it (`cannot listen on ADDR:
  address already in use`);
- it then holds a bound, never listening, SO_REUSEPORT socket on the port for its whole life: a
  process without SO_REUSEPORT cannot take the port even while every child is being restarted,
  and one of another user cannot join the group (the kernel keeps a group to one user);
- once the children listen, and every few seconds after, it compares the port's listening sockets
  (/proc/net/tcp) with its children's: a stranger at the start (one of the same user that bound
  with SO_REUSEPORT in between) stops the start with the same error; one that joins later cannot
  be pushed out and is logged as an error each time it is seen.

A child that dies is restarted (its connections fail and their clients reconnect to the others;
the kernel no longer routes to a closed socket). A child that dies before it is ready, at the
start, or more than `MAX_RESTARTS` times within `RESTART_WINDOW` seconds, stops them all and the
parent exits 1: a crash loop is not hidden. SIGTERM or SIGINT drains every child. Each child reads
its settings from a pipe the parent holds open: when the parent dies, even by SIGKILL, the pipe
closes and the child drains and exits, so no child outlives it.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from pdp.errors import Unavailable

log = logging.getLogger(__name__)

MAX_RESTARTS = 5  # restarts of one child within RESTART_WINDOW before the parent gives up
RESTART_WINDOW = 60.0
STRANGER_CHECK_INTERVAL = 5.0  # seconds between looks for a listener on the port that is not ours
STOP_MARGIN = 10.0  # past the drain (grace_seconds), the seconds before a child is killed
_READY = "pdp: serving"


@dataclass(frozen=True, slots=True)
class Slot:
    """Which of the processes this one is: `index` of `count`."""

    index: int
    count: int


class PortTaken(Unavailable):
    """A listen address is busy: `cannot listen on HOST:PORT: REASON` (as a single sidecar says)."""

    def __init__(self, address: str, reason: str) -> None:
        super().__init__(f"cannot listen on {address}: {reason}")


def _split(hostport: str) -> tuple[str, int]:
    host, _, port = hostport.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def reserve(hostport: str) -> tuple[socket.socket, int]:
    """Probe `hostport` the plain way, then hold it with a bound, not listening, SO_REUSEPORT
    socket only our children can join. Returns that socket and the port (a free one for port 0).
    Raises PortTaken."""
    host, port = _split(hostport)
    probe = socket.socket(_family(host), socket.SOCK_STREAM)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))
        probe.listen(1)
        port = probe.getsockname()[1]
    except OSError as exc:
        raise PortTaken(hostport, (exc.strerror or str(exc)).lower()) from exc
    finally:
        probe.close()
    hold = socket.socket(_family(host), socket.SOCK_STREAM)
    try:
        hold.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        hold.bind((host, port))
    except OSError as exc:  # taken between the probe and here
        hold.close()
        raise PortTaken(hostport, (exc.strerror or str(exc)).lower()) from exc
    return hold, port


def _listening_inodes(port: int) -> set[int] | None:
    """The inodes of the sockets listening on TCP `port` in this network namespace; None where
    /proc/net/tcp cannot be read (not Linux): the look for strangers is then skipped."""
    found: set[int] | None = None
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        found = found or set()
        for line in lines:
            f = line.split()
            if len(f) > 9 and f[3] == "0A" and int(f[1].rsplit(":", 1)[1], 16) == port:
                found.add(int(f[9]))
    return found


def _socket_inodes(pid: int) -> set[int]:
    out: set[int] = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return out
    for fd in fds:
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            out.add(int(link[8:-1]))
    return out


def strangers(ports: list[int], pids: list[int]) -> int:
    """How many sockets listen on `ports` that none of `pids` holds (0 where it cannot be told)."""
    ours: set[int] = set()
    for pid in pids:
        ours |= _socket_inodes(pid)
    count = 0
    for port in ports:
        listening = _listening_inodes(port)
        if listening:
            count += len(listening - ours)
    return count


@dataclass
class _Child:
    slot: Slot
    proc: subprocess.Popen[bytes]
    address: str = ""  # the ready line's `grpc=... http=...`, once the child has printed it
    ready: threading.Event = field(default_factory=threading.Event)


class Supervisor:
    """The parent: starts the children, restarts one that dies, stops them all."""

    def __init__(self, settings: dict[str, Any], count: int, grace: float) -> None:
        self._settings = json.dumps(settings, default=str).encode() + b"\n"
        self._count = count
        self._grace = grace
        self._children: list[_Child] = []
        self._deaths: list[deque[float]] = [deque() for _ in range(count)]
        self._stop = threading.Event()

    # ---- children
    def _spawn(self, slot: Slot) -> _Child:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from pdp.sidecar.supervisor import child_main; child_main()",
                str(slot.index),
                str(slot.count),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert proc.stdin is not None
        # INVARIANT: the parent never closes a child's stdin while it lives; EOF means "stop"
        proc.stdin.write(self._settings)
        proc.stdin.flush()
        child = _Child(slot, proc)
        threading.Thread(
            target=self._read, args=(child,), name=f"child-{slot.index}", daemon=True
        ).start()
        return child

    @staticmethod
    def _read(child: _Child) -> None:
        """The child's first stdout line says it serves; the rest is drained, never blocking it."""
        out: IO[bytes] | None = child.proc.stdout
        if out is None:
            return
        try:
            for raw in out:
                line = raw.decode(errors="replace").strip()
                if line.startswith(_READY) and not child.ready.is_set():
                    child.address = line.removeprefix(_READY).strip()
                    child.ready.set()
        except (OSError, ValueError):  # the pipe closed under us: the child is gone
            return

    def _wait_ready(self, children: list[_Child]) -> bool:
        """Until each child serves: False when one exits first or a stop is asked for."""
        for child in children:
            while not child.ready.wait(0.1):
                if child.proc.poll() is not None or self._stop.is_set():
                    return False
        return True

    def pids(self) -> list[int]:
        return [c.proc.pid for c in self._children]

    # ---- the parent's life
    def start(self) -> str | None:
        """Start every child and wait until all serve; their ready line, or None if one failed
        (they are then all stopped)."""
        self._children = [self._spawn(Slot(i, self._count)) for i in range(self._count)]
        if not self._wait_ready(self._children):
            self.stop_all()
            return None
        return self._children[0].address

    def watch(self, ports: list[int]) -> int:
        """Supervise until a stop is asked for (0) or a child crash-loops (1)."""
        next_look = time.monotonic() + STRANGER_CHECK_INTERVAL
        while not self._stop.wait(0.2):
            for i, child in enumerate(self._children):
                code = child.proc.poll()
                if code is None:
                    continue
                if not self._restart(i, child, code):
                    self.stop_all()
                    return 1
            if time.monotonic() >= next_look:
                next_look = time.monotonic() + STRANGER_CHECK_INTERVAL
                found = strangers(ports, self.pids())
                if found:
                    log.error(
                        "%d socket(s) of another process listen on port(s) %s with SO_REUSEPORT "
                        "and take a share of the connections: stop that process",
                        found,
                        ports,
                    )
        self.stop_all()
        return 0

    def _restart(self, i: int, child: _Child, code: int) -> bool:
        now = time.monotonic()
        deaths = self._deaths[i]
        deaths.append(now)
        while deaths and deaths[0] < now - RESTART_WINDOW:
            deaths.popleft()
        if len(deaths) > MAX_RESTARTS:
            log.error(
                "process %d died %d times within %.0f s (last exit %s): stopping every process",
                i,
                len(deaths),
                RESTART_WINDOW,
                code,
            )
            return False
        self._close(child)
        fresh = self._spawn(child.slot)
        self._children[i] = fresh
        log.error(
            "process %d (pid %d) exited with %s; restarted as pid %d",
            i,
            child.proc.pid,
            code,
            fresh.proc.pid,
        )
        return True

    def request_stop(self) -> None:
        self._stop.set()

    def stop_all(self) -> None:
        """SIGTERM every child, give each the drain time, then SIGKILL what is left."""
        for child in self._children:
            if child.proc.poll() is None:
                child.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self._grace + STOP_MARGIN
        for child in self._children:
            try:
                child.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("process %d did not stop in time: killed", child.slot.index)
                child.proc.kill()
                child.proc.wait()
            self._close(child)

    @staticmethod
    def _close(child: _Child) -> None:
        for pipe in (child.proc.stdin, child.proc.stdout):
            if pipe is not None:
                try:
                    pipe.close()
                except OSError:
                    pass


def supervise(settings: dict[str, Any]) -> int:
    """Run `settings["processes"]` children of these merged settings until a signal."""
    from pdp.sidecar import config  # the token settings too: the parent checks them once
    from pdp.tokens import settings as token_settings

    listen, http_listen = settings["listen"], settings["http_listen"]
    if str(listen).startswith("unix:"):
        print(
            "pdp serve: --processes needs a HOST:PORT --listen, not a unix socket", file=sys.stderr
        )
        return 2
    held: list[socket.socket] = []
    try:
        grpc_hold, grpc_port = reserve(listen)
        held.append(grpc_hold)
        settings = {**settings, "listen": f"{listen.rpartition(':')[0]}:{grpc_port}"}
        ports = [grpc_port]
        if http_listen:
            http_hold, http_port = reserve(http_listen)
            held.append(http_hold)
            settings["http_listen"] = f"{http_listen.rpartition(':')[0]}:{http_port}"
            ports.append(http_port)
        # Every child would refuse the same bad setting: say it once. Development keys, if asked
        # for, are made here, once, before any child looks for them.
        cfg = config.config_from(settings, token_settings.token_config(settings))
    except (Unavailable, ValueError) as exc:
        for sock in held:
            sock.close()
        print(f"pdp serve: {exc}", file=sys.stderr)
        return 1
    sup = Supervisor(settings, cfg.processes, cfg.grace_seconds)

    def handle(signum: int, _frame: object) -> None:
        log.info("signal %d: draining every process", signum)
        sup.request_stop()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    try:
        address = sup.start()
        if address is None:
            print("pdp serve: a server process did not start (its error is above)", file=sys.stderr)
            return 1
        if strangers(ports, sup.pids()):
            sup.stop_all()
            print(f"pdp serve: cannot listen on {listen}: address already in use", file=sys.stderr)
            return 1
        pids = ",".join(str(p) for p in sup.pids())
        print(f"{_READY} {address} processes={cfg.processes} pids={pids}", flush=True)
        code = sup.watch(ports)
    finally:
        for sock in held:
            sock.close()
    print("pdp: stopped", flush=True)
    return code


def child_main() -> None:
    """A child: settings from the first stdin line, then serve until SIGTERM or stdin's EOF."""
    from pdp.sidecar import command  # the same serve path as a single sidecar

    index, count = int(sys.argv[1]), int(sys.argv[2])
    settings = json.loads(sys.stdin.buffer.readline() or b"null")
    if not isinstance(settings, dict):
        sys.exit(1)  # the parent died before it said anything
    for key, typ, _, _ in command.OPTIONS:
        if typ is Path and settings.get(key) is not None:
            settings[key] = Path(settings[key])

    def orphaned() -> None:
        sys.stdin.buffer.read()  # returns at EOF: the parent is gone (or stopping us)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=orphaned, name="parent-watch", daemon=True).start()
    sys.exit(command.serve(settings, Slot(index, count)))
