"""Plain ``urllib.request`` calls: counted as the httpx path counts them, and passed through unchanged.

The sessions (pytester, in process) run the same requests through httpx and through urllib against
the loopback server of tests/helpers/llm_server.py and compare the call log line by line; the rest checks
that the caller of ``urlopen`` sees what it would see without the plugin.
"""

from __future__ import annotations

import gzip
import http.client
import json
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
from llm_server import LLMServer

pytest.importorskip("vcr")  # loaded here, it outlives the in-process session (PyYAML's C emitter
# is not safe to import a second time in one process)

from pytest_tokenbudget.capture import Capture
from pytest_tokenbudget.ledger import Ledger, Owner
from pytest_tokenbudget.model import Call, CallState

SUITE = """
import gzip
import http.client
import json
import os
import urllib.error
import urllib.request

import httpx
import pytest

URL = os.environ["LLM_URL"]
CLAUDE = {"model": "claude-sonnet-4-6", "max_tokens": 9, "messages": [{"role": "user", "content": "hi"}]}
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
CHAT_SSE = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
CASES = [
    ("/v1/chat/completions", CHAT, "whole"),
    ("/v1/chat/completions", CHAT, "pieces"),
    ("/v1/chat/completions", CHAT_SSE, "whole"),
    ("/v1/chat/completions", CHAT_SSE, "pieces"),
    ("/v1/chat/completions", CHAT_SSE, "lines"),
    ("/v1/messages", CLAUDE, "whole"),
    ("/v1/messages", {**CLAUDE, "stream": True}, "lines"),
    ("/v1/messages", {**CLAUDE, "stream": True}, "early"),
    ("/v1/chat/completions", CHAT, "error"),
]
SLOW = {"x-chunk-delay": "0.2"}  # an early close: the first event arrives alone


def by_urllib(path, body, read):
    headers = {"content-type": "application/json", **(SLOW if read == "early" else {})}
    if read == "error":
        headers["x-status"] = "500"
    request = urllib.request.Request(URL + path, data=json.dumps(body).encode(), headers=headers)
    if read == "error":
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(request)
        assert info.value.code == 500
        with info.value:  # an HTTPError holds the response (and its socket) until closed
            return info.value.read()
    with urllib.request.urlopen(request) as response:
        assert type(response) is http.client.HTTPResponse
        if read == "whole":
            return response.read()
        if read == "pieces":
            return b"".join(iter(lambda: response.read(7), b""))
        if read == "lines":
            return b"".join(response)
        return b"".join(response.readline() for _ in range(3))  # the first event, then close


def by_httpx(path, body, read):
    headers = {**(SLOW if read == "early" else {}), **({"x-status": "500"} if read == "error" else {})}
    with httpx.Client(base_url=URL) as client:
        if read in ("whole", "error"):
            return client.post(path, json=body, headers=headers).content
        with client.stream("POST", path, json=body, headers=headers) as response:
            if read == "pieces":
                return b"".join(response.iter_raw(7))
            if read == "lines":
                return "".join(line + "\\n" for line in response.iter_lines()).encode()
            return next(response.iter_raw())


@pytest.mark.parametrize("case", range(len(CASES)))
@pytest.mark.parametrize("client", ["httpx", "urllib"])
def test_call(client, case):
    path, body, read = CASES[case]
    data = (by_urllib if client == "urllib" else by_httpx)(path, body, read)
    assert data


def test_vcr(tmp_path):
    import vcr

    cassette = str(tmp_path / "urllib.yaml")
    seen = []
    for mode in ("once", "none"):
        with vcr.use_cassette(cassette, record_mode=mode):
            for body in (CHAT, CHAT_SSE):
                request = urllib.request.Request(
                    URL + "/v1/chat/completions", data=json.dumps(body).encode(),
                    headers={"content-type": "application/json"},
                )
                with urllib.request.urlopen(request) as response:
                    assert isinstance(response, http.client.HTTPResponse)
                    seen.append(response.read())
    assert seen[2:] == seen[:2]


def test_requests_is_counted_once():
    import requests

    requests.post(URL + "/v1/chat/completions", json=CHAT)
    with requests.post(URL + "/v1/chat/completions", json=CHAT_SSE, stream=True) as response:
        assert [line for line in response.iter_lines() if line][-1] == b"data: [DONE]"


def test_not_an_llm_request():
    request = urllib.request.Request(URL + "/v1/files", data=b"{}")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request)
    assert info.value.code == 404
    assert "read" not in vars(info.value.fp)  # nothing tapped
    info.value.close()
"""

COMPARED = (
    "provider", "api", "host", "model", "input_tokens", "cached_input_tokens", "cache_write_tokens",
    "output_tokens", "reasoning_tokens", "total_tokens", "cost_usd", "streamed", "status_code",
    "source", "estimated", "state",
)  # fmt: skip


def test_a_session_of_urllib_calls(
    pytester: pytest.Pytester, llm_server: LLMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The suite above with the plugin on, read from its call log (one session for every check)."""
    monkeypatch.setenv("LLM_URL", llm_server.url)
    pytester.makepyfile(test_app=SUITE)
    before = llm_server.requests
    result = pytester.runpytest(
        "--token-budget", "--token-budget-calls=calls.jsonl", "-p", "no:cacheprovider"
    )
    result.assert_outcomes(passed=21)
    assert "while recording calls" not in result.stdout.str()
    assert llm_server.requests - before == 2 * 9 + 2 + 2 + 1  # the vcrpy replays never left
    session: dict[str, list[dict[str, Any]]] = {}
    for line in (pytester.path / "calls.jsonl").read_text().splitlines():
        call = json.loads(line)
        session.setdefault(call["test"].removeprefix("test_app.py::"), []).append(call)

    # urllib counted as httpx counts the same exchange, read whole, in pieces, by lines, closed early
    for case in range(9):
        assert facts(session[f"test_call[urllib-{case}]"]) == facts(session[f"test_call[httpx-{case}]"]), case
    urllib_calls = [session[f"test_call[urllib-{case}]"] for case in range(9)]
    assert all(len(calls) == 1 for calls in urllib_calls)
    assert [(c[0]["state"], c[0]["streamed"], c[0]["total_tokens"]) for c in urllib_calls] == [
        ("complete", False, 1346),
        ("complete", False, 1346),
        ("complete", True, 254),
        ("complete", True, 254),
        ("complete", True, 254),
        ("complete", False, 3068),
        ("complete", True, 2295),
        ("closed-early", True, 2211),
        ("failed", False, 0),
    ]
    assert urllib_calls[8][0]["status_code"] == 500

    # recorded by vcrpy, then replayed from the cassette
    assert [(c["source"], c["streamed"], c["total_tokens"], c["state"]) for c in session["test_vcr"]] == [
        ("live", False, 1346, "complete"),
        ("live", True, 254, "complete"),
        ("replayed", False, 1346, "complete"),
        ("replayed", True, 254, "complete"),
    ]

    # requests (urllib3 on http.client) beside the urllib wrapper: each call once; no call for a 404
    assert [(c["streamed"], c["total_tokens"]) for c in session["test_requests_is_counted_once"]] == [
        (False, 1346),
        (True, 254),
    ]
    assert "test_not_an_llm_request" not in session


def facts(calls: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [tuple(call[key] for key in COMPARED) for call in calls]


# -- in process: what the caller sees ----------------------------------------------------------------

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
CHAT_SSE = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}


def post(url: str, body: dict[str, Any], **headers: str) -> urllib.request.Request:
    data = json.dumps(body).encode()
    return urllib.request.Request(url, data=data, headers={"content-type": "application/json", **headers})


def both(action: Callable[[], Any]) -> tuple[Any, Any, list[Call]]:
    """``action()`` without the plugin, then with it: both results and the calls recorded."""
    plain = action()
    ledger = Ledger()
    ledger.push_owner(Owner("test", "call"))
    calls: list[Call] = []
    ledger.add_listener(calls.append)
    capture = Capture(ledger)
    capture.install()
    try:
        seen = action()
    finally:
        capture.uninstall()
    return plain, seen, calls


def test_bytes_types_and_headers_are_unchanged(llm_server: LLMServer) -> None:
    def fetch() -> list[Any]:
        out: list[Any] = []
        with urllib.request.urlopen(post(f"{llm_server.url}/v1/chat/completions", CHAT)) as response:
            out += [type(response), response.status, response.reason, response.msg, response.read()]
            out += [response.read(), response.read(5), response.isclosed()]
        with urllib.request.urlopen(post(f"{llm_server.url}/v1/chat/completions", CHAT_SSE)) as response:
            buffer = bytearray(11)
            out += [response.readinto(buffer), bytes(buffer), response.read1(9), response.peek(1)[:0]]
            out += [response.readline(), response.readlines(), response.read()]
            headers = [(k, v) for k, v in response.getheaders() if k.lower() != "date"]
            out += [headers, response.url]
        return out

    plain, seen, calls = both(fetch)
    assert seen == plain
    assert seen[0] is http.client.HTTPResponse
    assert [(c.api, c.state, c.streamed, c.usage.total_tokens) for c in calls] == [
        ("openai.chat", CallState.COMPLETE, False, 1346),
        ("openai.chat", CallState.COMPLETE, True, 254),
    ]


def test_a_body_read_whole_without_close_is_settled_at_its_end(llm_server: LLMServer) -> None:
    """``json.loads(urlopen(req).read())``: nobody closes the response; it is counted at once."""

    def fetch() -> int:
        return int(
            json.loads(urllib.request.urlopen(post(f"{llm_server.url}/v1/messages", CHAT)).read())["usage"][
                "output_tokens"
            ]
        )

    plain, seen, calls = both(fetch)
    assert seen == plain == 120
    assert [(c.api, c.state) for c in calls] == [("anthropic.messages", CallState.COMPLETE)]


def test_errors_reach_the_caller_unchanged(llm_server: LLMServer) -> None:
    def fail(url: str, **headers: str) -> tuple[Any, ...]:
        try:
            urllib.request.urlopen(post(url, CHAT, **headers), timeout=5)
        except urllib.error.HTTPError as exc:
            return type(exc), exc.code, exc.reason, exc.read(), exc.headers.get("content-type")
        except urllib.error.URLError as exc:
            return type(exc), type(exc.reason), str(exc.reason).split("]")[0]
        raise AssertionError("no error")

    plain, seen, calls = both(lambda: fail(f"{llm_server.url}/v1/chat/completions", **{"x-status": "429"}))
    assert seen == plain
    assert seen[:2] == (urllib.error.HTTPError, 429)
    assert [(c.state, c.status_code, c.usage.total_tokens) for c in calls] == [(CallState.FAILED, 429, 0)]

    plain, seen, calls = both(lambda: fail("http://127.0.0.1:9/v1/chat/completions"))  # nothing listens
    assert seen == plain
    assert seen[0] is urllib.error.URLError
    assert [(c.state, c.status_code, c.detail) for c in calls] == [(CallState.FAILED, 0, "URLError")]


def test_uninstall_restores_do_open() -> None:
    original = urllib.request.AbstractHTTPHandler.do_open
    capture = Capture(Ledger())
    capture.install()
    assert urllib.request.AbstractHTTPHandler.do_open is not original
    capture.uninstall()
    assert urllib.request.AbstractHTTPHandler.do_open is original


LATE_IMPORT = """
import json
import os
import sys


def test_urllib_imported_in_the_test():
    assert "urllib.request" not in sys.modules  # this import is the first
    import urllib.request

    request = urllib.request.Request(
        os.environ["LLM_URL"] + "/v1/chat/completions",
        data=json.dumps({"model": "gpt-4o-mini"}).encode(),
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(request) as response:
        assert json.load(response)["usage"]["total_tokens"] == 1346
"""


@pytest.mark.slow
def test_urllib_imported_inside_a_test_is_counted(
    pytester: pytest.Pytester, llm_server: LLMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fresh process, no other plugin: urllib.request is first imported by the test itself."""
    monkeypatch.setenv("LLM_URL", llm_server.url)
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    monkeypatch.setenv("PYTEST_ADDOPTS", "")
    pytester.makepyfile(test_late=LATE_IMPORT)
    result = pytester.runpytest_subprocess(
        "-p", "pytest_tokenbudget.plugin", "--token-budget", "--token-budget-json=run.json"
    )
    result.assert_outcomes(passed=1)
    entry = json.loads((pytester.path / "run.json").read_text())["tests"][
        "test_late.py::test_urllib_imported_in_the_test"
    ]
    assert (entry["calls"], entry["total_tokens"]) == (1, 1346)


@pytest.mark.parametrize("stream", [False, True])
def test_a_gzipped_body_reaches_the_caller_still_compressed(stream: bool) -> None:
    """urllib does not decompress: the caller gets the gzip bytes, the plugin reads them decoded."""
    from provider_server import ProviderServer

    server = ProviderServer().start()
    try:
        body = {"model": "gpt-4o-mini", "stream": stream, "gzip": True}
        request = post(f"{server.url}/v1/chat/completions", body)
        plain, seen, calls = both(lambda: urllib.request.urlopen(request).read())
    finally:
        server.stop()
    assert gzip.decompress(seen) == gzip.decompress(plain)
    assert seen[:2] == b"\x1f\x8b"
    assert [(c.state, c.streamed, c.usage.input_tokens, c.usage.output_tokens) for c in calls] == [
        (CallState.COMPLETE, stream, 11, 7)
    ]
