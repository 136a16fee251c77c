"""Tokens end to end: a real `App` (gRPC and HTTP on loopback ports), tokens obtained over HTTP from
its own `/oauth/token`, then used as `subject_token` in Check and as bearer tokens on Admin calls.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import jwt
import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from pdp._proto.pdp.v1 import pdp_pb2, pdp_pb2_grpc
from pdp.client import entity
from pdp.model import Entity
from pdp.sidecar import audit
from pdp.sidecar.app import App
from pdp.tokens import KeyRing, TokenConfig
from pdp.tokens.keys import VerificationKey, public_jwk
from pdp.tokens.service import TOKEN_EXCHANGE

from .support import AUDIENCE, ISSUER, Authed, bearer, tuple_pb, wait_until

TOKENS_BUNDLE = Path(__file__).parent / "bundles" / "tokens"
UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED.value[0]
IDP_ACME = "https://login.acme.example"
IDP_GLOBEX = "https://sso.globex.example"


# ---- a customer's identity provider ---------------------------------------------------------


@dataclasses.dataclass
class IdP:
    issuer: str
    tenant: str
    key: ec.EllipticCurvePrivateKey = dataclasses.field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )

    @property
    def audience(self) -> str:
        return f"pdp-{self.tenant}"

    def id_token(self, sub: str = "alice") -> str:
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "sub": sub,
            "aud": self.audience,
            "exp": now + 300,
            "iat": now,
        }
        return jwt.encode(claims, self.key, algorithm="ES256", headers={"kid": "k1"})

    def entry(self, directory: Path) -> dict[str, Any]:
        jwks = {"keys": [public_jwk(VerificationKey("k1", "ES256", self.key.public_key()))]}
        (directory / f"{self.tenant}.jwks.json").write_text(json.dumps(jwks))
        return {
            "issuer": self.issuer,
            "tenant": self.tenant,
            "audience": self.audience,
            "jwks_file": f"{self.tenant}.jwks.json",
            "default_roles": ["member"],
        }


# ---- fixtures -------------------------------------------------------------------------------


@dataclasses.dataclass
class Deployment:
    app: App
    http: httpx.Client
    authz: pdp_pb2_grpc.AuthorizerStub
    admin: pdp_pb2_grpc.AdminStub
    secrets: dict[str, str]
    acme_idp: IdP
    globex_idp: IdP

    def token(self, client_id: str, **form: str) -> str:
        resp = self.http.post(
            "/oauth/token",
            data={"grant_type": "client_credentials", **form},
            auth=(client_id, self.secrets[client_id]),
        )
        assert resp.status_code == 200, resp.text
        assert resp.headers["cache-control"] == "no-store"
        token: str = resp.json()["access_token"]
        return token

    def revoke(self, client_id: str, token: str) -> None:
        resp = self.http.post(
            "/oauth/revoke", data={"token": token}, auth=(client_id, self.secrets[client_id])
        )
        assert resp.status_code == 200, resp.text


@pytest.fixture
def idp_config(tmp_path: Path, token_config: TokenConfig) -> tuple[TokenConfig, IdP, IdP]:
    acme, globex = IdP(IDP_ACME, "acme"), IdP(IDP_GLOBEX, "globex")
    d = tmp_path / "idps"
    d.mkdir()
    path = d / "trusted_idps.json"
    path.write_text(json.dumps({"trusted_idps": [acme.entry(d), globex.entry(d)]}))
    return dataclasses.replace(token_config, trusted_idps_file=path), acme, globex


@pytest.fixture
def start(
    tmp_path: Path, make_app: Callable[..., App], idp_config: tuple[TokenConfig, IdP, IdP]
) -> Iterator[Callable[[], Deployment]]:
    """Start (or restart, sharing keys, token store and tuples) the sidecar with the tokens
    bundle, its HTTP side on an ephemeral port."""
    bundle = tmp_path / "tokens-bundle"
    shutil.copytree(TOKENS_BUNDLE, bundle)
    config, acme, globex = idp_config
    secrets: dict[str, str] = {}
    opened: list[tuple[httpx.Client, grpc.Channel]] = []

    def deploy() -> Deployment:
        app = make_app(bundle=bundle, http_listen="127.0.0.1:0", tokens=config)
        assert app.tokens is not None
        if not secrets:  # the operator's `pdp tokens create-client`, once per store
            service = app.tokens.service
            secrets["acme-editor"] = service.create_client(
                "acme-editor", tenant="acme", roles=("editor",), scopes=("orders:read",)
            )
            secrets["acme-viewer"] = service.create_client(
                "acme-viewer", tenant="acme", roles=("viewer",)
            )
            secrets["web"] = service.create_client(
                "web", tenant="*", scopes=("profile",), grant_types=(TOKEN_EXCHANGE,)
            )
            # operators' clients: bound to no tenant, as cross-tenant admin calls need
            secrets["writer"] = service.create_client(
                "writer", tenant="*", scopes=("tuples:write",)
            )
            secrets["reader"] = service.create_client(
                "reader", tenant="*", scopes=("tuples:read", "audit:read")
            )
            secrets["root"] = service.create_client("root", tenant="*", scopes=("admin",))
        http = httpx.Client(base_url=f"http://127.0.0.1:{app.http_port}", timeout=10)
        ch = grpc.insecure_channel(app.grpc_target)
        opened.append((http, ch))
        return Deployment(
            app,
            http,
            pdp_pb2_grpc.AuthorizerStub(ch),
            pdp_pb2_grpc.AdminStub(ch),
            secrets,
            acme,
            globex,
        )

    yield deploy
    for http, ch in opened:
        http.close()
        ch.close()


@pytest.fixture
def dep(start: Callable[[], Deployment]) -> Deployment:
    return start()


def doc(doc_id: str = "d1", tenant: str = "acme") -> pdp_pb2.Entity:
    return entity(Entity("document", doc_id, {"tenant": tenant}))


def check(token: str, action: str = "read", resource: pdp_pb2.Entity | None = None) -> Any:
    return pdp_pb2.CheckRequest(subject_token=token, action=action, resource=resource or doc())


def code_of(call: Callable[[], Any]) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        call()
    err = info.value
    assert isinstance(err, grpc.Call)
    return err.code()


# ---- Check with a token ---------------------------------------------------------------------


def test_token_from_the_endpoint_decides_by_its_claims(dep: Deployment) -> None:
    editor, viewer = dep.token("acme-editor"), dep.token("acme-viewer")
    allow = dep.authz.Check(check(editor, "edit"))
    assert allow.decision == pdp_pb2.EFFECT_ALLOW
    assert list(allow.rule_ids) == ["tenant_editors"]
    denied = dep.authz.Check(check(viewer, "edit"))  # a valid token is no permission
    assert denied.decision == pdp_pb2.EFFECT_DENY
    assert denied.reason == pdp_pb2.REASON_NOT_PERMITTED
    assert dep.authz.Check(check(viewer, "read")).decision == pdp_pb2.EFFECT_ALLOW
    foreign = dep.authz.Check(check(editor, "read", doc("g1", "globex")))
    assert foreign.decision == pdp_pb2.EFFECT_DENY
    assert foreign.not_found


def test_the_audit_event_names_the_subject_and_never_the_token(dep: Deployment) -> None:
    token = dep.token("acme-editor")
    sub = dep.app.audit.subscribe(audit.Filter(kinds=frozenset({audit.DECISION})))
    dep.authz.Check(check(token), metadata=bearer(token))  # a careless caller's metadata, too
    ev = sub.get(5)
    assert ev is not None
    assert ev.subject == "user:acme-editor"
    text = audit.to_json(ev).decode()
    assert token not in text
    assert token.split(".")[2] not in text  # not even the signature
    assert orjson.loads(text)["subject"]["attrs"]["tenant"] == "acme"


def _forged(dep: Deployment, **claims: Any) -> str:
    """Signed with our real current key, claims bent as the case needs."""
    signing = KeyRing(dep.app.cfg.tokens.key_dir).snapshot.signing  # type: ignore[union-attr]
    assert signing is not None
    now = int(time.time())
    body = {
        "iss": ISSUER,
        "sub": "acme-editor",
        "aud": AUDIENCE,
        "exp": now + 300,
        "iat": now,
        "jti": f"forged-{now}-{len(claims)}",
        "client_id": "acme-editor",
        "tenant": "acme",
        "roles": ["editor"],
        **claims,
    }
    headers = {"typ": "at+jwt", "kid": signing.kid}
    return jwt.encode(body, signing.private_key, algorithm=signing.algorithm, headers=headers)


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_hostile_tokens_are_unauthenticated_never_a_decision(dep: Deployment) -> None:
    good = dep.token("acme-editor")
    header, payload, signature = good.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    hostile = {
        "tampered": f"{header}.{_b64({**claims, 'tenant': 'globex'})}.{signature}",
        "expired": _forged(dep, iat=int(time.time()) - 900, exp=int(time.time()) - 300),
        "wrong aud": _forged(dep, aud="another-service"),
        "wrong iss": _forged(dep, iss="https://evil.example"),
        "alg none": f"{_b64({'alg': 'none', 'typ': 'at+jwt'})}.{payload}.",
        "foreign IdP id_token": dep.acme_idp.id_token(),
        "garbage": "not-a-jwt",
        "oversized": "a" * 20_000,
    }
    assert dep.authz.Check(check(_forged(dep))).decision == pdp_pb2.EFFECT_ALLOW  # forge works
    for name, token in hostile.items():
        with pytest.raises(grpc.RpcError) as info:
            dep.authz.Check(check(token))
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED, name
        assert token[:40] not in (info.value.details() or ""), name  # never echoed


def test_batch_answers_a_bad_token_with_a_per_item_error(dep: Deployment) -> None:
    good = dep.token("acme-editor")
    items = [
        pdp_pb2.BatchCheckItem(correlation_id="good", request=check(good, "edit")),
        pdp_pb2.BatchCheckItem(correlation_id="bad", request=check(good[:-4] + "AAAA")),
        pdp_pb2.BatchCheckItem(correlation_id="again", request=check(good, "edit")),
    ]
    out = dep.authz.BatchCheck(pdp_pb2.BatchCheckRequest(items=items)).results
    assert out[0].response.decision == pdp_pb2.EFFECT_ALLOW
    assert out[1].WhichOneof("outcome") == "error"
    assert out[1].error.code == UNAUTHENTICATED
    assert out[2].response.decision == pdp_pb2.EFFECT_ALLOW


def test_revocation_is_seen_by_the_very_next_check_despite_the_cache(dep: Deployment) -> None:
    token = dep.token("acme-editor")
    assert dep.authz.Check(check(token, "edit")).decision == pdp_pb2.EFFECT_ALLOW
    cached = dep.authz.Check(check(token, "edit"))
    assert cached.cached  # an identical check with the same claims is in the decision cache
    dep.revoke("acme-editor", token)
    assert code_of(lambda: dep.authz.Check(check(token, "edit"))) == (
        grpc.StatusCode.UNAUTHENTICATED
    )
    batch = pdp_pb2.BatchCheckRequest(items=[pdp_pb2.BatchCheckItem(request=check(token, "edit"))])
    assert dep.authz.BatchCheck(batch).results[0].error.code == UNAUTHENTICATED
    # the same subject with a fresh token still gets its (cached) decision
    fresh = dep.authz.Check(check(dep.token("acme-editor"), "edit"))
    assert fresh.decision == pdp_pb2.EFFECT_ALLOW


def test_restart_keeps_revocations(start: Callable[[], Deployment]) -> None:
    first = start()
    revoked, kept = first.token("acme-editor"), first.token("acme-editor")
    first.revoke("acme-editor", revoked)
    first.app.stop(0.5)
    again = start()
    assert code_of(lambda: again.authz.Check(check(revoked))) == grpc.StatusCode.UNAUTHENTICATED
    assert again.authz.Check(check(kept)).decision == pdp_pb2.EFFECT_ALLOW


def _exchange(dep: Deployment, id_token: str, **form: str) -> httpx.Response:
    return dep.http.post(
        "/oauth/token",
        data={
            "grant_type": TOKEN_EXCHANGE,
            "subject_token": id_token,
            "subject_token_type": "urn:ietf:params:oauth:token-type:id_token",
            **form,
        },
        auth=("web", dep.secrets["web"]),
    )


def test_a_tenant_idp_identity_acts_in_its_own_tenant_only(dep: Deployment) -> None:
    resp = _exchange(dep, dep.acme_idp.id_token())
    assert resp.status_code == 200, resp.text
    token = resp.json()["access_token"]
    own = dep.authz.Check(check(token, "read", doc("a1", "acme")))
    assert own.decision == pdp_pb2.EFFECT_ALLOW
    other = dep.authz.Check(check(token, "read", doc("g1", "globex")))
    assert other.decision == pdp_pb2.EFFECT_DENY
    assert list(other.rule_ids) == ["other_tenants"]
    # asking the endpoint for the other tenant outright is refused before any token exists
    refused = _exchange(dep, dep.acme_idp.id_token(), tenant="globex")
    assert refused.status_code == 400
    assert refused.json()["error"] == "invalid_grant"
    # globex's alice is another person: her token cannot read acme's documents
    globex = _exchange(dep, dep.globex_idp.id_token()).json()["access_token"]
    assert dep.authz.Check(check(globex, "read", doc("a1", "acme"))).decision == (
        pdp_pb2.EFFECT_DENY
    )


# ---- the admin surface ----------------------------------------------------------------------


def test_admin_calls_need_a_token_with_the_right_scope(dep: Deployment) -> None:
    write = pdp_pb2.WriteTuplesRequest(writes=[tuple_pb("document:x#owner@user:bob")])
    read = pdp_pb2.ReadTuplesRequest()
    status = pdp_pb2.BundleStatusRequest()
    unauth = grpc.StatusCode.UNAUTHENTICATED
    assert code_of(lambda: dep.admin.WriteTuples(write)) == unauth
    assert code_of(lambda: dep.admin.BundleStatus(status)) == unauth
    assert code_of(lambda: dep.admin.WriteTuples(write, metadata=bearer("junk"))) == unauth
    basic = (("authorization", "Basic d3JpdGVyOnNlY3JldA=="),)
    assert code_of(lambda: dep.admin.ReadTuples(read, metadata=basic)) == unauth
    # a perfectly valid token without an admin scope: known caller, no permission
    user = Authed(dep.admin, dep.token("acme-editor"))
    denied = grpc.StatusCode.PERMISSION_DENIED
    assert code_of(lambda: user.WriteTuples(write)) == denied
    assert code_of(lambda: user.BundleStatus(status)) == denied

    writer = Authed(dep.admin, dep.token("writer"))
    written = dep.app.audit.subscribe(audit.Filter(kinds=frozenset({audit.TUPLES_WRITTEN})))
    assert writer.WriteTuples(write).tuple_revision > 0
    ev = written.get(5)
    assert ev is not None
    assert ev.detail["by"] == "writer"  # the audit says who wrote
    assert writer.DeleteTuples(pdp_pb2.DeleteTuplesRequest(tuples=list(write.writes)))
    assert code_of(lambda: writer.ReadTuples(read)) == denied  # write does not imply read
    reader = Authed(dep.admin, dep.token("reader"))
    assert reader.ReadTuples(read).tuple_revision > 0
    assert reader.BundleStatus(status).serving
    assert code_of(lambda: reader.WriteTuples(write)) == denied
    root = Authed(dep.admin, dep.token("root"))
    assert root.WriteTuples(write).tuple_revision > 0
    assert root.ReadTuples(read).tuples


def test_the_audit_stream_needs_audit_read(dep: Deployment) -> None:
    request = pdp_pb2.SubscribeAuditRequest(kinds=["token"])
    no_token = dep.admin.SubscribeAudit(request)
    assert code_of(lambda: next(no_token)) == grpc.StatusCode.UNAUTHENTICATED
    wrong = dep.admin.SubscribeAudit(request, metadata=bearer(dep.token("writer")))
    assert code_of(lambda: next(wrong)) == grpc.StatusCode.PERMISSION_DENIED

    got: list[pdp_pb2.AuditEvent] = []
    base = dep.app.audit.subscriber_count
    stream = dep.admin.SubscribeAudit(request, metadata=bearer(dep.token("reader")))

    def read() -> None:
        for ev in stream:
            got.append(ev)
            return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    wait_until(lambda: dep.app.audit.subscriber_count >= base + 1, "the stream to subscribe")
    token = dep.token("acme-editor")  # an `issued` event
    reader.join(5)
    stream.cancel()
    assert got, "no token event arrived"
    event = orjson.loads(got[0].json)
    assert event["kind"] == "token"
    assert event["event"] == "issued"
    assert event["fields"]["client_id"] == "acme-editor"
    assert token not in got[0].json
    assert dep.secrets["acme-editor"] not in got[0].json


def test_no_anonymous_admin_without_a_verifier(make_app: Callable[..., App]) -> None:
    app = make_app(tokens=None)
    with grpc.insecure_channel(app.grpc_target) as ch:
        admin = pdp_pb2_grpc.AdminStub(ch)
        status = pdp_pb2.BundleStatusRequest()
        with pytest.raises(grpc.RpcError) as info:
            admin.BundleStatus(status)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "no token verifier" in (info.value.details() or "")
        token_check = pdp_pb2.CheckRequest(subject_token="x", action="read", resource=doc())
        assert code_of(lambda: pdp_pb2_grpc.AuthorizerStub(ch).Check(token_check)) == (
            grpc.StatusCode.UNAUTHENTICATED
        )


def test_insecure_admin_is_an_explicit_opt_in(
    make_app: Callable[..., App], caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(tokens=None, insecure_admin=True)
    assert any("INSECURE" in r.getMessage() for r in caplog.records)
    with grpc.insecure_channel(app.grpc_target) as ch:
        assert pdp_pb2_grpc.AdminStub(ch).BundleStatus(pdp_pb2.BundleStatusRequest()).serving
