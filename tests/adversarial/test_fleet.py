"""A fleet: three real `pdp serve` processes on one real PostgreSQL.

What an attacker (or bad luck) tries: read a revoked grant at another sidecar, race writers at
every sidecar so a follower skips a change, kill a sidecar or the database mid-write, take the
store away and hope a write is acknowledged that was never committed.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import psycopg
import pytest

from pdp._proto.pdp.v1 import pdp_pb2
from pdp.tokens.admin_cli import create_client
from tests.postgres import Postgres, running_postgres

from .saas import document, user
from .serve import Served, ServeFactory, code_of, wait_for


@dataclass
class Fleet:
    pg: Postgres
    url: str
    factory: ServeFactory
    bundle: Path
    root: Path

    def sidecar(self, name: str, *args: str) -> Served:
        return self.factory.start(
            self.bundle,
            data_dir=self.root / f"data-{name}",
            args=["--store", self.url, "--consistency-wait", "5", *args],
        )

    def token(self, served: Served, *, tenant: str, scopes: tuple[str, ...]) -> str:
        """A token of a new client which, like all the fleet's token state, lives in PostgreSQL:
        --token-db is not read under a postgresql store."""
        client_id = f"client-{uuid.uuid4().hex[:8]}"
        secret = create_client(self.url, client_id, tenant=tenant, scopes=scopes)
        return served.token(client_id, secret)

    def operator_token(self, served: Served) -> str:
        """An operator's: bound to no tenant, every admin scope."""
        return self.token(served, tenant="*", scopes=("admin",))

    def log(self) -> list[tuple[int, str, bool]]:
        """The store's own changelog, read directly."""
        with psycopg.connect(self.url) as conn:
            rows = conn.execute(
                "SELECT revision, tuple, present FROM pdp_changes ORDER BY revision, seq"
            ).fetchall()
        return [(int(r), t, bool(p)) for r, t, p in rows]


@pytest.fixture
def fleet(pdp_serve: ServeFactory, saas_bundle: Path, tmp_path: Path) -> Iterator[Fleet]:
    with running_postgres() as pg:
        database = f"fleet_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(pg.dsn, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{database}"')
        url = pg.dsn.rsplit("/", 1)[0] + f"/{database}"
        yield Fleet(pg, url, pdp_serve, saas_bundle, tmp_path)
        pdp_serve.close()  # every sidecar stops before its database does


def _grant(doc: str, who: str) -> str:
    return f"document:{doc}#viewer@user:{who}"


def _reads(served: Served, who: str, doc: str, **kw: object) -> pdp_pb2.CheckResponse:
    return served.check(user(who), "read", document(doc), **kw)


def test_a_write_at_one_sidecar_is_seen_at_every_other_and_so_is_its_revocation(
    fleet: Fleet,
) -> None:
    a, b, c = fleet.sidecar("a"), fleet.sidecar("b"), fleet.sidecar("c")
    token = fleet.operator_token(a)
    assert _reads(b, "zed", "f1").decision == pdp_pb2.EFFECT_DENY
    granted = a.write(token, writes=[_grant("f1", "zed")])
    for other in (b, c):  # the revision is a fleet-wide consistency token
        fresh = _reads(other, "zed", "f1", min_tuple_revision=granted)
        assert (fresh.decision, fresh.tuple_revision) == (pdp_pb2.EFFECT_ALLOW, granted)
    revoked = c.write(token, deletes=[_grant("f1", "zed")])
    for other in (a, b):
        after = _reads(other, "zed", "f1", min_tuple_revision=revoked)
        assert after.decision == pdp_pb2.EFFECT_DENY
    # and without a token, every sidecar gets there on its own (the change feed, not a poll)
    wait_for(lambda: all(_reads(s, "zed", "f1").tuple_revision >= revoked for s in (a, b, c)))
    # a newcomer boots from the store's snapshot, not from the bundle alone
    d = fleet.sidecar("d")
    assert _reads(d, "zed", "f1").tuple_revision == revoked
    status = d.status(token)
    assert (status.store_connected, status.store_revision) == (True, revoked)
    assert status.store.startswith("postgresql") or "host=" in status.store


def test_concurrent_writers_at_every_sidecar_leave_every_follower_with_the_log(
    fleet: Fleet,
) -> None:
    sidecars = [fleet.sidecar(n) for n in "abc"]
    token = fleet.operator_token(sidecars[0])
    acked: list[tuple[int, list[str], list[str]]] = []
    lock = threading.Lock()

    def writer(k: int) -> None:
        served = sidecars[k]
        for i in range(25):
            # the same tuple written and deleted by different sidecars: order decides the state
            shared = _grant(f"race-{i % 5}", "eve")
            writes, deletes = ([shared], []) if (i + k) % 2 else ([], [shared])
            writes = [*writes, _grant(f"w{k}-{i}", "eve")]
            revision = served.write(token, writes=writes, deletes=deletes)
            with lock:
                acked.append((revision, writes, deletes))

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    log = fleet.log()
    head = max(r for r, _, _ in log)
    assert sorted(r for r, _, _ in acked) == list(range(1, head + 1))  # one revision per ack
    # the state a follower must reach: the log folded in revision order
    state: dict[str, bool] = {}
    for _, text, present in log:
        state[text] = present
    expected = sorted(t for t, present in state.items() if present)
    for served in sidecars:
        wait_for(lambda s=served: s.status(token).tuple_revision == head)
        resp = served.admin(token).ReadTuples(
            pdp_pb2.ReadTuplesRequest(subject_id="eve", page_size=1000)
        )
        got = sorted(
            f"{t.object_type}:{t.object_id}#{t.relation}@{t.subject_type}:{t.subject_id}"
            for t in resp.tuples
        )
        assert got == expected


def test_kill_9_of_a_sidecar_mid_write_loses_no_acknowledged_write(fleet: Fleet) -> None:
    a, b = fleet.sidecar("a"), fleet.sidecar("b")
    token = fleet.operator_token(a)
    acked: list[tuple[int, str]] = []
    stop = threading.Event()

    def writer() -> None:
        i = 0
        while not stop.is_set():
            t = _grant(f"k{i}", "kim")
            try:
                acked.append((a.write(token, writes=[t]), t))
            except (grpc.RpcError, ValueError):
                # the kill: this write was never acknowledged (ValueError: the channel was
                # closed after the process died, before this call started)
                return
            i += 1

    thread = threading.Thread(target=writer)
    thread.start()
    wait_for(lambda: len(acked) >= 20)
    a.kill()
    stop.set()
    thread.join(30)
    last = max(r for r, _ in acked)
    assert _reads(b, "kim", "k0", min_tuple_revision=last).decision == pdp_pb2.EFFECT_ALLOW
    committed = {t for _, t, present in fleet.log() if present}
    assert {t for _, t in acked} <= committed
    again = fleet.sidecar("a")  # the same data directory and store
    for _, t in acked:
        doc = t.split("#")[0].split(":")[1]
        assert _reads(again, "kim", doc).decision == pdp_pb2.EFFECT_ALLOW


def test_the_store_down_and_back(fleet: Fleet) -> None:
    a, b = fleet.sidecar("a"), fleet.sidecar("b")
    token = fleet.operator_token(a)
    before = a.write(token, writes=[_grant("s1", "sam")])
    assert _reads(b, "sam", "s1", min_tuple_revision=before).decision == pdp_pb2.EFFECT_ALLOW
    fleet.pg.kill()  # kill -9 of the postmaster
    # decisions go on from memory, at the last revision
    assert _reads(a, "sam", "s1").decision == pdp_pb2.EFFECT_ALLOW
    assert _reads(b, "sam", "s1").decision == pdp_pb2.EFFECT_ALLOW
    # a write is refused, never acknowledged without a commit
    assert code_of(lambda: a.write(token, writes=[_grant("s2", "sam")])) == (
        grpc.StatusCode.UNAVAILABLE
    )
    # a check demanding a newer revision than anyone has is denied, not answered from old data
    stale = _reads(b, "sam", "s1", min_tuple_revision=before + 1)
    assert (stale.decision, stale.reason) == (pdp_pb2.EFFECT_DENY, pdp_pb2.REASON_STALE_TUPLES)
    wait_for(lambda: not b.status(token).store_connected)
    down = b.status(token)
    # the operator sees why and for how long
    assert down.tuple_revision == before
    assert down.store_error
    assert down.store_seconds_since_contact > 0
    fleet.pg.start()
    # back: writes commit again and the other sidecar catches up by itself
    after = wait_for(lambda: _try_write(a, token, _grant("s3", "sam")), timeout=30)
    assert after > before
    wait_for(lambda: _reads(b, "sam", "s3").decision == pdp_pb2.EFFECT_ALLOW, timeout=30)
    assert b.status(token).store_connected
    # the refused write is absent everywhere
    assert _reads(b, "sam", "s2").decision == pdp_pb2.EFFECT_DENY
    assert _grant("s2", "sam") not in {t for _, t, _ in fleet.log()}


def _try_write(served: Served, token: str, t: str) -> int:
    """The revision, or 0 while the store is still coming back."""
    try:
        return served.write(token, writes=[t])
    except grpc.RpcError as exc:
        if exc.code() == grpc.StatusCode.UNAVAILABLE:
            return 0
        raise


def test_watch_streams_every_sidecars_changes_in_order_and_resumes(fleet: Fleet) -> None:
    a, b = fleet.sidecar("a"), fleet.sidecar("b")
    token = fleet.operator_token(a)
    written = [
        a.write(token, writes=[_grant("w1", "wes")]),
        b.write(token, writes=["folder:acme/f1#viewer@user:acme/wes"]),
        a.write(token, deletes=[_grant("w1", "wes")]),
        b.write(token, writes=[_grant("w2", "wes")]),
    ]
    watched = _watch(b, token, pdp_pb2.WatchRequest(after_revision=0), 4)
    assert [r.revision for r in watched] == written  # both sidecars' writes, in order
    assert [len(r.deletes) for r in watched] == [0, 0, 1, 0]
    # resumed after the second: exactly the rest, nothing twice
    resumed = _watch(a, token, pdp_pb2.WatchRequest(after_revision=written[1]), 2)
    assert [r.revision for r in resumed] == written[2:]
    # filtered to folders: only the folder grant
    folders = _watch(a, token, pdp_pb2.WatchRequest(after_revision=0, object_types=["folder"]), 1)
    assert [r.revision for r in folders] == [written[1]]
    # a tenant-bound credential sees only its tenant's tuples (the documents above are in none)
    acme = fleet.token(a, tenant="acme", scopes=("tuples:read",))
    mine = _watch(a, acme, pdp_pb2.WatchRequest(after_revision=0), 1)
    assert [r.revision for r in mine] == [written[1]]
    # from now on (no revision): nothing committed before the call, then what commits after
    live: list[pdp_pb2.WatchResponse] = []
    stream = a.admin(token).Watch(pdp_pb2.WatchRequest())
    reader = threading.Thread(target=lambda: live.extend(_first(stream, 1)))
    reader.start()
    after_call: list[int] = []

    def write_until_seen() -> bool:
        # the server reads "now" when the stream starts: keep writing until one arrives
        after_call.append(b.write(token, writes=[_grant(f"live-{len(after_call)}", "wes")]))
        return bool(live)

    wait_for(write_until_seen)
    reader.join(15)
    stream.cancel()
    assert live[0].revision in after_call


def _first(stream: Iterator[pdp_pb2.WatchResponse], n: int) -> list[pdp_pb2.WatchResponse]:
    out = []
    for response in stream:
        out.append(response)
        if len(out) == n:
            break
    return out


def _watch(
    served: Served, token: str, request: pdp_pb2.WatchRequest, n: int
) -> list[pdp_pb2.WatchResponse]:
    stream = served.admin(token).Watch(request, timeout=15)
    try:
        return _first(stream, n)
    finally:
        stream.cancel()


def test_a_sliced_sidecar_answers_only_from_what_it_holds(fleet: Fleet) -> None:
    full = fleet.sidecar("full")
    acme = fleet.sidecar("acme", "--slice-tenants", "acme")
    token = fleet.operator_token(full)
    revision = full.write(
        token,
        writes=[
            "document:acme/d1#viewer@user:acme/amy",
            "document:globex/d1#viewer@user:globex/gil",
            # a hop into another tenant, as an operator's credential may write: amy sees acme/d3
            # through globex's folder, whose tuples the acme slice does not hold
            "folder:globex/f1#viewer@user:acme/amy",
            "document:acme/d3#parent@folder:globex/f1",
        ],
    )

    def reads(served: Served, who: str, doc: str, tenant: str) -> pdp_pb2.CheckResponse:
        return served.check(
            user(who, tenant), "read", document(doc, tenant), min_tuple_revision=revision
        )

    assert reads(acme, "acme/amy", "acme/d1", "acme").decision == pdp_pb2.EFFECT_ALLOW
    # another tenant's resource: a deny that says why, where the whole sidecar allows
    assert reads(full, "globex/gil", "globex/d1", "globex").decision == pdp_pb2.EFFECT_ALLOW
    outside = reads(acme, "globex/gil", "globex/d1", "globex")
    assert (outside.decision, outside.reason) == (pdp_pb2.EFFECT_DENY, pdp_pb2.REASON_OUTSIDE_SLICE)
    # a walk out of the slice is never answered from the missing folder
    assert reads(full, "acme/amy", "acme/d3", "acme").decision == pdp_pb2.EFFECT_ALLOW
    hop = reads(acme, "acme/amy", "acme/d3", "acme")
    assert hop.decision == pdp_pb2.EFFECT_DENY
    assert any("folder:globex/f1" in e and "slice" in e for e in hop.errors)
    # it says what it holds, and refuses a read it could only answer in part
    assert "tenants acme" in acme.status(token).slice
    assert full.status(token).slice == "every tuple"
    unfiltered = pdp_pb2.ReadTuplesRequest(subject_id="amy", page_size=10)
    assert code_of(lambda: acme.admin(token).ReadTuples(unfiltered)) == (
        grpc.StatusCode.INVALID_ARGUMENT
    )
    assert code_of(lambda: full.admin(token).ReadTuples(unfiltered)) == grpc.StatusCode.OK
