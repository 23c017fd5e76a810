"""Billed usage that is late or nested, through the real SDKs against tests/helpers/late_server.py.

* OpenAI Responses in background mode: the POST answers ``queued`` with no usage; the usage comes
  with a poll (``responses.retrieve``) or the resumed stream. It is counted once, as one call, from
  whichever exchange carries it; a response never seen finished is a ``pending`` call.
* Anthropic ``usage.iterations`` (compaction, the advisor tool): the billed numbers are the sum of
  the iterations, each at its own model; and a zero in ``message_delta`` replaces
  ``message_start``'s value.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest
import yaml
from late_server import ADVISOR_MODEL, LateServer
from llm_server import CLAUDE_MODEL, RESPONSES_MODEL
from shared_corpus import CORPUS, MISSING

from pytest_tokenbudget.capture import Capture
from pytest_tokenbudget.capture.recorder import Recorder
from pytest_tokenbudget.ledger import Ledger, Owner
from pytest_tokenbudget.model import Call, CallState, TestUsage, Usage
from pytest_tokenbudget.providers import route
from pytest_tokenbudget.providers.anthropic import Messages

RESPONSES = Usage(input_tokens=520, cached_input_tokens=256, output_tokens=180, reasoning_tokens=128)
# tests/helpers/late_server.py ITERATIONS: compaction + two executor steps at the response's model …
EXECUTOR = Usage(input_tokens=52200 + 2120 + 109, cached_input_tokens=3000, output_tokens=95)
# … and the advisor's step at its own model.
ADVISOR = Usage(input_tokens=2800, cache_write_tokens=300, output_tokens=40)
ASK = [{"role": "user", "content": "Where is my order #4417?"}]


@pytest.fixture(scope="module")
def late_server() -> Iterator[LateServer]:
    running = LateServer().start()
    yield running
    running.stop()


class Captured:
    """Capture on a fresh ledger; ``owner(...)`` switches who is charged, ``end(...)`` settles one."""

    def __init__(self) -> None:
        self.ledger = Ledger()
        self.calls: list[Call] = []
        self.ledger.add_listener(self.calls.append)
        self.ledger.running(Owner("test_a", "call"))
        self.capture = Capture(self.ledger)

    def owner(self, nodeid: str) -> None:
        self.ledger.running(Owner(nodeid, "call"))

    def end(self, nodeid: str = "test_a") -> None:
        self.ledger.settle_streams(nodeid)

    def usage(self, nodeid: str = "test_a") -> TestUsage:
        return self.ledger.usage_of(nodeid)


@pytest.fixture
def cap() -> Iterator[Captured]:
    captured = Captured()
    captured.capture.install()
    try:
        yield captured
    finally:
        captured.capture.uninstall()


@pytest.fixture
def oai(late_server: LateServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{late_server.url}/v1", api_key="sk-test", max_retries=0) as client:
        yield client


@pytest.fixture
def claude(late_server: LateServer) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=late_server.url, api_key="sk-ant-test", max_retries=0) as client:
        yield client


def _background(client: openai.OpenAI, polls: str = "1") -> str:
    created = client.responses.create(
        model="o4-mini", input="hi", background=True, extra_headers={"x-polls": polls}
    )
    assert (created.status, created.usage) == ("queued", None)  # the SDK sees the server's answer
    return created.id


# -- OpenAI background responses ----------------------------------------------------------------


def test_background_response_counted_once_from_the_poll_that_completes_it(
    oai: openai.OpenAI, cap: Captured
) -> None:
    response_id = _background(oai, polls="2")
    assert cap.calls == []  # pending: no call yet, and no estimate
    statuses = [oai.responses.retrieve(response_id).status for _ in range(3)]
    assert statuses == ["in_progress", "in_progress", "completed"]
    (call,) = cap.calls
    assert (call.api, call.model, call.state, call.estimated) == (
        "openai.responses",
        RESPONSES_MODEL,
        CallState.COMPLETE,
        False,
    )
    assert call.usage == RESPONSES
    assert call.owner == "test_a"
    cap.end()
    assert cap.usage().total.calls == 1


def test_a_completed_response_retrieved_twice_counts_once(oai: openai.OpenAI, cap: Captured) -> None:
    response_id = _background(oai, polls="0")
    first = oai.responses.retrieve(response_id)
    second = oai.responses.retrieve(response_id)
    assert first.status == second.status == "completed"
    assert [c.usage for c in cap.calls] == [RESPONSES]
    cap.end()
    tally = cap.usage().total
    assert (tally.calls, tally.total_tokens) == (1, 700)


def test_a_finished_response_retrieved_after_its_post_is_not_counted_again(
    oai: openai.OpenAI, cap: Captured
) -> None:
    created = oai.responses.create(model="o4-mini", input="hi")  # not background: usage at once
    assert created.status == "completed"
    assert oai.responses.retrieve(created.id).usage is not None
    assert [c.usage for c in cap.calls] == [RESPONSES]


def test_a_dropped_background_stream_is_counted_from_the_resumed_stream(
    oai: openai.OpenAI, cap: Captured
) -> None:
    stream = oai.responses.create(
        model="o4-mini", input="hi", background=True, stream=True, extra_headers={"x-cut-after": "3"}
    )
    events = list(stream)  # the connection drops after three events
    assert [e.type for e in events][-1] != "response.completed"
    response_id, last = events[0].response.id, events[-1].sequence_number
    assert cap.calls == []  # not "closed early" with an estimate: the response goes on
    resumed = oai.responses.retrieve(response_id, stream=True, starting_after=last)
    rest = list(resumed)
    assert rest[0].sequence_number == last + 1
    assert rest[-1].type == "response.completed"
    (call,) = cap.calls
    assert (call.usage, call.state, call.streamed, call.estimated) == (
        RESPONSES,
        CallState.COMPLETE,
        True,
        False,
    )


def test_a_background_response_never_finished_is_a_pending_call(oai: openai.OpenAI, cap: Captured) -> None:
    response_id = _background(oai, polls="never")
    assert oai.responses.retrieve(response_id).status == "in_progress"
    assert cap.calls == []
    cap.end()  # the test's teardown
    (call,) = cap.calls
    assert (call.state, call.usage, call.estimated) == (CallState.PENDING, Usage(), False)
    assert response_id in call.detail
    assert cap.ledger.run.issues[0]["state"] == "pending"
    assert cap.usage().total.calls == 1
    cap.end()  # settled once
    assert len(cap.calls) == 1


def test_a_response_finished_after_its_owner_ended_is_counted_where_it_is_read(
    oai: openai.OpenAI, cap: Captured
) -> None:
    """What is remembered goes with its owner: a later test reading the finished response is
    charged for it (the first test shows a pending call with no tokens)."""
    response_id = _background(oai, polls="0")
    cap.end("test_a")
    cap.owner("test_b")
    oai.responses.retrieve(response_id)
    oai.responses.retrieve(response_id)
    assert [(c.owner, c.state, c.usage) for c in cap.calls] == [
        ("test_a", CallState.PENDING, Usage()),
        ("test_b", CallState.COMPLETE, RESPONSES),
    ]


def test_polls_are_routed_as_follow_ups_only() -> None:
    poll = route("GET", "api.openai.com", "/v1/responses/resp_abc")
    assert poll is not None
    assert poll.follow_up
    assert (poll.provider, poll.api) == ("openai", "openai.responses")
    assert route("POST", "api.openai.com", "/v1/responses") is not None
    assert not route("POST", "api.openai.com", "/v1/responses").follow_up  # type: ignore[union-attr]
    for method, path in (
        ("GET", "/v1/responses/resp_abc/input_items"),
        ("DELETE", "/v1/responses/resp_abc"),
        ("GET", "/v1/models"),
        ("GET", "/api/surveys/responses/42"),  # an app's own API
    ):
        assert route(method, "api.openai.com", path) is None, path


def test_a_poll_is_not_held_to_the_hard_cap() -> None:
    """A poll costs nothing: the preflight hooks (the hard cap) never see one."""
    ledger = Ledger()
    recorder = Recorder(ledger)
    seen: list[str] = []
    recorder.preflight.append(lambda exchange, request: seen.append(exchange.route.api))
    for method, path in (("GET", "/v1/responses/resp_1"), ("POST", "/v1/responses")):
        found = recorder.route(method, "api.openai.com", path)
        assert found is not None
        recorder.start(found)
    assert seen == ["openai.responses"]  # the POST only


def test_unfinished_polls_and_failures_record_nothing() -> None:
    ledger = Ledger()
    ledger.running(Owner("t", "call"))
    calls: list[Call] = []
    ledger.add_listener(calls.append)
    recorder = Recorder(ledger)
    poll = recorder.route("GET", "api.openai.com", "/v1/responses/resp_9")
    assert poll is not None
    unfinished = {"id": "resp_9", "object": "response", "status": "in_progress", "usage": None}
    recorder.body(recorder.start(poll), 200, json.dumps(unfinished).encode(), "application/json")
    recorder.body(recorder.start(poll), 404, b'{"error": {}}', "application/json")
    recorder.body(recorder.start(poll), 200, b"<html>", "application/json")
    recorder.failed(recorder.start(poll), TimeoutError())
    assert calls == []
    assert recorder.internal_errors == 0


# -- Anthropic usage.iterations -----------------------------------------------------------------


def _iterations_calls(calls: list[Call]) -> list[tuple[str, Usage, bool]]:
    return [(c.model, c.usage, c.part) for c in calls]


def test_iterations_are_the_billed_usage_each_at_its_model(
    claude: anthropic.Anthropic, cap: Captured
) -> None:
    reply = claude.messages.create(
        model=CLAUDE_MODEL, max_tokens=64, messages=ASK, extra_headers={"x-reply": "iterations"}
    )
    assert reply.usage.input_tokens == 229  # the SDK sees the top level, unchanged
    assert _iterations_calls(cap.calls) == [(CLAUDE_MODEL, EXECUTOR, False), (ADVISOR_MODEL, ADVISOR, True)]
    entry = cap.usage()
    assert entry.total.calls == 1  # one request, however many models it was billed on
    assert entry.total.usage == EXECUTOR + ADVISOR
    advisor = entry.models[f"anthropic-compatible/{ADVISOR_MODEL}"]
    assert (advisor.calls, advisor.usage) == (0, ADVISOR)
    executor = entry.models[f"anthropic-compatible/{CLAUDE_MODEL}"]
    assert (executor.calls, executor.usage) == (1, EXECUTOR)


def test_streamed_iterations_come_with_message_delta(claude: anthropic.Anthropic, cap: Captured) -> None:
    with claude.beta.messages.stream(  # the beta types know usage.iterations
        model=CLAUDE_MODEL, max_tokens=64, messages=ASK, extra_headers={"x-reply": "iterations"}
    ) as stream:
        final = stream.get_final_message()
    assert final.usage.iterations is not None
    assert len(final.usage.iterations) == 4
    assert _iterations_calls(cap.calls) == [(CLAUDE_MODEL, EXECUTOR, False), (ADVISOR_MODEL, ADVISOR, True)]
    assert all(c.streamed and c.state == CallState.COMPLETE for c in cap.calls)


def test_a_zero_in_message_delta_replaces_message_start(claude: anthropic.Anthropic, cap: Captured) -> None:
    with claude.messages.stream(
        model=CLAUDE_MODEL, max_tokens=64, messages=ASK, extra_headers={"x-reply": "delta-zeros"}
    ) as stream:
        final = stream.get_final_message()
    assert final.usage.cache_read_input_tokens == 0  # what the SDK itself makes of the stream
    (call,) = cap.calls
    assert call.usage == Usage(input_tokens=2210, output_tokens=85)  # not 1,800 cached still


def test_message_delta_keeps_what_it_does_not_repeat() -> None:
    stream = Messages().stream()
    start = {
        "message": {
            "model": "m",
            "usage": {"input_tokens": 10, "cache_read_input_tokens": 7, "output_tokens": 1},
        }
    }
    stream.on_event(b"message_start", json.dumps(start).encode())
    delta = {"usage": {"output_tokens": 30, "cache_read_input_tokens": None}}
    stream.on_event(b"message_delta", json.dumps(delta).encode())
    assert stream.result().usage == Usage(input_tokens=17, cached_input_tokens=7, output_tokens=30)


def test_iterations_without_models_sum_at_the_response_model() -> None:
    body = {
        "model": "claude-x",
        "usage": {
            "input_tokens": 5,
            "output_tokens": 1,
            "iterations": [
                {"type": "compaction", "input_tokens": 100, "output_tokens": 10},
                {"type": "message", "input_tokens": 5, "output_tokens": 1},
                "not an object",
            ],
        },
    }
    found = Messages().parse(json.dumps(body).encode())
    assert (found.model, found.usage, found.parts) == (
        "claude-x",
        Usage(input_tokens=105, output_tokens=11),
        (),
    )


ADVISOR_CASSETTE = CORPUS / "anthropic" / "pydantic__pydantic-ai__messages_advisor_iterations_parsed.yaml"


@pytest.mark.skipif(not ADVISOR_CASSETTE.is_file(), reason=MISSING)
def test_a_recorded_advisor_response_bills_the_advisor_at_its_model() -> None:
    """Real traffic (pydantic-ai's cassette): the top level is the executor's two steps; the
    advisor's step (2,518 in, 22 out on claude-opus-4-8) is in no top-level number."""
    interactions: list[dict[str, Any]] = yaml.safe_load(ADVISOR_CASSETTE.read_text())["interactions"]
    body = json.dumps(interactions[0]["response"]["parsed_body"]).encode()
    found = Messages().parse(body)
    assert found.model == "claude-sonnet-5"
    assert found.usage == Usage(input_tokens=2390, output_tokens=121, reasoning_tokens=28)
    assert found.parts == (("claude-opus-4-8", Usage(input_tokens=2518, output_tokens=22)),)


# -- whole sessions -------------------------------------------------------------------------------

SESSION = """
import os

import anthropic
import openai

URL = os.environ["LATE_URL"]


def _oai():
    return openai.OpenAI(base_url=URL + "/v1", api_key="k", max_retries=0)


def test_polled():
    with _oai() as client:
        created = client.responses.create(model="o4-mini", input="hi", background=True,
                                          extra_headers={"x-polls": "3"})
        while client.responses.retrieve(created.id).status != "completed":
            pass
        client.responses.retrieve(created.id)  # read again: not a second call


def test_never_finished():
    with _oai() as client:
        created = client.responses.create(model="o4-mini", input="hi", background=True,
                                          extra_headers={"x-polls": "never"})
        client.responses.retrieve(created.id)


def test_advisor():
    with anthropic.Anthropic(base_url=URL, api_key="k", max_retries=0) as client:
        client.messages.create(model="claude-sonnet-4-6", max_tokens=64,
                               messages=[{"role": "user", "content": "hi"}],
                               extra_headers={"x-reply": "iterations"})
"""


def test_session_reports_late_and_nested_usage(
    pytester: pytest.Pytester, late_server: LateServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LATE_URL", late_server.url)
    pytester.makepyfile(test_late=SESSION)
    result = pytester.runpytest("--token-budget", "--token-budget-json=run.json", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)
    out = result.stdout.str()
    assert "calls with incomplete usage (1)" in out
    assert "pending" in out
    assert "unfinished when its owner ended" in out
    run = json.loads((pytester.path / "run.json").read_text())
    tests = run["tests"]
    polled = tests["test_late.py::test_polled"]
    assert (polled["calls"], polled["total_tokens"], polled["estimated_calls"]) == (1, 700, 0)
    never = tests["test_late.py::test_never_finished"]
    assert (never["calls"], never["total_tokens"], never["estimated_calls"]) == (1, 0, 0)
    (issue,) = run["issues"]
    assert (issue["test"], issue["state"]) == ("test_late.py::test_never_finished", "pending")
    advisor = tests["test_late.py::test_advisor"]
    assert (advisor["calls"], advisor["input_tokens"], advisor["output_tokens"]) == (1, 54429 + 2800, 135)
    executor = run["models"]["anthropic-compatible/claude-sonnet-4-6"]
    adviser = run["models"]["anthropic-compatible/claude-opus-4-6"]
    assert (executor["calls"], executor["total_tokens"]) == (1, 54524)
    assert (adviser["calls"], adviser["total_tokens"], adviser["cache_write_tokens"]) == (0, 2840, 300)
    assert adviser["cost_usd"] > 0
    assert adviser["cost_known"]
    assert advisor["cost_usd"] == pytest.approx(executor["cost_usd"] + adviser["cost_usd"])
    assert run["totals"]["calls"] == 3
    result.stdout.fnmatch_lines(
        [
            "3 calls in 3 tests:*",
            "*2,840*2,800*0 calls  anthropic-compatible/claude-opus-4-6",
            "*54,524*54,429*3,000*1 call  anthropic-compatible/claude-sonnet-4-6",
            "*700*520*256*180*128*openai-compatible/o4-mini-2025-04-16",
        ]
    )
