"""pytest-tokenbudget-acme: teach pytest-tokenbudget the in-house "Acme LLM" API.

A complete third-party plugin implementing the three hooks of ``pytest_tokenbudget.hookspecs``:

* ``pytest_tokenbudget_route``: ``POST https://llm.acme.internal/v2/generate`` is an LLM call
  (provider ``acme``), read by :class:`AcmeParser`;
* ``pytest_tokenbudget_price``: its cost at the team's negotiated rate;
* ``pytest_tokenbudget_run_finished``: one summary line appended to ``$ACME_TOKEN_LOG``, if set.

The Acme API answers ``{"engine": "acme-3", "text": "...", "meter": {"in": N, "out": M,
"cached": K}}`` (``in`` counts every prompt token, ``cached`` those of them served from cache)
or, with ``"stream": true``, NDJSON text chunks ending in ``{"done": true, "engine": …,
"meter": {…}}``. ``$ACME_HOST`` names another host (a staging server, a loopback test server).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from pytest_tokenbudget.model import Call, Run, Usage
from pytest_tokenbudget.providers import Extracted, ParseError, Route

PROVIDER = "acme"
API = "acme.generate"
PATH = "/v2/generate"
DEFAULT_HOST = "llm.acme.internal"
# The team's rate in USD per million tokens: plain input, cached input, output.
USD_PER_MTOK = {"input": 0.50, "cached": 0.05, "output": 1.50}

_claimed = {"host": DEFAULT_HOST}  # set at pytest_configure from $ACME_HOST


def _usage(meter: Any) -> Usage:
    """Our meaning of the meter: ``input_tokens`` includes the cached ones."""
    if not isinstance(meter, dict):
        raise ParseError("meter is not an object")
    input_tokens, output_tokens = max(int(meter["in"]), 0), max(int(meter["out"]), 0)
    cached = min(max(int(meter.get("cached") or 0), 0), input_tokens)
    return Usage(input_tokens=input_tokens, cached_input_tokens=cached, output_tokens=output_tokens)


def _extract(data: Any) -> Extracted:
    if not isinstance(data, dict):
        raise ParseError("not a JSON object")
    engine = data.get("engine")
    meter = data.get("meter")
    return Extracted(
        engine if isinstance(engine, str) else None, _usage(meter) if meter is not None else None
    )


class AcmeStream:
    """NDJSON chunks; the model and the meter arrive in the final ``"done": true`` line."""

    framing = "ndjson"

    def __init__(self) -> None:
        self.done = False
        self._final: Extracted = Extracted(None, None)

    def on_event(self, event: bytes, data: bytes) -> None:
        if b'"done"' not in data:  # text chunks: not worth a JSON parse
            return
        try:
            line = json.loads(data)
            if isinstance(line, dict) and line.get("done") is True:
                self._final = _extract(line)
                self.done = True
        except (ValueError, KeyError, TypeError):  # a bad line: the stream then reports no usage
            return

    def result(self) -> Extracted:
        return self._final


class AcmeParser:
    """Reads ``/v2/generate`` responses; an unreadable body raises :class:`ParseError`."""

    api = API

    def parse(self, body: bytes) -> Extracted:
        try:
            lines = body.strip().splitlines()
            if len(lines) > 1:  # a stream read whole, its content type lost
                stream = self.stream()
                for line in lines:
                    stream.on_event(b"", line)
                if stream.done:
                    return stream.result()
            return _extract(json.loads(body))
        except ParseError:
            raise
        except (ValueError, KeyError, TypeError) as exc:  # what the plugin reports as the reason
            raise ParseError(f"not an Acme response ({type(exc).__name__})") from exc

    def stream(self) -> AcmeStream:
        return AcmeStream()


_PARSER = AcmeParser()


def pytest_configure(config: pytest.Config) -> None:
    _claimed["host"] = os.environ.get("ACME_HOST", DEFAULT_HOST).lower()


def pytest_tokenbudget_route(method: str, host: str, path: str) -> Route | None:
    """Called for every request a captured client sends: three string compares, nothing more."""
    if path == PATH and method == "POST" and host == _claimed["host"]:
        return Route(PROVIDER, API, host, _PARSER)
    return None  # the built-in providers have their turn


def pytest_tokenbudget_price(call: Call) -> float | None:
    if call.provider != PROVIDER:
        return None  # [tool.tokenbudget.prices] and genai-prices price the others
    usage = call.usage
    return (
        usage.uncached_input_tokens * USD_PER_MTOK["input"]
        + usage.cached_input_tokens * USD_PER_MTOK["cached"]
        + usage.output_tokens * USD_PER_MTOK["output"]
    ) / 1e6


def pytest_tokenbudget_run_finished(run: Run, config: pytest.Config) -> None:
    target = os.environ.get("ACME_TOKEN_LOG")
    acme = run.providers().get(PROVIDER)
    if not target or acme is None:
        return
    line = f"acme calls={acme.calls} tokens={acme.total_tokens} cost_usd={acme.cost_usd:.6f}\n"
    with Path(target).open("a", encoding="utf-8") as handle:
        handle.write(line)
