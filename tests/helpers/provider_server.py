"""A loopback server speaking the wire formats of Gemini, Ollama, Cohere v2 and Mistral/OpenAI chat.

Real HTTP on 127.0.0.1 for the real SDKs (google-genai, ollama, cohere, mistralai, openai's Azure
clients) and for raw requests/aiohttp clients. Numbers are fixed so tests can assert them exactly;
a request body with ``"gzip": true`` gets a gzip-encoded response. ``ProviderServer.seen`` lists
the path (with its query) of every request, in order.

Besides the generic routes it serves Gemini ``:countTokens`` and ``:batchEmbedContents``, Ollama
``/api/generate``, and Azure OpenAI's ``/openai/deployments/{deployment}/chat/completions``, which
answers as Azure does: the model the deployment runs (``AZURE_MODEL``), not the deployment name,
and a streamed first chunk with no choices and an empty model (``prompt_filter_results`` only).

Quiet states: Ollama ``/api/chat`` for a model in ``OLLAMA_COUNTS_BY_MODEL`` reports those counts
(``OLLAMA_CACHED_MODEL`` omits ``prompt_eval_count``, as Ollama does for a cached prompt), and
chat completions for ``SSE_AS_JSON_MODEL`` answer with the event stream labelled
``application/json`` (a recorded stream replayed with the wrong content type), streamed or not.
"""

from __future__ import annotations

import gzip
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

GEMINI_USAGE = {
    "promptTokenCount": 45,
    "candidatesTokenCount": 23,
    "thoughtsTokenCount": 25,
    "cachedContentTokenCount": 10,
    "totalTokenCount": 93,
}
OLLAMA_COUNTS = {"prompt_eval_count": 17, "eval_count": 50}
COHERE_USAGE = {
    "billed_units": {"input_tokens": 7, "output_tokens": 115},
    "tokens": {"input_tokens": 69, "output_tokens": 116},
}
CHAT_USAGE = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
OLLAMA_GENERATE_COUNTS = {"prompt_eval_count": 26, "eval_count": 298}
OLLAMA_CACHED_MODEL = "llama3-cached"
OLLAMA_COUNTS_BY_MODEL = {
    OLLAMA_CACHED_MODEL: {"eval_count": 50},  # the prompt came from Ollama's cache
    "llama3-zero": {"prompt_eval_count": 0, "eval_count": 50},  # reported, and 0
}
SSE_AS_JSON_MODEL = "sse-as-json"
GEMINI_COUNT_TOKENS = 31
GEMINI_EMBED_TOKENS = 6
AZURE_MODEL = "gpt-4o-2024-11-20"
AZURE_USAGE = {
    "prompt_tokens": 1536,
    "completion_tokens": 64,
    "total_tokens": 1600,
    "prompt_tokens_details": {"cached_tokens": 1280, "audio_tokens": 0},
    "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
}
AZURE_STREAM_USAGE = {"prompt_tokens": 333, "completion_tokens": 21, "total_tokens": 354}
_FILTER = {"hate": {"filtered": False, "severity": "safe"}}


def _gemini_chunk(text: str, usage: dict[str, int], finish: bool) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"parts": [{"text": text}], "role": "model"}, "index": 0}
    if finish:
        candidate["finishReason"] = "STOP"
    return {
        "candidates": [candidate],
        "usageMetadata": usage,
        "modelVersion": "gemini-2.5-flash",
        "responseId": "r1",
    }


def _azure_chat(body: dict[str, Any]) -> dict[str, Any]:
    choice = {
        "index": 0,
        "message": {"role": "assistant", "content": "Hi", "refusal": None},
        "finish_reason": "stop",
        "logprobs": None,
        "content_filter_results": _FILTER,
    }
    return {
        "id": "chatcmpl-az1",
        "object": "chat.completion",
        "created": 1,
        "model": AZURE_MODEL,
        "choices": [choice],
        "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": _FILTER}],
        "system_fingerprint": "fp_az",
        "usage": AZURE_USAGE,
    }


def _azure_chat_stream(body: dict[str, Any]) -> bytes:
    with_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    base: dict[str, Any] = {"id": "chatcmpl-az2", "object": "chat.completion.chunk", "created": 1}
    base["model"] = AZURE_MODEL
    if with_usage:
        base["usage"] = None  # Azure sends "usage": null in every chunk before the last
    filters = {  # Azure's first chunk: the prompt's content filter results, no choices, no model
        "choices": [],
        "created": 0,
        "id": "",
        "model": "",
        "object": "",
        "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": _FILTER}],
    }
    events: list[tuple[str | None, dict[str, Any]]] = [(None, filters)]
    for delta, finish in (
        ({"role": "assistant", "content": "Hi"}, None),
        ({"content": " there"}, None),
        ({}, "stop"),
    ):
        choice = {"index": 0, "delta": delta, "finish_reason": finish, "content_filter_results": {}}
        events.append((None, {**base, "choices": [choice]}))
    if with_usage:
        events.append((None, {**base, "choices": [], "usage": AZURE_STREAM_USAGE}))
    return _sse(events) + b"data: [DONE]\n\n"


def _sse(events: list[tuple[str | None, dict[str, Any]]]) -> bytes:
    out = b""
    for name, data in events:
        if name:
            out += b"event: " + name.encode() + b"\n"
        out += b"data: " + json.dumps(data).encode() + b"\n\n"
    return out


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.0: one connection per request, so SDK connection pools leave no socket open.

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("content-length", 0)))
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = {}
        path = self.path.split("?", 1)[0]
        self.server.seen.append(self.path)  # type: ignore[attr-defined]
        if path.endswith(":countTokens"):
            self._json({"totalTokens": GEMINI_COUNT_TOKENS}, body)
        elif path.endswith(":batchEmbedContents"):
            embeddings = [{"values": [0.1, 0.2, 0.3]} for _ in body.get("requests", [])]
            usage = {"promptTokenCount": GEMINI_EMBED_TOKENS, "totalTokenCount": GEMINI_EMBED_TOKENS}
            self._json({"embeddings": embeddings, "usageMetadata": usage}, body)
        elif path.startswith("/openai/deployments/") and path.endswith("/chat/completions"):
            if body.get("stream"):
                self._send(_azure_chat_stream(body), "text/event-stream", body)
            else:
                self._json(_azure_chat(body), body)
        elif path == "/api/generate":
            model = body.get("model", "llama3")
            final = {
                "model": model,
                "created_at": "2025-01-01T00:00:00Z",
                "response": "",
                "done": True,
                "done_reason": "stop",
                "total_duration": 1000,
                **OLLAMA_GENERATE_COUNTS,
            }
            if body.get("stream", True):
                lines = [
                    {"model": model, "created_at": "2025-01-01T00:00:00Z", "response": w, "done": False}
                    for w in ("Why", " blue")
                ]
                data = b"".join(json.dumps(x).encode() + b"\n" for x in [*lines, final])
                self._send(data, "application/x-ndjson", body)
            else:
                self._json({**final, "response": "Why blue"}, body)
        elif path.endswith(":generateContent"):
            self._json(_gemini_chunk("Hello", GEMINI_USAGE, True), body)
        elif path.endswith(":streamGenerateContent"):
            partial = {"promptTokenCount": 45, "candidatesTokenCount": 5, "totalTokenCount": 50}
            chunks = [_gemini_chunk("Hel", partial, False), _gemini_chunk("lo", GEMINI_USAGE, True)]
            if "alt=sse" in self.path:
                self._send(_sse([(None, c) for c in chunks]), "text/event-stream", body)
            else:  # without alt=sse Gemini streams one JSON array
                self._send(json.dumps(chunks).encode(), "application/json", body)
        elif path == "/api/chat":
            final = {
                "model": "llama3",
                "message": {"role": "assistant", "content": ""},
                "done": True,
                **OLLAMA_COUNTS_BY_MODEL.get(body.get("model", ""), OLLAMA_COUNTS),
            }
            if body.get("stream", True):
                lines = [
                    {"model": "llama3", "message": {"role": "assistant", "content": w}, "done": False}
                    for w in ("Hi", " there")
                ]
                data = b"".join(json.dumps(x).encode() + b"\n" for x in [*lines, final])
                self._send(data, "application/x-ndjson", body)
            else:
                final["message"]["content"] = "Hi there"
                self._json(final, body)
        elif path == "/v2/chat":
            message = {"role": "assistant", "content": [{"type": "text", "text": "Hi"}]}
            if body.get("stream"):
                events = [
                    (
                        "message-start",
                        {"type": "message-start", "id": "c1", "delta": {"message": {"role": "assistant"}}},
                    ),
                    (
                        "content-delta",
                        {
                            "type": "content-delta",
                            "index": 0,
                            "delta": {"message": {"content": {"text": "Hi"}}},
                        },
                    ),
                    (
                        "message-end",
                        {
                            "type": "message-end",
                            "delta": {"finish_reason": "COMPLETE", "usage": COHERE_USAGE},
                        },
                    ),
                ]
                self._send(_sse(events), "text/event-stream", body)
            else:
                self._json(
                    {"id": "c1", "finish_reason": "COMPLETE", "message": message, "usage": COHERE_USAGE}, body
                )
        elif path.endswith("/chat/completions"):
            model = body.get("model", "mistral-small-latest")
            if body.get("stream") or model == SSE_AS_JSON_MODEL:
                delta = {"id": "x", "object": "chat.completion.chunk", "created": 1, "model": model}
                events = [
                    (
                        None,
                        {
                            **delta,
                            "choices": [
                                {
                                    "index": 0,
                                    "delta": {"role": "assistant", "content": "Hi"},
                                    "finish_reason": None,
                                }
                            ],
                        },
                    ),
                    (
                        None,
                        {
                            **delta,
                            "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "stop"}],
                            "usage": CHAT_USAGE,
                        },
                    ),
                ]
                content_type = "application/json" if model == SSE_AS_JSON_MODEL else "text/event-stream"
                self._send(_sse(events) + b"data: [DONE]\n\n", content_type, body)
            else:
                choice = {
                    "index": 0,
                    "message": {"role": "assistant", "content": "Hi"},
                    "finish_reason": "stop",
                }
                self._json(
                    {
                        "id": "x",
                        "object": "chat.completion",
                        "created": 1,
                        "model": model,
                        "choices": [choice],
                        "usage": CHAT_USAGE,
                    },
                    body,
                )
        else:
            self._send(b'{"error": "not found"}', "application/json", body, status=404)

    def _json(self, data: dict[str, Any], request: dict[str, Any]) -> None:
        self._send(json.dumps(data).encode(), "application/json", request)

    def _send(self, data: bytes, content_type: str, request: dict[str, Any], status: int = 200) -> None:
        self.send_response(status)
        self.send_header("content-type", content_type)
        if request.get("gzip"):
            data = gzip.compress(data)
            self.send_header("content-encoding", "gzip")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class ProviderServer:
    """Start with :meth:`start`, stop with :meth:`stop`; ``url`` is the base URL."""

    def __init__(self) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.seen = []  # type: ignore[attr-defined]
        self.url = f"http://127.0.0.1:{self._server.server_port}"

    @property
    def seen(self) -> list[str]:
        """The path and query of every request so far, in order."""
        return list(self._server.seen)  # type: ignore[attr-defined]

    def start(self) -> ProviderServer:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
