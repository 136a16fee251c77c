"""The pdp policy language: parse text into a syntax tree, check it, format it. Pure: no I/O."""

from policy_lang.diagnostics import Diagnostic, Loc, PolicyError
from policy_lang.parser import parse

__all__ = ["Diagnostic", "Loc", "PolicyError", "parse"]
