"""Hooks other plugins (or a ``conftest.py``) implement to extend pytest-tokenbudget.

Registered through ``pytest_addhooks``; implement them like any pytest hook. Each is consulted
only when some plugin implements it, so unused hooks cost nothing per call.

Worked example (a provider the plugin does not know, priced by the team)::

    # conftest.py
    import json

    from pytest_tokenbudget.model import Usage
    from pytest_tokenbudget.providers import Extracted, Route

    class AcmeParser:
        api = "acme.generate"

        def parse(self, body: bytes) -> Extracted:
            data = json.loads(body)
            return Extracted(data["engine"], Usage(input_tokens=data["meter"]["in"],
                                                   output_tokens=data["meter"]["out"]))

        def stream(self):
            raise NotImplementedError  # this API does not stream

    def pytest_tokenbudget_route(method, host, path):
        if host == "llm.acme.internal" and path == "/v2/generate":
            return Route("acme", "acme.generate", host, AcmeParser())
        return None

    def pytest_tokenbudget_price(call):
        if call.provider == "acme":
            return (call.usage.input_tokens * 0.2 + call.usage.output_tokens * 0.8) / 1e6
        return None
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from .model import Call, Run
    from .providers import Route


@pytest.hookspec(firstresult=True)
def pytest_tokenbudget_route(method: str, host: str, path: str) -> Route | None:
    """Claim a request as an LLM call: return a :class:`~pytest_tokenbudget.providers.Route`
    whose ``parser`` reads its response, or None to leave it to the built-in providers.

    Called for every request a captured client sends, before the built-in routing; keep it fast.
    """
    raise NotImplementedError


@pytest.hookspec(firstresult=True)
def pytest_tokenbudget_price(call: Call) -> float | None:
    """The cost of ``call`` in USD, or None to leave it to ``[tool.tokenbudget.prices]`` and
    genai-prices. Called once per call, before the call is added to its test."""
    raise NotImplementedError


@pytest.hookspec
def pytest_tokenbudget_run_finished(run: Run, config: Any) -> None:
    """The finished run, verdicts taken, on the controller only: write your own report or sink."""
