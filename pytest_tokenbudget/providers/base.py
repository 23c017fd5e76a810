"""What every API family provides: a body parser and a stream accumulator, both pure."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Protocol

from ..model import Usage


class ParseError(ValueError):
    """The response could not be read; the call is recorded as ``unparsed`` with this message."""


@dataclass(frozen=True, slots=True)
class Extracted:
    """What a response says about itself: the model and the usage (None when it reports none)."""

    model: str | None
    usage: Usage | None
    gaps: tuple[str, ...] = ()
    """Usage fields (``input_tokens``, ``output_tokens``) the response left out where it reports
    the rest: estimated and the call marked ``estimated``, never taken as 0."""
    parts: tuple[tuple[str, Usage], ...] = ()
    """Usage billed on other models than ``model`` (Anthropic advisor iterations), per model;
    ``usage`` holds only ``model``'s share."""
    key: str | None = None
    """The response's id when other exchanges may report the same usage (OpenAI Responses:
    ``GET /responses/{id}``): counted once per key while its owner runs."""
    pending: bool = False
    """The response is not finished (a background response queued or in progress): its usage
    comes with a later exchange, so none is estimated for this one."""


class EventSink(Protocol):
    """What a framer feeds: the events of one streamed response, as the caller consumes them.

    ``on_event`` runs for every event, so it must stay cheap: test for a marker before parsing
    JSON, and test with ``data.find(marker) >= 0`` rather than ``marker in data`` (on bytes,
    ``in`` first tries the marker as an int, and raising that TypeError costs several times the
    search itself).
    """

    framing: str  # "sse", "ndjson" or "eventstream" (AWS binary framing)

    def on_event(self, event: bytes, data: bytes) -> None:
        """One SSE event (``event`` may be empty), one NDJSON line (``event`` is empty), or one
        AWS event-stream message (its ``:event-type``, ``b"exception"`` for errors; its payload)."""


class StreamAccumulator(EventSink, Protocol):
    """An :class:`EventSink` that reads the usage of one streamed response from its events."""

    @property
    def done(self) -> bool:
        """A terminal event was seen (an attribute or a read-only property)."""

    def result(self) -> Extracted:
        """The usage seen so far (partial when the stream ended early)."""


class ApiParser(Protocol):
    """Reads one API shape (e.g. OpenAI chat completions).

    Optional, looked up with ``getattr``: ``framing``, the framing the API always answers in
    whatever the content type says (Bedrock streams: ``"eventstream"``), and
    ``parse_headers(headers) -> Extracted | None``, usage read from the response headers, taken
    instead of the body's when not None (Bedrock InvokeModel's token counts).
    """

    api: str

    def parse(self, body: bytes) -> Extracted:
        """Usage of a complete (non-streamed) body; raises :class:`ParseError`."""

    def stream(self) -> StreamAccumulator:
        """A fresh accumulator for one streamed response."""


def load_json(body: bytes | str) -> Any:
    """Parse JSON from an untrusted body; every failure is a :class:`ParseError`."""
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ParseError(f"response is not JSON ({exc.__class__.__name__})") from exc
    except RecursionError:  # a JSON bomb: nesting deeper than the interpreter allows
        raise ParseError("response JSON is nested too deeply") from None


def load_object(body: bytes | str) -> dict[str, Any]:
    data = load_json(body)
    if not isinstance(data, dict):
        raise ParseError(f"expected a JSON object, got {type(data).__name__}")
    return data


MAX_COUNT = 10**12
"""No single call uses a trillion tokens: a larger number is corrupt data, counted as 0."""


def count(value: Any) -> int:
    """A token count from untrusted JSON: an int in 0..MAX_COUNT, else 0."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return value if 0 < value <= MAX_COUNT else 0
    if isinstance(value, float) and value.is_integer() and 0 < value <= MAX_COUNT:
        return int(value)
    return 0


def sub(data: Any, key: str) -> dict[str, Any]:
    """``data[key]`` when it is an object, else an empty dict."""
    if isinstance(data, dict):
        value = data.get(key)
        if isinstance(value, dict):
            return value
    return {}


def text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


_TAIL_WINDOW = 64 * 1024
_HEAD_WINDOW = 4096
_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]|"', re.DOTALL)
"""A JSON string (skipped whole), a bracket, or an unterminated string's quote."""
_SPACE = b" \t\r\n"


def parse_large_object(body: bytes, keys: tuple[bytes, ...]) -> dict[str, Any] | None:
    """Find top-level ``keys`` near the ends of a big JSON object without parsing all of it.

    Embeddings responses carry megabytes of floats before a small ``usage`` object; decoding only
    the ends costs microseconds instead of milliseconds. A key is taken only where it is proved to
    be what ``json.loads`` would give: its last occurrence in the body, and a member of the
    top-level object (the rest of the body closes exactly that object, or the head before it opens
    only that one). Anything else (a ``usage`` nested in a later ``prompt_logprobs``, a key in the
    middle, an escaped quote) returns None, and the caller parses the whole body.
    """
    if len(body) <= _TAIL_WINDOW:
        return None
    found: dict[str, Any] = {}
    for key in keys:
        needle = b'"' + key + b'"'
        at = body.rfind(needle)
        if at < 0:
            continue  # not anywhere in the body: json.loads would not find it either
        value = _top_level_value(body, at, at + len(needle))
        if value is _UNPROVED:
            return None
        found[key.decode()] = value
    return found or None


_UNPROVED: Any = object()


def _top_level_value(body: bytes, at: int, after: int) -> Any:
    """The value of the key whose quoted name spans ``body[at:after]``, if it is top-level."""
    size = len(body)
    in_tail = at >= size - _TAIL_WINDOW
    if not in_tail and (after > _HEAD_WINDOW or not _opens_only_the_top(body, at)):
        return _UNPROVED
    backslashes = 0
    while at - backslashes > 0 and body[at - backslashes - 1] == 0x5C:  # an escaped quote: inside a string
        backslashes += 1
    if backslashes % 2:
        return _UNPROVED
    colon = after
    while colon < size and body[colon] in _SPACE:
        colon += 1
    if colon >= size or body[colon] != 0x3A:  # ":" — else the name was a value, not a key
        return _UNPROVED
    start = colon + 1
    while start < size and body[start] in _SPACE:
        start += 1
    window = _text(body[start:] if in_tail else body[start : start + _HEAD_WINDOW])
    if window is None:
        return _UNPROVED
    try:
        value, end = _DECODER.raw_decode(window)
    except (ValueError, RecursionError):
        return _UNPROVED
    if in_tail and not _closes_the_top(body, start + len(window[:end].encode("utf-8"))):
        return _UNPROVED
    return value


_DECODER = json.JSONDecoder()


def _text(chunk: bytes) -> str | None:
    """``chunk`` decoded as UTF-8 (a character cut at its end dropped), None when it is not UTF-8."""
    try:
        return chunk.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(chunk) - 3 or exc.reason != "unexpected end of data":
            return None
        return chunk[: exc.start].decode("utf-8", "strict")


def _closes_the_top(body: bytes, position: int) -> bool:
    """From ``position`` (just after a member's value, outside any string) the rest of ``body``
    closes the object holding that member at the very end: it was the top-level object."""
    depth = 0
    for match in _TOKENS.finditer(body, position):
        char = body[match.start()]
        if char == 0x22:  # '"'
            if match.end() - match.start() == 1:
                return False  # an unterminated string
        elif char in b"{[":
            depth += 1
        else:
            depth -= 1
            if depth < 0:
                return char == 0x7D and not body[match.end() :].strip(_SPACE)  # "}" and nothing after
    return False


def _opens_only_the_top(body: bytes, position: int) -> bool:
    """Before ``position`` the body opens the top-level object and nothing still open inside it."""
    depth = 0
    first = True
    for match in _TOKENS.finditer(body, 0, position):
        char = body[match.start()]
        if first and char != 0x7B:  # "{" first: the body is an object
            return False
        first = False
        if char == 0x22:
            if match.end() - match.start() == 1:
                return False  # ``position`` lies inside a string
        elif char in b"{[":
            depth += 1
        else:
            depth -= 1
    return depth == 1
