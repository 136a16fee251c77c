"""The bundle's file manifest: every file with its SHA-256, in `.manifest.json` (and, signed, in the
payload of `.signatures.json`, OPA's format). With a manifest a bundle loads only if its files are
exactly the listed ones with exactly the listed content.

ManifestError(ValueError) — a manifest or signature payload that is not a well-formed file list.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from pdp.bundle.files import MANIFEST_FILE, SIGNATURES_FILE, BundleFiles
from pdp.errors import Refused
from policy_lang.diagnostics import Diagnostic, Loc

HASH_ALGORITHM = "SHA-256"
_HEX = re.compile(r"^[0-9a-f]{64}$")

# Checks `.signatures.json` and returns the signed file list (name -> sha256 hex), or raises
# ValueError saying why not. Built from a key file by `pdp.bundle_signing`; `pdp.bundle` only
# calls it, so the loader needs no crypto library.
VerifySignatures = Callable[[bytes], Mapping[str, str]]


class ManifestError(Refused):
    """Not a file list: `{"files": [{"name": ..., "hash": ..., "algorithm": "SHA-256"}, ...]}`."""


def file_list(files: BundleFiles) -> dict[str, str]:
    """name -> sha256 hex of every file of the bundle, as read."""
    return {name: files.sha256(name) for name in files.files}


def to_json(hashes: Mapping[str, str]) -> dict[str, Any]:
    """The file list as a JSON object (OPA's signature payload shape)."""
    return {
        "files": [
            {"name": name, "hash": digest, "algorithm": HASH_ALGORITHM}
            for name, digest in sorted(hashes.items())
        ]
    }


def manifest_bytes(hashes: Mapping[str, str]) -> bytes:
    return orjson.dumps(to_json(hashes), option=orjson.OPT_INDENT_2) + b"\n"


def parse(obj: object) -> dict[str, str]:
    """A file list from its JSON object; ManifestError naming the first problem."""
    if not isinstance(obj, dict) or not isinstance(obj.get("files"), list):
        raise ManifestError("expected an object with a `files` list")
    out: dict[str, str] = {}
    for i, entry in enumerate(obj["files"]):
        if not isinstance(entry, dict):
            raise ManifestError(f"`files[{i}]` is not an object")
        name, digest = entry.get("name"), entry.get("hash")
        algorithm = entry.get("algorithm", HASH_ALGORITHM)
        if not isinstance(name, str) or not _safe_name(name):
            raise ManifestError(f"`files[{i}].name` is not a relative path inside the bundle")
        if algorithm != HASH_ALGORITHM:
            raise ManifestError(f"`{name}`: only `{HASH_ALGORITHM}` hashes are supported")
        if not isinstance(digest, str) or not _HEX.match(digest):
            raise ManifestError(f"`{name}`: `hash` is not a lowercase hex SHA-256")
        if name in out:
            raise ManifestError(f"`{name}` is listed twice")
        out[name] = digest
    return out


def parse_bytes(data: bytes) -> dict[str, str]:
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ManifestError(f"not JSON: {exc}") from None
    return parse(obj)


def _safe_name(name: str) -> bool:
    parts = name.split("/")
    return bool(name) and all(p and not p.startswith(".") for p in parts) and "\\" not in name


def check(files: BundleFiles, verify: VerifySignatures | None) -> list[Diagnostic]:
    """Every way `files` differs from its manifest, as diagnostics (empty: the bundle is intact).

    With `verify` the bundle must be signed, and the signed list is the one that counts; an unsigned
    `.manifest.json` next to it must agree. Without `verify` a `.manifest.json`, if present, counts
    and `.signatures.json` is not read (no key to check it with).
    """
    root = files.root
    manifest_loc = Loc(str(root / MANIFEST_FILE), 0, 0)
    signatures_loc = Loc(str(root / SIGNATURES_FILE), 0, 0)
    for name, reason in files.unreadable.items():
        if name in (MANIFEST_FILE, SIGNATURES_FILE):
            return [
                Diagnostic(
                    "manifest_invalid", f"cannot read: {reason}", Loc(str(root / name), 0, 0)
                )
            ]
    expected: Mapping[str, str] | None = None
    if verify is not None:
        signatures = files.meta.get(SIGNATURES_FILE)
        if signatures is None:
            return [
                Diagnostic(
                    "signature_missing",
                    f"the bundle is not signed: no `{SIGNATURES_FILE}`, and a signed bundle is "
                    "required (`--bundle-verify-key`)",
                    signatures_loc,
                    hint="sign it with `pdp bundle build DIR --sign-key KEY.pem`",
                )
            ]
        try:
            expected = verify(signatures)
        except ValueError as exc:
            return [Diagnostic("signature_invalid", str(exc), signatures_loc)]
    manifest = files.meta.get(MANIFEST_FILE)
    if manifest is not None:
        try:
            listed = parse_bytes(manifest)
        except ManifestError as exc:
            return [Diagnostic("manifest_invalid", str(exc), manifest_loc)]
        if expected is None:
            expected = listed
        elif dict(listed) != dict(expected):
            return [
                Diagnostic(
                    "manifest_invalid",
                    f"`{MANIFEST_FILE}` and the signed file list in `{SIGNATURES_FILE}` disagree",
                    manifest_loc,
                    hint="rebuild both with `pdp bundle build`",
                )
            ]
    if expected is None:
        return []
    return _compare(files, expected)


def _compare(files: BundleFiles, expected: Mapping[str, str]) -> list[Diagnostic]:
    out = []
    for name, digest in expected.items():
        loc = Loc(str(files.root / name), 0, 0)
        if name in files.unreadable:
            continue  # reported below, once
        if name not in files.files:
            out.append(
                Diagnostic("manifest_file_missing", f"`{name}` is in the manifest but missing", loc)
            )
        elif files.sha256(name) != digest:
            out.append(
                Diagnostic(
                    "manifest_file_changed",
                    f"`{name}` does not match the manifest (sha256 {files.sha256(name)[:12]}…, "
                    f"listed {digest[:12]}…)",
                    loc,
                )
            )
    for name in files.files:
        if name not in expected:
            out.append(
                Diagnostic(
                    "manifest_file_extra",
                    f"`{name}` is not in the manifest",
                    Loc(str(files.root / name), 0, 0),
                    hint="every file of a bundle with a manifest must be listed; "
                    "rebuild it with `pdp bundle build`",
                )
            )
    for name, reason in files.unreadable.items():
        out.append(
            Diagnostic("read_error", f"cannot read: {reason}", Loc(str(files.root / name), 0, 0))
        )
    return out
