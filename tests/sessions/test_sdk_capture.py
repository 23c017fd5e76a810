"""The real openai (3.x, on httpx2) and anthropic (2.x) SDKs: sync, async, streamed and not.

Against a real HTTP server on 127.0.0.1 (tests/helpers/llm_server.py), through vcrpy cassettes, and with
the plain ``httpx`` package, respx, pytest-httpx and a MockTransport. Each asserts the exact numbers
in the plugin's meaning (input includes cached and cache-write input, output includes reasoning),
and that each call is counted once.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import anthropic
import httpx
import httpx2
import openai
import pytest
import respx
import vcr
from llm_server import CHAT_MODEL, CLAUDE_MODEL, EMBEDDING_MODEL, RESPONSES_MODEL, LLMServer

from pytest_tokenbudget.model import Call, Usage

CHAT = Usage(input_tokens=1250, cached_input_tokens=1024, output_tokens=96)
TOOL = Usage(input_tokens=310, output_tokens=18)
STREAM = Usage(input_tokens=212, output_tokens=42)
RESPONSES = Usage(input_tokens=520, cached_input_tokens=256, output_tokens=180, reasoning_tokens=128)
EMBEDDING = Usage(input_tokens=8)
MESSAGES = Usage(input_tokens=2948, cache_write_tokens=2048, output_tokens=120)
MESSAGES_STREAM = Usage(input_tokens=2210, cached_input_tokens=1800, output_tokens=85)
ASK = [{"role": "user", "content": "Where is my order #4417?"}]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "lookup_order",
            "description": "Find an order by number.",
            "parameters": {"type": "object", "properties": {"order": {"type": "integer"}}},
        },
    }
]


@pytest.fixture
def oai(llm_server: LLMServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{llm_server.url}/v1", api_key="sk-test", max_retries=0) as client:
        yield client


@pytest.fixture
def claude(llm_server: LLMServer) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=llm_server.url, api_key="sk-ant-test", max_retries=0) as client:
        yield client


def only(calls: list[Call]) -> Call:
    assert len(calls) == 1, [(c.api, c.state, c.detail) for c in calls]
    return calls[0]


def facts(call: Call) -> tuple[str, str, str, bool, str, str]:
    return call.provider, call.api, call.model, call.streamed, call.source, call.state


# -- OpenAI, sync -----------------------------------------------------------------------------------


def test_openai_chat(oai: openai.OpenAI, calls: list[Call]) -> None:
    reply = oai.chat.completions.create(model="gpt-4o-mini", messages=ASK)
    assert reply.usage is not None
    assert reply.usage.prompt_tokens == 1250  # the SDK sees what it would without the plugin
    call = only(calls)
    assert call.usage == CHAT
    assert facts(call) == ("openai-compatible", "openai.chat", CHAT_MODEL, False, "live", "complete")
    assert call.host == "127.0.0.1"
    assert call.status_code == 200
    assert call.duration_s > 0


def test_openai_tool_call_round_trip(oai: openai.OpenAI, calls: list[Call]) -> None:
    first = oai.chat.completions.create(model="gpt-4o-mini", messages=ASK, tools=TOOLS)
    (tool_call,) = first.choices[0].message.tool_calls or []
    follow_up = [
        *ASK,
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": tool_call.id, "content": '{"status": "shipped"}'},
    ]
    second = oai.chat.completions.create(model="gpt-4o-mini", messages=follow_up, tools=TOOLS)
    assert second.choices[0].finish_reason == "stop"
    assert [c.usage for c in calls] == [TOOL, CHAT]


def test_openai_chat_stream_with_usage(oai: openai.OpenAI, calls: list[Call]) -> None:
    stream = oai.chat.completions.create(
        model="gpt-4o-mini", messages=ASK, stream=True, stream_options={"include_usage": True}
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text == "Your order #4417 shipped on Monday and arrives Thursday."
    call = only(calls)
    assert call.usage == STREAM
    assert facts(call) == ("openai-compatible", "openai.chat", CHAT_MODEL, True, "live", "complete")
    assert not call.estimated


def test_openai_chat_stream_without_usage_is_estimated(oai: openai.OpenAI, calls: list[Call]) -> None:
    for _chunk in oai.chat.completions.create(model="gpt-4o-mini", messages=ASK, stream=True):
        pass
    call = only(calls)
    assert call.estimated  # the stream reported nothing: counted from the text, marked as such
    assert call.usage.output_tokens > 0
    assert call.usage.input_tokens > 0


def test_openai_responses(oai: openai.OpenAI, calls: list[Call]) -> None:
    response = oai.responses.create(model="o4-mini", input="Where is my order?")
    assert response.usage is not None
    assert response.usage.output_tokens_details.reasoning_tokens == 128
    call = only(calls)
    assert call.usage == RESPONSES
    assert facts(call) == (
        "openai-compatible",
        "openai.responses",
        RESPONSES_MODEL,
        False,
        "live",
        "complete",
    )


def test_openai_responses_stream(oai: openai.OpenAI, calls: list[Call]) -> None:
    with oai.responses.stream(model="o4-mini", input="Where is my order?") as stream:
        deltas = [event.delta for event in stream if event.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert len(deltas) == 5
    assert final.usage is not None
    assert final.usage.total_tokens == 700
    call = only(calls)
    assert call.usage == RESPONSES
    assert facts(call) == ("openai-compatible", "openai.responses", RESPONSES_MODEL, True, "live", "complete")


def test_openai_embeddings(oai: openai.OpenAI, calls: list[Call]) -> None:
    result = oai.embeddings.create(model="text-embedding-3-small", input=["refund policy", "shipping"])
    assert len(result.data) == 2
    call = only(calls)
    assert call.usage == EMBEDDING
    assert (call.api, call.model) == ("openai.embeddings", EMBEDDING_MODEL)


# -- OpenAI, async ----------------------------------------------------------------------------------


def test_openai_async_chat_and_stream(llm_server: LLMServer, calls: list[Call]) -> None:
    async def main() -> str:
        async with openai.AsyncOpenAI(base_url=f"{llm_server.url}/v1", api_key="sk-test") as client:
            await client.chat.completions.create(model="gpt-4o-mini", messages=ASK)
            stream = await client.chat.completions.create(
                model="gpt-4o-mini", messages=ASK, stream=True, stream_options={"include_usage": True}
            )
            pieces = [c.choices[0].delta.content or "" async for c in stream if c.choices]
            await client.responses.create(model="o4-mini", input="hi")
            return "".join(pieces)

    assert asyncio.run(main()).endswith("Thursday.")
    assert [(c.usage, c.streamed) for c in calls] == [(CHAT, False), (STREAM, True), (RESPONSES, False)]


def test_openai_async_concurrent_calls_all_counted(llm_server: LLMServer, calls: list[Call]) -> None:
    async def main() -> None:
        async with openai.AsyncOpenAI(base_url=f"{llm_server.url}/v1", api_key="sk-test") as client:
            await asyncio.gather(
                *(client.chat.completions.create(model="gpt-4o-mini", messages=ASK) for _ in range(20))
            )

    asyncio.run(main())
    assert len(calls) == 20
    assert all(c.usage == CHAT for c in calls)


# -- Anthropic ----------------------------------------------------------------------------------------


def test_anthropic_message_with_cache_write(claude: anthropic.Anthropic, calls: list[Call]) -> None:
    reply = claude.messages.create(model="claude-sonnet-4-6", max_tokens=256, messages=ASK)
    assert reply.usage.cache_creation_input_tokens == 2048
    call = only(calls)
    assert call.usage == MESSAGES
    assert facts(call) == (
        "anthropic-compatible",
        "anthropic.messages",
        CLAUDE_MODEL,
        False,
        "live",
        "complete",
    )


def test_anthropic_stream_helper(claude: anthropic.Anthropic, calls: list[Call]) -> None:
    with claude.messages.stream(model="claude-sonnet-4-6", max_tokens=256, messages=ASK) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text.startswith("Your order")
    assert final.usage.output_tokens == 85
    call = only(calls)
    assert call.usage == MESSAGES_STREAM
    assert call.streamed


def test_anthropic_raw_stream(claude: anthropic.Anthropic, calls: list[Call]) -> None:
    events = list(claude.messages.create(model="claude-sonnet-4-6", max_tokens=9, messages=ASK, stream=True))
    assert events[0].type == "message_start"
    assert only(calls).usage == MESSAGES_STREAM


def test_anthropic_async(llm_server: LLMServer, calls: list[Call]) -> None:
    async def main() -> None:
        async with anthropic.AsyncAnthropic(base_url=llm_server.url, api_key="sk-ant-test") as client:
            await client.messages.create(model="claude-sonnet-4-6", max_tokens=256, messages=ASK)
            async with client.messages.stream(
                model="claude-sonnet-4-6", max_tokens=256, messages=ASK
            ) as stream:
                async for _text in stream.text_stream:
                    pass

    asyncio.run(main())
    assert [(c.usage, c.streamed) for c in calls] == [(MESSAGES, False), (MESSAGES_STREAM, True)]


# -- the plain httpx package, and the mocking libraries ------------------------------------------------


def test_plain_httpx_client_sync_and_async(llm_server: LLMServer, calls: list[Call]) -> None:
    body = {"model": "gpt-4o-mini", "messages": ASK}
    with httpx.Client(base_url=llm_server.url) as client:
        assert client.post("/v1/chat/completions", json=body).json()["usage"]["prompt_tokens"] == 1250
        with client.stream("POST", "/v1/messages", json={**body, "stream": True}) as response:
            assert b"message_delta" in b"".join(response.iter_bytes())

    async def main() -> None:
        async with httpx.AsyncClient(base_url=llm_server.url) as client:
            await client.post("/v1/responses", json={"model": "o4-mini", "input": "hi"})

    asyncio.run(main())
    assert [c.usage for c in calls] == [CHAT, MESSAGES_STREAM, RESPONSES]
    assert all(c.source == "live" for c in calls)


def _openai_body(usage: dict[str, int]) -> dict[str, object]:
    message = {"role": "assistant", "content": "Hi"}
    choice = {"index": 0, "message": message, "finish_reason": "stop"}
    return {"id": "x", "object": "chat.completion", "created": 1, "model": "gpt-4o", "choices": [choice],
            "usage": usage}  # fmt: skip


def test_mock_transport_under_the_openai_sdk(calls: list[Call]) -> None:
    def answer(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, json=_openai_body({"prompt_tokens": 5, "completion_tokens": 3}))

    http_client = httpx2.Client(transport=httpx2.MockTransport(answer))
    with openai.OpenAI(api_key="sk-test", http_client=http_client) as client:
        client.chat.completions.create(model="gpt-4o", messages=ASK)
    call = only(calls)
    assert call.usage == Usage(input_tokens=5, output_tokens=3)
    assert (call.provider, call.source) == ("openai", "mocked")


def test_respx_mocked_httpx(calls: list[Call]) -> None:
    with respx.mock(base_url="https://api.openai.com") as mock:
        mock.post("/v1/chat/completions").respond(
            json=_openai_body({"prompt_tokens": 9, "completion_tokens": 4})
        )
        httpx.post("https://api.openai.com/v1/chat/completions", json={"model": "gpt-4o", "messages": ASK})
    call = only(calls)
    assert call.usage == Usage(input_tokens=9, output_tokens=4)
    assert (call.provider, call.model, call.source) == ("openai", "gpt-4o", "mocked")


def test_pytest_httpx_mocked(calls: list[Call], httpx_mock: object) -> None:
    httpx_mock.add_response(  # type: ignore[attr-defined]
        url="https://api.groq.com/openai/v1/chat/completions",
        json=_openai_body({"prompt_tokens": 12, "completion_tokens": 2}),
    )
    with httpx.Client() as client:
        client.post("https://api.groq.com/openai/v1/chat/completions", json={"messages": ASK})
    call = only(calls)
    assert call.usage == Usage(input_tokens=12, output_tokens=2)
    assert (call.provider, call.source) == ("groq", "mocked")


# -- vcrpy cassettes: recorded live, replayed offline -----------------------------------------------------


def test_vcrpy_records_then_replays_both_sdks(
    llm_server: LLMServer, calls: list[Call], tmp_path: Path
) -> None:
    cassette = str(tmp_path / "support.yaml")
    recorder = vcr.VCR(filter_headers=["authorization", "x-api-key"], match_on=["method", "path"])

    def session() -> None:
        with (
            openai.OpenAI(base_url=f"{llm_server.url}/v1", api_key="sk-secret-1", max_retries=0) as oai,
            anthropic.Anthropic(base_url=llm_server.url, api_key="sk-ant-secret-2", max_retries=0) as claude,
        ):
            oai.chat.completions.create(model="gpt-4o-mini", messages=ASK)
            for _ in oai.chat.completions.create(
                model="gpt-4o-mini", messages=ASK, stream=True, stream_options={"include_usage": True}
            ):
                pass
            with claude.messages.stream(model="claude-sonnet-4-6", max_tokens=64, messages=ASK) as stream:
                stream.get_final_message()

    with recorder.use_cassette(cassette, record_mode="once"):
        session()
    recorded = [(c.usage, c.source) for c in calls]
    assert recorded == [(CHAT, "live"), (STREAM, "live"), (MESSAGES_STREAM, "live")]
    text = Path(cassette).read_text()
    assert "sk-secret-1" not in text
    assert "sk-ant-secret-2" not in text

    calls.clear()
    before = llm_server.requests
    with recorder.use_cassette(cassette, record_mode="none"):
        session()
    assert llm_server.requests == before  # nothing reached the server
    assert [(c.usage, c.source) for c in calls] == [(u, "replayed") for u, _ in recorded]


def test_vcrpy_replays_async_openai(llm_server: LLMServer, calls: list[Call], tmp_path: Path) -> None:
    cassette = str(tmp_path / "async.yaml")

    async def session() -> None:
        async with openai.AsyncOpenAI(base_url=f"{llm_server.url}/v1", api_key="sk-test") as client:
            await client.responses.create(model="o4-mini", input="hi")

    with vcr.use_cassette(cassette, record_mode="once"):
        asyncio.run(session())
    with vcr.use_cassette(cassette, record_mode="none"):
        asyncio.run(session())
    assert [(c.usage, c.source) for c in calls] == [(RESPONSES, "live"), (RESPONSES, "replayed")]
    assert json.dumps(calls[1].to_dict())  # a replayed call is an ordinary record
