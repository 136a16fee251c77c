"""The parser: every construct parses to the AST we expect; errors are readable, located, complete."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policy_lang import PolicyError, ast, parse
from policy_lang.formatter import format_source, userset

FULL = """
// every construct once
type user { attributes { tenant: string, tags?: set<string>, n: set<int> } }
type group { relation member: user | group#member | user:* }
type doc {
  actions read, write
  relation parent: doc
  relation viewer: user | group#member
  permission view = viewer + parent->view - viewer & viewer
}
context { hour: int }
role r scoped by tenant extends q, p { allow read, write on doc allow * on * }
bind roles from subject.roles
bind a, b when subject has member on group("eng") or subject has role r
permit p: read on doc when not (has(subject.tags) and "x" in subject.tags) or subject.tags.contains_all(["a", "b"])
forbid f as not_found: * on doc, group when resource.tenant != subject.tenant and context.hour <= -1
"""


def test_every_construct_parses() -> None:
    items = parse(FULL, "f.pdp").items
    kinds = [type(i).__name__ for i in items]
    assert kinds == [
        "TypeDecl",
        "TypeDecl",
        "TypeDecl",
        "ContextDecl",
        "RoleDecl",
        "BindFrom",
        "BindWhen",
        "RuleDecl",
        "RuleDecl",
    ]
    doc = items[2]
    assert isinstance(doc, ast.TypeDecl)
    # `+`/`-` associate left and bind looser than `&`.
    assert doc.permissions[0].expr == ast.Exclusion(
        ast.Union(ast.Computed("viewer"), ast.TupleToUserset("parent", "view")),
        ast.Intersection(ast.Computed("viewer"), ast.Computed("viewer")),
    )
    forbid = items[-1]
    assert isinstance(forbid, ast.RuleDecl)
    assert forbid.not_found and forbid.actions is None and forbid.types == ("doc", "group")
    assert forbid.loc.line == 16 and forbid.loc.col == 1  # line 1 is the empty first line


def test_locations_are_kept_but_not_compared() -> None:
    a = parse("type doc { actions read }", "a.pdp")
    b = parse("\n\n   type doc {\n actions read }", "b.pdp")
    assert a.items == b.items
    assert a.items[0].loc.line == 1 and b.items[0].loc.line == 3  # type: ignore[union-attr]


def test_a_node_spans_from_its_keyword_or_parenthesis_to_its_last_token() -> None:
    text = "permit p: read on doc\n  when (subject.a == 1 or not has(resource.b))\n  and subject.c"
    rule = parse(text, "r.pdp").items[0]
    assert isinstance(rule, ast.RuleDecl) and isinstance(rule.condition, ast.And)
    spans = {
        "rule": rule.loc,
        "and": rule.condition.loc,  # starts at the `(` its left side was written in
        "or": rule.condition.left.loc,  # inside the parentheses, without them
        "not": rule.condition.left.right.loc,  # type: ignore[attr-defined]
        "has": rule.condition.left.right.operand.loc,  # type: ignore[attr-defined]
    }
    where = {k: (v.line, v.col, v.end_line, v.end_col) for k, v in spans.items()}
    assert where == {
        "rule": (1, 1, 3, 0),  # spans lines: the end column is given only on one line
        "and": (2, 8, 3, 0),
        "or": (2, 9, 2, 46),
        "not": (2, 27, 2, 46),
        "has": (2, 31, 2, 46),
    }


@pytest.mark.parametrize(
    ("text", "where", "words", "hint"),
    [
        ('permit p: read on doc when subject.a = "x"', (1, 38), "unexpected `=`", "use `==`"),
        ("permit p: read on doc when a && b", (1, 28), "unexpected", ""),
        (
            "permit p: read on doc when subject.a == 'x'",
            (1, 41),
            "unexpected character `'`",
            "double quotes",
        ),
        ("type doc { relation x: }", (1, 24), "expected", ""),
        ("permit p read on doc", (1, 10), "unexpected `read`", ""),
        ("type doc {", (1, 10), "end of file", ""),
    ],
)
def test_syntax_errors_speak_plainly(
    text: str, where: tuple[int, int], words: str, hint: str
) -> None:
    with pytest.raises(PolicyError) as info:
        parse(text, "x.pdp")
    d = info.value.diagnostics[0]
    assert (d.loc.line, d.loc.col) == where
    assert words in d.message
    assert hint in d.hint
    assert "Token(" not in d.message and "__ANON" not in d.message  # never Lark's internals


def test_every_syntax_error_is_reported_and_good_items_survive() -> None:
    text = "type doc { actions read }\npermit a: read on doc when =\npermit b: read on doc\nforbid c: * on * when )\n"
    with pytest.raises(PolicyError) as info:
        parse(text, "x.pdp")
    assert [d.loc.line for d in info.value.diagnostics] == [2, 4]


@settings(max_examples=300, deadline=None)
@given(
    st.text(
        alphabet=st.sampled_from(
            list(
                "type doc{}()[]:;,.#|&+-*=!<>\"'\\/\n when permit forbid role bind subject resource has not and or 1 x"
            )
        ),
        max_size=120,
    )
)
def test_any_text_raises_only_the_languages_error(text: str) -> None:
    try:
        parse(text, "fuzz.pdp")
    except PolicyError as exc:
        assert exc.diagnostics
        assert all(d.loc.file == "fuzz.pdp" for d in exc.diagnostics)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_unicode_raises_only_the_languages_error(text: str) -> None:
    try:
        parse(text, "fuzz.pdp")
    except PolicyError:
        pass


def test_formatter_is_canonical_idempotent_and_keeps_meaning_and_comments() -> None:
    out = format_source(FULL, "f.pdp")
    assert parse(out, "f.pdp") == parse(FULL, "f.pdp")
    assert format_source(out, "f.pdp") == out
    assert "// every construct once" in out
    assert "permission view = viewer + parent->view - viewer & viewer" in out


def test_formatter_parenthesises_only_where_needed() -> None:
    src = "type d { actions r }\npermit p: r on d when (true or false) and not (true and false) or (true)\n"
    out = format_source(src)
    assert "when (true or false) and not (true and false) or true" in out
    assert parse(out) == parse(src)


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ('subject.id in [1, "a"]', "p.pdp:3:42: error[type_error]: a set holds values of one type"),
        ('subject.id == "\\q"', 'p.pdp:3:42: error[syntax_error]: bad escape in string "\\q"'),
    ],
)
def test_errors_found_while_building_the_tree_are_reported_as_themselves(
    condition: str, expected: str
) -> None:
    source = (
        f"type user {{}}\ntype doc {{ actions read }}\npermit r: read on doc when {condition}\n"
    )
    with pytest.raises(PolicyError) as err:
        parse(source, "p.pdp")
    assert [d.format() for d in err.value.diagnostics] == [expected]


# (written, as `pdp fmt` writes it): parentheses that change the reading in pdp or in SpiceDB
# stay; those that change neither go.
USERSETS = [
    ("(a - b) + c", "(a - b) + c"),
    ("a - (b + c)", "a - (b + c)"),
    ("a + (b & c)", "a + (b & c)"),
    ("(a + b) & c", "(a + b) & c"),
    ("(a & b) + c", "(a & b) + c"),
    ("a & (b + c)", "a & (b + c)"),
    ("(a & b) + (c - a)", "(a & b) + (c - a)"),
    ("(a + b) - c", "a + b - c"),
    ("(a - b) - c", "a - b - c"),
    ("(a & b) - c", "a & b - c"),
    ("a - (b & c)", "a - b & c"),
    ("(a + b) + (c + a)", "a + b + (c + a)"),
    ("((a - b)) + parent->v", "(a - b) + parent->v"),
]


@pytest.mark.parametrize(("written", "formatted"), USERSETS)
def test_fmt_keeps_the_parentheses_that_matter_and_round_trips(
    written: str, formatted: str
) -> None:
    def policy(expr: str) -> str:
        return (
            "type user {}\ntype doc {\n  relation a: user\n  relation b: user\n"
            f"  relation c: user\n  relation parent: doc\n  permission v = {expr}\n}}\n"
        )

    out = format_source(policy(written), "f.pdp")
    assert f"permission v = {formatted}\n" in out
    assert parse(out, "f.pdp") == parse(policy(written), "f.pdp")  # no ambiguous_precedence
    assert format_source(out, "f.pdp") == out


@pytest.mark.parametrize(
    ("written", "ours", "theirs"),
    [
        ("a - b + c", "(a - b) + c", "a - (b + c)"),
        ("a + b & c", "a + (b & c)", "(a + b) & c"),
        ("a & b + c", "(a & b) + c", "a & (b + c)"),
        ("a + b - c + a", "(a + b - c) + a", "a + b - (c + a)"),
    ],
)
def test_operators_spicedb_reads_otherwise_are_an_error_showing_both_readings(
    written: str, ours: str, theirs: str
) -> None:
    text = f"type user {{}}\ntype doc {{\n  relation a: user\n  permission v = {written}\n}}\n"
    with pytest.raises(PolicyError) as info:
        parse(text, "p.pdp")
    [d] = info.value.diagnostics
    assert (d.code, d.loc.line, d.loc.col) == ("ambiguous_precedence", 4, 18)
    assert f"pdp reads it as `{ours}`, SpiceDB" in d.message
    assert d.hint == f"write `{ours}` for pdp's reading, or `{theirs}`"
    # the rest of the file parsed: the checker can report its errors too
    assert [type(i).__name__ for i in info.value.partial.items] == ["TypeDecl", "TypeDecl"]


_leaves = st.sampled_from([ast.Computed("a"), ast.Computed("b"), ast.TupleToUserset("parent", "v")])
_usersets = st.recursive(
    _leaves,
    lambda inner: st.builds(
        lambda kind, left, right: kind(left, right),
        st.sampled_from([ast.Union, ast.Intersection, ast.Exclusion]),
        inner,
        inner,
    ),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(_usersets)
def test_any_userset_the_formatter_writes_parses_back_to_itself(expr: ast.UsersetExpr) -> None:
    """Whatever the tree, `pdp fmt`'s text is never ambiguous and means the same tree."""
    text = (
        "type user {}\ntype doc {\n  relation a: user\n  relation b: user\n"
        f"  relation parent: doc\n  permission v = {userset(expr)}\n}}\n"
    )
    doc = parse(text, "f.pdp").items[1]
    assert isinstance(doc, ast.TypeDecl)
    assert doc.permissions[0].expr == expr
