"""The transport against a real `pdp serve`: undecodable requests, stuck audit subscribers, and a
second server on a busy port."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import grpc
import httpx
import pytest

from pdp._proto.pdp.v1 import pdp_pb2, pdp_pb2_grpc
from pdp.model import Entity

from .serve import Served, ServeFactory, wait_for

ALICE = Entity("user", "alice", {"tenant": "acme", "roles": frozenset({"viewer"})})
DOC = Entity("document", "spec-1", {"tenant": "acme", "owner": "alice", "classification": 0})
# not a protobuf: a truncated length-delimited field, an invalid varint, a bad wire type
GARBAGE = [b"\xff" * n for n in (1, 7, 64)] + [b"\x0a\x05ab", b"\x0a\xff\xff\xff\xff\xff"]
GARBAGE += [b"\x0f" + bytes(range(i, i + 20)) for i in range(40)]


def _raw(served: Served, method: str) -> grpc.UnaryUnaryMultiCallable:
    return served.channel.unary_unary(method, request_serializer=None, response_deserializer=None)


def _code(call: object, payload: bytes, **kw: object) -> tuple[grpc.StatusCode, str]:
    try:
        call(payload, timeout=10, **kw)  # type: ignore[operator]
    except grpc.RpcError as exc:
        return exc.code(), exc.details()
    return grpc.StatusCode.OK, ""


def _metric(served: Served, name: str) -> float:
    text = httpx.get(f"http://{served.http}/metrics", timeout=10).text
    m = re.search(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def test_undecodable_requests_are_invalid_argument_and_one_log_line(
    pdp_serve: ServeFactory, saas_bundle: Path
) -> None:
    served = pdp_serve.start(saas_bundle)
    check = _raw(served, "/pdp.v1.Authorizer/Check")
    before = served.log_text()
    for i in range(400):
        code, details = _code(check, GARBAGE[i % len(GARBAGE)])
        assert code == grpc.StatusCode.INVALID_ARGUMENT, (i, code, details)
        assert details == "request: cannot be decoded as pdp.v1.CheckRequest"
    grown = served.log_text()[len(before) :]
    assert "Traceback" not in grown
    assert len(grown.splitlines()) <= 3, grown
    assert "undecodable request" in grown
    # the server is fine afterwards
    assert served.check(ALICE, "read", DOC).decision == pdp_pb2.EFFECT_ALLOW


@pytest.mark.parametrize(
    ("method", "type_name"),
    [
        ("/pdp.v1.Authorizer/BatchCheck", "pdp.v1.BatchCheckRequest"),
        ("/pdp.v1.Admin/WriteTuples", "pdp.v1.WriteTuplesRequest"),
        ("/grpc.health.v1.Health/Check", "grpc.health.v1.HealthCheckRequest"),
    ],
)
def test_every_service_refuses_garbage_before_anything_else(
    pdp_serve: ServeFactory, saas_bundle: Path, method: str, type_name: str
) -> None:
    served = pdp_serve.start(saas_bundle)
    # no credential on the admin call: garbage is refused before authentication
    code, details = _code(_raw(served, method), b"\xff\xff\xff")
    assert (code, details) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        f"request: cannot be decoded as {type_name}",
    )
    assert "Traceback" not in served.log_text()


def test_streams_refuse_garbage_too(pdp_serve: ServeFactory, saas_bundle: Path) -> None:
    served = pdp_serve.start(saas_bundle)
    token = served.token(*pdp_serve.client(scopes=("admin",), tenant="*"))
    stream = served.channel.unary_stream(
        "/pdp.v1.Admin/SubscribeAudit", request_serializer=None, response_deserializer=None
    )
    with pytest.raises(grpc.RpcError) as err:
        list(stream(b"\xff\xff", metadata=(("authorization", f"Bearer {token}"),), timeout=10))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    reflect = served.channel.stream_stream(
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        request_serializer=None,
        response_deserializer=None,
    )
    with pytest.raises(grpc.RpcError) as err:
        list(reflect(iter([b"\xff\xff"]), timeout=10))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "Traceback" not in served.log_text()


def test_stuck_subscribers_are_skipped_and_counted_while_checks_and_a_live_one_go_on(
    pdp_serve: ServeFactory, saas_bundle: Path
) -> None:
    served = pdp_serve.start(saas_bundle)
    metadata = (("authorization", f"Bearer {served.token(*pdp_serve.client(tenant='*'))}"),)
    # 15 clients that never read (the server allows 16 subscribers) and one that does
    stuck = []
    for _ in range(15):
        ch = grpc.insecure_channel(served.grpc_target)
        call = pdp_pb2_grpc.AdminStub(ch).SubscribeAudit(
            pdp_pb2.SubscribeAuditRequest(kinds=["decision"]), metadata=metadata
        )
        stuck.append((ch, call))
    live_calls = pdp_pb2_grpc.AdminStub(served.channel).SubscribeAudit(
        pdp_pb2.SubscribeAuditRequest(kinds=["decision"], subject="user:bob"), metadata=metadata
    )
    got: list[pdp_pb2.AuditEvent] = []

    def read() -> None:
        try:
            for ev in live_calls:
                got.append(ev)
        except grpc.RpcError:  # cancelled at the end
            pass

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        wait_for(lambda: _metric(served, "pdp_audit_subscribers") == 16)
        # enough decisions to fill the stuck ones' transport windows and then their queues
        batch = pdp_pb2.BatchCheckRequest(
            items=[pdp_pb2.BatchCheckItem(request=_check_pb()) for _ in range(1000)]
        )
        for _ in range(25):
            resp = served.authz.BatchCheck(batch, timeout=60)
            assert all(r.response.decision == pdp_pb2.EFFECT_ALLOW for r in resp.results)
        wait_for(lambda: _metric(served, "pdp_audit_dropped_events_total") > 0, timeout=60)
        bob = Entity("user", "bob", {"tenant": "acme", "roles": frozenset({"viewer"})})
        ids = [served.check(bob, "read", DOC).decision_id for _ in range(20)]
        assert all(ids)
        wait_for(lambda: ids[-1] in {ev.decision_id for ev in got}, timeout=30)
        assert [ev.decision_id for ev in got if ev.decision_id in ids] == ids
    finally:
        live_calls.cancel()
        for ch, call in stuck:
            call.cancel()
            ch.close()


def _check_pb() -> pdp_pb2.CheckRequest:
    from pdp.client import check_request

    return check_request(ALICE, "read", DOC)


def _busy_server_line(proc_err: str) -> list[str]:
    return [ln for ln in proc_err.splitlines() if ln.startswith("pdp serve:")]


@pytest.mark.parametrize("side", ["grpc", "http"])
def test_a_second_server_on_a_busy_port_exits_with_one_line(
    pdp_serve: ServeFactory, saas_bundle: Path, tmp_path: Path, side: str
) -> None:
    first = pdp_serve.start(saas_bundle)
    busy = first.grpc_target if side == "grpc" else first.http
    flag = "--listen" if side == "grpc" else "--http-listen"
    log = tmp_path / f"second-{side}.log"
    proc = pdp_serve.popen(
        saas_bundle, data_dir=tmp_path / "other-data", args=[flag, busy], log=log
    )
    assert proc.wait(30) == 1
    err = log.read_text()
    assert "Traceback" not in err
    assert _busy_server_line(err) == [f"pdp serve: cannot listen on {busy}: address already in use"]
    assert err.rstrip().splitlines()[-1].startswith("pdp serve: cannot listen")
    # the first still answers every Check: nothing took a share of its traffic
    assert first.check(ALICE, "read", DOC).decision == pdp_pb2.EFFECT_ALLOW
