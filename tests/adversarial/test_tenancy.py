"""Tenant confinement: a credential bound to one tenant can never change, or read, another
tenant's tuples, so it can never change a decision in another tenant."""

from __future__ import annotations

from pathlib import Path

import grpc

from pdp._proto.pdp.v1 import pdp_pb2

from .saas import document, user
from .serve import ServeFactory, code_of, operator_token

DENIED = grpc.StatusCode.PERMISSION_DENIED
OK = grpc.StatusCode.OK


def test_a_tenant_bound_credential_stays_in_its_tenant(
    pdp_serve: ServeFactory, saas_bundle: Path
) -> None:
    served = pdp_serve.start(saas_bundle)
    globex = served.token(
        *pdp_serve.client(tenant="globex", scopes=("tuples:write", "tuples:read", "audit:read"))
    )
    mallory, acme_doc = user("acme/mallory"), document("acme/d1")

    def share() -> int:
        return served.check(mallory, "share", acme_doc).decision

    assert share() == pdp_pb2.EFFECT_DENY
    for writes, deletes in (
        (["tenant:acme#admin@user:acme/mallory"], []),  # the attack that was found
        (["tenant:globex#admin@user:acme/mallory"], []),  # a subject of another tenant
        (["document:acme/d1#viewer@user:*"], []),
        (["group:globex/eng#member@group:acme/eng#member"], []),
        (["tenant:acme#admin@user:grace"], []),  # grace belongs to no tenant
        ([], ["tenant:acme#admin@user:grace"]),
        (["tenant:globex#admin@user:globex/bob"], ["tenant:acme#admin@user:grace"]),
    ):
        code = code_of(lambda: served.write(globex, writes, deletes))  # noqa: B023
        assert code == DENIED, (writes, deletes)
    assert share() == pdp_pb2.EFFECT_DENY
    grace = user("grace")
    assert served.check(grace, "share", document("spec-1")).decision == pdp_pb2.EFFECT_ALLOW

    # its own tenant: allowed, and it decides there
    assert code_of(lambda: served.write(globex, ["tenant:globex#admin@user:globex/bob"])) == OK
    bob, globex_doc = user("globex/bob", tenant="globex"), document("globex/d1", tenant="globex")
    assert served.check(bob, "share", globex_doc).decision == pdp_pb2.EFFECT_ALLOW

    # reads: only its own tenant's tuples, and naming another tenant's object is refused
    admin = served.admin(globex)
    listed = admin.ReadTuples(pdp_pb2.ReadTuplesRequest(page_size=1000)).tuples
    assert [(t.object_id, t.subject_id) for t in listed] == [("globex", "globex/bob")]
    named = pdp_pb2.ReadTuplesRequest(object_type="tenant", object_id="acme", relation="admin")
    assert code_of(lambda: admin.ReadTuples(named)) == DENIED
    # the audit stream spans every tenant's decisions
    stream = admin.SubscribeAudit(pdp_pb2.SubscribeAuditRequest())
    assert code_of(lambda: next(stream)) == DENIED

    # cross-tenant changes need a credential bound to no tenant
    operator = operator_token(pdp_serve, served)
    assert code_of(lambda: served.write(operator, ["tenant:acme#admin@user:acme/mallory"])) == OK
    assert share() == pdp_pb2.EFFECT_ALLOW
    served.stop()


def test_tuples_of_types_without_a_tenant_need_an_operator(
    pdp_serve: ServeFactory, saas_bundle: Path
) -> None:
    """A bundle that declares no tenancy: every id belongs to no tenant, so a tenant-bound
    credential may change nothing (fail closed), while an operator may."""
    manifest = saas_bundle / "bundle.toml"
    manifest.write_text(manifest.read_text().split("[tenancy]")[0])
    served = pdp_serve.start(saas_bundle)
    acme = served.token(*pdp_serve.client(tenant="acme", scopes=("tuples:write",)))
    assert code_of(lambda: served.write(acme, ["document:acme/d1#viewer@user:acme/bob"])) == DENIED
    operator = operator_token(pdp_serve, served)
    assert code_of(lambda: served.write(operator, ["document:d1#viewer@user:bob"])) == OK
    served.stop()
