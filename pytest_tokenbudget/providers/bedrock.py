"""AWS Bedrock runtime: Converse, ConverseStream, InvokeModel, InvokeModelWithResponseStream.

botocore parses these responses itself, so the functions here read botocore's parsed results
(dicts). The same operations reached over httpx, requests or aiohttp (AnthropicBedrock, LiteLLM)
are read from bytes by :class:`Runtime`, with the same functions: one reading, whatever the stack.
The bytes of a stream come in the AWS event-stream framing (decoded by
``capture/eventstream.py``); :class:`Runtime`'s accumulators turn each message into the event
botocore would have produced and hand it to :class:`ConverseEvents` or :class:`InvokeEvents`.
Converse reports ``inputTokens`` *excluding* cache reads and writes; the
plugin's input includes them. InvokeModel carries the counts in ``X-Amzn-Bedrock-*-Token-Count``
response headers whatever the model; streams end with ``amazon-bedrock-invocationMetrics`` — the
numbers Bedrock bills, preferred where a model's own events disagree with them.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any

from ..model import Usage
from .anthropic import messages_usage
from .base import Extracted, ParseError, count, load_object, sub

OPERATIONS = {
    "Converse": "bedrock.converse",
    "ConverseStream": "bedrock.converse-stream",
    "InvokeModel": "bedrock.invoke",
    "InvokeModelWithResponseStream": "bedrock.invoke-stream",
}


def converse_usage(usage: dict[str, Any]) -> Usage:
    cache_read = count(usage.get("cacheReadInputTokens")) or count(usage.get("cacheReadInputTokenCount"))
    cache_write = count(usage.get("cacheWriteInputTokens")) or count(usage.get("cacheWriteInputTokenCount"))
    return Usage(
        input_tokens=count(usage.get("inputTokens")) + cache_read + cache_write,
        cached_input_tokens=cache_read,
        cache_write_tokens=cache_write,
        output_tokens=count(usage.get("outputTokens")),
    )


def metrics_usage(metrics: dict[str, Any]) -> Usage:
    """``amazon-bedrock-invocationMetrics`` (also the shape of the token-count headers)."""
    cache_read = count(metrics.get("cacheReadInputTokenCount"))
    cache_write = count(metrics.get("cacheWriteInputTokenCount"))
    return Usage(
        input_tokens=count(metrics.get("inputTokenCount")) + cache_read + cache_write,
        cached_input_tokens=cache_read,
        cache_write_tokens=cache_write,
        output_tokens=count(metrics.get("outputTokenCount")),
    )


def header_usage(headers: Mapping[str, Any]) -> Usage | None:
    """InvokeModel's ``X-Amzn-Bedrock-Input-Token-Count`` family of headers, in any case (botocore
    and httpx lower-case them, requests and aiohttp keep the server's)."""
    prefix = "x-amzn-bedrock-"
    values = {k[len(prefix) :].lower(): v for k, v in headers.items() if k.lower().startswith(prefix)}
    if "input-token-count" not in values and "output-token-count" not in values:
        return None

    def number(name: str) -> int:
        try:
            return max(int(values.get(name, 0)), 0)
        except (TypeError, ValueError):
            return 0

    return metrics_usage(
        {
            "inputTokenCount": number("input-token-count"),
            "outputTokenCount": number("output-token-count"),
            "cacheReadInputTokenCount": number("cache-read-input-token-count"),
            "cacheWriteInputTokenCount": number("cache-write-input-token-count"),
        }
    )


def invoke_body_usage(body: bytes) -> Usage | None:
    """Usage from an InvokeModel body, for the model families that report it there."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):  # not JSON, or a JSON bomb
        return None
    if not isinstance(data, dict):
        return None
    metrics = data.get("amazon-bedrock-invocationMetrics")
    if isinstance(metrics, dict):
        return metrics_usage(metrics)
    usage = data.get("usage")
    if isinstance(usage, dict):
        if "inputTokens" in usage:  # Nova
            return converse_usage(usage)
        return messages_usage(usage)  # Anthropic Messages
    if "prompt_token_count" in data or "generation_token_count" in data:  # Llama
        return Usage(
            input_tokens=count(data.get("prompt_token_count")),
            output_tokens=count(data.get("generation_token_count")),
        )
    if "inputTextTokenCount" in data:  # Titan
        results = data.get("results")
        out = (
            sum(count(r.get("tokenCount")) for r in results if isinstance(r, dict))
            if isinstance(results, list)
            else 0
        )
        return Usage(input_tokens=count(data.get("inputTextTokenCount")), output_tokens=out)
    return None


class ConverseEvents:
    """ConverseStream events: usage in the final ``metadata`` event."""

    def __init__(self) -> None:
        self.done = False
        self.usage: Usage | None = None

    def on_event(self, event: Any) -> None:
        if not isinstance(event, dict):
            return
        if "metadata" in event:
            usage = sub(event["metadata"], "usage")
            if usage:
                self.usage = converse_usage(usage)
            self.done = True

    def result(self) -> Usage | None:
        return self.usage


class InvokeEvents:
    """InvokeModelWithResponseStream chunks: JSON payloads, the last with invocation metrics."""

    def __init__(self) -> None:
        self.done = False
        self.usage: Usage | None = None
        self._own: dict[str, Any] = {}

    def on_event(self, event: Any) -> None:
        if not isinstance(event, dict):
            return
        payload = sub(event, "chunk").get("bytes")
        if not isinstance(payload, (bytes, bytearray)):
            return
        if payload.find(b"invocationMetrics") < 0 and payload.find(b"usage") < 0:
            return
        try:
            data = json.loads(payload)
        except (ValueError, RecursionError):
            return
        if not isinstance(data, dict):
            return
        metrics = data.get("amazon-bedrock-invocationMetrics")
        if isinstance(metrics, dict):
            self.usage = metrics_usage(metrics)
            self.done = True
            return
        # A model's own usage events (Anthropic message_start / message_delta), if no metrics come.
        message_usage = sub(sub(data, "message"), "usage") or sub(data, "usage")
        self._own.update({k: v for k, v in message_usage.items() if count(v) or k not in self._own})

    def result(self) -> Usage | None:
        """Bedrock's invocation metrics when sent, else the model's own usage events."""
        if self.usage is not None:
            return self.usage
        return messages_usage(self._own) if self._own else None


# -- the same operations read from bytes (any HTTP stack) ------------------------------------------

PATHS = {
    "converse": "bedrock.converse",
    "converse-stream": "bedrock.converse-stream",
    "invoke": "bedrock.invoke",
    "invoke-with-response-stream": "bedrock.invoke-stream",
}
"""The last segment of ``/model/{modelId}/…`` → the API name the botocore path uses."""
EVENTSTREAM = "eventstream"


class Runtime:
    """One Bedrock runtime operation over plain HTTP. The model is the path's (``Route.model_hint``),
    as on the botocore path: responses name none of their own (``Extracted.model`` is None)."""

    def __init__(self, api: str) -> None:
        self.api = api
        self.streamed = api.endswith("-stream")
        self.framing = EVENTSTREAM if self.streamed else None
        """The framing this operation always answers in, whatever the content type says."""

    def parse(self, body: bytes) -> Extracted:
        if self.streamed:
            raise ParseError("expected an AWS event stream")
        if self.api == "bedrock.converse":
            usage = load_object(body).get("usage")
            return Extracted(None, converse_usage(usage) if isinstance(usage, dict) else None)
        return Extracted(None, invoke_body_usage(body))

    def parse_headers(self, headers: Mapping[str, Any]) -> Extracted | None:
        """InvokeModel's token-count headers, preferred to the body; None when absent."""
        if self.api != "bedrock.invoke":
            return None
        usage = header_usage(headers)
        return Extracted(None, usage) if usage is not None else None

    def stream(self) -> ConverseFrames | InvokeFrames:
        return InvokeFrames() if self.api == "bedrock.invoke-stream" else ConverseFrames()


class ConverseFrames:
    """ConverseStream messages (``metadata`` carries the usage) → :class:`ConverseEvents`."""

    framing = EVENTSTREAM

    def __init__(self) -> None:
        self._events = ConverseEvents()

    @property
    def done(self) -> bool:
        return self._events.done

    def on_event(self, event: bytes, data: bytes) -> None:
        if event == b"metadata":
            self._events.on_event({"metadata": _json(data)})

    def result(self) -> Extracted:
        return Extracted(None, self._events.result())


class InvokeFrames:
    """InvokeModelWithResponseStream ``chunk`` messages: ``{"bytes": base64}`` → :class:`InvokeEvents`."""

    framing = EVENTSTREAM

    def __init__(self) -> None:
        self._events = InvokeEvents()

    @property
    def done(self) -> bool:
        return self._events.done

    def on_event(self, event: bytes, data: bytes) -> None:
        if event != b"chunk":
            return
        encoded = _chunk_bytes(data)
        if encoded is None:
            return
        try:
            raw = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            return
        self._events.on_event({"chunk": {"bytes": raw}})

    def result(self) -> Extracted:
        return Extracted(None, self._events.result())


def _chunk_bytes(data: bytes) -> bytes | str | None:
    """The base64 text of a ``{"bytes": "…"}`` chunk payload: sliced out when it is the first
    member (base64 holds no quote or backslash), else read by parsing the JSON."""
    if data.startswith(b'{"bytes":"'):
        end = data.find(b'"', 10)
        if end > 0 and data.find(b"\\", 10, end) < 0:
            return data[10:end]
    encoded = _json(data).get("bytes")
    return encoded if isinstance(encoded, str) else None


def _json(data: bytes) -> dict[str, Any]:
    """An event payload as an object; anything else (not JSON, a bomb, a list) is empty."""
    try:
        return load_object(data)
    except ParseError:
        return {}
