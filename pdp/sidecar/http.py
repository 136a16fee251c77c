"""The HTTP side's own routes: Prometheus metrics and a health probe (the token endpoint mounts
beside them in pdp.sidecar.app).

/metrics answers in the Prometheus text format, or in OpenMetrics (which carries the exemplars)
when the scraper's Accept header asks for it: prometheus_client chooses and renders."""

from __future__ import annotations

from prometheus_client.exposition import choose_encoder
from starlette.requests import Request as HttpRequest
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from pdp.sidecar.service import Service


def http_routes(service: Service) -> list[BaseRoute]:
    async def metrics(request: HttpRequest) -> Response:
        encode, media_type = choose_encoder(request.headers.get("accept", ""))
        return Response(encode(service.metrics_registry), media_type=media_type)

    async def healthz(_: HttpRequest) -> Response:
        ok = service.engine.bundle is not None
        return PlainTextResponse("ok\n" if ok else "no bundle\n", status_code=200 if ok else 503)

    return [Route("/metrics", metrics), Route("/healthz", healthz)]
