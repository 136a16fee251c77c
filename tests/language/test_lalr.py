"""The lean LALR driver (policy_lang.lalr) against Lark's own parser: the same syntax tree, every
location included, for every text that parses, and the same diagnostics for every one that does
not, over the example bundle, the conformance and fuzz seeds and thousands of mutations of them."""

from __future__ import annotations

import dataclasses
import random
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from policy_lang import PolicyError, parser

ROOT = Path(__file__).parents[2]
SAAS = ROOT / "bundles" / "saas" / "policies"

# Bits that make mutations land on the grammar's edges: keywords as names, broken strings.
_PIECES = [
    "type", "subject", "resource", "has", "role", "(", ")", "{", "}", ",", ".", ":", "==", "=",
    '"', '"a\\q"', "[1, \"x\"]", "\n", " ", "//", "permit", "when", "not", "-", "->", "#", "*",
    "99999999999999999999999", "set<int>", "?", "&", "|", "+", "in", "on", "and", "or",
]  # fmt: skip


# The fuzz seeds' edges (tests/fuzz/seeds.py, not imported: it loads the client): valid at the
# language's limits, so mutations land just past them.
EDGES = [
    "type user { attributes { n: int } }\ntype doc { actions read }\n"
    "permit p: read on doc when " + " or ".join(["subject.n == 1"] * 40) + "\n",
    "type user { attributes { n: int } }\ntype doc { actions read }\n"
    "permit p: read on doc when " + "not " * 49 + "true\n",
    "type user { attributes { n: int } }\ntype doc { actions read }\n"
    "permit p: read on doc when subject.n < 9007199254740992\n",
    "type user {}\ntype doc { actions read relation a: user relation b: user\n"
    "  permission v = a + (b & (a - (b + a->x)))\n}\n",
]


def _texts() -> list[str]:
    texts = [p.read_text(encoding="utf-8") for p in sorted(SAAS.glob("*.pdp"))]
    texts.append("\n".join(texts))
    for file in sorted((ROOT / "tests" / "conformance").glob("*.toml")):
        data = tomllib.loads(file.read_text(encoding="utf-8"))
        for section in ("case", "error", "warning"):
            texts.extend(c["policy"] for c in data.get(section, []) if "policy" in c)
    texts.extend(EDGES)
    texts.append(
        "type user { attributes { type: string, n: int } }\ntype doc { actions type, read }\n"
        'permit type: type on doc when subject.type == "user" and resource.type == "doc"\n'
    )
    return texts


def _mutations(text: str, rng: random.Random, count: int) -> Iterator[str]:
    for _ in range(count):
        at = rng.randrange(len(text) + 1)
        kind = rng.randrange(3)
        if kind == 0:
            yield text[:at] + text[at + rng.randint(1, 4) :]
        elif kind == 1:
            yield text[:at] + rng.choice(_PIECES) + text[at:]
        else:
            yield text[:at] + rng.choice(_PIECES) + text[at + rng.randint(1, 6) :]


def _deep(node: Any) -> Any:
    """A node as plain data, its locations and every value's type included."""
    if dataclasses.is_dataclass(node) and not isinstance(node, type):
        return (
            type(node).__name__,
            *(_deep(getattr(node, f.name)) for f in dataclasses.fields(node)),
        )
    if isinstance(node, tuple | list):
        return tuple(_deep(x) for x in node)
    if isinstance(node, frozenset):
        return ("frozenset", tuple(sorted(map(repr, node))))
    return (type(node).__name__, node)


def _outcome(text: str) -> Any:
    try:
        return ("ok", _deep(parser.parse(text, "p.pdp")))
    except PolicyError as exc:
        return ("error", [d.format() for d in exc.diagnostics])


def _with_lark_only(text: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    with monkeypatch.context() as m:
        m.setattr(parser, "_driver", lambda: None)
        return _outcome(text)


def test_the_driver_is_in_use() -> None:
    assert parser._driver() is not None


@pytest.mark.parametrize("seed", range(4))
def test_the_driver_and_lark_agree_on_every_text(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(seed)
    texts = _texts()
    checked = ok = 0
    for text in texts[seed::4]:
        for variant in [text, *_mutations(text, rng, 60)]:
            got = _outcome(variant)
            assert got == _with_lark_only(variant, monkeypatch), variant
            checked += 1
            ok += got[0] == "ok"
    assert checked > 500
    assert 0 < ok < checked  # both kinds were exercised


def _as_reparsed(old: str, new: str) -> Any:
    try:
        before = (old, parser.parse(old, "p.pdp"))
    except PolicyError:
        return None
    try:
        return ("ok", _deep(parser.reparse(new, "p.pdp", before)))
    except PolicyError as exc:
        return ("error", [d.format() for d in exc.diagnostics])


@pytest.mark.parametrize("seed", range(2))
def test_a_reparse_from_the_first_changed_item_is_a_whole_parse(seed: int) -> None:
    """policy_lang.parser.reparse keeps the items before an edit and parses the rest: the same
    tree, every location included, and the same diagnostics, as parsing the new text whole."""
    rng = random.Random(seed)
    saas = "\n".join(p.read_text(encoding="utf-8") for p in sorted(SAAS.glob("*.pdp")))
    rules = "".join(
        f"permit r{i}: read on document when resource.classification > {i}\n" for i in range(40)
    )
    kept = 0
    for text in (saas, saas + rules):
        for new in _mutations(text, rng, 150):
            got = _as_reparsed(text, new)
            assert got == _outcome(new), new
            kept += got is not None and got[0] == "ok"
        for cut in (len(text) - 1, len(text) // 2, 40):  # appended, edited mid-way, early
            new = text[:cut] + "\npermit added: read on document\n" + text[cut:]
            assert _as_reparsed(text, new) == _outcome(new)
    assert kept > 50
