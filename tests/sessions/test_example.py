"""The example app's suite (examples/support_assistant), run as the README's quick start runs it.

Its tests replay vcrpy cassettes through pytest-recording (``--record-mode=none``): the real
openai and anthropic SDKs, no network, exact numbers every time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "support_assistant"


def run_example(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "ANTHROPIC_", "PYTEST_"))}
    env["COLUMNS"] = "160"
    command = [
        sys.executable, "-m", "pytest", "--token-budget", "-p", "no:cacheprovider", "-p", "no:asyncio",
        f"--token-budget-json={tmp_path / 'run.json'}", f"--token-budget-markdown={tmp_path / 'pr.md'}",
        *args,
    ]  # fmt: skip
    return subprocess.run(
        command, check=False, cwd=EXAMPLE, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow
def test_example_suite_replays_with_exact_totals(tmp_path: Path) -> None:
    result = run_example(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    run = json.loads((tmp_path / "run.json").read_text())
    totals = run["totals"]
    assert (totals["calls"], totals["replayed_calls"], totals["live_calls"]) == (4, 4, 0)
    assert (totals["input_tokens"], totals["cached_input_tokens"], totals["cache_write_tokens"]) == (
        3778,
        2824,
        0,
    )
    assert (totals["output_tokens"], totals["total_tokens"]) == (199, 3977)
    tests = {name.split("::")[-1]: entry.get("total_tokens", 0) for name, entry in run["tests"].items()}
    assert tests == {
        "test_answer_looks_the_order_up": 1674,  # the tool call and the answer
        "test_summary_is_streamed": 2295,  # Claude, streamed: message_start + message_delta
        "test_related_articles": 8,  # one embeddings request
        "test_no_llm_needed_for_unknown_orders": 0,
    }
    assert sorted(run["models"]) == [
        "anthropic/claude-sonnet-4-6",
        "openai/gpt-4o-mini-2024-07-18",
        "openai/text-embedding-3-small",
    ]
    assert {v["status"] for v in run["verdicts"]} == {"ok"}
    assert "4 calls in 3 tests: 3,977 tokens" in result.stdout
    assert (tmp_path / "pr.md").read_text().startswith("<!-- pytest-tokenbudget -->")


@pytest.mark.slow
def test_example_budget_trips_when_tightened(tmp_path: Path) -> None:
    result = run_example(tmp_path, "--token-budget-max-tokens=3000")
    assert result.returncode == 1
    assert "session" in result.stdout
    assert "3,977" in result.stdout


@pytest.mark.parametrize("cassette", sorted(EXAMPLE.glob("tests/cassettes/**/*.yaml")), ids=lambda p: p.stem)
def test_cassettes_name_public_hosts_and_hold_no_credentials(cassette: Path) -> None:
    text = cassette.read_text()
    for interaction in yaml.safe_load(text)["interactions"]:
        request = interaction["request"]
        assert request["uri"].startswith(("https://api.openai.com/", "https://api.anthropic.com/"))
        assert not {"authorization", "x-api-key", "host"} & {h.lower() for h in request["headers"]}
    assert "127.0.0.1" not in text
    assert "sk-" not in text
