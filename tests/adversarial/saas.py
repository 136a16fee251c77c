"""The example bundle's entities and the edits the attacks make to it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pdp.model import Entity


def user(uid: str, tenant: str = "acme", **attrs: Any) -> Entity:
    return Entity("user", uid, {"tenant": tenant, "roles": frozenset(), **attrs})


def document(doc_id: str, tenant: str = "acme", owner: str = "alice", **attrs: Any) -> Entity:
    return Entity(
        "document", doc_id, {"tenant": tenant, "owner": owner, "classification": 0, **attrs}
    )


def write_atomically(path: Path, text: str) -> None:
    """Write `text` to a temporary sibling and rename it over `path`: never seen half-written."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


REVIEWER_RELATION = "  relation blocked: user\n"
REVIEWER_RULE = (
    "\npermit reviewer_read: read on document\n  when subject has reviewer on resource\n"
)


def with_reviewer(bundle: Path, present: bool) -> None:
    """Give the `document` type a `reviewer` relation and a rule that lets reviewers read, or
    take both away again (a schema change that orphans every stored reviewer tuple)."""
    schema = bundle / "policies" / "schema.pdp"
    rules = bundle / "policies" / "rules.pdp"
    base_schema = schema.read_text().replace(
        REVIEWER_RELATION + "  relation reviewer: user\n", REVIEWER_RELATION
    )
    base_rules = rules.read_text().replace(REVIEWER_RULE, "")
    if present:
        write_atomically(
            schema,
            base_schema.replace(
                REVIEWER_RELATION, REVIEWER_RELATION + "  relation reviewer: user\n"
            ),
        )
        write_atomically(rules, base_rules + REVIEWER_RULE)
    else:
        write_atomically(rules, base_rules)
        write_atomically(schema, base_schema)
