"""A bundle as its author is editing it: the files on disk with unsaved drafts laid over them,
loaded in memory exactly as `pdp validate` loads the directory (the playground and the language
server both see what validate would see, before anything is saved).

DraftError(ValueError) — a draft names a file that is not one of the bundle's policy or tuple files.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path, PurePosixPath

from pdp.bundle import POLICY_SUFFIX, Bundle, BundleError, bundle_from_files
from pdp.bundle.files import BundleFiles, BundleReadError, read_stable
from pdp.bundle.loader import MANIFEST, TUPLE_SUFFIX
from policy_lang.diagnostics import Diagnostic, Loc

EDITABLE_SUFFIXES = (POLICY_SUFFIX, TUPLE_SUFFIX)


class DraftError(ValueError):
    """A draft's name is not an editable file of the bundle (absolute, `..`, hidden, other kind)."""


def find_bundle_root(path: Path) -> Path | None:
    """The nearest directory at or above `path` holding a `bundle.toml`, if any."""
    for candidate in (path, *path.parents):
        if (candidate / MANIFEST).is_file():
            return candidate
    return None


def read(root: Path) -> BundleFiles:
    """One read of the bundle directory (nobody else is writing it: quiet period 0)."""
    return read_stable(root, quiet_seconds=0)


def editable(files: BundleFiles) -> list[str]:
    """The relative names of the files an author may edit: policy and tuple files."""
    return [rel for rel in files.files if rel.endswith(EDITABLE_SUFFIXES)]


def check_name(files: BundleFiles, rel: str, *, new: bool = False) -> str:
    """`rel` if it names an existing policy or tuple file of the bundle (or, with `new`, one that
    could be: an editor's unsaved new file); DraftError otherwise.

    INVARIANT: no name with `..`, a hidden part or a leading `/` passes, so no draft reaches
    outside the bundle; the playground lets only existing files pass."""
    parts = PurePosixPath(rel).parts
    if (
        not rel
        or rel.startswith("/")
        or any(p in ("", ".", "..") or p.startswith(".") for p in parts)
        or not rel.endswith(EDITABLE_SUFFIXES)
        or (rel not in files.files and not new)
    ):
        raise DraftError(f"`{rel}` is not a policy or tuple file of this bundle")
    return rel


def with_drafts(files: BundleFiles, drafts: Mapping[str, str], *, new: bool = False) -> BundleFiles:
    """The bundle's files with each draft's text in place of the file's bytes on disk."""
    merged = dict(files.files)
    for rel, text in drafts.items():
        merged[check_name(files, rel, new=new)] = text.encode("utf-8")
    return replace(files, files=dict(sorted(merged.items())))


def load(
    files: BundleFiles, drafts: Mapping[str, str], *, new: bool = False
) -> tuple[Bundle | None, list[Diagnostic]]:
    """The bundle built from the files and drafts, and every diagnostic (warnings included);
    no bundle when any error was found. Diagnostics name files as `pdp validate` does."""
    try:
        bundle = bundle_from_files(with_drafts(files, drafts, new=new))
    except BundleError as exc:
        return None, list(exc.diagnostics)
    return bundle, list(bundle.warnings)


def load_dir(
    root: Path, drafts: Mapping[str, str], *, new: bool = False
) -> tuple[Bundle | None, list[Diagnostic]]:
    """As `load`, reading the directory first; a directory that cannot be read is a diagnostic."""
    try:
        files = read(root)
    except BundleReadError as exc:
        return None, [Diagnostic("no_bundle", str(exc), Loc(str(root), 0, 0))]
    return load(files, drafts, new=new)


def save(root: Path, files: BundleFiles, drafts: Mapping[str, str]) -> list[str]:
    """Write each draft whose text differs from the file's, atomically (a temporary file in the
    same directory, then a rename: a watching sidecar never reads half a file). Returns the
    names written."""
    written = []
    for rel, text in sorted(drafts.items()):
        check_name(files, rel)
        data = text.encode("utf-8")
        if files.files.get(rel) == data:
            continue
        target = root / rel
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, target.stat().st_mode & 0o777)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        written.append(rel)
    return written
