"""Generated code stays visible: named for what it decides, its source in linecache, so
inspect.getsource, tracebacks and `pdp check --show-code` show it."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
import traceback
from pathlib import Path

from pdp.bundle import bundle_from_text
from pdp.engine import Engine, codegen

POLICY = """
type user { attributes { level: int } }
type doc { actions read }
permit readers: read on doc when subject.level > 2
"""
SAAS = Path(__file__).parents[2] / "bundles" / "saas"


def test_generated_functions_are_named_and_their_source_is_readable() -> None:
    engine = Engine()
    engine.load(bundle_from_text(POLICY))
    assert engine.snapshot is not None
    entry = engine.snapshot.by_type["doc"]["read"]
    assert entry.decide.__name__ == "decide_doc_read"
    assert entry.key.__name__ == "cache_key_doc_read"
    assert inspect.getsource(entry.decide).startswith("def decide_doc_read(S, R, C, rev):")
    assert "subject" not in inspect.getsource(entry.key)  # generated Python, not policy text


def test_a_traceback_through_generated_code_shows_its_lines() -> None:
    ns = codegen.define("def boom(x):\n    return 1 // x\n", "boom_test", {})
    try:
        ns["boom"](0)
    except ZeroDivisionError as exc:
        text = "".join(traceback.format_exception(exc))
    assert "<pdp boom_test " in text
    assert "return 1 // x" in text


def test_identifier_makes_any_name_a_python_name() -> None:
    assert codegen.identifier("decide", "doc-x", "read") == "decide_doc_x_read"
    assert codegen.identifier("condition", "", "0") == "condition_0"


def test_pdp_check_show_code_prints_the_key_and_the_decide_function() -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pdp.cli",
            "check",
            str(SAAS),
            "--subject",
            "user:erin",
            "--subject-attrs",
            '{"tenant": "acme", "roles": []}',
            "--action",
            "read",
            "--resource",
            "document:spec-1",
            "--resource-attrs",
            '{"tenant": "acme", "owner": "alice", "classification": 0}',
            "--show-code",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "def cache_key_document_read(" in out.stderr
    assert "def decide_document_read(" in out.stderr
    assert json.loads(out.stdout)["decision"] == "ALLOW"  # the check itself still answers


def test_a_source_seen_before_is_not_compiled_again_but_each_namespace_keeps_its_own() -> None:
    source = "def answer():\n    return VALUE\n"
    one = codegen.function(source, "answer", {"VALUE": 1})
    two = codegen.function(source, "answer", {"VALUE": 2})
    assert one.__code__ is two.__code__  # compiled once
    assert (one(), two()) == (1, 2)  # bound to their own globals
    other = codegen.function(source.replace("VALUE", "VALUE + 1"), "answer", {"VALUE": 1})
    assert other() == 2 and other.__code__ is not one.__code__
