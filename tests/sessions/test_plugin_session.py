"""Real pytest sessions (pytester) whose tests call the real SDKs against a loopback server.

Proves the capture slice end to end: per-test and per-phase attribution (threads and asyncio tasks
included), calls in fixtures and outside tests kept under their own heading, the ``token_usage``
fixture, the terminal summary, the JSON artifact's contents (and what it must never contain), and
that the plugin switched off patches and imports nothing.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest
from llm_server import LLMServer

SECRET = "sk-planted-secret-1234567890"

SUITE = f'''
import asyncio
import os
import threading

import anthropic
import openai
import pytest

URL = os.environ["LLM_URL"]
ASK = [{{"role": "user", "content": "Where is my order #4417?"}}]


def oai():
    return openai.OpenAI(base_url=URL + "/v1", api_key="{SECRET}", max_retries=0)


@pytest.fixture(scope="module")
def warm_cache():
    with oai() as client:
        client.embeddings.create(model="text-embedding-3-small", input="warm the cache")


@pytest.fixture
def summariser():
    with oai() as client:
        client.embeddings.create(model="text-embedding-3-small", input="setup")
    yield
    with anthropic.Anthropic(base_url=URL, api_key="{SECRET}") as client:
        client.messages.create(model="claude-sonnet-4-6", max_tokens=64, messages=ASK)


def test_chat(warm_cache, token_usage):
    with oai() as client:
        client.chat.completions.create(model="gpt-4o-mini", messages=ASK)
    assert (token_usage.calls, token_usage.input_tokens, token_usage.cached_input_tokens) == (1, 1250, 1024)
    assert (token_usage.output_tokens, token_usage.total_tokens) == (96, 1346)


def test_phases(summariser):
    with oai() as client:
        client.responses.create(model="o4-mini", input="Where is my order?")


def test_threads():
    def work():
        with oai() as client:
            client.chat.completions.create(model="gpt-4o-mini", messages=ASK)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def test_tasks():
    async def main():
        async with openai.AsyncOpenAI(base_url=URL + "/v1", api_key="{SECRET}") as client:
            ask = lambda: client.responses.create(model="o4-mini", input="x")  # noqa: E731
            await asyncio.gather(*[asyncio.create_task(ask()) for _ in range(3)])

    asyncio.run(main())


def test_stream():
    with anthropic.Anthropic(base_url=URL, api_key="{SECRET}") as client:
        with client.messages.stream(model="claude-sonnet-4-6", max_tokens=64, messages=ASK) as stream:
            stream.get_final_message()


def test_record_by_hand(token_usage):
    token_usage.record(model="in-house-llm", input_tokens=100, cached_input_tokens=40, output_tokens=20)
    assert token_usage.total_tokens == 120
    with pytest.raises(ValueError, match="non-negative"):
        token_usage.record(model="in-house-llm", input_tokens=-1)


def test_no_llm():
    pass
'''

COUNTS = ("calls", "input_tokens", "cached_input_tokens", "cache_write_tokens", "output_tokens",
          "reasoning_tokens", "total_tokens")  # fmt: skip


@pytest.fixture
def suite(
    pytester: pytest.Pytester, llm_server: LLMServer, monkeypatch: pytest.MonkeyPatch
) -> pytest.Pytester:
    monkeypatch.setenv("LLM_URL", llm_server.url)
    monkeypatch.setenv("COLUMNS", "200")
    pytester.makepyfile(test_app=SUITE)
    return pytester


def numbers(entry: dict[str, Any]) -> tuple[int, ...]:
    return tuple(entry[name] for name in COUNTS)


def test_every_call_is_attributed_to_its_test_phase_or_fixture(suite: pytest.Pytester) -> None:
    result = suite.runpytest("--token-budget", "--token-budget-json=run.json")
    result.assert_outcomes(passed=7)
    run = json.loads((suite.path / "run.json").read_text())
    tests = run["tests"]
    assert numbers(tests["test_app.py::test_chat"]) == (1, 1250, 1024, 0, 96, 0, 1346)
    phases = {name: numbers(t) for name, t in tests["test_app.py::test_phases"]["phases"].items()}
    assert phases == {
        "setup": (1, 8, 0, 0, 0, 0, 8),  # the function-scoped fixture's setup: the test's own
        "call": (1, 520, 256, 0, 180, 128, 700),
        "teardown": (1, 2948, 0, 2048, 120, 0, 3068),
    }
    assert numbers(tests["test_app.py::test_threads"]) == (4, 5000, 4096, 0, 384, 0, 5384)
    assert numbers(tests["test_app.py::test_tasks"]) == (3, 1560, 768, 0, 540, 384, 2100)
    assert numbers(tests["test_app.py::test_stream"]) == (1, 2210, 1800, 0, 85, 0, 2295)
    assert numbers(tests["test_app.py::test_record_by_hand"]) == (1, 100, 40, 0, 20, 0, 120)
    assert tests["test_app.py::test_no_llm"]["calls"] == 0
    # a module-scoped fixture's calls are its own, not those of the test that triggered its setup
    fixture = tests["<module fixture warm_cache>"]
    assert (fixture["kind"], numbers(fixture)) == ("fixture", (1, 8, 0, 0, 0, 0, 8))
    assert numbers(run["totals"]) == (14, 13604, 7984, 2048, 1425, 512, 15029)
    assert sum(t["calls"] for t in tests.values()) == run["totals"]["calls"]
    models = {key: value["calls"] for key, value in run["models"].items()}
    assert models == {
        "anthropic-compatible/claude-sonnet-4-6": 2,
        "manual/in-house-llm": 1,
        "openai-compatible/gpt-4o-mini-2024-07-18": 5,
        "openai-compatible/o4-mini-2025-04-16": 4,
        "openai-compatible/text-embedding-3-small": 2,
    }
    assert run["totals"]["live_calls"] == 13
    assert run["totals"]["manual_calls"] == 1


def test_terminal_summary(suite: pytest.Pytester) -> None:
    result = suite.runpytest("--token-budget")
    result.stdout.fnmatch_lines(
        [
            "*= token budget =*",
            "14 calls in 6 tests: 15,029 tokens (input 13,604 incl. 7,984 cached, 2,048 cache-write, "
            "output 1,425 incl. 512 reasoning)",
            "calls: 13 live, 1 recorded by hand",
            "heaviest tests (top 5):",
            "*5,384*4 calls  test_app.py::test_threads",
            "per model:",
            "*6,730*5 calls  openai-compatible/gpt-4o-mini-2024-07-18",
            "outside tests:",
            "  <module fixture warm_cache>: 1 call, 8 tokens (input 8, output 0)",
        ]
    )


@pytest.mark.slow
def test_artifact_is_versioned_complete_and_holds_no_secret_or_text(suite: pytest.Pytester) -> None:
    suite.run("git", "init", "-q", "-b", "feature/tokens")
    suite.run("git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "x")
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=suite.path, capture_output=True, text=True, check=True
    ).stdout.strip()
    suite.makepyprojecttoml('[tool.tokenbudget]\nenabled = true\njson = "reports/run.json"\n')
    for name in ("GITHUB_SHA", "GITHUB_REF_NAME", "GITHUB_HEAD_REF", "CI_COMMIT_SHA", "CI_COMMIT_REF_NAME"):
        suite.monkeypatch.delenv(name, raising=False) if hasattr(suite, "monkeypatch") else None
    result = suite.runpytest()  # enabled from pyproject, no option
    result.assert_outcomes(passed=7)
    text = (suite.path / "reports" / "run.json").read_text()
    run = json.loads(text)
    assert (run["schema"], run["schema_version"]) == ("pytest-tokenbudget/run", 1)
    meta = run["meta"]
    assert meta["commit"] == head
    assert meta["branch"] == "feature/tokens"
    assert meta["plugin_version"] == "0.1.0"
    assert meta["partial"] is False
    assert meta["started"] <= meta["finished"]
    for section in ("totals", "models", "providers", "tests"):
        assert section in run
    for entry in [run["totals"], *run["models"].values(), *run["tests"].values()]:
        if entry.get("calls"):
            assert set(COUNTS) <= set(entry)
    assert SECRET not in text
    for forbidden in ("Authorization", "authorization", "x-api-key", "Bearer", "order #4417", "Thursday"):
        assert forbidden not in text  # no key, header, prompt or completion text
    assert list((suite.path / "reports").iterdir()) == [suite.path / "reports" / "run.json"]  # no temp file


def test_unparseable_response_is_reported_and_the_test_stays_green(
    pytester: pytest.Pytester, llm_server: LLMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLM_URL", llm_server.url)
    pytester.makepyfile(
        """
        import os
        import httpx2

        def test_proxy_error_page():
            with httpx2.Client(base_url=os.environ["LLM_URL"]) as client:
                response = client.post("/v1/chat/completions", json={}, headers={"x-reply": "garbage"})
            assert response.text.startswith("<html>")
        """
    )
    result = pytester.runpytest("--token-budget", "--token-budget-json=run.json")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        ["calls with incomplete usage (1):", "  unparsed: *::test_proxy_error_page *response is not JSON*"]
    )
    run = json.loads((pytester.path / "run.json").read_text())
    assert run["totals"]["unparsed_calls"] == 1
    (issue,) = run["issues"]
    assert issue["state"] == "unparsed"
    assert issue["test"].endswith("::test_proxy_error_page")


def test_calls_outside_any_test_are_kept(
    pytester: pytest.Pytester, llm_server: LLMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLM_URL", llm_server.url)
    pytester.makeconftest(
        """
        import os
        import httpx2
        import pytest

        def pytest_collection_finish(session):
            httpx2.post(os.environ["LLM_URL"] + "/v1/embeddings", json={"model": "m", "input": "collect"})

        @pytest.fixture(scope="session", autouse=True)
        def index_documents():
            httpx2.post(os.environ["LLM_URL"] + "/v1/embeddings", json={"model": "m", "input": "index"})
            yield
        """
    )
    pytester.makepyfile("def test_a():\n    pass\n\ndef test_b():\n    pass\n")
    result = pytester.runpytest("--token-budget", "--token-budget-json=run.json")
    result.assert_outcomes(passed=2)
    tests = json.loads((pytester.path / "run.json").read_text())["tests"]
    assert tests["<session fixture index_documents>"]["calls"] == 1
    assert tests["<session>"]["calls"] == 1
    assert tests["test_calls_outside_any_test_are_kept.py::test_a"]["calls"] == 0
    result.stdout.fnmatch_lines(["outside tests:", "*<session fixture index_documents>: 1 call*"])


DISABLED_PROBE = """
import sys

import httpx
import httpx2
import requests


def test_nothing_patched_nothing_heavy_imported():
    assert httpx2.Client.send.__module__.startswith("httpx2")
    assert httpx.Client.send.__module__.startswith("httpx")
    assert requests.Session.send.__module__ == "requests.sessions"
    loaded = [name for name in ("tiktoken", "genai_prices", "junit_xml", "pytest_tokenbudget.capture",
              "pytest_tokenbudget.pricing.prices", "pytest_tokenbudget.ledger") if name in sys.modules]
    assert loaded == []
"""


NOTHING_READ_PROBE = """
import sys


def test_settings_never_read():
    assert "pytest_tokenbudget.config" not in sys.modules
"""


@pytest.mark.slow
def test_off_by_default_patches_and_imports_nothing(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_probe=DISABLED_PROBE, test_settings=NOTHING_READ_PROBE)
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(passed=2)
    assert "token budget" not in result.stdout.str()


@pytest.mark.slow
def test_a_pyproject_without_a_tokenbudget_table_is_not_parsed_but_a_typo_in_one_is_an_error(
    pytester: pytest.Pytester,
) -> None:
    """Start-up when installed but off: nothing configures the plugin, so settings are not read."""
    pytester.makepyprojecttoml("[tool.pytest.ini_options]\naddopts = '-q'\n")
    pytester.makepyfile(test_settings=NOTHING_READ_PROBE)
    pytester.runpytest_subprocess().assert_outcomes(passed=1)
    pytester.makepyprojecttoml("[tool.tokenbudget]\nmax-tokenz = 5\n")
    result = pytester.runpytest_subprocess()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*pyproject.toml*unknown key 'max-tokenz'*did you mean 'max-tokens'*"])


@pytest.mark.slow
def test_enabled_false_in_pyproject_beats_nothing_but_the_option(pytester: pytest.Pytester) -> None:
    pytester.makepyprojecttoml("[tool.tokenbudget]\nenabled = false\n")
    pytester.makepyfile(test_probe=DISABLED_PROBE)
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(passed=1)
    result = pytester.runpytest_subprocess("--token-budget")
    result.assert_outcomes(failed=1)  # the option turns it on: send is wrapped now


@pytest.mark.slow
def test_in_process_pytester_sessions_in_a_row_are_all_counted(
    pytester: pytest.Pytester, llm_server: LLMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plugin author's pytester sessions: pytester drops the modules each inner run imported, so
    none of ours may hold on to a module object of an earlier run (``from .. import x`` did)."""
    monkeypatch.setenv("LLM_URL", llm_server.url)
    pytester.makepyfile(
        test_outer='''
        import os

        INNER = """
        import os, openai
        def test_a():
            with openai.OpenAI(base_url=os.environ["LLM_URL"] + "/v1", api_key="k", max_retries=0) as c:
                c.chat.completions.create(model="m", messages=[])
        """

        def test_three_sessions(pytester):
            pytester.makepyfile(test_inner=INNER)
            for _ in range(3):
                result = pytester.runpytest("--token-budget", "-p", "no:randomly", "-p", "no:asyncio")
                result.stdout.fnmatch_lines(["1 call in 1 test: 1,346 tokens*"])
                assert "while recording calls" not in result.stdout.str()
        '''
    )
    result = pytester.runpytest_subprocess("-p", "pytester")
    result.assert_outcomes(passed=1)


PHASES_CONFTEST = """
import os

import httpx2
import pytest


def embed(text):
    httpx2.post(os.environ["LLM_URL"] + "/v1/embeddings", json={"model": "m", "input": text})


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item):
    if item.name == "test_refused_before_the_plugin_sees_its_setup":
        raise RuntimeError("refused")  # no plain pytest_runtest_setup runs: the plugin's neither
    return (yield)


def pytest_runtest_teardown(item):
    if item.name == "test_refused_before_the_plugin_sees_its_setup":
        embed("teardown hook")
"""

PHASES_SUITE = """
import pytest
from conftest import embed


@pytest.fixture(scope="module")
def shared():
    embed("module setup")
    yield
    embed("module teardown")


@pytest.fixture
def phases():
    embed("setup")
    yield
    embed("teardown")


@pytest.fixture
def broken_teardown():
    yield
    raise RuntimeError("teardown")


def test_each_phase(shared, phases):
    embed("call")


@pytest.mark.parametrize("i", [1, 2])
def test_quiet(i):
    pass


def test_fails():
    assert False


@pytest.mark.skip(reason="not today")
def test_skipped():
    embed("never")


def test_teardown_error(broken_teardown):
    pass


def test_refused_before_the_plugin_sees_its_setup():
    pass


def test_last(phases):
    pass
"""


@pytest.mark.parametrize("marked", [False, True], ids=["no-budget", "a-marked-test"])
def test_every_test_gets_its_entry_and_each_phase_its_calls(
    pytester: pytest.Pytester, llm_server: LLMServer, monkeypatch: pytest.MonkeyPatch, marked: bool
) -> None:
    """The per-test hooks' fast paths (no call, no budget to judge, the node id read once per test)
    leave every entry as it was: outcome, path, line and kind for tests that call nothing, and
    calls charged to their phase or fixture, with or without a budget to judge in the session."""
    monkeypatch.setenv("LLM_URL", llm_server.url)
    pytester.makeconftest(PHASES_CONFTEST)
    suite = PHASES_SUITE
    if marked:
        suite += "\n\n@pytest.mark.token_budget(max_calls=1)\ndef test_marked():\n    embed('marked')\n"
    pytester.makepyfile(test_phases=suite)
    result = pytester.runpytest("--token-budget", "--token-budget-json=run.json", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=5 + marked, failed=1, skipped=1, errors=2)
    tests = json.loads((pytester.path / "run.json").read_text())["tests"]
    lines, first = {}, None  # a test's line: its first decorator's (the code object's first line)
    for number, text in enumerate((pytester.path / "test_phases.py").read_text().splitlines(), 1):
        first = first or (number if text.startswith(("@", "def ")) else None)
        if text.startswith("def "):
            lines[text[4:].split("(")[0]] = first
        if not text.startswith("@"):
            first = None

    def head(name: str, outcome: str) -> dict[str, Any]:
        return {"kind": "test", "path": "test_phases.py", "line": lines[name], "outcome": outcome}

    def calls(name: str) -> dict[str, int]:
        return {phase: tally["calls"] for phase, tally in tests[name].get("phases", {}).items()}

    quiet = {"calls": 0}
    assert tests["test_phases.py::test_quiet[1]"] == {**head("test_quiet", "passed"), **quiet}
    assert tests["test_phases.py::test_quiet[2]"] == {**head("test_quiet", "passed"), **quiet}
    assert tests["test_phases.py::test_fails"] == {**head("test_fails", "failed"), **quiet}
    assert tests["test_phases.py::test_skipped"] == {**head("test_skipped", "skipped"), **quiet}
    assert tests["test_phases.py::test_teardown_error"] == {**head("test_teardown_error", "error"), **quiet}
    refused = "test_phases.py::test_refused_before_the_plugin_sees_its_setup"  # a setup error
    assert {k: tests[refused][k] for k in ("kind", "path", "line", "outcome")} == head(
        "test_refused_before_the_plugin_sees_its_setup", "failed"
    )
    assert calls(refused) == {"teardown": 1}
    assert calls("test_phases.py::test_each_phase") == {"setup": 1, "call": 1, "teardown": 1}
    assert tests["test_phases.py::test_each_phase"]["outcome"] == "passed"
    assert calls("test_phases.py::test_last") == {"setup": 1, "teardown": 1}
    assert tests["<module fixture shared>"]["kind"] == "fixture"
    assert calls("<module fixture shared>") == {"setup": 1, "teardown": 1}
    assert sum(t.get("calls", 0) for t in tests.values()) == 8 + marked
    if marked:
        assert tests["test_phases.py::test_marked"]["markers"] == ["token_budget"]
        assert calls("test_phases.py::test_marked") == {"call": 1}
