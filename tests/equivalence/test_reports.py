"""Reports: terminal, JUnit XML, PR markdown, CSV, the JSONL call log, GitHub summary/annotations.

Golden files (tests/equivalence/golden/) hold each format for one fixed run with hostile test ids; regenerate
them with ``TOKENBUDGET_REGEN_GOLDEN=1 pytest tests/equivalence/test_reports.py`` and review the diff.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sample_runs import HOSTILE, fixed_run
from sample_runs import make_call as _call

from pytest_tokenbudget.cli import main as cli
from pytest_tokenbudget.model import Run, Status, Usage, Verdict
from pytest_tokenbudget.report import export, github, junit, markdown, terminal

GOLDEN = Path(__file__).parent / "golden"


def _golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("TOKENBUDGET_REGEN_GOLDEN"):
        path.parent.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert text == path.read_text(encoding="utf-8"), f"{name} changed: TOKENBUDGET_REGEN_GOLDEN=1 to accept"


def test_golden_markdown() -> None:
    _golden("report.md", markdown.render(fixed_run()))


def test_golden_junit() -> None:
    _golden("report.xml", junit.render(fixed_run()))


def test_golden_csv() -> None:
    _golden("report.csv", export.render_csv(fixed_run()))


def test_golden_terminal() -> None:
    lines = terminal.render(fixed_run(), verbose=True)
    _golden("report.txt", "\n".join(line.text for line in lines) + "\n")


# -- markdown -------------------------------------------------------------------------------------


def test_markdown_escapes_everything_from_the_suite() -> None:
    text = markdown.render(fixed_run())
    assert text.startswith(markdown.MARKER + "\n### ❌ Token budget: over budget · 3,120 tokens")
    outside_code = re.sub(r"(`+).*?\1", "", text)  # inside code spans text is literal: inert
    assert "<script>" not in outside_code
    assert "@octocat" not in outside_code
    row = next(line for line in text.splitlines() if "test_evil" in line and line.startswith("| `"))
    # the id is one code span: the pipe escaped, the backticks fenced, the newline gone
    assert "``tests/test_x.py::test_evil[a\\|b `c` <script>alert(1)</script> @octocat next]``" in row
    cells = row.replace("\\|", "").split("|")
    assert len(cells) == 8  # 6 columns + the two edges: the id did not split the row
    message = next(line for line in text.splitlines() if "token budget at 92%" in line)
    assert "token budget at 92%: 110 tokens of 120" in message


def test_markdown_stays_under_githubs_limit_for_20000_tests() -> None:
    run = Run()
    for index in range(20_000):
        nodeid = f"tests/module_{index % 50}/test_long_name_{'x' * 40}.py::test_case[{index}]"
        run.usage_for(nodeid).add_call(
            _call(nodeid, f"model-{index % 300}", "openai", Usage(index, 0, 0, 7, 0), 1e-6)
        )
        run.verdicts.append(
            Verdict(
                f"marker {nodeid}", "marker", "total_tokens", 1, index, Status.EXCEEDED, "x" * 200, nodeid
            )
        )
    text = markdown.render(run)
    assert len(text) <= markdown.LIMIT
    assert "| … " in text  # rows were cut, and it says so
    assert text.startswith(markdown.MARKER)


def test_markdown_without_budgets_or_calls() -> None:
    text = markdown.render(Run())
    assert text.splitlines()[1] == "### ℹ️ Token budget: no budgets · 0 tokens · cost $0 · live spend $0"


# -- JUnit ----------------------------------------------------------------------------------------


def test_junit_is_what_junit_readers_expect() -> None:
    root = ET.fromstring(junit.render(fixed_run()).encode())
    assert root.tag == "testsuites"
    (suite,) = root.findall("testsuite")
    assert suite.get("name") == "tokenbudget"
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors"), suite.get("skipped")) == (
        "4",
        "1",
        "0",
        "0",
    )
    cases = suite.findall("testcase")
    assert all(c.get("name") and c.get("classname") for c in cases)
    failed = [c for c in cases if c.find("failure") is not None]
    assert [c.get("classname") for c in failed] == ["tokenbudget.tests.test_chat"]
    failure = failed[0].find("failure")
    assert failure is not None
    assert failure.get("type") == "TokenBudgetExceeded"
    assert failure.get("message", "").startswith("total_tokens: 2,460 > 2,000 (+23%)")
    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert (props["total_tokens"], props["cost_known"], props["genai_prices_version"]) == (
        "3120",
        "false",
        "0.2.3",
    )


XML_EDGES = "ab \t\n\r\x00\x08\x0b\x1b\x1f\x7f\x80\x85é\ud800\udfff\ufffe€\U0001fffe"


@given(st.text(alphabet=st.sampled_from(XML_EDGES)) | st.text())
def test_junit_cleans_exactly_what_junit_xml_cleans(text: str) -> None:
    from junit_xml import _clean_illegal_xml_chars  # junit_xml's own (private) rule is the reference

    assert junit.without_illegal_chars(text) == _clean_illegal_xml_chars(text)


def test_junit_with_control_characters_in_a_message_is_still_xml() -> None:
    run = fixed_run()
    run.verdicts.append(
        Verdict("m", "marker", "calls", 1, 2, Status.EXCEEDED, "\x1b[31mred\x1b[0m\x00", "t::x")
    )
    root = ET.fromstring(junit.render(run).encode())
    assert "[31mred[0m" in "".join(root.itertext())


@given(
    st.integers(1, 4).flatmap(
        lambda n: st.tuples(
            st.text(alphabet="<>", min_size=n, max_size=n),
            st.lists(st.lists(st.text(), min_size=n, max_size=n), max_size=5),
        )
    )
)
def test_table_pads_as_rjust_and_ljust(case: tuple[str, list[list[str]]]) -> None:
    from pytest_tokenbudget import units as fmt

    align, rows = case
    widths = [max(len(row[i]) for row in rows) for i in range(len(align))] if rows else []
    padded = [
        [c.rjust(w) if a == ">" else c.ljust(w) for c, w, a in zip(row, widths, align, strict=True)]
        for row in rows
    ]
    assert fmt.table(rows, align) == ["  ".join(cells).rstrip() for cells in padded]


# -- CSV, annotations ---------------------------------------------------------------------------


def test_csv_numbers_read_back() -> None:
    rows = list(csv.DictReader(io.StringIO(export.render_csv(fixed_run()))))
    answer = next(r for r in rows if r["test"] == "tests/test_chat.py::test_answer")
    assert (answer["calls"], answer["input_tokens"], answer["cache_write_tokens"], answer["cost_usd"]) == (
        "2", "2100", "500", "0.005745",
    )  # fmt: skip
    evil = next(r for r in rows if r["test"] == HOSTILE)
    assert (evil["cost_usd"], evil["cost_known"]) == ("", "false")  # unknown, not $0


def test_annotations_escape_workflow_command_data() -> None:
    run = Run()
    run.verdicts.append(
        Verdict("m", "marker", "calls", 1, 2, Status.EXCEEDED, "100% over\nline two\r", "t::x", "a:b,c.py", 7)
    )
    run.verdicts += [Verdict(f"w{i}", "scope", "calls", 1, 1, Status.WARN, f"w{i}") for i in range(12)]
    lines = github.annotation_lines(run)
    assert (
        lines[0]
        == "::error file=a%3Ab%2Cc.py,line=7,title=token budget exceeded::t::x: 100%25 over%0Aline two%0D"
    )
    assert len([line for line in lines if line.startswith("::warning")]) == 11  # 10 and "2 more"
    assert lines[-1] == "::warning title=token budget::2 more: see the job summary or the JSON artifact"


def test_call_log_is_sorted_by_test_and_has_no_text(tmp_path: Path) -> None:
    log = export.CallLog(tmp_path / "calls.jsonl")
    for owner in ("b::t", "a::t", "b::t"):
        log(_call(owner, "gpt-4o-mini", "openai", Usage(1, 0, 0, 1, 0), 0.1))
    path = log.finish()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["test"] for line in lines] == ["a::t", "b::t", "b::t"]
    assert set(lines[0]) == set(export.CALL_FIELDS)
    assert list(tmp_path.iterdir()) == [path]  # the temporary part is gone


# -- the CLI ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["markdown", "junit", "csv", "json", "table"])
def test_tokenbudget_report_renders_every_format(
    fmt: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pytest_tokenbudget.runs.artifact import write_run

    write_run(tmp_path / "run.json", fixed_run())
    assert cli(["report", str(tmp_path / "run.json"), "--format", fmt]) == 0
    out = capsys.readouterr().out
    expected = {
        "markdown": markdown.MARKER,
        "junit": "<?xml",
        "csv": "test,kind,outcome",
        "json": '{\n  "schema": "pytest-tokenbudget/run"',
        "table": "4 calls in 3 tests: 3,120 tokens",
    }[fmt]
    assert out.startswith(expected)
    assert cli(["report", str(tmp_path / "run.json"), "-f", fmt, "-o", str(tmp_path / "out" / "r")]) == 0
    assert (tmp_path / "out" / "r").read_text() == out


def test_tokenbudget_report_of_a_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["report", str(tmp_path / "none.json")]) == 2
    assert "none.json: cannot be read" in capsys.readouterr().err


# -- a real session ----------------------------------------------------------------------------------

SESSION = """
import pytest

def test_a(token_usage):
    token_usage.record(model="gpt-4o-mini", provider="openai", input_tokens=1500, output_tokens=200)

@pytest.mark.token_budget(max_tokens=100)
def test_b(token_usage):
    token_usage.record(model="claude-sonnet-4-5", provider="anthropic", input_tokens=900,
                       cached_input_tokens=400, output_tokens=60)

def test_c(token_usage):
    token_usage.record(model="ft:x", provider="openai", input_tokens=100, output_tokens=10)
"""

PYPROJECT = """
[tool.tokenbudget]
enabled = true
junit = "out/tb.xml"
markdown = "out/tb.md"
csv = "out/tb.csv"
calls = "out/calls.jsonl"
max-tokens = 5000
max-cost = 0.001
[tool.tokenbudget.per-test]
max-tokens = 2000
"""


def test_session_writes_every_report_and_talks_to_github(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    summary = pytester.path / "summary.md"
    summary.write_text("# earlier step\n")
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    monkeypatch.setenv("COLUMNS", "250")
    pytester.makepyprojecttoml(textwrap.dedent(PYPROJECT))
    pytester.makepyfile(test_reports_app=SESSION)
    result = pytester.runpytest("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        [
            "cost: ≥$0.002865 (live $0, replayed/mocked $0.002865); 1 call without a price",
            "prices: genai-prices *, data *",
            "no price for: openai/ft:x (1 call)",
            "budgets (2 exceeded, 1 warn, 2 ok):",
            "  exceeded  test_reports_app.py::test_b: token budget exceeded: 960 tokens > 100 *",
            "report: out/calls.jsonl",
            "report: out/tb.xml",
            "report: out/tb.md",
            "report: out/tb.csv",
            "::error file=test_reports_app.py,line=6,title=token budget exceeded::*::test_b: *",
            "::error title=token budget exceeded::session budget exceeded: ≥$0.002865 > $0.001 *",
            "::warning file=test_reports_app.py,line=3,title=token budget warn::*at 85%25*",
        ]
    )
    out = pytester.path / "out"
    assert summary.read_text().startswith("# earlier step\n" + markdown.MARKER)
    assert (out / "tb.md").read_text() == summary.read_text().removeprefix("# earlier step\n")
    root = ET.parse(out / "tb.xml").getroot()
    assert root.find("testsuite").get("failures") == "2"  # type: ignore[union-attr]
    calls = [json.loads(line) for line in (out / "calls.jsonl").read_text().splitlines()]
    assert [(c["test"].split("::")[1], c["total_tokens"]) for c in calls] == [
        ("test_a", 1700), ("test_b", 960), ("test_c", 110),
    ]  # fmt: skip
    rows = list(csv.DictReader(io.StringIO((out / "tb.csv").read_text())))
    assert [r["total_tokens"] for r in rows] == ["1700", "960", "110"]


@pytest.mark.slow
def test_call_log_under_xdist_equals_the_serial_one(pytester: pytest.Pytester) -> None:
    pytest.importorskip("xdist")
    pytester.makepyprojecttoml("[tool.tokenbudget]\nenabled = true\ncalls = 'calls.jsonl'\n")
    pytester.makepyfile(
        test_many="""
        import pytest

        @pytest.mark.parametrize("n", range(12))
        def test_n(token_usage, n):
            for k in range(n % 3 + 1):
                token_usage.record(model="m", provider="openai", input_tokens=n * 10 + k, output_tokens=1)
        """
    )
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=12)
    serial = (pytester.path / "calls.jsonl").read_text()
    pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2").assert_outcomes(passed=12)
    parallel = (pytester.path / "calls.jsonl").read_text()
    assert len(serial.splitlines()) == 24
    assert parallel == serial
    assert sorted(p.name for p in pytester.path.iterdir() if p.name.startswith(".calls")) == []
