"""`pdp bundle`: write a bundle's file manifest (`build`, optionally signed, optionally packed into
an archive a bundle server can serve), check one (`verify`), and make a signing key pair
(`keygen`)."""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization

from pdp.bundle import BundleError, bundle_from_files, load_bundle
from pdp.bundle import manifest as bundle_manifest
from pdp.bundle.archive import pack
from pdp.bundle.files import MANIFEST_FILE, SIGNATURES_FILE, BundleReadError, read_files
from pdp.bundle_signing import ALGORITHMS, Verifier, key_id, sign
from pdp.tokens.errors import KeyConfigError
from pdp.tokens.keys import generate_private_key


def add_commands(sub: Any) -> None:
    p = sub.add_parser("bundle", help="bundle manifests and signatures: build, verify, keygen")
    bsub = p.add_subparsers(dest="bundle_command", required=True)

    b = bsub.add_parser(
        "build",
        help=f"validate a bundle and write its `{MANIFEST_FILE}` (every file with its SHA-256)",
    )
    b.add_argument("bundle", type=Path)
    b.add_argument(
        "--sign-key",
        type=Path,
        metavar="FILE",
        help=f"private key (PEM, ES256 or EdDSA): also write `{SIGNATURES_FILE}`",
    )
    b.add_argument(
        "-o",
        "--output",
        type=Path,
        metavar="FILE.tar.gz",
        help="also pack the bundle, manifest and signature into this archive (for `pdp serve "
        "--bundle https://...`)",
    )
    b.set_defaults(handler=cmd_build)

    v = bsub.add_parser(
        "verify", help="check a bundle against its manifest (and signature) as the sidecar would"
    )
    v.add_argument("bundle", type=Path)
    v.add_argument(
        "--verify-key", type=Path, metavar="FILE", help="public key: demand a valid signature"
    )
    v.set_defaults(handler=cmd_verify)

    k = bsub.add_parser(
        "keygen", help="make a signing key pair: FILE (private, mode 0600) and FILE.pub"
    )
    k.add_argument("private_key", type=Path, metavar="FILE")
    k.add_argument("--algorithm", choices=ALGORITHMS, default="ES256")
    k.set_defaults(handler=cmd_keygen)


def _print_errors(exc: BundleError) -> None:
    for d in exc.diagnostics:
        print(d.format(), file=sys.stderr)


def cmd_build(args: argparse.Namespace) -> int:
    root: Path = args.bundle
    try:
        files = read_files(root)
        bundle_from_files(files)  # never list (or sign) a bundle that would be refused anyway
    except BundleReadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except BundleError as exc:
        _print_errors(exc)
        return 1
    hashes = bundle_manifest.file_list(files)
    try:
        signatures = sign(hashes, args.sign_key) if args.sign_key else None
    except (KeyConfigError, OSError) as exc:
        print(f"error: --sign-key: {exc}", file=sys.stderr)
        return 2
    manifest = bundle_manifest.manifest_bytes(hashes)
    _write_atomic(root / MANIFEST_FILE, manifest)
    print(f"wrote {root / MANIFEST_FILE}: {len(hashes)} files")
    stale = root / SIGNATURES_FILE
    if signatures is not None:
        _write_atomic(stale, signatures)
        print(f"wrote {stale}: signed")
    elif stale.exists():
        stale.unlink()  # it signed other content; left in place it would only be refused
        print(f"removed {stale}: it signed an older file list (sign again with --sign-key)")
    if args.output is not None:
        # The archive holds exactly the bytes that were hashed (and signed), not a second read.
        meta = {MANIFEST_FILE: manifest} | ({SIGNATURES_FILE: signatures} if signatures else {})
        _write_atomic(args.output, pack({**files.files, **meta}))
        print(f"wrote {args.output}: {len(files.files) + len(meta)} files")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    try:
        verify = Verifier.from_file(args.verify_key) if args.verify_key else None
    except (KeyConfigError, OSError) as exc:
        print(f"error: --verify-key: {exc}", file=sys.stderr)
        return 2
    root: Path = args.bundle
    try:
        bundle = load_bundle(root, verify=verify)
    except BundleError as exc:
        _print_errors(exc)
        return 1
    has_manifest = (root / MANIFEST_FILE).exists()
    what = "signed file list" if verify else ("manifest" if has_manifest else "no manifest")
    print(f"ok: bundle `{bundle.name}` revision {bundle.revision} ({what})")
    return 0


def cmd_keygen(args: argparse.Namespace) -> int:
    path: Path = args.private_key
    public_path = path.with_name(path.name + ".pub")
    key = generate_private_key(args.algorithm)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    try:
        # O_EXCL: never overwrite a key that may have signed bundles in service.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        print(f"error: {path} exists", file=sys.stderr)
        return 1
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    public = key.public_key()
    public_path.write_bytes(
        public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    print(f"wrote {path} (private, {args.algorithm}) and {public_path} (kid {key_id(public)})")
    return 0


def _write_atomic(path: Path, data: bytes) -> None:
    # A dot name: the temporary file is never part of the bundle, even for a moment.
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
