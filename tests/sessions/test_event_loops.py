"""Nothing the plugin does blocks an event loop, and no sink can cost a count.

An asyncio suite run under BlockBuster (blocking I/O inside a running loop raises, as in
pydantic-ai's suite) with the call log and the hard cap on: every call is counted and logged, the
first one included (what the first call loads is loaded before the first async test runs), and a
response without usage is estimated outside the loop. A sink that raises is reported once, by
name, and the tallies stay complete.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from llm_server import LLMServer
from pytester_session import read_artifact, read_calls, run_session

from pytest_tokenbudget.ledger import Ledger, Owner
from pytest_tokenbudget.model import Call, Usage

pytest.importorskip("blockbuster")
pytest.importorskip("pytest_asyncio")

CONFTEST = """
import pytest
from blockbuster import blockbuster_ctx


@pytest.fixture(autouse=True)
def blockbuster():
    with blockbuster_ctx() as bb:
        yield bb
"""

SUITE = """
import os

import anthropic
import httpcore2  # httpx2 imports it at the first client, which reads metadata: before the loop
import openai
import pytest

URL = os.environ["LLM_URL"]
ASK = [{"role": "user", "content": "Where is my order?"}]


def oai(**headers):
    return openai.AsyncOpenAI(base_url=URL + "/v1", api_key="sk-test", max_retries=0, default_headers=headers)


@pytest.mark.parametrize("n", range(3))
async def test_chat(n):
    async with oai() as client:
        await client.chat.completions.create(model="gpt-4o-mini", messages=ASK)


async def test_stream():
    async with oai() as client:
        stream = await client.chat.completions.create(
            model="gpt-4o-mini", messages=ASK, stream=True, stream_options={"include_usage": True}
        )
        async for _ in stream:
            pass


async def test_claude():
    async with anthropic.AsyncAnthropic(base_url=URL, api_key="sk-test", max_retries=0) as client:
        await client.messages.create(model="claude-sonnet-4-6", max_tokens=64, messages=ASK)


async def test_no_usage_is_estimated():
    async with oai(**{"x-reply": "no-usage"}) as client:
        await client.chat.completions.create(model="gpt-4o-mini", messages=ASK)
"""


def run_suite(
    pytester: pytest.Pytester, llm_server: LLMServer, monkeypatch: pytest.MonkeyPatch, *args: str
) -> tuple[pytest.RunResult, dict[str, Any], list[dict[str, Any]]]:
    monkeypatch.setenv("LLM_URL", llm_server.url)
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_async=SUITE)
    asyncio = ("-p", "asyncio", "--asyncio-mode=auto", "-o", "asyncio_default_fixture_loop_scope=function")
    result = run_session(pytester, *asyncio, *args, calls="calls.jsonl", subprocess=True)
    return result, read_artifact(pytester), read_calls(pytester)


@pytest.mark.slow
def test_an_asyncio_suite_under_blockbuster_is_counted_and_logged_in_full(
    pytester: pytest.Pytester, llm_server: LLMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyprojecttoml(
        """
        [tool.tokenbudget]
        hard-max-cost = 5.0
        """
    )
    result, run, logged = run_suite(pytester, llm_server, monkeypatch)
    result.assert_outcomes(passed=6)
    assert "while recording calls" not in result.stdout.str()
    assert "failed" not in result.stdout.str().split("token budget")[-1].split("passed")[0]
    tests = run["tests"]
    for n in range(3):
        entry = tests[f"test_async.py::test_chat[{n}]"]
        assert (entry["calls"], entry["input_tokens"], entry["output_tokens"]) == (1, 1250, 96)
    stream = tests["test_async.py::test_stream"]
    assert (stream["input_tokens"], stream["output_tokens"]) == (212, 42)
    assert tests["test_async.py::test_claude"]["input_tokens"] == 900 + 2048
    estimated = tests["test_async.py::test_no_usage_is_estimated"]
    assert (estimated["calls"], estimated["estimated_calls"]) == (1, 1)
    assert estimated["input_tokens"] > 0
    assert run["totals"]["calls"] == len(logged) == 6
    assert sorted({line["test"] for line in logged}) == sorted(tests)
    assert "internal_errors" not in run["meta"]
    assert "sink_failures" not in run["meta"]


FAILING_LOG = """
import pytest_tokenbudget.report.export as export


def explode(call):
    raise OSError("disk full")


export.call_line = explode
"""


@pytest.mark.slow
def test_a_failing_sink_is_reported_once_by_name_and_costs_no_count(
    pytester: pytest.Pytester, llm_server: LLMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(conftest_log=FAILING_LOG)
    result, run, logged = run_suite(pytester, llm_server, monkeypatch, "-p", "conftest_log")
    result.assert_outcomes(passed=6)
    assert run["totals"]["calls"] == 6
    assert logged == []
    assert run["meta"]["sink_failures"] == {
        "the call log (--token-budget-calls)": {"count": 6, "first": "OSError: disk full"}
    }
    result.stdout.fnmatch_lines(
        ["pytest-tokenbudget: the call log (--token-budget-calls) failed 6 times *first: OSError: disk*"]
    )


def _call(owner: str = "t") -> Call:
    return Call(owner, "call", "openai", "openai.chat", "h", "gpt-4o", Usage(input_tokens=3, output_tokens=2))


def test_the_tally_comes_before_every_sink_and_survives_their_failures() -> None:
    ledger = Ledger()
    seen: list[tuple[str, int]] = []

    def broken(call: Call) -> None:
        raise RuntimeError("boom")

    def listener(call: Call) -> None:
        seen.append(("listener", ledger.usage_of(call.owner).total.calls))

    def observer(call: Call) -> None:
        seen.append(("observer", ledger.usage_of(call.owner).total.calls))

    ledger.add_pricer(broken, "a broken price")
    ledger.add_listener(broken, "a broken listener")
    ledger.add_listener(listener, "listener")
    ledger.add_observer(broken, "a broken observer")
    ledger.add_observer(observer, "observer")
    ledger.push_owner(Owner("t", "call"))
    ledger.record(_call())
    assert seen == [("listener", 1), ("observer", 1)]  # outside an event loop: told at once

    async def in_a_loop() -> None:
        ledger.record(_call())

    asyncio.run(in_a_loop())
    assert seen[2:] == [("listener", 2)]  # inside one, the observers wait for drain()
    ledger.drain()
    assert seen[3:] == [("observer", 2)]
    assert ledger.usage_of("t").total.total_tokens == 10
    assert ledger.failures == {
        "a broken price": [2, "RuntimeError: boom"],
        "a broken listener": [2, "RuntimeError: boom"],
        "a broken observer": [2, "RuntimeError: boom"],
    }
