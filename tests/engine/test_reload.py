"""A reload reuses what an unchanged file gave (its parse, its rules' checks, their generated
code), and answers exactly as a cold load of the same files would: the same diagnostics, the same
decisions. Conditions of one shape share their code, never their constants."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pdp.bundle import BundleError, load_bundle
from pdp.bundle.loader import parse
from pdp.engine import Engine, conditions
from pdp.model import Entity, Request
from policy_lang import checker

SCHEMA = """type user { attributes { level: int, tenant: string } }
type doc { attributes { level: int, tenant: string } actions read, edit }
"""
RULES = """permit low: read on doc when subject.level >= 1 and resource.tenant == subject.tenant
permit mid: read on doc when subject.level >= 5 and resource.tenant == subject.tenant
permit high: edit on doc when subject.level >= 9 and resource.tenant == subject.tenant
forbid never: edit on doc when subject.level < 0 and false
"""


def _bundle(root: Path, schema: str = SCHEMA, rules: str = RULES) -> Path:
    root.mkdir(exist_ok=True)
    (root / "bundle.toml").write_text('name = "b"\n')
    (root / "schema.pdp").write_text(schema)
    (root / "rules.pdp").write_text(rules)
    return root


def _cold(root: Path) -> object:
    """Load as a fresh process would: every cache of the parse, check and compile emptied."""
    parse.cache_clear()
    checker._limits.clear()
    checker._rule_checks[0] = checker._RuleChecks(())
    conditions._shapes.clear()
    return _outcome(root)


def _outcome(root: Path) -> object:
    try:
        b = load_bundle(root)
    except BundleError as exc:
        return ("refused", [d.format() for d in exc.diagnostics])
    return ("loaded", [d.format() for d in b.warnings], [r.name for r in b.policy.rules])


def _allows(engine: Engine, level: int, action: str = "read") -> bool:
    user = Entity("user", "u", {"level": level, "tenant": "t"})
    doc = Entity("doc", "d", {"level": 0, "tenant": "t"})
    return engine.check(Request(user, action, doc)).allowed


def test_a_reload_reports_what_a_cold_load_reports_after_each_edit(tmp_path: Path) -> None:
    root = _bundle(tmp_path / "b")
    edits = [
        ("rules.pdp", RULES + "permit more: read on doc when subject.level > 2\n"),
        # the schema changes under unchanged rules: their checks are done again
        ("schema.pdp", SCHEMA.replace("level: int, tenant", "tenant")),
        ("schema.pdp", SCHEMA.replace("level: int", "level: string")),
        ("schema.pdp", SCHEMA),
        ("rules.pdp", RULES.replace(">= 9", '>= "9"')),
        ("rules.pdp", RULES + "permit low: read on doc\n"),
        ("rules.pdp", RULES),
    ]
    assert _outcome(root)[0] == "loaded"
    for name, text in edits:
        (root / name).write_text(text)
        warm = _outcome(root)
        assert warm == _cold(root), (name, text)
    assert _outcome(root) == _cold(root)


def test_a_reloaded_engine_decides_as_a_fresh_one(tmp_path: Path) -> None:
    root = _bundle(tmp_path / "b")
    engine = Engine(cache_ttl=0)
    engine.load(load_bundle(root))
    assert [_allows(engine, n) for n in (0, 1, 5)] == [False, True, True]
    (root / "rules.pdp").write_text(RULES.replace(">= 1 and", ">= 3 and"))
    engine.load(load_bundle(root))
    assert [_allows(engine, n) for n in (0, 1, 3, 9)] == [False, False, True, True]
    assert _allows(engine, 9, "edit") and not _allows(engine, 8, "edit")


def test_conditions_of_one_shape_share_code_not_constants(tmp_path: Path) -> None:
    engine = Engine(cache_ttl=0)
    engine.load(load_bundle(_bundle(tmp_path / "b")))
    assert engine.snapshot is not None
    rules = {r.name: r for r in engine.snapshot.policy.rules}
    source_low, constants_low = conditions._shape(rules["low"].condition)  # type: ignore[arg-type]
    source_mid, constants_mid = conditions._shape(rules["mid"].condition)  # type: ignore[arg-type]
    assert source_low == source_mid
    assert constants_low == (1,) and constants_mid == (5,)


def test_a_reload_parses_and_checks_only_the_changed_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _bundle(tmp_path / "b")
    (root / "more.pdp").write_text("permit other: edit on doc when subject.level > 7\n")
    load_bundle(root)
    checked: list[str] = []
    original = checker._Checker._check_one_rule

    def spy(self: checker._Checker, rule: object) -> None:
        checked.append(rule.name)  # type: ignore[attr-defined]
        original(self, rule)  # type: ignore[arg-type]

    monkeypatch.setattr(checker._Checker, "_check_one_rule", spy)
    (root / "more.pdp").write_text("permit other: edit on doc when subject.level > 6\n")
    info = parse.cache_info()
    load_bundle(root)
    assert parse.cache_info().misses == info.misses + 1  # more.pdp alone
    assert checked == ["other"]


def test_the_example_bundle_reloads_after_an_edit(tmp_path: Path) -> None:
    root = tmp_path / "saas"
    shutil.copytree(Path(__file__).parents[2] / "bundles" / "saas", root)
    engine = Engine(cache_ttl=0)
    engine.load(load_bundle(root))
    rules = root / "policies" / "rules.pdp"
    rules.write_text(
        rules.read_text() + "permit cleared: read on document when subject.clearance > 2\n"
    )
    engine.load(load_bundle(root))
    assert engine.snapshot is not None
    assert "cleared" in {r.name for r in engine.snapshot.policy.rules}
