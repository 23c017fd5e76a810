"""Capture AWS Bedrock calls made through boto3/botocore.

botocore does not use httpx: it sends with urllib3 and parses responses itself. One class-level
wrapper around ``BaseClient._make_api_call`` (the interception point OpenTelemetry's botocore
instrumentation uses too) sees every Bedrock runtime operation, whatever served the response —
AWS, a vcrpy cassette (vcrpy patches botocore's connection below this), or botocore's Stubber.
Streams (``ConverseStream``, ``InvokeModelWithResponseStream``) are passed through event by event
as the caller iterates them. The send is marked as inside a capture: a lower layer (the stdlib
``http.client`` under urllib3) sees it and does not count it again.
"""

from __future__ import annotations

import functools
import io
import sys
from typing import Any
from urllib.parse import urlsplit

from ..model import CallState
from ..providers import Route
from ..providers.base import Extracted
from ..providers.bedrock import (
    OPERATIONS,
    ConverseEvents,
    InvokeEvents,
    converse_usage,
    header_usage,
    invoke_body_usage,
)
from . import replay
from .recorder import Exchange, Recorder, enter_capture, leave_capture

_ORIGINAL = "_tokenbudget_original_make_api_call"


class _NoParser:
    """Bedrock responses arrive parsed by botocore; the byte-level parser is never used."""

    api = "bedrock"

    def parse(self, body: bytes) -> Extracted:  # pragma: no cover - never called
        raise NotImplementedError

    def stream(self) -> Any:  # pragma: no cover - never called
        raise NotImplementedError


_NO_PARSER = _NoParser()


def install(recorder: Recorder) -> bool:
    """Wrap botocore's client when botocore has been imported; True when wrapped now."""
    client_module = sys.modules.get("botocore.client")
    if client_module is None:
        return False
    BaseClient = client_module.BaseClient
    if _ORIGINAL in BaseClient.__dict__:
        return False
    original = BaseClient._make_api_call

    @functools.wraps(original)
    def _make_api_call(self: Any, operation_name: str, api_params: dict[str, Any]) -> Any:
        api = OPERATIONS.get(operation_name)
        if api is None or self.meta.service_model.service_name != "bedrock-runtime":
            return original(self, operation_name, api_params)
        model = str(api_params.get("modelId") or "unknown")
        host = urlsplit(self.meta.endpoint_url).hostname or ""
        exchange = recorder.start(Route("bedrock", api, host, _NO_PARSER, model), api_params)
        replay.ensure_installed()
        mark = replay.mark()
        token = enter_capture()
        try:
            result = original(self, operation_name, api_params)
        except BaseException as exc:
            if replay.replayed_since(mark):
                exchange.source = "replayed"
            recorder.failed(exchange, exc)
            raise
        finally:
            leave_capture(token)
        if replay.replayed_since(mark):
            exchange.source = "replayed"
        try:
            _observe(recorder, exchange, operation_name, model, result)
        except Exception as exc:  # hostile or unforeseen result: listed as unparsed, never raised
            recorder.unparsed(exchange, _status(result), exc)
        return result

    setattr(BaseClient, _ORIGINAL, original)
    BaseClient._make_api_call = _make_api_call
    return True


def uninstall() -> None:
    client_module = sys.modules.get("botocore.client")
    if client_module is None:
        return
    cls = client_module.BaseClient
    original = cls.__dict__.get(_ORIGINAL)
    if original is not None:
        cls._make_api_call = original
        delattr(cls, _ORIGINAL)


def _status(result: Any) -> int:
    metadata = result.get("ResponseMetadata", {}) if isinstance(result, dict) else {}
    try:
        return int(metadata.get("HTTPStatusCode") or 200)
    except (TypeError, ValueError, AttributeError):
        return 200


def _observe(recorder: Recorder, exchange: Exchange, operation: str, model: str, result: Any) -> None:
    metadata = result.get("ResponseMetadata", {}) if isinstance(result, dict) else {}
    status = _status(result)
    if operation == "Converse":
        usage = result.get("usage")
        parsed = converse_usage(usage) if isinstance(usage, dict) else None
        recorder.parsed(exchange, status, Extracted(model, parsed))
    elif operation == "InvokeModel":
        usage = header_usage(metadata.get("HTTPHeaders") or {})
        if usage is None:
            usage = _invoke_body(result)
        recorder.parsed(exchange, status, Extracted(model, usage))
    elif operation == "ConverseStream" and "stream" in result:
        result["stream"] = _EventTap(result["stream"], ConverseEvents(), recorder, exchange, status, model)
    elif operation == "InvokeModelWithResponseStream" and "body" in result:
        result["body"] = _EventTap(result["body"], InvokeEvents(), recorder, exchange, status, model)
    else:
        recorder.parsed(exchange, status, Extracted(model, None))


def _invoke_body(result: dict[str, Any]) -> Any:
    """Read an InvokeModel body for its usage and put an identical, unread body back."""
    body = result.get("body")
    if body is None or not hasattr(body, "read"):
        return None
    from botocore.response import StreamingBody

    data = body.read()
    result["body"] = StreamingBody(io.BytesIO(data), len(data))
    return invoke_body_usage(data)


class _EventTap:
    """Passes a botocore ``EventStream`` through, event by event, watching for usage."""

    def __init__(
        self, inner: Any, events: Any, recorder: Recorder, exchange: Exchange, status: int, model: str
    ) -> None:
        self._inner = inner
        self._events = events
        self._recorder = recorder
        self._exchange = exchange
        self._status = status
        self._model = model
        self._settled = False
        self._error: Exception | None = None
        self._token = id(self)
        recorder.ledger.stream_opened(exchange.owner.nodeid, self._token, self._settle_unclosed)

    def __iter__(self) -> Any:
        on_event = self._events.on_event
        for event in self._inner:
            if self._error is None:
                try:
                    on_event(event)
                except Exception as exc:  # an event we cannot read: the stream goes on untouched
                    self._error = exc
            yield event
        self._finish(CallState.COMPLETE)

    def close(self) -> None:
        try:
            self._inner.close()
        finally:
            self._finish(CallState.COMPLETE)

    def _settle_unclosed(self) -> None:
        self._finish(CallState.UNCLOSED)

    def _finish(self, state: CallState) -> None:
        if self._settled:
            return
        self._settled = True
        self._recorder.ledger.stream_closed(self._exchange.owner.nodeid, self._token)
        if self._error is not None:
            self._recorder.unparsed(self._exchange, self._status, self._error, streamed=True)
            return
        if state == CallState.COMPLETE and not self._events.done:
            state = CallState.CLOSED_EARLY
        extracted = Extracted(self._model, self._events.result())
        self._recorder.parsed(self._exchange, self._status, extracted, streamed=True, state=state)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)
