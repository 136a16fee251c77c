"""The clients' one translation to and from the wire: typed requests to pdp.v1 messages, responses
and gRPC failures to pdp.client.results values. The sync and asyncio clients only move messages;
every decision about what an answer or a failure means is made here, once for both.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import grpc
from google.protobuf import struct_pb2

from pdp._proto.pdp.v1 import pdp_pb2
from pdp.client.errors import ClientError, error_of
from pdp.client.results import (
    CLIENT_ERROR,
    Answer,
    Change,
    Listed,
    Planned,
    Quarantined,
    Question,
    Rejected,
    Status,
    TuplePage,
)
from pdp.engine.plan import ALWAYS_ALLOWED, ALWAYS_DENIED, CONDITIONAL, FALSE, TRUE
from pdp.errors import InvalidRequest
from pdp.model import Entity, Request, TraceStep
from pdp.sidecar.grpc.wire import PLAN_KIND_BACK, filter_of, tuple_message, tuple_of

__all__ = ["tuple_message"]  # re-exported: tests and tools build tuples with it

# The codes that mean the sidecar made no decision (unreachable, too slow, overloaded, broken):
# only these may be answered ALLOW by `fail_open`. Any other code is the sidecar's judgement of
# the request (a bad subject token, a malformed request), and allowing it would let a forged
# token through whenever a caller chose fail_open.
UNANSWERED = frozenset(
    {
        "UNAVAILABLE",
        "DEADLINE_EXCEEDED",
        "CANCELLED",
        "RESOURCE_EXHAUSTED",
        "ABORTED",
        "INTERNAL",
        "UNKNOWN",
    }
)
_CODE_NAMES = {sc.value[0]: sc.name for sc in grpc.StatusCode}
CUT_SHORT = "the stream ended before its last message"
READ_FILTERS = frozenset(
    {"object_type", "object_id", "relation", "subject_type", "subject_id", "subject_relation"}
)


# ---- requests ----------------------------------------------------------------------------------


def struct(attrs: Mapping[str, Any] | None) -> struct_pb2.Struct | None:
    """Attributes to the wire: sets become sorted lists (the sidecar treats lists as sets)."""
    if not attrs:
        return None
    s = struct_pb2.Struct()
    s.update({k: sorted(v) if isinstance(v, (set, frozenset)) else v for k, v in attrs.items()})
    return s


def entity(e: Entity) -> pdp_pb2.Entity:
    return pdp_pb2.Entity(type=e.type, id=e.id, attributes=struct(e.attrs))


def principal(subject: Entity | str | None, subject_token: str | None) -> Entity | str:
    """Who asks: an Entity, or a subject token (a bare string as `subject` is one too)."""
    if subject is not None and subject_token is not None:
        raise TypeError("pass a subject or a subject_token, not both")
    if subject_token is not None:
        return subject_token
    if subject is None:
        raise TypeError("pass a subject Entity or a subject_token")
    return subject


def _set_principal(msg: Any, who: Entity | str) -> None:
    if isinstance(who, str):
        msg.subject_token = who
    else:
        msg.subject.CopyFrom(entity(who))


def check_request(
    subject: Entity | str | None,
    action: str,
    resource: Entity,
    context: Mapping[str, Any] | None = None,
    *,
    subject_token: str | None = None,
    explain: bool = False,
    min_tuple_revision: int = 0,
) -> pdp_pb2.CheckRequest:
    req = pdp_pb2.CheckRequest(
        action=action,
        resource=entity(resource),
        context=struct(context),
        explain=explain,
        min_tuple_revision=min_tuple_revision,
    )
    _set_principal(req, principal(subject, subject_token))
    return req


def batch_request(
    questions: Iterable[Question | Request | pdp_pb2.CheckRequest],
) -> pdp_pb2.BatchCheckRequest:
    """Each question as an item whose correlation id is its index."""
    items = []
    for i, q in enumerate(questions):
        if isinstance(q, Question):
            msg = check_request(
                q.subject,
                q.action,
                q.resource,
                q.context,
                subject_token=q.subject_token,
                explain=q.explain,
                min_tuple_revision=q.min_tuple_revision,
            )
        elif isinstance(q, Request):
            msg = check_request(q.subject, q.action, q.resource, q.context)
        else:  # a CheckRequest message, as this client took before Question (kept for callers)
            msg = q
        items.append(pdp_pb2.BatchCheckItem(correlation_id=str(i), request=msg))
    return pdp_pb2.BatchCheckRequest(items=items)


def lookup_resources_request(
    who: Entity | str,
    action: str,
    resource_type: str,
    context: Mapping[str, Any] | None,
    limit: int,
    cursor: str,
    min_tuple_revision: int,
) -> pdp_pb2.LookupResourcesRequest:
    req = pdp_pb2.LookupResourcesRequest(
        action=action,
        resource_type=resource_type,
        context=struct(context),
        limit=limit,
        cursor=cursor,
        min_tuple_revision=min_tuple_revision,
    )
    _set_principal(req, who)
    return req


def lookup_subjects_request(
    resource: Entity,
    action: str,
    subject_type: str,
    context: Mapping[str, Any] | None,
    limit: int,
    cursor: str,
    min_tuple_revision: int,
) -> pdp_pb2.LookupSubjectsRequest:
    return pdp_pb2.LookupSubjectsRequest(
        resource=entity(resource),
        action=action,
        subject_type=subject_type,
        context=struct(context),
        limit=limit,
        cursor=cursor,
        min_tuple_revision=min_tuple_revision,
    )


def plan_request(
    who: Entity | str,
    action: str,
    resource_type: str,
    context: Mapping[str, Any] | None,
    min_tuple_revision: int,
) -> pdp_pb2.PlanResourcesRequest:
    req = pdp_pb2.PlanResourcesRequest(
        action=action,
        resource_type=resource_type,
        context=struct(context),
        min_tuple_revision=min_tuple_revision,
    )
    _set_principal(req, who)
    return req


def read_request(
    filters: Mapping[str, str], page_size: int, page_token: str
) -> pdp_pb2.ReadTuplesRequest:
    unknown = set(filters) - READ_FILTERS
    if unknown:
        raise TypeError(f"`{min(unknown)}` is not a tuple field to filter on")
    return pdp_pb2.ReadTuplesRequest(page_size=page_size, page_token=page_token, **filters)


def watch_request(after_revision: int | None, object_types: Iterable[str]) -> pdp_pb2.WatchRequest:
    req = pdp_pb2.WatchRequest(object_types=list(object_types))
    if after_revision is not None:
        req.after_revision = after_revision
    return req


def bearer(metadata: tuple[tuple[str, str], ...], token: str | None) -> tuple[tuple[str, str], ...]:
    """`metadata` with `authorization: Bearer <token>` added, when there is a token."""
    return (*metadata, ("authorization", f"Bearer {token}")) if token else metadata


# ---- answers -----------------------------------------------------------------------------------


def status_of(exc: grpc.RpcError) -> tuple[str, str]:
    """A failed call's status name and details (grpc.Call and grpc.aio errors alike)."""
    code = exc.code() if callable(getattr(exc, "code", None)) else None
    details = exc.details() if callable(getattr(exc, "details", None)) else str(exc)
    return (code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"), details or ""


def answer(resp: pdp_pb2.CheckResponse, attempts: int = 1) -> Answer:
    return Answer(
        allowed=resp.decision == pdp_pb2.EFFECT_ALLOW,
        reason=pdp_pb2.Reason.Name(resp.reason).removeprefix("REASON_").lower(),
        rule_ids=tuple(resp.rule_ids),
        decision_id=resp.decision_id,
        not_found=resp.not_found,
        bundle_revision=resp.bundle_revision,
        tuple_revision=resp.tuple_revision,
        cached=resp.cached,
        trace=tuple(TraceStep(s.kind, s.id, s.outcome, s.detail) for s in resp.trace),
        attempts=attempts,
    )


def refused(code: str, details: str, fail_open: bool, attempts: int = 1) -> Answer:
    """The client's own answer when no decision came back.

    INVARIANT: only a call the sidecar did not answer may be allowed, and only with fail_open.
    """
    return Answer(
        allowed=fail_open and code in UNANSWERED,
        reason=CLIENT_ERROR,
        error=f"{code}: {details}",
        code=code,
        attempts=attempts,
    )


def failed(exc: grpc.RpcError, fail_open: bool, attempts: int) -> Answer:
    return refused(*status_of(exc), fail_open, attempts)


def answers(resp: pdp_pb2.BatchCheckResponse, count: int, attempts: int) -> list[Answer]:
    """Answers in the order asked, matched by correlation id; an item the sidecar refused, or
    left out, is a client-side deny."""
    by_id = {r.correlation_id: r for r in resp.results}
    out = []
    for i in range(count):
        r = by_id.get(str(i))
        if r is None:
            out.append(refused("INTERNAL", "the sidecar sent no answer for this item", False))
        elif r.HasField("response"):
            out.append(answer(r.response, attempts))
        else:
            code = _CODE_NAMES.get(r.error.code, "UNKNOWN")
            out.append(refused(code, r.error.message, False, attempts))
    return out


class Lister:
    """A lookup stream's messages gathered into one `Listed`."""

    def __init__(self, id_field: str) -> None:
        self._id_field = id_field
        self.ids: list[str] = []
        self._excluded: tuple[str, ...] = ()
        self._cursor = ""
        self._revision = 0

    def feed(self, resp: Any, attempts: int) -> Listed | None:
        """Take one message; the whole answer once its `done` message arrives."""
        if resp.done:
            return Listed(
                tuple(self.ids),
                not resp.incomplete,
                tuple(resp.incomplete),
                resp.tuple_revision,
                resp.cursor,
                self._excluded,
                attempts=attempts,
            )
        self.ids.append(getattr(resp, self._id_field))
        self._cursor, self._revision = resp.cursor, resp.tuple_revision
        if self._id_field == "subject_id" and resp.excluded_subject_ids:
            self._excluded = tuple(resp.excluded_subject_ids)
        return None

    def cut_short(self, why: str, code: str, attempts: int) -> Listed:
        """The ids received so far, incomplete; `cursor` resumes after the last of them."""
        return Listed(
            tuple(self.ids),
            False,
            (why,),
            self._revision,
            self._cursor,
            self._excluded,
            code=code,
            attempts=attempts,
        )

    def failed(self, exc: grpc.RpcError, attempts: int) -> Listed:
        code, details = status_of(exc)
        return self.cut_short(f"{code}: {details}", code, attempts)


def planned(resp: pdp_pb2.PlanResourcesResponse, attempts: int) -> Planned:
    kind = PLAN_KIND_BACK.get(resp.kind)
    try:
        if kind is None:
            raise InvalidRequest(f"kind: `{resp.kind}` is not a plan kind")
        found = filter_of(resp.filter)
        if kind != CONDITIONAL and found != (TRUE if kind == ALWAYS_ALLOWED else FALSE):
            raise InvalidRequest(f"kind: `{kind}` disagrees with its filter")
    except InvalidRequest as exc:  # a sidecar this client does not understand: deny
        note = f"{CLIENT_ERROR}: unreadable plan: {exc}"
        return Planned(ALWAYS_DENIED, FALSE, resp.tuple_revision, (note,), attempts=attempts)
    return Planned(
        kind,
        found,
        resp.tuple_revision,
        tuple(resp.notes),
        resp.bundle_revision,
        attempts=attempts,
    )


def plan_failed(exc: grpc.RpcError, attempts: int) -> Planned:
    code, details = status_of(exc)
    return Planned(
        ALWAYS_DENIED, FALSE, notes=(f"{code}: {details}",), code=code, attempts=attempts
    )


def admin_error(exc: grpc.RpcError, attempts: int, *, write: bool) -> ClientError:
    code, details = status_of(exc)
    return error_of(code, details, attempts, write=write)


def page(resp: pdp_pb2.ReadTuplesResponse) -> TuplePage:
    return TuplePage(
        tuple(tuple_of(t) for t in resp.tuples), resp.next_page_token, resp.tuple_revision
    )


def change(resp: pdp_pb2.WatchResponse) -> Change:
    return Change(
        resp.revision,
        tuple(tuple_of(t) for t in resp.writes),
        tuple(tuple_of(t) for t in resp.deletes),
    )


def status(resp: pdp_pb2.BundleStatusResponse) -> Status:
    rejected = None
    if resp.HasField("last_rejected"):
        r = resp.last_rejected
        rejected = Rejected(r.path, r.rejected_at.ToNanoseconds() / 1e9, tuple(r.errors))
    return Status(
        serving=resp.serving,
        name=resp.name,
        revision=resp.revision,
        path=resp.path,
        loaded_at=resp.loaded_at.ToNanoseconds() / 1e9 if resp.HasField("loaded_at") else None,
        tuple_revision=resp.tuple_revision,
        last_rejected=rejected,
        quarantined_tuples=resp.quarantined_tuples,
        quarantined_examples=tuple(
            Quarantined(q.tuple, q.write, q.reason) for q in resp.quarantined_examples
        ),
        store=resp.store,
        store_connected=resp.store_connected,
        store_revision=resp.store_revision,
        store_seconds_since_contact=resp.store_seconds_since_contact,
        store_error=resp.store_error,
        slice=resp.slice,
    )


# For the channels the clients open: a sidecar that restarts is reconnected to within a fraction
# of a second, so a retried call can reach it inside its deadline (gRPC's own default waits 1 s,
# then longer, before it tries to connect again).
CHANNEL_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 50),
    ("grpc.min_reconnect_backoff_ms", 50),
    ("grpc.max_reconnect_backoff_ms", 500),
)
