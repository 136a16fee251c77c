"""The reloader never dies: load and apply failures are reported and watched past; a directory that
appears late, is swapped by rename or symlink, or is deleted and recreated is followed."""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
import watchfiles

from pdp.sidecar import reloader as reloader_module
from pdp.sidecar.command import main as serve_main
from pdp.sidecar.reloader import Reloader

from .support import wait_until


class Recorder:
    """load reads the file `v`; apply records it (or raises on `apply-fails`)."""

    def __init__(self) -> None:
        self.applied: list[str] = []
        self.rejected: list[Exception] = []
        self._lock = threading.Lock()

    def load(self, path: Path) -> str:
        text = (path / "v").read_text()
        if text == "load-fails":
            raise RuntimeError("not a BundleError")
        return text

    def apply(self, value: str) -> None:
        if value == "apply-fails":
            raise ValueError("the compiler refused it")
        with self._lock:
            self.applied.append(value)

    def reject(self, _path: Path, exc: Exception) -> None:
        with self._lock:
            self.rejected.append(exc)


def _write(directory: Path, text: str) -> None:
    tmp = directory / ".v.tmp"
    tmp.write_text(text)
    os.replace(tmp, directory / "v")


@pytest.fixture
def rec() -> Recorder:
    return Recorder()


@pytest.fixture
def start(rec: Recorder) -> Iterator[Callable[[Path], Reloader[str]]]:
    made: list[Reloader[str]] = []

    def make(path: Path) -> Reloader[str]:
        r = Reloader(path, load=rec.load, apply=rec.apply, rejected=rec.reject, poll_seconds=0.05)
        r.reload_now()
        r.start()
        made.append(r)
        return r

    yield make
    for r in made:
        r.stop()
        assert not r.alive


def test_apply_raising_is_a_rejection_and_the_watch_goes_on(
    tmp_path: Path, rec: Recorder, start: Callable[[Path], Reloader[str]]
) -> None:
    _write(tmp_path, "one")
    r = start(tmp_path)
    for n, bad in enumerate(("apply-fails", "load-fails"), 1):
        _write(tmp_path, bad)
        wait_until(lambda n=n: len(rec.rejected) == n, f"rejection {n}")  # type: ignore[misc]
    _write(tmp_path, "two")
    wait_until(lambda: rec.applied[-1:] == ["two"], "rec.applied[-1:] == ['two']")
    assert r.alive
    assert rec.applied == ["one", "two"]
    assert [type(e) for e in rec.rejected] == [ValueError, RuntimeError]


def test_a_failing_start_is_a_rejection_and_a_later_fix_loads(
    tmp_path: Path, rec: Recorder, start: Callable[[Path], Reloader[str]]
) -> None:
    _write(tmp_path, "apply-fails")
    start(tmp_path)
    assert rec.applied == [] and len(rec.rejected) == 1
    _write(tmp_path, "fixed")
    wait_until(lambda: rec.applied == ["fixed"], "rec.applied == ['fixed']")


class _RecordedEvent(threading.Event):
    """An Event that records, for waits made by the test's own thread, whether the wait ended
    because the event was set (True) or because its timeout ran out (False)."""

    test_thread_waits: ClassVar[list[bool]] = []

    def wait(self, timeout: float | None = None) -> bool:
        result = super().wait(timeout)
        if threading.current_thread() is threading.main_thread():
            _RecordedEvent.test_thread_waits.append(result)
        return result


class _ThreadingWithRecordedEvents:
    Event = _RecordedEvent

    def __getattr__(self, name: str) -> Any:
        return getattr(threading, name)


def test_a_directory_that_appears_late_is_loaded_and_watched(
    tmp_path: Path,
    rec: Recorder,
    start: Callable[[Path], Reloader[str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = tmp_path / "bundle"
    monkeypatch.setattr(reloader_module, "threading", _ThreadingWithRecordedEvents())
    monkeypatch.setattr(_RecordedEvent, "test_thread_waits", [])
    start(path)
    # start() waited only until the watcher said there is nothing to arm, never for its timeout.
    assert _RecordedEvent.test_thread_waits == [True]
    assert len(rec.rejected) == 1  # the start-up load found nothing
    staged = tmp_path / "staged"
    staged.mkdir()
    _write(staged, "one")
    staged.rename(path)
    wait_until(lambda: rec.applied == ["one"], "rec.applied == ['one']")
    _write(path, "two")
    wait_until(lambda: rec.applied == ["one", "two"], "rec.applied == ['one', 'two']")


@pytest.mark.parametrize("how", ["rename", "symlink", "recreate"])
def test_a_replaced_directory_is_followed(
    tmp_path: Path, rec: Recorder, start: Callable[[Path], Reloader[str]], how: str
) -> None:
    v1, v2 = tmp_path / "v1", tmp_path / "v2"
    v1.mkdir()
    v2.mkdir()
    _write(v1, "one")
    _write(v2, "two")
    path = tmp_path / "bundle"
    if how == "symlink":
        path.symlink_to(v1)
    else:
        v1.rename(path)
    start(path)
    if how == "rename":
        path.rename(tmp_path / "old")
        v2.rename(path)
        shutil.rmtree(tmp_path / "old")
    elif how == "symlink":
        link = tmp_path / "link.tmp"
        link.symlink_to(v2)
        os.replace(link, path)
        shutil.rmtree(v1)
    else:
        shutil.rmtree(path)
        path.mkdir()  # the freed inode number is often handed straight back
        _write(path, "two")
    wait_until(lambda: rec.applied[-1:] == ["two"], "rec.applied[-1:] == ['two']")
    for text in ("three", "four"):  # and edits of the new directory keep loading
        _write(path, text)
        wait_until(lambda t=text: rec.applied[-1:] == [t], f"{text!r} applied")  # type: ignore[misc]


def test_a_watcher_that_fails_is_reported_and_rearmed(
    tmp_path: Path, rec: Recorder, start: Callable[[Path], Reloader[str]], monkeypatch: Any
) -> None:
    real = watchfiles.watch
    calls = [0]

    def flaky(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] == 1:
            raise OSError("inotify watch limit reached")
        return real(*args, **kwargs)

    monkeypatch.setattr(watchfiles, "watch", flaky)
    _write(tmp_path, "one")
    r = start(tmp_path)
    # The second watch, once armed, reloads whatever is there: no change is lost in between.
    wait_until(lambda: rec.applied == ["one", "one"], "rec.applied == ['one', 'one']")
    assert [str(e) for e in rec.rejected] == ["inotify watch limit reached"]
    _write(tmp_path, "two")
    wait_until(lambda: rec.applied[-1:] == ["two"], "rec.applied[-1:] == ['two']")
    assert r.alive


def test_a_failing_rejected_callback_does_not_stop_the_watch(tmp_path: Path) -> None:
    applied: list[str] = []

    def boom(_p: Path, _e: Exception) -> None:
        raise RuntimeError("audit is down")

    _write(tmp_path, "load-fails")
    r = Reloader(tmp_path, load=Recorder().load, apply=applied.append, rejected=boom)
    assert not r.reload_now()
    r.start()
    try:
        _write(tmp_path, "ok")
        wait_until(lambda: applied == ["ok"], "applied == ['ok']")
    finally:
        r.stop()


def test_serve_refuses_a_private_key_as_the_verify_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = tmp_path / "signer.pem"
    key.write_bytes(
        ed25519.Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    code = serve_main(
        ["--bundle", str(tmp_path), "--bundle-verify-key", str(key), "--data-dir", str(tmp_path)]
    )
    assert code == 2
    assert "is a private key" in capsys.readouterr().err
