"""Bundle loading: a directory is validated whole; any error refuses it, every error is listed."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pdp.bundle import BundleError, load_bundle

SAAS = Path(__file__).parents[2] / "bundles" / "saas"


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    dest = tmp_path / "saas"
    shutil.copytree(SAAS, dest)
    return dest


def test_the_example_bundle_loads_clean() -> None:
    b = load_bundle(SAAS)
    assert b.name == "saas"
    assert b.revision.startswith("1+")
    assert b.warnings == ()
    assert len(b.tuples) == 12


def test_syntax_errors_in_every_file_are_all_reported(bundle: Path) -> None:
    rules = bundle / "policies" / "rules.pdp"
    rules.write_text(rules.read_text() + "\npermit broken: read on document when resource.x = 1\n")
    (bundle / "policies" / "extra.pdp").write_text(
        "type thing {\n  relation r: ghost\n}\npermit x read on thing\n"
    )
    (bundle / "tuples" / "bad.jsonl").write_text("not json\n")
    with pytest.raises(BundleError) as info:
        load_bundle(bundle)
    found = {(Path(d.loc.file).name, d.loc.line, d.code) for d in info.value.diagnostics}
    # Like Cedar, names and types are checked once everything parses: a half-parsed file
    # would only add misleading "unknown" errors.
    assert found == {
        ("rules.pdp", 30, "syntax_error"),
        ("extra.pdp", 4, "syntax_error"),
        ("bad.jsonl", 1, "tuple_error"),
    }


def test_semantic_errors_in_every_file_are_all_reported(bundle: Path) -> None:
    rules = bundle / "policies" / "rules.pdp"
    rules.write_text(
        rules.read_text() + "\npermit broken: read on document when resource.nope == 1\n"
    )
    (bundle / "policies" / "extra.pdp").write_text("type thing {\n  relation r: ghost\n}\n")
    with pytest.raises(BundleError) as info:
        load_bundle(bundle)
    found = {(Path(d.loc.file).name, d.loc.line, d.code) for d in info.value.diagnostics}
    assert found == {("rules.pdp", 30, "unknown_attribute"), ("extra.pdp", 2, "unknown_type")}
    assert "extra.pdp:2:15: error[unknown_type]: unknown type `ghost`" in str(info.value)


def test_a_tuple_that_breaks_the_schema_names_its_line(bundle: Path) -> None:
    (bundle / "tuples" / "bad.jsonl").write_text(
        '\n{"object": "document:1", "relation": "nope", "subject": "user:a"}\n'
    )
    with pytest.raises(BundleError) as info:
        load_bundle(bundle)
    [d] = info.value.diagnostics
    assert d.code == "tuple_error"
    assert d.loc.line == 2
    assert "`nope` on `document` is not a relation" in d.message


def test_every_tuple_that_breaks_the_schema_is_named_also_beside_good_ones_of_a_shape(
    bundle: Path,
) -> None:
    # tuples are checked once per shape: a shape that failed is checked again for every line
    lines = [
        '{"object": "document:1", "relation": "nope", "subject": "user:a"}',
        '{"object": "document:2", "relation": "nope", "subject": "user:b"}',
        '{"object": "document:3", "relation": "viewer", "subject": "user:*"}',
        '{"object": "document:4", "relation": "nope", "subject": "user:c"}',
    ]
    (bundle / "tuples" / "bad.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(BundleError) as info:
        load_bundle(bundle)
    lines_named = sorted(d.loc.line for d in info.value.diagnostics if d.code == "tuple_error")
    assert lines_named == [1, 2, 4]  # line 3 fits (`viewer` takes `user:*`)


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        ("name = \n", "manifest_error"),
        ("[settings]\ncache_ttl_seconds = -1\n", "cache_ttl_seconds"),
        ("[settings]\nmax_depth = 0\n", "max_depth"),
        ('[settings]\nfail_open = ["read"]\n', "fail_open"),
    ],
)
def test_manifest_errors(bundle: Path, manifest: str, message: str) -> None:
    (bundle / "bundle.toml").write_text(manifest)
    with pytest.raises(BundleError, match=message):
        load_bundle(bundle)


def test_missing_pieces_are_errors(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="not a bundle directory"):
        load_bundle(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BundleError) as info:
        load_bundle(tmp_path / "empty")
    assert {d.code for d in info.value.diagnostics} == {"no_manifest", "no_policy"}


def test_every_edit_changes_the_revision(bundle: Path) -> None:
    first = load_bundle(bundle).revision
    rules = bundle / "policies" / "rules.pdp"
    rules.write_text(rules.read_text() + "\n// a comment is an edit too\n")
    assert load_bundle(bundle).revision != first


def test_a_reload_reparses_only_the_files_that_changed(bundle: Path) -> None:
    rules, schema = bundle / "policies" / "rules.pdp", bundle / "policies" / "schema.pdp"
    first = load_bundle(bundle).policy
    rules.write_text(rules.read_text() + "\n// an edit\n")
    second = load_bundle(bundle).policy
    # schema.pdp is unchanged: the very same declarations; rules.pdp was parsed from the edit on,
    # the rules before it kept (policy_lang.parser.reparse); an edit at its top parses it all
    assert second.types["document"].decl is first.types["document"].decl
    assert second.rules[0] is first.rules[0]
    rules.write_text("// an edit at the top\n" + rules.read_text())
    third = load_bundle(bundle).policy
    assert third.rules[0] is not first.rules[0] and third.rules[0] == first.rules[0]
    # A file that does not parse is never remembered: each load reports it again.
    schema.write_text(schema.read_text() + "\ntype broken {\n")
    for _ in range(2):
        with pytest.raises(BundleError, match="syntax_error"):
            load_bundle(bundle)
