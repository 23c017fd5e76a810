"""OpenTelemetry ingest (``--token-budget-ingest-otel``): the code under test's ``gen_ai`` spans are a
capture source, and a call seen both at the HTTP layer and as a span is counted once.

Each session runs in a fresh interpreter (``runpytest_subprocess``): OpenTelemetry allows one
tracer provider per process, and the instrumentation patches the openai SDK for good.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from llm_server import CHAT_MODEL, LLMServer

pytest.importorskip("opentelemetry.sdk")
pytest.importorskip("opentelemetry.instrumentation.openai_v2")

from otlp_receiver import OTLPReceiver  # needs opentelemetry-proto

# An app instrumented with the official OpenAI instrumentation; with APP_PROVIDER set it sets up its
# own SDK tracer provider and exporter (the usual set-up), else it leaves that to whoever runs it.
INSTRUMENTED_CONFTEST = """
import os

from opentelemetry import trace
from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

APP_SPANS = InMemorySpanExporter()
if os.environ.get("APP_PROVIDER"):
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(APP_SPANS))
    trace.set_tracer_provider(provider)
OpenAIInstrumentor().instrument()
"""

INSTRUMENTED_APP = """
import asyncio
import os
from concurrent.futures import ThreadPoolExecutor

import openai
from conftest import APP_SPANS

URL = os.environ["LLM_URL"] + "/v1"
ASK = [{"role": "user", "content": "Where is my order #4417?"}]


def client():
    return openai.OpenAI(base_url=URL, api_key="sk-test", max_retries=0)


def test_chat():
    with client() as c:
        c.chat.completions.create(model="gpt-4o-mini", messages=ASK)


def test_stream():
    with client() as c:
        stream = c.chat.completions.create(
            model="gpt-4o-mini", messages=ASK, stream=True, stream_options={"include_usage": True}
        )
        for _ in stream:
            pass


def test_embeddings_and_chat():
    with client() as c:
        c.embeddings.create(model="text-embedding-3-small", input=["doc one"])
        c.chat.completions.create(model="gpt-4o-mini", messages=ASK)


def test_threads():
    with client() as c, ThreadPoolExecutor(2) as pool:
        ask = lambda _: c.chat.completions.create(model="gpt-4o-mini", messages=ASK)
        list(pool.map(ask, range(3)))


def test_async():
    async def main():
        async with openai.AsyncOpenAI(base_url=URL, api_key="sk-test", max_retries=0) as c:
            ask = [c.chat.completions.create(model="gpt-4o-mini", messages=ASK) for _ in range(2)]
            await asyncio.gather(*ask)

    asyncio.run(main())


def test_the_apps_own_exporter_still_gets_its_spans():
    if os.environ.get("APP_PROVIDER"):
        assert {s.name for s in APP_SPANS.get_finished_spans()} >= {"chat gpt-4o-mini"}
"""

INSTRUMENTED_CALLS = 1 + 1 + 2 + 3 + 2


@pytest.fixture
def receiver() -> Iterator[OTLPReceiver]:
    running = OTLPReceiver().start()
    yield running
    running.stop()


@pytest.fixture(autouse=True)
def _only_these_plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    """Sessions load this plugin (and xdist) alone: the test extra's others cost seconds a process."""
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")


def _session(pytester: pytest.Pytester, name: str, *args: str) -> tuple[pytest.RunResult, dict[str, Any]]:
    plugins = ["-p", "pytest_tokenbudget.plugin", "-p", "xdist.plugin"]
    result = pytester.runpytest_subprocess(
        *plugins, "--token-budget", f"--token-budget-json={name}.json", "-p", "no:cacheprovider", *args
    )
    return result, json.loads((pytester.path / f"{name}.json").read_text())


def _usage(run: dict[str, Any]) -> dict[str, Any]:
    """Per test: calls and tokens (cost aside: it follows)."""
    keys = ("calls", "input_tokens", "cached_input_tokens", "output_tokens", "reasoning_tokens")
    return {nodeid: {k: entry.get(k, 0) for k in keys} for nodeid, entry in run["tests"].items()}


@pytest.mark.slow
@pytest.mark.parametrize("app_provider", ["", "1"], ids=["plugin-installs-provider", "app-has-provider"])
def test_an_instrumented_app_counts_each_call_once_with_export_and_ingest_on(
    pytester: pytest.Pytester,
    llm_server: LLMServer,
    receiver: OTLPReceiver,
    monkeypatch: pytest.MonkeyPatch,
    app_provider: str,
) -> None:
    monkeypatch.setenv("LLM_URL", llm_server.url)
    monkeypatch.setenv("APP_PROVIDER", app_provider)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url)
    monkeypatch.setenv(
        "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true"
    )  # text the instrumentation may record
    pytester.makeconftest(INSTRUMENTED_CONFTEST)
    pytester.makepyfile(test_app=INSTRUMENTED_APP)
    result, http_only = _session(pytester, "http")
    result.assert_outcomes(passed=6)
    assert http_only["totals"]["calls"] == INSTRUMENTED_CALLS
    assert receiver.spans == []

    result, both = _session(
        pytester,
        "both",
        "--token-budget-otel",
        "--token-budget-ingest-otel",
        "--token-budget-calls=calls.jsonl",
    )
    result.assert_outcomes(passed=6)
    assert _usage(both) == _usage(http_only)  # no call counted twice, none lost
    assert both["totals"]["calls"] == INSTRUMENTED_CALLS
    assert both["totals"]["total_tokens"] == http_only["totals"]["total_tokens"]
    assert both["meta"]["otel_ingest"] == {
        "spans": INSTRUMENTED_CALLS,  # each instrumented call ended as a gen_ai span …
        "counted": 0,
        "already_counted": INSTRUMENTED_CALLS,  # … that the HTTP capture had counted
        "tests": {},
    }
    lines = (pytester.path / "calls.jsonl").read_text().splitlines()
    assert {json.loads(line)["source"] for line in lines} == {"live"}
    result.stdout.fnmatch_lines(
        [
            f"OpenTelemetry ingest: {INSTRUMENTED_CALLS} gen_ai spans with usage; 0 calls counted from spans "
            f"(source otel), {INSTRUMENTED_CALLS} already counted*",
            "OpenTelemetry: * spans and the token/cost metrics sent to *",
        ]
    )
    exported_calls = [s for s in receiver.spans if s["attributes"].get("tokenbudget.source")]
    assert len(exported_calls) == INSTRUMENTED_CALLS
    assert {s["attributes"]["tokenbudget.source"] for s in exported_calls} == {"live"}
    assert {s["attributes"]["gen_ai.response.model"] for s in exported_calls} >= {CHAT_MODEL}
    assert b"Where is my order" not in b"".join(receiver.raw)  # ingest counts spans; it never forwards them


def test_span_usage_is_read_in_the_plugins_meaning() -> None:
    """Input includes cached and cache-write tokens, output includes reasoning (as the conventions
    say); an instrumentation that reports input without the cache (Anthropic's own shape) is
    added up rather than made negative."""
    from pytest_tokenbudget.capture.otel_spans import _usage
    from pytest_tokenbudget.model import Usage

    assert _usage({"gen_ai.operation.name": "chat"}) is None
    assert _usage({"gen_ai.usage.input_tokens": 1250, "gen_ai.usage.cache_read.input_tokens": 1024}) == Usage(
        1250, 1024, 0, 0, 0
    )
    anthropic_shape = {
        "gen_ai.usage.input_tokens": 900,
        "gen_ai.usage.cache_creation.input_tokens": 2048,
        "gen_ai.usage.output_tokens": 120,
    }
    assert _usage(anthropic_shape) == Usage(2948, 0, 2048, 120, 0)
    legacy = {"gen_ai.usage.prompt_tokens": 12, "gen_ai.usage.completion_tokens": 3.0, "gen_ai.usage.x": "y"}
    assert _usage(legacy) == Usage(12, 0, 0, 3, 0)
    assert _usage({"gen_ai.usage.input_tokens": True, "gen_ai.usage.output_tokens": -5}) is None


LOCAL_MODEL = """
import os
import time

import httpx2
from opentelemetry import trace

tracer = trace.get_tracer("local-llm")


def generate(prompt):
    # a local model (llama.cpp in-process, say): no HTTP anywhere, one span per generation
    with tracer.start_as_current_span("chat llama-3.2-1b") as span:
        span.set_attribute("gen_ai.operation.name", "chat")
        span.set_attribute("gen_ai.provider.name", "llama.cpp")
        span.set_attribute("gen_ai.request.model", "llama-3.2-1b")
        span.set_attribute("gen_ai.usage.input_tokens", 120)
        span.set_attribute("gen_ai.usage.output_tokens", 30)
        return "ok"


def test_local_model(token_usage):
    generate("hi")
    assert token_usage.calls == 1 and token_usage.total_tokens == 150  # counted as the span ends


def test_agent_span_summing_its_model_calls():
    with tracer.start_as_current_span("invoke_agent helper") as agent:
        generate("a")
        generate("b")
        agent.set_attribute("gen_ai.operation.name", "invoke_agent")
        agent.set_attribute("gen_ai.usage.input_tokens", 240)  # the sum of the two: not counted again
        agent.set_attribute("gen_ai.usage.output_tokens", 60)


def test_span_emitted_after_its_http_call():
    # a library that reports its calls afterwards, from a callback, with explicit times
    start = time.time_ns()
    with httpx2.Client(base_url=os.environ["LLM_URL"]) as client:
        client.post("/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": []}).raise_for_status()
    span = tracer.start_span(
        "chat gpt-4o-mini",
        start_time=start,
        attributes={
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            "gen_ai.usage.input_tokens": 1250,
            "gen_ai.usage.output_tokens": 96,
        },
    )
    span.end(end_time=time.time_ns())


def test_spans_without_usage_are_not_calls():
    with tracer.start_as_current_span("SELECT orders"):
        pass
"""


@pytest.mark.slow
@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_a_local_models_span_is_counted_for_its_test_and_marked_with_its_source(
    pytester: pytest.Pytester,
    llm_server: LLMServer,
    receiver: OTLPReceiver,
    monkeypatch: pytest.MonkeyPatch,
    workers: list[str],
) -> None:
    if workers:
        pytest.importorskip("xdist")
    monkeypatch.setenv("LLM_URL", llm_server.url)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url)
    pytester.makepyfile(test_local=LOCAL_MODEL)
    result, run = _session(
        pytester,
        "run",
        "--token-budget-ingest-otel",
        "--token-budget-otel",
        "--token-budget-calls=calls.jsonl",
        *workers,
    )
    result.assert_outcomes(passed=4)
    tests = run["tests"]
    local = tests["test_local.py::test_local_model"]
    assert (local["calls"], local["input_tokens"], local["output_tokens"]) == (1, 120, 30)
    assert list(local["models"]) == ["llama.cpp/llama-3.2-1b"]
    agent = tests["test_local.py::test_agent_span_summing_its_model_calls"]
    assert (agent["calls"], agent["total_tokens"]) == (2, 300)  # the two calls, not the agent's sum again
    after = tests["test_local.py::test_span_emitted_after_its_http_call"]
    assert (after["calls"], after["total_tokens"], after["live_calls"]) == (1, 1346, 1)  # once, from HTTP
    assert tests["test_local.py::test_spans_without_usage_are_not_calls"]["calls"] == 0
    assert run["meta"]["otel_ingest"] == {
        "spans": 5,
        "counted": 3,
        "already_counted": 2,  # the agent's sum and the span of the HTTP-captured call
        "tests": {
            "test_local.py::test_local_model": 1,
            "test_local.py::test_agent_span_summing_its_model_calls": 2,
        },
    }
    sources = {}
    for line in (pytester.path / "calls.jsonl").read_text().splitlines():
        call = json.loads(line)
        sources.setdefault(call["test"], []).append((call["source"], call["api"], call["provider"]))
    assert sources["test_local.py::test_local_model"] == [("otel", "otel.chat", "llama.cpp")]
    assert sources["test_local.py::test_span_emitted_after_its_http_call"] == [
        ("live", "openai.chat", "openai-compatible")
    ]
    result.stdout.fnmatch_lines(
        ["OpenTelemetry ingest: 5 gen_ai spans with usage; 3 calls counted from spans*"]
    )
    exported = [s for s in receiver.spans if s["attributes"].get("tokenbudget.source") == "otel"]
    assert len(exported) == 3
    assert {s["attributes"]["gen_ai.provider.name"] for s in exported} == {"llama.cpp"}
    assert {s["attributes"]["tokenbudget.test"] for s in exported} == set(run["meta"]["otel_ingest"]["tests"])


def test_ingest_is_opt_in(
    pytester: pytest.Pytester, llm_server: LLMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLM_URL", llm_server.url)
    monkeypatch.delenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD")  # in this process: its plugins as they are
    pytester.makepyfile(
        test_local=LOCAL_MODEL.replace("token_usage.calls == 1 and ", "token_usage.calls == 0 or ")
    )
    result = pytester.runpytest("--token-budget", "--token-budget-json=run.json", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=4)  # in this process: without ingest nothing global is touched
    run = json.loads((pytester.path / "run.json").read_text())
    assert run["tests"]["test_local.py::test_local_model"]["calls"] == 0
    assert "otel_ingest" not in run["meta"]
    assert "OpenTelemetry" not in result.stdout.str()
