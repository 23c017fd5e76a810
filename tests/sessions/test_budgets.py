"""Budgets in real pytest sessions: markers, the per-test default, scoped and session budgets."""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import json
import textwrap
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pytester_session import run_session

from pytest_tokenbudget.judge.budgets import (
    PER,
    Budgets,
    Limits,
    Policy,
    Scope,
    _verdict,  # private: the oracle builds verdicts the way the judge does
)
from pytest_tokenbudget.model import Call, Run, Status, Tally, TestUsage, Usage, Verdict

LLM_CONFTEST = """
import pytest

@pytest.fixture
def llm(token_usage):
    def call(input=0, output=0, *, model="gpt-4o-mini", provider="openai", cost=None):
        token_usage.record(model=model, provider=provider, input_tokens=input, output_tokens=output,
                           cost_usd=cost)
    return call
"""

MOCK_OPENAI = """
import json
import httpx

USAGES = iter([(700, 110), (700, 110), (700, 111)])

def handler(request):
    prompt, completion = next(USAGES)
    body = {"id": "c", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                      "total_tokens": prompt + completion}}
    return httpx.Response(200, json=body)

def ask():
    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        client.post("https://api.openai.com/v1/chat/completions", json={"model": "gpt-4o-mini"})
"""


@pytest.fixture(autouse=True)
def _wide_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """Short-summary lines are cut at the terminal width: make it wide enough to read them whole."""
    monkeypatch.setenv("COLUMNS", "250")


def _setup(pytester: pytest.Pytester, pyproject: str = "", **files: str) -> None:
    pytester.makeconftest(LLM_CONFTEST)
    table = (
        "[tool.pytest.ini_options]\nmarkers = ['slow: slow', 'agent: agent']\naddopts = '--strict-markers'\n"
    )
    pytester.makepyprojecttoml(table + textwrap.dedent(pyproject))
    pytester.makepyfile(**{name: textwrap.dedent(body) for name, body in files.items()})


def _verdicts(pytester: pytest.Pytester) -> list[dict[str, Any]]:
    data = json.loads((pytester.path / "run.json").read_text())
    return [
        {k: v[k] for k in ("name", "kind", "metric", "limit", "actual", "status", "message")}
        for v in data["verdicts"]
    ]


def _messages(pytester: pytest.Pytester) -> list[str]:
    return [v["message"] for v in _verdicts(pytester)]


# -- markers ------------------------------------------------------------------------------------


def test_marker_overrun_fails_the_test_even_without_the_flag(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(mock_openai=MOCK_OPENAI)
    _setup(
        pytester,
        test_chat="""
        import pytest
        from mock_openai import ask

        @pytest.mark.token_budget(2000)
        def test_chatty():
            ask(); ask(); ask()

        def test_unmarked():
            pass
        """,
    )
    result = pytester.runpytest("-p", "no:cacheprovider", "-rf")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "token budget exceeded: 2,431 tokens > 2,000 (input 2,100, output 331; gpt-4o-mini ×3)",
            "FAILED test_chat.py::test_chatty - token budget exceeded: 2,431 tokens > 2,000*",
        ]
    )
    result.stdout.no_fnmatch_line("*= token budget =*")  # the flag adds the report, not the marker


def test_marker_within_budget_passes_and_warns_near_the_limit(pytester: pytest.Pytester) -> None:
    _setup(
        pytester,
        test_it="""
        import pytest

        @pytest.mark.token_budget(2000)
        def test_near(llm):
            llm(1500, 300)

        @pytest.mark.token_budget(max_tokens=2000)
        def test_far(llm):
            llm(100, 20)
        """,
    )
    result = run_session(pytester)
    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(passed=2)
    assert _verdicts(pytester) == [
        {
            "name": "marker test_it.py::test_near",
            "kind": "marker",
            "metric": "total_tokens",
            "limit": 2000.0,
            "actual": 1800.0,
            "status": "warn",
            "message": "token budget at 90%: 1,800 tokens of 2,000 (input 1,500, output 300; gpt-4o-mini ×1)",
        },
        {
            "name": "marker test_it.py::test_far",
            "kind": "marker",
            "metric": "total_tokens",
            "limit": 2000.0,
            "actual": 120.0,
            "status": "ok",
            "message": "token budget ok: 120 tokens of 2,000 (input 100, output 20; gpt-4o-mini ×1)",
        },
    ]


def test_marker_every_limit_kind(pytester: pytest.Pytester) -> None:
    _setup(
        pytester,
        test_kinds="""
        import pytest

        @pytest.mark.token_budget(max_input_tokens=1000)
        def test_input(llm):
            llm(1200, 10)

        @pytest.mark.token_budget(max_output_tokens=100)
        def test_output(llm):
            llm(10, 150)

        @pytest.mark.token_budget(max_cost="$0.01")
        def test_cost(llm):
            llm(10, 10, cost=0.004)
            llm(10, 10, model="gpt-4o", cost=0.008)

        @pytest.mark.token_budget(max_calls=2)
        def test_calls(llm):
            llm(1, 1); llm(1, 1); llm(1, 1)

        @pytest.mark.token_budget(max_tokens=10_000, max_calls=5, max_cost=1)
        def test_all_ok(llm):
            llm(10, 10, cost=0.001)
        """,
    )
    result = run_session(pytester)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=1, failed=4)
    assert _messages(pytester) == [
        "token budget exceeded: 1,200 input tokens > 1,000 (input 1,200, output 10; gpt-4o-mini ×1)",
        "token budget exceeded: 150 output tokens > 100 (input 10, output 150; gpt-4o-mini ×1)",
        "token budget exceeded: $0.012 > $0.01 (input 20, output 20; gpt-4o ×1, gpt-4o-mini ×1)",
        "token budget exceeded: 3 calls > 2 (input 3, output 3; gpt-4o-mini ×3)",
        "token budget ok: 20 tokens of 10,000 (input 10, output 10; gpt-4o-mini ×1)",
        "token budget ok: $0.001 of $1 (input 10, output 10; gpt-4o-mini ×1)",
        "token budget ok: 1 call of 5 (input 10, output 10; gpt-4o-mini ×1)",
    ]


def test_marker_on_module_and_class_closest_wins(pytester: pytest.Pytester) -> None:
    _setup(
        pytester,
        test_scoped="""
        import pytest
        from pytest_tokenbudget import token_budget

        pytestmark = pytest.mark.token_budget(1000)

        def test_module_level(llm):
            llm(1000, 1)

        @token_budget(max_calls=1)
        class TestAgent:
            def test_class_level(self, llm):
                llm(5000, 0)  # the class marker replaces the module's: only calls are limited

            def test_class_level_calls(self, llm):
                llm(1, 1); llm(1, 1)

            @pytest.mark.token_budget(50)
            def test_function_level(self, llm):
                llm(40, 20)
        """,
    )
    result = run_session(pytester, "-rf")
    result.assert_outcomes(passed=1, failed=3)
    result.stdout.fnmatch_lines(
        [
            "FAILED test_scoped.py::test_module_level - token budget exceeded: 1,001 tokens > 1,000 *",
            "FAILED test_scoped.py::TestAgent::test_class_level_calls - token budget exceeded: 2 calls > 1 *",
            "FAILED test_scoped.py::TestAgent::test_function_level - token budget exceeded: 60 tokens > 50 *",
        ]
    )


@pytest.mark.parametrize(
    ("marker", "error"),
    [
        (
            "token_budget(max_token=5)",
            "token_budget() got an unexpected keyword argument 'max_token' (did you mean 'max_tokens'?)",
        ),
        ("token_budget(1000, 2)", "token_budget() takes from 0 to 1 positional arguments but 2 were given"),
        ("token_budget(-1)", "token_budget(max_tokens=…) expects a whole number >= 0, got -1"),
        ("token_budget(max_calls=2.5)", "token_budget(max_calls=…) expects a whole number >= 0, got 2.5"),
        (
            "token_budget(max_cost='lots')",
            "token_budget(max_cost=…) expects an amount in USD >= 0, got 'lots'",
        ),
        (
            "token_budget()",
            "token_budget() needs at least one limit, e.g. token_budget(2000) or max_cost=0.05",
        ),
    ],
)
def test_bad_marker_arguments_are_usage_errors_at_collection(
    pytester: pytest.Pytester, marker: str, error: str
) -> None:
    pytester.makepyfile(
        f"""
        import pytest

        @pytest.mark.{marker}
        def test_a():
            pass
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider", "--collect-only")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert (
        result.stderr.lines[0] == "ERROR: pytest-tokenbudget: "
        f"test_bad_marker_arguments_are_usage_errors_at_collection.py::test_a: {error}"
    )


def test_setup_and_teardown_calls_count_toward_the_test(pytester: pytest.Pytester) -> None:
    _setup(
        pytester,
        test_phases="""
        import pytest

        @pytest.fixture
        def warm(llm):
            llm(1500, 0)

        @pytest.fixture
        def cleanup(llm):
            yield
            llm(600, 0)

        @pytest.mark.token_budget(2000)
        def test_setup_counts(warm, llm):
            llm(600, 0)

        @pytest.mark.token_budget(1000)
        def test_teardown_counts(cleanup, llm):
            llm(600, 0)
        """,
    )
    result = run_session(pytester, "-rfE")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=1, failed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            "FAILED test_phases.py::test_setup_counts - token budget exceeded: 2,100 tokens > 2,000 *",
            "ERROR test_phases.py::test_teardown_counts - token budget exceeded: 1,200 tokens > 1,000 *",
        ]
    )


def test_overrun_shows_in_junitxml(pytester: pytest.Pytester) -> None:
    _setup(
        pytester,
        test_j="""
        import pytest

        @pytest.mark.token_budget(100)
        def test_j(llm):
            llm(90, 20)
        """,
    )
    result = pytester.runpytest("-p", "no:cacheprovider", "--junitxml=junit.xml")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    xml = (pytester.path / "junit.xml").read_text()
    assert (
        '<failure message="token budget exceeded: 110 tokens &gt; 100 (input 90, output 20; gpt-4o-mini ×1)">'
        in xml
    )


def test_test_already_failing_keeps_its_error_and_gets_a_section(pytester: pytest.Pytester) -> None:
    _setup(
        pytester,
        test_f="""
        import pytest

        @pytest.mark.token_budget(100)
        def test_f(llm):
            llm(90, 20)
            assert 1 == 2
        """,
    )
    result = run_session(pytester)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "E       assert 1 == 2",
            "*- token budget -*",
            "token budget exceeded: 110 tokens > 100 (input 90, output 20; gpt-4o-mini ×1)",
        ]
    )


# -- pyproject budgets --------------------------------------------------------------------------


def test_per_test_default_applies_to_unmarked_tests_only(pytester: pytest.Pytester) -> None:
    _setup(
        pytester,
        """
        [tool.tokenbudget.per-test]
        max-tokens = 1000
        """,
        test_default="""
        import pytest

        def test_small(llm):
            llm(500, 100)

        def test_big(llm):
            llm(1400, 100)

        def test_no_calls():
            pass

        @pytest.mark.token_budget(5000)
        def test_marked_big(llm):
            llm(2900, 100)
        """,
    )
    result = run_session(pytester, "-rf")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=3, failed=1)
    result.stdout.fnmatch_lines(
        ["FAILED test_default.py::test_big - token budget exceeded: 1,500 tokens > 1,000 *"]
    )
    assert [(v["name"], v["status"]) for v in _verdicts(pytester)] == [
        ("test-default test_default.py::test_small", "ok"),
        ("test-default test_default.py::test_big", "exceeded"),
        ("marker test_default.py::test_marked_big", "ok"),
    ]


def test_session_budget_fails_the_run_while_every_test_passes(pytester: pytest.Pytester) -> None:
    _setup(
        pytester,
        """
        [tool.tokenbudget]
        max-tokens = 1000
        max-calls = 10
        """,
        test_s="""
        def test_a(llm):
            llm(500, 100)

        def test_b(llm):
            llm(500, 100, model="claude-haiku-4-5", provider="anthropic")
        """,
    )
    result = run_session(pytester)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=2)
    assert _verdicts(pytester) == [
        {
            "name": "session",
            "kind": "session",
            "metric": "total_tokens",
            "limit": 1000.0,
            "actual": 1200.0,
            "status": "exceeded",
            "message": "session budget exceeded: 1,200 tokens > 1,000 "
            "(input 1,000, output 200; claude-haiku-4-5 ×1, gpt-4o-mini ×1)",
        },
        {
            "name": "session",
            "kind": "session",
            "metric": "calls",
            "limit": 10.0,
            "actual": 2.0,
            "status": "ok",
            "message": "session budget ok: 2 calls of 10 "
            "(input 1,000, output 200; claude-haiku-4-5 ×1, gpt-4o-mini ×1)",
        },
    ]


def test_session_budget_near_its_limit_warns_and_passes(pytester: pytest.Pytester) -> None:
    _setup(
        pytester,
        """
        [tool.tokenbudget]
        max-tokens = 1000
        warn-at = "80%"
        """,
        test_s="""
        def test_a(llm):
            llm(800, 50)
        """,
    )
    result = run_session(pytester)
    assert result.ret == pytest.ExitCode.OK
    assert _messages(pytester) == [
        "session budget at 85%: 850 tokens of 1,000 (input 800, output 50; gpt-4o-mini ×1)"
    ]


def test_warn_mode_reports_every_overrun_and_keeps_the_exit_status(pytester: pytest.Pytester) -> None:
    _setup(
        pytester,
        """
        [tool.tokenbudget]
        mode = "warn"
        max-tokens = 100
        [tool.tokenbudget.per-test]
        max-calls = 1
        """,
        test_w="""
        import pytest

        @pytest.mark.token_budget(50)
        def test_marked(llm):
            llm(60, 0)

        def test_unmarked(llm):
            llm(30, 0); llm(30, 0)
        """,
    )
    result = run_session(pytester)
    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(passed=2)
    assert [(v["status"], v["message"]) for v in _verdicts(pytester)] == [
        ("warn", "token budget exceeded (mode warn): 60 tokens > 50 (input 60, output 0; gpt-4o-mini ×1)"),
        ("warn", "token budget exceeded (mode warn): 2 calls > 1 (input 60, output 0; gpt-4o-mini ×2)"),
        (
            "warn",
            "session budget exceeded (mode warn): 120 tokens > 100 (input 120, output 0; gpt-4o-mini ×3)",
        ),
    ]


SCOPED_PYPROJECT = """
[tool.tokenbudget]
enabled = true

[[tool.tokenbudget.budgets]]
name = "agents"
path = "tests/agents/*"
max-tokens = 1000

[[tool.tokenbudget.budgets]]
name = "each agent test"
path = "tests/agents/*"
per = "test"
max-tokens = 700

[[tool.tokenbudget.budgets]]
name = "big models"
model = ["gpt-4o", "claude-opus-*"]
max-cost = 0.05

[[tool.tokenbudget.budgets]]
provider = "anthropic"
max-calls = 1

[[tool.tokenbudget.budgets]]
name = "slow tests"
marker = "slow"
per = "test"
max-tokens = 5000
"""


def test_scoped_budgets_by_path_model_provider_and_marker(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(LLM_CONFTEST)
    table = "[tool.pytest.ini_options]\nmarkers = ['slow: slow']\n"
    pytester.makepyprojecttoml(table + SCOPED_PYPROJECT)
    agents = pytester.mkpydir("tests") / "agents"
    agents.mkdir()
    (agents / "test_agent.py").write_text(
        textwrap.dedent(
            """
            def test_plan(llm):
                llm(400, 100, model="gpt-4o", cost=0.03)

            def test_act(llm):
                llm(600, 150)
            """
        )
    )
    (pytester.path / "tests" / "test_other.py").write_text(
        textwrap.dedent(
            """
            import pytest

            @pytest.mark.slow
            def test_long(llm):
                llm(3000, 1000, model="claude-opus-4-1", provider="anthropic", cost=0.04)
                llm(10, 10, model="claude-haiku-4-5", provider="anthropic", cost=0.0001)
            """
        )
    )
    result = pytester.runpytest("-p", "no:cacheprovider", "--token-budget-json=run.json")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=3)
    assert [
        (v["name"], v["metric"], v["actual"], v["status"], v["message"]) for v in _verdicts(pytester)
    ] == [
        (
            "scope agents",
            "total_tokens",
            1250.0,
            "exceeded",
            "budget 'agents' exceeded: 1,250 tokens > 1,000 "
            "(input 1,000, output 250; gpt-4o-mini ×1, gpt-4o ×1)",
        ),
        (
            "scope each agent test",
            "total_tokens",
            750.0,
            "exceeded",
            "budget 'each agent test' (tests/agents/test_agent.py::test_act) exceeded: 750 tokens > 700 "
            "(input 600, output 150; gpt-4o-mini ×1)",
        ),
        (
            "scope big models",
            "cost_usd",
            0.07,
            "exceeded",
            "budget 'big models' exceeded: $0.07 > $0.05 "
            "(input 3,400, output 1,100; claude-opus-4-1 ×1, gpt-4o ×1)",
        ),
        (
            "scope provider=anthropic",
            "calls",
            2.0,
            "exceeded",
            "budget 'provider=anthropic' exceeded: 2 calls > 1 "
            "(input 3,010, output 1,010; claude-opus-4-1 ×1, claude-haiku-4-5 ×1)",
        ),
        (
            "scope slow tests",
            "total_tokens",
            4020.0,
            "warn",
            "budget 'slow tests' (tests/test_other.py::test_long) at 80%: 4,020 tokens of 5,000 "
            "(input 3,010, output 1,010; claude-opus-4-1 ×1, claude-haiku-4-5 ×1)",
        ),
    ]


@pytest.mark.parametrize(
    ("policy", "ret", "status", "message"),
    [
        (
            "ignore",
            pytest.ExitCode.OK,
            "ok",
            "session budget ok: ≥$0.004 of $0.01 (input 20, output 20; private-1 ×1, gpt-4o-mini ×1)",
        ),
        (
            "warn",
            pytest.ExitCode.OK,
            "unknown",
            "session budget unknown: 1 call without a price; ≥$0.004 of $0.01 "
            "(input 20, output 20; private-1 ×1, gpt-4o-mini ×1)",
        ),
        (
            "fail",
            pytest.ExitCode.TESTS_FAILED,
            "exceeded",
            "session budget exceeded: cost unknown, 1 call without a price (unknown-price = fail); "
            "≥$0.004 of $0.01 (input 20, output 20; private-1 ×1, gpt-4o-mini ×1)",
        ),
    ],
)
def test_unknown_prices_under_each_policy(
    pytester: pytest.Pytester, policy: str, ret: pytest.ExitCode, status: str, message: str
) -> None:
    _setup(
        pytester,
        f"""
        [tool.tokenbudget]
        max-cost = "$0.01"
        unknown-price = "{policy}"
        """,
        test_u="""
        def test_priced(llm):
            llm(10, 10, cost=0.004)

        def test_unpriced(llm):
            llm(10, 10, model="private-1", provider="acme")
        """,
    )
    result = run_session(pytester)
    assert result.ret == ret
    result.assert_outcomes(passed=2)
    assert [(v["status"], v["message"]) for v in _verdicts(pytester)] == [(status, message)]


def test_known_cost_over_the_limit_fails_whatever_the_unknown_price_policy(pytester: pytest.Pytester) -> None:
    _setup(
        pytester,
        """
        [tool.tokenbudget]
        max-cost = 0.01
        unknown-price = "ignore"
        """,
        test_u="""
        def test_a(llm):
            llm(10, 10, cost=0.02)
            llm(10, 10, model="private-1", provider="acme")
        """,
    )
    result = run_session(pytester)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert _messages(pytester) == [
        "session budget exceeded: ≥$0.02 > $0.01 (input 20, output 20; private-1 ×1, gpt-4o-mini ×1)"
    ]


def test_command_line_beats_pyproject(pytester: pytest.Pytester) -> None:
    _setup(
        pytester,
        """
        [tool.tokenbudget]
        max-tokens = 100000
        max-cost = 0.001
        mode = "fail"
        warn-at = 0.99
        """,
        test_c="""
        def test_a(llm):
            llm(600, 0, cost=0.002)
        """,
    )
    result = run_session(
        pytester,
        "--token-budget-max-tokens=1,000",
        "--token-budget-max-cost=$0.01",
        "--token-budget-warn-at=50%",
    )
    assert result.ret == pytest.ExitCode.OK
    assert _messages(pytester) == [
        "session budget at 60%: 600 tokens of 1,000 (input 600, output 0; gpt-4o-mini ×1)",
        "session budget ok: $0.002 of $0.01 (input 600, output 0; gpt-4o-mini ×1)",
    ]
    result = run_session(pytester, "--token-budget-max-tokens=500", "--token-budget-mode=warn")
    assert result.ret == pytest.ExitCode.OK
    assert [v["status"] for v in _verdicts(pytester)] == ["warn", "warn"]


def test_defer_session_leaves_session_and_summed_budgets_to_the_merge(pytester: pytest.Pytester) -> None:
    _setup(
        pytester,
        """
        [tool.tokenbudget]
        max-tokens = 10
        [[tool.tokenbudget.budgets]]
        name = "sum"
        max-tokens = 10
        [[tool.tokenbudget.budgets]]
        name = "each"
        per = "test"
        max-tokens = 1000
        """,
        test_d="""
        def test_a(llm):
            llm(100, 0)
        """,
    )
    result = run_session(pytester, "--token-budget-defer-session")
    assert result.ret == pytest.ExitCode.OK
    assert [v["name"] for v in _verdicts(pytester)] == ["scope each"]


def test_budgets_without_the_flag_leave_only_markers(pytester: pytest.Pytester) -> None:
    _setup(
        pytester,
        """
        [tool.tokenbudget]
        max-tokens = 10
        [tool.tokenbudget.per-test]
        max-tokens = 10
        """,
        test_n="""
        import pytest

        @pytest.mark.token_budget(1000)
        def test_a(llm):
            llm(100, 0)
        """,
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(passed=1)


@pytest.mark.slow
def test_xdist_controller_collects_marker_and_session_verdicts(pytester: pytest.Pytester) -> None:
    _setup(
        pytester,
        """
        [tool.tokenbudget]
        max-tokens = 1000
        [[tool.tokenbudget.budgets]]
        name = "agent tests"
        marker = "agent"
        max-tokens = 500
        """,
        test_x="""
        import pytest

        @pytest.mark.agent
        @pytest.mark.token_budget(400)
        def test_a(llm):
            llm(300, 150)

        @pytest.mark.agent
        def test_b(llm):
            llm(200, 100)

        def test_c(llm):
            llm(200, 100)
        """,
    )
    result = run_session(pytester, "-n", "2", subprocess=True)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=2, failed=1)
    assert sorted((v["name"], v["status"], v["actual"]) for v in _verdicts(pytester)) == [
        ("marker test_x.py::test_a", "exceeded", 450.0),
        ("scope agent tests", "exceeded", 750.0),
        ("session", "exceeded", 1050.0),
    ]


def test_a_module_or_session_fixture_is_budgeted_by_name(pytester: pytest.Pytester) -> None:
    _setup(
        pytester,
        """
        [[tool.tokenbudget.budgets]]
        name = "index build"
        fixture = "corpus_*"
        max-tokens = 1000

        [[tool.tokenbudget.budgets]]
        name = "each fixture"
        fixture = "*"
        per = "test"
        max-calls = 1
        """,
        mock_openai=MOCK_OPENAI,
        test_f="""
        import pytest
        from mock_openai import ask

        @pytest.fixture(scope="session")
        def corpus_index():
            ask()
            ask()

        @pytest.fixture(scope="module")
        def warm_cache():
            ask()

        def test_a(corpus_index, warm_cache):
            pass
        """,
    )
    result = run_session(pytester)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=1)
    assert sorted(_messages(pytester)) == [
        "budget 'each fixture' (<module fixture warm_cache>) at 100%: 1 call of 1 (input 700, output 111; "
        "gpt-4o-mini ×1)",
        "budget 'each fixture' (<session fixture corpus_index>) exceeded: 2 calls > 1 (input 1,400, "
        "output 220; gpt-4o-mini ×2)",
        "budget 'index build' exceeded: 1,620 tokens > 1,000 (input 1,400, output 220; gpt-4o-mini ×2)",
    ]


def test_a_fixture_budget_cannot_also_choose_tests(pytester: pytest.Pytester) -> None:
    _setup(
        pytester,
        """
        [[tool.tokenbudget.budgets]]
        fixture = "corpus_index"
        path = "tests/*"
        max-tokens = 1000
        """,
        test_x="def test_x():\n    pass\n",
    )
    result = run_session(pytester)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*budgets]] #1 (path=tests/* fixture=corpus_index): 'fixture' chooses fixtures*"]
    )


# -- remembered filter answers --------------------------------------------------------------------

SEGMENTS = ["tests", "a", "b", "test_x.py", "test_y.py"]


@given(
    paths=st.lists(st.sampled_from(["tests/*", "tests/a/*", "*/test_x.py", "b*"]), max_size=2),
    models=st.lists(st.sampled_from(["gpt-*", "claude-*", "*mini"]), max_size=2),
    providers=st.lists(st.sampled_from(["openai", "anthropic"]), max_size=1),
    files=st.lists(st.lists(st.sampled_from(SEGMENTS), min_size=1, max_size=3).map("/".join), max_size=8),
    keys=st.lists(st.sampled_from(["openai/gpt-4o", "openai/gpt-4o-mini", "anthropic/claude-x", "x/y"])),
)
def test_a_scope_remembers_what_its_globs_would_answer(
    paths: list[str], models: list[str], providers: list[str], files: list[str], keys: list[str]
) -> None:
    scope = Scope(
        "s", Limits(max_calls=1), paths=tuple(paths), models=tuple(models), providers=tuple(providers)
    )
    for path in files + files:  # again: from memory
        entry = TestUsage(f"{path}::test", path=path)
        assert scope.selects(entry) == (not paths or any(fnmatch.fnmatchcase(path, g) for g in paths))
    for key in keys + keys:
        provider, _, model = key.partition("/")
        expected = (not providers or provider in providers) and (
            not models or any(fnmatch.fnmatchcase(model, g) for g in models)
        )
        assert scope.counts(key) == expected


# -- the shortcuts of evaluate_run ----------------------------------------------------------------
# evaluate_run reuses the run's per-model sums for a scope that chooses every entry, and judges a
# per-test scope without merging a tally per test. These compare it with the plain computation.

OWNERS = [  # (node id, kind, path, markers); not in node id order, as tests may run
    ("tests/a/test_x.py::test_two", "test", "tests/a/test_x.py", ()),
    ("tests/a/test_x.py::test_one", "test", "tests/a/test_x.py", ("slow",)),
    ("tests/b/test_y.py::test_three", "test", "tests/b/test_y.py", ("agent",)),
    ("<session fixture corpus_index>", "fixture", "", ()),
    ("<session>", "session", "", ()),
]
MODEL_KEYS = [
    ("openai", "gpt-4o"),
    ("openai", "gpt-4o-mini"),
    ("openai", "o3"),
    ("anthropic", "claude-x"),
    ("groq", "llama"),
]

budget_calls = st.tuples(
    st.sampled_from(range(len(OWNERS))),
    st.sampled_from(MODEL_KEYS),
    st.integers(0, 900),
    st.integers(0, 300),
    st.sampled_from([None, 0.0, 0.0003, 0.01, 0.1, 1e7, 1e-9]),  # None: unpriced; 1e7 + 1e-9: order
    st.booleans(),
)
limits = st.builds(
    Limits,
    max_tokens=st.sampled_from([None, 0, 500, 1500, 10**6]),
    max_cost=st.sampled_from([None, 0.0, 0.01, 0.05, 10**8]),
    max_calls=st.sampled_from([None, 1, 2, 4]),
).filter(bool)
scopes = st.builds(
    lambda limits, per, paths, models, providers, markers, fixtures: Scope(
        "s",
        limits,
        per=per,
        paths=() if fixtures else paths,
        models=models,
        providers=providers,
        markers=() if fixtures else markers,
        fixtures=fixtures,
    ),
    limits,
    st.sampled_from(PER),
    st.sampled_from([(), ("tests/a/*",)]),
    st.sampled_from([(), ("gpt-*",), ("*mini", "claude-*")]),
    st.sampled_from([(), ("openai",), ("anthropic", "groq")]),
    st.sampled_from([(), ("slow",), ("agent", "slow")]),
    st.sampled_from([(), ("corpus_*",)]),
)
policies = st.builds(
    Policy,
    warn_at=st.sampled_from([0.5, 0.8]),
    mode=st.sampled_from(["fail", "warn"]),
    unknown_price=st.sampled_from(["ignore", "warn", "fail"]),
    estimated=st.sampled_from(["count", "warn-only"]),
)


def _budget_run(recorded_calls: list[tuple[Any, ...]]) -> Run:
    run = Run()
    for nodeid, kind, path, markers in OWNERS:
        entry = run.usage_for(nodeid, kind)
        entry.path, entry.markers = path, markers
    for owner, (provider, model), input_tokens, output_tokens, cost, estimated in recorded_calls:
        nodeid, kind = OWNERS[owner][:2]
        run.tests[nodeid].add_call(
            Call(
                owner=nodeid,
                phase="call" if kind == "test" else "session",
                provider=provider,
                api="x",
                host="x",
                model=model,
                usage=Usage(input_tokens, 0, 0, output_tokens, 0),
                cost_usd=cost,
                estimated=estimated,
            )
        )
    return run


def _plain_evaluation(budgets: Budgets, run: Run) -> list[Verdict]:
    """What evaluate_run decides, the long way: every scope's usage summed entry by entry (not
    taken from the run's sums per model), and each test of a per-test scope judged on its own."""
    verdicts = [
        _verdict(
            "session", "session", "session budget", metric, limit, run.totals(), run.models(), budgets.policy
        )
        for metric, limit in budgets.session.items()
    ]
    for scope in budgets.scopes:
        name, subject = f"scope {scope.name}", f"budget {scope.name!r}"
        if scope.per == "total":
            models: dict[str, Tally] = {}
            for entry in run.tests.values():
                if scope.selects(entry):
                    for key, part in scope.models_of(entry).items():
                        models.setdefault(key, Tally()).merge(part)
            total = Tally()
            for key in sorted(models):
                total.merge(models[key])
            verdicts += [
                _verdict(name, "scope", subject, metric, limit, total, models, budgets.policy)
                for metric, limit in scope.limits.items()
            ]
            continue
        # Per test: each chosen test judged in a run of its own, then the scope's rule applied to
        # them: every test not ok, or else the largest (the first of them in node id order).
        entries = list(run.tests.values() if scope.fixtures else run.iter_tests())
        alone = Budgets(scopes=(scope,), policy=budgets.policy)
        for index, (metric, limit) in enumerate(scope.limits.items()):
            judged = [
                alone.evaluate_run(Run(tests={e.nodeid: e}))[index]
                for e in sorted(entries, key=lambda e: e.nodeid)
                if scope.selects(e) and scope.usage_of(e)[0].calls
            ]
            flagged = [v for v in judged if v.status != Status.OK]
            if flagged:
                verdicts += flagged
            elif judged:
                verdicts.append(max(judged, key=lambda v: v.actual))  # the first of the largest
            else:
                verdicts.append(_verdict(name, "scope", subject, metric, limit, Tally(), {}, budgets.policy))
    return verdicts


@pytest.mark.slow
@settings(max_examples=400, deadline=None)
@given(
    recorded_calls=st.lists(budget_calls, max_size=14),
    session=st.one_of(st.just(Limits()), limits),
    scope_list=st.lists(scopes, min_size=1, max_size=3),
    policy=policies,
    finished=st.booleans(),
)
def test_evaluate_run_decides_as_the_plain_computation(
    recorded_calls: list[tuple[Any, ...]],
    session: Limits,
    scope_list: list[Scope],
    policy: Policy,
    finished: bool,
) -> None:
    run = _budget_run(recorded_calls)
    named = tuple(dataclasses.replace(scope, name=f"s{i}") for i, scope in enumerate(scope_list))
    budgets = Budgets(session=session, scopes=named, policy=policy)
    expected = [v.to_dict() for v in _plain_evaluation(budgets, run)]
    with run.finished() if finished else contextlib.nullcontext():
        assert [v.to_dict() for v in budgets.evaluate_run(run)] == expected


def test_a_scope_over_every_entry_counts_fixture_and_session_calls_of_its_models() -> None:
    run = _budget_run(
        [
            (1, ("openai", "gpt-4o"), 100, 10, 0.01, False),
            (3, ("openai", "gpt-4o"), 200, 20, 0.02, False),  # a session-scoped fixture
            (4, ("anthropic", "claude-x"), 400, 40, None, False),  # the session, another model
            (4, ("openai", "gpt-4o-mini"), 800, 80, 0.03, False),
        ]
    )
    every_gpt = Scope("gpt", Limits(max_tokens=10**6), models=("gpt-*",))
    fixtures = Scope("corpus", Limits(max_tokens=10**6), models=("gpt-*",), fixtures=("corpus_*",))
    test_x = Scope("x", Limits(max_tokens=10**6), models=("gpt-*",), paths=("tests/a/*",))
    with run.finished():
        verdicts = Budgets(
            session=Limits(max_tokens=10**6), scopes=(every_gpt, fixtures, test_x)
        ).evaluate_run(run)
    assert [(v.name, v.actual) for v in verdicts] == [
        ("session", 1650.0),
        ("scope gpt", 110.0 + 220 + 880),
        ("scope corpus", 220.0),
        ("scope x", 110.0),
    ]
    assert "gpt-4o-mini ×1, gpt-4o ×2" in verdicts[1].message  # the run's models, claude-x left out


def test_a_per_test_scope_counts_only_its_models_of_each_test() -> None:
    run = _budget_run(
        [
            (1, ("openai", "gpt-4o"), 100, 0, 0.01, False),
            (1, ("openai", "gpt-4o-mini"), 50, 0, 0.02, False),
            (1, ("anthropic", "claude-x"), 5000, 0, None, False),  # left out: else over and unpriced
            (0, ("anthropic", "claude-x"), 9000, 0, 0.5, False),  # counts nothing: no verdict
            (2, ("openai", "gpt-4o"), 120, 0, None, True),
        ]
    )
    scope = Scope("openai", Limits(max_tokens=1000, max_cost=1.0), per="test", providers=("openai",))
    verdicts = Budgets(scopes=(scope,), policy=Policy(estimated="warn-only")).evaluate_run(run)
    assert [(v.metric, v.nodeid, v.actual, v.status) for v in verdicts] == [
        ("total_tokens", "tests/a/test_x.py::test_one", 150.0, "ok"),  # the largest; claude-x left out
        ("cost_usd", "tests/b/test_y.py::test_three", 0.0, "unknown"),  # its unpriced call counts
    ]
    assert verdicts[0].message.endswith("(input 150, output 0; gpt-4o ×1, gpt-4o-mini ×1)")
