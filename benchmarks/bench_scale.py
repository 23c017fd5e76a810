"""Scale: aggregation, budgets and every report over up to 100,000 calls in 20,000 tests.

Benchmark 5 of issue 9. For each size it records N calls through the real :class:`Ledger` (as
capture does) and holds every test to a per-test budget (as the plugin does at each teardown), then
runs every stage after the test loop — session and scoped budgets, the canonical order, the JSON
artifact, and each report format — timing each stage and measuring the peak memory the calls add
(tracemalloc, bytes per call beyond the empty run). Growth from 1k to 100k calls should be linear.

This VM's speed moves by up to ~1.7x from one day to the next, so each size also times a fixed
reference on the same data: building ``run.to_dict()`` and dumping it with the standard library's
JSON encoder, once, to a string (no disk). "after loop ÷ reference" compares runs across days.

    python benchmarks/bench_scale.py [--sizes 1000,10000,100000] [--json results.json]
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import platform
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pytest_tokenbudget.config import resolve
from pytest_tokenbudget.judge.budgets import Budgets
from pytest_tokenbudget.judge.gate import canonicalise
from pytest_tokenbudget.ledger import Ledger, Owner
from pytest_tokenbudget.model import Call, Run, Usage
from pytest_tokenbudget.runs.artifact import write_run

MODELS = (("openai", "gpt-4o-mini"), ("anthropic", "claude-sonnet-4-5"), ("openai", "text-embedding-3-small"))


def record_calls(calls: int, tests: int) -> Ledger:
    """``calls`` calls spread over ``tests`` tests in 40 files, as capture would record them."""
    ledger = Ledger(keep_calls=False)  # as the plugin does
    per_test = max(1, calls // tests)
    for index in range(calls):
        test = index // per_test
        nodeid = f"tests/test_mod{test % 40}.py::test_case[{test}]"
        provider, model = MODELS[index % len(MODELS)]
        owner = Owner(nodeid, "call")
        ledger.push_owner(owner)
        ledger.record(
            Call(
                owner=nodeid,
                phase="call",
                provider=provider,
                api="openai.chat" if provider == "openai" else "anthropic.messages",
                host="api.openai.com" if provider == "openai" else "api.anthropic.com",
                model=model,
                usage=Usage(1200 + index % 97, 256, 0, 180 + index % 13, 0),
                source="replayed" if index % 5 else "live",
                duration_s=0.0123,
                cost_usd=0.00042,
            )
        )
        ledger.pop_owner(owner)
    return ledger


BUDGETS: dict[str, Any] = {
    "max-tokens": 10**12,
    "max-cost": 10_000.0,
    "per-test": {"max-tokens": 20_000},
    "budgets": [
        {"name": "module 7", "path": "tests/test_mod7.py", "max-tokens": 10**10},
        {"name": "big models", "model": ["claude-*"], "max-cost": 1_000.0},
        {"name": "each openai test", "provider": "openai", "per": "test", "max-calls": 10},
    ],
}
"""Session, per-test and scoped budgets (three kinds of scope) as a pyproject table would set them."""


def report_stages(run: Run, folder: Path) -> dict[str, Callable[[], Any]]:
    """Every post-loop stage available in this checkout, by name, in the plugin's order: the session
    gate (session and scoped budgets, the canonical order), the JSON artifact, then every report."""
    budgets = Budgets.from_settings(resolve(BUDGETS, {}, pyproject=None, root=folder))
    stages: dict[str, Callable[[], Any]] = {
        "budgets": lambda: run.verdicts.extend(budgets.evaluate_run(run)),
        "canonical order": lambda: canonicalise(run),
        "json artifact": lambda: write_run(folder / "run.json", run),  # to disk, as the plugin does
    }
    terminal = importlib.import_module("pytest_tokenbudget.report.terminal")
    stages["terminal -v"] = lambda: list(terminal.render(run, verbose=True))
    for module_name, func_name, label in (
        ("pytest_tokenbudget.report.markdown", "render", "markdown"),
        ("pytest_tokenbudget.report.junit", "render", "junit xml"),
        ("pytest_tokenbudget.report.export", "render_csv", "csv"),
        ("pytest_tokenbudget.report.html", "render", "html"),
    ):
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        func = getattr(module, func_name, None)
        if func is not None:
            stages[label] = functools.partial(func, run)
    return stages


def judge_every_test(run: Run) -> None:
    """The per-test default, taken at each test's teardown by the plugin (not timed here: it is
    part of the test loop); it gives the JUnit and markdown reports a verdict per test."""
    budgets = Budgets.from_settings(resolve(BUDGETS, {}, pyproject=None, root=Path()))
    for entry in list(run.tests.values()):
        run.verdicts.extend(budgets.judge_test(entry, None))


def _timed(stage: Callable[[], Any]) -> float:
    start = time.perf_counter()
    stage()
    return time.perf_counter() - start


def measure(calls: int, tests: int) -> dict[str, Any]:
    # Memory and time in separate passes: tracemalloc slows every allocation several-fold.
    tracemalloc.start()
    before, _ = tracemalloc.get_traced_memory()
    kept = record_calls(calls, tests)
    current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del kept
    start = time.perf_counter()
    ledger = record_calls(calls, tests)
    record_s = time.perf_counter() - start
    run = ledger.run
    timings: dict[str, float] = {}
    judge_every_test(run)  # during the loop, as the plugin does: a verdict per test
    with tempfile.TemporaryDirectory() as tmp, run.finished():  # as the plugin writes its reports
        for name, stage in report_stages(run, Path(tmp)).items():
            start = time.perf_counter()
            stage()
            timings[name] = time.perf_counter() - start
        reference_s = min(_timed(lambda: json.dumps(run.to_dict())) for _ in range(3))
        tracemalloc.start()  # the artifact is written in pieces: its text is never whole in memory
        write_run(Path(tmp) / "run.json", run)
        _, artifact_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        artifact_bytes = (Path(tmp) / "run.json").stat().st_size
    return {
        "calls": calls,
        "tests": tests,
        "record_s": round(record_s, 4),
        "stages_s": {k: round(v, 4) for k, v in timings.items()},
        "after_loop_s": round(sum(timings.values()), 4),
        "reference_s": round(reference_s, 4),
        "after_loop_per_reference": round(sum(timings.values()) / reference_s, 2),
        "bytes_per_call_retained": round((current - before) / calls, 1),
        "bytes_per_call_peak": round((peak - before) / calls, 1),
        "artifact_bytes": artifact_bytes,
        "artifact_write_peak_bytes": artifact_peak,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    results = [measure(n, max(1, n // 5)) for n in (int(s) for s in args.sizes.split(","))]
    machine = f"{platform.machine()} · Python {platform.python_version()}"
    print(f"scale ({machine}): calls recorded through the Ledger, then every post-loop stage")
    header: tuple[tuple[str, int], ...] = (("calls", 8), ("tests", 7), ("record", 8), ("after loop", 11))
    header += (("÷ reference", 12), ("B/call kept", 12), ("B/call peak", 12))
    print(" ".join(f"{name:>{width}}" for name, width in header))
    for r in results:
        print(
            f"{r['calls']:>8,} {r['tests']:>7,} {r['record_s']:>7.3f}s {r['after_loop_s']:>10.3f}s "
            f"{r['after_loop_per_reference']:>11.2f}× "
            f"{r['bytes_per_call_retained']:>12,.0f} {r['bytes_per_call_peak']:>12,.0f}"
        )
        print("         " + ", ".join(f"{k} {v:.3f}s" for k, v in r["stages_s"].items()))
        print(f"         reference: json.dumps(run.to_dict()) {r['reference_s']:.3f}s")
        print(
            f"         artifact {r['artifact_bytes'] / 1e6:.1f} MB written with a peak of "
            f"{r['artifact_write_peak_bytes'] / 1e6:.2f} MB"
        )
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
