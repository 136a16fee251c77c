"""The identity a verified token proves: who, in which tenant, with which roles and scopes."""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

from pdp.model import Entity

# A bearer holding this scope may use every admin operation; narrower scopes name one.
ADMIN_SCOPE = "admin"


@dataclass(frozen=True, slots=True)
class VerifiedSubject:
    """What a valid access token says. It proves identity, never permission: the policy decides."""

    subject: str
    tenant: str
    roles: tuple[str, ...]
    scopes: frozenset[str]
    client_id: str
    jti: str
    exp: int
    issuer: str

    def allows(self, scope: str) -> bool:
        """True if the token carries `scope` or the umbrella admin scope.

        A False here is a *deny* (403 / PERMISSION_DENIED), never an unauthenticated answer.
        """
        return scope in self.scopes or ADMIN_SCOPE in self.scopes

    def to_entity(self, entity_type: str = "user") -> Entity:
        """The subject as the engine sees it: id from `sub`; tenant, roles, scopes as attributes."""
        return Entity(
            entity_type,
            self.subject,
            MappingProxyType(
                {
                    "tenant": self.tenant,
                    "roles": frozenset(self.roles),
                    "scopes": self.scopes,
                    "client_id": self.client_id,
                }
            ),
        )
