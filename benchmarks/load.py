"""Bundle load and reload times: the 10,000-rule bundle cold (parse, check, compile, total), its
reload after an edit to one of its files, and the example bundle's reload after a one-file edit.

Each cold figure comes from a fresh interpreter (no parse or code cache, the parser not yet
built); reloads run in one process, as the sidecar's reloader does, each adding a rule to one
file at its end, in its middle or at its top. Only public entry points are
used, so the same script times an older checkout: `PYTHONPATH=/tmp/old python -m benchmarks.load`.

    python -m benchmarks.load [--runs 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import gc
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.cases import many_rules_policy
from benchmarks.scenarios import write_bundle

HERE = Path(__file__).resolve().parent
SAAS = HERE.parent / "bundles" / "saas"
RULE_FILES = 10  # the 10,000 rules as written in a bundle: a schema file and ten rule files


def write_many_rules_bundle(directory: Path) -> Path:
    """The 10,000-rule bundle of benchmarks.cases, its rules split over RULE_FILES files."""
    lines = many_rules_policy(10_000).splitlines()
    first_rule = next(i for i, line in enumerate(lines) if line.startswith(("permit", "forbid")))
    schema, rules = lines[:first_rule], lines[first_rule:]
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "bundle.toml").write_text('name = "many"\nrevision = "1"\n', encoding="utf-8")
    (directory / "schema.pdp").write_text("\n".join(schema) + "\n", encoding="utf-8")
    per_file = len(rules) // RULE_FILES
    for k in range(RULE_FILES):
        chunk = rules[k * per_file : (k + 1) * per_file]
        (directory / f"rules_{k}.pdp").write_text("\n".join(chunk) + "\n", encoding="utf-8")
    return directory


def _cold(directory: str) -> dict[str, float]:
    """In a fresh interpreter: load_bundle and engine.load, timed."""
    from pdp.bundle import load_bundle
    from pdp.engine import Engine

    t0 = time.perf_counter()
    bundle = load_bundle(directory)
    t1 = time.perf_counter()
    Engine(cache_ttl=0).load(bundle)
    t2 = time.perf_counter()
    return {"load_bundle_s": t1 - t0, "engine_load_s": t2 - t1, "total_s": t2 - t0}


def _stages(directory: str) -> dict[str, float]:
    """In a fresh interpreter: the stages one by one, each file parsed in turn."""
    from pdp.engine.compiler import compile_policy
    from pdp.engine.tuples import TupleStore
    from policy_lang.checker import check
    from policy_lang.parser import parse

    gc.disable()  # each stage's own cost, in either checkout: the collector's is in the totals
    files = sorted(Path(directory).glob("*.pdp"))
    texts = [(str(p), p.read_text(encoding="utf-8")) for p in files]
    t0 = time.perf_counter()
    parse("type warm_up {}\n", "warm.pdp")  # builds the parser
    t1 = time.perf_counter()
    trees = [parse(text, name) for name, text in texts]
    t2 = time.perf_counter()
    policy, _ = check(trees)
    t3 = time.perf_counter()
    compile_policy(policy, TupleStore(), 25)
    t4 = time.perf_counter()
    return {
        "parser_build_s": t1 - t0,
        "parse_s": t2 - t1,
        "check_s": t3 - t2,
        "compile_s": t4 - t3,
    }


def _edit(path: Path, n: int, rule: str, where: str) -> None:
    """Add a rule to the file: at its end, in its middle or at its top."""
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    at = {"end": len(lines), "middle": len(lines) // 2, "top": 0}[where]
    lines.insert(at, rule.format(n=n, tag=f"{where}_{n}") + "\n")
    path.write_text("".join(lines), encoding="utf-8")


def _reloads(directory: str, edited: str, rule: str, runs: int, where: str = "end") -> list[float]:
    """Load once, then `runs` times: add a new rule to one file, load and swap again."""
    from pdp.bundle import load_bundle
    from pdp.engine import Engine

    engine = Engine(cache_ttl=0)
    engine.load(load_bundle(directory))
    times = []
    for n in range(runs):
        _edit(Path(directory) / edited, n, rule, where)
        t0 = time.perf_counter()
        engine.load(load_bundle(directory))
        times.append(time.perf_counter() - t0)
    return times


MANY_EDIT = "permit edit_{tag}: a3 on t7 when subject.level >= {n} and resource.owner == subject.id"
SAAS_EDIT = "permit edit_{tag}: read on document when subject.clearance >= {n}"


def _in_fresh_process(fn: str, *args: Any) -> Any:
    code = (
        "import json, sys; from benchmarks import load; "
        f"print(json.dumps(load.{fn}(*json.loads(sys.argv[1]))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, json.dumps(args)],
        capture_output=True,
        text=True,
        check=True,
        cwd=HERE.parent,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(runs: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="pdp-load-") as tmp:
        many = write_many_rules_bundle(Path(tmp) / "many")
        colds = [_in_fresh_process("_cold", str(many)) for _ in range(runs)]
        single = Path(tmp) / "single"  # as benchmarks.run loads it: one file of 10,000 rules
        write_bundle(single, "many", many_rules_policy(10_000))
        single_colds = [_in_fresh_process("_cold", str(single)) for _ in range(runs)]
        stages = [_in_fresh_process("_stages", str(many)) for _ in range(runs)]
        reloads = max(2 * runs, 10)
        many_reload = {
            where: _in_fresh_process(
                "_reloads", str(many), f"rules_{k}.pdp", MANY_EDIT, reloads, where
            )
            for k, where in ((3, "end"), (5, "middle"), (7, "top"))
        }
        saas = Path(tmp) / "saas"
        shutil.copytree(SAAS, saas)
        saas_reload = _in_fresh_process(
            "_reloads", str(saas), "policies/rules.pdp", SAAS_EDIT, max(runs, 20)
        )
    result: dict[str, Any] = {}
    for rows in (colds, stages):
        for key in rows[0]:
            result[key] = statistics.median(r[key] for r in rows)
    result["one_file_total_s"] = statistics.median(r["total_s"] for r in single_colds)
    for where, times in many_reload.items():
        result[f"many_reload_{where}_s"] = statistics.median(times)
        result[f"many_reload_{where}_max_s"] = max(times)
    result["saas_reload_s"] = statistics.median(saas_reload)
    result["saas_reload_max_s"] = max(saas_reload)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5, help="fresh processes per cold figure")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    result = run(args.runs)
    for key, value in result.items():
        print(f"{key:16} {value * 1000:10.1f} ms")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
