"""Tokens across a fleet: two real `pdp serve` processes on one real PostgreSQL hold their token
state there (clients, refresh families, revoked jtis), not in the SQLite file `--token-db` names.

What an attacker tries: use at one sidecar a token revoked at another (it is refused there as
soon as the revocation arrives, well under a second, not at the next 5-second pass), and present
one stolen refresh token at two sidecars at once hoping for two new pairs (one rotation wins, the
other use is reuse detection and the whole family is revoked, at every sidecar).
"""

from __future__ import annotations

import json
import statistics
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import jwt
import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from pdp._proto.pdp.v1 import pdp_pb2
from pdp.client import entity
from pdp.tokens.admin_cli import create_client
from pdp.tokens.keys import VerificationKey, public_jwk
from pdp.tokens.service import ID_TOKEN_TYPE, TOKEN_EXCHANGE
from tests.postgres import running_postgres

from .saas import document
from .serve import Served, ServeFactory, code_of, wait_for

IDP = "https://login.acme.example"
PROPAGATION_BOUND = 1.0  # seconds: "well under a second on loopback"; measured p99 is far below


@dataclass
class TokenFleet:
    url: str
    a: Served
    b: Served
    idp_key: ec.EllipticCurvePrivateKey
    factory: ServeFactory

    def client(self, client_id: str, **kw: object) -> tuple[str, str]:
        """A client created in PostgreSQL only (`pdp tokens create-client --db postgresql://`)."""
        return client_id, create_client(self.url, client_id, tenant="acme", **kw)  # type: ignore[arg-type]

    def id_token(self, sub: str) -> str:
        now = int(time.time())
        claims = {"iss": IDP, "sub": sub, "aud": "pdp-acme", "exp": now + 300, "iat": now}
        return jwt.encode(claims, self.idp_key, algorithm="ES256", headers={"kid": "k1"})


@pytest.fixture
def fleet(pdp_serve: ServeFactory, saas_bundle: Path, tmp_path: Path) -> Iterator[TokenFleet]:
    key = ec.generate_private_key(ec.SECP256R1())
    idps = tmp_path / "idps"
    idps.mkdir()
    jwks = {"keys": [public_jwk(VerificationKey("k1", "ES256", key.public_key()))]}
    (idps / "acme.jwks.json").write_text(json.dumps(jwks))
    entry = {
        "issuer": IDP,
        "tenant": "acme",
        "audience": "pdp-acme",
        "jwks_file": "acme.jwks.json",
        "default_roles": ["viewer"],
    }
    (idps / "trusted_idps.json").write_text(json.dumps({"trusted_idps": [entry]}))
    with running_postgres() as pg:
        database = f"fleet_tokens_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(pg.dsn, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{database}"')
        url = pg.dsn.rsplit("/", 1)[0] + f"/{database}"
        args = ["--store", url, "--trusted-idps", str(idps / "trusted_idps.json")]
        a = pdp_serve.start(saas_bundle, data_dir=tmp_path / "data-a", args=args)
        b = pdp_serve.start(saas_bundle, data_dir=tmp_path / "data-b", args=args)
        yield TokenFleet(url, a, b, key, pdp_serve)
        pdp_serve.close()  # every sidecar stops before its database does


def _post(served: Served, path: str, client: tuple[str, str], **form: str) -> httpx.Response:
    return httpx.post(f"http://{served.http}{path}", data=form, auth=client, timeout=10)


def _access(served: Served, client: tuple[str, str]) -> str:
    r = _post(served, "/oauth/token", client, grant_type="client_credentials")
    r.raise_for_status()
    token: str = r.json()["access_token"]
    return token


def _check(served: Served, token: str) -> pdp_pb2.CheckResponse:
    request = pdp_pb2.CheckRequest(
        subject_token=token, action="read", resource=entity(document("d1"))
    )
    response: pdp_pb2.CheckResponse = served.authz.Check(request, timeout=10)
    return response


def _refused(served: Served, token: str) -> bool:
    return code_of(lambda: _check(served, token)) == grpc.StatusCode.UNAUTHENTICATED


def test_the_token_state_lives_in_postgresql_not_in_the_token_db(fleet: TokenFleet) -> None:
    assert not fleet.factory.token_db.exists()  # --token-db was passed, and never opened
    viewer = fleet.client("viewer-app", roles=("viewer",))
    token = _access(fleet.a, viewer)  # a client that exists in PostgreSQL only
    assert _check(fleet.b, token).decision == pdp_pb2.EFFECT_ALLOW  # issued at A, works at B
    with psycopg.connect(fleet.url) as conn:
        (clients,) = conn.execute("SELECT count(*) FROM pdp_token_clients").fetchone() or (0,)
    assert clients == 1
    # and a client written to the SQLite file alone is unknown to the fleet
    local = fleet.factory.client(client_id="sqlite-only")
    r = _post(fleet.a, "/oauth/token", local, grant_type="client_credentials")
    assert r.status_code == 401


def test_a_token_revoked_at_a_is_refused_at_b_within_the_propagation_bound(
    fleet: TokenFleet,
) -> None:
    viewer = fleet.client("viewer-app", roles=("viewer",))
    delays = []
    for _ in range(50):
        token = _access(fleet.a, viewer)
        assert _check(fleet.b, token).decision == pdp_pb2.EFFECT_ALLOW  # cached at B now
        r = _post(fleet.a, "/oauth/revoke", viewer, token=token, token_type_hint="access_token")
        assert r.status_code == 200
        revoked_at = time.monotonic()
        wait_for(lambda t=token: _refused(fleet.b, t), timeout=5, interval=0.001)
        delays.append(time.monotonic() - revoked_at)
    delays.sort()
    p50, p99 = (
        statistics.median(delays),
        statistics.quantiles(delays, n=100, method="inclusive")[98],
    )
    print(
        f"revocation A->B over {len(delays)}: p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms,"
        f" max {delays[-1] * 1000:.1f} ms"
    )
    assert p99 < PROPAGATION_BOUND, delays
    assert _refused(fleet.a, token)


def _at_both_at_once(
    fleet: TokenFleet, client: tuple[str, str], refresh: str
) -> dict[str, httpx.Response]:
    """The same refresh token presented at A and at B at the same moment."""
    barrier = threading.Barrier(2)
    answers: dict[str, httpx.Response] = {}

    def present(name: str, served: Served) -> None:
        barrier.wait(10)
        answers[name] = _post(
            served, "/oauth/token", client, grant_type="refresh_token", refresh_token=refresh
        )

    threads = [
        threading.Thread(target=present, args=(n, s)) for n, s in (("a", fleet.a), ("b", fleet.b))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return answers


def test_one_refresh_token_at_both_sidecars_at_once_gives_one_pair_and_revokes_the_family(
    fleet: TokenFleet,
) -> None:
    web = fleet.client("web", grant_types=(TOKEN_EXCHANGE, "refresh_token"))
    for round_ in range(10):
        exchanged = _post(
            fleet.a,
            "/oauth/token",
            web,
            grant_type=TOKEN_EXCHANGE,
            subject_token=fleet.id_token(f"user-{round_}"),
            subject_token_type=ID_TOKEN_TYPE,
        )
        exchanged.raise_for_status()
        first_access, refresh = exchanged.json()["access_token"], exchanged.json()["refresh_token"]
        assert _check(fleet.b, first_access).decision == pdp_pb2.EFFECT_ALLOW
        answers = _at_both_at_once(fleet, web, refresh)
        codes = sorted(r.status_code for r in answers.values())
        assert codes == [200, 400], [r.text for r in answers.values()]  # exactly one new pair
        winner = next(r for r in answers.values() if r.status_code == 200).json()
        loser = next(r for r in answers.values() if r.status_code == 400).json()
        assert loser["error"] == "invalid_grant" and "already used" in loser["error_description"]
        # reuse detection revoked the family: the new pair too, at every sidecar
        for served in (fleet.a, fleet.b):
            again = _post(
                served,
                "/oauth/token",
                web,
                grant_type="refresh_token",
                refresh_token=winner["refresh_token"],
            )
            assert again.status_code == 400
            for access in (first_access, winner["access_token"]):
                wait_for(lambda s=served, t=access: _refused(s, t), timeout=PROPAGATION_BOUND)
