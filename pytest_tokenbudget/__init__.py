"""pytest-tokenbudget: LLM token and cost budgets for pytest suites, enforced in CI."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("pytest-tokenbudget")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = ["TokenBudgetExceeded", "__version__", "token_budget"]


def __getattr__(name: str) -> Any:
    """``TokenBudgetExceeded`` is imported on first use: pytest start-up does not pay for it."""
    if name == "TokenBudgetExceeded":
        from .hardcap import TokenBudgetExceeded

        return TokenBudgetExceeded
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def token_budget(
    max_tokens: int | None = None,
    *,
    max_input_tokens: int | None = None,
    max_output_tokens: int | None = None,
    max_cost: float | str | None = None,
    max_calls: int | None = None,
) -> Any:
    """The ``@pytest.mark.token_budget(...)`` marker, importable: ``@token_budget(2000)``."""
    import pytest

    kwargs = {
        "max_input_tokens": max_input_tokens,
        "max_output_tokens": max_output_tokens,
        "max_cost": max_cost,
        "max_calls": max_calls,
    }
    args = () if max_tokens is None else (max_tokens,)
    return pytest.mark.token_budget(*args, **{k: v for k, v in kwargs.items() if v is not None})
