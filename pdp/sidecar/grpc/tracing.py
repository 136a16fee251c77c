"""OpenTelemetry tracing of the sidecar's calls, with the official SDK: off unless the standard
`OTEL_*` environment asks for it.

- `OTEL_TRACES_EXPORTER`: unset or `none` = off (no interceptor, the call path is untouched);
  `console` (spans as JSON on stdout) or `otlp` (OTLP over HTTP/protobuf, to
  `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, read by the exporter).
- `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES` name the process (`pdp` by default);
  `OTEL_TRACES_SAMPLER` and the batch processor's `OTEL_BSP_*` settings are the SDK's own.

Every gRPC call (Authorizer and Admin) and every HTTP/JSON call gets one SERVER span named for
its method (`pdp.v1.Authorizer/Check`), a child of the caller's trace when the request carries a
W3C `traceparent` (gRPC metadata or HTTP header). A Check's span carries its decision, reason and
decision id; a batch's, its size and how many items were allowed. Spans are exported by a batch
processor on its own thread: a slow or absent collector drops spans, never slows a decision.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import grpc
from google.protobuf.message import Message
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace import SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from pdp._proto.pdp.v1 import pdp_pb2

EXPORTERS = ("none", "console", "otlp")
_PROPAGATOR = TraceContextTextMapPropagator()


class TracingConfigError(ValueError):
    """An OTEL_* setting this sidecar cannot honour (named in the message)."""


def tracer_from_env(environ: Mapping[str, str] | None = None) -> Tracer | None:
    """The tracer the environment asks for, or None when tracing is off."""
    env = os.environ if environ is None else environ
    exporter_name = env.get("OTEL_TRACES_EXPORTER", "none").strip().lower() or "none"
    if exporter_name == "none":
        return None
    exporter: SpanExporter
    if exporter_name == "console":
        exporter = ConsoleSpanExporter()
    elif exporter_name == "otlp":
        protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get(
            "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"
        )
        if protocol != "http/protobuf":
            raise TracingConfigError(
                f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol}: only http/protobuf is supported"
            )
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()
    else:
        raise TracingConfigError(
            f"OTEL_TRACES_EXPORTER={exporter_name}: one of {', '.join(EXPORTERS)} is supported"
        )
    # Resource.create reads OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES; ours is the fallback.
    resource = Resource.create({"service.name": env.get("OTEL_SERVICE_NAME") or "pdp"})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return Tracer(provider)


class Tracer:
    """Starts the span of one call; owns the provider, so `shutdown` flushes what is queued."""

    def __init__(self, provider: TracerProvider) -> None:
        self._provider = provider
        self._tracer = provider.get_tracer("pdp.sidecar")

    def call(
        self,
        method: str,
        metadata: Iterable[tuple[str, str | bytes]],
        run: Callable[[], Any],
    ) -> Any:
        """Run one unary call (`run()`) inside its span; its answer annotates the span."""
        with self._span(method, metadata) as span:
            answer = run()
            annotate(span, answer)
            return answer

    def stream(
        self,
        method: str,
        metadata: Iterable[tuple[str, str | bytes]],
        run: Callable[[], Iterable[Any]],
    ) -> Iterator[Any]:
        """A server stream inside one span, which ends with the stream."""
        with self._span(method, metadata) as span:
            sent = 0
            for message in run():
                sent += 1
                yield message
            span.set_attribute("pdp.messages_sent", sent)

    def _span(self, method: str, metadata: Iterable[tuple[str, str | bytes]]) -> Any:
        carrier = {k: v for k, v in metadata if isinstance(v, str)}
        service, _, name = method.lstrip("/").rpartition("/")
        return self._tracer.start_as_current_span(
            method.lstrip("/"),
            context=_PROPAGATOR.extract(carrier),
            kind=SpanKind.SERVER,
            attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": name},
        )

    def shutdown(self) -> None:
        self._provider.shutdown()


def annotate(span: trace.Span, answer: Any) -> None:
    if isinstance(answer, pdp_pb2.CheckResponse):
        span.set_attributes(
            {
                "pdp.decision": pdp_pb2.Effect.Name(answer.decision),
                "pdp.reason": pdp_pb2.Reason.Name(answer.reason),
                "pdp.decision_id": answer.decision_id,
            }
        )
    elif isinstance(answer, pdp_pb2.BatchCheckResponse):
        allowed = sum(
            r.WhichOneof("outcome") == "response" and r.response.decision == pdp_pb2.EFFECT_ALLOW
            for r in answer.results
        )
        span.set_attributes({"pdp.batch.size": len(answer.results), "pdp.batch.allowed": allowed})


class TracingInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]  # grpc ships no type hints
    """Wraps every unary and server-streaming gRPC method in its span (installed only when on)."""

    def __init__(self, tracer: Tracer) -> None:
        self._tracer = tracer

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(details)
        if handler is None or handler.request_streaming:
            return handler  # unknown methods, and reflection's bidirectional stream
        method: str = details.method
        tracer = self._tracer
        if handler.response_streaming:
            streamed = handler.unary_stream

            def unary_stream(request: Message, context: grpc.ServicerContext) -> Iterator[Any]:
                return tracer.stream(
                    method, context.invocation_metadata(), lambda: streamed(request, context)
                )

            return handler._replace(unary_stream=unary_stream)
        unary = handler.unary_unary

        def unary_unary(request: Message, context: grpc.ServicerContext) -> Any:
            return tracer.call(
                method, context.invocation_metadata(), lambda: unary(request, context)
            )

        return handler._replace(unary_unary=unary_unary)
