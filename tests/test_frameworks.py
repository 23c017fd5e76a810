"""Frameworks end to end: LangChain and pydantic-ai, over the real SDKs, against a loopback server.

Each call is counted once (the framework → SDK → httpx2 path passes one captured client), with
the same numbers the framework itself reports.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from provider_server import CHAT_USAGE, ProviderServer

from pytest_tokenbudget.capture import Capture
from pytest_tokenbudget.ledger import Ledger, Owner
from pytest_tokenbudget.model import Call, Usage

CHAT = Usage(input_tokens=CHAT_USAGE["prompt_tokens"], output_tokens=CHAT_USAGE["completion_tokens"])


@pytest.fixture(scope="module")
def server() -> Iterator[ProviderServer]:
    running = ProviderServer().start()
    yield running
    running.stop()


@pytest.fixture
def calls() -> Iterator[list[Call]]:
    ledger = Ledger()
    ledger.push_owner(Owner("test", "call"))
    recorded: list[Call] = []
    ledger.add_listener(recorded.append)
    capture = Capture(ledger)
    capture.install()
    try:
        yield recorded
    finally:
        capture.uninstall()


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
    result = agent.run_sync("hi")
    assert result.output == "Hi"
    theirs = result.usage
    ours = calls[0].usage
    assert len(calls) == 1
    assert (ours.input_tokens, ours.output_tokens) == (theirs.input_tokens, theirs.output_tokens)
