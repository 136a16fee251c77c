"""`pdp serve` as a process: settings precedence, SIGTERM drains, and the client fails closed."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import grpc
import httpx
import pytest

from pdp._proto.pdp.v1.pdp_pb2 import BundleStatusRequest
from pdp._proto.pdp.v1.pdp_pb2_grpc import AdminStub
from pdp.client import CLIENT_ERROR, Client
from pdp.sidecar import command as serve_cli

from .support import ALICE, doc, wait_until


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    serve_cli.add_command(parser.add_subparsers())
    return parser.parse_args(["serve", *argv])


def test_flags_beat_environment_beat_file(tmp_path: Path) -> None:
    cfg = tmp_path / "pdp.toml"
    cfg.write_text('listen = "127.0.0.1:1"\nworkers = 3\nmax_batch = 7\n')
    env = {"PDP_LISTEN": "127.0.0.1:2", "PDP_WORKERS": "5"}
    s = serve_cli.settings(_args("--config", str(cfg), "--listen", "127.0.0.1:3"), env)
    assert s["listen"] == "127.0.0.1:3"
    assert s["workers"] == 5
    assert s["max_batch"] == 7
    assert s["http_listen"] == ""


def test_switches_come_from_flags_environment_and_file(tmp_path: Path) -> None:
    cfg = tmp_path / "pdp.toml"
    cfg.write_text("insecure_admin = true\n")
    s = serve_cli.settings(_args("--config", str(cfg), "--dev-keys"), {"PDP_NO_WATCH": "1"})
    assert (s["insecure_admin"], s["dev_keys"], s["no_watch"]) == (True, True, True)
    assert serve_cli.settings(_args(), {})["insecure_admin"] is False


def test_dev_keys_serve_tokens_and_guard_admin(bundle_dir: Path, tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pdp.sidecar.command",
            "--bundle",
            str(bundle_dir),
            "--listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
            "--data-dir",
            str(tmp_path / "d"),
            "--no-watch",
            "--dev-keys",
            "--log-level",
            "ERROR",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    try:
        line = proc.stdout.readline()
        target = line.split("grpc=")[1].split()[0]
        http = line.split("http=")[1].split()[0]
        jwks = httpx.get(f"http://{http}/.well-known/jwks.json", timeout=5).json()
        assert len(jwks["keys"]) == 1
        assert (tmp_path / "d" / "dev-keys" / "current").exists()
        with grpc.insecure_channel(target) as ch:
            with pytest.raises(grpc.RpcError) as info:
                AdminStub(ch).BundleStatus(BundleStatusRequest(), timeout=5)
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        proc.stdout.close()


def test_sigterm_drains_in_flight_calls(bundle_dir: Path, tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pdp.sidecar.command",
            "--bundle",
            str(bundle_dir),
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            str(tmp_path / "d"),
            "--no-watch",
            "--audit-file",
            str(tmp_path / "audit.jsonl"),
            "--log-level",
            "WARNING",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    target = proc.stdout.readline().split("grpc=")[1].split()[0]
    ok, errors = [0], []
    stop = threading.Event()

    def load() -> None:
        with Client(target, timeout=2) as c:
            while not stop.is_set():
                a = c.check(ALICE, "read", doc())
                if a.reason == CLIENT_ERROR:
                    errors.append(a.error)
                    return
                ok[0] += 1

    threads = [threading.Thread(target=load, daemon=True) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        # If the load threads fail (their client errors end them), this wait fails, not hangs.
        wait_until(lambda: ok[0] >= 50 or errors, "50 answered checks")
        assert not errors, errors
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        stop.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait(15)
    for t in threads:
        t.join(10)
        assert not t.is_alive(), "a load thread outlived the server"
    assert proc.stdout.read().strip().endswith("pdp: stopped")
    proc.stdout.close()
    # every call either completed or was refused cleanly: grpc refuses calls that arrive after
    # stop() began with CANCELLED, and a closed port gives UNAVAILABLE; the client denies both
    assert all("UNAVAILABLE" in e or "CANCELLED" in e for e in errors), errors
    lines = (tmp_path / "audit.jsonl").read_bytes().splitlines()
    assert len(lines) >= ok[0]  # the sink was flushed: every answered check is on disk


def test_client_fails_closed_and_may_opt_out() -> None:
    with grpc.insecure_channel("127.0.0.1:9") as ch:  # nothing listens on the discard port
        c = Client(channel=ch, timeout=0.2)
        closed = c.check(ALICE, "read", doc())
        assert not closed.allowed
        assert closed.reason == CLIENT_ERROR
        opened = c.check(ALICE, "read", doc(), fail_open=True)
        assert opened.allowed
        assert opened.error
