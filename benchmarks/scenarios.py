"""Seeded benchmark scenarios (RBAC, ABAC, ReBAC, a mixed SaaS day), each with a plain-Python oracle.

A scenario is data (policy text, tuples, requests) plus the oracle's answer for every request.
Every engine measured here, ours and the peers, is checked against these answers first: a
benchmark whose answers are wrong is worthless. The oracles are deliberately written differently
from both the engine and the baselines (baselines.py), so that one bug cannot hide in two places.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pdp.model import Entity, RelationTuple, Request

SEED = 20240601


@dataclass
class Scenario:
    """One generated workload: the policy, the tuples, the requests and the oracle's answers."""

    name: str
    policy: str
    tuples: list[RelationTuple]
    requests: list[Request]
    expected: list[bool]
    oracle: Callable[[Request], bool]
    data: dict[str, Any] = field(default_factory=dict)  # the raw model, for baselines and peers

    def check_answers(self, decide: Callable[[Request], bool], who: str) -> None:
        """Raise OracleMismatch naming the first few requests where `decide` disagrees."""
        wrong = [
            (r, want)
            for r, want in zip(self.requests, self.expected, strict=True)
            if decide(r) != want
        ]
        if wrong:
            raise OracleMismatch(self.name, who, wrong, len(self.requests))


class OracleMismatch(AssertionError):
    def __init__(self, scenario: str, who: str, wrong: list[tuple[Request, bool]], total: int):
        self.scenario, self.who, self.wrong, self.total = scenario, who, wrong, total
        sample = "; ".join(
            f"{r.subject}:{r.action}:{r.resource} expected {'allow' if w else 'deny'}"
            for r, w in wrong[:3]
        )
        super().__init__(
            f"{who} disagrees with the {scenario} oracle on {len(wrong)}/{total}: {sample}"
        )


def write_bundle(
    directory: Path, name: str, policy: str, tuples: Iterable[RelationTuple] = ()
) -> Path:
    """Write a loadable bundle directory (manifest, one policy file, one tuple file)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "bundle.toml").write_text(
        f'name = "{name}"\nrevision = "1"\n\n[settings]\nmax_depth = 25\n', encoding="utf-8"
    )
    (directory / "policy.pdp").write_text(policy, encoding="utf-8")
    with (directory / "tuples.jsonl").open("w", encoding="utf-8") as f:
        for t in tuples:
            subject = f"{t.subject_type}:{t.subject_id}"
            if t.subject_relation:
                subject += f"#{t.subject_relation}"
            obj = {"object": f"{t.object_type}:{t.object_id}", "relation": t.relation}
            f.write(json.dumps({**obj, "subject": subject}) + "\n")
    return directory


def _sample_requests(rng: random.Random, n: int, make: Callable[[bool], Request]) -> list[Request]:
    """Half the requests are steered towards an allow, so both answers are well exercised."""
    return [make(i % 2 == 0) for i in range(n)]


# ---- RBAC: 50 roles in a 4-level hierarchy, 200 grants, roles from the token's claims ------------

RBAC_LEVELS = (5, 10, 15, 20)  # roles per level; level L extends one or two roles of level L-1
RBAC_TYPES = 8
RBAC_ACTIONS = 10
RBAC_GRANTS = 200


def rbac(*, seed: int = SEED, users: int = 2_000, n_requests: int = 2_000) -> Scenario:
    rng = random.Random(seed)
    types = [f"res{i}" for i in range(RBAC_TYPES)]
    actions = [f"a{i}" for i in range(RBAC_ACTIONS)]
    roles: list[str] = []
    parents: dict[str, list[str]] = {}
    for level, count in enumerate(RBAC_LEVELS):
        below = [r for r in roles if r.startswith(f"r{level - 1}_")]
        for i in range(count):
            name = f"r{level}_{i}"
            k = 1 if level < 2 else rng.choice((1, 2))
            parents[name] = sorted(rng.sample(below, k)) if below else []
            roles.append(name)
    pairs = [(t, a) for t in types for a in actions]
    grants: dict[str, list[tuple[str, str]]] = {r: [] for r in roles}
    for i, role in enumerate(roles * (RBAC_GRANTS // len(roles))):
        del i
        choice = rng.choice(pairs)
        while choice in grants[role]:
            choice = rng.choice(pairs)
        grants[role].append(choice)
    lines = ["type user { attributes { roles: set<string> } }"]
    lines += [f"type {t} {{ actions {', '.join(actions)} }}" for t in types]
    for role in roles:
        ext = f" extends {', '.join(parents[role])}" if parents[role] else ""
        body = "\n".join(f"  allow {a} on {t}" for t, a in grants[role])
        lines.append(f"role {role}{ext} {{\n{body}\n}}")
    lines.append("bind roles from subject.roles")
    policy = "\n".join(lines) + "\n"

    def role_grants(role: str) -> set[tuple[str, str]]:
        # The oracle walks the hierarchy upwards on every question: no precomputed closure.
        out = set(grants[role])
        for p in parents[role]:
            out |= role_grants(p)
        return out

    def oracle(req: Request) -> bool:
        held = req.subject.attrs.get("roles", frozenset())
        return any((req.resource.type, req.action) in role_grants(r) for r in held)  # type: ignore[union-attr]

    subjects = [
        Entity("user", f"u{i}", {"roles": frozenset(rng.sample(roles, rng.randint(1, 3)))})
        for i in range(users)
    ]

    def make(steer: bool) -> Request:
        s = rng.choice(subjects)
        if steer:
            allowed = sorted(set().union(*(role_grants(r) for r in s.attrs["roles"])))  # type: ignore[union-attr]
            t, a = rng.choice(allowed)
        else:
            t, a = rng.choice(types), rng.choice(actions)
        return Request(s, a, Entity(t, f"x{rng.randrange(1000)}"))

    requests = _sample_requests(rng, n_requests, make)
    return Scenario(
        "rbac",
        policy,
        [],
        requests,
        [oracle(r) for r in requests],
        oracle,
        {"roles": roles, "parents": parents, "grants": grants, "types": types, "actions": actions},
    )


# ---- ABAC: multi-tenant documents, clearance, ownership, and two forbids -------------------------

ABAC_POLICY = """\
type user { attributes { tenant: string, clearance: int } }
type document {
  attributes { tenant: string, classification: int, owner: string, archived: bool }
  actions read, update, delete
}
forbid tenant_isolation as not_found: * on document when resource.tenant != subject.tenant
forbid archived_is_read_only: update, delete on document when resource.archived == true
permit cleared_read: read on document when subject.clearance >= resource.classification
permit owner_writes: update, delete on document when resource.owner == subject.id
"""


def abac(
    *,
    seed: int = SEED,
    tenants: int = 50,
    users: int = 5_000,
    docs: int = 20_000,
    n_requests: int = 2_000,
) -> Scenario:
    rng = random.Random(seed + 1)
    tenant_ids = [f"t{i}" for i in range(tenants)]
    subjects = [
        Entity("user", f"u{i}", {"tenant": rng.choice(tenant_ids), "clearance": rng.randint(0, 3)})
        for i in range(users)
    ]
    by_id = {s.id: s for s in subjects}
    by_tenant: dict[str, list[Entity]] = defaultdict(list)
    for s in subjects:
        by_tenant[s.attrs["tenant"]].append(s)  # type: ignore[index]
    resources = []
    for i in range(docs):
        owner = rng.choice(subjects)
        resources.append(
            Entity(
                "document",
                f"d{i}",
                {
                    "tenant": owner.attrs["tenant"],
                    "classification": rng.randint(0, 3),
                    "owner": owner.id,
                    "archived": rng.random() < 0.1,
                },
            )
        )
    docs_by_tenant: dict[str, list[Entity]] = defaultdict(list)
    for r in resources:
        docs_by_tenant[r.attrs["tenant"]].append(r)  # type: ignore[index]

    def oracle(req: Request) -> bool:
        s, r = req.subject.attrs, req.resource.attrs
        if s["tenant"] != r["tenant"]:
            return False
        if req.action == "read":
            return s["clearance"] >= r["classification"]  # type: ignore[operator]
        if req.action in ("update", "delete"):
            return not r["archived"] and r["owner"] == req.subject.id
        return False

    def make(steer: bool) -> Request:
        if steer:
            r = rng.choice(resources)
            action = rng.choice(("read", "read", "update", "delete"))
            pool = by_tenant[r.attrs["tenant"]]  # type: ignore[index]
            owner = action != "read" and rng.random() < 0.8
            s = by_id[r.attrs["owner"]] if owner else rng.choice(pool)  # type: ignore[index]
        else:
            s = rng.choice(subjects)
            pool = docs_by_tenant[s.attrs["tenant"]]  # type: ignore[index]
            r = rng.choice(pool) if pool and rng.random() < 0.5 else rng.choice(resources)
            action = rng.choice(("read", "update", "delete"))
        return Request(s, action, r)

    requests = _sample_requests(rng, n_requests, make)
    return Scenario(
        "abac",
        ABAC_POLICY,
        [],
        requests,
        [oracle(r) for r in requests],
        oracle,
        {"subjects": subjects, "resources": resources},
    )


# ---- ReBAC: nested groups, folder chains, documents shared with users and groups -----------------

REBAC_POLICY = """\
type user { }
type group { relation member: user | group#member }
type folder {
  actions read
  relation owner: user
  relation editor: user | group#member
  relation viewer: user | group#member
  relation parent: folder
  permission view = viewer + editor + owner + parent->view
}
type document {
  actions read
  relation owner: user
  relation editor: user | group#member
  relation viewer: user | group#member
  relation parent: folder
  permission view = viewer + editor + owner + parent->view
}
permit shared_read: read on document, folder when subject has view on resource
"""

GRANT_RELATIONS = ("viewer", "editor", "owner")


def rebac_tuples(rng: random.Random, n_tuples: int) -> tuple[list[RelationTuple], dict[str, int]]:
    """About `n_tuples` tuples: groups nested three deep, folders chained three deep, documents."""
    scale = n_tuples / 91_700  # duplicates are dropped: this lands within ~1% of n_tuples
    n_users = max(20, int(10_000 * scale))
    n_groups = max(6, int(1_500 * scale))
    n_folders = max(6, int(4_000 * scale))
    n_docs = max(10, int(20_000 * scale))
    out: list[RelationTuple] = []
    T = RelationTuple
    # Groups in three levels: level 0 holds users, level k holds groups of level k-1 (and users).
    for g in range(n_groups):
        level = g % 3
        for _ in range(6):
            out.append(T("group", f"g{g}", "member", "user", f"u{rng.randrange(n_users)}"))
        if level > 0:
            for _ in range(2):
                child = rng.randrange(n_groups // 3) * 3 + level - 1
                out.append(T("group", f"g{g}", "member", "group", f"g{child}", "member"))
    # Folders chained: folder f's parent is a folder of the level above (level = f % 3).
    for f in range(n_folders):
        level = f % 3
        if level > 0:
            up = rng.randrange(n_folders // 3) * 3 + level - 1
            out.append(T("folder", f"f{f}", "parent", "folder", f"f{up}"))
        out.append(T("folder", f"f{f}", "owner", "user", f"u{rng.randrange(n_users)}"))
        out.append(_grant(rng, "folder", f"f{f}", n_users, n_groups))
    for d in range(n_docs):
        out.append(T("document", f"d{d}", "parent", "folder", f"f{rng.randrange(n_folders)}"))
        out.append(T("document", f"d{d}", "owner", "user", f"u{rng.randrange(n_users)}"))
        out.append(_grant(rng, "document", f"d{d}", n_users, n_groups))
        if rng.random() < 0.5:
            out.append(_grant(rng, "document", f"d{d}", n_users, n_groups))
    sizes = {"users": n_users, "groups": n_groups, "folders": n_folders, "docs": n_docs}
    return sorted(set(out)), sizes


def _grant(rng: random.Random, otype: str, oid: str, n_users: int, n_groups: int) -> RelationTuple:
    rel = rng.choice(("viewer", "viewer", "editor"))
    if rng.random() < 0.5:
        return RelationTuple(otype, oid, rel, "group", f"g{rng.randrange(n_groups)}", "member")
    return RelationTuple(otype, oid, rel, "user", f"u{rng.randrange(n_users)}")


class RebacOracle:
    """Subject-first: expand every group the user is in (upwards, via a reverse index), then look
    for any of those subjects on the object or its ancestors. The opposite walk to the baseline."""

    def __init__(self, tuples: Iterable[RelationTuple]) -> None:
        self.grants: dict[str, set[str]] = defaultdict(set)  # "document:d1" -> {"user:u1", ...}
        self.parents: dict[str, set[str]] = defaultdict(set)
        self.member_of: dict[str, set[str]] = defaultdict(set)  # "user:u1" -> {"group:g1", ...}
        for t in tuples:
            self.add(t)

    def add(self, t: RelationTuple) -> None:
        self._apply(t, add=True)

    def remove(self, t: RelationTuple) -> None:
        self._apply(t, add=False)

    def _apply(self, t: RelationTuple, *, add: bool) -> None:
        obj = f"{t.object_type}:{t.object_id}"
        subj = f"{t.subject_type}:{t.subject_id}"
        if t.relation == "member":
            target, key, value = self.member_of, subj, obj
        elif t.relation == "parent":
            target, key, value = self.parents, obj, subj
        else:
            target, key, value = self.grants, obj, subj
        if add:
            target[key].add(value)
        else:
            target[key].discard(value)

    def identities(self, subject: str) -> set[str]:
        seen = {subject}
        frontier = [subject]
        while frontier:
            nxt = []
            for s in frontier:
                for g in self.member_of.get(s, ()):
                    if g not in seen:
                        seen.add(g)
                        nxt.append(g)
            frontier = nxt
        return seen

    def can_view(self, subject: str, obj: str) -> bool:
        ids = self.identities(subject)
        seen: set[str] = set()
        frontier = [obj]
        while frontier:
            nxt = []
            for o in frontier:
                if o in seen:
                    continue
                seen.add(o)
                if self.grants.get(o, set()) & ids:
                    return True
                nxt.extend(self.parents.get(o, ()))
            frontier = nxt
        return False

    def __call__(self, req: Request) -> bool:
        if req.action != "read" or req.resource.type not in ("document", "folder"):
            return False
        return self.can_view(f"{req.subject.type}:{req.subject.id}", str(req.resource))


def rebac(*, seed: int = SEED, n_tuples: int = 100_000, n_requests: int = 2_000) -> Scenario:
    rng = random.Random(seed + 2)
    tuples, sizes = rebac_tuples(rng, n_tuples)
    oracle = RebacOracle(tuples)
    # Steered requests pick a user who really holds a grant somewhere up the object's chain.
    members: dict[str, list[str]] = defaultdict(list)
    for t in tuples:
        if t.relation == "member":
            members[f"group:{t.object_id}"].append(f"{t.subject_type}:{t.subject_id}")

    def some_user(subject: str, depth: int = 0) -> str | None:
        if subject.startswith("user:"):
            return subject
        if depth > 5 or not members.get(subject):
            return None
        return some_user(rng.choice(members[subject]), depth + 1)

    def make(steer: bool) -> Request:
        doc = f"document:d{rng.randrange(sizes['docs'])}"
        user: str | None = None
        if steer:
            chain, o = [doc], doc
            while oracle.parents.get(o):
                o = next(iter(oracle.parents[o]))
                chain.append(o)
            granted = sorted(oracle.grants.get(rng.choice(chain), ()))
            if granted:
                user = some_user(rng.choice(granted))
        if user is None:
            user = f"user:u{rng.randrange(sizes['users'])}"
        otype, oid = doc.split(":")
        return Request(Entity("user", user.split(":")[1]), "read", Entity(otype, oid))

    requests = _sample_requests(rng, n_requests, make)
    return Scenario(
        f"rebac_{_size_label(n_tuples)}",
        REBAC_POLICY,
        tuples,
        requests,
        [oracle(r) for r in requests],
        oracle,
        {"sizes": sizes},
    )


# ---- ReBAC with an exclusion: the same model, `- blocked` on every folder and document ----------

REBAC_BLOCKED_POLICY = """\
type user { }
type group { relation member: user | group#member }
type folder {
  actions read
  relation owner: user
  relation editor: user | group#member
  relation viewer: user | group#member
  relation parent: folder
  relation blocked: user | group#member
  permission view = (viewer + editor + owner + parent->view) - blocked
}
type document {
  actions read
  relation owner: user
  relation editor: user | group#member
  relation viewer: user | group#member
  relation parent: folder
  relation blocked: user | group#member
  permission view = (viewer + editor + owner + parent->view) - blocked
}
permit shared_read: read on document, folder when subject has view on resource
"""


def rebac_blocked_tuples(
    rng: random.Random, sizes: dict[str, int], share: float = 0.01
) -> list[RelationTuple]:
    """`blocked` tuples on about `share` of the documents and folders, each for a random user or
    group, in the id space of `rebac_tuples(..)`'s `sizes`."""
    out = set()
    for kind, n in (("document", sizes["docs"]), ("folder", sizes["folders"])):
        for _ in range(max(1, int(n * share))):
            oid = f"{kind[0]}{rng.randrange(n)}"
            if rng.random() < 0.5:
                out.add(
                    RelationTuple(
                        kind,
                        oid,
                        "blocked",
                        "group",
                        f"g{rng.randrange(sizes['groups'])}",
                        "member",
                    )
                )
            else:
                out.add(
                    RelationTuple(kind, oid, "blocked", "user", f"u{rng.randrange(sizes['users'])}")
                )
    return sorted(out)


class RebacBlockedOracle(RebacOracle):
    """RebacOracle for REBAC_BLOCKED_POLICY: an object is viewable when granted on it or viewable
    on a parent, unless one of the subject's identities is blocked on the object itself."""

    def __init__(self, tuples: Iterable[RelationTuple]) -> None:
        self.blocked: dict[str, set[str]] = defaultdict(set)
        super().__init__(tuples)

    def _apply(self, t: RelationTuple, *, add: bool) -> None:
        if t.relation != "blocked":
            super()._apply(t, add=add)
            return
        subjects = self.blocked[f"{t.object_type}:{t.object_id}"]
        subject = f"{t.subject_type}:{t.subject_id}"
        if add:
            subjects.add(subject)
        else:
            subjects.discard(subject)

    def can_view(self, subject: str, obj: str) -> bool:
        return self._view(self.identities(subject), obj)

    def _view(self, ids: set[str], obj: str) -> bool:
        if self.blocked.get(obj, set()) & ids:
            return False
        if self.grants.get(obj, set()) & ids:
            return True
        return any(self._view(ids, p) for p in self.parents.get(obj, ()))


def _size_label(n: int) -> str:
    return f"{n // 1_000_000}m" if n >= 1_000_000 else f"{n // 1_000}k"


# ---- The SaaS day: tenants, scoped roles, sharing; mostly repeated reads, some writes, a reload --

SAAS_POLICY = """\
type user { attributes { tenant: string, roles: set<string> } }
type group { relation member: user | group#member }
type folder {
  attributes { tenant: string }
  actions read, write
  relation owner: user
  relation editor: user | group#member
  relation viewer: user | group#member
  relation parent: folder
  permission view = viewer + editor + owner + parent->view
}
type document {
  attributes { tenant: string }
  actions read, update
  relation owner: user
  relation editor: user | group#member
  relation viewer: user | group#member
  relation parent: folder
  permission view = viewer + editor + owner + parent->view
}
role reader scoped by tenant { allow read on document, folder }
role writer scoped by tenant extends reader {
  allow update on document
  allow write on folder
}
bind roles from subject.roles
forbid tenant_isolation as not_found: * on document, folder when resource.tenant != subject.tenant
permit shared_read: read on document, folder when subject has view on resource
"""


@dataclass(frozen=True)
class Op:
    """One step of the SaaS day: a check (with the oracle's answer), a tuple write, or a reload."""

    kind: str  # "check" | "write" | "delete" | "reload"
    request: Request | None = None
    expected: bool = False
    tuple: RelationTuple | None = None


def saas_oracle(oracle: RebacOracle, req: Request) -> bool:
    s, r = req.subject.attrs, req.resource.attrs
    if s.get("tenant") != r.get("tenant"):
        return False
    roles = s.get("roles", frozenset())
    if req.action == "read":
        if roles & {"reader", "writer"}:  # type: ignore[operator]
            return True
        return oracle.can_view(f"user:{req.subject.id}", str(req.resource))
    if (req.resource.type, req.action) in (("document", "update"), ("folder", "write")):
        return "writer" in roles  # type: ignore[operator]
    return False


def saas_day(
    *,
    seed: int = SEED,
    n_tuples: int = 20_000,
    n_ops: int = 20_000,
    hot: int = 300,
    write_rate: float = 0.002,
) -> tuple[Scenario, list[Op]]:
    """The scenario (policy, base tuples) and the day's operations, oracle answers included.

    Every document and folder belongs to one of 20 tenants (by id); users carry a tenant and a
    few of them a role. 90% of checks repeat a hot set (the cache's job), `write_rate` of the ops
    write or delete a viewer tuple (half each), and one reload lands mid-day.
    """
    rng = random.Random(seed + 3)
    tuples, sizes = rebac_tuples(rng, n_tuples)
    tenants = [f"t{i}" for i in range(20)]

    def tenant_of(i: int) -> str:
        return tenants[i % len(tenants)]

    users = [
        Entity(
            "user",
            f"u{i}",
            {
                "tenant": tenant_of(i),
                "roles": frozenset(
                    rng.choice(([], [], [], ["reader"], ["writer"], ["reader", "writer"]))
                ),
            },
        )
        for i in range(sizes["users"])
    ]

    def resource(kind: str, i: int) -> Entity:
        return Entity(kind, f"{kind[0]}{i}", {"tenant": tenant_of(i)})

    def random_request() -> Request:
        u = rng.choice(users)
        kind = rng.choice(("document", "document", "folder"))
        n = sizes["docs"] if kind == "document" else sizes["folders"]
        # Same tenant for most requests, so decisions reach the roles and the relation walk.
        i = rng.randrange(n)
        if rng.random() < 0.8:
            i = (i // len(tenants)) * len(tenants) + int(u.id[1:]) % len(tenants)
            i = i if i < n else int(u.id[1:]) % len(tenants)
        action = rng.choice(("read", "read", "read", "update" if kind == "document" else "write"))
        return Request(u, action, resource(kind, i))

    hot_set = [random_request() for _ in range(hot)]
    oracle = RebacOracle(tuples)
    ops: list[Op] = []
    written: list[RelationTuple] = []
    for i in range(n_ops):
        roll = rng.random()
        if i == n_ops // 2:
            ops.append(Op("reload"))
        elif roll < write_rate / 2 or (roll < write_rate and not written):
            t = RelationTuple(
                "document",
                f"d{rng.randrange(sizes['docs'])}",
                "viewer",
                "user",
                f"u{rng.randrange(sizes['users'])}",
            )
            oracle.add(t)
            written.append(t)
            ops.append(Op("write", tuple=t))
        elif roll < write_rate:
            t = written.pop(rng.randrange(len(written)))
            if t not in tuples:  # a base tuple also granting it stays: only remove what we wrote
                oracle.remove(t)
                ops.append(Op("delete", tuple=t))
        else:
            req = rng.choice(hot_set) if rng.random() < 0.9 else random_request()
            ops.append(Op("check", req, saas_oracle(oracle, req)))
    checks = [op for op in ops if op.kind == "check"]
    scenario = Scenario(
        "saas_day",
        SAAS_POLICY,
        tuples,
        [op.request for op in checks],  # type: ignore[misc]
        [op.expected for op in checks],
        lambda req: saas_oracle(RebacOracle(tuples), req),
        {"sizes": sizes, "users": users},
    )
    return scenario, ops
