"""The HTTP/JSON API against a real `pdp serve`: every answer over HTTP equals the gRPC answer for
the same request (decision ids aside), bad input is refused with the field named and no decision,
a bad subject token is 401, and /openapi.json is a valid OpenAPI 3.1 document whose examples its
own schemas accept and the server answers."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from google.protobuf import json_format
from openapi_spec_validator import validate

from pdp._proto.pdp.v1 import pdp_pb2
from pdp.client import entity
from pdp.sidecar.grpc.json_gateway import ROUTES

from .saas import document
from .serve import Served, ServeFactory

ERIN = {"type": "user", "id": "erin", "attributes": {"tenant": "acme"}}
SPEC = {"type": "document", "id": "spec-1", "attributes": {"tenant": "acme", "owner": "alice"}}
# Each request goes over both transports; between them they reach allow, deny, not found, an
# explained trace, a forbid and a batch with a bad item.
CHECKS: list[tuple[str, dict[str, Any]]] = [
    ("/v1/check", {"subject": ERIN, "action": "read", "resource": SPEC}),
    ("/v1/check", {"subject": ERIN, "action": "read", "resource": SPEC, "explain": True}),
    ("/v1/check", {"subject": ERIN, "action": "delete", "resource": SPEC}),
    (
        "/v1/check",
        {
            "subject": {"type": "user", "id": "alice", "attributes": {"tenant": "acme"}},
            "action": "delete",
            "resource": SPEC,
        },
    ),
    (
        "/v1/check",
        {
            "subject": ERIN,
            "action": "read",
            "resource": {"type": "document", "id": "spec-1", "attributes": {"tenant": "globex"}},
        },
    ),
    (
        "/v1/batch-check",
        {
            "items": [
                {
                    "correlationId": "a",
                    "request": {"subject": ERIN, "action": "read", "resource": SPEC},
                },
                {
                    "correlationId": "b",
                    "request": {
                        "subject": {"type": "user", "id": "bad id"},
                        "action": "read",
                        "resource": SPEC,
                    },
                },
            ]
        },
    ),
    ("/v1/lookup-resources", {"subject": ERIN, "action": "read", "resourceType": "document"}),
    ("/v1/lookup-subjects", {"resource": SPEC, "action": "read", "subjectType": "user"}),
    ("/v1/plan-resources", {"subject": ERIN, "action": "read", "resourceType": "document"}),
]


@pytest.fixture
def served(pdp_serve: ServeFactory, saas_bundle: Path) -> Served:
    return pdp_serve.start(saas_bundle)


def post(served: Served, path: str, body: Any) -> httpx.Response:
    content = body if isinstance(body, (str, bytes)) else None
    return httpx.post(
        f"http://{served.http}{path}",
        content=content,
        json=None if content is not None else body,
        timeout=10,
    )


def over_grpc(served: Served, path: str, body: dict[str, Any]) -> dict[str, Any]:
    route = next(r for r in ROUTES if r.path == path)
    request = json_format.ParseDict(body, route.request())
    answer = getattr(served.authz, route.method)(request, timeout=10)
    if route.streamed:
        return {"results": [as_json(m) for m in answer]}
    return as_json(answer)


def as_json(message: Any) -> dict[str, Any]:
    return json_format.MessageToDict(message, always_print_fields_with_no_presence=True)


def without_ids(answer: Any) -> Any:
    """Decision ids are unique per decision, and the second of two equal checks may be a cache
    hit: everything else must be equal."""
    if isinstance(answer, dict):
        return {k: without_ids(v) for k, v in answer.items() if k not in ("decisionId", "cached")}
    if isinstance(answer, list):
        return [without_ids(v) for v in answer]
    return answer


def test_every_answer_over_http_is_the_grpc_answer(served: Served) -> None:
    seen, hits = set(), 0
    for path, body in CHECKS:
        r = post(served, path, body)
        assert r.status_code == 200, (path, r.text)
        grpc_answer = over_grpc(served, path, body)
        assert without_ids(r.json()) == without_ids(grpc_answer), path
        hits += grpc_answer.get("cached", False)
        if path == "/v1/check":
            seen.add((r.json()["decision"], r.json()["reason"]))
            assert r.json()["decisionId"]
    # one decision cache: a gRPC check after the same HTTP one can be its hit
    assert hits >= 1
    # the corpus above really reaches each kind of answer (else equality proves little)
    assert {d for d, _ in seen} == {"EFFECT_ALLOW", "EFFECT_DENY"}
    assert {"REASON_PERMITTED", "REASON_FORBIDDEN"} <= {r for _, r in seen}
    batch = post(served, "/v1/batch-check", CHECKS[5][1]).json()
    assert batch["results"][1]["error"]["message"].startswith("items[1].request.subject.id")


@pytest.mark.parametrize(
    ("body", "status", "names"),
    [
        ("{not json", 400, "body"),
        ("[]", 400, "body"),
        (b"\xff\xfe", 400, "body"),
        ({"subjct": ERIN, "action": "read", "resource": SPEC}, 400, "subjct"),
        ({"subject": ERIN, "action": 7, "resource": SPEC}, 400, "action"),
        ({"action": "read", "resource": SPEC}, 400, "subject"),
        (
            {"subject": ERIN, "action": "read", "resource": {"type": "document", "id": "a b"}},
            400,
            "resource.id",
        ),
        (
            {"subject": ERIN, "action": "read", "resource": SPEC, "minTupleRevision": "x"},
            400,
            "minTupleRevision",
        ),
        ({"subjectToken": "not-a-token", "action": "read", "resource": SPEC}, 401, "token"),
    ],
)
def test_bad_input_gets_no_decision_and_names_the_field(
    served: Served, body: Any, status: int, names: str
) -> None:
    r = post(served, "/v1/check", body)
    assert r.status_code == status, r.text
    error = r.json()
    assert set(error) == {"code", "status", "message"}
    assert names in error["message"]
    assert "decision" not in error


def test_a_body_over_the_limit_is_refused_unread(served: Served) -> None:
    big = {"subject": ERIN, "action": "read", "resource": SPEC, "explain": True}
    r = post(served, "/v1/check", '{"pad": "' + "x" * (5 << 20) + '", ' + str(big)[1:])
    assert r.status_code == 413
    assert r.json()["status"] == "RESOURCE_EXHAUSTED"


def test_a_subject_token_over_http_is_verified_as_over_grpc(
    pdp_serve: ServeFactory, served: Served
) -> None:
    token = served.token(*pdp_serve.client(tenant="acme", scopes=(), roles=("viewer",)))
    d1 = json_format.MessageToDict(entity(document("d1")))
    body = {"subjectToken": token, "action": "read", "resource": d1}
    r = post(served, "/v1/check", body)
    assert r.status_code == 200, r.text
    assert r.json()["decision"] == "EFFECT_ALLOW"
    assert without_ids(r.json()) == without_ids(over_grpc(served, "/v1/check", body))
    # a valid token without the permission: a deny (a decision, 200), never a 401
    denied = post(served, "/v1/check", body | {"action": "update"})
    assert (denied.status_code, denied.json()["decision"]) == (200, "EFFECT_DENY")
    # one character off: unauthenticated, and the token is never echoed back
    forged = post(served, "/v1/check", body | {"subjectToken": token[:-2] + "AA"})
    assert forged.status_code == 401
    assert token[:20] not in forged.text and token[:20] not in served.log_text()


def test_token_only_refuses_an_explicit_subject_over_http(
    pdp_serve: ServeFactory, saas_bundle: Path
) -> None:
    served = pdp_serve.start(saas_bundle, args=["--subjects", "token-only"])
    r = post(served, "/v1/check", {"subject": ERIN, "action": "read", "resource": SPEC})
    assert r.status_code == 401
    assert "token-only" in r.json()["message"]


def test_http_decisions_are_counted_like_grpc_ones(served: Served) -> None:
    def decisions() -> float:
        text = httpx.get(f"http://{served.http}/metrics", timeout=10).text
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("pdp_decisions_total")
        )

    before = decisions()
    for _ in range(3):
        assert post(served, "/v1/check", CHECKS[0][1]).status_code == 200
    assert decisions() == before + 3


def test_openapi_document_is_valid_and_its_examples_are_answered(served: Served) -> None:
    r = httpx.get(f"http://{served.http}/openapi.json", timeout=10)
    assert r.status_code == 200
    doc = r.json()
    validate(doc)  # raises on an invalid OpenAPI 3.1 document
    assert set(doc["paths"]) == {route.path for route in ROUTES}
    for path, item in doc["paths"].items():
        content = item["post"]["requestBody"]["content"]["application/json"]
        example = content["examples"]["example"]["value"]
        schema = copy.deepcopy(content["schema"]) | {"components": doc["components"]}
        jsonschema.validate(example, schema)
        first = next(iter(example))  # an object or a list in every example
        with pytest.raises(jsonschema.ValidationError):  # the schema says something
            jsonschema.validate({first: 7}, schema)
        answer = post(served, path, example)
        assert answer.status_code == 200, (path, answer.text)
    # a field of the proto is in its schema: generated, not written by hand
    check = doc["components"]["schemas"]["CheckRequest"]["properties"]
    assert set(check) >= {f.json_name for f in pdp_pb2.CheckRequest.DESCRIPTOR.fields}
