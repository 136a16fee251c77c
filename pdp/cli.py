"""The `pdp` command: `serve` for the sidecar; `validate`, `check`, `test`, `fmt` for policy authors,
`playground` (a local web page) and `lsp` (a language server for editors);
`bundle` for manifests and signatures;
`tokens` for clients and signing keys."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pdp", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    from pdp.authoring import cli as authoring_cli

    authoring_cli.add_commands(sub)
    from pdp.authoring import lsp, playground

    playground.add_commands(sub)
    lsp.add_commands(sub)
    from pdp.authoring import bundle_cli

    bundle_cli.add_commands(sub)
    from pdp.tokens import admin_cli

    admin_cli.add_commands(sub)
    from pdp.sidecar import command as serve_command

    serve_command.add_command(sub)
    args = parser.parse_args(argv)
    code: int = args.handler(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
