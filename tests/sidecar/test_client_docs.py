"""docs/client.md stays true: every Python block in it runs, in order, in one namespace, against a
real sidecar serving tests/sidecar/bundles/basic; the first block's settings are replaced with
this server's address and tokens minted by it."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

from pdp.sidecar.app import App

from .support import mint

DOC = Path(__file__).parents[2] / "docs" / "client.md"
SETTINGS = ("TARGET", "ADMIN_TOKEN", "USER_TOKEN")


def blocks() -> list[tuple[int, str]]:
    """Each ```python block and the line it starts on."""
    text = DOC.read_text()
    return [
        (text.count("\n", 0, m.start()) + 2, m.group(1))
        for m in re.finditer(r"^```python\n(.*?)^```$", text, re.S | re.M)
    ]


def test_the_first_block_is_the_settings_and_nothing_else() -> None:
    _, first = blocks()[0]
    assigned = [node.targets[0].id for node in ast.parse(first).body]  # type: ignore[attr-defined]
    assert tuple(assigned) == SETTINGS


def test_every_example_runs_against_a_real_sidecar(app: App, admin_token: str) -> None:
    (_, settings), *examples = blocks()
    assert len(examples) >= 10, "the examples were not found"
    namespace: dict[str, Any] = {"__name__": "client_md"}
    exec(compile(settings, f"{DOC}:settings", "exec"), namespace)
    namespace.update(
        TARGET=app.grpc_target,
        ADMIN_TOKEN=admin_token,
        USER_TOKEN=mint(app, subject="bob", tenant="acme"),
    )
    for line, code in examples:
        # the file name carries the line, so a failing example's traceback points into the doc
        exec(compile(code, f"{DOC}:{line}", "exec"), namespace)
