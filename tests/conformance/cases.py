"""Loads the data-driven conformance corpus (the *.toml files beside this module).

Each `[[case]]` is a policy, tuples and checks with the expected decision; each `[[error]]` or
`[[warning]]` is a policy with the diagnostics it must produce. The same corpus runs through the
engine in process (tests/engine/test_conformance.py) and through a real gRPC server (sidecar tests).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pdp.bundle import Settings, bundle_from_text
from pdp.model import Entity, Request
from pdp.policy_tests import to_attrs

HERE = Path(__file__).parent


@dataclass(frozen=True)
class Check:
    case: str
    request: Request
    expect: str
    reason: str | None
    rules: tuple[str, ...] | None
    not_found: bool | None

    @property
    def id(self) -> str:
        r = self.request
        return f"{self.case}: {r.subject} {r.action} {r.resource}"


@dataclass(frozen=True)
class Case:
    name: str
    policy: str
    tuples: tuple[str, ...]
    settings: Settings
    checks: tuple[Check, ...] = field(default=())

    def bundle(self):  # type: ignore[no-untyped-def]
        return bundle_from_text(
            self.policy, list(self.tuples), name=self.name, settings=self.settings
        )


def _entity(ref: str, attrs: dict[str, Any]) -> Entity:
    t, _, i = ref.partition(":")
    return Entity(t, i, to_attrs(attrs, ref))


def load_cases() -> list[Case]:
    out = []
    for path in sorted(HERE.glob("*.toml")):
        doc = tomllib.loads(path.read_text())
        for raw in doc.get("case", []):
            defaults = raw.get("defaults", {})
            checks = []
            for c in [*raw.get("checks", []), *raw.get("check", [])]:
                c = {**defaults, **c}
                request = Request(
                    _entity(c["subject"], c.get("subject_attrs", {})),
                    c["action"],
                    _entity(c["resource"], c.get("resource_attrs", {})),
                    to_attrs(c.get("context", {}), "context"),
                )
                checks.append(
                    Check(
                        raw["name"],
                        request,
                        c["expect"],
                        c.get("reason"),
                        tuple(c["rules"]) if "rules" in c else None,
                        c.get("not_found"),
                    )
                )
            settings = Settings(
                max_depth=raw.get("max_depth"),
                fail_open=frozenset(tuple(x.split(":")) for x in raw.get("fail_open", [])),  # type: ignore[misc]
            )
            out.append(
                Case(
                    raw["name"],
                    raw["policy"],
                    tuple(raw.get("tuples", [])),
                    settings,
                    tuple(checks),
                )
            )
    return out


def load_diagnostic_cases() -> list[tuple[str, str, str, list[str]]]:
    """(name, policy, severity, ["code@line:col", ...])"""
    out = []
    for path in sorted(HERE.glob("*.toml")):
        doc = tomllib.loads(path.read_text())
        for raw in doc.get("error", []):
            out.append((raw["name"], raw["policy"], "error", raw["errors"]))
        for raw in doc.get("warning", []):
            out.append((raw["name"], raw["policy"], "warning", raw["warnings"]))
    return out
