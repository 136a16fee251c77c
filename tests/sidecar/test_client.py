"""pdp.client against a real sidecar (the in-process App on a loopback port): deadlines, retries
after UNAVAILABLE only where safe, subject tokens, a bad token told apart from a deny, admin calls
with a bearer token, ReadTuples paging, Watch, and the asyncio client answering as the sync one."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from pdp.client import (
    CLIENT_ERROR,
    Answer,
    AsyncClient,
    Client,
    InvalidArgument,
    OutcomeUnknown,
    PermissionDenied,
    Question,
    Retry,
    Unauthenticated,
    Unavailable,
)
from pdp.engine.plan import ALWAYS_DENIED, FALSE
from pdp.model import Entity, RelationTuple, Request
from pdp.sidecar.app import App

from .support import ALICE, MALLORY, doc, mint, wait_until

CAROL = Entity("user", "carol", {"tenant": "acme", "role": "viewer"})
FORGED = "eyJhbGciOiJub25lIn0.e30."  # alg none: never a token the sidecar accepts
PATIENT = Retry(attempts=10_000, initial_backoff=0.01, max_backoff=0.05)


def t(text: str) -> RelationTuple:
    return RelationTuple.parse(text)


@pytest.fixture
def client(app: App, admin_token: str) -> Any:
    with Client(app.grpc_target, timeout=5, admin_token=admin_token) as c:
        yield c


def test_subject_entity_or_subject_token(app: App, client: Client) -> None:
    client.write_tuples([t("document:d1#viewer@user:carol")])
    token = mint(app, subject="carol")
    by_entity = client.check(CAROL, "read", doc("d1", tenant="other"))
    by_token = client.check(subject_token=token, action="read", resource=doc("d1", tenant="other"))
    assert by_entity.allowed and by_token.allowed
    assert by_token.rule_ids == ("viewers",) and not by_token.failed
    listed = client.lookup_resources(subject_token=token, action="read", resource_type="document")
    assert listed.ids == ("d1",)  # incomplete: tenant_editors allows without tuples
    with pytest.raises(TypeError):
        client.check(CAROL, "read", doc(), subject_token=token)  # both: a caller's bug
    with pytest.raises(TypeError):
        client.check(action="read", resource=doc())  # neither


def test_a_bad_token_is_told_apart_from_a_deny(client: Client) -> None:
    denied = client.check(MALLORY, "read", doc())
    assert (denied.allowed, denied.failed, denied.code) == (False, False, "")
    bad = client.check(subject_token=FORGED, action="read", resource=doc())
    assert (bad.allowed, bad.reason, bad.code) == (False, CLIENT_ERROR, "UNAUTHENTICATED")
    assert bad.failed and bad.error.startswith("UNAUTHENTICATED: ")
    # fail_open is for a sidecar that could not be asked, never for a refused token or request
    opened = client.check(subject_token=FORGED, action="read", resource=doc(), fail_open=True)
    assert (opened.allowed, opened.code) == (False, "UNAUTHENTICATED")
    malformed = client.check(ALICE, "", doc(), fail_open=True)
    assert (malformed.allowed, malformed.code) == (False, "INVALID_ARGUMENT")
    assert bad.attempts == malformed.attempts == 1  # refusals are never retried


def test_batch_check_mixes_entities_tokens_and_refusals(app: App, client: Client) -> None:
    token = mint(app, subject="alice", tenant="acme")
    got = client.batch_check(
        [
            Question(ALICE, "read", doc()),
            Request(MALLORY, "read", doc()),
            Question(None, "read", doc(), subject_token=FORGED),
            Question(None, "read", doc(), subject_token=token),
        ]
    )
    assert [a.allowed for a in got] == [True, False, False, False]
    assert [a.code for a in got] == ["", "", "UNAUTHENTICATED", ""]
    assert not got[3].failed  # decided: a token subject carries `roles`, not `role`


def test_a_deadline_is_honoured_and_fails_closed(make_app: Callable[..., App]) -> None:
    # the sidecar waits up to consistency_wait for a revision it has not reached: a slow answer
    slow = make_app(consistency_wait=5.0)
    with Client(slow.grpc_target, timeout=5) as c:
        assert c.check(ALICE, "read", doc()).allowed  # the channel is up: only the wait is slow
        for deadline in (0.001, 0.05):
            a = c.check(ALICE, "read", doc(), min_tuple_revision=10**9, timeout=deadline)
            assert (a.allowed, a.reason, a.code) == (False, CLIENT_ERROR, "DEADLINE_EXCEEDED")
            assert a.attempts == 1  # the deadline is spent: no retry
        opened = c.check(
            ALICE, "read", doc(), min_tuple_revision=10**9, timeout=0.05, fail_open=True
        )
        assert opened.allowed and opened.code == "DEADLINE_EXCEEDED"  # only when asked for
        planned = c.plan_resources(
            ALICE, "read", "document", min_tuple_revision=10**9, timeout=0.05
        )
        assert (planned.kind, planned.filter, planned.code) == (
            ALWAYS_DENIED,
            FALSE,
            "DEADLINE_EXCEEDED",
        )


def test_unavailable_is_retried_until_the_sidecar_is_back(
    make_app: Callable[..., App], caplog: pytest.LogCaptureFixture
) -> None:
    first = make_app()
    target = first.grpc_target
    first.stop(0.5)
    caplog.set_level(logging.DEBUG, logger="pdp.client")
    with Client(target, timeout=0.3, long_timeout=0.3) as c:
        down = c.check(ALICE, "read", doc())
        assert (down.allowed, down.code) == (False, "UNAVAILABLE") and down.attempts > 1
        listed = c.lookup_resources(ALICE, "read", "document")
        assert (listed.ids, listed.complete, listed.code) == ((), False, "UNAVAILABLE")
        with pytest.raises(Unavailable) as read_down:
            c.bundle_status()
        assert read_down.value.attempts > 1
        # a write is tried once: its fate is the caller's to settle (it may have committed)
        with pytest.raises(OutcomeUnknown) as write_down:
            c.write_tuples([t("document:d1#viewer@user:carol")])
        assert (write_down.value.code, write_down.value.attempts) == ("UNAVAILABLE", 1)

    caplog.clear()
    got: list[Answer] = []
    with Client(target, timeout=30, retry=PATIENT) as c:
        asking = threading.Thread(target=lambda: got.append(c.check(ALICE, "read", doc())))
        asking.start()
        try:
            wait_until(lambda: "retrying" in caplog.text, "a retried check")
            make_app(listen=target)  # the same port, up again
        finally:
            asking.join(30)
        assert not asking.is_alive()
    assert got[0].allowed and got[0].attempts > 1


def test_admin_calls_carry_a_bearer_token(app: App, admin_token: str) -> None:
    with Client(app.grpc_target, timeout=5) as anonymous, pytest.raises(Unauthenticated):
        anonymous.bundle_status()
    reader = mint(app, scopes=("tuples:read",), tenant="*")
    with Client(app.grpc_target, timeout=5, admin_token=reader) as c:
        assert list(c.read_tuples(object_type="group")) == [t("group:eng#member@user:bob")]
        with pytest.raises(PermissionDenied) as refused:
            c.write_tuples([t("document:d1#viewer@user:carol")])
        assert refused.value.code == "PERMISSION_DENIED"
    handed: list[str] = []

    def fresh() -> str:  # called per call: a refreshed token is picked up
        handed.append(admin_token)
        return admin_token

    with Client(app.grpc_target, timeout=5, admin_token=fresh) as c:
        status = c.bundle_status()
        revision = c.write_tuples([t("document:d1#viewer@user:carol")])
        assert c.delete_tuples([t("document:d1#viewer@user:carol")]) > revision
    assert len(handed) == 3
    assert (status.serving, status.name) == (True, "sidecar-test")
    assert status.revision.startswith("1+")  # the bundle's revision and its content hash
    assert status.loaded_at is not None and status.last_rejected is None


def test_write_tuples_refused_and_repeated(client: Client) -> None:
    with pytest.raises(InvalidArgument) as bad:
        client.write_tuples([t("document:d1#nosuch@user:carol")])
    assert bad.value.attempts == 1
    carol = t("document:d1#viewer@user:carol")
    first = client.write_tuples([carol])
    again = client.write_tuples([carol])  # the same write twice: one tuple, a later revision
    assert again > first
    assert list(client.read_tuples(object_id="d1")) == [carol]


def test_read_tuples_pages(client: Client) -> None:
    written = sorted(t(f"document:p{i:02}#viewer@user:u{i}") for i in range(23))
    client.write_tuples(written)
    everything = client.read_tuples(object_type="document", page_size=5)  # 5 pages, lazily
    assert list(everything) == [*written, t("document:plan#viewer@group:eng#member")]
    pages = []
    token = ""
    while True:
        page = client.read_tuple_page(token, page_size=10, relation="viewer", subject_type="user")
        pages.append(page)
        token = page.next_page_token
        if not token:
            break
    assert [len(p.tuples) for p in pages] == [10, 10, 3]
    assert [x for p in pages for x in p.tuples] == written
    assert all(p.tuple_revision == pages[0].tuple_revision > 0 for p in pages)
    with pytest.raises(InvalidArgument):
        client.read_tuple_page("not-a-token")
    with pytest.raises(TypeError):
        client.read_tuple_page(colour="red")


def test_watch_streams_changes_until_closed(client: Client) -> None:
    start = client.bundle_status().tuple_revision
    changes = client.watch(after_revision=start, object_types=["document"])
    client.write_tuples([t("group:eng#member@user:carol")])  # filtered out
    revision = client.write_tuples([t("document:d1#viewer@user:carol")])
    change = next(changes)
    assert (change.revision, change.writes, change.deletes) == (
        revision,
        (t("document:d1#viewer@user:carol"),),
        (),
    )
    changes.close()  # cancels the call


# ---- the asyncio client answers as the sync one

CORPUS: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = [
    ("check", (ALICE, "read", doc()), {}),
    ("check", (MALLORY, "read", doc()), {}),
    ("check", (ALICE, "read", doc(classification="secret")), {"explain": True}),
    ("check", (CAROL, "read", doc("d1", tenant="x")), {}),
    ("check", (ALICE, "", doc()), {}),
    ("check", (), {"subject_token": FORGED, "action": "read", "resource": doc()}),
    ("check", (ALICE, "read", doc()), {"min_tuple_revision": 10**9, "timeout": 0.001}),
    (
        "batch_check",
        ([Question(ALICE, "read", doc()), Question(None, "read", doc(), subject_token=FORGED)],),
        {},
    ),
    ("lookup_resources", (CAROL, "read", "document"), {}),
    ("lookup_resources", (ALICE, "read", "document"), {"limit": 1}),
    (
        "lookup_resources",
        (),
        {"subject_token": FORGED, "action": "read", "resource_type": "document"},
    ),
    ("lookup_subjects", (doc("d1"), "read", "user"), {}),
    ("lookup_subjects", (doc("plan"), "read", "user"), {}),
    ("plan_resources", (ALICE, "read", "document"), {}),
    ("plan_resources", (ALICE, "read", "nosuch"), {}),
    ("bundle_status", (), {}),
    ("read_tuple_page", (), {"page_size": 1}),
]


def _comparable(result: Any) -> Any:
    """A result without what differs between two asks of the same question."""
    if isinstance(result, list):
        return [_comparable(r) for r in result]
    if isinstance(result, Answer):
        return replace(result, decision_id="", cached=False)
    return result


def test_the_async_client_answers_as_the_sync_one(
    app: App, client: Client, admin_token: str
) -> None:
    client.write_tuples([t("document:d1#viewer@user:carol")])
    carol = mint(app, subject="carol")
    corpus = [
        *CORPUS,
        ("check", (), {"subject_token": carol, "action": "read", "resource": doc("d1")}),
        (
            "lookup_resources",
            (),
            {"subject_token": carol, "action": "read", "resource_type": "document"},
        ),
        (
            "plan_resources",
            (),
            {"subject_token": carol, "action": "read", "resource_type": "document"},
        ),
    ]

    async def fresh_token() -> str:  # a coroutine function is awaited per call
        return admin_token

    async def ask_all() -> list[Any]:
        async with AsyncClient(app.grpc_target, timeout=5, admin_token=fresh_token) as aclient:
            out = [await getattr(aclient, name)(*args, **kwargs) for name, args, kwargs in corpus]
            out.append([x async for x in aclient.read_tuples(page_size=1)])
            changes = aclient.watch(after_revision=0)
            out.append(await anext(changes))
            await changes.aclose()
            return out

    sync = [getattr(client, name)(*args, **kwargs) for name, args, kwargs in corpus]
    sync.append(list(client.read_tuples(page_size=1)))
    changes = client.watch(after_revision=0)
    sync.append(next(changes))
    changes.close()
    got = asyncio.run(ask_all())
    status_at = next(i for i, (name, _, _) in enumerate(corpus) if name == "bundle_status")
    got[status_at] = replace(got[status_at], store_seconds_since_contact=0.0)
    sync[status_at] = replace(sync[status_at], store_seconds_since_contact=0.0)
    assert [_comparable(r) for r in got] == [_comparable(r) for r in sync]
    assert sum(isinstance(r, Answer) and r.allowed for r in got) >= 3  # not all denials


def test_the_async_client_writes_once_and_reads_back(app: App, admin_token: str) -> None:
    async def write() -> tuple[int, int, list[RelationTuple]]:
        async with AsyncClient(app.grpc_target, timeout=5, admin_token=admin_token) as c:
            written = await c.write_tuples([t("document:d1#viewer@user:carol")])
            deleted = await c.delete_tuples([t("document:d1#viewer@user:carol")])
            with pytest.raises(InvalidArgument) as bad:
                await c.write_tuples([t("document:d1#nosuch@user:carol")])
            assert bad.value.attempts == 1
            return written, deleted, [x async for x in c.read_tuples(object_id="d1")]

    written, deleted, left = asyncio.run(write())
    assert deleted > written > 0 and left == []


def test_the_async_client_fails_closed_and_raises_as_the_sync_one(
    make_app: Callable[..., App],
) -> None:
    gone = make_app()
    target = gone.grpc_target
    gone.stop(0.5)

    async def down() -> tuple[Answer, Answer]:
        async with AsyncClient(target, timeout=0.3, long_timeout=0.3) as c:
            closed = await c.check(ALICE, "read", doc())
            opened = await c.check(ALICE, "read", doc(), fail_open=True)
            with pytest.raises(OutcomeUnknown):
                await c.write_tuples([t("document:d1#viewer@user:carol")])
            with pytest.raises(Unavailable):
                await c.bundle_status()
            return closed, opened

    closed, opened = asyncio.run(down())
    assert (closed.allowed, closed.code, opened.allowed) == (False, "UNAVAILABLE", True)
    assert closed.attempts > 1
