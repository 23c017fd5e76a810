"""The HTML report: one self-contained file, every test id escaped, nothing fetched, nothing run.

Unit tests render runs built here; session tests run real pytest sessions whose tests call the real
openai and anthropic SDKs against the loopback server; the CLI renders an artifact. The page in a
real browser is tested in tests/test_html_browser.py.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import textwrap
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from llm_server import LLMServer
from sample_runs import HOSTILE, fixed_run

from pytest_tokenbudget.cli import main as cli
from pytest_tokenbudget.model import Call, Run, Status, Usage, Verdict
from pytest_tokenbudget.report import html
from pytest_tokenbudget.runs.baseline import compare
from pytest_tokenbudget.runs.history import save_run

HOSTILE_IDS = (
    HOSTILE,
    "tests/test_y.py::test_close[</script><script>alert(2)</script>]",
    "tests/test_y.py::test_comment[<!-- x --> <![CDATA[ ]]>]",
    'tests/test_y.py::test_attr[" onmouseover="alert(3)" x=\'y\' &amp; &lt;]',
    "tests/test_y.py::test_img[<img src=x onerror=alert(4)>]",
    "<fixture <svg onload=alert(5)>>",
)


def hostile_run(ids: tuple[str, ...] = HOSTILE_IDS) -> Run:
    """A run whose every test id (and a model name) would be markup if it were not escaped."""
    run = Run(meta={"branch": "main</title><script>x()</script>", "commit": "c0ffee"})
    for index, nodeid in enumerate(ids):
        usage = Usage(100 * (index + 1), 10 * index, 0, 7 * (index + 1), 0)
        model = "gpt-4o-mini" if index % 2 else "<b>model</b>"
        entry = run.usage_for(nodeid, "fixture" if nodeid.startswith("<fixture") else "test")
        entry.add_call(
            Call(nodeid, "call", "openai", "openai.chat", "h", model, usage, cost_usd=0.001 * index)
        )
        entry.outcome = "passed"
    run.verdicts.append(
        Verdict(f"marker {ids[1]}", "marker", "total_tokens", 10, 214, Status.EXCEEDED,
                f"token budget exceeded: 214 tokens > 10 in {ids[1]}", ids[1])
    )  # fmt: skip
    return run


class Page(HTMLParser):
    """What a browser's parser makes of the page: elements, attributes, the test table's row ids."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.scripts: list[str] = []
        self.style = ""
        self.row_ids: list[str] = []
        self._script: list[str] | None = None
        self._style = False
        self._in_tests = False
        self._row_head: list[str] | None = None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        self.tags.append((tag, attributes))
        if tag == "script":
            self._script = []
        elif tag == "style":
            self._style = True
        elif tag == "table" and attributes.get("id") == "tb-tests":
            self._in_tests = True
        elif tag == "th" and self._in_tests and attributes.get("scope") == "row":
            self._row_head = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "script" and self._script is not None:
            self.scripts.append("".join(self._script))
            self._script = None
        elif tag == "style":
            self._style = False
        elif tag == "table":
            self._in_tests = False
        elif tag == "th" and self._row_head is not None:
            self.row_ids.append("".join(self._row_head))
            self._row_head = None

    def handle_data(self, data: str) -> None:
        if self._script is not None:
            self._script.append(data)
        elif self._style:
            self.style += data
        elif self._row_head is not None:
            self._row_head.append(data)


# -- escaping and isolation -------------------------------------------------------------------------


def test_every_test_id_is_a_row_of_plain_text_and_no_markup_gets_in() -> None:
    text = html.render(hostile_run())
    page = Page(text)
    assert sorted(page.row_ids) == sorted(HOSTILE_IDS)  # each id once, as text, exactly as it was
    assert [tag for tag, _ in page.tags if tag in ("img", "b", "iframe", "object", "embed", "a")] == [
        "a"  # the one link: to the table of tests, in the page
    ]
    assert [a for tag, a in page.tags if tag == "a"] == [{"href": "#tests"}]
    handlers = [(tag, name) for tag, attrs in page.tags for name in attrs if name.startswith("on")]
    assert handlers == []
    svgs = [a for tag, a in page.tags if tag == "svg"]
    assert all(set(a) <= {"class", "viewbox", "role", "aria-labelledby"} for a in svgs)
    assert len(page.scripts) == 3  # the error guard, the table's sort keys (JSON), the table's script
    assert "alert" not in "".join(page.scripts)
    assert "openai/&lt;b&gt;model&lt;/b&gt;" in text  # in the charts, their tooltips and tables


def test_json_in_a_script_cannot_end_it_or_open_a_comment() -> None:
    value = {
        "a": "</script><script>alert(1)</script>",
        "b": "<!-- --!>",
        "c": "x\u2028y\u2029&",
        "n": [1, None],
    }
    text = html.script_json(value)
    assert json.loads(text) == value
    assert not set(text) & {"<", ">", "&", "\u2028", "\u2029"}
    page = Page(f'<script type="application/json">{text}</script>')
    assert json.loads(page.scripts[0]) == value


def test_nothing_is_fetched_and_only_the_reports_own_scripts_may_run() -> None:
    text = html.render(hostile_run())
    assert not re.search(r"(?i)\b(?:https?|ftp|file):/|data:[a-z]+/|//[a-z0-9]|@import|url\(", text)
    page = Page(text)
    fetching = {"src", "srcset", "href", "action", "formaction", "xlink:href", "poster", "data", "background"}
    assert [(t, a) for t, a in page.tags if fetching & set(a)] == [("a", {"href": "#tests"})]
    assert not [t for t, _ in page.tags if t in ("link", "img", "iframe", "object", "embed", "base", "use")]
    [policy] = [a["content"] for tag, a in page.tags if tag == "meta" and a.get("http-equiv")]
    assert policy is not None
    assert "default-src 'none'" in policy
    assert "img-src 'none'" in policy
    for script in page.scripts[0::2]:  # the guard and the table's script: admitted by their hash
        digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
        assert f"'sha256-{digest}'" in policy
    style_digest = base64.b64encode(hashlib.sha256(page.style.encode()).digest()).decode()
    assert f"style-src 'sha256-{style_digest}'" in policy
    assert "unsafe-inline" not in policy
    assert "style=" not in text  # inline style attributes would be refused by the policy


def test_the_page_holds_no_prompt_text_and_no_request_detail() -> None:
    run = hostile_run()
    run.issues.append(
        {"test": HOSTILE_IDS[0], "phase": "call", "provider": "openai", "api": "openai.chat", "model": "m",
         "state": "unparsed", "detail": "response is not JSON: <html>secret page</html>"}
    )  # fmt: skip
    text = html.render(run)
    assert "secret page" not in text
    assert "1 calls with incomplete usage (1 unparsed)" in text


# -- what the page shows ----------------------------------------------------------------------------


def test_banner_budgets_table_and_charts_of_a_run() -> None:
    text = html.render(fixed_run())
    assert "<title>Token budget: over budget · 3,120 tokens · ≥$0.00585</title>" in text
    assert '<header class="banner exceeded"' in text
    assert "<dt>cached input</dt><dd>400</dd>" in text
    assert "1 exceeded, 1 unknown, 1 warn, 1 ok." in text
    for chart in ("models", "providers", "files", "heaviest"):
        assert f'aria-labelledby="{chart}-t {chart}-d"' in text
        assert f'<title id="{chart}-t">' in text
        assert f'<desc id="{chart}-d">' in text
    assert "openai/gpt-4o-mini: 2,050 tokens, $0.00045" in text  # a chart's text alternative
    page = Page(text)
    heads = [a for tag, a in page.tags if tag == "th" and a.get("data-col")]
    assert [h["data-col"] for h in heads] == [
        "test", "outcome", "calls", "input", "cached", "cache_write", "output", "reasoning", "total", "cost",
        "budget",
    ]  # fmt: skip
    assert all(h["scope"] == "col" and h["aria-sort"] in ("none", "descending") for h in heads)
    assert [h["data-col"] for h in heads if h["aria-sort"] == "descending"] == ["total"]
    assert page.row_ids == [  # heaviest first
        "tests/test_chat.py::test_answer",
        "tests/test_chat.py::test_summary",
        HOSTILE,
    ]
    data = json.loads(page.scripts[1])
    assert data["index"] == {
        "calls": 0, "input": 1, "cached": 2, "cache_write": 3, "output": 4, "reasoning": 5, "total": 6,
        "cost": 7, "budget": 8,
    }  # fmt: skip
    assert data["keys"] == [
        [2, 2100, 400, 500, 360, 100, 2460, 0.005745, 0],  # exceeded
        [1, 500, 0, 0, 50, 0, 550, 0.000105, None],
        [1, 100, 0, 0, 10, 0, 110, None, 2],  # no price: no cost to sort by; warn
    ]


def test_per_file_usage_comes_from_the_node_ids() -> None:
    run = Run()
    for nodeid, tokens in (("a/test_x.py::test_1", 10), ("a/test_x.py::T::test_2", 5), ("b.py::t[x::y]", 7)):
        run.usage_for(nodeid).add_call(Call(nodeid, "call", "p", "api", "h", "m", Usage(tokens, 0, 0, 1, 0)))
    run.usage_for("<session>", "session").add_call(Call("<session>", "s", "p", "a", "h", "m", Usage(50)))
    run.usage_for("a/test_x.py::test_none")  # no calls: in no file's count
    files = [(f.name, f.tests, f.tally.total_tokens, f.tally.calls) for f in html.files_of(run)]
    assert files == [(html.OUTSIDE_TESTS, 1, 50, 1), ("a/test_x.py", 2, 17, 2), ("b.py", 1, 8, 1)]


def test_the_baseline_shows_in_the_banner_a_column_and_a_section() -> None:
    base, head = fixed_run(), fixed_run()
    extra = head.usage_for("tests/test_chat.py::test_summary")
    extra.add_call(
        Call(extra.nodeid, "call", "openai", "openai.chat", "h", "gpt-4o-mini", Usage(1000, 0, 0, 0, 0))
    )
    head.usage_for("tests/test_new.py::test_new").add_call(
        Call("tests/test_new.py::test_new", "call", "openai", "openai.chat", "h", "gpt-4o-mini", Usage(40))
    )
    head.comparison = compare(base, head) | {"source": "git:main"}
    text = html.render(head)
    assert "<dt>vs baseline</dt><dd>+1,040 tokens (+33.3%)</dd>" in text
    assert "Baseline <code>git:main</code>: 1 tests changed, 1 new, 0 removed, 2 unchanged." in text
    page = Page(text)
    assert [a["data-col"] for tag, a in page.tags if tag == "th" and a.get("data-col")][-2:] == [
        "delta",
        "budget",
    ]
    data = json.loads(page.scripts[1])
    deltas = dict(zip(page.row_ids, (k[data["index"]["delta"]] for k in data["keys"]), strict=True))
    assert deltas == {
        "tests/test_chat.py::test_answer": 0,
        "tests/test_chat.py::test_summary": 1000,
        "tests/test_new.py::test_new": 40,
        HOSTILE: 0,
    }
    assert '<td class="n up">+1,000 (+181.8%)</td>' in text
    assert '<option value="changed">' in text


def test_the_trend_reads_the_saved_runs_and_ends_with_this_one(tmp_path: Path) -> None:
    for day, tokens in ((1, 100), (2, 150), (3, 120)):
        saved = Run(meta={"branch": "main", "commit": f"{day:040x}", "finished": f"2026-11-0{day}T06:00:00"})
        saved.usage_for("t.py::t").add_call(
            Call("t.py::t", "call", "p", "a", "h", "m", Usage(tokens), cost_usd=0.5)
        )
        save_run(saved, tmp_path, datetime(2026, 11, day, 6, tzinfo=UTC))
    (tmp_path / "broken.json").write_text("{")  # skipped, not fatal
    run = fixed_run()
    run.meta["finished"] = "2026-11-04T06:00:00"
    trend = html.load_trend(run, tmp_path)
    assert [(e.tokens, e.name == "this run") for e in trend] == [
        (100, False),
        (150, False),
        (120, False),
        (3120, True),
    ]
    path = html.write(run, tmp_path / "out" / "report.html", history_dir=tmp_path)
    text = path.read_text()
    assert '<title id="trend-t">Tokens and cost per run</title>' in text
    assert "4 runs from 2026-11-01 06:00 to 2026-11-04 06:00: tokens 100 → 3,120 (+3,020)" in text
    assert text.count("<circle") == 4
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["report.html"]  # no temp file left
    assert html.load_trend(run, tmp_path / "missing") == []
    save_run(run, tmp_path, datetime(2026, 11, 4, 6, tzinfo=UTC))  # --token-budget-save-run: kept first
    trend = html.load_trend(run, tmp_path)
    assert [(e.tokens, e.name == "this run") for e in trend] == [
        (100, False),
        (150, False),
        (120, False),
        (3120, False),
    ]


def test_load_history_reads_only_the_newest_runs_asked_for(tmp_path: Path) -> None:
    from pytest_tokenbudget.runs.history import load_history

    for day in range(1, 6):
        save_run(
            Run(meta={"branch": "main" if day % 2 else "dev"}), tmp_path, datetime(2026, 11, day, tzinfo=UTC)
        )
    (tmp_path / "2026-11-09T00-00-00.000Z_x_y.json").write_text("{")  # newest, unreadable: skipped
    newest = load_history(tmp_path, last=2)
    assert [e.name[:10] for e in newest.entries] == ["2026-11-04", "2026-11-05"]
    assert len(newest.skipped) == 1
    assert [e.name[:10] for e in load_history(tmp_path, branch="main", last=2).entries] == [
        "2026-11-03",
        "2026-11-05",
    ]
    assert len(load_history(tmp_path).entries) == 5


def test_request_anatomy_is_shown_when_the_run_has_it() -> None:
    run = fixed_run()
    assert "Request anatomy" not in html.render(run)
    run.tests["tests/test_chat.py::test_answer"].anatomy = {
        "system": 300, "messages:user": 600, "tools": 1100, "overhead": 40, "calls": 2, "peak:tools": 700,
    }  # fmt: skip
    text = html.render(run)
    assert "~2,040 input tokens in 2 requests: tools 54%, messages:user 29%, system 15%, overhead 2%." in text
    assert (
        '<tr><th scope="row">tools</th><td class="n">~1,100</td><td class="n">54%</td><td class="n">~700</td>'
        in text
    )
    assert 'aria-labelledby="anatomy-chart-t anatomy-chart-d"' in text


def test_a_run_without_calls_or_budgets_still_renders() -> None:
    run = Run()
    run.usage_for("t.py::test_plain").outcome = "passed"
    page = Page(html.render(run))
    assert page.row_ids == ["t.py::test_plain"]
    assert "No budgets" in html.render(run)
    assert "Where the tokens go" not in html.render(run)
    assert "No tests." in html.render(Run())


# -- configuration, the CLI -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "problem"),
    [("html = 5", "a file path (string)"), ('html = "out"', "it is a directory")],
)
def test_a_bad_html_setting_is_a_usage_error_naming_the_key(
    pytester: pytest.Pytester, setting: str, problem: str
) -> None:
    (pytester.path / "out").mkdir()
    pytester.makepyprojecttoml(f"[tool.tokenbudget]\n{setting}\n")
    result = pytester.runpytest("--token-budget")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*pyproject.toml: [[]tool.tokenbudget[]] html: expected *{problem}*"])


def test_tokenbudget_report_renders_html(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pytest_tokenbudget.runs.artifact import write_run

    write_run(tmp_path / "run.json", hostile_run())
    assert cli(["report", str(tmp_path / "run.json"), "-f", "html", "-o", str(tmp_path / "r.html")]) == 0
    assert capsys.readouterr().err == f"html report: {tmp_path / 'r.html'}\n"
    assert sorted(Page((tmp_path / "r.html").read_text()).row_ids) == sorted(HOSTILE_IDS)
    assert cli(["report", str(tmp_path / "run.json"), "--format", "html"]) == 0
    assert capsys.readouterr().out == (tmp_path / "r.html").read_text()
    history = tmp_path / "runs"
    for day in (1, 2):
        save_run(hostile_run(), history, datetime(2026, 11, day, tzinfo=UTC))
    assert cli(["report", str(tmp_path / "run.json"), "-f", "html", "--history", str(history)]) == 0
    assert '<title id="trend-t">' in capsys.readouterr().out


# -- real sessions ----------------------------------------------------------------------------------

SESSION = """
import os

import anthropic
import openai
import pytest

URL = os.environ["LLM_URL"]
ASK = [{"role": "user", "content": "Where is my order #4417?"}]
IDS = ["</script><script>alert(1)</script>", "<!--", "a&b\\"c'd"]


@pytest.mark.parametrize("case", IDS, ids=IDS)
def test_chat(case):
    with openai.OpenAI(base_url=URL + "/v1", api_key="sk-planted-secret", max_retries=0) as client:
        client.chat.completions.create(model="gpt-4o-mini", messages=ASK)


@pytest.mark.token_budget(max_tokens=100)
def test_messages():
    with anthropic.Anthropic(base_url=URL, api_key="sk-planted-secret", max_retries=0) as client:
        client.messages.create(model="claude-sonnet-4-6", max_tokens=64, messages=ASK)


def test_no_llm():
    pass
"""


@pytest.fixture
def session(
    pytester: pytest.Pytester, llm_server: LLMServer, monkeypatch: pytest.MonkeyPatch
) -> pytest.Pytester:
    monkeypatch.setenv("LLM_URL", llm_server.url)
    pytester.makepyfile(test_app=SESSION)
    return pytester


def test_a_session_writes_the_html_report_with_every_test(session: pytest.Pytester) -> None:
    session.makepyprojecttoml(
        '[tool.tokenbudget]\nenabled = true\nhtml = "out/report.html"\njson = "out/run.json"\n'
    )
    result = session.runpytest("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.TESTS_FAILED  # test_messages is over its budget
    result.stdout.fnmatch_lines(["report: out/report.html"])
    text = (session.path / "out" / "report.html").read_text()
    run = json.loads((session.path / "out" / "run.json").read_text())
    page = Page(text)
    assert sorted(page.row_ids) == sorted(run["tests"])
    assert sorted(page.row_ids) == sorted(
        [
            f"test_app.py::test_chat[{case}]"
            for case in ("</script><script>alert(1)</script>", "<!--", "a&b\"c'd")
        ]
        + ["test_app.py::test_messages", "test_app.py::test_no_llm"]
    )
    assert "test_app.py::test_chat[&lt;/script&gt;&lt;script&gt;alert(1)&lt;/script&gt;]" in text
    assert "test_app.py::test_chat[&lt;!--]" in text
    assert len(page.scripts) == 3
    assert "<dt>LLM calls</dt><dd>4</dd>" in text
    assert f"<dt>tokens</dt><dd>{run['totals']['total_tokens']:,}</dd>" in text
    assert '<header class="banner exceeded"' in text
    for secret in ("sk-planted-secret", "order #4417", "Authorization"):
        assert secret not in text
    assert not re.search(r"(?i)https?://", text)


def test_an_html_report_that_cannot_be_written_is_said_once_and_costs_nothing(
    session: pytest.Pytester,
) -> None:
    session.makepyfile(
        test_zz_block="import os\n\ndef test_block():\n    os.makedirs('out/report.html/x')\n"
    )  # a test that puts a directory where the report goes, after the path was checked
    result = session.runpytest(
        "-p", "no:cacheprovider", "--token-budget", "--token-budget-html=out/report.html",
        "--token-budget-json=out/run.json", "--token-budget-markdown=out/pr.md", "-k", "not messages",
    )  # fmt: skip
    assert result.ret == pytest.ExitCode.OK
    output = result.stdout.str()
    assert output.count("the HTML report was not written") == 1
    result.stdout.fnmatch_lines(["pytest-tokenbudget: the HTML report was not written: *Error: *"])
    assert json.loads((session.path / "out" / "run.json").read_text())["totals"]["calls"] == 3
    assert (session.path / "out" / "pr.md").is_file()
    assert [p.name for p in (session.path / "out").iterdir() if p.name.startswith(".")] == []


def test_tokenbudget_check_writes_the_html_report_of_a_merged_run(tmp_path: Path, monkeypatch: Any) -> None:
    from pytest_tokenbudget.runs.artifact import write_run

    monkeypatch.chdir(tmp_path)
    write_run(tmp_path / "run.json", fixed_run())
    (tmp_path / "pyproject.toml").write_text(textwrap.dedent("[tool.tokenbudget]\nmax-tokens = 100000\n"))
    assert cli(["check", "run.json", "--html", "out.html"]) == 1  # the marker verdict it kept
    assert Page((tmp_path / "out.html").read_text()).row_ids[0] == "tests/test_chat.py::test_answer"


@pytest.mark.slow
def test_under_xdist_the_controller_writes_the_same_rows(pytester: pytest.Pytester) -> None:
    pytest.importorskip("xdist")
    pytester.makepyprojecttoml("[tool.tokenbudget]\nenabled = true\nhtml = 'report.html'\n")
    pytester.makepyfile(
        test_many="""
        import pytest

        @pytest.mark.parametrize("n", range(8))
        def test_n(token_usage, n):
            token_usage.record(model="m", provider="openai", input_tokens=n * 10 + 1, output_tokens=n)
        """
    )
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=8)
    serial = Page((pytester.path / "report.html").read_text())
    pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2").assert_outcomes(passed=8)
    parallel = Page((pytester.path / "report.html").read_text())
    assert parallel.row_ids == serial.row_ids == [f"test_many.py::test_n[{n}]" for n in range(7, -1, -1)]
    assert parallel.scripts[1] == serial.scripts[1]  # the same numbers in every row
