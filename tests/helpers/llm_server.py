"""A loopback server speaking OpenAI's and Anthropic's wire formats, for the real SDKs.

Serves ``/v1/chat/completions`` (JSON, a tool call, SSE with ``stream_options.include_usage``),
``/v1/responses`` (JSON, SSE ending in ``response.completed``), ``/v1/embeddings`` and
``/v1/messages`` (JSON, SSE with ``message_start`` + ``message_delta``). Usage numbers are fixed
(the constants below, in each provider's own shape) so tests assert exact totals.

Request headers steer it, so one server serves every case:

- ``x-chunk-delay: SECONDS`` sleeps between streamed events (first-chunk timing tests);
- ``x-reply: garbage`` answers 200 with a body that is not JSON; ``x-reply: no-usage`` leaves usage
  out; ``x-status: CODE`` answers that status with the provider's error shape.

Every stream is written event by event and flushed, over HTTP/1.0 without a content length (the
end of the body is the end of the connection), so nothing is buffered on the server side.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# OpenAI chat completions: 1,250 prompt tokens of which 1,024 cached, 96 completion tokens.
CHAT_USAGE = {
    "prompt_tokens": 1250,
    "completion_tokens": 96,
    "total_tokens": 1346,
    "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": 0},
    "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
}
TOOL_USAGE = {"prompt_tokens": 310, "completion_tokens": 18, "total_tokens": 328}
STREAM_USAGE = {"prompt_tokens": 212, "completion_tokens": 42, "total_tokens": 254}
# Responses API: a reasoning model, 128 of its 180 output tokens reasoning.
RESPONSES_USAGE = {
    "input_tokens": 520,
    "input_tokens_details": {"cached_tokens": 256},
    "output_tokens": 180,
    "output_tokens_details": {"reasoning_tokens": 128},
    "total_tokens": 700,
}
EMBEDDING_USAGE = {"prompt_tokens": 8, "total_tokens": 8}
# Anthropic: input_tokens excludes the cache; here 2,048 written to it.
MESSAGES_USAGE = {
    "input_tokens": 900,
    "cache_creation_input_tokens": 2048,
    "cache_read_input_tokens": 0,
    "output_tokens": 120,
}
# Anthropic streamed: message_start carries the input (1,800 read from the cache), message_delta
# the cumulative output.
MESSAGES_STREAM_START = {
    "input_tokens": 410,
    "cache_creation_input_tokens": 0,
    "cache_read_input_tokens": 1800,
    "output_tokens": 1,
}
MESSAGES_STREAM_OUTPUT = 85

CHAT_MODEL = "gpt-4o-mini-2024-07-18"
RESPONSES_MODEL = "o4-mini-2025-04-16"
EMBEDDING_MODEL = "text-embedding-3-small"
CLAUDE_MODEL = "claude-sonnet-4-6"
REPLY_PIECES = ["Your order", " #4417 shipped", " on Monday", " and arrives", " Thursday."]


def sse(events: list[tuple[str | None, dict[str, Any]]]) -> list[bytes]:
    """Server-sent events, one ``bytes`` per event."""
    out = []
    for name, data in events:
        head = b"event: " + name.encode() + b"\n" if name else b""
        out.append(head + b"data: " + json.dumps(data).encode() + b"\n\n")
    return out


def chat_completion(body: dict[str, Any]) -> dict[str, Any]:
    tools = body.get("tools")
    asked_tool = tools and not any(m.get("role") == "tool" for m in body.get("messages", []))
    if asked_tool:
        name = tools[0]["function"]["name"]
        call = {
            "id": "call_1",
            "type": "function",
            "function": {"name": name, "arguments": '{"order": 4417}'},
        }
        message: dict[str, Any] = {"role": "assistant", "content": None, "tool_calls": [call]}
        finish, usage = "tool_calls", TOOL_USAGE
    else:
        message = {"role": "assistant", "content": "".join(REPLY_PIECES), "refusal": None}
        finish, usage = "stop", CHAT_USAGE
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1_763_800_000,
        "model": CHAT_MODEL,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
        "usage": usage,
        "system_fingerprint": "fp_1",
    }


def chat_stream(body: dict[str, Any]) -> list[bytes]:
    base = {"id": "chatcmpl-2", "object": "chat.completion.chunk", "created": 1_763_800_000}
    base["model"] = CHAT_MODEL
    events: list[tuple[str | None, dict[str, Any]]] = []
    for index, piece in enumerate(REPLY_PIECES):
        delta = {"role": "assistant", "content": piece} if index == 0 else {"content": piece}
        events.append((None, {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}))
    events.append((None, {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}))
    if (body.get("stream_options") or {}).get("include_usage"):
        events.append((None, {**base, "choices": [], "usage": STREAM_USAGE}))
    return [*sse(events), b"data: [DONE]\n\n"]


def response_object(status: str, usage: dict[str, Any] | None) -> dict[str, Any]:
    text = "".join(REPLY_PIECES)
    output = [
        {"id": "rs_1", "type": "reasoning", "summary": []},
        {
            "id": "msg_1",
            "type": "message",
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": []}],
        },
    ]
    return {
        "id": "resp_1",
        "object": "response",
        "created_at": 1_763_800_000,
        "status": status,
        "model": RESPONSES_MODEL,
        "output": output if status == "completed" else [],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "usage": usage,
    }


def responses_stream() -> list[bytes]:
    events: list[tuple[str | None, dict[str, Any]]] = [
        ("response.created", {"type": "response.created", "sequence_number": 0,
                              "response": response_object("in_progress", None)}),
    ]  # fmt: skip
    reasoning, message = response_object("completed", None)["output"]
    for output_index, item in enumerate([reasoning, {**message, "status": "in_progress", "content": []}]):
        added = {"type": "response.output_item.added", "output_index": output_index, "item": item}
        events.append(("response.output_item.added", {**added, "sequence_number": len(events)}))
    part = {"type": "output_text", "text": "", "annotations": []}
    events.append(("response.content_part.added", {"type": "response.content_part.added",
                   "sequence_number": len(events), "item_id": "msg_1", "output_index": 1,
                   "content_index": 0, "part": part}))  # fmt: skip
    for piece in REPLY_PIECES:
        events.append(
            (
                "response.output_text.delta",
                {
                    "type": "response.output_text.delta",
                    "sequence_number": len(events),
                    "item_id": "msg_1",
                    "output_index": 1,
                    "content_index": 0,
                    "delta": piece,
                    "logprobs": [],
                },
            )
        )
    completed = response_object("completed", RESPONSES_USAGE)
    events.append(
        (
            "response.completed",
            {"type": "response.completed", "sequence_number": len(events), "response": completed},
        )
    )
    return sse(events)


def message(usage: dict[str, int]) -> dict[str, Any]:
    return {
        "id": "msg_01",
        "type": "message",
        "role": "assistant",
        "model": CLAUDE_MODEL,
        "content": [{"type": "text", "text": "".join(REPLY_PIECES)}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": usage,
    }


def messages_stream() -> list[bytes]:
    start = {**message(MESSAGES_STREAM_START), "content": [], "stop_reason": None}
    events: list[tuple[str | None, dict[str, Any]]] = [
        ("message_start", {"type": "message_start", "message": start}),
        ("content_block_start", {"type": "content_block_start", "index": 0,
                                 "content_block": {"type": "text", "text": ""}}),
    ]  # fmt: skip
    for piece in REPLY_PIECES:
        delta = {"type": "text_delta", "text": piece}
        events.append(("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta}))
    events += [
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("message_delta", {"type": "message_delta",
                           "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                           "usage": {"output_tokens": MESSAGES_STREAM_OUTPUT}}),
        ("message_stop", {"type": "message_stop"}),
    ]  # fmt: skip
    return sse(events)


def embeddings(body: dict[str, Any]) -> dict[str, Any]:
    inputs = body.get("input")
    texts = [str(text) for text in inputs] if isinstance(inputs, list) else [str(inputs)]
    data = [{"object": "embedding", "index": i, "embedding": _vector(t)} for i, t in enumerate(texts)]
    return {"object": "list", "data": data, "model": EMBEDDING_MODEL, "usage": EMBEDDING_USAGE}


def _vector(text: str) -> list[float]:
    """A deterministic 64-dimensional "embedding": texts sharing words point the same way."""
    vector = [0.0] * 64
    for word in text.lower().split():
        digest = hashlib.blake2b(word.strip(".,?!").encode(), digest_size=64).digest()
        for index, byte in enumerate(digest):
            vector[index] += (byte - 127.5) / 127.5
    return [round(value, 4) for value in vector]


def _without_usage(data: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in data.items() if key != "usage"}


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("content-length", 0)))
        self.server.requests += 1  # type: ignore[attr-defined]
        body = json.loads(raw or b"{}")
        path = self.path.split("?", 1)[0]
        reply = self.headers.get("x-reply", "")
        if path not in ("/v1/chat/completions", "/v1/responses", "/v1/embeddings", "/v1/messages"):
            self._send([b'{"error": {"message": "not found"}}'], "application/json", 404)
        elif status := self.headers.get("x-status"):
            error = {"error": {"type": "server_error", "message": "failed on purpose"}}
            if path.endswith("/messages"):
                error = {"type": "error", "error": {"type": "api_error", "message": "failed on purpose"}}
            self._send([json.dumps(error).encode()], "application/json", int(status))
        elif reply == "garbage":
            self._send([b"<html>upstream proxy error, not JSON</html>"], "application/json")
        elif body.get("stream"):
            events = {
                "/v1/chat/completions": lambda: chat_stream(body),
                "/v1/responses": responses_stream,
                "/v1/messages": messages_stream,
            }[path]()
            self._send(events, "text/event-stream", delay=float(self.headers.get("x-chunk-delay", 0)))
        else:
            data = {
                "/v1/chat/completions": lambda: chat_completion(body),
                "/v1/responses": lambda: response_object("completed", RESPONSES_USAGE),
                "/v1/embeddings": lambda: embeddings(body),
                "/v1/messages": lambda: message(MESSAGES_USAGE),
            }[path]()
            if reply == "no-usage":
                data = _without_usage(data)
            self._send([json.dumps(data).encode()], "application/json")

    def _send(self, pieces: list[bytes], content_type: str, status: int = 200, delay: float = 0.0) -> None:
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("request-id", "req_loopback")
        if len(pieces) == 1:
            self.send_header("content-length", str(len(pieces[0])))
        self.end_headers()
        try:
            for index, piece in enumerate(pieces):
                if delay and index:
                    time.sleep(delay)
                self.wfile.write(piece)
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):  # a client that closed a stream early
            self.close_connection = True


class _Server(ThreadingHTTPServer):
    request_queue_size = 256  # concurrent SDK calls must not meet a full backlog (and retry)


class LLMServer:
    """``start()``/``stop()``; ``url`` is the base URL (append ``/v1`` for OpenAI's SDK)."""

    def __init__(self) -> None:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.requests = 0  # type: ignore[attr-defined]
        self.url = f"http://127.0.0.1:{self._server.server_port}"

    @property
    def requests(self) -> int:
        """How many requests arrived (SDK retries included)."""
        return int(self._server.requests)  # type: ignore[attr-defined]

    def start(self) -> LLMServer:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
