"""Frameworks end to end: LangChain and pydantic-ai, over the real SDKs, against a loopback server.

Each call is counted once (the framework → SDK → httpx2 path passes one captured client), with
the same numbers the framework itself reports.
"""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from llm_server import CLAUDE_MODEL, MESSAGES_STREAM_OUTPUT, MESSAGES_STREAM_START, MESSAGES_USAGE, LLMServer
from provider_server import CHAT_USAGE, ProviderServer

from pytest_tokenbudget.model import Call, Usage

CHAT = Usage(input_tokens=CHAT_USAGE["prompt_tokens"], output_tokens=CHAT_USAGE["completion_tokens"])
# Anthropic input excludes the cache; the plugin's includes it (900 + 2,048 written; 410 + 1,800 read)
MESSAGES = Usage(
    input_tokens=MESSAGES_USAGE["input_tokens"] + MESSAGES_USAGE["cache_creation_input_tokens"],
    cache_write_tokens=MESSAGES_USAGE["cache_creation_input_tokens"],
    output_tokens=MESSAGES_USAGE["output_tokens"],
)
MESSAGES_STREAM = Usage(
    input_tokens=MESSAGES_STREAM_START["input_tokens"] + MESSAGES_STREAM_START["cache_read_input_tokens"],
    cached_input_tokens=MESSAGES_STREAM_START["cache_read_input_tokens"],
    output_tokens=MESSAGES_STREAM_OUTPUT,  # message_delta's cumulative count, not message_start's 1
)


@pytest.fixture(scope="module")
def server() -> Iterator[ProviderServer]:
    running = ProviderServer().start()
    yield running
    running.stop()


def test_langchain_openai_invoke_and_stream(server: ProviderServer, calls: list[Call]) -> None:
    langchain_openai = pytest.importorskip("langchain_openai")
    llm = langchain_openai.ChatOpenAI(
        model="gpt-4o-mini", base_url=f"{server.url}/v1", api_key="sk-test", stream_usage=True, max_retries=0
    )
    message = llm.invoke("hi")
    assert message.usage_metadata["input_tokens"] == CHAT.input_tokens
    chunks = list(llm.stream("hi"))
    streamed_usage = [c.usage_metadata for c in chunks if c.usage_metadata]
    assert streamed_usage[-1]["output_tokens"] == CHAT.output_tokens
    assert [(c.api, c.usage, c.streamed) for c in calls] == [
        ("openai.chat", CHAT, False),
        ("openai.chat", CHAT, True),
    ]


def test_langchain_async(server: ProviderServer, calls: list[Call]) -> None:
    langchain_openai = pytest.importorskip("langchain_openai")
    llm = langchain_openai.ChatOpenAI(model="gpt-4o-mini", base_url=f"{server.url}/v1", api_key="sk-test")

    async def run() -> None:
        await asyncio.gather(*(llm.ainvoke(f"question {i}") for i in range(5)))

    asyncio.run(run())
    assert [c.usage for c in calls] == [CHAT] * 5


def test_pydantic_ai_agent_usage_matches_ours(server: ProviderServer, calls: list[Call]) -> None:
    pytest.importorskip("pydantic_ai")
    from pydantic_ai import Agent
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    model = OpenAIChatModel(
        "gpt-4o-mini", provider=OpenAIProvider(base_url=f"{server.url}/v1", api_key="sk-test")
    )
    agent = Agent(model)
    try:
        result = agent.run_sync("hi")
    finally:
        # run_sync makes a new event loop current and leaves it open; the next asyncio.run() unsets
        # it and it is collected at some later GC, wherever that falls. On Python 3.11 a GC inside
        # ast.parse (pytest's assertion rewriting) that reports the unclosed loop raises
        # "SystemError: AST constructor recursion depth mismatch" and aborts the session.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # as pydantic-ai does to get it
            asyncio.get_event_loop().close()
        asyncio.set_event_loop(None)
    assert result.output == "Hi"
    theirs = result.usage
    ours = calls[0].usage
    assert len(calls) == 1
    assert (ours.input_tokens, ours.output_tokens) == (theirs.input_tokens, theirs.output_tokens)


# Anthropic goes to conftest's llm_server (tests/helpers/llm_server.py speaks ``/v1/messages``: JSON, and SSE
# with usage); the OpenAI-shaped tests above keep this module's ProviderServer.
def chat_anthropic(llm_server: LLMServer) -> Any:
    langchain_anthropic = pytest.importorskip("langchain_anthropic")
    return langchain_anthropic.ChatAnthropic(
        model="claude-sonnet-4-6", base_url=llm_server.url, api_key="sk-ant-test", max_retries=0
    )


def claude_facts(call: Call) -> tuple[str, str, str, bool, str, str]:
    return call.provider, call.api, call.model, call.streamed, call.source, call.state


def test_langchain_anthropic_invoke_and_stream(llm_server: LLMServer, calls: list[Call]) -> None:
    llm = chat_anthropic(llm_server)
    before = llm_server.requests
    message = llm.invoke("Where is my order #4417?")
    assert message.content == "Your order #4417 shipped on Monday and arrives Thursday."
    # LangChain's own count agrees: input includes the cache write
    assert message.usage_metadata["input_tokens"] == MESSAGES.input_tokens
    assert message.usage_metadata["output_tokens"] == MESSAGES.output_tokens
    chunks = list(llm.stream("Where is my order #4417?"))
    assert "".join(str(c.content) for c in chunks if isinstance(c.content, str)).endswith("Thursday.")
    streamed = sum(c.usage_metadata["output_tokens"] for c in chunks if c.usage_metadata)
    assert streamed == MESSAGES_STREAM.output_tokens
    assert llm_server.requests - before == 2  # no retries: two requests, two calls
    # 127.0.0.1 is no Anthropic host: named by the /v1/messages shape
    assert [claude_facts(c) for c in calls] == [
        ("anthropic-compatible", "anthropic.messages", CLAUDE_MODEL, False, "live", "complete"),
        ("anthropic-compatible", "anthropic.messages", CLAUDE_MODEL, True, "live", "complete"),
    ]
    assert [(c.usage, c.estimated) for c in calls] == [(MESSAGES, False), (MESSAGES_STREAM, False)]


def test_langchain_anthropic_ainvoke_and_astream(llm_server: LLMServer, calls: list[Call]) -> None:
    llm = chat_anthropic(llm_server)

    async def run() -> None:
        replies = await asyncio.gather(*(llm.ainvoke(f"question {i}") for i in range(3)))
        assert all(r.usage_metadata["input_tokens"] == MESSAGES.input_tokens for r in replies)
        async for _chunk in llm.astream("hi"):
            pass

    asyncio.run(run())
    assert [claude_facts(c) for c in calls] == [
        *[("anthropic-compatible", "anthropic.messages", CLAUDE_MODEL, False, "live", "complete")] * 3,
        ("anthropic-compatible", "anthropic.messages", CLAUDE_MODEL, True, "live", "complete"),
    ]
    assert [c.usage for c in calls] == [MESSAGES, MESSAGES, MESSAGES, MESSAGES_STREAM]
