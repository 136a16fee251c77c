"""Bundle loading: a directory of a manifest, policy files, tuple files and policy tests.

Everything is validated before a Bundle exists; a bundle with any error is refused whole, with every
error at its file:line:col (BundleError.diagnostics). The files are read by `pdp.bundle.files` and
checked against the bundle's file manifest (`pdp.bundle.manifest`) before anything is parsed.
"""

from __future__ import annotations

import functools
import hashlib
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from pdp.bundle import manifest as bundle_manifest
from pdp.bundle.files import (
    SETTLE_TIMEOUT_SECONDS,
    BundleFiles,
    BundleReadError,
    BundleUnstable,
    read_stable,
)
from pdp.bundle.manifest import VerifySignatures
from pdp.bundle.tuple_schema import InvalidTuple, validate_tuple
from pdp.errors import Refused
from pdp.model import RelationTuple, TupleSyntaxError
from pdp.tenancy import Tenancy, parse_tenancy
from policy_lang import ast, collector
from policy_lang.checker import CheckedPolicy, check
from policy_lang.diagnostics import Diagnostic, Loc, PolicyError, with_sources
from policy_lang.parser import parse as _parse_text
from policy_lang.parser import reparse

# A reload re-reads every file but reparses only those whose text changed: parsing is most of a
# load, and an AST is immutable, so one per (text, file name) is shared. A file that does not
# parse raises, and errors are never cached: it is parsed again, and reported again, each time.
# A changed file is parsed from its first changed item on (policy_lang.parser.reparse), given
# its last text and parse.
_MAX_FILES = 256
_last: dict[str, tuple[str, ast.PolicyFile]] = {}  # file name -> its latest text and parse


def _parse_file(text: str, name: str) -> ast.PolicyFile:
    before = _last.get(name)
    tree = _parse_text(text, name) if before is None else reparse(text, name, before)
    if len(_last) >= _MAX_FILES:
        _last.clear()
    _last[name] = (text, tree)
    return tree


parse = functools.lru_cache(maxsize=_MAX_FILES)(_parse_file)

MANIFEST = "bundle.toml"
POLICY_SUFFIX = ".pdp"
TUPLE_SUFFIX = ".jsonl"
TEST_SUFFIX = ".test.toml"


class BundleError(Refused):
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
    tenancy: Tenancy = Tenancy()  # which tenant a tuple belongs to (pdp.tenancy)


@dataclass(frozen=True, slots=True)
class Bundle:
    """A loaded, fully validated bundle: the checked policy, its tuples and tests, its settings,
    and a revision that changes with every edit of its content."""

    name: str
    revision: str  # the manifest's revision plus a digest of the content, so every edit is visible
    settings: Settings
    policy: CheckedPolicy = field(compare=False)
    tuples: tuple[RelationTuple, ...]
    tests: tuple[tuple[str, dict[str, Any]], ...]  # (file, parsed TOML) for the test runner
    path: Path
    warnings: tuple[Diagnostic, ...] = ()


def load_bundle(
    path: str | Path,
    *,
    verify: VerifySignatures | None = None,
    quiet_seconds: float = 0.0,
    settle_timeout: float = SETTLE_TIMEOUT_SECONDS,
    check_manifest: bool = True,
) -> Bundle:
    """Load and validate the bundle directory at `path`; BundleError lists every problem.

    `quiet_seconds` > 0 reads the files as a stable whole (see `pdp.bundle.files.read_stable`): the
    sidecar loads this way, since a file may be half written when a change is noticed. A bundle
    still changing after `settle_timeout` seconds is refused. With a `.manifest.json` the files
    must be exactly the listed ones; `verify` (from `pdp.bundle_signing.Verifier`) demands a
    signed file list. `check_manifest=False` skips both (for `pdp bundle build`, which writes it).
    """
    root = Path(path)
    if not root.is_dir():
        raise BundleError([_no_bundle(root, f"`{root}` is not a bundle directory")])
    try:
        files = read_stable(root, quiet_seconds=quiet_seconds, timeout_seconds=settle_timeout)
    except BundleUnstable as exc:
        shown = ", ".join(f"`{n}`" for n in exc.changed[:5])
        raise BundleError(
            [
                Diagnostic(
                    "bundle_unstable",
                    str(exc),
                    Loc(str(root), 0, 0),
                    hint=f"still changing: {shown}; it loads once it stays unchanged for "
                    f"{quiet_seconds:g}s",
                )
            ]
        ) from None
    except BundleReadError as exc:
        raise BundleError([_no_bundle(root, str(exc))]) from None
    if check_manifest:
        problems = bundle_manifest.check(files, verify)
        if problems:
            # INVARIANT: nothing of a bundle that fails its manifest is parsed: it is not the
            # bundle that was built (or signed), whatever it would compile to.
            raise BundleError(with_sources(problems, {}))
    return bundle_from_files(files)


def _no_bundle(root: Path, message: str) -> Diagnostic:
    return Diagnostic("no_bundle", message, Loc(str(root), 0, 0))


def _read_manifest(files: BundleFiles, diags: list[Diagnostic]) -> dict[str, Any]:
    """bundle.toml as a table; {} (and a diagnostic) when it is missing or not TOML."""
    manifest_path = str(files.root / MANIFEST)
    if MANIFEST in files.unreadable:
        return {}  # reported with the other unreadable files
    if MANIFEST not in files.files:
        diags.append(
            Diagnostic("no_manifest", f"a bundle needs a `{MANIFEST}`", Loc(manifest_path, 0, 0))
        )
        return {}
    try:
        return tomllib.loads(_text(files.files[MANIFEST]))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        diags.append(Diagnostic("manifest_error", str(exc), Loc(manifest_path, 1, 1)))
        return {}


@dataclass
class _Content:
    """The bundle's policy, tuple and test files as they are read, one file at a time."""

    digest: Any = field(default_factory=hashlib.sha256)  # of every file's name and text
    sources: dict[str, str] = field(default_factory=dict)  # for carets under diagnostics
    parsed: list[ast.PolicyFile] = field(default_factory=list)
    # Of the files that did not parse: what did (checked too, for the rest of their errors) and
    # the names their unparsed text declares (not to be called unknown elsewhere).
    partial: list[ast.PolicyFile] = field(default_factory=list)
    lost: set[str] = field(default_factory=set)
    tuples: list[_Located] = field(default_factory=list)
    names: dict[str, str] = field(default_factory=dict)  # one string per distinct name and id
    tests: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def add(self, name: str, rel: str, data: bytes, diags: list[Diagnostic]) -> None:
        try:
            text = _text(data)
        except UnicodeDecodeError as exc:
            diags.append(Diagnostic("read_error", f"cannot read: {exc}", Loc(name, 0, 0)))
            return
        # the relative name: a bundle's revision is the same wherever it lies (every sidecar of a
        # fleet unpacks a downloaded bundle into a directory of its own)
        self.digest.update(rel.encode() + b"\0" + text.encode() + b"\0")
        if rel.endswith(POLICY_SUFFIX):
            self.sources[name] = text
            self._add_policy(name, text, diags)
        elif rel.endswith(TUPLE_SUFFIX):
            self.sources[name] = text
            self.tuples.extend(_tuples(text, name, diags, self.names))
        elif rel.endswith(TEST_SUFFIX):
            try:
                self.tests.append((name, tomllib.loads(text)))
            except tomllib.TOMLDecodeError as exc:
                diags.append(Diagnostic("test_file_error", str(exc), Loc(name, 1, 1)))

    def _add_policy(self, name: str, text: str, diags: list[Diagnostic]) -> None:
        if not text.strip():
            # A file rewritten in place is empty for a moment; loading it would drop every
            # rule it held (its forbids above all). An empty policy file is never meant.
            diags.append(
                Diagnostic(
                    "empty_policy_file",
                    "the policy file is empty",
                    Loc(name, 1, 1),
                    hint="delete the file to drop its rules, or keep a comment in it",
                )
            )
            return
        try:
            self.parsed.append(parse(text, name))
        except PolicyError as exc:
            diags.extend(exc.diagnostics)
            if isinstance(exc.partial, ast.PolicyFile):
                self.partial.append(exc.partial)
            self.lost |= exc.lost


# What stops a file from parsing whole. Its other errors are still reported (the checker runs
# over what did parse), but a bundle with any of them is refused all the same.
_PARSE_ERRORS = ("syntax_error", "ambiguous_precedence")


def bundle_from_files(files: BundleFiles) -> Bundle:
    """Parse and check a bundle from its files as read (no manifest check: see load_bundle)."""
    with collector.paused():  # all it builds stays alive: nothing for the collector to find
        return _bundle_from_files(files)


def _bundle_from_files(files: BundleFiles) -> Bundle:
    root = files.root
    diags: list[Diagnostic] = []
    manifest_path = root / MANIFEST
    manifest = _read_manifest(files, diags)
    name_, revision_ = _identity(manifest, root, str(manifest_path), diags)
    settings = _settings(manifest, str(manifest_path), diags)
    for rel, reason in files.unreadable.items():
        diags.append(Diagnostic("read_error", f"cannot read: {reason}", Loc(str(root / rel), 0, 0)))
    content = _Content()
    for rel, data in files.files.items():
        content.add(str(root / rel), rel, data, diags)
    parsed, tuples, sources = content.parsed, content.tuples, content.sources
    if not parsed and not any(d.code in (*_PARSE_ERRORS, "empty_policy_file") for d in diags):
        diags.append(
            Diagnostic("no_policy", f"no `*{POLICY_SUFFIX}` policy files", Loc(str(root), 0, 0))
        )
    # Every file is checked, with what parsed of those that did not: their names, types and
    # references are reported beside the syntax errors (names the unparsed text declares are
    # not called unknown).
    policy, found = check([*parsed, *content.partial], frozenset(content.lost))
    if not any(d.code == "empty_policy_file" for d in diags):
        # An empty file is a file mid-rewrite: what it held is unknown, so is what is missing.
        diags.extend(found)
        unknown = settings.tenancy.unknown_types(set(policy.types) | content.lost)
        diags.extend(
            Diagnostic(
                "manifest_error",
                f"`[tenancy]` names `{t}`, not a type",
                Loc(str(manifest_path), 1, 1),
            )
            for t in unknown
        )
    diags.extend(_check_tuples(policy, tuples, diags))
    diags = with_sources(diags, sources)
    if any(d.is_error for d in diags):
        raise BundleError(diags)
    return Bundle(
        name=name_,
        revision=f"{revision_}+{content.digest.hexdigest()[:10]}",
        settings=settings,
        policy=policy,
        tuples=_distinct(tuples),
        tests=tuple(content.tests),
        path=root,
        warnings=tuple(d for d in diags if not d.is_error),
    )


def _text(data: bytes) -> str:
    """UTF-8 with newlines translated, as `Path.read_text` reads (the revision digests this)."""
    text = data.decode("utf-8")
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text


def _identity(
    manifest: dict[str, Any], root: Path, where: str, diags: list[Diagnostic]
) -> tuple[str, str]:
    """`name` (default: the directory's name) and `revision` (default `0`) of bundle.toml."""
    loc = Loc(where, 1, 1)
    name, revision = manifest.get("name", root.name), manifest.get("revision", "0")
    if not isinstance(name, str) or not name:
        diags.append(Diagnostic("manifest_error", "`name` must be a non-empty string", loc))
        name = root.name
    if isinstance(revision, bool) or not isinstance(revision, str | int):
        diags.append(Diagnostic("manifest_error", "`revision` must be a string or an integer", loc))
        revision = "0"
    return name, str(revision)


def _settings(manifest: dict[str, Any], where: str, diags: list[Diagnostic]) -> Settings:
    loc = Loc(where, 1, 1)
    raw = manifest.get("settings", {})
    if not isinstance(raw, dict):
        diags.append(
            Diagnostic(
                "manifest_error",
                "`settings` must be a table",
                loc,
                hint="write the settings under a `[settings]` header",
            )
        )
        return Settings()
    for key in sorted(set(raw) - _SETTINGS_KEYS):
        diags.append(
            Diagnostic(
                "manifest_error",
                f"unknown setting `settings.{key}`",
                loc,
                severity="warning",
                hint="known: " + ", ".join(f"`{k}`" for k in sorted(_SETTINGS_KEYS)),
            )
        )
    ttl, depth, fail_open = (
        raw.get("cache_ttl_seconds"),
        raw.get("max_depth"),
        raw.get("fail_open", []),
    )
    if ttl is not None and (
        isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 0 <= ttl < math.inf
    ):
        diags.append(
            Diagnostic("manifest_error", "`settings.cache_ttl_seconds` must be a number ≥ 0", loc)
        )
        ttl = None
    if depth is not None and (
        isinstance(depth, bool) or not isinstance(depth, int) or not 1 <= depth <= 1000
    ):
        diags.append(
            Diagnostic("manifest_error", "`settings.max_depth` must be an integer in 1..1000", loc)
        )
        depth = None
    pairs = set()
    for item in fail_open if isinstance(fail_open, list) else [None]:
        t, sep, a = item.partition(":") if isinstance(item, str) else ("", "", "")
        if not sep or not t or not a or ":" in a:
            diags.append(
                Diagnostic(
                    "manifest_error", "`settings.fail_open` lists `type:action` strings", loc
                )
            )
            continue
        pairs.add((t, a))
    tenancy, problems = parse_tenancy(manifest.get("tenancy"))
    diags.extend(Diagnostic("manifest_error", p, loc) for p in problems)
    return Settings(float(ttl) if ttl is not None else None, depth, frozenset(pairs), tenancy)


_SETTINGS_KEYS = frozenset({"cache_ttl_seconds", "max_depth", "fail_open"})


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
    # Whether a tuple fits depends only on its shape, and a big bundle has a handful of shapes.
    fits: set[tuple[str, str, str, str, bool]] = set()
    for t, name, lineno in tuples:
        shape = (
            t.object_type,
            t.relation,
            t.subject_type,
            t.subject_relation,
            t.subject_id == "*",
        )
        if shape in fits:
            continue
        try:
            validate_tuple(policy, t)
        except InvalidTuple as exc:
            out.append(Diagnostic("tuple_error", str(exc), Loc(name, lineno, 1)))
            continue
        fits.add(shape)
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
    with collector.paused():
        return _bundle_from_text(policy, tuples, name, revision, settings)


def _bundle_from_text(
    policy: str | dict[str, str],
    tuples: tuple[str | RelationTuple, ...] | list[str | RelationTuple],
    name: str,
    revision: str,
    settings: Settings | None,
) -> Bundle:
    sources = {"policy.pdp": policy} if isinstance(policy, str) else dict(policy)
    diags: list[Diagnostic] = []
    parsed: list[ast.PolicyFile] = []
    lost: set[str] = set()
    for file, text in sorted(sources.items()):
        try:
            parsed.append(parse(text, file))
        except PolicyError as exc:
            diags.extend(exc.diagnostics)
            if isinstance(exc.partial, ast.PolicyFile):
                parsed.append(exc.partial)
            lost |= exc.lost
    # As in load_bundle: what did parse of a file that did not is checked too.
    checked, found = check(parsed, frozenset(lost))
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
