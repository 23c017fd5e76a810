"""Hostile and broken input never escapes the parsers; chunk boundaries never change a result.

The suite runs a modest number of examples; ``TOKENBUDGET_FUZZ_EXAMPLES`` raises it (the long run
in benchmarks/ sets 100,000).
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_tokenbudget import providers
from pytest_tokenbudget.capture import recorder as recorder_module
from pytest_tokenbudget.capture.recorder import Recorder
from pytest_tokenbudget.ledger import Ledger, Owner
from pytest_tokenbudget.model import CallState, Usage
from pytest_tokenbudget.providers import bedrock
from pytest_tokenbudget.providers.framing import LineFramer

EXAMPLES = int(os.environ.get("TOKENBUDGET_FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# One route per API shape the plugin reads.
ROUTES = {
    "openai.chat": ("api.openai.com", "/v1/chat/completions"),
    "openai.responses": ("api.openai.com", "/v1/responses"),
    "openai.embeddings": ("api.openai.com", "/v1/embeddings"),
    "anthropic.messages": ("api.anthropic.com", "/v1/messages"),
    "gemini.generate": (
        "generativelanguage.googleapis.com",
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent",
    ),
    "gemini.interactions": ("generativelanguage.googleapis.com", "/v1beta/interactions"),
    "ollama.chat": ("localhost", "/api/chat"),
    "cohere.chat": ("api.cohere.com", "/v2/chat"),
}


def route_for(api: str) -> providers.Route:
    host, path = ROUTES[api]
    found = providers.route("POST", host, path)
    assert found is not None
    assert found.api == api
    return found


# Realistic streams, one per API, to cut into pieces.
STREAMS = {
    "openai.chat": b'data: {"model":"gpt-4o","choices":[{"delta":{"content":"Hi"}}]}\n\n'
    b'data: {"model":"gpt-4o","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":4,'
    b'"prompt_tokens_details":{"cached_tokens":3}}}\n\ndata: [DONE]\n\n',
    "openai.responses": b'event: response.created\ndata: {"response":{"model":"gpt-5"}}\n\n'
    b'event: response.output_text.delta\ndata: {"delta":"Hi"}\n\n'
    b'event: response.completed\ndata: {"response":{"model":"gpt-5","usage":{"input_tokens":20,'
    b'"output_tokens":30,"output_tokens_details":{"reasoning_tokens":12}}}}\n\n',
    "anthropic.messages": b'event: message_start\r\ndata: {"type":"message_start","message":{"model":"c",'
    b'"usage":{"input_tokens":5,"cache_read_input_tokens":100,"output_tokens":1}}}\r\n\r\n'
    b'event: message_delta\r\ndata: {"type":"message_delta","usage":{"output_tokens":42}}\r\n\r\n'
    b'event: message_stop\r\ndata: {"type":"message_stop"}\r\n\r\n',
    "gemini.generate": b'data: {"candidates":[{"content":{"parts":[{"text":"a"}]}}],"usageMetadata":'
    b'{"promptTokenCount":7,"candidatesTokenCount":1},"modelVersion":"gemini-2.5-flash"}\r\n\r\n'
    b'data: {"candidates":[{"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":7,'
    b'"candidatesTokenCount":5,"thoughtsTokenCount":3},"modelVersion":"gemini-2.5-flash"}\r\n\r\n',
    "ollama.chat": b'{"model":"llama3","done":false}\n{"model":"llama3","done":true,'
    b'"prompt_eval_count":17,"eval_count":50}\n',
    "cohere.chat": b'event: message-start\ndata: {"type":"message-start"}\n\n'
    b'event: message-end\ndata: {"type":"message-end","delta":{"usage":{"tokens":'
    b'{"input_tokens":69,"output_tokens":116}}}}\n\n',
}
EXPECTED = {
    "openai.chat": Usage(input_tokens=9, cached_input_tokens=3, output_tokens=4),
    "openai.responses": Usage(input_tokens=20, output_tokens=30, reasoning_tokens=12),
    "anthropic.messages": Usage(input_tokens=105, cached_input_tokens=100, output_tokens=42),
    "gemini.generate": Usage(input_tokens=7, output_tokens=8, reasoning_tokens=3),
    "ollama.chat": Usage(input_tokens=17, output_tokens=50),
    "cohere.chat": Usage(input_tokens=69, output_tokens=116),
}
FRAMING = {"ollama.chat": "ndjson"}
HEADER_NAMES = [
    "x-amzn-bedrock-input-token-count",
    "x-amzn-bedrock-output-token-count",
    "x-amzn-bedrock-cache-read-input-token-count",
    "x-amzn-bedrock-cache-write-input-token-count",
]


def run_stream(api: str, chunks: list[bytes]) -> tuple[Usage | None, bool]:
    accumulator = route_for(api).parser.stream()
    framer = LineFramer(accumulator, FRAMING.get(api, "sse"))
    for chunk in chunks:
        framer.feed(chunk)
    framer.finish()
    return accumulator.result().usage, accumulator.done


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


@pytest.mark.parametrize("api", sorted(STREAMS))
@FUZZ
@given(cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=40))
def test_chunk_boundaries_never_change_the_result(api: str, cuts: list[int]) -> None:
    usage, done = run_stream(api, split(STREAMS[api], cuts))
    assert usage == EXPECTED[api]
    assert done


@pytest.mark.parametrize("api", sorted(STREAMS))
@FUZZ
@given(cut=st.integers(min_value=0, max_value=10_000))
def test_a_truncated_stream_never_raises_and_never_overcounts(api: str, cut: int) -> None:
    data = STREAMS[api]
    usage, _ = run_stream(api, [data[: cut % (len(data) + 1)]])
    if usage is not None:
        full = EXPECTED[api]
        assert usage.input_tokens <= full.input_tokens
        assert usage.output_tokens <= full.output_tokens


def _sane(usage: Usage) -> None:
    for value in (usage.input_tokens, usage.output_tokens):
        assert isinstance(value, int)
        assert value >= 0
    assert usage.cached_input_tokens + usage.cache_write_tokens <= usage.input_tokens
    assert usage.reasoning_tokens <= usage.output_tokens


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
usage_keys = st.sampled_from(
    [
        "usage",
        "prompt_tokens",
        "completion_tokens",
        "input_tokens",
        "output_tokens",
        "cached_tokens",
        "prompt_tokens_details",
        "cache_read_input_tokens",
        "cache_creation_input_tokens",
        "usageMetadata",
        "promptTokenCount",
        "candidatesTokenCount",
        "thoughtsTokenCount",
        "prompt_eval_count",
        "eval_count",
        "tokens",
        "reasoning_tokens",
        "model",
        "response",
        "message",
        "delta",
        "done",
    ]
)
usage_like = st.recursive(
    st.integers(min_value=-(2**70), max_value=2**70) | st.floats() | st.none() | st.text(max_size=5),
    lambda children: st.dictionaries(usage_keys, children, max_size=6) | st.lists(children, max_size=3),
    max_leaves=30,
)


def record_body(api: str, body: bytes, content_type: str = "application/json") -> list[object]:
    ledger = Ledger()
    ledger.push_owner(Owner("t", "call"))
    recorder = Recorder(ledger)
    recorder.body(recorder.start(route_for(api)), 200, body, content_type)
    return ledger.calls


@pytest.mark.parametrize("api", sorted(ROUTES))
@FUZZ
@given(data=st.one_of(json_values, usage_like))
def test_any_json_body_is_recorded_never_raised(api: str, data: object) -> None:
    body = json.dumps(data, allow_nan=True).encode()
    (call,) = record_body(api, body)
    # no usage and no request to estimate from: unmetered (estimates.py)
    assert call.state in {CallState.COMPLETE, CallState.NO_USAGE, CallState.UNMETERED, CallState.UNPARSED}
    assert "internal error" not in call.detail
    _sane(call.usage)


@pytest.mark.parametrize("api", sorted(ROUTES))
@FUZZ
@given(
    body=st.binary(max_size=512), content_type=st.sampled_from(["application/json", "text/event-stream", ""])
)
def test_any_bytes_are_recorded_never_raised(api: str, body: bytes, content_type: str) -> None:
    (call,) = record_body(api, body, content_type)
    assert "internal error" not in call.detail
    _sane(call.usage)


@pytest.mark.parametrize("api", sorted(ROUTES))
def test_json_bomb_is_unparsed_not_a_crash(api: str) -> None:
    bomb = b"[" * 200_000 + b"]" * 200_000
    (call,) = record_body(api, bomb)
    assert call.state == CallState.UNPARSED
    assert "internal error" not in call.detail


def test_absurd_and_negative_counts_are_clamped() -> None:
    body = json.dumps(
        {
            "model": "m",
            "usage": {
                "prompt_tokens": -5,
                "completion_tokens": 10**30,
                "prompt_tokens_details": {"cached_tokens": 10**31},
            },
        }
    ).encode()
    (call,) = record_body("openai.chat", body)
    _sane(call.usage)
    assert call.usage.input_tokens == 0


def test_gzip_stream_through_the_tap() -> None:
    ledger = Ledger()
    ledger.push_owner(Owner("t", "call"))
    recorder = Recorder(ledger)
    tap = recorder.stream(recorder.start(route_for("openai.chat")), 200, "text/event-stream", "gzip")
    compressed = gzip.compress(STREAMS["openai.chat"])
    for i in range(0, len(compressed), 7):
        tap.feed(compressed[i : i + 7])
    tap.eof()
    (call,) = ledger.calls
    assert call.usage == EXPECTED["openai.chat"]


@pytest.mark.parametrize("api", sorted(STREAMS))
@pytest.mark.parametrize("limit", [0, 64, 10**9])
def test_a_stream_is_read_whole_whether_its_chunks_are_held_or_not(
    api: str, limit: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chunks are held and read at the end up to KEEP_LIMIT, then read as they come: the usage is
    the same wherever the limit falls (0: from the first chunk; 64: mid-stream; 10**9: never)."""
    monkeypatch.setattr(recorder_module, "KEEP_LIMIT", limit)
    ledger = Ledger()
    ledger.push_owner(Owner("t", "call"))
    recorder = Recorder(ledger)
    content_type = "application/x-ndjson" if FRAMING.get(api) == "ndjson" else "text/event-stream"
    tap = recorder.stream(recorder.start(route_for(api)), 200, content_type, "")
    body = STREAMS[api]
    for i in range(0, len(body), 13):
        tap.feed(body[i : i + 13])
    tap.eof()
    (call,) = ledger.calls
    assert (call.usage, call.state) == (EXPECTED[api], CallState.COMPLETE)


def test_invalid_utf8_inside_a_stream_is_skipped() -> None:
    data = b"data: \xff\xfe{not json\n\n" + STREAMS["openai.chat"]
    usage, done = run_stream("openai.chat", [data])
    assert usage == EXPECTED["openai.chat"]
    assert done


class EventLog:
    """An accumulator that keeps every (event, data) pair the framer hands over."""

    framing = "sse"
    done = False

    def __init__(self) -> None:
        self.events: list[tuple[bytes, bytes]] = []

    def on_event(self, event: bytes, data: bytes) -> None:
        self.events.append((event, data))


sse_text = st.binary(max_size=12).map(lambda b: b.replace(b"\n", b"").replace(b"\r", b""))
sse_event = st.tuples(
    st.none() | sse_text,  # the event line, if any
    st.lists(sse_text, min_size=0, max_size=3),  # data lines
    st.sampled_from([b"\n", b"\r\n"]),  # line endings
    st.sampled_from([b"\n", b"\r\n"]),  # the blank line's ending (servers mix them)
    st.sampled_from([b"data: ", b"data:"]),
)
SseEvent = tuple[bytes | None, list[bytes], bytes, bytes, bytes]


def sse_bytes(event: SseEvent) -> bytes:
    name, lines, newline, blank, prefix = event
    head = b"" if name is None else b"event: " + name + newline
    return head + b"".join(prefix + line + newline for line in lines) + blank


@FUZZ
@given(events=st.lists(sse_event, max_size=8), cuts=st.lists(st.integers(0, 10_000), max_size=10))
def test_whole_event_chunks_and_any_split_hand_over_the_same_events(
    events: list[SseEvent], cuts: list[int]
) -> None:
    """The framer's fast path (one whole event per chunk) gives what the line-by-line path does."""
    chunks = [sse_bytes(event) for event in events]
    seen = []
    for feeding in (chunks, [bytes([b]) for b in b"".join(chunks)], split(b"".join(chunks), cuts)):
        log = EventLog()
        framer = LineFramer(log)
        for chunk in feeding:
            framer.feed(chunk)
        framer.finish()
        seen.append(log.events)
    assert seen[0] == seen[1] == seen[2]
    assert len(seen[0]) == sum(1 for _, lines, *_ in events if lines)


# -- Bedrock: botocore decodes the event-stream framing; these read what it hands over ------------

bedrock_keys = st.sampled_from(
    [
        "usage",
        "metadata",
        "chunk",
        "bytes",
        "message",
        "inputTokens",
        "outputTokens",
        "cacheReadInputTokens",
        "cacheWriteInputTokens",
        "amazon-bedrock-invocationMetrics",
        "inputTokenCount",
        "outputTokenCount",
        "prompt_token_count",
        "generation_token_count",
        "inputTextTokenCount",
        "results",
        "tokenCount",
        "input_tokens",
        "output_tokens",
    ]
)
bedrock_like = st.recursive(
    st.integers(min_value=-(2**70), max_value=2**70) | st.floats() | st.none() | st.text(max_size=5),
    lambda children: st.dictionaries(bedrock_keys, children, max_size=6) | st.lists(children, max_size=3),
    max_leaves=30,
)


@FUZZ
@given(data=st.one_of(bedrock_like, json_values), raw=st.binary(max_size=256))
def test_bedrock_invoke_bodies_never_raise(data: object, raw: bytes) -> None:
    for body in (json.dumps(data, allow_nan=True).encode(), raw):
        usage = bedrock.invoke_body_usage(body)
        if usage is not None:
            _sane(usage)


@FUZZ
@given(headers=st.dictionaries(st.sampled_from(HEADER_NAMES) | st.text(max_size=10), st.text(max_size=30)))
def test_bedrock_token_headers_never_raise(headers: dict[str, str]) -> None:
    usage = bedrock.header_usage(headers)
    if usage is not None:
        _sane(usage)


@pytest.mark.slow
@FUZZ
@given(
    events=st.lists(
        st.one_of(
            bedrock_like,
            st.builds(lambda d: {"chunk": {"bytes": json.dumps(d).encode()}}, bedrock_like),
            st.builds(lambda b: {"chunk": {"bytes": b"usage" + b}}, st.binary(max_size=64)),
        ),
        max_size=8,
    )
)
def test_bedrock_stream_events_never_raise(events: list[object]) -> None:
    for reader in (bedrock.ConverseEvents(), bedrock.InvokeEvents()):
        for event in events:
            reader.on_event(event)
        usage = reader.result()
        if usage is not None:
            _sane(usage)


def test_bedrock_json_bomb_is_no_usage() -> None:
    bomb = b'{"usage":' + b"[" * 200_000 + b"]" * 200_000 + b"}"
    assert bedrock.invoke_body_usage(bomb) is None
    reader = bedrock.InvokeEvents()
    reader.on_event({"chunk": {"bytes": bomb}})
    assert reader.result() is None


# -- issue 26: hostile counts, big bodies with nested "usage" after the real one, deep nesting -----

hostile_counts = (
    st.integers(min_value=-(10**400), max_value=10**400)
    | st.sampled_from([10**400, -(10**400), 2**63, -1, 0, 10**12 + 1])
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=6)
    | st.none()
    | st.booleans()
)
"""Usage values a hostile or broken server sends: huge, negative, strings, null, NaN."""


@pytest.mark.parametrize("api", sorted(ROUTES))
@FUZZ
@given(counts=st.dictionaries(usage_keys, hostile_counts, max_size=6), nest=usage_keys)
def test_hostile_usage_values_are_recorded_sane(api: str, counts: dict[str, object], nest: str) -> None:
    from pytest_tokenbudget.providers.base import MAX_COUNT

    for data in (counts, {"usage": counts}, {nest: {"usage": counts}}, {"usageMetadata": counts}):
        body = json.dumps(data, allow_nan=True).encode()
        (call,) = record_body(api, body)
        assert "internal error" not in call.detail
        _sane(call.usage)
        assert call.usage.input_tokens <= 2 * MAX_COUNT
        assert call.usage.output_tokens <= 2 * MAX_COUNT


nested_usage = st.recursive(
    st.fixed_dictionaries({"usage": st.dictionaries(usage_keys, hostile_counts, max_size=3)}),
    lambda children: (
        st.lists(children, min_size=1, max_size=3)
        | st.dictionaries(
            st.sampled_from(["usage", "logprob", "1", "model"]), children, min_size=1, max_size=3
        )
    ),
    max_leaves=6,
)
"""Something holding a ``usage`` key below the top level (vLLM's prompt_logprobs and the like)."""


@pytest.mark.slow
@FUZZ
@given(
    real=st.fixed_dictionaries(
        {"prompt_tokens": st.integers(0, 10**6), "completion_tokens": st.integers(0, 10**6)}
    ),
    after=st.lists(
        st.tuples(st.sampled_from(["prompt_logprobs", "extra", "z", "usage_"]), nested_usage),
        min_size=1,
        max_size=3,
    ),
    pad=st.integers(min_value=0, max_value=100_000),
    pad_first=st.booleans(),
)
def test_a_nested_usage_after_the_real_one_never_wins(
    real: dict[str, int], after: list[tuple[str, object]], pad: int, pad_first: bool
) -> None:
    """Bodies over 64 KiB: the count is the top-level usage's, whatever follows it or where."""
    from pytest_tokenbudget.providers.base import parse_large_object
    from pytest_tokenbudget.providers.openai import ChatCompletions

    filler = {"pad": "p" * (pad + 65 * 1024)}
    data = {"model": "m", **(filler if pad_first else {}), "usage": real, **dict(after)}
    data.update({} if pad_first else filler)
    body = json.dumps(data, allow_nan=True).encode()
    reference = json.loads(body)
    fast = parse_large_object(body, (b"usage", b"model"))
    if fast is not None:
        assert all(reference.get(key) == value for key, value in fast.items())
    usage = ChatCompletions("openai.chat").parse(body).usage
    assert usage == Usage(input_tokens=real["prompt_tokens"], output_tokens=real["completion_tokens"])


def deep(depth: int, kind: str) -> str:
    """JSON nested ``depth`` levels of lists or objects."""
    if kind == "list":
        return "[" * depth + "]" * depth
    return '{"a":' * depth + "1" + "}" * depth


@FUZZ
@given(depth=st.integers(min_value=1, max_value=200_000), kind=st.sampled_from(["list", "object"]))
def test_deeply_nested_json_is_read_or_refused_never_raised(depth: int, kind: str) -> None:
    from pytest_tokenbudget.model import ArtifactError, Run
    from pytest_tokenbudget.request_body import request_json

    nested = deep(depth, kind)
    for api in ("openai.chat", "anthropic.messages", "gemini.generate"):
        body = '{"model": "m", "usage": ' + nested + ', "messages": ' + nested + "}"
        (call,) = record_body(api, body.encode())
        assert "internal error" not in call.detail
        _sane(call.usage)
    read = request_json(('{"messages": ' + nested + "}").encode())  # never raises, whatever the depth
    assert read is None or isinstance(read, dict)
    try:
        data = json.loads(
            '{"schema": "pytest-tokenbudget/run", "schema_version": 1, "tests": {"t": ' + nested + "}}"
        )
    except RecursionError:
        return
    with contextlib.suppress(ArtifactError):  # refused in one line, or read: nothing else
        Run.from_dict(data)


artifact_fields = st.sampled_from(["calls", "input_tokens", "output_tokens", "cost_usd", "live_calls"])


@FUZZ
@given(field=artifact_fields, value=hostile_counts | json_values, where=st.sampled_from(["test", "model"]))
def test_an_artifact_with_hostile_counts_is_read_sane_or_refused(
    field: str, value: object, where: str
) -> None:
    from pytest_tokenbudget.model import MAX_ARTIFACT_COUNT, ArtifactError, Run

    entry: dict[str, object] = {"calls": 1, "input_tokens": 3, "output_tokens": 2, "cost_usd": 0.5}
    entry["models"] = {"openai/gpt-4o": dict(entry)}
    target = entry if where == "test" else entry["models"]["openai/gpt-4o"]  # type: ignore[index]
    target[field] = value  # type: ignore[index]
    data = {"schema": "pytest-tokenbudget/run", "schema_version": 1, "tests": {"t.py::test_a": entry}}
    try:
        run = Run.from_dict(json.loads(json.dumps(data, allow_nan=True)))
    except ArtifactError:
        return
    total = run.tests["t.py::test_a"].total
    for number in (total.calls, total.input_tokens, total.output_tokens):
        assert isinstance(number, int)
        assert 0 <= number <= MAX_ARTIFACT_COUNT
    assert 0 <= total.cost_usd < float("inf")
