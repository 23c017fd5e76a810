"""OpenAI Assistants runs: routed, and the run's usage read once (never its steps' usage too)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pytest_tokenbudget.capture.recorder import Recorder
from pytest_tokenbudget.ledger import Ledger, Owner
from pytest_tokenbudget.model import Call, CallState, Usage
from pytest_tokenbudget.providers import route
from pytest_tokenbudget.providers.framing import LineFramer
from pytest_tokenbudget.providers.openai import AssistantsRuns

HOST = "api.openai.com"


def _run(status: str, usage: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "id": "run_1",
        "object": "thread.run",
        "thread_id": "thread_1",
        "assistant_id": "asst_1",
        "status": status,
        "model": "gpt-4o-mini",
        "instructions": "Be brief.",
        "usage": usage,
    }


def _step(usage: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "id": "step_1",
        "object": "thread.run.step",
        "run_id": "run_1",
        "status": "completed",
        "usage": usage,
    }


def _usage(prompt: int, completion: int, cached: int = 0) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_token_details": {"cached_tokens": cached},  # sic: "token", as the API sends it
        "completion_tokens_details": {"reasoning_tokens": 0},
    }


def _sse(events: list[tuple[str, Any]], *, with_names: bool = True) -> bytes:
    out = []
    for name, data in events:
        payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
        out.append((f"event: {name}\n" if with_names else "") + f"data: {payload}\n\n")
    return "".join(out).encode()


def _stream_events(final: str = "thread.run.completed") -> list[tuple[str, Any]]:
    return [
        ("thread.run.created", _run("queued", None)),
        ("thread.run.queued", _run("queued", None)),
        ("thread.run.in_progress", _run("in_progress", None)),
        ("thread.run.step.created", _step(None)),
        ("thread.run.step.delta", {"id": "step_1", "object": "thread.run.step.delta", "delta": {}}),
        ("thread.run.step.completed", _step(_usage(154, 62))),
        ("thread.message.created", {"id": "msg_1", "object": "thread.message", "content": []}),
        ("thread.message.delta", {"id": "msg_1", "object": "thread.message.delta", "delta": {}}),
        ("thread.message.completed", {"id": "msg_1", "object": "thread.message", "content": []}),
        ("thread.run.step.completed", _step(_usage(227, 26))),
        (final, _run(final.rsplit(".", 1)[1], _usage(381, 88, cached=128))),
        ("done", "[DONE]"),
    ]


def _feed(body: bytes) -> Any:
    accumulator = AssistantsRuns().stream()
    framer = LineFramer(accumulator)
    framer.feed(body)
    framer.finish()
    return accumulator


RUN_USAGE = Usage(input_tokens=381, cached_input_tokens=128, output_tokens=88)


@pytest.mark.parametrize(
    "path",
    [
        "/v1/threads/thread_1/runs",
        "/v1/threads/runs",
        "/v1/threads/thread_1/runs/run_1/submit_tool_outputs",
        "/v1/threads/thread_1/runs/",
        "/openai/threads/thread_1/runs",  # Azure
    ],
)
def test_run_endpoints_are_routed(path: str) -> None:
    found = route("POST", HOST, path)
    assert found is not None
    assert (found.provider, found.api) == ("openai", "openai.assistants.run")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/threads"),
        ("POST", "/v1/threads/thread_1/messages"),
        ("POST", "/v1/assistants"),
        ("GET", "/v1/threads/thread_1/runs"),
        ("POST", "/v1/threads/thread_1/runs/run_1/cancel"),
        ("POST", "/v1/threads/thread_1/runs/run_1/steps"),
    ],
)
def test_other_assistants_endpoints_are_not_calls(method: str, path: str) -> None:
    assert route(method, HOST, path) is None


def test_queued_run_object_reports_no_usage() -> None:
    extracted = AssistantsRuns().parse(json.dumps(_run("queued", None)).encode())
    assert extracted.model == "gpt-4o-mini"
    assert extracted.usage is None


def test_finished_run_object_reports_its_usage() -> None:
    extracted = AssistantsRuns().parse(json.dumps(_run("completed", _usage(381, 88, 128))).encode())
    assert extracted.usage == RUN_USAGE


def test_stream_counts_the_run_once_not_its_steps() -> None:
    accumulator = _feed(_sse(_stream_events()))
    assert accumulator.done
    assert accumulator.result().model == "gpt-4o-mini"
    assert accumulator.result().usage == RUN_USAGE  # 381/88, not 381+154+227 / 88+62+26


@pytest.mark.parametrize("final", ["thread.run.failed", "thread.run.incomplete", "thread.run.cancelled"])
def test_stream_reads_usage_of_a_run_that_did_not_complete(final: str) -> None:
    accumulator = _feed(_sse(_stream_events(final)))
    assert accumulator.done
    assert accumulator.result().usage == RUN_USAGE


def test_stream_without_event_names_reads_the_run_object() -> None:
    accumulator = _feed(_sse(_stream_events(), with_names=False))
    assert accumulator.done
    assert accumulator.result().usage == RUN_USAGE


def test_stream_paused_for_tool_outputs_ends_without_usage() -> None:
    events = [
        *_stream_events()[:6],
        ("thread.run.requires_action", _run("requires_action", None)),
        ("done", "[DONE]"),
    ]
    accumulator = _feed(_sse(events))
    assert accumulator.done  # not a stream closed early: the run goes on with submit_tool_outputs
    assert accumulator.result().usage is None  # the step usage is not the run's


def _record(body: bytes, content_type: str, chunked: bool) -> list[Call]:
    ledger = Ledger()
    ledger.push_owner(Owner("tests/test_assistants.py::t", "call"))
    calls: list[Call] = []
    ledger.add_listener(calls.append)
    recorder = Recorder(ledger)
    found = recorder.route("POST", HOST, "/v1/threads/thread_1/runs")
    assert found is not None
    exchange = recorder.start(found)
    if chunked:
        tap = recorder.stream(exchange, 200, content_type, "")
        for start in range(0, len(body), 7):
            tap.feed(body[start : start + 7])
        tap.eof()
    else:
        recorder.body(exchange, 200, body, content_type)
    assert not recorder.first_errors
    return calls


@pytest.mark.parametrize("chunked", [False, True], ids=["body", "chunks"])
def test_recorded_stream_is_one_complete_call(chunked: bool) -> None:
    (call,) = _record(_sse(_stream_events()), "text/event-stream; charset=utf-8", chunked)
    assert (call.state, call.streamed, call.model, call.usage) == (
        CallState.COMPLETE,
        True,
        "gpt-4o-mini",
        RUN_USAGE,
    )


@pytest.mark.parametrize("chunked", [False, True], ids=["body", "chunks"])
def test_recorded_queued_run_has_no_reported_usage(chunked: bool) -> None:
    (call,) = _record(json.dumps(_run("queued", None)).encode(), "application/json", chunked)
    assert call.state != CallState.COMPLETE
    assert call.estimated or call.usage == Usage()  # never reported usage (at most an estimate)
