"""The Envoy servicer (pdp.sidecar.grpc.envoy) in process, where failures can be staged: whatever
raises on the way, the answer is a denial (fail closed), never an OK and never an escaped error."""

from __future__ import annotations

from typing import Any

import pytest
from envoy.service.auth.v3 import external_auth_pb2

from pdp.model import Decision, Effect, Entity, Reason, Request
from pdp.sidecar.envoy_routes import parse_routes
from pdp.sidecar.grpc.envoy import EnvoyAuthorizer
from pdp.tokens.errors import InvalidToken

ROUTES = parse_routes(
    {
        "actions": {"GET": "read"},
        "routes": [{"path": "/documents/{id}", "resource_type": "document"}],
    }
)
ALICE = Entity("user", "alice")
ALLOW = Decision(Effect.ALLOW, Reason.PERMITTED, ("r",), "1", 0)


class FakeService:
    def __init__(self, decide: Any = lambda _req: ALLOW) -> None:
        self.decide = decide
        self.asked: list[Request] = []
        self.metadata: list[tuple[str, str]] = []

    def check(self, request: Request, *, metadata: Any = None) -> tuple[Decision, str]:
        self.asked.append(request)
        self.metadata = list(metadata())
        return self.decide(request), "dec-1"


def request(path: str = "/documents/d1", *, raw: bool = False, **headers: str) -> Any:
    req = external_auth_pb2.CheckRequest()
    http = req.attributes.request.http
    http.method, http.host, http.path = "GET", "h", path
    for name, value in headers.items():
        if raw:  # Envoy's encode_raw_headers: header_map, values as bytes
            http.header_map.headers.add(key=name, raw_value=value.encode())
        else:
            http.headers[name] = value
    return req


def answer(authorizer: EnvoyAuthorizer, req: Any) -> int:
    resp = authorizer.Check(req, None)
    if resp.WhichOneof("http_response") == "ok_response":
        assert resp.status.code == 0
        return 200
    assert resp.status.code != 0
    return int(resp.denied_response.status.code)


def token_ok(token: str) -> Entity:
    assert token == "t0k3n"
    return ALICE


def boom(*_args: Any) -> Any:
    raise RuntimeError("boom")


def test_allowed() -> None:
    service = FakeService()
    authorizer = EnvoyAuthorizer(service, ROUTES, token_ok)  # type: ignore[arg-type]
    assert answer(authorizer, request(authorization="Bearer t0k3n", cookie="c=1")) == 200
    assert service.asked == [Request(ALICE, "read", Entity("document", "d1"))]
    assert not any(k in ("authorization", "cookie") for k, _ in service.metadata)


def test_raw_headers_are_read_too() -> None:
    authorizer = EnvoyAuthorizer(FakeService(), ROUTES, token_ok)  # type: ignore[arg-type]
    assert answer(authorizer, request(raw=True, Authorization="Bearer t0k3n")) == 200
    assert answer(authorizer, request(raw=True)) == 401


@pytest.mark.parametrize(
    ("service", "verify", "status"),
    [
        (FakeService(), boom, 403),  # the verifier breaks: denied, not waved through
        (FakeService(boom), token_ok, 403),  # the decision breaks
        (FakeService(lambda _r: None), token_ok, 403),  # a decision that is not one
        (FakeService(), lambda _t: (_ for _ in ()).throw(InvalidToken("expired")), 401),
        (FakeService(), lambda _t: None, 403),  # a verifier that returns no subject
    ],
)
def test_an_error_anywhere_is_a_denial(service: Any, verify: Any, status: int) -> None:
    authorizer = EnvoyAuthorizer(service, ROUTES, verify)
    assert answer(authorizer, request(authorization="Bearer t0k3n")) == status


def test_broken_routes_deny() -> None:
    class Broken:
        realm, subject_header, decision_header = "pdp", "x-s", "x-d"

        def match(self, _request: Any) -> Any:
            raise KeyError("boom")

    authorizer = EnvoyAuthorizer(FakeService(), Broken(), token_ok)  # type: ignore[arg-type]
    assert answer(authorizer, request(authorization="Bearer t0k3n")) == 403
