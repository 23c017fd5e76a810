"""``tokenbudget suggest``: budgets from saved runs, as a diff of pyproject.toml; ``--write``."""

from __future__ import annotations

import fnmatch
import json
import tomllib
from pathlib import Path

import pytest

from pytest_tokenbudget.cli import main as cli
from pytest_tokenbudget.model import Call, Run, Usage
from pytest_tokenbudget.runs.suggest import _glob_literal, percentile, propose, round_up, updated_pyproject

APP = """
import json
import pathlib

import pytest

USAGE = json.loads(pathlib.Path(__file__).with_name("usage.json").read_text())

@pytest.mark.parametrize("name", ["a", "b"])
def test_llm(token_usage, name):
    prompt, completion = USAGE[name]
    token_usage.record(model="gpt-4o-mini", provider="openai", input_tokens=prompt, output_tokens=completion)


def test_no_llm():
    pass
"""

OTHER = """
import json
import pathlib

USAGE = json.loads(pathlib.Path(__file__).with_name("usage.json").read_text())


def test_summary(token_usage):
    prompt, completion = USAGE["summary"]
    token_usage.record(model="in-house", input_tokens=prompt, output_tokens=completion)  # no price
"""

PYPROJECT = """\
[project]
name = "demo"  # the app

[tool.tokenbudget]
mode = "fail"  # overruns fail the build

# a budget the team wrote by hand: kept
[[tool.tokenbudget.budgets]]
name = "all calls"
max-calls = 100

[tool.other]
key = 1
"""

RUNS = [
    {"a": [1000, 100], "b": [200, 20], "summary": [500, 50]},
    {"a": [1040, 100], "b": [210, 20], "summary": [520, 50]},
    {"a": [1020, 100], "b": [190, 20], "summary": [480, 50]},
]


def _usage(pytester: pytest.Pytester, usage: dict[str, list[int]]) -> None:
    (pytester.path / "usage.json").write_text(json.dumps(usage))


def _pytest(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest("--token-budget", "-p", "no:cacheprovider", *args)


def test_suggested_budgets_pass_the_same_usage_and_fail_double(
    pytester: pytest.Pytester, capsys: pytest.CaptureFixture[str]
) -> None:
    pytester.makepyfile(test_app=APP, test_other=OTHER)
    (pytester.path / "pyproject.toml").write_text(PYPROJECT)
    for usage in RUNS:
        _usage(pytester, usage)
        _pytest(pytester, "--token-budget-save-run").assert_outcomes(passed=4)
    capsys.readouterr()

    assert cli(["suggest"]) == 0  # a diff only: nothing written
    out, err = capsys.readouterr()
    assert (pytester.path / "pyproject.toml").read_text() == PYPROJECT
    assert out.startswith("--- a/pyproject.toml\n+++ b/pyproject.toml\n")
    # session p95 of 1,870/1,940/1,860 (the largest of 3) × 1.2 = 2,328 → 2,400
    assert "+max-tokens = 2400\n" in out
    assert "max-cost" not in out.split("[[")[0]  # in-house has no price: no session cost limit
    assert "3 runs: p95 × 1.2" in err

    assert cli(["suggest", "--write"]) == 0
    written = (pytester.path / "pyproject.toml").read_text()
    assert 'name = "demo"  # the app' in written  # formatting and comments kept
    assert 'mode = "fail"  # overruns fail the build' in written
    assert "# a budget the team wrote by hand: kept" in written
    table = tomllib.loads(written)["tool"]["tokenbudget"]
    scopes = {scope["name"]: scope for scope in table["budgets"]}
    assert scopes["all calls"] == {"name": "all calls", "max-calls": 100}
    app = scopes["suggested: test_app.py"]
    # test_llm[a]: p95 1,140 × 1.2 = 1,368 → 1,400; cost 1,140 tokens of gpt-4o-mini, rounded up
    assert (app["path"], app["per"], app["max-tokens"]) == ("test_app.py", "test", 1400)
    assert 0 < app["max-cost"] < 0.001
    assert "max-cost" not in scopes["suggested: test_other.py"]  # not priced: tokens only
    assert scopes["suggested: test_other.py"]["max-tokens"] == 690  # 570 × 1.2 = 684 → 690
    assert tomllib.loads(written)["tool"]["other"] == {"key": 1}

    assert cli(["suggest", "--write"]) == 0  # again: the suggested entries are replaced, not added
    assert (pytester.path / "pyproject.toml").read_text() == written
    assert "already holds these budgets" in capsys.readouterr().err

    _usage(pytester, RUNS[1])  # the largest usage seen: within every suggested budget
    result = _pytest(pytester)
    result.assert_outcomes(passed=4)
    assert result.ret == pytest.ExitCode.OK
    assert "exceeded" not in result.stdout.str()

    _usage(pytester, {key: [2 * n for n in value] for key, value in RUNS[1].items()})
    result = _pytest(pytester)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        [
            "*exceeded  session budget exceeded: 3,880 tokens > 2,400*",
            "*'suggested: test_app.py' (test_app.py::test_llm?a?) exceeded: 2,280 tokens > 1,400*",
            "*'suggested: test_other.py' (test_other.py::test_summary) exceeded: 1,140 tokens > 690*",
        ]
    )


def test_percentile_is_nearest_rank() -> None:
    values = list(range(1, 21))
    assert percentile(values, 95) == 19
    assert percentile(values, 100) == 20
    assert percentile([7], 95) == 7


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1234, 1300),
        (1368.0, 1400),
        (2020.8, 2100),
        (1300, 1300),
        (0.0002016, 0.00021),
        (8.4, 8.4),
        (99.1, 100),
    ],
)
def test_round_up_to_two_significant_figures(value: float, expected: float) -> None:
    assert round_up(value) == expected


def test_a_path_with_glob_characters_matches_only_itself() -> None:
    pattern = _glob_literal("tests/test_[x]*.py")
    assert fnmatch.fnmatchcase("tests/test_[x]*.py", pattern)
    assert not fnmatch.fnmatchcase("tests/test_x_more.py", pattern)


def _saved(tokens: dict[str, int], partial: bool = False) -> Run:
    run = Run(meta={"partial": partial})
    for nodeid, n in tokens.items():
        entry = run.usage_for(nodeid)
        entry.add_call(
            Call(
                nodeid,
                "call",
                "openai",
                "openai.chat",
                "h",
                "gpt-4o-mini",
                Usage(n, 0, 0, 0, 0),
                cost_usd=n / 1e6,
            )
        )
        entry.path = nodeid.split("::")[0]
    return run


def test_partial_runs_are_left_out_and_tests_without_calls_get_nothing() -> None:
    runs = [_saved({"t.py::a": 100, "t.py::b": 10}), _saved({"t.py::a": 100_000}, partial=True)]
    runs[0].usage_for("t.py::quiet").path = "t.py"
    proposal = propose(runs)
    assert proposal.runs == 1
    assert set(proposal.tests) == {"t.py::a", "t.py::b"}
    assert proposal.files["t.py"].tokens == 120
    assert ["partial" in note for note in proposal.skipped] == [True]


def test_a_pyproject_without_a_table_gets_one() -> None:
    text = updated_pyproject('[project]\nname = "x"\n', propose([_saved({"t.py::a": 1000})]))
    table = tomllib.loads(text)["tool"]["tokenbudget"]
    assert (table["max-tokens"], table["max-cost"]) == (1200, 0.0012)
    assert table["budgets"][0]["max-tokens"] == 1200
    assert text.startswith('[project]\nname = "x"\n')


def test_bad_input_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["suggest", str(tmp_path / "nowhere")]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    (tmp_path / "run.json").write_text(json.dumps(_saved({"t.py::a": 10}).to_dict()))
    assert (
        cli(
            ["suggest", str(tmp_path / "run.json"), "--headroom", "0.5", "--config", str(tmp_path / "p.toml")]
        )
        == 2
    )
    assert "--headroom must be at least 1" in capsys.readouterr().err
    (tmp_path / "p.toml").write_text("[tool.tokenbudget\n")
    assert cli(["suggest", str(tmp_path / "run.json"), "--config", str(tmp_path / "p.toml")]) == 2
    assert "not valid TOML" in capsys.readouterr().err
    assert (tmp_path / "p.toml").read_text() == "[tool.tokenbudget\n"  # nothing lost
