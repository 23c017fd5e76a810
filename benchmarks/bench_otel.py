"""Side by side with OpenLLMetry: the same openai calls bare, with our capture, with OpenTelemetry.

What a user would otherwise install to get token numbers per call is OpenLLMetry's
``opentelemetry-instrumentation-openai`` with a span exporter; here it exports to memory (the
cheapest exporter there is), so the figure is its instrumentation cost alone. Each repetition runs
the three configurations back to back (bare, ours, OpenLLMetry) and each ratio is against the bare
run of the same repetition; medians reported. Both tools must report the same token totals, or the
benchmark fails.

Needs its own environment (OpenLLMetry is not a dependency of this project)::

    python -m venv .venv-bench
    .venv-bench/bin/pip install -e . opentelemetry-sdk opentelemetry-instrumentation-openai
    .venv-bench/bin/python benchmarks/bench_otel.py [--calls 10000] [--reps 5] [--json otel.json]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
from bench_calls import chat_stream, chunked, openai_client, sse_stream
from opentelemetry.instrumentation.openai import OpenAIInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from pytest_tokenbudget.capture import Capture
from pytest_tokenbudget.ledger import Ledger, Owner


class Ours:
    """pytest-tokenbudget's capture, recording into a ledger as a test would."""

    def __init__(self) -> None:
        self.ledger = Ledger()
        self.ledger.push_owner(Owner("bench::test", "call"))
        Capture(self.ledger).install()

    def tokens(self) -> int:
        return sum(call.usage.total_tokens for call in self.ledger.calls)


class OpenLLMetry:
    """OpenLLMetry's OpenAI instrumentation exporting every span to memory."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        OpenAIInstrumentor().instrument(tracer_provider=provider)

    def tokens(self) -> int:
        total = 0
        for span in self.exporter.get_finished_spans():
            attributes = span.attributes or {}
            for name in ("gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens"):
                value = attributes.get(name, 0)
                total += value if isinstance(value, int) else 0
        return total


class Bare:
    def tokens(self) -> int:
        return 0


TOOLS: dict[str, Callable[[], Ours | OpenLLMetry | Bare]] = {
    "bare": Bare,
    "ours": Ours,
    "openllmetry": OpenLLMetry,
}


def chat_work(calls: int) -> Callable[[], None]:
    client = openai_client()

    def work() -> None:
        for _ in range(calls):
            client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])

    return work


def stream_work(streams: int, chunks: int) -> Callable[[], None]:
    one = chat_stream(openai_client(chunked(sse_stream(chunks), chunks)))

    def work() -> None:
        for _ in range(streams):
            one()

    return work


def worker(tool_name: str, workload: str, size: int, chunks: int) -> None:
    """One timed run in this process: warm up bare, install the tool, time the work, print JSON.

    A process of its own per run because OpenLLMetry's ``uninstrument`` does not unwrap the openai
    3.x resources (a second ``instrument`` wraps them twice), so one process cannot switch it off.
    """
    work = chat_work(size) if workload == "chat" else stream_work(size, chunks)
    work()  # imports, connection set-up, caches: not part of the figure
    tool = TOOLS[tool_name]()
    work()  # the tool's own first-use costs, also outside the figure
    start = time.perf_counter()
    work()
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "tokens": tool.tokens()}))


def measure(name: str, workload: str, size: int, chunks: int, reps: int) -> dict[str, Any]:
    """Repetitions of bare, ours, OpenLLMetry back to back, each in a fresh process."""
    times: dict[str, list[float]] = {tool: [] for tool in TOOLS}
    tokens: dict[str, int] = {}
    for _ in range(reps):
        for tool in TOOLS:
            command = [sys.executable, __file__, "--worker", tool, workload, str(size), str(chunks)]
            output = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
            times[tool].append(output["seconds"])
            tokens[tool] = output["tokens"] // 2  # warm-up run + timed run
    if tokens["ours"] != tokens["openllmetry"]:
        raise SystemExit(f"{name}: tokens differ: ours {tokens['ours']}, OpenLLMetry {tokens['openllmetry']}")
    bare = times["bare"]

    def ratio(tool: str) -> float:
        return round(statistics.median(t / b for b, t in zip(bare, times[tool], strict=True)), 4)

    def overhead_us(tool: str) -> float:
        return round((statistics.median(times[tool]) - statistics.median(bare)) / size * 1e6, 2)

    return {
        "benchmark": name,
        "calls_per_rep": size,
        "reps": reps,
        "bare_s": round(statistics.median(bare), 4),
        "tokenbudget_ratio": ratio("ours"),
        "openllmetry_ratio": ratio("openllmetry"),
        "tokenbudget_us_per_call": overhead_us("ours"),
        "openllmetry_us_per_call": overhead_us("openllmetry"),
        "tokens_seen_by_each": tokens["ours"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=10_000)
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--chunks", type=int, default=500)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        tool, workload, size, chunks = args.worker
        worker(tool, workload, int(size), int(chunks))
        return
    results = [
        measure("openai chat, non-streaming", "chat", args.calls, args.chunks, args.reps),
        measure(f"openai chat stream, {args.chunks} chunks", "stream", args.streams, args.chunks, args.reps),
    ]
    versions = {
        name: importlib.metadata.version(name)
        for name in ("openai", "opentelemetry-sdk", "opentelemetry-instrumentation-openai")
    }
    machine = f"{platform.machine()} · Python {platform.python_version()} · openai {openai.__version__}"
    print(f"ours vs OpenLLMetry ({machine}; {versions}), median of {args.reps} repetitions")
    header = f"{'benchmark':<34} {'bare':>8} {'ours':>7} {'OpenLLMetry':>12}"
    print(f"{header} {'µs/call ours':>13} {'OpenLLMetry':>12}")
    for r in results:
        print(
            f"{r['benchmark']:<34} {r['bare_s']:>7.3f}s {r['tokenbudget_ratio']:>6.3f}× "
            f"{r['openllmetry_ratio']:>11.3f}× {r['tokenbudget_us_per_call']:>13.2f} "
            f"{r['openllmetry_us_per_call']:>12.2f}"
        )
    if args.json:
        payload = {"machine": machine, "versions": versions, "results": results}
        args.json.write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
