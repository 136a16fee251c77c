"""Grants without HTTP: scopes, refresh rotation and reuse detection, exchange, durability."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from pdp.tokens import InvalidToken, OAuthError, TokenRuntime
from pdp.tokens.clients import REFRESH_TOKEN, TOKEN_EXCHANGE
from pdp.tokens.store import Client

from .support import ISSUER, IdP, make_runtime

Events = list[tuple[str, dict[str, Any]]]


@pytest.fixture
def events() -> Events:
    return []


@pytest.fixture
def runtime(tmp_path: Path, idps: tuple[IdP, IdP, Path], events: Events) -> TokenRuntime:
    rt = make_runtime(tmp_path, ISSUER, idps[2], events)
    yield rt  # type: ignore[misc]
    rt.close()


def _client(rt: TokenRuntime, client_id: str, **kw: Any) -> Client:
    secret = rt.service.create_client(client_id, **kw)
    return rt.service.authenticate_client(client_id, secret, "127.0.0.1")


@pytest.fixture
def web(runtime: TokenRuntime) -> Client:
    return _client(
        runtime,
        "web",
        tenant="*",
        scopes=("orders:read", "profile"),
        grant_types=(TOKEN_EXCHANGE, REFRESH_TOKEN),
    )


def _exchange(
    rt: TokenRuntime, client: Client, idp: IdP, tenant: str | None = None, **claims: Any
) -> Any:
    return rt.service.token_exchange(
        client,
        subject_token=idp.id_token(**claims),
        subject_token_type="urn:ietf:params:oauth:token-type:id_token",
        tenant=tenant,
        scope=None,
    )


def _assert_no_secrets(events: Events, *secrets: str) -> None:
    text = repr(events)
    for s in secrets:
        assert s not in text


# -- client credentials and scopes -----------------------------------------------------------


def test_client_credentials_token_carries_the_clients_grant(runtime: TokenRuntime) -> None:
    m2m = _client(runtime, "m2m", tenant="acme", scopes=("a", "b"), roles=("service",))
    result = runtime.service.client_credentials(m2m, "a")
    subject = runtime.verifier.verify(result.access.token)
    assert (subject.subject, subject.tenant, subject.roles, subject.scopes) == (
        "m2m",
        "acme",
        ("service",),
        frozenset({"a"}),
    )
    assert result.refresh_token is None  # RFC 6749 §4.4.3
    assert runtime.service.client_credentials(m2m, None).access.scope == "a b"


@pytest.mark.parametrize(("scope", "code"), [("a admin", "invalid_scope"), ("c", "invalid_scope")])
def test_scopes_beyond_the_grant_are_refused(runtime: TokenRuntime, scope: str, code: str) -> None:
    m2m = _client(runtime, "m2m", tenant="acme", scopes=("a", "b"))
    with pytest.raises(OAuthError) as info:
        runtime.service.client_credentials(m2m, scope)
    assert info.value.code == code


def test_wrong_secret_unknown_client_and_disabled_are_one_answer(runtime: TokenRuntime) -> None:
    runtime.service.create_client("m2m", tenant="acme")
    for client_id, secret in [("m2m", "wrong"), ("nobody", "x")]:
        with pytest.raises(OAuthError) as info:
            runtime.service.authenticate_client(client_id, secret, "10.0.0.1")
        assert (info.value.code, info.value.status) == ("invalid_client", 401)


def test_failed_client_auth_is_rate_limited_per_client(runtime: TokenRuntime) -> None:
    secret = runtime.service.create_client("m2m", tenant="acme")
    for i in range(5):  # make_runtime: 5 failures per client
        with pytest.raises(OAuthError):
            runtime.service.authenticate_client("m2m", "wrong", f"10.0.0.{i}")
    with pytest.raises(OAuthError) as info:
        runtime.service.authenticate_client("m2m", secret, "10.0.0.99")
    assert info.value.status == 429


def test_multi_tenant_client_cannot_use_client_credentials(
    runtime: TokenRuntime, web: Client
) -> None:
    with pytest.raises(OAuthError) as info:
        runtime.service.client_credentials(web, None)
    assert info.value.code == "unauthorized_client"


# -- token exchange: tenant binding ----------------------------------------------------------


def test_exchange_lands_in_the_idps_tenant(
    runtime: TokenRuntime, web: Client, idps: tuple[IdP, IdP, Path]
) -> None:
    acme, globex, _ = idps
    a = runtime.verifier.verify(_exchange(runtime, web, acme).access.token)
    g = runtime.verifier.verify(_exchange(runtime, web, globex).access.token)
    assert (a.subject, a.tenant, a.roles) == ("acme/alice", "acme", ("member",))
    assert (g.subject, g.tenant) == ("globex/alice", "globex")


@pytest.mark.parametrize(
    ("claims", "tenant"),
    [
        ({}, "globex"),  # tenant A's IdP asked to act in tenant B
        ({"iss": "https://sso.globex.example"}, None),  # A's key, B's name: kid is per issuer
        ({"aud": "pdp-globex"}, None),
        ({"iss": "https://login.acme.example.evil"}, None),
        ({"exp": 1}, None),
    ],
)
def test_exchange_refuses_foreign_or_bad_id_tokens(
    runtime: TokenRuntime,
    web: Client,
    idps: tuple[IdP, IdP, Path],
    claims: dict[str, Any],
    tenant: str | None,
) -> None:
    with pytest.raises(OAuthError) as info:
        _exchange(runtime, web, idps[0], tenant, **claims)
    assert info.value.code == "invalid_grant"


def test_a_tenant_bound_client_cannot_exchange_another_tenants_identity(
    runtime: TokenRuntime, idps: tuple[IdP, IdP, Path]
) -> None:
    acme_app = _client(
        runtime, "acme-app", tenant="acme", scopes=("x",), grant_types=(TOKEN_EXCHANGE,)
    )
    assert runtime.verifier.verify(_exchange(runtime, acme_app, idps[0]).access.token)
    with pytest.raises(OAuthError):
        _exchange(runtime, acme_app, idps[1])
    with pytest.raises(OAuthError):
        _exchange(runtime, acme_app, idps[1], "globex")


def test_an_idp_token_is_not_an_access_token(
    runtime: TokenRuntime, idps: tuple[IdP, IdP, Path]
) -> None:
    with pytest.raises(InvalidToken):
        runtime.verifier.verify(idps[0].id_token(aud="pdp-sidecar"))


# -- refresh rotation and reuse detection ----------------------------------------------------


def test_refresh_rotates_and_reuse_revokes_the_family(
    runtime: TokenRuntime, web: Client, idps: tuple[IdP, IdP, Path], events: Events
) -> None:
    first = _exchange(runtime, web, idps[0])
    second = runtime.service.refresh(web, first.refresh_token, None)
    assert second.refresh_token != first.refresh_token
    third = runtime.service.refresh(web, second.refresh_token, "profile")
    assert runtime.verifier.verify(third.access.token).scopes == frozenset({"profile"})
    assert runtime.verifier.verify(second.access.token)

    # The thief replays the spent first token: the whole family dies, access tokens included.
    with pytest.raises(OAuthError) as info:
        runtime.service.refresh(web, first.refresh_token, None)
    assert info.value.code == "invalid_grant"
    with pytest.raises(OAuthError):
        runtime.service.refresh(web, third.refresh_token, None)
    for r in (first, second, third):
        with pytest.raises(InvalidToken, match="revoked"):
            runtime.verifier.verify(r.access.token)

    kinds = [k for k, _ in events]
    assert kinds.count("refreshed") == 2
    assert "reuse_detected" in kinds
    _assert_no_secrets(events, first.refresh_token, third.refresh_token, first.access.token)


def test_every_grant_emits_one_event_with_its_identifiers(
    runtime: TokenRuntime, web: Client, idps: tuple[IdP, IdP, Path], events: Events
) -> None:
    m2m = _client(runtime, "m2m", tenant="acme", scopes=("a",))
    cc = runtime.service.client_credentials(m2m, None).access
    exchanged = _exchange(runtime, web, idps[0])
    refreshed = runtime.service.refresh(web, exchanged.refresh_token, None)
    issued = [(k, f) for k, f in events if k in ("issued", "refreshed")]
    family_id = issued[1][1]["family_id"]
    assert issued == [
        (
            "issued",
            {
                "client_id": "m2m",
                "subject": "m2m",
                "tenant": "acme",
                "grant": "client_credentials",
                "jti": cc.jti,
                "kid": cc.kid,
            },
        ),
        (
            "issued",
            {
                "client_id": "web",
                "subject": "acme/alice",
                "tenant": "acme",
                "grant": TOKEN_EXCHANGE,
                "idp": idps[0].issuer,
                "family_id": family_id,
                "jti": exchanged.access.jti,
                "kid": exchanged.access.kid,
            },
        ),
        (
            "refreshed",
            {
                "client_id": "web",
                "subject": "acme/alice",
                "tenant": "acme",
                "family_id": family_id,
                "jti": refreshed.access.jti,
                "kid": refreshed.access.kid,
            },
        ),
    ]


def test_a_refused_rotation_emits_no_refreshed_event(
    runtime: TokenRuntime, web: Client, idps: tuple[IdP, IdP, Path], events: Events
) -> None:
    first = _exchange(runtime, web, idps[0])
    runtime.service.refresh(web, first.refresh_token, None)
    events.clear()
    with pytest.raises(OAuthError):
        runtime.service.refresh(web, first.refresh_token, None)
    assert [k for k, _ in events] == ["reuse_detected"]


def test_refresh_cannot_widen_scope_or_cross_clients(
    runtime: TokenRuntime, web: Client, idps: tuple[IdP, IdP, Path]
) -> None:
    other = _client(
        runtime, "other", tenant="*", scopes=("orders:read",), grant_types=(REFRESH_TOKEN,)
    )
    first = runtime.service.token_exchange(
        web,
        subject_token=idps[0].id_token(),
        subject_token_type="urn:ietf:params:oauth:token-type:id_token",
        tenant=None,
        scope="profile",
    )
    with pytest.raises(OAuthError, match="invalid_scope"):
        runtime.service.refresh(web, first.refresh_token, "orders:read")
    with pytest.raises(OAuthError, match="invalid_grant"):
        runtime.service.refresh(other, first.refresh_token, None)
    assert runtime.service.refresh(web, first.refresh_token, None).refresh_token


def test_revoking_a_refresh_token_revokes_its_access_tokens(
    runtime: TokenRuntime, web: Client, idps: tuple[IdP, IdP, Path]
) -> None:
    first = _exchange(runtime, web, idps[0])
    assert first.refresh_token is not None
    runtime.service.revoke(web, first.refresh_token)
    with pytest.raises(InvalidToken):
        runtime.verifier.verify(first.access.token)
    with pytest.raises(OAuthError):
        runtime.service.refresh(web, first.refresh_token, None)


# -- durability ------------------------------------------------------------------------------


def test_restart_keeps_revocations_and_families(
    tmp_path: Path, idps: tuple[IdP, IdP, Path], events: Events
) -> None:
    rt = make_runtime(tmp_path, ISSUER, idps[2], events)
    secret = rt.service.create_client("m2m", tenant="acme")
    m2m = rt.service.authenticate_client("m2m", secret, "x")
    web = _client(rt, "web", tenant="*", grant_types=(TOKEN_EXCHANGE, REFRESH_TOKEN))
    revoked = rt.service.client_credentials(m2m, None).access
    kept = rt.service.client_credentials(m2m, None).access
    rt.service.revoke(m2m, revoked.token)
    family = _exchange(rt, web, idps[0])
    spent = family.refresh_token
    live = rt.service.refresh(web, spent, None)
    rt.close()

    again = make_runtime(tmp_path, ISSUER, idps[2], events)  # same key dir, same SQLite file
    try:
        with pytest.raises(InvalidToken, match="revoked"):
            again.verifier.verify(revoked.token)
        assert again.verifier.verify(kept.token).subject == "m2m"
        assert again.service.authenticate_client("m2m", secret, "x").client_id == "m2m"
        web2 = again.store.get_client("web")
        assert web2 is not None
        with pytest.raises(OAuthError):  # still spent after restart: reuse is detected
            again.service.refresh(web2, spent, None)
        with pytest.raises(OAuthError):
            again.service.refresh(web2, live.refresh_token, None)
    finally:
        again.close()


def test_secrets_are_stored_only_as_hashes(tmp_path: Path, runtime: TokenRuntime) -> None:
    secret = runtime.service.create_client("m2m", tenant="acme")
    runtime.close()
    for f in tmp_path.glob("tokens.db*"):
        assert secret.encode() not in f.read_bytes()


def test_another_process_revocation_is_picked_up_by_sync(
    tmp_path: Path, runtime: TokenRuntime, idps: tuple[IdP, IdP, Path], events: Events
) -> None:
    m2m = _client(runtime, "m2m", tenant="acme")
    token = runtime.service.client_credentials(m2m, None).access
    runtime.verifier.verify(token.token)
    other = make_runtime(tmp_path, ISSUER, idps[2], events)
    try:
        other.service.revoke_jti(token.jti, token.exp)
    finally:
        other.close()
    runtime.maintain()
    with pytest.raises(InvalidToken, match="revoked"):
        runtime.verifier.verify(token.token)


def test_maintenance_forgets_revocations_no_token_can_use(runtime: TokenRuntime) -> None:
    now = time.time()
    runtime.store.revoke_jti("long-expired", now - 7200, now)  # past exp by more than the grace
    runtime.store.revoke_jti("still-live", now + 600, now)
    runtime.maintain()
    _, kept = runtime.store.revoked_since(0, now - 10_000)
    assert [jti for jti, _ in kept] == ["still-live"]
