"""The blocking client: `Client(target).check(...)`. Decision calls (check, batch_check, the lookups,
plan_resources) never raise on a failed call: they fail closed, saying why. Admin calls raise
pdp.client.errors. Every call has a deadline; only reads and decisions are retried.
"""

# mypy: disallow-untyped-calls=False
# (the generated gRPC stubs carry no annotations)

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from typing import Any

import grpc

from pdp._proto.pdp.v1 import pdp_pb2, pdp_pb2_grpc
from pdp.client import convert
from pdp.client.results import Answer, Change, Listed, Planned, Question, Status, TuplePage
from pdp.client.retry import DEFAULT, NEVER, Retry, Tries
from pdp.model import Entity, RelationTuple, Request

log = logging.getLogger("pdp.client")

AdminToken = str | Callable[[], str] | None


class Client:
    """One channel to the sidecar.

    `timeout` (seconds) is the deadline of a check or batch_check; `long_timeout` (default ten
    times `timeout`) that of a lookup, a plan and an admin call; each call may pass its own.
    `admin_token` is the bearer token admin calls send, or a function returning one, called per
    call (so a refreshed token is used). `retry` paces retries after UNAVAILABLE.
    """

    def __init__(
        self,
        target: str = "127.0.0.1:50051",
        *,
        timeout: float = 0.5,
        long_timeout: float | None = None,
        metadata: Sequence[tuple[str, str]] = (),
        channel: grpc.Channel | None = None,
        admin_token: AdminToken = None,
        retry: Retry = DEFAULT,
    ) -> None:
        self._channel = channel or grpc.insecure_channel(target, options=convert.CHANNEL_OPTIONS)
        self._authz = pdp_pb2_grpc.AuthorizerStub(self._channel)
        self._admin = pdp_pb2_grpc.AdminStub(self._channel)
        self.timeout = timeout
        self.long_timeout = 10 * timeout if long_timeout is None else long_timeout
        self.metadata = tuple(metadata)
        self.retry = retry
        self._admin_token = admin_token

    # ---- decisions: never raise on a failed call

    def check(
        self,
        subject: Entity | str | None = None,
        action: str = "",
        resource: Entity | None = None,
        context: Mapping[str, Any] | None = None,
        *,
        subject_token: str | None = None,
        explain: bool = False,
        min_tuple_revision: int = 0,
        fail_open: bool = False,
        timeout: float | None = None,
    ) -> Answer:
        """May `subject` (an Entity, or `subject_token=`) do `action` on `resource`? On a failed
        call: deny, or allow only if `fail_open` and the sidecar could not be asked."""
        if resource is None:
            raise TypeError("check needs a resource")
        req = convert.check_request(
            subject,
            action,
            resource,
            context,
            subject_token=subject_token,
            explain=explain,
            min_tuple_revision=min_tuple_revision,
        )
        tries = Tries(self.retry, self.timeout if timeout is None else timeout)
        try:
            resp = self._unary(self._authz.Check, req, tries, self.metadata)
        except grpc.RpcError as exc:
            return convert.failed(exc, fail_open, tries.count)
        return convert.answer(resp, tries.count)

    def batch_check(
        self,
        questions: Iterable[Question | Request | pdp_pb2.CheckRequest],
        *,
        fail_open: bool = False,
        timeout: float | None = None,
    ) -> list[Answer]:
        """Answers in the order asked; an item the sidecar refused is a client-side deny."""
        req = convert.batch_request(questions)
        tries = Tries(self.retry, self.timeout if timeout is None else timeout)
        try:
            resp = self._unary(self._authz.BatchCheck, req, tries, self.metadata)
        except grpc.RpcError as exc:
            return [convert.failed(exc, fail_open, tries.count)] * len(req.items)
        return convert.answers(resp, len(req.items), tries.count)

    def lookup_resources(
        self,
        subject: Entity | str | None = None,
        action: str = "",
        resource_type: str = "",
        context: Mapping[str, Any] | None = None,
        *,
        subject_token: str | None = None,
        limit: int = 0,
        cursor: str = "",
        min_tuple_revision: int = 0,
        timeout: float | None = None,
    ) -> Listed:
        """The resources of `resource_type` that `subject` (an Entity, or `subject_token=`) may
        `action`. Fails closed: a failed call lists nothing more and says so."""
        who = convert.principal(subject, subject_token)
        req = convert.lookup_resources_request(
            who, action, resource_type, context, limit, cursor, min_tuple_revision
        )
        return self._listed(self._authz.LookupResources, req, "resource_id", timeout)

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
        req = convert.lookup_subjects_request(
            resource, action, subject_type, context, limit, cursor, min_tuple_revision
        )
        return self._listed(self._authz.LookupSubjects, req, "subject_id", timeout)

    def plan_resources(
        self,
        subject: Entity | str | None = None,
        action: str = "",
        resource_type: str = "",
        context: Mapping[str, Any] | None = None,
        *,
        subject_token: str | None = None,
        min_tuple_revision: int = 0,
        timeout: float | None = None,
    ) -> Planned:
        """The resources of `resource_type` that `subject` (an Entity, or `subject_token=`) may
        `action`, as a filter over their attributes. A failed call is ALWAYS_DENIED with a note."""
        who = convert.principal(subject, subject_token)
        req = convert.plan_request(who, action, resource_type, context, min_tuple_revision)
        tries = Tries(self.retry, self._long(timeout))
        try:
            resp = self._unary(self._authz.PlanResources, req, tries, self.metadata)
        except grpc.RpcError as exc:
            return convert.plan_failed(exc, tries.count)
        return convert.planned(resp, tries.count)

    # ---- admin: bearer token, raise pdp.client.errors; writes are never retried

    def write_tuples(
        self,
        writes: Iterable[RelationTuple] = (),
        deletes: Iterable[RelationTuple] = (),
        *,
        timeout: float | None = None,
    ) -> int:
        """Write and delete in one atomic step; the store revision it committed at. Raises
        OutcomeUnknown when the answer was lost: the write may have committed."""
        req = pdp_pb2.WriteTuplesRequest(
            writes=[convert.tuple_message(t) for t in writes],
            deletes=[convert.tuple_message(t) for t in deletes],
        )
        resp = self._admin_call(self._admin.WriteTuples, req, timeout, write=True)
        return int(resp.tuple_revision)

    def delete_tuples(
        self, tuples: Iterable[RelationTuple], *, timeout: float | None = None
    ) -> int:
        """Delete in one atomic step; as write_tuples."""
        req = pdp_pb2.DeleteTuplesRequest(tuples=[convert.tuple_message(t) for t in tuples])
        resp = self._admin_call(self._admin.DeleteTuples, req, timeout, write=True)
        return int(resp.tuple_revision)

    def read_tuple_page(
        self,
        page_token: str = "",
        *,
        page_size: int = 100,
        timeout: float | None = None,
        **filters: str,
    ) -> TuplePage:
        """One page of the tuples matching `filters` (tuple fields: object_type="document", ...)."""
        req = convert.read_request(filters, page_size, page_token)
        return convert.page(self._admin_call(self._admin.ReadTuples, req, timeout, write=False))

    def read_tuples(
        self, *, page_size: int = 100, timeout: float | None = None, **filters: str
    ) -> Generator[RelationTuple, None, None]:
        """Every tuple matching `filters`, a page at a time (each page its own deadline)."""
        token = ""
        while True:
            got = self.read_tuple_page(token, page_size=page_size, timeout=timeout, **filters)
            yield from got.tuples
            if not got.next_page_token:
                return
            token = got.next_page_token

    def bundle_status(self, *, timeout: float | None = None) -> Status:
        req = pdp_pb2.BundleStatusRequest()
        return convert.status(self._admin_call(self._admin.BundleStatus, req, timeout, write=False))

    def watch(
        self,
        after_revision: int | None = None,
        object_types: Iterable[str] = (),
        *,
        timeout: float | None = None,
    ) -> Generator[Change, None, None]:
        """Tuple changes as they commit, after `after_revision` (None: from the first iteration
        on: the call starts then). A subscription: no deadline unless `timeout` is given, no
        retries. On a failure it raises; resume with the last revision received. Closing the
        iterator cancels the call."""
        req = convert.watch_request(after_revision, object_types)
        call = self._admin.Watch(req, timeout=timeout, metadata=self._admin_metadata())
        try:
            for resp in call:
                yield convert.change(resp)
        except grpc.RpcError as exc:
            raise convert.admin_error(exc, 1, write=False) from exc
        finally:
            call.cancel()

    # ---- plumbing

    def _long(self, timeout: float | None) -> float:
        return self.long_timeout if timeout is None else timeout

    def _admin_metadata(self) -> tuple[tuple[str, str], ...]:
        token = self._admin_token
        return convert.bearer(self.metadata, token() if callable(token) else token)

    def _admin_call(self, method: Any, request: Any, timeout: float | None, *, write: bool) -> Any:
        tries = Tries(NEVER if write else self.retry, self._long(timeout))
        try:
            return self._unary(method, request, tries, self._admin_metadata())
        except grpc.RpcError as exc:
            raise convert.admin_error(exc, tries.count, write=write) from exc

    @staticmethod
    def _unary(method: Any, request: Any, tries: Tries, metadata: Any) -> Any:
        while True:
            try:
                return method(request, timeout=tries.start(), metadata=metadata)
            except grpc.RpcError as exc:
                code, _ = convert.status_of(exc)
                pause = tries.pause(code)
                if pause is None:
                    raise
                log.debug("%s after try %d: retrying in %.3fs", code, tries.count, pause)
                time.sleep(pause)

    def _listed(self, method: Any, request: Any, id_field: str, timeout: float | None) -> Listed:
        # Retried only before the first message: a stream cut later keeps the ids it sent (each
        # was allowed), and resuming at its cursor could mix two tuple revisions in one answer.
        tries = Tries(self.retry, self._long(timeout))
        while True:
            lister = convert.Lister(id_field)
            try:
                for resp in method(request, timeout=tries.start(), metadata=self.metadata):
                    done = lister.feed(resp, tries.count)
                    if done is not None:
                        return done
                return lister.cut_short(convert.CUT_SHORT, "", tries.count)
            except grpc.RpcError as exc:
                code, _ = convert.status_of(exc)
                pause = tries.pause(code) if not lister.ids else None
                if pause is None:
                    return lister.failed(exc, tries.count)
                log.debug("%s after try %d: retrying in %.3fs", code, tries.count, pause)
                time.sleep(pause)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
