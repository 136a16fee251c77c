"""The asyncio client over grpc.aio: `AsyncClient` has the sync `Client`'s methods, awaited, with
the same results, the same deadlines, retries and fail-closed answers (pdp.client.convert decides
them for both; this module only awaits the calls)."""

# mypy: disallow-untyped-calls=False
# (the generated gRPC stubs carry no annotations)

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

import grpc
import grpc.aio

from pdp._proto.pdp.v1 import pdp_pb2, pdp_pb2_grpc
from pdp.client import convert
from pdp.client.results import Answer, Change, Listed, Planned, Question, Status, TuplePage
from pdp.client.retry import DEFAULT, NEVER, Retry, Tries
from pdp.model import Entity, RelationTuple, Request

log = logging.getLogger("pdp.client")

AsyncAdminToken = str | Callable[[], str | Awaitable[str]] | None


class AsyncClient:
    """One grpc.aio channel to the sidecar; made inside the event loop that uses it. As `Client`,
    except that `admin_token` may also be a coroutine function."""

    def __init__(
        self,
        target: str = "127.0.0.1:50051",
        *,
        timeout: float = 0.5,
        long_timeout: float | None = None,
        metadata: Sequence[tuple[str, str]] = (),
        channel: grpc.aio.Channel | None = None,
        admin_token: AsyncAdminToken = None,
        retry: Retry = DEFAULT,
    ) -> None:
        self._channel = channel or grpc.aio.insecure_channel(
            target, options=convert.CHANNEL_OPTIONS
        )
        self._authz = pdp_pb2_grpc.AuthorizerStub(self._channel)
        self._admin = pdp_pb2_grpc.AdminStub(self._channel)
        self.timeout = timeout
        self.long_timeout = 10 * timeout if long_timeout is None else long_timeout
        self.metadata = tuple(metadata)
        self.retry = retry
        self._admin_token = admin_token

    # ---- decisions: never raise on a failed call

    async def check(
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
        """As Client.check."""
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
            resp = await self._unary(self._authz.Check, req, tries, self.metadata)
        except grpc.RpcError as exc:
            return convert.failed(exc, fail_open, tries.count)
        return convert.answer(resp, tries.count)

    async def batch_check(
        self,
        questions: Iterable[Question | Request | pdp_pb2.CheckRequest],
        *,
        fail_open: bool = False,
        timeout: float | None = None,
    ) -> list[Answer]:
        """As Client.batch_check."""
        req = convert.batch_request(questions)
        tries = Tries(self.retry, self.timeout if timeout is None else timeout)
        try:
            resp = await self._unary(self._authz.BatchCheck, req, tries, self.metadata)
        except grpc.RpcError as exc:
            return [convert.failed(exc, fail_open, tries.count)] * len(req.items)
        return convert.answers(resp, len(req.items), tries.count)

    async def lookup_resources(
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
        """As Client.lookup_resources."""
        who = convert.principal(subject, subject_token)
        req = convert.lookup_resources_request(
            who, action, resource_type, context, limit, cursor, min_tuple_revision
        )
        return await self._listed(self._authz.LookupResources, req, "resource_id", timeout)

    async def lookup_subjects(
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
        """As Client.lookup_subjects."""
        req = convert.lookup_subjects_request(
            resource, action, subject_type, context, limit, cursor, min_tuple_revision
        )
        return await self._listed(self._authz.LookupSubjects, req, "subject_id", timeout)

    async def plan_resources(
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
        """As Client.plan_resources."""
        who = convert.principal(subject, subject_token)
        req = convert.plan_request(who, action, resource_type, context, min_tuple_revision)
        tries = Tries(self.retry, self._long(timeout))
        try:
            resp = await self._unary(self._authz.PlanResources, req, tries, self.metadata)
        except grpc.RpcError as exc:
            return convert.plan_failed(exc, tries.count)
        return convert.planned(resp, tries.count)

    # ---- admin: bearer token, raise pdp.client.errors; writes are never retried

    async def write_tuples(
        self,
        writes: Iterable[RelationTuple] = (),
        deletes: Iterable[RelationTuple] = (),
        *,
        timeout: float | None = None,
    ) -> int:
        """As Client.write_tuples."""
        req = pdp_pb2.WriteTuplesRequest(
            writes=[convert.tuple_message(t) for t in writes],
            deletes=[convert.tuple_message(t) for t in deletes],
        )
        resp = await self._admin_call(self._admin.WriteTuples, req, timeout, write=True)
        return int(resp.tuple_revision)

    async def delete_tuples(
        self, tuples: Iterable[RelationTuple], *, timeout: float | None = None
    ) -> int:
        """As Client.delete_tuples."""
        req = pdp_pb2.DeleteTuplesRequest(tuples=[convert.tuple_message(t) for t in tuples])
        resp = await self._admin_call(self._admin.DeleteTuples, req, timeout, write=True)
        return int(resp.tuple_revision)

    async def read_tuple_page(
        self,
        page_token: str = "",
        *,
        page_size: int = 100,
        timeout: float | None = None,
        **filters: str,
    ) -> TuplePage:
        """As Client.read_tuple_page."""
        req = convert.read_request(filters, page_size, page_token)
        resp = await self._admin_call(self._admin.ReadTuples, req, timeout, write=False)
        return convert.page(resp)

    async def read_tuples(
        self, *, page_size: int = 100, timeout: float | None = None, **filters: str
    ) -> AsyncGenerator[RelationTuple, None]:
        """As Client.read_tuples: `async for t in client.read_tuples(...)`."""
        token = ""
        while True:
            got = await self.read_tuple_page(token, page_size=page_size, timeout=timeout, **filters)
            for t in got.tuples:
                yield t
            if not got.next_page_token:
                return
            token = got.next_page_token

    async def bundle_status(self, *, timeout: float | None = None) -> Status:
        """As Client.bundle_status."""
        req = pdp_pb2.BundleStatusRequest()
        resp = await self._admin_call(self._admin.BundleStatus, req, timeout, write=False)
        return convert.status(resp)

    async def watch(
        self,
        after_revision: int | None = None,
        object_types: Iterable[str] = (),
        *,
        timeout: float | None = None,
    ) -> AsyncGenerator[Change, None]:
        """As Client.watch: `async for change in client.watch(...)`."""
        req = convert.watch_request(after_revision, object_types)
        call = self._admin.Watch(req, timeout=timeout, metadata=await self._admin_metadata())
        try:
            async for resp in call:
                yield convert.change(resp)
        except grpc.RpcError as exc:
            raise convert.admin_error(exc, 1, write=False) from exc
        finally:
            call.cancel()

    # ---- plumbing

    def _long(self, timeout: float | None) -> float:
        return self.long_timeout if timeout is None else timeout

    async def _admin_metadata(self) -> tuple[tuple[str, str], ...]:
        token = self._admin_token
        got = token() if callable(token) else token
        if inspect.isawaitable(got):
            got = await got
        return convert.bearer(self.metadata, got)

    async def _admin_call(
        self, method: Any, request: Any, timeout: float | None, *, write: bool
    ) -> Any:
        tries = Tries(NEVER if write else self.retry, self._long(timeout))
        try:
            return await self._unary(method, request, tries, await self._admin_metadata())
        except grpc.RpcError as exc:
            raise convert.admin_error(exc, tries.count, write=write) from exc

    @staticmethod
    async def _unary(method: Any, request: Any, tries: Tries, metadata: Any) -> Any:
        while True:
            try:
                return await method(request, timeout=tries.start(), metadata=metadata)
            except grpc.RpcError as exc:
                code, _ = convert.status_of(exc)
                pause = tries.pause(code)
                if pause is None:
                    raise
                log.debug("%s after try %d: retrying in %.3fs", code, tries.count, pause)
                await asyncio.sleep(pause)

    async def _listed(
        self, method: Any, request: Any, id_field: str, timeout: float | None
    ) -> Listed:
        # As Client._listed: retried only before the first message.
        tries = Tries(self.retry, self._long(timeout))
        while True:
            lister = convert.Lister(id_field)
            call = method(request, timeout=tries.start(), metadata=self.metadata)
            try:
                async for resp in call:
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
                await asyncio.sleep(pause)
            finally:
                call.cancel()

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
