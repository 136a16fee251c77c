"""The Envoy route mapping: which subject-less check an HTTP request Envoy describes stands for
(action, resource, context), read from a TOML file (`--envoy-routes`, docs/envoy.md), first match
wins, no match none. Pure: no transport, no token; the gRPC edge (pdp.sidecar.grpc.envoy) adds both.

RoutesError (pdp.errors.Refused)      the routes file is unusable: the sidecar does not start
MalformedPath (pdp.errors.InvalidRequest)  the request's path or a bound id breaks the rules: 400
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from pdp.errors import InvalidRequest, Refused
from pdp.identifiers import ID_RULE, is_id, is_name
from pdp.model import EMPTY, Entity, Value

MAX_PATH = 8192  # characters of path (query excluded) before a request is malformed
MAX_HEADER_VALUE = 1024  # characters of a header copied into the context (Limits.max_string)
DEFAULT_REALM = "pdp"
DEFAULT_SUBJECT_HEADER = "x-pdp-subject"
DEFAULT_DECISION_HEADER = "x-pdp-decision-id"

_METHOD = re.compile(r"[A-Z]{1,32}").fullmatch
_HEADER_NAME = re.compile(r"[a-z0-9][a-z0-9!#$%&'*+.^_`|~-]{0,127}").fullmatch
_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]{0,63})\}")
# RFC 3986 pchar (`%` is checked when decoding), and `|`: an id character clients send unencoded.
_RAW_SEGMENT = re.compile(r"[A-Za-z0-9._~!$&'()*+,;=:@%|-]*").fullmatch
# A literal pattern segment: the unreserved characters and the sub-delimiters, never `.`/`..`.
_LITERAL = re.compile(r"[A-Za-z0-9._~!$&'()*+,;=:@-]+").fullmatch
_PERCENT = re.compile(r"%([0-9A-Fa-f]{2})")
_HOST_CHARS = re.compile(r"[a-z0-9.-]{1,253}").fullmatch


class RoutesError(Refused):
    """The routes file cannot be used; the message names the file and the route."""


class MalformedPath(InvalidRequest):
    """The request's path, or an id bound from it, breaks the rules below: answered 400."""


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """What Envoy says about the HTTP request: method, :authority, raw path (query included),
    headers with lowercase names."""

    method: str
    host: str
    path: str
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Template:
    """Text with `{param}` references to path parameters, e.g. `{tenant}/{id}`."""

    parts: tuple[tuple[bool, str], ...]  # (is_param, text)

    @classmethod
    def parse(cls, text: str) -> Template:
        parts: list[tuple[bool, str]] = []
        at = 0
        for m in _PARAM.finditer(text):
            if m.start() > at:
                parts.append((False, text[at : m.start()]))
            parts.append((True, m.group(1)))
            at = m.end()
        if at < len(text):
            parts.append((False, text[at:]))
        rest = "".join(t for is_param, t in parts if not is_param)
        if "{" in rest or "}" in rest:
            raise ValueError(f"`{text}`: a `{{` or `}}` that is not a `{{param}}`")
        return cls(tuple(parts))

    @property
    def params(self) -> frozenset[str]:
        return frozenset(t for is_param, t in self.parts if is_param)

    def render(self, params: Mapping[str, str]) -> str:
        return "".join(params[t] if is_param else t for is_param, t in self.parts)


AttrTemplate = Template | int | bool


@dataclass(frozen=True, slots=True)
class Route:
    """One `[[routes]]` entry: a path pattern (literal segments and whole-segment `{param}`s),
    the methods it answers (method -> action), optional hosts, and how the resource and the
    context are built."""

    pattern: str
    segments: tuple[tuple[bool, str], ...]  # (is_param, literal or parameter name)
    actions: Mapping[str, str]
    hosts: frozenset[str]
    resource_type: str
    resource_id: Template
    resource_attributes: Mapping[str, AttrTemplate]
    context: Mapping[str, AttrTemplate]
    context_headers: Mapping[str, str]  # header name -> context key


@dataclass(frozen=True, slots=True)
class Match:
    """A request's check, less its subject."""

    route: int  # index in the file, for logs and tests
    action: str
    resource: Entity
    context: Mapping[str, Value]


@dataclass(frozen=True, slots=True)
class Routes:
    routes: tuple[Route, ...]
    realm: str = DEFAULT_REALM  # WWW-Authenticate: Bearer realm="..."
    subject_header: str = DEFAULT_SUBJECT_HEADER  # "" = not sent upstream
    decision_header: str = DEFAULT_DECISION_HEADER

    def match(self, request: HttpRequest) -> Match | None:
        """The first route that matches, bound; None if none does (a deny). Raises MalformedPath
        for a path no route may see, or an id bound from it that breaks the id grammar."""
        segments = split_path(request.path)
        host = _host(request.host)
        for index, route in enumerate(self.routes):
            action = route.actions.get(request.method)
            if action is None or (route.hosts and host not in route.hosts):
                continue
            params = _bind(route.segments, segments)
            if params is None:
                continue
            # INVARIANT: a route that matched decides: a bad id is a 400, never the next route
            return _bound(index, route, action, params, request.headers)
        return None


def split_path(raw: str) -> tuple[str, ...]:
    """The decoded segments of a request path (query and fragment dropped). `/` is (),
    `/a/b/` is ("a", "b", ""). Raises MalformedPath for what no route may match:

    - not starting with `/`, over MAX_PATH, a character outside RFC 3986's pchar (`|` aside), a `%` not
      followed by two hex digits, or bytes that are not UTF-8 once decoded;
    - an empty segment other than a trailing one (`//`);
    - a segment that is, or decodes to, `.` or `..`;
    - a segment that decodes to a `/`, `\\`, `%` or a control character: an encoded separator
      would let one segment stand for two, an encoded `%` be decoded twice downstream.
    """
    path = raw.partition("?")[0].partition("#")[0]
    if not path.startswith("/"):
        raise MalformedPath("path: must start with `/`")
    if len(path) > MAX_PATH:
        raise MalformedPath(f"path: longer than {MAX_PATH} characters")
    if path == "/":
        return ()
    raw_segments = path[1:].split("/")
    out: list[str] = []
    last = len(raw_segments) - 1
    for i, seg in enumerate(raw_segments):
        if not seg:
            if i != last:
                raise MalformedPath("path: empty segment (`//`)")
            out.append("")
            continue
        out.append(_decode(seg))
    return tuple(out)


def _decode(seg: str) -> str:
    if not _RAW_SEGMENT(seg):
        raise MalformedPath("path: a character outside RFC 3986's path characters")
    if seg in (".", ".."):
        raise MalformedPath("path: `.` and `..` segments are refused")
    if "%" not in seg:
        return seg
    if seg.count("%") != len(_PERCENT.findall(seg)):
        raise MalformedPath("path: `%` must be followed by two hex digits")
    try:
        text = _PERCENT.sub(lambda m: chr(int(m.group(1), 16)), seg).encode("latin-1")
        decoded = text.decode("utf-8")
    except UnicodeError:
        raise MalformedPath("path: percent-encoded bytes that are not UTF-8") from None
    if decoded in (".", ".."):
        raise MalformedPath("path: `.` and `..` segments are refused, encoded or not")
    if any(c in "/\\%" or ord(c) < 0x20 or ord(c) == 0x7F for c in decoded):
        raise MalformedPath("path: an encoded `/`, `\\`, `%` or control character")
    return decoded


def _host(authority: str) -> str:
    """The host of an :authority, lowercase, port dropped."""
    host = authority.strip().lower()
    if host.startswith("["):
        return host.partition("]")[0] + "]"
    return host.rpartition(":")[0] if host.count(":") == 1 else host


def _bind(
    pattern: tuple[tuple[bool, str], ...], segments: tuple[str, ...]
) -> dict[str, str] | None:
    if len(pattern) != len(segments):
        return None
    params: dict[str, str] = {}
    for (is_param, text), seg in zip(pattern, segments, strict=True):
        if is_param:
            if not seg:
                return None  # a trailing slash is no parameter
            params[text] = seg
        elif text != seg:
            return None
    return params


def _bound(
    index: int, route: Route, action: str, params: dict[str, str], headers: Mapping[str, str]
) -> Match:
    for name, value in params.items():
        if not is_id(value):
            raise MalformedPath(f"path: `{{{name}}}` is not an id: {ID_RULE}")
    resource_id = route.resource_id.render(params)
    if not is_id(resource_id):
        raise MalformedPath(f"path: the resource id is not an id: {ID_RULE}")
    attrs = _values(route.resource_attributes, params)
    context = dict(_values(route.context, params))
    for header, key in route.context_headers.items():
        found = headers.get(header)
        if found is None:
            continue
        if len(found) > MAX_HEADER_VALUE:
            raise MalformedPath(f"header `{header}`: longer than {MAX_HEADER_VALUE} characters")
        context[key] = found
    return Match(
        index,
        action,
        Entity(route.resource_type, resource_id, attrs),
        MappingProxyType(context) if context else EMPTY,
    )


def _values(
    templates: Mapping[str, AttrTemplate], params: Mapping[str, str]
) -> Mapping[str, Value]:
    if not templates:
        return EMPTY
    return MappingProxyType(
        {k: v.render(params) if isinstance(v, Template) else v for k, v in templates.items()}
    )


# ---- the file ------------------------------------------------------------------------------

_TOP = frozenset({"realm", "actions", "upstream_headers", "routes"})
_ROUTE = frozenset(
    {
        "path",
        "methods",
        "actions",
        "hosts",
        "resource_type",
        "resource_id",
        "resource_attributes",
        "context",
        "context_headers",
    }
)


def load_routes(path: Path) -> Routes:
    """Read and check a routes file; RoutesError names what is wrong, and where."""
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise RoutesError(f"{path}: {exc}") from None
    return parse_routes(data, str(path))


def parse_routes(data: Mapping[str, Any], source: str = "<routes>") -> Routes:
    def fail(where: str, problem: str) -> RoutesError:
        return RoutesError(f"{source}: {where}: {problem}")

    unknown = sorted(set(data) - _TOP)
    if unknown:
        raise fail("top level", f"unknown key `{unknown[0]}`")
    realm = data.get("realm", DEFAULT_REALM)
    if not isinstance(realm, str) or not re.fullmatch(r"[A-Za-z0-9 ._-]{1,64}", realm):
        raise fail("realm", "1 to 64 letters, digits, spaces, `.`, `_` or `-`")
    default_actions = _actions(data.get("actions", {}), lambda p: fail("actions", p))
    headers = data.get("upstream_headers", {})
    if not isinstance(headers, dict) or set(headers) - {"subject", "decision_id"}:
        raise fail("upstream_headers", "a table of `subject` and `decision_id` header names")
    subject_header = headers.get("subject", DEFAULT_SUBJECT_HEADER)
    decision_header = headers.get("decision_id", DEFAULT_DECISION_HEADER)
    for name in (subject_header, decision_header):
        if not isinstance(name, str) or (name and not _HEADER_NAME(name)):
            raise fail("upstream_headers", f"`{name}` is not a lowercase header name")
    if subject_header and subject_header == decision_header:
        raise fail("upstream_headers", "the two headers need different names")
    raw_routes = data.get("routes")
    if not isinstance(raw_routes, list) or not raw_routes:
        raise fail("routes", "at least one `[[routes]]` entry is required")
    routes = tuple(
        _route(raw, default_actions, lambda p, i=i: fail(f"routes[{i}]", p))
        for i, raw in enumerate(raw_routes)
    )
    return Routes(routes, realm, subject_header, decision_header)


def _actions(raw: object, fail: Any) -> dict[str, str]:
    if not isinstance(raw, dict):
        raise fail("a table of HTTP method = action")
    for method, action in raw.items():
        if not _METHOD(method):
            raise fail(f"`{method}` is not an HTTP method in capitals")
        if not is_name(action):
            raise fail(f"`{action}` is not an action name")
    return dict(raw)


def _route(raw: object, default_actions: dict[str, str], fail: Any) -> Route:
    if not isinstance(raw, dict):
        raise fail("not a table")
    unknown = sorted(set(raw) - _ROUTE)
    if unknown:
        raise fail(f"unknown key `{unknown[0]}`")
    pattern = raw.get("path")
    if not isinstance(pattern, str):
        raise fail("`path` is required")
    segments = _pattern(pattern, fail)
    params = {text for is_param, text in segments if is_param}
    actions = _route_actions(raw, default_actions, fail)
    hosts = raw.get("hosts", [])
    if not isinstance(hosts, list) or not all(
        isinstance(h, str) and _HOST_CHARS(h.lower()) for h in hosts
    ):
        raise fail("`hosts` is a list of host names (no port)")
    resource_type = raw.get("resource_type")
    if not isinstance(resource_type, str) or not is_name(resource_type):
        raise fail("`resource_type` is required: a type name")
    resource_id = _template(raw.get("resource_id", "{id}"), params, "resource_id", fail)
    if not isinstance(resource_id, Template):
        raise fail("`resource_id` is a string")
    attributes = _templates(raw.get("resource_attributes", {}), params, "resource_attributes", fail)
    context = _templates(raw.get("context", {}), params, "context", fail)
    context_headers = _context_headers(raw.get("context_headers", {}), context, fail)
    return Route(
        pattern,
        segments,
        MappingProxyType(actions),
        frozenset(h.lower() for h in hosts),
        resource_type,
        resource_id,
        attributes,
        context,
        context_headers,
    )


def _route_actions(
    raw: dict[str, Any], default_actions: dict[str, str], fail: Any
) -> dict[str, str]:
    actions = _actions(raw["actions"], fail) if "actions" in raw else dict(default_actions)
    methods = raw.get("methods")
    if methods is not None:
        if not isinstance(methods, list) or not methods:
            raise fail("`methods` is a non-empty list")
        missing = [m for m in methods if m not in actions]
        if missing:
            raise fail(f"method `{missing[0]}` has no action (add it to `actions`)")
        actions = {m: actions[m] for m in methods}
    if not actions:
        raise fail("no method maps to an action (`actions` here or at the top level)")
    return actions


def _context_headers(
    raw: object, context: Mapping[str, AttrTemplate], fail: Any
) -> Mapping[str, str]:
    if not isinstance(raw, dict):
        raise fail("`context_headers` is a table of header name = context key")
    for header, key in raw.items():
        if not _HEADER_NAME(header) or header in _CREDENTIAL_HEADERS:
            raise fail(f"`{header}` is not a lowercase header name that may be copied")
        if not is_name(key) or key in context:
            raise fail(f"context key `{key}`: a name, not also in `context`")
    return MappingProxyType(dict(raw))


# INVARIANT: no credential is ever copied into a decision's context (and so into the audit)
_CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "x-api-key"})


def _pattern(pattern: str, fail: Any) -> tuple[tuple[bool, str], ...]:
    if not pattern.startswith("/"):
        raise fail(f"path `{pattern}` must start with `/`")
    if pattern == "/":
        return ()
    out: list[tuple[bool, str]] = []
    seen: set[str] = set()
    parts = pattern[1:].split("/")
    for i, part in enumerate(parts):
        m = _PARAM.fullmatch(part)
        if m:
            if m.group(1) in seen:
                raise fail(f"path `{pattern}`: `{part}` appears twice")
            seen.add(m.group(1))
            out.append((True, m.group(1)))
        elif part == "" and i == len(parts) - 1:
            out.append((False, ""))  # a trailing slash, matched as written
        elif not _LITERAL(part) or part in (".", ".."):
            raise fail(
                f"path `{pattern}`: segment `{part}` is neither a literal (unreserved characters, "
                "never `.` or `..`) nor a whole `{param}`"
            )
        else:
            out.append((False, part))
    return tuple(out)


def _template(raw: object, params: set[str], where: str, fail: Any) -> AttrTemplate:
    if isinstance(raw, bool | int) and not isinstance(raw, float):
        return raw
    if not isinstance(raw, str):
        raise fail(f"`{where}`: a string, an integer or a boolean")
    try:
        template = Template.parse(raw)
    except ValueError as exc:
        raise fail(f"`{where}`: {exc}") from None
    unknown = sorted(template.params - params)
    if unknown:
        raise fail(f"`{where}`: `{{{unknown[0]}}}` is not a parameter of the path")
    return template


def _templates(raw: object, params: set[str], where: str, fail: Any) -> Mapping[str, AttrTemplate]:
    if not isinstance(raw, dict):
        raise fail(f"`{where}` is a table")
    out: dict[str, AttrTemplate] = {}
    for key, value in raw.items():
        if not is_name(key):
            raise fail(f"`{where}`: `{key}` is not a name")
        out[key] = _template(value, params, f"{where}.{key}", fail)
    return MappingProxyType(out)
