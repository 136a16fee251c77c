"""The exception tree: every exception pdp raises on purpose is a PdpError under one category, and
the category, not the leaf, decides what a caller sees (`pdp.sidecar.grpc.status.to_status` maps
categories to gRPC codes; the CLIs map them to exit codes).

PdpError
 ├── InvalidRequest (ValueError)       the caller's input is malformed: INVALID_ARGUMENT
 │    ├── pdp.model.TupleSyntaxError         a tuple string that does not parse
 │    ├── pdp.bundle.tuple_schema.InvalidTuple  a tuple the schema does not allow
 │    ├── pdp.engine.slicing.ReadOutsideSlice  a tuple read a sliced sidecar cannot answer whole
 │    ├── pdp.engine.plan.PlanUnsupported    a condition PlanResources cannot turn into a filter
 │    ├── pdp.sidecar.envoy_routes.MalformedPath  a path Envoy describes breaks the id rules: 400
 │    └── pdp.sidecar.grpc.status.RequestInvalid  a request field, named
 ├── Unauthenticated (PermissionError) no credential, or one we cannot accept: UNAUTHENTICATED
 │    ├── pdp.sidecar.grpc.status.Unauthenticated
 │    └── pdp.tokens.errors.InvalidToken     (also a TokenError)
 ├── PermissionDenied (PermissionError) a known caller without the right: PERMISSION_DENIED
 │    ├── pdp.tenancy.TenantDenied
 │    └── pdp.sidecar.grpc.status.ScopeRequired
 ├── Overloaded (RuntimeError)          a bounded resource is full: RESOURCE_EXHAUSTED
 │    └── pdp.sidecar.audit.TooManySubscribers
 ├── Refused (ValueError)               a file or configuration we will not load; the last good
 │    │                                 one stays (bundles) or the process does not start
 │    ├── pdp.bundle.BundleError             every problem at file:line:col
 │    ├── pdp.bundle.manifest.ManifestError
 │    ├── pdp.bundle_signing.SignatureError
 │    ├── pdp.authoring.policy_tests.TestFileError
 │    ├── pdp.sidecar.envoy_routes.RoutesError  an --envoy-routes file, file and route named
 │    └── pdp.tokens.errors.KeyConfigError   (also a TokenError)
 ├── Unavailable (OSError)              the environment cannot serve now: retry or fix the host
 │    ├── pdp.bundle.files.BundleReadError
 │    ├── pdp.bundle.files.BundleUnstable    (a file still being written; a BundleReadError)
 │    ├── pdp.sidecar.store.StoreUnavailable  (a write is refused: UNAVAILABLE)
 │    ├── pdp.sidecar.bundle_source.BundleFetchError  (the last good bundle stays)
 │    ├── pdp.tokens.errors.TokenStoreUnavailable  (also a TokenError; HTTP 503)
 │    ├── pdp.sidecar.app.CannotListen
 │    └── pdp.sidecar.supervisor.PortTaken   (--processes N: a listen address is busy)
 └── EvaluationError                    one evaluation failed: never leaves Engine.check, which
      ├── pdp.engine.compiler.AttributeTypeError (TypeError)   turns it into a DENY whose reason
      ├── pdp.engine.decider.RoleBindingError                  says so (fail closed)
      ├── pdp.engine.slicing.OutsideSlice
      └── pdp.engine.rebac.DepthLimitExceeded

Anything else that escapes is a bug: the sidecar answers INTERNAL without echoing it, the engine a
DENY. `policy_lang.PolicyError` stays outside the tree because the language package imports no
runtime; `pdp.bundle.BundleError` carries its diagnostics. `pdp.tokens.errors.OAuthError` is an
answer of the token endpoint (an RFC 6749 code and an HTTP status), not a category.

This module imports nothing: every layer may raise its categories.
"""

from __future__ import annotations


class PdpError(Exception):
    """Base of every exception pdp raises on purpose."""


class InvalidRequest(PdpError, ValueError):
    """The caller's input is malformed or over a limit; the message names what."""


class Unauthenticated(PdpError, PermissionError):
    """No credential, or one this server cannot accept. Never a decision."""


class PermissionDenied(PdpError, PermissionError):
    """A known caller that may not do this (scope, tenant)."""


class Overloaded(PdpError, RuntimeError):
    """A bounded resource is full; the caller may retry later."""


class Refused(PdpError, ValueError):
    """A file or configuration that will not be loaded, with every reason."""


class Unavailable(PdpError, OSError):
    """The environment cannot serve now (files in flux, a port or a directory in use)."""


class EvaluationError(PdpError):
    """One evaluation failed; the engine turns it into a DENY saying so, never an exception."""
