"""A misspelt action or type over the wire: a deny whose errors name it (with the nearest known
name), in the answer and in its audit event, over gRPC and HTTP alike."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import grpc
import httpx

from pdp._proto.pdp.v1 import pdp_pb2
from pdp.client import check_request

from .saas import document, user
from .serve import ServeFactory, operator_token, wait_for


def _metrics(http: str) -> str:
    return httpx.get(f"http://{http}/metrics", timeout=10).text


def test_a_misspelt_action_is_named_in_the_answer_and_the_audit_event(
    pdp_serve: ServeFactory, saas_bundle: Path
) -> None:
    served = pdp_serve.start(saas_bundle)
    events: list[pdp_pb2.AuditEvent] = []
    stream = served.admin(operator_token(pdp_serve, served)).SubscribeAudit(
        pdp_pb2.SubscribeAuditRequest(kinds=["decision"]), timeout=60
    )

    def read() -> None:
        try:
            events.extend(stream)
        except grpc.RpcError:  # cancelled at the end
            pass

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        # the stream is registered before the check is made, or its event could be missed
        wait_for(lambda: "pdp_audit_subscribers 1" in _metrics(served.http))
        typo = check_request(user("acme/erin"), "reed", document("d1"))
        answer = served.authz.Check(typo, timeout=10)
        assert answer.decision == pdp_pb2.EFFECT_DENY
        assert answer.reason == pdp_pb2.REASON_NOT_PERMITTED
        assert list(answer.errors) == [
            'unknown action "reed" for type document; did you mean "read"?'
        ]
        event = wait_for(
            lambda: next((e for e in events if e.decision_id == answer.decision_id), None)
        )
        assert json.loads(event.json)["errors"] == list(answer.errors)
        # the same request over HTTP/JSON
        r = httpx.post(
            f"http://{served.http}/v1/check",
            json={
                "subject": {"type": "usr", "id": "erin"},
                "action": "read",
                "resource": {"type": "document", "id": "d1", "attributes": {"tenant": "acme"}},
            },
            timeout=10,
        )
        assert r.json()["decision"] == "EFFECT_DENY"
        # the forbid erred on the missing tenant: the likely cause is named beside it
        assert r.json()["errors"] == [
            "tenant_isolation: missing attribute `tenant`",
            'unknown subject type "usr"; did you mean "user"?',
        ]
        # and a metric counts them, by kind
        counted = {
            line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in _metrics(served.http).splitlines()
            if line.startswith("pdp_unknown_names_total")
        }
        assert counted == {
            'pdp_unknown_names_total{kind="action"}': 1.0,
            'pdp_unknown_names_total{kind="attribute"}': 1.0,
            'pdp_unknown_names_total{kind="subject_type"}': 1.0,
        }
    finally:
        stream.cancel()
        reader.join(10)
