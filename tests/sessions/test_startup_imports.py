"""Start-up cost: with ``--token-budget`` on, a suite without LLM calls imports only what configures
the plugin, wraps the HTTP stacks and writes the reports. What reads an LLM response (provider
routing and parsers, stream framing, request inspection, prices, context windows) is imported at
the first captured request.

Each session runs in a fresh interpreter (``runpytest_subprocess``): this process has imported
everything long ago. A conftest writes the plugin's modules loaded at two moments: after the
plugin's own ``pytest_sessionfinish`` (artifact and reports written) and at ``pytest_unconfigure``.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from llm_server import LLMServer

from pytest_tokenbudget.plugin.session import no_prices_used as _no_prices_used
from pytest_tokenbudget.pricing.prices import Pricer

DEFERRED = (
    "pytest_tokenbudget.providers",  # and every module below it
    "pytest_tokenbudget.providers.framing",
    "pytest_tokenbudget.inspection.inspector",
    "pytest_tokenbudget.pricing.prices",
    "pytest_tokenbudget.pricing.context_windows",
    "pytest_tokenbudget.tokens.estimates",
    "pytest_tokenbudget.tokens.tokenizer",
)

OFF_UNLESS_ASKED = (
    "pytest_tokenbudget.plugin.teststatus",  # -v only
    "pytest_tokenbudget.report.trend",  # only with a history folder
    "pytest_tokenbudget.history",
    "pytest_tokenbudget.runs.suggest",  # CLI only
    "pytest_tokenbudget.report.reprice",
)

LOADED_PROBE = """
import json
import sys


def _ours(name):
    mods = sorted(m for m in sys.modules if m.startswith("pytest_tokenbudget"))
    with open(name, "w") as f:
        json.dump(mods, f)


def pytest_sessionfinish(session):  # after the plugin's (tryfirst): artifact and reports written
    _ours("at_sessionfinish.json")


def pytest_unconfigure(config):  # after the terminal summary too
    _ours("at_unconfigure.json")
"""

NO_LLM_CALLS = """
import httpx  # wrapped, never used
import pytest


def test_plain():
    assert 1 + 1 == 2


@pytest.mark.token_budget(100)
def test_marked_and_fixture(token_usage):
    assert token_usage.calls == 0
"""

OTHER_HTTP_TRAFFIC = """
import httpx


def test_health():
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json={"ok": True}))
    with httpx.Client(transport=transport) as client:
        assert client.post("https://app.example/health").json() == {"ok": True}
"""

ONE_LLM_CALL = """
import os

import openai


def test_chat():
    with openai.OpenAI(base_url=os.environ["LLM_URL"] + "/v1", api_key="k", max_retries=0) as client:
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
"""


def _deferred(loaded: list[str]) -> list[str]:
    return [m for m in loaded if any(m == d or m.startswith(d + ".") for d in DEFERRED)]


def _session(
    pytester: pytest.Pytester, *options: str, **tests: str
) -> tuple[pytest.RunResult, dict[str, list[str]]]:
    pytester.makeconftest(LOADED_PROBE)
    pytester.makepyfile(**tests)
    result = pytester.runpytest_subprocess(
        "--token-budget",
        "--token-budget-json=run.json",
        "--token-budget-markdown=report.md",
        "--token-budget-junit=report.xml",
        "-p",
        "no:cacheprovider",
        *options,
    )
    loaded = {
        moment: json.loads((pytester.path / f"at_{moment}.json").read_text())
        for moment in ("sessionfinish", "unconfigure")
    }
    return result, loaded


@pytest.mark.slow
def test_a_suite_without_llm_calls_never_imports_what_reads_a_response(pytester: pytest.Pytester) -> None:
    result, loaded = _session(pytester, test_no_llm=NO_LLM_CALLS)
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*token budget*", "0 calls in 0 tests*"])
    assert "pytest_tokenbudget.capture.recorder" in loaded["sessionfinish"]  # capture was on
    assert "pytest_tokenbudget.capture.httpx_clients" in loaded["sessionfinish"]  # httpx was wrapped
    assert _deferred(loaded["sessionfinish"]) == []
    assert _deferred(loaded["unconfigure"]) == []  # nor does the terminal summary
    assert [m for m in OFF_UNLESS_ASKED if m in loaded["unconfigure"]] == []  # not asked for: not imported
    run = json.loads((pytester.path / "run.json").read_text())
    assert run["meta"]["prices"]["calls_by_source"] == {}
    assert run["meta"]["prices"]["source"] == "genai-prices"
    assert (pytester.path / "report.md").is_file()
    assert (pytester.path / "report.xml").is_file()
    assert "pytest_tokenbudget.report.html" not in loaded["unconfigure"]  # not asked for: never imported


def test_the_html_report_of_a_suite_without_llm_calls_imports_no_reader(pytester: pytest.Pytester) -> None:
    result, loaded = _session(pytester, "--token-budget-html=report.html", test_no_llm=NO_LLM_CALLS)
    result.assert_outcomes(passed=2)
    assert "pytest_tokenbudget.report.html" in loaded["sessionfinish"]
    assert _deferred(loaded["unconfigure"]) == []
    assert "test_no_llm.py::test_plain" in (pytester.path / "report.html").read_text()


@pytest.mark.slow
def test_other_http_requests_import_the_routing_only(pytester: pytest.Pytester) -> None:
    """A request to anything but an LLM API is routed (providers), nothing more: no call to price,
    inspect or estimate."""
    result, loaded = _session(pytester, test_app=OTHER_HTTP_TRAFFIC)
    result.assert_outcomes(passed=1)
    assert "pytest_tokenbudget.providers" in loaded["sessionfinish"]
    routing = ("pytest_tokenbudget.providers", "pytest_tokenbudget.providers.framing")  # bound together
    assert [m for m in _deferred(loaded["sessionfinish"]) if not m.startswith(routing)] == []


@pytest.mark.slow
def test_the_first_llm_call_imports_the_readers_and_is_counted(
    pytester: pytest.Pytester, llm_server: LLMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLM_URL", llm_server.url)
    result, loaded = _session(pytester, test_llm=ONE_LLM_CALL)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["1 call in 1 test: 1,346 tokens*"])
    assert "while recording calls" not in result.stdout.str()
    for module in (
        "pytest_tokenbudget.providers.openai",
        "pytest_tokenbudget.providers.framing",
        "pytest_tokenbudget.inspection.inspector",
        "pytest_tokenbudget.pricing.prices",
        "pytest_tokenbudget.pricing.context_windows",
    ):
        assert module in loaded["sessionfinish"]
    run = json.loads((pytester.path / "run.json").read_text())
    test = run["tests"]["test_llm.py::test_chat"]
    assert (test["calls"], test["total_tokens"]) == (1, 1346)
    assert run["meta"]["prices"]["calls_by_source"] == {"genai-prices": 1}


def test_the_prices_of_a_run_without_calls_are_an_unused_pricers() -> None:
    """``meta.prices`` of a session that priced nothing is written without importing pricing.py."""
    expected: dict[str, Any] = Pricer(when=datetime.now(tz=UTC)).provenance()
    assert _no_prices_used() == expected
    assert list(_no_prices_used()) == list(expected)  # same key order in the artifact


OTEL_PROBE = """
import json
import sys


def pytest_unconfigure(config):  # after the export and the terminal summary
    mods = sorted(m for m in sys.modules if m.startswith("opentelemetry") or "otel" in m.split(".")[-1])
    with open("otel_modules.json", "w") as f:
        json.dump(mods, f)
"""


@pytest.mark.parametrize("otel", [False, True], ids=["off", "on"])
def test_opentelemetry_is_imported_only_when_its_export_or_ingest_is_on(
    pytester: pytest.Pytester, llm_server: LLMServer, monkeypatch: pytest.MonkeyPatch, otel: bool
) -> None:
    """Off, a session with an LLM call (everything else on: reports, prices, inspection) imports
    nothing of OpenTelemetry, nor the plugin's modules for it; on, both (the probe sees them)."""
    pytest.importorskip("opentelemetry.sdk")
    monkeypatch.setenv("LLM_URL", llm_server.url)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")  # discard: nothing listens
    # Only this plugin: langsmith's (of the test extra) imports opentelemetry.sdk itself when installed.
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    pytester.makeconftest(OTEL_PROBE)
    pytester.makepyfile(test_llm=ONE_LLM_CALL)
    flags = ["--token-budget-otel", "--token-budget-ingest-otel"] if otel else []
    result = pytester.runpytest_subprocess(
        "-p", "pytest_tokenbudget.plugin", "--token-budget", "--token-budget-json=run.json", *flags
    )
    result.assert_outcomes(passed=1)
    loaded = json.loads((pytester.path / "otel_modules.json").read_text())
    ours = {
        "pytest_tokenbudget.plugin.otel",
        "pytest_tokenbudget.report.otel",
        "pytest_tokenbudget.capture.otel_spans",
    }
    if otel:
        assert ours <= set(loaded)
        assert "opentelemetry.sdk.trace" in loaded
    else:
        assert loaded == []
