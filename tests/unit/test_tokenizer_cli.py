"""`tokenbudget estimate`: offline token (and cost) estimates of a request body or a prompt file."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_tokenbudget.cli import main
from pytest_tokenbudget.tokens import tokenizer

SECRET_PROMPT = "Summarise the quarterly numbers for ACME-internal-7731."
BODY = {
    "model": "gpt-4o",
    "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": SECRET_PROMPT},
    ],
}


@pytest.fixture(autouse=True)
def fresh_tokenizer() -> Iterator[None]:
    tokenizer.reset()
    yield
    tokenizer.reset()


@pytest.fixture
def body_file(tmp_path: Path) -> Path:
    path = tmp_path / "request.json"
    path.write_text(json.dumps(BODY), encoding="utf-8")
    return path


def test_estimate_table_for_several_models(body_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["estimate", str(body_file), "--model", "gpt-4o", "--model", "gpt-4"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["model", "api", "method", "input"]
    for model, method in [("gpt-4o", "tiktoken:o200k_base"), ("gpt-4", "tiktoken:cl100k_base")]:
        expected = tokenizer.estimate_request("openai.chat", BODY, model)
        row = next(line.split() for line in lines if line.startswith(model + " "))
        assert row[:4] == [model, "openai.chat", method, f"{expected.total:,}"]
        assert row[4] == str(expected.system)
    assert SECRET_PROMPT not in out
    assert "ACME" not in out


def test_estimate_uses_the_body_model_by_default(body_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["estimate", str(body_file), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    expected = tokenizer.estimate_request("openai.chat", BODY).to_dict()
    (row,) = data["estimates"]
    assert {k: row[k] for k in expected} == expected
    assert "input_cost_usd" in row
    assert data["notices"] == []


def test_estimate_reads_a_plain_prompt_from_stdin(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(SECRET_PROMPT))
    assert main(["estimate", "-", "--model", "claude-haiku-4-5", "--json"]) == 0
    out = capsys.readouterr().out
    (row,) = json.loads(out)["estimates"]
    expected = tokenizer.estimate_request(
        "anthropic.messages", {"messages": [{"role": "user", "content": SECRET_PROMPT}]}, "claude-haiku-4-5"
    )
    assert row["api"] == "anthropic.messages"
    assert row["method"] == "approx:o200k_base"
    assert row["total"] == expected.total
    assert "plain prompt: counted as one user message" in row["notes"]
    assert SECRET_PROMPT not in out


def test_estimate_api_override(body_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["estimate", str(body_file), "--api", "anthropic.messages", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)["estimates"]
    assert row["api"] == "anthropic.messages"


def test_estimate_without_a_model_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("hello", encoding="utf-8")
    assert main(["estimate", str(prompt)]) == 2
    assert "give --model" in capsys.readouterr().err


def test_estimate_of_a_missing_file_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["estimate", str(tmp_path / "nope.json"), "--model", "gpt-4o"]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_estimate_unknown_api_is_an_error(body_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["estimate", str(body_file), "--api", "images"]) == 2
    assert "unknown api" in capsys.readouterr().err


def test_estimate_prints_the_heuristic_notice_offline(
    body_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "empty"))
    assert main(["estimate", str(body_file)]) == 0
    out = capsys.readouterr().out
    assert " heuristic " in out
    assert out.count("notice: token estimates for o200k_base models use a heuristic") == 1
