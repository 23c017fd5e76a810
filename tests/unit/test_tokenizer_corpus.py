"""Request estimates against the input tokens OpenAI actually reported, on real recorded traffic.

Reads ``../shared/corpus`` (real vcrpy cassettes, read-only). For OpenAI models with a public
encoding and text-only requests, the chat arithmetic should land within a token of the truth; with
tool schemas it is the cookbook's approximation and is held to a looser bound.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

import pytest
import yaml
from shared_corpus import CORPUS, MISSING

from pytest_tokenbudget.tokens import tokenizer

APIS = {
    "/chat/completions": "openai.chat",
    "/responses": "openai.responses",
    "/embeddings": "openai.embeddings",
}


def _api(uri: str) -> str | None:
    return next((api for suffix, api in APIS.items() if uri.partition("?")[0].endswith(suffix)), None)


def _cases() -> list[Any]:
    details = CORPUS / "MANIFEST.details.json"
    if not details.is_file():
        return [pytest.param(None, 0, "", marks=pytest.mark.skip(reason=MISSING))]
    cases = []
    for entry in json.loads(details.read_text(encoding="utf-8")):
        for index, meta in enumerate(entry["interactions"]):
            api = _api(meta.get("uri", ""))
            expected = (meta.get("expected") or {}).get("input_tokens")
            if (
                api
                and expected
                and meta.get("status") == 200
                and tokenizer.encoding_for_model(meta.get("model"))[1]
            ):
                cases.append(pytest.param(entry["file"], index, api, id=f"{entry['file']}#{index}"))
    return cases


@cache
def _interactions(file: str) -> list[dict[str, Any]]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with (CORPUS / file).open(encoding="utf-8") as handle:
        return yaml.load(handle, Loader=loader)["interactions"]


@cache
def _expected(file: str, index: int) -> int:
    details = json.loads((CORPUS / "MANIFEST.details.json").read_text(encoding="utf-8"))
    entry = next(e for e in details if e["file"] == file)
    return int(entry["interactions"][index]["expected"]["input_tokens"])


@pytest.mark.parametrize(("file", "index", "api"), _cases())
def test_estimate_matches_reported_input_tokens(file: str, index: int, api: str) -> None:
    body = _interactions(file)[index]["request"]["body"]
    if isinstance(body, dict):
        body = body.get("string")
    if not isinstance(body, str):
        pytest.skip("request body not stored as text")
    estimate = tokenizer.estimate_request(api, json.loads(body))
    reported = _expected(file, index)
    assert estimate.method.startswith("tiktoken:")
    if estimate.tools or estimate.attachments_unknown:
        assert abs(estimate.total - reported) <= 0.15 * reported, (estimate.total, reported)
    else:
        assert abs(estimate.total - reported) <= 1, (estimate.total, reported)
