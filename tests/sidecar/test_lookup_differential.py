"""LookupResources and LookupSubjects over gRPC against brute-force Check over gRPC, on random data.

One real server per test, its examples driven through the server's own paths: random policies
and tuples (tests/strategies.py) arrive as bundles written to the watched bundle directory (each
example waits, with a deadline, for the status to show its revision), random tuple changes arrive
through Admin.WriteTuples. Every lookup is read whole and again in pages of two through the
cursors, and must list exactly the known ids Check allows (tests/engine/test_lookup.py asks the
same of the engine in process). PDP_LOOKUP_EXAMPLES raises the number of examples per test.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pdp._proto.pdp.v1 import pdp_pb2, pdp_pb2_grpc
from pdp.client import answer, check_request, entity, struct
from pdp.identifiers import WILDCARD
from pdp.model import Entity, RelationTuple, Request
from pdp.sidecar.app import App
from pdp.sidecar.config import Config
from pdp.sidecar.grpc.wire import tuple_message
from tests.strategies import SCHEMA, requests, roles, rules, tuple_strings

EXAMPLES = int(os.environ.get("PDP_LOOKUP_EXAMPLES", "30"))
ACTIONS = {"doc": ("a", "b", "c"), "folder": ("a", "b")}
# Ids the strategies draw, and one they never do: asked of Check when an answer says it is whole.
NAMED = {"doc": {"d0", "d1", "d9"}, "folder": {"f0", "f1", "f9"}, "user": {"u0", "u1", "u2", "u9"}}
PAGE = 2
RELOAD_TIMEOUT = 10.0
# The relation family the write test keeps: unions, an exclusion, an intersection, a condition on
# the subject, a forbid; its bundle holds no tuples, so an example's deletes leave nothing behind.
WRITE_POLICY = SCHEMA + (
    "permit p0: * on doc, folder when subject has view on resource\n"
    "permit p1: a on doc, folder when subject has edit on resource\n"
    "permit p2: b on doc when subject has both on resource and subject.flag\n"
    "forbid f3: a on folder when not (subject has view on resource)\n"
)

# The strategies' tuples, with a doc's wildcard viewer and a ban drawn far more often than they
# would be: a listed `*` and its exclusions need both on the resource asked about.
TUPLES = st.one_of(
    tuple_strings,
    st.sampled_from(
        [
            f"doc:{d}#{r}@user:{u}"
            for d in ("d0", "d1")
            for r, u in (("viewer", "*"), ("banned", "u1"))
        ]
    ),
)


@dataclass
class Server:
    """One sidecar on loopback, watching `root`; its stubs on one channel."""

    app: App
    root: Path
    authz: pdp_pb2_grpc.AuthorizerStub
    admin: pdp_pb2_grpc.AdminStub
    revision: int = 0

    def publish(self, policy: str, tuples: list[str], max_depth: int) -> None:
        """A new bundle in the watched directory; returns once the server serves it. The
        manifest goes last, so a load that reads its revision reads the rest as written."""
        self.revision += 1
        (self.root / "policy.pdp").write_text(policy)
        (self.root / "tuples.jsonl").write_text("".join(json.dumps(t) + "\n" for t in tuples))
        (self.root / "bundle.toml").write_text(
            f'name = "lookup-differential"\nrevision = "{self.revision}"\n'
            f"[settings]\nmax_depth = {max_depth}\n"
        )
        deadline = time.monotonic() + RELOAD_TIMEOUT
        while True:
            status = self.admin.BundleStatus(pdp_pb2.BundleStatusRequest(), timeout=5)
            if status.revision.startswith(f"{self.revision}+"):
                return
            if time.monotonic() >= deadline:
                raise AssertionError(f"bundle {self.revision} not served: {status}")
            time.sleep(0.005)

    def write(self, writes: list[str], deletes: list[str]) -> None:
        def msgs(texts: list[str]) -> list[pdp_pb2.RelationTuple]:
            return [tuple_message(RelationTuple.parse(t)) for t in texts]

        self.admin.WriteTuples(
            pdp_pb2.WriteTuplesRequest(writes=msgs(writes), deletes=msgs(deletes)), timeout=5
        )

    def allows(self, request: Request) -> bool:
        r = request
        got = self.authz.Check(
            check_request(r.subject, r.action, r.resource, dict(r.context)), timeout=5
        )
        return answer(got).allowed

    def lookup(self, request: Any, limit: int = 0, cursor: str = "") -> Listed:
        request.limit, request.cursor = limit, cursor
        if isinstance(request, pdp_pb2.LookupResourcesRequest):
            return _listed(list(self.authz.LookupResources(request, timeout=10)), "resource_id")
        return _listed(list(self.authz.LookupSubjects(request, timeout=10)), "subject_id")

    def paged(self, request: Any, whole: Listed) -> None:
        """The same answer read `PAGE` ids at a time, each page resuming at the last's cursor."""
        ids: list[str] = []
        reasons: set[str] = set()
        cursor = ""
        for _ in range(len(whole.ids) // PAGE + 2):
            page = self.lookup(request, PAGE, cursor)
            assert len(page.ids) <= PAGE
            ids += page.ids
            reasons.update(page.incomplete)
            if len(page.ids) < PAGE:
                break
            cursor = page.cursor
        assert (ids, not reasons) == (whole.ids, not whole.incomplete), request


@dataclass(frozen=True)
class Listed:
    ids: list[str]
    incomplete: list[str]
    excluded: list[str]
    cursor: str


def _listed(stream: list[Any], field: str) -> Listed:
    """A stream read and its shape checked: ids in order, one revision, the `done` message last."""
    *items, done = stream
    assert done.done and not any(r.done for r in items)
    assert all(r.tuple_revision == done.tuple_revision for r in items)
    ids = [getattr(r, field) for r in items]
    assert ids == sorted(set(ids))
    stars = [r for r in items if getattr(r, field) == WILDCARD]
    excluded = list(stars[0].excluded_subject_ids) if stars else []
    return Listed(ids, list(done.incomplete), excluded, done.cursor)


def _known(tuples: set[str], type_name: str) -> set[str]:
    """The ids of `type_name` the tuples name, as object or subject: what a lookup can list."""
    ids = set()
    for t in map(RelationTuple.parse, tuples):
        ids |= {
            i
            for ty, i in ((t.object_type, t.object_id), (t.subject_type, t.subject_id))
            if ty == type_name
        }
    ids.discard(WILDCARD)
    return ids


def agree(server: Server, tuples: set[str], request: Request) -> None:
    """Every lookup from `request`'s subject and resource lists exactly the known ids Check over
    the same server allows; an answer said to be whole also leaves out only ids Check denies."""
    subject, context = request.subject, struct(dict(request.context))
    for rtype, actions in ACTIONS.items():
        known = _known(tuples, rtype)
        for action in actions:
            ask = pdp_pb2.LookupResourcesRequest(
                subject=entity(subject), action=action, resource_type=rtype, context=context
            )
            found = server.lookup(ask)
            server.paged(ask, found)

            def allowing(ids: set[str], action: str = action, rtype: str = rtype) -> set[str]:
                return {
                    rid
                    for rid in ids
                    if server.allows(Request(subject, action, Entity(rtype, rid), request.context))
                }

            assert set(found.ids) == allowing(known), (rtype, action, found.incomplete)
            if not found.incomplete:  # whole: no id beyond the tuples' is allowed
                assert not allowing(NAMED[rtype] - known), (rtype, action)
    resource = request.resource
    users = _known(tuples, "user")
    for action in ACTIONS[resource.type]:
        ask_subjects = pdp_pb2.LookupSubjectsRequest(
            resource=entity(resource), action=action, subject_type="user", context=context
        )
        found = server.lookup(ask_subjects)
        server.paged(ask_subjects, found)
        allowed = {
            uid
            for uid in users | NAMED["user"]
            if server.allows(Request(Entity("user", uid), action, resource, request.context))
        }
        listed = set(found.ids) - {WILDCARD}
        assert listed <= allowed, (action, found)
        # Whole, or under a `*` (every known user is then put to Check): exactly the known
        # users Check allows; ids the tuples do not name are `*`'s to cover, or no one's.
        if WILDCARD in found.ids or not found.incomplete:
            assert listed == allowed & users, (action, found)
        if WILDCARD in found.ids:
            assert set(found.excluded) == users - allowed, (action, found)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    """One server per test (not per example): examples reset what they change."""
    root = tmp_path / "bundle"
    root.mkdir()
    (root / "policy.pdp").write_text(WRITE_POLICY)
    (root / "tuples.jsonl").write_text("")
    (root / "bundle.toml").write_text('name = "lookup-differential"\nrevision = "0"\n')
    app = App(
        Config(
            bundle=root,
            listen="127.0.0.1:0",
            data_dir=tmp_path / "data",
            watch=True,
            insecure_admin=True,  # these tests are about answers, not admin credentials
            bundle_quiet_seconds=0.01,
            workers=4,
        )
    )
    app.start()
    try:
        with grpc.insecure_channel(app.grpc_target) as channel:
            yield Server(
                app, root, pdp_pb2_grpc.AuthorizerStub(channel), pdp_pb2_grpc.AdminStub(channel)
            )
    finally:
        app.stop(0.5)


SERVER_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    # One server serves every example: its state is reset by each example, not by the fixture.
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@SERVER_SETTINGS
@given(
    rules(),
    roles(),
    st.lists(TUPLES, max_size=14),
    st.lists(requests(), min_size=1, max_size=2),
    st.integers(2, 6),
)
def test_lookups_over_grpc_equal_check_on_random_policies(
    server: Server,
    rule_text: str,
    role_text: str,
    tuples: list[str],
    reqs: list[Request],
    depth: int,
) -> None:
    """Each example a new bundle (policy, tuples, depth limit), loaded by the server's reloader."""
    server.publish(SCHEMA + role_text + "\n" + rule_text, tuples, depth)
    for request in reqs:
        agree(server, set(tuples), request)


@SERVER_SETTINGS
@given(
    st.lists(TUPLES, max_size=14, unique=True),
    st.lists(requests(), min_size=1, max_size=2),
    st.lists(st.tuples(st.booleans(), TUPLES), min_size=1, max_size=4),
)
def test_lookups_over_grpc_follow_writes_and_deletes(
    server: Server,
    tuples: list[str],
    reqs: list[Request],
    changes: list[tuple[bool, str]],
) -> None:
    """The bundle the server started with (one policy, no tuples); each example writes its
    tuples, changes them one write at a time (each answer read after the write returned), then
    deletes them all."""
    present = set(tuples)
    server.write(sorted(present), [])
    try:
        for request in reqs:
            agree(server, present, request)
        for write, text in changes:
            server.write([text] if write else [], [] if write else [text])
            present = present | {text} if write else present - {text}
            agree(server, present, reqs[0])
    finally:
        server.write([], sorted(present))
