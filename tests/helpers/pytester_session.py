"""The one way this project's tests run a real pytest session with the plugin on.

``run_session`` runs pytest in a ``pytester`` folder with ``--token-budget``, no cache provider and
the JSON artifact at ``run.json`` (by default), in this process or in a fresh interpreter;
``read_artifact`` and ``read_calls`` read back what it wrote. The opt-in plugins of the test extra
stay off in every pytester session (the autouse fixture in tests/conftest.py sets
``PYTEST_ADDOPTS`` to ``OPT_IN_PLUGINS``).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

OPT_IN_PLUGINS = "-p no:randomly -p no:asyncio -p no:rerunfailures"
"""Plugins of the test extra that change any session they load in (random order, asyncio config
warnings): off in every pytester session; test_compat.py switches them on where it tests them."""

CAPTURE_ON = ("--token-budget", "-p", "no:cacheprovider")
"""The options every session of ``run_session`` starts with."""


def run_session(
    pytester: pytest.Pytester,
    *args: str,
    artifact: str | None = "run.json",
    calls: str | None = None,
    subprocess: bool = False,
) -> pytest.RunResult:
    """``pytest --token-budget -p no:cacheprovider`` in ``pytester.path``, then ``args``.

    ``artifact``: where ``--token-budget-json`` writes (None: no artifact); ``calls``: where
    ``--token-budget-calls`` writes the call log (None: none). ``subprocess``: in a fresh
    interpreter (``runpytest_subprocess``), for what must not see this process's imports or state
    (xdist, start-up imports, an interrupt); otherwise in process (``runpytest``).
    """
    options = list(CAPTURE_ON)
    if artifact is not None:
        options.append(f"--token-budget-json={artifact}")
    if calls is not None:
        options.append(f"--token-budget-calls={calls}")
    run = pytester.runpytest_subprocess if subprocess else pytester.runpytest
    return run(*options, *args)


def read_artifact(pytester: pytest.Pytester, name: str = "run.json") -> dict[str, Any]:
    """The JSON run artifact a session wrote at ``name`` (relative to ``pytester.path``)."""
    return json.loads((pytester.path / name).read_text(encoding="utf-8"))


def read_calls(pytester: pytest.Pytester, name: str = "calls.jsonl") -> list[dict[str, Any]]:
    """The JSONL call log a session wrote at ``name``, one dict a call."""
    lines = (pytester.path / name).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]
