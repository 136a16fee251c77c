"""The examples of docs/language.md and docs/testing.md, run: the docs can never drift.

How a doc writes an example (docs/language.md, "How to read the examples"):
- a fenced `pdp` block is a whole policy; a `toml` block right after it is its tests, in the
  policy test-file format; a `diagnostics` block after those lists the warnings it must produce
  (without one, it must produce none);
- a `pdp-error` block is a policy `pdp validate` must refuse; the `diagnostics` block after it
  lists every error, `FILE:LINE:COL: error[code]: message`, each optionally followed by its
  `hint:` line;
- consecutive blocks with `file=PATH` in their info string (```toml file=bundle.toml) are the
  files of one bundle (a `bundle.toml` starts the next one), loaded from a directory, its tests
  run.

Each example is loaded from a directory by the real loader (`load_bundle`), its tests run by the
real runner through the compiled engine (`pdp test`), and every test's request is decided again
by the reference interpreter, which must agree. Any `pdp` or `toml` block that is not part of an
example fails the test: an example the suite does not run could drift.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pdp.authoring.policy_tests import run_tests
from pdp.bundle import BundleError, load_bundle
from pdp.engine import Engine
from pdp.explain.reference import evaluate
from pdp.model import RelationTuple

DOCS = Path(__file__).parent.parent.parent / "docs"
DOC_FILES = ("language.md", "testing.md")
FENCE = re.compile(r"^```(\S*)(.*)$")
CHECKED = ("pdp", "pdp-error", "toml", "diagnostics", "jsonl")


@dataclass
class Block:
    info: str
    attrs: dict[str, str]
    text: str
    line: int


@dataclass
class Example:
    doc: str
    line: int
    files: dict[str, str] = field(default_factory=dict)
    diagnostics: list[str] | None = None
    must_fail: bool = False

    @property
    def id(self) -> str:
        return f"{self.doc}:{self.line}"


def blocks(path: Path) -> list[Block]:
    out: list[Block] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if m is None:
            i += 1
            continue
        start = i
        body = []
        i += 1
        while i < len(lines) and lines[i] != "```":
            body.append(lines[i])
            i += 1
        attrs = dict(a.split("=", 1) for a in m.group(2).split() if "=" in a)
        out.append(Block(m.group(1), attrs, "\n".join(body) + "\n", start + 1))
        i += 1
    return out


def examples(doc: str) -> list[Example]:
    found: list[Example] = []
    pending = blocks(DOCS / doc)
    i = 0
    while i < len(pending):
        b = pending[i]
        if "file" in b.attrs:
            ex = Example(doc, b.line)
            while i < len(pending) and "file" in pending[i].attrs:
                name = pending[i].attrs["file"]
                if name in ex.files or (name == "bundle.toml" and ex.files):
                    break  # the next bundle's files
                ex.files[name] = pending[i].text
                i += 1
            if i < len(pending) and pending[i].info == "diagnostics":
                ex.diagnostics = pending[i].text.strip().splitlines()
                i += 1
            found.append(ex)
            continue
        if b.info in ("pdp", "pdp-error"):
            ex = Example(doc, b.line, must_fail=b.info == "pdp-error")
            ex.files["policies/example.pdp"] = b.text
            i += 1
            if not ex.must_fail and i < len(pending) and pending[i].info == "toml":
                ex.files["tests/example.test.toml"] = pending[i].text
                i += 1
            if i < len(pending) and pending[i].info == "diagnostics":
                ex.diagnostics = pending[i].text.strip().splitlines()
                i += 1
            elif ex.must_fail:
                raise AssertionError(f"{doc}:{b.line}: a pdp-error block needs a diagnostics block")
            found.append(ex)
            continue
        if b.info in CHECKED:
            raise AssertionError(f"{doc}:{b.line}: a ```{b.info} block that is part of no example")
        i += 1
    return found


ALL = [ex for doc in DOC_FILES for ex in examples(doc)]


def test_the_docs_have_examples() -> None:
    per_doc = {doc: sum(ex.doc == doc for ex in ALL) for doc in DOC_FILES}
    assert per_doc["language.md"] >= 25, per_doc
    assert per_doc["testing.md"] >= 1, per_doc


def write(root: Path, files: dict[str, str]) -> None:
    files = dict(files)
    files.setdefault("bundle.toml", 'name = "example"\n')
    for name, text in files.items():
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")


def shown(root: Path, diagnostics: list[object]) -> list[str]:
    """The diagnostics as the doc writes them: the first line, the bundle's path left out, and
    the hint."""
    out = []
    for d in diagnostics:
        first = d.format().splitlines()[0]  # type: ignore[attr-defined]
        out.append(first.replace(f"{root}/", ""))
        if d.hint:  # type: ignore[attr-defined]
            out.append(f"hint: {d.hint}")  # type: ignore[attr-defined]
    return out


def matches(expected: list[str], got: list[str]) -> bool:
    """Every expected line is there in order; hints may be left out of the doc."""
    lines = [line.strip() for line in expected]
    wanted = iter(lines)
    want = next(wanted, None)
    for line in got:
        if want is not None and line == want:
            want = next(wanted, None)
        elif not line.startswith("hint: "):
            return False
    return want is None


@pytest.mark.parametrize("ex", ALL, ids=lambda ex: ex.id)
def test_example(ex: Example, tmp_path: Path) -> None:
    write(tmp_path, ex.files)
    try:
        bundle = load_bundle(tmp_path)
    except BundleError as exc:
        got = shown(tmp_path, exc.diagnostics)
        assert ex.must_fail, f"{ex.id}: the example does not validate:\n" + "\n".join(got)
        assert ex.diagnostics is not None
        assert matches(ex.diagnostics, got), f"{ex.id}: diagnostics differ:\n" + "\n".join(got)
        return
    assert not ex.must_fail, f"{ex.id}: the example should have been refused"
    got = shown(tmp_path, bundle.warnings)
    assert matches(ex.diagnostics or [], got), f"{ex.id}: warnings differ:\n" + "\n".join(got)
    if not bundle.tests:
        return
    report = run_tests(bundle, coverage=True)
    assert report.results, f"{ex.id}: tests that test nothing"
    failed = [f"{r.name}: {r.message}" for r in report.failed]
    assert not failed, f"{ex.id}: " + "\n".join(failed)
    for file, doc in bundle.tests:
        # The doc's tests state the reason of every single test, not only the effect.
        for case in doc.get("test", []):
            assert "reason" in case, f"{ex.id}: test `{case.get('name')}` states no reason"
        engine = Engine(cache_ttl=0)
        engine.load(bundle)
        engine.write_tuples([RelationTuple.parse(t) for t in doc.get("tuples", [])])
        view = engine.pin()
        snapshot = view.snapshot
        assert snapshot is not None
        for r in report.results:
            if r.file != file:
                continue
            assert r.request is not None and r.decision is not None
            ref = evaluate(snapshot.policy, view.subjects_of, r.request, snapshot.max_depth)
            assert (ref.effect, ref.reason, ref.rule_ids, ref.not_found) == (
                r.decision.effect,
                r.decision.reason,
                r.decision.rule_ids,
                r.decision.not_found,
            ), f"{ex.id}: the reference interpreter disagrees on `{r.name}`"
