"""The process: token-only subjects for untrusted callers, and one sidecar per data directory."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from pdp._proto.pdp.v1 import pdp_pb2
from pdp.client import check_request, entity

from .saas import document, user
from .serve import ServeFactory, _read_line


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


def test_a_second_process_on_a_data_dir_in_use_is_refused(
    pdp_serve: ServeFactory, saas_bundle: Path, tmp_path: Path
) -> None:
    data = tmp_path / "shared-data"
    first = pdp_serve.start(saas_bundle, data_dir=data)
    second = pdp_serve.popen(saas_bundle, data_dir=data, log=tmp_path / "second.log")
    assert second.wait(30) == 1
    err = (tmp_path / "second.log").read_text()
    assert f"in use by another pdp process (pid {first.proc.pid})" in err
    assert "Traceback" not in err
    assert _read_line(second, 0.1) == ""  # it never said it was serving
    # a killed owner leaves no stale lock behind
    first.kill()
    third = pdp_serve.start(saas_bundle, data_dir=data)
    assert third.check(user("alice"), "read", document("spec-1")).decision == pdp_pb2.EFFECT_ALLOW
    third.stop()
