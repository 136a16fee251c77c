"""LookupResources and LookupSubjects: which resources of a type may a subject act on, and which
subjects of a type may act on a resource.

Correct by construction. Where a permission is a union the answer is computed backwards from the
subject and is Check's answer by construction (pdp.engine.reach). Otherwise a lookup gathers
candidates from the tuple index, then asks Check of each, in id order, and returns exactly the ones
Check allows. The candidates are a superset of every id
Check could allow among the ids the tuples know:
- resources: every object reached walking the reverse index back from the subject (and its type's
  wildcard) through usersets and arrow hops. A relation holds only along a chain of tuples from the
  object to the subject, whatever `+ & -` do above it, so an allowed resource is on such a chain.
  When a permit or a role can allow a resource without any tuple (a rule on attributes, a role),
  every object of the type the tuples know is a candidate instead;
- subjects: every subject of the type reached walking forward from the resource, and `*` when a
  wildcard tuple is reached (returned as itself, with the known ids it does not cover).
So the answer equals brute force (Check over every known id), which the tests compare.

Never presented as complete when it is not (`Lookup.incomplete`): a rule that can allow without
tuples can allow ids the sidecar has never seen (the service's own rows: use PlanResources); a
candidate whose Check erred (an attribute the sidecar does not hold, a depth limit, the slice) is
not returned, and the reason is kept.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from pdp.engine.compiler import Snapshot
from pdp.engine.engine import SnapshotView
from pdp.engine.reach import allowed_ids, candidate_ids
from pdp.engine.tuples import TupleStore
from pdp.identifiers import WILDCARD
from pdp.model import EMPTY, Decision, Effect, Entity, Request, Value
from policy_lang import ast
from policy_lang.checker import CheckedPolicy

_ALLOW = Effect.ALLOW


@dataclass
class Lookup:
    """One lookup. Iterate it for the allowed ids, in order; once exhausted, `incomplete` says why
    the answer may miss ids (empty: it is the whole answer); `tuple_revision` is what it read."""

    tuple_revision: int
    incomplete: list[str] = field(default_factory=list)
    # LookupSubjects: the known ids a returned `*` does not cover (denied although `*` allows).
    excluded: list[str] = field(default_factory=list)
    _ids: Iterator[str] = field(default_factory=lambda: iter(()))

    def __iter__(self) -> Iterator[str]:
        return self._ids

    def note(self, why: str) -> None:
        if why not in self.incomplete:
            self.incomplete.append(why)


def lookup_resources(
    view: SnapshotView,
    subject: Entity,
    action: str,
    resource_type: str,
    context: Mapping[str, Value] = EMPTY,
    *,
    after: str = "",
) -> Lookup:
    """The ids of `resource_type` that `subject` may `action`, greater than `after`, in order."""
    out = Lookup(view.tuple_revision)
    snapshot = _deciding(out, view.snapshot, resource_type, action)
    if snapshot is None:
        return out
    store = view.tuples
    untupled = _grants_without_tuples(snapshot.policy, resource_type, action)
    if untupled:
        out.note(
            f"{', '.join(untupled)} may allow {resource_type}s that hold no tuple: ids the "
            "sidecar has never seen are not listed (ask PlanResources)"
        )
        candidates = store.object_ids(resource_type)
    else:
        # A union of relations and arrows: the holders computed backwards are Check's answer.
        # One Check stands for all: it fails only on what every id shares (the request's own
        # attributes), and then the answer is left to Check, id by id, with its notes.
        exact = allowed_ids(view, subject, action, resource_type)
        if exact is not None and (
            not exact
            or view.check(
                Request(subject, action, Entity(resource_type, min(exact)), context), cached=False
            ).effect
            is _ALLOW
        ):
            out._ids = iter(sorted(rid for rid in exact if rid > after))
            return out
        superset = candidate_ids(view, subject, action, resource_type)
        if superset is None:
            superset = _reached_objects(store, snapshot.policy, subject, resource_type)
        candidates = superset

    def allowed() -> Iterator[str]:
        for rid in sorted(c for c in candidates if c > after):
            request = Request(subject, action, Entity(resource_type, rid), context)
            decision = view.check(request, cached=False)
            if decision.effect is _ALLOW:
                yield rid
            elif decision.errors:
                _note_errors(out, decision, rid)

    out._ids = allowed()
    return out


def lookup_subjects(
    view: SnapshotView,
    resource: Entity,
    action: str,
    subject_type: str,
    context: Mapping[str, Value] = EMPTY,
    *,
    after: str = "",
) -> Lookup:
    """The ids of `subject_type` that may `action` on `resource`, greater than `after`, in order;
    `*` when every subject of the type may (then `excluded` lists the known ids that may not)."""
    out = Lookup(view.tuple_revision)
    snapshot = _deciding(out, view.snapshot, resource.type, action)
    if snapshot is None:
        return out
    store = view.tuples
    policy = snapshot.policy
    untupled = _grants_without_tuples(policy, resource.type, action)
    if untupled:
        out.note(
            f"{', '.join(untupled)} may allow subjects that hold no tuple on this resource "
            "(roles and attributes come with the subject): they are not listed"
        )
    candidates = _reached_subjects(store, policy, resource, subject_type)
    if WILDCARD in candidates:  # a wildcard reached: any id of the type may be allowed through it
        candidates |= store.object_ids(subject_type)

    def decide(sid: str) -> Decision:
        return view.check(
            Request(Entity(subject_type, sid), action, resource, context), cached=False
        )

    def allowed() -> Iterator[str]:
        everyone = WILDCARD in candidates and decide(WILDCARD).effect is _ALLOW
        if WILDCARD in candidates and not everyone and _reads_subject(policy, resource, action):
            # `user:*` holds the relation but `*` itself is not allowed: a condition on who
            # the subject is (`resource.owner == subject.id`) may still allow some of the
            # subjects it covers, and those no tuple names cannot be listed.
            out.note(
                f"`{subject_type}:*` holds a relation here, and a condition on the subject "
                f"decides which {subject_type}s it allows: those no tuple names are not listed"
            )
        for sid in sorted(c for c in candidates if c > after):
            if sid == WILDCARD:
                if everyone:
                    excluded = (c for c in candidates if c != WILDCARD)
                    out.excluded = sorted(c for c in excluded if decide(c).effect is not _ALLOW)
                    yield sid
                continue
            decision = decide(sid)
            if decision.effect is _ALLOW:
                yield sid
            elif decision.errors:
                _note_errors(out, decision, f"{subject_type}:{sid}")

    out._ids = allowed()
    return out


def _deciding(
    out: Lookup, snapshot: Snapshot | None, resource_type: str, action: str
) -> Snapshot | None:
    """The snapshot, if a rule of it decides `action` on `resource_type`. Without a bundle the
    answer is noted incomplete. Without a rule, every Check denies (naming an unknown type or
    action), which is no failure of the lookup: its empty answer is complete."""
    if snapshot is None:
        out.note("no bundle is loaded")
        return None
    actions = snapshot.by_type.get(resource_type)
    return snapshot if actions is not None and action in actions else None


def _note_errors(out: Lookup, decision: Decision, what: str) -> None:
    """One note per distinct failure, naming the first id it was met at."""
    rules = f" ({', '.join(decision.rule_ids)})" if decision.rule_ids else ""
    failure = f"{decision.reason.value}{rules}: {decision.errors[0]}"
    if not any(why.startswith(failure) for why in out.incomplete):
        out.note(f"{failure} (first met at {what})")


def _grants_without_tuples(policy: CheckedPolicy, type_name: str, action: str) -> list[str]:
    """The permits and roles that can allow (type, action) with no tuple on the resource."""
    found = [f"role {r}" for r in policy.granting_roles.get((type_name, action), ())]
    for rule in policy.rules:
        if rule.effect != "permit":
            continue
        if rule.types is not None and type_name not in rule.types:
            continue
        if rule.actions is not None and action not in rule.actions:
            continue
        if rule.condition is None or not _needs_resource_relation(rule.condition):
            found.append(f"rule {rule.name}")
    return found


def _reads_subject(policy: CheckedPolicy, resource: Entity, action: str) -> bool:
    """Whether a permit on (type, action) reads the subject's id or attributes, or its roles."""
    for rule in policy.rules:
        if rule.effect != "permit" or rule.condition is None:
            continue
        if rule.types is not None and resource.type not in rule.types:
            continue
        if rule.actions is not None and action not in rule.actions:
            continue
        for node in ast.walk(rule.condition):
            if isinstance(node, ast.HasRole) or (
                isinstance(node, ast.Path) and node.root == "subject"
            ):
                return True
    return False


def _needs_resource_relation(expr: ast.Expr) -> bool:
    """Whether `expr` can hold only when the subject has a relation on the resource."""
    if isinstance(expr, ast.RelationCheck):
        return expr.entity.kind == "resource"
    if isinstance(expr, ast.And):
        return _needs_resource_relation(expr.left) or _needs_resource_relation(expr.right)
    if isinstance(expr, ast.Or):
        return _needs_resource_relation(expr.left) and _needs_resource_relation(expr.right)
    return False


def _relations(policy: CheckedPolicy, type_name: str) -> tuple[str, ...]:
    info = policy.types.get(type_name)
    return tuple(info.relations) if info is not None else ()


def _reached_objects(
    store: TupleStore, policy: CheckedPolicy, subject: Entity, resource_type: str
) -> set[str]:
    """Ids of `resource_type` on a chain of tuples back from the subject or its wildcard."""
    start = [f"{subject.type}:{subject.id}", f"{subject.type}:{WILDCARD}"]
    seen = set(start)
    todo = list(start)
    found: set[str] = set()
    prefix = f"{resource_type}:"
    while todo:
        for okey in store.objects_with(todo.pop()):
            obj = okey.rpartition("#")[0]
            if obj.startswith(prefix):
                found.add(obj[len(prefix) :])
            if obj in seen:
                continue
            # From the object: as a userset of any of its relations, and as itself (an arrow hop,
            # `document:d#parent@folder:f`, or a userset in a walked relation, Zanzibar's arrow).
            object_type = obj.partition(":")[0]
            for nxt in (obj, *(f"{obj}#{r}" for r in _relations(policy, object_type))):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
    return found


def _reached_subjects(
    store: TupleStore, policy: CheckedPolicy, resource: Entity, subject_type: str
) -> set[str]:
    """Ids of `subject_type` (and `*`) reached walking forward from the resource's tuples."""
    start = f"{resource.type}:{resource.id}"
    seen = {start}
    todo = [start]
    found: set[str] = set()
    prefix = f"{subject_type}:"
    while todo:
        obj = todo.pop()
        for relation in _relations(policy, obj.partition(":")[0]):
            for skey in store.subjects_at(f"{obj}#{relation}"):
                target = skey.partition("#")[0]
                if target.startswith(prefix):
                    found.add(target[len(prefix) :])
                if target not in seen and not target.endswith(f":{WILDCARD}"):
                    seen.add(target)
                    todo.append(target)
    return found
