"""pytest-tokenbudget: LLM token and cost budgets for pytest suites, enforced in CI."""

from __future__ import annotations

from typing import Any

__all__ = ["TokenBudgetExceeded", "__version__", "token_budget"]


def __getattr__(name: str) -> Any:
    """``TokenBudgetExceeded`` and ``__version__`` are looked up on first use: pytest start-up does
    not pay for them (reading the version scans every installed distribution's metadata)."""
    if name == "TokenBudgetExceeded":
        from .judge.hardcap import TokenBudgetExceeded

        return TokenBudgetExceeded
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            found = version("pytest-tokenbudget")
        except PackageNotFoundError:  # running from a source tree that is not installed
            found = "0+unknown"
        globals()["__version__"] = found
        return found
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
