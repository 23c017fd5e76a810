"""Quiet states (issue 20, point 7): gaps that must not read as zeros, bodies that lie about their type,
and one word per call state in every report.

* Ollama omits ``prompt_eval_count`` for a cached prompt: the input is estimated and marked, a
  reported 0 stays 0 (the ollama SDK against tests/helpers/provider_server.py).
* An event stream served as ``application/json`` (a recording replayed with the wrong content type)
  is sniffed and read, read whole or as a stream (httpx, requests, the openai SDK).
* The terminal, the markdown, JUnit, GitHub annotations and the artifact name a call state by its
  :class:`~pytest_tokenbudget.model.CallState` value.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from provider_server import CHAT_USAGE, OLLAMA_CACHED_MODEL, SSE_AS_JSON_MODEL, ProviderServer
from pytester_session import read_artifact, read_calls, run_session

import pytest_tokenbudget.capture
import pytest_tokenbudget.report.terminal
from pytest_tokenbudget.model import Call, CallState, Run, Tally, TestUsage, Usage
from pytest_tokenbudget.providers.ollama import Native
from pytest_tokenbudget.report import github, junit, markdown, terminal
from pytest_tokenbudget.tokens import estimates

# Shared with in-process pytester runs (see tests/sessions/test_estimates_session.py).
_SHARED = (pytest_tokenbudget.capture, pytest_tokenbudget.inspection.inspector)


@pytest.fixture(scope="module")
def server() -> Iterator[ProviderServer]:
    running = ProviderServer().start()
    yield running
    running.stop()


@pytest.fixture
def session(pytester: pytest.Pytester, server: ProviderServer, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("PROVIDER_URL", server.url)
    monkeypatch.setenv("COLUMNS", "200")

    def run(
        tests: str, pyproject: str = ""
    ) -> tuple[pytest.RunResult, dict[str, Any], list[dict[str, Any]], str]:
        pytester.makepyfile(test_app=textwrap.dedent(tests))
        pytester.makepyprojecttoml("[tool.tokenbudget]\n" + textwrap.dedent(pyproject))
        result = run_session(pytester, "--token-budget-markdown=report.md", calls="calls.jsonl")
        return (
            result,
            read_artifact(pytester),
            read_calls(pytester),
            (pytester.path / "report.md").read_text(),
        )

    return run


# -- b. Ollama without prompt_eval_count ------------------------------------------------------------

ASK = [{"role": "user", "content": "Why is the sky blue? Answer in one line, please."}]

OLLAMA = f"""
import os

import ollama

ASK = {ASK!r}


def client():
    return ollama.Client(host=os.environ["PROVIDER_URL"])


def test_cached():
    assert client().chat(model="{OLLAMA_CACHED_MODEL}", messages=ASK).eval_count == 50


def test_cached_stream():
    parts = client().chat(model="{OLLAMA_CACHED_MODEL}", messages=ASK, stream=True)
    assert [part.eval_count for part in parts][-1] == 50


def test_zero():
    assert client().chat(model="llama3-zero", messages=ASK).prompt_eval_count == 0
"""


def test_a_missing_prompt_eval_count_is_estimated_and_marked_a_reported_zero_stays(session: Any) -> None:
    pytest.importorskip("ollama")
    result, run, calls, md = session(OLLAMA)
    result.assert_outcomes(passed=3)
    expected = estimates.estimate_input(
        "ollama.chat", {"model": OLLAMA_CACHED_MODEL, "messages": ASK}, "llama3"
    )
    assert expected is not None
    assert expected.tokens > 0
    by_test = {c["test"].partition("::")[2]: c for c in calls}
    for name in ("test_cached", "test_cached_stream"):
        call = by_test[name]
        assert (call["input_tokens"], call["output_tokens"], call["estimated"]) == (expected.tokens, 50, True)
        assert call["state"] == CallState.COMPLETE
        test = run["tests"][f"test_app.py::{name}"]
        assert (test["input_tokens"], test["estimated_calls"]) == (expected.tokens, 1)
    zero = by_test["test_zero"]
    assert (zero["input_tokens"], zero["output_tokens"], zero["estimated"]) == (0, 50, False)
    assert run["tests"]["test_app.py::test_zero"]["estimated_calls"] == 0
    assert run["totals"]["estimated_calls"] == 2
    total = f"~{expected.tokens + 50:,}"
    result.stdout.fnmatch_lines_random(
        [
            f"*{total} *test_app.py::test_cached",
            f"*{total} *test_app.py::test_cached_stream",
            "*    50 *test_app.py::test_zero",
            "~ estimated: 2 calls reported no usage or only part of it; counted by tokenizer",
        ]
    )
    assert "2 estimated (~)" in md
    assert f"| `test_app.py::test_cached` | {total} |" in md


def test_ollama_parser_reports_the_gap_not_a_zero() -> None:
    cached = b'{"model":"llama3","done":true,"eval_count":5}'
    zero = b'{"model":"llama3","done":true,"prompt_eval_count":0,"eval_count":5}'
    embed = b'{"model":"e","embeddings":[[0.1]],"prompt_eval_count":4}'
    assert Native("ollama.chat").parse(cached).gaps == ("input_tokens",)
    assert Native("ollama.chat").parse(zero).gaps == ()
    assert Native("ollama.embed").parse(embed).gaps == ()  # an embedding has no output to count
    assert Native("ollama.chat").parse(b'{"model":"llama3","done":true,"prompt_eval_count":3}').gaps == (
        "output_tokens",
    )
    stream = Native("ollama.chat").stream()
    stream.on_event(b"", b'{"model":"llama3","message":{"content":"Hi"},"done":false}')
    stream.on_event(b"", cached)
    assert (stream.result().usage, stream.result().gaps) == (Usage(output_tokens=5), ("input_tokens",))


def test_fill_estimates_only_the_gaps() -> None:
    call = Call("t", "call", "ollama", "ollama.chat", "localhost", "llama3", usage=Usage(output_tokens=5))
    body = {"model": "llama3", "messages": ASK}
    estimates.fill(call, body, b'{"message":{"content":"Hi there"}}', ("input_tokens",))
    expected = estimates.estimate_input("ollama.chat", body, "llama3")
    assert expected is not None
    assert (call.usage, call.estimated, call.state) == (
        Usage(expected.tokens, output_tokens=5),
        True,
        "complete",
    )
    assert call.detail == f"estimated input (not reported), {expected.method}"
    unreadable = Call(
        "t", "call", "ollama", "ollama.chat", "localhost", "llama3", usage=Usage(output_tokens=5)
    )
    estimates.fill(unreadable, b"\x00 not json", None, ("input_tokens",))
    assert (unreadable.usage, unreadable.estimated) == (Usage(output_tokens=5), False)
    assert unreadable.detail == "input not reported and not estimable"


# -- c. an event stream labelled application/json ---------------------------------------------------

SSE_AS_JSON = f"""
import os

import httpx
import openai
import requests

URL = os.environ["PROVIDER_URL"] + "/v1/chat/completions"
BODY = {{"model": "{SSE_AS_JSON_MODEL}", "messages": [{{"role": "user", "content": "hi"}}]}}


def test_httpx_read_whole():
    with httpx.Client() as client:
        assert client.post(URL, json=BODY).headers["content-type"] == "application/json"


def test_httpx_streamed():
    with httpx.Client() as client:
        with client.stream("POST", URL, json=BODY) as response:
            for _ in response.iter_bytes(7):
                pass


def test_requests_streamed():
    with requests.post(URL, json=BODY, stream=True) as response:
        for _ in response.iter_content(7):
            pass


def test_openai_sdk_stream():
    client = openai.OpenAI(base_url=os.environ["PROVIDER_URL"] + "/v1", api_key="k", max_retries=0)
    with client:
        stream = client.chat.completions.create(model=BODY["model"], messages=BODY["messages"], stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "Hi"
"""


def test_an_event_stream_labelled_json_is_sniffed_read_whole_or_streamed(session: Any) -> None:
    pytest.importorskip("openai")
    pytest.importorskip("requests")
    result, run, calls, _ = session(SSE_AS_JSON)
    result.assert_outcomes(passed=4)
    assert [(c["test"].partition("::")[2], c["state"]) for c in sorted(calls, key=lambda c: c["test"])] == [
        ("test_httpx_read_whole", "complete"),
        ("test_httpx_streamed", "complete"),
        ("test_openai_sdk_stream", "complete"),
        ("test_requests_streamed", "complete"),
    ]
    usage = (CHAT_USAGE["prompt_tokens"], CHAT_USAGE["completion_tokens"])
    assert {(c["input_tokens"], c["output_tokens"], c["model"]) for c in calls} == {
        (*usage, SSE_AS_JSON_MODEL)
    }
    assert (run["totals"]["unparsed_calls"], run["issues"]) == (0, [])


def test_stream_tap_sniffs_a_json_labelled_body() -> None:
    """The tap itself, fed in small pieces: JSON still buffered and parsed, SSE framed."""
    from pytest_tokenbudget.capture.recorder import Recorder
    from pytest_tokenbudget.ledger import Ledger, Owner

    ledger = Ledger()
    ledger.push_owner(Owner("t", "call"))
    calls: list[Call] = []
    ledger.add_listener(calls.append)
    rec = Recorder(ledger)
    sse = b'data: {"model":"m","choices":[],"usage":{"prompt_tokens":2,"completion_tokens":3}}\n\n'
    sse += b"data: [DONE]\n\n"
    plain = b'{"model":"m","choices":[],"usage":{"prompt_tokens":4,"completion_tokens":1}}'
    route = rec.route("POST", "api.openai.com", "/v1/chat/completions")
    assert route is not None
    for body in (sse, plain):
        tap = rec.stream(rec.start(route), 200, "application/json; charset=utf-8", "")
        for i in range(0, len(body), 3):
            tap.feed(body[i : i + 3])
        tap.eof()
    assert [(c.state, c.usage, c.streamed) for c in calls] == [
        ("complete", Usage(2, output_tokens=3), True),
        ("complete", Usage(4, output_tokens=1), False),
    ]


# -- d. one word per state ----------------------------------------------------------------------------


def _run_with_states() -> Run:
    run = Run(meta={})
    entry = TestUsage(nodeid="tests/test_a.py::test_a", path="tests/test_a.py", line=3)
    for state in (CallState.UNPARSED, CallState.UNMETERED, CallState.CLOSED_EARLY):
        call = Call(
            entry.nodeid, "call", "openai", "openai.chat", "api.openai.com", "gpt-4o-mini", state=state
        )
        if state == CallState.CLOSED_EARLY:
            call.usage, call.cost_usd = Usage(10, output_tokens=2), 0.0
        entry.add_call(call)
        run.issues.append({"test": entry.nodeid, "phase": "call", "provider": "openai", "api": call.api,
                           "model": call.model, "state": state, "detail": ""})  # fmt: skip
    run.tests[entry.nodeid] = entry
    return run


def test_every_report_names_a_call_state_by_its_callstate_value() -> None:
    from pytest_tokenbudget.config import resolve
    from pytest_tokenbudget.inspection.inspector import Inspector

    run = _run_with_states()
    totals = run.totals().to_dict()
    assert (totals["unparsed_calls"], totals["unmetered_calls"]) == (1, 1)  # the artifact's keys
    inspector = Inspector(resolve({}, {}, pyproject=None, root=Path()))
    run.verdicts = inspector.verdicts(run)
    (verdict,) = run.verdicts
    assert verdict.message == (
        "1 unmetered call (no usage reported, none estimable) and 1 unparsed call (response not readable); "
        "budgets cannot trip on them: tests/test_a.py::test_a [openai.chat gpt-4o-mini], "
        "tests/test_a.py::test_a [openai.chat gpt-4o-mini]"
    )
    text = "\n".join(line.text for line in terminal.render(run))
    text += "\n".join(line.text for line in pytest_tokenbudget.report.terminal.inspection_lines(run))
    for rendered in (text, markdown.render(run), junit.render(run), "\n".join(github.annotation_lines(run))):
        words = _state_words(rendered)
        assert words <= set(_STATES), (words, rendered)
    md = markdown.render(run)
    assert "3 calls with incomplete usage (1 unparsed, 1 unmetered, 1 closed-early)" in md
    assert "closed early" not in md


_STATES = {v for k, v in vars(CallState).items() if k.isupper()}
_SYNONYMS = ("closed early", "not parsed", "unreadable", "no usage", "un-metered", "unmetred")


def _state_words(text: str) -> set[str]:
    """Call-state words in ``text``: the CallState values, plus any synonym (which must not appear)."""
    found = {s for s in _STATES if s in text}
    return found | {s for s in _SYNONYMS if s in text.replace("no usage reported", "")}


def test_tally_caveat_keys_are_the_state_values() -> None:
    """The artifact's per-state counts are ``<CallState value>_calls`` (schema version 1 keys)."""
    keys = {k.removesuffix("_calls") for k in Tally().to_dict() if k.endswith("_calls")}
    assert {CallState.UNPARSED, CallState.UNMETERED, CallState.FAILED} <= keys
