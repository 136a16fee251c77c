"""The canonical formatter behind `pdp fmt`: one layout for every policy, comments kept.

Full-line comments stay above the item or member they precede; end-of-line comments stay on
their line. Formatting is idempotent and never changes meaning (parse(format(x)) == parse(x)).
"""

from __future__ import annotations

import json

from policy_lang import ast, limits
from policy_lang.diagnostics import Diagnostic, PolicyError
from policy_lang.parser import parse

INDENT = "  "


def format_source(text: str, path: str = "<policy>") -> str:
    """Parse `text` and print it canonically. Raises PolicyError when it does not parse, or
    nests deeper than the language allows (the printer recurses per level)."""
    tree = parse(text, path)
    too_deep = _too_deep(tree)
    if too_deep:
        raise PolicyError(too_deep)
    comments = _Comments(text)
    out: list[str] = []
    previous_kind = ""
    for item in tree.items:
        kind = type(item).__name__
        lines = _item(item)
        block = isinstance(item, ast.TypeDecl | ast.RoleDecl | ast.ContextDecl)
        leading = comments.before(item.loc.line)
        if out and (block or kind != previous_kind or leading):
            out.append("")
        out.extend(leading)
        out.extend(comments.attach(lines, item))
        previous_kind = kind
    out.extend(comments.rest())
    return "\n".join(out).rstrip() + "\n"


def _too_deep(tree: ast.PolicyFile) -> list[Diagnostic]:
    out = []
    for item in tree.items:
        if isinstance(item, ast.RuleDecl | ast.BindWhen) and item.condition is not None:
            excess = limits.expression_excess(item.condition)
            if excess is not None:
                out.append(Diagnostic(excess.code, excess.message, excess.loc))
        elif isinstance(item, ast.TypeDecl):
            for perm in item.permissions:
                nodes, depth, _ = limits.userset_shape(perm.expr)
                if nodes > limits.MAX_USERSET_NODES:
                    message = f"a permission may have at most {limits.MAX_USERSET_NODES:,} parts"
                    out.append(Diagnostic("permission_too_large", message, perm.loc))
                elif depth > limits.MAX_USERSET_DEPTH:
                    message = (
                        f"a permission may nest at most {limits.MAX_USERSET_DEPTH} levels deep"
                    )
                    out.append(Diagnostic("permission_too_deep", message, perm.loc))
    return out


class _Comments:
    """Comments by line, handed out in source order as the printer passes their lines."""

    def __init__(self, text: str) -> None:
        self.full: dict[int, str] = {}
        self.trailing: dict[int, str] = {}
        for number, line in enumerate(text.splitlines(), 1):
            at = _comment_start(line)
            if at < 0:
                continue
            comment = line[at:].rstrip()
            if line[:at].strip():
                self.trailing[number] = comment
            else:
                self.full[number] = comment

    def before(self, line: int) -> list[str]:
        taken = sorted(n for n in self.full if n < line)
        out = [self.full.pop(n) for n in taken]
        if taken and taken[-1] < line - 1:
            out.append("")  # a blank line separated the comment from what follows: keep it
        return out

    def attach(self, lines: list[tuple[str, int]], item: ast.Item) -> list[str]:
        out: list[str] = []
        for text, line in lines:
            if line:
                indent = text[: len(text) - len(text.lstrip())]
                if text == "}":  # comments just inside a closing brace stay inside the block
                    indent = INDENT
                out.extend(indent + c for c in self.before(line))
            trailing = self.trailing.pop(line, "") if line else ""
            out.append(f"{text}  {trailing}" if trailing else text)
        return out

    def rest(self) -> list[str]:
        remaining = sorted({**self.full, **self.trailing}.items())
        self.full, self.trailing = {}, {}
        return [c for _, c in remaining]


def _comment_start(line: str) -> int:
    in_string = False
    i = 0
    while i < len(line):
        ch = line[i]
        if in_string:
            if ch == "\\":
                i += 1
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif line.startswith("//", i):
            return i
        i += 1
    return -1


def _item(item: ast.Item) -> list[tuple[str, int]]:
    """The lines of one item, each with the source line it came from (0: none) for comments."""
    if isinstance(item, ast.TypeDecl):
        return _type_decl(item)
    if isinstance(item, ast.ContextDecl):
        return [
            ("context {", item.loc.line),
            *((f"{INDENT}{_attr(a)},", a.loc.line) for a in item.attributes),
            ("}", item.loc.end_line),
        ]
    if isinstance(item, ast.RoleDecl):
        return _role_decl(item)
    if isinstance(item, ast.BindFrom):
        return [(f"bind roles from {item.source}", item.loc.line)]
    if isinstance(item, ast.BindWhen):
        return [(f"bind {', '.join(item.roles)} when {expr(item.condition)}", item.loc.line)]
    head = f"{item.effect} {item.name}{' as not_found' if item.not_found else ''}:"
    head += f" {_names(item.actions)} on {_names(item.types)}"
    if item.condition is None:
        return [(head, item.loc.line)]
    return [(head, item.loc.line), (f"{INDENT}when {expr(item.condition)}", 0)]


def _type_decl(item: ast.TypeDecl) -> list[tuple[str, int]]:
    lines = [(f"type {item.name} {{", item.loc.line)]
    if item.attributes:
        lines.append((f"{INDENT}attributes {{", 0))
        lines.extend((f"{INDENT * 2}{_attr(a)},", a.loc.line) for a in item.attributes)
        lines.append((f"{INDENT}}}", 0))
    if item.actions:
        lines.append((f"{INDENT}actions {', '.join(item.actions)}", 0))
    for rel in item.relations:
        subjects = " | ".join(str(s) for s in rel.subjects)
        lines.append((f"{INDENT}relation {rel.name}: {subjects}", rel.loc.line))
    for perm in item.permissions:
        lines.append((f"{INDENT}permission {perm.name} = {userset(perm.expr)}", perm.loc.line))
    lines.append(("}", item.loc.end_line))
    return lines


def _role_decl(item: ast.RoleDecl) -> list[tuple[str, int]]:
    head = f"role {item.name}"
    if item.scope:
        head += f" scoped by {item.scope}"
    if item.parents:
        head += f" extends {', '.join(item.parents)}"
    lines = [(head + " {", item.loc.line)]
    lines.extend(
        (f"{INDENT}allow {_names(g.actions)} on {_names(g.types)}", g.loc.line) for g in item.grants
    )
    lines.append(("}", item.loc.end_line))
    return lines


def _attr(a: ast.Attribute) -> str:
    return f"{a.name}{'?' if a.optional else ''}: {a.type}"


def _names(names: tuple[str, ...] | None) -> str:
    return "*" if names is None else ", ".join(names)


# Precedence, loosest first: or < and < not < comparison < operand.
_PREC = {ast.Or: 1, ast.And: 2, ast.Not: 3}


def _prec(e: ast.Expr) -> int:
    return _PREC.get(type(e), 4)


def expr(e: ast.Expr) -> str:
    if isinstance(e, ast.Or | ast.And):
        # The run `a or b or c` in a loop (it parses left-leaning, so only its first operand
        # may be of looser precedence); a right operand of equal precedence keeps its parentheses.
        op = " or " if isinstance(e, ast.Or) else " and "
        p = _prec(e)
        first, *rest = ast.operands(e)
        parts = [expr(first) if _prec(first) >= p else f"({expr(first)})"]
        parts += [expr(x) if _prec(x) > p else f"({expr(x)})" for x in rest]
        return op.join(parts)
    if isinstance(e, ast.Not):
        inner = expr(e.operand)
        return f"not {inner}" if _prec(e.operand) >= 3 else f"not ({inner})"
    if isinstance(e, ast.Compare):
        return f"{_operand(e.left)} {e.op} {_operand(e.right)}"
    if isinstance(e, ast.In):
        return f"{_operand(e.element)} in {_operand(e.collection)}"
    if isinstance(e, ast.RelationCheck):
        ent = e.entity
        target = ent.kind if ent.kind != "ctor" else f"{ent.type}({_operand(ent.id)})"  # type: ignore[arg-type]
        return f"subject has {e.relation} on {target}"
    if isinstance(e, ast.HasRole):
        return f"subject has role {e.role}"
    return _operand(e)


def _operand(e: ast.Expr) -> str:
    if isinstance(e, ast.Literal):
        return _literal(e.value)
    if isinstance(e, ast.Path):
        return str(e)
    if isinstance(e, ast.Present):
        return f"has({e.path})"
    if isinstance(e, ast.MethodCall):
        return f"{_operand(e.target)}.{e.method}({', '.join(expr(a) for a in e.args)})"
    return f"({expr(e)})"


def _literal(v: ast.LiteralValue) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v)
    items: list[str | int] = sorted(v)  # a set literal holds one type (the parser ensures it)
    return "[" + ", ".join(_literal(x) for x in items) + "]"


def userset(e: ast.UsersetExpr, parent: int = 0, beside_plus: bool = False) -> str:
    """Precedence: + and - (1, left-associative) < & (2). Parentheses are also kept wherever
    SpiceDB would read the text otherwise (`beside_plus`: an operand of `+`, where a bare `-` on
    the left or a bare `&` is an error, see policy_lang.parser._checked_union)."""
    if isinstance(e, ast.Computed):
        return e.relation
    if isinstance(e, ast.TupleToUserset):
        return f"{e.tupleset}->{e.computed}"
    # A run of one operator in a loop, as in `expr`.
    first, *rest = ast.userset_operands(e)
    if isinstance(e, ast.Intersection):
        text = " & ".join([userset(first, 2), *(userset(x, 3) for x in rest)])
        return f"({text})" if parent > 2 or beside_plus else text
    plus = isinstance(e, ast.Union)
    op = " + " if plus else " - "
    text = op.join([userset(first, 1, plus), *(userset(x, 2, plus) for x in rest)])
    return f"({text})" if parent > 1 or (beside_plus and not plus) else text
