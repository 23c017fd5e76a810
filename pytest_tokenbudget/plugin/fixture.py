"""The ``token_usage`` fixture: the running test's usage so far, and calls the plugin cannot see."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from ..ledger import Ledger
    from ..model import TestUsage


class TokenUsage:
    """The running test's usage so far, and :meth:`record` for calls the plugin cannot see."""

    def __init__(self, ledger: Ledger, nodeid: str) -> None:
        self._ledger = ledger
        self._nodeid = nodeid

    @property
    def snapshot(self) -> TestUsage:
        return self._ledger.usage_of(self._nodeid)

    @property
    def calls(self) -> int:
        return self.snapshot.total.calls

    @property
    def input_tokens(self) -> int:
        return self.snapshot.total.usage.input_tokens

    @property
    def cached_input_tokens(self) -> int:
        return self.snapshot.total.usage.cached_input_tokens

    @property
    def cache_write_tokens(self) -> int:
        return self.snapshot.total.usage.cache_write_tokens

    @property
    def output_tokens(self) -> int:
        return self.snapshot.total.usage.output_tokens

    @property
    def reasoning_tokens(self) -> int:
        return self.snapshot.total.usage.reasoning_tokens

    @property
    def total_tokens(self) -> int:
        return self.snapshot.total.usage.total_tokens

    @property
    def cost_usd(self) -> float:
        return self.snapshot.total.cost_usd

    def by_model(self) -> dict[str, int]:
        """Total tokens per ``provider/model``."""
        return {key: tally.total_tokens for key, tally in self.snapshot.models.items()}

    def record(
        self,
        *,
        model: str,
        input_tokens: int = 0,
        output_tokens: int = 0,
        cached_input_tokens: int = 0,
        cache_write_tokens: int = 0,
        reasoning_tokens: int = 0,
        provider: str = "manual",
        cost_usd: float | None = None,
    ) -> None:
        """Count a call the plugin cannot see (a local model, a custom transport)."""
        from ..model import Call, Usage

        values = {
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "cached_input_tokens": cached_input_tokens,
            "cache_write_tokens": cache_write_tokens,
            "reasoning_tokens": reasoning_tokens,
        }
        for name, value in values.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"token_usage.record: {name} must be a non-negative int, got {value!r}")
        if cached_input_tokens + cache_write_tokens > input_tokens:
            raise ValueError("token_usage.record: cached and cache-write tokens are parts of input_tokens")
        if reasoning_tokens > output_tokens:
            raise ValueError("token_usage.record: reasoning_tokens are a part of output_tokens")
        owner = self._ledger.owner
        call = Call(
            owner=self._nodeid,
            phase=owner.phase if owner.nodeid == self._nodeid else "call",
            provider=provider,
            api="manual",
            host="",
            model=model,
            usage=Usage(**values),
            source="manual",
            cost_usd=cost_usd,
        )
        self._ledger.record(call)

    def __repr__(self) -> str:
        return f"<token_usage {self._nodeid}: {self.calls} calls, {self.total_tokens:,} tokens>"


@pytest.fixture
def token_usage(request: pytest.FixtureRequest) -> TokenUsage:
    """The running test's LLM token usage (``.total_tokens``, ``.calls`` …) and ``.record(...)``."""
    from .entry import activate

    return TokenUsage(activate(request.config).ledger, request.node.nodeid)
