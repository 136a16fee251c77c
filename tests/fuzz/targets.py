"""The fuzz targets: each takes raw bytes and raises only if the code under test misbehaves.

A target lets through the exceptions its area is allowed to raise (a language error, a refused
bundle, an invalid request) and fails on anything else. They are plain functions, so pytest can
replay a crash input without atheris; `tests/fuzz/run.py` drives them under atheris.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from google.protobuf.message import DecodeError

from pdp._proto.pdp.v1 import pdp_pb2
from pdp.bundle import BundleError, bundle_from_text, load_bundle
from pdp.engine import Engine
from pdp.explain.reference import evaluate
from pdp.model import Decision, Entity, Request
from pdp.sidecar import audit
from pdp.sidecar.grpc.servicers import AuthorizerServicer
from pdp.sidecar.grpc.status import RequestInvalid, Unauthenticated
from pdp.sidecar.metrics import Metrics
from pdp.sidecar.service import Service
from policy_lang.checker import check
from policy_lang.diagnostics import PolicyError
from policy_lang.formatter import format_source
from policy_lang.parser import parse

ROOT = Path(__file__).parents[2]
SAAS = ROOT / "bundles" / "saas"

try:  # the loader's file manifest, where the loader has one
    from pdp.bundle.files import MANIFEST_FILE
except ImportError:  # pragma: no cover - an older loader
    MANIFEST_FILE = ""


# ---- (a) policy text: parse, check, and when it checks, compile and decide ----------------------
def policy_text(data: bytes) -> None:
    text = data.decode("utf-8", errors="replace")
    try:
        tree = parse(text, "fuzz.pdp")
    except PolicyError:
        return
    _, diags = check([tree])
    if any(d.is_error for d in diags):
        return
    for d in diags:
        d.format()
    # What the checker accepts formats to a fixed point, compiles, and decides without raising.
    once = format_source(text, "fuzz.pdp")
    assert format_source(once, "fuzz.pdp") == once, "formatting is not idempotent"
    decide_everything(bundle_from_text(text))


def decide_everything(bundle: object) -> None:
    engine = Engine()
    engine.load(bundle)  # type: ignore[arg-type]
    snapshot = engine.snapshot
    assert snapshot is not None
    subject_types = sorted(snapshot.policy.types) or ["user"]
    for (type_name, action), _ in sorted(snapshot.entries.items()):
        for subject_type in subject_types[:2]:
            req = Request(Entity(subject_type, "s"), action, Entity(type_name, "r"))
            decision = engine.check(req)
            assert isinstance(decision, Decision), decision
            outcome = evaluate(snapshot.policy, lambda *_: (), req, snapshot.max_depth)
            assert outcome.effect is decision.effect, (req, outcome, decision)


# ---- (b) the bundle loader: one file of a real bundle replaced by the input ----------------------
LAYOUT = [
    "bundle.toml",
    "policies/rules.pdp",
    "policies/schema.pdp",
    "tuples/sharing.jsonl",
    "tests/saas.test.toml",
]
if MANIFEST_FILE:
    LAYOUT.append(MANIFEST_FILE)

_bundle_dir: Path | None = None


def _scratch_bundle() -> Path:
    global _bundle_dir
    if _bundle_dir is None:
        _bundle_dir = Path(tempfile.mkdtemp(prefix="pdp-fuzz-bundle-")) / "bundle"
        shutil.copytree(SAAS, _bundle_dir)
    return _bundle_dir


def bundle_files(data: bytes) -> None:
    """The first byte picks the file (a manifest, when picked, lists what the bundle holds)."""
    if not data:
        return
    root = _scratch_bundle()
    target = root / LAYOUT[data[0] % len(LAYOUT)]
    original = target.read_bytes() if target.exists() else None
    try:
        target.write_bytes(data[1:])
        try:
            bundle = load_bundle(root)
        except BundleError as exc:
            str(exc)
            return
        decide_everything(bundle)  # what the loader accepts, the engine builds
    finally:
        if original is None:
            target.unlink(missing_ok=True)
        else:
            target.write_bytes(original)


# ---- (c) request conversion: CheckRequest bytes to a Request, then a decision ---------------------
_servicer: AuthorizerServicer | None = None
_engine: Engine | None = None


def _serving() -> tuple[AuthorizerServicer, Engine]:
    global _servicer, _engine
    if _servicer is None or _engine is None:
        _engine = Engine()
        _engine.load(load_bundle(SAAS))
        _servicer = AuthorizerServicer(Service(_engine, audit.AuditHub(), Metrics(), None, None))
    return _servicer, _engine


def check_request(data: bytes) -> None:
    servicer, engine = _serving()
    try:
        msg = pdp_pb2.CheckRequest.FromString(data)
    except DecodeError:
        return
    try:
        req = servicer._request(msg, "")
    except (RequestInvalid, Unauthenticated):
        return
    decision = engine.check(req)
    assert isinstance(decision, Decision), decision


TARGETS: dict[str, Callable[[bytes], None]] = {
    "policy": policy_text,
    "bundle": bundle_files,
    "request": check_request,
}
