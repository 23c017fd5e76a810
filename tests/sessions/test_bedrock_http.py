"""Bedrock reached over httpx, httpx2 and requests, not boto3: AnthropicBedrock, LiteLLM's raw POSTs.

Real SDKs against tests/helpers/bedrock_server.py (AWS event streams with valid CRCs), routing by the
request's path on every host, the corpus's Bedrock cassettes replayed by vcrpy through httpx2 with
the numbers boto3 gets, and a pytester session pricing both paths alike.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import httpx2
import pytest
import requests
from bedrock_server import (
    CONVERSE_STREAM_USAGE,
    CONVERSE_USAGE,
    INVOKE_BODY_USAGE,
    INVOKE_HEADER_USAGE,
    STREAM_METRICS,
    STREAM_OWN_USAGE,
    TEXT,
    BedrockServer,
    converse_stream_frames,
    event_frame,
)
from shared_corpus import CORPUS, MISSING

from pytest_tokenbudget.model import Call, Usage
from pytest_tokenbudget.providers import route

anthropic = pytest.importorskip("anthropic")
pytest.importorskip("boto3")  # AnthropicBedrock signs its requests with botocore

MODEL = "anthropic.claude-3-5-sonnet-20241022-v2:0"
MESSAGES = [{"role": "user", "content": "hi"}]
HEADER_USAGE = Usage(input_tokens=INVOKE_HEADER_USAGE["input"], output_tokens=INVOKE_HEADER_USAGE["output"])
METRICS_USAGE = Usage(
    input_tokens=STREAM_METRICS["inputTokenCount"], output_tokens=STREAM_METRICS["outputTokenCount"]
)
CONVERSE = Usage(
    input_tokens=11 + 1028, cache_write_tokens=1028, output_tokens=CONVERSE_USAGE["outputTokens"]
)
CONVERSE_STREAM = Usage(
    input_tokens=12 + 1028, cached_input_tokens=1028, output_tokens=CONVERSE_STREAM_USAGE["outputTokens"]
)


@pytest.fixture(scope="module")
def bedrock() -> Iterator[BedrockServer]:
    running = BedrockServer().start()
    yield running
    running.stop()


def sdk(url: str, kind: Any = None) -> Any:
    """An AnthropicBedrock client (sync unless ``kind`` says otherwise); close it after use."""
    return (kind or anthropic.AnthropicBedrock)(
        aws_access_key="AKIAEXAMPLE", aws_secret_key="secret", aws_region="us-east-1", base_url=url
    )


@pytest.fixture
def claude(bedrock: BedrockServer) -> Iterator[Any]:
    with sdk(bedrock.url) as client:
        yield client


def summary(call: Call) -> tuple[Any, ...]:
    return (call.provider, call.api, call.model, call.state, call.streamed, call.usage)


# -- routing --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "host",
    [
        "bedrock-runtime.us-east-1.amazonaws.com",
        "bedrock-runtime-fips.us-gov-west-1.amazonaws.com",
        "vpce-0a1b2c3d-4e5f.bedrock-runtime.eu-west-1.vpce.amazonaws.com",
        "bedrock-runtime.eu-west-1.vpce.amazonaws.com",
        "127.0.0.1",
    ],
)
@pytest.mark.parametrize(
    ("operation", "api"),
    [
        ("converse", "bedrock.converse"),
        ("converse-stream", "bedrock.converse-stream"),
        ("invoke", "bedrock.invoke"),
        ("invoke-with-response-stream", "bedrock.invoke-stream"),
    ],
)
def test_bedrock_paths_are_routed_on_every_host(host: str, operation: str, api: str) -> None:
    found = route("POST", host, f"/model/anthropic.claude-3-5-sonnet-20241022-v2%3A0/{operation}")
    assert found is not None
    assert (found.provider, found.api, found.model_hint) == ("bedrock", api, MODEL)


@pytest.mark.parametrize(
    "path",
    [
        "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Ainference-profile%2Fus.anthropic.x-v1%3A0/converse",
        # httpx hands the path over unquoted
        "/model/arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.x-v1:0/converse",
    ],
)
def test_an_arn_model_id_is_read_quoted_or_not(path: str) -> None:
    found = route("POST", "bedrock-runtime.us-east-1.amazonaws.com", path)
    assert found is not None
    assert found.model_hint == "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.x-v1:0"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/model/m/count-tokens"),  # not usage
        ("POST", "/model//converse"),
        ("POST", "/converse"),
        ("GET", "/model/m/converse"),
        ("POST", "/async-invoke"),
    ],
)
def test_other_bedrock_requests_are_not_calls(method: str, path: str) -> None:
    assert route(method, "bedrock-runtime.us-east-1.amazonaws.com", path) is None


# -- AnthropicBedrock (httpx2) -----------------------------------------------------------------------


def test_anthropic_bedrock_invoke_reads_the_token_headers(claude: Any, calls: list[Call]) -> None:
    message = claude.messages.create(model=MODEL, max_tokens=10, messages=MESSAGES)
    assert message.content[0].text == TEXT
    (call,) = calls
    assert summary(call) == ("bedrock", "bedrock.invoke", MODEL, "complete", False, HEADER_USAGE)
    assert call.source == "live"


def test_anthropic_bedrock_invoke_without_headers_reads_the_body(claude: Any, calls: list[Call]) -> None:
    model = "anthropic.claude-no-headers-v1:0"
    message = claude.messages.create(model=model, max_tokens=10, messages=MESSAGES)
    assert message.usage.cache_read_input_tokens == INVOKE_BODY_USAGE["cache_read_input_tokens"]
    (call,) = calls
    assert call.model == model  # the path's, as boto3's calls are named (the body says its own)
    assert call.usage == Usage(
        input_tokens=112, cached_input_tokens=100, cache_write_tokens=7, output_tokens=42
    )


def test_anthropic_bedrock_stream_helper_and_raw_stream(claude: Any, calls: list[Call]) -> None:
    client = claude
    with client.messages.stream(model=MODEL, max_tokens=10, messages=MESSAGES) as stream:
        assert stream.get_final_text() == TEXT
    events = list(client.messages.create(model=MODEL, max_tokens=10, messages=MESSAGES, stream=True))
    assert events[-1].type == "message_stop"
    assert [summary(c) for c in calls] == [
        ("bedrock", "bedrock.invoke-stream", MODEL, "complete", True, METRICS_USAGE),
    ] * 2


def test_anthropic_bedrock_stream_without_metrics_counts_the_models_events(
    claude: Any, calls: list[Call]
) -> None:
    with claude.messages.stream(model="m-no-metrics", max_tokens=10, messages=MESSAGES) as stream:
        stream.get_final_text()
    (call,) = calls
    assert call.usage == Usage(**STREAM_OWN_USAGE)
    assert call.state == "closed-early"  # Bedrock's final metrics never came


def test_anthropic_bedrock_async_invoke_and_stream(bedrock: BedrockServer, calls: list[Call]) -> None:
    async def main() -> str:
        async with sdk(bedrock.url, anthropic.AsyncAnthropicBedrock) as client:
            await client.messages.create(model=MODEL, max_tokens=10, messages=MESSAGES)
            async with client.messages.stream(model=MODEL, max_tokens=10, messages=MESSAGES) as stream:
                return await stream.get_final_text()

    assert asyncio.run(main()) == TEXT
    assert [summary(c) for c in calls] == [
        ("bedrock", "bedrock.invoke", MODEL, "complete", False, HEADER_USAGE),
        ("bedrock", "bedrock.invoke-stream", MODEL, "complete", True, METRICS_USAGE),
    ]


def test_anthropic_bedrock_stream_closed_early(claude: Any, calls: list[Call]) -> None:
    stream = claude.messages.create(model=MODEL, max_tokens=10, messages=MESSAGES, stream=True)
    next(iter(stream))
    stream.close()
    (call,) = calls
    assert call.state == "closed-early"


def test_a_corrupt_event_stream_is_unparsed_and_reaches_the_caller_intact(
    bedrock: BedrockServer, calls: list[Call]
) -> None:
    url = f"{bedrock.url}/model/corrupt/invoke-with-response-stream"
    with httpx2.Client() as client, client.stream("POST", url, json={}) as response:
        received = b"".join(response.iter_bytes())
    with httpx2.Client() as client:
        clean = client.post(f"{bedrock.url}/model/xxxxxxx/invoke-with-response-stream", json={}).content
    assert len(received) == len(clean)
    assert received != clean  # only the flipped CRC byte differs
    assert [(c.state, c.api) for c in calls] == [
        ("unparsed", "bedrock.invoke-stream"),
        ("complete", "bedrock.invoke-stream"),
    ]
    assert "checksum" in calls[0].detail


# -- the Converse API over raw clients (LiteLLM's Bedrock sends these with httpx) -----------------------


@pytest.mark.parametrize("library", [httpx, httpx2], ids=["httpx", "httpx2"])
def test_converse_and_converse_stream_over_httpx(
    library: Any, bedrock: BedrockServer, calls: list[Call]
) -> None:
    quoted = "anthropic.claude-3-5-sonnet-20241022-v2%3A0"
    with library.Client(base_url=bedrock.url) as client:
        answer = client.post(f"/model/{quoted}/converse", json={"messages": []}).json()
        with client.stream("POST", f"/model/{quoted}/converse-stream", json={"messages": []}) as response:
            received = b"".join(response.iter_bytes())
    assert answer["output"]["message"]["content"] == [{"text": TEXT}]
    assert received == b"".join(converse_stream_frames())  # untouched
    assert [summary(c) for c in calls] == [
        ("bedrock", "bedrock.converse", MODEL, "complete", False, CONVERSE),
        ("bedrock", "bedrock.converse-stream", MODEL, "complete", True, CONVERSE_STREAM),
    ]


def test_converse_stream_over_async_httpx_read_whole(bedrock: BedrockServer, calls: list[Call]) -> None:
    async def main() -> bytes:
        async with httpx.AsyncClient() as client:
            response = await client.post(f"{bedrock.url}/model/m/converse-stream", json={})
            return response.content

    assert asyncio.run(main()) == b"".join(converse_stream_frames())
    assert [(c.state, c.streamed, c.usage) for c in calls] == [("complete", True, CONVERSE_STREAM)]


def test_converse_stream_and_invoke_over_requests(bedrock: BedrockServer, calls: list[Call]) -> None:
    with requests.Session() as session:
        with session.post(
            f"{bedrock.url}/model/m/converse-stream", json={}, stream=True, timeout=10
        ) as response:
            received = b"".join(response.iter_content(chunk_size=7))
        invoked = session.post(f"{bedrock.url}/model/m/invoke", json={}, timeout=10).json()
    assert received == b"".join(converse_stream_frames())
    assert invoked["content"][0]["text"] == TEXT
    assert [(c.api, c.state, c.usage) for c in calls] == [
        ("bedrock.converse-stream", "complete", CONVERSE_STREAM),
        ("bedrock.invoke", "complete", HEADER_USAGE),
    ]


def test_converse_stream_and_invoke_over_urllib(bedrock: BedrockServer, calls: list[Call]) -> None:
    """The standard library too: the token headers of InvokeModel read from urllib's response."""
    import urllib.request

    def post(operation: str) -> bytes:
        request = urllib.request.Request(
            f"{bedrock.url}/model/m/{operation}", data=b"{}", headers={"content-type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return b"".join(iter(lambda: response.read(7), b""))

    assert post("converse-stream") == b"".join(converse_stream_frames())
    assert json.loads(post("invoke"))["content"][0]["text"] == TEXT
    assert [(c.api, c.state, c.usage) for c in calls] == [
        ("bedrock.converse-stream", "complete", CONVERSE_STREAM),
        ("bedrock.invoke", "complete", HEADER_USAGE),
    ]


def test_an_exception_message_mid_stream_is_no_complete_stream(calls: list[Call]) -> None:
    frames = [
        *converse_stream_frames()[:2],
        event_frame("throttlingException", {"message": "slow down"}, message_type="exception"),
    ]

    def answer(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(
            200, content=b"".join(frames), headers={"content-type": "application/vnd.amazon.eventstream"}
        )

    with httpx2.Client(transport=httpx2.MockTransport(answer)) as client:
        client.post("https://bedrock-runtime.us-east-1.amazonaws.com/model/m/converse-stream", json={})
    (call,) = calls
    assert (call.source, call.streamed, call.state, call.usage.total_tokens) == (
        "mocked",
        True,
        "unmetered",
        0,
    )


# -- boto3 and a layer below it ---------------------------------------------------------------------


def test_boto3_marks_its_send_as_inside_a_capture(bedrock: BedrockServer, calls: list[Call]) -> None:
    """A lower layer (http.client under urllib3) must see boto3's Bedrock send as already counted."""
    import boto3

    from pytest_tokenbudget.capture.recorder import inside_capture

    seen: list[bool] = []
    client = boto3.client(
        "bedrock-runtime",
        region_name="us-east-1",
        endpoint_url=bedrock.url,
        aws_access_key_id="AKIAEXAMPLE",
        aws_secret_access_key="secret",
    )
    client.meta.events.register("before-send.bedrock-runtime", lambda **kwargs: seen.append(inside_capture()))
    client.converse(modelId=MODEL, messages=[{"role": "user", "content": [{"text": "hi"}]}])
    assert seen == [True]
    assert not inside_capture()
    assert [summary(c) for c in calls] == [
        ("bedrock", "bedrock.converse", MODEL, "complete", False, CONVERSE)
    ]


# -- the corpus, replayed through httpx2 ------------------------------------------------------------


def _corpus_cases() -> list[Any]:
    manifest = CORPUS / "MANIFEST.details.json"
    if not manifest.is_file():
        return [pytest.param(None, 0, marks=pytest.mark.skip(reason=MISSING))]
    return [
        pytest.param(entry["file"], index, id=f"{Path(entry['file']).stem}-{index}")
        for entry in json.loads(manifest.read_text())
        if entry["file"].startswith("bedrock/")
        for index in range(len(entry["interactions"]))
    ]


@pytest.mark.parametrize(("cassette", "index"), _corpus_cases())
@pytest.mark.parametrize("streaming", [True, False], ids=["iter-bytes", "read-whole"])
def test_corpus_bedrock_replayed_through_httpx2(
    cassette: str, index: int, streaming: bool, calls: list[Call]
) -> None:
    """Recorded boto3 traffic replayed by vcrpy under httpx2: the numbers boto3 gets, exactly."""
    vcr = pytest.importorskip("vcr")
    entry = next(
        e for e in json.loads((CORPUS / "MANIFEST.details.json").read_text()) if e["file"] == cassette
    )
    interaction = entry["interactions"][index]
    path = urlsplit(interaction["uri"]).path
    cassette_player = vcr.VCR(match_on=["method", "path"], record_mode="none")
    with cassette_player.use_cassette(str(CORPUS / cassette)), httpx2.Client() as client:
        for _ in range(index + 1):  # earlier interactions of the same path come first
            calls.clear()
            if streaming:
                with client.stream("POST", interaction["uri"], content=b"{}") as response:
                    for _chunk in response.iter_bytes():
                        pass
            else:
                client.post(interaction["uri"], content=b"{}").read()
    (call,) = calls
    assert (call.provider, call.source, call.model) == (
        "bedrock",
        "replayed",
        path.split("/")[2].replace("%3A", ":"),
    )
    expected = interaction["expected"]
    assert {name: getattr(call.usage, name) for name in expected} == expected
    assert call.state == "complete"


# -- a session: both paths counted and priced alike -------------------------------------------------

SESSION_SUITE = f"""
import os

import boto3
import httpx2
from anthropic import AnthropicBedrock

URL = os.environ["BEDROCK_URL"]
MODEL = {MODEL!r}


def test_boto3():
    client = boto3.client("bedrock-runtime", region_name="us-east-1", endpoint_url=URL,
                          aws_access_key_id="AKIAEXAMPLE", aws_secret_access_key="secret")
    client.invoke_model(modelId=MODEL, body=b"{{}}")["body"].read()
    client.converse(modelId=MODEL, messages=[{{"role": "user", "content": [{{"text": "hi"}}]}}])


def test_httpx2():
    with AnthropicBedrock(aws_access_key="AKIAEXAMPLE", aws_secret_key="secret", aws_region="us-east-1",
                          base_url=URL) as client:
        client.messages.create(model=MODEL, max_tokens=10, messages=[{{"role": "user", "content": "hi"}}])
    with httpx2.Client() as client:
        client.post(URL + "/model/" + MODEL.replace(":", "%3A") + "/converse", json={{}}).raise_for_status()
"""


def test_a_session_counts_and_prices_httpx2_bedrock_as_boto3s(
    pytester: pytest.Pytester, bedrock: BedrockServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BEDROCK_URL", bedrock.url)
    pytester.makepyfile(test_app=SESSION_SUITE)
    result = pytester.runpytest("--token-budget", "--token-budget-json=run.json")
    result.assert_outcomes(passed=2)
    run = json.loads((pytester.path / "run.json").read_text())
    boto, sdk_entry = run["tests"]["test_app.py::test_boto3"], run["tests"]["test_app.py::test_httpx2"]
    counts = ("calls", "input_tokens", "cached_input_tokens", "cache_write_tokens", "output_tokens")
    expected = HEADER_USAGE + CONVERSE
    assert tuple(boto[name] for name in counts) == (
        2,
        expected.input_tokens,
        expected.cached_input_tokens,
        expected.cache_write_tokens,
        expected.output_tokens,
    )
    assert {name: sdk_entry[name] for name in counts} == {name: boto[name] for name in counts}
    assert sdk_entry["cost_usd"] == boto["cost_usd"] > 0
    assert list(sdk_entry["models"]) == list(boto["models"]) == [f"bedrock/{MODEL}"]
    assert run["totals"]["calls"] == 4
    assert run["issues"] == []
