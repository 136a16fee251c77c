"""The decision engine, pure: compile a checked policy (compiler, conditions, decider, rebac),
decide, cache (cache), hold relation tuples (tuples). It never touches the network,
SQLite or files (a contract forbids grpc, sqlite3, HTTP, watchfiles and JOSE even indirectly). It
may import the bundle, the model, pdp.errors and policy_lang; explain, the sidecar and the
authoring tools build on it, never the reverse.
"""

from pdp.engine.engine import Engine, SnapshotView

__all__ = ["Engine", "SnapshotView"]
