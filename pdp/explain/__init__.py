"""Explain mode: why a decision came out as it did.

Owns the reference interpreter (`reference`: the specification the compiled engine is tested
against) and the trace it records (`trace`). It imports the engine, never the reverse: the hot
path never loads it. It may import `pdp.engine`, `pdp.bundle`, `pdp.model` and `policy_lang`.
"""

from pdp.explain.trace import explain

__all__ = ["explain"]
