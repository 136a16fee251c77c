"""Durable token state (clients, refresh-token families, revoked jtis) behind one `TokenStore`:
its semantics once (`base`), over a SQLite file (`sqlite`) or a fleet's PostgreSQL (`postgres`).
"""

from pdp.tokens.store.base import (
    Backend,
    Client,
    Dialect,
    Family,
    RotateOutcome,
    RotateResult,
    TokenStore,
    is_postgres_url,
)

__all__ = [
    "Backend",
    "Client",
    "Dialect",
    "Family",
    "RotateOutcome",
    "RotateResult",
    "TokenStore",
    "is_postgres_url",
]
