"""Errors as data: every problem the language finds is a Diagnostic at a file:line:col.

Exceptions: PolicyError(ValueError) carries every diagnostic of a failed parse or check.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any


@dataclass(frozen=True, slots=True, order=True)
class Loc:
    """Where in a policy file: 1-based line and column (`end_col` 0 when unknown)."""

    file: str
    line: int
    col: int
    end_col: int = field(default=0, compare=False)
    end_line: int = field(default=0, compare=False)

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


NO_LOC = Loc("<unknown>", 0, 0)


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One problem found in a policy: a stable code, a message and where it is."""

    code: str  # stable, e.g. "syntax_error", "unknown_type"
    message: str  # lowercase, user input in backticks
    loc: Loc
    severity: str = "error"  # "error" or "warning"
    hint: str = ""
    line_text: str = ""  # the offending source line, filled in by with_sources()

    @property
    def is_error(self) -> bool:
        return self.severity == "error"

    def format(self) -> str:
        out = f"{self.loc}: {self.severity}[{self.code}]: {self.message}"
        if self.line_text:
            width = max(1, self.loc.end_col - self.loc.col) if self.loc.end_col else 1
            out += f"\n    {self.line_text}\n    {' ' * (self.loc.col - 1)}{'^' * width}"
        if self.hint:
            out += f"\n    hint: {self.hint}"
        return out

    def to_json(self) -> dict[str, Any]:
        """The fields `format` prints, for tools (`pdp validate --json`)."""
        return {
            "file": self.loc.file,
            "line": self.loc.line,
            "col": self.loc.col,
            "end_line": self.loc.end_line or self.loc.line,
            "end_col": self.loc.end_col,
            "severity": self.severity,
            "code": self.code,
            "message": self.message,
            "hint": self.hint,
        }


def with_sources(diags: Iterable[Diagnostic], sources: Mapping[str, str]) -> list[Diagnostic]:
    """Attach the source line to each diagnostic and sort them by location."""
    lines = {name: text.splitlines() for name, text in sources.items()}
    out = []
    for d in diags:
        file_lines = lines.get(d.loc.file, [])
        if 0 < d.loc.line <= len(file_lines):
            d = replace(d, line_text=file_lines[d.loc.line - 1].rstrip())
        out.append(d)
    return sorted(out, key=lambda d: (d.loc.file, d.loc.line, d.loc.col, d.code))


class PolicyError(ValueError):
    """A policy did not parse or check; `.diagnostics` holds every problem found.

    From the parser, `.partial` is what did parse (the items around the errors, for a checker
    that reports the rest of a file's errors too) and `.lost` the names the text that did not
    parse declares (`type`, `role`; `context` for a context block): the checker would only call
    them unknown."""

    def __init__(
        self,
        diagnostics: list[Diagnostic],
        partial: Any = None,
        lost: frozenset[str] = frozenset(),
    ) -> None:
        self.diagnostics = diagnostics
        self.partial = partial
        self.lost = lost
        super().__init__("\n".join(d.format() for d in diagnostics))
