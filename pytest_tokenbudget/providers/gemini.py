"""Google Gemini and Vertex AI (google-genai): generateContent, streams, embeddings, Interactions.

``usageMetadata.promptTokenCount`` includes ``cachedContentTokenCount``; thoughts are reported
*beside* the candidates (``thoughtsTokenCount``), so output = candidates + thoughts here, with the
thoughts as reasoning. Tool-use prompt tokens are input. Streams arrive as SSE (``alt=sse``) or as
one JSON array streamed element by element; usage is cumulative, so the last report wins. The
model comes from ``modelVersion`` or, failing that, the request path (``models/NAME:method``).
"""

from __future__ import annotations

from typing import Any

from ..model import Usage
from .base import Extracted, ParseError, count, load_json, sub, text


def generate_usage(meta: dict[str, Any]) -> Usage:
    prompt = count(meta.get("promptTokenCount")) + count(meta.get("toolUsePromptTokenCount"))
    thoughts = count(meta.get("thoughtsTokenCount"))
    output = count(meta.get("candidatesTokenCount")) + thoughts
    return Usage(
        input_tokens=prompt,
        cached_input_tokens=min(count(meta.get("cachedContentTokenCount")), prompt),
        output_tokens=output,
        reasoning_tokens=thoughts,
    )


def interactions_usage(usage: dict[str, Any]) -> Usage:
    prompt = count(usage.get("total_input_tokens")) + count(usage.get("total_tool_use_tokens"))
    thoughts = count(usage.get("total_thought_tokens"))
    return Usage(
        input_tokens=prompt,
        cached_input_tokens=min(count(usage.get("total_cached_tokens")), prompt),
        output_tokens=count(usage.get("total_output_tokens")) + thoughts,
        reasoning_tokens=thoughts,
    )


class GenerateContent:
    """``:generateContent``, ``:streamGenerateContent``, ``:embedContent``, ``:batchEmbedContents``."""

    def __init__(self, api: str) -> None:
        self.api = api

    def parse(self, body: bytes) -> Extracted:
        data = load_json(body)
        chunks = data if isinstance(data, list) else [data]  # a JSON-array stream read whole
        stream = GenerateStream()
        for chunk in chunks:
            stream.take(chunk)
        if not chunks or not all(isinstance(c, dict) for c in chunks):
            raise ParseError("expected a JSON object or an array of objects")
        return stream.result()

    def stream(self) -> GenerateStream:
        return GenerateStream()


class GenerateStream:
    framing = "sse"

    def __init__(self) -> None:
        self.done = False
        self.model: str | None = None
        self.usage: Usage | None = None

    def on_event(self, event: bytes, data: bytes) -> None:
        if self.model is not None and data.find(b"usageMetadata") < 0:
            return
        try:
            chunk = load_json(data)
        except ParseError:
            return
        self.take(chunk)

    def take(self, chunk: Any) -> None:
        if not isinstance(chunk, dict):
            return
        self.model = text(chunk.get("modelVersion")) or self.model
        meta = chunk.get("usageMetadata")
        if isinstance(meta, dict):
            self.usage = generate_usage(meta)
            candidates = chunk.get("candidates")
            if isinstance(candidates, list) and any(
                isinstance(c, dict) and c.get("finishReason") for c in candidates
            ):
                self.done = True

    def result(self) -> Extracted:
        if self.usage is not None:
            self.done = True  # usage is cumulative: the last report is the call's
        return Extracted(self.model, self.usage)


class Interactions:
    """``/v1beta/interactions`` (the Interactions API): snake_case ``total_*`` usage."""

    api = "gemini.interactions"

    def parse(self, body: bytes) -> Extracted:
        data = load_json(body)
        if not isinstance(data, dict):
            raise ParseError("expected a JSON object")
        raw = data.get("usage")
        usage = interactions_usage(raw) if isinstance(raw, dict) else None
        return Extracted(text(data.get("model")), usage)

    def stream(self) -> InteractionsStream:
        return InteractionsStream()


class InteractionsStream:
    framing = "sse"

    def __init__(self) -> None:
        self.done = False
        self.model: str | None = None
        self.usage: Usage | None = None

    def on_event(self, event: bytes, data: bytes) -> None:
        if event and event != b"interaction.completed":
            return
        if (
            not event
            and data.find(b"interaction.completed", 0, 200) < 0
            and data.find(b'"status":"completed"') < 0
        ):
            return
        try:
            payload = load_json(data)
        except ParseError:
            return
        interaction = sub(payload, "interaction")
        self.model = text(interaction.get("model")) or self.model
        usage = interaction.get("usage")
        if isinstance(usage, dict):
            self.usage = interactions_usage(usage)
            self.done = True

    def result(self) -> Extracted:
        return Extracted(self.model, self.usage)
