"""The code under test sees exactly what it would see without the plugin.

Same bytes (whole bodies and stream chunks), streams handed on as they arrive (never buffered
first), an early ``close()`` honoured, unparseable bodies and errors left to the SDK exactly as
they were — and each of those still recorded.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import anthropic
import httpx
import httpx2
import openai
import pytest
from llm_server import LLMServer

from pytest_tokenbudget.capture import Capture
from pytest_tokenbudget.ledger import Ledger, Owner
from pytest_tokenbudget.model import Call, CallState, Usage

ASK = [{"role": "user", "content": "hi"}]
CHAT_BODY = {"model": "gpt-4o-mini", "messages": ASK}
STREAM_BODY = {**CHAT_BODY, "stream": True, "stream_options": {"include_usage": True}}


class Captured:
    """Capture switched on and off inside one test, to compare the two."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        ledger = Ledger()
        ledger.push_owner(Owner("test", "call"))
        ledger.add_listener(self.calls.append)
        self._capture = Capture(ledger)

    def __enter__(self) -> list[Call]:
        self._capture.install()
        return self.calls

    def __exit__(self, *exc: object) -> None:
        self._capture.uninstall()


def both(action: Callable[[], Any]) -> tuple[Any, Any, list[Call]]:
    """``action()`` without the plugin, then with it: both results and the calls recorded."""
    plain = action()
    captured = Captured()
    with captured as calls:
        seen = action()
    return plain, seen, calls


# -- bytes --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("module", [httpx2, httpx], ids=["httpx2", "httpx"])
def test_bodies_and_stream_chunks_are_byte_identical(llm_server: LLMServer, module: Any) -> None:
    def fetch() -> tuple[bytes, bytes, list[bytes], dict[str, str]]:
        with module.Client(base_url=llm_server.url) as client:
            whole = client.post("/v1/chat/completions", json=CHAT_BODY)
            with client.stream("POST", "/v1/messages", json=STREAM_BODY) as streamed:
                raw = list(streamed.iter_raw())
            with client.stream("POST", "/v1/chat/completions", json=STREAM_BODY) as lines:
                text = "".join(lines.iter_lines())
            headers = {k: v for k, v in whole.headers.items() if k != "date"}  # the clock moves on
            return whole.content, text.encode(), raw, headers

    plain, seen, calls = both(fetch)
    assert seen[0] == plain[0]
    assert seen[1] == plain[1]
    assert b"".join(seen[2]) == b"".join(plain[2])
    assert seen[3] == plain[3]
    assert [c.api for c in calls] == ["openai.chat", "anthropic.messages", "openai.chat"]
    assert all(c.state == CallState.COMPLETE for c in calls)


def test_async_stream_bytes_identical(llm_server: LLMServer) -> None:
    async def fetch() -> bytes:
        async with (
            httpx2.AsyncClient(base_url=llm_server.url) as client,
            client.stream(
                "POST", "/v1/responses", json={"model": "o4-mini", "input": "x", "stream": True}
            ) as r,
        ):
            return b"".join([chunk async for chunk in r.aiter_bytes()])

    plain, seen, calls = both(lambda: asyncio.run(fetch()))
    assert seen == plain
    assert b"response.completed" in seen
    assert calls[0].usage.reasoning_tokens == 128


# -- streams flow as they arrive ------------------------------------------------------------------------


def test_first_chunk_arrives_before_the_stream_ends(llm_server: LLMServer) -> None:
    """The server waits 0.4 s between events: the first must reach the SDK long before the last is sent."""
    with (
        Captured() as calls,
        openai.OpenAI(base_url=f"{llm_server.url}/v1", api_key="k", max_retries=0) as client,
    ):
        started = time.perf_counter()
        stream = client.chat.completions.create(
            model="gpt-4o-mini",
            messages=ASK,
            stream=True,
            stream_options={"include_usage": True},
            extra_headers={"x-chunk-delay": "0.4"},
        )
        arrivals = [time.perf_counter() - started for _chunk in stream]
    assert len(arrivals) == 7  # 5 text pieces, the finish chunk, the usage chunk
    assert arrivals[0] < 0.35 < 2.4 < arrivals[-1]  # 6 gaps of 0.4 s: the stream was not buffered
    assert calls[0].usage == Usage(input_tokens=212, output_tokens=42)


def test_early_close_is_honoured_and_recorded(llm_server: LLMServer) -> None:
    with (
        Captured() as calls,
        anthropic.Anthropic(base_url=llm_server.url, api_key="k", max_retries=0) as client,
        client.messages.stream(
            model="claude-sonnet-4-6", max_tokens=9, messages=ASK, extra_headers={"x-chunk-delay": "0.3"}
        ) as stream,
    ):
        started = time.perf_counter()
        first = next(iter(stream))
        stream.close()
        closed_after = time.perf_counter() - started
    assert first.type == "message_start"
    assert closed_after < 1.0  # the remaining 2.4 s of the stream were not waited for
    (call,) = calls
    assert call.state == CallState.CLOSED_EARLY
    assert call.usage.input_tokens == 2210  # what message_start reported before the close


# -- what the plugin cannot read, and errors --------------------------------------------------------------


def test_unparseable_body_passes_through_and_is_counted_unparsed(llm_server: LLMServer) -> None:
    def fetch() -> tuple[int, bytes]:
        with httpx2.Client(base_url=llm_server.url) as client:
            response = client.post("/v1/chat/completions", json=CHAT_BODY, headers={"x-reply": "garbage"})
            return response.status_code, response.content

    plain, seen, calls = both(fetch)
    assert seen == plain == (200, b"<html>upstream proxy error, not JSON</html>")
    (call,) = calls
    assert call.state == CallState.UNPARSED
    assert call.usage == Usage()
    assert call.detail
    assert "upstream" not in call.detail  # no response text in the record


def test_sdk_errors_are_unchanged(llm_server: LLMServer) -> None:
    def call_sdk(headers: dict[str, str]) -> tuple[str, str, int]:
        before = llm_server.requests
        with openai.OpenAI(base_url=f"{llm_server.url}/v1", api_key="k", max_retries=2) as client:
            try:
                client.with_options(timeout=5).chat.completions.create(
                    model="gpt-4o-mini", messages=ASK, extra_headers=headers
                )
            except Exception as exc:  # the SDK's own error type, whatever it is
                return type(exc).__name__, str(exc), llm_server.requests - before
        raise AssertionError("no error")

    plain, seen, calls = both(lambda: call_sdk({"x-status": "500"}))
    assert seen == plain
    assert seen[0] == "InternalServerError"
    assert seen[2] == 3  # the SDK's two retries happened as before
    assert [(c.state, c.status_code, c.usage.total_tokens) for c in calls] == [(CallState.FAILED, 500, 0)] * 3

    plain, seen, calls = both(lambda: call_sdk({"x-reply": "garbage"}))
    assert seen == plain  # the SDK's own complaint about the body, not ours
    assert [c.state for c in calls] == [CallState.UNPARSED]


def test_connection_errors_are_unchanged() -> None:
    with httpx2.Client() as probe:  # a port nothing listens on
        url = "http://127.0.0.1:9/v1/chat/completions"

        def fetch() -> tuple[type[BaseException], str]:
            try:
                probe.post(url, json=CHAT_BODY)
            except httpx2.HTTPError as exc:
                return type(exc), str(exc)
            raise AssertionError("connected")

        plain, seen, calls = both(fetch)
    assert seen == plain
    assert [(c.state, c.usage.total_tokens) for c in calls] == [(CallState.FAILED, 0)]
    assert calls[0].detail.startswith("ConnectError")


def test_a_non_llm_request_is_not_touched(llm_server: LLMServer) -> None:
    with Captured() as calls, httpx2.Client(base_url=llm_server.url) as client:
        response = client.post("/v1/files", json={})  # not an API shape the plugin knows
    assert response.status_code == 404
    assert calls == []
