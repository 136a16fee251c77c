"""The playground's web side: the page and its JSON endpoints over `playground.Playground`, behind
a guard that answers only this machine's own page (Host and Origin checked, JSON bodies only)."""

from __future__ import annotations

import json
import socket
from collections.abc import Mapping
from importlib import resources
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pdp.authoring import drafts
from pdp.authoring.playground import Playground

MAX_BODY = 4 * 1024 * 1024  # a draft bundle larger than this is not being typed by hand
_ASSETS = {  # name -> media type: the only files served
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
_SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'self'; frame-ancestors 'none'; form-action 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
]


def serve(playground: Playground, sock: socket.socket) -> None:
    """Serve the page on the bound loopback socket until Ctrl-C or SIGTERM."""
    app = create_app(playground, sock.getsockname()[1])
    config = uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False)
    uvicorn.Server(config).run(sockets=[sock])


def create_app(playground: Playground, port: int) -> ASGIApp:
    """The Starlette app behind the local-only guard, for a server listening on `port`."""

    async def page(request: HttpRequest) -> Response:
        return _asset("index.html")

    async def asset(request: HttpRequest) -> Response:
        name = request.path_params["name"]
        if name not in _ASSETS:
            return PlainTextResponse("not found", status_code=404)
        return _asset(name)

    async def bundle_state(request: HttpRequest) -> Response:
        return JSONResponse(await run_in_threadpool(playground.state))

    async def validate(request: HttpRequest) -> Response:
        body = await _body(request)
        return JSONResponse(await run_in_threadpool(playground.validate, _edited(body)))

    async def check(request: HttpRequest) -> Response:
        body = await _body(request)
        return JSONResponse(
            await run_in_threadpool(playground.check, _edited(body), body.get("request"))
        )

    async def tests(request: HttpRequest) -> Response:
        body = await _body(request)
        return JSONResponse(await run_in_threadpool(playground.run_tests, _edited(body)))

    async def save(request: HttpRequest) -> Response:
        body = await _body(request)
        return JSONResponse(await run_in_threadpool(playground.save, _edited(body)))

    app = Starlette(
        routes=[
            Route("/", page),
            Route("/assets/{name}", asset),
            Route("/api/bundle", bundle_state),
            Route("/api/validate", validate, methods=["POST"]),
            Route("/api/check", check, methods=["POST"]),
            Route("/api/tests", tests, methods=["POST"]),
            Route("/api/save", save, methods=["POST"]),
        ],
        exception_handlers={_BadRequest: _bad_request, drafts.DraftError: _bad_request},
    )
    return LocalOnly(app, port)


class _BadRequest(ValueError):
    """The body is not the JSON object an endpoint takes."""


async def _bad_request(request: HttpRequest, exc: Exception) -> Response:
    return JSONResponse({"error": str(exc)}, status_code=400)


async def _body(request: HttpRequest) -> dict[str, Any]:
    data = await request.body()
    if len(data) > MAX_BODY:
        raise _BadRequest("the request body is too large")
    try:
        body = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _BadRequest(f"the body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise _BadRequest("the body must be a JSON object")
    return body


def _edited(body: Mapping[str, Any]) -> dict[str, str]:
    files = body.get("files", {})
    if not isinstance(files, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in files.items()
    ):
        raise _BadRequest("`files` must map file names to their text")
    return files


def _asset(name: str) -> Response:
    data = resources.files("pdp.authoring").joinpath("playground_assets", name).read_bytes()
    return Response(data, media_type=_ASSETS[name])


class LocalOnly:
    """The guard around the app: a Host that is not this server's loopback address is refused
    (DNS rebinding: a hostile name resolved to 127.0.0.1 still sends its own Host), and so is a
    POST whose Origin is not this page's or that is not JSON (CSRF: another site's form or fetch).
    Every answer carries a Content-Security-Policy allowing only this origin's own files."""

    def __init__(self, app: ASGIApp, port: int) -> None:
        self.app = app
        self.hosts = {f"{h}:{port}" for h in ("127.0.0.1", "localhost", "[::1]")}
        self.origins = {f"http://{h}" for h in self.hosts}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        problem = self.refusal(scope)
        if problem is not None:
            status, text = problem
            await PlainTextResponse(text, status_code=status)(scope, receive, _secured(send))
            return
        await self.app(scope, receive, _secured(send))

    def refusal(self, scope: Scope) -> tuple[int, str] | None:
        headers = Headers(scope=scope)
        if headers.get("host", "").lower() not in self.hosts:
            return 403, "this playground answers only to its loopback address"
        if scope["method"] in ("GET", "HEAD"):
            return None
        if headers.get("origin", "").lower() not in self.origins:
            return 403, "cross-origin requests are refused"
        if headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
            return 415, "the body must be application/json"
        return None


def _secured(send: Send) -> Send:
    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), *_SECURITY_HEADERS]}
        await send(message)

    return wrapped
