"""Text to syntax tree: the Lark grammar, the callbacks that build policy_lang.ast as Lark's LALR
parser reduces each rule (no intermediate tree), and readable syntax errors.

Every syntax error of a file is reported: after an error the parser resumes at the next line that
starts a top-level item, so one typo does not hide the rest.
"""

from __future__ import annotations

import bisect
import json
import re
import threading
from dataclasses import replace
from functools import cache
from pathlib import Path
from typing import Any

from lark import Lark, Token
from lark.exceptions import LarkError, UnexpectedCharacters, UnexpectedEOF, UnexpectedInput

from policy_lang import ast, lalr
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
    """The parser, building our AST as it reduces (no intermediate tree, no second walk).

    Every token is kept (`keep_all_tokens`) so that a node's position starts at its keyword, as
    a person reads it (`type`, `not`, `(`): _Callbacks computes positions itself, from the
    tokens and the nodes below, and drops the punctuation before building."""
    grammar = (Path(__file__).parent / "grammar.lark").read_text(encoding="utf-8")
    return Lark(
        grammar,
        parser="lalr",
        keep_all_tokens=True,
        maybe_placeholders=False,
        transformer=_Callbacks(),
    )


@cache
def _driver() -> lalr.Driver | None:
    """The lean driver over the same parser's tables (policy_lang.lalr): Lark's lexing and
    LALR steps in one loop, ~2x faster; Lark itself parses again only a text that fails."""
    return lalr.driver(_lark())


def parse(text: str, path: str = "<policy>") -> ast.PolicyFile:
    """Parse one policy file. Raises PolicyError listing every syntax error."""
    items: list[ast.Item] = []
    errors: list[Diagnostic] = []
    lost: set[str] = set()  # names declared in text that did not parse
    _state.precedence = []
    offset = 0
    while True:
        # Keep line and column numbers true by blanking (not cutting) what was already consumed.
        masked = re.sub(r"[^\n]", " ", text[:offset]) + text[offset:]
        try:
            items.extend(_items(masked, path))
            break
        except UnexpectedInput as exc:
            at = exc.pos_in_stream if exc.pos_in_stream else len(text)
            # An item's first keyword, unexpected, ends an item left incomplete: the error is
            # that one's, and this item parses (`permit a: ... when x ==` then `permit b`).
            ahead = offset < at and _starts_item(text, at)
            found = _syntax_diagnostic(exc, text, path)
            if ahead and not found.hint:
                found = replace(found, hint="the declaration before it is not finished")
            errors.append(found)
            resume = at if ahead else _next_item_start(text, at)
            broken = _item_start(text, offset, at - 1 if ahead else at)
            lost |= _declared(text, broken, resume or len(text))
            if resume is None or len(errors) >= MAX_SYNTAX_ERRORS:
                break
            # The items before the error are lost for this pass; parse them alone to keep them.
            items.extend(_parse_prefix(text, offset, exc, path))
            offset = resume
        except _BuildError as exc:
            errors.append(exc.diagnostic)
            lost |= _declared(text, offset, len(text))
            break
        except (LarkError, RecursionError) as exc:  # never let Lark's internals escape
            errors.append(
                Diagnostic("syntax_error", f"cannot parse: {type(exc).__name__}", Loc(path, 1, 1))
            )
            lost |= _declared(text, offset, len(text))
            break
    # A region parsed twice (a retry after an error) reports its precedence errors twice.
    errors.extend(dict.fromkeys(_state.precedence))
    if errors:
        raise PolicyError(errors, ast.PolicyFile(path, tuple(items)), frozenset(lost))
    return ast.PolicyFile(path, tuple(items))


_DECLARES = re.compile(r"^[ \t]*(?:(?:type|role)[ \t]+([A-Za-z_][A-Za-z0-9_]*)|(context)\b)", re.M)


def _declared(text: str, start: int, end: int) -> set[str]:
    """The types and roles declared in text[start:end] (and `context` for a context block)."""
    return {m.group(1) or m.group(2) for m in _DECLARES.finditer(text, start, end)}


def _item_start(text: str, offset: int, pos: int) -> int:
    """Where the top-level item holding `pos` begins (at or after `offset`)."""
    starts = [m.start(1) for m in _TOP_LEVEL.finditer(text, offset, pos + 1) if m.start(1) <= pos]
    return starts[-1] if starts else offset


def reparse(text: str, path: str, before: tuple[str, ast.PolicyFile]) -> ast.PolicyFile:
    """`parse(text, path)`, given the same file's previous text and parse: the items that lie,
    with the item after them, in the part both texts share from the start are the previous ones
    (the very same nodes, at the same lines), and parsing resumes at the first that does not; so
    an edit near the end of a long file parses only its end. A text that fails is parsed whole,
    by `parse`, with all its diagnostics."""
    old_text, old = before
    fast = _driver()
    if fast is None or not _resumable() or old.path != path or len(old.items) < 3:
        return parse(text, path)
    shared = _shared_prefix(old_text, text)
    starts = _item_offsets(old_text, old.items)
    # An item is kept when it and the first token of the next one (its lookahead, and the
    # character after it) are in the shared part: the next item's whole text is.
    keep = bisect.bisect_right(starts, shared) - 2
    if keep < 1:
        return parse(text, path)
    loc = old.items[keep].loc
    resume = starts[keep]
    try:
        _state.path = path
        _state.precedence = []
        tree = fast.parse(text, resume, loc.line, resume - (loc.col - 1))
    except _BuildError:
        tree = None
    if tree is None or _state.precedence:
        return parse(text, path)
    return ast.PolicyFile(path, old.items[:keep] + tuple(item.value for item in tree.children))


@cache
def _resumable() -> bool:
    fast = _driver()
    return fast is not None and fast.resumable()


def _shared_prefix(a: str, b: str) -> int:
    """The length of the longest common prefix of `a` and `b` (compared in C, by halves)."""
    lo, hi = 0, min(len(a), len(b))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[lo:mid] == b[lo:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _item_offsets(text: str, items: tuple[ast.Item, ...]) -> list[int]:
    """Where each item's first token is in `text` (items in order, from their locations)."""
    offsets = []
    line, line_start = 1, 0
    for item in items:
        while line < item.loc.line:
            line_start = text.index("\n", line_start) + 1
            line += 1
        offsets.append(line_start + item.loc.col - 1)
    return offsets


def _parse_prefix(text: str, offset: int, exc: UnexpectedInput, path: str) -> list[ast.Item]:
    """Parse the complete items between `offset` and the item that holds the error."""
    error_pos = exc.pos_in_stream or 0
    starts = [m.start(1) for m in _TOP_LEVEL.finditer(text, offset, error_pos + 1)]
    if len(starts) < 2:
        return []
    # The item holding the error is the last that starts before it (at it: the error is the
    # next item's keyword, ending the one before).
    end = starts[-1] if starts[-1] < error_pos else starts[-2]
    masked = re.sub(r"[^\n]", " ", text[:offset]) + text[offset:end]
    try:
        return _items(masked, path)
    except (LarkError, _BuildError, RecursionError):
        return []


def _starts_item(text: str, pos: int) -> bool:
    """Whether a top-level item's keyword begins at `pos`, first on its line."""
    m = _TOP_LEVEL.match(text, text.rfind("\n", 0, pos) + 1)
    return m is not None and m.start(1) == pos


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


# A token as a callback sees it: Lark's, or the lean driver's.
_TOKENS = (Token, lalr.Tok)


def _names(children: list[Any]) -> tuple[str, ...]:
    return tuple(str(c) for c in children if isinstance(c, _TOKENS) and c.type == "NAME")


class _Builder:
    """Our frozen AST nodes from one reduction each: `method(pos, children)` with the children
    already built and the punctuation dropped, each node with its file:line:col."""

    def _loc(self, pos: _Pos) -> Loc:
        end = pos.end_column if pos.end_line == pos.line else 0
        return Loc(_state.path, pos.line, pos.column, end, pos.end_line)

    # ---- schema
    def type_decl(self, meta: _Pos, c: list[Any]) -> ast.TypeDecl:
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

    def attributes_block(self, meta: _Pos, c: list[Any]) -> tuple[str, tuple[ast.Attribute, ...]]:
        return ("attributes", tuple(a for a in c if isinstance(a, ast.Attribute)))

    def context_decl(self, meta: _Pos, c: list[Any]) -> ast.ContextDecl:
        return ast.ContextDecl(tuple(a for a in c if isinstance(a, ast.Attribute)), self._loc(meta))

    def attr_decl(self, meta: _Pos, c: list[Any]) -> ast.Attribute:
        optional = any(isinstance(x, _TOKENS) and x.type == "OPTIONAL" for x in c)
        return ast.Attribute(str(c[0]), c[-1], optional, self._loc(meta))

    def scalar_type(self, meta: _Pos, c: list[Any]) -> str:
        return str(c[0])

    def set_type(self, meta: _Pos, c: list[Any]) -> str:
        return f"set<{c[0]}>"

    def actions_decl(self, meta: _Pos, c: list[Any]) -> tuple[str, tuple[str, ...]]:
        return ("actions", _names(c))

    def relation_decl(self, meta: _Pos, c: list[Any]) -> ast.RelationDecl:
        return ast.RelationDecl(str(c[0]), tuple(c[1:]), self._loc(meta))

    def subject_direct(self, meta: _Pos, c: list[Any]) -> ast.SubjectRef:
        return ast.SubjectRef(str(c[0]), loc=self._loc(meta))

    def subject_userset(self, meta: _Pos, c: list[Any]) -> ast.SubjectRef:
        return ast.SubjectRef(str(c[0]), str(c[1]), loc=self._loc(meta))

    def subject_wildcard(self, meta: _Pos, c: list[Any]) -> ast.SubjectRef:
        return ast.SubjectRef(str(c[0]), wildcard=True, loc=self._loc(meta))

    def permission_decl(self, meta: _Pos, c: list[Any]) -> ast.PermissionDecl:
        return ast.PermissionDecl(str(c[0]), c[1], self._loc(meta))

    def computed(self, meta: _Pos, c: list[Any]) -> ast.Computed:
        return ast.Computed(str(c[0]), self._loc(meta))

    def tuple_to_userset(self, meta: _Pos, c: list[Any]) -> ast.TupleToUserset:
        return ast.TupleToUserset(str(c[0]), str(c[1]), self._loc(meta))

    def union(self, meta: _Pos, c: list[Any]) -> ast.Union:
        return ast.Union(c[0], c[1], self._loc(meta))

    def intersection(self, meta: _Pos, c: list[Any]) -> ast.Intersection:
        return ast.Intersection(c[0], c[1], self._loc(meta))

    def exclusion(self, meta: _Pos, c: list[Any]) -> ast.Exclusion:
        return ast.Exclusion(c[0], c[1], self._loc(meta))

    # ---- roles, bindings, rules
    def role_decl(self, meta: _Pos, c: list[Any]) -> ast.RoleDecl:
        scope, parents, grants = "", (), []
        for m in c[1:]:
            if isinstance(m, tuple) and m and m[0] == "scope":
                scope = m[1]
            elif isinstance(m, tuple) and m and m[0] == "parents":
                parents = m[1]
            elif isinstance(m, ast.Grant):
                grants.append(m)
        return ast.RoleDecl(str(c[0]), scope, parents, tuple(grants), self._loc(meta))

    def role_scope(self, meta: _Pos, c: list[Any]) -> tuple[str, str]:
        return ("scope", str(c[0]))

    def role_parents(self, meta: _Pos, c: list[Any]) -> tuple[str, tuple[str, ...]]:
        return ("parents", _names(c))

    def grant(self, meta: _Pos, c: list[Any]) -> ast.Grant:
        return ast.Grant(c[0], c[1], self._loc(meta))

    def action_list(self, meta: _Pos, c: list[Any]) -> tuple[str, ...] | None:
        return None if any(getattr(x, "type", "") == "STAR" for x in c) else _names(c)

    type_list = action_list

    def bind_when(self, meta: _Pos, c: list[Any]) -> ast.BindWhen:
        return ast.BindWhen(_names(c[:-1]), c[-1], self._loc(meta))

    def bind_from(self, meta: _Pos, c: list[Any]) -> ast.BindFrom:
        return ast.BindFrom(c[0], self._loc(meta))

    def rule_decl(self, meta: _Pos, c: list[Any]) -> ast.RuleDecl:
        effect, name = str(c[0]), str(c[1])
        rest = c[2:]
        not_found = bool(rest) and rest[0] == "not_found"
        if not_found:
            rest = rest[1:]
        condition = rest[2] if len(rest) > 2 else None
        return ast.RuleDecl(effect, name, rest[0], rest[1], condition, not_found, self._loc(meta))

    def not_found(self, meta: _Pos, c: list[Any]) -> str:
        return "not_found"

    # ---- expressions
    def or_(self, meta: _Pos, c: list[Any]) -> ast.Or:
        return ast.Or(c[0], c[1], self._loc(meta))

    def and_(self, meta: _Pos, c: list[Any]) -> ast.And:
        return ast.And(c[0], c[1], self._loc(meta))

    def not_(self, meta: _Pos, c: list[Any]) -> ast.Not:
        return ast.Not(c[0], self._loc(meta))

    def compare(self, meta: _Pos, c: list[Any]) -> ast.Compare:
        return ast.Compare(str(c[1]), c[0], c[2], self._loc(meta))

    def in_(self, meta: _Pos, c: list[Any]) -> ast.In:
        return ast.In(c[0], c[1], self._loc(meta))

    def relation_check(self, meta: _Pos, c: list[Any]) -> ast.RelationCheck:
        return ast.RelationCheck(str(c[0]), c[1], self._loc(meta))

    def has_role(self, meta: _Pos, c: list[Any]) -> ast.HasRole:
        return ast.HasRole(str(c[0]), self._loc(meta))

    def resource_ref(self, meta: _Pos, c: list[Any]) -> ast.EntityRef:
        return ast.EntityRef("resource", loc=self._loc(meta))

    def subject_ref_entity(self, meta: _Pos, c: list[Any]) -> ast.EntityRef:
        return ast.EntityRef("subject", loc=self._loc(meta))

    def entity_ctor(self, meta: _Pos, c: list[Any]) -> ast.EntityRef:
        return ast.EntityRef("ctor", str(c[0]), c[1], self._loc(meta))

    def method_call(self, meta: _Pos, c: list[Any]) -> ast.MethodCall:
        args = tuple(a for a in c[2:] if a is not None)
        return ast.MethodCall(c[0], str(c[1]), args, self._loc(meta))

    def present(self, meta: _Pos, c: list[Any]) -> ast.Present:
        return ast.Present(c[0], self._loc(meta))

    def set_literal(self, meta: _Pos, c: list[Any]) -> ast.Literal:
        values = [x.value for x in c if isinstance(x, ast.Literal)]
        kinds = {type(v) for v in values}
        if len(kinds) > 1:
            raise _BuildError(
                Diagnostic("type_error", "a set holds values of one type", self._loc(meta))
            )
        return ast.Literal(frozenset(values), self._loc(meta))  # type: ignore[arg-type]

    def path(self, meta: _Pos, c: list[Any]) -> ast.Path:
        return ast.Path(str(c[0]), str(c[1]), self._loc(meta))

    def root(self, meta: _Pos, c: list[Any]) -> str:
        return str(c[0])

    def string(self, meta: _Pos, c: list[Any]) -> ast.Literal:
        try:
            value = json.loads(str(c[0]))
        except ValueError:
            raise _BuildError(
                Diagnostic("syntax_error", f"bad escape in string {c[0]}", self._loc(meta))
            ) from None
        return ast.Literal(value, self._loc(meta))

    def int_(self, meta: _Pos, c: list[Any]) -> ast.Literal:
        text = str(c[0])
        digits = text.lstrip("+-").lstrip("0") or "0"
        if len(digits) > len(str(MAX_INT)):
            # Past the range anyway, and past 4,300 digits int() itself refuses: keep a value
            # just as far out of range, for the checker to report as `int_out_of_range`.
            return ast.Literal((MAX_INT + 1) * (-1 if text.startswith("-") else 1), self._loc(meta))
        return ast.Literal(int(digits) * (-1 if text.startswith("-") else 1), self._loc(meta))

    def true(self, meta: _Pos, c: list[Any]) -> ast.Literal:
        return ast.Literal(True, self._loc(meta))

    def false(self, meta: _Pos, c: list[Any]) -> ast.Literal:
        return ast.Literal(False, self._loc(meta))


# The grammar rules _Builder makes nodes of: its public methods.
_RULES = tuple(
    name for name, value in vars(_Builder).items() if callable(value) and not name.startswith("_")
)

# The tokens a rule's builder sees: named terminals. Keywords and punctuation (`type`, `{`, `,`)
# only place a node; `root` is the one rule that reads its keyword (`subject`, ...).
_KEPT = frozenset({"NAME", "EFFECT", "OPTIONAL", "STAR", "COMP_OP", "SIGNED_INT", "ESCAPED_STRING"})

# The file being parsed, for the Locs the builder makes: set by _items, per thread (the Lark
# parser and its callbacks are shared).
_state = threading.local()


class _Pos:
    """Where a node is: the line and column of its first token, and past its last one."""

    __slots__ = ("column", "end_column", "end_line", "line")

    def __init__(self, line: int, column: int, end_line: int, end_column: int) -> None:
        self.line, self.column, self.end_line, self.end_column = line, column, end_line, end_column


class _Built:
    """A built node on the parser's stack, with its span and its outer span: wider only when
    parentheses around it were dropped, so that a parent starts or ends at them."""

    __slots__ = ("outer", "pos", "value")

    def __init__(self, value: Any, pos: _Pos, outer: _Pos | None = None) -> None:
        self.value, self.pos, self.outer = value, pos, outer or pos


def _reducer(method: Any, *, keep_all: bool) -> Any:
    def reduce(children: list[Any]) -> _Built:
        first, last = children[0], children[-1]
        start = first.outer if type(first) is _Built else first
        stop = last.outer if type(last) is _Built else last
        pos = _Pos(start.line, start.column, stop.end_line, stop.end_column)
        args = [
            c.value if type(c) is _Built else c
            for c in children
            if type(c) is _Built or keep_all or c.type in _KEPT
        ]
        return _Built(method(pos, args), pos)

    return reduce


def _unparenthesize(children: list[Any]) -> _Built:
    """`( expr )`: the expression itself, its outer span taking in the parentheses."""
    lpar, inner, rpar = children
    return _Built(
        inner.value, inner.pos, _Pos(lpar.line, lpar.column, rpar.end_line, rpar.end_column)
    )


def _checked_union(reduce: Any) -> Any:
    """`+` beside an operator SpiceDB binds otherwise, without parentheses, is an error (kept in
    `_state.precedence`, so the parse goes on and reports the rest): pdp binds `&` tighter than
    `+` and `-`, which are left-associative; SpiceDB binds `+` tightest, then `&`, then `-`. So
    `a - b + c` and any `&` beside `+` read differently there; `a + b - c` and runs of one
    operator read the same, and stay valid."""

    def union(children: list[Any]) -> _Built:
        built: _Built = reduce(children)
        left, right = children[0], children[-1]
        found: list[Diagnostic] | None = getattr(_state, "precedence", None)
        if found is None:  # parsed outside parse() and reparse(): nobody to report to
            return built
        problem = _mixed(left, right)
        if problem is not None:
            found.append(_precedence_diagnostic(problem, built.pos))
        return built

    return union


def _bare(child: Any, kind: type) -> bool:
    """A node of `kind` written without parentheses of its own."""
    return type(child) is _Built and child.outer is child.pos and isinstance(child.value, kind)


def _mixed(left: Any, right: Any) -> tuple[str, str, str] | None:
    """(what was written, pdp's reading, SpiceDB's) of `left + right`, if they differ."""
    from policy_lang.formatter import userset as text  # the formatter imports this module

    if _bare(left, ast.Exclusion):  # `a - b + c`
        a, b, c = text(left.value.left, 1), text(left.value.right, 2), text(right.value, 2)
        return f"{a} - {b} + {c}", f"({a} - {b}) + {c}", f"{a} - ({b} + {c})"
    if _bare(right, ast.Intersection):  # `a + b & c`
        a, b, c = text(left.value, 1), text(right.value.left, 2), text(right.value.right, 3)
        return f"{a} + {b} & {c}", f"{a} + ({b} & {c})", f"({a} + {b}) & {c}"
    if _bare(left, ast.Intersection):  # `a & b + c`
        a, b, c = text(left.value.left, 2), text(left.value.right, 3), text(right.value, 2)
        return f"{a} & {b} + {c}", f"({a} & {b}) + {c}", f"{a} & ({b} + {c})"
    return None


def _precedence_diagnostic(problem: tuple[str, str, str], pos: _Pos) -> Diagnostic:
    written, ours, theirs = problem
    end = pos.end_column if pos.end_line == pos.line else 0
    return Diagnostic(
        "ambiguous_precedence",
        f"`{written}` needs parentheses: pdp reads it as `{ours}`, SpiceDB and Zanzibar-style "
        f"schemas as `{theirs}`",
        Loc(_state.path, pos.line, pos.column, end, pos.end_line),
        hint=f"write `{ours}` for pdp's reading, or `{theirs}`",
    )


class _Callbacks:
    """What the parser calls as it reduces each rule (Lark's `transformer=`)."""

    def __init__(self) -> None:
        builder = _Builder()
        for name in _RULES:
            reduce = _reducer(getattr(builder, name), keep_all=name == "root")
            setattr(self, name, _checked_union(reduce) if name == "union" else reduce)
        self.atom = self.userset_atom = _unparenthesize


def _items(text: str, path: str) -> list[ast.Item]:
    _state.path = path
    fast = _driver()
    tree = fast.parse(text) if fast is not None else None
    if tree is None:  # a syntax error (or no lean driver): Lark raises it, with its details
        tree = _lark().parse(text)  # `start`: the one rule with no callback, a Tree of _Built
    built: list[Any] = tree.children
    return [item.value for item in built]
