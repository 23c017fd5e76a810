"""The verdict is never quiet: a run failed by a budget says so on pytest's last line, a configured
hard cap applies (and says so) without ``--token-budget``, a refusal is one sentence, and a shard
says its session budgets are left to the merge."""

from __future__ import annotations

import pytest
from llm_server import LLMServer

SUITE = """
import os

import openai

URL = os.environ["LLM_URL"]


def test_chat():
    with openai.OpenAI(base_url=URL + "/v1", api_key="sk-test", max_retries=0) as client:
        ask = [{"role": "user", "content": "hi"}]
        client.chat.completions.create(model="gpt-4o", messages=ask, max_tokens=40000)


def test_plain():
    pass
"""

CAP = """
[tool.tokenbudget]
hard-max-cost = 0.30
[tool.tokenbudget.prices]
"gpt-4o" = { input = 2.5, output = 10 }
"""


@pytest.fixture
def suite(
    pytester: pytest.Pytester, llm_server: LLMServer, monkeypatch: pytest.MonkeyPatch
) -> pytest.Pytester:
    monkeypatch.setenv("LLM_URL", llm_server.url)
    monkeypatch.setenv("COLUMNS", "200")
    pytester.makepyfile(test_suite=SUITE)
    return pytester


@pytest.mark.parametrize("quiet", [[], ["-q"]])
def test_a_run_failed_only_by_a_session_budget_says_so_on_the_last_line(
    suite: pytest.Pytester, quiet: list[str]
) -> None:
    result = suite.runpytest(
        "--token-budget", "--token-budget-max-tokens=100", "-p", "no:cacheprovider", *quiet
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.re_match_lines([r"=* ?2 passed, 1 budget exceeded in [0-9.]+s ?=*$"])


def test_a_passing_run_has_no_budget_count_on_its_last_line(suite: pytest.Pytester) -> None:
    result = suite.runpytest("--token-budget", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.re_match_lines([r"=* 2 passed in [0-9.]+s =*$"])


def test_a_configured_hard_cap_applies_without_token_budget_and_says_so(
    suite: pytest.Pytester, llm_server: LLMServer
) -> None:
    suite.makepyprojecttoml(CAP)
    before = llm_server.requests
    result = suite.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    assert llm_server.requests == before  # the $0.40 request never left
    result.stdout.fnmatch_lines(
        ["tokenbudget: hard cost cap $0.3 on live LLM requests (pyproject.toml); reports need --token-budget"]
    )


def test_a_refused_request_fails_its_test_with_one_sentence(suite: pytest.Pytester) -> None:
    suite.makepyprojecttoml(CAP)
    result = suite.runpytest("--token-budget", "-p", "no:cacheprovider", "-rf")
    result.assert_outcomes(passed=1, failed=1)
    out = result.stdout.str()
    assert "_base_client.py" not in out  # no traceback through the SDK
    result.stdout.fnmatch_lines(
        [
            "TokenBudgetExceeded: hard cost cap: refused a live openai.chat request to gpt-4o *",
            "FAILED test_suite.py::test_chat - TokenBudgetExceeded: hard cost cap: refused *",
        ]
    )
    long = suite.runpytest("--token-budget", "-p", "no:cacheprovider", "--tb=long")
    assert "_base_client.py" in long.stdout.str()  # --tb=long still shows it all


def test_a_shard_says_its_session_budgets_are_left_to_the_merge(suite: pytest.Pytester) -> None:
    result = suite.runpytest(
        "--token-budget",
        "--token-budget-max-tokens=100",
        "--token-budget-defer-session",
        "-p",
        "no:cacheprovider",
    )
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["session and summed budgets and the baseline comparison are deferred: *"])


def test_a_malformed_rule_is_a_usage_error_naming_the_file_even_without_a_baseline(
    suite: pytest.Pytester,
) -> None:
    suite.makepyprojecttoml('[tool.tokenbudget]\nmax-increase = ["total:ten%"]\n')
    result = suite.runpytest("--token-budget", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [f"*pytest-tokenbudget: {suite.path / 'pyproject.toml'}: max-increase: *'total:ten%'*"]
    )
    flag = suite.runpytest("--token-budget", "--token-budget-max-increase=lots", "-p", "no:cacheprovider")
    assert flag.ret == pytest.ExitCode.USAGE_ERROR
    flag.stderr.fnmatch_lines(["*pytest-tokenbudget: --token-budget-max-increase: *'lots'*"])


@pytest.mark.parametrize(
    ("policy", "status", "exit_code"),
    [("note", "ok", pytest.ExitCode.OK), ("warn", "warn", pytest.ExitCode.OK), ("fail", "exceeded", 1)],
)
def test_a_baseline_that_is_not_there_is_a_visible_verdict_by_policy(
    suite: pytest.Pytester, policy: str, status: str, exit_code: int
) -> None:
    import json
    import xml.etree.ElementTree as ET

    suite.makepyprojecttoml(
        f'[tool.tokenbudget]\nbaseline = "tokenbudget.baselin.json"\nmissing-baseline = "{policy}"\n'
    )
    result = suite.runpytest(
        "--token-budget",
        "--token-budget-json=run.json",
        "--token-budget-markdown=report.md",
        "--token-budget-junit=report.xml",
        "-p",
        "no:cacheprovider",
    )
    assert result.ret == exit_code
    message = f"no baseline found at {suite.path / 'tokenbudget.baselin.json'}: nothing compared"
    result.stdout.fnmatch_lines([f"*{message}*"])
    verdicts = json.loads((suite.path / "run.json").read_text())["verdicts"]
    assert [(v["name"], v["status"]) for v in verdicts if v["kind"] == "baseline"] == [
        ("baseline missing", status)
    ]
    markdown = (suite.path / "report.md").read_text()
    assert "no baseline found at" in markdown
    assert "tokenbudget.baselin.json: nothing compared" in markdown
    cases = ET.parse(suite.path / "report.xml").getroot().iter("testcase")
    assert any("baseline missing" in (case.get("name") or "") for case in cases)
    if policy == "fail":
        result.stdout.re_match_lines([r"=* 2 passed, 1 budget exceeded in [0-9.]+s =*$"])
