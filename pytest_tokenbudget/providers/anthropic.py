"""Anthropic Messages API, streamed and not.

Anthropic reports ``input_tokens`` *excluding* cache reads and writes; this plugin's
``input_tokens`` includes both, so they are added here. In a stream, ``message_start`` carries the
input (and a placeholder output); ``message_delta`` carries the final cumulative output and, on
newer API versions, repeats the input and cache fields (and ``iterations``), which then win — a
zero too: a key present in ``message_delta`` replaces ``message_start``'s value, an absent one
keeps it.

With server-side compaction, the advisor tool and similar, the billed usage is the sum of
``usage.iterations`` (one entry per internal step; a compaction step is not in the top-level
numbers at all). Each entry is counted at its own ``model`` (absent: the response's model); the
steps on other models (the advisor's) are returned as :attr:`Extracted.parts`.
"""

from __future__ import annotations

from dataclasses import replace
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


def messages_extracted(model: str | None, usage: Any) -> Extracted:
    """What a Messages ``usage`` object bills: the top level, or the sum of its ``iterations``
    per model (``model``'s share as the usage, the other models' as parts)."""
    if not isinstance(usage, dict):
        return Extracted(model, None)
    iterations = usage.get("iterations")
    steps = [step for step in iterations if isinstance(step, dict)] if isinstance(iterations, list) else []
    if not steps:
        return Extracted(model, messages_usage(usage))
    by_model: dict[str | None, Usage] = {}
    for step in steps:
        step_model = text(step.get("model"))
        if step_model == model:
            step_model = None
        found = messages_usage(step)
        by_model[step_model] = by_model[step_model] + found if step_model in by_model else found
    own = by_model.pop(None, Usage())
    thinking = count(sub(usage, "output_tokens_details").get("thinking_tokens"))
    if thinking and not own.reasoning_tokens:  # reported for the whole response: its model's
        own = replace(own, reasoning_tokens=min(thinking, own.output_tokens))
    parts = tuple((name, part) for name, part in by_model.items() if name is not None)
    if model is None and parts and not own:  # no model named at the top: the first step's
        (model, own), parts = parts[0], parts[1:]
    return Extracted(model, own, parts=parts)


class Messages:
    """``/v1/messages``."""

    api = "anthropic.messages"

    def parse(self, body: bytes) -> Extracted:
        data = load_object(body)
        return messages_extracted(text(data.get("model")), data.get("usage"))

    def stream(self) -> MessagesStream:
        return MessagesStream()


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
            for key, value in sub(payload, "usage").items():
                if value is not None:  # a present key wins, a zero too (null: as if absent)
                    self.raw[key] = value

    def result(self) -> Extracted:
        return messages_extracted(self.model, self.raw) if self.raw else Extracted(self.model, None)
