"""pdp.sidecar.writer, the one owner of writes, in process: what it refuses it never stores."""

from __future__ import annotations

from pathlib import Path

import pytest

from pdp.bundle import bundle_from_text
from pdp.bundle.tuple_schema import InvalidTuple
from pdp.engine import Engine
from pdp.model import RelationTuple
from pdp.sidecar import audit
from pdp.sidecar.follower import Follower
from pdp.sidecar.store.sqlite import SqliteStore
from pdp.sidecar.writer import Writer
from pdp.tenancy import Caller, TenantDenied

POLICY = """
type user {}
type doc {
  actions read
  relation viewer: user
}
permit r: read on doc when subject has viewer on resource
"""
T = RelationTuple.parse


def _writer(tmp_path: Path) -> tuple[Writer, SqliteStore]:
    store = SqliteStore(tmp_path / "tuples.db")
    engine = Engine()
    writer = Writer(engine, store, Follower(store, engine), audit.AuditHub())
    writer.apply_bundle(bundle_from_text(POLICY))
    return writer, store


@pytest.mark.parametrize(
    ("writes", "deletes", "error"),
    [
        (["doc:1#viewer@user:a"], ["doc:1#viewer@user:a"], "both written and deleted"),
        (["doc:1#editor@user:a"], [], "not a relation"),
        ([RelationTuple("doc", "1 x", "viewer", "user", "a")], [], "object_id"),
        ([RelationTuple("doc", "1", "viewer", "user", "eng#member")], [], "subject_id"),
        ([], [RelationTuple("doc", "*", "viewer", "user", "a")], "object_id"),
    ],
)
def test_a_refused_write_is_never_stored(
    tmp_path: Path, writes: list[object], deletes: list[object], error: str
) -> None:
    writer, log = _writer(tmp_path)
    revision = writer.engine.tuple_revision
    as_tuples = [T(t) if isinstance(t, str) else t for t in writes]
    del_tuples = [T(t) if isinstance(t, str) else t for t in deletes]
    with pytest.raises(InvalidTuple, match=error):
        writer.write(as_tuples, del_tuples)  # type: ignore[arg-type]
    overlay = log.snapshot()
    assert (overlay.writes, overlay.deletes, overlay.revision) == ((), (), revision)
    assert writer.engine.read_tuples() == []


def test_a_tenant_bound_caller_is_refused_before_anything_is_stored(tmp_path: Path) -> None:
    writer, log = _writer(tmp_path)  # a bundle without [tenancy]: no id is in any tenant
    with pytest.raises(TenantDenied):
        writer.write([T("doc:acme/1#viewer@user:acme/a")], caller=Caller("x", "acme"))
    assert log.snapshot().writes == ()
    revision = writer.engine.tuple_revision
    assert writer.write([T("doc:1#viewer@user:a")], caller=Caller("ops", None)) == revision + 1
    assert log.snapshot().writes == ("doc:1#viewer@user:a",)


def test_a_write_with_no_bundle_is_refused(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "tuples.db")
    writer = Writer(Engine(), store, Follower(store, Engine()), audit.AuditHub())
    with pytest.raises(InvalidTuple, match="no bundle"):
        writer.write([T("doc:1#viewer@user:a")])
