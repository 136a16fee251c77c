"""The decode guard: a request that cannot be decoded is answered INVALID_ARGUMENT, for every service
on the port, and logged as one rate-limited line instead of grpcio's INTERNAL and a traceback each.

grpcio calls a handler's request deserializer itself and, when it raises, logs the exception and
answers INTERNAL. The guard wraps each handler's deserializer so that a failure yields a marker,
and the handler's behaviour so that the marker is refused before any of our code sees it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc

log = logging.getLogger(__name__)


class _Undecodable:
    """The marker a guarded deserializer returns instead of raising."""

    __slots__ = ()


UNDECODABLE: Any = _Undecodable()


class RateLimitedLog:
    """At most one line per `interval` seconds; the next line says how many were held back."""

    def __init__(self, logger: logging.Logger, interval: float = 10.0) -> None:
        self._log = logger
        self._interval = interval
        self._lock = threading.Lock()
        self._next = 0.0
        self._suppressed = 0

    def warning(self, message: str, *args: object, extra: dict[str, object] | None = None) -> bool:
        """Log the line, or count it; True if it was logged."""
        now = time.monotonic()
        with self._lock:
            if now < self._next:
                self._suppressed += 1
                return False
            self._next = now + self._interval
            suppressed, self._suppressed = self._suppressed, 0
        if suppressed:
            message += " (%d more like it not logged)"
            args = (*args, suppressed)
        self._log.warning(message, *args, extra=extra)
        return True


def _type_name(deserializer: Callable[[bytes], Any]) -> str:
    """`pdp.v1.CheckRequest` for `CheckRequest.FromString`; a generic phrase otherwise."""
    owner = getattr(deserializer, "__self__", None)
    descriptor = getattr(owner, "DESCRIPTOR", None)
    name = getattr(descriptor, "full_name", None)
    return name if isinstance(name, str) else "the method's request message"


class DecodeGuard(grpc.ServerInterceptor):  # type: ignore[misc]  # grpc ships no type hints
    """Put it first in the server's interceptors: it wraps what the others return, so garbage
    is refused before authentication or any handler runs, and they still see the metadata."""

    def __init__(self, log_interval: float = 10.0) -> None:
        self._log = RateLimitedLog(log, log_interval)
        # method -> (the handler we were given, its guarded twin): handlers are usually the same
        # object call after call; only registered methods get here, so this stays small
        self._guarded: dict[str, tuple[Any, Any]] = {}

    def intercept_service(
        self, continuation: Callable[[Any], Any], details: grpc.HandlerCallDetails
    ) -> Any:
        handler = continuation(details)
        if handler is None or handler.request_deserializer is None:
            return handler
        method: str = details.method
        cached = self._guarded.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        guarded = self._guard(method, handler)
        if len(self._guarded) < 1024:
            self._guarded[method] = (handler, guarded)
        return guarded

    def _refuse(self, method: str, type_name: str, context: grpc.ServicerContext) -> None:
        peer = context.peer()
        self._log.warning(
            "%s: undecodable request from %s refused",
            method,
            peer,
            extra={"rpc_method": method, "peer": peer},
        )
        context.abort(
            grpc.StatusCode.INVALID_ARGUMENT, f"request: cannot be decoded as {type_name}"
        )

    def _guard(self, method: str, handler: Any) -> Any:
        decode = handler.request_deserializer
        type_name = _type_name(decode)
        refuse = self._refuse

        def deserialize(data: bytes) -> Any:
            try:
                return decode(data)
            except Exception:
                return UNDECODABLE

        kwargs = {
            "request_deserializer": deserialize,
            "response_serializer": handler.response_serializer,
        }
        if handler.request_streaming:
            behavior = handler.stream_stream or handler.stream_unary

            def checked(requests: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
                for request in requests:
                    if request is UNDECODABLE:
                        refuse(method, type_name, context)
                    yield request

            def streamed(requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
                return behavior(checked(requests, context), context)

            if handler.response_streaming:
                return grpc.stream_stream_rpc_method_handler(streamed, **kwargs)
            return grpc.stream_unary_rpc_method_handler(streamed, **kwargs)
        behavior = handler.unary_stream or handler.unary_unary

        def unary(request: Any, context: grpc.ServicerContext) -> Any:
            if request is UNDECODABLE:
                refuse(method, type_name, context)
            return behavior(request, context)

        if handler.response_streaming:
            return grpc.unary_stream_rpc_method_handler(unary, **kwargs)
        return grpc.unary_unary_rpc_method_handler(unary, **kwargs)
