"""Scale of `tokenbudget merge`: 50 shards, 200,000 calls over 50,000 tests (issue 10 asks ≤ 2 s).

Writes N shard artifacts as a sharded CI run would (each test: 4 calls over two phases and two
models, as recorded by the real :class:`Ledger`), then times what ``tokenbudget merge`` does —
read every shard, :func:`merge_runs`, write the merged artifact — and the peak memory of that step
(tracemalloc). Memory follows the tests, not the calls: an artifact holds per-test tallies, and the
per-call log (``--token-budget-calls``) is a separate JSON-lines file that never enters a merge.

    python benchmarks/bench_merge.py [--shards 50] [--tests 50000] [--calls 200000] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

from pytest_tokenbudget.ledger import Ledger, Owner
from pytest_tokenbudget.model import Call, Usage
from pytest_tokenbudget.runs.artifact import write_run
from pytest_tokenbudget.runs.merge import load_shards, merge_call_logs, merge_runs

MODELS = (("openai", "gpt-4o-mini"), ("anthropic", "claude-sonnet-4-5"))


def write_shards(folder: Path, shards: int, tests: int, calls: int) -> int:
    """Shard artifacts in ``folder``; returns the bytes written."""
    per_shard, per_test = tests // shards, max(1, calls // tests)
    total = 0
    for shard in range(shards):
        ledger = Ledger()
        for t in range(per_shard):
            test = shard * per_shard + t
            nodeid = f"tests/test_mod{test % 200}.py::test_case[{test}]"
            for c in range(per_test):
                phase = "setup" if c == 0 else "call"
                owner = Owner(nodeid, phase)
                provider, model = MODELS[c % 2]
                ledger.push_owner(owner)
                ledger.record(
                    Call(nodeid, phase, provider, f"{provider}.chat", "h", model,
                         Usage(1200 + test % 97, 256, 0, 180 + c, 0), source="replayed", cost_usd=0.00042)
                )  # fmt: skip
                ledger.pop_owner(owner)
            entry = ledger.run.tests[nodeid]
            entry.path, entry.line, entry.outcome = nodeid.split("::", maxsplit=1)[0], 10, "passed"
        ledger.run.meta.update(commit="c0ffee", plugin_version="bench", partial=False, exit_status=0)
        path = folder / f"shard-{shard:02d}.json"
        write_run(path, ledger.run)
        total += path.stat().st_size
        with (folder / f"shard-{shard:02d}.calls.jsonl").open("w", encoding="utf-8") as log:
            for nodeid, entry in ledger.run.tests.items():
                for c in range(entry.total.calls):
                    provider, model = MODELS[c % 2]
                    call = Call(
                        nodeid, "call", provider, f"{provider}.chat", "h", model, Usage(1200, 0, 0, 180)
                    )
                    log.write(json.dumps(call.to_dict()) + "\n")
    return total


def timed(shards: int, tests: int, calls: int) -> dict[str, Any]:
    """Seconds to read the shards, merge them, and write the merged artifact (no tracing)."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "shards"
        folder.mkdir()
        size = write_shards(folder, shards, tests, calls)
        start = time.perf_counter()
        loaded = load_shards([str(folder)])
        read_s = time.perf_counter() - start
        merged = merge_runs(loaded)
        merge_s = time.perf_counter() - start - read_s
        write_run(Path(tmp) / "merged.json", merged.run)
        total_s = time.perf_counter() - start
        logs = sorted(folder.glob("*.jsonl"))
        start = time.perf_counter()
        lines = merge_call_logs(logs, Path(tmp) / "calls.jsonl", merged, loaded)
        calls_s = time.perf_counter() - start
    return {
        "shards": shards,
        "tests": tests,
        "calls": merged.run.totals().calls,
        "artifact_mb": round(size / 1e6, 1),
        "read_s": round(read_s, 3),
        "merge_s": round(merge_s, 3),
        "write_s": round(total_s - read_s - merge_s, 3),
        "total_s": round(total_s, 3),
        "call_log_lines": lines,
        "call_logs_s": round(calls_s, 3),
    }


def peak_memory(shards: int, tests: int, calls: int) -> dict[str, Any]:
    """Peak bytes allocated while reading and merging (tracemalloc: slow, so run at a small size)."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "shards"
        folder.mkdir()
        write_shards(folder, shards, tests, calls)
        tracemalloc.start()
        merged = merge_runs(load_shards([str(folder)]))
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return {"tests": tests, "calls": merged.run.totals().calls, "peak_mb": round(peak / 1e6, 1),
            "bytes_per_test": round(peak / tests)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=int, default=50)
    parser.add_argument("--tests", default="5000,50000", help="comma-separated sizes")
    parser.add_argument("--calls-per-test", type=int, default=4)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    sizes = [int(s) for s in args.tests.split(",")]
    times = [timed(args.shards, n, n * args.calls_per_test) for n in sizes]
    memory = [peak_memory(args.shards, 2000, 2000 * per_test) for per_test in (4, 40)]
    machine = f"{platform.machine()} · Python {platform.python_version()}"
    print(f"tokenbudget merge ({machine}): read shards + merge + write the merged artifact")
    head = (("shards", 6), ("tests", 7), ("calls", 8), ("MB in", 6), ("read", 7), ("merge", 7))
    print(" ".join(f"{name:>{width}}" for name, width in (*head, ("write", 7), ("total", 7))))
    for r in times:
        print(
            f"{r['shards']:>6} {r['tests']:>7,} {r['calls']:>8,} {r['artifact_mb']:>6.1f} "
            f"{r['read_s']:>6.2f}s {r['merge_s']:>6.2f}s {r['write_s']:>6.2f}s {r['total_s']:>6.2f}s"
        )
    for r in times:
        print(f"call logs: {r['call_log_lines']:,} lines streamed in {r['call_logs_s']:.2f}s")
    print("peak memory of read + merge, same tests, 10x the calls:")
    for m in memory:
        calls = f"{m['tests']:,} tests, {m['calls']:>7,} calls"
        print(f"  {calls}: {m['peak_mb']:.1f} MB ({m['bytes_per_test']:,} B/test)")
    if args.json:
        results = {"machine": machine, "times": times, "memory": memory}
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
