"""LiteLLM's Bedrock provider (it signs with boto3 and sends with httpx), end to end, in its own interpreter.

As tests/sessions/test_litellm.py: a real pytest session in the LiteLLM environment named by
``TOKENBUDGET_LITELLM_PYTHON`` (it needs boto3 there too: ``.ci/run`` installs it), the plugin on,
against tests/helpers/bedrock_server.py. Converse, ConverseStream, InvokeModel and its stream, sync and
async: each counted once, with Bedrock's numbers (InvokeModel's token headers, the invocation
metrics), under the model id of the path.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from bedrock_server import BedrockServer
from test_litellm import NO_LITELLM

PYTHON = os.environ.get("TOKENBUDGET_LITELLM_PYTHON", "")
MODEL = "anthropic.claude-3-5-sonnet-20241022-v2:0"

pytestmark = pytest.mark.skipif(
    not PYTHON,
    reason=NO_LITELLM,
)

SUITE = f"""
import asyncio
import os

import litellm

ARGS = {{"aws_bedrock_runtime_endpoint": os.environ["BEDROCK_URL"], "aws_access_key_id": "AKIAEXAMPLE",
        "aws_secret_access_key": "secret", "aws_region_name": "us-east-1",
        "messages": [{{"role": "user", "content": "Hi"}}]}}
CONVERSE = "bedrock/converse/{MODEL}"
INVOKE = "bedrock/invoke/{MODEL}"


def test_converse():
    assert litellm.completion(model=CONVERSE, **ARGS).usage.prompt_tokens == 1039

def test_converse_stream():
    assert list(litellm.completion(model=CONVERSE, stream=True, **ARGS))

def test_invoke():
    assert litellm.completion(model=INVOKE, **ARGS).choices[0].message.content == "Hi there"

def test_invoke_stream():
    assert list(litellm.completion(model=INVOKE, stream=True, **ARGS))

def test_async_converse_and_stream():
    async def main():
        await litellm.acompletion(model=CONVERSE, **ARGS)
        stream = await litellm.acompletion(model=CONVERSE, stream=True, **ARGS)
        return [chunk async for chunk in stream]
    assert asyncio.run(main())
"""

EXPECTED = {  # test → (calls, input tokens, output tokens)
    "test_converse": (1, 1039, 264),
    "test_converse_stream": (1, 1040, 250),
    "test_invoke": (1, 21, 22),  # the X-Amzn-Bedrock-*-Token-Count headers, not the body's 112/42
    "test_invoke_stream": (1, 702, 98),  # amazon-bedrock-invocationMetrics, not the model's 702/130
    "test_async_converse_and_stream": (2, 1039 + 1040, 264 + 250),
}


@pytest.fixture
def server() -> Iterator[BedrockServer]:
    running = BedrockServer().start()
    yield running
    running.stop()


@pytest.mark.slow
def test_litellm_bedrock_calls_are_each_counted_once(server: BedrockServer, tmp_path: Path) -> None:
    check = subprocess.run([PYTHON, "-c", "import boto3"], capture_output=True, check=False)
    if check.returncode:
        pytest.skip(f"boto3 is not installed in {PYTHON} (LiteLLM's Bedrock provider signs with it)")
    (tmp_path / "test_litellm_bedrock_app.py").write_text(SUITE)
    env = {
        **os.environ,
        "BEDROCK_URL": server.url,
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
    for name, expected in EXPECTED.items():
        entry = run["tests"][f"test_litellm_bedrock_app.py::{name}"]
        assert (entry["calls"], entry["input_tokens"], entry["output_tokens"]) == expected, name
        assert entry["estimated_calls"] == 0, name
        assert list(entry["models"]) == [f"bedrock/{MODEL}"], name
    assert run["totals"]["calls"] == 6
    assert run["issues"] == []
