"""What every API family provides: a body parser and a stream accumulator, both pure."""

from __future__ import annotations

import json
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


class StreamAccumulator(Protocol):
    """Receives the events of one streamed response as the caller consumes them.

    ``on_event`` runs for every event, so it must stay cheap: test for a marker before parsing
    JSON, and test with ``data.find(marker) >= 0`` rather than ``marker in data`` (on bytes,
    ``in`` first tries the marker as an int, and raising that TypeError costs several times the
    search itself).
    """

    framing: str  # "sse" or "ndjson"
    done: bool  # a terminal event was seen

    def on_event(self, event: bytes, data: bytes) -> None:
        """One SSE event (``event`` may be empty) or one NDJSON line (``event`` is empty)."""

    def result(self) -> Extracted:
        """The usage seen so far (partial when the stream ended early)."""


class ApiParser(Protocol):
    """Reads one API shape (e.g. OpenAI chat completions)."""

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


def parse_large_object(body: bytes, keys: tuple[bytes, ...]) -> dict[str, Any] | None:
    """Find top-level ``keys`` near the end of a big JSON object without parsing all of it.

    Embeddings responses carry megabytes of floats before a small ``usage`` object; decoding only
    the tail costs microseconds instead of milliseconds. Returns None when the shortcut does not
    apply (the caller then parses the whole body).
    """
    if len(body) <= _TAIL_WINDOW:
        return None
    found: dict[str, Any] = {}
    decoder = json.JSONDecoder()
    head = body[:4096].decode("utf-8", "replace")
    tail = body[-_TAIL_WINDOW:].decode("utf-8", "replace")
    for key in keys:
        needle = b'"' + key + b'"'
        for window in (tail, head):
            index = window.rfind(needle.decode())
            if index < 0:
                continue
            colon = window.find(":", index + len(needle))
            if colon < 0:
                continue
            start = colon + 1
            while start < len(window) and window[start] in " \t\r\n":
                start += 1
            try:
                value, _ = decoder.raw_decode(window, start)
            except (ValueError, RecursionError):
                continue
            found[key.decode()] = value
            break
    return found or None
