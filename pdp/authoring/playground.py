"""`pdp playground BUNDLE`: a local web page to edit a bundle's policy and tuples, see every error
as it is typed, run a request with its explain trace, and run the bundle's tests.

Loopback only, every request's Host checked and every POST's Origin too (so neither a page of
another origin nor a DNS-rebound name can drive it); nothing is written until the author saves.
The page (playground_assets/) is served from the package: no build step, no CDN. This module
holds the command and the use cases; `playground_http` the web app and its guard.
"""

from __future__ import annotations

import argparse
import ipaddress
import socket
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pdp.authoring import drafts
from pdp.authoring.cli import decision_json
from pdp.authoring.policy_tests import TestFileError, run_tests, to_attrs
from pdp.bundle.files import BundleFiles
from pdp.engine import Engine
from pdp.explain import explain
from pdp.identifiers import parse_ref
from pdp.model import Decision, Entity, Request, TraceStep
from policy_lang.diagnostics import Diagnostic

DEFAULT_LISTEN = "127.0.0.1:8787"


class ListenError(ValueError):
    """--listen is not HOST:PORT on a loopback address."""


def add_commands(sub: Any) -> None:
    p = sub.add_parser(
        "playground",
        help="edit a bundle in a local web page: live errors, requests with their trace, tests",
    )
    p.add_argument("bundle", type=Path)
    p.add_argument(
        "--listen",
        default=DEFAULT_LISTEN,
        help=f"loopback HOST:PORT to serve on (default {DEFAULT_LISTEN}; port 0 picks a free one)",
    )
    p.set_defaults(handler=cmd_playground)


def parse_listen(text: str) -> tuple[str, int]:
    """`127.0.0.1:8787`, `[::1]:8787` or `localhost:8787`; anything not loopback is refused."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit() or int(port_text) > 65535:
        raise ListenError(f"--listen: `{text}` is not HOST:PORT")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if host == "localhost":
        host = "127.0.0.1"
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ListenError(
            f"--listen: `{host}` is not a loopback address; the playground serves this machine "
            "only (it can read and write the bundle)"
        )
    return host, int(port_text)


def cmd_playground(args: argparse.Namespace) -> int:
    try:
        host, port = parse_listen(args.listen)
        files = drafts.read(args.bundle)
    except (ListenError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        print(f"error: --listen {args.listen}: {exc.strerror}", file=sys.stderr)
        return 2
    port = sock.getsockname()[1]
    shown = f"[{host}]" if family == socket.AF_INET6 else host
    # The HTTP side is imported only here: no other `pdp` command pays for starlette and uvicorn.
    from pdp.authoring.playground_http import serve

    print(
        f"pdp playground: http://{shown}:{port}/  (bundle {args.bundle}; Ctrl-C stops)", flush=True
    )
    serve(Playground(Path(args.bundle), files), sock)
    return 0


class Playground:
    """The use cases behind the page, transport-free: validate, check, test and save drafts of
    one bundle. The files on disk are re-read only after a save."""

    def __init__(self, root: Path, files: BundleFiles) -> None:
        self.root = root
        self._files = files
        self._lock = threading.Lock()  # a save and the re-read after it are one step

    @property
    def files(self) -> BundleFiles:
        with self._lock:
            return self._files

    def _rel(self, file: str) -> str:
        prefix = str(self._files.root) + "/"
        return file[len(prefix) :] if file.startswith(prefix) else file

    def diagnostic_json(self, d: Diagnostic) -> dict[str, Any]:
        file = self._rel(d.loc.file)
        return {
            "file": file,
            "line": d.loc.line,
            "col": d.loc.col,
            "end_line": d.loc.end_line or d.loc.line,
            "end_col": d.loc.end_col,
            "severity": d.severity,
            "code": d.code,
            "message": d.message,
            "hint": d.hint,
            "text": f"{file}:{d.loc.line}:{d.loc.col}: {d.severity}[{d.code}]: {d.message}",
        }

    def state(self) -> dict[str, Any]:
        files = self.files
        return {
            "bundle": str(self.root),
            "files": {rel: files.files[rel].decode("utf-8") for rel in drafts.editable(files)},
            "request": default_request(files, self.root),
        }

    def validate(self, edited: Mapping[str, str]) -> dict[str, Any]:
        _, diags = drafts.load(self.files, edited)
        return {"diagnostics": [self.diagnostic_json(d) for d in diags]}

    def check(self, edited: Mapping[str, str], raw_request: Any) -> dict[str, Any]:
        """The decision and its trace; DENY whenever the draft or the request is not usable.

        INVARIANT: every failure here answers DENY (fail closed), with the reason in `errors`."""
        bundle, diags = drafts.load(self.files, edited)
        if bundle is None:
            return _denied(
                "the bundle has errors", [self.diagnostic_json(d)["text"] for d in diags]
            )
        try:
            request = to_request(raw_request)
        except (ValueError, TypeError) as exc:
            return _denied("the request is not valid", [str(exc)])
        try:
            engine = Engine(cache_ttl=0)
            engine.load(bundle)
            decision = explain(engine, request)
        except Exception as exc:  # the page shows it; the answer is still a denial
            return _denied("the engine failed", [f"{type(exc).__name__}: {exc}"])
        out = decision_json(decision)
        out["tree"] = trace_tree(decision, request, strip=f"{self.files.root}/")
        return out

    def run_tests(self, edited: Mapping[str, str]) -> dict[str, Any]:
        bundle, diags = drafts.load(self.files, edited)
        if bundle is None:
            return {
                "passed": 0,
                "failed": 0,
                "results": [],
                "errors": [self.diagnostic_json(d)["text"] for d in diags],
            }
        report: dict[str, Any] = run_tests(bundle).to_json()
        for r in report["results"]:
            r["file"] = self._rel(r["file"])
        return report

    def save(self, edited: Mapping[str, str]) -> dict[str, Any]:
        with self._lock:
            written = drafts.save(self.root, self._files, edited)
            self._files = drafts.read(self.root)
        return {"written": written, **self.validate({})}


def _denied(reason: str, errors: list[str]) -> dict[str, Any]:
    return {"decision": "DENY", "reason": reason, "rules": [], "errors": errors, "tree": None}


def to_request(raw: Any) -> Request:
    """The page's request JSON: `subject`/`resource` as "type:id", `action`, and optional
    `subject_attrs`, `resource_attrs`, `context` objects (as `pdp check`'s flags)."""
    if not isinstance(raw, dict):
        raise ValueError("the request must be a JSON object")
    for key in ("subject", "action", "resource"):
        if not isinstance(raw.get(key), str):
            raise ValueError(f"`{key}` must be a string")
    known = {"subject", "subject_attrs", "action", "resource", "resource_attrs", "context"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ValueError(f"unknown field `{unknown[0]}`; the fields are {', '.join(sorted(known))}")

    def attrs(key: str) -> dict[str, Any]:
        value = raw.get(key, {})
        if not isinstance(value, dict):
            raise ValueError(f"`{key}` must be a JSON object")
        try:
            return to_attrs(value, key)
        except TestFileError as exc:
            raise ValueError(str(exc)) from None

    subject, resource = parse_ref(raw["subject"]), parse_ref(raw["resource"])
    return Request(
        Entity(*subject, attrs("subject_attrs")),
        raw["action"],
        Entity(*resource, attrs("resource_attrs")),
        attrs("context"),
    )


def default_request(files: BundleFiles, root: Path) -> dict[str, Any]:
    """The first test case of the bundle's tests, as a request the page can run at once."""
    bundle, _ = drafts.load(files, {})
    for _, doc in bundle.tests if bundle is not None else ():
        entities = doc.get("entities", {})
        for case in doc.get("test", []):
            if not all(isinstance(case.get(k), str) for k in ("subject", "action", "resource")):
                continue
            out: dict[str, Any] = {"subject": case["subject"]}
            if case["subject"] in entities:
                out["subject_attrs"] = entities[case["subject"]]
            out["action"] = case["action"]
            out["resource"] = case["resource"]
            if case["resource"] in entities:
                out["resource_attrs"] = entities[case["resource"]]
            out["context"] = case.get("context", {})
            return out
    return {"subject": "user:alice", "action": "read", "resource": "document:d1", "context": {}}


def trace_tree(decision: Decision, request: Request, *, strip: str = "") -> dict[str, Any]:
    """The trace as a tree: the decision at the root, each rule, role or binding considered below
    it, their conditions below them, and under a condition the relation hops it walked, drawn as
    a path from the subject to the object (`hops`).

    The trace is written children first: a step's children are the steps just before it that are
    one level deeper. A trace without levels (every step at depth 0) nests each run of relation
    hops under the step that follows it, the rule that asked for them. `strip` is taken off the
    start of each detail (the bundle directory, so rules show as `policies/rules.pdp:3:1`)."""
    steps = list(decision.trace or ())
    depths = [getattr(s, "depth", 0) for s in steps]
    if not any(depths):
        depths = [1 if s.kind == "relation" else 0 for s in steps]
    pending: list[tuple[int, dict[str, Any]]] = []
    for step, depth in zip(steps, depths, strict=True):
        node = _node(step)
        node["detail"] = node["detail"].removeprefix(strip) if strip else node["detail"]
        children = []
        while pending and pending[-1][0] > depth:
            children.append(pending.pop()[1])
        children.reverse()
        hops = [c for c in children if c["kind"] == "relation"]
        node["children"] = [c for c in children if c["kind"] != "relation"]
        if hops:
            subject = {"id": str(request.subject), "detail": "the subject"}
            node["hops"] = [subject] + [{"id": h["id"], "detail": h["detail"]} for h in hops]
        pending.append((depth, node))
    return {
        "decision": decision.effect.value.upper(),
        "reason": decision.reason.value,
        "request": f"{request.subject} {request.action} {request.resource}",
        "children": [node for _, node in pending],
    }


def _node(step: TraceStep) -> dict[str, Any]:
    values = getattr(step, "values", ())
    return {
        "kind": step.kind,
        "id": step.id,
        "outcome": step.outcome,
        "detail": step.detail,
        "values": [{"expr": e, "value": v} for e, v in values],
    }
