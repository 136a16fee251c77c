"""A stateful attack on one real `pdp serve`: writes, deletes, schema-changing reloads, kill -9 and
graceful restarts, interleaved by hypothesis. After every step every acknowledged write is
present and no refused write is; after every restart every answer is what it was before.

Examples: `PDP_STATEFUL_EXAMPLES` (default 5), each up to 12 steps.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import grpc
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from pdp._proto.pdp.v1 import pdp_pb2
from pdp.sidecar.grpc.wire import tuple_of

from .conftest import EXAMPLE
from .saas import document, user, with_reviewer
from .serve import Served, ServeFactory, code_of, operator_token, wait_for

DOCS, BOBS = ("d0", "d1"), ("bob0", "bob1")
# `view = edit + viewer + parent->view - blocked`, and reviewers read by a rule of their own
UNIVERSE = tuple(
    f"document:{d}#{rel}@user:{b}"
    for d in DOCS
    for b in BOBS
    for rel in ("viewer", "blocked", "reviewer")
)
EXAMPLES_RUN: list[int] = []


def _stored(served: Served, token: str) -> set[str]:
    resp = served.admin(token).ReadTuples(
        pdp_pb2.ReadTuplesRequest(object_type="document", page_size=1000)
    )
    return {str(tuple_of(t)) for t in resp.tuples if t.object_id in DOCS}


class WritesReloadsRestarts(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        EXAMPLES_RUN.append(1)
        self.root = Path(tempfile.mkdtemp(prefix="pdp-stateful-"))
        self.bundle = self.root / "bundle"
        shutil.copytree(EXAMPLE, self.bundle)
        with_reviewer(self.bundle, present=True)
        self.reviewer = True  # the schema that is serving
        self.factory = ServeFactory(self.root / "serve")
        self.served = self.factory.start(self.bundle)
        self.token = operator_token(self.factory, self.served)
        self.acknowledged: set[str] = set()  # what the model says is stored
        self.refused: set[str] = set()  # refused and never acknowledged since

    def teardown(self) -> None:
        self.factory.close()
        shutil.rmtree(self.root, ignore_errors=True)

    def _answers(self) -> dict[tuple[str, str], int]:
        return {
            (b, d): self.served.check(user(b), "read", document(d)).decision
            for d in DOCS
            for b in BOBS
        }

    @rule(tuples=st.lists(st.sampled_from(UNIVERSE), min_size=1, max_size=3, unique=True))
    def write(self, tuples: list[str]) -> None:
        code = code_of(lambda: self.served.write(self.token, writes=tuples))
        fits = self.reviewer or not any("#reviewer@" in t for t in tuples)
        assert code == (grpc.StatusCode.OK if fits else grpc.StatusCode.INVALID_ARGUMENT)
        if fits:
            self.acknowledged |= set(tuples)
            self.refused -= set(tuples)
        else:
            self.refused |= set(tuples) - self.acknowledged

    @rule(tuples=st.lists(st.sampled_from(UNIVERSE), min_size=1, max_size=3, unique=True))
    def delete(self, tuples: list[str]) -> None:
        assert code_of(lambda: self.served.write(self.token, deletes=tuples)) == grpc.StatusCode.OK
        self.acknowledged -= set(tuples)

    @rule()
    def change_schema(self) -> None:
        """Add or drop the `reviewer` relation by hot reload; dropping it while reviewer tuples
        are stored must be refused, and the running schema stays."""
        before = self.served.status(self.token)
        seen = (before.revision, before.last_rejected.rejected_at.ToNanoseconds())
        target = not self.reviewer
        orphans = not target and any("#reviewer@" in t for t in self.acknowledged)
        with_reviewer(self.bundle, present=target)

        def settled() -> pdp_pb2.BundleStatusResponse | None:
            now = self.served.status(self.token)
            moved = (now.revision, now.last_rejected.rejected_at.ToNanoseconds()) != seen
            return now if moved else None

        after = wait_for(settled, timeout=30)
        if orphans:
            assert after.revision == before.revision
            assert "orphan" in "\n".join(after.last_rejected.errors)
        else:
            assert after.revision != before.revision, list(after.last_rejected.errors)
            self.reviewer = target

    def _restart(self, kill: bool) -> None:
        answers = self._answers()
        revision = self.served.status(self.token).tuple_revision
        if kill:
            self.served.kill()
        else:
            assert self.served.stop() == 0
        # the directory holds what was serving (a refused edit is reverted while it is down)
        with_reviewer(self.bundle, present=self.reviewer)
        self.served = self.factory.start(self.bundle)
        self.token = operator_token(self.factory, self.served)
        assert self._answers() == answers
        assert self.served.status(self.token).tuple_revision >= revision

    @rule()
    def kill_and_restart(self) -> None:
        self._restart(kill=True)

    @rule()
    def stop_and_restart(self) -> None:
        self._restart(kill=False)

    @invariant()
    def stored_is_exactly_what_was_acknowledged(self) -> None:
        stored = _stored(self.served, self.token)
        assert stored == self.acknowledged
        assert not stored & self.refused


WritesReloadsRestarts.TestCase.settings = settings(
    max_examples=int(os.environ.get("PDP_STATEFUL_EXAMPLES", "5")),
    stateful_step_count=12,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
test_writes_reloads_and_restarts = WritesReloadsRestarts.TestCase
