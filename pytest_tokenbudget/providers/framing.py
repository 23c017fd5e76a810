"""Incremental framing of streamed bodies (SSE, NDJSON; AWS event stream in eventstream.py) and
content decoding.

The framer keeps only the current partial line; it never holds the stream. Events are handed to a
provider's accumulator, which decides which few of them are worth a JSON parse.
"""

from __future__ import annotations

import zlib
from typing import Protocol

from .base import EventSink, ParseError
from .eventstream import FRAMING as EVENTSTREAM
from .eventstream import EventStreamFramer

MAX_LINE = 4 * 1024 * 1024
"""A line longer than this is dropped (bounded memory on hostile streams)."""


class Decoder(Protocol):
    def __call__(self, chunk: bytes, /) -> bytes: ...


def decoder_for(content_encoding: str) -> Decoder | None:
    """A chunk decoder for a ``Content-Encoding``; raises :class:`ParseError` when unsupported."""
    encoding = content_encoding.strip().lower()
    if encoding in ("", "identity"):
        return None
    if encoding in ("gzip", "x-gzip", "deflate"):
        # wbits=47 detects gzip and zlib headers; raw deflate is retried below.
        state = {"obj": zlib.decompressobj(47)}

        def inflate(chunk: bytes) -> bytes:
            try:
                return state["obj"].decompress(chunk)
            except zlib.error:
                if encoding != "deflate":
                    raise
                state["obj"] = zlib.decompressobj(-zlib.MAX_WBITS)
                return state["obj"].decompress(chunk)

        return inflate
    if encoding == "br":
        try:
            import brotli
        except ImportError:
            raise ParseError("brotli-encoded stream and no brotli module installed") from None
        process: Decoder = brotli.Decompressor().process  # brotli is untyped
        return process
    if encoding == "zstd":
        try:
            import zstandard
        except ImportError:
            raise ParseError("zstd-encoded stream and no zstandard module installed") from None
        return zstandard.ZstdDecompressor().decompressobj().decompress
    raise ParseError(f"unsupported content-encoding {encoding!r}")


class Framer(Protocol):
    def feed(self, chunk: bytes) -> None: ...

    def finish(self) -> None: ...


def make_framer(accumulator: EventSink, framing: str | None = None) -> Framer:
    """The framer for ``framing`` (the accumulator's own when None): binary or line by line."""
    if (framing or accumulator.framing) == EVENTSTREAM:
        return EventStreamFramer(accumulator)
    return LineFramer(accumulator, framing)


class LineFramer:
    """Splits bytes into lines and feeds SSE events or NDJSON lines to an accumulator."""

    __slots__ = ("_accumulator", "_data", "_event", "_partial", "_sse")

    def __init__(self, accumulator: EventSink, framing: str | None = None) -> None:
        self._accumulator = accumulator
        self._sse = (framing or accumulator.framing) == "sse"
        self._partial = b""
        self._event = b""
        self._data: list[bytes] = []

    def feed(self, chunk: bytes) -> None:
        if self._sse and not self._partial and not self._data and self._one_event(chunk):
            return
        if chunk.find(b"\n") < 0:  # find, not ``in``: faster on bytes (see EventSink)
            if len(self._partial) + len(chunk) <= MAX_LINE:
                self._partial += chunk
            else:
                self._partial = b""
            return
        lines = chunk.split(b"\n")
        if self._partial:
            lines[0] = self._partial + lines[0]
        self._partial = lines.pop()
        if len(self._partial) > MAX_LINE:
            self._partial = b""
        handle = self._sse_line if self._sse else self._ndjson_line
        for line in lines:
            handle(line)

    def _one_event(self, chunk: bytes) -> bool:
        """Fast path for the usual chunk, one whole event: an optional ``event:`` line, then one
        ``data:`` line, then the blank line (``\\n`` endings). Hands the event over without
        splitting lines (one copy, of the data) and returns True; False (nothing done) otherwise.
        Only called with nothing pending, so the result is what the line-by-line path gives.
        """
        end = len(chunk) - 2  # where the blank line starts
        start = 0  # where the data line starts
        event = self._event
        if chunk.startswith(b"event:"):
            start = chunk.find(b"\n") + 1
            event = chunk[6 : start - 1].strip()
        if not chunk.startswith(b"data:", start) or chunk.find(b"\n", start) != end:
            return False
        if not chunk.endswith(b"\n\n") or chunk[end - 1] == 13:  # 13: a \r\n line, left to the slow path
            return False
        start += 6 if chunk[start + 5] == 32 else 5  # 32: the space after "data:"
        self._event = b""
        self._accumulator.on_event(event, chunk[start:end])
        return True

    def finish(self) -> None:
        """End of stream: flush a last line without newline and a pending event."""
        if self._partial:
            (self._sse_line if self._sse else self._ndjson_line)(self._partial)
            self._partial = b""
        if self._sse:
            self._sse_line(b"")

    def _ndjson_line(self, line: bytes) -> None:
        line = line.strip()
        if line:
            self._accumulator.on_event(b"", line)

    def _sse_line(self, line: bytes) -> None:
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line:
            if self._data:
                data = self._data[0] if len(self._data) == 1 else b"\n".join(self._data)
                self._data = []
                event, self._event = self._event, b""
                self._accumulator.on_event(event, data)
            else:
                self._event = b""
            return
        if line.startswith(b"data:"):
            value = line[5:]
            self._data.append(value[1:] if value.startswith(b" ") else value)
        elif line.startswith(b"event:"):
            self._event = line[6:].strip()
        # comments (":"), id: and retry: lines carry no usage


def framing_of(content_type: str) -> str | None:
    """``sse``, ``ndjson`` or ``eventstream`` for content types read event by event, else None."""
    content_type = content_type.lower()
    if "amazon.eventstream" in content_type:
        return EVENTSTREAM
    if "event-stream" in content_type:
        return "sse"
    if "ndjson" in content_type or "stream+json" in content_type or "jsonl" in content_type:
        return "ndjson"
    return None


def is_framed(content_type: str) -> bool:
    """True for content types read event by event (server-sent events, NDJSON, AWS event stream)."""
    return framing_of(content_type) is not None


def sniff_framing(first_bytes: bytes) -> str | None:
    """Guess the framing of a body whose content type was stripped: sse, ndjson or None (JSON)."""
    head = first_bytes.lstrip()[:16]
    if head.startswith((b"data:", b"event:", b":", b"id:", b"retry:")):
        return "sse"
    return None
