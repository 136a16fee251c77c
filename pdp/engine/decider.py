"""Generates one decide function per (resource type, action): the rule loop, the role check and the
decision objects specialised to that entry, so a check runs straight-line code. It also owns the
one role evaluator of the compiled path (`_role_lines`): the code it generates is the role step
of every decide function (inlined there) and the body of every `subject has role R` a condition
asks (`role_test`), so who holds a role is decided by one piece of code, and conditions ask the
bundle's own evaluator instead of calling back up into the engine.

Semantics (the reference interpreter states them too, and the differential test holds both to
them): forbids in order (not-found forbids first, then by name), the first satisfied or erroring
forbid denies; then permits by name, the first satisfied permit allows, an erroring one grants
nothing; then the first granting role in name order that the subject holds within its scope;
otherwise deny, with the errors met on the way if any.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from pdp.engine import codegen
from pdp.engine.conditions import ConditionFn
from pdp.engine.rebac import DepthLimitExceeded
from pdp.errors import EvaluationError
from pdp.model import Decision, Effect, Entity, Reason, Value

DecideFn = Callable[[Entity, Entity, Mapping[str, Value], int], Decision]
# One error met while deciding: (rule id or binding label, message, was it a depth limit?)
ErrorInfo = tuple[str, str, bool]

_ALLOW, _DENY = Effect.ALLOW, Effect.DENY


class RoleBindingError(EvaluationError):
    """A role binding erred and no wanted role was found held within its scope: the role question
    has no answer. `errors` lists every binding that erred."""

    def __init__(self, errors: list[ErrorInfo]) -> None:
        super().__init__(errors[0][1])
        self.errors = errors


@dataclass(frozen=True, slots=True)
class RoleSources:
    """Where a bundle's roles come from, compiled: what the role evaluator reads."""

    claims: tuple[tuple[str, str], ...]  # (root, name) of each `bind roles from`, in bundle order
    # (roles, compiled condition, label) of each `bind ... when`, in bundle order
    conditional: tuple[tuple[frozenset[str], ConditionFn, str], ...]
    scopes: Mapping[str, tuple[str, ...]]  # role -> the attributes subject and resource must share


class Outcome:
    """One possible answer of an entry. `cur` is the decision at the latest tuple revision seen:
    a single attribute, so a reader racing a writer sees one whole decision or the other."""

    __slots__ = ("cur",)

    def __init__(
        self,
        effect: Effect,
        reason: Reason,
        rule_ids: tuple[str, ...],
        revision: str,
        not_found: bool = False,
    ) -> None:
        self.cur = Decision(effect, reason, rule_ids, revision, -1, not_found)

    def at(self, rev: int) -> Decision:
        d = self.cur
        if d.tuple_revision != rev:
            d = replace(d, tuple_revision=rev)
            self.cur = d
        return d


def describe(rule_id: str, exc: Exception) -> str:
    if isinstance(exc, KeyError):
        return f"{rule_id}: missing attribute `{exc.args[0]}`"
    return f"{rule_id}: {type(exc).__name__}: {exc}"


def in_scope(scopes: tuple[str, ...], S: Entity, R: Entity) -> bool:
    for attr in scopes:
        mine = S.attrs.get(attr)
        if mine is None or mine != R.attrs.get(attr):
            return False
    return True


def add_error(
    errors: list[ErrorInfo] | None, rule_id: str, message: str, depth: bool
) -> list[ErrorInfo]:
    errors = errors if errors is not None else []
    errors.append((rule_id, message, depth))
    return errors


def build_decide(
    *,
    forbids: Sequence[tuple[str, ConditionFn | None, bool]],  # (id, condition, not_found)
    permits: Sequence[tuple[str, ConditionFn | None]],
    granting_roles: Sequence[str],
    roles: RoleSources,
    revision: str,
    fail_open: bool,
    name: str = "decide",
) -> DecideFn:
    """`name`: what the generated function is called in tracebacks (`decide_document_read`)."""
    ns: dict[str, Any] = {
        "DepthLimitExceeded": DepthLimitExceeded,
        "describe": describe,
        "add_error": add_error,
        "ROLE": {
            r: Outcome(_ALLOW, Reason.PERMITTED, (f"role:{r}",), revision) for r in granting_roles
        },
        "NOT_PERMITTED": Outcome(_DENY, Reason.NOT_PERMITTED, (), revision),
        "DEPTH": Reason.DEPTH_LIMIT,
        "EVAL": Reason.EVALUATION_ERROR,
    }

    def forbid_error(o: Outcome, rev: int, reason: Reason, message: str) -> Decision:
        c = o.cur
        return Decision(_DENY, reason, c.rule_ids, revision, rev, c.not_found, errors=(message,))

    def finish(errors: list[ErrorInfo], rev: int) -> Decision:
        ids = tuple(e[0] for e in errors)
        messages = tuple(e[1] for e in errors)
        depth = any(e[2] for e in errors)
        if depth and fail_open:
            # The bundle named this action as fail-open: only a data-depth failure qualifies,
            # never a caller's bad input and never a forbid.
            return Decision(_ALLOW, Reason.FAIL_OPEN, ids, revision, rev, errors=messages)
        reason = Reason.DEPTH_LIMIT if depth else Reason.EVALUATION_ERROR
        return Decision(_DENY, reason, ids, revision, rev, errors=messages)

    ns.update(forbid_error=forbid_error, finish=finish)
    body, decided = _forbids(ns, forbids, revision)
    if not decided:
        body.append("    errors = None")
        permit_body, decided = _permits(ns, permits, revision)
        body += permit_body
    if not decided:
        if granting_roles:
            body += _role_step(ns, granting_roles, roles)
        body += [
            "    if errors is None:",
            *_ret("NOT_PERMITTED", "        "),
            "    return finish(errors, rev)",
        ]
    source = f"def {name}(S, R, C, rev):\n" + "\n".join(body) + "\n"
    fn: DecideFn = codegen.function(source, name, ns)
    return fn


def _ret(outcome: str, indent: str) -> list[str]:
    return [
        f"{indent}d = {outcome}.cur",
        f"{indent}return d if d.tuple_revision == rev else {outcome}.at(rev)",
    ]


# Up to this many conditional rules an entry's rules are unrolled, one block each (no loop, no
# tuple unpacking: the hot path of small policies). Past it, one loop over a tuple of them: the
# same steps in the same order, in source that does not grow with the rules (compiling 4 MB of
# unrolled blocks was most of loading a 10,000-rule bundle). Rule ids are names in the
# namespace, not literals in the source, so entries with as many rules share one compile.
_UNROLL = 8


def _forbids(
    ns: dict[str, Any], forbids: Sequence[tuple[str, ConditionFn | None, bool]], revision: str
) -> tuple[list[str], bool]:
    """The forbid loop; True when an unconditional forbid ends it (nothing after can matter)."""
    conditional = list(itertools.takewhile(lambda f: f[1] is not None, forbids))
    if len(conditional) > _UNROLL:
        ns["FORBIDS"] = tuple(
            (
                condition,
                Outcome(_DENY, Reason.FORBIDDEN, (rule_id,), revision, not_found),
                f"{rule_id}: relation depth limit",
                rule_id,
            )
            for rule_id, condition, not_found in conditional
        )
        loop = [
            "    for fn, o, depth_message, rule_id in FORBIDS:",
            "        try:",
            "            hit = fn(S, R, C)",
            "        except DepthLimitExceeded:",
            "            return forbid_error(o, rev, DEPTH, depth_message)",
            "        except Exception as exc:",
            "            return forbid_error(o, rev, EVAL, describe(rule_id, exc))",
            "        if hit:",
            *_ret("o", "            "),
        ]
        if len(conditional) == len(forbids):
            return loop, False
        rule_id, _, not_found = forbids[len(conditional)]
        ns["OF_LAST"] = Outcome(_DENY, Reason.FORBIDDEN, (rule_id,), revision, not_found)
        return [*loop, *_ret("OF_LAST", "    ")], True
    body: list[str] = []
    for i, (rule_id, condition, not_found) in enumerate(forbids):
        ns[f"OF{i}"] = Outcome(_DENY, Reason.FORBIDDEN, (rule_id,), revision, not_found)
        if condition is None:
            return [*body, *_ret(f"OF{i}", "    ")], True
        ns[f"F{i}"], ns[f"FID{i}"] = condition, rule_id
        ns[f"FDEPTH{i}"] = f"{rule_id}: relation depth limit"
        body += [
            "    try:",
            f"        hit = F{i}(S, R, C)",
            "    except DepthLimitExceeded:",
            # INVARIANT: a forbid that errors denies.
            f"        return forbid_error(OF{i}, rev, DEPTH, FDEPTH{i})",
            "    except Exception as exc:",
            f"        return forbid_error(OF{i}, rev, EVAL, describe(FID{i}, exc))",
            "    if hit:",
            *_ret(f"OF{i}", "        "),
        ]
    return body, False


def _permits(
    ns: dict[str, Any], permits: Sequence[tuple[str, ConditionFn | None]], revision: str
) -> tuple[list[str], bool]:
    """The permit loop; True when an unconditional permit ends it."""
    conditional = list(itertools.takewhile(lambda p: p[1] is not None, permits))
    if len(conditional) > _UNROLL:
        ns["PERMITS"] = tuple(
            (
                condition,
                Outcome(_ALLOW, Reason.PERMITTED, (rule_id,), revision),
                f"{rule_id}: relation depth limit",
                rule_id,
            )
            for rule_id, condition in conditional
        )
        loop = [
            "    for fn, o, depth_message, rule_id in PERMITS:",
            "        try:",
            "            hit = fn(S, R, C)",
            "        except DepthLimitExceeded:",
            "            errors = add_error(errors, rule_id, depth_message, True)",
            "        except Exception as exc:  # INVARIANT: a permit that errors grants nothing",
            "            errors = add_error(errors, rule_id, describe(rule_id, exc), False)",
            "        else:",
            "            if hit:",
            *_ret("o", "                "),
        ]
        if len(conditional) == len(permits):
            return loop, False
        ns["OP_LAST"] = Outcome(_ALLOW, Reason.PERMITTED, (permits[len(conditional)][0],), revision)
        return [*loop, *_ret("OP_LAST", "    ")], True
    body: list[str] = []
    for j, (rule_id, condition) in enumerate(permits):
        ns[f"OP{j}"] = Outcome(_ALLOW, Reason.PERMITTED, (rule_id,), revision)
        if condition is None:
            return [*body, *_ret(f"OP{j}", "    ")], True
        ns[f"P{j}"], ns[f"PID{j}"] = condition, rule_id
        ns[f"PDEPTH{j}"] = f"{rule_id}: relation depth limit"
        body += [
            "    try:",
            f"        hit = P{j}(S, R, C)",
            "    except DepthLimitExceeded:",
            f"        errors = add_error(errors, PID{j}, PDEPTH{j}, True)",
            "    except Exception as exc:  # INVARIANT: a permit that errors grants nothing",
            f"        errors = add_error(errors, PID{j}, describe(PID{j}, exc), False)",
            "    else:",
            "        if hit:",
            *_ret(f"OP{j}", "            "),
        ]
    return body, False


def _role_step(ns: dict[str, Any], granting: Sequence[str], sources: RoleSources) -> list[str]:
    """The role step of a decide function: the role evaluator's code inlined (the hot path of
    RBAC, where a call would cost more than the step), its binding errors joining the permits'."""
    # INVARIANT: a role binding that errors grants nothing; its error is reported only when no
    # role grants (as a permit's).
    return [
        *_role_lines(ns, granting, sources, track_held=False),
        "    if best is not None:",
        "        o = ROLE[best]",
        *_ret("o", "        "),
    ]


def role_test(wanted: Sequence[str], sources: RoleSources) -> ConditionFn:
    """`subject has role R` (with `wanted` = R and every role extending it): does the subject hold
    one within its scope? Raises RoleBindingError when a binding erred and no wanted role is held
    at all, in scope or not: then the question has no answer and the condition errs."""
    ns: dict[str, Any] = {"RoleBindingError": RoleBindingError}
    lines = _role_lines(ns, wanted, sources, track_held=True)
    body = ["    errors = None", "    held = False", *lines]
    body += ["    if best is None and errors is not None and not held:"]
    body += ["        raise RoleBindingError(errors)", "    return best is not None"]
    name = codegen.identifier("has_role", wanted[0] if wanted else "none")
    source = f"def {name}(S, R, C):\n" + "\n".join(body) + "\n"
    fn: ConditionFn = codegen.function(source, name, ns)
    return fn


def _role_lines(
    ns: dict[str, Any], wanted: Sequence[str], sources: RoleSources, *, track_held: bool
) -> list[str]:
    """The one role evaluator, as code: leaves in `best` the first role of `wanted` in name order
    that the subject holds within its scope (None if none), appends each erring binding to
    `errors`, and with `track_held` sets `held` when any wanted role is held, in scope or not.
    Claims first (cheap); a conditional binding runs only if it could yield a wanted role that
    sorts before the best found so far, which answers the same as evaluating every binding."""
    wanted_set = frozenset(wanted)
    scopes = {r: sources.scopes[r] for r in sorted(wanted_set) if sources.scopes.get(r)}
    bindings = [(roles & wanted_set, c, label) for roles, c, label in sources.conditional]

    def pick(candidates: Any, best: str | None, S: Entity, R: Entity) -> str | None:
        for role in candidates:
            if (best is None or role < best) and (
                role not in scopes or in_scope(scopes[role], S, R)
            ):
                best = role
        return best

    ns.update(
        WANTED=wanted_set,
        pick=pick,
        add_error=add_error,
        describe=describe,
        DepthLimitExceeded=DepthLimitExceeded,
    )
    body = ["    best = None", *_claims(sources.claims, bool(scopes), track_held)]
    for k, (roles, condition, label) in enumerate(b for b in bindings if b[0]):
        ns[f"B{k}"], ns[f"BR{k}"] = condition, tuple(sorted(roles))
        body += _conditional(k, label, track_held)
    return body


def _claims(claims: Sequence[tuple[str, str]], scoped: bool, track_held: bool) -> list[str]:
    source = {"subject": "S.attrs", "resource": "R.attrs", "context": "C"}
    body: list[str] = []
    for root, name in claims:
        body += [
            f"    v = {source[root]}.get({name!r})",
            "    if v:",
            "        hits = WANTED.intersection(v)",
            "        if hits:",
            *(["            held = True"] if track_held else []),
        ]
        if scoped:
            body.append("            best = pick(hits, best, S, R)")
        else:
            body += [
                "            m = min(hits)",
                "            if best is None or m < best:",
                "                best = m",
            ]
    return body


def _conditional(k: int, label: str, track_held: bool) -> list[str]:
    return [
        f"    candidates = [r for r in BR{k} if best is None or r < best]",
        "    if candidates:",
        "        try:",
        f"            bound = B{k}(S, R, C)",
        "        except DepthLimitExceeded:",
        f"            errors = add_error(errors, {label!r}, 'role binding: relation depth limit', True)",
        "            bound = False",
        "        except Exception as exc:",
        f"            errors = add_error(errors, {label!r}, describe('role binding', exc), False)",
        "            bound = False",
        "        if bound:",
        *(["            held = True"] if track_held else []),
        "            best = pick(candidates, best, S, R)",
    ]
