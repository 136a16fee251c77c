"""The process: token-only subjects for untrusted callers, and one sidecar per data directory."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from pdp._proto.pdp.v1 import pdp_pb2
from pdp.client import check_request, entity

from .saas import document, user
from .serve import ServeFactory, operator_token, wait_for


def test_token_only_mode_refuses_self_asserted_subjects(
    pdp_serve: ServeFactory, saas_bundle: Path
) -> None:
    served = pdp_serve.start(saas_bundle, args=["--subjects", "token-only"])
    # what an untrusted caller would claim: an admin role it does not hold
    claimed = check_request(user("acme/eve", roles=frozenset({"admin"})), "read", document("d1"))
    with pytest.raises(grpc.RpcError) as info:
        served.authz.Check(claimed)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    batch = served.authz.BatchCheck(
        pdp_pb2.BatchCheckRequest(items=[pdp_pb2.BatchCheckItem(request=claimed)])
    )
    assert batch.results[0].error.code == grpc.StatusCode.UNAUTHENTICATED.value[0]
    # a verified token is a subject: its roles come from the token, not from the caller
    token = served.token(*pdp_serve.client(tenant="acme", scopes=(), roles=("viewer",)))
    viewer = pdp_pb2.CheckRequest(
        subject_token=token, action="read", resource=entity(document("d1"))
    )
    assert served.authz.Check(viewer).decision == pdp_pb2.EFFECT_ALLOW
    viewer.action = "update"
    assert served.authz.Check(viewer).decision == pdp_pb2.EFFECT_DENY
    served.stop()


def test_two_processes_on_one_data_dir_share_its_store(
    pdp_serve: ServeFactory, saas_bundle: Path, tmp_path: Path
) -> None:
    """The embedded store is a changelog both follow: a write at one is seen at the other (a
    revocation above all), and a check carrying the writer's revision never answers from older
    data."""
    data = tmp_path / "shared-data"
    first = pdp_serve.start(saas_bundle, data_dir=data)
    second = pdp_serve.start(saas_bundle, data_dir=data)
    token = operator_token(pdp_serve, first)
    grant = "document:shared-1#viewer@user:zed"
    zed, doc = user("zed"), document("shared-1")
    assert second.check(zed, "read", doc).decision == pdp_pb2.EFFECT_DENY
    revision = first.write(token, writes=[grant])
    # the revision is a consistency token at the other process too: it waits, then answers
    fresh = second.check(zed, "read", doc, min_tuple_revision=revision)
    assert (fresh.decision, fresh.tuple_revision) == (pdp_pb2.EFFECT_ALLOW, revision)
    revoked = second.write(token, deletes=[grant])
    wait_for(lambda: first.check(zed, "read", doc).decision == pdp_pb2.EFFECT_DENY)
    assert first.check(zed, "read", doc, min_tuple_revision=revoked).decision == (
        pdp_pb2.EFFECT_DENY
    )
    # a check demanding a revision no process has written yet is never answered from older data
    ahead = second.check(zed, "read", doc, min_tuple_revision=revoked + 100)
    assert (ahead.decision, ahead.reason) == (pdp_pb2.EFFECT_DENY, pdp_pb2.REASON_STALE_TUPLES)
    first.kill()
    assert second.check(zed, "read", doc).decision == pdp_pb2.EFFECT_DENY
    second.stop()
