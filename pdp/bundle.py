"""Bundle loading: a directory of a manifest, policy files, tuple files and policy tests.

Everything is validated before a Bundle exists; a bundle with any error is refused whole, with every
error at its file:line:col (BundleError.diagnostics).
"""

from __future__ import annotations

import hashlib
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from pdp.model import RelationTuple, TupleSyntaxError
from pdp.tuple_schema import InvalidTuple, validate_tuple
from policy_lang import ast
from policy_lang.checker import CheckedPolicy, check
from policy_lang.diagnostics import Diagnostic, Loc, PolicyError, with_sources
from policy_lang.parser import parse

MANIFEST = "bundle.toml"
POLICY_SUFFIX = ".pdp"
TUPLE_SUFFIX = ".jsonl"
TEST_SUFFIX = ".test.toml"


class BundleError(ValueError):
    """The bundle was refused; `.diagnostics` lists every problem."""

    def __init__(self, diagnostics: list[Diagnostic]) -> None:
        self.diagnostics = diagnostics
        errors = [d for d in diagnostics if d.is_error]
        super().__init__(f"{len(errors)} error(s)\n" + "\n".join(d.format() for d in errors))


@dataclass(frozen=True, slots=True)
class Settings:
    cache_ttl_seconds: float | None = None
    max_depth: int | None = None
    fail_open: frozenset[tuple[str, str]] = frozenset()  # (resource type, action)


@dataclass(frozen=True, slots=True)
class Bundle:
    name: str
    revision: str  # the manifest's revision plus a digest of the content, so every edit is visible
    settings: Settings
    policy: CheckedPolicy = field(compare=False)
    tuples: tuple[RelationTuple, ...]
    tests: tuple[tuple[str, dict[str, Any]], ...]  # (file, parsed TOML) for the test runner
    path: Path
    warnings: tuple[Diagnostic, ...] = ()


def load_bundle(path: str | Path) -> Bundle:
    root = Path(path)
    diags: list[Diagnostic] = []
    sources: dict[str, str] = {}
    if not root.is_dir():
        raise BundleError(
            [Diagnostic("no_bundle", f"`{root}` is not a bundle directory", Loc(str(root), 0, 0))]
        )
    manifest_path = root / MANIFEST
    manifest: dict[str, Any] = {}
    if not manifest_path.exists():
        diags.append(
            Diagnostic(
                "no_manifest", f"a bundle needs a `{MANIFEST}`", Loc(str(manifest_path), 0, 0)
            )
        )
    else:
        try:
            manifest = tomllib.loads(manifest_path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            diags.append(Diagnostic("manifest_error", str(exc), Loc(str(manifest_path), 1, 1)))
    settings = _settings(manifest, str(manifest_path), diags)
    files = sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))
    digest = hashlib.sha256()
    parsed: list[ast.PolicyFile] = []
    tuples: list[_Located] = []
    names: dict[str, str] = {}  # one string for each distinct type, id and relation
    tests: list[tuple[str, dict[str, Any]]] = []
    for file in files:
        name = str(file)
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            diags.append(Diagnostic("read_error", f"cannot read: {exc}", Loc(name, 0, 0)))
            continue
        digest.update(name.encode() + b"\0" + text.encode() + b"\0")
        if file.name.endswith(POLICY_SUFFIX):
            sources[name] = text
            try:
                parsed.append(parse(text, name))
            except PolicyError as exc:
                diags.extend(exc.diagnostics)
        elif file.name.endswith(TUPLE_SUFFIX):
            sources[name] = text
            tuples.extend(_tuples(text, name, diags, names))
        elif file.name.endswith(TEST_SUFFIX):
            try:
                tests.append((name, tomllib.loads(text)))
            except tomllib.TOMLDecodeError as exc:
                diags.append(Diagnostic("test_file_error", str(exc), Loc(name, 1, 1)))
    if not parsed and not any(d.code == "syntax_error" for d in diags):
        diags.append(
            Diagnostic("no_policy", f"no `*{POLICY_SUFFIX}` policy files", Loc(str(root), 0, 0))
        )
    policy, found = check(parsed)
    if not any(d.code == "syntax_error" for d in diags):
        # Names and types are checked only once every file parses: a file that failed to
        # parse would only turn into misleading "unknown type" errors elsewhere.
        diags.extend(found)
    diags.extend(_check_tuples(policy, tuples, diags))
    diags = with_sources(diags, sources)
    if any(d.is_error for d in diags):
        raise BundleError(diags)
    revision = f"{manifest.get('revision', '0')}+{digest.hexdigest()[:10]}"
    return Bundle(
        name=str(manifest.get("name", root.name)),
        revision=revision,
        settings=settings,
        policy=policy,
        tuples=_distinct(tuples),
        tests=tuple(tests),
        path=root,
        warnings=tuple(d for d in diags if not d.is_error),
    )


def _settings(manifest: dict[str, Any], where: str, diags: list[Diagnostic]) -> Settings:
    raw = manifest.get("settings", {})
    loc = Loc(where, 1, 1)
    ttl, depth, fail_open = (
        raw.get("cache_ttl_seconds"),
        raw.get("max_depth"),
        raw.get("fail_open", []),
    )
    if ttl is not None and (not isinstance(ttl, int | float) or ttl < 0):
        diags.append(
            Diagnostic("manifest_error", "`settings.cache_ttl_seconds` must be a number ≥ 0", loc)
        )
        ttl = None
    if depth is not None and (not isinstance(depth, int) or not 1 <= depth <= 1000):
        diags.append(
            Diagnostic("manifest_error", "`settings.max_depth` must be an integer in 1..1000", loc)
        )
        depth = None
    pairs = set()
    for item in fail_open if isinstance(fail_open, list) else [None]:
        if not isinstance(item, str) or item.count(":") != 1:
            diags.append(
                Diagnostic(
                    "manifest_error", "`settings.fail_open` lists `type:action` strings", loc
                )
            )
            continue
        t, a = item.split(":")
        pairs.add((t, a))
    return Settings(float(ttl) if ttl is not None else None, depth, frozenset(pairs))


# A tuple read from a file with where it came from: (tuple, file, line). A Loc is made only for
# the tuples that turn out to be wrong; a million of them would cost seconds and 100 MB.
_Located = tuple[RelationTuple, str, int]


def _tuples(text: str, name: str, diags: list[Diagnostic], names: dict[str, str]) -> list[_Located]:
    out = []
    loads = orjson.loads
    from_parts = RelationTuple.from_parts
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line or line.isspace() or line.lstrip().startswith("//"):
            continue
        try:
            obj = loads(line)
            if isinstance(obj, dict) and "tuple" not in obj:
                t = from_parts(obj["object"], obj["relation"], obj["subject"], names)
            elif isinstance(obj, str):
                t = RelationTuple.parse(obj)
            elif isinstance(obj, dict):
                t = RelationTuple.parse(str(obj["tuple"]))
            else:
                raise TupleSyntaxError("expected an object with `object`, `relation`, `subject`")
            out.append((t, name, lineno))
        except (orjson.JSONDecodeError, TupleSyntaxError, KeyError) as exc:
            message = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
            diags.append(Diagnostic("tuple_error", message, Loc(name, lineno, 1)))
    return out


def _check_tuples(
    policy: CheckedPolicy, tuples: list[_Located], diags: list[Diagnostic]
) -> list[Diagnostic]:
    if any(d.is_error for d in diags):
        return []  # the schema itself is broken; tuple errors would only be noise
    out = []
    for t, name, lineno in tuples:
        try:
            validate_tuple(policy, t)
        except InvalidTuple as exc:
            out.append(Diagnostic("tuple_error", str(exc), Loc(name, lineno, 1)))
    return out


def _distinct(tuples: list[_Located]) -> tuple[RelationTuple, ...]:
    """Each tuple once, in file order (files are read sorted, so the order is stable)."""
    return tuple(dict.fromkeys(t for t, _, _ in tuples))


def bundle_from_text(
    policy: str | dict[str, str],
    tuples: tuple[str | RelationTuple, ...] | list[str | RelationTuple] = (),
    *,
    name: str = "inline",
    revision: str = "0",
    settings: Settings | None = None,
) -> Bundle:
    """Build a bundle from policy text held in memory (tests, benchmarks, embedding)."""
    sources = {"policy.pdp": policy} if isinstance(policy, str) else dict(policy)
    diags: list[Diagnostic] = []
    parsed = []
    for file, text in sorted(sources.items()):
        try:
            parsed.append(parse(text, file))
        except PolicyError as exc:
            diags.extend(exc.diagnostics)
    checked, found = check(parsed)
    if not diags:  # as in load_bundle: check names and types once everything parses
        diags.extend(found)
    located: list[_Located] = []
    for i, t in enumerate(tuples, 1):
        try:
            located.append(
                (t if isinstance(t, RelationTuple) else RelationTuple.parse(t), "<tuples>", i)
            )
        except TupleSyntaxError as exc:
            diags.append(Diagnostic("tuple_error", str(exc), Loc("<tuples>", i, 1)))
    diags.extend(_check_tuples(checked, located, diags))
    diags = with_sources(diags, sources)
    if any(d.is_error for d in diags):
        raise BundleError(diags)
    return Bundle(
        name=name,
        revision=revision,
        settings=settings or Settings(),
        policy=checked,
        tuples=_distinct(located),
        tests=(),
        path=Path("."),
        warnings=tuple(d for d in diags if not d.is_error),
    )
