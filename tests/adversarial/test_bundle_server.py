"""A bundle server under attack, against real `pdp serve` processes polling it.

A real HTTP server on 127.0.0.1 (ETag, 304) serves archives made by `pdp bundle build -o` and signed
by a real key: a new signed bundle loads; a tampered one (the forbid cut off, the signature kept) is
refused while the last good one serves; then the server goes away: nothing unloads, and a sidecar
started cold on the same data directory serves the persisted copy.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pdp._proto.pdp.v1 import pdp_pb2
from pdp.bundle import load_bundle
from pdp.bundle.archive import pack
from tests.bundle_keys import key_pair
from tests.bundle_server import BundleServer, archive_files, build_archive

from .bundle_versions import ALICE, EVE, LAST_RULE, SECRET, SPEC
from .bundle_versions import allowed as _allowed
from .bundle_versions import set_revision as _set_revision
from .serve import Served, ServeFactory, operator_token, wait_for


@pytest.fixture
def server(tmp_path: Path) -> Iterator[BundleServer]:
    (tmp_path / "served").mkdir()
    s = BundleServer(tmp_path / "served")
    yield s
    s.stop()  # a test that stopped it already: a second stop is harmless


def _start(pdp_serve: ServeFactory, url: str, data_dir: Path, args: list[str]) -> Served:
    # The harness names the bundle by path; a later `--bundle` replaces it (argparse keeps the last).
    unused = pdp_serve.root / "no-bundle-directory"
    return pdp_serve.start(
        unused, data_dir=data_dir, args=["--bundle", url, "--bundle-poll-seconds", "0.1", *args]
    )


def _refused_with(served: Served, token: str, text: str) -> Callable[[], bool]:
    since = time.time() - 1

    def check() -> bool:
        st = served.status(token)
        return (
            st.HasField("last_rejected")
            and st.last_rejected.rejected_at.ToSeconds() >= since
            and any(text in e for e in st.last_rejected.errors)
        )

    return check


def test_new_signed_bundle_tampered_bundle_then_no_server_and_a_cold_start(
    pdp_serve: ServeFactory, saas_bundle: Path, tmp_path: Path, server: BundleServer
) -> None:
    private, public = key_pair(tmp_path, "signer")
    archive = tmp_path / "saas.tar.gz"
    server.publish("saas.tar.gz", build_archive(saas_bundle, archive, private))
    url = server.url("saas.tar.gz")
    data_dir = tmp_path / "data"
    served = _start(pdp_serve, url, data_dir, ["--bundle-verify-key", str(public)])
    token = operator_token(pdp_serve, served)
    first = load_bundle(saas_bundle).revision
    assert served.status(token).revision == first  # loaded before the server said it serves
    assert _allowed(served, ALICE, SPEC)
    assert not _allowed(served, EVE, SECRET)
    assert "INSECURE" not in served.log_text()
    wait_for(lambda: 304 in server.answers)  # polled: the unchanged bundle is not sent again

    # A new signed bundle: polled in.
    _set_revision(saas_bundle, "2")
    signed = build_archive(saas_bundle, archive, private)
    second = load_bundle(saas_bundle).revision
    server.publish("saas.tar.gz", signed)
    wait_for(lambda: served.status(token).revision == second)

    # Tampered: the forbid cut off, the signed manifest kept. Refused; the last good one serves.
    files = archive_files(signed)
    rules = files["policies/rules.pdp"].decode()
    files["policies/rules.pdp"] = rules.split(LAST_RULE)[0].encode()
    tampered = _refused_with(served, token, "manifest_file_changed")
    server.publish("saas.tar.gz", pack(files))
    wait_for(tampered)
    assert served.status(token).revision == second
    assert not _allowed(served, EVE, SECRET)

    # The server goes away: nothing unloads.
    # An outage is reported once, maybe while stop() is still returning: look from before it.
    gone = _refused_with(served, token, "BundleFetchError")
    server.stop()
    wait_for(gone)
    st = served.status(token)
    assert (st.serving, st.revision) == (True, second)
    assert _allowed(served, ALICE, SPEC)
    assert not _allowed(served, EVE, SECRET)
    assert served.stop() == 0

    # A cold start on the same data directory, the server still gone: the persisted copy serves.
    cold = _start(pdp_serve, url, data_dir, ["--bundle-verify-key", str(public)])
    token = operator_token(pdp_serve, cold)
    st = cold.status(token)
    assert (st.serving, st.revision) == (True, second)
    assert any("BundleFetchError" in e for e in st.last_rejected.errors)
    assert _allowed(cold, ALICE, SPEC)
    assert not _allowed(cold, EVE, SECRET)

    # A sidecar with nothing persisted and no server: serves nothing, denies with no_bundle.
    empty = _start(pdp_serve, url, tmp_path / "empty-data", ["--bundle-verify-key", str(public)])
    resp = empty.check(ALICE, "read", SPEC)
    assert (resp.decision, resp.reason) == (pdp_pb2.EFFECT_DENY, pdp_pb2.REASON_NO_BUNDLE)


def test_a_bundle_url_without_a_verify_key_is_logged_loudly(
    pdp_serve: ServeFactory, saas_bundle: Path, tmp_path: Path, server: BundleServer
) -> None:
    server.publish("saas.tar.gz", build_archive(saas_bundle, tmp_path / "saas.tar.gz", None))
    served = _start(pdp_serve, server.url("saas.tar.gz"), tmp_path / "data", [])
    assert _allowed(served, ALICE, SPEC)
    assert "INSECURE" in served.log_text() and "unsigned" in served.log_text()
