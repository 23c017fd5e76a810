"""xdist at scale: ``-n 2`` gives the serial run's artifact, and what the controller's merge costs.

Benchmark 6 of issue 9. A generated suite of 20,000 tests makes 100,000 mocked OpenAI calls (five
per test, the openai SDK on an in-process ``httpx2.MockTransport``). It runs serially and with
``-n 2``, both writing the JSON artifact, and the two artifacts must be equal apart from ``meta``
(times, worker count). Then ``-n 2`` with ``--token-budget`` ÷ ``-n 2`` without, interleaved
repetitions, median: the whole cost of shipping every test's tallies to the controller and
folding them in, on top of recording.

    python benchmarks/bench_xdist.py [--tests 20000] [--calls-per-test 5] [--reps 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

from bench_suite import MOCKED_CALL_CONFTEST, run_pytest

TEST = """
import pytest


@pytest.mark.parametrize("i", range({tests}))
def test_calls(llm, i):
    for _ in range({calls}):
        llm.chat.completions.create(model="gpt-4o-mini", messages=[{{"role": "user", "content": "hi"}}])
"""


def without_meta(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    data.pop("meta", None)
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests", type=int, default=20_000)
    parser.add_argument("--calls-per-test", type=int, default=5)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    calls = args.tests * args.calls_per_test
    with tempfile.TemporaryDirectory(prefix="tokenbudget-bench-") as tmp:
        folder = Path(tmp) / "suite"
        folder.mkdir()
        pycache = Path(tmp) / "pycache"  # compiled once, as an installed package is (see bench_suite)
        (folder / "pytest.ini").write_text("[pytest]\n")
        (folder / "conftest.py").write_text(MOCKED_CALL_CONFTEST)
        test = TEST.format(tests=args.tests, calls=args.calls_per_test)
        (folder / "test_many.py").write_text(textwrap.dedent(test))

        serial_s = run_pytest(folder, ["--token-budget", "--token-budget-json=serial.json"], pycache).wall
        xdist_args = ["-n", "2", "--token-budget", "--token-budget-json=xdist.json"]
        xdist_s = run_pytest(folder, xdist_args, pycache).wall
        serial, xdist = without_meta(folder / "serial.json"), without_meta(folder / "xdist.json")
        identical = serial == xdist
        recorded = serial["totals"]["calls"]
        if not identical or recorded != calls:
            raise SystemExit(f"xdist artifact differs from serial (identical={identical}, calls={recorded})")

        times: dict[str, list[float]] = {"without": [], "with": []}
        for _ in range(args.reps):
            times["without"].append(run_pytest(folder, ["-n", "2"], pycache).wall)
            times["with"].append(run_pytest(folder, ["-n", "2", "--token-budget"], pycache).wall)
        without, with_ = statistics.median(times["without"]), statistics.median(times["with"])
    result = {
        "tests": args.tests,
        "calls": calls,
        "artifact_identical_to_serial": identical,
        "serial_with_plugin_s": round(serial_s, 2),
        "xdist_with_plugin_first_run_s": round(xdist_s, 2),
        "xdist_without_s": round(without, 2),
        "xdist_with_s": round(with_, 2),
        "ratio": round(with_ / without, 4),
        "added_us_per_call": round((with_ - without) / calls * 1e6, 2),
    }
    machine = f"{platform.machine()} · Python {platform.python_version()} · {os.cpu_count()} CPUs"
    print(f"xdist -n 2, {args.tests:,} tests, {calls:,} mocked calls ({machine}), median of {args.reps}")
    print(f"artifact -n 2 == serial (apart from meta): {identical}")
    print(
        f"-n 2 without {without:.2f}s · with --token-budget {with_:.2f}s · ratio {result['ratio']:.3f}× "
        f"· {result['added_us_per_call']:.1f} µs per call (recording + shipping + merging)"
    )
    if args.json:
        payload = {"machine": machine, "results": [result]}
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    sys.exit(0)


if __name__ == "__main__":
    main()
