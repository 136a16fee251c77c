"""The benchmark report: renders a run's result dict as RESULTS.md, one function per section.

Pure formatting: takes the dict `benchmarks.run` writes to results.json and returns text.
"""

from __future__ import annotations

import json
from typing import Any

from benchmarks.external_suites import EXTERNAL


def fmt(v: Any, digits: int = 2) -> str:
    """A table cell: a dash for no value, yes/**no** for a met target, floats to `digits`."""
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "**no**"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def row_line(row: dict[str, Any]) -> str:
    """One timed case as the progress line printed while the suite runs."""
    ratio = f" ratio {row['ratio']:.2f}x" if row.get("ratio") else ""
    return (
        f"[{row['group']}] {row['case']}: median {row['median_us']:.2f}us "
        f"p90 {row['p90_us']:.2f} p99 {row['p99_us']:.2f}{ratio}"
    )


def markdown(result: dict[str, Any]) -> str:
    extra = result["extra"]
    lines = header(result["meta"])
    lines += decision_table(result["rows"])
    lines += baseline_table(result["rows"])
    if extra.get("compile_10k"):
        lines += compile_section(extra["compile_10k"])
    if extra.get("tuple_load"):
        lines += tuple_load_section(extra["tuple_load"])
    if extra.get("saas_day"):
        lines += saas_day_section(extra["saas_day"])
    lines += external_suites_section(extra)
    if result["failures"]:
        lines += ["", "## FAILURES", ""] + [f"- {f}" for f in result["failures"]]
    return "\n".join(lines) + "\n"


def header(meta: dict[str, Any]) -> list[str]:
    return [
        f"# pdp benchmark results ({meta['mode']})",
        "",
        f"{meta['date']} · commit `{meta['commit']}` · Python {meta['python']} · "
        f"{meta['cpus']} CPUs · timer overhead {meta['timer_overhead_ns']:.0f} ns subtracted · "
        "GC off while timing · every answer checked against the scenario oracle first.",
        "",
    ]


def decision_table(rows: list[dict[str, Any]]) -> list[str]:
    """Every timed case except the baselines, with its ratio to its baseline and its target."""
    lines = [
        "| group | case | median µs | p90 µs | p99 µs | baseline median µs | ratio | target | met | note |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in rows:
        if r["group"] == "baseline":
            continue
        lines.append(
            f"| {r['group']} | {r['case']} | {fmt(r['median_us'])} | {fmt(r['p90_us'])} | "
            f"{fmt(r['p99_us'])} | {fmt(r.get('baseline_median_us'))} | "
            f"{fmt(r.get('ratio'))}{'x' if r.get('ratio') else ''} | "
            f"{'≤ ' + fmt(r['target_ratio'], 1) + 'x' if r.get('target_ratio') else '—'} | "
            f"{fmt(r.get('met'))} | {r.get('note', '')} |"
        )
    return lines


def baseline_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "",
        "Baselines (plain Python, same run):",
        "",
        "| baseline | median µs | p90 µs | p99 µs | what |",
        "|---|---:|---:|---:|---|",
    ]
    for r in rows:
        if r["group"] == "baseline":
            lines.append(
                f"| {r['case']} | {fmt(r['median_us'])} | {fmt(r['p90_us'])} | "
                f"{fmt(r['p99_us'])} | {r['note']} |"
            )
    return lines


def compile_section(c: dict[str, Any]) -> list[str]:
    return [
        "",
        "## Compile of a 10,000-rule bundle (target ≤ 2 s)",
        "",
        "| parse s | check s | load_bundle s (parse+check+files) | engine.load s (compile) | total s | met |",
        "|---:|---:|---:|---:|---:|---|",
        f"| {fmt(c['parse_s'])} | {fmt(c['check_s'])} | {fmt(c['load_bundle_s'])} | "
        f"{fmt(c['engine_load_s'])} | {fmt(c['total_s'])} | {fmt(c['met'])} |",
    ]


def tuple_load_section(by_size: dict[str, dict[str, Any]]) -> list[str]:
    lines = [
        "",
        "## Tuple load and memory (targets at 1M: ≤ 10 s, ≤ 300 bytes/tuple)",
        "",
        "Each size in a fresh process. *write path*: schema-only bundle, then "
        "`Engine.write_tuples`; *bundle path*: JSONL files through `load_bundle` + `Engine.load`. "
        "Bytes/tuple: tracemalloc (what the store allocates) and RSS delta.",
        "",
        "| tuples | write path s | bundle path s | bytes/tuple (tracemalloc) | bytes/tuple (RSS) | process RSS MB | answers |",
        "|---:|---:|---:|---:|---:|---:|---|",
    ]
    for label, m in by_size.items():
        lines.append(tuple_load_row(label, m))
    return lines


def tuple_load_row(label: str, m: dict[str, Any]) -> str:
    """One size's row; a crashed child process keeps its row, marked."""
    if "crashed" in m:
        return f"| {label} | crashed | | | | | |"
    w, tr, b = m["write_path"], m["traced"], m.get("bundle_path")
    return (
        f"| {w['tuples']} | {fmt(w['load_s'])} | {fmt(b['total_s']) if b else 'not run (--quick)'} | "
        f"{tr['bytes_per_tuple']:.0f} | {w['rss_bytes_per_tuple']:.0f} | "
        f"{w['rss_total_bytes'] / 2**20:.0f} | {'oracle agrees' if m['verified'] else '**WRONG**'} |"
    )


def saas_day_section(s: dict[str, Any]) -> list[str]:
    p, b = s["pdp"], s["baseline"]
    return [
        "",
        "## SaaS day (90% of checks from a hot set of 300, 0.2% of ops write or delete a tuple, one reload; cache TTL 2 s)",
        "",
        "| | check median µs | p90 | p99 | ops/s | write median µs | reload ms | cache hit rate |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        f"| pdp | {fmt(p['checks']['median_us'])} | {fmt(p['checks']['p90_us'])} | "
        f"{fmt(p['checks']['p99_us'])} | {p['ops_per_s']:.0f} | {fmt(p['writes_median_us'])} | "
        f"{fmt(p['reload_ms'], 1)} | {p['cache_hit_rate']:.0%} |",
        f"| plain-Python baseline | {fmt(b['checks']['median_us'])} | {fmt(b['checks']['p90_us'])} | "
        f"{fmt(b['checks']['p99_us'])} | {b['ops_per_s']:.0f} | {fmt(b['writes_median_us'])} | — | — |",
    ]


def external_suites_section(extra: dict[str, Any]) -> list[str]:
    """The sibling suites, in the order they ran; nothing at all when none ran."""
    ran = [(k, v) for k, v in extra.items() if k in EXTERNAL]
    if not ran:
        return []
    lines = ["", "## Other suites (owned by their modules; run by this runner)", ""]
    for name, v in ran:
        lines += external_suite(name, v)
    return lines


def external_suite(name: str, v: dict[str, Any]) -> list[str]:
    """One sibling suite: a bullet when skipped or crashed, else its own markdown if it made
    some, else its command line and whatever statistics or output it left."""
    if "skipped" in v or "crashed" in v:
        return [f"- `{name}`: {v.get('skipped') or 'CRASHED: ' + str(v['crashed'])[:300]}"]
    lines = [f"### {name}", ""]
    if "markdown" in v:
        return [*lines, v["markdown"], ""]
    if "command" in v:
        lines += [f"`{v['command']}` ({v['seconds']:.0f} s)", ""]
    lines += external_suite_stats(v)
    lines.append("")
    return lines


def external_suite_stats(v: dict[str, Any]) -> list[str]:
    """pytest-benchmark rows as a table, a suite's own JSON as a block, else its raw output."""
    stats = v.get("stats")
    if isinstance(stats, list):
        return [
            "| benchmark | median µs | IQR µs | rounds |",
            "|---|---:|---:|---:|",
            *(
                f"| {b['name']} | {b['median_us']:.1f} | {b['iqr_us']:.1f} | {b['rounds']} |"
                for b in stats
            ),
        ]
    if isinstance(stats, dict):
        return ["```", json.dumps(stats, indent=1), "```"]
    if v.get("output"):
        return ["```", v["output"].strip(), "```"]
    return []
