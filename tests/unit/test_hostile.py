"""Encoded, huge and malformed responses: recorded as well as they can be, never raised, bounded.

Through a real httpx2 client on a MockTransport (the client does its own decoding of what the test
reads; the plugin decodes its copy of the raw bytes), and through the stream tap directly.
"""

from __future__ import annotations

import gzip
import json
import tracemalloc
from collections.abc import Iterator

import brotli
import httpx2
import pytest
import zstandard

from pytest_tokenbudget.capture.recorder import MAX_BUFFERED_BODY
from pytest_tokenbudget.model import Call, CallState, Usage

USAGE = {"prompt_tokens": 31, "completion_tokens": 9, "total_tokens": 40}
CHAT = {"id": "x", "object": "chat.completion", "model": "gpt-4o", "choices": [], "usage": USAGE}
URL = "https://api.openai.com/v1/chat/completions"


def sse_body() -> bytes:
    chunk = {"id": "x", "object": "chat.completion.chunk", "model": "gpt-4o"}
    events = [{**chunk, "choices": [{"index": 0, "delta": {"content": "hi"}}]} for _ in range(50)]
    events.append({**chunk, "choices": [], "usage": USAGE})
    return b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"


ENCODERS = {
    "gzip": gzip.compress,
    "br": brotli.compress,
    "zstd": lambda data: zstandard.ZstdCompressor().compress(data),
}


def client_for(body: bytes, headers: dict[str, str], pieces: int = 1) -> httpx2.Client:
    size = max(1, len(body) // pieces)
    parts = [body[i : i + size] for i in range(0, len(body), size)]

    def answer(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, headers=headers, stream=httpx2.ByteStream(b"".join(parts)))

    return httpx2.Client(transport=httpx2.MockTransport(answer))


@pytest.mark.parametrize("encoding", sorted(ENCODERS))
def test_encoded_json_and_streams_are_read(calls: list[Call], encoding: str) -> None:
    """The plugin decodes its own copy of the raw bytes; the caller reads them untouched."""
    encode = ENCODERS[encoding]
    for body, content_type in (
        (json.dumps(CHAT).encode(), "application/json"),
        (sse_body(), "text/event-stream"),
    ):
        encoded = encode(body)
        headers = {"content-encoding": encoding, "content-type": content_type}
        with client_for(encoded, headers) as client, client.stream("POST", URL, json={}) as response:
            assert b"".join(response.iter_raw()) == encoded
    assert [(c.usage, c.state) for c in calls] == [(Usage(input_tokens=31, output_tokens=9), "complete")] * 2


def test_an_unknown_encoding_is_unparsed_not_raised(calls: list[Call]) -> None:
    headers = {"content-encoding": "x-custom", "content-type": "text/event-stream"}
    with client_for(b"\x00\x01garbage", headers) as client, client.stream("POST", URL, json={}) as response:
        assert response.read() == b"\x00\x01garbage"  # httpx2 passes unknown encodings through as is
    (call,) = calls
    assert call.state == CallState.UNPARSED


def test_corrupt_gzip_stream_is_unparsed_and_the_caller_sees_its_own_error(calls: list[Call]) -> None:
    headers = {"content-encoding": "gzip", "content-type": "text/event-stream"}
    with (
        client_for(b"\x1f\x8bnot really gzip", headers) as client,
        pytest.raises(httpx2.DecodingError),
        client.stream("POST", URL, json={}) as response,
    ):
        response.read()
    assert [c.state for c in calls] in ([CallState.UNPARSED], [CallState.FAILED])


def test_a_huge_json_body_read_as_a_stream_is_let_go(calls: list[Call]) -> None:
    """Over MAX_BUFFERED_BODY the plugin stops holding the body: memory bounded, call unparsed."""
    filler = b" " * (1 << 20)
    size = MAX_BUFFERED_BODY + (8 << 20)

    class Huge(httpx2.SyncByteStream):
        def __iter__(self) -> Iterator[bytes]:
            yield b'{"usage": {"prompt_tokens": 1, "completion_tokens": 1}, "pad": "'
            for _ in range(size // len(filler)):
                yield filler
            yield b'"}'

    def answer(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, headers={"content-type": "application/json"}, stream=Huge())

    tracemalloc.start()
    try:
        with (
            httpx2.Client(transport=httpx2.MockTransport(answer)) as client,
            client.stream("POST", URL, json={}) as response,
        ):
            received = sum(len(chunk) for chunk in response.iter_raw())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert received > MAX_BUFFERED_BODY
    assert peak < MAX_BUFFERED_BODY + (16 << 20)  # never the whole 72 MiB body, plus change
    (call,) = calls
    assert call.state == CallState.UNPARSED
    assert "over 64 MiB" in call.detail


@pytest.mark.parametrize(
    "usage",
    [
        {"prompt_tokens": -5, "completion_tokens": 3},
        {"prompt_tokens": 10**30, "completion_tokens": 3},
        {"prompt_tokens": "12", "completion_tokens": None},
        {"prompt_tokens": 1.5e308, "completion_tokens": float("nan")},
    ],
    ids=["negative", "absurd", "strings", "floats"],
)
def test_absurd_numbers_never_crash_or_go_negative(calls: list[Call], usage: dict[str, object]) -> None:
    body = json.dumps({**CHAT, "usage": usage}, allow_nan=True).encode()
    with client_for(body, {"content-type": "application/json"}) as client:
        client.post(URL, json={})
    (call,) = calls
    numbers = [getattr(call.usage, name) for name in ("input_tokens", "output_tokens", "total_tokens")]
    assert all(isinstance(n, int) and 0 <= n < 10**15 for n in numbers), numbers
