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


def _own_docstring(obj: object) -> str:
    """A docstring written for `obj`, not the signature a dataclass generates in its place."""
    doc = obj.__dict__.get("__doc__") if isinstance(obj, type) else obj.__doc__
    name = getattr(obj, "__name__", "")
    return "" if not doc or doc.startswith(f"{name}(") else doc


def test_every_exported_name_has_a_docstring() -> None:
    for module in (pdp, policy_lang):
        missing = [n for n in module.__all__ if not _own_docstring(getattr(module, n))]
        assert missing == [], module.__name__


def test_policy_lang_exports() -> None:
    assert sorted(policy_lang.__all__) == ["Diagnostic", "Loc", "PolicyError", "parse"]
