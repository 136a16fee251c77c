"""Envoy's ext_authz against a real `pdp serve --envoy-routes`, driven as Envoy drives it: the
`CheckRequest` Envoy sends, built with Envoy's own generated protos (xds-protos) and its
`AuthorizationStub`. Every row of docs/envoy.md's table, the documented routes and Envoy
configuration, the answer equal to a direct Check, and no token in the log or the audit."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.config.core.v3 import base_pb2
from envoy.extensions.filters.http.ext_authz.v3 import ext_authz_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2  # noqa: F401  # for the Any
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2,
)
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2  # noqa: F401
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from google.protobuf import json_format

from pdp._proto.pdp.v1 import pdp_pb2
from pdp.client import entity
from pdp.model import Entity
from pdp.tokens.issuer import AccessTokenIssuer
from pdp.tokens.keys import KeyRing

from .serve import AUDIENCE, ISSUER, Served, ServeFactory, wait_for

DOC = Path(__file__).parents[2] / "docs" / "envoy.md"
EXAMPLE = Path(__file__).parents[2] / "bundles" / "saas"
HOST = "docs.example.com"
D1 = "/tenants/acme/documents/d1"


def doc_block(language: str) -> str:
    (found,) = re.findall(rf"```{language}\n(.*?)```", DOC.read_text(), re.S)
    return str(found)


@pytest.fixture(scope="module")
def factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeFactory]:
    made = ServeFactory(tmp_path_factory.mktemp("envoy"))
    try:
        yield made
    finally:
        made.close()  # every process it started: stopped here, if a test has not already


@pytest.fixture(scope="module")
def served(factory: ServeFactory) -> Iterator[Served]:
    routes = factory.root / "envoy-routes.toml"
    routes.write_text(doc_block("toml"))  # the documented mapping, as written
    audit = factory.root / "audit.jsonl"
    running = factory.start(
        EXAMPLE, args=["--envoy-routes", str(routes), "--audit-file", str(audit)]
    )
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def viewer(factory: ServeFactory, served: Served) -> str:
    return served.token(*factory.client(tenant="acme", scopes=(), roles=("viewer",)))


@pytest.fixture(scope="module")
def nobody(factory: ServeFactory, served: Served) -> str:
    return served.token(*factory.client(tenant="acme", scopes=(), roles=()))


def envoy_check(
    served: Served,
    path: str,
    *,
    method: str = "GET",
    host: str = HOST,
    token: str | None = None,
    **headers: str,
) -> external_auth_pb2.CheckResponse:
    """What Envoy's ext_authz filter asks for one HTTP request (header names lowercase, as
    Envoy sends them)."""
    req = external_auth_pb2.CheckRequest()
    http = req.attributes.request.http
    http.method, http.host, http.path, http.scheme, http.protocol = (
        method,
        host,
        path,
        "http",
        "HTTP/1.1",
    )
    http.id = "4200"
    http.headers[":authority"] = host
    http.headers[":path"] = path
    http.headers[":method"] = method
    http.headers["x-request-id"] = "req-envoy-1"
    if token is not None:
        http.headers["authorization"] = f"Bearer {token}"
    for name, value in headers.items():
        http.headers[name.replace("_", "-")] = value
    stub = external_auth_pb2_grpc.AuthorizationStub(served.channel)
    resp: external_auth_pb2.CheckResponse = stub.Check(req, timeout=10)
    return resp


def http_status(resp: external_auth_pb2.CheckResponse) -> int:
    """What Envoy answers the client: 200 (let through) or the denial's status."""
    if resp.WhichOneof("http_response") == "ok_response":
        assert resp.status.code == 0
        return 200
    assert resp.status.code != 0
    return int(resp.denied_response.status.code)


def header(options: Any, name: str) -> str | None:
    values = [o.header.value for o in options if o.header.key == name]
    assert len(values) <= 1
    return values[0] if values else None


def direct(served: Served, token: str, action: str, resource: Entity) -> pdp_pb2.CheckResponse:
    """The same question asked with Check and a subject_token."""
    resp: pdp_pb2.CheckResponse = served.authz.Check(
        pdp_pb2.CheckRequest(subject_token=token, action=action, resource=entity(resource)),
        timeout=10,
    )
    return resp


def audited(served: Served, decision_id: str) -> dict[str, Any]:
    """The audit file's event for `decision_id` (the file sink writes in the background)."""
    path = served.data_dir.parent / "audit.jsonl"

    def find() -> dict[str, Any] | None:
        if not path.exists():
            return None
        for line in path.read_text().splitlines():
            event = json.loads(line)
            if event.get("decision_id") == decision_id:
                return dict(event)
        return None

    found: dict[str, Any] = wait_for(find)
    return found


def documents(tenant: str = "acme", doc_id: str = "d1") -> Entity:
    """The resource the documented route builds for /tenants/TENANT/documents/ID."""
    return Entity("document", doc_id, {"tenant": tenant, "classification": 0})


# ---- allowed ---------------------------------------------------------------------------------


def test_allowed_goes_upstream_with_the_subject_and_decision_id(
    served: Served, viewer: str
) -> None:
    resp = envoy_check(served, D1, token=viewer)
    assert http_status(resp) == 200
    headers = resp.ok_response.headers
    decision_id = header(headers, "x-pdp-decision-id")
    subject = header(headers, "x-pdp-subject")
    assert decision_id and subject
    # overwrite, never append: a client's own `x-pdp-subject` cannot survive beside ours
    assert {o.append_action for o in headers} == {
        base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
    }
    assert not any(o.HasField("append") for o in headers)
    # the same question as a direct Check: the same answer, the same subject
    same = direct(served, viewer, "read", documents())
    assert same.decision == pdp_pb2.EFFECT_ALLOW
    event = audited(served, decision_id)
    twin = audited(served, same.decision_id)
    assert event["effect"] == "allow" and event["metadata"] == {"x-request-id": "req-envoy-1"}
    for key in ("subject", "action", "resource", "context", "effect", "reason", "rule_ids"):
        assert event[key] == twin[key], key
    assert subject in json.dumps(event)
    assert viewer not in json.dumps(event)


def test_a_client_sent_subject_header_is_overwritten(served: Served, viewer: str) -> None:
    resp = envoy_check(served, D1, token=viewer, **{"x-pdp-subject": "alice"})
    assert http_status(resp) == 200
    assert header(resp.ok_response.headers, "x-pdp-subject") != "alice"


def test_every_documented_route_is_served(served: Served, viewer: str, factory: Any) -> None:
    editor = served.token(*factory.client(tenant="acme", scopes=(), roles=("editor",)))
    assert http_status(envoy_check(served, D1, method="PUT", token=editor)) == 200
    assert http_status(envoy_check(served, D1, method="PUT", token=viewer)) == 403
    assert http_status(envoy_check(served, "/tenants/acme/folders/f1/", token=viewer)) == 200
    assert http_status(envoy_check(served, "/tenants/acme/folders/f1", token=viewer)) == 403
    # approval is outside business hours or not: the same answer as the direct check
    resp = envoy_check(served, D1 + "/approval", method="POST", token=viewer)
    want = direct(served, viewer, "approve", documents())
    assert http_status(resp) == (200 if want.decision == pdp_pb2.EFFECT_ALLOW else 403)


# ---- credentials -----------------------------------------------------------------------------


def assert_challenge(resp: external_auth_pb2.CheckResponse, error: str | None) -> None:
    assert http_status(resp) == 401
    assert resp.status.code == grpc.StatusCode.UNAUTHENTICATED.value[0]
    challenge = header(resp.denied_response.headers, "www-authenticate")
    assert challenge is not None and challenge.startswith('Bearer realm="docs"')
    if error is None:
        assert "error=" not in challenge
    else:
        assert f'error="{error}"' in challenge


def test_no_token_is_a_401_challenge(served: Served) -> None:
    assert_challenge(envoy_check(served, D1), None)
    assert_challenge(envoy_check(served, D1, authorization="Basic YWxpY2U6c2VjcmV0"), None)


def test_a_token_anywhere_but_the_authorization_header_is_ignored(
    served: Served, viewer: str
) -> None:
    assert_challenge(envoy_check(served, D1 + f"?access_token={viewer}"), None)
    assert_challenge(envoy_check(served, D1, **{"x-access-token": viewer}), None)
    assert_challenge(envoy_check(served, D1, cookie=f"access_token={viewer}"), None)
    assert_challenge(envoy_check(served, D1, **{"proxy-authorization": f"Bearer {viewer}"}), None)


def forged(factory: ServeFactory, *, audience: str = AUDIENCE, age: float = 0.0) -> str:
    """A token signed with the server's own key, but minted `age` seconds ago or for another
    audience."""
    issuer = AccessTokenIssuer(
        KeyRing(factory.key_dir),
        issuer=ISSUER,
        audience=audience,
        lifetime=300,
        clock=lambda: time.time() - age,
    )
    return issuer.issue(
        subject="acme/mallory", tenant="acme", client_id="nobody", roles=["viewer"]
    ).token


def test_a_token_that_does_not_verify_is_a_401_invalid_token(
    served: Served, factory: ServeFactory, viewer: str
) -> None:
    head, body, sig = viewer.split(".")
    flipped = sig[:-2] + ("AA" if sig[-2:] != "AA" else "BB")
    for bad in (
        "garbage",
        f"{head}.{body}.{flipped}",  # tampered signature
        forged(factory, age=3600),  # expired
        forged(factory, audience="another-service"),  # minted for someone else
        f"{viewer} {viewer}",  # two tokens
        f"{viewer},Bearer {viewer}",  # two authorization headers, as Envoy joins them
    ):
        assert_challenge(envoy_check(served, D1, authorization=f"Bearer {bad}"), "invalid_token")
    # the forged one is a good token but for its age and audience: it would pass otherwise
    fresh = forged(factory)
    assert http_status(envoy_check(served, D1, token=fresh)) == 200


# ---- denials ---------------------------------------------------------------------------------


def test_a_valid_token_without_permission_is_403_as_a_direct_check_denies(
    served: Served, nobody: str
) -> None:
    resp = envoy_check(served, D1, token=nobody)
    assert http_status(resp) == 403
    assert resp.status.code == grpc.StatusCode.PERMISSION_DENIED.value[0]
    decision_id = header(resp.denied_response.headers, "x-pdp-decision-id")
    assert decision_id
    same = direct(served, nobody, "read", documents())
    assert same.decision == pdp_pb2.EFFECT_DENY and not same.not_found
    event, twin = audited(served, decision_id), audited(served, same.decision_id)
    assert event["effect"] == "deny"
    for key in ("subject", "resource", "effect", "reason", "rule_ids"):
        assert event[key] == twin[key], key


def test_another_tenants_document_is_not_found_as_the_policy_says(
    served: Served, viewer: str
) -> None:
    resp = envoy_check(served, "/tenants/globex/documents/d1", token=viewer)
    assert http_status(resp) == 404
    assert direct(served, viewer, "read", documents("globex")).not_found


@pytest.mark.parametrize(
    ("method", "host", "path"),
    [
        ("GET", HOST, "/"),
        ("GET", HOST, "/admin"),
        ("GET", HOST, "/tenants/acme/documents"),
        ("GET", "evil.example.com", D1),  # the routes name their host
        ("POST", HOST, D1),  # no action for POST on this route
        ("GET", HOST, D1 + "/approval"),  # only POST on that one
    ],
)
def test_no_route_is_403(served: Served, viewer: str, method: str, host: str, path: str) -> None:
    resp = envoy_check(served, path, method=method, host=host, token=viewer)
    assert http_status(resp) == 403
    assert header(resp.denied_response.headers, "x-pdp-decision-id") is None  # no decision


@pytest.mark.parametrize(
    "path",
    [
        "/tenants/acme/documents/..",
        "/tenants/acme/documents/%2e%2E",
        "/tenants/acme/../acme/documents/d1",
        "/tenants/acme%2Fglobex/documents/d1",
        "/tenants/acme/documents/a%5Cb",
        "/tenants/acme/documents/d%zz",
        "/tenants/acme/documents/a.b",
        "/tenants/acme/documents/*",
        "/tenants/acme//documents/d1",
        "documents",
    ],
)
def test_a_malformed_path_or_id_is_400(served: Served, viewer: str, path: str) -> None:
    resp = envoy_check(served, path, token=viewer)
    assert http_status(resp) == 400
    assert resp.status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]


def test_no_token_comes_before_the_path(served: Served) -> None:
    assert http_status(envoy_check(served, "/tenants/acme/documents/..")) == 401


def test_no_token_reaches_the_log_or_the_audit(served: Served, viewer: str, nobody: str) -> None:
    envoy_check(served, D1, token=viewer)
    envoy_check(served, D1, token=nobody)
    envoy_check(served, D1, authorization=f"Bearer {viewer}x")
    wait_for(lambda: (served.data_dir.parent / "audit.jsonl").exists())
    for text in (served.log_text(), (served.data_dir.parent / "audit.jsonl").read_text()):
        for token in (viewer, nobody):
            assert token not in text
            assert token.split(".")[2] not in text  # not even the signature


# ---- configuration ---------------------------------------------------------------------------


def test_without_routes_the_service_is_not_served(
    factory: ServeFactory, served: Served, viewer: str
) -> None:
    plain = factory.start(EXAMPLE, data_dir=factory.root / "plain")
    try:
        with pytest.raises(grpc.RpcError) as caught:
            envoy_check(plain, D1, token=viewer)
        # Envoy with failure_mode_allow: false turns this into a 403
        assert caught.value.code() is grpc.StatusCode.UNIMPLEMENTED
    finally:
        assert plain.stop() == 0


def test_a_bad_routes_file_stops_the_start(factory: ServeFactory) -> None:
    bad = factory.root / "bad-routes.toml"
    bad.write_text('[[routes]]\npath = "/documents/../{id}"\nresource_type = "document"\n')
    log = factory.root / "bad-routes.log"
    proc = factory.popen(
        EXAMPLE, data_dir=factory.root / "bad", args=["--envoy-routes", str(bad)], log=log
    )
    assert proc.wait(30) == 2
    assert "bad-routes.toml: routes[0]" in log.read_text()


def test_the_documented_envoy_configuration_is_envoy_v3() -> None:
    bootstrap = json_format.ParseDict(yaml.safe_load(doc_block("yaml")), bootstrap_pb2.Bootstrap())
    manager = http_connection_manager_pb2.HttpConnectionManager()
    listener = bootstrap.static_resources.listeners[0]
    assert listener.filter_chains[0].filters[0].typed_config.Unpack(manager)
    assert manager.http_filters[0].name == "envoy.filters.http.ext_authz"
    authz = ext_authz_pb2.ExtAuthz()
    assert manager.http_filters[0].typed_config.Unpack(authz)
    assert authz.transport_api_version == 2  # V3
    assert authz.failure_mode_allow is False
    cluster = authz.grpc_service.envoy_grpc.cluster_name
    (pdp,) = [c for c in bootstrap.static_resources.clusters if c.name == cluster]
    assert pdp.typed_extension_protocol_options  # HTTP/2: gRPC


def test_envoy_protos_leave_the_opentelemetry_and_googleapis_protos_whole() -> None:
    # xds-protos ships stale copies of both under their paths (grpc/grpc#42926); the Makefile
    # reinstalls the real ones after it. If this fails, OTLP tracing cannot import.
    from google.rpc import status_pb2
    from opentelemetry.proto.common.v1 import common_pb2

    assert hasattr(common_pb2, "InstrumentationScope")
    assert status_pb2.Status.DESCRIPTOR.full_name == "google.rpc.Status"
