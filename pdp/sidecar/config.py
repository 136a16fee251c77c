"""Every setting of the sidecar and its default, in one place.

`Config` is what the composition root (pdp.sidecar.app) is built from; `AuditSettings` and `Limits`
are its audit and request-size parts. `pdp serve` reads the same settings from a TOML file, then
`PDP_*` environment variables, then flags, a later source winning (`settings`), and turns them into
a Config (`config_from`). Each option's default is read from the dataclass field it sets, so a
default is written once. The token options are the token package's (pdp.tokens.settings): the
serve command (pdp.sidecar.command) adds them, so that this module, imported by the audit hub and
the wire, never loads JOSE.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pdp.bundle.files import QUIET_SECONDS
from pdp.identifiers import is_id, is_name

if TYPE_CHECKING:  # the token package imports jwt; what imports this module must not
    from pdp.tokens.runtime import TokenConfig


@dataclass(frozen=True, slots=True)
class AuditSettings:
    allow_sample_rate: float = 1.0  # denies are always logged; allows with this probability
    mask: frozenset[str] = frozenset()  # `name` anywhere, or `subject.name`/`resource.name`/...
    metadata: frozenset[str] = frozenset({"x-request-id", "traceparent"})
    subscriber_capacity: int = 10_000
    max_subscribers: int = 16
    queue_capacity: int = 100_000  # events emitted but not yet dispatched; beyond: dropped
    dispatch_interval: float = 0.005  # seconds between dispatcher passes while anyone listens


@dataclass(frozen=True, slots=True)
class Limits:
    """The most a request may carry; past these it is INVALID_ARGUMENT naming the field."""

    max_batch: int = 1000
    max_attributes: int = 64  # per attribute map
    max_list_items: int = 256
    max_string: int = 1024  # characters in a type, id, action or attribute string
    max_tuples_per_write: int = 1000
    max_page_size: int = 1000
    max_message_bytes: int = 4 << 20  # enforced by gRPC itself: RESOURCE_EXHAUSTED


DEFAULT_LIMITS = Limits()
DEFAULT_AUDIT = AuditSettings()


@dataclass(frozen=True, slots=True)
class Config:
    # The bundle directory, watched; with `bundle_url`, where the downloaded bundles are kept
    # (DATA_DIR/bundles from the command line), the last good one surviving a restart.
    bundle: Path
    listen: str = "127.0.0.1:50051"  # or `unix:/path/to.sock`
    http_listen: str = ""  # HOST:PORT for /metrics, /healthz and the token endpoint; "" = off
    data_dir: Path | None = Path("data")  # None: written tuples live in memory only
    # Where durable tuple state lives: "" = DATA_DIR/tuples.db (SQLite), `sqlite:///PATH`, or
    # `postgresql://...`, the fleet's store. Every sidecar on one store follows its changelog.
    store: str = ""
    # How long a check demanding a tuple revision this sidecar has not applied yet waits for it
    # (a write at another sidecar of the fleet a moment ago) before it denies STALE_TUPLES.
    consistency_wait: float = 0.05
    # The tuples this sidecar holds, when the fleet's graph would not fit in one process
    # (pdp.engine.slicing): object types, tenants; empty = all. Checks outside it are denied.
    slice_types: frozenset[str] = frozenset()
    slice_tenants: frozenset[str] = frozenset()
    watch: bool = True
    workers: int = 16
    # Server processes on the one port (pdp.sidecar.supervisor): each loads the bundle and follows
    # the store itself, so a write at one is seen at the others as at any sidecar of a fleet.
    processes: int = 1
    grace_seconds: float = 10.0
    cache_ttl: float | None = None  # None: the bundle's setting
    cache_size: int = 100_000
    audit_file: Path | None = None
    audit_max_bytes: int = 64 << 20
    audit_backups: int = 5
    audit: AuditSettings = field(default_factory=AuditSettings)
    limits: Limits = field(default_factory=Limits)
    # None: no token endpoint, no `subject_token`, and admin RPCs refused (see insecure_admin)
    tokens: TokenConfig | None = None
    # Admin RPCs without any credential. For local development only; logged loudly at start.
    insecure_admin: bool = False
    # "trusted": Check takes the subject (and its attributes and roles) as the calling service
    # sends it, or a subject_token. "token-only": only a verified subject_token is a subject.
    subjects: str = "trusted"
    # At start, set aside stored tuples the bundle's schema no longer accepts (reported, never
    # applied again) instead of refusing the bundle. An operator's explicit choice.
    quarantine_orphans: bool = False
    # A public key (PEM, ES256 or EdDSA): only bundles whose file list it signed are loaded.
    bundle_verify_key: Path | None = None
    # A bundle is loaded once two reads this far apart agree (pdp.bundle.files.read_stable).
    bundle_quiet_seconds: float = QUIET_SECONDS
    # An http(s):// URL of a bundle archive (`pdp bundle build -o`), polled instead of a directory.
    bundle_url: str = ""
    # How often the bundle URL is asked for a newer archive (If-None-Match: an unchanged one is 304).
    bundle_poll_seconds: float = 10.0
    # The Envoy ext_authz route mapping (docs/envoy.md); None: Envoy's Authorization service is
    # not served, and an Envoy pointed here is answered UNIMPLEMENTED, which it denies.
    envoy_routes: Path | None = None


def _default(cls: type, name: str) -> Any:
    """The default a dataclass field declares: options take theirs from here, never a copy."""
    return {f.name: f.default for f in dataclasses.fields(cls)}[name]


Option = tuple[str, type, Any, str]

# (key, type, default, help). The key is the flag (`--http-listen`), the env var (`PDP_HTTP_LISTEN`)
# and the TOML key (`http_listen`).
OPTIONS: list[Option] = [
    (
        "bundle",
        str,
        None,
        "bundle directory to serve and watch for changes, or an http(s):// URL of a bundle "
        "archive to poll (`pdp bundle build -o`; the last good one is kept under DATA_DIR/bundles) "
        "(required)",
    ),
    (
        "bundle_poll_seconds",
        float,
        _default(Config, "bundle_poll_seconds"),
        "with a bundle URL: seconds between polls (If-None-Match: an unchanged bundle is not sent)",
    ),
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
        _default(Config, "listen"),
        "gRPC address: HOST:PORT (port 0 picks a free one) or unix:/path/to.sock",
    ),
    (
        "http_listen",
        str,
        _default(Config, "http_listen"),
        "HOST:PORT for the HTTP side (/metrics, /healthz, and the token endpoint when token keys "
        "are set); empty = off",
    ),
    (
        "data_dir",
        Path,
        _default(Config, "data_dir"),
        "directory for durable state (tuples.db, SQLite in WAL mode)",
    ),
    (
        "store",
        str,
        _default(Config, "store"),
        "durable tuple state: `sqlite:///PATH` or `postgresql://USER@HOST:PORT/DB` (a fleet "
        "shares one); empty = DATA_DIR/tuples.db",
    ),
    (
        "consistency_wait",
        float,
        _default(Config, "consistency_wait"),
        "seconds a check carrying a newer min_tuple_revision waits for it to arrive before it "
        "denies with STALE_TUPLES",
    ),
    (
        "slice_types",
        str,
        "",
        "comma-separated object types: hold only their tuples and answer only checks on them "
        "(OUTSIDE_SLICE otherwise); empty = every type",
    ),
    (
        "slice_tenants",
        str,
        "",
        "comma-separated tenants: hold only tuples of objects whose id is `TENANT/...` for one "
        "of them, or has no tenant; empty = every tenant",
    ),
    ("workers", int, _default(Config, "workers"), "gRPC worker threads"),
    (
        "processes",
        int,
        _default(Config, "processes"),
        "server processes sharing the gRPC and HTTP ports (more cores): each loads the bundle and "
        "follows the store; /metrics and the audit stream are per process (docs/sidecar.md)",
    ),
    (
        "grace_seconds",
        float,
        _default(Config, "grace_seconds"),
        "on SIGTERM, how long in-flight calls get to finish",
    ),
    (
        "cache_ttl",
        float,
        _default(Config, "cache_ttl"),
        "decision cache TTL in seconds (default: the bundle's setting)",
    ),
    (
        "audit_file",
        Path,
        _default(Config, "audit_file"),
        "append audit events as JSON lines to this file (rotated by size)",
    ),
    (
        "audit_max_bytes",
        int,
        _default(Config, "audit_max_bytes"),
        "rotate the audit file beyond this size",
    ),
    (
        "audit_sample_allows",
        float,
        _default(AuditSettings, "allow_sample_rate"),
        "fraction of ALLOW decisions to audit, 0..1 (DENY decisions are always audited)",
    ),
    (
        "audit_mask",
        str,
        ",".join(sorted(_default(AuditSettings, "mask"))),
        "comma-separated attribute names to mask in audit events (`ssn` or `subject.email`)",
    ),
    ("max_batch", int, _default(Limits, "max_batch"), "most items in one BatchCheck"),
    (
        "envoy_routes",
        Path,
        None,
        "TOML file mapping the HTTP requests Envoy's ext_authz filter sends to checks "
        "(docs/envoy.md); serves envoy.service.auth.v3.Authorization on the gRPC port; unset = "
        "not served",
    ),
    (
        "subjects",
        str,
        _default(Config, "subjects"),
        "`trusted`: Check takes the subject and its attributes as the calling service sends them "
        "(or a subject_token); `token-only`: only a verified subject_token is a subject, for "
        "callers that are not trusted",
    ),
    ("log_level", str, "INFO", "DEBUG, INFO, WARNING or ERROR"),
    (
        "log_format",
        str,
        "text",
        "`text` (a line for a person) or `json` (one object per line: time, level, logger, "
        "message and the record's fields, for a log collector)",
    ),
]
# On/off switches, all off by default: `--no-watch` on the command line, `PDP_NO_WATCH=1`,
# `no_watch = true`.
SWITCHES: list[tuple[str, str]] = [
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


class UnknownSetting(ValueError):
    """A config file names a setting that does not exist (a typo must not be ignored)."""


def settings(
    config_file: Path | None,
    flags: Mapping[str, Any],
    environ: Mapping[str, str] | None = None,
    options: list[Option] = OPTIONS,
) -> dict[str, Any]:
    """Merge defaults < config file (`PDP_CONFIG` when none is given) < environment < flags
    (`flags` holds None for a flag left out), over `options` and the switches."""
    env = os.environ if environ is None else environ
    merged: dict[str, Any] = {key: default for key, _, default, _ in options}
    merged |= {key: False for key, _ in SWITCHES}
    types = {key: typ for key, typ, _, _ in options} | {key: _bool for key, _ in SWITCHES}
    config_file = config_file or (Path(env["PDP_CONFIG"]) if env.get("PDP_CONFIG") else None)
    if config_file is not None:
        with config_file.open("rb") as f:
            for key, value in tomllib.load(f).items():
                if key not in types:
                    raise UnknownSetting(f"unknown setting `{key}` in {config_file}")
                merged[key] = types[key](value)
    for key, typ in types.items():
        raw = env.get("PDP_" + key.upper())
        if raw is not None:
            merged[key] = typ(raw)
    for key in types:
        value = flags.get(key)
        if value is not None:
            merged[key] = value
    return merged


def _bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in {"1", "true", "yes", "on"}


def _listed(raw: str, key: str, valid: Callable[[str], bool]) -> frozenset[str]:
    items = [item.strip() for item in str(raw).split(",") if item.strip()]
    for item in items:
        if not valid(item):
            raise ValueError(f"{key}: `{item}` is not a valid name")
    return frozenset(items)


def _is_tenant(value: str) -> bool:
    """A tenant is the part of an id before its `/`: an id without one."""
    return is_id(value) and "/" not in value


def config_from(s: Mapping[str, Any], tokens: TokenConfig | None = None) -> Config:
    """The Config of merged settings (`settings`) and the token configuration they made;
    `bundle` must be set."""
    url = s["bundle"] if str(s["bundle"]).lower().startswith(("http://", "https://")) else ""
    return Config(
        bundle=Path(s["data_dir"]) / "bundles" if url else Path(s["bundle"]),
        listen=s["listen"],
        http_listen=s["http_listen"],
        data_dir=Path(s["data_dir"]),
        store=s["store"],
        consistency_wait=s["consistency_wait"],
        slice_types=_listed(s["slice_types"], "slice_types", is_name),
        slice_tenants=_listed(s["slice_tenants"], "slice_tenants", _is_tenant),
        watch=not s["no_watch"],
        workers=s["workers"],
        processes=s["processes"],
        grace_seconds=s["grace_seconds"],
        cache_ttl=s["cache_ttl"],
        audit_file=Path(s["audit_file"]) if s["audit_file"] else None,
        audit_max_bytes=s["audit_max_bytes"],
        audit=AuditSettings(
            allow_sample_rate=s["audit_sample_allows"],
            mask=frozenset(m.strip() for m in s["audit_mask"].split(",") if m.strip()),
        ),
        limits=Limits(max_batch=s["max_batch"]),
        tokens=tokens,
        insecure_admin=s["insecure_admin"],
        subjects=s["subjects"],
        quarantine_orphans=s["quarantine_orphans"],
        bundle_verify_key=Path(s["bundle_verify_key"]) if s["bundle_verify_key"] else None,
        bundle_url=url,
        bundle_poll_seconds=s["bundle_poll_seconds"],
        envoy_routes=Path(s["envoy_routes"]) if s["envoy_routes"] else None,
    )
