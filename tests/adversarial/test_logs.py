"""`pdp serve --log-format json` against a real process: every line its logging writes is one JSON
object with time, level, logger and message; the bundle's revision and a refused caller's peer
are fields; no token a caller sent or was issued appears anywhere in the log."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import pytest

from pdp._proto.pdp.v1 import pdp_pb2

from .serve import ServeFactory, wait_for


def test_json_log_lines_carry_fields_and_never_a_token(
    pdp_serve: ServeFactory, saas_bundle: Path
) -> None:
    served = pdp_serve.start(saas_bundle, args=["--log-format", "json"])
    token = served.token(*pdp_serve.client(tenant="acme", scopes=(), roles=("viewer",)))
    forged = token[:-4] + "AAAA"

    def check(subject_token: str) -> pdp_pb2.CheckResponse:
        request = pdp_pb2.CheckRequest(
            subject_token=subject_token,
            action="read",
            resource=pdp_pb2.Entity(type="document", id="d1"),
        )
        answer: pdp_pb2.CheckResponse = served.authz.Check(request, timeout=10)
        return answer

    check(token)
    with pytest.raises(grpc.RpcError):
        check(forged)
    # an admin call with the token as a bearer credential it cannot use
    with pytest.raises(grpc.RpcError):
        served.admin(forged).BundleStatus(pdp_pb2.BundleStatusRequest())
    # an undecodable request: logged with its peer
    garbage = served.channel.unary_unary("/pdp.v1.Authorizer/Check")
    with pytest.raises(grpc.RpcError):
        garbage(b"\xff\xff\xff", timeout=10)
    # a bad edit: the refusal is logged with the bundle path
    (saas_bundle / "policies" / "broken.pdp").write_text(f"permit {token}: read on nosuch\n")
    wait_for(lambda: "bundle at" in served.log_text(), timeout=20)
    served.stop()

    records = []
    for line in served.log_text().splitlines():
        if not line.startswith("{"):  # gRPC's C core writes its own lines, never ours
            assert "pdp" not in line, line
            continue
        records.append(json.loads(line))
    assert records
    for record in records:
        assert {"time", "level", "logger", "message"} <= set(record), record
    loaded = [r for r in records if "loaded from" in r["message"]]
    assert loaded and loaded[0]["bundle_revision"]
    refused = [r for r in records if "refused" in r["message"] and "bundle_path" in r]
    assert refused
    undecodable = [r for r in records if "undecodable" in r["message"]]
    assert undecodable and undecodable[0]["peer"].startswith("ipv")
    text = served.log_text()
    for secret in (token, forged):
        for part in secret.split(".")[1:]:
            assert part not in text
