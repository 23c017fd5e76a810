"""Hostile strings and unwritable paths never crash a run, forge a CI line or lose a report.

A provider's ``model`` holding a lone surrogate, newlines that would start a GitHub workflow
command, separators and an escape sequence: every report is still written and parses, pytest's
own ``--junitxml`` too, and nothing from outside reaches the terminal unescaped. An output path
that cannot be written is a usage error naming the option before any test runs; a report that
fails at the end is said in red and the others are written.
"""

from __future__ import annotations

import csv
import json
import xml.etree.ElementTree as ET

import pytest

FORGED = "gpt-4o\ud800\n::error file=forged.py,line=1::pwned\r\u0085\u2028\x1b]8;;https://evil.example\x07x"

SUITE = """
import json

import httpx2
import openai

MODEL = {model!r}


def reply(request):
    body = {{
        "id": "c1",
        "object": "chat.completion",
        "model": MODEL,
        "choices": [
            {{"index": 0, "message": {{"role": "assistant", "content": "hi"}}, "finish_reason": "stop"}}
        ],
        "usage": {{"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}},
    }}
    headers = {{"content-type": "application/json"}}
    return httpx2.Response(200, content=json.dumps(body).encode(), headers=headers)


def test_hostile_model():
    http = httpx2.Client(transport=httpx2.MockTransport(reply))
    client = openai.OpenAI(api_key="sk-test", base_url="https://api.openai.com/v1", http_client=http)
    ask = [{{"role": "user", "content": "hi"}}]
    assert client.chat.completions.create(model="gpt-4o", messages=ask).model == MODEL
"""

OUTPUTS = (
    "--token-budget-json=out/run.json",
    "--token-budget-markdown=out/pr.md",
    "--token-budget-csv=out/usage.csv",
    "--token-budget-junit=out/budgets.xml",
    "--token-budget-calls=out/calls.jsonl",
    "--junitxml=out/pytest.xml",
)


@pytest.mark.slow
def test_a_hostile_model_name_loses_no_report_and_forges_no_line(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    summary = pytester.path / "summary.md"
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    pytester.makepyfile(test_hostile=SUITE.format(model=FORGED))
    result = pytester.runpytest_subprocess("--token-budget", "--token-budget-max-tokens=5", *OUTPUTS)
    assert result.ret == pytest.ExitCode.TESTS_FAILED  # the budget, nothing else
    result.stdout.re_match_lines([r"=* 1 passed, 1 budget exceeded in [0-9.]+s =*$"])
    out = pytester.path / "out"
    run = json.loads((out / "run.json").read_text())
    assert run["totals"]["total_tokens"] == 15
    [model] = run["models"]
    assert "\ud800" not in model
    assert "\n" not in model
    assert "\x1b" not in model
    ET.parse(out / "pytest.xml")
    ET.parse(out / "budgets.xml")
    assert len(list(csv.reader((out / "usage.csv").read_text().splitlines()))) == 2
    assert len((out / "calls.jsonl").read_text().splitlines()) == 1
    for markdown in ((out / "pr.md").read_text(), summary.read_text()):
        assert "\x1b" not in markdown
        assert not [line for line in markdown.splitlines() if line.lstrip().startswith("::error")]
    for stream in (result.stdout.str(), result.stderr.str()):
        assert "\x1b" not in stream
        assert "\ud800" not in stream
        for line in stream.splitlines():
            assert not line.startswith("::error file=forged.py"), line
            if line.startswith("::"):
                assert line.startswith(("::error ", "::warning ", "::notice ")), line


def test_a_hostile_model_name_is_made_safe_where_it_enters() -> None:
    from pytest_tokenbudget.units import clean

    cleaned = clean(FORGED)
    assert cleaned.isprintable()
    assert cleaned.startswith("gpt-4o\ufffd\ufffd::error")
    assert clean("gpt-4o-mini") == "gpt-4o-mini"


@pytest.mark.parametrize(
    ("make", "option", "problem"),
    [
        (lambda p: (p / "afile").write_text("x"), "--token-budget-json=afile/run.json", "is not a directory"),
        (lambda p: (p / "adir").mkdir(), "--token-budget-markdown=adir", "it is a directory"),
        (
            lambda p: (p / "afile").write_text("x"),
            "--token-budget-calls=afile/calls.jsonl",
            "is not a directory",
        ),
    ],
)
def test_an_output_path_that_cannot_be_written_is_a_usage_error_before_any_test(
    pytester: pytest.Pytester, make: object, option: str, problem: str
) -> None:
    make(pytester.path)  # type: ignore[operator]
    pytester.makepyfile(test_ok="def test_ok():\n    pass\n")
    result = pytester.runpytest("--token-budget", option)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    flag = option.split("=", maxsplit=1)[0]
    result.stderr.fnmatch_lines([f"*pytest-tokenbudget: command line {flag}: expected *{problem}*"])
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()


def test_a_history_dir_on_a_file_and_a_nul_in_a_path_are_usage_errors(pytester: pytest.Pytester) -> None:
    (pytester.path / "runs").write_text("not a directory")
    pytester.makepyprojecttoml('[tool.tokenbudget]\nhistory-dir = "runs"\n')
    result = pytester.runpytest("--token-budget")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*pyproject.toml: *history-dir*it is a file*"])
    pytester.makepyprojecttoml('[tool.tokenbudget]\njson = "run\\u0000.json"\n')
    nul = pytester.runpytest("--token-budget")
    assert nul.ret == pytest.ExitCode.USAGE_ERROR
    nul.stderr.fnmatch_lines(["*pyproject.toml: *json*a file path*"])


BROKEN_JUNIT = """
import pytest_tokenbudget.report.junit as junit


def explode(run):
    raise RuntimeError("renderer bug")


junit.render = explode
"""


@pytest.mark.slow
def test_a_report_that_fails_at_the_end_is_said_and_the_others_are_written(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        broken_junit=BROKEN_JUNIT,
        test_usage="def test_usage(token_usage):\n    token_usage.record(model='m', input_tokens=3)\n",
    )
    result = pytester.runpytest_subprocess("--token-budget", "-p", "broken_junit", *OUTPUTS)
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(
        ["pytest-tokenbudget: the JUnit report was not written: RuntimeError: renderer bug"]
    )
    out = pytester.path / "out"
    assert sorted(p.name for p in out.iterdir()) == [
        "calls.jsonl",
        "pr.md",
        "pytest.xml",
        "run.json",
        "usage.csv",
    ]
    assert json.loads((out / "run.json").read_text())["totals"]["input_tokens"] == 3
    ET.parse(out / "pytest.xml")


BROKEN_INSPECTOR = """
import pytest_tokenbudget.inspection.inspector as inspector


def explode(self, entry, call, request, played):
    raise RuntimeError("inspector bug")


inspector.Inspector._inspect = explode
"""


@pytest.mark.slow
def test_an_inspector_failure_is_reported_by_name_and_costs_no_count(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(broken_inspector=BROKEN_INSPECTOR, test_hostile=SUITE.format(model="gpt-4o"))
    result = pytester.runpytest_subprocess(
        "--token-budget", "-p", "broken_inspector", "--token-budget-json=run.json"
    )
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(
        ["pytest-tokenbudget: request inspection failed 1 time *RuntimeError: inspector bug"]
    )
    run = json.loads((pytester.path / "run.json").read_text())
    assert run["totals"]["total_tokens"] == 15
    assert run["meta"]["sink_failures"]["request inspection"]["count"] == 1
