"""Cohere chat and embed, v1 and v2.

Cohere reports two counts: ``billed_units`` (what is charged, excluding the system preamble and
tool scaffolding) and ``tokens`` (what the model processed). The plugin counts ``tokens`` — the
model's real context use, which is what budgets are about — and falls back to ``billed_units``.
v1 streams NDJSON ending in ``stream-end`` with ``response.meta``; v2 streams SSE ending in
``message-end`` with ``delta.usage``.
"""

from __future__ import annotations

from typing import Any

from ..model import Usage
from .base import Extracted, ParseError, count, load_json, sub, text


def cohere_usage(usage: dict[str, Any]) -> Usage | None:
    counts = sub(usage, "tokens") or sub(usage, "billed_units")
    if not counts:
        return None
    return Usage(
        input_tokens=count(counts.get("input_tokens")),
        cached_input_tokens=0,
        output_tokens=count(counts.get("output_tokens")),
    )


def _from_object(data: dict[str, Any]) -> tuple[str | None, Usage | None]:
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else sub(data, "meta")
    model = text(data.get("model"))
    return model, cohere_usage(usage) if usage else None


class Chat:
    def __init__(self, api: str) -> None:
        self.api = api

    def parse(self, body: bytes) -> Extracted:
        lines = [line for line in body.splitlines() if line.strip()]
        if len(lines) > 1 and not body.lstrip().startswith(b"{\n"):  # an NDJSON stream read whole
            stream = ChatStream()
            for line in lines:
                stream.on_event(b"", line)
            return stream.result()
        data = load_json(body)
        if not isinstance(data, dict):
            raise ParseError("expected a JSON object")
        model, usage = _from_object(data)
        return Extracted(model, usage)

    def stream(self) -> ChatStream:
        return ChatStream()


class ChatStream:
    framing = "sse"

    def __init__(self) -> None:
        self.done = False
        self.model: str | None = None
        self.usage: Usage | None = None

    def on_event(self, event: bytes, data: bytes) -> None:
        if (
            event != b"message-end"
            and data.find(b"stream-end", 0, 200) < 0
            and data.find(b"message-end", 0, 200) < 0
        ):
            return
        try:
            payload = load_json(data)
        except ParseError:
            return
        if not isinstance(payload, dict):
            return
        if payload.get("event_type") == "stream-end":  # v1
            _, self.usage = _from_object(sub(payload, "response"))
        else:  # v2 message-end
            self.usage = cohere_usage(sub(sub(payload, "delta"), "usage"))
        self.done = True

    def result(self) -> Extracted:
        return Extracted(self.model, self.usage)
