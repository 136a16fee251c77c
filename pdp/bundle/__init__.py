"""A policy bundle, read and validated as a whole: the directory's files (`files`: a stable read),
its file manifest and signature hook (`manifest`), the policy parsed and checked, tuple files
validated against the schema (`tuple_schema`), settings from bundle.toml (`loader`).

A Bundle exists only if every check passed; anything wrong is one BundleError listing every
problem at file:line:col. It may import `pdp.model`, `pdp.identifiers`, `pdp.tenancy` and
`policy_lang`; never the engine, the sidecar, the network or JOSE (signatures are verified
through the `manifest.VerifySignatures` callable that `pdp.bundle_signing` provides).
"""

from pdp.bundle.loader import (
    POLICY_SUFFIX,
    Bundle,
    BundleError,
    Settings,
    bundle_from_files,
    bundle_from_text,
    load_bundle,
)

__all__ = [
    "POLICY_SUFFIX",
    "Bundle",
    "BundleError",
    "Settings",
    "bundle_from_files",
    "bundle_from_text",
    "load_bundle",
]
