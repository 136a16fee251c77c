"""The gRPC servicers: convert protobuf messages to `pdp.model` values (pdp.sidecar.grpc.wire), call
the use case (pdp.sidecar.service), map errors (pdp.sidecar.grpc.status): nothing more.
"""

from __future__ import annotations

import base64
import bisect
import contextvars
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import grpc
from google.protobuf import struct_pb2

from pdp._proto.pdp.v1 import pdp_pb2, pdp_pb2_grpc
from pdp.engine.lookup import Lookup
from pdp.identifiers import WILDCARD, is_id
from pdp.model import EMPTY, Entity, RelationTuple, Request, Value
from pdp.sidecar import audit
from pdp.sidecar.config import DEFAULT_LIMITS, Limits
from pdp.sidecar.grpc import wire
from pdp.sidecar.grpc.status import RequestInvalid, Unauthenticated, abort, to_status
from pdp.sidecar.service import CheckItem, Service
from pdp.tenancy import OPERATOR, Caller

# Who an admin call is made by (the verified token's `sub` and tenant), set by the admin
# interceptor for the duration of the call; an anonymous, tenantless caller under --insecure-admin.
ADMIN_CALLER: contextvars.ContextVar[Caller] = contextvars.ContextVar(
    "admin_caller", default=OPERATOR
)


# ---- servicers -----------------------------------------------------------------------------

SubjectFromToken = Callable[[str], Entity]
TRUSTED, TOKEN_ONLY = "trusted", "token-only"
SUBJECT_MODES = (TRUSTED, TOKEN_ONLY)
_CONVERSION_CACHE_SIZE = 50_000
# The subjects a batch's tokens proved, or why a token proved none: each verified once a call.
_Tokens = dict[str, Entity | Exception]


class AuthorizerServicer(pdp_pb2_grpc.AuthorizerServicer):
    """Check and BatchCheck: the hot path. Per call: convert, decide, audit, count, convert.
    LookupResources, LookupSubjects and PlanResources: the same conversions, other use cases."""

    def __init__(
        self,
        service: Service,
        limits: Limits = DEFAULT_LIMITS,
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
        self._requests: dict[bytes, CheckItem] = {}
        self._templates = wire.ResponseTemplates()

    def _entity(self, msg: pdp_pb2.Entity, path: str) -> Entity:
        # Walking a Struct from Python costs ~15 us; the same subjects and resources come back
        # call after call, so convert each distinct message once. Bytes are the exact key (any
        # faithful encoding: see _convert_cached).
        key = msg.SerializeToString()
        entity = self._entities.get(key)
        if entity is None:
            entity = wire.entity(msg, path, self._limits)  # raises before anything is cached
            if len(self._entities) >= _CONVERSION_CACHE_SIZE:
                self._entities.clear()  # crude but bounded; a miss only costs a conversion
            self._entities[key] = entity
        return entity

    def _context(self, msg: struct_pb2.Struct, path: str) -> Mapping[str, Value]:
        if not msg.fields:
            return EMPTY
        key = msg.SerializeToString()
        context = self._contexts.get(key)
        if context is None:
            context = wire.attrs(msg, path, self._limits)
            if len(self._contexts) >= _CONVERSION_CACHE_SIZE:
                self._contexts.clear()
            self._contexts[key] = context
        return context

    def _request(
        self, msg: pdp_pb2.CheckRequest, path: str, tokens: _Tokens | None = None
    ) -> CheckItem:
        """A CheckRequest as a check; `tokens`: the subjects of tokens this call verified."""
        if msg.WhichOneof("principal") != "subject" or self._token_only:
            return self._convert(msg, path, tokens)
        # A request with an explicit subject is a pure function of its bytes: convert each
        # distinct one once (a token-bearing request is never cached: it must be verified).
        return self._convert_cached(msg, msg.SerializeToString(), path)

    def _convert_cached(self, msg: pdp_pb2.CheckRequest, key: bytes, path: str) -> CheckItem:
        # `key`: the message's bytes. Any faithful encoding keys correctly, so not the costlier
        # deterministic one: equal messages whose map entries come out in another order cost
        # one more conversion, never a wrong answer.
        converted = self._requests.get(key)
        if converted is None:
            converted = self._convert(msg, path, None)  # raises before anything is cached
            if len(self._requests) >= _CONVERSION_CACHE_SIZE:
                self._requests.clear()
            self._requests[key] = converted
        return converted

    def _convert(self, msg: pdp_pb2.CheckRequest, path: str, tokens: _Tokens | None) -> CheckItem:
        return CheckItem(
            Request(
                self._principal(msg, path, tokens),
                wire.name(msg.action, f"{path}action", self._limits),
                self._entity(msg.resource, f"{path}resource"),
                self._context(msg.context, f"{path}context"),
            ),
            msg.explain,
            msg.min_tuple_revision,
        )

    def _principal(
        self,
        msg: pdp_pb2.CheckRequest | pdp_pb2.LookupResourcesRequest | pdp_pb2.PlanResourcesRequest,
        path: str,
        tokens: _Tokens | None = None,
    ) -> Entity:
        """The subject of a request: given (unless token-only), or proved by its subject_token."""
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
            # consulted, so a revoked or expired token can never reach a cached decision. A batch
            # verifies each distinct token once: it is one call.
            token = msg.subject_token
            if tokens is None:
                return self._subject_from_token(token)
            proved = tokens.get(token)
            if proved is None:
                try:
                    proved = self._subject_from_token(token)
                except Exception as exc:  # every item with this token fails alike
                    proved = exc
                tokens[token] = proved
            if isinstance(proved, Exception):
                raise proved
            subject = proved
        else:
            raise RequestInvalid(f"{path}subject", "is required (or subject_token)")
        return subject

    def Check(
        self, request: pdp_pb2.CheckRequest, context: grpc.ServicerContext
    ) -> pdp_pb2.CheckResponse:
        try:
            req = self._request(request, "").request
        except Exception as exc:
            abort(context, exc)
        dec, decision_id = self._service.check(
            req,
            explain=request.explain,
            min_tuple_revision=request.min_tuple_revision,
            metadata=context.invocation_metadata,
        )
        out = pdp_pb2.CheckResponse()
        wire.fill(out, dec, decision_id)
        return out

    def BatchCheck(
        self, request: pdp_pb2.BatchCheckRequest, context: grpc.ServicerContext
    ) -> pdp_pb2.BatchCheckResponse:
        """Each item converted once, decided on one snapshot with what the batch shares done
        once (pdp.sidecar.service.Service.check_batch), answered in one pass over the results.
        An item that cannot be converted is answered with its error and never decided."""
        items = request.items
        try:
            if len(items) > self._limits.max_batch:
                raise RequestInvalid(
                    "items",
                    f"{len(items)} items exceed the batch limit of {self._limits.max_batch}",
                )
            correlation_ids, checks, failed = self._checks(items)
            _unique(correlation_ids)  # before anything is decided
        except Exception as exc:
            abort(context, exc)
        decisions, decision_ids = self._service.check_batch(checks, context.invocation_metadata)
        out = pdp_pb2.BatchCheckResponse()
        self._templates.fill_batch(out.results, correlation_ids, decisions, decision_ids, failed)
        return out

    def _checks(self, items: Any) -> tuple[list[str], list[CheckItem], dict[int, tuple[int, str]]]:
        """One pass over a batch's items: their correlation ids; the checks of those that convert;
        the (code, message) of those that do not, by index, messages naming the field from the
        batch's root."""
        correlation_ids: list[str] = []
        checks: list[CheckItem] = []
        failed: dict[int, tuple[int, str]] = {}
        add_id, add_check = correlation_ids.append, checks.append
        cached = self._requests
        tokens: _Tokens = {}
        explicit = not self._token_only
        for i, item in enumerate(items):
            add_id(item.correlation_id)
            msg = item.request
            try:
                if explicit and msg.WhichOneof("principal") == "subject":
                    key = msg.SerializeToString()
                    converted = cached.get(key)
                    if converted is None:
                        converted = self._convert_cached(msg, key, "")
                else:
                    converted = self._convert(msg, "", tokens)
            except Exception as exc:
                code, message = to_status(exc)
                if isinstance(exc, RequestInvalid):  # name the field from the batch's root
                    message = f"items[{i}].request.{message}"
                failed[i] = (code.value[0], message)
                continue
            add_check(converted)
        return correlation_ids, checks, failed

    def Echo(
        self, request: pdp_pb2.EchoRequest, context: grpc.ServicerContext
    ) -> pdp_pb2.EchoResponse:
        return pdp_pb2.EchoResponse(payload=request.payload)

    def LookupResources(
        self, request: pdp_pb2.LookupResourcesRequest, context: grpc.ServicerContext
    ) -> Iterator[pdp_pb2.LookupResourcesResponse]:
        limits = self._limits
        try:
            subject = self._principal(request, "")
            action = wire.name(request.action, "action", limits)
            resource_type = wire.name(request.resource_type, "resource_type", limits)
            ctx = self._context(request.context, "context")
            after = _cursor_after(request.cursor)
        except Exception as exc:
            abort(context, exc)
        found = self._service.lookup_resources(
            subject,
            action,
            resource_type,
            ctx,
            after=after,
            min_tuple_revision=request.min_tuple_revision,
        )
        question = {
            "subject": f"{subject.type}:{subject.id}",
            "action": action,
            "resource_type": resource_type,
        }
        Response = pdp_pb2.LookupResourcesResponse
        yield from self._listed(
            found,
            request.limit,
            after,
            (audit.LOOKUP_RESOURCES, question),
            lambda rid: Response(
                resource_id=rid, tuple_revision=found.tuple_revision, cursor=_cursor(rid)
            ),
            Response,
        )

    def LookupSubjects(
        self, request: pdp_pb2.LookupSubjectsRequest, context: grpc.ServicerContext
    ) -> Iterator[pdp_pb2.LookupSubjectsResponse]:
        limits = self._limits
        try:
            resource = self._entity(request.resource, "resource")
            action = wire.name(request.action, "action", limits)
            subject_type = wire.name(request.subject_type, "subject_type", limits)
            ctx = self._context(request.context, "context")
            after = _cursor_after(request.cursor)
        except Exception as exc:
            abort(context, exc)
        found = self._service.lookup_subjects(
            resource,
            action,
            subject_type,
            ctx,
            after=after,
            min_tuple_revision=request.min_tuple_revision,
        )
        question = {
            "resource": f"{resource.type}:{resource.id}",
            "action": action,
            "subject_type": subject_type,
        }
        Response = pdp_pb2.LookupSubjectsResponse

        def item(sid: str) -> pdp_pb2.LookupSubjectsResponse:
            out = Response(subject_id=sid, tuple_revision=found.tuple_revision, cursor=_cursor(sid))
            if sid == WILDCARD:
                out.excluded_subject_ids.extend(found.excluded)
            return out

        yield from self._listed(
            found, request.limit, after, (audit.LOOKUP_SUBJECTS, question), item, Response
        )

    def PlanResources(
        self, request: pdp_pb2.PlanResourcesRequest, context: grpc.ServicerContext
    ) -> pdp_pb2.PlanResourcesResponse:
        limits = self._limits
        try:
            subject = self._principal(request, "")
            action = wire.name(request.action, "action", limits)
            resource_type = wire.name(request.resource_type, "resource_type", limits)
            ctx = self._context(request.context, "context")
            answer = self._service.plan_resources(
                subject,
                action,
                resource_type,
                ctx,
                min_tuple_revision=request.min_tuple_revision,
            )
            return pdp_pb2.PlanResourcesResponse(
                kind=wire.plan_kind(answer.plan.kind),
                filter=wire.filter_message(answer.plan.filter),
                tuple_revision=answer.tuple_revision,
                bundle_revision=answer.bundle_revision,
                notes=answer.notes,
            )
        except Exception as exc:  # a filter the wire cannot carry too: INTERNAL, never a plan
            abort(context, exc)

    def _listed(
        self,
        found: Lookup,
        limit: int,
        after: str,
        audited: tuple[str, dict[str, str]],
        item: Callable[[str], Any],
        done: Callable[..., Any],
    ) -> Iterator[Any]:
        """A lookup's stream: its ids (at most `limit`, 0 = all), the audit event, then the
        `done` message with the cursor and why the answer is not whole."""
        sent, last = 0, after
        for found_id in found:
            if limit and sent == limit:
                break
            sent, last = sent + 1, found_id
            yield item(found_id)
        self._service.lookup_done(*audited, found, sent)
        yield done(
            done=True,
            tuple_revision=found.tuple_revision,
            cursor=_cursor(last) if last else "",
            incomplete=found.incomplete,
        )


class AdminServicer(pdp_pb2_grpc.AdminServicer):
    """Tuple administration, bundle status and the audit stream."""

    def __init__(self, service: Service, limits: Limits = DEFAULT_LIMITS) -> None:
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
        return [wire.relation_tuple(m, f"{path}[{i}]", self._limits) for i, m in enumerate(msgs)]

    def WriteTuples(
        self, request: pdp_pb2.WriteTuplesRequest, context: grpc.ServicerContext
    ) -> pdp_pb2.WriteTuplesResponse:
        try:
            writes = self._tuples(request.writes, "writes")
            deletes = self._tuples(request.deletes, "deletes")
            revision = self._service.writer.write(writes, deletes, ADMIN_CALLER.get())
        except Exception as exc:
            abort(context, exc)
        return pdp_pb2.WriteTuplesResponse(tuple_revision=revision)

    def DeleteTuples(
        self, request: pdp_pb2.DeleteTuplesRequest, context: grpc.ServicerContext
    ) -> pdp_pb2.WriteTuplesResponse:
        try:
            deletes = self._tuples(request.tuples, "tuples")
            revision = self._service.writer.write([], deletes, ADMIN_CALLER.get())
        except Exception as exc:
            abort(context, exc)
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
            abort(context, exc)
        # the list is sorted, so a page token is simply the last tuple handed out
        start = bisect.bisect_right(tuples, after) if after is not None else 0
        page = tuples[start : start + size]
        token = ""
        if start + size < len(tuples):
            token = base64.urlsafe_b64encode(str(page[-1]).encode()).decode()
        return pdp_pb2.ReadTuplesResponse(
            tuples=[wire.tuple_message(t) for t in page],
            next_page_token=token,
            tuple_revision=revision,
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
            out.loaded_at.CopyFrom(wire.timestamp(st.loaded_at))
        out.store = st.store
        out.slice = st.slice
        if st.follower is not None:
            out.store_connected = st.follower.connected
            out.store_revision = st.follower.head
            out.store_seconds_since_contact = time.monotonic() - st.follower.last_contact
            out.store_error = st.follower.error
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
                    rejected_at=wire.timestamp(st.rejected.at),
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
                effect=wire.EFFECT_BACK.get(request.decision),
                subject=request.subject,
                resource_type=request.resource_type,
                rule_id=request.rule_id,
            )
            sub = hub.subscribe(flt)
        except Exception as exc:
            abort(context, exc)
        with self._streams_lock:
            self._streams.add(sub)
        # a cancelled or disconnected caller closes its queue, which ends the loop below
        context.add_callback(sub.close)
        mask = hub.settings.mask
        # every stream sends the same message for an event: build it once for all of them
        render = hub.renderer("grpc", lambda ev: wire.audit_event_pb(ev, mask))
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

    def Watch(
        self, request: pdp_pb2.WatchRequest, context: grpc.ServicerContext
    ) -> Iterator[pdp_pb2.WatchResponse]:
        try:
            after = request.after_revision if request.HasField("after_revision") else None
            if after is not None and after < 0:
                raise RequestInvalid("after_revision", "must be 0 or more")
            types = frozenset(
                wire.name(t, f"object_types[{i}]", self._limits)
                for i, t in enumerate(request.object_types)
            )
            changes = self._service.watch(
                ADMIN_CALLER.get(),
                after,
                types,
                lambda: self._stopping.is_set() or not context.is_active(),
            )
            for change in changes:
                yield pdp_pb2.WatchResponse(
                    revision=change.revision,
                    writes=[wire.tuple_message(t) for t in change.writes],
                    deletes=[wire.tuple_message(t) for t in change.deletes],
                )
        except Exception as exc:
            abort(context, exc)

    def shutdown(self) -> None:
        """End every audit stream, so a graceful stop need not wait for their callers."""
        self._stopping.set()
        with self._streams_lock:
            streams = list(self._streams)
        for sub in streams:
            sub.close()


def _unique(correlation_ids: list[str]) -> None:
    """Results are in order, but a caller keying them by id must not be misled: a non-empty
    correlation id may appear once."""
    named = [cid for cid in correlation_ids if cid]
    if len(set(named)) == len(named):
        return
    seen: set[str] = set()
    for i, cid in enumerate(correlation_ids):
        if cid in seen:
            raise RequestInvalid(f"items[{i}].correlation_id", f"duplicate `{cid}`")
        if cid:
            seen.add(cid)


def _page_after(token: str) -> RelationTuple | None:
    if not token:
        return None
    try:
        return RelationTuple.parse(base64.urlsafe_b64decode(token.encode()).decode())
    except ValueError as exc:
        raise RequestInvalid("page_token", "is not a token this server handed out") from exc


def _cursor(last_id: str) -> str:
    """Opaque to callers: where a lookup resumes (after this id, in id order)."""
    return base64.urlsafe_b64encode(last_id.encode()).decode()


def _cursor_after(cursor: str) -> str:
    if not cursor:
        return ""
    try:
        after = base64.urlsafe_b64decode(cursor.encode()).decode()
    except (ValueError, UnicodeError):
        raise RequestInvalid("cursor", "is not a cursor this sidecar sent") from None
    if not (is_id(after) or after == WILDCARD):
        raise RequestInvalid("cursor", "is not a cursor this sidecar sent")
    return after
