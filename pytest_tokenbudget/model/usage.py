"""Token usage and one LLM call as captured.

One meaning everywhere (documented in the README):

* ``input_tokens``   all input, including cached reads and cache writes;
* ``cached_input_tokens`` and ``cache_write_tokens`` are parts of ``input_tokens``;
* ``output_tokens``  all output, including reasoning/thinking;
* ``reasoning_tokens`` is a part of ``output_tokens``;
* ``total_tokens`` = input + output.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final, Literal

from .fields import count_of

USAGE_FIELDS: Final = (
    "input_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "output_tokens",
    "reasoning_tokens",
)

PHASES: Final = ("setup", "call", "teardown")


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts of one call or of many; immutable, additive."""

    input_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    @property
    def uncached_input_tokens(self) -> int:
        """Input billed at the plain input rate (neither a cache read nor a cache write)."""
        return self.input_tokens - self.cached_input_tokens - self.cache_write_tokens

    def __add__(self, other: Usage) -> Usage:
        if not isinstance(other, Usage):
            return NotImplemented
        return Usage(
            self.input_tokens + other.input_tokens,
            self.cached_input_tokens + other.cached_input_tokens,
            self.cache_write_tokens + other.cache_write_tokens,
            self.output_tokens + other.output_tokens,
            self.reasoning_tokens + other.reasoning_tokens,
        )

    def __bool__(self) -> bool:
        return bool(self.input_tokens or self.output_tokens)

    def to_dict(self) -> dict[str, int]:
        return {
            "input_tokens": self.input_tokens,
            "cached_input_tokens": self.cached_input_tokens,
            "cache_write_tokens": self.cache_write_tokens,
            "output_tokens": self.output_tokens,
            "reasoning_tokens": self.reasoning_tokens,
            "total_tokens": self.total_tokens,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Usage:
        return cls(*(count_of(data, name) for name in USAGE_FIELDS))


ZERO: Final = Usage()

Source = Literal["live", "replayed", "mocked", "manual", "otel"]
"""Where a call's response came from: the network, a vcr cassette, an in-process mock
(MockTransport, pytest-httpx, respx), ``token_usage.record`` (counted by hand), or a ``gen_ai``
OpenTelemetry span of the code under test (``--token-budget-ingest-otel``)."""


class CallState(StrEnum):
    """How a call ended, as far as the plugin could see (its value is what the artifact holds)."""

    COMPLETE = "complete"  # usage found (a stream saw its terminal event)
    CLOSED_EARLY = "closed-early"  # the caller closed a stream before its terminal event
    UNCLOSED = "unclosed"  # a stream never closed; settled at the test's teardown
    NO_USAGE = "no-usage"  # a well-formed response that reports no usage
    UNPARSED = "unparsed"  # the plugin could not read the response
    UNMETERED = "unmetered"  # no usage reported and the request could not be estimated either
    FAILED = "failed"  # the request raised or the server answered with an error status
    PENDING = "pending"  # a background response that had not finished when its owner ended


@dataclass(slots=True)
class Call:
    """One LLM API call as captured: who made it, what it was, what it cost."""

    owner: str  # test node id, or "<fixture …>" / "<session>" for calls outside tests
    phase: str  # setup | call | teardown (or "session" outside tests)
    provider: str  # e.g. openai, azure, anthropic, groq, openai-compatible
    api: str  # e.g. openai.chat, openai.responses, openai.embeddings, anthropic.messages
    host: str
    model: str
    usage: Usage = ZERO
    streamed: bool = False
    status_code: int = 0
    source: Source = "live"
    duration_s: float = 0.0
    state: CallState = CallState.COMPLETE
    estimated: bool = False
    cost_usd: float | None = None  # None: price unknown (never shown as $0)
    detail: str = ""  # why unparsed / failed; never request or response text
    part: bool = False
    """An extra per-model share of a request another Call already counts (an Anthropic
    ``usage.iterations`` entry on another model, e.g. the advisor's): its tokens and cost are
    tallied under its own model, but it is not a call of its own."""

    def to_dict(self) -> dict[str, Any]:
        extra = {"part": True} if self.part else {}
        return {
            "test": self.owner,
            "phase": self.phase,
            "provider": self.provider,
            "api": self.api,
            "host": self.host,
            "model": self.model,
            **self.usage.to_dict(),
            "cost_usd": self.cost_usd,
            "streamed": self.streamed,
            "status_code": self.status_code,
            "source": self.source,
            "estimated": self.estimated,
            "state": self.state,
            "duration_s": round(self.duration_s, 6),
            "detail": self.detail,
            **extra,
        }


@dataclass(slots=True)
class Caveats:
    """Counts of calls whose numbers come with a caveat — zero in almost every tally, so a tally
    holds these only once one is not (``Tally.caveats``)."""

    unpriced_calls: int = 0  # calls with tokens but no price: the cost is a lower bound
    manual_calls: int = 0  # recorded by hand with token_usage.record (neither live nor replayed)
    estimated_calls: int = 0
    unparsed_calls: int = 0
    failed_calls: int = 0
    unmetered_calls: int = 0

    def merge(self, other: Caveats) -> None:
        self.unpriced_calls += other.unpriced_calls
        self.manual_calls += other.manual_calls
        self.estimated_calls += other.estimated_calls
        self.unparsed_calls += other.unparsed_calls
        self.failed_calls += other.failed_calls
        self.unmetered_calls += other.unmetered_calls


CAVEAT_FIELDS: Final = tuple(f.name for f in dataclasses.fields(Caveats))
