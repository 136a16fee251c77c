"""OpenTelemetry tracing against a real `pdp serve` exporting OTLP/HTTP to a real collector
endpoint in the test: a call that carries a W3C `traceparent` gets a SERVER span in the caller's
trace, with the decision, reason and decision id the caller was answered; gRPC and HTTP alike."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from pdp._proto.pdp.v1 import pdp_pb2, pdp_pb2_grpc
from pdp.client import check_request
from pdp.sidecar.grpc.tracing import TracingConfigError, tracer_from_env

from .saas import document, user
from .serve import ServeFactory, operator_token, wait_for


class Collector:
    """An OTLP/HTTP trace endpoint: keeps every span it is sent."""

    def __init__(self) -> None:
        self.spans: list[Any] = []
        spans, lock = self.spans, threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                request = ExportTraceServiceRequest.FromString(body)
                with lock:
                    for rs in request.resource_spans:
                        for ss in rs.scope_spans:
                            spans.extend((rs.resource, s) for s in ss.spans)
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def of_trace(self, trace_id: str) -> list[Any]:
        return [(r, s) for r, s in list(self.spans) if s.trace_id.hex() == trace_id]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def collector() -> Iterator[Collector]:
    c = Collector()
    try:
        yield c
    finally:
        c.close()


def attrs(span: Any) -> dict[str, Any]:
    out = {}
    for kv in span.attributes:
        value = kv.value
        out[kv.key] = getattr(value, value.WhichOneof("value"))
    return out


def test_calls_join_the_callers_trace_with_their_decision(
    pdp_serve: ServeFactory, saas_bundle: Path, collector: Collector
) -> None:
    served = pdp_serve.start(
        saas_bundle,
        env={
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint,
            "OTEL_SERVICE_NAME": "pdp-under-test",
            "OTEL_BSP_SCHEDULE_DELAY": "50",
        },
    )
    trace_id, parent = secrets.token_hex(16), secrets.token_hex(8)
    traceparent = f"00-{trace_id}-{parent}-01"
    request = check_request(user("acme/erin"), "read", document("d1"))
    answer = served.authz.Check(request, metadata=[("traceparent", traceparent)], timeout=10)
    spans = wait_for(lambda: collector.of_trace(trace_id), timeout=20)
    (resource, span) = spans[0]
    assert span.name == "pdp.v1.Authorizer/Check"
    assert span.parent_span_id.hex() == parent
    assert span.kind == span.SPAN_KIND_SERVER
    got = attrs(span)
    assert (got["pdp.decision"], got["pdp.reason"], got["pdp.decision_id"]) == (
        pdp_pb2.Effect.Name(answer.decision),
        pdp_pb2.Reason.Name(answer.reason),
        answer.decision_id,
    )
    names = {kv.key: kv.value.string_value for kv in resource.attributes}
    assert names["service.name"] == "pdp-under-test"

    # the same over HTTP/JSON, the trace context in the header
    trace_id = secrets.token_hex(16)
    r = httpx.post(
        f"http://{served.http}/v1/check",
        json={
            "subject": {"type": "user", "id": "x"},
            "action": "read",
            "resource": {"type": "document", "id": "d1"},
        },
        headers={"traceparent": f"00-{trace_id}-{parent}-01"},
        timeout=10,
    )
    assert r.status_code == 200
    (_, span) = wait_for(lambda: collector.of_trace(trace_id), timeout=20)[0]
    assert span.name == "pdp.v1.Authorizer/Check"
    assert attrs(span)["pdp.decision_id"] == r.json()["decisionId"]

    # an admin call refused for want of a credential is traced too, as an error
    trace_id = secrets.token_hex(16)
    with pytest.raises(grpc.RpcError):
        served.channel.unary_unary(
            "/pdp.v1.Admin/BundleStatus",
            request_serializer=pdp_pb2.BundleStatusRequest.SerializeToString,
            response_deserializer=pdp_pb2.BundleStatusResponse.FromString,
        )(
            pdp_pb2.BundleStatusRequest(),
            metadata=[("traceparent", f"00-{trace_id}-{parent}-01")],
            timeout=10,
        )
    (_, span) = wait_for(lambda: collector.of_trace(trace_id), timeout=20)[0]
    assert span.name == "pdp.v1.Admin/BundleStatus"
    assert span.status.code == span.status.STATUS_CODE_ERROR
    # and an allowed one is traced without error
    trace_id = secrets.token_hex(16)
    token = operator_token(pdp_serve, served)
    pdp_pb2_grpc.AdminStub(served.channel).BundleStatus(
        pdp_pb2.BundleStatusRequest(),
        metadata=[
            ("authorization", f"Bearer {token}"),
            ("traceparent", f"00-{trace_id}-{parent}-01"),
        ],
        timeout=10,
    )
    (_, span) = wait_for(lambda: collector.of_trace(trace_id), timeout=20)[0]
    assert span.status.code != span.status.STATUS_CODE_ERROR

    # RED metrics per call, each duration with its trace as an exemplar (OpenMetrics asked for)
    scraped = httpx.get(
        f"http://{served.http}/metrics",
        headers={"accept": "application/openmetrics-text; version=1.0.0"},
        timeout=10,
    )
    assert scraped.headers["content-type"].startswith("application/openmetrics-text")
    families = {f.name: f for f in text_string_to_metric_families(scraped.text)}
    calls = {
        (s.labels["transport"], s.labels["method"], s.labels["code"]): s.value
        for s in families["pdp_rpc_requests"].samples
        if s.name == "pdp_rpc_requests_total"
    }
    assert calls[("grpc", "Check", "OK")] >= 1
    assert calls[("http", "Check", "OK")] >= 1
    assert calls[("grpc", "BundleStatus", "UNAUTHENTICATED")] == 1
    assert calls[("grpc", "BundleStatus", "OK")] == 1
    exemplars = [
        s.exemplar.labels
        for s in families["pdp_rpc_duration_seconds"].samples
        if s.exemplar is not None and s.labels.get("method") == "BundleStatus"
    ]
    assert {"trace_id": trace_id, "span_id": span.span_id.hex()} in exemplars
    served.stop()


def test_tracing_is_off_unless_asked_and_a_bad_setting_is_refused(
    pdp_serve: ServeFactory, saas_bundle: Path
) -> None:
    assert tracer_from_env({}) is None
    assert tracer_from_env({"OTEL_TRACES_EXPORTER": "none"}) is None
    with pytest.raises(TracingConfigError, match="OTEL_TRACES_EXPORTER=zipkin"):
        tracer_from_env({"OTEL_TRACES_EXPORTER": "zipkin"})
    proc = pdp_serve.popen(saas_bundle, env={"OTEL_TRACES_EXPORTER": "jaeger"})
    proc.communicate(timeout=30)
    assert proc.returncode == 1
    log = "".join(p.read_text() for p in (pdp_serve.root).glob("popen-*.log"))
    assert "OTEL_TRACES_EXPORTER=jaeger" in log
