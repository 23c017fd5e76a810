"""Ollama's native API: ``/api/chat``, ``/api/generate`` (NDJSON streams), ``/api/embed``.

The final object (``"done": true``) carries ``prompt_eval_count`` (input) and ``eval_count``
(output). A prompt served from Ollama's cache may omit ``prompt_eval_count`` (and a reply its
``eval_count``): that is a gap, not 0 tokens; it is estimated and the call marked ``estimated``.
A count that is present stays as reported, 0 included.
"""

from __future__ import annotations

from typing import Any

from ..model import Usage
from .base import Extracted, ParseError, count, load_json, text


def _usage(data: dict[str, Any]) -> Usage | None:
    if "prompt_eval_count" not in data and "eval_count" not in data:
        return None
    return Usage(
        input_tokens=count(data.get("prompt_eval_count")), output_tokens=count(data.get("eval_count"))
    )


def _gaps(data: dict[str, Any], api: str) -> tuple[str, ...]:
    """The counts a final object left out (an embedding has no output to count)."""
    gaps: tuple[str, ...] = ("input_tokens",) if data.get("prompt_eval_count") is None else ()
    if data.get("eval_count") is None and api != "ollama.embed":
        gaps += ("output_tokens",)
    return gaps


class Native:
    def __init__(self, api: str) -> None:
        self.api = api

    def parse(self, body: bytes) -> Extracted:
        stream = NativeStream(self.api)
        lines = [line for line in body.splitlines() if line.strip()]
        if not lines:
            raise ParseError("empty body")
        for line in lines:
            stream.on_event(b"", line)
        if stream.model is None and stream.usage is None:
            load_json(lines[-1])  # raise a ParseError for a body that is not JSON at all
        return stream.result()

    def stream(self) -> NativeStream:
        return NativeStream(self.api)


class NativeStream:
    framing = "ndjson"

    def __init__(self, api: str = "ollama.chat") -> None:
        self.api = api
        self.done = False
        self.model: str | None = None
        self.usage: Usage | None = None
        self.gaps: tuple[str, ...] = ()

    def on_event(self, event: bytes, data: bytes) -> None:
        final = (
            data.find(b'"done":true') >= 0
            or data.find(b'"done": true') >= 0
            or data.find(b"prompt_eval_count") >= 0
        )
        if self.model is not None and not final:  # /api/embed has no "done", only the counts
            return
        try:
            item = load_json(data)
        except ParseError:
            return
        if not isinstance(item, dict):
            return
        self.model = self.model or text(item.get("model"))
        usage = _usage(item)
        if usage is not None:
            self.usage = usage
            self.gaps = _gaps(item, self.api)
        if item.get("done") is True or usage is not None:
            self.done = True

    def result(self) -> Extracted:
        return Extracted(self.model, self.usage, self.gaps)
