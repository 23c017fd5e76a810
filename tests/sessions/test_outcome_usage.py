"""``-v`` shows each test's tokens and cost beside its outcome (pytest_report_teststatus)."""

from __future__ import annotations

import re

import pytest
from llm_server import LLMServer

SUITE = """
import os

import openai
import pytest

URL = os.environ["LLM_URL"]


def test_chat():
    with openai.OpenAI(base_url=URL + "/v1", api_key="sk-test", max_retries=0) as client:
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])


def test_by_hand(token_usage):
    token_usage.record(model="in-house-llm", input_tokens=1000, output_tokens=234)


def test_failing(token_usage):
    token_usage.record(model="gpt-4o-mini", provider="openai", input_tokens=10, output_tokens=5)
    assert False


def test_no_llm():
    pass
"""


@pytest.fixture
def suite(
    pytester: pytest.Pytester, llm_server: LLMServer, monkeypatch: pytest.MonkeyPatch
) -> pytest.Pytester:
    monkeypatch.setenv("LLM_URL", llm_server.url)
    monkeypatch.setenv("COLUMNS", "200")
    pytester.makepyfile(test_app=SUITE)
    return pytester


def _status_lines(result: pytest.RunResult) -> dict[str, str]:
    """``test name → the rest of its -v line``."""
    found = {}
    for line in result.stdout.lines:
        test = re.search(r"test_app\.py::(\w+)", line)
        word = re.search(r"\b(?:PASSED|FAILED)\b(?: \[[^]]*\])?", line)
        if test and word and "short test summary" not in line:
            found.setdefault(test[1], word[0])  # the progress line comes before the summary's
    return found


def _check(lines: dict[str, str]) -> None:
    assert re.fullmatch(r"PASSED \[1,346 tok \$0\.000\d+\]", lines["test_chat"]), lines
    assert re.search(r"PASSED \[1,234 tok cost unknown\]", lines["test_by_hand"]), lines
    assert re.search(r"FAILED \[15 tok \$0\.0000\d+\]", lines["test_failing"]), lines
    assert lines["test_no_llm"] == "PASSED"  # no call: nothing beside pytest's word


def test_verbose_shows_tokens_and_cost_beside_each_outcome(suite: pytest.Pytester) -> None:
    result = suite.runpytest("--token-budget", "-v", "-p", "no:cacheprovider", "-p", "no:randomly")
    result.assert_outcomes(passed=3, failed=1)
    _check(_status_lines(result))
    # the short summary keeps pytest's own words: tools read "FAILED <nodeid> - <message>"
    result.stdout.fnmatch_lines(["FAILED test_app.py::test_failing - assert False"])


def test_quiet_keeps_the_short_letters(suite: pytest.Pytester) -> None:
    result = suite.runpytest("--token-budget", "-p", "no:cacheprovider", "-p", "no:randomly")
    result.assert_outcomes(passed=3, failed=1)
    result.stdout.fnmatch_lines(["test_app.py ..F. *"])
    assert " tok " not in result.stdout.str().split("token budget")[0]


def test_without_the_plugin_on_verbose_is_pytest_s_own(suite: pytest.Pytester) -> None:
    result = suite.runpytest("-v", "-p", "no:cacheprovider", "-p", "no:randomly")
    result.assert_outcomes(passed=3, failed=1)
    assert " tok " not in result.stdout.str()


@pytest.mark.slow
def test_under_xdist_the_controller_shows_what_the_workers_measured(suite: pytest.Pytester) -> None:
    result = suite.runpytest("--token-budget", "-v", "-n", "2", "-p", "no:cacheprovider", "-p", "no:randomly")
    result.assert_outcomes(passed=3, failed=1)
    _check(_status_lines(result))
