"""pdp: the authorization engine and its sidecar.

In process: `load_bundle(path)` → `Engine().load(bundle)` → `engine.check(Request(...))` → Decision;
`pdp.explain.explain(engine, request)` adds the trace of why.

The packages, each importing only those below it (an import-linter `layers` contract; the map with
what each owns is docs/architecture.md):
    cli → client | authoring → sidecar → bundle_signing → tokens → explain → engine
        → bundle → tenancy → model → identifiers → errors
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
