"""Calls that report no usage are estimated (input from the request, output from the text received);
calls that cannot be estimated are unmetered. Real SDKs and raw clients, real tiktoken encodings."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
import tiktoken
from echo_server import REPLY, EchoServer

from pytest_tokenbudget.model import Call, Tally, Usage
from pytest_tokenbudget.tokens import estimates, tokenizer

openai = pytest.importorskip("openai")

MESSAGES = [{"role": "user", "content": "Say hi to the budget."}]
O200K = tiktoken.get_encoding("o200k_base")


@pytest.fixture(scope="module")
def server() -> Iterator[EchoServer]:
    running = EchoServer()
    yield running
    running.stop()


@pytest.fixture
def calls_owner() -> str:
    """The conftest ``calls`` fixture charges this module's calls to a realistic node id."""
    return "tests/test_app.py::test_chat"


def only(calls: list[Call]) -> Call:
    assert len(calls) == 1, [(c.api, c.state) for c in calls]
    return calls[0]


def _client(server: EchoServer, **headers: str) -> Any:
    return openai.OpenAI(
        base_url=server.url + "/v1", api_key="sk-test", max_retries=0, default_headers=headers
    )


# -- estimated ------------------------------------------------------------------------------------


def test_reply_without_usage_is_estimated_from_request_and_reply_text(
    server: EchoServer, calls: list[Call]
) -> None:
    with _client(server, **{"x-omit-usage": "1"}) as client:
        reply = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert reply.usage is None
    call = only(calls)
    # input: 3 (framing) + 1 ("user") + 6 (content) + 3 (reply priming); output: the reply's 9 tokens
    assert call.usage == Usage(input_tokens=13, output_tokens=9)
    assert len(O200K.encode("Say hi to the budget.")) == 6
    assert len(O200K.encode(REPLY)) == 9
    assert (call.estimated, call.state, call.source) == (True, "no-usage", "live")
    assert call.detail == "response reports no usage; estimated input and output, tiktoken:o200k_base"


def test_estimate_equals_what_the_server_reports_when_it_does(server: EchoServer, calls: list[Call]) -> None:
    with _client(server) as client, _client(server, **{"x-omit-usage": "1"}) as stripped:
        reported = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        stripped.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert reported.usage.prompt_tokens == 13
    assert [(c.usage, c.estimated) for c in calls] == [
        (Usage(input_tokens=13, output_tokens=9), False),
        (Usage(input_tokens=13, output_tokens=9), True),
    ]


def test_stream_without_usage_chunk_is_estimated_from_the_deltas(
    server: EchoServer, calls: list[Call]
) -> None:
    with _client(server) as client:
        stream = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
        text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text == REPLY
    call = only(calls)
    assert call.usage == Usage(input_tokens=13, output_tokens=9)
    assert (call.estimated, call.streamed, call.state) == (True, True, "no-usage")


def test_stream_with_usage_chunk_is_not_estimated(server: EchoServer, calls: list[Call]) -> None:
    with _client(server) as client:
        stream = client.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
        for _ in stream:
            pass
    call = only(calls)
    assert (call.usage, call.estimated, call.state, call.detail) == (
        Usage(input_tokens=13, output_tokens=9),
        False,
        "complete",
        "",
    )


def _sse(*events: dict[str, Any]) -> bytes:
    return b"".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in events)


def test_anthropic_stream_without_usage_counts_text_and_tool_input(calls: list[Call]) -> None:
    body = _sse(
        {"type": "message_start", "message": {"id": "m", "model": "claude-sonnet-4-5", "content": []}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Checking the "}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "weather."}},
        {
            "type": "content_block_start",
            "index": 1,
            "content_block": {"type": "tool_use", "id": "t", "name": "get_weather", "input": {}},
        },
        {
            "type": "content_block_delta",
            "index": 1,
            "delta": {"type": "input_json_delta", "partial_json": '{"city": "Paris"}'},
        },
        {"type": "message_stop"},
    )
    request = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 100,
        "system": "You are terse.",
        "messages": [{"role": "user", "content": "Weather in Paris?"}],
    }
    transport = httpx2.MockTransport(
        lambda r: httpx2.Response(200, content=body, headers={"content-type": "text/event-stream"})
    )
    with (
        httpx2.Client(transport=transport) as client,
        client.stream("POST", "https://api.anthropic.com/v1/messages", json=request) as response,
    ):
        for _ in response.iter_bytes():
            pass
    call = only(calls)
    expected_input = tokenizer.estimate_request("anthropic.messages", request, "claude-sonnet-4-5").total
    output_text = "Checking the weather.get_weather" + '{"city": "Paris"}'
    assert expected_input == 19  # system 3+1+4, user 3+1+4, priming 3
    assert call.usage == Usage(input_tokens=19, output_tokens=len(O200K.encode(output_text)))
    assert call.usage.output_tokens == 11
    assert (call.estimated, call.source, call.model) == (True, "mocked", "claude-sonnet-4-5")
    assert call.detail.endswith("estimated input and output, approx:o200k_base")


def test_responses_body_without_usage_counts_output_text_and_function_calls(calls: list[Call]) -> None:
    reply = {
        "id": "r",
        "object": "response",
        "model": "gpt-4.1-mini",
        "instructions": "Be brief and never repeat these instructions in the count.",
        "output": [
            {"type": "reasoning", "summary": [{"type": "summary_text", "text": "Look it up."}]},
            {"type": "function_call", "name": "lookup", "arguments": '{"q":"tokens"}'},
            {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "Here you are."}],
            },
        ],
    }
    request = {"model": "gpt-4.1-mini", "instructions": "Be brief.", "input": "What is a token?"}
    transport = httpx2.MockTransport(lambda r: httpx2.Response(200, json=reply))
    with httpx2.Client(transport=transport) as client:
        client.post("https://api.openai.com/v1/responses", json=request)
    call = only(calls)
    generated = "Look it up." + "lookup" + '{"q":"tokens"}' + "Here you are."
    assert call.usage == Usage(
        input_tokens=tokenizer.estimate_request("openai.responses", request).total,
        output_tokens=len(O200K.encode(generated)),
    )
    assert call.usage == Usage(input_tokens=19, output_tokens=13)  # instructions 3+1+3, input 3+1+5, 3
    assert call.estimated is True


def test_output_text_of_a_gemini_json_array_stream() -> None:
    chunks = [
        {"candidates": [{"content": {"parts": [{"text": "Hel"}], "role": "model"}}]},
        {
            "candidates": [
                {"content": {"parts": [{"text": "lo"}, {"functionCall": {"name": "f", "args": {}}}]}}
            ]
        },
    ]
    assert (
        estimates.output_text("gemini.generate", json.dumps(chunks).encode()) == 'Hello{"name":"f","args":{}}'
    )


def test_output_text_of_ollama_ndjson_and_cohere_sse() -> None:
    lines = [
        {"message": {"role": "assistant", "content": "Hi"}, "done": False},
        {"message": {"role": "assistant", "content": " there"}, "done": True},
    ]
    ndjson = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
    assert estimates.output_text("ollama.chat", ("ndjson", [ndjson[:20], ndjson[20:]])) == "Hi there"
    events = [
        {"type": "message-start"},
        {"type": "content-delta", "delta": {"message": {"content": {"text": "Bon"}}}},
        {"type": "content-delta", "delta": {"message": {"content": {"text": "jour"}}}},
        {"type": "message-end", "delta": {"finish_reason": "COMPLETE"}},
    ]
    sse = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events)
    assert estimates.output_text("cohere.chat", ("sse", [sse])) == "Bonjour"


def test_gemini_request_counts_its_text_parts_and_declarations() -> None:
    body = {
        "systemInstruction": {"parts": [{"text": "Be kind."}]},
        "contents": [{"role": "user", "parts": [{"text": "Hi"}, {"inlineData": {"data": "AAAA"}}]}],
    }
    estimate = estimates.estimate_input("gemini.generate", body, "gemini-2.5-flash")
    assert estimate == estimates.InputEstimate(len(O200K.encode("Be kind.\nHi")), "approx:o200k_base", False)
    assert estimate is not None
    assert estimate.tokens == 4  # the inline image is not text


# -- unmetered ------------------------------------------------------------------------------------


def test_binary_request_without_reported_usage_is_unmetered(calls: list[Call]) -> None:
    transport = httpx2.MockTransport(lambda r: httpx2.Response(200, json={"id": "c", "choices": []}))
    with httpx2.Client(transport=transport) as client:
        client.post("https://api.openai.com/v1/chat/completions", content=b"\x00\x01\x02 protobuf")
    call = only(calls)
    assert (call.state, call.usage, call.estimated) == ("unmetered", Usage(), False)
    assert call.detail == "response reports no usage; unmetered: request body is not JSON"
    tally = Tally.of([call])
    assert (tally.unmetered_calls, tally.to_dict()["unmetered_calls"]) == (1, 1)
    assert Tally.from_dict(tally.to_dict()).unmetered_calls == 1


def test_a_request_without_countable_text_is_unmetered(calls: list[Call]) -> None:
    transport = httpx2.MockTransport(
        lambda r: httpx2.Response(200, json={"modelVersion": "gemini-2.5-flash"})
    )
    with httpx2.Client(transport=transport) as client:
        client.post(
            "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:generateContent",
            json={"contents": [{"parts": [{"fileData": {"fileUri": "gs://b/f.pdf"}}]}]},
        )
    call = only(calls)
    assert (call.state, call.model, call.usage) == ("unmetered", "gemini-2.5-flash", Usage())
    assert call.detail == "response reports no usage; unmetered: request holds no countable text"


def test_failed_calls_are_neither_estimated_nor_unmetered(calls: list[Call]) -> None:
    transport = httpx2.MockTransport(lambda r: httpx2.Response(429, json={"error": "slow down"}))
    with httpx2.Client(transport=transport) as client:
        client.post(
            "https://api.openai.com/v1/chat/completions", json={"model": "gpt-4o", "messages": MESSAGES}
        )
    assert [(c.state, c.estimated, c.usage) for c in calls] == [("failed", False, Usage())]


# -- the fallback ---------------------------------------------------------------------------------


def test_without_encodings_the_estimate_uses_the_heuristic_and_says_so(
    server: EchoServer, calls: list[Call], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "empty"))
    tokenizer.reset()
    try:
        with _client(server, **{"x-omit-usage": "1"}) as client:
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        call = only(calls)
        # input: 3 + ceil(4/4) + ceil(21/4) + 3 = 13; output: ceil(39 bytes / 4) = 10
        assert call.usage == Usage(input_tokens=13, output_tokens=10)
        assert call.detail == "response reports no usage; estimated input and output, heuristic"
        assert len(tokenizer.notices()) == 1
        assert tokenizer.notices()[0].startswith("token estimates for o200k_base models use a heuristic")
    finally:
        monkeypatch.undo()
        tokenizer.reset()
