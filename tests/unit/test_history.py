"""Run history: names of saved runs, the trend table and the SVG chart.

Sessions that keep runs: sessions/test_history_session.py.
"""

from __future__ import annotations

import dataclasses
import json
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pytest_tokenbudget.cli import main as cli
from pytest_tokenbudget.model import Run
from pytest_tokenbudget.runs.history import (
    Entry,
    _ticks,  # private: pins the chart's axis rule, which the SVG only shows as drawn lines
    load_history,
    run_name,
    save_run,
    svg_chart,
    trend_lines,
)

SVG = "{http://www.w3.org/2000/svg}"


def _entry(tokens: int, cost: float | None, *, commit: str = "c0ffee00", branch: str = "main") -> Entry:
    return Entry(
        name=f"2026-11-0{tokens % 9 + 1}T10-00-00.000Z_{branch}_{commit}.json",
        finished="",
        branch=branch,
        commit=commit,
        tests=3,
        calls=3,
        tokens=tokens,
        cost_usd=cost,
        cost_known=cost is not None,
    )


# -- names ---------------------------------------------------------------------------------------------


def test_run_name_sorts_by_utc_time_and_is_safe_on_disk() -> None:
    when = datetime(2026, 11, 23, 6, 30, 12, 481_999, tzinfo=UTC)
    meta = {"branch": "feat/<x> y&z", "commit": "1a2b3c4d5e6f7a8b"}
    assert run_name(meta, when) == "2026-11-23T06-30-12.481Z_feat-x-y-z_1a2b3c4d.json"
    assert run_name({}, when) == "2026-11-23T06-30-12.481Z_no-branch_no-commit.json"
    assert run_name({"branch": "../..", "commit": "../"}, when) == (
        "2026-11-23T06-30-12.481Z_no-branch_no-commit.json"
    )


def test_two_runs_saved_in_one_millisecond_keep_both_in_order(tmp_path: Path) -> None:
    when = datetime(2026, 11, 23, 6, 30, 12, 999_000, tzinfo=UTC)
    first = save_run(Run(meta={"branch": "main", "commit": "aaaa"}), tmp_path, when)
    second = save_run(Run(meta={"branch": "main", "commit": "aaaa"}), tmp_path, when)
    assert (first.name, second.name) == (
        "2026-11-23T06-30-12.999Z_main_aaaa.json",
        "2026-11-23T06-30-13.000Z_main_aaaa.json",
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == [first.name, second.name]  # no temp files left


def test_history_filters_by_branch_and_skips_unreadable_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    when = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
    for index, branch in enumerate(["main", "feature", "main"]):
        run = Run(
            meta={"branch": branch, "commit": f"{index}" * 10, "finished": f"2026-11-0{index + 1}T09:00:00Z"}
        )
        save_run(run, tmp_path, when.replace(day=index + 1))
    (tmp_path / "2026-11-04T00-00-00.000Z_main_broken.json").write_text("{not json")
    (tmp_path / "2026-11-05T00-00-00.000Z_main_old.json").write_text(
        json.dumps({"schema": "pytest-tokenbudget/run", "schema_version": 99})
    )
    (tmp_path / "notes.txt").write_text("ignored")

    assert cli(["history", str(tmp_path), "--branch", "main"]) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [
        "date (UTC)        branch  commit    tests  calls  tokens  Δ tokens  cost  Δ cost",
        "2026-11-01 09:00  main    00000000      0      0       0         –    $0       –",
        "2026-11-03 09:00  main    22222222      0      0       0         0    $0       0",
    ]
    assert captured.err.splitlines() == [
        f"tokenbudget: skipped {tmp_path}/2026-11-04T00-00-00.000Z_main_broken.json: "
        "not valid JSON: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)",
        f"tokenbudget: skipped {tmp_path}/2026-11-05T00-00-00.000Z_main_old.json: "
        "schema_version 99 is not supported (this pytest-tokenbudget reads version 1)",
    ]
    assert [e.branch for e in load_history(tmp_path).entries] == ["main", "feature", "main"]


def test_history_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["history", str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err == (
        f"tokenbudget: {tmp_path}/missing: no such folder (pytest --token-budget-save-run fills it)\n"
    )
    assert cli(["history", str(tmp_path)]) == 1
    assert capsys.readouterr().err == f"tokenbudget: no saved runs in {tmp_path}\n"
    assert cli(["history", str(tmp_path), "--last", "0"]) == 2
    assert capsys.readouterr().err == "tokenbudget: --last must be at least 1\n"


# -- the table and the chart on their own -----------------------------------------------------------------


def test_cost_deltas_only_between_known_costs() -> None:
    entries = [_entry(1000, None), _entry(1000, 0.5), _entry(2000, 1.0), _entry(2000, 1.0)]
    partial = dataclasses.replace(_entry(2000, 1.5), cost_known=False)  # some calls unpriced
    rows = [line[18:] for line in trend_lines([*entries, partial])]
    assert rows == [
        "branch  commit    tests  calls  tokens          Δ tokens     cost           Δ cost",
        "main    c0ffee00      3      3   1,000                 –  unknown                –",
        "main    c0ffee00      3      3   1,000                 0     $0.5                –",
        "main    c0ffee00      3      3   2,000  +1,000 (+100.0%)       $1  +$0.5 (+100.0%)",
        "main    c0ffee00      3      3   2,000                 0       $1                0",
        "main    c0ffee00      3      3   2,000                 0    ≥$1.5                ?",
    ]


def test_ticks_are_round_and_cover_the_peak() -> None:
    assert _ticks(3675) == [0, 1000, 2000, 3000, 4000]
    assert _ticks(0.0042) == [0, 0.002, 0.004, 0.006]
    assert _ticks(0.0036) == [0, 0.001, 0.002, 0.003, 0.004]
    assert _ticks(500) == [0, 200, 400, 600]
    assert _ticks(100) == [0, 25, 50, 75, 100]
    assert _ticks(0) == [0.0, 1.0]


def test_svg_chart_is_valid_xml_with_escaped_text() -> None:
    entries = [
        _entry(3150, 0.0036, commit="aaaa1111", branch="feat/<a>&b"),
        _entry(3675, None, commit="bbbb2222"),
        _entry(2675, 0.0032, commit="cccc3333"),
    ]
    text = svg_chart(entries, title='tokens <for> "feat/a&b"')
    root = ET.fromstring(text.encode())
    assert root.tag == f"{SVG}svg"
    assert root.get("viewBox") == "0 0 760 380"
    assert root.findtext(f"{SVG}title") == 'tokens <for> "feat/a&b"'
    lines = {p.get("class"): p.get("points", "").split() for p in root.iter(f"{SVG}polyline")}
    # x: 80..680; y = 48 + 254 * (1 - value / top tick): tokens top 4,000, cost (priced runs) $0.004
    assert lines == {
        "tokens": ["80.0,102.0", "380.0,68.6", "680.0,132.1"],
        "cost": ["80.0,73.4", "680.0,98.8"],
    }
    tooltips = [c.findtext(f"{SVG}title") for c in root.iter(f"{SVG}circle")]
    assert tooltips[0] == "2026-11-01 10:00 feat/<a>&b aaaa1111: 3,150 tokens, $0.0036"
    assert tooltips[1] == "2026-11-04 10:00 main bbbb2222: 3,675 tokens, unknown"
    assert len(tooltips) == 5
    labels = [t.text for t in root.iter(f"{SVG}text")]
    assert labels[1:6] == ["0", "1k", "2k", "3k", "4k"]  # after the title: the tokens axis
    assert labels[6:11] == ["$0", "$0.001", "$0.002", "$0.003", "$0.004"]  # the cost axis
    assert labels[-3:] == ["total tokens", "cost", "3 runs"]  # the legend
    assert "&lt;a&gt;&amp;b" in text
    assert "<a>" not in text


def test_svg_chart_without_prices_or_with_one_run() -> None:
    root = ET.fromstring(svg_chart([_entry(500, None)]).encode())
    assert [p.get("class") for p in root.iter(f"{SVG}polyline")] == ["tokens"]
    assert [p.get("points") for p in root.iter(f"{SVG}polyline")] == ["380.0,90.3"]  # 500 of 600
    assert "cost (USD)" not in [t.text for t in root.iter(f"{SVG}text")]
    with pytest.raises(ValueError, match="no runs to draw"):
        svg_chart([])
