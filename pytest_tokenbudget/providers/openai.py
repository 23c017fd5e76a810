"""OpenAI and OpenAI-compatible APIs: chat completions, completions, Responses, embeddings,
Assistants runs.

OpenAI reports cached input inside ``prompt_tokens`` and reasoning inside ``completion_tokens``,
which is already this plugin's meaning. Compatible servers vary: DeepSeek reports
``prompt_cache_hit_tokens``; Groq streams usage under ``x_groq.usage``; Perplexity, Together and
OpenRouter follow OpenAI.
"""

from __future__ import annotations

from typing import Any

from ..model import Usage
from .base import Extracted, ParseError, count, load_json, load_object, parse_large_object, sub, text


def chat_usage(usage: dict[str, Any]) -> Usage:
    """Usage of chat/completions/embeddings (``prompt_tokens``/``completion_tokens``)."""
    prompt_details = sub(usage, "prompt_tokens_details")
    completion_details = sub(usage, "completion_tokens_details")
    cached = count(prompt_details.get("cached_tokens")) or count(usage.get("prompt_cache_hit_tokens"))
    input_tokens = count(usage.get("prompt_tokens"))
    output_tokens = count(usage.get("completion_tokens"))
    if not input_tokens and not output_tokens:
        input_tokens = count(usage.get("input_tokens"))  # a few compatible servers
        output_tokens = count(usage.get("output_tokens"))
    cached = min(cached, input_tokens)
    return Usage(
        input_tokens=input_tokens,
        cached_input_tokens=cached,
        cache_write_tokens=min(count(prompt_details.get("cache_write_tokens")), input_tokens - cached),
        output_tokens=output_tokens,
        reasoning_tokens=min(count(completion_details.get("reasoning_tokens")), output_tokens),
    )


def responses_usage(usage: dict[str, Any]) -> Usage:
    """Usage of the Responses API (``input_tokens``/``output_tokens`` with details)."""
    input_tokens = count(usage.get("input_tokens"))
    output_tokens = count(usage.get("output_tokens"))
    details = sub(usage, "input_tokens_details")
    cached = min(count(details.get("cached_tokens")), input_tokens)
    return Usage(
        input_tokens=input_tokens,
        cached_input_tokens=cached,
        cache_write_tokens=min(count(details.get("cache_write_tokens")), input_tokens - cached),
        output_tokens=output_tokens,
        reasoning_tokens=min(
            count(sub(usage, "output_tokens_details").get("reasoning_tokens")), output_tokens
        ),
    )


def _usage_object(data: dict[str, Any]) -> dict[str, Any] | None:
    usage = data.get("usage")
    if isinstance(usage, dict):
        return usage
    groq = sub(sub(data, "x_groq"), "usage")
    return groq or None


class ChatCompletions:
    """``/chat/completions``, ``/completions`` and ``/embeddings``: one usage shape."""

    def __init__(self, api: str) -> None:
        self.api = api

    def parse(self, body: bytes) -> Extracted:
        data = parse_large_object(body, (b"usage", b"model")) or load_object(body)
        usage = _usage_object(data)
        return Extracted(text(data.get("model")), chat_usage(usage) if usage is not None else None)

    def stream(self) -> ChatStream:
        return ChatStream()


class ChatStream:
    """SSE chunks; usage arrives in a final chunk when ``stream_options.include_usage`` is set."""

    framing = "sse"

    def __init__(self) -> None:
        self.done = False
        self.model: str | None = None
        self.usage: Usage | None = None

    def on_event(self, event: bytes, data: bytes) -> None:
        # Parse only the chunks that matter: the first (for the model) and any with usage.
        if self.model is not None and data.find(b'"usage"') < 0:
            if data.startswith(b"[DONE]"):
                self.done = True
            return
        if data.startswith(b"[DONE]"):
            self.done = True
            return
        try:
            chunk = load_json(data)
        except ParseError:
            return
        if not isinstance(chunk, dict):
            return
        if self.model is None:
            self.model = text(chunk.get("model"))
        usage = _usage_object(chunk)
        if usage is not None:
            self.usage = chat_usage(usage)

    def result(self) -> Extracted:
        return Extracted(self.model, self.usage)


_RESPONSES_TERMINAL = (b"response.completed", b"response.incomplete", b"response.failed")


_UNFINISHED = ("queued", "in_progress")


class Responses:
    """``/responses``: usage in the body, or in the streamed ``response.completed`` event.

    Also ``GET /responses/{id}`` (polling, or ``?stream=true&starting_after=N`` resuming a
    stream), which reads a response again: each result carries the response's id as its key, so
    the usage is counted once, from whichever exchange carries it. A background response
    (``background: true``) answers its POST ``queued``/``in_progress`` with no usage: pending.
    """

    api = "openai.responses"

    def parse(self, body: bytes) -> Extracted:
        data = load_object(body)
        usage = data.get("usage")
        found = responses_usage(usage) if isinstance(usage, dict) else None
        pending = found is None and data.get("status") in _UNFINISHED
        return Extracted(text(data.get("model")), found, key=text(data.get("id")), pending=pending)

    def stream(self) -> ResponsesStream:
        return ResponsesStream()


class ResponsesStream:
    framing = "sse"

    def __init__(self) -> None:
        self.done = False
        self.model: str | None = None
        self.usage: Usage | None = None
        self.key: str | None = None  # the response's id
        self.background = False

    def on_event(self, event: bytes, data: bytes) -> None:
        kind = event or b""
        if not kind:  # some servers put the type only inside the data
            head = data[:80]
            kind = next((t for t in _RESPONSES_TERMINAL if head.find(t) >= 0), b"")
            if not kind and self.model is None and head.find(b"response.created") >= 0:
                kind = b"response.created"
        if kind not in _RESPONSES_TERMINAL and (kind != b"response.created" or self.model):
            return
        try:
            payload = load_json(data)
        except ParseError:
            return
        response = sub(payload, "response")
        self.model = text(response.get("model")) or self.model
        self.key = text(response.get("id")) or self.key
        self.background = self.background or response.get("background") is True
        if kind in _RESPONSES_TERMINAL:
            self.done = True
            usage = response.get("usage")
            if isinstance(usage, dict):
                self.usage = responses_usage(usage)

    def result(self) -> Extracted:
        # A background response goes on when its stream drops: its usage may come with a poll.
        pending = self.background and not self.done
        return Extracted(self.model, self.usage, key=self.key, pending=pending)


def run_usage(usage: dict[str, Any]) -> Usage:
    """Usage of an Assistants run object: chat's shape, cached tokens under ``prompt_token_details``."""
    found = chat_usage(usage)
    if found.cached_input_tokens:
        return found
    cached = min(count(sub(usage, "prompt_token_details").get("cached_tokens")), found.input_tokens)
    if not cached:
        return found
    return Usage(
        input_tokens=found.input_tokens,
        cached_input_tokens=cached,
        cache_write_tokens=min(found.cache_write_tokens, found.input_tokens - cached),
        output_tokens=found.output_tokens,
        reasoning_tokens=found.reasoning_tokens,
    )


_RUN_PREFIX = b"thread.run."
_RUN_STEP_PREFIX = b"thread.run.step"
_RUN_TERMINAL = frozenset(
    (
        b"thread.run.completed",
        b"thread.run.incomplete",
        b"thread.run.failed",
        b"thread.run.cancelled",
        b"thread.run.expired",
    )
)
_RUN_STATUS = {  # run object status -> the event that carries it (servers without ``event:`` lines)
    b'"status":"completed"': b"thread.run.completed",
    b'"status":"incomplete"': b"thread.run.incomplete",
    b'"status":"failed"': b"thread.run.failed",
    b'"status":"cancelled"': b"thread.run.cancelled",
    b'"status":"expired"': b"thread.run.expired",
}


class AssistantsRuns:
    """``POST /threads/{id}/runs``, ``/threads/runs``, ``…/runs/{id}/submit_tool_outputs``.

    The response is a run object (usage null while the run is queued: no usage then) or, with
    ``stream: true``, SSE events. The run's usage is read once, from its terminal event
    (``thread.run.completed``, ``.incomplete``, ``.failed``, ``.cancelled``, ``.expired``);
    ``thread.run.step.completed`` events carry per-step usage that the run's total already holds.
    """

    api = "openai.assistants.run"

    def parse(self, body: bytes) -> Extracted:
        data = load_object(body)
        usage = data.get("usage")
        return Extracted(text(data.get("model")), run_usage(usage) if isinstance(usage, dict) else None)

    def stream(self) -> AssistantsRunStream:
        return AssistantsRunStream()


class AssistantsRunStream:
    framing = "sse"

    def __init__(self) -> None:
        self.done = False
        self.model: str | None = None
        self.usage: Usage | None = None

    def on_event(self, event: bytes, data: bytes) -> None:
        kind = event
        if not kind:  # the type only inside the data: a run object says so by its object and status
            if data.startswith(b"[DONE]"):
                self.done = True
                return
            if data.find(b'"object":"thread.run"') < 0:
                return
            kind = next((k for s, k in _RUN_STATUS.items() if data.find(s) >= 0), b"thread.run.in_progress")
        if kind == b"done":
            self.done = True
            return
        if kind == b"thread.run.requires_action":
            self.done = True  # the stream ends here; the run goes on with submit_tool_outputs
        if not kind.startswith(_RUN_PREFIX) or kind.startswith(_RUN_STEP_PREFIX):
            return  # message and step events: steps' usage is part of the run's
        terminal = kind in _RUN_TERMINAL
        if not terminal and self.model is not None:
            return
        try:
            run = load_json(data)
        except ParseError:
            return
        if not isinstance(run, dict):
            return
        self.model = text(run.get("model")) or self.model
        if terminal:
            self.done = True
            usage = run.get("usage")
            if isinstance(usage, dict):
                self.usage = run_usage(usage)

    def result(self) -> Extracted:
        return Extracted(self.model, self.usage)
