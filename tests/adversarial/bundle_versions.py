"""The versions of the example bundle the reload and bundle-server attacks serve, and the probes
that tell them apart: the request every version denies (and a cut-off policy would allow) and the
one every version allows."""

from __future__ import annotations

import os
from pathlib import Path

from pdp._proto.pdp.v1 import pdp_pb2
from pdp.model import Entity

from .serve import Served

# A viewer reading a secret document without clearance: the rule `needs_clearance` (the last rule
# of rules.pdp) forbids it in every version of the policy; with rules.pdp empty, or cut before that
# rule, the viewer role alone would allow it.
EVE = Entity("user", "eve", {"tenant": "acme", "roles": frozenset({"viewer"})})
SECRET = Entity("document", "plans", {"tenant": "acme", "owner": "alice", "classification": 3})
# An ordinary request every version allows: shows a bundle is serving.
ALICE = Entity("user", "alice", {"tenant": "acme", "roles": frozenset({"viewer"})})
SPEC = Entity("document", "spec-1", {"tenant": "acme", "owner": "alice", "classification": 0})
LAST_RULE = "// Classified documents need clearance"


def set_revision(bundle: Path, revision: str) -> None:
    toml = bundle / "bundle.toml"
    text = toml.read_text().replace('revision = "1"', f'revision = "{revision}"')
    assert f'revision = "{revision}"' in text
    replace_file(toml, text)


def replace_file(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def allowed(served: Served, subject: Entity, resource: Entity, action: str = "read") -> bool:
    return served.check(subject, action, resource).decision == pdp_pb2.EFFECT_ALLOW
