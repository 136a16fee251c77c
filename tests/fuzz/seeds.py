"""Seed corpora for the fuzz targets, made from the example bundle and the conformance corpus."""

from __future__ import annotations

import hashlib
import tomllib
from pathlib import Path

from pdp.client import check_request
from pdp.model import Entity
from tests.fuzz.targets import LAYOUT, SAAS

CONFORMANCE = Path(__file__).parents[1] / "conformance"

# Valid at the language's limits and just past them, so mutation starts near the edges.
EDGES = [
    "type user { attributes { n: int } }\ntype doc { actions read }\n"
    "permit p: read on doc when " + " or ".join(["subject.n == 1"] * 40) + "\n",
    "type user { attributes { n: int } }\ntype doc { actions read }\n"
    "permit p: read on doc when " + "not " * 49 + "true\n",
    "type user { attributes { n: int } }\ntype doc { actions read }\n"
    "permit p: read on doc when subject.n < 9007199254740992\n",
    "type user {}\ntype doc { actions read relation a: user relation b: user\n"
    "  permission v = a + (b & (a - (b + a->x)))\n}\n",
]


def policy_seeds() -> list[bytes]:
    out = [p.read_bytes() for p in sorted((SAAS / "policies").glob("*.pdp"))]
    out.append(b"".join(p.read_bytes() for p in sorted((SAAS / "policies").glob("*.pdp"))))
    for file in sorted(CONFORMANCE.glob("*.toml")):
        data = tomllib.loads(file.read_text(encoding="utf-8"))
        for section in ("case", "error", "warning"):
            out.extend(c["policy"].encode() for c in data.get(section, []) if "policy" in c)
    out.extend(e.encode() for e in EDGES)
    return out


def bundle_seeds() -> list[bytes]:
    out = []
    for i, name in enumerate(LAYOUT):
        path = SAAS / name
        if path.exists():
            out.append(bytes([i]) + path.read_bytes())
    return out


def request_seeds() -> list[bytes]:
    alice = Entity("user", "alice", {"tenant": "acme", "roles": frozenset({"viewer"})})
    erin = Entity("user", "erin", {"tenant": "acme", "roles": frozenset(), "clearance": 2})
    doc = Entity("document", "spec-1", {"tenant": "acme", "owner": "alice", "classification": 0})
    folder = Entity("folder", "root", {"tenant": "acme"})
    reqs = [
        check_request(alice, "read", doc),
        check_request(erin, "update", doc, {"hour": 10}),
        check_request(alice, "approve", doc, {"hour": 12}),
        check_request(erin, "write", folder),
        check_request(Entity("user", "x"), "delete", Entity("document", "d")),
    ]
    return [r.SerializeToString() for r in reqs]


SEEDS = {"policy": policy_seeds, "bundle": bundle_seeds, "request": request_seeds}


def write_corpus(target: str, directory: Path) -> int:
    directory.mkdir(parents=True, exist_ok=True)
    seeds = SEEDS[target]()
    for seed in seeds:
        (directory / hashlib.sha1(seed).hexdigest()).write_bytes(seed)
    return len(seeds)
