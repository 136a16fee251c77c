"""The maintenance loop: one pass per interval until stopped, failures logged, no sleeps here."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import threading
from pathlib import Path
from typing import Any

import pytest

from pdp.tokens import InvalidToken, TokenRuntime
from pdp.tokens.clients import create_client

from .support import ISSUER, make_runtime


class Stop:
    """A stop signal that lets `passes` waits go by, then says stop; it records the timeouts."""

    def __init__(self, passes: int) -> None:
        self.left = passes
        self.timeouts: list[float | None] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.timeouts.append(timeout)
        if self.left == 0:
            return True
        self.left -= 1
        return False


@pytest.fixture
def runtime(tmp_path: Path) -> TokenRuntime:
    rt = make_runtime(tmp_path, ISSUER, None, [])
    yield rt  # type: ignore[misc]
    rt.close()


def test_the_loop_runs_a_pass_per_interval_until_stopped(
    runtime: TokenRuntime, tmp_path: Path
) -> None:
    client = runtime.service.authenticate_client(
        "m2m", create_client(runtime.store, "m2m", tenant="acme", now=0.0), "127.0.0.1"
    )
    token = runtime.service.client_credentials(client, None).access
    runtime.verifier.verify(token.token)
    other = make_runtime(tmp_path, ISSUER, None, [])
    try:
        other.service.revoke_jti(token.jti, token.exp)  # another process sharing the store
    finally:
        other.close()
    stop = Stop(passes=1)
    runtime.maintain_until(stop)
    assert stop.timeouts == [runtime.config.maintenance_interval] * 2
    with pytest.raises(InvalidToken, match="revoked"):
        runtime.verifier.verify(token.token)


def test_a_failed_pass_is_logged_and_the_next_one_runs(
    runtime: TokenRuntime, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[int] = []

    def maintain(self: TokenRuntime) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise OSError("key directory unreadable")

    monkeypatch.setattr(TokenRuntime, "maintain", maintain)
    with caplog.at_level(logging.ERROR, logger="pdp.tokens.runtime"):
        runtime.maintain_until(Stop(passes=3))
    assert len(calls) == 3
    assert [r.getMessage() for r in caplog.records] == ["token maintenance failed"]


def test_maintain_forever_runs_the_loop_off_the_event_loop_and_stops_when_cancelled(
    runtime: TokenRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran = threading.Event()
    threads: list[threading.Thread] = []

    def maintain(self: TokenRuntime) -> None:
        threads.append(threading.current_thread())
        ran.set()

    monkeypatch.setattr(TokenRuntime, "maintain", maintain)
    fast = dataclasses.replace(
        runtime, config=dataclasses.replace(runtime.config, maintenance_interval=0.0)
    )

    async def main() -> Any:
        task = asyncio.create_task(fast.maintain_forever())
        assert await asyncio.to_thread(ran.wait, 10.0), "no maintenance pass within 10 s"
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return threading.current_thread()

    loop_thread = asyncio.run(main())  # returns once its worker threads have finished
    assert threads and loop_thread not in threads
    assert not any(t.is_alive() for t in threads)
