"""The pdp policy language: parse text into a syntax tree, check it, format it. Pure: no I/O,
and it imports nothing of `pdp` (a contract says so): every consumer builds on it."""

from policy_lang.diagnostics import Diagnostic, Loc, PolicyError
from policy_lang.parser import parse

__all__ = ["Diagnostic", "Loc", "PolicyError", "parse"]
