"""``tokenbudget reprice``: the same run's tokens on other models, at today's prices."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_tokenbudget.cli import main as cli
from pytest_tokenbudget.model import Call, Run, Usage
from pytest_tokenbudget.pricing.prices import Pricer
from pytest_tokenbudget.report.reprice import RepriceError, parse_mappings, reprice
from pytest_tokenbudget.runs.artifact import write_run

pytest.importorskip("genai_prices")

CHAT = "tests/test_chat.py::test_answer"
SUMMARY = "tests/test_chat.py::test_summary[a|b @x]"


def _run() -> Run:
    run = Run(meta={"finished": "2026-12-01T00:00:00Z"})
    calls = [
        (CHAT, "openai", "gpt-4o", Usage(10_000, 2_000, 0, 1_000, 0)),
        (CHAT, "anthropic", "claude-sonnet-4-5", Usage(5_000, 0, 0, 500, 0)),
        (SUMMARY, "openai", "gpt-4o", Usage(2_000, 0, 0, 200, 0)),
        ("tests/test_other.py::test_embed", "openai", "text-embedding-3-small", Usage(800, 0, 0, 0, 0)),
    ]
    for owner, provider, model, usage in calls:
        cost = Pricer().cost_of(provider, model, usage)
        run.usage_for(owner).add_call(Call(owner, "call", provider, "x", "h", model, usage, cost_usd=cost))
    return run


def _now(provider: str, model: str, usage: Usage) -> float:
    cost = Pricer().cost_of(provider, model, usage)
    assert cost is not None
    return cost


def test_swapping_a_model_prices_the_same_tokens_on_the_other() -> None:
    result = reprice(_run(), parse_mappings(["gpt-4o=gpt-4o-mini"]))
    chat_4o, summary_4o = Usage(10_000, 2_000, 0, 1_000, 0), Usage(2_000, 0, 0, 200, 0)
    sonnet = _now("anthropic", "claude-sonnet-4-5", Usage(5_000, 0, 0, 500, 0))
    expected_chat = _now("openai", "gpt-4o-mini", chat_4o) + sonnet
    rows = {row.test: row for row in result.rows}
    assert set(rows) == {CHAT, SUMMARY}  # the embedding test uses no swapped model
    assert rows[CHAT].what_if == pytest.approx(expected_chat)
    assert rows[CHAT].now == pytest.approx(_now("openai", "gpt-4o", chat_4o) + sonnet)
    assert rows[CHAT].swaps == ["openai/gpt-4o → openai/gpt-4o-mini"]
    assert rows[SUMMARY].what_if == pytest.approx(_now("openai", "gpt-4o-mini", summary_4o))
    assert result.what_if < result.now  # gpt-4o-mini is cheaper
    assert result.now == pytest.approx(sum(m["now"] for m in result.models))
    assert [r.test for r in result.rows] == [CHAT, SUMMARY]  # the largest change first


def test_a_provider_can_change_and_a_glob_picks_models() -> None:
    result = reprice(_run(), parse_mappings(["claude-sonnet-*=anthropic/claude-opus-4-1"]))
    (model,) = [m for m in result.models if m["model"] == "anthropic/claude-sonnet-4-5"]
    assert model["as"] == "anthropic/claude-opus-4-1"
    assert model["what_if"] > model["now"]


def test_unknown_models_and_bad_mappings_are_clear_errors() -> None:
    with pytest.raises(
        RepriceError, match=r"no price for openai/gpt-9-imaginary .*genai-prices does not know"
    ):
        reprice(_run(), parse_mappings(["gpt-4o=gpt-9-imaginary"]))
    with pytest.raises(RepriceError, match=r"no call in this run used 'gpt-5'"):
        reprice(_run(), parse_mappings(["gpt-5=gpt-4o-mini"]))
    with pytest.raises(RepriceError, match="expected FROM=TO"):
        parse_mappings(["gpt-4o"])


def test_the_command_in_text_markdown_and_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "run.json"
    write_run(path, _run())
    args = ["reprice", str(path), "--model", "gpt-4o=gpt-4o-mini", "-m", "claude-sonnet-4-5=claude-haiku-4-5"]
    assert cli([*args, "--config", str(tmp_path / "none.toml")]) == 2  # a named config must be there
    assert "cannot be read" in capsys.readouterr().err
    assert cli(args) == 0
    text = capsys.readouterr().out
    assert text.startswith("cost now $")
    assert "openai/gpt-4o → openai/gpt-4o-mini" in text
    assert "per test:" in text
    assert cli([*args, "-f", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["totals"]["delta"] < 0
    assert {t["test"] for t in data["tests"]} == {CHAT, SUMMARY}
    assert cli([*args, "-f", "markdown"]) == 0
    md = capsys.readouterr().out
    assert "| `anthropic/claude-sonnet-4-5` | `anthropic/claude-haiku-4-5` |" in md
    assert "@x" not in md.replace("`tests/test_chat.py::test_summary[a\\|b @x]`", "")  # only as code
    assert cli(["reprice", str(path), "--model", "gpt-4o=nope-model"]) == 2
    assert "no price for openai/nope-model" in capsys.readouterr().err
