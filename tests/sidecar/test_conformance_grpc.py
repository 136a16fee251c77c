"""The conformance corpus again, through a real gRPC server: the wire must not change one answer.

Each case runs its stages in order against one server: a reload rewrites the bundle directory and
has the server's own reloader load it; writes and deletes go through the Admin service. Each
stage's lookups are read as one stream and again a page of one id at a time through the cursors,
and their expectations put to brute force with Check over the same server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from pdp._proto.pdp.v1 import pdp_pb2, pdp_pb2_grpc
from pdp.bundle import Bundle
from pdp.client import answer, check_request, entity, struct, tuple_message
from pdp.identifiers import WILDCARD
from pdp.model import RelationTuple, Request
from pdp.sidecar.app import App
from pdp.sidecar.config import Config
from tests.conformance.cases import CACHE_KEY_BUGS, Case, Listing, apply_stage, load_cases

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

    def allows(self, request: Request) -> bool:
        r = request
        checked = self.authz.Check(
            check_request(r.subject, r.action, r.resource, dict(r.context)), timeout=5
        )
        return answer(checked).allowed

    def stream(self, lookup: Listing, limit: int = 0, cursor: str = "") -> list[Any]:
        x, context = lookup, struct(dict(lookup.context))
        if x.resources:
            return list(
                self.authz.LookupResources(
                    pdp_pb2.LookupResourcesRequest(
                        subject=entity(x.start),
                        action=x.action,
                        resource_type=x.listed_type,
                        context=context,
                        limit=limit,
                        cursor=cursor,
                    ),
                    timeout=10,
                )
            )
        return list(
            self.authz.LookupSubjects(
                pdp_pb2.LookupSubjectsRequest(
                    resource=entity(x.start),
                    action=x.action,
                    subject_type=x.listed_type,
                    context=context,
                    limit=limit,
                    cursor=cursor,
                ),
                timeout=10,
            )
        )

    def assert_lookup(self, lookup: Listing) -> None:
        """As one stream, as pages of one id through the cursors, and put to brute force."""
        whole = _read(self.stream(lookup), lookup)
        assert whole.expected == lookup.expected, (lookup.id, whole.incomplete)
        assert not lookup.missing_reasons(whole.incomplete), (lookup.id, whole.incomplete)
        ids: list[str] = []
        reasons: set[str] = set()
        cursor = ""
        for _ in range(len(lookup.expect) + 1):  # one page per id, then an empty one
            page = _read(self.stream(lookup, limit=1, cursor=cursor), lookup)
            ids += page.ids
            reasons.update(page.incomplete)
            if not page.ids:
                break
            cursor = page.cursor
        assert (tuple(ids), not reasons) == whole.expected[:2], lookup.id
        # Check over the wire refuses the subject `*` (it names no one); the engine runner asks.
        universe = [i for i in lookup.universe if i != WILDCARD]
        assert not lookup.disagreements(self.allows, universe), lookup.id


@dataclass(frozen=True)
class Read:
    ids: tuple[str, ...]
    excluded: tuple[str, ...]
    incomplete: tuple[str, ...]
    cursor: str

    @property
    def expected(self) -> tuple[tuple[str, ...], bool, tuple[str, ...]]:
        return (self.ids, not self.incomplete, self.excluded)


def _read(stream: list[Any], lookup: Listing) -> Read:
    """A lookup stream, its shape checked: one message per id, each at the revision the `done`
    message ends the stream with."""
    *items, done = stream
    assert done.done and not any(r.done for r in items), lookup.id
    assert all(r.tuple_revision == done.tuple_revision for r in items), lookup.id
    if lookup.resources:
        return Read(tuple(r.resource_id for r in items), (), tuple(done.incomplete), done.cursor)
    stars = [r for r in items if r.subject_id == WILDCARD]
    return Read(
        tuple(r.subject_id for r in items),
        tuple(stars[0].excluded_subject_ids) if stars else (),
        tuple(done.incomplete),
        done.cursor,
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
        for lookup in stage.lookups:
            served.assert_lookup(lookup)
