"""Every file the plugin and the CLI write honours the umask, as ``open()`` does (issue 21.7).

Artifacts were made through ``tempfile.mkstemp`` (mode 0600 whatever the umask), so a CI artifact
uploader running as another user, or a teammate on a shared runner, could not read them. The
writes stay atomic: a temporary file beside the target, renamed into place.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_tokenbudget.cli import main

SUITE = """
import json

import httpx2
import openai


def reply(request):
    body = {
        "id": "c1",
        "object": "chat.completion",
        "model": "gpt-4o-mini",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    }
    return httpx2.Response(200, json=body)


def test_one_call():
    http = httpx2.Client(transport=httpx2.MockTransport(reply))
    client = openai.OpenAI(api_key="sk-test", base_url="https://api.openai.com/v1", http_client=http)
    client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
"""

OUTPUTS = {
    "--token-budget-json": "out/run.json",
    "--token-budget-markdown": "out/pr.md",
    "--token-budget-csv": "out/usage.csv",
    "--token-budget-junit": "out/budgets.xml",
    "--token-budget-calls": "out/calls.jsonl",
    "--token-budget-save-baseline": "out/baseline.json",
}


@pytest.fixture(params=[0o022, 0o027, 0o077], ids=lambda u: f"umask-{u:03o}")
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    previous = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.slow
def test_every_report_and_the_baseline_honour_the_umask(pytester: pytest.Pytester, umask: int) -> None:
    pytester.makepyfile(test_app=SUITE)
    args = [f"{flag}={path}" for flag, path in OUTPUTS.items()]
    result = pytester.runpytest_subprocess("--token-budget", "-p", "no:cacheprovider", *args)
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    expected = 0o666 & ~umask
    modes = {path: _mode(pytester.path / path) for path in OUTPUTS.values()}
    assert modes == dict.fromkeys(OUTPUTS.values(), expected)
    leftovers = sorted(p.name for p in (pytester.path / "out").iterdir() if p.name.startswith("."))
    assert leftovers == []  # no temporary or part file left beside them


@pytest.mark.slow
def test_merged_runs_and_their_call_logs_honour_the_umask(pytester: pytest.Pytester, umask: int) -> None:
    pytester.makepyfile(test_one=SUITE, test_two=SUITE)
    for shard in ("one", "two"):
        result = pytester.runpytest_subprocess(
            f"test_{shard}.py",
            "--token-budget",
            "-p",
            "no:cacheprovider",
            "--token-budget-defer-session",
            f"--token-budget-json=shards/{shard}.json",
            f"--token-budget-calls=shards/{shard}.calls.jsonl",
        )
        assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    os.chdir(pytester.path)
    assert main(["merge", "shards", "-o", "out/merged.json", "--calls", "out/calls.jsonl"]) == 0
    expected = 0o666 & ~umask
    assert (_mode(pytester.path / "out/merged.json"), _mode(pytester.path / "out/calls.jsonl")) == (
        expected,
        expected,
    )
    assert len((pytester.path / "out/calls.jsonl").read_text().splitlines()) == 2
