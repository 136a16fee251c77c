"""The HTTP side's own routes: Prometheus metrics and a health probe (the token endpoint mounts
beside them in pdp.sidecar.app)."""

from __future__ import annotations

from starlette.requests import Request as HttpRequest
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from pdp.sidecar.service import Service


def http_routes(service: Service) -> list[BaseRoute]:
    async def metrics(_: HttpRequest) -> Response:
        return PlainTextResponse(
            service.metrics_text(), media_type="text/plain; version=0.0.4; charset=utf-8"
        )

    async def healthz(_: HttpRequest) -> Response:
        ok = service.engine.bundle is not None
        return PlainTextResponse("ok\n" if ok else "no bundle\n", status_code=200 if ok else 503)

    return [Route("/metrics", metrics), Route("/healthz", healthz)]
