"""Hot reload of a bundle directory under attack, against a real `pdp serve`.

A file rewritten in place is never loaded half written; the reloader follows a directory that
appears late, is swapped by rename or symlink, or is deleted and recreated; with a manifest (and a
verify key) a bundle that is not exactly what was built and signed is refused while the last good
one serves.
"""

from __future__ import annotations

import os
import random
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

from pdp._proto.pdp.v1 import pdp_pb2
from pdp.bundle import load_bundle
from pdp.cli import main as pdp_main
from pdp.engine import Engine
from pdp.model import Request
from tests.bundle_keys import key_pair

from .bundle_versions import ALICE, EVE, LAST_RULE, SECRET, SPEC
from .bundle_versions import allowed as _allowed
from .bundle_versions import replace_file as _replace
from .bundle_versions import set_revision as _set_revision
from .serve import Served, ServeFactory, wait_for


def main_build(bundle: Path, sign_key: Path | None) -> int:
    """`pdp bundle build BUNDLE [--sign-key KEY]`, in process."""
    return pdp_main(
        ["bundle", "build", str(bundle), *(["--sign-key", str(sign_key)] if sign_key else [])]
    )


def _revision_of(bundle: Path) -> str:
    """The revision the server reports once it serves what `bundle` holds now."""
    return load_bundle(bundle).revision


def _serving_revision(served: Served, token: str) -> Callable[[], str]:
    return lambda: served.status(token).revision


def _admin(pdp_serve: ServeFactory, served: Served) -> str:
    return served.token(*pdp_serve.client(scopes=("admin",)))


def test_the_attack_request_is_denied_by_every_version_but_allowed_by_a_cut_file(
    saas_bundle: Path,
) -> None:
    """The premise: the full policy denies the probe, the cut-off policy would allow it."""
    engine = Engine(cache_ttl=0)
    engine.load(load_bundle(saas_bundle))
    assert not engine.check(Request(EVE, "read", SECRET)).allowed
    rules = saas_bundle / "policies" / "rules.pdp"
    rules.write_text(rules.read_text().split(LAST_RULE)[0])
    engine.load(load_bundle(saas_bundle))
    assert engine.check(Request(EVE, "read", SECRET)).allowed


def test_in_place_rewrites_with_a_pause_never_serve_a_half_written_file(
    pdp_serve: ServeFactory, saas_bundle: Path
) -> None:
    served = pdp_serve.start(saas_bundle)
    token = _admin(pdp_serve, served)
    rules = saas_bundle / "policies" / "rules.pdp"
    full = rules.read_text()
    head, tail = full.split(LAST_RULE)
    tail = LAST_RULE + tail
    stop = threading.Event()
    allows: list[str] = []
    checks = [0]
    errors: list[BaseException] = []

    def writer() -> None:
        rng = random.Random(7)
        version = 0
        try:
            while not stop.is_set():
                version += 1
                text = f"// version {version}\n{head}"
                # Truncate, pause, write (as editors and `>` redirections do); half the time the
                # pause falls after a first chunk that is itself a valid policy without the forbid.
                with open(rules, "w") as f:
                    if rng.random() < 0.5:
                        f.write(text)
                        f.flush()
                        time.sleep(rng.uniform(0.02, 0.12))
                        f.write(tail)
                    else:
                        f.flush()
                        time.sleep(rng.uniform(0.02, 0.12))
                        f.write(text + tail)
                time.sleep(rng.uniform(0.0, 0.15))
        except BaseException as exc:
            errors.append(exc)

    def checker() -> None:
        try:
            while not stop.is_set():
                resp = served.check(EVE, "read", SECRET)
                checks[0] += 1
                if resp.decision == pdp_pb2.EFFECT_ALLOW:
                    allows.append(resp.bundle_revision)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer), threading.Thread(target=checker)]
    for t in threads:
        t.start()
    time.sleep(3.0)  # the attack's duration, not a wait for a condition
    stop.set()
    for t in threads:
        t.join(10)
    assert not errors
    assert checks[0] > 100
    assert allows == [], f"{len(allows)} wrong ALLOWs out of {checks[0]}"
    # Once the writer stops, its last (complete) version loads: the reloader was live throughout.
    final = _revision_of(saas_bundle)
    wait_for(lambda: _serving_revision(served, token)() == final, timeout=15)
    assert not _allowed(served, EVE, SECRET)


def test_a_directory_swapped_by_rename_is_followed(
    pdp_serve: ServeFactory, saas_bundle: Path, tmp_path: Path
) -> None:
    served = pdp_serve.start(saas_bundle)
    token = _admin(pdp_serve, served)
    new = tmp_path / "bundle.new"
    shutil.copytree(saas_bundle, new)
    _set_revision(new, "2")
    os.rename(saas_bundle, tmp_path / "bundle.old")
    os.rename(new, saas_bundle)
    wait_for(lambda: _serving_revision(served, token)().startswith("2+"))
    shutil.rmtree(tmp_path / "bundle.old")  # the inode a stale watch would be on is gone
    # Edits of the new directory load, the second one as well as the first.
    for old, new_revision in (("2", "3"), ("3", "4")):
        _bump(saas_bundle, old, new_revision)
        wait_for(lambda r=new_revision: _serving_revision(served, token)().startswith(r + "+"))
    assert _allowed(served, ALICE, SPEC)
    assert not _allowed(served, EVE, SECRET)


def _bump(bundle: Path, old: str, new: str) -> None:
    toml = bundle / "bundle.toml"
    _replace(toml, toml.read_text().replace(f'revision = "{old}"', f'revision = "{new}"'))


def test_a_symlink_swap_is_followed(
    pdp_serve: ServeFactory, saas_bundle: Path, tmp_path: Path
) -> None:
    v1, v2 = tmp_path / "v1", tmp_path / "v2"
    os.rename(saas_bundle, v1)
    shutil.copytree(v1, v2)
    _set_revision(v2, "2")
    current = tmp_path / "current"
    current.symlink_to(v1)
    served = pdp_serve.start(current)
    token = _admin(pdp_serve, served)
    assert _serving_revision(served, token)().startswith("1+")
    link = tmp_path / "current.tmp"
    link.symlink_to(v2)
    os.replace(link, current)  # the atomic swap a deploy tool makes
    wait_for(lambda: _serving_revision(served, token)().startswith("2+"))
    shutil.rmtree(v1)
    for old, new in (("2", "3"), ("3", "4")):
        _bump(v2, old, new)
        wait_for(lambda r=new: _serving_revision(served, token)().startswith(r + "+"))


def test_a_directory_that_appears_after_start_is_loaded(
    pdp_serve: ServeFactory, saas_bundle: Path, tmp_path: Path
) -> None:
    later = tmp_path / "later"
    served = pdp_serve.start(later)
    token = _admin(pdp_serve, served)
    resp = served.check(ALICE, "read", SPEC)
    assert resp.decision == pdp_pb2.EFFECT_DENY
    assert resp.reason == pdp_pb2.REASON_NO_BUNDLE
    assert not served.status(token).serving
    shutil.copytree(saas_bundle, later)
    wait_for(lambda: served.status(token).serving)
    assert _allowed(served, ALICE, SPEC)
    for old, new in (("1", "2"), ("2", "3")):  # and it is watched from then on
        _bump(later, old, new)
        wait_for(lambda r=new: _serving_revision(served, token)().startswith(r + "+"))


def test_a_deleted_and_recreated_directory_is_followed(
    pdp_serve: ServeFactory, saas_bundle: Path, tmp_path: Path
) -> None:
    served = pdp_serve.start(saas_bundle)
    token = _admin(pdp_serve, served)
    staged = tmp_path / "staged"
    shutil.copytree(saas_bundle, staged)
    _set_revision(staged, "2")
    shutil.rmtree(saas_bundle)
    # While it is gone the last good bundle serves, and the loss is reported.
    wait_for(lambda: served.status(token).HasField("last_rejected"))
    assert served.status(token).revision.startswith("1+")
    assert _allowed(served, ALICE, SPEC)
    shutil.copytree(staged, saas_bundle)  # often the very inode number the old one had
    wait_for(lambda: _serving_revision(served, token)().startswith("2+"))
    for old, new in (("2", "3"), ("3", "4")):
        _bump(saas_bundle, old, new)
        wait_for(lambda r=new: _serving_revision(served, token)().startswith(r + "+"))


def test_refused_edits_keep_the_last_good_bundle_and_watching_goes_on(
    pdp_serve: ServeFactory, saas_bundle: Path
) -> None:
    served = pdp_serve.start(saas_bundle)
    token = _admin(pdp_serve, served)
    good = served.status(token).revision

    def rejected_with(text: str) -> pdp_pb2.BundleStatusResponse | None:
        st = served.status(token)
        hit = st.HasField("last_rejected") and any(text in e for e in st.last_rejected.errors)
        return st if hit else None

    # A policy file truncated and left so (longer than any quiet period): refused, not loaded.
    rules = saas_bundle / "policies" / "rules.pdp"
    kept = rules.read_text()
    rules.write_text("")
    assert wait_for(lambda: rejected_with("empty_policy_file")).revision == good
    assert not _allowed(served, EVE, SECRET)
    _replace(rules, kept)
    # bundle.toml with `settings` a string: a diagnostic and a rejection, never a dead reloader.
    toml = saas_bundle / "bundle.toml"
    _replace(toml, 'name = "saas"\nrevision = "2"\nsettings = "x"\n')
    assert wait_for(lambda: rejected_with("`settings` must be a table")).revision == good
    _replace(toml, 'name = "saas"\nrevision = "3"\n')
    # the new revision and the cleared rejection are two reads of status: poll for both
    wait_for(
        lambda: (
            (st := served.status(token)).revision.startswith("3+")
            and not st.HasField("last_rejected")
        )
    )


# -- manifests and signatures ------------------------------------------------------------------


def _last_errors(served: Served, token: str, since: float) -> list[str]:
    st = served.status(token)
    if not st.HasField("last_rejected") or st.last_rejected.rejected_at.ToSeconds() < since:
        return []
    return list(st.last_rejected.errors)


def test_a_signed_bundle_loads_and_any_tampering_is_refused(
    pdp_serve: ServeFactory, saas_bundle: Path, tmp_path: Path
) -> None:
    # ES256 here; EdDSA signs and verifies the same way (tests/engine/test_bundle_manifest.py).
    private, public = key_pair(tmp_path, "signer")
    other, _ = key_pair(tmp_path, "other")
    assert main_build(saas_bundle, private) == 0
    served = pdp_serve.start(saas_bundle, args=["--bundle-verify-key", str(public)])
    token = _admin(pdp_serve, served)
    good = served.status(token).revision
    assert good.startswith("1+")
    assert not _allowed(served, EVE, SECRET)
    rules = saas_bundle / "policies" / "rules.pdp"
    signed_rules = rules.read_text()

    def refused_with(code: str) -> Callable[[], bool]:
        since = time.time() - 1
        return lambda: any(code in e for e in _last_errors(served, token, since))

    # A changed file (the forbid cut off, atomically renamed in): refused by name.
    _replace(rules, signed_rules.split(LAST_RULE)[0])
    wait_for(refused_with("manifest_file_changed"))
    assert served.status(token).revision == good
    assert not _allowed(served, EVE, SECRET)
    _replace(rules, signed_rules)
    # An extra file, and a missing one.
    (saas_bundle / "policies" / "extra.pdp").write_text("// nothing\n")
    wait_for(refused_with("manifest_file_extra"))
    (saas_bundle / "policies" / "extra.pdp").unlink()
    tuples = saas_bundle / "tuples" / "sharing.jsonl"
    kept = tuples.read_bytes()
    tuples.unlink()
    wait_for(refused_with("manifest_file_missing"))
    tuples.write_bytes(kept)
    # Re-signed by a key the sidecar does not trust; then not signed at all.
    _bump(saas_bundle, "1", "2")
    assert main_build(saas_bundle, other) == 0
    wait_for(refused_with("signature_invalid"))
    assert main_build(saas_bundle, None) == 0
    wait_for(refused_with("signature_missing"))
    assert served.status(token).revision == good
    # Signed again by the trusted key: the new revision loads.
    assert main_build(saas_bundle, private) == 0
    wait_for(lambda: _serving_revision(served, token)().startswith("2+"))
    assert not _allowed(served, EVE, SECRET)


def test_starting_on_an_unsigned_bundle_with_a_verify_key_serves_nothing_until_signed(
    pdp_serve: ServeFactory, saas_bundle: Path, tmp_path: Path
) -> None:
    private, public = key_pair(tmp_path, "signer")
    served = pdp_serve.start(saas_bundle, args=["--bundle-verify-key", str(public)])
    token = _admin(pdp_serve, served)
    st = served.status(token)
    assert not st.serving
    assert any("signature_missing" in e for e in st.last_rejected.errors)
    resp = served.check(ALICE, "read", SPEC)
    assert (resp.decision, resp.reason) == (pdp_pb2.EFFECT_DENY, pdp_pb2.REASON_NO_BUNDLE)
    assert main_build(saas_bundle, private) == 0
    wait_for(lambda: served.status(token).serving)
    assert _allowed(served, ALICE, SPEC)
