"""LiteLLM, end to end, in its own interpreter.

LiteLLM pins ``openai<3`` while this project tests against openai 3, so LiteLLM lives in a second
virtual environment (``.ci/run`` builds it; locally ``python3 -m venv .venv-litellm &&
.venv-litellm/bin/pip install -e . litellm pytest``) named by ``TOKENBUDGET_LITELLM_PYTHON``. A real
pytest session runs there with the plugin on, against a loopback server speaking OpenAI's API:
``completion``, ``acompletion`` (LiteLLM's aiohttp transport under httpx) and streaming, each
counted once with the server's exact numbers.
"""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from provider_server import CHAT_USAGE, ProviderServer

PYTHON = os.environ.get("TOKENBUDGET_LITELLM_PYTHON", "")
NO_LITELLM = (
    "LiteLLM runs in its own virtual environment (it pins openai<3); make it once, from the "
    "repository root: 'python3 -m venv .venv-litellm && .venv-litellm/bin/pip install -e . litellm "
    "pytest && export TOKENBUDGET_LITELLM_PYTHON=$PWD/.venv-litellm/bin/python'"
)

pytestmark = pytest.mark.skipif(
    not PYTHON,
    reason=NO_LITELLM,
)

SUITE = """
import asyncio
import os

import litellm

URL = os.environ["LLM_URL"] + "/v1"
ARGS = {{"model": "openai/gpt-4o-mini", "api_base": URL, "api_key": "sk-test",
        "messages": [{{"role": "user", "content": "Hi"}}]}}


def test_completion():
    response = litellm.completion(**ARGS)
    assert response.usage.prompt_tokens == {prompt}

def test_acompletion():
    async def main():
        return await litellm.acompletion(**ARGS)
    assert asyncio.run(main()).usage.completion_tokens == {completion}

def test_stream():
    chunks = list(litellm.completion(**ARGS, stream=True, stream_options={{"include_usage": True}}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hi"

def test_astream():
    async def main():
        stream = await litellm.acompletion(**ARGS, stream=True, stream_options={{"include_usage": True}})
        return [chunk async for chunk in stream]
    assert asyncio.run(main())
"""


@pytest.fixture
def server() -> Iterator[ProviderServer]:
    running = ProviderServer().start()
    yield running
    running.stop()


@pytest.mark.slow
def test_litellm_sync_async_and_streams_are_each_counted_once(server: ProviderServer, tmp_path: Path) -> None:
    prompt, completion = CHAT_USAGE["prompt_tokens"], CHAT_USAGE["completion_tokens"]
    (tmp_path / "test_litellm_app.py").write_text(
        textwrap.dedent(SUITE.format(prompt=prompt, completion=completion))
    )
    env = {
        **os.environ,
        "LLM_URL": server.url,
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # LiteLLM would fetch its price map from GitHub
        "TOKENBUDGET_OFFLINE": "1",
        "NO_PROXY": "127.0.0.1",
    }
    env.pop("PYTEST_ADDOPTS", None)
    result = subprocess.run(
        [
            PYTHON,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--token-budget",
            "--token-budget-json=run.json",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    run = json.loads((tmp_path / "run.json").read_text())
    for name in ("test_completion", "test_acompletion", "test_stream", "test_astream"):
        entry = run["tests"][f"test_litellm_app.py::{name}"]
        numbers = (entry["calls"], entry["input_tokens"], entry["output_tokens"], entry["estimated_calls"])
        assert numbers == (1, prompt, completion, 0), name
        assert list(entry["models"]) == ["openai-compatible/gpt-4o-mini"], name
    assert run["totals"]["calls"] == 4
    assert run["issues"] == []
