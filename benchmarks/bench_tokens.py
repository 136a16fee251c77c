"""Token benchmarks (pytest-benchmark): verify cold and cached, issue; per signing algorithm.

Run: `.venv/bin/python -m pytest benchmarks/bench_tokens.py --benchmark-only`
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pdp.tokens import AccessTokenIssuer, KeyRing, Verifier, init_key_directory

ISSUER = "https://auth.bench.example"
AUDIENCE = "pdp-bench"


@pytest.fixture(params=["ES256", "EdDSA", "RS256"])
def setup(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    init_key_directory(tmp_path, request.param)
    ring = KeyRing(tmp_path)
    issuer = AccessTokenIssuer(ring, issuer=ISSUER, audience=AUDIENCE)
    token = issuer.issue(
        subject="user-42",
        tenant="acme",
        client_id="web",
        roles=("member",),
        scopes=("orders:read",),
    ).token
    return {"ring": ring, "issuer": issuer, "token": token}


def test_verify_cold(benchmark: Any, setup: dict[str, Any]) -> None:
    """Every call does the full work: header checks, signature, claims (cache switched off)."""
    verifier = Verifier(setup["ring"], issuer=ISSUER, audience=AUDIENCE, cache_size=0)
    subject = benchmark(verifier.verify, setup["token"])
    assert subject.subject == "user-42"


def test_verify_cached(benchmark: Any, setup: dict[str, Any]) -> None:
    """A hot token: SHA-256 of the token, one dict lookup, expiry and revocation checks."""
    verifier = Verifier(setup["ring"], issuer=ISSUER, audience=AUDIENCE)
    verifier.verify(setup["token"])
    subject = benchmark(verifier.verify, setup["token"])
    assert subject.subject == "user-42"


def test_issue(benchmark: Any, setup: dict[str, Any]) -> None:
    issuer: AccessTokenIssuer = setup["issuer"]

    def issue() -> str:
        return issuer.issue(
            subject="user-42",
            tenant="acme",
            client_id="web",
            roles=("member",),
            scopes=("orders:read",),
        ).token

    assert benchmark(issue).count(".") == 2
