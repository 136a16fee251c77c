"""Bundle archives: a bundle's files in one `.tar.gz` (`pdp bundle build -o`), and their safe unpacking.

An archive is what a bundle server serves, so unpacking treats it as hostile: only regular files and
directories under relative names, within a file count and a byte budget checked before a byte is
written (the gzip stream itself is inflated under the same cap, so a bomb is refused, not expanded).
Anything else is a BundleError (`archive_invalid`), like any other bundle that cannot load.
"""

from __future__ import annotations

import gzip
import io
import tarfile
import zlib
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

from pdp.bundle.loader import BundleError
from policy_lang.diagnostics import Diagnostic, Loc

MAX_ARCHIVE_BYTES = 64 << 20  # the archive as served (compressed)
MAX_UNPACKED_BYTES = 256 << 20  # the tar stream once inflated: every header and file
MAX_FILES = 10_000
_GZIP_MAGIC = b"\x1f\x8b"


def pack(files: Mapping[str, bytes]) -> bytes:
    """A `.tar.gz` of `files` (relative POSIX name -> bytes), the same bytes for the same files:
    sorted names, no owners, no timestamps (so a server's ETag changes only with the content)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(files):
            data = files[name]
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    out = io.BytesIO()
    # mtime=0 and no file name in the gzip header: deterministic
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0) as gz:
        gz.write(raw.getvalue())
    return out.getvalue()


def unpack(data: bytes, dest: Path, *, origin: str = "") -> None:
    """Unpack the archive `data` into the new directory `dest` (it must not exist yet).

    `origin` (the URL it came from) names the archive in diagnostics. Raises BundleError with one
    `archive_invalid` diagnostic, before anything is written, for an archive that is not a tar
    (gzipped or not) of regular files and directories under relative names within the limits.
    """
    where = origin or str(dest)
    if len(data) > MAX_ARCHIVE_BYTES:
        raise _invalid(where, f"the archive is larger than {MAX_ARCHIVE_BYTES} bytes")
    raw = _inflate(data, where) if data[:2] == _GZIP_MAGIC else data
    try:
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
            members = _checked_members(tar, where)
            dest.mkdir(parents=False, exist_ok=False)
            # INVARIANT: every member was checked above; the "data" filter checks again (it also
            # clears modes it would not want: setuid, group/other write, device bits).
            tar.extractall(dest, members=members, filter="data")
    except tarfile.TarError as exc:
        raise _invalid(where, f"not a readable tar archive: {exc}") from None
    except OSError as exc:
        raise _invalid(where, f"cannot unpack: {exc.strerror or exc}") from None


def _inflate(data: bytes, where: str) -> bytes:
    inflater = zlib.decompressobj(wbits=31)  # gzip framing
    try:
        out = inflater.decompress(data, MAX_UNPACKED_BYTES + 1)
    except zlib.error as exc:
        raise _invalid(where, f"not a readable gzip stream: {exc}") from None
    if len(out) > MAX_UNPACKED_BYTES or inflater.unconsumed_tail:
        raise _invalid(where, f"the archive inflates to more than {MAX_UNPACKED_BYTES} bytes")
    if not inflater.eof:
        raise _invalid(where, "the gzip stream is truncated")
    return out


def _checked_members(tar: tarfile.TarFile, where: str) -> list[tarfile.TarInfo]:
    members: list[tarfile.TarInfo] = []
    total = 0
    for member in tar:
        if len(members) >= MAX_FILES:
            raise _invalid(where, f"the archive holds more than {MAX_FILES} entries")
        problem = _member_problem(member)
        if problem:
            raise _invalid(where, f"`{member.name}`: {problem}")
        total += member.size
        if total > MAX_UNPACKED_BYTES:
            raise _invalid(where, f"the archive's files hold more than {MAX_UNPACKED_BYTES} bytes")
        members.append(member)
    return members


def _member_problem(member: tarfile.TarInfo) -> str:
    """Why `member` may not be unpacked ("" if it may)."""
    if member.issym() or member.islnk():
        return "links are not allowed in a bundle archive"
    if not (member.isfile() or member.isdir()):
        return "only regular files and directories are allowed in a bundle archive"
    name = member.name
    path = PurePosixPath(name)
    if not name or name.startswith("/") or path.is_absolute() or "\\" in name:
        return "absolute names are not allowed in a bundle archive"
    if ".." in path.parts:
        return "`..` is not allowed in a bundle archive"
    return ""


def _invalid(where: str, message: str) -> BundleError:
    return BundleError(
        [
            Diagnostic(
                "archive_invalid",
                message,
                Loc(where, 0, 0),
                hint="make the archive with `pdp bundle build DIR -o FILE.tar.gz`",
            )
        ]
    )
