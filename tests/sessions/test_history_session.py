"""Run history from real pytest sessions: runs kept (or not) by a session, and the CLI's trend over them."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from datetime import UTC, datetime

import pytest
from pytester_session import run_session

from pytest_tokenbudget.cli import main as cli

SVG = "{http://www.w3.org/2000/svg}"


APP = """
import json
import pathlib

import pytest

USAGE = json.loads(pathlib.Path(__file__).with_name("usage.json").read_text())

@pytest.mark.parametrize("name", sorted(USAGE))
def test_llm(token_usage, name):
    prompt, completion = USAGE[name]
    token_usage.record(model="acme-model", provider="acme", input_tokens=prompt, output_tokens=completion)
"""

PYPROJECT = """
[tool.tokenbudget]
{extra}

[tool.tokenbudget.prices]
"acme-model" = {{ input = 1, output = 4 }}
"""


@pytest.fixture
def app(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    monkeypatch.setenv("COLUMNS", "250")
    for name in ("GITHUB_HEAD_REF", "CI_COMMIT_SHA", "CI_COMMIT_REF_NAME", "GITHUB_ACTIONS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GITHUB_REF_NAME", "main")
    pytester.makepyprojecttoml(PYPROJECT.format(extra=""))
    pytester.makepyfile(test_app=APP)
    return pytester


def _session(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, commit: str, usage: dict[str, list[int]]
) -> pytest.RunResult:
    monkeypatch.setenv("GITHUB_SHA", commit)
    (pytester.path / "usage.json").write_text(json.dumps(usage))
    return run_session(pytester, "--token-budget-save-run", artifact=None)


# -- sessions keep runs; the CLI prints the trend -------------------------------------------------------


def test_history_over_three_saved_runs(
    app: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = [
        ("1111111111aa", {"a": [2000, 100], "b": [1000, 50]}),
        ("2222222222bb", {"a": [2000, 100], "b": [1000, 50], "c": [500, 25]}),
        ("3333333333cc", {"a": [1000, 100], "b": [1000, 50], "c": [500, 25]}),
    ]
    for commit, usage in runs:
        result = _session(app, monkeypatch, commit, usage)
        result.assert_outcomes(passed=len(usage))
        result.stdout.fnmatch_lines([f"run kept in history: .tokenbudget/runs/*_main_{commit[:8]}.json"])
    saved = sorted((app.path / ".tokenbudget" / "runs").iterdir())
    assert [p.name[25:] for p in saved] == ["main_11111111.json", "main_22222222.json", "main_33333333.json"]
    capsys.readouterr()

    assert cli(["history"]) == 0
    lines = capsys.readouterr().out.splitlines()
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    assert all(line.startswith(today) for line in lines[1:])
    assert [line[18:] for line in lines] == [
        "branch  commit    tests  calls  tokens         Δ tokens     cost             Δ cost",
        "main    11111111      2      2   3,150                –  $0.0036                  –",
        "main    22222222      3      3   3,675    +525 (+16.7%)  $0.0042  +$0.0006 (+16.7%)",
        "main    33333333      3      3   2,675  -1,000 (-27.2%)  $0.0032   -$0.001 (-23.8%)",
    ]

    assert cli(["history", ".tokenbudget/runs", "--last", "1", "--svg", "chart/trend.svg"]) == 0
    captured = capsys.readouterr()
    assert [line[18:] for line in captured.out.splitlines()] == [
        "branch  commit    tests  calls  tokens         Δ tokens     cost            Δ cost",
        "main    33333333      3      3   2,675  -1,000 (-27.2%)  $0.0032  -$0.001 (-23.8%)",
    ]
    assert captured.err == "chart: chart/trend.svg\n"
    svg = ET.parse(app.path / "chart" / "trend.svg").getroot()
    assert [len(p.get("points", "").split()) for p in svg.iter(f"{SVG}polyline")] == [1, 1]


def test_history_dir_and_save_run_from_pyproject(
    app: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    app.makepyprojecttoml(PYPROJECT.format(extra='save-run = true\nhistory-dir = "ci/runs"'))
    monkeypatch.setenv("GITHUB_SHA", "abcdef0123")
    (app.path / "usage.json").write_text(json.dumps({"a": [10, 5]}))
    result = app.runpytest("--token-budget", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["run kept in history: ci/runs/*_main_abcdef01.json"])
    assert not (app.path / ".tokenbudget").exists()
    capsys.readouterr()
    assert cli(["history"]) == 0  # the folder named in pyproject
    assert capsys.readouterr().out.splitlines()[1][18:] == (
        "main    abcdef01      1      1      15         –  $0.00003       –"
    )


def test_a_run_that_stopped_early_is_not_kept(app: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    app.makepyfile(test_fail="def test_fail():\n    assert False\n")
    result = _session(app, monkeypatch, "1234", {"a": [10, 5]})
    assert result.ret == 1  # and without -x the run is complete: kept
    result.stdout.fnmatch_lines(["run kept in history: .tokenbudget/runs/*_main_1234.json"])
    result = app.runpytest("--token-budget", "-p", "no:cacheprovider", "--token-budget-save-run", "-x")
    result.stdout.fnmatch_lines(["run not kept in history: it stopped early (its totals are a lower bound)"])
    assert len(list((app.path / ".tokenbudget" / "runs").iterdir())) == 1
