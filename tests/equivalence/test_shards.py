"""Sharded suites: shard runs defer the session verdict, `tokenbudget merge` combines the shard
artifacts, `tokenbudget check` judges the merged run — with the numbers, verdicts, report bytes and
exit status of one serial run of the same suite."""

from __future__ import annotations

import importlib.util
import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
from pytester_session import run_session

from pytest_tokenbudget.check import check_run, load_settings
from pytest_tokenbudget.cli import main
from pytest_tokenbudget.model import Call, Run, Usage, Verdict
from pytest_tokenbudget.runs.merge import MergeError, Shard, canonicalise, merge_runs

LLM_CONFTEST = """
import pytest

@pytest.fixture
def llm(token_usage):
    def call(input=0, output=0, *, model="gpt-4o-mini", provider="openai", cost=None):
        token_usage.record(model=model, provider=provider, input_tokens=input, output_tokens=output,
                           cost_usd=cost)
    return call

@pytest.fixture(scope="session")
def warmup():
    pass
"""

MOCK_OPENAI = """
import httpx

def handler(request):
    body = {"id": "c", "object": "chat.completion", "created": 1, "model": "house-model-1",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 640, "completion_tokens": 96, "total_tokens": 736}}
    return httpx.Response(200, json=body)

def ask():
    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        messages = [{"role": "system", "content": "You are a careful assistant. Answer in one short line."},
                    {"role": "user", "content": "hi"}]
        client.post("https://api.openai.com/v1/chat/completions",
                    json={"model": "house-model-1", "messages": messages})
"""

PYPROJECT = """
[tool.pytest.ini_options]
markers = ['agent: agent tests']
addopts = '--strict-markers'

[tool.tokenbudget]
max-tokens = 3000
max-cost = 0.05
max-system-tokens = 10

[tool.tokenbudget.per-test]
max-tokens = 800

[[tool.tokenbudget.budgets]]
name = "agents"
marker = "agent"
max-tokens = 900

[[tool.tokenbudget.budgets]]
name = "each chat"
path = "test_chat*.py"
per = "test"
max-tokens = 700
"""

SUITE = {
    "test_chat.py": """
        import pytest
        from mock_openai import ask

        def test_chat_hello(llm):
            llm(300, 40, cost=0.004)

        @pytest.mark.token_budget(max_tokens=100)
        def test_chat_marker_overrun(llm):
            llm(90, 30, cost=0.001)

        @pytest.mark.parametrize("n", [1, 2, 3])
        def test_chat_param(llm, n):
            llm(100 * n, 10 * n, cost=0.002 * n)

        def test_chat_http():
            ask()
        """,
    "test_agent.py": """
        import pytest

        @pytest.mark.agent
        def test_agent_plan(llm):
            llm(400, 100, model="claude-sonnet-4-5", provider="anthropic", cost=0.01)

        @pytest.mark.agent
        def test_agent_act(llm, warmup):
            llm(250, 50, cost=0.003)

        def test_agent_offline():
            pass
        """,
    "test_embed.py": """
        class TestEmbed:
            def test_embed_batch(self, llm):
                llm(500, 0, model="text-embedding-3-small", cost=0.00001)

            def test_embed_unpriced(self, llm):
                llm(120, 0, model="my-finetune")
        """,
}

GROUPS = ("chat_hello or chat_param", "agent or embed_batch", "chat_marker or chat_http or embed_unpriced")
"""Three ``-k`` groups that together select every test of SUITE exactly once."""


@pytest.fixture(autouse=True)
def _wide_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setenv("GITHUB_SHA", "a1b2c3d4e5f6a7b8c9d0")  # every shard of one CI run: one commit
    for name in ("GITHUB_ACTIONS", "GITHUB_STEP_SUMMARY", "GITHUB_HEAD_REF", "GITHUB_REF_NAME"):
        monkeypatch.delenv(name, raising=False)


def _suite(pytester: pytest.Pytester, pyproject: str = PYPROJECT) -> None:
    pytester.makeconftest(LLM_CONFTEST)
    pytester.makepyprojecttoml(textwrap.dedent(pyproject))
    pytester.makepyfile(mock_openai=MOCK_OPENAI)
    for name, body in SUITE.items():
        pytester.makepyfile(**{name.removesuffix(".py"): textwrap.dedent(body)})


def _section(lines: list[str]) -> list[str]:
    """The token budget section of a pytest run or of `tokenbudget check`."""
    start = next(i for i, line in enumerate(lines) if " token budget " in line and line.startswith("="))
    end = start + 1
    while end < len(lines) and not lines[end].startswith(("JSON run artifact", "report: ", "EXCEEDED")):
        if lines[end].startswith("=") or lines[end].startswith("tokenbudget check"):
            break
        end += 1
    return lines[start:end]


def _without_meta(data: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in data.items() if key != "meta"}


def _shards(pytester: pytest.Pytester, *, xdist_last: bool = False) -> list[pytest.RunResult]:
    """Run the three ``-k`` shards; ``xdist_last``: the last one with two xdist workers inside."""
    results = []
    for n, group in enumerate(GROUPS, start=1):
        args = (f"--token-budget-json=shards/shard-{n}.json", "--token-budget-defer-session", "-k", group)
        if xdist_last and n == len(GROUPS):
            results.append(run_session(pytester, "-n", "2", *args, artifact=None, subprocess=True))
        else:
            results.append(run_session(pytester, *args, artifact=None))
    return results


# -- the merged run equals the serial run --------------------------------------------------------


@pytest.mark.slow
def test_three_k_shards_merge_and_check_to_the_serial_run(
    pytester: pytest.Pytester, capsys: pytest.CaptureFixture[str]
) -> None:
    _suite(pytester)
    serial = run_session(pytester, artifact="serial.json")
    serial.assert_outcomes(passed=10, failed=1)  # the marker overrun fails its test
    assert serial.ret == pytest.ExitCode.TESTS_FAILED
    shard_results = _shards(pytester, xdist_last=True)
    assert [r.ret for r in shard_results] == [0, 0, 1]  # only the marker overrun fails a shard
    shard_results[2].stdout.fnmatch_lines(["*2 workers*"])
    shard_results[0].assert_outcomes(passed=4, deselected=7)
    shard_results[1].assert_outcomes(passed=4, deselected=7)

    capsys.readouterr()
    assert main(["merge", "shards", "-o", "merged.json"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines() == [
        "merged 3 shards, 11 tests, 10 calls: 3,276 tokens (input 2,900, output 376)",
        "merged run: merged.json",
    ]
    assert main(["check", "merged.json", "--json", "checked.json"]) == 1
    checked_out = capsys.readouterr().out.splitlines()

    serial_data = json.loads((pytester.path / "serial.json").read_text())
    checked_data = json.loads((pytester.path / "checked.json").read_text())
    assert json.dumps(_without_meta(checked_data)) == json.dumps(_without_meta(serial_data))  # same bytes
    assert checked_data["totals"]["total_tokens"] == 3276
    assert checked_data["totals"]["cost_usd"] == 0.03001
    assert [(v["name"], v["status"]) for v in checked_data["verdicts"]] == [
        ("test-default test_agent.py::test_agent_plan", "ok"),
        ("test-default test_agent.py::test_agent_act", "ok"),
        ("test-default test_chat.py::test_chat_hello", "ok"),
        ("marker test_chat.py::test_chat_marker_overrun", "exceeded"),
        ("test-default test_chat.py::test_chat_param[1]", "ok"),
        ("test-default test_chat.py::test_chat_param[2]", "ok"),
        ("test-default test_chat.py::test_chat_param[3]", "ok"),
        ("test-default test_chat.py::test_chat_http", "warn"),
        ("test-default test_embed.py::TestEmbed::test_embed_batch", "ok"),
        ("test-default test_embed.py::TestEmbed::test_embed_unpriced", "ok"),
        ("max-system-tokens", "exceeded"),  # request inspection, over the whole run too
        ("session", "exceeded"),
        ("session", "unknown"),
        ("scope agents", "warn"),
        ("scope each chat", "exceeded"),
    ]
    assert [v["message"] for v in checked_data["verdicts"][-5:]] == [
        "system prompt of one request exceeded max-system-tokens: "
        "~12 tokens in test_chat.py::test_chat_http > 10",
        "session budget exceeded: 3,276 tokens > 3,000 (input 2,900, output 376; "
        "gpt-4o-mini ×6, house-model-1 ×1, claude-sonnet-4-5 ×1, +2 more)",
        "session budget unknown: 2 calls without a price; ≥$0.03 of $0.05 (input 2,900, output 376; "
        "gpt-4o-mini ×6, house-model-1 ×1, claude-sonnet-4-5 ×1, +2 more)",
        "budget 'agents' at 89%: 800 tokens of 900 (input 650, output 150; "
        "claude-sonnet-4-5 ×1, gpt-4o-mini ×1)",
        "budget 'each chat' (test_chat.py::test_chat_http) exceeded: 736 tokens > 700 "
        "(input 640, output 96; house-model-1 ×1)",
    ]
    meta = checked_data["meta"]
    assert meta["exit_status"] == serial_data["meta"]["exit_status"] == 1
    assert [s["name"] for s in meta["merge"]["shards"]] == ["shard-1.json", "shard-2.json", "shard-3.json"]
    assert [(s["tests"], s["calls"]) for s in meta["merge"]["shards"]] == [(4, 4), (4, 3), (3, 3)]
    assert {k: meta[k] for k in ("commit", "partial", "plugin_version")} == {
        k: serial_data["meta"][k] for k in ("commit", "partial", "plugin_version")
    }
    assert list(meta)[: len(serial_data["meta"])] == list(serial_data["meta"])
    assert _section(checked_out) == _section(serial.outlines)


@pytest.mark.slow
def test_merge_does_not_depend_on_the_order_of_the_shards(
    pytester: pytest.Pytester, capsys: pytest.CaptureFixture[str]
) -> None:
    _suite(pytester)
    _shards(pytester)
    capsys.readouterr()
    names = [f"shards/shard-{n}.json" for n in (3, 1, 2)]
    assert main(["merge", *names, "-o", "a.json"]) == 0
    assert main(["merge", *sorted(names), "-o", "b.json"]) == 0
    capsys.readouterr()
    a = json.loads((pytester.path / "a.json").read_text())
    b = json.loads((pytester.path / "b.json").read_text())
    assert _without_meta(a) == _without_meta(b)
    assert [v["name"] for v in a["verdicts"]][2:4] == [
        "test-default test_chat.py::test_chat_hello",
        "marker test_chat.py::test_chat_marker_overrun",
    ]


@pytest.mark.slow
def test_an_xdist_run_writes_the_serial_artifact(pytester: pytest.Pytester) -> None:
    _suite(pytester)
    run_session(pytester, artifact="serial.json")
    run_session(pytester, "-n", "2", artifact="xdist.json", subprocess=True).assert_outcomes(
        passed=10, failed=1
    )
    serial = json.loads((pytester.path / "serial.json").read_text())
    xdist = json.loads((pytester.path / "xdist.json").read_text())
    assert json.dumps(_without_meta(xdist)) == json.dumps(_without_meta(serial))
    assert len(xdist["verdicts"]) == 15


# -- shard runs defer the session verdict --------------------------------------------------------

SPLIT_CONFTEST = """
def pytest_addoption(parser):  # the options pytest-split and pytest-shard add
    parser.addoption("--splits", dest="splits", type=int, default=None)
    parser.addoption("--group", dest="group", type=int, default=None)
    parser.addoption("--num-shards", dest="num_shards", type=int, default=1)
    parser.addoption("--shard-id", dest="shard_id", type=int, default=0)
"""

SESSION_ONLY = """
[tool.tokenbudget]
max-tokens = 100
{extra}
"""


@pytest.mark.parametrize(
    ("args", "extra", "deferred"),
    [
        pytest.param(("--splits", "3", "--group", "2"), "", True, id="pytest-split"),
        pytest.param(("--num-shards", "4", "--shard-id", "1"), "", True, id="pytest-shard"),
        pytest.param(("--splits", "1", "--group", "1"), "", False, id="one-split"),
        pytest.param((), "", False, id="no-shard-options"),
        pytest.param(("--splits", "3", "--group", "2"), "defer-session = false", False, id="explicit-false"),
    ],
)
def test_shard_options_defer_the_session_verdict(
    pytester: pytest.Pytester, args: tuple[str, ...], extra: str, deferred: bool
) -> None:
    pytester.makeconftest(LLM_CONFTEST + SPLIT_CONFTEST)
    pytester.makepyprojecttoml(SESSION_ONLY.format(extra=extra))
    pytester.makepyfile(test_s="def test_a(llm):\n    llm(150, 0)\n")
    result = run_session(pytester, *args, artifact="run.json")
    result.assert_outcomes(passed=1)
    verdicts = json.loads((pytester.path / "run.json").read_text())["verdicts"]
    if deferred:
        assert result.ret == pytest.ExitCode.OK
        assert verdicts == []
    else:
        assert result.ret == pytest.ExitCode.TESTS_FAILED
        assert [(v["kind"], v["status"]) for v in verdicts][-1] == ("session", "exceeded")


# -- duplicates, commits, schema versions, partial shards -----------------------------------------


def _artifact(path: Path, tests: dict[str, int], **meta: Any) -> Path:
    """A shard artifact with one 1-call test per entry of ``tests`` (nodeid → input tokens)."""
    run = Run(meta={"started": "2026-01-01T00:00:00Z", "commit": "c0ffee", "partial": False, **meta})
    for nodeid, tokens in tests.items():
        entry = run.usage_for(nodeid)
        entry.path, entry.line, entry.outcome = nodeid.split("::")[0], 1, "passed"
        entry.add_call(
            Call(nodeid, "call", "openai", "openai.chat", "h", "gpt-4o-mini", Usage(tokens, 0, 0, 10))
        )
    from pytest_tokenbudget.runs.artifact import write_run

    write_run(path, run)
    return path


def test_a_test_in_two_shards_is_refused_by_default(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = _artifact(tmp_path / "a.json", {"t.py::test_x": 100, "t.py::test_y": 200})
    b = _artifact(tmp_path / "b.json", {"t.py::test_y": 250, "t.py::test_z": 300})
    assert main(["merge", str(a), str(b), "-o", str(tmp_path / "m.json")]) == 2
    assert capsys.readouterr().err == (
        "tokenbudget: 1 test appears in more than one shard (t.py::test_y in a.json, b.json): "
        "fix the split, or pass --duplicates keep-first|keep-last to count each once\n"
    )
    assert not (tmp_path / "m.json").exists()


@pytest.mark.parametrize(
    ("policy", "kept", "tokens"), [("keep-first", "a.json", 630), ("keep-last", "b.json", 680)]
)
def test_duplicates_can_be_counted_once_and_are_recorded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], policy: str, kept: str, tokens: int
) -> None:
    a = _artifact(tmp_path / "a.json", {"t.py::test_x": 100, "t.py::test_y": 200})
    b = _artifact(tmp_path / "b.json", {"t.py::test_y": 250, "t.py::test_z": 300})
    assert main(["merge", str(a), str(b), "-o", str(tmp_path / "m.json"), "--duplicates", policy]) == 0
    captured = capsys.readouterr()
    assert captured.err == (
        f"tokenbudget: 1 test appears in more than one shard, counted once ({policy}): "
        "t.py::test_y in a.json, b.json\n"
    )
    merged = json.loads((tmp_path / "m.json").read_text())
    assert merged["totals"]["total_tokens"] == tokens
    assert merged["totals"]["calls"] == 3
    assert merged["meta"]["merge"]["duplicates"] == [
        {"test": "t.py::test_y", "shards": ["a.json", "b.json"], "kept": kept}
    ]


def test_shards_from_different_commits_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = _artifact(tmp_path / "a.json", {"t.py::test_x": 100}, commit="1111111111111111")
    b = _artifact(tmp_path / "b.json", {"t.py::test_y": 100}, commit="2222222222222222")
    c = _artifact(tmp_path / "c.json", {"t.py::test_z": 100}, commit="1111111111111111")
    assert main(["merge", str(a), str(b), str(c), "-o", str(tmp_path / "m.json")]) == 2
    assert capsys.readouterr().err == (
        "tokenbudget: shards come from 2 different commits (111111111111: a.json, c.json; "
        "222222222222: b.json); merge only the shards of one CI run\n"
    )


def test_a_shard_of_another_schema_version_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = _artifact(tmp_path / "a.json", {"t.py::test_x": 100})
    b = _artifact(tmp_path / "b.json", {"t.py::test_y": 100})
    data = json.loads(b.read_text())
    data["schema_version"] = 2
    b.write_text(json.dumps(data))
    assert main(["merge", str(a), str(b), "-o", str(tmp_path / "m.json")]) == 2
    assert capsys.readouterr().err == (
        f"tokenbudget: {b}: schema_version 2 is not supported (this pytest-tokenbudget reads version 1)\n"
    )


def test_an_interrupted_shard_leaves_the_merged_run_partial(
    pytester: pytest.Pytester, capsys: pytest.CaptureFixture[str]
) -> None:
    markers = "[tool.pytest.ini_options]\nmarkers = ['agent: agent tests']\n\n"
    _suite(pytester, markers + "[tool.tokenbudget]\nmax-tokens = 100000\n")
    first = run_session(pytester, "--token-budget-defer-session", "-k", "chat", "-x", artifact="s1.json")
    first.assert_outcomes(passed=1, failed=1)  # the marker overrun stops the shard (-x)
    run_session(pytester, "--token-budget-defer-session", "-k", "agent or embed", artifact="s2.json")
    capsys.readouterr()
    assert main(["merge", "s1.json", "s2.json", "-o", "m.json"]) == 0
    assert capsys.readouterr().err == (
        "tokenbudget: partial (interrupted) shards: s1.json: the merged run is partial\n"
    )
    merged = json.loads((pytester.path / "m.json").read_text())
    assert merged["meta"]["partial"] is True
    assert merged["meta"]["merge"]["partial_shards"] == ["s1.json"]
    assert [(s["name"], s["partial"], s["tests"]) for s in merged["meta"]["merge"]["shards"]] == [
        ("s1.json", True, 2),
        ("s2.json", False, 5),
    ]
    assert main(["check", "m.json"]) == 1  # the marker overrun that stopped the shard
    out = capsys.readouterr().out.splitlines()
    assert out[-3:] == [
        "warning: a partial (interrupted) run: its totals are a lower bound",
        "EXCEEDED test_chat.py::test_chat_marker_overrun: token budget exceeded: 120 tokens > 100 "
        "(input 90, output 30; gpt-4o-mini ×1)",
        "tokenbudget check: 1 exceeded, 1 ok (exit 1)",
    ]


# -- tokenbudget check ------------------------------------------------------------------------


def _checked(pytester: pytest.Pytester, pyproject: str, *args: str) -> tuple[int, list[str], dict[str, Any]]:
    pytester.makepyprojecttoml(textwrap.dedent(pyproject))
    status = main(["check", "run.json", "--json", "checked.json", *args])
    return status, [], json.loads((pytester.path / "checked.json").read_text())


def test_check_exit_statuses(pytester: pytest.Pytester, capsys: pytest.CaptureFixture[str]) -> None:
    _artifact(pytester.path / "run.json", {"t.py::test_x": 600, "t.py::test_y": 300})  # 920 tokens
    status, _, data = _checked(pytester, "[tool.tokenbudget]\nmax-tokens = 1000\n")
    assert status == 0
    assert [(v["kind"], v["status"], v["message"]) for v in data["verdicts"]] == [
        (
            "session",
            "warn",
            "session budget at 92%: 920 tokens of 1,000 (input 900, output 20; gpt-4o-mini ×2)",
        ),
    ]
    status, _, data = _checked(pytester, "[tool.tokenbudget]\nmax-tokens = 900\n")
    assert status == 1
    assert data["meta"]["exit_status"] == 1
    out = capsys.readouterr().out.splitlines()
    assert out[-3:] == [
        "EXCEEDED session budget exceeded: 920 tokens > 900 (input 900, output 20; gpt-4o-mini ×2)",
        f"report: {pytester.path / 'checked.json'}",
        "tokenbudget check: 1 exceeded (exit 1)",
    ]
    status, _, data = _checked(pytester, "[tool.tokenbudget]\nmax-tokens = 900\nmode = 'warn'\n")
    assert status == 0
    status, _, data = _checked(pytester, "[tool.tokenbudget]\nmax-tokens = 900\n", "--mode", "warn")
    assert status == 0
    assert data["verdicts"][-1]["status"] == "warn"
    capsys.readouterr()
    pytester.makepyprojecttoml("[tool.tokenbudget]\nmax-tokenz = 900\n")
    assert main(["check", "run.json"]) == 2
    assert "unknown key 'max-tokenz' (did you mean 'max-tokens'?)" in capsys.readouterr().err
    assert main(["check", "missing.json"]) == 2
    assert capsys.readouterr().err.startswith("tokenbudget: missing.json: cannot be read:")
    assert main(["check", "run.json", "--config", "nowhere.toml"]) == 2
    assert capsys.readouterr().err == "tokenbudget: nowhere.toml: no such file\n"


def test_check_keeps_shard_marker_verdicts_and_judges_unjudged_tests_by_the_default(
    pytester: pytest.Pytester, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _artifact(
        pytester.path / "run.json", {"t.py::test_x": 600, "t.py::test_m": 50, "t.py::test_y": 100}
    )
    data = json.loads(path.read_text())
    data["tests"]["t.py::test_m"]["markers"] = ["token_budget"]
    marker = Verdict(
        "marker t.py::test_m", "marker", "total_tokens", 40.0, 60.0, "exceeded", "over", "t.py::test_m"
    )
    stale_session = Verdict("session", "session", "total_tokens", 10.0, 60.0, "exceeded", "one shard only")
    data["verdicts"] = [marker.to_dict(), stale_session.to_dict()]
    path.write_text(json.dumps(data))
    status, _, checked = _checked(pytester, "[tool.tokenbudget.per-test]\nmax-tokens = 500\n")
    assert status == 1  # the marker overrun failed its test in the shard: the serial run fails too
    assert [(v["name"], v["status"], v["actual"]) for v in checked["verdicts"]] == [
        ("marker t.py::test_m", "exceeded", 60.0),
        ("test-default t.py::test_x", "exceeded", 610.0),
        ("test-default t.py::test_y", "ok", 110.0),
    ]
    assert capsys.readouterr().out.splitlines()[-1] == "tokenbudget check: 2 exceeded, 1 ok (exit 1)"


def test_check_reads_the_pyproject_given_by_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _artifact(tmp_path / "run.json", {"t.py::test_x": 600})
    (tmp_path / "ci").mkdir()
    config = tmp_path / "ci" / "pyproject.toml"
    config.write_text("[tool.tokenbudget]\nmax-calls = 0\n")
    assert main(["check", str(run), "--config", str(config)]) == 1
    assert capsys.readouterr().out.splitlines()[-2:] == [
        "EXCEEDED session budget exceeded: 1 call > 0 (input 600, output 10; gpt-4o-mini ×1)",
        "tokenbudget check: 1 exceeded (exit 1)",
    ]


# -- the pure merge ------------------------------------------------------------------------------


def _run_of(tests: dict[str, int], verdicts: list[Verdict] | None = None) -> Run:
    run = Run(meta={"commit": "c0ffee"})
    for nodeid, tokens in tests.items():
        owner_kind = "test" if "::" in nodeid else "fixture"
        entry = run.usage_for(nodeid, owner_kind)
        entry.add_call(
            Call(nodeid, "setup", "openai", "openai.chat", "h", "gpt-4o-mini", Usage(tokens, 0, 0, 1))
        )
    run.verdicts = verdicts or []
    return run


def test_fixture_entries_are_summed_and_after_loop_verdicts_dropped() -> None:
    session_verdict = Verdict("session", "session", "total_tokens", 1.0, 2.0, "exceeded")
    marker = Verdict("marker a.py::test_a", "marker", "calls", 1.0, 1.0, "ok", nodeid="a.py::test_a")
    one = _run_of({"a.py::test_a": 10, "<session fixture db>": 100}, [session_verdict, marker])
    two = _run_of({"b.py::test_b": 20, "<session fixture db>": 100}, [session_verdict])
    merged = merge_runs([Shard("1", one), Shard("2", two)])
    assert merged.run.tests["<session fixture db>"].total.usage.input_tokens == 200
    assert merged.run.tests["<session fixture db>"].total.calls == 2
    assert merged.run.totals().usage.input_tokens == 230
    assert merged.run.verdicts == [marker]
    assert merged.notes == []
    assert merged.run.meta["merge"]["dropped_verdicts"] == 2
    assert one.tests["<session fixture db>"].total.calls == 1  # the shards are left untouched


def test_merge_refuses_nothing_and_unknown_duplicate_policies() -> None:
    with pytest.raises(MergeError, match="nothing to merge"):
        merge_runs([])
    with pytest.raises(ValueError, match="duplicates must be one of error, keep-first, keep-last"):
        merge_runs([Shard("1", _run_of({}))], duplicates="sum")


def test_canonical_order_follows_files_and_lines() -> None:
    def verdict(nodeid: str, path: str, line: int) -> Verdict:
        return Verdict(f"marker {nodeid}", "marker", "calls", 1, 0, "ok", nodeid=nodeid, path=path, line=line)

    session = Verdict("session", "session", "calls", 1, 0, "ok")
    run = Run(
        verdicts=[
            session,
            verdict("tests/a_b/t.py::test_z", "tests/a_b/t.py", 3),
            verdict("tests/a/t.py::test_late", "tests/a/t.py", 30),
            verdict("tests/a/t.py::test_early", "tests/a/t.py", 4),
        ]
    )
    canonicalise(run)
    assert [v.nodeid for v in run.verdicts] == [
        "tests/a/t.py::test_early",
        "tests/a/t.py::test_late",
        "tests/a_b/t.py::test_z",
        "",
    ]


def test_check_run_is_idempotent_on_a_plugin_artifact(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[tool.tokenbudget]\nmax-tokens = 50\n")
    settings = load_settings(None, {}, cwd=tmp_path)
    run = _run_of({"a.py::test_a": 10, "b.py::test_b": 30})
    first = check_run(run, settings)
    once = [v.to_dict() for v in first.run.verdicts]
    second = check_run(first.run, settings)
    assert [v.to_dict() for v in second.run.verdicts] == once
    assert [(v["kind"], v["status"]) for v in once] == [("session", "warn")]
    assert second.exit_status == 0


_HAS_BASELINE = importlib.util.find_spec("pytest_tokenbudget.runs.baseline") is not None
_HAS_WRITER = importlib.util.find_spec("pytest_tokenbudget.report.writer") is not None


@pytest.mark.skipif(_HAS_BASELINE, reason="this version compares with baselines")
def test_check_refuses_a_baseline_it_cannot_compare(
    pytester: pytest.Pytester, capsys: pytest.CaptureFixture[str]
) -> None:
    _artifact(pytester.path / "run.json", {"t.py::test_x": 600})
    assert main(["check", "run.json", "--baseline", "git:main"]) == 2
    assert capsys.readouterr().err == (
        "tokenbudget: baseline 'git:main': this version of pytest-tokenbudget cannot compare with a "
        "baseline yet (no pytest_tokenbudget.runs.baseline.session_evaluator)\n"
    )


@pytest.mark.skipif(_HAS_WRITER, reason="the report writer exists")
def test_check_names_the_reports_it_cannot_write(
    pytester: pytest.Pytester, capsys: pytest.CaptureFixture[str]
) -> None:
    _artifact(pytester.path / "run.json", {"t.py::test_x": 600})
    pytester.makepyprojecttoml("[tool.tokenbudget]\nmarkdown = 'reports/tokens.md'\n")
    assert main(["check", "run.json", "--junit", "tokens.xml"]) == 0
    assert capsys.readouterr().out.splitlines()[-3:] == [
        "note: no junit report written: this version has no report writer for it",
        "note: no markdown report written: this version has no report writer for it",
        "tokenbudget check: no budgets (exit 0)",
    ]


def test_merge_reads_folders_and_names_clashing_files_by_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for n, test in enumerate(("test_x", "test_y"), start=1):
        (tmp_path / "shards" / f"tokenbudget-{n}").mkdir(parents=True)
        _artifact(tmp_path / "shards" / f"tokenbudget-{n}" / "run.json", {f"t.py::{test}": 100 * n})
    out = tmp_path / "m.json"
    assert main(["merge", str(tmp_path / "shards"), "-o", str(out), "--expect", "2"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == (
        "merged 2 shards, 2 tests, 2 calls: 320 tokens (input 300, output 20)"
    )
    names = [s["name"] for s in json.loads(out.read_text())["meta"]["merge"]["shards"]]
    assert names == [f"{tmp_path}/shards/tokenbudget-{n}/run.json" for n in (1, 2)]


def test_merge_refuses_a_missing_shard_and_an_empty_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = _artifact(tmp_path / "a.json", {"t.py::test_x": 100})
    b = _artifact(tmp_path / "b.json", {"t.py::test_y": 100})
    assert main(["merge", str(a), str(b), "-o", str(tmp_path / "m.json"), "--expect", "3"]) == 2
    assert capsys.readouterr().err == (
        "tokenbudget: found 2 shard artifacts, expected 3 (a.json, b.json): a shard that did not "
        "upload its artifact would leave its tests out of the session budgets\n"
    )
    (tmp_path / "empty").mkdir()
    assert main(["merge", str(tmp_path / "empty"), "-o", str(tmp_path / "m.json")]) == 2
    assert (
        capsys.readouterr().err
        == f"tokenbudget: {tmp_path / 'empty'}: a folder without *.json shard artifacts\n"
    )


def _calls_log(path: Path, tests: dict[str, int]) -> None:
    lines = [json.dumps({"test": nodeid, "input_tokens": n}) for nodeid, n in tests.items()]
    path.write_text("\n".join(lines) + "\n")


def test_call_logs_stream_into_one_and_lose_the_duplicates_not_kept(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for n, tests in enumerate(({"t.py::test_x": 100, "t.py::test_y": 200}, {"t.py::test_y": 250}), start=1):
        folder = tmp_path / "shards" / f"tokenbudget-{n}"
        folder.mkdir(parents=True)
        _artifact(folder / "run.json", tests)
        _calls_log(folder / "calls.jsonl", tests)
    args = [
        "merge",
        str(tmp_path / "shards"),
        "-o",
        str(tmp_path / "m.json"),
        "--calls",
        str(tmp_path / "c.jsonl"),
    ]
    assert main([*args, "--duplicates", "keep-last"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == f"merged 2 call logs, 2 calls: {tmp_path / 'c.jsonl'}"
    assert [json.loads(line) for line in (tmp_path / "c.jsonl").read_text().splitlines()] == [
        {"test": "t.py::test_x", "input_tokens": 100},
        {"test": "t.py::test_y", "input_tokens": 250},
    ]
    assert main(args[:4]) == 2
    assert capsys.readouterr().err == (
        "tokenbudget: 2 call logs (*.jsonl) given: name the merged log with --calls PATH\n"
    )


def test_a_call_log_of_no_known_shard_is_refused_when_duplicates_are_dropped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = _artifact(tmp_path / "a.json", {"t.py::test_x": 100})
    b = _artifact(tmp_path / "b.json", {"t.py::test_x": 120})
    _calls_log(tmp_path / "a.calls.jsonl", {"t.py::test_x": 100})
    _calls_log(tmp_path / "other.jsonl", {"t.py::test_x": 120})
    args = [str(a), str(b), str(tmp_path / "a.calls.jsonl"), str(tmp_path / "other.jsonl")]
    out = ["-o", str(tmp_path / "m.json"), "--calls", str(tmp_path / "c.jsonl"), "--duplicates", "keep-first"]
    assert main(["merge", *args, *out]) == 2
    assert capsys.readouterr().err.startswith(
        f"tokenbudget: {tmp_path / 'other.jsonl'}: cannot tell which shard this call log belongs to"
    )
    assert not (tmp_path / "c.jsonl").exists()
