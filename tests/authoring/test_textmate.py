"""The TextMate grammar (pdp/authoring/editors/pdp.tmLanguage.json) tokenises the example bundle:
every keyword of the language's Lark grammar, wherever the bundle uses it, gets a keyword scope;
declared names, comments, properties and literals get theirs.

Why Python's `re` and not a TextMate engine: PyPI has no maintained Python TextMate tokenizer (the
vscode-textmate ports there have not had a release in years). The grammar keeps to the regex subset
Oniguruma and `re` share (checked below: each one compiles under `re`), and the test runs them as
a TextMate engine does over one line: at each point the rule matching earliest wins, the first
listed on a tie; a `begin` rule runs to its `end`."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

SAAS = Path(__file__).parents[2] / "bundles" / "saas"
GRAMMAR = json.loads(
    resources.files("pdp.authoring").joinpath("editors", "pdp.tmLanguage.json").read_text()
)
LARK = (Path(__file__).parents[2] / "policy_lang" / "grammar.lark").read_text()
# The scopes a keyword may take: a keyword, a declaration's storage type, a root (`subject`),
# a built-in type (`set`) or a literal (`true`).
KEYWORD_SCOPES = (
    "keyword.",
    "storage.type.",
    "variable.language.",
    "support.type.",
    "constant.language.",
)


def _rules(patterns: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """The grammar's rules in order, includes resolved."""
    for p in patterns:
        if "include" in p:
            yield from _rules([GRAMMAR["repository"][p["include"].lstrip("#")]])
        elif "patterns" in p and "match" not in p and "begin" not in p:
            yield from _rules(p["patterns"])
        else:
            yield p


RULES = list(_rules(GRAMMAR["patterns"]))


def tokenize(line: str) -> list[tuple[str, str]]:
    """(text, scope) for each scoped piece of one line."""
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(line):
        best: tuple[int, int, dict[str, Any], re.Match[str]] | None = None
        for i, rule in enumerate(RULES):
            m = re.compile(rule.get("match") or rule["begin"]).search(line, pos)
            if m and (best is None or (m.start(), i) < (best[0], best[1])):
                best = (m.start(), i, rule, m)
        if best is None:
            break
        _, _, rule, m = best
        end = m.end()
        if "begin" in rule:
            closing = re.compile(rf"(?:\\.|[^\\])*?{rule['end']}").match(line, end)
            end = closing.end() if closing else len(line)
            out.append((line[m.start() : end], rule["name"]))
        elif "captures" in rule:
            for group, capture in rule["captures"].items():
                if m.group(int(group)) is not None:
                    out.append((m.group(int(group)), capture["name"]))
        else:
            out.append((m.group(), rule["name"]))
        pos = max(end, pos + 1)
    return out


def lark_keywords() -> set[str]:
    """The language's keywords: the quoted words of the Lark grammar (`permit`, `forbid` too)."""
    return set(re.findall(r'"([a-z_]+)"', LARK))


def test_the_grammar_is_what_editors_expect() -> None:
    assert GRAMMAR["scopeName"] == "source.pdp"
    assert GRAMMAR["fileTypes"] == ["pdp"]
    for rule in RULES:  # every regex compiles under re, so the subset claim holds
        for key in ("match", "begin", "end"):
            if key in rule:
                re.compile(rule[key])


def test_every_keyword_the_bundle_uses_is_scoped_as_one() -> None:
    assert {"type", "relation", "permission", "permit", "forbid", "when", "bind"} <= lark_keywords()
    keywords = lark_keywords() | {"string", "int", "bool"}  # and the checker's built-in types
    used: set[str] = set()
    for p in sorted(SAAS.rglob("*.pdp")):
        for line in p.read_text().splitlines():
            code = line.split("//", 1)[0]  # the bundle has no `//` inside a string
            expected = [
                m.group()
                for m in re.finditer(r"\b[a-z_]+\b", code)
                if m.group() in keywords and not code[: m.start()].endswith(".")
            ]
            scoped = [
                text
                for text, scope in tokenize(line)
                if scope.startswith(KEYWORD_SCOPES) and re.fullmatch("[a-z_]+", text)
            ]
            assert scoped == expected, (p.name, line, tokenize(line))
            used.update(expected)
    # the example bundle exercises most of the language
    assert {
        "type",
        "attributes",
        "actions",
        "relation",
        "permission",
        "role",
        "scoped",
        "by",
        "extends",
        "allow",
        "on",
        "bind",
        "roles",
        "from",
        "when",
        "permit",
        "forbid",
        "as",
        "not_found",
        "has",
        "and",
        "or",
        "not",
        "subject",
        "resource",
        "context",
        "set",
    } <= used


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("type document {", [("type", "storage.type.pdp"), ("document", "entity.name.type.pdp")]),
        (
            "  relation viewer: user | group#member | user:*",
            [("relation", "storage.type.pdp"), ("viewer", "entity.name.function.relation.pdp")],
        ),
        (
            "forbid tenant_isolation as not_found: * on document, folder",
            [
                ("forbid", "keyword.control.effect.pdp"),
                ("tenant_isolation", "entity.name.function.rule.pdp"),
            ],
        ),
        ("role admin scoped by tenant extends editor {", [("admin", "entity.name.type.role.pdp")]),
        (
            "// a comment with type and permit",
            [("// a comment with type and permit", "comment.line.double-slash.pdp")],
        ),
        ('  when resource.tenant == "a \\" b"', [('"a \\" b"', "string.quoted.double.pdp")]),
        (
            "  when context.hour >= 9",
            [("hour", "variable.other.property.pdp"), ("9", "constant.numeric.integer.pdp")],
        ),
        (
            "bind roles from subject.roles",
            [("roles", "keyword.other.pdp"), ("roles", "variable.other.property.pdp")],
        ),
        ('  when subject.email.ends_with("@x")', [("ends_with", "support.function.method.pdp")]),
        ("context {", [("context", "storage.type.pdp")]),
    ],
)
def test_scopes_of_the_pieces(line: str, expected: list[tuple[str, str]]) -> None:
    got = tokenize(line)
    for piece in expected:
        assert piece in got, got


def test_the_vs_code_extension_points_at_the_grammar() -> None:
    editors = resources.files("pdp.authoring").joinpath("editors")
    manifest = json.loads(editors.joinpath("package.json").read_text())
    (language,) = manifest["contributes"]["languages"]
    (grammar,) = manifest["contributes"]["grammars"]
    assert language["extensions"] == [".pdp"]
    assert grammar["scopeName"] == GRAMMAR["scopeName"]
    assert json.loads(editors.joinpath(grammar["path"]).read_text()) == GRAMMAR
    assert editors.joinpath(language["configuration"]).is_file()
    assert manifest["contributes"]["configuration"]["properties"]["pdp.command"]["default"] == [
        "pdp",
        "lsp",
    ]
