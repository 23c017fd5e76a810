"""A loopback server answering like the Bedrock runtime, for SDKs that send over httpx (AnthropicBedrock,
LiteLLM) and for raw httpx/httpx2/requests POSTs.

``POST /model/{modelId}/{operation}`` for ``converse``, ``converse-stream``, ``invoke`` and
``invoke-with-response-stream``. Streams are AWS event streams (prelude, headers, payload, both
CRCs: :func:`event_frame`), written one message per write and flushed, so a client reads them as
they come. InvokeModel answers with an Anthropic Messages body and, as Bedrock does, the
``X-Amzn-Bedrock-*-Token-Count`` headers (``INVOKE_HEADER_USAGE``, which differ from the body's on
purpose) — unless the model id contains ``no-headers``. A model id containing ``no-metrics`` gets an
invoke stream without ``amazon-bedrock-invocationMetrics``; ``corrupt`` gets a stream whose second
message has a wrong CRC. ``seen`` lists every request path, raw (still URL-quoted).
"""

from __future__ import annotations

import base64
import binascii
import json
import struct
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

CONVERSE_USAGE = {"inputTokens": 11, "outputTokens": 264, "totalTokens": 1303, "cacheWriteInputTokens": 1028}
CONVERSE_STREAM_USAGE = {
    "inputTokens": 12,
    "outputTokens": 250,
    "totalTokens": 1290,
    "cacheReadInputTokens": 1028,
}
INVOKE_HEADER_USAGE = {"input": 21, "output": 22}
INVOKE_BODY_USAGE = {
    "input_tokens": 5,
    "cache_read_input_tokens": 100,
    "cache_creation_input_tokens": 7,
    "output_tokens": 42,
}
STREAM_OWN_USAGE = {"input_tokens": 702, "output_tokens": 130}  # the model's own events
STREAM_METRICS = {"inputTokenCount": 702, "outputTokenCount": 98}  # what Bedrock bills
TEXT = "Hi there"


def event_frame(event_type: str, payload: dict[str, Any] | bytes, message_type: str = "event") -> bytes:
    """One AWS event-stream message (prelude, headers, payload, CRCs), as Bedrock sends them."""
    names = (":exception-type", ":content-type", ":message-type") if message_type == "exception" else None
    headers = b""
    for name, value in zip(
        names or (":event-type", ":content-type", ":message-type"),
        (event_type, "application/json", message_type),
        strict=True,
    ):
        raw = value.encode()
        headers += bytes([len(name)]) + name.encode() + b"\x07" + struct.pack(">H", len(raw)) + raw
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    total = 12 + len(headers) + len(body) + 4
    prelude = struct.pack(">II", total, len(headers))
    prelude += struct.pack(">I", binascii.crc32(prelude))
    message = prelude + headers + body
    return message + struct.pack(">I", binascii.crc32(message))


def chunk_frame(event: dict[str, Any]) -> bytes:
    """An InvokeModelWithResponseStream ``chunk``: the model's own event, base64 in ``bytes``."""
    return event_frame("chunk", {"bytes": base64.b64encode(json.dumps(event).encode()).decode()})


def anthropic_message(model: str, usage: dict[str, int]) -> dict[str, Any]:
    return {
        "id": "msg_bdrk_01",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": TEXT}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": usage,
    }


def invoke_stream_events(model: str, metrics: bool = True) -> list[dict[str, Any]]:
    """An Anthropic message stream as Bedrock wraps it; the last chunk carries the invocation metrics."""
    message = anthropic_message(model, {"input_tokens": STREAM_OWN_USAGE["input_tokens"], "output_tokens": 1})
    message["content"] = []
    message["stop_reason"] = None
    stop: dict[str, Any] = {"type": "message_stop"}
    if metrics:
        stop["amazon-bedrock-invocationMetrics"] = {**STREAM_METRICS, "invocationLatency": 9}
    return [
        {"type": "message_start", "message": message},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": TEXT}},
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": STREAM_OWN_USAGE["output_tokens"]},
        },
        stop,
    ]


def converse_stream_frames() -> list[bytes]:
    return [
        event_frame("messageStart", {"role": "assistant"}),
        event_frame("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": TEXT}}),
        event_frame("contentBlockStop", {"contentBlockIndex": 0}),
        event_frame("messageStop", {"stopReason": "end_turn"}),
        event_frame("metadata", {"usage": CONVERSE_STREAM_USAGE, "metrics": {"latencyMs": 5}}),
    ]


def converse_body() -> dict[str, Any]:
    return {
        "output": {"message": {"role": "assistant", "content": [{"text": TEXT}]}},
        "stopReason": "end_turn",
        "usage": CONVERSE_USAGE,
        "metrics": {"latencyMs": 10},
    }


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.server.seen.append(self.path)
        head, _, operation = self.path.partition("?")[0].rpartition("/")
        model = unquote(head.rpartition("/model/")[2])
        if operation == "converse":
            self._send(json.dumps(converse_body()).encode(), "application/json")
        elif operation == "invoke":
            headers = {}
            if "no-headers" not in model:
                headers = {
                    "X-Amzn-Bedrock-Input-Token-Count": str(INVOKE_HEADER_USAGE["input"]),
                    "X-Amzn-Bedrock-Output-Token-Count": str(INVOKE_HEADER_USAGE["output"]),
                    "X-Amzn-Bedrock-Invocation-Latency": "9",
                }
            body = json.dumps(anthropic_message(model, INVOKE_BODY_USAGE)).encode()
            self._send(body, "application/json", headers)
        elif operation == "converse-stream":
            self._stream(converse_stream_frames())
        elif operation == "invoke-with-response-stream":
            frames = [chunk_frame(e) for e in invoke_stream_events(model, "no-metrics" not in model)]
            if "corrupt" in model:
                frames[1] = frames[1][:-1] + bytes([frames[1][-1] ^ 0xFF])
            self._stream(frames)
        else:
            self._send(b'{"message":"unknown operation"}', "application/json", status=404)

    def _send(
        self, body: bytes, content_type: str, headers: dict[str, str] | None = None, status: int = 200
    ) -> None:
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        self.send_header("x-amzn-requestid", "req-1")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _stream(self, frames: list[bytes]) -> None:
        self.send_response(200)
        self.send_header("content-type", "application/vnd.amazon.eventstream")
        self.send_header("transfer-encoding", "chunked")
        self.send_header("x-amzn-requestid", "req-1")
        self.end_headers()
        try:
            for frame in frames:
                self.wfile.write(f"{len(frame):x}\r\n".encode() + frame + b"\r\n")
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):  # the client closed the stream early
            self.close_connection = True


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    seen: list[str]


class BedrockServer:
    """Start with :meth:`start`, stop with :meth:`stop`; ``url`` is its base URL."""

    def __init__(self) -> None:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.seen = []
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    @property
    def seen(self) -> list[str]:
        return self._server.seen

    def start(self) -> BedrockServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
