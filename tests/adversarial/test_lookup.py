"""LookupResources and LookupSubjects against a real `pdp serve`: each answer equals Check asked of
the same server about every id the tuples know, through writes and deletes; pages resume exactly;
an answer is never presented as whole when it is not (stale tuples, a rule that allows without
tuples); forged cursors and tokens are refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import grpc
import pytest

from pdp._proto.pdp.v1 import pdp_pb2
from pdp.client import check_request

from .serve import Served, ServeFactory, code_of, operator_token

SCHEMA = """
type user {}
type group { relation member: user | group#member }
type folder {
  actions read
  relation viewer: user | group#member | user:*
  relation parent: folder
  relation banned: user
  permission view = viewer + parent->view
}
type document {
  actions read
  relation viewer: user | group#member
  relation parent: folder
  relation blocked: user
  permission view = (viewer + parent->view) - blocked
}
permit reading: read on document, folder when subject has view on resource
forbid banned: read on folder when subject has banned on resource
"""

TUPLES = [
    ("group:eng", "member", "user:ann"),
    ("group:eng", "member", "group:ops#member"),
    ("group:ops", "member", "user:bob"),
    ("folder:root", "viewer", "group:eng#member"),
    ("folder:sub", "parent", "folder:root"),
    ("folder:pub", "viewer", "user:*"),
    ("folder:pub", "banned", "user:bob"),
    ("document:d1", "parent", "folder:sub"),
    ("document:d2", "viewer", "user:ann"),
    ("document:d3", "parent", "folder:root"),
    ("document:d3", "blocked", "user:bob"),
    ("document:d4", "parent", "folder:pub"),
]
USERS = ("ann", "bob", "cat")
DOCS = ("d1", "d2", "d3", "d4", "d5")


@pytest.fixture
def served(pdp_serve: ServeFactory, tmp_path: Path) -> Served:
    bundle = tmp_path / "lookup-bundle"
    (bundle / "policies").mkdir(parents=True)
    (bundle / "tuples").mkdir()
    (bundle / "bundle.toml").write_text('name = "lookup"\nrevision = "1"\n')
    (bundle / "policies" / "schema.pdp").write_text(SCHEMA)
    (bundle / "tuples" / "t.jsonl").write_text(
        "".join(json.dumps({"object": o, "relation": r, "subject": s}) + "\n" for o, r, s in TUPLES)
    )
    return pdp_serve.start(bundle)


def _entity(ref: str) -> pdp_pb2.Entity:
    t, _, i = ref.partition(":")
    return pdp_pb2.Entity(type=t, id=i)


def _resources(served: Served, who: str, rtype: str = "document", **kw: object) -> list[Any]:
    req = pdp_pb2.LookupResourcesRequest(
        subject=_entity(f"user:{who}"), action="read", resource_type=rtype, **kw
    )
    return list(served.authz.LookupResources(req, timeout=10))


def _subjects(served: Served, resource: str, **kw: object) -> list[Any]:
    req = pdp_pb2.LookupSubjectsRequest(
        resource=_entity(resource), action="read", subject_type="user", **kw
    )
    return list(served.authz.LookupSubjects(req, timeout=10))


def _allowed(served: Served, who: str, resource: str) -> bool:
    from pdp.model import Entity

    t, _, i = resource.partition(":")
    resp = served.authz.Check(check_request(Entity("user", who), "read", Entity(t, i)), timeout=10)
    return bool(resp.decision == pdp_pb2.EFFECT_ALLOW)


def _ids(stream: list[Any], field: str) -> list[str]:
    *items, done = stream
    assert done.done and not getattr(done, field)  # the stream ends with its `done` message
    return [getattr(r, field) for r in items]


def _agree(served: Served) -> None:
    for who in USERS:
        stream = _resources(served, who)
        assert not stream[-1].incomplete  # relation-only rules: the whole answer
        assert _ids(stream, "resource_id") == [
            d for d in DOCS if _allowed(served, who, f"document:{d}")
        ]
    for resource in [f"document:{d}" for d in DOCS] + ["folder:pub", "folder:sub"]:
        stream = _subjects(served, resource)
        got = set(_ids(stream, "subject_id"))
        allowed = {u for u in USERS if _allowed(served, u, resource)}
        assert got - {"*"} <= allowed  # every id listed is allowed
        star = [r for r in stream if r.subject_id == "*"]
        # and every allowed one is listed, or covered by a `*` that does not exclude it
        for u in allowed - got:
            assert star and u not in star[0].excluded_subject_ids, (resource, u)


def test_lookups_equal_check_on_every_id_through_writes(
    served: Served, pdp_serve: ServeFactory
) -> None:
    assert _ids(_resources(served, "ann"), "resource_id") == ["d1", "d2", "d3", "d4"]
    assert _ids(_resources(served, "bob"), "resource_id") == ["d1", "d4"]  # d3: blocked
    assert _ids(_resources(served, "cat"), "resource_id") == ["d4"]  # pub: user:*
    _agree(served)
    token = operator_token(pdp_serve, served)
    written = served.write(
        token,
        writes=["document:d5#viewer@user:cat"],
        deletes=["document:d3#blocked@user:bob"],
    )
    fresh = _resources(served, "cat", min_tuple_revision=written)
    assert _ids(fresh, "resource_id") == ["d4", "d5"]
    assert fresh[-1].tuple_revision >= written
    assert _ids(_resources(served, "bob"), "resource_id") == ["d1", "d3", "d4"]
    _agree(served)


def test_a_wildcard_comes_back_as_itself_with_who_it_does_not_cover(served: Served) -> None:
    stream = _subjects(served, "folder:pub")
    star = next(r for r in stream if r.subject_id == "*")
    assert list(star.excluded_subject_ids) == ["bob"]  # banned: forbid overrides the wildcard
    assert "bob" not in _ids(stream, "subject_id")


def test_pages_resume_exactly_where_they_stopped(served: Served) -> None:
    pages, cursor = [], ""
    while True:
        stream = _resources(served, "ann", limit=1, cursor=cursor)
        page = _ids(stream, "resource_id")
        if not page:
            break
        pages += page
        cursor = stream[-1].cursor
    assert pages == ["d1", "d2", "d3", "d4"]


def test_an_answer_from_older_tuples_than_asked_is_never_presented_as_whole(
    served: Served,
) -> None:
    stream = _resources(served, "ann", min_tuple_revision=10**9)
    assert _ids(stream, "resource_id") == []
    assert any("stale_tuples" in why for why in stream[-1].incomplete)


def test_forged_cursors_and_tokens_are_refused(served: Served) -> None:
    assert code_of(lambda: _resources(served, "ann", cursor="not base64!")) == (
        grpc.StatusCode.INVALID_ARGUMENT
    )
    bad = pdp_pb2.LookupResourcesRequest(
        subject_token="eyJhbGciOiJub25lIn0.e30.", action="read", resource_type="document"
    )
    assert code_of(lambda: list(served.authz.LookupResources(bad, timeout=10))) == (
        grpc.StatusCode.UNAUTHENTICATED
    )
    nameless = pdp_pb2.LookupResourcesRequest(subject=_entity("user:ann"), action="read")
    assert code_of(lambda: list(served.authz.LookupResources(nameless, timeout=10))) == (
        grpc.StatusCode.INVALID_ARGUMENT
    )


def test_the_python_client_lists_pages_and_fails_closed(served: Served) -> None:
    from pdp.client import Client
    from pdp.model import Entity

    with Client(served.grpc_target, timeout=5) as client:
        first = client.lookup_resources(Entity("user", "ann"), "read", "document", limit=2)
        assert (first.ids, first.complete) == (("d1", "d2"), True)
        rest = client.lookup_resources(
            Entity("user", "ann"), "read", "document", cursor=first.cursor
        )
        assert rest.ids == ("d3", "d4")
        pub = client.lookup_subjects(Entity("folder", "pub"), "read", "user")
        assert "*" in pub.ids and pub.excluded == ("bob",)
        stale = client.lookup_resources(
            Entity("user", "ann"), "read", "document", min_tuple_revision=10**9
        )
        assert (stale.ids, stale.complete) == ((), False)
    with Client("127.0.0.1:9", timeout=0.5) as nowhere:  # nothing listens: nothing listed
        down = nowhere.lookup_resources(Entity("user", "ann"), "read", "document")
        assert (down.ids, down.complete) == ((), False) and down.incomplete
