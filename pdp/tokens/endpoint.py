"""The OAuth 2.0 HTTP surface as a Starlette app: token, revoke, introspect, JWKS and metadata.

The one place that turns `OAuthError` into HTTP: JSON bodies, `Cache-Control: no-store`, 401 with
`WWW-Authenticate` for `invalid_client`. Bodies are capped before any parsing.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any
from urllib.parse import parse_qsl, unquote_plus

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from pdp.tokens.clients import CLIENT_CREDENTIALS, GRANT_TYPES, REFRESH_TOKEN, TOKEN_EXCHANGE
from pdp.tokens.errors import OAuthError, TokenStoreUnavailable
from pdp.tokens.keys import KeyRing
from pdp.tokens.service import TokenService
from pdp.tokens.store import Client

log = logging.getLogger(__name__)

DEFAULT_MAX_BODY_BYTES = 16 * 1024
_MAX_FIELDS = 16
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
_FORM = "application/x-www-form-urlencoded"


def _json(
    body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(
        orjson.dumps(body),
        status_code=status,
        media_type="application/json",
        headers={**_NO_STORE, **(headers or {})},
    )


def error_response(exc: OAuthError) -> Response:
    body = {"error": exc.code}
    if exc.description:
        body["error_description"] = exc.description
    headers = {}
    if exc.status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="pdp", error="invalid_client"'
    elif exc.status == 429:
        headers["Retry-After"] = "60"
    elif exc.status == 503:
        headers["Retry-After"] = "1"
    return _json(body, exc.status, headers)


async def read_form(request: Request, max_bytes: int) -> dict[str, str]:
    """The form body, refused before parsing if too large; duplicate parameters are an error."""
    ctype = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if ctype != _FORM:
        raise OAuthError("invalid_request", f"the body must be {_FORM}")
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > max_bytes):
        raise OAuthError("invalid_request", "request body too large", 413)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:  # chunked bodies carry no length: count as we read
            raise OAuthError("invalid_request", "request body too large", 413)
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=_MAX_FIELDS)
    except (UnicodeDecodeError, ValueError):
        raise OAuthError("invalid_request", "malformed form body") from None
    form: dict[str, str] = {}
    for name, value in pairs:
        if name in form:  # RFC 6749 §3.2: parameters MUST NOT be included more than once
            raise OAuthError("invalid_request", f"parameter `{name[:40]}` repeated")
        form[name] = value
    return form


def _basic_credentials(header: str) -> tuple[str, str]:
    try:
        raw = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise OAuthError("invalid_client", "malformed Basic credentials", 401) from None
    client_id, sep, secret = raw.partition(":")
    if not sep:
        raise OAuthError("invalid_client", "malformed Basic credentials", 401)
    # RFC 6749 §2.3.1: both parts are form-urlencoded before Basic encoding.
    return unquote_plus(client_id), unquote_plus(secret)


class TokenEndpoint:
    """Request handlers over a `TokenService`; holds no state of its own."""

    def __init__(
        self,
        service: TokenService,
        keys: KeyRing,
        *,
        issuer_url: str,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    ) -> None:
        self.service = service
        self.keys = keys
        self.issuer = issuer_url  # RFC 8414: exactly the `iss` our tokens carry
        self.issuer_url = issuer_url.rstrip("/")
        self.max_body_bytes = max_body_bytes

    def _client(self, request: Request, form: dict[str, str]) -> Client:
        auth = request.headers.get("authorization")
        form_id = form.pop("client_id", None)
        form_secret = form.pop("client_secret", None)
        if auth is not None and auth[:6].lower() == "basic ":
            if form_secret is not None:
                raise OAuthError("invalid_request", "use one client authentication method")
            client_id, secret = _basic_credentials(auth)
            if form_id is not None and form_id != client_id:
                raise OAuthError("invalid_request", "client_id does not match the credentials")
        elif form_id is not None and form_secret is not None:
            client_id, secret = form_id, form_secret
        else:
            raise OAuthError("invalid_client", "client authentication required", 401)
        source = request.client.host if request.client is not None else "unknown"
        return self.service.authenticate_client(client_id, secret, source)

    async def _handle(
        self, request: Request, work: Callable[[Client, dict[str, str]], Response]
    ) -> Response:
        try:
            form = await read_form(request, self.max_body_bytes)
            client = self._client(request, form)
            return work(client, form)
        except OAuthError as exc:
            return error_response(exc)
        except TokenStoreUnavailable:
            # Nothing was issued, rotated or revoked: the client may simply retry.
            log.warning("token endpoint: the token store is unavailable")
            return error_response(OAuthError("temporarily_unavailable", "retry later", 503))
        except Exception as exc:
            # No signing key, a database error...: a JSON answer that is still never cached.
            # Only the exception type is logged: messages could quote request data.
            log.error("token endpoint failed: %s", type(exc).__name__)
            return error_response(OAuthError("server_error", "", 500))

    async def token(self, request: Request) -> Response:
        return await self._handle(request, self._grant)

    def _grant(self, client: Client, form: dict[str, str]) -> Response:
        grant = form.get("grant_type")
        scope = form.get("scope")
        if grant == CLIENT_CREDENTIALS:
            result = self.service.client_credentials(client, scope)
        elif grant == REFRESH_TOKEN:
            result = self.service.refresh(client, form.get("refresh_token"), scope)
        elif grant == TOKEN_EXCHANGE:
            result = self.service.token_exchange(
                client,
                subject_token=form.get("subject_token"),
                subject_token_type=form.get("subject_token_type"),
                tenant=form.get("tenant"),
                scope=scope,
            )
        elif grant is None:
            raise OAuthError("invalid_request", "grant_type is required")
        else:
            raise OAuthError("unsupported_grant_type")
        return _json(result.to_json())

    async def revoke(self, request: Request) -> Response:
        def work(client: Client, form: dict[str, str]) -> Response:
            token = form.get("token")
            if not token:
                raise OAuthError("invalid_request", "token is required")
            self.service.revoke(client, token, form.get("token_type_hint"))
            return Response(b"", 200, headers=_NO_STORE)

        return await self._handle(request, work)

    async def introspect(self, request: Request) -> Response:
        def work(client: Client, form: dict[str, str]) -> Response:
            token = form.get("token")
            if not token:
                raise OAuthError("invalid_request", "token is required")
            return _json(self.service.introspect(client, token))

        return await self._handle(request, work)

    async def jwks(self, request: Request) -> Response:
        # Short cache lifetime: an emergency kid removal must reach verifiers quickly.
        return Response(
            self.keys.snapshot.jwks,
            media_type="application/json",
            headers={"Cache-Control": "public, max-age=60"},
        )

    async def metadata(self, request: Request) -> Response:
        base = self.issuer_url
        methods = ["client_secret_basic", "client_secret_post"]
        body = {
            "issuer": self.issuer,
            "token_endpoint": f"{base}/oauth/token",
            "jwks_uri": f"{base}/.well-known/jwks.json",
            "revocation_endpoint": f"{base}/oauth/revoke",
            "introspection_endpoint": f"{base}/oauth/introspect",
            "grant_types_supported": list(GRANT_TYPES),
            "response_types_supported": [],
            "token_endpoint_auth_methods_supported": methods,
            "revocation_endpoint_auth_methods_supported": methods,
            "introspection_endpoint_auth_methods_supported": methods,
        }
        return Response(
            orjson.dumps(body),
            media_type="application/json",
            headers={"Cache-Control": "public, max-age=300"},
        )

    def routes(self) -> list[Route]:
        return [
            Route("/oauth/token", self.token, methods=["POST"]),
            Route("/oauth/revoke", self.revoke, methods=["POST"]),
            Route("/oauth/introspect", self.introspect, methods=["POST"]),
            Route("/.well-known/jwks.json", self.jwks, methods=["GET"]),
            Route("/.well-known/oauth-authorization-server", self.metadata, methods=["GET"]),
        ]


def build_token_app(
    service: TokenService,
    keys: KeyRing,
    *,
    issuer_url: str,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    maintenance: Callable[[], Coroutine[Any, Any, None]] | None = None,
) -> Starlette:
    """A Starlette app serving the token endpoint. `maintenance` runs for the app's lifetime
    (key reloads, revocation sync); when mounted inside another app, run it from that app.
    """
    endpoint = TokenEndpoint(service, keys, issuer_url=issuer_url, max_body_bytes=max_body_bytes)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        task = asyncio.create_task(maintenance()) if maintenance is not None else None
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    return Starlette(routes=endpoint.routes(), lifespan=lifespan)
