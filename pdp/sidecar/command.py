"""`pdp serve`: run the sidecar. Settings come from a TOML file, then `PDP_*` environment
variables, then flags; a later source wins (every setting and its default: pdp.sidecar.config).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pdp.errors import Refused, Unavailable
from pdp.sidecar import config, logs
from pdp.tokens import settings as token_settings

if TYPE_CHECKING:
    from pdp.sidecar.supervisor import Slot

# The sidecar's own options, then the token package's (defined once, in pdp.tokens.settings).
OPTIONS = [*config.OPTIONS, *token_settings.OPTIONS]


def add_command(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "serve",
        help="run the authorization sidecar (gRPC Check on localhost)",
        description=__doc__,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    for key, typ, default, help_ in OPTIONS:
        flag = "--" + key.replace("_", "-")
        env = "PDP_" + key.upper()
        # default=None so that a flag left out does not shadow the file or environment
        p.add_argument(
            flag,
            type=typ,
            default=None,
            metavar=key.upper(),
            help=f"{help_} [env {env}; default {default!r}]",
        )
    p.add_argument(
        "--config",
        type=Path,
        default=None,
        metavar="FILE",
        help="TOML file of the settings above (keys like `http_listen`) [env PDP_CONFIG]",
    )
    for key, help_ in config.SWITCHES:
        p.add_argument(
            "--" + key.replace("_", "-"),
            action="store_true",
            default=None,
            help=f"{help_} [env PDP_{key.upper()}]",
        )
    p.set_defaults(handler=run)


def settings(args: argparse.Namespace, environ: dict[str, str] | None = None) -> dict[str, Any]:
    """The merged settings of a parsed `pdp serve` command line (pdp.sidecar.config.settings)."""
    try:
        return config.settings(args.config, vars(args), environ, OPTIONS)
    except config.UnknownSetting as exc:
        raise SystemExit(f"pdp serve: {exc}") from exc


def run(args: argparse.Namespace) -> int:
    s = settings(args)
    try:
        logs.configure(s["log_level"], s["log_format"])
    except ValueError as exc:  # an unknown level or format
        print(f"pdp serve: {exc}", file=sys.stderr)
        return 2
    if s["bundle"] is None:
        print("pdp serve: --bundle (or PDP_BUNDLE) is required", file=sys.stderr)
        return 2
    if s["processes"] < 1:
        print("pdp serve: --processes must be at least 1", file=sys.stderr)
        return 2
    if s["processes"] > 1:
        from pdp.sidecar import supervisor  # the parent of N servers serves nothing itself

        return supervisor.supervise(s)
    return serve(s)


def serve(s: dict[str, Any], slot: Slot | None = None) -> int:
    """One server of merged settings `s`, until SIGTERM or SIGINT; `slot`: which of the processes
    of `--processes N` this is (pdp.sidecar.supervisor), None for a sidecar alone."""
    if slot is not None:
        logs.configure(s["log_level"], s["log_format"])
    from pdp.sidecar import app  # deferred: `pdp --help` needs no gRPC

    try:
        sidecar = app.App(config.config_from(s, token_settings.token_config(s)), slot=slot)
    except Refused as exc:  # e.g. an unusable --bundle-verify-key: say so, no traceback
        print(f"pdp serve: {exc}", file=sys.stderr)
        return 2
    except (
        Unavailable,
        ValueError,
    ) as exc:  # a data dir or port in use, a setting that cannot work
        print(f"pdp serve: {exc}", file=sys.stderr)
        return 1

    def ready(a: app.App) -> None:
        # one machine-readable line: scripts and tests learn the ports from it
        host = a.cfg.http_listen.rpartition(":")[0]
        http = f" http={host}:{a.http_port}" if a.http_port else ""
        print(f"pdp: serving grpc={a.grpc_target}{http}", flush=True)

    try:
        sidecar.run_until_signal(ready)
    except Unavailable as exc:  # one of N processes binds at start: its port was taken meanwhile
        print(f"pdp serve: {exc}", file=sys.stderr)
        return 1
    if slot is None:  # a child's parent says it for them all, and may be gone already
        print("pdp: stopped", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m pdp.sidecar.command ...`: the serve command alone, without the authoring ones."""
    parser = argparse.ArgumentParser(prog="pdp")
    add_command(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["serve", *(sys.argv[1:] if argv is None else argv)])
    code: int = args.handler(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
