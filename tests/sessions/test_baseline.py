"""Baselines: save, load (file and git:REF), compare, thresholds, price vs usage, the CLI."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from pytester_session import run_session

from pytest_tokenbudget.cli import main as cli
from pytest_tokenbudget.config import ConfigError
from pytest_tokenbudget.model import Call, Run, Status, Usage
from pytest_tokenbudget.pricing.prices import Rates
from pytest_tokenbudget.runs.baseline import compare, judge, parse_rules

APP = """
import json
import pathlib

import pytest

USAGE = json.loads(pathlib.Path(__file__).with_name("usage.json").read_text())

@pytest.mark.parametrize("name", sorted(USAGE))
def test_llm(token_usage, name):
    prompt, completion = USAGE[name]
    token_usage.record(model="gpt-4o-mini", provider="openai", input_tokens=prompt, output_tokens=completion)
"""


def _app(pytester: pytest.Pytester, usage: dict[str, list[int]]) -> None:
    (pytester.path / "usage.json").write_text(json.dumps(usage))


@pytest.fixture
def app(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    monkeypatch.setenv("COLUMNS", "250")
    pytester.makepyprojecttoml("[tool.tokenbudget]\n")
    pytester.makepyfile(test_app=APP)
    _app(pytester, {"a": [2000, 100], "b": [1000, 50], "tiny": [40, 2]})
    return pytester


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def test_saved_baseline_is_deterministic_and_holds_no_times(app: pytest.Pytester) -> None:
    run_session(app, "--token-budget-save-baseline").assert_outcomes(passed=3)
    path = app.path / "tokenbudget.baseline.json"
    first = path.read_bytes()
    run_session(app, "--token-budget-save-baseline").stdout.fnmatch_lines(
        ["baseline saved: tokenbudget.baseline.json"]
    )
    assert path.read_bytes() == first
    data = json.loads(first)
    assert set(data["meta"]) <= {"prices"}
    assert "started" not in first.decode()
    assert "duration" not in first.decode()
    assert (data["verdicts"], data["issues"]) == ([], [])
    assert data["tests"]["test_app.py::test_llm[a]"]["total_tokens"] == 2100
    assert first.endswith(b"}\n")


@pytest.mark.slow
def test_baseline_bytes_do_not_change_with_the_commit_branch_or_plugin_version(
    app: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unrelated commit, another branch or a plugin upgrade leaves the saved file as it was, so
    the baseline workflow commits only when the usage changed."""
    _git(app.path, "init", "-q", "-b", "main")
    _git(app.path, "config", "user.email", "t@example.com")
    _git(app.path, "config", "user.name", "t")
    _git(app.path, "add", "-A")
    _git(app.path, "commit", "-q", "-m", "app")
    run_session(app, "--token-budget-save-baseline").assert_outcomes(passed=3)
    path = app.path / "tokenbudget.baseline.json"
    first = path.read_bytes()
    app.makefile(".txt", unrelated="a change that is not about usage\n")
    _git(app.path, "add", "-A")
    _git(app.path, "commit", "-q", "-m", "unrelated")
    _git(app.path, "checkout", "-q", "-b", "feature")
    monkeypatch.setattr("pytest_tokenbudget.__version__", "99.0.0")
    run_session(app, "--token-budget-save-baseline").assert_outcomes(passed=3)
    assert path.read_bytes() == first
    _app(app, {"a": [2001, 100], "b": [1000, 50], "tiny": [40, 2]})
    run_session(app, "--token-budget-save-baseline").assert_outcomes(passed=3)
    assert path.read_bytes() != first  # one token more is a change


def test_growth_beyond_the_thresholds_fails_with_the_numbers(app: pytest.Pytester) -> None:
    run_session(app, "--token-budget-save-baseline").assert_outcomes(passed=3)
    _app(app, {"a": [2600, 100], "b": [1000, 50], "tiny": [80, 2], "new": [10, 1]})
    result = run_session(
        app,
        "--token-budget-baseline=tokenbudget.baseline.json",
        "--token-budget-max-increase=total:10%",
        "--token-budget-max-increase=test:25%",
        "--token-budget-markdown=report.md",
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(
        [
            "against the baseline (*tokenbudget.baseline.json):",
            "  tokens 3,192 → 3,843 (+651, +20.4%); cost *",
            "  tests: 2 changed, 1 new, 0 removed",
            "*exceeded  total tokens grew beyond baseline total:10%: 3,192 → 3,843 (+20.4%), limit 3,511",
            "*exceeded  test_app.py::test_llm?a? grew beyond baseline test:25%: 2,100 → 2,700 (+28.6%)*",
        ]
    )
    assert "test_llm[tiny] grew" not in result.stdout.str()  # 82 tokens: under min-tokens
    run = json.loads((app.path / "run.json").read_text())
    assert run["comparison"]["counts"] == {"new": 1, "removed": 0, "changed": 2, "unchanged": 1}
    assert [v["status"] for v in run["verdicts"] if v["kind"] == "baseline"] == ["exceeded", "exceeded"]
    markdown = (app.path / "report.md").read_text()
    assert "#### Against the baseline" in markdown
    assert "**+651 tokens** (+20.4%)" in markdown


def test_a_failing_run_does_not_become_the_baseline_unless_asked(app: pytest.Pytester) -> None:
    run_session(app, "--token-budget-save-baseline").assert_outcomes(passed=3)
    saved = (app.path / "tokenbudget.baseline.json").read_text()
    _app(app, {"a": [9000, 100], "b": [1000, 50], "tiny": [40, 2]})
    args = ("--token-budget-baseline=tokenbudget.baseline.json", "--token-budget-max-increase=10%")
    result = run_session(app, *args, "--token-budget-save-baseline")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["baseline not saved: the run exceeded its budgets or thresholds*"])
    assert (app.path / "tokenbudget.baseline.json").read_text() == saved
    run_session(app, *args, "--token-budget-update-baseline").stdout.fnmatch_lines(["baseline saved: *"])
    data = json.loads((app.path / "tokenbudget.baseline.json").read_text())
    assert data["tests"]["test_app.py::test_llm[a]"]["input_tokens"] == 9000


@pytest.mark.slow
def test_git_ref_baseline_and_first_adoption(app: pytest.Pytester) -> None:
    _git(app.path, "init", "-q", "-b", "main")
    _git(app.path, "config", "user.email", "t@example.com")
    _git(app.path, "config", "user.name", "t")
    _git(app.path, "add", "-A")
    _git(app.path, "commit", "-q", "-m", "app")
    first = run_session(app, "--token-budget-baseline=git:main", "--token-budget-max-increase=10%")
    assert first.ret == pytest.ExitCode.OK  # no baseline on main yet: a note, not a failure
    first.stdout.fnmatch_lines(["baseline: no baseline found at main:tokenbudget.baseline.json: nothing*"])
    run_session(app, "--token-budget-save-baseline").assert_outcomes(passed=3)
    _git(app.path, "add", "tokenbudget.baseline.json")
    _git(app.path, "commit", "-q", "-m", "baseline")
    _git(app.path, "checkout", "-q", "-b", "feature")
    _app(app, {"a": [2000, 100], "b": [1500, 50], "tiny": [40, 2]})
    result = run_session(app, "--token-budget-baseline=git:main", "--token-budget-max-increase=tokens:+1000")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(
        [
            "against the baseline (main:tokenbudget.baseline.json):",
            "  tokens 3,192 → 3,692 (+500, +15.7%)*",
            "*ok        total tokens within baseline tokens:+1000: 3,192 → 3,692 (+15.7%), limit 4,192",
        ]
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "baseline *broken.json: not valid JSON*"),
        ('{"schema": "other"}', "baseline *broken.json: not a pytest-tokenbudget run artifact"),
    ],
)
def test_a_corrupt_baseline_is_a_usage_error(app: pytest.Pytester, content: str, message: str) -> None:
    (app.path / "broken.json").write_text(content)
    result = run_session(app, "--token-budget-baseline=broken.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*pytest-tokenbudget: {message}*"])
    assert "Traceback" not in result.stderr.str()


def test_a_bad_threshold_is_a_usage_error(app: pytest.Pytester) -> None:
    result = run_session(app, "--token-budget-baseline=x.json", "--token-budget-max-increase=lots")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*max-increase: expected rules like 10%, total:10%*got 'lots'"])


# -- units ---------------------------------------------------------------------------------------------


def test_rule_grammar() -> None:
    rules = parse_rules(
        ("10%", "total:5%", "test:25%", "cost:5%", "tokens:+5,000", "cost:+0.50", "test:+200")
    )
    assert [(r.scope, r.percent, r.absolute) for r in rules] == [
        ("total", 0.10, None),
        ("total", 0.05, None),
        ("test", 0.25, None),
        ("cost", 0.05, None),
        ("total", None, 5000.0),
        ("cost", None, 0.5),
        ("test", None, 200.0),
    ]
    for bad in ("ten%", "test:", "cost:5", "speed:5%"):
        with pytest.raises(ConfigError, match="max-increase"):
            parse_rules((bad,))


def _run_with(model_usage: dict[str, Usage], cost_rate: float) -> Run:
    run = Run()
    for nodeid, usage in model_usage.items():
        cost = (usage.input_tokens + usage.output_tokens) * cost_rate / 1e6
        run.usage_for(nodeid).add_call(
            Call(nodeid, "call", "openai", "openai.chat", "h", "m", usage, cost_usd=cost)
        )
    return run


def test_a_price_change_is_not_a_usage_regression() -> None:
    base = _run_with({"t::a": Usage(1_000_000, 0, 0, 0, 0)}, cost_rate=1.0)  # $1 at the old price
    head = _run_with({"t::a": Usage(1_000_000, 0, 0, 0, 0)}, cost_rate=2.0)  # same tokens, $2 now
    today = Rates(input=2.0, output=2.0)
    comparison = compare(base, head, lambda provider, model, usage: today.cost(usage))
    assert comparison["cost"] == {
        "base": 1.0,
        "head": 2.0,
        "delta": 1.0,
        "usage_effect": 0.0,
        "usage_effect_pct": 0.0,
        "price_effect": 1.0,
    }
    (verdict,) = judge(comparison, parse_rules(("cost:5%",)), min_tokens=0, warn_at=0.8)
    assert verdict.status == Status.OK  # the code did not get dearer: the price did


def test_tokenbudget_compare(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pytest_tokenbudget.runs.artifact import write_run

    write_run(tmp_path / "base.json", _run_with({"t::a": Usage(1000, 0, 0, 10, 0)}, 1.0))
    write_run(
        tmp_path / "head.json",
        _run_with({"t::a": Usage(1500, 0, 0, 10, 0), "t::b": Usage(5, 0, 0, 1, 0)}, 1.0),
    )
    base, head = str(tmp_path / "base.json"), str(tmp_path / "head.json")
    assert cli(["compare", base, head, "--max-increase", "25%"]) == 1
    out = capsys.readouterr().out
    assert "tokens 1,010 → 1,516 (+506, +50.1%)" in out
    assert "exceeded: total tokens grew beyond baseline 25%: 1,010 → 1,516 (+50.1%), limit 1,262" in out
    assert cli(["compare", base, head, "--format", "markdown"]) == 0
    assert capsys.readouterr().out.startswith("#### Against the baseline")
    assert cli(["compare", str(tmp_path / "missing.json"), head]) == 2
