"""Coverage-guided fuzzing (atheris) of the parser, the bundle loader and request conversion, for a
bounded time per target (`FUZZ_SECONDS`, default 20): any exception outside the area's own errors
is a failure that shows the input. Also replays every seed in process, without atheris."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fuzz.seeds import SEEDS, write_corpus
from tests.fuzz.targets import TARGETS

ROOT = Path(__file__).parents[2]
SECONDS = int(os.environ.get("FUZZ_SECONDS", "20"))


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_seeds_pass_in_process(target: str) -> None:
    for seed in SEEDS[target]():
        TARGETS[target](seed)


@pytest.mark.skipif(SECONDS <= 0, reason="FUZZ_SECONDS=0")
@pytest.mark.timeout(SECONDS + 90)
@pytest.mark.parametrize("target", sorted(TARGETS))
def test_fuzz(target: str, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    seeds = write_corpus(target, corpus)
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.fuzz.run",
            target,
            f"-max_total_time={SECONDS}",
            "-timeout=20",  # one input taking 20 s is a finding too
            "-rss_limit_mb=2048",
            "-max_len=8192",
            f"-artifact_prefix={artifacts}/",
            "-print_final_stats=1",
            str(corpus),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=SECONDS + 80,
        env={**os.environ, "PYTHONHASHSEED": "0"},
    )
    output = proc.stderr + proc.stdout
    runs = re.search(r"stat::number_of_executed_units:\s*(\d+)", output) or re.search(
        r"Done (\d+) runs", output
    )
    executions = int(runs.group(1)) if runs else 0
    print(f"fuzz {target}: {executions} executions in {SECONDS}s from {seeds} seeds")
    crashes = sorted(artifacts.iterdir())
    if proc.returncode != 0 or crashes:
        shown = "\n".join(f"{c.name}: {c.read_bytes()!r}"[:4000] for c in crashes)
        pytest.fail(
            f"fuzz target `{target}` failed (exit {proc.returncode}) after {executions} runs\n"
            f"input(s):\n{shown}\n\noutput (tail):\n{output[-6000:]}"
        )
    assert executions > 0, output[-3000:]
