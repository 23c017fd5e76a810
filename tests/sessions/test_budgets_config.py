"""Every budget configuration error is a pytest usage error naming the file, the key and the expectation."""

from __future__ import annotations

import textwrap

import pytest

LIMITS = "max-calls, max-cost, max-input-tokens, max-output-tokens, max-tokens"


@pytest.mark.parametrize(
    ("toml", "error"),
    [
        (
            "[tool.tokenbudget.per-test]\nmax-token = 5",
            "[tool.tokenbudget.per-test] unknown key 'max-token' (did you mean 'max-tokens'?); "
            f"known keys: {LIMITS}",
        ),
        (
            "[tool.tokenbudget.per-test]\nmax-tokens = -5",
            "[tool.tokenbudget] per-test.max-tokens: expected a whole number >= 0, got -5",
        ),
        (
            "[tool.tokenbudget.per-test]\nmax-cost = 'cheap'",
            "[tool.tokenbudget] per-test.max-cost: expected an amount in USD >= 0 (e.g. 2.50), got 'cheap'",
        ),
        (
            "[tool.tokenbudget.per-test]",
            "[tool.tokenbudget.per-test] sets no limit; expected one of "
            "max-tokens, max-input-tokens, max-output-tokens, max-cost, max-calls",
        ),
        (
            "[tool.tokenbudget]\nper-test = 5",
            "[tool.tokenbudget.per-test] must be a table of max-* limits, got 5",
        ),
        (
            "[[tool.tokenbudget.budgets]]\npaths = 'tests/*'\nmax-tokens = 1",
            "[[tool.tokenbudget.budgets]] #1 unknown key 'paths' (did you mean 'path'?); known keys: "
            f"fixture, marker, {LIMITS}, model, name, path, per, provider",
        ),
        (
            "[[tool.tokenbudget.budgets]]\nname = 'a'\nmax-tokens = 1\n"
            "[[tool.tokenbudget.budgets]]\nmax-cost = 'two dollars'",
            "[tool.tokenbudget] budgets #2 max-cost: "
            "expected an amount in USD >= 0 (e.g. 2.50), got 'two dollars'",
        ),
        (
            "[[tool.tokenbudget.budgets]]\nper = 'each'\nmax-tokens = 1",
            "[tool.tokenbudget] budgets #1 per: expected 'test' or 'total', got 'each'",
        ),
        (
            "[[tool.tokenbudget.budgets]]\nname = 'x'\nmax-tokens = 1\n"
            "[[tool.tokenbudget.budgets]]\nname = 'x'\nmax-calls = 1",
            "[[tool.tokenbudget.budgets]] #2: name 'x' is used twice",
        ),
        (
            "[[tool.tokenbudget.budgets]]\nname = 'agents'\npath = 'agents/*'",
            "[[tool.tokenbudget.budgets]] #1 (agents) sets no limit; expected one of "
            "max-tokens, max-input-tokens, max-output-tokens, max-cost, max-calls",
        ),
        (
            "[[tool.tokenbudget.budgets]]\npath = 5\nmax-tokens = 1",
            "[tool.tokenbudget] budgets #1 path: expected a string or a list of strings, got 5",
        ),
        (
            "[[tool.tokenbudget.budgets]]\nname = ''\nmax-tokens = 1",
            "[tool.tokenbudget] budgets #1 name: expected a non-empty string, got ''",
        ),
        (
            "[tool.tokenbudget.budgets]\nmax-tokens = 1",
            "[tool.tokenbudget] budgets must be an array of tables ([[tool.tokenbudget.budgets]]), "
            "got {'max-tokens': 1}",
        ),
        (
            "[tool.tokenbudget]\nmax-token = 1",
            "[tool.tokenbudget] unknown key 'max-token' (did you mean 'max-tokens'?); known keys: ",
        ),
        (
            "[tool.tokenbudget]\nwarn-at = 1.5",
            '[tool.tokenbudget] warn-at: expected a fraction between 0 and 1 (e.g. 0.8 or "80%"), got 1.5',
        ),
        (
            "[tool.tokenbudget]\nunknown-price = 'skip'",
            "[tool.tokenbudget] unknown-price: expected 'ignore' or 'warn' or 'fail', got 'skip'",
        ),
    ],
    ids=[
        "per-test-unknown-key",
        "per-test-negative",
        "per-test-money",
        "per-test-empty",
        "per-test-not-table",
        "scope-unknown-key",
        "scope-money",
        "scope-per",
        "scope-duplicate-name",
        "scope-no-limit",
        "scope-path-type",
        "scope-empty-name",
        "budgets-not-array",
        "session-unknown-key",
        "warn-at",
        "unknown-price",
    ],
)
def test_configuration_error_is_a_usage_error(pytester: pytest.Pytester, toml: str, error: str) -> None:
    pytester.makepyprojecttoml(textwrap.dedent(toml))
    pytester.makepyfile("def test_a():\n    pass\n")
    result = pytester.runpytest("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    line = result.stderr.lines[0]
    expected = f"ERROR: pytest-tokenbudget: {pytester.path / 'pyproject.toml'}: {error}"
    assert line.startswith(expected) if error.endswith("known keys: ") else line == expected
    assert "Traceback" not in result.stderr.str()


@pytest.mark.parametrize(
    ("option", "error"),
    [
        ("--token-budget-max-cost=abc", "expected an amount in USD >= 0 (e.g. 2.50), got 'abc'"),
        ("--token-budget-max-tokens=-1", "expected a whole number >= 0, got '-1'"),
        ("--token-budget-mode=loud", "expected 'fail' or 'warn', got 'loud'"),
    ],
)
def test_bad_command_line_budget_is_a_usage_error(pytester: pytest.Pytester, option: str, error: str) -> None:
    pytester.makepyfile("def test_a():\n    pass\n")
    result = pytester.runpytest("-p", "no:cacheprovider", option)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    key = option.split("=", 1)[0]
    assert result.stderr.lines[0] == f"ERROR: pytest-tokenbudget: command line {key}: {error}"
