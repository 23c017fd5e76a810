"""Incremental decoding of the AWS event-stream binary framing (``application/vnd.amazon.eventstream``).

Bedrock's streamed operations answer in it, over whichever HTTP client sent them. A message is a
prelude (total length, headers length, CRC-32 of those eight bytes), headers, a payload and a
CRC-32 of everything before it. The framer keeps only the current partial message, checks both
CRCs, and hands each message to a provider's accumulator as ``on_event(event_type, payload)``;
exception and error messages are handed over as ``b"exception"``. A corrupt frame raises
:class:`ParseError` (the stream tap records the call ``unparsed``; the caller's bytes are untouched).
"""

from __future__ import annotations

import struct
import zlib

from .base import EventSink, ParseError

FRAMING = "eventstream"
PRELUDE = 12
MAX_MESSAGE = 16 * 1024 * 1024 + 128 * 1024 + 16
"""AWS allows a 16 MiB payload and 128 KiB of headers: a longer message is corrupt."""
_MIN_MESSAGE = PRELUDE + 4
_PRELUDE = struct.Struct(">III")
_CRC = struct.Struct(">I")
_FIXED = {0: 0, 1: 0, 2: 1, 3: 2, 4: 4, 5: 8, 8: 8, 9: 16}
"""Header value type → its fixed size (6: bytes and 7: string carry a 2-byte length instead)."""
_EXCEPTION = b"exception"


class EventStreamFramer:
    """Splits event-stream bytes into messages and feeds them to an accumulator."""

    __slots__ = ("_accumulator", "_buffer")

    def __init__(self, accumulator: EventSink) -> None:
        self._accumulator = accumulator
        self._buffer = bytearray()

    def feed(self, chunk: bytes) -> None:
        """Take the next bytes; raises :class:`ParseError` on a corrupt frame."""
        buffer = self._buffer
        buffer += chunk
        start = 0
        end = len(buffer)
        while end - start >= PRELUDE:
            total, headers_length, prelude_crc = _PRELUDE.unpack_from(buffer, start)
            if zlib.crc32(buffer[start : start + 8]) != prelude_crc:
                raise ParseError("event stream: prelude checksum mismatch")
            if not _MIN_MESSAGE <= total <= MAX_MESSAGE or headers_length > total - _MIN_MESSAGE:
                raise ParseError(f"event stream: impossible message length {total}")
            if end - start < total:
                break
            message = bytes(buffer[start : start + total])
            start += total
            (message_crc,) = _CRC.unpack_from(message, total - 4)
            if zlib.crc32(memoryview(message)[: total - 4]) != message_crc:
                raise ParseError("event stream: message checksum mismatch")
            headers_end = PRELUDE + headers_length
            event = _event_name(message[PRELUDE:headers_end])
            self._accumulator.on_event(event, message[headers_end : total - 4])
        if start:
            del buffer[:start]

    def finish(self) -> None:
        """End of stream: a partial message left over is dropped (the stream was cut short)."""
        self._buffer = bytearray()


_EVENT_TYPE = b"\x0b:event-type\x07"
_EVENT_MESSAGE = b"\x0d:message-type\x07\x00\x05event"


def _event_name(headers: bytes) -> bytes:
    """``:event-type`` of an event message, ``b"exception"`` for exception and error messages."""
    if headers.startswith(_EVENT_TYPE) and headers.endswith(_EVENT_MESSAGE):
        # How Bedrock sends every event: ``:event-type`` first, ``:message-type`` last (the frame's
        # CRC already vouches for the bytes between): read without walking every header.
        end = 15 + int.from_bytes(headers[13:15], "big")
        if end <= len(headers) - len(_EVENT_MESSAGE):
            return headers[15:end]
    values = _string_headers(headers)
    kind = values.get(b":message-type", b"event")
    if kind != b"event":
        return _EXCEPTION
    return values.get(b":event-type", b"")


def _string_headers(headers: bytes) -> dict[bytes, bytes]:
    """The string-valued headers of one message; raises :class:`ParseError` when malformed."""
    found: dict[bytes, bytes] = {}
    at = 0
    size = len(headers)
    try:
        while at < size:
            name_length = headers[at]
            name = headers[at + 1 : at + 1 + name_length]
            at += 1 + name_length
            kind = headers[at]
            at += 1
            if kind in (6, 7):
                (length,) = struct.unpack_from(">H", headers, at)
                at += 2
                if kind == 7:
                    found[name] = headers[at : at + length]
                at += length
            elif kind in _FIXED:
                at += _FIXED[kind]
            else:
                raise ParseError(f"event stream: unknown header type {kind}")
    except (IndexError, struct.error):
        raise ParseError("event stream: truncated headers") from None
    if at != size:
        raise ParseError("event stream: truncated headers")
    return found
