"""Acceptance: real recorded LLM API traffic replayed through the plugin's capture path.

Reads ``../shared/corpus`` (vcrpy cassettes from public projects, read-only, never copied here).
Every non-Bedrock interaction (Bedrock is replayed through boto3 in test_bedrock.py) is fed to the
same :class:`~pytest_tokenbudget.capture.recorder.Recorder` entry points the HTTP stacks use:

* ``body``: the decoded body read whole (requests, httpx after ``.read()``) → ``Recorder.body``;
* ``chunks``: the raw, still-encoded bytes split at arbitrary boundaries, with the recorded
  content-type and content-encoding (httpx streaming) → ``Recorder.stream`` / ``StreamTap.feed``;
* ``tiny-head``: the same, the first chunk only 3 bytes (a body's format is sniffed from its start
  when the recorder stripped the headers).

The resulting call's usage must equal the manifest's normalised ``expected`` numbers exactly.
"""

from __future__ import annotations

import gzip
import json
import random
from collections import Counter
from functools import cache
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import yaml
from shared_corpus import CORPUS, MISSING

from pytest_tokenbudget.capture import Capture
from pytest_tokenbudget.capture.recorder import Recorder
from pytest_tokenbudget.ledger import Ledger, Owner
from pytest_tokenbudget.model import USAGE_FIELDS, Call, CallState, Usage

DETAILS = CORPUS / "MANIFEST.details.json"
MODES = ("body", "chunks", "tiny-head")

# (cassette, interaction index, mode or None for every mode) -> why the plugin reports other numbers.
KNOWN_BUGS: dict[tuple[str, int, str | None], str] = {}
# (cassette, interaction index) -> why the plugin names another model than the one requested.
MODEL_BUGS: dict[tuple[str, int], str] = {}


@cache
def _details() -> list[dict[str, Any]]:
    return json.loads(DETAILS.read_text(encoding="utf-8"))


@cache
def _entry(file: str) -> dict[str, Any]:
    return next(entry for entry in _details() if entry["file"] == file)


@cache
def _cassette(file: str) -> list[dict[str, Any]]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with (CORPUS / file).open(encoding="utf-8") as handle:
        return yaml.load(handle, Loader=loader)["interactions"]


def _checked() -> list[tuple[str, int]]:
    """Every interaction this module replays: all but Bedrock's."""
    return [
        (entry["file"], index)
        for entry in _details()
        if not entry["file"].startswith("bedrock/")
        for index in range(len(entry["interactions"]))
    ]


def _cases() -> list[Any]:
    if not DETAILS.is_file():
        return [pytest.param(None, 0, "", marks=pytest.mark.skip(reason=MISSING))]
    cases = []
    for file, index in _checked():
        for mode in MODES:
            reason = KNOWN_BUGS.get((file, index, mode)) or KNOWN_BUGS.get((file, index, None))
            marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
            cases.append(pytest.param(file, index, mode, id=f"{file}#{index}-{mode}", marks=marks))
    return cases


# -- the recorded response ------------------------------------------------------------------------


class Recorded:
    """One recorded response as it came off the wire: status, headers, raw (still encoded) body."""

    def __init__(self, interaction: dict[str, Any]) -> None:
        response = interaction["response"]
        headers = {key.lower(): value for key, value in (response.get("headers") or {}).items()}
        self.headers = {key: value[0] if isinstance(value, list) else value for key, value in headers.items()}
        if "status" in response:
            self.status: int = response["status"]["code"]
        else:  # old vcrpy httpx layout
            self.status = response["status_code"]
        encoding = self.headers.get("content-encoding", "")
        if "parsed_body" in response:  # pydantic-ai's serializer: the decoded JSON, as YAML
            self.raw = json.dumps(response["parsed_body"]).encode()
            encoding = ""
        elif "content" in response:  # old vcrpy httpx layout: decoded text
            self.raw = response["content"].encode()
            encoding = ""
        else:
            body = response["body"]["string"]
            if isinstance(body, str):  # vcrpy stores decodable text as str, after decoding
                self.raw = body.encode()
                encoding = ""
            else:
                self.raw = body
        self.encoding: str = encoding
        self.content_type: str = self.headers.get("content-type", "")

    @property
    def decoded(self) -> bytes:
        if self.encoding.lower() in ("gzip", "x-gzip"):
            return gzip.decompress(self.raw)
        assert self.encoding in ("", "identity"), self.encoding
        return self.raw


def _split(data: bytes, seed: str, head: int | None = None) -> list[bytes]:
    """``data`` cut at arbitrary (seeded) places: mid-line, mid-event, mid-UTF-8, mid-gzip block;
    the first cut at ``head`` when given."""
    if len(data) < 2:
        return [data]
    rng = random.Random(seed)
    cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, 60)))
    if head is not None:
        cuts = [head, *(cut for cut in cuts if cut > head)]
    return [data[start:end] for start, end in zip([0, *cuts], [*cuts, len(data)], strict=True)]


def _request(interaction: dict[str, Any]) -> httpx.Request:
    """The recorded request as the httpx stack hands it to ``Recorder.start``."""
    request = interaction["request"]
    if "parsed_body" in request:
        body: Any = json.dumps(request["parsed_body"]).encode()
    else:
        body = request.get("body") or b""
    if isinstance(body, str):
        body = body.encode()
    return httpx.Request(request["method"], request["uri"], content=body)


def _replay(interaction: dict[str, Any], recorded: Recorded, mode: str, seed: str) -> list[Call]:
    """Feed one recorded response to a fresh recorder the way an HTTP stack does; its calls."""
    method, uri = interaction["request"]["method"], interaction["request"]["uri"]
    ledger = Ledger()
    ledger.push_owner(Owner("tests/test_corpus.py::replay", "call"))
    calls: list[Call] = []
    ledger.add_listener(calls.append)
    recorder = Recorder(ledger)
    url = urlsplit(uri)
    route = recorder.route(method, url.hostname or "", url.path)
    if route is None:  # not an LLM call: the stacks send it untouched
        return calls
    exchange = recorder.start(route, _request(interaction))
    if mode == "body":
        recorder.body(exchange, recorded.status, recorded.decoded, recorded.content_type)
    else:
        tap = recorder.stream(exchange, recorded.status, recorded.content_type, recorded.encoding)
        for chunk in _split(recorded.raw, seed, 3 if mode == "tiny-head" else None):
            tap.feed(chunk)
        tap.eof()
    ledger.settle_streams()
    assert not getattr(recorder, "first_errors", None), recorder.first_errors  # the plugin's own bugs
    return [call for call in calls if not call.part]  # not other models' shares (advisor iterations)


# -- tests ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("file", "index", "mode"), _cases())
def test_recorded_usage_is_extracted_exactly(file: str, index: int, mode: str) -> None:
    meta = _entry(file)["interactions"][index]
    interaction = _cassette(file)[index]
    assert interaction["request"]["method"] == meta["method"]
    recorded = Recorded(interaction)
    assert recorded.status == meta["status"]
    assert (recorded.encoding == "gzip") == (meta["enc"] == "gzip")

    calls = _replay(interaction, recorded, mode, f"{file}#{index}")

    expected = meta.get("expected")
    if expected is None:
        # an error, a non-LLM endpoint or a response that reports no usage: never counted as reported
        assert len(calls) <= 1, calls
        for call in calls:  # at most the plugin's own estimate, flagged as such
            assert call.state != CallState.COMPLETE, call
            assert call.estimated or call.usage == Usage(), call
            if meta["status"] >= 400:
                assert (call.state, call.usage) == (CallState.FAILED, Usage())
        return
    if not any(expected.values()) and not calls:
        return  # reports no tokens (rerank): not an LLM call this plugin reads
    assert len(calls) == 1, "not recognised as an LLM call"
    (call,) = calls
    assert call.state == CallState.COMPLETE, (call.state, call.detail)
    assert not call.estimated
    assert {name: getattr(call.usage, name) for name in USAGE_FIELDS} == expected


def _named(reported: str, requested: str, host: str) -> bool:
    """The plugin names the model the response names: the request's, a dated snapshot of it, or
    (Azure, where the request names a deployment) the deployment's model."""
    if reported == "unknown":
        return False
    return reported == requested or reported.startswith(f"{requested}-") or _is_azure(host)


def _is_azure(host: str) -> bool:
    return host.endswith(".openai.azure.com")


def _model_cases() -> list[Any]:
    if not DETAILS.is_file():
        return [pytest.param(None, 0, marks=pytest.mark.skip(reason=MISSING))]
    cases = []
    for file, index in _checked():
        meta = _entry(file)["interactions"][index]
        if meta.get("model") and meta.get("expected") and any(meta["expected"].values()):
            reason = MODEL_BUGS.get((file, index))
            marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
            cases.append(pytest.param(file, index, id=f"{file}#{index}", marks=marks))
    return cases


@pytest.mark.parametrize(("file", "index"), _model_cases())
def test_recorded_model_is_named(file: str, index: int) -> None:
    meta = _entry(file)["interactions"][index]
    interaction = _cassette(file)[index]
    recorded = Recorded(interaction)
    models = set()
    for mode in ("body", "chunks"):
        calls = _replay(interaction, recorded, mode, f"{file}#{index}")
        assert len(calls) == 1, "not recognised as an LLM call"
        models.add(calls[0].model)
    (model,) = models  # both paths agree
    assert _named(model, meta["model"], urlsplit(meta["uri"]).hostname or ""), (model, meta["model"])


def _vcr_cases() -> list[Any]:
    if not DETAILS.is_file():
        return [pytest.param(None, marks=pytest.mark.skip(reason=MISSING))]
    files = dict.fromkeys(file for file, _ in _checked())
    return [
        pytest.param(file, id=file)
        for file in files
        # pydantic-ai's own serializer (parsed_body): stock vcrpy cannot load it
        if not any("parsed_body" in i["request"] or "parsed_body" in i["response"] for i in _cassette(file))
    ]


@pytest.mark.parametrize("file", _vcr_cases())
def test_cassette_replayed_by_vcrpy_under_httpx(file: str) -> None:
    """The whole cassette, in order, served by vcrpy to a real httpx client under the installed
    capture (streams read chunk by chunk): every call is seen as replayed, with the same numbers."""
    vcr = pytest.importorskip("vcr")
    ledger = Ledger()
    ledger.push_owner(Owner("tests/test_corpus.py::vcr", "call"))
    calls: list[Call] = []
    ledger.add_listener(calls.append)
    capture = Capture(ledger)
    capture.install()
    seen: list[tuple[int, Call]] = []
    try:
        with vcr.VCR(record_mode="none").use_cassette(str(CORPUS / file)), httpx.Client() as client:
            for index, meta in enumerate(_entry(file)["interactions"]):
                request = _request(_cassette(file)[index])
                calls.clear()
                if meta["stream"]:
                    with client.stream(request.method, request.url, content=request.content) as response:
                        for _chunk in response.iter_bytes():
                            pass
                else:
                    client.request(request.method, request.url, content=request.content)
                seen.extend((index, call) for call in calls if not call.part)
    finally:
        capture.uninstall()
    for index, call in seen:
        meta = _entry(file)["interactions"][index]
        assert call.source == "replayed"
        expected = meta.get("expected")
        if expected is None:
            assert call.state != CallState.COMPLETE
            assert call.estimated or call.usage == Usage()
        elif (file, index, None) not in KNOWN_BUGS:
            assert {name: getattr(call.usage, name) for name in USAGE_FIELDS} == expected, index
    routed = {index for index, _ in seen}
    for index, meta in enumerate(_entry(file)["interactions"]):
        if meta.get("expected") and any(meta["expected"].values()) and (file, index, None) not in KNOWN_BUGS:
            assert index in routed, f"interaction {index} not captured"


def test_corpus_coverage_by_provider(capsys: pytest.CaptureFixture[str]) -> None:
    """Every provider directory (but Bedrock's) is replayed, every interaction in every mode."""
    if not DETAILS.is_file():
        pytest.skip(MISSING)
    dirs = sorted(path.name for path in CORPUS.iterdir() if path.is_dir())
    cassettes = Counter(entry["file"].split("/", 1)[0] for entry in _details())
    assert sorted(cassettes) == dirs
    checked = _checked()
    assert len(checked) == sum(
        len(entry["interactions"]) for entry in _details() if not entry["file"].startswith("bedrock/")
    )
    params = {param.id for param in _cases()}
    assert params == {f"{file}#{index}-{mode}" for file, index in checked for mode in MODES}
    interactions: Counter[str] = Counter()
    xfail: Counter[str] = Counter()
    model_xfail: Counter[str] = Counter()
    for file, index in checked:
        provider = file.split("/", 1)[0]
        interactions[provider] += 1
        xfail[provider] += any((file, index, mode) in KNOWN_BUGS for mode in (*MODES, None))
        model_xfail[provider] += (file, index) in MODEL_BUGS
    assert set(interactions) == set(dirs) - {"bedrock"}
    assert all(interactions[name] > 0 for name in interactions)
    rows = [
        (name, cassettes[name], interactions[name], xfail[name], model_xfail[name])
        for name in sorted(interactions)
    ]
    rows.append(("total", *(sum(row[column] for row in rows) for column in range(1, 5))))
    lines = [
        f"{name:<13} {n_cassettes:>9} {n_interactions:>12} {n_interactions - n_xfail:>13} "
        f"{n_xfail:>11} {n_model:>11}"
        for name, n_cassettes, n_interactions, n_xfail, n_model in rows
    ]
    with capsys.disabled():
        print(f"\nusage checked in modes: {', '.join(MODES)}")
        print("provider dir  cassettes interactions usage-passing usage-xfail model-xfail")
        print("\n".join(lines))
