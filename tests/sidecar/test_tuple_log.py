"""Durable tuples: the SQLite overlay, a clean restart, and a kill -9 in the middle of writes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import grpc

from pdp._proto.pdp.v1 import pdp_pb2, pdp_pb2_grpc
from pdp.model import RelationTuple
from pdp.sidecar.app import App
from pdp.sidecar.store.sqlite import SqliteStore

from .support import MALLORY, Authed, doc, mint, req, tuple_pb

T1 = RelationTuple.parse("document:a#owner@user:x")
T2 = RelationTuple.parse("document:b#viewer@group:eng#member")


def test_overlay_keeps_the_latest_state_per_tuple(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "tuples.db")
    assert store.append([T1, T2], []) == 1
    assert store.append([], [T1]) == 2
    store.close()
    again = SqliteStore(tmp_path / "tuples.db")
    overlay = again.snapshot()
    assert overlay.writes == (str(T2),)
    assert overlay.deletes == (str(T1),)
    assert overlay.revision == 2
    assert [(c.revision, c.writes, c.deletes) for c in again.changes_since(0, 10)] == [
        (1, (T1, T2), ()),
        (2, (), (T1,)),
    ]


def test_restart_keeps_written_and_deleted_tuples(make_app: Callable[..., App]) -> None:
    app = make_app()
    token = mint(app, scopes=("tuples:write", "tuples:read"), tenant="*")
    with grpc.insecure_channel(app.grpc_target) as ch:
        admin = Authed(pdp_pb2_grpc.AdminStub(ch), token)
        admin.WriteTuples(
            pdp_pb2.WriteTuplesRequest(
                writes=[tuple_pb("document:m#owner@user:mallory")],
                # a bundle tuple, hidden by a written delete
                deletes=[tuple_pb("group:eng#member@user:bob")],
            )
        )
        rev = admin.ReadTuples(pdp_pb2.ReadTuplesRequest()).tuple_revision
    app.stop(0.5)
    again = make_app()
    assert again.engine.tuple_revision >= rev
    with grpc.insecure_channel(again.grpc_target) as ch:
        stub = pdp_pb2_grpc.AuthorizerStub(ch)
        assert stub.Check(req(MALLORY, resource=doc("m"))).decision == pdp_pb2.EFFECT_ALLOW
        names = {str(t) for t in again.engine.read_tuples()}
    assert "document:m#owner@user:mallory" in names
    assert "group:eng#member@user:bob" not in names


def _spawn(bundle: Path, data: Path) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pdp.sidecar.command",
            "--bundle",
            str(bundle),
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            str(data),
            "--no-watch",
            "--insecure-admin",  # this test is about durability; admin auth has its own tests
            "--log-level",
            "WARNING",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("pdp: serving grpc="), line
    return proc, line.split("grpc=")[1].split()[0]


def test_kill_9_mid_stream_loses_no_acknowledged_write(bundle_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    proc, target = _spawn(bundle_dir, data)
    acked: list[str] = []
    try:
        with grpc.insecure_channel(target) as ch:
            admin = pdp_pb2_grpc.AdminStub(ch)
            for i in range(200):
                t = f"document:k{i}#owner@user:u{i}"
                if i == 60:
                    os.kill(proc.pid, signal.SIGKILL)
                try:
                    admin.WriteTuples(pdp_pb2.WriteTuplesRequest(writes=[tuple_pb(t)]), timeout=2)
                except grpc.RpcError:
                    break
                acked.append(t)
    finally:
        proc.kill()
        proc.wait(10)
        proc.stdout.close()
    assert len(acked) >= 60
    proc, target = _spawn(bundle_dir, data)
    try:
        with grpc.insecure_channel(target) as ch:
            page = pdp_pb2_grpc.AdminStub(ch).ReadTuples(
                pdp_pb2.ReadTuplesRequest(relation="owner", page_size=1000)
            )
        stored = {f"document:{t.object_id}#owner@user:{t.subject_id}" for t in page.tuples}
        assert set(acked) <= stored
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        proc.stdout.close()
