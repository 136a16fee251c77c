"""Policies at and past the language's limits, against the real CLI and a real `pdp serve`: what
`pdp validate` accepts serves; what it refuses gets an error listing at file:line:col, exit 1, and
never a traceback."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from pdp._proto.pdp.v1 import pdp_pb2
from pdp.model import Entity

from .serve import ServeFactory

LOCATED = re.compile(r"rules\.pdp:\d+:\d+: error\[(\w+)\]")


def pdp(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pdp.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def add_rule(bundle: Path, rule: str) -> None:
    rules = bundle / "policies" / "rules.pdp"
    rules.write_text(rules.read_text() + "\n" + rule + "\n")


def refused_codes(bundle: Path) -> list[str]:
    out = pdp("validate", bundle)
    text = out.stdout + out.stderr
    assert out.returncode == 1, text
    assert "Traceback" not in text, text
    return LOCATED.findall(text)


def test_a_250_term_or_validates_and_serves(pdp_serve: ServeFactory, saas_bundle: Path) -> None:
    terms = " or ".join(f'subject.id == "user-{i}"' for i in range(249))
    add_rule(saas_bundle, f'permit many_ids: read on document when {terms} or subject.id == "zed"')
    assert pdp("validate", saas_bundle).returncode == 0
    served = pdp_serve.start(saas_bundle)
    try:
        zed = Entity("user", "zed", {"tenant": "acme", "roles": frozenset()})
        doc = Entity("document", "d", {"tenant": "acme", "owner": "x", "classification": 0})
        resp = served.check(zed, "read", doc)
        assert resp.decision == pdp_pb2.EFFECT_ALLOW
        assert list(resp.rule_ids) == ["many_ids"]
        assert served.running
    finally:
        assert served.stop() == 0


def test_199_nested_nots_are_refused_by_validate(saas_bundle: Path) -> None:
    add_rule(saas_bundle, "permit deep: read on document when " + "not " * 199 + "true")
    assert refused_codes(saas_bundle) == ["expression_too_deep"]


def test_an_integer_of_4301_digits_is_refused_by_validate(saas_bundle: Path) -> None:
    add_rule(saas_bundle, "permit big: read on document when context.hour == " + "9" * 4301)
    assert refused_codes(saas_bundle) == ["int_out_of_range"]


def test_deep_parentheses_and_long_chains_are_refused_not_crashed(saas_bundle: Path) -> None:
    add_rule(
        saas_bundle,
        "permit chain: read on document when subject.tenant" + ".lower()" * 5000 + ' == "x"',
    )
    add_rule(
        saas_bundle,
        "permit nest: read on document when " + "(true and " * 3000 + "true" + ")" * 3000,
    )
    assert sorted(refused_codes(saas_bundle)) == ["expression_too_deep", "expression_too_deep"]


def test_fmt_refuses_what_it_cannot_print(saas_bundle: Path) -> None:
    add_rule(saas_bundle, "permit deep: read on document when " + "not " * 5000 + "true")
    out = pdp("fmt", saas_bundle / "policies" / "rules.pdp")
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    assert "error[expression_too_deep]" in out.stderr
