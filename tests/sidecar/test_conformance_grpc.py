"""The conformance corpus again, through a real gRPC server: the wire must not change one answer.

Each case runs its stages in order against one server: a reload rewrites the bundle directory and
has the server's own reloader load it; writes and deletes go through the Admin service."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from pdp._proto.pdp.v1 import pdp_pb2, pdp_pb2_grpc
from pdp.bundle import Bundle
from pdp.client import answer, check_request, tuple_message
from pdp.model import RelationTuple
from pdp.sidecar.app import App
from pdp.sidecar.config import Config
from tests.conformance.cases import CACHE_KEY_BUGS, Case, apply_stage, load_cases

CASES = load_cases()


def write_bundle(case: Case, stage: int, root: Path) -> None:
    root.mkdir(exist_ok=True)
    s, at = case.settings, case.stages[stage]
    fail_open = json.dumps([f"{t}:{a}" for t, a in sorted(s.fail_open)])
    depth = f"max_depth = {s.max_depth}\n" if s.max_depth else ""
    (root / "bundle.toml").write_text(
        f'name = "conformance"\nrevision = "{stage}"\n[settings]\n{depth}fail_open = {fail_open}\n'
    )
    (root / "policy.pdp").write_text(at.policy)
    (root / "tuples.jsonl").write_text("".join(json.dumps(t) + "\n" for t in at.tuples))


class Served:
    """One sidecar for one case, driven through its stages."""

    authz: pdp_pb2_grpc.AuthorizerStub
    admin: pdp_pb2_grpc.AdminStub

    def __init__(self, case: Case, tmp_path: Path) -> None:
        self.case = case
        self.root = tmp_path / "bundle"
        write_bundle(case, 0, self.root)
        self.app = App(
            Config(
                bundle=self.root,
                listen="127.0.0.1:0",
                data_dir=tmp_path / "data",
                watch=False,
                insecure_admin=True,  # the corpus tests decisions, not admin credentials
                bundle_quiet_seconds=0.01,
            )
        )  # type: ignore[call-arg]
        self.stage = 0

    def load(self, bundle: Bundle) -> None:
        if self.stage == 0:
            return  # the server loaded stage 0 when it started
        write_bundle(self.case, self.stage, self.root)
        assert self.app.reloader.reload_now(), f"stage {self.stage}: the reload was refused"
        status = self.admin.BundleStatus(pdp_pb2.BundleStatusRequest(), timeout=5)
        assert status.revision.startswith(f"{bundle.revision}+"), status

    def write(self, writes: list[RelationTuple], deletes: list[RelationTuple]) -> None:
        self.admin.WriteTuples(
            pdp_pb2.WriteTuplesRequest(
                writes=[tuple_message(t) for t in writes],
                deletes=[tuple_message(t) for t in deletes],
            ),
            timeout=5,
        )


def _param(case: Case) -> object:
    # One server per case, its cache shared by the case's checks in order: see CACHE_KEY_BUGS.
    bug = CACHE_KEY_BUGS.get(case.name)
    return pytest.param(case, id=case.name, marks=[pytest.mark.xfail(reason=bug)] if bug else [])


@pytest.fixture(params=[_param(c) for c in CASES])
def served(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Served]:
    s = Served(request.param, tmp_path)
    s.app.start()
    try:
        with grpc.insecure_channel(s.app.grpc_target) as channel:
            s.authz = pdp_pb2_grpc.AuthorizerStub(channel)
            s.admin = pdp_pb2_grpc.AdminStub(channel)
            yield s
    finally:
        s.app.stop(0.5)


def test_corpus_over_grpc(served: Served) -> None:
    case = served.case
    for i, stage in enumerate(case.stages):
        served.stage = i
        apply_stage(case, i, served.load, served.write)
        for check in stage.checks:
            r = check.request
            current = served.admin.BundleStatus(pdp_pb2.BundleStatusRequest(), timeout=5)
            got = answer(
                served.authz.Check(
                    check_request(
                        r.subject,
                        r.action,
                        r.resource,
                        dict(r.context),
                        min_tuple_revision=check.min_tuple_revision(current.tuple_revision),
                    ),
                    timeout=5,
                )
            )
            effect = "allow" if got.allowed else "deny"
            assert (effect, got.reason, got.rule_ids, got.not_found) == check.expected, check.id
