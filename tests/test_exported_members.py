"""The public surface is pinned: a change to it is a deliberate act, visible in review."""

import pdp
import policy_lang


def test_pdp_exports() -> None:
    assert sorted(pdp.__all__) == [
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
    for name in pdp.__all__:
        assert getattr(pdp, name) is not None


def test_policy_lang_exports() -> None:
    assert sorted(policy_lang.__all__) == ["Diagnostic", "Loc", "PolicyError", "parse"]
