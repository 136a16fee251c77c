"""The conformance corpus again, through a real gRPC server: the wire must not change one answer."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from pdp._proto.pdp.v1 import pdp_pb2_grpc
from pdp.app import App, Config
from pdp.client import answer, check_request
from tests.conformance.cases import Case, load_cases

CASES = load_cases()


def write_bundle(case: Case, root: Path) -> Path:
    root.mkdir()
    s = case.settings
    fail_open = json.dumps([f"{t}:{a}" for t, a in sorted(s.fail_open)])
    depth = f"max_depth = {s.max_depth}\n" if s.max_depth else ""
    (root / "bundle.toml").write_text(
        f'name = "conformance"\nrevision = "1"\n[settings]\n{depth}fail_open = {fail_open}\n'
    )
    (root / "policy.pdp").write_text(case.policy)
    (root / "tuples.jsonl").write_text("".join(json.dumps(t) + "\n" for t in case.tuples))
    return root


@pytest.fixture(params=CASES, ids=[c.name for c in CASES])
def served(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[Case, pdp_pb2_grpc.AuthorizerStub]]:
    case: Case = request.param
    app = App(
        Config(
            bundle=write_bundle(case, tmp_path / "bundle"),
            listen="127.0.0.1:0",
            data_dir=tmp_path / "data",
            watch=False,
        )
    )  # type: ignore[call-arg]
    app.start()
    try:
        with grpc.insecure_channel(app.grpc_target) as channel:
            yield case, pdp_pb2_grpc.AuthorizerStub(channel)
    finally:
        app.stop(0.5)


def test_corpus_over_grpc(served: tuple[Case, pdp_pb2_grpc.AuthorizerStub]) -> None:
    case, stub = served
    for check in case.checks:
        r = check.request
        got = answer(
            stub.Check(check_request(r.subject, r.action, r.resource, dict(r.context)), timeout=5)
        )
        assert ("allow" if got.allowed else "deny") == check.expect, check.id
        if check.reason is not None:
            assert got.reason == check.reason, check.id
        if check.rules is not None:
            assert got.rule_ids == check.rules, check.id
        if check.not_found is not None:
            assert got.not_found == check.not_found, check.id
