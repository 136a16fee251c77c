"""A small client for services: `Client(target).check(...)`. Fails closed: any RPC error or
timeout is a deny, unless the caller opts out for that call (`fail_open=True`); a lookup lists no
more, a plan is ALWAYS_DENIED, and each says why.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import struct_pb2

from pdp._proto.pdp.v1 import pdp_pb2, pdp_pb2_grpc
from pdp.engine.plan import (
    ALWAYS_ALLOWED,
    ALWAYS_DENIED,
    CONDITIONAL,
    FALSE,
    TRUE,
    Filter,
    PlanKind,
)
from pdp.errors import InvalidRequest
from pdp.model import Entity, RelationTuple
from pdp.sidecar.grpc.wire import PLAN_KIND_BACK, filter_of, tuple_message

CLIENT_ERROR = "client_error"  # the reason when the client, not the sidecar, decided


@dataclass(frozen=True, slots=True)
class Answer:
    allowed: bool
    reason: str  # a `pdp.model.Reason` value, or CLIENT_ERROR
    rule_ids: tuple[str, ...] = ()
    decision_id: str = ""
    not_found: bool = False
    bundle_revision: str = ""
    tuple_revision: int = 0
    cached: bool = False
    error: str = ""  # the RPC failure, when reason is CLIENT_ERROR
    trace: tuple[pdp_pb2.TraceStep, ...] = ()


@dataclass(frozen=True, slots=True)
class Listed:
    """A lookup's answer: the ids allowed, and whether that is all of them (`complete`); when it
    is not, `incomplete` says why (including an RPC failure or a stream cut short, after which
    only the ids already received are listed: each was allowed by the sidecar's Check)."""

    ids: tuple[str, ...]
    complete: bool
    incomplete: tuple[str, ...] = ()
    tuple_revision: int = 0
    cursor: str = ""  # pass back to resume after the last id (with a `limit`)
    excluded: tuple[str, ...] = ()  # LookupSubjects: the known ids a `*` does not cover


@dataclass(frozen=True, slots=True)
class Planned:
    """PlanResources' answer: `kind` (pdp.engine.plan's ALWAYS_ALLOWED, ALWAYS_DENIED or
    CONDITIONAL) and the `filter` that the resources Check allows satisfy (pdp.engine.plan's
    tree: `to_sql` renders it). Fails closed: an RPC failure (INVALID_ARGUMENT naming what no
    filter can express, UNAUTHENTICATED, a timeout) or an answer the client cannot read is
    ALWAYS_DENIED with FALSE and a note, as is the sidecar's own fail-closed answer (stale
    tuples, no bundle, a planning error); `notes` is empty only when the plan is the policy's."""

    kind: PlanKind
    filter: Filter
    tuple_revision: int = 0
    notes: tuple[str, ...] = ()
    bundle_revision: str = ""


def struct(attrs: Mapping[str, Any] | None) -> struct_pb2.Struct | None:
    """Attributes to the wire: sets become sorted lists (the sidecar treats lists as sets)."""
    if not attrs:
        return None
    s = struct_pb2.Struct()
    s.update({k: sorted(v) if isinstance(v, (set, frozenset)) else v for k, v in attrs.items()})
    return s


def entity(e: Entity) -> pdp_pb2.Entity:
    return pdp_pb2.Entity(type=e.type, id=e.id, attributes=struct(e.attrs))


def check_request(
    subject: Entity,
    action: str,
    resource: Entity,
    context: Mapping[str, Any] | None = None,
    *,
    explain: bool = False,
    min_tuple_revision: int = 0,
) -> pdp_pb2.CheckRequest:
    return pdp_pb2.CheckRequest(
        subject=entity(subject),
        action=action,
        resource=entity(resource),
        context=struct(context),
        explain=explain,
        min_tuple_revision=min_tuple_revision,
    )


def answer(resp: pdp_pb2.CheckResponse) -> Answer:
    return Answer(
        allowed=resp.decision == pdp_pb2.EFFECT_ALLOW,
        reason=pdp_pb2.Reason.Name(resp.reason).removeprefix("REASON_").lower(),
        rule_ids=tuple(resp.rule_ids),
        decision_id=resp.decision_id,
        not_found=resp.not_found,
        bundle_revision=resp.bundle_revision,
        tuple_revision=resp.tuple_revision,
        cached=resp.cached,
        trace=tuple(resp.trace),
    )


def _failed(exc: grpc.RpcError, fail_open: bool) -> Answer:
    code = exc.code() if isinstance(exc, grpc.Call) else None
    detail = exc.details() if isinstance(exc, grpc.Call) else str(exc)
    return Answer(allowed=fail_open, reason=CLIENT_ERROR, error=f"{code}: {detail}")


class Client:
    """One channel to the sidecar. `timeout` (seconds) bounds every call."""

    def __init__(
        self,
        target: str = "127.0.0.1:50051",
        *,
        timeout: float = 0.5,
        metadata: Sequence[tuple[str, str]] = (),
        channel: grpc.Channel | None = None,
    ) -> None:
        self._channel = channel or grpc.insecure_channel(target)
        self._authz = pdp_pb2_grpc.AuthorizerStub(self._channel)
        self._admin = pdp_pb2_grpc.AdminStub(self._channel)
        self.timeout = timeout
        self.metadata = tuple(metadata)

    def check(
        self,
        subject: Entity,
        action: str,
        resource: Entity,
        context: Mapping[str, Any] | None = None,
        *,
        explain: bool = False,
        min_tuple_revision: int = 0,
        fail_open: bool = False,
        timeout: float | None = None,
    ) -> Answer:
        """Ask the sidecar. On any RPC failure: deny, or allow only if `fail_open` is passed."""
        req = check_request(
            subject,
            action,
            resource,
            context,
            explain=explain,
            min_tuple_revision=min_tuple_revision,
        )
        try:
            resp = self._authz.Check(req, timeout=timeout or self.timeout, metadata=self.metadata)
        except grpc.RpcError as exc:
            return _failed(exc, fail_open)
        return answer(resp)

    def batch_check(
        self,
        requests: Iterable[pdp_pb2.CheckRequest],
        *,
        fail_open: bool = False,
        timeout: float | None = None,
    ) -> list[Answer]:
        """Answers in the order asked; an item the sidecar refused is a client-side deny."""
        items = [
            pdp_pb2.BatchCheckItem(correlation_id=str(i), request=r) for i, r in enumerate(requests)
        ]
        try:
            resp = self._authz.BatchCheck(
                pdp_pb2.BatchCheckRequest(items=items),
                timeout=timeout or self.timeout,
                metadata=self.metadata,
            )
        except grpc.RpcError as exc:
            return [_failed(exc, fail_open)] * len(items)
        out = []
        for r in resp.results:
            if r.HasField("response"):
                out.append(answer(r.response))
            else:
                out.append(Answer(allowed=False, reason=CLIENT_ERROR, error=r.error.message))
        return out

    # Admin calls raise grpc.RpcError: a failed write must never pass silently.
    def write_tuples(
        self,
        writes: Iterable[RelationTuple] = (),
        deletes: Iterable[RelationTuple] = (),
        *,
        timeout: float | None = None,
    ) -> int:
        resp = self._admin.WriteTuples(
            pdp_pb2.WriteTuplesRequest(
                writes=[tuple_message(t) for t in writes],
                deletes=[tuple_message(t) for t in deletes],
            ),
            timeout=timeout or self.timeout * 10,
            metadata=self.metadata,
        )
        return int(resp.tuple_revision)

    def lookup_resources(
        self,
        subject: Entity | str,
        action: str,
        resource_type: str,
        context: Mapping[str, Any] | None = None,
        *,
        limit: int = 0,
        cursor: str = "",
        min_tuple_revision: int = 0,
        timeout: float | None = None,
    ) -> Listed:
        """The resources of `resource_type` that `subject` (an Entity, or a subject token) may
        `action`. Fails closed: an RPC failure lists nothing more and says so."""
        req = pdp_pb2.LookupResourcesRequest(
            action=action,
            resource_type=resource_type,
            context=struct(context),
            limit=limit,
            cursor=cursor,
            min_tuple_revision=min_tuple_revision,
        )
        if isinstance(subject, str):
            req.subject_token = subject
        else:
            req.subject.CopyFrom(entity(subject))
        return self._listed(
            lambda: self._authz.LookupResources(
                req, timeout=timeout or self.timeout * 10, metadata=self.metadata
            ),
            "resource_id",
        )

    def plan_resources(
        self,
        subject: Entity | str,
        action: str,
        resource_type: str,
        context: Mapping[str, Any] | None = None,
        *,
        min_tuple_revision: int = 0,
        timeout: float | None = None,
    ) -> Planned:
        """The resources of `resource_type` that `subject` (an Entity, or a subject token) may
        `action`, as a filter over their attributes. Fails closed: a failed call raises
        nothing and is ALWAYS_DENIED with a note."""
        req = pdp_pb2.PlanResourcesRequest(
            action=action,
            resource_type=resource_type,
            context=struct(context),
            min_tuple_revision=min_tuple_revision,
        )
        if isinstance(subject, str):
            req.subject_token = subject
        else:
            req.subject.CopyFrom(entity(subject))
        try:
            resp = self._authz.PlanResources(
                req, timeout=timeout or self.timeout * 10, metadata=self.metadata
            )
        except grpc.RpcError as exc:
            return Planned(ALWAYS_DENIED, FALSE, notes=(f"{exc.code().name}: {exc.details()}",))
        kind = PLAN_KIND_BACK.get(resp.kind)
        try:
            if kind is None:
                raise InvalidRequest(f"kind: `{resp.kind}` is not a plan kind")
            found = filter_of(resp.filter)
            if kind != CONDITIONAL and found != (TRUE if kind == ALWAYS_ALLOWED else FALSE):
                raise InvalidRequest(f"kind: `{kind}` disagrees with its filter")
        except InvalidRequest as exc:  # a sidecar this client does not understand: deny
            note = f"{CLIENT_ERROR}: unreadable plan: {exc}"
            return Planned(ALWAYS_DENIED, FALSE, resp.tuple_revision, (note,))
        return Planned(kind, found, resp.tuple_revision, tuple(resp.notes), resp.bundle_revision)

    def lookup_subjects(
        self,
        resource: Entity,
        action: str,
        subject_type: str,
        context: Mapping[str, Any] | None = None,
        *,
        limit: int = 0,
        cursor: str = "",
        min_tuple_revision: int = 0,
        timeout: float | None = None,
    ) -> Listed:
        """The subjects of `subject_type` that may `action` on `resource` (`*`: everyone but
        `excluded`). Fails closed like lookup_resources."""
        req = pdp_pb2.LookupSubjectsRequest(
            resource=entity(resource),
            action=action,
            subject_type=subject_type,
            context=struct(context),
            limit=limit,
            cursor=cursor,
            min_tuple_revision=min_tuple_revision,
        )
        return self._listed(
            lambda: self._authz.LookupSubjects(
                req, timeout=timeout or self.timeout * 10, metadata=self.metadata
            ),
            "subject_id",
        )

    @staticmethod
    def _listed(call: Any, id_field: str) -> Listed:
        ids: list[str] = []
        excluded: tuple[str, ...] = ()
        try:
            for resp in call():
                if resp.done:
                    return Listed(
                        tuple(ids),
                        not resp.incomplete,
                        tuple(resp.incomplete),
                        resp.tuple_revision,
                        resp.cursor,
                        excluded,
                    )
                ids.append(getattr(resp, id_field))
                if id_field == "subject_id" and resp.excluded_subject_ids:
                    excluded = tuple(resp.excluded_subject_ids)
        except grpc.RpcError as exc:
            return Listed(tuple(ids), False, (f"{exc.code().name}: {exc.details()}",))
        return Listed(tuple(ids), False, ("the stream ended before its last message",))

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
