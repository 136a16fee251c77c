"""Durable tuple state as a changelog every sidecar follows (`base`: the interface and its
promise), in an embedded SQLite file (`sqlite`, the default) or a shared PostgreSQL (`postgres`,
the fleet). `open_store` picks one from `pdp serve --store URL`.
"""

from __future__ import annotations

from pathlib import Path

from pdp.sidecar.store.base import Change, Overlay, Quarantined, Store, StoreUnavailable

__all__ = ["Change", "Overlay", "Quarantined", "Store", "StoreUnavailable", "open_store"]


def open_store(url: str, data_dir: Path | None) -> Store:
    """`sqlite:///PATH` (a file; "" for DATA_DIR/tuples.db), or `postgresql://...`."""
    if url.startswith(("postgresql://", "postgres://")):
        from pdp.sidecar.store.postgres import PostgresStore  # psycopg only when asked for

        return PostgresStore(url)
    from pdp.sidecar.store.sqlite import SqliteStore

    if url.startswith("sqlite:///"):
        return SqliteStore(Path(url.removeprefix("sqlite:///")))
    if url:
        raise ValueError(f"--store: `sqlite:///PATH` or `postgresql://...`, not `{url}`")
    if data_dir is None:
        raise ValueError("--store: no data directory for the embedded store")
    return SqliteStore(data_dir / SqliteStore.FILENAME)
