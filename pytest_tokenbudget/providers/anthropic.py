"""Anthropic Messages API, streamed and not.

Anthropic reports ``input_tokens`` *excluding* cache reads and writes; this plugin's
``input_tokens`` includes both, so they are added here. In a stream, ``message_start`` carries the
input (and a placeholder output); ``message_delta`` carries the final cumulative output and, on
newer API versions, repeats the input and cache fields, which then win.
"""

from __future__ import annotations

from typing import Any

from ..model import Usage
from .base import Extracted, ParseError, count, load_json, load_object, sub, text


def messages_usage(usage: dict[str, Any]) -> Usage:
    uncached = count(usage.get("input_tokens"))
    cache_read = count(usage.get("cache_read_input_tokens"))
    cache_write = count(usage.get("cache_creation_input_tokens"))
    output_tokens = count(usage.get("output_tokens"))
    thinking = count(sub(usage, "output_tokens_details").get("thinking_tokens"))
    return Usage(
        input_tokens=uncached + cache_read + cache_write,
        cached_input_tokens=cache_read,
        cache_write_tokens=cache_write,
        output_tokens=output_tokens,
        reasoning_tokens=min(thinking, output_tokens),
    )


class Messages:
    """``/v1/messages``."""

    api = "anthropic.messages"

    def parse(self, body: bytes) -> Extracted:
        data = load_object(body)
        usage = data.get("usage")
        return Extracted(text(data.get("model")), messages_usage(usage) if isinstance(usage, dict) else None)

    def stream(self) -> MessagesStream:
        return MessagesStream()


_INPUT_KEYS = ("input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")


class MessagesStream:
    framing = "sse"

    def __init__(self) -> None:
        self.done = False
        self.model: str | None = None
        self.raw: dict[str, Any] = {}

    def on_event(self, event: bytes, data: bytes) -> None:
        kind = event
        if not kind:  # recorders sometimes drop the event line; the type is in the data too
            head = data[:48]
            for candidate in (b"message_start", b"message_delta", b"message_stop"):
                if head.find(candidate) >= 0:
                    kind = candidate
                    break
        if kind == b"message_stop":
            self.done = True
            return
        if kind not in (b"message_start", b"message_delta"):
            return
        try:
            payload = load_json(data)
        except ParseError:
            return
        if kind == b"message_start":
            message = sub(payload, "message")
            self.model = text(message.get("model")) or self.model
            self.raw.update(sub(message, "usage"))
        else:
            delta_usage = sub(payload, "usage")
            for key, value in delta_usage.items():
                if key in _INPUT_KEYS and not count(value):
                    continue  # a zero repeat does not erase what message_start reported
                self.raw[key] = value

    def result(self) -> Extracted:
        return Extracted(self.model, messages_usage(self.raw) if self.raw else None)
