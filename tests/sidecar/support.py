"""Request builders, token helpers and the one deadline-bounded wait shared by the sidecar tests."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from typing import Any

from pdp._proto.pdp.v1 import pdp_pb2
from pdp.client import check_request, tuple_message
from pdp.model import Entity, RelationTuple
from pdp.sidecar.app import App

ISSUER = "https://auth.sidecar.test"
AUDIENCE = "pdp-sidecar-test"
_clients = itertools.count(1)

ALICE = Entity("user", "alice", {"tenant": "acme", "role": "editor"})
MALLORY = Entity("user", "mallory", {"tenant": "evil", "role": "editor"})


def doc(doc_id: str = "d1", **attrs: Any) -> Entity:
    return Entity("document", doc_id, {"tenant": "acme", **attrs})


def req(
    subject: Entity = ALICE, action: str = "read", resource: Entity | None = None, **kw: Any
) -> pdp_pb2.CheckRequest:
    return check_request(subject, action, resource or doc(), **kw)


def tuple_pb(text: str) -> pdp_pb2.RelationTuple:
    return tuple_message(RelationTuple.parse(text))


def mint(
    app: App,
    *,
    scopes: tuple[str, ...] = (),
    tenant: str = "acme",
    roles: tuple[str, ...] = (),
    subject: str | None = None,
) -> str:
    """An access token from the app's own token service (client credentials, a fresh client)."""
    assert app.tokens is not None, "this app has no token keys"
    service = app.tokens.service
    client_id = f"test-client-{next(_clients)}"
    secret = service.create_client(
        client_id, tenant=tenant, scopes=scopes, roles=roles, subject=subject
    )
    client = service.authenticate_client(client_id, secret, "127.0.0.1")
    return service.client_credentials(client, None).access.token


def bearer(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


class Authed:
    """A stub whose every call carries `authorization: Bearer <token>` metadata."""

    def __init__(self, stub: Any, token: str) -> None:
        self._stub = stub
        self._metadata = bearer(token)

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._stub, name)

        def call(request: Any, **kwargs: Any) -> Any:
            return method(request, metadata=self._metadata, **kwargs)

        return call


def wait_until(cond: Callable[[], object], what: str, timeout: float = 10.0) -> None:
    """Poll `cond` until it holds; fail naming `what` once `timeout` seconds pass.

    Every wait in these tests goes through here: none may wait forever when the thing it waits
    for (a server, a load thread, a subscriber) has died."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)
