"""The store's promise, on both backends (an SQLite file and a real PostgreSQL): each write call
commits under the next revision, revisions are dense and in commit order, and a follower reading
the changelog while several writers commit at once never skips or reorders a change."""

from __future__ import annotations

import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from pdp.bundle import bundle_from_text
from pdp.engine import Engine
from pdp.model import RelationTuple
from pdp.sidecar.follower import Follower
from pdp.sidecar.store import Change, Store, StoreUnavailable
from pdp.sidecar.store import sqlite as sqlite_store
from pdp.sidecar.store.postgres import PostgresStore, redacted
from pdp.sidecar.store.sqlite import SqliteStore
from tests.postgres import Postgres, running_postgres

T = RelationTuple.parse
POLICY = """
type user {}
type doc {
  actions read
  relation viewer: user
}
permit r: read on doc when subject has viewer on resource
"""

OpenStore = Callable[[], Store]


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    with running_postgres() as pg:
        yield pg


@pytest.fixture(params=["sqlite", "postgres"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OpenStore]:
    """Opens another connection to one fresh store, as another sidecar would."""
    opened: list[Store] = []
    if request.param == "sqlite":

        def make() -> Store:
            opened.append(SqliteStore(tmp_path / "tuples.db"))
            return opened[-1]

    else:
        pg: Postgres = request.getfixturevalue("postgres")
        database = f"t_{uuid.uuid4().hex}"  # a fresh database per test on the shared cluster

        with psycopg.connect(pg.dsn, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{database}"')
        url = pg.dsn.rsplit("/", 1)[0] + f"/{database}"

        def make() -> Store:
            opened.append(PostgresStore(url))
            return opened[-1]

    try:
        yield make
    finally:
        for store in opened:
            store.close()


def test_changes_come_back_in_order_and_the_snapshot_is_the_latest_state(
    open_store: OpenStore,
) -> None:
    store = open_store()
    assert store.append([T("doc:1#viewer@user:a"), T("doc:2#viewer@user:b")], []) == 1
    assert store.append([], [T("doc:1#viewer@user:a")]) == 2
    other = open_store()  # another sidecar sees the same log
    assert [(c.revision, c.writes, c.deletes) for c in other.changes_since(0, 100)] == [
        (1, (T("doc:1#viewer@user:a"), T("doc:2#viewer@user:b")), ()),
        (2, (), (T("doc:1#viewer@user:a"),)),
    ]
    assert other.changes_since(1, 100)[0].revision == 2
    assert other.changes_since(2, 100) == []
    snap = other.snapshot()
    assert (snap.writes, snap.deletes, snap.revision) == (
        ("doc:2#viewer@user:b",),
        ("doc:1#viewer@user:a",),
        2,
    )
    assert other.head() == 2


def test_concurrent_writers_never_make_a_follower_skip_or_reorder(
    open_store: OpenStore,
) -> None:
    writers, per_writer = 4, 40
    stores = [open_store() for _ in range(writers)]
    reader = open_store()
    seen: list[Change] = []
    done = threading.Event()
    acknowledged: list[tuple[int, RelationTuple]] = []
    ack_lock = threading.Lock()

    def write(k: int) -> None:
        for i in range(per_writer):
            t = T(f"doc:w{k}-{i}#viewer@user:u{i % 3}")
            revision = stores[k].append([t], [])
            with ack_lock:
                acknowledged.append((revision, t))

    def follow() -> None:
        applied = 0
        while True:
            finished = done.is_set()
            for change in reader.changes_since(applied, 7):
                seen.append(change)
                applied = change.revision
            if finished and applied == writers * per_writer:
                return
            reader.wait_for_change(0.01)

    follower = threading.Thread(target=follow)
    follower.start()
    threads = [threading.Thread(target=write, args=(k,)) for k in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    done.set()
    follower.join(60)
    assert not follower.is_alive()
    # dense and in order, as read while the writers raced
    assert [c.revision for c in seen] == list(range(1, writers * per_writer + 1))
    # each acknowledged revision holds exactly what its writer wrote
    by_revision = {c.revision: c.writes for c in seen}
    assert all(by_revision[rev] == (t,) for rev, t in acknowledged)
    assert len(acknowledged) == writers * per_writer


def test_a_follower_applies_other_sidecars_writes_and_waits_for_a_revision(
    open_store: OpenStore,
) -> None:
    mine, theirs = open_store(), open_store()
    engine = Engine()
    engine.load(bundle_from_text(POLICY))
    follower = Follower(mine, engine)
    follower.start_at(mine.snapshot().revision)
    follower.start()
    try:
        revision = theirs.append([T("doc:1#viewer@user:a")], [])
        assert follower.wait_for(revision, 10.0)
        assert engine.tuple_revision == revision
        assert engine.read_tuples() == [T("doc:1#viewer@user:a")]
        assert not follower.wait_for(revision + 1, 0.05)  # nobody wrote it: a bounded wait
        assert follower.state.connected and follower.state.applied == revision
    finally:
        follower.stop()


def test_an_unreachable_postgres_is_unavailable_and_the_url_never_shows_a_password() -> None:
    from tests.postgres import free_port

    url = f"postgresql://pdp:s3cret@127.0.0.1:{free_port()}/pdp"
    with pytest.raises(StoreUnavailable) as info:
        PostgresStore(url)
    assert "s3cret" not in str(info.value)
    assert "s3cret" not in redacted(url)


def test_a_revision_taken_first_commits_first_on_postgres(postgres: Postgres) -> None:
    """The classic trap: with a sequence, a writer that took revision 1 but commits late would be
    skipped by a follower that has already read 2. Here a transaction holding the head (as an
    append does until COMMIT) makes the next append wait, so 2 can never be visible before 1."""
    database = f"t_{uuid.uuid4().hex}"
    with psycopg.connect(postgres.dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{database}"')
    url = postgres.dsn.rsplit("/", 1)[0] + f"/{database}"
    store, reader = PostgresStore(url), PostgresStore(url)
    try:
        slow = psycopg.connect(url)  # a writer that has taken revision 1 and not committed yet
        (taken,) = slow.execute(
            "UPDATE pdp_head SET revision = revision + 1 RETURNING revision"
        ).fetchone() or (0,)
        slow.execute(
            "INSERT INTO pdp_changes (revision, seq, tuple, present) VALUES (%s, 0, %s, true)",
            (taken, "doc:slow#viewer@user:a"),
        )
        later: list[int] = []
        fast = threading.Thread(
            target=lambda: later.append(store.append([T("doc:fast#viewer@user:b")], []))
        )
        fast.start()
        fast.join(0.5)
        assert fast.is_alive() and reader.changes_since(0, 10) == []  # waiting on the head row
        slow.commit()
        slow.close()
        fast.join(10)
        assert later == [taken + 1]
        assert [c.revision for c in reader.changes_since(0, 10)] == [taken, taken + 1]
    finally:
        store.close()
        reader.close()


def test_processes_opening_a_fresh_sqlite_store_at_once_all_succeed(tmp_path: Path) -> None:
    """Switching a new file to WAL takes an exclusive lock SQLite does not wait for: without a
    retry, about one start in fifteen of eight openers at once failed with "database is locked"
    (`pdp serve --processes N` on a fresh data directory)."""
    for trial in range(40):
        path = tmp_path / f"fresh-{trial}" / SqliteStore.FILENAME
        start = threading.Barrier(8)
        errors: list[BaseException] = []

        def open_it(
            path: Path = path,
            start: threading.Barrier = start,
            errors: list[BaseException] = errors,
        ) -> None:
            start.wait()
            try:
                SqliteStore(path)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=open_it) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert errors == []


def test_a_store_locked_past_the_busy_timeout_is_unavailable_not_a_crash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / SqliteStore.FILENAME
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN")
    holder.execute("SELECT * FROM t").fetchall()  # a reader's lock: no switch to WAL meanwhile
    monkeypatch.setattr(sqlite_store, "BUSY_TIMEOUT_MS", 200)
    with pytest.raises(StoreUnavailable, match="busy"):
        SqliteStore(path)
    holder.execute("COMMIT")
    holder.close()
    SqliteStore(path)  # once the lock is gone
