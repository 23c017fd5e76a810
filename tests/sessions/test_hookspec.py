"""The extension hooks (hookspecs.py) through the worked example, examples/provider_plugin.

Real pytest sessions (pytester) load ``tokenbudget_acme`` with ``-p`` the way its ``pytest11``
entry point would, and their tests make real HTTP calls with httpx2 (and requests) to a loopback
server speaking the Acme LLM format. The numbers in the JSON artifact and the call log are exact:
the route hook names the provider, the example's parser reads the meter (whole and NDJSON-streamed),
the price hook prices it, budgets apply, a malformed body is an ``unparsed`` call, and without the
plugin the same request is not an LLM call at all.
"""

from __future__ import annotations

import ast
import json
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from pytester_session import read_artifact, read_calls, run_session

import pytest_tokenbudget.hookspecs
import pytest_tokenbudget.model
import pytest_tokenbudget.providers  # imported before pytester's in-process sessions snapshot sys.modules

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "provider_plugin"

WHOLE = {"in": 1200, "out": 300, "cached": 1000}
STREAMED = {"in": 640, "out": 96, "cached": 0}
RATE = {"input": 0.50, "cached": 0.05, "output": 1.50}  # USD per million tokens, as the example says


def _cost(meter: dict[str, int]) -> float:
    plain = meter["in"] - meter["cached"]
    return (plain * RATE["input"] + meter["cached"] * RATE["cached"] + meter["out"] * RATE["output"]) / 1e6


# -- a loopback Acme LLM -------------------------------------------------------------------------


class _Acme(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)) or b"{}")
        if self.path != "/v2/generate":
            self._send(404, b'{"error": "not found"}', "application/json")
        elif request.get("reply") == "malformed":
            self._send(200, b'{"engine": "acme-3", "text": "Your order', "application/json")
        elif request.get("stream"):
            lines = [{"text": word} for word in ("Your ", "order ", "ships ", "Thursday.")]
            lines.append({"done": True, "engine": "acme-3", "meter": STREAMED})
            body = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
            self._send(200, body, "application/x-ndjson", pieces=len(lines))
        else:
            reply = {"engine": "acme-3", "text": "Your order ships Thursday.", "meter": WHOLE}
            self._send(200, json.dumps(reply).encode(), "application/json")

    def _send(self, status: int, body: bytes, content_type: str, pieces: int = 1) -> None:
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        step = max(1, len(body) // pieces)
        for start in range(0, len(body), step):  # several writes: the client sees several chunks
            self.wfile.write(body[start : start + step])
            self.wfile.flush()


@pytest.fixture(scope="module")
def acme_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Acme)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


SUITE = """
import json
import os

import httpx2
import pytest
import requests

URL = os.environ["ACME_URL"]
ASK = {"prompt": "Where is order #4417?"}


def test_generate(token_usage):
    with httpx2.Client(base_url=URL) as client:
        reply = client.post("/v2/generate", json=ASK).json()
    assert reply["text"] == "Your order ships Thursday."
    assert (token_usage.calls, token_usage.input_tokens, token_usage.output_tokens) == (1, 1200, 300)


def test_stream():
    with httpx2.Client(base_url=URL) as client:
        with client.stream("POST", "/v2/generate", json={**ASK, "stream": True}) as response:
            lines = [json.loads(line) for line in response.iter_lines() if line]
    assert "".join(line.get("text", "") for line in lines) == "Your order ships Thursday."
    assert lines[-1]["done"] is True


def test_requests():
    reply = requests.post(URL + "/v2/generate", json=ASK, timeout=10).json()
    assert reply["engine"] == "acme-3"
"""


@pytest.fixture
def acme_env(pytester: pytest.Pytester, acme_url: str, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    monkeypatch.setenv("ACME_URL", acme_url)
    monkeypatch.setenv("ACME_HOST", "127.0.0.1")  # the example claims this host's /v2/generate
    monkeypatch.delenv("ACME_TOKEN_LOG", raising=False)
    pytester.syspathinsert(EXAMPLE)  # importable as an installed plugin would be
    return pytester


def _run(
    pytester: pytest.Pytester, *args: str
) -> tuple[pytest.RunResult, dict[str, Any], list[dict[str, Any]]]:
    result = run_session(pytester, *args, calls="calls.jsonl")
    return result, read_artifact(pytester), read_calls(pytester)


def _counts(entry: dict[str, Any]) -> tuple[int, int, int, int]:
    return (entry["calls"], entry["input_tokens"], entry["cached_input_tokens"], entry["output_tokens"])


# -- the example through real sessions -----------------------------------------------------------


def test_acme_calls_are_routed_parsed_and_priced(
    acme_env: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    acme_env.makepyfile(test_app=SUITE)
    log = acme_env.path / "acme.log"
    monkeypatch.setenv("ACME_TOKEN_LOG", str(log))
    result, run, calls = _run(acme_env, "-p", "tokenbudget_acme")
    result.assert_outcomes(passed=3)
    assert result.ret == 0

    assert [(c["test"].rsplit("::", 1)[1], c["provider"], c["api"], c["model"]) for c in calls] == [
        ("test_generate", "acme", "acme.generate", "acme-3"),
        ("test_requests", "acme", "acme.generate", "acme-3"),
        ("test_stream", "acme", "acme.generate", "acme-3"),
    ]
    by_test = {c["test"].rsplit("::", 1)[1]: c for c in calls}
    for name, meter, streamed in (
        ("test_generate", WHOLE, False),
        ("test_requests", WHOLE, False),
        ("test_stream", STREAMED, True),
    ):
        call = by_test[name]
        assert (call["input_tokens"], call["cached_input_tokens"], call["output_tokens"]) == (
            meter["in"],
            meter["cached"],
            meter["out"],
        )
        assert (call["state"], call["streamed"], call["estimated"]) == ("complete", streamed, False)
        assert call["cost_usd"] == pytest.approx(_cost(meter))  # the example's price hook

    expected_cost = 2 * _cost(WHOLE) + _cost(STREAMED)
    acme = run["providers"]["acme"]
    assert _counts(acme) == (3, 2 * 1200 + 640, 2 * 1000, 2 * 300 + 96)
    assert acme["cost_usd"] == pytest.approx(expected_cost, abs=1e-6)
    assert acme["cost_known"] is True
    assert list(run["providers"]) == ["acme"]
    assert _counts(run["models"]["acme/acme-3"]) == _counts(acme)
    stream_test = run["tests"]["test_app.py::test_stream"]
    assert _counts(stream_test) == (1, 640, 0, 96)  # the streamed call, counted once
    assert stream_test["cost_usd"] == pytest.approx(_cost(STREAMED), abs=1e-6)
    assert run["totals"]["unparsed_calls"] == 0

    # the run_finished hook wrote its line, once, on the controller
    assert log.read_text(encoding="utf-8") == (
        f"acme calls=3 tokens={2 * 1500 + 736} cost_usd={acme['cost_usd']:.6f}\n"
    )


def test_a_budget_on_acme_tokens_trips(acme_env: pytest.Pytester) -> None:
    acme_env.makepyfile(
        test_budget="""
        import os
        import httpx2
        import pytest

        @pytest.mark.token_budget(max_tokens=1000)
        def test_over():
            httpx2.post(os.environ["ACME_URL"] + "/v2/generate", json={"prompt": "hi"})  # 1500 tokens

        @pytest.mark.token_budget(max_tokens=1000)
        def test_streamed_under():
            with httpx2.stream("POST", os.environ["ACME_URL"] + "/v2/generate", json={"stream": True}) as r:
                r.read()  # 736 tokens
        """
    )
    result, run, calls = _run(acme_env, "-p", "tokenbudget_acme")
    assert result.ret == 1
    result.assert_outcomes(passed=1, failed=1)  # a marker budget fails its test
    result.stdout.fnmatch_lines(["*test_over*token budget exceeded: 1,500 tokens > 1,000*"])
    statuses = {v["nodeid"].rsplit("::", 1)[1]: v["status"] for v in run["verdicts"]}
    assert statuses == {"test_over": "exceeded", "test_streamed_under": "ok"}
    (over,) = [v for v in run["verdicts"] if v["status"] == "exceeded"]
    assert (over["metric"], over["limit"], over["actual"]) == ("total_tokens", 1000, 1500)
    assert sorted(c["total_tokens"] for c in calls) == [736, 1500]


def test_malformed_body_is_an_unparsed_call_and_the_test_stays_green(acme_env: pytest.Pytester) -> None:
    acme_env.makepyfile(
        test_bad="""
        import os
        import httpx2

        def test_truncated_reply():
            response = httpx2.post(os.environ["ACME_URL"] + "/v2/generate", json={"reply": "malformed"})
            assert response.status_code == 200
        """
    )
    result, run, calls = _run(acme_env, "-p", "tokenbudget_acme")
    result.assert_outcomes(passed=1)
    assert result.ret == 0
    (call,) = calls
    assert (call["provider"], call["state"], call["total_tokens"]) == ("acme", "unparsed", 0)
    assert run["totals"]["unparsed_calls"] == 1
    (issue,) = run["issues"]
    assert (issue["state"], issue["test"], issue["provider"]) == (
        "unparsed",
        "test_bad.py::test_truncated_reply",
        "acme",
    )
    assert issue["detail"] == "not an Acme response (JSONDecodeError)"  # the example's ParseError
    result.stdout.fnmatch_lines(["*unparsed: test_bad.py::test_truncated_reply*not an Acme response*"])


def test_without_the_plugin_the_request_is_not_an_llm_call(acme_env: pytest.Pytester) -> None:
    acme_env.makepyfile(test_app=SUITE)
    result, run, calls = _run(acme_env)  # no -p tokenbudget_acme
    result.assert_outcomes(passed=2, failed=1)  # test_generate's token_usage sees no call
    result.stdout.fnmatch_lines(["*assert (0, 0, 0) == (1, 1200, 300)*"])
    assert calls == []
    assert run["providers"] == {}
    assert run["totals"]["calls"] == 0


def test_acme_host_decides_what_is_claimed(
    acme_env: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default host is llm.acme.internal: the loopback server's 127.0.0.1 is then not Acme."""
    monkeypatch.delenv("ACME_HOST")
    acme_env.makepyfile(test_app=SUITE)
    result, _, calls = _run(acme_env, "-p", "tokenbudget_acme", "-k", "not test_generate")
    result.assert_outcomes(passed=2, deselected=1)
    assert calls == []


# -- the example and the hook specifications in-process ------------------------------------------


@pytest.fixture
def acme(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.syspath_prepend(str(EXAMPLE))
    monkeypatch.delitem(sys.modules, "tokenbudget_acme", raising=False)
    import tokenbudget_acme

    yield tokenbudget_acme
    sys.modules.pop("tokenbudget_acme", None)


def test_example_route_is_claimed_by_host_path_and_method(acme: Any) -> None:
    from pytest_tokenbudget.providers import Route

    assert acme._claimed["host"] == "llm.acme.internal"  # the default, before pytest_configure
    found = acme.pytest_tokenbudget_route(method="POST", host="llm.acme.internal", path="/v2/generate")
    assert isinstance(found, Route)
    assert (found.provider, found.api, found.host) == ("acme", "acme.generate", "llm.acme.internal")
    for method, host, path in (
        ("GET", "llm.acme.internal", "/v2/generate"),
        ("POST", "llm.acme.internal", "/v2/embed"),
        ("POST", "api.openai.com", "/v2/generate"),
    ):
        assert acme.pytest_tokenbudget_route(method=method, host=host, path=path) is None


def test_example_parser_and_stream(acme: Any) -> None:
    from pytest_tokenbudget.model import Usage
    from pytest_tokenbudget.providers import ParseError

    parser = acme.AcmeParser()
    whole = json.dumps({"engine": "acme-3", "text": "x", "meter": WHOLE}).encode()
    expected = Usage(input_tokens=1200, cached_input_tokens=1000, output_tokens=300)
    assert parser.parse(whole) == acme.Extracted("acme-3", expected)
    lines = [b'{"text": "a"}', b'{"done": true, "engine": "acme-3", "meter": {"in": 5, "out": 2}}']
    stream = parser.stream()
    assert stream.framing == "ndjson"
    stream.on_event(b"", lines[0])
    assert not stream.done
    stream.on_event(b"", lines[1])
    assert stream.done
    assert stream.result().usage == Usage(input_tokens=5, output_tokens=2)
    assert parser.parse(b"\n".join(lines)).usage == Usage(input_tokens=5, output_tokens=2)  # read whole
    assert parser.parse(b'{"engine": "acme-3", "text": "x"}').usage is None  # no meter: no usage
    for bad in (b"<html>", b"[]", b'{"meter": {"in": 1}}', b'{"meter": []}'):
        with pytest.raises(ParseError):
            parser.parse(bad)


def test_example_implements_exactly_the_hookspecs(acme: Any) -> None:
    """Every hook the example defines is a real spec with the same argument names."""
    import inspect

    from pytest_tokenbudget import hookspecs

    specs = {name: fn for name, fn in vars(hookspecs).items() if name.startswith("pytest_tokenbudget_")}
    assert set(specs) == {
        "pytest_tokenbudget_route",
        "pytest_tokenbudget_price",
        "pytest_tokenbudget_run_finished",
    }
    for name, spec in specs.items():
        impl = getattr(acme, name)
        assert list(inspect.signature(impl).parameters) == list(inspect.signature(spec).parameters)


def _docstring_example() -> str:
    doc = pytest_tokenbudget.hookspecs.__doc__ or ""
    _, _, tail = doc.partition("::\n")
    lines = [line[4:] if line.startswith("    ") else line for line in tail.splitlines()]
    return "\n".join(lines).strip() + "\n"


def test_hookspec_docstring_example_matches_reality(tmp_path: Path) -> None:
    """The sketch in hookspecs.py imports what exists, builds a valid Route and parses the format."""
    source = _docstring_example()
    tree = ast.parse(source)  # it is valid Python
    imports = [node for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    assert imports
    for node in imports:
        module = __import__(node.module or "", fromlist=["_"])
        for alias in node.names:
            assert hasattr(module, alias.name), f"{node.module} has no {alias.name}"
    namespace: dict[str, Any] = {"json": json}  # the sketch uses json without importing it
    exec(compile(source, str(tmp_path / "conftest.py"), "exec"), namespace)

    route = namespace["pytest_tokenbudget_route"]("POST", "llm.acme.internal", "/v2/generate")
    assert isinstance(route, pytest_tokenbudget.providers.Route)
    assert (route.provider, route.api, route.host) == ("acme", "acme.generate", "llm.acme.internal")
    assert namespace["pytest_tokenbudget_route"]("POST", "api.openai.com", "/v2/generate") is None
    extracted = route.parser.parse(b'{"engine": "acme-3", "meter": {"in": 1000000, "out": 1000000}}')
    assert extracted == pytest_tokenbudget.providers.Extracted(
        "acme-3", pytest_tokenbudget.model.Usage(input_tokens=1_000_000, output_tokens=1_000_000)
    )
    call = pytest_tokenbudget.model.Call(
        owner="t", phase="call", provider="acme", api="acme.generate", host="h", model="acme-3",
        usage=extracted.usage or pytest_tokenbudget.model.Usage(),
    )  # fmt: skip
    assert namespace["pytest_tokenbudget_price"](call) == pytest.approx(1.0)
    call.provider = "openai"
    assert namespace["pytest_tokenbudget_price"](call) is None


# -- hook implementations with bugs --------------------------------------------------------------

BUGGY_CONFTEST = """
import os

from pytest_tokenbudget.providers import Route

BUG = os.environ["HOOK_BUG"]


class Broken:
    api = "acme.generate"

    def parse(self, body):
        raise RuntimeError("parser bug")

    def stream(self):
        raise RuntimeError("parser bug")


def pytest_tokenbudget_route(method, host, path):
    if BUG == "route":
        raise RuntimeError("route bug")
    if path == "/v2/generate":
        return Route("acme", "acme.generate", host, Broken() if BUG == "parse" else _real())
    return None


def _real():
    import tokenbudget_acme
    return tokenbudget_acme.AcmeParser()


def pytest_tokenbudget_price(call):
    if BUG == "price":
        raise RuntimeError("price bug")
    return None
"""

BUGGY_SUITE = """
import os
import httpx2

def test_call():
    response = httpx2.post(os.environ["ACME_URL"] + "/v2/generate", json={})
    assert response.json()["engine"] == "acme-3"
"""


def _buggy(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, bug: str) -> tuple[Any, Any, Any]:
    monkeypatch.setenv("HOOK_BUG", bug)
    pytester.makeconftest(BUGGY_CONFTEST)
    pytester.makepyfile(test_call=BUGGY_SUITE)
    return _run(pytester)


def test_a_parser_bug_is_an_unparsed_call_and_the_test_stays_green(
    acme_env: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    result, run, calls = _buggy(acme_env, monkeypatch, "parse")
    result.assert_outcomes(passed=1)
    assert [(c["provider"], c["state"]) for c in calls] == [("acme", "unparsed")]
    (issue,) = run["issues"]
    assert "RuntimeError: parser bug" in issue["detail"]


def test_a_route_hook_bug_stays_out_of_the_test(
    acme_env: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    result, _, calls = _buggy(acme_env, monkeypatch, "route")
    result.assert_outcomes(passed=1)
    assert calls == []
    result.stdout.fnmatch_lines(
        ["*1 error while recording calls; first: error in a pytest_tokenbudget_route hook*"]
    )


def test_a_price_hook_bug_loses_no_call(acme_env: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    result, run, calls = _buggy(acme_env, monkeypatch, "price")
    result.assert_outcomes(passed=1)
    assert [(c["provider"], c["total_tokens"]) for c in calls] == [("acme", 1500)]
    assert run["totals"]["calls"] == 1
    result.stdout.fnmatch_lines(
        ["*1 error while recording calls; first: error in a pytest_tokenbudget_price hook*"]
    )
