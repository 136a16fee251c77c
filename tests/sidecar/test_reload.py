"""Hot reload through the real watcher: swaps under load, bad bundles kept out."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

import grpc

from pdp._proto.pdp.v1 import pdp_pb2, pdp_pb2_grpc
from pdp.sidecar import audit
from pdp.sidecar.app import App
from pdp.sidecar.reloader import Reloader

from .support import Authed, mint, req, wait_until


def _write(path: Path, text: str) -> None:
    tmp = path.with_name("." + path.name + ".tmp")  # dotfiles are not part of a bundle
    tmp.write_text(text)
    os.replace(tmp, path)


def test_reloader_keeps_the_last_good_value(tmp_path: Path) -> None:
    applied: list[str] = []
    rejected: list[Exception] = []

    def load(path: Path) -> str:
        text = (path / "v").read_text()
        if text == "bad":
            raise ValueError("bad bundle")
        return text

    (tmp_path / "v").write_text("one")
    r = Reloader(
        tmp_path, load=load, apply=applied.append, rejected=lambda _p, e: rejected.append(e)
    )
    assert r.reload_now()
    (tmp_path / "v").write_text("bad")
    assert not r.reload_now()
    assert applied == ["one"]
    assert str(rejected[0]) == "bad bundle"


def test_reload_under_load_gives_no_failed_or_mixed_answers(
    make_app: Callable[..., App], bundle_dir: Path
) -> None:
    app = make_app(watch=True)
    old_rev = app.engine.bundle.revision
    policy = bundle_dir / "policy.pdp"
    new_text = policy.read_text().replace("tenant_editors", "tenant_editors_v2")
    answers: list[tuple[str, tuple[str, ...], int]] = []
    failures: list[BaseException] = []
    stop = threading.Event()

    def load() -> None:
        with grpc.insecure_channel(app.grpc_target) as ch:
            stub = pdp_pb2_grpc.AuthorizerStub(ch)
            while not stop.is_set():
                try:
                    r = stub.Check(req(), timeout=2)
                except grpc.RpcError as exc:
                    failures.append(exc)
                    continue
                answers.append((r.bundle_revision, tuple(r.rule_ids), r.decision))

    def answered(revision: str) -> int:
        return sum(1 for rev, _, _ in list(answers) if rev == revision)

    threads = [threading.Thread(target=load, daemon=True) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: answered(old_rev) >= 30 or failures, "checks on the old bundle")
        _write(policy, new_text)
        wait_until(lambda: app.engine.bundle.revision != old_rev, "the reload")
        new_rev = app.engine.bundle.revision
        wait_until(lambda: answered(new_rev) >= 30 or failures, "checks on the new bundle")
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    assert not any(t.is_alive() for t in threads)
    assert not failures
    expected = {old_rev: ("tenant_editors",), new_rev: ("tenant_editors_v2",)}
    assert {rev for rev, _, _ in answers} == {old_rev, new_rev}
    for rev, rules, decision in answers:
        assert rules == expected[rev]
        assert decision == pdp_pb2.EFFECT_ALLOW


def test_bad_bundle_is_kept_out_while_the_good_one_serves(
    make_app: Callable[..., App], bundle_dir: Path
) -> None:
    app = make_app(watch=True)
    good = app.engine.bundle.revision
    events = app.audit.subscribe(audit.Filter(kinds=frozenset({audit.BUNDLE_REJECTED})))
    _write(bundle_dir / "policy.pdp", "permit oops: read on nosuchtype\n")
    with grpc.insecure_channel(app.grpc_target) as ch:
        admin = Authed(pdp_pb2_grpc.AdminStub(ch), mint(app, scopes=("audit:read",)))
        wait_until(
            lambda: admin.BundleStatus(pdp_pb2.BundleStatusRequest()).HasField("last_rejected"),
            "the bad bundle to be rejected",
        )
        st = admin.BundleStatus(pdp_pb2.BundleStatusRequest())
        assert st.serving
        assert st.revision == good
        assert any("policy.pdp:1:" in e for e in st.last_rejected.errors)
        resp = pdp_pb2_grpc.AuthorizerStub(ch).Check(req())
        assert resp.decision == pdp_pb2.EFFECT_ALLOW
        assert resp.bundle_revision == good
    ev = events.get(5)
    assert ev is not None
    assert ev.detail["serving_revision"] == good
