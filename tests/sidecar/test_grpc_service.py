"""End to end over a real gRPC server on loopback: decisions, batches, tuples, errors, limits."""

from __future__ import annotations

from collections.abc import Callable

import grpc
import httpx
import pytest
from google.protobuf import struct_pb2
from prometheus_client.parser import text_string_to_metric_families

from pdp._proto.pdp.v1 import pdp_pb2, pdp_pb2_grpc
from pdp.sidecar.app import App
from pdp.sidecar.config import AuditSettings, Limits

from .support import ALICE, MALLORY, doc, req, tuple_pb


def test_allow_carries_rule_ids_revisions_and_decision_id(authz, app: App) -> None:
    resp = authz.Check(req())
    assert resp.decision == pdp_pb2.EFFECT_ALLOW
    assert resp.reason == pdp_pb2.REASON_PERMITTED
    assert list(resp.rule_ids) == ["tenant_editors"]
    assert resp.bundle_revision == app.engine.bundle.revision
    assert resp.tuple_revision == app.engine.tuple_revision
    assert resp.decision_id
    assert not resp.trace  # only when asked
    again = authz.Check(req())
    assert again.cached
    assert again.decision_id != resp.decision_id


def test_deny_is_a_normal_answer(authz) -> None:
    resp = authz.Check(req(MALLORY))
    assert resp.decision == pdp_pb2.EFFECT_DENY
    assert resp.reason == pdp_pb2.REASON_NOT_PERMITTED
    assert not resp.rule_ids


def test_forbid_as_not_found(authz) -> None:
    resp = authz.Check(req(resource=doc(classification="secret")))
    assert resp.decision == pdp_pb2.EFFECT_DENY
    assert resp.reason == pdp_pb2.REASON_FORBIDDEN
    assert list(resp.rule_ids) == ["secret_hidden"]
    assert resp.not_found


def test_explain_returns_a_trace_and_bypasses_the_cache(authz) -> None:
    authz.Check(req())
    resp = authz.Check(req(explain=True))
    assert not resp.cached
    steps = {(s.kind, s.id): s.outcome for s in resp.trace}
    assert steps[("permit", "tenant_editors")] == "matched"
    assert steps[("forbid", "secret_hidden")] == "not_matched"


def test_explain_carries_the_values_each_condition_compared_masked_as_the_audit_masks(
    make_app: Callable[..., App],
) -> None:
    app = make_app(audit=AuditSettings(mask=frozenset({"subject.tenant"})))
    with grpc.insecure_channel(app.grpc_target) as ch:
        resp = pdp_pb2_grpc.AuthorizerStub(ch).Check(req(explain=True), timeout=10)
    compared = {
        (step.id, v.expr): v.value
        for step in resp.trace
        if step.kind == "condition"
        for v in step.values
    }
    assert compared == {
        ("has(resource.classification)", "resource.classification"): "(missing)",
        ("subject.tenant == resource.tenant", "subject.tenant"): "***",  # never the value
        ("subject.tenant == resource.tenant", "resource.tenant"): '"acme"',
        ('subject.role == "editor"', "subject.role"): '"editor"',
    }
    # children first: a rule's conditions are the deeper steps just before it
    assert [(s.depth, s.kind) for s in resp.trace][-3:] == [
        (1, "condition"),
        (1, "condition"),
        (0, "permit"),
    ]


def test_batch_answers_in_order_with_duplicates_and_bad_items(authz) -> None:
    allow, deny = req(), req(MALLORY)
    bad = req()
    bad.action = ""
    items = [
        pdp_pb2.BatchCheckItem(correlation_id="a", request=allow),
        pdp_pb2.BatchCheckItem(correlation_id="b", request=deny),
        pdp_pb2.BatchCheckItem(correlation_id="c", request=allow),  # same request again
        pdp_pb2.BatchCheckItem(correlation_id="d", request=bad),
        pdp_pb2.BatchCheckItem(correlation_id="e", request=deny),
    ]
    resp = authz.BatchCheck(pdp_pb2.BatchCheckRequest(items=items))
    assert [r.correlation_id for r in resp.results] == ["a", "b", "c", "d", "e"]
    effects = [r.response.decision if r.HasField("response") else None for r in resp.results]
    assert effects == [
        pdp_pb2.EFFECT_ALLOW,
        pdp_pb2.EFFECT_DENY,
        pdp_pb2.EFFECT_ALLOW,
        None,
        pdp_pb2.EFFECT_DENY,
    ]
    assert resp.results[3].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "items[3].request.action" in resp.results[3].error.message
    ids = [r.response.decision_id for r in resp.results if r.HasField("response")]
    assert len(set(ids)) == 4


def test_batch_rejects_duplicate_correlation_ids(authz) -> None:
    items = [pdp_pb2.BatchCheckItem(correlation_id="x", request=req())] * 2
    with pytest.raises(grpc.RpcError) as err:
        authz.BatchCheck(pdp_pb2.BatchCheckRequest(items=items))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "items[1].correlation_id" in err.value.details()


def test_tuple_write_is_seen_by_the_next_check(authz, admin) -> None:
    check = req(MALLORY, resource=doc("plan2"))
    assert authz.Check(check).decision == pdp_pb2.EFFECT_DENY
    written = admin.WriteTuples(
        pdp_pb2.WriteTuplesRequest(writes=[tuple_pb("document:plan2#owner@user:mallory")])
    )
    after = authz.Check(
        req(MALLORY, resource=doc("plan2"), min_tuple_revision=written.tuple_revision)
    )
    assert after.decision == pdp_pb2.EFFECT_ALLOW
    assert after.tuple_revision >= written.tuple_revision
    # idempotent delete, twice
    for _ in range(2):
        admin.DeleteTuples(
            pdp_pb2.DeleteTuplesRequest(tuples=[tuple_pb("document:plan2#owner@user:mallory")])
        )
    assert authz.Check(check).decision == pdp_pb2.EFFECT_DENY


def test_min_tuple_revision_from_the_future_denies(authz) -> None:
    resp = authz.Check(req(min_tuple_revision=10**9))
    assert resp.decision == pdp_pb2.EFFECT_DENY
    assert resp.reason == pdp_pb2.REASON_STALE_TUPLES


def test_invalid_tuple_is_invalid_argument(admin) -> None:
    with pytest.raises(grpc.RpcError) as err:
        admin.WriteTuples(pdp_pb2.WriteTuplesRequest(writes=[tuple_pb("document:x#nosuch@user:a")]))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "nosuch" in err.value.details()


def test_read_tuples_paginates(admin) -> None:
    writes = [tuple_pb(f"document:p{i:02}#owner@user:u") for i in range(7)]
    admin.WriteTuples(pdp_pb2.WriteTuplesRequest(writes=writes))
    seen, token = [], ""
    for _ in range(10):  # 7 tuples in pages of 3: a token that never ends fails, never hangs
        page = admin.ReadTuples(
            pdp_pb2.ReadTuplesRequest(relation="owner", page_size=3, page_token=token), timeout=5
        )
        seen += [t.object_id for t in page.tuples]
        token = page.next_page_token
        if not token:
            break
    else:
        pytest.fail("ReadTuples kept handing out page tokens")
    assert seen == [f"p{i:02}" for i in range(7)]
    with pytest.raises(grpc.RpcError) as err:
        admin.ReadTuples(pdp_pb2.ReadTuplesRequest(page_token="!!garbage"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def _attrs(**fields: object) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(fields)
    return s


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda r: r.ClearField("subject"), "subject"),
        (lambda r: setattr(r, "action", ""), "action"),
        (lambda r: setattr(r.resource, "id", ""), "resource.id"),
        (lambda r: r.subject.attributes.CopyFrom(_attrs(level=1.5)), "subject.attributes.level"),
        (lambda r: r.resource.attributes.CopyFrom(_attrs(m={"a": 1})), "resource.attributes.m"),
        (lambda r: r.context.CopyFrom(_attrs(tags=["a", 1])), "context.tags"),
        (lambda r: r.context.CopyFrom(_attrs(tags=[["a"]])), "context.tags"),
        (lambda r: r.context.CopyFrom(_attrs(n=None)), "context.n"),
        (lambda r: r.context.CopyFrom(_attrs(**{f"k{i}": i for i in range(65)})), "context"),
    ],
)
def test_malformed_requests_name_the_field(authz, mutate: Callable, field: str) -> None:
    r = req()
    mutate(r)
    with pytest.raises(grpc.RpcError) as err:
        authz.Check(r)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith(f"{field}:")


def test_subject_token_without_a_verifier_is_unauthenticated(authz) -> None:
    r = req()
    r.subject_token = "eyJ..."
    with pytest.raises(grpc.RpcError) as err:
        authz.Check(r)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_limits(make_app: Callable[..., App]) -> None:
    app = make_app(limits=Limits(max_batch=3, max_message_bytes=64 << 10))
    with grpc.insecure_channel(app.grpc_target) as ch:
        stub = pdp_pb2_grpc.AuthorizerStub(ch)
        items = [pdp_pb2.BatchCheckItem(request=req())] * 4
        with pytest.raises(grpc.RpcError) as err:
            stub.BatchCheck(pdp_pb2.BatchCheckRequest(items=items))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "batch limit of 3" in err.value.details()
        with pytest.raises(grpc.RpcError) as err:
            stub.Echo(pdp_pb2.EchoRequest(payload=b"x" * (128 << 10)))
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert stub.Check(req()).decision == pdp_pb2.EFFECT_ALLOW  # still serving


def test_echo_returns_the_payload(authz) -> None:
    assert authz.Echo(pdp_pb2.EchoRequest(payload=b"abc")).payload == b"abc"


def test_bundle_status(admin, app: App) -> None:
    st = admin.BundleStatus(pdp_pb2.BundleStatusRequest())
    assert st.serving
    assert st.name == "sidecar-test"
    assert st.revision == app.engine.bundle.revision
    assert st.loaded_at.seconds > 0
    assert not st.HasField("last_rejected")


def test_metrics_over_http(make_app: Callable[..., App]) -> None:
    app = make_app(http_listen="127.0.0.1:0")
    with grpc.insecure_channel(app.grpc_target) as ch:
        stub = pdp_pb2_grpc.AuthorizerStub(ch)
        stub.Check(req())
        stub.Check(req(MALLORY))
        with pytest.raises(grpc.RpcError):
            stub.Check(req(action=""))  # INVALID_ARGUMENT
    text = httpx.get(f"http://127.0.0.1:{app.http_port}/metrics").text
    assert 'pdp_decisions_total{effect="allow",reason="permitted"} 1' in text
    assert 'pdp_decisions_total{effect="deny",reason="not_permitted"} 1' in text
    # every call counted once, by its final status (the counting wrapper is made once per method)
    samples = {
        (sample.name, sample.labels.get("code", "")): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.labels.get("method") == "Check" and sample.labels.get("transport") == "grpc"
    }
    assert samples[("pdp_rpc_requests_total", "OK")] == 2
    assert samples[("pdp_rpc_requests_total", "INVALID_ARGUMENT")] == 1
    assert samples[("pdp_rpc_duration_seconds_count", "")] == 3
    assert "pdp_check_duration_seconds_count 2" in text
    assert f'revision="{app.engine.bundle.revision}"' in text
    assert "pdp_audit_dropped_events_total 0" in text
    assert httpx.get(f"http://127.0.0.1:{app.http_port}/healthz").status_code == 200


def test_unix_socket(make_app: Callable[..., App], tmp_path) -> None:
    app = make_app(listen=f"unix:{tmp_path}/pdp.sock")
    with grpc.insecure_channel(app.grpc_target) as ch:
        assert pdp_pb2_grpc.AuthorizerStub(ch).Check(req()).decision == pdp_pb2.EFFECT_ALLOW


def test_alice_is_not_used_across_tenants(authz) -> None:
    other = doc("d9")
    other = type(other)("document", "d9", {"tenant": "globex"})
    assert authz.Check(req(ALICE, resource=other)).decision == pdp_pb2.EFFECT_DENY
