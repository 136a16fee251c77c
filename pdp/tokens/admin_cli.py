"""`pdp tokens ...`: create clients (printing the secret once), initialise and rotate keys."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from pdp.tokens import clients
from pdp.tokens.clients import CLIENT_CREDENTIALS, GRANT_TYPES
from pdp.tokens.keys import ALGORITHMS, DEFAULT_ALGORITHM, KeyRing, init_key_directory
from pdp.tokens.runtime import DEFAULT_ACCESS_TOKEN_LIFETIME
from pdp.tokens.store import TokenStore


def create_client(
    db_path: str | Path,
    client_id: str,
    *,
    tenant: str,
    scopes: tuple[str, ...] = (),
    roles: tuple[str, ...] = (),
    grant_types: tuple[str, ...] = (CLIENT_CREDENTIALS,),
) -> str:
    """Store a new client (or re-key an existing one) in the SQLite file or the `postgresql://`
    store `db_path` names; return its secret."""
    store = TokenStore(db_path)
    try:
        return clients.create_client(
            store,
            client_id,
            tenant=tenant,
            scopes=scopes,
            roles=roles,
            grant_types=grant_types,
            now=time.time(),
        )
    finally:
        store.close()


def _create_client(args: argparse.Namespace) -> int:
    secret = create_client(
        args.db,
        args.client_id,
        tenant=args.tenant,
        scopes=tuple(args.scope),
        roles=tuple(args.role),
        grant_types=tuple(args.grant) or (CLIENT_CREDENTIALS,),
    )
    # The one time the secret exists in clear: on stdout, for the operator to store elsewhere.
    print(f"client_id: {args.client_id}")
    print(f"client_secret: {secret}")
    print("store the secret now: it cannot be shown again", file=sys.stderr)
    return 0


def _init_keys(args: argparse.Namespace) -> int:
    print(init_key_directory(args.key_dir, args.alg))
    return 0


def _rotate_key(args: argparse.Namespace) -> int:
    ring = KeyRing(args.key_dir, token_lifetime=args.token_lifetime)
    print(ring.rotate(args.alg))
    ring.prune()
    return 0


def _remove_key(args: argparse.Namespace) -> int:
    KeyRing(args.key_dir).remove(args.kid)
    print(f"removed {args.kid}; running servers drop it at their next key reload")
    return 0


def add_commands(sub: Any) -> None:
    """Register `pdp tokens ...` on an argparse sub-parser collection."""
    tokens = sub.add_parser("tokens", help="token endpoint administration")
    tsub = tokens.add_subparsers(dest="tokens_command", required=True)

    p = tsub.add_parser("create-client", help="create a client and print its secret once")
    p.add_argument(
        "--db",
        required=True,
        help="the token SQLite file, or the fleet's postgresql:// store (a password is best "
        "given as PGPASSWORD)",
    )
    p.add_argument("--client-id", required=True)
    p.add_argument("--tenant", required=True, help='the tenant it acts in ("*" = exchange only)')
    p.add_argument("--scope", action="append", default=[])
    p.add_argument("--role", action="append", default=[])
    p.add_argument("--grant", action="append", default=[], choices=GRANT_TYPES)
    p.set_defaults(handler=_create_client)

    p = tsub.add_parser("init-keys", help="create a key directory with one signing key")
    p.add_argument("--key-dir", required=True)
    p.add_argument("--alg", default=DEFAULT_ALGORITHM, choices=ALGORITHMS)
    p.set_defaults(handler=_init_keys)

    p = tsub.add_parser("rotate-key", help="make a new signing key; old ones verify until expiry")
    p.add_argument("--key-dir", required=True)
    p.add_argument("--alg", default=DEFAULT_ALGORITHM, choices=ALGORITHMS)
    p.add_argument(
        "--token-lifetime",
        type=float,
        default=float(DEFAULT_ACCESS_TOKEN_LIFETIME),
        help="the longest access-token lifetime of the servers using these keys",
    )
    p.set_defaults(handler=_rotate_key)

    p = tsub.add_parser("remove-key", help="emergency: reject every token a kid signed")
    p.add_argument("--key-dir", required=True)
    p.add_argument("--kid", required=True)
    p.set_defaults(handler=_remove_key)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pdp-tokens")
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code: int = args.handler(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
