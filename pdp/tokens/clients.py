"""OAuth clients: the one path that creates or re-keys one, and the grant types a client may hold.

Every caller (the service, `pdp tokens create-client`, test and benchmark helpers) goes through
`create_client`, so the rules on ids, tenants and grants live here once.
"""

from __future__ import annotations

from pdp.identifiers import id_problem, is_id
from pdp.tenancy import ANY_TENANT
from pdp.tokens.credentials import hash_secret, new_secret
from pdp.tokens.store import Client, TokenStore

CLIENT_CREDENTIALS = "client_credentials"
REFRESH_TOKEN = "refresh_token"
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
GRANT_TYPES = (CLIENT_CREDENTIALS, REFRESH_TOKEN, TOKEN_EXCHANGE)


def create_client(
    store: TokenStore,
    client_id: str,
    *,
    tenant: str,
    scopes: tuple[str, ...] = (),
    roles: tuple[str, ...] = (),
    grant_types: tuple[str, ...] = (CLIENT_CREDENTIALS,),
    subject: str | None = None,
    now: float,
) -> str:
    """Store a new client (or re-key an existing one) and return its secret.

    The secret is never stored, only its hash: this return is the only time it exists in clear.
    """
    unknown = set(grant_types) - set(GRANT_TYPES)
    if unknown:
        raise ValueError(f"unknown grant types: {', '.join(sorted(unknown))}")
    # The client id is the default token subject: both follow the identifier grammar, so no
    # token subject can spell a userset, a wildcard or a tuple separator.
    if not is_id(client_id):
        raise ValueError(f"client id: {id_problem(client_id)}")
    if subject is not None and not is_id(subject):
        raise ValueError(f"subject: {id_problem(subject)}")
    if not (is_id(tenant) or tenant == ANY_TENANT):
        raise ValueError(f"tenant: {id_problem(tenant)} (or `*` for a client bound to no tenant)")
    secret = new_secret()
    client = Client(
        client_id=client_id,
        secret_hash=hash_secret(secret),
        tenant=tenant,
        subject=subject or client_id,
        roles=tuple(roles),
        scopes=tuple(scopes),
        grant_types=tuple(grant_types),
    )
    store.put_client(client, now)
    return secret
