"""Context windows: from genai-prices or pyproject; utilisation per test, warned above a threshold."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from pytest_tokenbudget.config import ConfigError, Context
from pytest_tokenbudget.pricing.context_windows import ContextWindows, Utilisation


def test_windows_come_from_genai_prices() -> None:
    windows = ContextWindows()
    assert windows.window("openai", "gpt-4o-mini") == (128_000, "genai-prices")
    assert windows.window("anthropic", "claude-sonnet-4-5") == (200_000, "genai-prices")
    assert windows.window("google", "gemini-2.5-flash") == (1_048_576, "genai-prices")
    # a compatible host serving a known model is looked up by the model's name
    assert windows.window("openai-compatible", "gpt-4o-mini") == (128_000, "genai-prices")
    assert windows.window("ollama", "llama3") is None


def test_pyproject_windows_override_most_specific_first() -> None:
    windows = ContextWindows(
        {"gpt-4o-mini": 1000, "openai/gpt-4o-mini": 2000, "ollama/llama3*": 8192, "my-*": 4096}
    )
    assert windows.window("openai", "gpt-4o-mini") == (2000, "pyproject")
    assert windows.window("azure", "gpt-4o-mini") == (1000, "pyproject")
    assert windows.window("ollama", "llama3.1") == (8192, "pyproject")
    assert windows.window("openai-compatible", "my-finetune") == (4096, "pyproject")
    assert windows.window("openai", "gpt-4o") == (128_000, "genai-prices")


def test_utilisation_is_input_over_window() -> None:
    used = ContextWindows({"m": 200}).utilisation("p", "m", 190)
    assert used == Utilisation(190, 200, "pyproject")
    assert used is not None
    assert used.fraction == 0.95
    assert ContextWindows({"m": 200}).utilisation("p", "m", 0) is None


def test_a_bad_window_names_file_and_key(tmp_path: Path) -> None:
    ctx = Context("pyproject.toml", tmp_path)
    with pytest.raises(ConfigError) as raised:
        ContextWindows.from_table({"gpt-4o": "big"}, ctx)
    assert str(raised.value) == (
        "pyproject.toml: [tool.tokenbudget] context-windows.gpt-4o: expected a positive integer, got 'big'"
    )
    with pytest.raises(ConfigError) as raised:
        ContextWindows.from_table(["gpt-4o"], ctx)
    assert str(raised.value) == (
        "pyproject.toml: [tool.tokenbudget.context-windows] must be a table of model = tokens, got ['gpt-4o']"
    )


MOCK_TEST = """
import httpx

def handler(request):
    body = {"id": "c", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": PROMPT, "completion_tokens": 1, "total_tokens": PROMPT + 1}}
    return httpx.Response(200, json=body)

def ask():
    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        client.post("https://api.openai.com/v1/chat/completions",
                    json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})

def test_big():
    global PROMPT
    PROMPT = 19
    ask()

def test_small():
    global PROMPT
    PROMPT = 5
    ask()
"""


def test_session_warns_above_context_warn_at_and_records_the_maximum_per_test(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyprojecttoml(
        textwrap.dedent(
            """
            [tool.tokenbudget]
            context-warn-at = "90%"

            [tool.tokenbudget.context-windows]
            "openai/gpt-4o-mini" = 20
            """
        )
    )
    pytester.makepyfile(test_app=MOCK_TEST)
    result = pytester.runpytest("--token-budget", "--token-budget-json=run.json", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
    assert result.ret == 0
    message = (
        "test_app.py::test_big filled 95% of the context window of openai/gpt-4o-mini "
        "(19 of 20 input tokens; warn at 90%)"
    )
    result.stdout.fnmatch_lines(
        ["context window: at most 95% (openai/gpt-4o-mini, 19 of 20) in test_app.py::test_big", message]
    )
    run = json.loads((pytester.path / "run.json").read_text())
    assert run["tests"]["test_app.py::test_big"]["context"] == {
        "max": 0.95,
        "model": "openai/gpt-4o-mini",
        "input_tokens": 19,
        "window": 20,
        "source": "pyproject",
        "estimated": False,
        "warned_calls": 1,
    }
    assert run["tests"]["test_app.py::test_small"]["context"]["max"] == 0.25
    assert [(v["kind"], v["status"], v["actual"], v["message"]) for v in run["verdicts"]] == [
        ("context-window", "warn", 0.95, message)
    ]


def test_a_bad_context_windows_table_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyprojecttoml('[tool.tokenbudget.context-windows]\n"gpt-4o" = 0\n')
    pytester.makepyfile(test_app="def test_a():\n    pass\n")
    result = pytester.runpytest("--token-budget", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "*pytest-tokenbudget: *pyproject.toml: [[]tool.tokenbudget[]] context-windows.gpt-4o: "
            "expected a positive integer, got 0"
        ]
    )
