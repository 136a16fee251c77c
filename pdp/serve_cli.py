"""`pdp serve`: run the sidecar. Settings come from a TOML file, then `PDP_*` environment
variables, then flags; a later source wins.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import tomllib
from pathlib import Path
from typing import Any

from pdp.tokens import settings as token_settings

# (key, type, default, help). The key is the flag (`--http-listen`), the env var (`PDP_HTTP_LISTEN`)
# and the TOML key (`http_listen`).
_OPTIONS: list[tuple[str, type, Any, str]] = [
    ("bundle", Path, None, "bundle directory to serve and watch for changes (required)"),
    (
        "bundle_verify_key",
        Path,
        None,
        "public key (PEM, ES256 or EdDSA): load only bundles whose file list it signed "
        "(`pdp bundle build --sign-key`)",
    ),
    (
        "listen",
        str,
        "127.0.0.1:50051",
        "gRPC address: HOST:PORT (port 0 picks a free one) or unix:/path/to.sock",
    ),
    (
        "http_listen",
        str,
        "",
        "HOST:PORT for the HTTP side (/metrics, /healthz, and the token endpoint when token keys "
        "are set); empty = off",
    ),
    ("data_dir", Path, Path("data"), "directory for durable state (tuples.db, SQLite in WAL mode)"),
    ("workers", int, 16, "gRPC worker threads"),
    ("grace_seconds", float, 10.0, "on SIGTERM, how long in-flight calls get to finish"),
    ("cache_ttl", float, None, "decision cache TTL in seconds (default: the bundle's setting)"),
    ("audit_file", Path, None, "append audit events as JSON lines to this file (rotated by size)"),
    ("audit_max_bytes", int, 64 << 20, "rotate the audit file beyond this size"),
    (
        "audit_sample_allows",
        float,
        1.0,
        "fraction of ALLOW decisions to audit, 0..1 (DENY decisions are always audited)",
    ),
    (
        "audit_mask",
        str,
        "",
        "comma-separated attribute names to mask in audit events (`ssn` or `subject.email`)",
    ),
    ("max_batch", int, 1000, "most items in one BatchCheck"),
    (
        "subjects",
        str,
        "trusted",
        "`trusted`: Check takes the subject and its attributes as the calling service sends them "
        "(or a subject_token); `token-only`: only a verified subject_token is a subject, for "
        "callers that are not trusted",
    ),
    ("log_level", str, "INFO", "DEBUG, INFO, WARNING or ERROR"),
    *token_settings.OPTIONS,  # token_key_dir, token_db, ...: defined once, in pdp.tokens
]
# On/off switches: `--no-watch` on the command line, `PDP_NO_WATCH=1`, `no_watch = true`.
_SWITCHES: list[tuple[str, str]] = [
    ("no_watch", "do not reload the bundle when its files change"),
    (
        "dev_keys",
        "development: create a signing key under DATA_DIR/dev-keys if none is given, and serve "
        "tokens with it (issuer defaults to http://HTTP_LISTEN)",
    ),
    (
        "quarantine_orphans",
        "at start, set aside stored tuples the bundle's schema no longer accepts (reported in "
        "BundleStatus, never applied again) instead of refusing the bundle",
    ),
    (
        "insecure_admin",
        "development only: admin RPCs (tuple writes, audit stream) without any credential",
    ),
]


def add_command(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "serve",
        help="run the authorization sidecar (gRPC Check on localhost)",
        description=__doc__,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    for key, typ, default, help_ in _OPTIONS:
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
    for key, help_ in _SWITCHES:
        p.add_argument(
            "--" + key.replace("_", "-"),
            action="store_true",
            default=None,
            help=f"{help_} [env PDP_{key.upper()}]",
        )
    p.set_defaults(handler=run)


def settings(args: argparse.Namespace, environ: dict[str, str] | None = None) -> dict[str, Any]:
    """Merge defaults < config file < environment < flags."""
    env = os.environ if environ is None else environ
    merged: dict[str, Any] = {key: default for key, _, default, _ in _OPTIONS}
    merged |= {key: False for key, _ in _SWITCHES}
    types = {key: typ for key, typ, _, _ in _OPTIONS} | {key: _bool for key, _ in _SWITCHES}
    config_file = args.config or (Path(env["PDP_CONFIG"]) if env.get("PDP_CONFIG") else None)
    if config_file is not None:
        with config_file.open("rb") as f:
            for key, value in tomllib.load(f).items():
                if key not in types:
                    raise SystemExit(f"pdp serve: unknown setting `{key}` in {config_file}")
                merged[key] = types[key](value)
    for key, typ in types.items():
        raw = env.get("PDP_" + key.upper())
        if raw is not None:
            merged[key] = typ(raw)
    for key in types:
        value = getattr(args, key, None)
        if value is not None:
            merged[key] = value
    return merged


def _bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in {"1", "true", "yes", "on"}


def run(args: argparse.Namespace) -> int:
    s = settings(args)
    logging.basicConfig(
        level=s["log_level"].upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if s["bundle"] is None:
        print("pdp serve: --bundle (or PDP_BUNDLE) is required", file=sys.stderr)
        return 2
    from pdp.sidecar import app, audit
    from pdp.sidecar.grpc import wire  # deferred: `pdp --help` needs no gRPC

    cfg = app.Config(
        bundle=Path(s["bundle"]),
        listen=s["listen"],
        http_listen=s["http_listen"],
        data_dir=Path(s["data_dir"]),
        watch=not s["no_watch"],
        workers=s["workers"],
        grace_seconds=s["grace_seconds"],
        cache_ttl=s["cache_ttl"],
        audit_file=Path(s["audit_file"]) if s["audit_file"] else None,
        audit_max_bytes=s["audit_max_bytes"],
        audit=dataclasses.replace(
            audit.AuditSettings(),
            allow_sample_rate=s["audit_sample_allows"],
            mask=frozenset(m.strip() for m in s["audit_mask"].split(",") if m.strip()),
        ),
        limits=dataclasses.replace(wire.Limits(), max_batch=s["max_batch"]),
        tokens=token_settings.token_config(s),
        insecure_admin=s["insecure_admin"],
        subjects=s["subjects"],
        quarantine_orphans=s["quarantine_orphans"],
        bundle_verify_key=Path(s["bundle_verify_key"]) if s["bundle_verify_key"] else None,
    )
    from pdp.sidecar.data_dir import DataDirInUse
    from pdp.tokens import KeyConfigError

    try:
        sidecar = app.App(cfg)
    except KeyConfigError as exc:  # e.g. an unusable --bundle-verify-key: say so, no traceback
        print(f"pdp serve: {exc}", file=sys.stderr)
        return 2
    except (DataDirInUse, ValueError) as exc:  # a data dir in use, a setting that cannot work
        print(f"pdp serve: {exc}", file=sys.stderr)
        return 1
    except app.CannotListen as exc:  # a busy port: one line naming the address, no traceback
        print(f"pdp serve: {exc}", file=sys.stderr)
        return 1

    def ready(a: app.App) -> None:
        # one machine-readable line: scripts and tests learn the ports from it
        host = a.cfg.http_listen.rpartition(":")[0]
        http = f" http={host}:{a.http_port}" if a.http_port else ""
        print(f"pdp: serving grpc={a.grpc_target}{http}", flush=True)

    sidecar.run_until_signal(ready)
    print("pdp: stopped", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m pdp.serve_cli ...`: the serve command alone, without the authoring commands."""
    parser = argparse.ArgumentParser(prog="pdp")
    add_command(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["serve", *(sys.argv[1:] if argv is None else argv)])
    code: int = args.handler(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
