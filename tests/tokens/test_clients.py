"""`pdp.tokens.clients.create_client`: the one path every client is created through."""

from __future__ import annotations

from pathlib import Path

import pytest

from pdp.tokens import TokenStore
from pdp.tokens.clients import TOKEN_EXCHANGE, create_client
from pdp.tokens.credentials import secret_matches


@pytest.fixture
def store(tmp_path: Path) -> TokenStore:
    s = TokenStore(tmp_path / "tokens.db")
    yield s  # type: ignore[misc]
    s.close()


def test_a_client_is_stored_with_the_hash_of_the_secret_it_returns(store: TokenStore) -> None:
    secret = create_client(
        store, "svc", tenant="acme", scopes=("orders:read",), roles=("service",), now=1.0
    )
    client = store.get_client("svc")
    assert client is not None
    assert (client.tenant, client.subject, client.scopes, client.roles) == (
        "acme",
        "svc",  # the client id is the default subject
        ("orders:read",),
        ("service",),
    )
    assert client.grant_types == ("client_credentials",)
    assert secret_matches(secret, client.secret_hash)
    assert secret.encode() not in client.secret_hash


def test_creating_again_rekeys(store: TokenStore) -> None:
    first = create_client(store, "svc", tenant="acme", now=1.0)
    second = create_client(store, "svc", tenant="acme", now=2.0)
    client = store.get_client("svc")
    assert client is not None
    assert secret_matches(second, client.secret_hash)
    assert not secret_matches(first, client.secret_hash)


@pytest.mark.parametrize(
    ("client_id", "kw", "message"),
    [
        ("a b", {}, "client id: "),
        ("eng#member", {}, "client id: "),
        ("svc", {"subject": "a@b"}, "subject: "),
        ("svc", {"tenant": "acme corp"}, "tenant: "),
        ("svc", {"grant_types": ("password",)}, "unknown grant types: password"),
    ],
)
def test_rules_refuse_before_anything_is_stored(
    store: TokenStore, client_id: str, kw: dict[str, object], message: str
) -> None:
    args: dict[str, object] = {"tenant": "acme", **kw}
    with pytest.raises(ValueError, match=message):
        create_client(store, client_id, now=1.0, **args)  # type: ignore[arg-type]
    assert store.list_clients() == []


def test_a_client_bound_to_no_tenant_may_exchange(store: TokenStore) -> None:
    create_client(store, "web", tenant="*", grant_types=(TOKEN_EXCHANGE,), now=1.0)
    client = store.get_client("web")
    assert client is not None
    assert (client.tenant, client.grant_types) == ("*", (TOKEN_EXCHANGE,))
