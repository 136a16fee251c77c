"""Run one fuzz target under atheris (libFuzzer): `python -m tests.fuzz.run TARGET [flags] [corpus]`.

atheris takes over the process (Setup/Fuzz never return on a crash), so tests/fuzz/test_fuzz.py
runs this as a subprocess with `-max_total_time`, and replays any crash input it leaves behind.
"""

from __future__ import annotations

import sys

import atheris

# Instrument our code and the parser library, so coverage guides the search through them.
with atheris.instrument_imports(include=["policy_lang", "pdp", "lark"]):
    from tests.fuzz import targets


def main() -> None:
    name = sys.argv[1]
    atheris.Setup([sys.argv[0], *sys.argv[2:]], targets.TARGETS[name])
    atheris.Fuzz()


if __name__ == "__main__":
    main()
