"""Tenant confinement: which tenant a tuple's object and subject belong to, and what a credential
bound to one tenant may write, delete and read.

A bundle declares it in `bundle.toml` (`[tenancy]`): ids of `tenant_type` name a tenant
(`tenant:acme` is acme), and ids of the `prefixed` types start with their tenant (`document:acme/d1`,
`user:acme/alice`, as the token exchange names subjects). An id of any other type belongs to no
tenant. Exceptions: `TenantDenied(PermissionError)`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pdp.errors import PermissionDenied
from pdp.identifiers import WILDCARD, is_name
from pdp.model import RelationTuple

# A token's `tenant` claim for a client bound to no tenant (an operator's credential).
ANY_TENANT = "*"


class TenantDenied(PermissionDenied):
    """A credential bound to one tenant asked to touch another tenant's tuples (PERMISSION_DENIED)."""


@dataclass(frozen=True, slots=True)
class Caller:
    """Who makes an admin call: the verified subject, and the one tenant its credential is bound
    to (None: bound to no tenant, which only an operator's credential or --insecure-admin is)."""

    subject: str = ""
    tenant: str | None = None

    @classmethod
    def from_claims(cls, subject: str, tenant: str) -> Caller:
        return cls(subject, None if tenant == ANY_TENANT else tenant)


# A caller bound to no tenant: in-process callers, and admin calls under --insecure-admin.
OPERATOR = Caller()


@dataclass(frozen=True, slots=True)
class Tenancy:
    tenant_type: str = ""  # "" = no type names a tenant
    prefixed: frozenset[str] = frozenset()

    def tenant_of(self, type_name: str, object_id: str) -> str | None:
        """The tenant an entity belongs to, or None if it belongs to none."""
        if type_name == self.tenant_type:
            return object_id
        if type_name in self.prefixed:
            tenant, slash, rest = object_id.partition("/")
            if slash and tenant and rest:
                return tenant
        return None

    def unknown_types(self, known: set[str]) -> list[str]:
        """The type names this declares that the schema does not have."""
        named = {self.tenant_type} if self.tenant_type else set()
        return sorted((named | self.prefixed) - known)

    def confine(self, caller: Caller, tuples: Iterable[RelationTuple], verb: str) -> None:
        """Raise TenantDenied unless `caller` may `verb` (write, delete) every tuple."""
        if caller.tenant is None:
            return
        for t in tuples:
            problem = self._outside(caller.tenant, t)
            if problem:
                raise TenantDenied(
                    f"`{t}`: {problem}; a credential bound to tenant `{caller.tenant}` may only "
                    f"{verb} tuples of its own tenant (cross-tenant changes need a credential "
                    "bound to no tenant)"
                )

    def visible(self, caller: Caller, t: RelationTuple) -> bool:
        return caller.tenant is None or not self._outside(caller.tenant, t)

    def confine_filter(self, caller: Caller, filters: Mapping[str, str | None]) -> None:
        """A read naming an object or subject of another tenant is refused, not answered empty."""
        if caller.tenant is None:
            return
        for kind in ("object", "subject"):
            type_name, object_id = filters.get(f"{kind}_type"), filters.get(f"{kind}_id")
            if type_name and object_id and object_id != WILDCARD:
                owner = self.tenant_of(type_name, object_id)
                if owner != caller.tenant:
                    raise TenantDenied(
                        f"`{type_name}:{object_id}` is not in tenant `{caller.tenant}`, the only "
                        "tenant this credential may read"
                    )

    def _outside(self, tenant: str, t: RelationTuple) -> str:
        """Why `t` is outside `tenant` ("" if it is inside)."""
        owner = self.tenant_of(t.object_type, t.object_id)
        if owner != tenant:
            return _where("its object", owner)
        if t.subject_id != WILDCARD:  # `user:*`: every user, in no tenant in particular
            owner = self.tenant_of(t.subject_type, t.subject_id)
            if owner != tenant:
                return _where("its subject", owner)
        return ""


def _where(what: str, owner: str | None) -> str:
    return f"{what} is in tenant `{owner}`" if owner else f"{what} belongs to no tenant"


def parse_tenancy(raw: Any) -> tuple[Tenancy, list[str]]:
    """The `[tenancy]` table of bundle.toml, and a message per problem in it."""
    if raw is None:
        return Tenancy(), []
    if not isinstance(raw, dict):
        return Tenancy(), ["`tenancy` must be a table"]
    problems = []
    unknown = sorted(set(raw) - {"tenant_type", "prefixed"})
    if unknown:
        problems.append(f"unknown key `tenancy.{unknown[0]}` (known: `tenant_type`, `prefixed`)")
    tenant_type = raw.get("tenant_type", "")
    if not isinstance(tenant_type, str) or (tenant_type and not is_name(tenant_type)):
        problems.append("`tenancy.tenant_type` must be a type name")
        tenant_type = ""
    prefixed = raw.get("prefixed", [])
    if not isinstance(prefixed, list) or not all(is_name(p) for p in prefixed):
        problems.append("`tenancy.prefixed` must be a list of type names")
        prefixed = []
    return Tenancy(tenant_type, frozenset(prefixed)), problems
