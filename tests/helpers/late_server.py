"""The loopback server of ``llm_server.py``, plus billed usage that is late or nested.

* OpenAI Responses in background mode: ``POST /v1/responses`` with ``background: true`` answers
  ``queued`` (``usage: null``) with a fresh id; ``GET /v1/responses/{id}`` answers ``in_progress``
  for the first ``x-polls`` polls (a header of the POST, default 1; ``never``: it never finishes),
  then ``completed`` with :data:`RESPONSES_USAGE`; ``?stream=true&starting_after=N`` resumes the
  response's event stream after sequence number N (finished, whatever the polls). A streamed
  background POST sends its events up to ``x-cut-after`` (a header: that many events, then the
  connection closes, as a dropped stream does).
* Anthropic ``usage.iterations`` (``x-reply: iterations`` on ``POST /v1/messages``): a compaction
  step, two executor steps and an advisor step on :data:`ADVISOR_MODEL`, as the API reports them
  (the top level holds only the executor's message steps); streamed, ``message_start`` has the
  top level and ``message_delta`` the cumulative numbers with the iterations.
* ``x-reply: delta-zeros`` on a streamed ``/v1/messages``: ``message_start`` reports a cache read,
  ``message_delta`` repeats every field, the cache read now 0 (which wins).
"""

from __future__ import annotations

import itertools
import json
import threading
from typing import Any

from llm_server import (
    CLAUDE_MODEL,
    RESPONSES_USAGE,
    LLMServer,
    _Handler,
    _Server,
    message,
    messages_stream,
    response_object,
    responses_stream,
    sse,
)

ADVISOR_MODEL = "claude-opus-4-6"
# The executor's two message steps (the top level is their sum), a compaction step before them
# (in no top-level number), an advisor step on another model (in no top-level number either).
ITERATIONS = [
    {"type": "compaction", "input_tokens": 51200, "output_tokens": 90,
     "cache_read_input_tokens": 1000, "cache_creation_input_tokens": 0},
    {"type": "message", "input_tokens": 120, "output_tokens": 3,
     "cache_read_input_tokens": 2000, "cache_creation_input_tokens": 0},
    {"type": "advisor_message", "model": ADVISOR_MODEL, "input_tokens": 2500, "output_tokens": 40,
     "cache_read_input_tokens": 0, "cache_creation_input_tokens": 300},
    {"type": "message", "input_tokens": 109, "output_tokens": 2,
     "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0, "model": CLAUDE_MODEL},
]  # fmt: skip
ITERATIONS_TOP = {  # what the top level says: the executor's message steps only
    "input_tokens": 229,
    "output_tokens": 5,
    "cache_read_input_tokens": 2000,
    "cache_creation_input_tokens": 0,
}
DELTA_ZEROS_START = {"input_tokens": 410, "cache_read_input_tokens": 1800, "cache_creation_input_tokens": 0,
                     "output_tokens": 1}  # fmt: skip
DELTA_ZEROS_FINAL = {"input_tokens": 2210, "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0,
                     "output_tokens": 85}  # fmt: skip

_ids = itertools.count(1)


def _background_events(response_id: str) -> list[dict[str, Any]]:
    """The events of one background response, as (name, data) dicts with its id and flag."""
    events = []
    for raw in responses_stream():
        _, _, data = raw.partition(b"data: ")
        payload = json.loads(data)
        if "response" in payload:
            payload["response"] = {**payload["response"], "id": response_id, "background": True}
        events.append(payload)
    first = events[0]["response"]
    events[0]["response"] = {**first, "status": "queued"}
    events.insert(1, {"type": "response.in_progress", "sequence_number": 1,
                      "response": {**first, "status": "in_progress"}})  # fmt: skip
    for number, event in enumerate(events):
        event["sequence_number"] = number
    return events


class _LateHandler(_Handler):
    def do_POST(self) -> None:
        if self.path.split("?", 1)[0] == "/v1/responses":
            raw = self.rfile.read(int(self.headers.get("content-length", 0)))
            body = json.loads(raw or b"{}")
            if body.get("background"):
                self.server.requests += 1  # type: ignore[attr-defined]
                self._background(body)
                return
            self.rfile = _Replay(raw, self.rfile)  # the plain handler reads it again
        elif self.headers.get("x-reply") in ("iterations", "delta-zeros"):
            raw = self.rfile.read(int(self.headers.get("content-length", 0)))
            self.server.requests += 1  # type: ignore[attr-defined]
            body = json.loads(raw or b"{}")
            self._messages(self.headers["x-reply"], bool(body.get("stream")))
            return
        super().do_POST()

    def _background(self, body: dict[str, Any]) -> None:
        response_id = f"resp_bg_{next(_ids)}"
        polls = self.headers.get("x-polls", "1")
        with self.server.lock:  # type: ignore[attr-defined]
            self.server.background[response_id] = -1 if polls == "never" else int(polls)  # type: ignore[attr-defined]
        events = _background_events(response_id)
        if body.get("stream"):
            cut = int(self.headers.get("x-cut-after", len(events)))
            self._send(sse([(e["type"], e) for e in events[:cut]]), "text/event-stream")
            return
        self._send([json.dumps(events[0]["response"]).encode()], "application/json")

    def do_GET(self) -> None:
        path, _, query = self.path.partition("?")
        self.server.requests += 1  # type: ignore[attr-defined]
        response_id = path.rsplit("/", 1)[-1]
        with self.server.lock:  # type: ignore[attr-defined]
            known = 0 if response_id == "resp_1" else None  # llm_server's plain response: done
            left = self.server.background.get(response_id, known)  # type: ignore[attr-defined]
            if left is not None and left > 0:
                self.server.background[response_id] = left - 1  # type: ignore[attr-defined]
        if left is None or not path.startswith("/v1/responses/"):
            self._send([b'{"error": {"message": "not found"}}'], "application/json", 404)
            return
        params = dict(part.partition("=")[::2] for part in query.split("&") if part)
        events = _background_events(response_id)
        if params.get("stream") == "true":
            after = int(params.get("starting_after", -1))
            self._send(
                sse([(e["type"], e) for e in events if e["sequence_number"] > after]), "text/event-stream"
            )
            return
        if left != 0:  # still running (or never finishing)
            answer = events[1]["response"]
        else:
            answer = {**response_object("completed", RESPONSES_USAGE), "id": response_id}
        self._send([json.dumps(answer).encode()], "application/json")

    def _messages(self, reply: str, stream: bool) -> None:
        if reply == "iterations":
            final = {**ITERATIONS_TOP, "iterations": ITERATIONS}
            if not stream:
                self._send([json.dumps(message(final)).encode()], "application/json")
                return
            start, delta = ITERATIONS_TOP | {"output_tokens": 1}, final
        else:
            start, delta = DELTA_ZEROS_START, DELTA_ZEROS_FINAL
        events = []
        for raw in messages_stream():
            name = raw.split(b"\n", 1)[0].removeprefix(b"event: ").decode()
            payload = json.loads(raw.partition(b"data: ")[2])
            if name == "message_start":
                payload["message"]["usage"] = start
            elif name == "message_delta":
                payload["usage"] = delta
            events.append((name, payload))
        self._send(sse(events), "text/event-stream")


class _Replay:
    """A request body read already, offered again to the plain handler (then the socket)."""

    def __init__(self, data: bytes, rest: Any) -> None:
        self._data = data
        self._rest = rest

    def read(self, size: int = -1) -> bytes:
        data, self._data = self._data, b""
        return data if data or size == 0 else self._rest.read(size)


class LateServer(LLMServer):
    """:class:`LLMServer` with background responses and Anthropic iterations (see the module)."""

    def __init__(self) -> None:  # the parent's, with this module's handler
        self._server = _Server(("127.0.0.1", 0), _LateHandler)
        self._server.daemon_threads = True
        self._server.requests = 0  # type: ignore[attr-defined]
        self._server.lock = threading.Lock()  # type: ignore[attr-defined]
        self._server.background = {}  # type: ignore[attr-defined]
        self.url = f"http://127.0.0.1:{self._server.server_port}"
