"""Request builders shared by the sidecar tests."""

from __future__ import annotations

from typing import Any

from pdp._proto.pdp.v1 import pdp_pb2
from pdp.client import check_request
from pdp.model import Entity, RelationTuple

ALICE = Entity("user", "alice", {"tenant": "acme", "role": "editor"})
MALLORY = Entity("user", "mallory", {"tenant": "evil", "role": "editor"})


def doc(doc_id: str = "d1", **attrs: Any) -> Entity:
    return Entity("document", doc_id, {"tenant": "acme", **attrs})


def req(
    subject: Entity = ALICE, action: str = "read", resource: Entity | None = None, **kw: Any
) -> pdp_pb2.CheckRequest:
    return check_request(subject, action, resource or doc(), **kw)


def tuple_pb(text: str) -> pdp_pb2.RelationTuple:
    t = RelationTuple.parse(text)
    return pdp_pb2.RelationTuple(
        object_type=t.object_type,
        object_id=t.object_id,
        relation=t.relation,
        subject_type=t.subject_type,
        subject_id=t.subject_id,
        subject_relation=t.subject_relation,
    )
