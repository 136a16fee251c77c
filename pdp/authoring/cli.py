"""The policy authors' commands: `pdp validate`, `pdp check`, `pdp lookup`, `pdp plan`, `pdp test`,
`pdp fmt`."""

from __future__ import annotations

import argparse
import inspect
import json
import sys
from pathlib import Path
from typing import Any

from pdp.authoring.policy_tests import TestFileError, run_tests, to_attrs
from pdp.bundle import POLICY_SUFFIX, BundleError, load_bundle
from pdp.engine import Engine
from pdp.engine.lookup import lookup_resources, lookup_subjects
from pdp.engine.plan import plan_resources, to_sql
from pdp.explain import explain
from pdp.explain.coverage import Coverage
from pdp.explain.render import render
from pdp.identifiers import parse_ref
from pdp.model import Decision, Entity, Request
from policy_lang.diagnostics import PolicyError
from policy_lang.formatter import format_source


def add_commands(sub: Any) -> None:
    p = sub.add_parser("validate", help="check a bundle; exit 1 listing every error")
    p.add_argument("bundle", type=Path)
    p.add_argument(
        "--json",
        action="store_true",
        help="print every error and warning as a JSON list (file, line, col, end_line, "
        "end_col, severity, code, message, hint)",
    )
    p.set_defaults(handler=cmd_validate)

    p = sub.add_parser("check", help="ask one question of a bundle, as the sidecar would")
    p.add_argument("bundle", type=Path)
    p.add_argument("--subject", required=True, help="type:id, e.g. user:alice")
    p.add_argument("--subject-attrs", default="{}", help="JSON object of subject attributes")
    p.add_argument("--action", required=True)
    p.add_argument("--resource", required=True, help="type:id, e.g. document:spec-1")
    p.add_argument("--resource-attrs", default="{}", help="JSON object of resource attributes")
    p.add_argument("--context", default="{}", help="JSON object of context attributes")
    p.add_argument(
        "--explain",
        action="store_true",
        help="print the trace as a tree: each rule, its conditions with the values they "
        "compared, the relation paths (as JSON with --json)",
    )
    p.add_argument("--json", action="store_true", help="print JSON (the default without --explain)")
    p.add_argument(
        "--mask",
        default="",
        metavar="NAMES",
        help="comma-separated attributes whose values the trace shows as *** (`ssn`, "
        "`subject.email`), as the sidecar's audit_mask setting",
    )
    p.add_argument(
        "--show-code",
        action="store_true",
        help="print (on stderr) the Python generated for this type and action: key and decide",
    )
    p.set_defaults(handler=cmd_check)

    p = sub.add_parser(
        "lookup",
        help="which resources of a type may a subject act on (--subject --type), or which "
        "subjects of a type may act on a resource (--resource --subject-type)",
    )
    p.add_argument("bundle", type=Path)
    p.add_argument("--action", required=True)
    p.add_argument("--subject", help="type:id: list the resources it may act on (with --type)")
    p.add_argument("--subject-attrs", default="{}", help="JSON object of subject attributes")
    p.add_argument("--type", dest="resource_type", help="the resource type to list")
    p.add_argument("--resource", help="type:id: list the subjects that may act on it")
    p.add_argument("--resource-attrs", default="{}", help="JSON object of resource attributes")
    p.add_argument("--subject-type", help="the subject type to list (with --resource)")
    p.add_argument("--context", default="{}", help="JSON object of context attributes")
    p.set_defaults(handler=cmd_lookup)

    p = sub.add_parser(
        "plan",
        help="which resources of a type may a subject act on, as a filter over their "
        "attributes (PlanResources), and with --sql as a WHERE clause",
    )
    p.add_argument("bundle", type=Path)
    p.add_argument("--subject", required=True, help="type:id, e.g. user:erin")
    p.add_argument("--subject-attrs", default="{}", help="JSON object of subject attributes")
    p.add_argument("--action", required=True)
    p.add_argument("--type", dest="resource_type", required=True, help="the resource type")
    p.add_argument("--context", default="{}", help="JSON object of context attributes")
    p.add_argument(
        "--sql",
        metavar="COLUMN=FIELD,...",
        help="render the filter as a WHERE clause: each column and the field it holds, e.g. "
        "id=resource.id,tenant=resource.tenant (`resource.` may be left out)",
    )
    p.set_defaults(handler=cmd_plan)

    p = sub.add_parser("test", help="run a bundle's *.test.toml policy tests")
    p.add_argument("bundle", type=Path)
    p.add_argument("--filter", default="", help="run only tests whose name contains this")
    p.add_argument("--json", action="store_true", help="machine-readable report for CI")
    p.add_argument("-v", "--verbose", action="store_true", help="list passing tests too")
    p.add_argument(
        "--coverage",
        action="store_true",
        help="report which rules, roles and permission branches the tests reached, and which "
        "tests; those none reached first (docs/testing.md)",
    )
    p.add_argument(
        "--coverage-min",
        type=float,
        metavar="N",
        help="fail (exit 1) when coverage is below N percent (implies --coverage)",
    )
    p.set_defaults(handler=cmd_test)

    p = sub.add_parser(
        "fmt", help="print policy files in canonical form (or rewrite them with --write)"
    )
    p.add_argument("paths", nargs="+", type=Path, help="policy files or bundle directories")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--write", action="store_true", help="rewrite files in place")
    group.add_argument("--check", action="store_true", help="exit 1 if any file is not formatted")
    p.set_defaults(handler=cmd_fmt)


def cmd_validate(args: argparse.Namespace) -> int:
    try:
        bundle = load_bundle(args.bundle)
    except BundleError as exc:
        if args.json:
            print(json.dumps([d.to_json() for d in exc.diagnostics], indent=2))
            return 1
        for d in exc.diagnostics:
            print(d.format(), file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps([d.to_json() for d in bundle.warnings], indent=2))
        return 0
    for d in bundle.warnings:
        print(d.format(), file=sys.stderr)
    print(
        f"ok: bundle `{bundle.name}` revision {bundle.revision}: {len(bundle.policy.rules)} rules, "
        f"{len(bundle.policy.roles)} roles, {len(bundle.tuples)} tuples"
    )
    return 0


def _entity(ref: str, attrs_json: str, flag: str) -> Entity:
    try:
        type_name, id_ = parse_ref(ref)
    except ValueError as exc:
        raise ValueError(f"--{flag}: {exc}") from None
    return Entity(type_name, id_, _json_attrs(attrs_json, f"--{flag}-attrs"))


def _json_attrs(text: str, flag: str) -> dict[str, Any]:
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{flag}: not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{flag}: must be a JSON object")
    try:
        return to_attrs(raw, flag)
    except TestFileError as exc:
        raise ValueError(str(exc)) from None


def decision_json(d: Decision) -> dict[str, Any]:
    out: dict[str, Any] = {
        "decision": d.effect.value.upper(),
        "reason": d.reason.value,
        "rules": list(d.rule_ids),
        "not_found": d.not_found,
        "bundle_revision": d.bundle_revision,
        "tuple_revision": d.tuple_revision,
    }
    if d.errors:
        out["errors"] = list(d.errors)
    if d.trace is not None:
        out["trace"] = [
            {
                "kind": t.kind,
                "id": t.id,
                "outcome": t.outcome,
                **({"detail": t.detail} if t.detail else {}),
                "depth": t.depth,
                **({"values": [{"expr": e, "value": v} for e, v in t.values]} if t.values else {}),
            }
            for t in d.trace
        ]
    return out


def cmd_check(args: argparse.Namespace) -> int:
    try:
        bundle = load_bundle(args.bundle)
        request = Request(
            _entity(args.subject, args.subject_attrs, "subject"),
            args.action,
            _entity(args.resource, args.resource_attrs, "resource"),
            _json_attrs(args.context, "--context"),
        )
    except BundleError as exc:
        print(exc, file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    engine = Engine(cache_ttl=0)
    engine.load(bundle)
    if args.show_code:
        _print_generated_code(engine, request)
    if args.explain:
        mask = frozenset(m.strip() for m in args.mask.split(",") if m.strip())
        decision = explain(engine, request, mask=mask)
    else:
        decision = engine.check(request)
    if args.explain and not args.json:
        sys.stdout.write(render(decision, request))
    else:
        print(json.dumps(decision_json(decision), indent=2))
    return 0 if decision.allowed else 3


def cmd_lookup(args: argparse.Namespace) -> int:
    """Print the ids as JSON, with whether the list is whole and, if not, why (exit 0)."""
    try:
        bundle = load_bundle(args.bundle)
        context = _json_attrs(args.context, "--context")
        if args.subject and args.resource_type and not args.resource:
            subject = _entity(args.subject, args.subject_attrs, "subject")
            engine = Engine(cache_ttl=0)
            engine.load(bundle)
            found = lookup_resources(
                engine.pin(), subject, args.action, args.resource_type, context
            )
        elif args.resource and args.subject_type and not args.subject:
            resource = _entity(args.resource, args.resource_attrs, "resource")
            engine = Engine(cache_ttl=0)
            engine.load(bundle)
            found = lookup_subjects(engine.pin(), resource, args.action, args.subject_type, context)
        else:
            raise ValueError("give --subject and --type, or --resource and --subject-type")
    except BundleError as exc:
        print(exc, file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    ids = list(found)
    out: dict[str, Any] = {"ids": ids, "complete": not found.incomplete}
    if found.incomplete:
        out["incomplete"] = found.incomplete
    if found.excluded:
        out["excluded"] = found.excluded
    print(json.dumps(out, indent=2))
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    """Print the plan as JSON (`kind`, `filter`), with `where` and `params` under --sql (exit 0);
    a policy no filter can express exactly is an error naming the construct (exit 2)."""
    try:
        bundle = load_bundle(args.bundle)
        subject = _entity(args.subject, args.subject_attrs, "subject")
        context = _json_attrs(args.context, "--context")
        columns = _columns(args.sql) if args.sql is not None else None
        if args.resource_type not in bundle.policy.types:
            raise ValueError(f"--type: unknown type `{args.resource_type}`")
        engine = Engine(cache_ttl=0)
        engine.load(bundle)
        plan = plan_resources(engine.pin(), subject, args.action, args.resource_type, context)
        out = plan.to_dict()
        if columns is not None:
            out["where"], out["params"] = to_sql(plan.filter, columns)
    except BundleError as exc:
        print(exc, file=sys.stderr)
        return 1
    except ValueError as exc:  # PlanUnsupported and a field without a column too
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(out, indent=2))
    return 0


def _columns(text: str) -> dict[str, str]:
    """`id=resource.id,tenant=tenant` as to_sql's field -> column map."""
    columns: dict[str, str] = {}
    for pair in text.split(","):
        column, eq, field = (part.strip() for part in pair.partition("="))
        if not (column and eq and field):
            raise ValueError(f"--sql: `{pair}` is not COLUMN=FIELD")
        if not field.startswith("resource."):
            field = f"resource.{field}"
        columns[field] = column
    return columns


def _print_generated_code(engine: Engine, request: Request) -> None:
    """The Python the compiler generated for this request's (type, action): its cache key and
    its decide function, as tracebacks and profilers see them (pdp.engine.codegen)."""
    snapshot = engine.snapshot
    actions = snapshot.by_type.get(request.resource.type, {}) if snapshot else {}
    entry = actions.get(request.action)
    if entry is None:
        print(
            f"// no rule or role covers `{request.action}` on `{request.resource.type}`: "
            "deny by default, no code generated",
            file=sys.stderr,
        )
        return
    for fn in (entry.key, entry.decide):
        print(inspect.getsource(fn), file=sys.stderr)


def cmd_test(args: argparse.Namespace) -> int:
    try:
        bundle = load_bundle(args.bundle)
    except BundleError as exc:
        print(exc, file=sys.stderr)
        return 1
    wanted = args.coverage or args.coverage_min is not None
    report = run_tests(bundle, args.filter, coverage=wanted)
    coverage = report.coverage
    too_low = (
        coverage is not None
        and args.coverage_min is not None
        and coverage.percent < args.coverage_min
    )
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
        return 1 if report.failed or too_low else 0
    for r in report.results:
        if not r.passed:
            print(f"FAIL {r.name}  ({r.file})\n     {r.message}")
        elif args.verbose:
            print(f"ok   {r.name}")
    passed = len(report.results) - len(report.failed)
    print(f"\n{passed} passed, {len(report.failed)} failed")
    if coverage is not None:
        _print_coverage(coverage, args.verbose)
        if too_low:
            print(
                f"coverage {coverage.percent:.1f}% is below --coverage-min {args.coverage_min:g}%"
            )
    elif report.unexercised:
        print("rules no test exercised: " + ", ".join(report.unexercised))
    return 1 if report.failed or not report.results or too_low else 0


def _print_coverage(coverage: Coverage, verbose: bool) -> None:
    """Unreached rules, roles and branches first, then what was reached and by which tests
    (the first three of them without -v)."""
    print(
        f"\ncoverage: {coverage.percent:.1f}% ({len(coverage.items) - len(coverage.unreached)} of {len(coverage.items)} reached)"
    )
    for item in coverage.ordered():
        tests = coverage.tests[item.id]
        label = f"{item.kind:<6} {item.id}" + (f"  {item.text}" if item.kind == "branch" else "")
        if not tests:
            print(f"  NOT REACHED  {label}  ({item.loc})")
            continue
        shown = tests if verbose or len(tests) <= 3 else [*tests[:3], f"and {len(tests) - 3} more"]
        print(f"  reached      {label}  by: " + "; ".join(shown))


def cmd_fmt(args: argparse.Namespace) -> int:
    files: list[Path] = []
    for p in args.paths:
        files.extend(sorted(p.rglob(f"*{POLICY_SUFFIX}")) if p.is_dir() else [p])
    status = 0
    for file in files:
        text = file.read_text(encoding="utf-8")
        try:
            formatted = format_source(text, str(file))
        except PolicyError as exc:
            print(exc, file=sys.stderr)
            status = 1
            continue
        if args.check:
            if formatted != text:
                print(f"would reformat {file}", file=sys.stderr)
                status = 1
        elif args.write:
            if formatted != text:
                file.write_text(formatted, encoding="utf-8")
                print(f"formatted {file}")
        else:
            sys.stdout.write(formatted)
    return status
