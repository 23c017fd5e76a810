"""No output of the plugin ever holds a key, a header, a prompt or a completion.

One run sends requests carrying planted secrets in every place a provider puts them (OpenAI's
bearer token, Anthropic's ``x-api-key``, Azure's ``api-key``, Gemini's ``x-goog-api-key`` and
``?key=``, an AWS SigV4 ``Authorization`` with its session token) and a planted prompt, with every
output switched on: JSON, JUnit, markdown, CSV, call log, baseline, history, GitHub job summary
and annotations, and the verbose terminal. Every file written and both output streams are scanned.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from llm_server import REPLY_PIECES, LLMServer

import pytest_tokenbudget.capture
import pytest_tokenbudget.ledger
import pytest_tokenbudget.model  # noqa: F401 - imported before pytester's in-process sessions snapshot sys.modules

SECRETS = {
    "openai": "sk-PLANTED-openai-7f3a9c",
    "anthropic": "sk-ant-PLANTED-anthropic-41be",
    "azure": "PLANTED-azure-key-9d2e",
    "goog": "PLANTED-goog-key-5c81",
    "query": "PLANTED-query-key-0a6f",
    "aws_access": "AKIAPLANTED7777EXAMPLE",
    "aws_signature": "PLANTEDsig0123456789abcdef",
    "aws_token": "PLANTED-aws-session-token-33aa",
}
PROMPT = "PLANTED-PROMPT-TEXT"
COMPLETION = ["".join(REPLY_PIECES), *[piece.strip() for piece in REPLY_PIECES if len(piece.strip()) > 8]]

SUITE = f"""
import os

import anthropic
import httpx2
import openai
import pytest

URL = os.environ["LLM_URL"]
ASK = [{{"role": "user", "content": "{PROMPT} where is my order?"}}]


def raw(path, headers):
    with httpx2.Client(base_url=URL) as client:
        response = client.post(path, json={{"model": "gpt-4o-mini", "messages": ASK}}, headers=headers)
    assert response.status_code == 200


@pytest.mark.token_budget(max_tokens=1500)  # 1,346 tokens: at 90 %, a GitHub ::warning annotation
def test_openai_bearer():
    with openai.OpenAI(base_url=URL + "/v1", api_key="{SECRETS["openai"]}", max_retries=0) as client:
        reply = client.chat.completions.create(model="gpt-4o-mini", messages=ASK)
    assert "Thursday" in reply.choices[0].message.content


def test_anthropic_x_api_key():
    with anthropic.Anthropic(base_url=URL, api_key="{SECRETS["anthropic"]}", max_retries=0) as client:
        client.messages.create(model="claude-sonnet-4-6", max_tokens=64, messages=ASK)


def test_azure_api_key():
    raw("/v1/chat/completions?api-version=2024-10-21", {{"api-key": "{SECRETS["azure"]}"}})


def test_goog_api_key():
    raw("/v1/chat/completions", {{"x-goog-api-key": "{SECRETS["goog"]}"}})


def test_key_in_query_string():
    raw("/v1/chat/completions?key={SECRETS["query"]}", {{}})


def test_aws_sigv4():
    raw(
        "/v1/chat/completions",
        {{
            "authorization": "AWS4-HMAC-SHA256 Credential={SECRETS["aws_access"]}/20260101/us-east-1/bedrock/"
            "aws4_request, SignedHeaders=host;x-amz-date, Signature={SECRETS["aws_signature"]}",
            "x-amz-security-token": "{SECRETS["aws_token"]}",
            "x-amz-date": "20260101T000000Z",
        }},
    )


def test_stream_with_bearer():
    with openai.OpenAI(base_url=URL + "/v1", api_key="{SECRETS["openai"]}", max_retries=0) as client:
        stream = client.chat.completions.create(
            model="gpt-4o-mini", messages=ASK, stream=True, stream_options={{"include_usage": True}}
        )
        assert "Thursday" in "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
"""


def test_no_output_holds_a_secret_a_prompt_or_a_completion(
    pytester: pytest.Pytester, llm_server: LLMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLM_URL", llm_server.url)
    monkeypatch.setenv("COLUMNS", "200")
    summary = pytester.path / "github" / "step_summary.md"
    summary.parent.mkdir()
    summary.write_text("")
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    for name in ("GITHUB_SHA", "GITHUB_REF_NAME", "GITHUB_HEAD_REF"):
        monkeypatch.delenv(name, raising=False)
    pytester.makepyfile(test_planted=SUITE)
    result = pytester.runpytest(
        "-v", "-rA", "--token-budget",
        "--token-budget-json=out/run.json", "--token-budget-junit=out/junit.xml",
        "--token-budget-markdown=out/report.md", "--token-budget-csv=out/tests.csv",
        "--token-budget-calls=out/calls.jsonl", "--token-budget-save-baseline=out/baseline.json",
        "--token-budget-save-run",
    )  # fmt: skip
    result.assert_outcomes(passed=7)

    # every output really was written, and holds the numbers
    run = json.loads((pytester.path / "out" / "run.json").read_text())
    assert (run["totals"]["calls"], run["totals"]["total_tokens"]) == (7, 1346 * 5 + 3068 + 254)
    out = result.stdout.str()
    assert "::warning file=test_planted.py" in out  # the annotation on the marked test
    assert "<!-- pytest-tokenbudget -->" in summary.read_text()
    assert "baseline saved" in out
    assert "run kept in history" in out
    written = sorted(
        p
        for p in pytester.path.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.name != "test_planted.py"
    )
    names = {p.relative_to(pytester.path).as_posix() for p in written}
    for expected in ("out/run.json", "out/junit.xml", "out/report.md", "out/tests.csv", "out/calls.jsonl"):
        assert expected in names
    assert "out/baseline.json" in names
    assert any(name.startswith(".tokenbudget/runs/") for name in names), names
    assert len((pytester.path / "out" / "calls.jsonl").read_text().splitlines()) == 7

    texts = {p.relative_to(pytester.path).as_posix(): p.read_text(errors="replace") for p in written}
    texts["<stdout>"] = out
    texts["<stderr>"] = result.stderr.str()
    forbidden = [*SECRETS.values(), PROMPT, *COMPLETION, "Bearer", "x-api-key", "x-goog-api-key", "AWS4-HMAC"]
    found = {(where, secret) for where, text in texts.items() for secret in forbidden if secret in text}
    assert found == set()
    assert not (Path(pytester.path) / "out" / ".calls.jsonl.main.part").exists()
