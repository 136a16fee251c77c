"""Where the sidecar's bundle comes from, behind one interface (`BundleSource`): a directory it
watches (pdp.sidecar.reloader) or an http(s):// URL of a bundle archive it polls (`HttpBundleSource`,
here), keeping the last good bundle under the data directory so a cold start works while the
bundle server is down.

BundleFetchError(Unavailable) — the bundle server could not be asked or did not answer with one.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, Protocol, TypeVar

import httpx
import orjson

from pdp.bundle.archive import MAX_ARCHIVE_BYTES, unpack
from pdp.errors import Unavailable

log = logging.getLogger(__name__)

B = TypeVar("B")

CURRENT = "current"  # DATA_DIR/bundles/current -> b-...: the last good bundle, swapped by rename
_SOURCE_FILE = ".source.json"  # beside the bundle's files (a dot name: not part of the bundle)
_VERSION_PREFIX = "b-"
_LEFTOVER_SECONDS = 600.0


class BundleSource(Protocol):
    """What the composition root drives: load now (at start), then follow changes until stopped."""

    def reload_now(self) -> bool:
        """Load what the source holds now; True if a bundle from it is serving."""
        ...

    def start(self) -> None: ...

    def stop(self) -> None: ...


def redacted(url: str) -> str:
    """`url` without credentials or query (a pre-signed URL's query is a credential): for logs."""
    try:
        u = httpx.URL(url)
    except httpx.InvalidURL:
        return "<invalid url>"
    return str(u.copy_with(username=None, password=None, query=None, fragment=None))


class BundleFetchError(Unavailable):
    """GET of the bundle URL failed: unreachable, a timeout, an HTTP error status, or too large."""


@dataclass(frozen=True, slots=True)
class _Origin:
    """What a downloaded bundle was: the URL, the server's ETag for it and the archive's SHA-256."""

    url: str
    etag: str
    digest: str


class HttpBundleSource(Generic[B]):
    """Polls `url` every `poll_seconds` (If-None-Match with the serving bundle's ETag), unpacks a
    new archive into a fresh directory under `cache_dir`, and hands it to `load` and `apply`.

    Only a bundle that loads and applies becomes the persisted last good one (`cache_dir/current`,
    swapped atomically); a refused one is reported through `rejected`, exactly as a refused local
    bundle is, and the running bundle stays. A server error or a timeout never unloads anything.
    """

    def __init__(
        self,
        url: str,
        cache_dir: Path,
        *,
        load: Callable[[Path], B],
        apply: Callable[[B], None],
        rejected: Callable[[Path, Exception], None],
        poll_seconds: float = 10.0,
        timeout_seconds: float = 10.0,
    ) -> None:
        self.url = url
        self.cache_dir = cache_dir
        self._load = load
        self._apply = apply
        self._rejected = rejected
        self._poll = poll_seconds
        self._client = httpx.Client(
            timeout=timeout_seconds,
            follow_redirects=True,
            # the archive is gzipped already; a transfer encoding on top would only be inflated
            headers={"accept-encoding": "identity", "user-agent": "pdp-sidecar"},
        )
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # one reload at a time
        self._restored = False
        self._serving: _Origin | None = None  # where the bundle serving from this source came from
        self._refused_digest = ""  # the last archive refused: not downloaded into a report again
        self._failing = False  # the server is unreachable: reported once per outage

    # ---- the interface
    def reload_now(self) -> bool:
        with self._lock:
            try:
                if not self._restored:
                    self._restored = True
                    self._restore()
                self._poll_once()
            except Exception as exc:  # INVARIANT: a poll never raises and never unloads
                log.error("bundle from %s: %s", redacted(self.url), _one_line(exc))
                self._report(self.cache_dir, exc)
            return self._serving is not None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="bundle-poller", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self._client.timeout.read or 10.0)
        self._client.close()

    def _run(self) -> None:
        while not self._stop.wait(self._poll):
            self.reload_now()

    # ---- a cold start: the persisted last good bundle, before the server is asked
    def _restore(self) -> None:
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        current = self.cache_dir / CURRENT
        kept = current.resolve() if current.is_dir() else None
        for entry in self.cache_dir.iterdir():  # leftovers of a crash mid-download or mid-swap
            # only old ones: another process sharing this data directory may be downloading now
            leftover = entry.name.startswith((_VERSION_PREFIX, f".{CURRENT}."))
            if leftover and entry != kept and _age(entry) > _LEFTOVER_SECONDS:
                _remove(entry)
        if kept is None:
            return
        origin = _read_origin(kept)
        if self._take(kept, origin if origin.url == self.url else _Origin(self.url, "", "")):
            log.info("serving the persisted bundle %s until %s answers", kept, redacted(self.url))

    # ---- a poll
    def _poll_once(self) -> None:
        try:
            fetched = self._fetch()
        except BundleFetchError as exc:
            if not self._failing:
                self._failing = True
                log.warning("%s; the bundle serving now stays", exc)
                self._report(self.cache_dir, exc)
            return
        if self._failing:
            self._failing = False
            log.info("bundle server %s answers again", redacted(self.url))
        if fetched is None:
            return  # 304: the serving bundle is the server's
        body, etag = fetched
        digest = hashlib.sha256(body).hexdigest()
        if self._serving is not None and digest == self._serving.digest:
            self._serving = _Origin(self.url, etag, digest)  # same bytes (a server without ETag)
            return
        if digest == self._refused_digest:
            return  # refused already, and reported: the server still serves it
        fresh = self.cache_dir / f"{_VERSION_PREFIX}{secrets.token_hex(8)}"
        origin = _Origin(self.url, etag, digest)
        try:
            unpack(body, fresh, origin=redacted(self.url))
            (fresh / _SOURCE_FILE).write_bytes(orjson.dumps(_origin_json(origin)))
        except Exception as exc:
            _remove(fresh)
            self._refuse(fresh, digest, exc)
            return
        if self._take(fresh, origin):
            self._persist(fresh)
        else:
            _remove(fresh)
            self._refused_digest = digest

    def _fetch(self) -> tuple[bytes, str] | None:
        """The archive and its ETag, or None for 304 Not Modified."""
        headers: dict[str, str] = {}
        if self._serving is not None and self._serving.etag:
            headers["if-none-match"] = self._serving.etag
        where = redacted(self.url)
        try:
            with self._client.stream("GET", self.url, headers=headers) as r:
                if r.status_code == httpx.codes.NOT_MODIFIED:
                    return None
                if r.status_code != httpx.codes.OK:
                    raise BundleFetchError(f"GET {where}: HTTP {r.status_code}")
                body = bytearray()
                for chunk in r.iter_bytes():
                    body += chunk
                    if len(body) > MAX_ARCHIVE_BYTES:
                        raise BundleFetchError(
                            f"GET {where}: the archive is larger than {MAX_ARCHIVE_BYTES} bytes"
                        )
                return bytes(body), r.headers.get("etag", "")
        except httpx.HTTPError as exc:
            raise BundleFetchError(f"GET {where}: {_one_line(exc)}") from None

    def _take(self, directory: Path, origin: _Origin) -> bool:
        """Load and apply the bundle in `directory`; a refusal is reported. True if it serves."""
        try:
            self._apply(self._load(directory))
        except Exception as exc:  # load or apply: either refuses the bundle, never crashes
            self._refuse(directory, origin.digest, exc)
            return False
        self._serving = origin
        return True

    def _refuse(self, directory: Path, digest: str, exc: Exception) -> None:
        self._refused_digest = digest
        log.error("bundle from %s refused: %s", redacted(self.url), _one_line(exc))
        self._report(directory, exc)

    def _persist(self, fresh: Path) -> None:
        """Make `fresh` the last good bundle: one rename of a symlink, then drop the old one."""
        current = self.cache_dir / CURRENT
        old = current.resolve() if current.is_symlink() else None
        link = self.cache_dir / f".{CURRENT}.{secrets.token_hex(4)}"
        os.symlink(fresh.name, link)
        os.replace(link, current)  # INVARIANT: `current` is always a whole, loaded bundle
        if old is not None and old != fresh.resolve():
            _remove(old)

    def _report(self, path: Path, exc: Exception) -> None:
        try:
            self._rejected(path, exc)
        except Exception:  # a failing report must not take the poller down with it
            log.exception("reporting a refused bundle failed")


def _origin_json(origin: _Origin) -> dict[str, str]:
    return {"url": origin.url, "etag": origin.etag, "sha256": origin.digest}


def _read_origin(directory: Path) -> _Origin:
    try:
        obj = orjson.loads((directory / _SOURCE_FILE).read_bytes())
        return _Origin(str(obj["url"]), str(obj["etag"]), str(obj["sha256"]))
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError):
        return _Origin("", "", "")


def _age(path: Path) -> float:
    try:
        return time.time() - path.lstat().st_mtime
    except OSError:
        return 0.0


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path, ignore_errors=True)


def _one_line(exc: Exception) -> str:
    text = str(exc).strip().replace("\n", " | ")
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
