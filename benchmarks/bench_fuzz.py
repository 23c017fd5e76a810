"""The long fuzz run: tests/unit/test_fuzz_parsers.py with enough examples for ≥ 100,000 generated inputs.

The test suite runs the same properties with 300 examples each; this raises the count through
``TOKENBUDGET_FUZZ_EXAMPLES``, counts the examples Hypothesis actually ran (its statistics), and
fails when any property fails or when fewer inputs than asked for were generated.

    python benchmarks/bench_fuzz.py [--total 100000] [--json fuzz.json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests" / "unit" / "test_fuzz_parsers.py"
PASSING = re.compile(r"(\d+) passing, \d+ failing")


def count_properties() -> int:
    """How many Hypothesis properties (``@given`` tests times their parameters) the module holds."""
    spec = importlib.util.spec_from_file_location("test_fuzz_parsers", TESTS)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    given = {name for name, value in vars(module).items() if hasattr(value, "hypothesis")}
    listing = subprocess.run(
        [sys.executable, "-m", "pytest", str(TESTS), "--collect-only", "-q", "-p", "no:randomly"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return sum(1 for line in listing.splitlines() if line.partition("::")[2].split("[")[0] in given)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--total", type=int, default=100_000, help="generated inputs to reach at least")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    properties = count_properties()
    per_property = -(-args.total // properties)
    env = {**os.environ, "TOKENBUDGET_FUZZ_EXAMPLES": str(per_property)}
    command = [sys.executable, "-m", "pytest", str(TESTS), "-q", "-p", "no:randomly"]
    command += ["-p", "no:cacheprovider", "--hypothesis-show-statistics"]
    start = time.perf_counter()
    run = subprocess.run(command, check=False, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    examples = sum(int(n) for n in PASSING.findall(run.stdout))
    result = {
        "properties": properties,
        "examples_per_property": per_property,
        "examples_run": examples,
        "seconds": round(seconds, 1),
        "pytest_exit_code": run.returncode,
    }
    print(run.stdout.splitlines()[-1] if run.stdout else run.stderr)
    print(
        f"fuzz: {examples:,} generated bodies and streams over {properties} properties "
        f"in {seconds:.0f} s (pytest exit {run.returncode})"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    if run.returncode != 0:
        sys.stdout.write(run.stdout[-5000:])
        raise SystemExit(run.returncode)
    if examples < args.total:
        raise SystemExit(f"only {examples:,} examples ran (asked for {args.total:,})")


if __name__ == "__main__":
    main()
