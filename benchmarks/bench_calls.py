"""Per-call overhead of capture: the real openai and anthropic SDKs on an in-process transport.

Each figure is a ratio measured side by side in one process: the same calls with capture installed
÷ without, repetitions interleaved (off, on, off, on …) so drift hits both sides, median reported.
Both wall time and the process's CPU time are taken; on a shared machine the CPU ratio is the
steadier one (time the process spends waiting for a CPU other jobs hold is not its own cost).

    python benchmarks/bench_calls.py [--calls 10000] [--block 200] [--json results.json]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import openai

from pytest_tokenbudget.capture import Capture
from pytest_tokenbudget.ledger import Ledger, Owner

CHAT = json.dumps(
    {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "Hello there!"}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
    }
).encode()

MESSAGE = json.dumps(
    {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-6",
        "content": [{"type": "text", "text": "Hello there!"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 12, "output_tokens": 3},
    }
).encode()


def sse_stream(chunks: int) -> bytes:
    parts = []
    for i in range(chunks):
        chunk = {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "gpt-4o-mini",
            "choices": [{"index": 0, "delta": {"content": f"tok{i} "}, "finish_reason": None}],
        }
        parts.append(b"data: " + json.dumps(chunk).encode() + b"\n\n")
    usage = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-4o-mini",
        "choices": [],
        "usage": {"prompt_tokens": 12, "completion_tokens": chunks, "total_tokens": 12 + chunks},
    }
    parts.append(b"data: " + json.dumps(usage).encode() + b"\n\n")
    parts.append(b"data: [DONE]\n\n")
    return b"".join(parts)


def chunked(body: bytes, size: int) -> list[bytes]:
    """Split a stream at event boundaries, one event per chunk, as a server would flush them."""
    events = body.split(b"\n\n")
    return [e + b"\n\n" for e in events if e][: size + 2]


class _Chunks(httpx2.SyncByteStream):
    def __init__(self, chunks: list[bytes]) -> None:
        self._chunks = chunks

    def __iter__(self) -> Any:
        yield from self._chunks


def openai_client(stream_chunks: list[bytes] | None = None) -> openai.OpenAI:
    def handler(request: httpx2.Request) -> httpx2.Response:
        if stream_chunks is not None:
            return httpx2.Response(
                200, headers={"content-type": "text/event-stream"}, stream=_Chunks(stream_chunks)
            )
        return httpx2.Response(200, headers={"content-type": "application/json"}, content=CHAT)

    http = httpx2.Client(transport=httpx2.MockTransport(handler))
    return openai.OpenAI(api_key="sk-bench", http_client=http, max_retries=0)


def anthropic_client() -> anthropic.Anthropic:
    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, headers={"content-type": "application/json"}, content=MESSAGE)

    http = httpx2.Client(transport=httpx2.MockTransport(handler))
    return anthropic.Anthropic(api_key="sk-bench", http_client=http, max_retries=0)


Timing = tuple[float, float]  # wall seconds, CPU seconds
Work = Callable[[int], None]  # makes n calls (or n streams)


def measure(work: Work, total: int, block: int) -> tuple[list[Timing], list[Timing], Ledger]:
    """``total`` calls each way, in blocks of ``block`` alternating without and with capture.

    This VM's speed drifts by ±30 % over seconds (other tenants of the host), so a ratio of two
    long runs mostly measures the drift. Short blocks taken back to back see the same machine; the
    median of many per-block ratios is steady to about a percent. Pairs alternate their order
    (off-on, on-off, …) so a trend within a pair does not land on one side. The ledger keeps
    tallies only, as the plugin's does.
    """
    off: list[Timing] = []
    on: list[Timing] = []
    ledger = Ledger(keep_calls=False)
    ledger.push_owner(Owner("bench::test", "call"))
    capture = Capture(ledger)

    def timed(with_capture: bool, n: int) -> Timing:
        if with_capture:
            capture.install()
        try:
            start, start_cpu = time.perf_counter(), time.process_time()
            work(n)
            return time.perf_counter() - start, time.process_time() - start_cpu
        finally:
            if with_capture:
                capture.uninstall()

    timed(False, block)  # warm imports and caches on both sides
    timed(True, block)
    gc.collect()
    for pair in range(max(1, total // block)):
        for with_capture in (False, True) if pair % 2 == 0 else (True, False):
            (on if with_capture else off).append(timed(with_capture, block))
    return off, on, ledger


def bench_openai_chat(calls: int, block: int) -> dict[str, Any]:
    client = openai_client()

    def work(n: int) -> None:
        for _ in range(n):
            client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])

    return _result("openai chat, non-streaming", block, *measure(work, calls, block))


def bench_anthropic(calls: int, block: int) -> dict[str, Any]:
    client = anthropic_client()

    def work(n: int) -> None:
        for _ in range(n):
            client.messages.create(
                model="claude-sonnet-4-6", max_tokens=100, messages=[{"role": "user", "content": "hi"}]
            )

    return _result("anthropic messages, non-streaming", block, *measure(work, calls, block))


def bench_openai_stream(streams: int, chunks: int, block: int) -> dict[str, Any]:
    client = openai_client(chunked(sse_stream(chunks), chunks))

    def work(n: int) -> None:
        for _ in range(n):
            stream = client.chat.completions.create(
                model="gpt-4o-mini",
                messages=[{"role": "user", "content": "hi"}],
                stream=True,
                stream_options={"include_usage": True},
            )
            for _event in stream:
                pass

    result = _result(f"openai chat stream, {chunks} chunks", block, *measure(work, streams, block))
    result["per_chunk_overhead_us"] = round(result["per_call_overhead_us"] / (chunks + 2), 3)
    return result


def bench_async_openai(calls: int, block: int) -> dict[str, Any]:
    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, headers={"content-type": "application/json"}, content=CHAT)

    async def many(n: int) -> None:
        http = httpx2.AsyncClient(transport=httpx2.MockTransport(handler))
        client = openai.AsyncOpenAI(api_key="sk-bench", http_client=http, max_retries=0)
        for _ in range(n):
            await client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
            )

    return _result(
        "openai chat async, non-streaming", block, *measure(lambda n: asyncio.run(many(n)), calls, block)
    )


def _result(name: str, block: int, off: list[Timing], on: list[Timing], ledger: Ledger) -> dict[str, Any]:
    wall = sorted(b[0] / a[0] for a, b in zip(off, on, strict=True))
    cpu = sorted(b[1] / a[1] for a, b in zip(off, on, strict=True))
    per_call_off = statistics.median(t[1] for t in off) / block
    return {
        "benchmark": name,
        "calls_each_way": block * len(off),
        "block": block,
        "pairs": len(off),
        "without_s": round(sum(t[0] for t in off), 3),
        "with_s": round(sum(t[0] for t in on), 3),
        "ratio": round(statistics.median(wall), 4),
        "ratio_quartiles": [round(q, 4) for q in statistics.quantiles(wall, n=4)[::2]],
        "cpu_ratio": round(statistics.median(cpu), 4),
        "per_call_without_us": round(per_call_off * 1e6, 1),
        "per_call_overhead_us": round((statistics.median(cpu) - 1) * per_call_off * 1e6, 2),
        "calls_recorded": ledger.run.totals().calls,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=10_000, help="calls each way (default 10,000)")
    parser.add_argument("--block", type=int, default=200, help="calls per timed block (default 200)")
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--chunks", type=int, default=500)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    results = [
        bench_openai_chat(args.calls, args.block),
        bench_anthropic(args.calls, args.block),
        bench_async_openai(args.calls, args.block),
        bench_openai_stream(args.streams, args.chunks, max(1, args.block // 50)),
    ]
    machine = f"{platform.machine()} · Python {platform.python_version()} · openai {openai.__version__}"
    print(f"per-call overhead ({machine}): median ratio of alternating blocks, with ÷ without")
    print(f"{'benchmark':<38} {'pairs':>5} {'wall':>7} {'(quartiles)':>15} {'CPU':>7} {'µs/call':>8}")
    for r in results:
        low, high = r["ratio_quartiles"]
        print(
            f"{r['benchmark']:<38} {r['pairs']:>5} {r['ratio']:>6.3f}× ({low:.3f}–{high:.3f}) "
            f"{r['cpu_ratio']:>6.3f}× {r['per_call_overhead_us']:>8.2f}"
        )
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
