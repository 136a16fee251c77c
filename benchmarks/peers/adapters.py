"""Each scenario expressed natively for each in-process peer: cedarpy, pycasbin, regopy, and ours.

`ADAPTERS[peer][kind](scenario)` builds the peer's policy and data once and returns
`decide(request) -> bool`. Runs inside benchmarks/.peers-venv, where the peers are installed.
"""

from __future__ import annotations

import json
import tempfile
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from benchmarks.scenarios import Scenario
from pdp.model import Request

Decide = Callable[[Request], bool]


# ---- ours -----------------------------------------------------------------------------------------


def pdp_any(scenario: Scenario) -> Decide:
    from benchmarks.cases import build_engine

    engine, _ = build_engine(scenario, cache_ttl=0)
    return lambda r: engine.check(r).allowed


# ---- cedarpy: policies and entities parsed once into reusable handles ----------------------------


def _uid(t: str, i: str) -> dict[str, str]:
    return {"type": t, "id": i}


def _cedar(policies: str, entities: list[dict[str, Any]]) -> tuple[Any, Any]:
    import cedarpy

    return cedarpy.PolicySet.from_str(policies), cedarpy.Entities.from_json_str(
        json.dumps(entities)
    )


def _cedar_decide(
    policies: Any, entities: Any, make: Callable[[Request], dict[str, Any]]
) -> Decide:
    import cedarpy

    def decide(req: Request) -> bool:
        return bool(cedarpy.is_authorized(make(req), policies, entities).allowed)

    return decide


def cedar_rbac(sc: Scenario) -> Decide:
    d = sc.data
    # Role inheritance is Cedar's entity hierarchy: a role is a child of the roles it extends.
    policies = "\n".join(
        f'permit(principal in Role::"{role}", action == Action::"{a}", resource is {t});'
        for role in d["roles"]
        for t, a in d["grants"][role]
    )
    entities = [
        {"uid": _uid("Role", r), "attrs": {}, "parents": [_uid("Role", p) for p in d["parents"][r]]}
        for r in d["roles"]
    ]
    users = {r.subject.id: r.subject for r in sc.requests}
    entities += [
        {
            "uid": _uid("User", u.id),
            "attrs": {},
            "parents": [_uid("Role", x) for x in sorted(u.attrs["roles"])],
        }
        for u in users.values()
    ]
    ps, es = _cedar(policies, entities)
    return _cedar_decide(
        ps,
        es,
        lambda r: {
            "principal": f'User::"{r.subject.id}"',
            "action": f'Action::"{r.action}"',
            "resource": f'{r.resource.type}::"{r.resource.id}"',
            "context": {},
        },
    )


CEDAR_ABAC = """
forbid(principal, action, resource) when { resource.tenant != principal.tenant };
forbid(principal, action in [Action::"update", Action::"delete"], resource) when { resource.archived };
permit(principal, action == Action::"read", resource) when { principal.clearance >= resource.classification };
permit(principal, action in [Action::"update", Action::"delete"], resource) when { resource.owner == principal };
"""


def cedar_abac(sc: Scenario) -> Decide:
    d = sc.data
    entities = [
        {"uid": _uid("User", s.id), "attrs": dict(s.attrs), "parents": []} for s in d["subjects"]
    ]
    entities += [
        {
            "uid": _uid("Document", r.id),
            "attrs": {**r.attrs, "owner": {"__entity": _uid("User", r.attrs["owner"])}},
            "parents": [],
        }
        for r in d["resources"]
    ]
    ps, es = _cedar(CEDAR_ABAC, entities)
    return _cedar_decide(
        ps,
        es,
        lambda r: {
            "principal": f'User::"{r.subject.id}"',
            "action": f'Action::"{r.action}"',
            "resource": f'Document::"{r.resource.id}"',
            "context": {},
        },
    )


def cedar_rebac(sc: Scenario) -> Decide:
    """Cedar has no relation tuples; the native encoding is its entity hierarchy. Holding a
    grant on an object makes the user (or group) a child of it, a folder is a parent of its
    children, groups are parents of their members: `principal in resource` is then `view`."""
    parents: dict[tuple[str, str], set[tuple[str, str]]] = defaultdict(set)
    kinds = {"user": "User", "group": "Group", "document": "document", "folder": "folder"}
    for t in sc.tuples:
        obj = (kinds[t.object_type], t.object_id)
        sub = (kinds[t.subject_type], t.subject_id)
        if t.relation == "parent":  # document -> folder: the folder's viewers view the document
            parents[sub].add(obj)
            parents.setdefault(obj, set())
        else:  # member, viewer, editor, owner: the subject is inside the object
            parents[sub].add(obj)
            parents.setdefault(obj, set())
    entities = [
        {"uid": _uid(*k), "attrs": {}, "parents": [_uid(*p) for p in sorted(v)]}
        for k, v in parents.items()
    ]
    policies = (
        'permit(principal, action == Action::"read", resource) when { principal in resource };'
    )
    ps, es = _cedar(policies, entities)
    return _cedar_decide(
        ps,
        es,
        lambda r: {
            "principal": f'User::"{r.subject.id}"',
            "action": f'Action::"{r.action}"',
            "resource": f'{r.resource.type}::"{r.resource.id}"',
            "context": {},
        },
    )


# ---- pycasbin -------------------------------------------------------------------------------------


def _casbin(model: str, lines: list[str]) -> Any:
    import casbin

    tmp = Path(tempfile.mkdtemp(prefix="casbin-"))
    (tmp / "model.conf").write_text(model, encoding="utf-8")
    (tmp / "policy.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return casbin.Enforcer(str(tmp / "model.conf"), str(tmp / "policy.csv"))


CASBIN_RBAC = """
[request_definition]
r = sub, obj, act
[policy_definition]
p = sub, obj, act
[role_definition]
g = _, _
[policy_effect]
e = some(where (p.eft == allow))
[matchers]
m = g(r.sub, p.sub) && r.obj == p.obj && r.act == p.act
"""


def casbin_rbac(sc: Scenario) -> Decide:
    d = sc.data
    lines = [f"p, {role}, {t}, {a}" for role in d["roles"] for t, a in d["grants"][role]]
    lines += [f"g, {r}, {p}" for r in d["roles"] for p in d["parents"][r]]
    users = {r.subject.id: r.subject for r in sc.requests}
    lines += [f"g, {u.id}, {x}" for u in users.values() for x in sorted(u.attrs["roles"])]
    e = _casbin(CASBIN_RBAC, lines)
    return lambda r: bool(e.enforce(r.subject.id, r.resource.type, r.action))


CASBIN_ABAC = """
[request_definition]
r = sub, obj, act
[policy_definition]
p = act
[policy_effect]
e = some(where (p.eft == allow))
[matchers]
m = r.sub.tenant == r.obj.tenant && r.act == p.act && ((p.act == "read" && r.sub.clearance >= r.obj.classification) || (p.act != "read" && r.obj.archived == False && r.obj.owner == r.sub.id))
"""


def casbin_abac(sc: Scenario) -> Decide:
    e = _casbin(CASBIN_ABAC, ["p, read", "p, update", "p, delete"])

    def decide(r: Request) -> bool:
        sub = SimpleNamespace(id=r.subject.id, **r.subject.attrs)
        obj = SimpleNamespace(**r.resource.attrs)
        return bool(e.enforce(sub, obj, r.action))

    return decide


CASBIN_REBAC = """
[request_definition]
r = sub, obj, act
[policy_definition]
p = sub, obj, act
[role_definition]
g = _, _
g2 = _, _
[policy_effect]
e = some(where (p.eft == allow))
[matchers]
m = g(r.sub, p.sub) && g2(r.obj, p.obj) && r.act == p.act
"""


def casbin_rebac(sc: Scenario) -> Decide:
    """Group membership is casbin's role graph `g` (nested groups are roles of roles); the folder
    tree is a second role graph `g2`; every viewer/editor/owner tuple is a policy line."""
    lines = []
    for t in sc.tuples:
        obj, sub = f"{t.object_type}:{t.object_id}", f"{t.subject_type}:{t.subject_id}"
        if t.relation == "member":
            lines.append(f"g, {sub}, {obj}")
        elif t.relation == "parent":
            lines.append(f"g2, {obj}, {sub}")
        else:
            lines.append(f"p, {sub}, {obj}, read")
    e = _casbin(CASBIN_REBAC, lines)
    return lambda r: bool(e.enforce(f"user:{r.subject.id}", str(r.resource), r.action))


# ---- regopy (rego-cpp) ------------------------------------------------------------------------------

REGO_RBAC = """package rbac

default allow := false

allow if {
  some r in graph.reachable(data.parents, input.roles)
  some g in data.grants[r]
  g.type == input.type
  g.action == input.action
}
"""

REGO_ABAC = """package abac

default allow := false

writes := {"update", "delete"}

forbid if {
  input.subject.tenant != input.resource.tenant
}

forbid if {
  writes[input.action]
  input.resource.archived
}

permit if {
  input.action == "read"
  input.subject.clearance >= input.resource.classification
}

permit if {
  writes[input.action]
  input.resource.owner == input.subject.id
}

allow if {
  permit
  not forbid
}
"""

REGO_REBAC = """package rebac

default allow := false

allow if {
  input.action == "read"
  ids := graph.reachable(data.member_of, {input.subject})
  some o in graph.reachable(data.parent, {input.resource})
  some s in data.grants[o]
  s in ids
}
"""


def _rego(module: str, package: str, data: dict[str, Any]) -> Callable[[dict[str, Any]], bool]:
    import regopy

    rego = regopy.Interpreter()
    rego.add_data_json(json.dumps(data))
    rego.add_module(f"{package}.rego", module)
    # rego-cpp 1.5 answers `undefined` for `data.pkg.allow` when a default rule applies and
    # another rule of the package is true; querying the package document avoids that bug.
    query = f"data.{package}"

    def ask(inp: dict[str, Any]) -> bool:
        rego.set_input_term(json.dumps(inp))
        out = str(rego.query(query))
        try:
            return json.loads(out)["expressions"][0]["allow"] is True
        except (ValueError, KeyError, IndexError, TypeError):
            raise RuntimeError(f"rego: {out[:300]}") from None

    return ask


def rego_rbac(sc: Scenario) -> Decide:
    d = sc.data
    ask = _rego(
        REGO_RBAC,
        "rbac",
        {
            "parents": d["parents"],
            "grants": {
                r: [{"type": t, "action": a} for t, a in d["grants"][r]] for r in d["roles"]
            },
        },
    )
    return lambda r: ask(
        {"roles": sorted(r.subject.attrs["roles"]), "type": r.resource.type, "action": r.action}
    )


def rego_abac(sc: Scenario) -> Decide:
    ask = _rego(REGO_ABAC, "abac", {})
    return lambda r: ask(
        {
            "subject": {"id": r.subject.id, **r.subject.attrs},
            "resource": dict(r.resource.attrs),
            "action": r.action,
        }
    )


def rego_rebac(sc: Scenario) -> Decide:
    member_of: dict[str, list[str]] = defaultdict(list)
    parent: dict[str, list[str]] = defaultdict(list)
    grants: dict[str, list[str]] = defaultdict(list)
    for t in sc.tuples:
        obj, sub = f"{t.object_type}:{t.object_id}", f"{t.subject_type}:{t.subject_id}"
        if t.relation == "member":
            member_of[sub].append(obj)
            member_of.setdefault(obj, [])
        elif t.relation == "parent":
            parent[obj].append(sub)
            parent.setdefault(sub, [])
        else:
            grants[obj].append(sub)
            member_of.setdefault(sub, [])
            parent.setdefault(obj, [])
    ask = _rego(REGO_REBAC, "rebac", {"member_of": member_of, "parent": parent, "grants": grants})
    return lambda r: ask(
        {"subject": f"user:{r.subject.id}", "resource": str(r.resource), "action": r.action}
    )


ADAPTERS: dict[str, dict[str, Callable[[Scenario], Decide]]] = {
    "pdp": {"rbac": pdp_any, "abac": pdp_any, "rebac": pdp_any},
    "cedarpy": {"rbac": cedar_rbac, "abac": cedar_abac, "rebac": cedar_rebac},
    "pycasbin": {"rbac": casbin_rbac, "abac": casbin_abac, "rebac": casbin_rebac},
    "regopy": {"rbac": rego_rbac, "abac": rego_abac, "rebac": rego_rebac},
}
