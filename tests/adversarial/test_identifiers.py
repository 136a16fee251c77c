"""One identifier grammar at every entry: an id that cannot round-trip, or that spells a userset,
a relation or the wildcard, is refused with INVALID_ARGUMENT naming the field, and nothing is
stored, so no id can brick the data directory or alias a userset."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from pdp._proto.pdp.v1 import pdp_pb2
from pdp.client import check_request
from pdp.model import Entity

from .saas import document, user
from .serve import ServeFactory, code_of, operator_token

HOSTILE_IDS = [
    "a b",  # space
    "a\tb",
    "a\nb",
    "a\u00a0b",  # NBSP
    "eng#member",  # a userset in disguise
    "a@b",
    "a:b",
    "*",
    "",
    "x" * 1025,
    "é",
    "a\x00b",
]


def _tuple(
    object_id: str = "d1", subject_id: str = "bob", subject_relation: str = ""
) -> pdp_pb2.RelationTuple:
    return pdp_pb2.RelationTuple(
        object_type="document",
        object_id=object_id,
        relation="viewer",
        subject_type="user",
        subject_id=subject_id,
        subject_relation=subject_relation,
    )


def test_hostile_ids_are_refused_everywhere_and_never_stored(
    pdp_serve: ServeFactory, saas_bundle: Path
) -> None:
    served = pdp_serve.start(saas_bundle)
    admin = served.admin(operator_token(pdp_serve, served))
    for bad in HOSTILE_IDS:
        for field, msg in (
            ("writes[0].object_id", _tuple(object_id=bad)),
            ("writes[0].subject_id", _tuple(subject_id=bad)),
        ):
            if bad == "*" and field.endswith("subject_id"):
                continue  # `user:*` is the wildcard, a valid subject
            with pytest.raises(grpc.RpcError) as info:
                admin.WriteTuples(pdp_pb2.WriteTuplesRequest(writes=[msg]))
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (bad, field)
            assert info.value.details().startswith(field), info.value.details()
        resource = pdp_pb2.Entity(type="document", id=bad)
        req = check_request(user("bob"), "read", document("d1"))
        req.resource.CopyFrom(resource)
        assert code_of(lambda: served.authz.Check(req)) == grpc.StatusCode.INVALID_ARGUMENT  # noqa: B023
    # the wildcard with a relation means nothing
    star = _tuple(subject_id="*", subject_relation="member")
    assert (
        code_of(lambda: admin.WriteTuples(pdp_pb2.WriteTuplesRequest(writes=[star])))
        == grpc.StatusCode.INVALID_ARGUMENT
    )
    # nothing was stored: unfiltered reads work, and so does a restart on the same data
    assert admin.ReadTuples(pdp_pb2.ReadTuplesRequest(page_size=1000)).tuple_revision >= 0
    served.kill()
    again = pdp_serve.start(saas_bundle)
    admin = again.admin(operator_token(pdp_serve, again))
    listed = admin.ReadTuples(pdp_pb2.ReadTuplesRequest(page_size=1000)).tuples
    assert {t.object_id for t in listed} <= {
        "eng",
        "platform",
        "acme-root",
        "acme-specs",
        "spec-1",
        "acme",
    }
    again.stop()


def test_an_id_cannot_alias_a_userset(pdp_serve: ServeFactory, saas_bundle: Path) -> None:
    """`group:eng#member` may view acme-root; an explicit subject `group` `eng#member` may not."""
    served = pdp_serve.start(saas_bundle)
    folder = Entity("folder", "acme-root", {"tenant": "acme"})
    req = check_request(Entity("group", "x", {"tenant": "acme"}), "read", folder)
    req.subject.id = "eng#member"
    with pytest.raises(grpc.RpcError) as info:
        served.authz.Check(req)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details().startswith("subject.id:")
    batch = pdp_pb2.BatchCheckRequest(items=[pdp_pb2.BatchCheckItem(request=req)])
    result = served.authz.BatchCheck(batch).results[0]
    assert result.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert result.error.message.startswith("items[0].request.subject.id:")
    served.stop()


def test_a_bundle_tuple_file_with_a_hostile_id_is_refused(
    tmp_path: Path, saas_bundle: Path
) -> None:
    (saas_bundle / "tuples" / "evil.jsonl").write_text(
        '{"object": "group:eng", "relation": "member", "subject": "user:eve\\u00a0x"}\n'
        '{"object": "document:a b", "relation": "viewer", "subject": "user:eve"}\n'
    )
    out = subprocess.run(
        [sys.executable, "-m", "pdp.cli", "validate", str(saas_bundle)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1
    assert "evil.jsonl:1:" in out.stderr and "evil.jsonl:2:" in out.stderr
    assert "Traceback" not in out.stderr


def test_the_cli_refuses_hostile_ids(saas_bundle: Path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pdp.cli",
            "check",
            str(saas_bundle),
            "--subject",
            "group:eng#member",
            "--subject-attrs",
            '{"tenant": "acme"}',
            "--action",
            "read",
            "--resource",
            "folder:acme-root",
            "--resource-attrs",
            '{"tenant": "acme"}',
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0
    assert "not an id" in out.stderr
    assert "Traceback" not in out.stderr


def test_token_subjects_follow_the_grammar(pdp_serve: ServeFactory) -> None:
    for bad in ("alice bob", "eng#member", "a@b"):
        with pytest.raises(ValueError, match="not an id"):
            pdp_serve.client(client_id=bad)
    # what our own token exchange produces (`TENANT/sub`) is an id a client may carry
    client_id, secret = pdp_serve.client(client_id="acme/alice")
    assert (client_id, bool(secret)) == ("acme/alice", True)
