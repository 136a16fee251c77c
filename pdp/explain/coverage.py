"""Policy test coverage: which rules, granting roles and permission branches a bundle's tests
reached, and which tests reached each (`pdp test --coverage`).

What counts as reached is what the reference interpreter did for some test's request, never what
the compiled engine did (its hot path records nothing):
- a rule, when it was considered with its condition evaluated (matched, not matched or erred);
  a rule after a forbid that denied, or after a permit that allowed, is not reached;
- a role (`role:R`), when it was asked whether the subject holds it within its scope;
- a permission branch, each operand of a `+`, `&` or `-` run and each arrow, when the walk
  entered it (`a + b` enters `b` only if `a` did not grant; `a - b` enters `b` only if `a` did).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pdp.explain.reference import Outcome
from policy_lang import ast
from policy_lang.checker import CheckedPolicy
from policy_lang.diagnostics import Loc
from policy_lang.formatter import userset


@dataclass(frozen=True, slots=True)
class Item:
    """One thing a test can reach."""

    kind: str  # "rule", "role" or "branch"
    id: str  # `tenant_isolation`, `role:viewer`, `document.view[3]`
    text: str  # what it is: `forbid ... when ...`, the branch's rewrite `parent->view`
    loc: Loc


def branches(permission: ast.PermissionDecl) -> Iterator[tuple[ast.UsersetExpr, int]]:
    """The branches of one permission, numbered in source order: each operand of a run of one
    operator (`a + b + c` is one run of three, as the walk loops over it) and each arrow."""
    number = 0
    stack: list[tuple[ast.UsersetExpr, bool]] = [(permission.expr, False)]
    while stack:
        node, is_operand = stack.pop()
        if is_operand or isinstance(node, ast.TupleToUserset):
            yield node, number
            number += 1
        if isinstance(node, ast.Union | ast.Intersection | ast.Exclusion):
            stack.extend((part, True) for part in reversed(ast.userset_operands(node)))


class Coverage:
    """What the tests of one bundle reached; fed one reference outcome per test request."""

    def __init__(self, policy: CheckedPolicy) -> None:
        self.items: list[Item] = []
        for rule in policy.rules:
            self.items.append(Item("rule", rule.name, f"{rule.effect} {rule.name}", rule.loc))
        granting = sorted({r for roles in policy.granting_roles.values() for r in roles})
        for role in granting:
            self.items.append(Item("role", f"role:{role}", f"role {role}", policy.roles[role].loc))
        self._branch_of: dict[int, str] = {}
        for type_name, info in policy.types.items():
            for name, perm in info.permissions.items():
                for node, number in branches(perm):
                    key = f"{type_name}.{name}[{number}]"
                    self._branch_of[id(node)] = key
                    self.items.append(Item("branch", key, userset(node), node.loc or perm.loc))
        self.tests: dict[str, list[str]] = {item.id: [] for item in self.items}

    def record(self, test: str, outcome: Outcome) -> None:
        """What the reference interpreter reached deciding `test`'s request."""
        reached = [
            step.id if step.kind != "role" else f"role:{step.id}"
            for step in outcome.trace
            if step.depth == 0 and step.kind in ("forbid", "permit", "role")
        ]
        reached += [self._branch_of[n] for n in outcome.entered if n in self._branch_of]
        for key in reached:
            tests = self.tests.get(key)
            if tests is not None and (not tests or tests[-1] != test):
                tests.append(test)

    @property
    def unreached(self) -> list[Item]:
        return [item for item in self.items if not self.tests[item.id]]

    @property
    def percent(self) -> float:
        if not self.items:
            return 100.0
        return 100.0 * (len(self.items) - len(self.unreached)) / len(self.items)

    def ordered(self) -> list[Item]:
        """Unreached items first, then the rest, each group in declaration order."""
        return self.unreached + [item for item in self.items if self.tests[item.id]]

    def to_json(self) -> dict[str, Any]:
        return {
            "percent": round(self.percent, 2),
            "reached": len(self.items) - len(self.unreached),
            "total": len(self.items),
            "items": [
                {
                    "kind": item.kind,
                    "id": item.id,
                    "text": item.text,
                    "at": str(item.loc),
                    "reached": bool(self.tests[item.id]),
                    "tests": self.tests[item.id],
                }
                for item in self.ordered()
            ],
        }
