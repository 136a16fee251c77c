"""`pdp lsp`: a language server over stdio for `.pdp` files: diagnostics on open and on every
change (those of `pdp validate`, unsaved text included), formatting, go-to-definition and hover for
types, relations, permissions and roles (the server itself: `pdp.authoring.lsp_server`).

pygls is imported when the server starts, not when `pdp` starts: every other command skips it.
"""

from __future__ import annotations

import argparse
from typing import Any


def add_commands(sub: Any) -> None:
    p = sub.add_parser(
        "lsp", help="a language server over stdio: diagnostics, formatting, definitions, hover"
    )
    p.add_argument("--stdio", action="store_true", help="talk over stdin/stdout (the default)")
    p.set_defaults(handler=cmd_lsp)


def cmd_lsp(args: argparse.Namespace) -> int:
    from pdp.authoring.lsp_server import create_server

    create_server().start_io()
    return 0
