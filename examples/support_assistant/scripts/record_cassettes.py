"""Re-record the example's cassettes against the project's loopback LLM server (no real API key).

    python scripts/record_cassettes.py

Starts tests/helpers/llm_server.py of the pytest-tokenbudget repository on 127.0.0.1, points the SDKs at
it (OPENAI_BASE_URL, ANTHROPIC_BASE_URL), and runs this suite with ``--record-mode=rewrite``; the
conftest rewrites the recorded host to the provider's public one and drops credential headers.
To record against the real APIs instead, run ``pytest --record-mode=rewrite`` with real keys.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(HERE.parents[1] / "tests" / "helpers"))

from llm_server import LLMServer  # noqa: E402


def main() -> int:
    server = LLMServer().start()
    try:
        env = {
            **os.environ,
            "OPENAI_BASE_URL": f"{server.url}/v1",
            "ANTHROPIC_BASE_URL": server.url,
            "OPENAI_API_KEY": "sk-recording",
            "ANTHROPIC_API_KEY": "sk-ant-recording",
            "SUPPORT_ASSISTANT_LOCAL_URL": server.url,
        }
        command = [sys.executable, "-m", "pytest", "-q", "--record-mode=rewrite"]
        return subprocess.run(command, cwd=HERE, env=env, check=False).returncode
    finally:
        server.stop()


if __name__ == "__main__":
    raise SystemExit(main())
