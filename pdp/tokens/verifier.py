"""Verification of our own access tokens (RFC 9068), with a verified-token cache and jti denylist.

The cache is keyed by the SHA-256 of the whole token, so a changed byte anywhere is a miss.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from hashlib import sha256

from pdp.identifiers import is_id
from pdp.tenancy import ANY_TENANT
from pdp.tokens import jws_checks as checks
from pdp.tokens.jws_checks import fail
from pdp.tokens.keys import KeyRing
from pdp.tokens.subject import VerifiedSubject

ACCESS_TOKEN_TYP: frozenset[str | None] = frozenset({"at+jwt"})
# RFC 9068 §2.2: all of these are required in an access token; `tenant` is ours.
REQUIRED_CLAIMS = ["iss", "sub", "aud", "exp", "iat", "jti", "client_id", "tenant"]


def parse_bearer(authorization: str | None) -> str:
    """The token from an `Authorization: Bearer <token>` value (HTTP header or gRPC metadata)."""
    if not authorization:
        fail("no bearer token")
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        fail("not a bearer token")
    return token.strip()


class Verifier:
    """Verifies access tokens issued by `issuer` for `audience` against a `KeyRing`.

    `verify` raises `InvalidToken` for every token that must be answered with UNAUTHENTICATED.
    Thread-safe: the cache and denylist are plain dicts mutated only under a lock or atomically.
    """

    def __init__(
        self,
        keys: KeyRing,
        *,
        issuer: str,
        audience: str,
        leeway: float = 30.0,
        max_lifetime: float = 3600.0,
        max_token_bytes: int = checks.DEFAULT_MAX_TOKEN_BYTES,
        cache_size: int = 100_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._keys = keys
        self.issuer = issuer
        self.audience = audience
        self.leeway = leeway
        self.max_lifetime = max_lifetime
        self.max_token_bytes = max_token_bytes
        self._cache_size = cache_size
        self._clock = clock
        self._lock = threading.Lock()
        # sha256(token) -> (subject, key generation it was verified under, exp + leeway)
        self._cache: dict[bytes, tuple[VerifiedSubject, int, float]] = {}
        self._by_jti: dict[str, bytes] = {}
        self._revoked: dict[str, float] = {}  # jti -> exp; kept until the token would expire

    def verify(self, token: str) -> VerifiedSubject:
        if not isinstance(token, str) or len(token) > self.max_token_bytes:
            checks.check_size(token, self.max_token_bytes)  # raises with the precise reason
        digest = sha256(token.encode()).digest()
        hit = self._cache.get(digest)
        if hit is not None:
            # Hot path: one dict lookup, one clock read, one set test. Each entry remembers the
            # key generation it was verified under, so any key change (a removed kid) misses.
            subject, generation, deadline = hit
            if (
                generation == self._keys.snapshot.generation
                and self._clock() < deadline
                and subject.jti not in self._revoked
            ):
                return subject
            self._evict(digest)
        subject, generation = self._verify_uncached(token)
        self._remember(digest, subject, generation)
        return subject

    def verify_bearer(self, authorization: str | None) -> VerifiedSubject:
        """Verify the token in an `authorization` value such as `Bearer eyJ...`."""
        return self.verify(parse_bearer(authorization))

    def _verify_uncached(self, token: str) -> tuple[VerifiedSubject, int]:
        checks.check_size(token, self.max_token_bytes)
        now = self._clock()
        snapshot = self._keys.snapshot
        header = checks.read_header(token, ACCESS_TOKEN_TYP)
        key = checks.pick_key(header, snapshot.keys, now)
        claims = checks.decode(
            token,
            key,
            audience=self.audience,
            issuer=self.issuer,
            leeway=self.leeway,
            require=REQUIRED_CLAIMS,
            now=now,
        )
        exp = claims["exp"]
        if exp - claims["iat"] > self.max_lifetime + self.leeway:
            fail("lifetime too long")  # we never mint these; a long-lived token is not ours
        scope = claims.get("scope", "")
        if not isinstance(scope, str):
            fail("bad `scope`")
        # INVARIANT: a token's subject is an id of pdp.identifiers, so it can never spell a
        # userset or a wildcard however the token was minted
        if not is_id(claims["sub"]):
            fail("bad `sub`")
        if not (is_id(claims["tenant"]) or claims["tenant"] == ANY_TENANT):
            fail("bad `tenant`")
        subject = VerifiedSubject(
            subject=checks.str_claim(claims, "sub"),
            tenant=checks.str_claim(claims, "tenant"),
            roles=checks.str_list_claim(claims, "roles"),
            scopes=frozenset(scope.split()),
            client_id=checks.str_claim(claims, "client_id"),
            jti=checks.str_claim(claims, "jti"),
            exp=int(exp),
            issuer=self.issuer,
        )
        if subject.jti in self._revoked:
            fail("revoked")
        return subject, snapshot.generation

    # -- cache ---------------------------------------------------------------------------------

    def _remember(self, digest: bytes, subject: VerifiedSubject, generation: int) -> None:
        if self._cache_size <= 0:  # caching switched off
            return
        with self._lock:
            if len(self._cache) >= self._cache_size:
                self._sweep()
            if subject.jti in self._revoked:  # a revocation raced this verification
                return
            self._cache[digest] = (subject, generation, subject.exp + self.leeway)
            self._by_jti[subject.jti] = digest

    def _evict(self, digest: bytes) -> None:
        with self._lock:
            hit = self._cache.pop(digest, None)
            if hit is not None:
                self._by_jti.pop(hit[0].jti, None)

    def _sweep(self) -> None:
        """Drop expired entries; if the cache is still full, drop the oldest half."""
        now = self._clock()
        for digest, (subject, _, deadline) in list(self._cache.items()):
            if now >= deadline:
                del self._cache[digest]
                self._by_jti.pop(subject.jti, None)
        if len(self._cache) >= self._cache_size:
            for digest in list(self._cache)[: len(self._cache) // 2 + 1]:
                subject, _, _ = self._cache.pop(digest)
                self._by_jti.pop(subject.jti, None)

    def clear_cache(self) -> None:
        with self._lock:
            self._cache.clear()
            self._by_jti.clear()

    # -- revocation ----------------------------------------------------------------------------

    def revoke(self, jti: str, exp: float) -> None:
        """Deny `jti` from now on and evict it from the cache (seen by the very next verify)."""
        self.add_revocations([(jti, exp)])

    def add_revocations(self, entries: Iterable[tuple[str, float]]) -> None:
        with self._lock:
            for jti, exp in entries:
                self._revoked[jti] = exp
                digest = self._by_jti.pop(jti, None)
                if digest is not None:
                    self._cache.pop(digest, None)

    def forget_expired_revocations(self) -> int:
        """A revoked jti can be forgotten once its token could no longer verify anyway."""
        cutoff = self._clock() - self.leeway
        with self._lock:
            stale = [jti for jti, exp in self._revoked.items() if exp < cutoff]
            for jti in stale:
                del self._revoked[jti]
        return len(stale)

    def is_revoked(self, jti: str) -> bool:
        return jti in self._revoked
