"""The PR comment shows the change first: growth sorted first, per-test cost deltas, model swaps at
equal tokens, the trend of the last runs as a sparkline, breakdowns per file and marker, and a link
to the HTML report. Rendered by cmark-gfm (GitHub's renderer) to check tables and escaping."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from pytest_tokenbudget.cli import main as cli
from pytest_tokenbudget.model import Call, Run, Usage
from pytest_tokenbudget.report import markdown, terminal
from pytest_tokenbudget.report.comparison import terminal_lines
from pytest_tokenbudget.report.trend import BLOCKS, recent, sparkline
from pytest_tokenbudget.runs.baseline import compare, judge, parse_rules
from pytest_tokenbudget.runs.history import load_history, save_run

cmarkgfm = pytest.importorskip("cmarkgfm")
from cmarkgfm.cmark import Options  # noqa: E402

EVIL = "tests/test_x.py::test_evil[a|b <script>x</script> @octocat]"


def _run(usage: dict[str, tuple[str, int, int, float]], markers: dict[str, tuple[str, ...]] = {}) -> Run:  # noqa: B006
    run = Run(meta={"finished": "2026-12-01T10:00:00Z"})
    for nodeid, (model, prompt, completion, cost) in usage.items():
        provider, _, name = model.partition("/")
        call = Call(
            nodeid, "call", provider, "x.chat", "h", name, Usage(prompt, 0, 0, completion, 0), cost_usd=cost
        )
        entry = run.usage_for(nodeid)
        entry.add_call(call)
        entry.path = nodeid.split("::")[0]
        entry.markers = markers.get(nodeid, ())
    return run


BASE = {
    "tests/test_a.py::test_grows": ("openai/gpt-4o-mini", 1000, 100, 0.0002),
    "tests/test_a.py::test_shrinks": ("openai/gpt-4o-mini", 5000, 500, 0.001),
    "tests/test_b.py::test_swapped": ("anthropic/claude-sonnet-4-5", 800, 80, 0.0036),
    "tests/test_b.py::test_same": ("openai/gpt-4o-mini", 300, 30, 0.00006),
    EVIL: ("openai/gpt-4o-mini", 100, 10, 0.00002),
}
HEAD = {
    **BASE,
    "tests/test_a.py::test_grows": ("openai/gpt-4o-mini", 1500, 150, 0.0003),
    "tests/test_a.py::test_shrinks": ("openai/gpt-4o-mini", 2000, 200, 0.0004),
    "tests/test_b.py::test_swapped": ("anthropic/claude-opus-4-1", 800, 80, 0.018),  # same tokens
    EVIL: ("openai/gpt-4o-mini", 150, 10, 0.00003),
}


def _compared() -> Run:
    head = _run(HEAD, {"tests/test_a.py::test_grows": ("slow", "parametrize")})
    head.comparison = compare(_run(BASE), head)
    head.comparison["source"] = "tokenbudget.baseline.json"
    return head


def test_growth_comes_first_then_model_swaps_then_shrinkage() -> None:
    tests = _compared().comparison["tests"]  # type: ignore[index]
    assert [t["test"] for t in tests] == [
        "tests/test_a.py::test_grows",
        EVIL,
        "tests/test_b.py::test_swapped",
        "tests/test_a.py::test_shrinks",
    ]
    swapped = tests[2]
    assert (swapped["status"], swapped["delta"]) == ("changed", 0)
    assert swapped["models"] == {
        "base": ["anthropic/claude-sonnet-4-5"],
        "head": ["anthropic/claude-opus-4-1"],
    }
    assert swapped["cost"] == {"base": 0.0036, "head": 0.018, "delta": 0.0144}
    assert tests[0]["cost"]["delta"] == pytest.approx(0.0001)


def test_a_model_swap_is_no_token_growth_for_the_thresholds() -> None:
    comparison = _compared().comparison
    assert comparison is not None
    assert comparison["counts"]["models_swapped"] == 1
    verdicts = judge(comparison, parse_rules(["test:+1"]), min_tokens=0, warn_at=0.8)
    assert {v.nodeid for v in verdicts} == {"tests/test_a.py::test_grows", EVIL}


def test_markdown_lists_cost_deltas_and_the_swap_in_a_table_github_renders() -> None:
    text = markdown.render(_compared())
    html = cmarkgfm.github_flavored_markdown_to_html(text, options=Options.CMARK_OPT_UNSAFE)
    table = next(t for t in re.findall(r"<table>.*?</table>", html, re.S) if "Δ cost" in t)
    rows = re.findall(r"<tr>(.*?)</tr>", table, re.S)[1:]
    cells = [re.findall(r"<td[^>]*>(.*?)</td>", row, re.S) for row in rows]
    assert [c[0] for c in cells] == [
        "<code>tests/test_a.py::test_grows</code>",
        "<code>tests/test_x.py::test_evil[a|b &lt;script&gt;x&lt;/script&gt; @octocat]</code>",
        "<code>tests/test_b.py::test_swapped</code>",
        "<code>tests/test_a.py::test_shrinks</code>",
    ]
    assert cells[0][3:5] == ["+550", "+$0.0001"]
    swap = cells[2]
    assert swap[3:5] == ["+0", "+$0.0144"]
    assert "<code>anthropic/claude-sonnet-4-5</code> → <code>anthropic/claude-opus-4-1</code>" in swap[5]
    assert cells[3][3:5] == ["-3,300", "-$0.0006"]
    assert "🔀 <strong>1 test changed model</strong>" in html
    assert "<script>" not in html  # the hostile id stays text
    assert "@octocat" not in re.sub(r"<code>.*?</code>", "", html)


def test_breakdowns_per_file_and_marker_fold_into_details() -> None:
    text = markdown.render(_compared())
    html = cmarkgfm.github_flavored_markdown_to_html(text, options=Options.CMARK_OPT_UNSAFE)
    section = html.split("<summary>By file and marker</summary>", 1)[1].split("</details>", 1)[0]
    assert '<td><code>tests/test_a.py</code></td>\n<td align="right">3,850</td>' in section
    assert "<td><code>slow</code></td>" in section
    assert "parametrize" not in section  # pytest's own markers are no grouping


def test_terminal_verbose_shows_the_breakdowns_and_the_swap() -> None:
    run = _compared()
    text = "\n".join(line.text for line in terminal.render(run, verbose=True))
    assert "per file:" in text
    assert re.search(r"3,850 +3,500 +350 +\$0\.0007 +2 calls +tests/test_a\.py", text)
    assert re.search(r"1,650 .* slow$", text, re.M)
    assert "per file:" not in "\n".join(line.text for line in terminal.render(run))  # -v only
    lines = [line.text for line in terminal_lines(run.comparison or {})]
    swap = next(line for line in lines if "test_swapped" in line)
    assert "model anthropic/claude-sonnet-4-5 → anthropic/claude-opus-4-1" in swap
    assert "+$0.0144" in swap


def test_the_artifact_holds_the_breakdowns_and_old_artifacts_still_load(tmp_path: Path) -> None:
    run = _compared()
    data = run.to_dict()
    assert data["files"]["tests/test_b.py"]["total_tokens"] == 1210
    assert list(data["markers"]) == ["slow"]
    legacy = {k: v for k, v in data.items() if k not in ("files", "markers")}  # written before them
    assert Run.from_dict(legacy).files() == run.files()


def test_sparkline_scales_from_smallest_to_largest() -> None:
    assert sparkline([1, 2, 3, 4, 5, 6, 7, 8]) == BLOCKS
    assert sparkline([5, 5, 5]) == "▄▄▄"
    assert sparkline([0, 100]) == "▁█"
    assert sparkline([]) == ""


def test_trend_of_the_saved_runs_ends_with_this_run(tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    start = datetime(2026, 11, 1, tzinfo=UTC)
    for day, prompt in enumerate((1000, 1200, 900)):
        saved = _run({"t.py::t": ("openai/gpt-4o-mini", prompt, 0, prompt / 1e6)})
        saved.meta["finished"] = f"2026-11-0{day + 1}T00:00:00Z"
        save_run(saved, tmp_path, when=start + timedelta(days=day))
    this = _run({"t.py::t": ("openai/gpt-4o-mini", 2000, 0, 0.002)})
    entries = recent(tmp_path, this, last=3)
    assert [e.tokens for e in entries] == [1200, 900, 2000]  # the newest two saved, then this run
    text = markdown.render(this, trend=entries, html_url="https://ci.example/runs/1 (html)")
    html = cmarkgfm.github_flavored_markdown_to_html(text, options=Options.CMARK_OPT_UNSAFE)
    assert "📈 <strong>Trend</strong> (last 3 runs): tokens ▃▁█ 1,200 → 2,000 (min 900, max 2,000)" in html
    assert '<a href="https://ci.example/runs/1%20%28html%29">HTML report</a>' in html
    assert len(load_history(tmp_path, last=2).entries) == 2
    assert recent(tmp_path / "missing", this) == []


def test_a_link_that_is_no_web_address_is_not_written() -> None:
    text = markdown.render(_run(BASE), html_url="javascript:alert(1)")
    assert "javascript" not in text
    assert "not linked" in text


def test_the_plugin_writes_trend_and_link_into_its_markdown(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOKENBUDGET_HTML_URL", "https://github.com/o/r/actions/runs/7")
    pytester.makepyfile(
        test_app="""
import os

def test_llm(token_usage):
    n = int(os.environ["N"])
    token_usage.record(model="gpt-4o-mini", provider="openai", input_tokens=n, output_tokens=1)
"""
    )
    for n in ("100", "300", "200"):
        monkeypatch.setenv("N", n)
        args = (
            "--token-budget",
            "--token-budget-save-run",
            "--token-budget-markdown=report.md",
            "-p",
            "no:cacheprovider",
        )
        pytester.runpytest(*args).assert_outcomes(passed=1)
    text = (pytester.path / "report.md").read_text()
    assert "(last 3 runs): tokens ▁█▅ 101 → 201" in text
    assert "📊 [HTML report](https://github.com/o/r/actions/runs/7)" in text
    # tokenbudget report renders the same from the artifact, given the folder and the link
    runs = sorted((pytester.path / ".tokenbudget/runs").glob("*.json"))
    out = pytester.path / "again.md"
    monkeypatch.delenv("TOKENBUDGET_HTML_URL")
    status = cli(["report", str(runs[-1]), "-o", str(out), "--history", str(runs[0].parent)])
    assert status == 0
    again = out.read_text()
    assert "(last 3 runs): tokens ▁█▅" in again
    assert "HTML report" not in again
    assert json.loads(runs[-1].read_text())["files"]["test_app.py"]["total_tokens"] == 201
