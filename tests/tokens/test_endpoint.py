"""The HTTP endpoint on a real uvicorn server, driven by authlib's OAuth2Client and PyJWKClient."""

from __future__ import annotations

import base64
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import jwt
import pytest

# authlib warns, once at import, that it prefers the `httpx2` package to `httpx`; the client
# behaves the same on either, and the warning is about packaging, not about our endpoint.
# (authlib.deprecate installs an "always" filter on import, so it is imported first and then
# overridden for this one import.)
from authlib.deprecate import AuthlibDeprecationWarning

with warnings.catch_warnings():
    warnings.simplefilter("ignore", AuthlibDeprecationWarning)
    from authlib.integrations.httpx_client import OAuth2Client

from pdp.tokens import InvalidToken

from .support import AUDIENCE, IdP, Server

EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ID_TOKEN = "urn:ietf:params:oauth:token-type:id_token"


def _oauth(server: Server, client_id: str, method: str = "client_secret_basic") -> OAuth2Client:
    return OAuth2Client(
        client_id, server.secrets[client_id], token_endpoint_auth_method=method, timeout=10
    )


def _basic(client_id: str, secret: str) -> dict[str, str]:
    raw = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
def test_authlib_client_credentials(server: Server, method: str) -> None:
    with _oauth(server, "m2m", method) as client:
        token = client.fetch_token(
            f"{server.base}/oauth/token", grant_type="client_credentials", scope="orders:read"
        )
    assert token["token_type"] == "Bearer"
    assert token["scope"] == "orders:read"
    assert 0 < token["expires_in"] <= 600
    assert "refresh_token" not in token
    subject = server.runtime.verifier.verify(token["access_token"])
    assert (subject.subject, subject.tenant, subject.client_id) == ("m2m", "acme", "m2m")


def test_pyjwkclient_reads_our_jwks_and_verifies_our_token(server: Server) -> None:
    with _oauth(server, "m2m") as client:
        token = client.fetch_token(f"{server.base}/oauth/token", grant_type="client_credentials")
    jwks = jwt.PyJWKClient(f"{server.base}/.well-known/jwks.json")
    key = jwks.get_signing_key_from_jwt(token["access_token"])
    claims = jwt.decode(
        token["access_token"], key, algorithms=["ES256"], audience=AUDIENCE, issuer=server.base
    )
    assert claims["client_id"] == "m2m"
    assert jwt.get_unverified_header(token["access_token"])["typ"] == "at+jwt"


def test_authlib_exchange_refresh_revoke_and_introspect(
    server: Server, idps: tuple[IdP, IdP, Path]
) -> None:
    url = f"{server.base}/oauth/token"
    with _oauth(server, "web") as client:
        first = client.fetch_token(
            url, grant_type=EXCHANGE, subject_token=idps[0].id_token(), subject_token_type=ID_TOKEN
        )
        assert first["issued_token_type"] == "urn:ietf:params:oauth:token-type:access_token"
        subject = server.runtime.verifier.verify(first["access_token"])
        assert (subject.subject, subject.tenant) == ("acme/alice", "acme")

        second = client.refresh_token(url, refresh_token=first["refresh_token"])
        assert second["refresh_token"] != first["refresh_token"]
        assert server.runtime.verifier.verify(second["access_token"]).subject == "acme/alice"

        info = client.introspect_token(
            f"{server.base}/oauth/introspect", token=second["access_token"]
        ).json()
        assert info["active"] is True
        assert info["sub"] == "acme/alice"
        assert info["tenant"] == "acme"

        resp = client.revoke_token(
            f"{server.base}/oauth/revoke",
            token=second["access_token"],
            token_type_hint="access_token",
        )
        assert resp.status_code == 200
        with pytest.raises(InvalidToken, match="revoked"):
            server.runtime.verifier.verify(second["access_token"])
        info = client.introspect_token(
            f"{server.base}/oauth/introspect", token=second["access_token"]
        ).json()
        assert info == {"active": False}

        resp = client.revoke_token(
            f"{server.base}/oauth/revoke",
            token=second["refresh_token"],
            token_type_hint="refresh_token",
        )
        assert resp.status_code == 200
        with pytest.raises(Exception, match="invalid_grant"):
            client.refresh_token(url, refresh_token=second["refresh_token"])
    kinds = [k for k, _ in server.events]
    assert {"issued", "refreshed", "revoked"} <= set(kinds)
    text = repr(server.events)
    for secret in (first["refresh_token"], second["access_token"], server.secrets["web"]):
        assert secret not in text


def test_refresh_reuse_over_http_revokes_the_family(
    server: Server, idps: tuple[IdP, IdP, Path]
) -> None:
    url = f"{server.base}/oauth/token"
    with _oauth(server, "web") as client:
        first = client.fetch_token(
            url, grant_type=EXCHANGE, subject_token=idps[0].id_token(), subject_token_type=ID_TOKEN
        )
        second = client.refresh_token(url, refresh_token=first["refresh_token"])
        with pytest.raises(Exception, match="invalid_grant"):
            client.refresh_token(url, refresh_token=first["refresh_token"])
        with pytest.raises(Exception, match="invalid_grant"):
            client.refresh_token(url, refresh_token=second["refresh_token"])
    with pytest.raises(InvalidToken):
        server.runtime.verifier.verify(second["access_token"])
    assert "reuse_detected" in [k for k, _ in server.events]


def test_tenant_a_idp_token_exchanged_for_tenant_b_is_refused(
    server: Server, idps: tuple[IdP, IdP, Path]
) -> None:
    with httpx.Client(base_url=server.base) as http:
        resp = http.post(
            "/oauth/token",
            headers=_basic("web", server.secrets["web"]),
            data={
                "grant_type": EXCHANGE,
                "subject_token": idps[0].id_token(),
                "subject_token_type": ID_TOKEN,
                "tenant": "globex",
            },
        )
    assert resp.status_code == 400
    assert resp.json()["error"] == "invalid_grant"


# -- errors, as RFC 6749 spells them ---------------------------------------------------------


def _post(
    server: Server, path: str, data: Any, headers: dict[str, str] | None = None, **kw: Any
) -> httpx.Response:
    with httpx.Client(base_url=server.base) as http:
        if isinstance(data, list):  # repeated parameters: encode them ourselves
            return http.post(
                path,
                content=urlencode(data),
                headers={"content-type": "application/x-www-form-urlencoded", **(headers or {})},
            )
        return http.post(path, data=data, headers=headers, **kw)


ERROR_CASES = [
    # (name, client id or None, secret override, form, status, error)
    ("no client auth", None, None, {"grant_type": "client_credentials"}, 401, "invalid_client"),
    ("wrong secret", "m2m", "nope", {"grant_type": "client_credentials"}, 401, "invalid_client"),
    (
        "unknown client",
        "ghost",
        "nope",
        {"grant_type": "client_credentials"},
        401,
        "invalid_client",
    ),
    ("no grant type", "m2m", None, {}, 400, "invalid_request"),
    ("unsupported grant", "m2m", None, {"grant_type": "password"}, 400, "unsupported_grant_type"),
    (
        "grant not allowed",
        "m2m",
        None,
        {"grant_type": "refresh_token", "refresh_token": "x"},
        400,
        "unauthorized_client",
    ),
    (
        "scope not granted",
        "m2m",
        None,
        {"grant_type": "client_credentials", "scope": "admin"},
        400,
        "invalid_scope",
    ),
    (
        "unknown refresh token",
        "web",
        None,
        {"grant_type": "refresh_token", "refresh_token": "x" * 43},
        400,
        "invalid_grant",
    ),
    ("exchange without token", "web", None, {"grant_type": EXCHANGE}, 400, "invalid_request"),
    (
        "garbage subject token",
        "web",
        None,
        {"grant_type": EXCHANGE, "subject_token": "a.b.c", "subject_token_type": ID_TOKEN},
        400,
        "invalid_grant",
    ),
    (
        "duplicate parameter",
        "m2m",
        None,
        [("grant_type", "client_credentials"), ("grant_type", "client_credentials")],
        400,
        "invalid_request",
    ),
]


@pytest.mark.parametrize(
    ("name", "client_id", "secret", "form", "status", "error"),
    ERROR_CASES,
    ids=[c[0] for c in ERROR_CASES],
)
def test_token_endpoint_errors(
    server: Server,
    name: str,
    client_id: str | None,
    secret: str | None,
    form: Any,
    status: int,
    error: str,
) -> None:
    headers = None
    if client_id is not None:
        headers = _basic(client_id, secret or server.secrets[client_id])
    resp = _post(server, "/oauth/token", form, headers)
    assert resp.status_code == status
    assert resp.json()["error"] == error
    assert resp.headers["cache-control"] == "no-store"
    if status == 401:
        assert resp.headers["www-authenticate"].startswith("Basic")


def test_success_is_not_cacheable_either(server: Server) -> None:
    resp = _post(
        server,
        "/oauth/token",
        {"grant_type": "client_credentials"},
        _basic("m2m", server.secrets["m2m"]),
    )
    assert resp.status_code == 200
    assert resp.headers["cache-control"] == "no-store"
    assert resp.headers["pragma"] == "no-cache"


def test_oversized_body_is_refused_before_parsing(server: Server) -> None:
    resp = _post(
        server,
        "/oauth/token",
        {"grant_type": "client_credentials", "scope": "x" * 100_000},
        _basic("m2m", server.secrets["m2m"]),
    )
    assert resp.status_code == 413

    def chunks() -> Any:  # no Content-Length: the cap is counted while reading
        for _ in range(100):
            yield b"a" * 1000

    with httpx.Client(base_url=server.base) as http:
        resp = http.post(
            "/oauth/token",
            content=chunks(),
            headers={
                "content-type": "application/x-www-form-urlencoded",
                **_basic("m2m", server.secrets["m2m"]),
            },
        )
    assert resp.status_code == 413


def test_json_body_is_refused(server: Server) -> None:
    with httpx.Client(base_url=server.base) as http:
        resp = http.post(
            "/oauth/token",
            json={"grant_type": "client_credentials"},
            headers=_basic("m2m", server.secrets["m2m"]),
        )
    assert (resp.status_code, resp.json()["error"]) == (400, "invalid_request")


def test_failed_client_auth_is_rate_limited(server: Server) -> None:
    for _ in range(5):
        assert (
            _post(
                server, "/oauth/token", {"grant_type": "client_credentials"}, _basic("m2m", "wrong")
            ).status_code
            == 401
        )
    resp = _post(
        server,
        "/oauth/token",
        {"grant_type": "client_credentials"},
        _basic("m2m", server.secrets["m2m"]),
    )
    assert resp.status_code == 429
    assert "retry-after" in resp.headers
    # Another client is not affected by m2m's lockout.
    assert (
        _post(
            server,
            "/oauth/token",
            {"grant_type": "client_credentials"},
            _basic("acme-app", server.secrets["acme-app"]),
        ).status_code
        == 400
    )


def test_introspection_requires_client_auth(server: Server) -> None:
    resp = _post(server, "/oauth/introspect", {"token": "whatever"})
    assert resp.status_code == 401


def test_revoke_is_200_for_unknown_and_foreign_tokens(server: Server) -> None:
    with _oauth(server, "m2m") as client:
        token = client.fetch_token(f"{server.base}/oauth/token", grant_type="client_credentials")
    resp = _post(
        server, "/oauth/revoke", {"token": "not-a-token"}, _basic("m2m", server.secrets["m2m"])
    )
    assert resp.status_code == 200
    # Another client cannot revoke m2m's token (and learns nothing from the answer).
    resp = _post(
        server,
        "/oauth/revoke",
        {"token": token["access_token"]},
        _basic("web", server.secrets["web"]),
    )
    assert resp.status_code == 200
    assert server.runtime.verifier.verify(token["access_token"]).subject == "m2m"


def test_metadata_and_jwks(server: Server) -> None:
    with httpx.Client(base_url=server.base) as http:
        meta = http.get("/.well-known/oauth-authorization-server").json()
        jwks = http.get("/.well-known/jwks.json").json()
    assert meta["issuer"] == server.base
    assert meta["token_endpoint"] == f"{server.base}/oauth/token"
    assert EXCHANGE in meta["grant_types_supported"]
    signing = server.runtime.keys.snapshot.signing
    assert signing is not None
    assert [k["kid"] for k in jwks["keys"]] == [signing.kid]


def test_key_rotation_and_removal_reach_the_jwks(server: Server) -> None:
    ring = server.runtime.keys
    signing = ring.snapshot.signing
    assert signing is not None
    old = signing.kid
    with _oauth(server, "m2m") as client:
        old_token = client.fetch_token(
            f"{server.base}/oauth/token", grant_type="client_credentials"
        )["access_token"]
        new = ring.rotate()
        new_token = client.fetch_token(
            f"{server.base}/oauth/token", grant_type="client_credentials"
        )["access_token"]
    assert jwt.get_unverified_header(new_token)["kid"] == new
    with httpx.Client(base_url=server.base) as http:
        assert {k["kid"] for k in http.get("/.well-known/jwks.json").json()["keys"]} == {old, new}
        ring.remove(old)
        assert {k["kid"] for k in http.get("/.well-known/jwks.json").json()["keys"]} == {new}
    with pytest.raises(InvalidToken):
        server.runtime.verifier.verify(old_token)
    assert "key_rotated" in [k for k, _ in server.events]


def test_an_internal_failure_is_a_json_500_that_is_never_cached(server: Server) -> None:
    import dataclasses

    keys = server.runtime.keys
    keys.snapshot = dataclasses.replace(keys.snapshot, signing=None)  # no key to sign with
    resp = _post(
        server,
        "/oauth/token",
        {"grant_type": "client_credentials"},
        _basic("m2m", server.secrets["m2m"]),
    )
    assert resp.status_code == 500
    assert resp.json() == {"error": "server_error"}
    assert resp.headers["cache-control"] == "no-store"
    assert server.secrets["m2m"] not in resp.text
