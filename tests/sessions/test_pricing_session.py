"""Prices in real pytest sessions: live and replayed costs in the artifact, a bad price table, late
import of genai-prices, a model listed without a price."""

from __future__ import annotations

import json
from importlib.metadata import version

import pytest

genai_prices = pytest.importorskip("genai_prices")

SESSION = """
import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import httpx
import pytest

def body(model, prompt, completion, cached=0):
    return {"id": "c", "object": "chat.completion", "created": 1, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                      "total_tokens": prompt + completion,
                      "prompt_tokens_details": {"cached_tokens": cached}}}

class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass
    def do_POST(self):
        self.rfile.read(int(self.headers["content-length"]))
        data = json.dumps(body("gpt-4o-mini", 10_000, 1_000, cached=4_000)).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

@pytest.fixture
def server():
    httpd = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()
    httpd.server_close()

def mocked(model, prompt, completion):
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json=body(model, prompt, completion)))
    with httpx.Client(transport=transport) as client:
        client.post("https://api.openai.com/v1/chat/completions", json={"model": model})

def test_live(server):
    with httpx.Client() as client:
        client.post(server + "/v1/chat/completions", json={"model": "gpt-4o-mini"})

def test_mocked():
    mocked("gpt-4o", 20_000, 2_000)

def test_fine_tune():
    mocked("ft:gpt-4o-mini:acme::x1", 1_000_000, 0)

def test_unknown():
    mocked("ft:other:z", 3_000, 300)
"""


def test_session_artifact_has_costs_live_and_replayed_and_prices_meta(pytester: pytest.Pytester) -> None:
    pytester.makepyprojecttoml(
        """
        [tool.tokenbudget]
        [tool.tokenbudget.prices]
        "ft:gpt-4o-mini:acme::*" = { input = 0.3, output = 1.2 }
        """
    )
    pytester.makepyfile(test_prices=SESSION)
    result = pytester.runpytest("--token-budget", "--token-budget-json=run.json", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=4)
    run = json.loads((pytester.path / "run.json").read_text())
    tests = run["tests"]
    live = 6_000 * 0.15e-6 + 4_000 * 0.075e-6 + 1_000 * 0.6e-6
    assert tests["test_prices.py::test_live"]["cost_usd"] == pytest.approx(live)
    assert tests["test_prices.py::test_mocked"]["cost_usd"] == pytest.approx(0.07)
    assert tests["test_prices.py::test_fine_tune"]["cost_usd"] == pytest.approx(0.3)
    unknown = tests["test_prices.py::test_unknown"]
    assert (unknown["cost_known"], unknown["unpriced_calls"], unknown["total_tokens"]) == (False, 1, 3_300)
    total = run["totals"]
    assert total["live_cost_usd"] == pytest.approx(live)
    assert total["replayed_cost_usd"] == pytest.approx(0.37)
    assert total["cost_known"] is False
    prices = run["meta"]["prices"]
    assert prices["version"] == version("genai-prices")
    assert prices["calls_by_source"] == {"genai-prices": 2, "pyproject": 1}
    assert prices["unknown"] == [{"provider": "openai", "model": "ft:other:z", "calls": 1}]
    assert prices["overrides"] == 1


def test_a_bad_price_table_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyprojecttoml(
        """
        [tool.tokenbudget.prices]
        "gpt-x" = { input = "cheap", output = 1 }
        """
    )
    pytester.makepyfile(test_nothing="def test_nothing():\n    pass\n")
    result = pytester.runpytest("--token-budget", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*pyproject.toml: ?tool.tokenbudget? prices.gpt-x.input: expected USD per million tokens*'cheap'*"]
    )
    assert "Traceback" not in result.stderr.str()


@pytest.mark.slow
def test_genai_prices_is_not_imported_until_a_call_needs_a_price(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_lazy="""
        import sys

        def test_no_calls_no_prices():
            assert "pytest_tokenbudget.plugin" in sys.modules
            assert "genai_prices" not in sys.modules
        """
    )
    result = pytester.runpytest_subprocess("--token-budget", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


UNPRICED_SESSION = """
import os

import openai

def test_coder():
    with openai.OpenAI(base_url=os.environ["PROVIDER_URL"] + "/v1", api_key="k", max_retries=0) as client:
        ask = [{"role": "user", "content": "hi"}]
        client.chat.completions.create(model="qwen-3-coder-480b", messages=ask)
"""


@pytest.mark.parametrize("override", [False, True])
def test_a_model_genai_prices_lists_without_a_price_is_unknown_in_a_session(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, override: bool
) -> None:
    """The real openai SDK against a loopback server, the model aliased to genai-prices' empty
    ``cerebras/qwen-3-coder-480b`` entry: cost unknown and listed, not $0; an override of 0 is $0."""
    pytest.importorskip("openai")
    from provider_server import ProviderServer

    server = ProviderServer().start()
    try:
        monkeypatch.setenv("PROVIDER_URL", server.url)
        monkeypatch.setenv("COLUMNS", "200")
        table = '"qwen-3-coder-480b" = { input = 0, output = 0 }' if override else ""
        pytester.makepyprojecttoml(
            f"""
            [tool.tokenbudget.aliases]
            "qwen-3-coder-480b" = "cerebras/qwen-3-coder-480b"
            [tool.tokenbudget.prices]
            {table}
            """
        )
        pytester.makepyfile(test_unpriced=UNPRICED_SESSION)
        result = pytester.runpytest(
            "--token-budget", "--token-budget-json=run.json", "-p", "no:cacheprovider"
        )
    finally:
        server.stop()
    result.assert_outcomes(passed=1)
    run = json.loads((pytester.path / "run.json").read_text())
    totals, unknown = run["totals"], run["meta"]["prices"]["unknown"]
    assert totals["total_tokens"] == 18  # CHAT_USAGE: 11 + 7
    if override:
        assert (totals["cost_usd"], totals["cost_known"], totals["unpriced_calls"]) == (0.0, True, 0)
        assert unknown == []
        result.stdout.fnmatch_lines(["cost: $0 (live $0, replayed/mocked $0)"])
        return
    assert (totals["cost_known"], totals["unpriced_calls"]) == (False, 1)
    assert unknown == [{"provider": "openai-compatible", "model": "qwen-3-coder-480b", "calls": 1}]
    result.stdout.fnmatch_lines(
        [
            "cost: unknown; 1 call without a price",
            "no price for: openai-compatible/qwen-3-coder-480b (1 call)",
        ]
    )
