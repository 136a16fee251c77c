"""The token store's promise on both backends (a SQLite file, a real PostgreSQL): clients,
rotation with reuse detection, revocations read in commit order by every other process, and a
refresh token rotated at most once when two processes ("sidecars") present it at the same time."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from pdp.tokens.credentials import hash_secret
from pdp.tokens.errors import TokenStoreUnavailable
from pdp.tokens.store import Client, Family, RotateOutcome, TokenStore
from tests.postgres import free_port

OpenStore = Callable[[], TokenStore]
NOW = 1_000_000.0


@pytest.fixture(params=["sqlite", "postgres"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OpenStore]:
    """Opens another TokenStore on one fresh store, as another sidecar would."""
    target: str | Path
    if request.param == "sqlite":
        target = tmp_path / "tokens.db"
    else:
        target = request.getfixturevalue("pg_url")
    opened: list[TokenStore] = []

    def make() -> TokenStore:
        opened.append(TokenStore(target, client_cache_ttl=0))
        return opened[-1]

    try:
        yield make
    finally:
        for store in opened:
            store.close()


def _family(family_id: str = "fam-1", client_id: str = "web") -> Family:
    return Family(
        family_id, client_id, "alice", "acme", ("member",), "orders:read", NOW + 3600, False
    )


def _start(store: TokenStore, family: Family, refresh: bytes, jti: str) -> None:
    store.start_family(family, refresh, now=NOW, access_jti=jti, access_exp=NOW + 600)


def _rotate(
    store: TokenStore, old: bytes, new: bytes, jti: str, client_id: str = "web"
) -> RotateOutcome:
    result = store.rotate(
        old, new, client_id=client_id, now=NOW + 1, access_jti=jti, access_exp=NOW + 601
    )
    return result.outcome


def test_a_client_is_stored_upserted_and_seen_by_another_process(open_store: OpenStore) -> None:
    store, other = open_store(), open_store()
    client = Client(
        "m2m", hash_secret("s1"), "acme", "m2m", ("svc",), ("a", "b"), ("client_credentials",)
    )
    store.put_client(client, NOW)
    assert other.get_client("m2m") == client
    rekeyed = Client(
        "m2m", hash_secret("s2"), "acme", "m2m", (), ("a",), ("client_credentials",), True
    )
    other.put_client(rekeyed, NOW)
    assert store.get_client("m2m") == rekeyed
    assert store.get_client("nobody") is None
    assert other.list_clients() == ["m2m"]


def test_rotation_spends_once_and_a_second_use_revokes_the_family(open_store: OpenStore) -> None:
    store, other = open_store(), open_store()
    _start(store, _family(), b"r0", "at-0")
    assert _rotate(other, b"r0", b"r1", "at-1", client_id="intruder") is RotateOutcome.UNKNOWN
    assert _rotate(other, b"nope", b"r1", "at-1") is RotateOutcome.UNKNOWN
    assert _rotate(other, b"r0", b"r1", "at-1") is RotateOutcome.ROTATED
    found = store.find_family(b"r0")
    assert found is not None and found[1] is True  # spent
    reused = store.rotate(
        b"r0", b"r2", client_id="web", now=NOW + 2, access_jti="at-2", access_exp=NOW + 602
    )
    assert reused.outcome is RotateOutcome.REUSED
    assert sorted(reused.revoked_jtis) == [("at-0", NOW + 600), ("at-1", NOW + 601)]
    assert _rotate(other, b"r1", b"r3", "at-3") is RotateOutcome.REVOKED
    _, revoked = other.revoked_since(0, NOW)
    assert sorted(jti for jti, _ in revoked) == ["at-0", "at-1"]


def test_an_expired_refresh_token_does_not_rotate(open_store: OpenStore) -> None:
    store = open_store()
    _start(store, _family(), b"r0", "at-0")
    late = store.rotate(
        b"r0", b"r1", client_id="web", now=NOW + 7200, access_jti="x", access_exp=NOW + 7800
    )
    assert late.outcome is RotateOutcome.EXPIRED


def test_the_same_refresh_token_at_two_sidecars_at_once_rotates_exactly_once(
    open_store: OpenStore,
) -> None:
    a, b = open_store(), open_store()
    rounds = 40
    for i in range(rounds):
        _start(a, _family(f"fam-{i}"), f"r{i}".encode(), f"at-{i}")
    barrier = threading.Barrier(2)
    outcomes: dict[str, list[RotateOutcome]] = {"a": [], "b": []}

    def present(name: str, store: TokenStore) -> None:
        for i in range(rounds):
            barrier.wait(10)
            new = f"{name}-{i}".encode()
            outcomes[name].append(_rotate(store, f"r{i}".encode(), new, f"at-{name}-{i}"))

    threads = [threading.Thread(target=present, args=(n, s)) for n, s in (("a", a), ("b", b))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for i in range(rounds):
        pair = sorted(o.value for o in (outcomes["a"][i], outcomes["b"][i]))
        assert pair == ["reused", "rotated"], i  # one new pair; the other use is reuse detection
        family, _, _ = a.find_family(f"r{i}".encode()) or (None, None, None)
        assert family is not None and family.revoked
    _, revoked = b.revoked_since(0, NOW)
    # every family's first access token and its winner's are revoked
    assert len(revoked) == 2 * rounds


def test_revocations_from_concurrent_writers_reach_a_reader_without_a_gap(
    open_store: OpenStore,
) -> None:
    writers, per_writer = 4, 30
    reader = open_store()
    stores = [open_store() for _ in range(writers)]
    seen: set[str] = set()
    done = threading.Event()

    def write(k: int) -> None:
        for i in range(per_writer):
            stores[k].revoke_jti(f"w{k}-{i}", NOW + 600, NOW)

    def read() -> None:
        # the high-water mark only moves forward: a number committed late below it is lost
        seq = 0
        while True:
            finished = done.is_set()
            seq, entries = reader.revoked_since(seq, NOW)
            seen.update(jti for jti, _ in entries)
            if finished:
                return

    follower = threading.Thread(target=read)
    follower.start()
    threads = [threading.Thread(target=write, args=(k,)) for k in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    done.set()
    follower.join(60)
    assert seen == {f"w{k}-{i}" for k in range(writers) for i in range(per_writer)}


def test_revoking_a_jti_twice_is_one_revocation(open_store: OpenStore) -> None:
    store = open_store()
    store.revoke_jti("j", NOW + 600, NOW)
    store.revoke_jti("j", NOW + 600, NOW + 1)
    high, entries = store.revoked_since(0, NOW)
    assert entries == [("j", NOW + 600)] and high >= 1
    assert store.revoked_since(high, NOW) == (high, [])


def test_purge_forgets_only_what_no_token_can_use(open_store: OpenStore) -> None:
    store = open_store()
    _start(store, _family(), b"r0", "at-0")
    store.revoke_jti("old", NOW - 7200, NOW - 7200)
    store.revoke_jti("live", NOW + 600, NOW)
    store.purge_expired(NOW)
    assert [jti for jti, _ in store.revoked_since(0, NOW - 100_000)[1]] == ["live"]
    assert store.find_family(b"r0") is not None
    store.purge_expired(NOW + 3600 + 3601)
    assert store.find_family(b"r0") is None


# ---- PostgreSQL only ---------------------------------------------------------------------------


def test_postgres_tables_are_prefixed_and_the_sqlite_schema_is_untouched(pg_url: str) -> None:
    TokenStore(pg_url).close()
    with psycopg.connect(pg_url) as conn:
        tables = {
            r[0]
            for r in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            ).fetchall()
        }
    assert tables == {
        "pdp_token_clients",
        "pdp_token_refresh_families",
        "pdp_token_refresh_tokens",
        "pdp_token_head",
        "pdp_token_revoked_jtis",
    }


def test_sidecars_starting_together_create_the_schema_once(pg_url: str) -> None:
    errors: list[BaseException] = []
    stores: list[TokenStore] = []
    barrier = threading.Barrier(6)

    def start() -> None:
        try:
            barrier.wait(10)
            stores.append(TokenStore(pg_url))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for store in stores:
        store.close()
    assert errors == [] and len(stores) == 6


def test_secrets_are_stored_only_hashed(pg_url: str) -> None:
    store = TokenStore(pg_url)
    try:
        store.put_client(
            Client(
                "m2m", hash_secret("the-secret"), "acme", "m2m", (), (), ("client_credentials",)
            ),
            NOW,
        )
    finally:
        store.close()
    with psycopg.connect(pg_url) as conn:
        row = conn.execute("SELECT secret_hash FROM pdp_token_clients").fetchone()
    assert row is not None and b"the-secret" not in bytes(row[0])


def test_a_revocation_wakes_another_sidecars_listener(pg_url: str) -> None:
    a, b = TokenStore(pg_url), TokenStore(pg_url)
    try:
        assert b.revocation_feed
        assert b.wait_for_revocation(0.1) is True  # (re)connected: anything may have happened
        assert b.wait_for_revocation(0.05) is False
        a.revoke_jti("j1", NOW + 600, NOW)
        assert b.wait_for_revocation(5) is True
    finally:
        a.close()
        b.close()


def test_an_unreachable_store_is_unavailable_and_named_without_its_password() -> None:
    url = f"postgresql://pdp:hunter2-secret@127.0.0.1:{free_port()}/tokens"
    with pytest.raises(TokenStoreUnavailable) as caught:
        TokenStore(url)
    assert "hunter2" not in str(caught.value)
    assert "127.0.0.1" in str(caught.value)


@pytest.mark.skipif(os.name != "posix", reason="file modes")
def test_the_sqlite_file_is_private(tmp_path: Path) -> None:
    TokenStore(tmp_path / "t.db").close()
    assert (tmp_path / "t.db").stat().st_mode & 0o077 == 0
