"""The gRPC servicers: convert protobuf messages to `pdp.model` values and back, nothing more.

Exceptions: `RequestInvalid(ValueError)` names the offending field; `Unauthenticated(PermissionError)`
is a missing or unusable credential, `ScopeRequired(PermissionError)` a valid one without the scope
the call needs. `to_status` is the one place an internal exception becomes a gRPC status.
"""

from __future__ import annotations

import base64
import bisect
import contextvars
import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, NoReturn

import grpc
from google.protobuf import struct_pb2, timestamp_pb2

from pdp import audit
from pdp._proto.pdp.v1 import pdp_pb2, pdp_pb2_grpc
from pdp.client import tuple_message
from pdp.identifiers import id_problem, name_problem
from pdp.model import EMPTY, Decision, Effect, Entity, Reason, RelationTuple, Request, Value
from pdp.service import Service
from pdp.tenancy import OPERATOR, Caller, TenantDenied
from pdp.tokens.errors import InvalidToken
from pdp.tuple_schema import InvalidTuple

log = logging.getLogger(__name__)


class RequestInvalid(ValueError):
    """A request field is missing, malformed or over a limit."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


class Unauthenticated(PermissionError):
    """No credential, or one this server cannot accept (UNAUTHENTICATED, never a decision)."""


class ScopeRequired(PermissionError):
    """A valid credential that lacks the scope the call needs: a deny (PERMISSION_DENIED)."""

    def __init__(self, scope: str) -> None:
        super().__init__(f"this call needs the `{scope}` scope (or `admin`)")
        self.scope = scope


@dataclass(frozen=True, slots=True)
class Limits:
    max_batch: int = 1000
    max_attributes: int = 64  # per attribute map
    max_list_items: int = 256
    max_string: int = 1024  # characters in a type, id, action or attribute string
    max_tuples_per_write: int = 1000
    max_page_size: int = 1000
    max_message_bytes: int = 4 << 20  # enforced by gRPC itself: RESOURCE_EXHAUSTED


def to_status(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The one translation from internal exceptions to the wire."""
    if isinstance(exc, (RequestInvalid, InvalidTuple)):
        return grpc.StatusCode.INVALID_ARGUMENT, str(exc)
    if isinstance(exc, audit.TooManySubscribers):
        return grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc)
    if isinstance(exc, (ScopeRequired, TenantDenied)):  # known caller, no permission
        return grpc.StatusCode.PERMISSION_DENIED, str(exc)
    if isinstance(exc, InvalidToken):  # a short fixed reason, never the token itself
        return grpc.StatusCode.UNAUTHENTICATED, f"invalid token: {exc}"
    if isinstance(exc, PermissionError):  # what any other subject-token verifier raises
        return grpc.StatusCode.UNAUTHENTICATED, str(exc) or "invalid subject token"
    log.exception("internal error", exc_info=exc)
    # never echo internals (paths, values, secrets) to a caller
    return grpc.StatusCode.INTERNAL, "internal error"


def _abort(context: grpc.ServicerContext, exc: BaseException) -> NoReturn:
    code, message = to_status(exc)
    context.abort(code, message)
    raise AssertionError("unreachable")  # context.abort always raises


# Who an admin call is made by (the verified token's `sub` and tenant), set by the admin
# interceptor for the duration of the call; an anonymous, tenantless caller under --insecure-admin.
ADMIN_CALLER: contextvars.ContextVar[Caller] = contextvars.ContextVar(
    "admin_caller", default=OPERATOR
)


# ---- protobuf -> model ---------------------------------------------------------------------

_MAX_EXACT_INT = 2**53  # beyond this a JSON/Struct number is no longer an exact integer


def _attrs(struct: struct_pb2.Struct, path: str, limits: Limits) -> Mapping[str, Value]:
    fields = struct.fields
    if not fields:
        return EMPTY
    if len(fields) > limits.max_attributes:
        raise RequestInvalid(
            path, f"{len(fields)} attributes exceed the limit of {limits.max_attributes}"
        )
    out: dict[str, Value] = {}
    for name, v in fields.items():
        out[name] = _value(v, f"{path}.{name}", limits)
    return MappingProxyType(out)


def _value(v: struct_pb2.Value, path: str, limits: Limits) -> Value:
    kind = v.WhichOneof("kind")
    if kind == "string_value":
        if len(v.string_value) > limits.max_string:
            raise RequestInvalid(path, f"longer than {limits.max_string} characters")
        text: str = v.string_value
        return text
    if kind == "bool_value":
        flag: bool = v.bool_value
        return flag
    if kind == "number_value":
        return _int(v.number_value, path)
    if kind == "list_value":
        return _list(v.list_value, path, limits)
    if kind == "struct_value":
        raise RequestInvalid(path, "nested maps are not allowed; attributes are flat")
    raise RequestInvalid(path, "null is not an attribute value")


def _int(n: float, path: str) -> int:
    if not n.is_integer():
        raise RequestInvalid(path, f"{n} is a float; only whole numbers are allowed")
    if abs(n) > _MAX_EXACT_INT:
        raise RequestInvalid(path, "integer out of range (|n| <= 2**53)")
    return int(n)


def _list(lv: struct_pb2.ListValue, path: str, limits: Limits) -> Value:
    items = lv.values
    if len(items) > limits.max_list_items:
        raise RequestInvalid(
            path, f"{len(items)} items exceed the limit of {limits.max_list_items}"
        )
    kinds = {item.WhichOneof("kind") for item in items}
    if not kinds:
        return frozenset()
    if kinds == {"string_value"}:
        for i, item in enumerate(items):
            if len(item.string_value) > limits.max_string:
                raise RequestInvalid(f"{path}[{i}]", f"longer than {limits.max_string} characters")
        return frozenset(item.string_value for item in items)
    if kinds == {"number_value"}:
        return frozenset(_int(item.number_value, f"{path}[{i}]") for i, item in enumerate(items))
    if len(kinds) > 1:
        raise RequestInvalid(path, "mixed list; a list holds only strings or only integers")
    raise RequestInvalid(path, "a list holds only strings or only integers")


def _name(value: str, path: str, limits: Limits) -> str:
    """A type, relation or action name (pdp.identifiers)."""
    if len(value) > limits.max_string:
        raise RequestInvalid(path, f"longer than {limits.max_string} characters")
    problem = name_problem(value)
    if problem is not None:
        raise RequestInvalid(path, problem)
    return value


def _id(value: str, path: str, *, wildcard: bool = False) -> str:
    """An object id (pdp.identifiers); `*` only where a subject wildcard is meant."""
    problem = id_problem(value, wildcard=wildcard)
    if problem is not None:
        raise RequestInvalid(path, problem)
    return value


def _entity(msg: pdp_pb2.Entity, path: str, limits: Limits) -> Entity:
    return Entity(
        _name(msg.type, f"{path}.type", limits),
        _id(msg.id, f"{path}.id"),
        _attrs(msg.attributes, f"{path}.attributes", limits),
    )


def _tuple(msg: pdp_pb2.RelationTuple, path: str, limits: Limits) -> RelationTuple:
    subject_relation = msg.subject_relation
    if subject_relation:
        _name(subject_relation, f"{path}.subject_relation", limits)
    return RelationTuple(
        _name(msg.object_type, f"{path}.object_type", limits),
        _id(msg.object_id, f"{path}.object_id"),
        _name(msg.relation, f"{path}.relation", limits),
        _name(msg.subject_type, f"{path}.subject_type", limits),
        # `user:*` is every user; `group:*#member` means nothing and is refused
        _id(msg.subject_id, f"{path}.subject_id", wildcard=not subject_relation),
        subject_relation,
    )


# ---- model -> protobuf ---------------------------------------------------------------------

_EFFECT = {Effect.ALLOW: pdp_pb2.EFFECT_ALLOW, Effect.DENY: pdp_pb2.EFFECT_DENY}
_EFFECT_BACK = {v: k for k, v in _EFFECT.items()}
_REASON = {r: pdp_pb2.Reason.Value(f"REASON_{r.name}") for r in Reason}


class _ResponseTemplates:
    """Decision -> its CheckResponse without the decision id, built once per decision object.

    The engine hands out the same immutable Decision for the same outcome, so copying a finished
    message (one C call) replaces a Python-level assignment per field on most calls."""

    def __init__(self, limit: int = 10_000) -> None:
        self._limit = limit
        self._by_id: dict[int, tuple[Decision, pdp_pb2.CheckResponse]] = {}

    def fill(self, resp: pdp_pb2.CheckResponse, dec: Decision, decision_id: str) -> None:
        item = self._by_id.get(id(dec))
        if item is None or item[0] is not dec:  # the id of a collected decision can be reused
            template = pdp_pb2.CheckResponse()
            _fill(template, dec, "")
            if len(self._by_id) >= self._limit:
                self._by_id = {}
            item = self._by_id[id(dec)] = (dec, template)
        resp.CopyFrom(item[1])
        resp.decision_id = decision_id


def _fill(resp: pdp_pb2.CheckResponse, dec: Decision, decision_id: str) -> None:
    """Write a decision into `resp` in place: a batch fills its results without copying them."""
    resp.decision = _EFFECT[dec.effect]
    resp.reason = _REASON[dec.reason]
    resp.decision_id = decision_id
    resp.bundle_revision = dec.bundle_revision
    resp.tuple_revision = dec.tuple_revision
    if dec.rule_ids:
        resp.rule_ids.extend(dec.rule_ids)
    if dec.not_found:
        resp.not_found = True
    if dec.cached:
        resp.cached = True
    if dec.errors:
        resp.errors.extend(dec.errors)
    if dec.trace is not None:
        resp.trace.extend(
            pdp_pb2.TraceStep(kind=s.kind, id=s.id, outcome=s.outcome, detail=s.detail)
            for s in dec.trace
        )


def _timestamp(unix: float) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(int(unix * 1e9))
    return ts


def audit_event_pb(ev: audit.AuditEvent, mask: frozenset[str]) -> pdp_pb2.AuditEvent:
    out = pdp_pb2.AuditEvent(
        sequence=ev.sequence,
        kind=ev.kind,
        time=_timestamp(ev.time),
        decision_id=ev.decision_id,
        missed=ev.missed,
        json=audit.to_json(ev, mask).decode(),
    )
    if ev.request is not None and ev.decision is not None:
        dec = ev.decision
        out.decision = _EFFECT[dec.effect]
        out.reason = _REASON[dec.reason]
        out.subject = ev.subject
        out.action = ev.request.action
        out.resource = ev.resource
        out.rule_ids.extend(dec.rule_ids)
        out.bundle_revision = dec.bundle_revision
        out.tuple_revision = dec.tuple_revision
    return out


# ---- servicers -----------------------------------------------------------------------------

SubjectFromToken = Callable[[str], Entity]
TRUSTED, TOKEN_ONLY = "trusted", "token-only"
SUBJECT_MODES = (TRUSTED, TOKEN_ONLY)
_CONVERSION_CACHE_SIZE = 50_000


class AuthorizerServicer(pdp_pb2_grpc.AuthorizerServicer):
    """Check and BatchCheck: the hot path. Per call: convert, decide, audit, count, convert."""

    def __init__(
        self,
        service: Service,
        limits: Limits = Limits(),
        subject_from_token: SubjectFromToken | None = None,
        *,
        token_only: bool = False,
    ) -> None:
        self._service = service
        # INVARIANT (token-only): no subject reaches the engine that a token did not prove
        self._token_only = token_only
        self._limits = limits
        self._subject_from_token = subject_from_token
        self._entities: dict[bytes, Entity] = {}
        self._contexts: dict[bytes, Mapping[str, Value]] = {}
        self._requests: dict[bytes, Request] = {}
        self._templates = _ResponseTemplates()

    def _entity(self, msg: pdp_pb2.Entity, path: str) -> Entity:
        # Walking a Struct from Python costs ~15 us; the same subjects and resources come back
        # call after call, so convert each distinct message once. Bytes are the exact key.
        key = msg.SerializeToString(deterministic=True)
        entity = self._entities.get(key)
        if entity is None:
            entity = _entity(msg, path, self._limits)  # raises before anything is cached
            if len(self._entities) >= _CONVERSION_CACHE_SIZE:
                self._entities.clear()  # crude but bounded; a miss only costs a conversion
            self._entities[key] = entity
        return entity

    def _context(self, msg: struct_pb2.Struct, path: str) -> Mapping[str, Value]:
        if not msg.fields:
            return EMPTY
        key = msg.SerializeToString(deterministic=True)
        context = self._contexts.get(key)
        if context is None:
            context = _attrs(msg, path, self._limits)
            if len(self._contexts) >= _CONVERSION_CACHE_SIZE:
                self._contexts.clear()
            self._contexts[key] = context
        return context

    def _request(self, msg: pdp_pb2.CheckRequest, path: str) -> Request:
        if msg.WhichOneof("principal") != "subject" or self._token_only:
            return self._convert(msg, path)
        # A request with an explicit subject is a pure function of its bytes: convert each
        # distinct one once (a token-bearing request is never cached: it must be verified).
        key = msg.SerializeToString(deterministic=True)
        req = self._requests.get(key)
        if req is None:
            req = self._convert(msg, path)  # raises before anything is cached
            if len(self._requests) >= _CONVERSION_CACHE_SIZE:
                self._requests.clear()
            self._requests[key] = req
        return req

    def _convert(self, msg: pdp_pb2.CheckRequest, path: str) -> Request:
        limits = self._limits
        which = msg.WhichOneof("principal")
        if which == "subject":
            if self._token_only:
                raise Unauthenticated(
                    f"{path}subject: this sidecar accepts only a verified subject_token "
                    "(subjects = token-only)"
                )
            subject = self._entity(msg.subject, f"{path}subject")
        elif which == "subject_token":
            if self._subject_from_token is None:
                raise Unauthenticated(f"{path}subject_token: no token verifier is configured")
            # INVARIANT: the token is verified on every call, before the decision cache is
            # consulted, so a revoked or expired token can never reach a cached decision.
            subject = self._subject_from_token(msg.subject_token)
        else:
            raise RequestInvalid(f"{path}subject", "is required (or subject_token)")
        return Request(
            subject,
            _name(msg.action, f"{path}action", limits),
            self._entity(msg.resource, f"{path}resource"),
            self._context(msg.context, f"{path}context"),
        )

    def Check(
        self, request: pdp_pb2.CheckRequest, context: grpc.ServicerContext
    ) -> pdp_pb2.CheckResponse:
        try:
            req = self._request(request, "")
        except Exception as exc:
            _abort(context, exc)
        dec, decision_id = self._service.check(
            req,
            explain=request.explain,
            min_tuple_revision=request.min_tuple_revision,
            metadata=context.invocation_metadata,
        )
        out = pdp_pb2.CheckResponse()
        _fill(out, dec, decision_id)
        return out

    def BatchCheck(
        self, request: pdp_pb2.BatchCheckRequest, context: grpc.ServicerContext
    ) -> pdp_pb2.BatchCheckResponse:
        items = request.items
        try:
            if len(items) > self._limits.max_batch:
                raise RequestInvalid(
                    "items",
                    f"{len(items)} items exceed the batch limit of {self._limits.max_batch}",
                )
            seen: set[str] = set()
            for i, item in enumerate(items):
                cid = item.correlation_id
                if cid:
                    # results are in order, but a caller keying them by id must not be misled
                    if cid in seen:
                        raise RequestInvalid(f"items[{i}].correlation_id", f"duplicate `{cid}`")
                    seen.add(cid)
        except Exception as exc:
            _abort(context, exc)
        out = pdp_pb2.BatchCheckResponse()
        add_result = out.results.add
        fill = self._templates.fill
        # one bundle revision for the whole batch, even across a reload
        with self._service.batch(context.invocation_metadata) as batch:
            check = batch.check
            for i, item in enumerate(items):
                result = add_result()
                cid = item.correlation_id
                if cid:
                    result.correlation_id = cid
                msg = item.request
                try:
                    req = self._request(msg, "")
                except Exception as exc:
                    code, message = to_status(exc)
                    if isinstance(exc, RequestInvalid):  # name the field from the batch's root
                        message = f"items[{i}].request.{message}"
                    result.error.code = code.value[0]
                    result.error.message = message
                    continue
                dec, decision_id = check(
                    req, explain=msg.explain, min_tuple_revision=msg.min_tuple_revision
                )
                fill(result.response, dec, decision_id)
        return out

    def Echo(
        self, request: pdp_pb2.EchoRequest, context: grpc.ServicerContext
    ) -> pdp_pb2.EchoResponse:
        return pdp_pb2.EchoResponse(payload=request.payload)


class AdminServicer(pdp_pb2_grpc.AdminServicer):
    """Tuple administration, bundle status and the audit stream."""

    def __init__(self, service: Service, limits: Limits = Limits()) -> None:
        self._service = service
        self._limits = limits
        self._stopping = threading.Event()
        self._streams: set[audit.Subscription] = set()
        self._streams_lock = threading.Lock()

    def _tuples(self, msgs: Any, path: str) -> list[RelationTuple]:
        if len(msgs) > self._limits.max_tuples_per_write:
            raise RequestInvalid(
                path, f"{len(msgs)} tuples exceed the limit of {self._limits.max_tuples_per_write}"
            )
        return [_tuple(m, f"{path}[{i}]", self._limits) for i, m in enumerate(msgs)]

    def WriteTuples(
        self, request: pdp_pb2.WriteTuplesRequest, context: grpc.ServicerContext
    ) -> pdp_pb2.WriteTuplesResponse:
        try:
            writes = self._tuples(request.writes, "writes")
            deletes = self._tuples(request.deletes, "deletes")
            revision = self._service.writer.write(writes, deletes, ADMIN_CALLER.get())
        except Exception as exc:
            _abort(context, exc)
        return pdp_pb2.WriteTuplesResponse(tuple_revision=revision)

    def DeleteTuples(
        self, request: pdp_pb2.DeleteTuplesRequest, context: grpc.ServicerContext
    ) -> pdp_pb2.WriteTuplesResponse:
        try:
            deletes = self._tuples(request.tuples, "tuples")
            revision = self._service.writer.write([], deletes, ADMIN_CALLER.get())
        except Exception as exc:
            _abort(context, exc)
        return pdp_pb2.WriteTuplesResponse(tuple_revision=revision)

    def ReadTuples(
        self, request: pdp_pb2.ReadTuplesRequest, context: grpc.ServicerContext
    ) -> pdp_pb2.ReadTuplesResponse:
        try:
            size = request.page_size or 100
            if not 0 < size <= self._limits.max_page_size:
                raise RequestInvalid(
                    "page_size", f"must be between 1 and {self._limits.max_page_size}"
                )
            after = _page_after(request.page_token)
            tuples, revision = self._service.writer.read(
                ADMIN_CALLER.get(),
                object_type=request.object_type or None,
                object_id=request.object_id or None,
                relation=request.relation or None,
                subject_type=request.subject_type or None,
                subject_id=request.subject_id or None,
                subject_relation=request.subject_relation or None,
            )
        except Exception as exc:
            _abort(context, exc)
        # the list is sorted, so a page token is simply the last tuple handed out
        start = bisect.bisect_right(tuples, after) if after is not None else 0
        page = tuples[start : start + size]
        token = ""
        if start + size < len(tuples):
            token = base64.urlsafe_b64encode(str(page[-1]).encode()).decode()
        return pdp_pb2.ReadTuplesResponse(
            tuples=[tuple_message(t) for t in page], next_page_token=token, tuple_revision=revision
        )

    def BundleStatus(
        self, request: pdp_pb2.BundleStatusRequest, context: grpc.ServicerContext
    ) -> pdp_pb2.BundleStatusResponse:
        st = self._service.status()
        out = pdp_pb2.BundleStatusResponse(
            serving=st.serving,
            name=st.name,
            revision=st.revision,
            path=st.path,
            tuple_revision=st.tuple_revision,
        )
        if st.loaded_at:
            out.loaded_at.CopyFrom(_timestamp(st.loaded_at))
        if st.quarantine.count:
            out.quarantined_tuples = st.quarantine.count
            out.quarantined_examples.extend(
                pdp_pb2.QuarantinedTuple(tuple=q.tuple, write=q.present, reason=q.reason)
                for q in st.quarantine.examples
            )
        if st.rejected is not None:
            out.last_rejected.CopyFrom(
                pdp_pb2.RejectedBundle(
                    path=st.rejected.path,
                    rejected_at=_timestamp(st.rejected.at),
                    errors=st.rejected.errors,
                )
            )
        return out

    def SubscribeAudit(
        self, request: pdp_pb2.SubscribeAuditRequest, context: grpc.ServicerContext
    ) -> Iterator[pdp_pb2.AuditEvent]:
        hub = self._service.audit
        try:
            unknown = set(request.kinds) - audit.KINDS
            if unknown:
                raise RequestInvalid("kinds", f"unknown kind `{min(unknown)}`")
            flt = audit.Filter(
                kinds=frozenset(request.kinds),
                effect=_EFFECT_BACK.get(request.decision),
                subject=request.subject,
                resource_type=request.resource_type,
                rule_id=request.rule_id,
            )
            sub = hub.subscribe(flt)
        except Exception as exc:
            _abort(context, exc)
        with self._streams_lock:
            self._streams.add(sub)
        # a cancelled or disconnected caller closes its queue, which ends the loop below
        context.add_callback(sub.close)
        mask = hub.settings.mask
        # every stream sends the same message for an event: build it once for all of them
        render = hub.renderer("grpc", lambda ev: audit_event_pb(ev, mask))
        try:
            while not self._stopping.is_set():
                ev = sub.get(timeout=0.5)
                if ev is None:
                    if sub.closed:
                        return
                    continue
                yield render(ev)
        finally:
            with self._streams_lock:
                self._streams.discard(sub)
            hub.unsubscribe(sub)

    def shutdown(self) -> None:
        """End every audit stream, so a graceful stop need not wait for their callers."""
        self._stopping.set()
        with self._streams_lock:
            streams = list(self._streams)
        for sub in streams:
            sub.close()


def _page_after(token: str) -> RelationTuple | None:
    if not token:
        return None
    try:
        return RelationTuple.parse(base64.urlsafe_b64decode(token.encode()).decode())
    except ValueError as exc:
        raise RequestInvalid("page_token", "is not a token this server handed out") from exc
