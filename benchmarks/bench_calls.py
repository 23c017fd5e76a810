"""Per-call overhead of capture: the real openai and anthropic SDKs on an in-process transport.

Each figure is a ratio measured side by side in one process: the same call with capture installed
÷ without, each call timed alone and the two sides taken in turns (off, on, on, off …), so drift
hits both alike; the ratio is of the two sides' medians, with its range over five stretches of the
run (see :func:`measure`).

    python benchmarks/bench_calls.py [--calls 10000] [--streams 400] [--json results.json]
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
from pytest_tokenbudget.config import resolve
from pytest_tokenbudget.inspection.inspector import Inspector
from pytest_tokenbudget.ledger import Ledger, Owner
from pytest_tokenbudget.pricing.prices import Pricer

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


One = Callable[[], object]  # one call, or one whole stream (its result is dropped)
WARM_UP = 200  # calls each way before timing: imports, caches, the SDK's lazy set-up


class Bench:
    """Capture for one benchmark, over a ledger that keeps tallies only, as the plugin's does."""

    def __init__(self, *, whole_plugin: bool = False) -> None:
        self.ledger = Ledger(keep_calls=False)
        self.ledger.push_owner(Owner("bench::test", "call"))
        self.capture = Capture(self.ledger)
        self.settle: Callable[[], None] = lambda: None
        if whole_plugin:  # what the plugin adds by default: prices, request inspection at teardown
            settings = resolve({}, {}, pyproject=None, root=Path.cwd())
            self.ledger.add_listener(Pricer.from_settings(settings).price)
            inspector = Inspector.from_settings(settings)
            self.capture.recorder.observers.append(inspector.observe)
            self.settle = lambda: inspector.settle(self.ledger.run, "bench::test")

    def timed(self, one: One, with_capture: bool) -> float:
        """Seconds of one call, with capture installed (and the call settled, as at a test's
        teardown) or not; installing and removing it is not timed."""
        if with_capture:
            self.capture.install()
        try:
            start = time.perf_counter()
            one()
            if with_capture:
                self.settle()
            return time.perf_counter() - start
        finally:
            if with_capture:
                self.capture.uninstall()


def measure(one: One, calls: int, *, whole_plugin: bool = False) -> tuple[list[float], list[float], Ledger]:
    """``calls`` calls each way, each timed alone, alternating without and with capture.

    This VM's speed drifts by ±30 % over seconds (other tenants of the host): a ratio of two long
    runs mostly measures the drift, and even 200-call blocks gave quartiles ±5 % apart. Calls taken
    in turns see the same machine, and the median of each side ignores the calls a neighbour
    interrupted: three runs agree within 0.003. Pairs alternate their order (off-on, on-off, …) so
    what a call leaves in the caches does not favour one side.
    """
    bench = Bench(whole_plugin=whole_plugin)
    for _ in range(WARM_UP):
        bench.timed(one, False)
        bench.timed(one, True)
    gc.collect()
    off: list[float] = []
    on: list[float] = []
    for index in range(calls):
        for with_capture in (False, True) if index % 2 == 0 else (True, False):
            (on if with_capture else off).append(bench.timed(one, with_capture))
    return off, on, bench.ledger


def chat(client: openai.OpenAI) -> One:
    return lambda: client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
    )


def bench_openai_chat(calls: int) -> dict[str, Any]:
    return _result("openai chat, non-streaming", *measure(chat(openai_client()), calls))


def bench_openai_chat_whole_plugin(calls: int) -> dict[str, Any]:
    """As :func:`bench_openai_chat`, with the listeners the plugin adds: genai-prices prices each
    call, and the request inspector reads its anatomy and context-window use (each call is settled
    as its own test's teardown would)."""
    one = chat(openai_client())
    return _result("openai chat, + prices and inspection", *measure(one, calls, whole_plugin=True))


def bench_anthropic(calls: int) -> dict[str, Any]:
    client = anthropic_client()

    def one() -> None:
        client.messages.create(
            model="claude-sonnet-4-6", max_tokens=100, messages=[{"role": "user", "content": "hi"}]
        )

    return _result("anthropic messages, non-streaming", *measure(one, calls))


def chat_stream(client: openai.OpenAI) -> One:
    """One streamed chat completion, read to its end (usage in the last chunk)."""

    def one() -> None:
        stream = client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        for _event in stream:
            pass

    return one


def bench_openai_stream(streams: int, chunks: int) -> dict[str, Any]:
    one = chat_stream(openai_client(chunked(sse_stream(chunks), chunks)))
    result = _result(f"openai chat stream, {chunks} chunks", *measure(one, streams))
    result["per_chunk_overhead_us"] = round(result["per_call_overhead_us"] / (chunks + 2), 3)
    return result


def bench_async_openai(calls: int) -> dict[str, Any]:
    """Each call runs to completion on one event loop (``run_until_complete``: a few µs, both sides)."""

    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, headers={"content-type": "application/json"}, content=CHAT)

    loop = asyncio.new_event_loop()
    http = httpx2.AsyncClient(transport=httpx2.MockTransport(handler))
    client = openai.AsyncOpenAI(api_key="sk-bench", http_client=http, max_retries=0)

    def one() -> None:
        loop.run_until_complete(
            client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
        )

    try:
        return _result("openai chat async, non-streaming", *measure(one, calls))
    finally:
        loop.close()


def _result(name: str, off: list[float], on: list[float], ledger: Ledger, parts: int = 5) -> dict[str, Any]:
    """The ratio of the two sides' medians; its range over ``parts`` consecutive stretches of the run."""
    size = len(off) // parts
    stretches = [
        statistics.median(on[i * size : (i + 1) * size]) / statistics.median(off[i * size : (i + 1) * size])
        for i in range(parts)
    ]
    without, with_ = statistics.median(off), statistics.median(on)
    return {
        "benchmark": name,
        "calls_each_way": len(off),
        "without_s": round(sum(off), 3),
        "with_s": round(sum(on), 3),
        "ratio": round(with_ / without, 4),
        "ratio_range": [round(min(stretches), 4), round(max(stretches), 4)],
        "per_call_without_us": round(without * 1e6, 1),
        "per_call_overhead_us": round((with_ - without) * 1e6, 2),
        "calls_recorded": ledger.run.totals().calls,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=10_000, help="calls each way (default 10,000)")
    parser.add_argument("--streams", type=int, default=400, help="streams each way (default 400)")
    parser.add_argument("--chunks", type=int, default=500)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    results = [
        bench_openai_chat(args.calls),
        bench_openai_chat_whole_plugin(args.calls),
        bench_anthropic(args.calls),
        bench_async_openai(args.calls),
        bench_openai_stream(args.streams, args.chunks),
    ]
    machine = f"{platform.machine()} · Python {platform.python_version()} · openai {openai.__version__}"
    print(f"per-call overhead ({machine}): median with ÷ median without, calls taken in turns")
    print(f"{'benchmark':<38} {'calls':>7} {'ratio':>7} {'(range)':>15} {'µs/call':>9}")
    for r in results:
        low, high = r["ratio_range"]
        print(
            f"{r['benchmark']:<38} {r['calls_each_way']:>7,} {r['ratio']:>6.3f}× ({low:.3f}–{high:.3f}) "
            f"{r['per_call_overhead_us']:>9.2f}"
        )
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
