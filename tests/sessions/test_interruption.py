"""A run that stops early still leaves a valid artifact, marked partial, and reports; never a half file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from pytester_session import run_session

from pytest_tokenbudget.runs.artifact import write_atomic

SUITE = """
import pytest

def test_first(token_usage):
    token_usage.record(model="m", input_tokens=100, output_tokens=10)

def test_second(token_usage):
    token_usage.record(model="m", input_tokens=50, output_tokens=5)
    {stop}

def test_third(token_usage):
    token_usage.record(model="m", input_tokens=7, output_tokens=1)
"""

OUTPUTS = (
    "--token-budget-json=out/run.json",
    "--token-budget-junit=out/tb.xml",
    "--token-budget-markdown=out/pr.md",
)


def run_suite(pytester: pytest.Pytester, stop: str, *args: str) -> tuple[pytest.RunResult, dict]:
    pytester.makepyfile(test_suite=SUITE.format(stop=stop))
    in_a_fresh_process = stop.startswith("raise KeyboardInterrupt")
    result = run_session(pytester, *OUTPUTS, *args, artifact=None, subprocess=in_a_fresh_process)
    out = pytester.path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["pr.md", "run.json", "tb.xml"]  # no temp files
    return result, json.loads((out / "run.json").read_text())


@pytest.mark.slow
def test_keyboard_interrupt_leaves_a_partial_artifact(pytester: pytest.Pytester) -> None:
    result, run = run_suite(pytester, "raise KeyboardInterrupt")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    assert run["meta"]["partial"] is True
    assert run["meta"]["exit_status"] == 2
    assert run["totals"]["calls"] == 2  # the calls made before the interrupt, none lost
    assert run["totals"]["total_tokens"] == 165
    result.stdout.fnmatch_lines(["*= token budget =*", "2 calls in 2 tests: 165 tokens*"])


@pytest.mark.parametrize("option", ["-x", "--maxfail=1"])
def test_stopping_at_the_first_failure_is_partial(pytester: pytest.Pytester, option: str) -> None:
    result, run = run_suite(pytester, "assert False", option)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert run["meta"]["partial"] is True
    assert (
        "test_suite.py::test_third" not in run["tests"]
        or run["tests"]["test_suite.py::test_third"]["calls"] == 0
    )
    assert run["totals"]["calls"] == 2


def test_a_complete_run_is_not_partial(pytester: pytest.Pytester) -> None:
    result, run = run_suite(pytester, "pass")
    assert result.ret == pytest.ExitCode.OK
    assert run["meta"]["partial"] is False
    assert run["totals"]["calls"] == 3


def test_an_internal_error_still_writes_the_artifact(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        """
        def pytest_runtest_logreport(report):
            if report.when == "call" and report.nodeid.endswith("test_second"):
                raise RuntimeError("a broken plugin")
        """
    )
    result, run = run_suite(pytester, "pass")
    assert result.ret == pytest.ExitCode.INTERNAL_ERROR
    assert run["meta"]["partial"] is True
    assert run["totals"]["calls"] >= 2


def test_a_failed_write_leaves_the_previous_file_and_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "run.json"
    write_atomic(target, '{"old": true}\n')

    def broken_replace(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="No space"):
        write_atomic(target, '{"new": true}\n' * 1000)
    assert target.read_text() == '{"old": true}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]


CUT_SHORT = """
import pytest


@pytest.hookimpl(tryfirst=True)
def pytest_runtestloop(session):
    items = session.items[:10]  # like a run stopped by a second Ctrl-C: exit 0, 10 of 30 tests
    for index, item in enumerate(items):
        following = items[index + 1] if index + 1 < len(items) else None
        item.config.hook.pytest_runtest_protocol(item=item, nextitem=following)
    return True
"""


def test_a_run_that_did_not_run_every_collected_test_is_partial_and_saves_no_baseline(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeconftest(CUT_SHORT)
    pytester.makepyfile(
        test_many="""
        import pytest

        @pytest.mark.parametrize("n", range(30))
        def test_n(token_usage, n):
            token_usage.record(model="m", input_tokens=10, output_tokens=1)
        """
    )
    result = pytester.runpytest(
        "--token-budget",
        "--token-budget-json=run.json",
        "--token-budget-save-baseline=base.json",
        "--token-budget-save-run",
        "-p",
        "no:cacheprovider",
    )
    assert result.ret == pytest.ExitCode.OK
    run = json.loads((pytester.path / "run.json").read_text())
    assert run["meta"]["partial"] is True
    assert run["totals"]["calls"] == 10
    assert not (pytester.path / "base.json").exists()
    assert not (pytester.path / ".tokenbudget").exists()
    result.stdout.fnmatch_lines(
        ["baseline not saved: the run stopped early*", "run not kept in history: it stopped early*"]
    )
