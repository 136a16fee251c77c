"""Bundles from a URL: a real HTTP server on 127.0.0.1 with ETags serves real archives signed by
real keys. A new bundle loads and is persisted; an unchanged one is a 304; a tampered, unsigned or
hostile archive is refused (reported once) and the last good one stays; a server that fails or is
gone unloads nothing; a cold start serves the persisted copy."""

from __future__ import annotations

import io
import logging
import os
import shutil
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pdp.bundle import Bundle, BundleError, load_bundle
from pdp.bundle import archive as bundle_archive
from pdp.bundle.archive import pack, unpack
from pdp.bundle_signing import Verifier
from pdp.sidecar.app import bundle_source
from pdp.sidecar.bundle_source import CURRENT, BundleFetchError, HttpBundleSource, redacted
from pdp.sidecar.config import Config, config_from, settings
from tests.bundle_keys import key_pair
from tests.bundle_server import BundleServer, archive_files, build_archive

from .support import wait_until

BASIC = Path(__file__).parent / "bundles" / "basic"


def set_revision(bundle: Path, revision: str) -> None:
    toml = bundle / "bundle.toml"
    toml.write_text(toml.read_text().replace('revision = "1"', f'revision = "{revision}"'))


class Recorder:
    """apply and rejected for a source: what was applied (bundle revisions) and refused."""

    def __init__(self, public_key: Path | None) -> None:
        self.verify = Verifier.from_file(public_key) if public_key else None
        self.applied: list[str] = []
        self.rejected: list[tuple[Path, Exception]] = []

    def load(self, path: Path) -> Bundle:
        return load_bundle(path, verify=self.verify)

    def apply(self, bundle: Bundle) -> None:
        self.applied.append(bundle.revision)

    def reject(self, path: Path, exc: Exception) -> None:
        self.rejected.append((path, exc))

    def codes(self) -> list[str]:
        out: list[str] = []
        for _, e in self.rejected:
            out += [d.code for d in e.diagnostics] if isinstance(e, BundleError) else [str(e)]
        return out


@pytest.fixture
def server(tmp_path: Path) -> Iterator[BundleServer]:
    (tmp_path / "served").mkdir()
    s = BundleServer(tmp_path / "served")
    yield s
    s.stop()


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    (tmp_path / "keys").mkdir()
    return key_pair(tmp_path / "keys", "bundle")


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    dest = tmp_path / "bundle"
    shutil.copytree(BASIC, dest)
    return dest


@pytest.fixture
def sources() -> Iterator[Callable[..., HttpBundleSource[Bundle]]]:
    made: list[HttpBundleSource[Bundle]] = []

    def make(url: str, cache: Path, rec: Recorder, **kw: float) -> HttpBundleSource[Bundle]:
        src = HttpBundleSource(
            url, cache, load=rec.load, apply=rec.apply, rejected=rec.reject, **kw
        )
        made.append(src)
        return src

    yield make
    for src in made:
        src.stop()


def test_a_signed_bundle_loads_is_persisted_and_an_unchanged_one_is_a_304(
    tmp_path: Path,
    server: BundleServer,
    keys: tuple[Path, Path],
    bundle: Path,
    sources: Callable[..., HttpBundleSource[Bundle]],
) -> None:
    private, public = keys
    server.publish("b.tar.gz", build_archive(bundle, tmp_path / "b.tar.gz", private))
    rec = Recorder(public)
    src = sources(server.url("b.tar.gz"), tmp_path / "cache", rec)
    assert src.reload_now()
    revision = load_bundle(bundle).revision
    assert rec.applied == [revision]
    current = tmp_path / "cache" / CURRENT
    assert current.is_symlink()
    assert load_bundle(current, verify=rec.verify).revision == revision
    assert src.reload_now()
    assert server.answers == [200, 304]
    assert rec.applied == [revision]  # nothing reloaded for a 304
    assert rec.rejected == []


def test_a_tampered_bundle_is_refused_once_and_the_last_good_one_stays_persisted(
    tmp_path: Path,
    server: BundleServer,
    keys: tuple[Path, Path],
    bundle: Path,
    sources: Callable[..., HttpBundleSource[Bundle]],
) -> None:
    private, public = keys
    good = build_archive(bundle, tmp_path / "b.tar.gz", private)
    server.publish("b.tar.gz", good)
    rec = Recorder(public)
    src = sources(server.url("b.tar.gz"), tmp_path / "cache", rec)
    assert src.reload_now()
    persisted = (tmp_path / "cache" / CURRENT).resolve()

    # The signed archive with one policy line changed: its files no longer match the signed list.
    files = archive_files(good)
    files["policy.pdp"] = files["policy.pdp"].replace(b"editor", b"editor2", 1)
    server.publish("b.tar.gz", pack(files))
    assert src.reload_now()  # still serving: the last good bundle
    assert rec.codes() == ["manifest_file_changed"]
    assert (tmp_path / "cache" / CURRENT).resolve() == persisted
    assert len(rec.applied) == 1
    # Polled again, the same refused archive is not reported again.
    assert src.reload_now()
    assert rec.codes() == ["manifest_file_changed"]

    # Signed by a key the sidecar does not trust; then not signed at all.
    other_private, _ = key_pair(tmp_path / "keys", "other")
    set_revision(bundle, "2")
    server.publish("b.tar.gz", build_archive(bundle, tmp_path / "b.tar.gz", other_private))
    src.reload_now()
    server.publish("b.tar.gz", build_archive(bundle, tmp_path / "b.tar.gz", None))
    src.reload_now()
    assert rec.codes() == ["manifest_file_changed", "signature_invalid", "signature_missing"]
    assert len(rec.applied) == 1
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == sorted(
        [CURRENT, persisted.name]
    )

    # Signed by the trusted key: it loads and replaces the persisted copy.
    server.publish("b.tar.gz", build_archive(bundle, tmp_path / "b.tar.gz", private))
    assert src.reload_now()
    assert rec.applied[-1] == load_bundle(bundle).revision
    assert not persisted.exists()


def test_a_failing_or_vanished_server_unloads_nothing_and_a_cold_start_uses_the_persisted_copy(
    tmp_path: Path,
    server: BundleServer,
    keys: tuple[Path, Path],
    bundle: Path,
    sources: Callable[..., HttpBundleSource[Bundle]],
) -> None:
    private, public = keys
    server.publish("b.tar.gz", build_archive(bundle, tmp_path / "b.tar.gz", private))
    url = server.url("b.tar.gz")
    rec = Recorder(public)
    src = sources(url, tmp_path / "cache", rec, timeout_seconds=2.0)
    assert src.reload_now()

    server.failing = True
    assert src.reload_now()
    assert src.reload_now()
    assert [type(e) for _, e in rec.rejected] == [BundleFetchError]  # once per outage
    assert "HTTP 503" in str(rec.rejected[0][1])
    server.failing = False
    assert src.reload_now()
    assert server.answers[-1] == 304

    server.stop()
    assert src.reload_now()  # connection refused: still serving
    assert len(rec.applied) == 1

    # A new process on the same data directory, the server still gone.
    cold = Recorder(public)
    assert sources(url, tmp_path / "cache", cold, timeout_seconds=2.0).reload_now()
    assert cold.applied == [load_bundle(bundle).revision]
    assert [type(e) for _, e in cold.rejected] == [BundleFetchError]


def test_a_cold_start_asks_with_the_persisted_etag_and_refuses_a_persisted_copy_it_cannot_verify(
    tmp_path: Path,
    server: BundleServer,
    keys: tuple[Path, Path],
    bundle: Path,
    sources: Callable[..., HttpBundleSource[Bundle]],
) -> None:
    private, public = keys
    server.publish("b.tar.gz", build_archive(bundle, tmp_path / "b.tar.gz", private))
    url = server.url("b.tar.gz")
    assert sources(url, tmp_path / "cache", Recorder(public)).reload_now()
    assert sources(url, tmp_path / "cache", Recorder(public)).reload_now()
    assert server.answers == [200, 304]  # the restart loaded its copy and asked If-None-Match

    # Restarted with another verify key: the persisted copy is refused, and the server is asked
    # without an ETag (its bundle is refused too, under that key).
    _, other_public = key_pair(tmp_path / "keys", "other")
    rec = Recorder(other_public)
    assert not sources(url, tmp_path / "cache", rec).reload_now()
    assert server.answers[-1] == 200
    assert rec.codes() == ["signature_invalid"]  # the same archive: reported once
    assert rec.applied == []


def test_the_poller_picks_up_a_new_bundle(
    tmp_path: Path,
    server: BundleServer,
    keys: tuple[Path, Path],
    bundle: Path,
    sources: Callable[..., HttpBundleSource[Bundle]],
) -> None:
    private, public = keys
    server.publish("b.tar.gz", build_archive(bundle, tmp_path / "b.tar.gz", private))
    rec = Recorder(public)
    src = sources(server.url("b.tar.gz"), tmp_path / "cache", rec, poll_seconds=0.05)
    assert src.reload_now()
    src.start()
    set_revision(bundle, "2")
    server.publish("b.tar.gz", build_archive(bundle, tmp_path / "b.tar.gz", private))
    wait_until(lambda: len(rec.applied) == 2, "the new bundle")
    assert rec.applied[-1].startswith("2+")


def test_a_bundle_url_setting_polls_and_warns_when_unsigned(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    s = settings(None, {"bundle": "https://user:pw@bundles.test/b.tar.gz?sig=x"}, environ={})
    cfg = config_from(s | {"data_dir": str(tmp_path)})
    assert cfg.bundle_url == "https://user:pw@bundles.test/b.tar.gz?sig=x"
    assert cfg.bundle == tmp_path / "bundles"
    assert cfg.bundle_poll_seconds == Config.__dataclass_fields__["bundle_poll_seconds"].default
    assert config_from(s | {"bundle": "some/dir"}).bundle_url == ""

    class NoService:
        apply_bundle = reject_bundle = None

    with caplog.at_level(logging.WARNING):
        src = bundle_source(cfg, load_bundle, NoService())  # type: ignore[arg-type]
    src.stop()
    assert isinstance(src, HttpBundleSource)
    assert "INSECURE" in caplog.text and "unsigned" in caplog.text
    assert "pw" not in caplog.text and "sig=" not in caplog.text
    assert redacted(cfg.bundle_url) == "https://bundles.test/b.tar.gz"


# ---- hostile archives: refused before anything is written


def _tar(*members: tuple[tarfile.TarInfo, bytes]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return raw.getvalue()


def _member(
    name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"x", link: str = ""
) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name).replace(linkname=link)
    info.type = kind
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    return info, data


@pytest.mark.parametrize(
    ("archive", "message"),
    [
        (_tar(_member("/etc/pdp")), "absolute names"),
        (_tar(_member("../escape.pdp")), "`..`"),
        (_tar(_member("policies/../../escape.pdp")), "`..`"),
        (_tar(_member("link", tarfile.SYMTYPE, link="/etc/passwd")), "links"),
        (_tar(_member("a"), _member("hard", tarfile.LNKTYPE, link="a")), "links"),
        (_tar(_member("dev", tarfile.CHRTYPE)), "only regular files"),
        (_tar(_member("fifo", tarfile.FIFOTYPE)), "only regular files"),
        (b"\x1f\x8b not really gzip", "not a readable gzip"),
        (b"plain garbage" * 100, "not a readable tar"),
    ],
)
def test_a_hostile_archive_is_refused_and_nothing_is_written(
    tmp_path: Path, archive: bytes, message: str
) -> None:
    with pytest.raises(BundleError) as err:
        unpack(archive, tmp_path / "out", origin="http://bundles.test/b.tar.gz")
    assert err.value.diagnostics[0].code == "archive_invalid"
    assert message in err.value.diagnostics[0].message
    assert not (tmp_path / "out").exists()
    assert not (tmp_path.parent / "escape.pdp").exists()


def test_tar_bombs_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bundle_archive, "MAX_FILES", 3)
    with pytest.raises(BundleError, match="more than 3 entries"):
        unpack(pack({f"f{i}": b"x" for i in range(4)}), tmp_path / "many")
    monkeypatch.setattr(bundle_archive, "MAX_UNPACKED_BYTES", 1 << 20)
    # 64 MiB of zeros gzip to ~64 KiB: inflated only up to the cap, then refused
    with pytest.raises(BundleError, match="inflates to more than"):
        unpack(pack({"zeros": bytes(64 << 20)}), tmp_path / "bomb")
    monkeypatch.setattr(bundle_archive, "MAX_ARCHIVE_BYTES", 100)
    with pytest.raises(BundleError, match="larger than 100 bytes"):
        unpack(os.urandom(200), tmp_path / "big")
    assert list(tmp_path.iterdir()) == []


def test_an_archive_round_trips_through_build_and_unpack(
    tmp_path: Path, keys: tuple[Path, Path], bundle: Path
) -> None:
    private, public = keys
    data = build_archive(bundle, tmp_path / "b.tar.gz", private)
    assert sorted(archive_files(data)) == [
        ".manifest.json",
        ".signatures.json",
        "bundle.toml",
        "policy.pdp",
        "tuples.jsonl",
    ]
    unpack(data, tmp_path / "out")
    verified = load_bundle(tmp_path / "out", verify=Verifier.from_file(public))
    assert verified.revision == load_bundle(bundle).revision


def test_a_cold_start_removes_old_leftovers_but_not_a_download_in_progress(
    tmp_path: Path,
    server: BundleServer,
    keys: tuple[Path, Path],
    bundle: Path,
    sources: Callable[..., HttpBundleSource[Bundle]],
) -> None:
    private, public = keys
    server.publish("b.tar.gz", build_archive(bundle, tmp_path / "b.tar.gz", private))
    cache = tmp_path / "cache"
    (cache / "b-crashed").mkdir(parents=True)
    os.utime(cache / "b-crashed", (1, 1))
    (cache / "b-another-process-downloading").mkdir()
    assert sources(server.url("b.tar.gz"), cache, Recorder(public)).reload_now()
    names = {p.name for p in cache.iterdir()}
    assert "b-crashed" not in names
    assert "b-another-process-downloading" in names
