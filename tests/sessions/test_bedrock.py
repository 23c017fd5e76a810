"""Bedrock through real boto3: a loopback server speaking Bedrock's wire formats, and the corpus."""

from __future__ import annotations

import binascii
import json
import struct
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
from shared_corpus import CORPUS, MISSING

boto3 = pytest.importorskip("boto3")

from pytest_tokenbudget.model import Call, Usage  # noqa: E402


def event_frame(event_type: str, payload: dict[str, Any]) -> bytes:
    """One AWS event-stream message (prelude, headers, payload, CRCs), as Bedrock sends them."""
    headers = b""
    for name, value in (
        (":event-type", event_type),
        (":content-type", "application/json"),
        (":message-type", "event"),
    ):
        raw = value.encode()
        headers += bytes([len(name)]) + name.encode() + b"\x07" + struct.pack(">H", len(raw)) + raw
    body = json.dumps(payload).encode()
    total = 12 + len(headers) + len(body) + 4
    prelude = struct.pack(">II", total, len(headers))
    prelude += struct.pack(">I", binascii.crc32(prelude))
    message = prelude + headers + body
    return message + struct.pack(">I", binascii.crc32(message))


CONVERSE = {
    "output": {"message": {"role": "assistant", "content": [{"text": "Hello"}]}},
    "stopReason": "end_turn",
    "usage": {"inputTokens": 11, "outputTokens": 264, "totalTokens": 1303, "cacheWriteInputTokens": 1028},
    "metrics": {"latencyMs": 10},
}

CONVERSE_STREAM = [
    ("messageStart", {"role": "assistant"}),
    ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Hi"}}),
    ("contentBlockStop", {"contentBlockIndex": 0}),
    ("messageStop", {"stopReason": "end_turn"}),
    (
        "metadata",
        {
            "usage": {
                "inputTokens": 12,
                "outputTokens": 250,
                "totalTokens": 1290,
                "cacheReadInputTokens": 1028,
            },
            "metrics": {"latencyMs": 5},
        },
    ),
]


def invoke_stream_chunks() -> list[tuple[str, dict[str, Any]]]:
    import base64

    events = [
        {
            "type": "message_start",
            "message": {"model": "claude", "usage": {"input_tokens": 702, "output_tokens": 1}},
        },
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 130}},
        {
            "type": "message_stop",
            "amazon-bedrock-invocationMetrics": {"inputTokenCount": 702, "outputTokenCount": 98},
        },
    ]
    return [("chunk", {"bytes": base64.b64encode(json.dumps(e).encode()).decode()}) for e in events]


JSON_BOMB = b'{"usage":' + b"[" * 100_000 + b"]" * 100_000 + b"}"


class _Bedrock(BaseHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        operation = self.path.rsplit("/", 1)[-1]
        if operation == "converse":
            self._send(json.dumps(CONVERSE).encode(), "application/json")
        elif operation == "invoke" and "bomb" in self.path:
            self._send(JSON_BOMB, "application/json")
        elif operation == "invoke":
            body = json.dumps(
                {
                    "content": [{"type": "text", "text": "Hi"}],
                    "usage": {"input_tokens": 1, "output_tokens": 1},
                }
            )
            self._send(
                body.encode(),
                "application/json",
                {"X-Amzn-Bedrock-Input-Token-Count": "21", "X-Amzn-Bedrock-Output-Token-Count": "22"},
            )
        else:
            frames = CONVERSE_STREAM if operation == "converse-stream" else invoke_stream_chunks()
            self._send(b"".join(event_frame(t, p) for t, p in frames), "application/vnd.amazon.eventstream")

    def _send(self, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(200)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def bedrock_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Bedrock)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def client(url: str) -> Any:
    return boto3.client(
        "bedrock-runtime",
        region_name="us-east-1",
        endpoint_url=url,
        aws_access_key_id="AKIAEXAMPLE",
        aws_secret_access_key="secret",
    )


MESSAGES = [{"role": "user", "content": [{"text": "hi"}]}]
MODEL = "us.anthropic.claude-3-7-sonnet-20250219-v1:0"


def test_converse_counts_cache_writes_as_input(bedrock_url: str, calls: list[Call]) -> None:
    client(bedrock_url).converse(modelId=MODEL, messages=MESSAGES)
    (call,) = calls
    assert (call.provider, call.api, call.model, call.source) == (
        "bedrock",
        "bedrock.converse",
        MODEL,
        "live",
    )
    assert call.usage == Usage(input_tokens=1039, cache_write_tokens=1028, output_tokens=264)


def test_converse_stream_is_passed_through_and_counted(bedrock_url: str, calls: list[Call]) -> None:
    response = client(bedrock_url).converse_stream(modelId=MODEL, messages=MESSAGES)
    events = list(response["stream"])
    assert [next(iter(e)) for e in events] == [t for t, _ in CONVERSE_STREAM]
    (call,) = calls
    assert call.streamed
    assert call.state == "complete"
    assert call.usage == Usage(input_tokens=1040, cached_input_tokens=1028, output_tokens=250)


def test_converse_stream_closed_early_is_marked(bedrock_url: str, calls: list[Call]) -> None:
    response = client(bedrock_url).converse_stream(modelId=MODEL, messages=MESSAGES)
    stream = response["stream"]
    next(iter(stream))
    stream.close()
    (call,) = calls
    assert call.state == "closed-early"


def test_invoke_model_reads_the_token_headers_and_keeps_the_body(bedrock_url: str, calls: list[Call]) -> None:
    response = client(bedrock_url).invoke_model(modelId=MODEL, body=b"{}")
    assert json.loads(response["body"].read())["content"][0]["text"] == "Hi"
    (call,) = calls
    assert call.usage == Usage(input_tokens=21, output_tokens=22)


def test_invoke_stream_prefers_bedrock_invocation_metrics(bedrock_url: str, calls: list[Call]) -> None:
    response = client(bedrock_url).invoke_model_with_response_stream(modelId=MODEL, body=b"{}")
    chunks = [json.loads(event["chunk"]["bytes"]) for event in response["body"]]
    assert chunks[-1]["type"] == "message_stop"
    (call,) = calls
    assert call.usage == Usage(input_tokens=702, output_tokens=98)


def test_a_json_bomb_invoke_body_reaches_the_caller_intact(bedrock_url: str, calls: list[Call]) -> None:
    response = client(bedrock_url).invoke_model(modelId="bomb", body=b"{}")
    assert response["body"].read() == JSON_BOMB
    (call,) = calls
    assert (call.state, call.usage.total_tokens) == ("unmetered", 0)  # no usage, nothing to estimate


def test_a_result_the_plugin_cannot_read_is_listed_never_raised(
    bedrock_url: str, calls: list[Call], monkeypatch: pytest.MonkeyPatch
) -> None:
    from pytest_tokenbudget.capture import botocore_stack

    def broken(*args: object) -> None:
        raise KeyError("surprise")

    monkeypatch.setattr(botocore_stack, "converse_usage", broken)
    monkeypatch.setattr(botocore_stack.ConverseEvents, "on_event", broken)
    bedrock = client(bedrock_url)
    answer = bedrock.converse(modelId=MODEL, messages=MESSAGES)
    assert answer["output"]["message"]["content"] == [{"text": "Hello"}]
    events = list(bedrock.converse_stream(modelId=MODEL, messages=MESSAGES)["stream"])
    assert [next(iter(e)) for e in events] == [t for t, _ in CONVERSE_STREAM]
    assert [(c.state, c.streamed, c.usage.total_tokens) for c in calls] == [
        ("unparsed", False, 0),
        ("unparsed", True, 0),
    ]
    assert all("KeyError" in c.detail for c in calls)


def test_other_aws_services_are_not_counted(bedrock_url: str, calls: list[Call]) -> None:
    sts = boto3.client(
        "sts",
        region_name="us-east-1",
        endpoint_url=bedrock_url,
        aws_access_key_id="A",
        aws_secret_access_key="s",
    )
    with pytest.raises(Exception):  # noqa: B017 - the loopback server does not speak STS
        sts.get_caller_identity()
    assert calls == []


def _corpus_interactions() -> list[Any]:
    manifest = CORPUS / "MANIFEST.details.json"
    if not manifest.is_file():
        return [pytest.param(None, None, marks=pytest.mark.skip(reason=MISSING))]
    cases = []
    for entry in json.loads(manifest.read_text()):
        if entry["file"].startswith("bedrock/"):
            for index in range(len(entry["interactions"])):
                cases.append(pytest.param(entry["file"], index, id=f"{Path(entry['file']).stem}-{index}"))
    return cases


@pytest.mark.parametrize(("cassette", "index"), _corpus_interactions())
def test_corpus_bedrock_replayed_through_boto3(cassette: str, index: int, calls: list[Call]) -> None:
    """Real recorded Bedrock traffic, replayed by vcrpy under real boto3: exact numbers."""
    vcr = pytest.importorskip("vcr")
    entry = next(
        e for e in json.loads((CORPUS / "MANIFEST.details.json").read_text()) if e["file"] == cassette
    )
    interaction = entry["interactions"][index]
    url = urlsplit(interaction["uri"])
    _, _, model_id, operation = url.path.split("/")
    bedrock = boto3.client(
        "bedrock-runtime",
        region_name=url.hostname.split(".")[1],
        aws_access_key_id="AKIAEXAMPLE",
        aws_secret_access_key="secret",
    )
    recorder = vcr.VCR(match_on=["method", "path"], record_mode="none")
    with recorder.use_cassette(str(CORPUS / cassette)):
        for _ in range(index + 1):  # earlier interactions of the same path come first
            calls.clear()
            model = unquote(model_id)
            if operation == "converse":
                bedrock.converse(modelId=model, messages=MESSAGES)
            elif operation == "converse-stream":
                for _event in bedrock.converse_stream(modelId=model, messages=MESSAGES)["stream"]:
                    pass
            elif operation == "invoke":
                bedrock.invoke_model(modelId=model, body=b"{}")["body"].read()
            else:
                for _event in bedrock.invoke_model_with_response_stream(modelId=model, body=b"{}")["body"]:
                    pass
    (call,) = calls
    assert call.source == "replayed"
    expected = interaction["expected"]
    assert {name: getattr(call.usage, name) for name in expected} == expected
