"""pdp: the authorization engine and its sidecar.

In process: `load_bundle(path)` → `Engine().load(bundle)` → `engine.check(Request(...))` → Decision.
"""

from pdp.bundle import Bundle, BundleError, bundle_from_text, load_bundle
from pdp.bundle.tuple_schema import InvalidTuple
from pdp.engine import Engine
from pdp.model import Decision, Effect, Entity, Reason, RelationTuple, Request, TraceStep

__all__ = [
    "Bundle",
    "BundleError",
    "Decision",
    "Effect",
    "Engine",
    "Entity",
    "InvalidTuple",
    "Reason",
    "RelationTuple",
    "Request",
    "TraceStep",
    "bundle_from_text",
    "load_bundle",
]
