"""Text to syntax tree: the Lark grammar, a Transformer into policy_lang.ast, and readable syntax errors.

Every syntax error of a file is reported: after an error the parser resumes at the next line that
starts a top-level item, so one typo does not hide the rest.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

from lark import Lark, Token, Tree
from lark.exceptions import LarkError, UnexpectedCharacters, UnexpectedEOF, UnexpectedInput
from lark.tree import Meta

from policy_lang import ast
from policy_lang.diagnostics import Diagnostic, Loc, PolicyError
from policy_lang.limits import MAX_INT, MAX_SYNTAX_ERRORS

# What Lark's terminal names mean to a person writing policy.
_TERMINAL_WORDS = {
    "NAME": "a name",
    "ESCAPED_STRING": "a string",
    "SIGNED_INT": "a number",
    "COMP_OP": "a comparison (`==`, `!=`, `<`, ...)",
    "EFFECT": "`permit` or `forbid`",
    "STAR": "`*`",
    "OPTIONAL": "`?`",
    "LBRACE": "`{`",
    "RBRACE": "`}`",
    "LPAR": "`(`",
    "RPAR": "`)`",
    "LSQB": "`[`",
    "RSQB": "`]`",
    "COLON": "`:`",
    "COMMA": "`,`",
    "DOT": "`.`",
    "EQUAL": "`=`",
    "PLUS": "`+`",
    "MINUS": "`-`",
    "AMPERSAND": "`&`",
    "VBAR": "`|`",
    "LESSTHAN": "`<`",
    "MORETHAN": "`>`",
    "__ANON_0": "`->`",
    "$END": "the end of the file",
}

# Mistakes people make often, with the fix.
_HINTS = {
    "=": "`=` only defines a permission; to compare, use `==`",
    "&&": "write `and`",
    "||": "write `or`",
    "!": "write `not`, or `!=` to compare",
    "'": "strings use double quotes",
    "&": "to join conditions write `and`; `&` is intersection between relations",
    "|": "to join conditions write `or`",
}

_TOP_LEVEL = re.compile(r"^[ \t]*(type|context|role|bind|permit|forbid)\b", re.MULTILINE)


@cache
def _lark() -> Lark:
    grammar = (Path(__file__).parent / "grammar.lark").read_text(encoding="utf-8")
    return Lark(grammar, parser="lalr", propagate_positions=True, maybe_placeholders=False)


def parse(text: str, path: str = "<policy>") -> ast.PolicyFile:
    """Parse one policy file. Raises PolicyError listing every syntax error."""
    items: list[ast.Item] = []
    errors: list[Diagnostic] = []
    offset = 0
    while True:
        # Keep line and column numbers true by blanking (not cutting) what was already consumed.
        masked = re.sub(r"[^\n]", " ", text[:offset]) + text[offset:]
        try:
            tree = _lark().parse(masked)
            items.extend(_Builder(path).items(tree))
            break
        except UnexpectedInput as exc:
            errors.append(_syntax_diagnostic(exc, text, path))
            resume = _next_item_start(text, exc.pos_in_stream if exc.pos_in_stream else len(text))
            if resume is None or len(errors) >= MAX_SYNTAX_ERRORS:
                break
            # The items before the error are lost for this pass; parse them alone to keep them.
            items.extend(_parse_prefix(text, offset, exc, path))
            offset = resume
        except _BuildError as exc:
            errors.append(exc.diagnostic)
            break
        except (LarkError, RecursionError) as exc:  # never let Lark's internals escape
            errors.append(
                Diagnostic("syntax_error", f"cannot parse: {type(exc).__name__}", Loc(path, 1, 1))
            )
            break
    if errors:
        raise PolicyError(errors)
    return ast.PolicyFile(path, tuple(items))


def _parse_prefix(text: str, offset: int, exc: UnexpectedInput, path: str) -> list[ast.Item]:
    """Parse the complete items between `offset` and the item that holds the error."""
    error_pos = exc.pos_in_stream or 0
    starts = [m.start(1) for m in _TOP_LEVEL.finditer(text, offset, error_pos + 1)]
    if len(starts) < 2:
        return []
    end = starts[-1] if starts[-1] <= error_pos else starts[-2]
    masked = re.sub(r"[^\n]", " ", text[:offset]) + text[offset:end]
    try:
        return _Builder(path).items(_lark().parse(masked))
    except (LarkError, _BuildError, RecursionError):
        return []


def _next_item_start(text: str, pos: int) -> int | None:
    line_end = text.find("\n", pos)
    if line_end < 0:
        return None
    m = _TOP_LEVEL.search(text, line_end)
    return m.start(1) if m else None


def _syntax_diagnostic(exc: UnexpectedInput, text: str, path: str) -> Diagnostic:
    line, col = exc.line if exc.line > 0 else 1, exc.column if exc.column > 0 else 1
    if isinstance(exc, UnexpectedCharacters):
        pos = exc.pos_in_stream or 0
        found = text[pos : pos + 2]
        found = found if found in _HINTS else found[:1]
        return Diagnostic(
            "syntax_error",
            f"unexpected character `{found}`",
            Loc(path, line, col, col + len(found)),
            hint=_HINTS.get(found, ""),
        )
    if isinstance(exc, UnexpectedEOF):
        return Diagnostic("syntax_error", "unexpected end of file", Loc(path, line, col))
    token = getattr(exc, "token", None)
    expected = sorted(getattr(exc, "expected", ()) or ())
    words = sorted({_TERMINAL_WORDS.get(t, _keyword(t)) for t in expected})
    found = str(token) if token is not None else ""
    at_end = not found or token.type == "$END"  # type: ignore[union-attr]
    what = "end of file" if at_end else f"`{found}`"
    message = f"unexpected {what}"
    if words:
        message += "; expected " + (words[0] if len(words) == 1 else "one of " + ", ".join(words))
    return Diagnostic(
        "syntax_error",
        message,
        Loc(path, line, col, col + max(1, len(found))),
        hint=_HINTS.get(found, ""),
    )


def _keyword(terminal: str) -> str:
    # Lark names anonymous keyword terminals after the keyword itself: TYPE, WHEN, ...
    return f"`{terminal.lower()}`" if terminal.isalpha() else f"`{terminal}`"


class _BuildError(Exception):
    def __init__(self, diagnostic: Diagnostic) -> None:
        self.diagnostic = diagnostic


def _names(children: list[Any]) -> tuple[str, ...]:
    return tuple(str(c) for c in children if isinstance(c, Token) and c.type == "NAME")


class _Builder:
    """Turns Lark's tree into our own frozen AST nodes, each with its file:line:col.

    A direct bottom-up walk, one method per rule called as `method(meta, children)`: a third of
    the time of lark.Transformer with `v_args(meta=True)`, which wraps every call and looks up
    every token; and a _BuildError reaches `parse` as itself, not wrapped in a VisitError.
    """

    def __init__(self, path: str) -> None:
        self._path = path
        self._rules = {name: getattr(self, name) for name in _RULES}

    def items(self, tree: Tree[Token]) -> list[ast.Item]:
        return list(self._build(tree).children)

    def _build(self, tree: Tree[Token]) -> Any:
        # Bottom-up with an explicit stack, not recursion: `not not ... x` or a long `or` nests
        # as deep as it is long, and the checker, not Python's stack, says how deep is too deep.
        pending: list[tuple[Tree[Token], bool]] = [(tree, False)]
        built: list[Any] = []
        while pending:
            node, ready = pending.pop()
            if not ready:
                pending.append((node, True))
                pending.extend((c, False) for c in reversed(node.children) if isinstance(c, Tree))
                continue
            subtrees = sum(1 for c in node.children if isinstance(c, Tree))
            done = iter(built[len(built) - subtrees :])
            children = [next(done) if isinstance(c, Tree) else c for c in node.children]
            del built[len(built) - subtrees :]
            rule = self._rules.get(node.data)
            if rule is None:  # `start`, the only rule without a node of its own
                built.append(Tree(node.data, children, node.meta))
            else:
                built.append(rule(node.meta, children))
        return built[0]

    def _loc(self, meta: Meta) -> Loc:
        if getattr(meta, "empty", True):
            return Loc(self._path, 0, 0)
        end = meta.end_column if meta.end_line == meta.line else 0
        return Loc(self._path, meta.line, meta.column, end, meta.end_line)

    # ---- schema
    def type_decl(self, meta: Meta, c: list[Any]) -> ast.TypeDecl:
        attrs, actions, rels, perms = [], [], [], []
        for m in c[1:]:
            if isinstance(m, tuple) and m and m[0] == "attributes":
                attrs.extend(m[1])
            elif isinstance(m, tuple) and m and m[0] == "actions":
                actions.extend(m[1])
            elif isinstance(m, ast.RelationDecl):
                rels.append(m)
            elif isinstance(m, ast.PermissionDecl):
                perms.append(m)
        return ast.TypeDecl(
            str(c[0]), tuple(attrs), tuple(actions), tuple(rels), tuple(perms), self._loc(meta)
        )

    def attributes_block(self, meta: Meta, c: list[Any]) -> tuple[str, tuple[ast.Attribute, ...]]:
        return ("attributes", tuple(a for a in c if isinstance(a, ast.Attribute)))

    def context_decl(self, meta: Meta, c: list[Any]) -> ast.ContextDecl:
        return ast.ContextDecl(tuple(a for a in c if isinstance(a, ast.Attribute)), self._loc(meta))

    def attr_decl(self, meta: Meta, c: list[Any]) -> ast.Attribute:
        optional = any(isinstance(x, Token) and x.type == "OPTIONAL" for x in c)
        return ast.Attribute(str(c[0]), c[-1], optional, self._loc(meta))

    def scalar_type(self, meta: Meta, c: list[Any]) -> str:
        return str(c[0])

    def set_type(self, meta: Meta, c: list[Any]) -> str:
        return f"set<{c[0]}>"

    def actions_decl(self, meta: Meta, c: list[Any]) -> tuple[str, tuple[str, ...]]:
        return ("actions", _names(c))

    def relation_decl(self, meta: Meta, c: list[Any]) -> ast.RelationDecl:
        return ast.RelationDecl(str(c[0]), tuple(c[1:]), self._loc(meta))

    def subject_direct(self, meta: Meta, c: list[Any]) -> ast.SubjectRef:
        return ast.SubjectRef(str(c[0]), loc=self._loc(meta))

    def subject_userset(self, meta: Meta, c: list[Any]) -> ast.SubjectRef:
        return ast.SubjectRef(str(c[0]), str(c[1]), loc=self._loc(meta))

    def subject_wildcard(self, meta: Meta, c: list[Any]) -> ast.SubjectRef:
        return ast.SubjectRef(str(c[0]), wildcard=True, loc=self._loc(meta))

    def permission_decl(self, meta: Meta, c: list[Any]) -> ast.PermissionDecl:
        return ast.PermissionDecl(str(c[0]), c[1], self._loc(meta))

    def computed(self, meta: Meta, c: list[Any]) -> ast.Computed:
        return ast.Computed(str(c[0]), self._loc(meta))

    def tuple_to_userset(self, meta: Meta, c: list[Any]) -> ast.TupleToUserset:
        return ast.TupleToUserset(str(c[0]), str(c[1]), self._loc(meta))

    def union(self, meta: Meta, c: list[Any]) -> ast.Union:
        return ast.Union(c[0], c[1], self._loc(meta))

    def intersection(self, meta: Meta, c: list[Any]) -> ast.Intersection:
        return ast.Intersection(c[0], c[1], self._loc(meta))

    def exclusion(self, meta: Meta, c: list[Any]) -> ast.Exclusion:
        return ast.Exclusion(c[0], c[1], self._loc(meta))

    # ---- roles, bindings, rules
    def role_decl(self, meta: Meta, c: list[Any]) -> ast.RoleDecl:
        scope, parents, grants = "", (), []
        for m in c[1:]:
            if isinstance(m, tuple) and m and m[0] == "scope":
                scope = m[1]
            elif isinstance(m, tuple) and m and m[0] == "parents":
                parents = m[1]
            elif isinstance(m, ast.Grant):
                grants.append(m)
        return ast.RoleDecl(str(c[0]), scope, parents, tuple(grants), self._loc(meta))

    def role_scope(self, meta: Meta, c: list[Any]) -> tuple[str, str]:
        return ("scope", str(c[0]))

    def role_parents(self, meta: Meta, c: list[Any]) -> tuple[str, tuple[str, ...]]:
        return ("parents", _names(c))

    def grant(self, meta: Meta, c: list[Any]) -> ast.Grant:
        return ast.Grant(c[0], c[1], self._loc(meta))

    def action_list(self, meta: Meta, c: list[Any]) -> tuple[str, ...] | None:
        return None if any(getattr(x, "type", "") == "STAR" for x in c) else _names(c)

    type_list = action_list

    def bind_when(self, meta: Meta, c: list[Any]) -> ast.BindWhen:
        return ast.BindWhen(_names(c[:-1]), c[-1], self._loc(meta))

    def bind_from(self, meta: Meta, c: list[Any]) -> ast.BindFrom:
        return ast.BindFrom(c[0], self._loc(meta))

    def rule_decl(self, meta: Meta, c: list[Any]) -> ast.RuleDecl:
        effect, name = str(c[0]), str(c[1])
        rest = c[2:]
        not_found = bool(rest) and rest[0] == "not_found"
        if not_found:
            rest = rest[1:]
        condition = rest[2] if len(rest) > 2 else None
        return ast.RuleDecl(effect, name, rest[0], rest[1], condition, not_found, self._loc(meta))

    def not_found(self, meta: Meta, c: list[Any]) -> str:
        return "not_found"

    # ---- expressions
    def or_(self, meta: Meta, c: list[Any]) -> ast.Or:
        return ast.Or(c[0], c[1], self._loc(meta))

    def and_(self, meta: Meta, c: list[Any]) -> ast.And:
        return ast.And(c[0], c[1], self._loc(meta))

    def not_(self, meta: Meta, c: list[Any]) -> ast.Not:
        return ast.Not(c[0], self._loc(meta))

    def compare(self, meta: Meta, c: list[Any]) -> ast.Compare:
        return ast.Compare(str(c[1]), c[0], c[2], self._loc(meta))

    def in_(self, meta: Meta, c: list[Any]) -> ast.In:
        return ast.In(c[0], c[1], self._loc(meta))

    def relation_check(self, meta: Meta, c: list[Any]) -> ast.RelationCheck:
        return ast.RelationCheck(str(c[0]), c[1], self._loc(meta))

    def has_role(self, meta: Meta, c: list[Any]) -> ast.HasRole:
        return ast.HasRole(str(c[0]), self._loc(meta))

    def resource_ref(self, meta: Meta, c: list[Any]) -> ast.EntityRef:
        return ast.EntityRef("resource", loc=self._loc(meta))

    def subject_ref_entity(self, meta: Meta, c: list[Any]) -> ast.EntityRef:
        return ast.EntityRef("subject", loc=self._loc(meta))

    def entity_ctor(self, meta: Meta, c: list[Any]) -> ast.EntityRef:
        return ast.EntityRef("ctor", str(c[0]), c[1], self._loc(meta))

    def method_call(self, meta: Meta, c: list[Any]) -> ast.MethodCall:
        args = tuple(a for a in c[2:] if a is not None)
        return ast.MethodCall(c[0], str(c[1]), args, self._loc(meta))

    def present(self, meta: Meta, c: list[Any]) -> ast.Present:
        return ast.Present(c[0], self._loc(meta))

    def set_literal(self, meta: Meta, c: list[Any]) -> ast.Literal:
        values = [x.value for x in c if isinstance(x, ast.Literal)]
        kinds = {type(v) for v in values}
        if len(kinds) > 1:
            raise _BuildError(
                Diagnostic("type_error", "a set holds values of one type", self._loc(meta))
            )
        return ast.Literal(frozenset(values), self._loc(meta))  # type: ignore[arg-type]

    def path(self, meta: Meta, c: list[Any]) -> ast.Path:
        return ast.Path(str(c[0]), str(c[1]), self._loc(meta))

    def root(self, meta: Meta, c: list[Any]) -> str:
        return str(c[0])

    def string(self, meta: Meta, c: list[Any]) -> ast.Literal:
        try:
            value = json.loads(str(c[0]))
        except ValueError:
            raise _BuildError(
                Diagnostic("syntax_error", f"bad escape in string {c[0]}", self._loc(meta))
            ) from None
        return ast.Literal(value, self._loc(meta))

    def int_(self, meta: Meta, c: list[Any]) -> ast.Literal:
        text = str(c[0])
        digits = text.lstrip("+-").lstrip("0") or "0"
        if len(digits) > len(str(MAX_INT)):
            # Past the range anyway, and past 4,300 digits int() itself refuses: keep a value
            # just as far out of range, for the checker to report as `int_out_of_range`.
            return ast.Literal((MAX_INT + 1) * (-1 if text.startswith("-") else 1), self._loc(meta))
        return ast.Literal(int(digits) * (-1 if text.startswith("-") else 1), self._loc(meta))

    def true(self, meta: Meta, c: list[Any]) -> ast.Literal:
        return ast.Literal(True, self._loc(meta))

    def false(self, meta: Meta, c: list[Any]) -> ast.Literal:
        return ast.Literal(False, self._loc(meta))


# The grammar rules _Builder makes nodes of: its public methods, apart from the entry point.
_RULES = tuple(
    name
    for name, value in vars(_Builder).items()
    if callable(value) and not name.startswith("_") and name != "items"
)
