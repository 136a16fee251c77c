"""What an editor asks of a policy file, answered without any protocol: its diagnostics (those of
`pdp validate` on the bundle around it, with unsaved editor text laid over the files), where a
name is declared, the declaration to show on hover, and the canonical formatting.

Positions here are 1-based line and column, as policy_lang's Loc; the language server converts.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pdp.authoring import drafts
from pdp.bundle import POLICY_SUFFIX
from policy_lang import ast
from policy_lang.checker import check
from policy_lang.diagnostics import Diagnostic, Loc, PolicyError, with_sources
from policy_lang.formatter import format_source
from policy_lang.parser import parse

_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_HOVER_LINES = 12  # a long type shows its first lines on hover


@dataclass(frozen=True, slots=True)
class Declaration:
    """A declared name: a type, a relation or permission of a type, or a role."""

    kind: str  # "type", "relation", "permission" or "role"
    name: str
    owner: str  # the type a relation or permission belongs to; "" for types and roles
    loc: Loc  # the whole declaration
    name_loc: Loc  # the name itself
    source: str  # the declaration's text

    @property
    def title(self) -> str:
        return f"{self.kind} {self.owner}#{self.name}" if self.owner else f"{self.kind} {self.name}"


def diagnostics(path: Path, open_docs: Mapping[Path, str]) -> dict[Path, list[Diagnostic]]:
    """Every diagnostic `pdp validate` would report for the bundle holding `path`, by file, with
    the open documents' text in place of the files on disk (every open file of the bundle has an
    entry, empty when clean). A policy file in no bundle is parsed and checked alone."""
    root = drafts.find_bundle_root(path.parent)
    if root is None:
        text = open_docs.get(path)
        if text is None:
            text = path.read_text(encoding="utf-8")
        return {path: _check_alone(str(path), text)}
    root = root.resolve()
    edited = _drafts_under(root, open_docs)
    _, found = drafts.load_dir(root, edited, new=True)
    out: dict[Path, list[Diagnostic]] = {root / rel: [] for rel in edited}
    for d in found:
        out.setdefault(Path(d.loc.file), []).append(d)
    return out


def _drafts_under(root: Path, open_docs: Mapping[Path, str]) -> dict[str, str]:
    out = {}
    for p, text in open_docs.items():
        try:
            rel = p.relative_to(root).as_posix()
        except ValueError:
            continue
        if rel.endswith(drafts.EDITABLE_SUFFIXES):
            out[rel] = text
    return out


def _check_alone(name: str, text: str) -> list[Diagnostic]:
    """As `pdp validate` checks a file: after a syntax error, what parsed is still checked."""
    try:
        tree = parse(text, name)
    except PolicyError as exc:
        _, found = check([exc.partial] if exc.partial is not None else [], exc.lost)
        return with_sources([*exc.diagnostics, *found], {name: text})
    _, found = check([tree])
    return with_sources(found, {name: text})


def format_text(text: str, name: str) -> str | None:
    """The file in canonical form; None when it does not parse (nothing to format)."""
    try:
        return format_source(text, name)
    except PolicyError:
        return None


# ---- names --------------------------------------------------------------------------------------


def policy_sources(path: Path, open_docs: Mapping[Path, str]) -> dict[Path, str]:
    """The text of every policy file of the bundle holding `path` (open documents as edited),
    or of `path` alone outside a bundle."""
    root = drafts.find_bundle_root(path.parent)
    found = sorted(root.resolve().rglob(f"*{POLICY_SUFFIX}")) if root is not None else [path]
    out = {}
    for p in found:
        if any(part.startswith(".") for part in p.parts[-2:]):
            continue
        try:
            out[p] = open_docs[p] if p in open_docs else p.read_text(encoding="utf-8")
        except OSError:
            continue
    for p, text in open_docs.items():
        if root is not None and p.suffix == POLICY_SUFFIX and p.is_relative_to(root.resolve()):
            out[p] = text
    out[path] = open_docs.get(path, out.get(path, ""))
    return out


def declarations(sources: Mapping[Path, str]) -> list[Declaration]:
    """Every declaration in the files that parse (a file with a syntax error declares nothing)."""
    out: list[Declaration] = []
    for p, text in sources.items():
        try:
            tree = parse(text, str(p))
        except PolicyError:
            continue
        lines = text.splitlines()
        for item in tree.items:
            if isinstance(item, ast.TypeDecl):
                out.append(_declaration("type", item.name, "", item.loc, lines))
                for rel in item.relations:
                    out.append(_declaration("relation", rel.name, item.name, rel.loc, lines))
                for perm in item.permissions:
                    out.append(_declaration("permission", perm.name, item.name, perm.loc, lines))
            elif isinstance(item, ast.RoleDecl):
                out.append(_declaration("role", item.name, "", item.loc, lines))
    return out


def _declaration(kind: str, name: str, owner: str, loc: Loc, lines: list[str]) -> Declaration:
    first = loc.line - 1
    last = max(loc.end_line, loc.line)
    text = "\n".join(lines[first:last]) if 0 <= first < len(lines) else ""
    name_loc = loc
    if 0 <= first < len(lines):
        # The name is the first word after the keyword (`relation viewer: ...`, `type document`).
        match = re.compile(rf"\b{re.escape(name)}\b").search(lines[first], loc.col)
        if match:
            name_loc = Loc(loc.file, loc.line, match.start() + 1, match.end() + 1, loc.line)
    return Declaration(kind, name, owner, loc, name_loc, text)


def word_at(text: str, line: int, col: int) -> tuple[str, int, int] | None:
    """The name under 1-based (line, col) and its start and end columns (1-based, end exclusive)."""
    lines = text.splitlines()
    if not 0 < line <= len(lines):
        return None
    for m in _WORD.finditer(lines[line - 1]):
        if m.start() + 1 <= col <= m.end() + 1:  # a cursor just after a name is on it too
            return m.group(), m.start() + 1, m.end() + 1
    return None


def definition(path: Path, open_docs: Mapping[Path, str], line: int, col: int) -> list[Declaration]:
    """Where the name under (line, col) of `path` is declared: the declarations its context
    admits (a relation of the rule's or the type's own types before any other), best first."""
    sources = policy_sources(path, open_docs)
    text = sources.get(path, "")
    found = word_at(text, line, col)
    if found is None:
        return []
    word, start, end = found
    line_text = text.splitlines()[line - 1]
    candidates = [d for d in declarations(sources) if d.name == word]
    if not candidates:
        return []
    wanted = _kinds_wanted(line_text[: start - 1], line_text[end - 1 :])
    preferred = [d for d in candidates if d.kind in wanted] or candidates
    owners = _owners_near(text, path, line, line_text[: start - 1])
    return [d for d in preferred if d.owner in owners] or preferred


def _kinds_wanted(before: str, after: str) -> set[str]:
    """Which kinds of name fit the text around it: `has role X`, `extends X`, `bind X` name roles;
    `has X on`, `#X`, `->X`, `a + X` name relations; `on X`, `X#rel`, `X(…)`, `: X` name types."""
    before_words = before.rstrip().split()
    last = before_words[-1] if before_words else ""
    relations = {"relation", "permission"}
    if last in ("role", "extends") or (before_words[:1] == ["bind"] and "when" not in before):
        return {"role"}
    if before.rstrip().endswith(("#", "->")) or last == "has":
        return relations
    if after.lstrip().startswith(("#", "(", "{", ":*")) or last in ("on", "type", "by"):
        return {"type"}
    if before.rstrip().endswith(("=", "+", "-", "&", "(")) and "permission" in before:
        return relations
    if last.endswith(",") and "extends" in before:
        return {"role"}
    return {"type", "role", "relation", "permission"}


def _owners_near(text: str, path: Path, line: int, before: str) -> set[str]:
    """The types whose relations the name most likely means: the type being declared around
    the line, the constructor in `on tenant(...)`, or the types of the rule around it."""
    try:
        tree = parse(text, str(path))
    except PolicyError:
        return set()
    for item in tree.items:
        if not item.loc.line <= line <= max(item.loc.end_line, item.loc.line):
            continue
        if isinstance(item, ast.TypeDecl):
            return {item.name}
        if isinstance(item, ast.RuleDecl | ast.BindWhen):
            return _relation_owners(item, line)
    return set()


def _relation_owners(item: ast.RuleDecl | ast.BindWhen, line: int) -> set[str]:
    condition = item.condition
    rule_types = set(item.types or ()) if isinstance(item, ast.RuleDecl) else set()
    owners: set[str] = set()
    for e in ast.walk(condition) if condition is not None else iter(()):
        if isinstance(e, ast.RelationCheck) and e.loc.line == line:
            if e.entity.kind == "ctor":
                owners.add(e.entity.type)
            elif e.entity.kind == "resource":
                owners |= rule_types
    return owners or rule_types


def hover(path: Path, open_docs: Mapping[Path, str], line: int, col: int) -> str | None:
    """Markdown for the name under (line, col): each declaration it may mean, with its text."""
    found = definition(path, open_docs, line, col)
    if not found:
        return None
    return "\n\n".join(_hover_one(d) for d in found)


def _hover_one(d: Declaration) -> str:
    lines = d.source.splitlines()
    shown = "\n".join(lines[:_HOVER_LINES] + (["  ..."] if len(lines) > _HOVER_LINES else []))
    where = f"{Path(d.loc.file).name}:{d.loc.line}"
    return f"**{d.title}** ({where})\n```pdp\n{shown}\n```"
