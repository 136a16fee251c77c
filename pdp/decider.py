"""Generates one decide function per (resource type, action): the rule loop, the role check and the
decision objects specialised to that entry, so a check runs straight-line code.

Semantics (the reference interpreter states them too, and the differential test holds both to
them): forbids in order (not-found forbids first, then by name), the first satisfied or erroring
forbid denies; then permits by name, the first satisfied permit allows, an erroring one grants
nothing; then the first granting role in name order that the subject holds within its scope;
otherwise deny, with the errors met on the way if any.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from pdp.conditions import ConditionFn
from pdp.model import Decision, Effect, Entity, Reason, Value
from pdp.rebac import DepthLimitExceeded

DecideFn = Callable[[Entity, Entity, Mapping[str, Value], int], Decision]

_ALLOW, _DENY = Effect.ALLOW, Effect.DENY


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


def build_decide(
    *,
    forbids: Sequence[tuple[str, ConditionFn | None, bool]],  # (id, condition, not_found)
    permits: Sequence[tuple[str, ConditionFn | None]],
    granting_roles: Sequence[str],
    claim_sources: Sequence[tuple[str, str]],
    conditional_bindings: Sequence[tuple[frozenset[str], ConditionFn, str]],
    role_scopes: Mapping[str, tuple[str, ...]],
    revision: str,
    fail_open: bool,
) -> DecideFn:
    ns: dict[str, Any] = {
        "DepthLimitExceeded": DepthLimitExceeded,
        "describe": describe,
        "GRANTING": frozenset(granting_roles),
        "ROLE": {
            r: Outcome(_ALLOW, Reason.PERMITTED, (f"role:{r}",), revision) for r in granting_roles
        },
        "NOT_PERMITTED": Outcome(_DENY, Reason.NOT_PERMITTED, (), revision),
    }

    def forbid_error(o: Outcome, rev: int, reason: Reason, message: str) -> Decision:
        c = o.cur
        return Decision(_DENY, reason, c.rule_ids, revision, rev, c.not_found, errors=(message,))

    def add_error(
        errors: list[tuple[str, str, bool]] | None, rule_id: str, message: str, depth: bool
    ) -> list[tuple[str, str, bool]]:
        errors = errors if errors is not None else []
        errors.append((rule_id, message, depth))
        return errors

    def finish(errors: list[tuple[str, str, bool]], rev: int) -> Decision:
        ids = tuple(e[0] for e in errors)
        messages = tuple(e[1] for e in errors)
        depth = any(e[2] for e in errors)
        if depth and fail_open:
            # The bundle named this action as fail-open: only a data-depth failure qualifies,
            # never a caller's bad input and never a forbid.
            return Decision(_ALLOW, Reason.FAIL_OPEN, ids, revision, rev, errors=messages)
        reason = Reason.DEPTH_LIMIT if depth else Reason.EVALUATION_ERROR
        return Decision(_DENY, reason, ids, revision, rev, errors=messages)

    def pick(candidates: Any, best: str | None, S: Entity, R: Entity) -> str | None:
        for role in candidates:
            if (best is None or role < best) and (
                role not in role_scopes or in_scope(role_scopes[role], S, R)
            ):
                best = role
        return best

    ns.update(forbid_error=forbid_error, add_error=add_error, finish=finish, pick=pick)

    def ret(outcome: str, indent: str) -> list[str]:
        return [
            f"{indent}d = {outcome}.cur",
            f"{indent}return d if d.tuple_revision == rev else {outcome}.at(rev)",
        ]

    body: list[str] = []
    for i, (rule_id, condition, not_found) in enumerate(forbids):
        ns[f"OF{i}"] = Outcome(_DENY, Reason.FORBIDDEN, (rule_id,), revision, not_found)
        if condition is None:
            body += ret(f"OF{i}", "    ")
            break  # nothing after an unconditional forbid can matter
        ns[f"F{i}"] = condition
        body += [
            "    try:",
            f"        hit = F{i}(S, R, C)",
            "    except DepthLimitExceeded:",
            # INVARIANT: a forbid that errors denies.
            f"        return forbid_error(OF{i}, rev, DEPTH, {f'{rule_id}: relation depth limit'!r})",
            "    except Exception as exc:",
            f"        return forbid_error(OF{i}, rev, EVAL, describe({rule_id!r}, exc))",
            "    if hit:",
            *ret(f"OF{i}", "        "),
        ]
    ns["DEPTH"], ns["EVAL"] = Reason.DEPTH_LIMIT, Reason.EVALUATION_ERROR
    body.append("    errors = None")
    for j, (rule_id, condition) in enumerate(permits):
        ns[f"OP{j}"] = Outcome(_ALLOW, Reason.PERMITTED, (rule_id,), revision)
        if condition is None:
            body += ret(f"OP{j}", "    ")
            break
        ns[f"P{j}"] = condition
        body += [
            "    try:",
            f"        hit = P{j}(S, R, C)",
            "    except DepthLimitExceeded:",
            f"        errors = add_error(errors, {rule_id!r}, {f'{rule_id}: relation depth limit'!r}, True)",
            "    except Exception as exc:  # INVARIANT: a permit that errors grants nothing",
            f"        errors = add_error(errors, {rule_id!r}, describe({rule_id!r}, exc), False)",
            "    else:",
            "        if hit:",
            *ret(f"OP{j}", "            "),
        ]
    else:
        body += _roles(ns, granting_roles, claim_sources, conditional_bindings, role_scopes)
        body += [
            "    if errors is None:",
            *ret("NOT_PERMITTED", "        "),
            "    return finish(errors, rev)",
        ]
    source = "def decide(S, R, C, rev):\n" + "\n".join(body) + "\n"
    exec(compile(source, "<decide>", "exec"), ns)
    fn: DecideFn = ns["decide"]
    return fn


def _roles(
    ns: dict[str, Any],
    granting_roles: Sequence[str],
    claim_sources: Sequence[tuple[str, str]],
    conditional_bindings: Sequence[tuple[frozenset[str], ConditionFn, str]],
    role_scopes: Mapping[str, tuple[str, ...]],
) -> list[str]:
    if not granting_roles:
        return []
    # Claims first (cheap); a conditional binding runs only if it could yield a role that sorts
    # before the best found so far, which answers the same as evaluating every binding.
    body = ["    best = None"]
    source = {"subject": "S.attrs", "resource": "R.attrs", "context": "C"}
    for root, name in claim_sources:
        body += [
            f"    v = {source[root]}.get({name!r})",
            "    if v:",
            "        hits = GRANTING.intersection(v)",
            "        if hits:",
        ]
        if role_scopes:
            body.append("            best = pick(hits, best, S, R)")
        else:
            body += [
                "            m = min(hits)",
                "            if best is None or m < best:",
                "                best = m",
            ]
    for k, (roles, condition, label) in enumerate(conditional_bindings):
        ns[f"B{k}"], ns[f"BR{k}"] = condition, tuple(sorted(roles))
        body += [
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
            "            best = pick(candidates, best, S, R)",
        ]
    body += [
        "    if best is not None:",
        "        o = ROLE[best]",
        "        d = o.cur",
        "        return d if d.tuple_revision == rev else o.at(rev)",
    ]
    return body
