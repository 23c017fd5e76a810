"""An HTTP stack imported for the first time inside a test or a fixture is captured from its first
request, and the hard cost cap sees those requests too.

Each session runs in a fresh process with plugin autoloading off (other plugins import httpx and
requests at start-up), and each test first asserts that its stack is not imported yet: the import
in the test is really the first. The counts are the loopback server's fixed usage (llm_server.py)
and equal what the same project counts with its imports at the top of the module.
"""

from __future__ import annotations

from typing import Any

import pytest
from llm_server import LLMServer
from pytester_session import read_artifact, run_session

pytestmark = pytest.mark.slow

HEAD = '''
import os
import sys

import pytest

URL = os.environ["LLM_URL"]
ASK = [{"role": "user", "content": "Where is my order?"}]
CHAT = {"model": "gpt-4o-mini", "messages": ASK}


def first_import(*names):
    """Fail unless none of ``names`` is imported yet (the import that follows is the first)."""
    assert not [name for name in names if name in sys.modules]
'''

SDK_IN_TEST = (
    HEAD
    + """
def test_openai_imported_in_the_test():
    first_import("openai", "httpx2")
    import openai

    with openai.OpenAI(base_url=URL + "/v1", api_key="sk-test", max_retries=0) as client:
        for _ in range(3):
            client.chat.completions.create(model="gpt-4o-mini", messages=ASK)
"""
)

SDK_IN_FIXTURES = (
    HEAD
    + """
@pytest.fixture(scope="session")
def warmed():
    first_import("openai", "httpx2")
    import openai

    with openai.OpenAI(base_url=URL + "/v1", api_key="sk-test", max_retries=0) as client:
        client.chat.completions.create(model="gpt-4o-mini", messages=ASK)


@pytest.fixture
def claude():
    import anthropic

    with anthropic.Anthropic(base_url=URL, api_key="sk-test", max_retries=0) as client:
        client.messages.create(model="claude-sonnet-4-6", max_tokens=64, messages=ASK)
    yield


def test_fixtures(warmed, claude):
    pass
"""
)

ANTHROPIC_IN_FIXTURE = (
    HEAD
    + """
@pytest.fixture
def claude():
    first_import("anthropic", "httpx2")
    import anthropic

    with anthropic.Anthropic(base_url=URL, api_key="sk-test", max_retries=0) as client:
        client.messages.create(model="claude-sonnet-4-6", max_tokens=64, messages=ASK)


def test_function_fixture(claude):
    pass
"""
)

STACKS_IN_TESTS = (
    HEAD
    + """
def test_requests():
    first_import("requests")
    import requests

    assert requests.post(URL + "/v1/chat/completions", json=CHAT).status_code == 200


def test_httpx():
    first_import("httpx")
    import httpx

    assert httpx.post(URL + "/v1/chat/completions", json=CHAT).status_code == 200


def test_aiohttp():
    first_import("aiohttp")
    import asyncio

    import aiohttp

    async def post():
        async with aiohttp.ClientSession() as session:
            async with session.post(URL + "/v1/chat/completions", json=CHAT) as response:
                return await response.json()

    assert asyncio.run(post())["usage"]["prompt_tokens"] == 1250


def test_botocore():
    first_import("botocore.client", "boto3")
    import boto3
    from botocore.stub import Stubber

    client = boto3.client(
        "bedrock-runtime",
        region_name="us-east-1",
        aws_access_key_id="AKIAEXAMPLE",
        aws_secret_access_key="secret",
    )
    reply = {
        "output": {"message": {"role": "assistant", "content": [{"text": "Hi"}]}},
        "stopReason": "end_turn",
        "usage": {"inputTokens": 30, "outputTokens": 7, "totalTokens": 37},
        "metrics": {"latencyMs": 1},
    }
    with Stubber(client) as stubber:
        stubber.add_response("converse", reply)
        client.converse(
            modelId="anthropic.claude-3-haiku-20240307-v1:0",
            messages=[{"role": "user", "content": [{"text": "hi"}]}],
        )
"""
)

HARD_CAP = (
    HEAD
    + """
def test_capped():
    first_import("openai", "httpx2")
    import openai

    with openai.OpenAI(base_url=URL + "/v1", api_key="sk-test", max_retries=0) as client:
        for _ in range(5):
            client.chat.completions.create(model="gpt-4o", messages=ASK, max_tokens=40000)
"""
)


def run_fresh(
    pytester: pytest.Pytester, server: LLMServer, monkeypatch: pytest.MonkeyPatch, source: str, *args: str
) -> tuple[pytest.RunResult, dict[str, Any]]:
    """Run ``source`` as a test module in a new process, only this plugin loaded."""
    monkeypatch.setenv("LLM_URL", server.url)
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    monkeypatch.setenv("PYTEST_ADDOPTS", "")
    pytester.makepyfile(test_late=source)
    result = run_session(pytester, "-p", "pytest_tokenbudget.plugin", *args, subprocess=True)
    run = read_artifact(pytester)
    # A library imported half-way through another's import (httpx2 imports urllib.request) is
    # wrapped once that import is done, not while it is half-initialised (an AttributeError).
    assert "internal_errors" not in run["meta"], run["meta"]["internal_errors"]
    assert "error in wrapping" not in result.stdout.str()
    return result, run


def tokens(run: dict[str, Any], owner: str) -> tuple[int, int, int]:
    entry = run["tests"][owner]
    return entry["calls"], entry["input_tokens"], entry["output_tokens"]


def test_an_sdk_imported_inside_a_test_is_counted_from_its_first_call(
    pytester: pytest.Pytester, llm_server: LLMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    result, run = run_fresh(pytester, llm_server, monkeypatch, SDK_IN_TEST)
    result.assert_outcomes(passed=1)
    assert tokens(run, "test_late.py::test_openai_imported_in_the_test") == (3, 3 * 1250, 3 * 96)


def test_sdks_imported_inside_fixtures_are_counted_for_the_fixture(
    pytester: pytest.Pytester, llm_server: LLMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    result, run = run_fresh(pytester, llm_server, monkeypatch, SDK_IN_FIXTURES)
    result.assert_outcomes(passed=1)
    assert tokens(run, "<session fixture warmed>") == (1, 1250, 96)
    assert tokens(run, "test_late.py::test_fixtures") == (1, 900 + 2048, 120)


def test_a_late_import_counts_what_an_eager_import_counts(
    pytester: pytest.Pytester, llm_server: LLMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, late = run_fresh(pytester, llm_server, monkeypatch, ANTHROPIC_IN_FIXTURE)
    eager_source = "import anthropic\n" + ANTHROPIC_IN_FIXTURE.replace(
        'first_import("anthropic", "httpx2")', "pass"
    )
    _, eager = run_fresh(pytester, llm_server, monkeypatch, eager_source)
    owner = "test_late.py::test_function_fixture"
    assert tokens(late, owner) == tokens(eager, owner) == (1, 900 + 2048, 120)
    assert late["totals"] == eager["totals"]


def test_every_http_stack_imported_inside_a_test_is_counted(
    pytester: pytest.Pytester, llm_server: LLMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    result, run = run_fresh(pytester, llm_server, monkeypatch, STACKS_IN_TESTS)
    result.assert_outcomes(passed=4)
    for name in ("requests", "httpx", "aiohttp"):
        assert tokens(run, f"test_late.py::test_{name}") == (1, 1250, 96), name
    assert tokens(run, "test_late.py::test_botocore") == (1, 30, 7)


def test_the_hard_cap_refuses_requests_of_an_sdk_imported_inside_the_test(
    pytester: pytest.Pytester, llm_server: LLMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyprojecttoml(
        """
        [tool.tokenbudget]
        hard-max-cost = 0.30
        [tool.tokenbudget.prices]
        "gpt-4o" = { input = 2.5, output = 10 }
        """
    )
    before = llm_server.requests
    result, run = run_fresh(pytester, llm_server, monkeypatch, HARD_CAP)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*TokenBudgetExceeded: hard cost cap: refused a live openai.chat request*"])
    # gpt-4o at $2.50 / $10 per million tokens: the first request may cost up to $0.40 (40,000
    # output tokens), over the $0.30 cap, so it never leaves.
    assert llm_server.requests == before
    assert run["tests"]["test_late.py::test_capped"]["calls"] == 0
    assert [v["kind"] for v in run["verdicts"] if v["status"] == "exceeded"] == ["hard-cap"]
