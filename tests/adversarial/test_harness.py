"""The harness itself: a real `pdp serve` starts, answers, issues tokens, and stops cleanly."""

from __future__ import annotations

from pathlib import Path

from pdp._proto.pdp.v1 import pdp_pb2
from pdp.model import Entity

from .serve import ServeFactory


def test_a_real_server_answers_and_stops(pdp_serve: ServeFactory, saas_bundle: Path) -> None:
    served = pdp_serve.start(saas_bundle)
    alice = Entity("user", "alice", {"tenant": "acme", "roles": frozenset({"viewer"})})
    doc = Entity("document", "spec-1", {"tenant": "acme", "owner": "alice", "classification": 0})
    assert served.check(alice, "read", doc).decision == pdp_pb2.EFFECT_ALLOW
    token = served.token(*pdp_serve.client(scopes=("admin",)))
    assert served.status(token).serving
    assert served.stop() == 0
