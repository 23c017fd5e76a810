"""requests, aiohttp and the SDKs built on them or on httpx: Gemini, Ollama, Cohere, Mistral, Azure.

Real SDKs and real HTTP on 127.0.0.1 (tests/helpers/provider_server.py); each asserts exact numbers in
the plugin's meaning and that each call is counted once.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
from provider_server import AZURE_MODEL, AZURE_USAGE, GEMINI_COUNT_TOKENS, ProviderServer

from pytest_tokenbudget.model import Call, Usage

GEMINI = Usage(input_tokens=45, cached_input_tokens=10, output_tokens=48, reasoning_tokens=25)
OLLAMA = Usage(input_tokens=17, output_tokens=50)
COHERE = Usage(input_tokens=69, output_tokens=116)  # the model's tokens, not billed_units
CHAT = Usage(input_tokens=11, output_tokens=7)
OLLAMA_GENERATE = Usage(input_tokens=26, output_tokens=298)
GEMINI_EMBED = Usage(input_tokens=6)
AZURE = Usage(input_tokens=1536, cached_input_tokens=1280, output_tokens=64)  # cached is part of input
AZURE_STREAM = Usage(input_tokens=333, output_tokens=21)
ASK = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def server() -> Iterator[ProviderServer]:
    running = ProviderServer().start()
    yield running
    running.stop()


def only(calls: list[Call]) -> Call:
    assert len(calls) == 1, [(c.api, c.state) for c in calls]
    return calls[0]


# -- requests ------------------------------------------------------------------------------------

requests = pytest.importorskip("requests")


def test_requests_body(server: ProviderServer, calls: list[Call]) -> None:
    response = requests.post(f"{server.url}/v1/chat/completions", json={"model": "gpt-4o-mini"})
    assert response.json()["usage"]["prompt_tokens"] == 11
    call = only(calls)
    assert (call.api, call.model, call.usage, call.streamed, call.source) == (
        "openai.chat",
        "gpt-4o-mini",
        CHAT,
        False,
        "live",
    )


@pytest.mark.parametrize("gzip", [False, True])
def test_requests_stream_is_passed_through(server: ProviderServer, calls: list[Call], gzip: bool) -> None:
    body = {"model": "gpt-4o-mini", "stream": True, "gzip": gzip}
    with requests.post(f"{server.url}/v1/chat/completions", json=body, stream=True) as response:
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == b"data: [DONE]"
    call = only(calls)
    assert (call.usage, call.streamed, call.state) == (CHAT, True, "complete")


def test_requests_ollama_ndjson_stream(server: ProviderServer, calls: list[Call]) -> None:
    with requests.post(f"{server.url}/api/chat", json={"model": "llama3"}, stream=True) as response:
        words = [json.loads(line)["message"]["content"] for line in response.iter_lines() if line]
    assert "".join(words) == "Hi there"
    call = only(calls)
    assert (call.provider, call.api, call.model, call.usage) == ("ollama", "ollama.chat", "llama3", OLLAMA)


def test_requests_replayed_by_vcrpy(server: ProviderServer, calls: list[Call], tmp_path: Any) -> None:
    vcr = pytest.importorskip("vcr")
    cassette = str(tmp_path / "chat.yaml")
    with vcr.use_cassette(cassette, record_mode="once"):
        requests.post(f"{server.url}/v1/chat/completions", json={"model": "gpt-4o-mini"})
    with vcr.use_cassette(cassette, record_mode="none"):
        replayed = requests.post(f"{server.url}/v1/chat/completions", json={"model": "gpt-4o-mini"})
    assert replayed.json()["usage"]["completion_tokens"] == 7
    assert [c.source for c in calls] == ["live", "replayed"]
    assert calls[1].usage == CHAT


# -- aiohttp -------------------------------------------------------------------------------------

aiohttp = pytest.importorskip("aiohttp")


@pytest.mark.parametrize("read", ["json", "lines", "iter_any", "iter_chunked"])
def test_aiohttp_every_way_of_reading(server: ProviderServer, calls: list[Call], read: str) -> None:
    async def run() -> bytes:
        stream = read != "json"
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"{server.url}/v1/chat/completions", json={"model": "gpt-4o-mini", "stream": stream}
            ) as response,
        ):
            if read == "json":
                return json.dumps(await response.json()).encode()
            if read == "lines":
                return b"".join([line async for line in response.content])
            if read == "iter_any":
                return b"".join([chunk async for chunk in response.content.iter_any()])
            return b"".join([chunk async for chunk in response.content.iter_chunked(7)])

    data = asyncio.run(run())
    assert b"prompt_tokens" in data
    assert only(calls).usage == CHAT


def test_aiohttp_gzip_stream(server: ProviderServer, calls: list[Call]) -> None:
    async def run() -> bytes:
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"{server.url}/v1/chat/completions", json={"stream": True, "gzip": True}
            ) as response,
        ):
            return await response.read()

    assert asyncio.run(run()).endswith(b"data: [DONE]\n\n")
    assert only(calls).usage == CHAT


def test_aiohttp_under_httpx_is_counted_once(server: ProviderServer, calls: list[Call]) -> None:
    """LiteLLM's async path: an aiohttp transport under httpx.AsyncClient. One call, seen at httpx."""
    httpx = pytest.importorskip("httpx")

    class AiohttpTransport(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: Any) -> Any:
            async with (
                aiohttp.ClientSession() as session,
                session.request(
                    request.method, str(request.url), data=request.content, headers=dict(request.headers)
                ) as response,
            ):
                body = await response.read()
                headers = [(k, v) for k, v in response.headers.items() if k.lower() != "content-encoding"]
                return httpx.Response(response.status, headers=headers, content=body)

    async def run() -> None:
        async with httpx.AsyncClient(transport=AiohttpTransport()) as client:
            await client.post(f"{server.url}/v1/chat/completions", json={"model": "gpt-4o-mini"})

    asyncio.run(run())
    call = only(calls)
    assert call.usage == CHAT


# -- SDKs ----------------------------------------------------------------------------------------


def gemini_client(server: ProviderServer) -> Any:
    genai = pytest.importorskip("google.genai")
    from google.genai import types

    return genai.Client(api_key="test-key", http_options=types.HttpOptions(base_url=server.url))


def test_gemini_generate_content(server: ProviderServer, calls: list[Call]) -> None:
    client = gemini_client(server)  # keep it: google-genai closes its HTTP client when collected
    response = client.models.generate_content(model="gemini-2.5-flash", contents="hi")
    assert response.text == "Hello"
    call = only(calls)
    assert (call.provider, call.api, call.model) == ("google", "gemini.generate", "gemini-2.5-flash")
    assert call.usage == GEMINI


def test_gemini_stream(server: ProviderServer, calls: list[Call]) -> None:
    client = gemini_client(server)
    chunks = client.models.generate_content_stream(model="gemini-2.5-flash", contents="hi")
    assert "".join(c.text for c in chunks) == "Hello"
    call = only(calls)
    assert (call.usage, call.streamed, call.state) == (GEMINI, True, "complete")


@pytest.mark.filterwarnings("ignore:Inheritance class AiohttpClientSession:DeprecationWarning")
def test_gemini_async_uses_aiohttp_and_is_counted(server: ProviderServer, calls: list[Call]) -> None:
    client = gemini_client(server)

    async def run() -> str:
        response = await client.aio.models.generate_content(model="gemini-2.5-flash", contents="hi")
        stream = await client.aio.models.generate_content_stream(model="gemini-2.5-flash", contents="hi")
        streamed = "".join([chunk.text async for chunk in stream])
        return response.text + streamed

    assert asyncio.run(run()) == "HelloHello"
    assert [c.usage for c in calls] == [GEMINI, GEMINI]


def test_ollama_sdk_chat(server: ProviderServer, calls: list[Call]) -> None:
    ollama = pytest.importorskip("ollama")
    client = ollama.Client(host=server.url)
    reply = client.chat(model="llama3", messages=[{"role": "user", "content": "hi"}], stream=False)
    assert reply.message.content == "Hi there"
    streamed = "".join(part.message.content for part in client.chat(model="llama3", messages=[], stream=True))
    assert streamed == "Hi there"
    assert [c.usage for c in calls] == [OLLAMA, OLLAMA]
    assert calls[1].streamed


def test_cohere_v2_chat(server: ProviderServer, calls: list[Call]) -> None:
    cohere = pytest.importorskip("cohere")
    client = cohere.ClientV2(api_key="test-key", base_url=server.url)
    reply = client.chat(model="command-r", messages=[{"role": "user", "content": "hi"}])
    assert reply.message.content[0].text == "Hi"
    events = [
        event.type
        for event in client.chat_stream(model="command-r", messages=[{"role": "user", "content": "hi"}])
    ]
    assert events[-1] == "message-end"
    assert [(c.provider, c.usage) for c in calls] == [("cohere", COHERE), ("cohere", COHERE)]


def test_mistral_sdk_chat_and_stream(server: ProviderServer, calls: list[Call]) -> None:
    mistral = pytest.importorskip("mistralai.client")
    client = mistral.Mistral(api_key="test-key", server_url=server.url)
    reply = client.chat.complete(model="mistral-small-latest", messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content == "Hi"
    for _event in client.chat.stream(
        model="mistral-small-latest", messages=[{"role": "user", "content": "hi"}]
    ):
        pass
    assert [(c.model, c.usage, c.streamed) for c in calls] == [
        ("mistral-small-latest", CHAT, False),
        ("mistral-small-latest", CHAT, True),
    ]


def facts(call: Call) -> tuple[str, str, str, bool, str, str]:
    return call.provider, call.api, call.model, call.streamed, call.source, call.state


def test_gemini_count_tokens_is_not_usage(server: ProviderServer, calls: list[Call]) -> None:
    """``:countTokens`` costs nothing and generates nothing: no call, while generateContent counts."""
    client = gemini_client(server)
    counted = client.models.count_tokens(model="gemini-2.5-flash", contents="How many tokens is this?")
    assert counted.total_tokens == GEMINI_COUNT_TOKENS
    assert server.seen[-1].endswith("/models/gemini-2.5-flash:countTokens")  # it did go out
    assert calls == []
    client.models.generate_content(model="gemini-2.5-flash", contents="hi")
    call = only(calls)
    assert (call.api, call.usage) == ("gemini.generate", GEMINI)


def test_gemini_embed_content(server: ProviderServer, calls: list[Call]) -> None:
    client = gemini_client(server)
    result = client.models.embed_content(model="text-embedding-004", contents=["refund policy", "shipping"])
    assert result.embeddings is not None
    assert len(result.embeddings) == 2
    assert server.seen[-1].endswith("/models/text-embedding-004:batchEmbedContents")
    call = only(calls)
    assert call.usage == GEMINI_EMBED
    # no modelVersion in an embedding response: the model comes from the path
    assert facts(call) == ("google", "gemini.embed", "text-embedding-004", False, "live", "complete")


def test_ollama_sdk_async_chat(server: ProviderServer, calls: list[Call]) -> None:
    ollama = pytest.importorskip("ollama")

    async def run() -> str:
        client = ollama.AsyncClient(host=server.url)
        reply = await client.chat(model="llama3", messages=ASK, stream=False)
        parts = [
            part.message.content
            async for part in await client.chat(model="llama3", messages=ASK, stream=True)
        ]
        return reply.message.content + "|" + "".join(parts)

    assert asyncio.run(run()) == "Hi there|Hi there"
    assert [facts(c) for c in calls] == [
        ("ollama", "ollama.chat", "llama3", False, "live", "complete"),
        ("ollama", "ollama.chat", "llama3", True, "live", "complete"),
    ]
    assert [c.usage for c in calls] == [OLLAMA, OLLAMA]


def test_ollama_sdk_generate(server: ProviderServer, calls: list[Call]) -> None:
    ollama = pytest.importorskip("ollama")
    client = ollama.Client(host=server.url)
    reply = client.generate(model="llama3.2:1b", prompt="Why is the sky blue?", stream=False)
    assert (reply.response, reply.eval_count) == ("Why blue", 298)
    parts = client.generate(model="llama3.2:1b", prompt="Why is the sky blue?", stream=True)
    assert "".join(part.response for part in parts) == "Why blue"
    assert server.seen[-2:] == ["/api/generate", "/api/generate"]
    assert [facts(c) for c in calls] == [
        ("ollama", "ollama.generate", "llama3.2:1b", False, "live", "complete"),
        ("ollama", "ollama.generate", "llama3.2:1b", True, "live", "complete"),
    ]
    assert [c.usage for c in calls] == [OLLAMA_GENERATE, OLLAMA_GENERATE]


def test_ollama_sdk_async_generate_stream(server: ProviderServer, calls: list[Call]) -> None:
    ollama = pytest.importorskip("ollama")

    async def run() -> str:
        client = ollama.AsyncClient(host=server.url)
        stream = await client.generate(model="llama3.2:1b", prompt="Why is the sky blue?", stream=True)
        return "".join([part.response async for part in stream])

    assert asyncio.run(run()) == "Why blue"
    call = only(calls)
    assert call.usage == OLLAMA_GENERATE
    assert facts(call) == ("ollama", "ollama.generate", "llama3.2:1b", True, "live", "complete")


def test_cohere_v2_async_chat_and_stream(server: ProviderServer, calls: list[Call]) -> None:
    cohere = pytest.importorskip("cohere")

    async def run() -> list[str]:
        client = cohere.AsyncClientV2(api_key="test-key", base_url=server.url)
        reply = await client.chat(model="command-r", messages=ASK)
        assert reply.message.content[0].text == "Hi"
        return [event.type async for event in client.chat_stream(model="command-r", messages=ASK)]

    events = asyncio.run(run())
    assert events[-1] == "message-end"
    # Cohere v2 responses name no model: the requested one is recorded
    assert [facts(c) for c in calls] == [
        ("cohere", "cohere.chat", "command-r", False, "live", "complete"),
        ("cohere", "cohere.chat", "command-r", True, "live", "complete"),
    ]
    assert [c.usage for c in calls] == [COHERE, COHERE]  # tokens, not billed_units


def test_cohere_v2_sync_stream_facts(server: ProviderServer, calls: list[Call]) -> None:
    cohere = pytest.importorskip("cohere")
    client = cohere.ClientV2(api_key="test-key", base_url=server.url)
    text = "".join(
        event.delta.message.content.text
        for event in client.chat_stream(model="command-r-plus", messages=ASK)
        if event.type == "content-delta"
    )
    assert text == "Hi"
    call = only(calls)
    assert call.usage == COHERE
    assert facts(call) == ("cohere", "cohere.chat", "command-r-plus", True, "live", "complete")


# -- Azure OpenAI: the openai SDK's Azure clients, deployment in the path --------------------------

API_VERSION = "2024-10-21"
DEPLOYMENT_PATH = f"/openai/deployments/prod-chat/chat/completions?api-version={API_VERSION}"


def test_azure_openai_chat_and_stream(server: ProviderServer, calls: list[Call]) -> None:
    openai = pytest.importorskip("openai")
    with openai.AzureOpenAI(
        azure_endpoint=server.url, api_key="az-test", api_version=API_VERSION, max_retries=0
    ) as client:
        reply = client.chat.completions.create(model="prod-chat", messages=ASK)
        assert reply.model == AZURE_MODEL
        stream = client.chat.completions.create(
            model="prod-chat", messages=ASK, stream=True, stream_options={"include_usage": True}
        )
        text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text == "Hi there"
    assert server.seen[-2:] == [DEPLOYMENT_PATH, DEPLOYMENT_PATH]
    # 127.0.0.1 is not *.openai.azure.com: named by the path's shape, and the model is the one
    # the response reports, not the deployment name (nor the empty model of Azure's first chunk)
    assert [facts(c) for c in calls] == [
        ("openai-compatible", "openai.chat", AZURE_MODEL, False, "live", "complete"),
        ("openai-compatible", "openai.chat", AZURE_MODEL, True, "live", "complete"),
    ]
    assert [(c.usage, c.estimated) for c in calls] == [(AZURE, False), (AZURE_STREAM, False)]


def test_azure_openai_async_with_client_deployment(server: ProviderServer, calls: list[Call]) -> None:
    openai = pytest.importorskip("openai")

    async def run() -> str:
        async with openai.AsyncAzureOpenAI(
            azure_endpoint=server.url,
            azure_deployment="prod-chat",
            api_key="az-test",
            api_version=API_VERSION,
            max_retries=0,
        ) as client:
            await client.chat.completions.create(model="ignored-by-azure", messages=ASK)
            stream = await client.chat.completions.create(
                model="ignored-by-azure", messages=ASK, stream=True, stream_options={"include_usage": True}
            )
            return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

    assert asyncio.run(run()) == "Hi there"
    assert server.seen[-2:] == [DEPLOYMENT_PATH, DEPLOYMENT_PATH]
    assert [facts(c) for c in calls] == [
        ("openai-compatible", "openai.chat", AZURE_MODEL, False, "live", "complete"),
        ("openai-compatible", "openai.chat", AZURE_MODEL, True, "live", "complete"),
    ]
    assert [c.usage for c in calls] == [AZURE, AZURE_STREAM]


def test_azure_openai_on_an_azure_host_is_provider_azure(calls: list[Call]) -> None:
    """The same SDK call to ``*.openai.azure.com`` (served by a MockTransport): provider ``azure``."""
    openai = pytest.importorskip("openai")
    httpx2 = pytest.importorskip("httpx2")
    seen: list[str] = []

    def answer(request: Any) -> Any:
        seen.append(str(request.url))
        message = {"role": "assistant", "content": "Hi"}
        choice = {"index": 0, "message": message, "finish_reason": "stop"}
        body = {"id": "x", "object": "chat.completion", "model": AZURE_MODEL, "created": 1}
        return httpx2.Response(200, json={**body, "choices": [choice], "usage": AZURE_USAGE})

    http_client = httpx2.Client(transport=httpx2.MockTransport(answer))
    with openai.AzureOpenAI(
        azure_endpoint="https://acme-east.openai.azure.com",
        api_key="az-test",
        api_version=API_VERSION,
        http_client=http_client,
        max_retries=0,
    ) as client:
        client.chat.completions.create(model="prod-chat", messages=ASK)
    assert seen == [f"https://acme-east.openai.azure.com{DEPLOYMENT_PATH}"]
    call = only(calls)
    assert call.usage == AZURE
    assert facts(call) == ("azure", "openai.chat", AZURE_MODEL, False, "mocked", "complete")
    assert call.host == "acme-east.openai.azure.com"
