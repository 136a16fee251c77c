"""The token service: grants, revocation and introspection as plain calls, apart from HTTP.

Raises `OAuthError` with RFC 6749 codes; the endpoint module is the one place that turns them
into HTTP answers. Audit events go to `on_event` and never carry a token or a secret.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pdp.tenancy import ANY_TENANT
from pdp.tokens import clients
from pdp.tokens.clients import CLIENT_CREDENTIALS, REFRESH_TOKEN, TOKEN_EXCHANGE
from pdp.tokens.credentials import hash_secret, new_secret, secret_matches
from pdp.tokens.errors import InvalidToken, OAuthError
from pdp.tokens.idp import IdPVerifier
from pdp.tokens.issuer import AccessTokenIssuer, IssuedToken
from pdp.tokens.keys import EventHook
from pdp.tokens.ratelimit import FailureLimiter
from pdp.tokens.store import Client, Family, RotateOutcome, RotateResult, TokenStore
from pdp.tokens.verifier import Verifier

ID_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:id_token"
JWT_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:jwt"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"


@dataclass(frozen=True, slots=True)
class TokenResponse:
    access: IssuedToken
    refresh_token: str | None = field(default=None, repr=False)
    issued_token_type: str | None = None

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "access_token": self.access.token,
            "token_type": "Bearer",
            "expires_in": self.access.exp - self.access.iat,
        }
        if self.access.scope:
            body["scope"] = self.access.scope
        if self.refresh_token is not None:
            body["refresh_token"] = self.refresh_token
        if self.issued_token_type is not None:
            body["issued_token_type"] = self.issued_token_type
        return body


def _invalid_client() -> OAuthError:
    # One answer for unknown id, wrong secret and disabled client: no enumeration.
    return OAuthError("invalid_client", "client authentication failed", 401)


class TokenService:
    def __init__(
        self,
        *,
        store: TokenStore,
        issuer: AccessTokenIssuer,
        verifier: Verifier,
        idps: IdPVerifier | None = None,
        refresh_lifetime: float = 30 * 24 * 3600,
        client_limiter: FailureLimiter | None = None,
        source_limiter: FailureLimiter | None = None,
        on_event: EventHook | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.issuer = issuer
        self.verifier = verifier
        self.idps = idps
        self.refresh_lifetime = refresh_lifetime
        self.client_limiter = client_limiter or FailureLimiter(20)
        self.source_limiter = source_limiter or FailureLimiter(10)
        self._on_event = on_event
        self._clock = clock
        self._revocation_seq = 0
        self._sync_lock = threading.Lock()  # the maintenance pass and the listener both sync
        self.sync_revocations()

    def _emit(self, event: str, **fields: Any) -> None:
        if self._on_event is not None:
            self._on_event(event, fields)

    # -- clients -------------------------------------------------------------------------------

    def create_client(
        self,
        client_id: str,
        *,
        tenant: str,
        scopes: tuple[str, ...] = (),
        roles: tuple[str, ...] = (),
        grant_types: tuple[str, ...] = (CLIENT_CREDENTIALS,),
        subject: str | None = None,
    ) -> str:
        """Create or re-key a client (`pdp.tokens.clients.create_client`). Returns its secret."""
        secret = clients.create_client(
            self.store,
            client_id,
            tenant=tenant,
            scopes=scopes,
            roles=roles,
            grant_types=grant_types,
            subject=subject,
            now=self._clock(),
        )
        self._emit("client_created", client_id=client_id, tenant=tenant)
        return secret

    def authenticate_client(self, client_id: str, secret: str, source: str) -> Client:
        """Check a client's secret, refusing sources and clients with too many recent failures."""
        client_key = client_id[:200]
        for limiter, key in ((self.source_limiter, source), (self.client_limiter, client_key)):
            wait = limiter.retry_after(key)
            if wait > 0:
                raise OAuthError("invalid_client", "too many failed attempts; retry later", 429)
        client = self.store.get_client(client_id)
        stored = client.secret_hash if client is not None else None
        if not secret_matches(secret, stored) or client is None or client.disabled:
            self.source_limiter.record_failure(source)
            self.client_limiter.record_failure(client_key)
            self._emit("client_auth_failed", client_id=client_key, source=source)
            raise _invalid_client()
        return client

    # -- grants --------------------------------------------------------------------------------

    @staticmethod
    def _check_grant(client: Client, grant: str) -> None:
        if grant not in client.grant_types:
            raise OAuthError("unauthorized_client", "this client may not use this grant type")

    @staticmethod
    def _scopes(
        requested: str | None, allowed: tuple[str, ...] | frozenset[str]
    ) -> tuple[str, ...]:
        if requested is None or not requested.strip():
            return tuple(sorted(allowed))
        wanted = set(requested.split())
        if not wanted <= set(allowed):
            raise OAuthError("invalid_scope", "a requested scope was not granted to this client")
        return tuple(sorted(wanted))

    def _issue(
        self,
        event: str,
        client: Client,
        *,
        subject: str,
        tenant: str,
        roles: tuple[str, ...],
        scopes: tuple[str, ...],
        record: Callable[[IssuedToken], None] | None = None,
        **fields: Any,
    ) -> IssuedToken:
        """Issue an access token, let `record` store what must be kept beside it, then emit
        `event`. Every grant issues here; a `record` that raises leaves no event behind.
        """
        access = self.issuer.issue(
            subject=subject,
            tenant=tenant,
            client_id=client.client_id,
            roles=roles,
            scopes=scopes,
        )
        if record is not None:
            record(access)
        self._emit(
            event,
            client_id=client.client_id,
            subject=subject,
            tenant=tenant,
            **fields,
            jti=access.jti,
            kid=access.kid,
        )
        return access

    def client_credentials(self, client: Client, scope: str | None) -> TokenResponse:
        # A client of tenant `*` granted client_credentials is an operator's credential: its
        # tokens are bound to no tenant (claim `tenant: "*"`), which cross-tenant admin calls
        # need (pdp.tenancy). As a Check subject, `*` equals no tenant a policy compares it to.
        self._check_grant(client, CLIENT_CREDENTIALS)
        access = self._issue(
            "issued",
            client,
            subject=client.subject,
            tenant=client.tenant,
            roles=client.roles,
            scopes=self._scopes(scope, client.scopes),
            grant=CLIENT_CREDENTIALS,
        )
        return TokenResponse(access)

    def token_exchange(
        self,
        client: Client,
        *,
        subject_token: str | None,
        subject_token_type: str | None,
        tenant: str | None,
        scope: str | None,
    ) -> TokenResponse:
        self._check_grant(client, TOKEN_EXCHANGE)
        if not subject_token or subject_token_type not in (ID_TOKEN_TYPE, JWT_TOKEN_TYPE):
            raise OAuthError("invalid_request", "subject_token and an id_token type are required")
        if self.idps is None:
            raise OAuthError("invalid_grant", "no trusted identity providers are configured")
        if client.tenant != ANY_TENANT:
            tenant = tenant or client.tenant
            if tenant != client.tenant:
                raise OAuthError("invalid_target", "this client is bound to another tenant")
        try:
            identity = self.idps.verify(subject_token, tenant=tenant)
        except InvalidToken as exc:
            self._emit("exchange_rejected", client_id=client.client_id, reason=str(exc))
            raise OAuthError("invalid_grant", "the subject token was not accepted") from None
        if client.tenant not in (ANY_TENANT, identity.tenant):
            raise OAuthError("invalid_grant", "the subject token was not accepted")
        allowed = set(client.scopes)
        if identity.idp.scopes:
            allowed &= set(identity.idp.scopes)
        scopes = self._scopes(scope, frozenset(allowed))
        now = self._clock()
        refresh = new_secret()
        family = Family(
            family_id=secrets.token_urlsafe(12),
            client_id=client.client_id,
            subject=identity.subject,
            tenant=identity.tenant,
            roles=identity.roles,
            scope=" ".join(scopes),
            expires_at=now + self.refresh_lifetime,
            revoked=False,
        )

        def start_family(access: IssuedToken) -> None:
            self.store.start_family(
                family, hash_secret(refresh), now=now, access_jti=access.jti, access_exp=access.exp
            )

        access = self._issue(
            "issued",
            client,
            subject=identity.subject,
            tenant=identity.tenant,
            roles=identity.roles,
            scopes=scopes,
            record=start_family,
            grant=TOKEN_EXCHANGE,
            idp=identity.issuer,
            family_id=family.family_id,
        )
        return TokenResponse(access, refresh, ACCESS_TOKEN_TYPE)

    def refresh(
        self, client: Client, refresh_token: str | None, scope: str | None
    ) -> TokenResponse:
        self._check_grant(client, REFRESH_TOKEN)
        if not refresh_token:
            raise OAuthError("invalid_request", "refresh_token is required")
        now = self._clock()
        found = self.store.find_family(hash_secret(refresh_token))
        if found is None or found[0].client_id != client.client_id:
            raise OAuthError("invalid_grant", "unknown refresh token")
        family = found[0]
        new_refresh = new_secret()

        def rotate(access: IssuedToken) -> None:
            result = self.store.rotate(
                hash_secret(refresh_token),
                hash_secret(new_refresh),
                client_id=client.client_id,
                now=now,
                access_jti=access.jti,
                access_exp=access.exp,
            )
            self._check_rotation(result, client, family)

        access = self._issue(
            "refreshed",
            client,
            subject=family.subject,
            tenant=family.tenant,
            roles=family.roles,
            # Scopes can only narrow within the family's original grant (RFC 6749 §6).
            scopes=self._scopes(scope, tuple(family.scope.split())),
            record=rotate,
            family_id=family.family_id,
        )
        return TokenResponse(access, new_refresh)

    def _check_rotation(self, result: RotateResult, client: Client, family: Family) -> None:
        if result.outcome is RotateOutcome.REUSED:
            self.verifier.add_revocations(result.revoked_jtis)
            self._emit(
                "reuse_detected",
                client_id=client.client_id,
                family_id=family.family_id,
                subject=family.subject,
                tenant=family.tenant,
                revoked_access_tokens=len(result.revoked_jtis),
            )
            raise OAuthError("invalid_grant", "refresh token already used; its family is revoked")
        if result.outcome is not RotateOutcome.ROTATED:
            raise OAuthError("invalid_grant", f"refresh token {result.outcome.value}")

    # -- revocation and introspection ----------------------------------------------------------

    def revoke(self, client: Client, token: str, hint: str | None = None) -> None:
        """RFC 7009. Unknown, invalid or foreign tokens are a silent no-op (the answer is 200)."""
        now = self._clock()
        if hint != "access_token":
            found = self.store.find_family(hash_secret(token))
            if found is not None:
                family = found[0]
                if family.client_id == client.client_id and not family.revoked:
                    jtis = self.store.revoke_family(family.family_id, now)
                    self.verifier.add_revocations(jtis)
                    self._emit(
                        "revoked",
                        kind="refresh_family",
                        client_id=client.client_id,
                        family_id=family.family_id,
                        access_tokens=len(jtis),
                    )
                return
        try:
            subject = self.verifier.verify(token)
        except InvalidToken:
            return
        if subject.client_id != client.client_id:
            return
        self.revoke_jti(subject.jti, subject.exp, client_id=client.client_id)

    def revoke_jti(self, jti: str, exp: float, *, client_id: str | None = None) -> None:
        """Deny an access token by its jti, durably, and evict it from the verified cache."""
        self.store.revoke_jti(jti, exp, self._clock())
        self.verifier.revoke(jti, exp)
        self._emit("revoked", kind="access_token", jti=jti, client_id=client_id)

    def introspect(self, client: Client, token: str) -> dict[str, Any]:
        """RFC 7662: an active token's claims; `{"active": false}` and nothing else otherwise."""
        found = self.store.find_family(hash_secret(token))
        if found is not None:
            family, spent, expires_at = found
            active = (
                family.client_id == client.client_id
                and not family.revoked
                and not spent
                and self._clock() < expires_at
            )
            if not active:
                return {"active": False}
            return {
                "active": True,
                "token_type": "refresh_token",
                "client_id": family.client_id,
                "sub": family.subject,
                "tenant": family.tenant,
                "scope": family.scope,
                "exp": int(expires_at),
            }
        try:
            subject = self.verifier.verify(token)
        except InvalidToken:
            return {"active": False}
        return {
            "active": True,
            "token_type": "Bearer",
            "client_id": subject.client_id,
            "sub": subject.subject,
            "tenant": subject.tenant,
            "roles": list(subject.roles),
            "scope": " ".join(sorted(subject.scopes)),
            "exp": subject.exp,
            "iss": subject.issuer,
            "aud": self.verifier.audience,
            "jti": subject.jti,
        }

    def sync_revocations(self) -> int:
        """Pull revocations other processes wrote to the shared store. Returns how many."""
        with self._sync_lock:
            self._revocation_seq, entries = self.store.revoked_since(
                self._revocation_seq, self._clock()
            )
            self.verifier.add_revocations(entries)
        return len(entries)
