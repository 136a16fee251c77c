"""What editors ask, answered in process (pdp.authoring.language): diagnostics of the bundle
around a file with unsaved text laid over it, of a file outside any bundle, and definitions by
the context a name stands in."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pdp.authoring import language

SAAS = Path(__file__).parents[2] / "bundles" / "saas"


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    root = tmp_path / "saas"
    shutil.copytree(SAAS, root)
    return root.resolve()


def _at(path: Path, contains: str, word: str) -> tuple[int, int]:
    lines = path.read_text().splitlines()
    i = next(i for i, line in enumerate(lines) if contains in line)
    return i + 1, lines[i].index(word, lines[i].index(contains)) + 1


def test_an_unsaved_edit_in_one_file_is_reported_where_it_breaks(bundle: Path) -> None:
    schema = bundle / "policies" / "schema.pdp"
    rules = bundle / "policies" / "rules.pdp"
    renamed = schema.read_text().replace("permission edit =", "permission modify =")
    found = language.diagnostics(schema, {schema: renamed})
    # the schema still parses; the rules and permissions that name `edit` no longer check
    assert found[schema] or found.get(rules)
    assert any("edit" in d.message for ds in found.values() for d in ds)
    assert language.diagnostics(schema, {schema: schema.read_text()}) == {schema: []}


def test_a_file_outside_a_bundle_is_checked_alone(tmp_path: Path) -> None:
    lone = tmp_path / "lone.pdp"
    lone.write_text("type doc {\n  relation owner: usr\n}\n")
    (found,) = language.diagnostics(lone, {}).values()
    assert [(d.loc.line, d.code) for d in found] == [(2, "unknown_type")]


def test_a_file_alone_reports_its_type_errors_beside_its_syntax_errors(tmp_path: Path) -> None:
    lone = tmp_path / "lone.pdp"
    lone.write_text(
        "type doc {\n  relation owner: usr\n}\n"
        "permit broken: read on doc when\n"
        "type folder {\n  relation viewer: user\n}\n"
    )
    (found,) = language.diagnostics(lone, {}).values()
    # the unfinished condition is reported where the next declaration starts; the type errors
    # before and after it are checked all the same (`usr` and `user` are declared nowhere)
    assert [(d.loc.line, d.code) for d in found] == [
        (2, "unknown_type"),
        (5, "syntax_error"),
        (6, "unknown_type"),
    ]


def test_definitions_by_context(bundle: Path) -> None:
    rules = bundle / "policies" / "rules.pdp"
    roles = bundle / "policies" / "roles.pdp"

    def titles(path: Path, contains: str, word: str) -> list[str]:
        return [d.title for d in language.definition(path, {}, *_at(path, contains, word))]

    assert titles(rules, "delete on document", "document") == ["type document"]
    assert titles(rules, "has view on resource", "view") == [
        "permission folder#view",
        "permission document#view",
    ]
    assert titles(roles, "extends viewer", "viewer") == ["role viewer"]
    assert titles(roles, "bind admin when subject has admin", "has admin") == []
    line, col = _at(roles, "subject has admin on tenant", "admin")
    assert [d.title for d in language.definition(roles, {}, line, col)] == ["relation tenant#admin"]
    assert language.definition(rules, {}, 1, 1) == []  # a comment's word declares nothing


def test_hover_shows_the_declaration(bundle: Path) -> None:
    rules = bundle / "policies" / "rules.pdp"
    text = language.hover(rules, {}, *_at(rules, "has role approver", "approver"))
    assert text is not None
    assert "**role approver**" in text and "role approver scoped by tenant extends viewer {" in text
