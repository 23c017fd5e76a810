"""A loopback OpenAI chat-completions server whose usage numbers are what tiktoken says.

``prompt_tokens`` is the plugin's own request estimate (OpenAI's documented chat arithmetic, within
a token of what OpenAI reports for text-only requests) and ``completion_tokens`` the reply's token
count, so recorded cassettes carry realistic usage. ``x-omit-usage: 1`` leaves usage out, like a
proxy that strips it; a streamed request gets a usage chunk only with
``stream_options.include_usage``. HTTP/1.0: one connection per request, no pooled socket left open.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from pytest_tokenbudget.tokens import tokenizer

REPLY = "Hello there, budget! Nothing to report."
REPLY_PIECES = ["Hello", " there,", " budget!", " Nothing to", " report."]


def usage_for(body: dict[str, Any]) -> dict[str, int]:
    model = str(body.get("model") or "gpt-4o-mini")
    prompt = tokenizer.estimate_request("openai.chat", body, model).total
    completion = tokenizer.count(REPLY, model).tokens
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


class EchoServer:
    """Serves ``/v1/chat/completions`` on 127.0.0.1; ``requests`` counts what arrived."""

    def __init__(self) -> None:
        self.requests = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
                owner.requests += 1
                omit = self.headers.get("x-omit-usage") == "1"
                model = str(body.get("model") or "gpt-4o-mini")
                base = {"id": "c1", "created": 1, "model": model}
                if body.get("stream"):
                    events = [
                        {
                            **base,
                            "object": "chat.completion.chunk",
                            "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}],
                        }
                        for piece in REPLY_PIECES
                    ]
                    if (body.get("stream_options") or {}).get("include_usage") and not omit:
                        events.append(
                            {
                                **base,
                                "object": "chat.completion.chunk",
                                "choices": [],
                                "usage": usage_for(body),
                            }
                        )
                    data = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events)
                    self._send(data + b"data: [DONE]\n\n", "text/event-stream")
                    return
                reply: dict[str, Any] = {
                    **base,
                    "object": "chat.completion",
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": REPLY},
                            "finish_reason": "stop",
                        }
                    ],
                }
                if not omit:
                    reply["usage"] = usage_for(body)
                self._send(json.dumps(reply).encode(), "application/json")

            def _send(self, data: bytes, content_type: str) -> None:
                self.send_response(200)
                self.send_header("content-type", content_type)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
