"""The AWS event-stream framer: messages as botocore reads them, any chunk boundaries, hostile bytes."""

from __future__ import annotations

import struct
import uuid
import zlib

import pytest
from bedrock_server import chunk_frame, converse_stream_frames, event_frame, invoke_stream_events
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_tokenbudget.capture.recorder import Recorder
from pytest_tokenbudget.ledger import Ledger, Owner
from pytest_tokenbudget.model import Call, Usage
from pytest_tokenbudget.providers import route
from pytest_tokenbudget.providers.base import ParseError
from pytest_tokenbudget.providers.eventstream import EventStreamFramer

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CONVERSE_STREAM = b"".join(converse_stream_frames())
INVOKE_STREAM = b"".join(chunk_frame(e) for e in invoke_stream_events("m"))
STREAMS = {
    "converse-stream": (
        CONVERSE_STREAM,
        Usage(input_tokens=1040, cached_input_tokens=1028, output_tokens=250),
    ),
    "invoke-with-response-stream": (INVOKE_STREAM, Usage(input_tokens=702, output_tokens=98)),
}


class Collect:
    framing = "eventstream"
    done = False

    def __init__(self) -> None:
        self.events: list[tuple[bytes, bytes]] = []

    def on_event(self, event: bytes, data: bytes) -> None:
        self.events.append((event, data))

    def result(self) -> None:  # pragma: no cover - not called here
        return None


def frame_all(data: bytes, cuts: list[int] | None = None) -> list[tuple[bytes, bytes]]:
    collected = Collect()
    framer = EventStreamFramer(collected)
    points = sorted({c % (len(data) + 1) for c in cuts or []})
    for start, end in zip([0, *points], [*points, len(data)], strict=True):
        framer.feed(data[start:end])
    framer.finish()
    return collected.events


def test_the_test_servers_frames_are_what_botocore_decodes() -> None:
    eventstream = pytest.importorskip("botocore.eventstream")
    buffer = eventstream.EventStreamBuffer()
    buffer.add_data(CONVERSE_STREAM)
    theirs = [(m.headers[":event-type"].encode(), m.payload) for m in buffer]
    assert theirs == frame_all(CONVERSE_STREAM)
    assert [event for event, _ in theirs][-1] == b"metadata"


def test_headers_of_every_type_are_skipped_and_exceptions_named() -> None:
    def header(name: str, kind: int, value: bytes) -> bytes:
        return bytes([len(name)]) + name.encode() + bytes([kind]) + value

    headers = b"".join(
        [
            header(":message-type", 7, struct.pack(">H", 9) + b"exception"),
            header("t", 0, b""),
            header("f", 1, b""),
            header("b", 2, b"\x01"),
            header("s", 3, b"\x00\x02"),
            header("i", 4, b"\x00" * 4),
            header("l", 5, b"\x00" * 8),
            header("raw", 6, struct.pack(">H", 3) + b"abc"),
            header("ts", 8, b"\x00" * 8),
            header("id", 9, uuid.uuid4().bytes),
        ]
    )
    payload = b'{"message":"slow down"}'
    total = 12 + len(headers) + len(payload) + 4
    prelude = struct.pack(">II", total, len(headers))
    message = prelude + struct.pack(">I", zlib.crc32(prelude)) + headers + payload
    message += struct.pack(">I", zlib.crc32(message))
    assert frame_all(message) == [(b"exception", payload)]
    assert frame_all(event_frame("x", {}, message_type="exception")) == [(b"exception", b"{}")]


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda f: f[:8] + bytes([f[8] ^ 1]) + f[9:], "prelude checksum"),
        (lambda f: f[:-1] + bytes([f[-1] ^ 1]), "message checksum"),
        (lambda f: _reframed(f, headers_length=200), "impossible message length"),
        (lambda f: _reframed(f, total=2**31), "impossible message length"),
        (lambda f: _reframed(f, headers_length=len(f) - 16), "truncated headers"),
    ],
)
def test_a_corrupt_frame_is_a_parse_error(damage: object, message: str) -> None:
    frame = event_frame("metadata", {"usage": {}})
    with pytest.raises(ParseError, match=message):
        frame_all(damage(frame))  # type: ignore[operator]


def _reframed(frame: bytes, *, total: int | None = None, headers_length: int | None = None) -> bytes:
    """``frame`` with another total or headers length, both CRCs made valid again."""
    old_total, old_headers = struct.unpack(">II", frame[:8])
    prelude = struct.pack(">II", old_total if total is None else total, headers_length or old_headers)
    message = prelude + struct.pack(">I", zlib.crc32(prelude)) + frame[12:-4]
    return message + struct.pack(">I", zlib.crc32(message))


def test_a_partial_message_at_the_end_is_dropped() -> None:
    assert frame_all(CONVERSE_STREAM[:-3]) == frame_all(CONVERSE_STREAM)[:-1]


@pytest.mark.parametrize("operation", sorted(STREAMS))
@FUZZ
@given(cuts=st.lists(st.integers(min_value=0, max_value=5_000), max_size=40))
def test_chunk_boundaries_never_change_the_result(operation: str, cuts: list[int]) -> None:
    data, expected = STREAMS[operation]
    assert frame_all(data, cuts) == frame_all(data)
    found = route("POST", "bedrock-runtime.us-east-1.amazonaws.com", f"/model/m/{operation}")
    assert found is not None
    accumulator = found.parser.stream()
    framer = EventStreamFramer(accumulator)
    points = sorted({c % (len(data) + 1) for c in cuts})
    for start, end in zip([0, *points], [*points, len(data)], strict=True):
        framer.feed(data[start:end])
    assert accumulator.done
    assert accumulator.result().usage == expected


def _tap_call(operation: str, chunks: list[bytes], content_type: str) -> Call:
    ledger = Ledger()
    ledger.push_owner(Owner("t", "call"))
    calls: list[Call] = []
    ledger.add_listener(calls.append)
    recorder = Recorder(ledger)
    found = route("POST", "bedrock-runtime.us-east-1.amazonaws.com", f"/model/m/{operation}")
    assert found is not None
    tap = recorder.stream(recorder.start(found), 200, content_type, "")
    for chunk in chunks:
        tap.feed(chunk)
    tap.eof()
    (call,) = calls
    return call


@pytest.mark.parametrize("operation", sorted(STREAMS))
@FUZZ
@given(
    cut=st.integers(min_value=0, max_value=5_000),
    noise=st.binary(max_size=64),
    content_type=st.sampled_from(["application/vnd.amazon.eventstream", "", "application/json"]),
)
def test_hostile_bytes_through_the_tap_are_recorded_never_raised(
    operation: str, cut: int, noise: bytes, content_type: str
) -> None:
    data, expected = STREAMS[operation]
    cut %= len(data) + 1
    call = _tap_call(operation, [data[:cut], noise, data[cut:]], content_type)
    assert call.usage.input_tokens <= expected.input_tokens
    assert call.usage.output_tokens <= expected.output_tokens
    if not noise:
        assert (call.state, call.usage) == ("complete", expected)  # the content type does not matter


def test_a_stream_fed_byte_by_byte_gives_the_same_call() -> None:
    """Fed one byte at a time (a message split across many chunks), the tap reads it whole."""
    data, expected = STREAMS["invoke-with-response-stream"]
    bytewise = _tap_call("invoke-with-response-stream", [data[i : i + 1] for i in range(len(data))], "")
    assert (bytewise.state, bytewise.usage) == ("complete", expected)
