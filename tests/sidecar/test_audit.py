"""Audit: the hub's queues and gaps, masking, sampling, the file sink, and the stream end to end."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import grpc
import orjson

from pdp._proto.pdp.v1 import pdp_pb2, pdp_pb2_grpc
from pdp.model import Decision, Effect, Entity, Reason, Request
from pdp.sidecar import audit
from pdp.sidecar.app import App
from pdp.sidecar.config import AuditSettings

from .support import MALLORY, bearer, mint, req, tuple_pb, wait_until

REQ = Request(
    Entity("user", "a", {"ssn": "123", "tenant": "t"}),
    "read",
    Entity("document", "d", {"email": "x@y"}),
    {"ip": "1.2.3.4"},
)
ALLOW = Decision(Effect.ALLOW, Reason.PERMITTED, ("r1",), "rev", 1)
DENY = Decision(Effect.DENY, Reason.NOT_PERMITTED, (), "rev", 1)


def test_full_queue_counts_drops_and_marks_the_gap_in_place() -> None:
    hub = audit.AuditHub()
    sub = hub.subscribe(capacity=2)
    ids = [hub.decision(REQ, DENY) for _ in range(5)]
    assert hub.flush()
    assert hub.dropped == 3
    first, second = sub.get(0), sub.get(0)
    assert [first.decision_id, second.decision_id] == ids[:2]
    later = hub.decision(REQ, DENY)
    assert hub.flush()
    gap = sub.get(0)
    assert gap.kind == audit.GAP
    assert gap.missed == 3
    assert sub.get(0).decision_id == later
    assert sub.get(0) is None


def test_filters() -> None:
    hub = audit.AuditHub()
    denies = hub.subscribe(audit.Filter(effect=Effect.DENY))
    by_rule = hub.subscribe(audit.Filter(rule_id="r1", kinds=frozenset({audit.DECISION})))
    hub.decision(REQ, ALLOW)
    hub.decision(REQ, DENY)
    hub.event(audit.TUPLES_WRITTEN, {"writes": []})
    assert hub.flush()
    assert denies.get(0).decision.effect is Effect.DENY
    assert denies.get(0) is None
    assert by_rule.get(0).decision.rule_ids == ("r1",)
    assert by_rule.get(0) is None


def test_masking_and_no_credentials() -> None:
    hub = audit.AuditHub(
        AuditSettings(
            mask=frozenset({"ssn", "resource.email"}),
            metadata=frozenset({"x-request-id", "authorization"}),
        )
    )
    sub = hub.subscribe()
    hub.decision(REQ, DENY, lambda: [("authorization", "Bearer s3cret"), ("x-request-id", "r7")])
    line = audit.to_json(sub.get(5), hub.settings.mask)
    data = orjson.loads(line)
    assert data["subject"]["attrs"] == {"ssn": audit.MASK, "tenant": "t"}
    assert data["resource"]["attrs"] == {"email": audit.MASK}
    assert data["metadata"] == {"x-request-id": "r7"}
    assert b"s3cret" not in line
    assert b"123" not in line


def test_allows_sampled_denies_always() -> None:
    hub = audit.AuditHub(AuditSettings(allow_sample_rate=0.0))
    sub = hub.subscribe()
    allow_id = hub.decision(REQ, ALLOW)
    hub.decision(REQ, DENY)
    assert allow_id  # the caller still gets an id to quote
    assert hub.flush()
    assert sub.get(0).decision.effect is Effect.DENY
    assert sub.get(0) is None


def test_a_batch_is_recorded_as_one_event_per_decision_in_order() -> None:
    hub = audit.AuditHub(AuditSettings(allow_sample_rate=0.0))
    sub = hub.subscribe()
    single = hub.decision(REQ, DENY)
    ids = hub.decisions([REQ] * 4, [DENY, ALLOW, DENY, ALLOW], lambda: [("x-trace", "t1")])
    after = hub.decision(REQ, DENY)
    assert len({single, *ids, after}) == 6  # every decision gets its own id, allows too
    assert hub.flush()
    got = [sub.get(0) for _ in range(4)]
    assert sub.get(0) is None  # sampled-out allows are not recorded
    assert [e.decision_id for e in got] == [single, ids[0], ids[2], after]
    assert [e.sequence for e in got] == sorted(e.sequence for e in got)


def test_a_batch_past_the_queue_capacity_counts_what_it_drops() -> None:
    hub = audit.AuditHub(AuditSettings(queue_capacity=3))
    sub = hub.subscribe()
    release, entered = threading.Event(), threading.Event()
    real_put_many = sub.put_many

    def held(events: list[audit.AuditEvent]) -> None:
        entered.set()
        release.wait(5)
        real_put_many(events)

    sub.put_many = held  # type: ignore[method-assign]
    first = hub.decision(REQ, DENY)
    assert entered.wait(5)  # the dispatcher holds the first event; the queue is empty
    ids = hub.decisions([REQ] * 5, [DENY] * 5)
    assert hub.dropped == 2
    release.set()
    assert hub.flush()
    assert [sub.get(0).decision_id for _ in range(4)] == [first, *ids[:3]]


def test_batch_check_audits_each_decided_item_with_the_id_it_answered(app: App, authz) -> None:
    sub = app.audit.subscribe()
    items = [
        pdp_pb2.BatchCheckItem(correlation_id="a", request=req()),
        pdp_pb2.BatchCheckItem(correlation_id="b", request=req(MALLORY)),
        pdp_pb2.BatchCheckItem(correlation_id="bad", request=req(action="")),
        pdp_pb2.BatchCheckItem(correlation_id="c", request=req()),
    ]
    results = authz.BatchCheck(pdp_pb2.BatchCheckRequest(items=items)).results
    assert [r.correlation_id for r in results] == ["a", "b", "bad", "c"]
    assert results[2].HasField("error")  # never decided, so never audited
    answered = [r.response.decision_id for r in results if r.HasField("response")]
    assert len(set(answered)) == 3
    assert app.audit.flush()
    events = [sub.get(0) for _ in range(3)]
    assert sub.get(0) is None
    assert [e.decision_id for e in events] == answered
    assert [e.request.subject.id for e in events] == ["alice", "mallory", "alice"]
    assert [e.decision.allowed for e in events] == [
        r.response.decision == pdp_pb2.EFFECT_ALLOW for r in results if r.HasField("response")
    ]


def test_file_sink_rotates_by_size(tmp_path: Path) -> None:
    hub = audit.AuditHub()
    path = tmp_path / "audit.jsonl"
    sink = audit.FileSink(hub, path, max_bytes=2000, backups=2)
    ids = [hub.decision(REQ, DENY) for _ in range(30)]
    sink.close()
    files = [path.with_name("audit.jsonl.2"), path.with_name("audit.jsonl.1"), path]
    lines = [ln for f in files if f.exists() for ln in f.read_bytes().splitlines()]
    assert all(f.stat().st_size <= 2000 for f in files)
    kept = [orjson.loads(ln)["decision_id"] for ln in lines]
    assert kept == ids[-len(kept) :]  # the oldest rotate away, order is kept
    assert not path.with_name("audit.jsonl.3").exists()


def _stream(
    app: App,
    request: pdp_pb2.SubscribeAuditRequest,
    out: list,
    ready: threading.Event,
    stop_after: int,
) -> grpc.Channel:
    ch = grpc.insecure_channel(app.grpc_target)
    token = mint(app, scopes=("audit:read",), tenant="*")

    def run() -> None:
        stream = pdp_pb2_grpc.AdminStub(ch).SubscribeAudit(request, metadata=bearer(token))
        ready.set()
        for ev in stream:
            out.append(ev)
            if len(out) >= stop_after:
                stream.cancel()
                return

    threading.Thread(target=run, daemon=True).start()
    return ch


def test_subscriber_receives_every_event(app: App, authz, admin) -> None:
    base = app.audit.subscriber_count
    got: list[pdp_pb2.AuditEvent] = []
    ready = threading.Event()
    ch = _stream(app, pdp_pb2.SubscribeAuditRequest(), got, ready, stop_after=201)
    wait_until(lambda: app.audit.subscriber_count >= base + 1, "the stream to subscribe")
    ids = [
        authz.Check(req(MALLORY if i % 2 else None) if i % 2 else req()).decision_id
        for i in range(200)
    ]
    admin.WriteTuples(pdp_pb2.WriteTuplesRequest(writes=[tuple_pb("document:q#owner@user:z")]))
    try:
        wait_until(lambda: len(got) >= 201, "all 201 events on the stream")
    finally:
        ch.close()
    assert [e.decision_id for e in got[:200]] == ids
    assert got[200].kind == "tuples_written"
    assert orjson.loads(got[200].json)["writes"] == ["document:q#owner@user:z"]
    deny = got[1]
    assert deny.decision == pdp_pb2.EFFECT_DENY
    assert deny.subject == "user:mallory"
    assert deny.resource == "document:d1"


def test_stuck_subscriber_does_not_slow_checks(make_app: Callable[..., App]) -> None:
    app = make_app(audit=AuditSettings(subscriber_capacity=10))
    stuck = app.audit.subscribe()  # never read
    with grpc.insecure_channel(app.grpc_target) as ch:
        stub = pdp_pb2_grpc.AuthorizerStub(ch)
        deny = req(MALLORY)
        # A check that waited for the stuck subscriber would hang: each call has a deadline, so
        # that fails as DEADLINE_EXCEEDED instead of hanging the suite. No timing is asserted.
        for _ in range(300):
            assert stub.Check(deny, timeout=10).decision == pdp_pb2.EFFECT_DENY
    assert app.audit.flush()
    assert app.audit.dropped >= 290
    events = [stuck.get(0) for _ in range(11)]
    assert events[-1].kind == audit.GAP
    assert events[-1].missed == app.audit.dropped


def test_emitting_does_not_wait_for_the_dispatcher_and_counts_a_full_queue() -> None:
    hub = audit.AuditHub(AuditSettings(queue_capacity=3))
    sub = hub.subscribe()
    release, entered, threads = threading.Event(), threading.Event(), []
    real_put_many = sub.put_many

    def held(events: list[audit.AuditEvent]) -> None:  # a subscriber slow to take its events
        threads.append(threading.current_thread().name)
        entered.set()
        release.wait(5)
        real_put_many(events)

    sub.put_many = held  # type: ignore[method-assign]
    first = hub.decision(REQ, DENY)
    assert entered.wait(5)  # the dispatcher holds the first event
    ids = [hub.decision(REQ, DENY) for _ in range(5)]  # returns at once: 3 wait, 2 are dropped
    assert hub.dropped == 2
    release.set()
    assert hub.flush()
    assert [sub.get(0).decision_id for _ in range(4)] == [first, *ids[:3]]
    assert set(threads) == {"audit-dispatcher"}  # never in the deciding thread


def test_no_subscriber_no_event_and_no_thread() -> None:
    hub = audit.AuditHub()
    built: list[int] = []
    hub.decision(REQ, DENY, lambda: built.append(1) or [])
    hub.event(audit.TUPLES_WRITTEN, {})
    assert not built  # metadata is fetched only for an event someone will read
    assert hub._dispatcher is None
    assert not hub._pending


def test_a_full_subscriber_is_skipped_the_others_still_get_everything() -> None:
    hub = audit.AuditHub()
    stuck = hub.subscribe(capacity=5)
    live = hub.subscribe()
    ids = [hub.decision(REQ, DENY) for _ in range(50)]
    assert hub.flush()
    assert [live.get(0).decision_id for _ in range(50)] == ids
    assert stuck.dropped == 45
    assert hub.dropped == 45
    assert [stuck.get(0).decision_id for _ in range(5)] == ids[:5]
    gap = stuck.get(0)
    assert (gap.kind, gap.missed) == (audit.GAP, 45)


def test_render_cache_renders_each_event_once() -> None:
    hub = audit.AuditHub()
    calls: list[int] = []
    render = hub.renderer("x", lambda ev: calls.append(ev.sequence) or ev.sequence)
    assert hub.renderer("x", lambda ev: None) is render
    subs = [hub.subscribe() for _ in range(4)]
    hub.decision(REQ, DENY)
    assert hub.flush()
    assert len({render(sub.get(0)) for sub in subs}) == 1
    assert len(calls) == 1


def test_close_delivers_what_was_pending(tmp_path: Path) -> None:
    hub = audit.AuditHub(AuditSettings(dispatch_interval=3600))
    path = tmp_path / "audit.jsonl"
    sink = audit.FileSink(hub, path)
    ids = [hub.decision(REQ, DENY) for _ in range(100)]
    sink.close()
    hub.close()
    assert [orjson.loads(ln)["decision_id"] for ln in path.read_bytes().splitlines()] == ids


def test_a_lookup_is_audited_with_its_question_and_whether_it_was_whole(
    app: App, authz, admin
) -> None:
    base = app.audit.subscriber_count
    got: list[pdp_pb2.AuditEvent] = []
    ready = threading.Event()
    # filtered to its kind: a subscriber can ask for lookups alone
    only = pdp_pb2.SubscribeAuditRequest(kinds=["lookup_resources"])
    ch = _stream(app, only, got, ready, stop_after=1)
    wait_until(lambda: app.audit.subscriber_count >= base + 1, "the stream to subscribe")
    lookup = pdp_pb2.LookupResourcesRequest(
        subject=pdp_pb2.Entity(type="user", id="mallory"), action="read", resource_type="document"
    )
    *ids, done = list(authz.LookupResources(lookup))
    try:
        wait_until(lambda: len(got) >= 1, "the lookup's event")
    finally:
        ch.close()
    assert got[0].kind == "lookup_resources"
    detail = orjson.loads(got[0].json)
    assert (detail["subject"], detail["action"], detail["resource_type"]) == (
        "user:mallory",
        "read",
        "document",
    )
    assert detail["ids_sent"] == len(ids)
    assert detail["incomplete"] == list(done.incomplete)


def test_a_plan_is_audited_with_its_question_and_its_kind_but_no_filter(
    app: App, authz, admin
) -> None:
    base = app.audit.subscriber_count
    got: list[pdp_pb2.AuditEvent] = []
    ready = threading.Event()
    only = pdp_pb2.SubscribeAuditRequest(kinds=["plan_resources"])
    ch = _stream(app, only, got, ready, stop_after=1)
    wait_until(lambda: app.audit.subscriber_count >= base + 1, "the stream to subscribe")
    plan = pdp_pb2.PlanResourcesRequest(
        subject=pdp_pb2.Entity(type="user", id="mallory"),
        action="read",
        resource_type="document",
        min_tuple_revision=10**9,  # stale: denied, and the note says why
    )
    resp = authz.PlanResources(plan)
    try:
        wait_until(lambda: len(got) >= 1, "the plan's event")
    finally:
        ch.close()
    assert resp.kind == pdp_pb2.PLAN_KIND_ALWAYS_DENIED
    assert got[0].kind == "plan_resources"
    detail = orjson.loads(got[0].json)
    assert (detail["subject"], detail["action"], detail["resource_type"]) == (
        "user:mallory",
        "read",
        "document",
    )
    assert detail["plan"] == "always_denied"
    assert detail["notes"] == list(resp.notes) and "stale_tuples" in detail["notes"][0]
    assert detail["tuple_revision"] == resp.tuple_revision
    assert detail["bundle_revision"] == resp.bundle_revision
    assert "filter" not in detail
