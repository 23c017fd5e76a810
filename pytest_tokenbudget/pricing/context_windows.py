"""Context windows: how much of a model's window one request's input fills.

Windows come from genai-prices (each model there carries ``context_window``), looked up by provider
and model name, imported lazily and cached per model. ``[tool.tokenbudget.context-windows]``
overrides or adds windows; its keys are model names or ``provider/model``, optionally with ``*``
globs, and the most specific key wins (``provider/model`` over ``model``, exact over glob)::

    [tool.tokenbudget.context-windows]
    "my-finetune" = 16384
    "ollama/llama3*" = 8192
"""

from __future__ import annotations

import fnmatch
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..config import TABLE, ConfigError, Context, positive_int

__all__ = ["ContextWindows", "Utilisation"]

# Provider ids of this plugin → genai-prices provider ids, where they differ.
_PRICES_PROVIDER = {"google-vertex": "google", "x-ai": "x-ai", "openai-compatible": None}


@dataclass(frozen=True, slots=True)
class Utilisation:
    """One request's input against its model's context window."""

    input_tokens: int
    window: int
    source: str  # "genai-prices" or "pyproject"

    @property
    def fraction(self) -> float:
        return self.input_tokens / self.window if self.window else 0.0


class ContextWindows:
    """Context window per ``(provider, model)``: pyproject overrides first, then genai-prices."""

    def __init__(self, overrides: Mapping[str, int] | None = None, *, use_prices: bool = True) -> None:
        self._exact = {k.lower(): v for k, v in (overrides or {}).items() if "*" not in k}
        self._globs = sorted(
            ((k.lower(), v) for k, v in (overrides or {}).items() if "*" in k),
            key=lambda kv: (-kv[0].count("/"), -len(kv[0])),  # provider/… and longer globs first
        )
        self._use_prices = use_prices
        self._cache: dict[tuple[str, str], tuple[int, str] | None] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_table(cls, raw: Any, ctx: Context) -> ContextWindows:
        """Parse ``[tool.tokenbudget.context-windows]``; raises :class:`ConfigError` naming the key."""
        if raw is None:
            return cls()
        if not isinstance(raw, Mapping):
            raise ConfigError(
                f"{ctx.origin}: [{TABLE}.context-windows] must be a table of model = tokens, got {raw!r}"
            )
        windows = {str(key): positive_int(f"context-windows.{key}", value, ctx) for key, value in raw.items()}
        return cls(windows)

    def window(self, provider: str, model: str) -> tuple[int, str] | None:
        """``(tokens, source)`` for a model, or None when no window is known."""
        key = (provider, model)
        try:
            return self._cache[key]
        except KeyError:
            pass
        found = self._override(provider.lower(), model.lower())
        if found is None and self._use_prices:
            found = _from_prices(provider, model)
        with self._lock:
            self._cache[key] = found
        return found

    def utilisation(self, provider: str, model: str, input_tokens: int) -> Utilisation | None:
        found = self.window(provider, model)
        if found is None or not input_tokens:
            return None
        return Utilisation(input_tokens, found[0], found[1])

    def _override(self, provider: str, model: str) -> tuple[int, str] | None:
        for name in (f"{provider}/{model}", model):
            if name in self._exact:
                return self._exact[name], "pyproject"
        for pattern, tokens in self._globs:
            name = f"{provider}/{model}" if "/" in pattern else model
            if fnmatch.fnmatchcase(name, pattern):
                return tokens, "pyproject"
        return None


def _from_prices(provider: str, model: str) -> tuple[int, str] | None:
    """The window genai-prices records for the model (None when it does not know the model)."""
    try:
        from genai_prices import data_snapshot
    except ImportError:
        return None
    snapshot = data_snapshot.get_snapshot()
    provider_id = _PRICES_PROVIDER.get(provider, provider)
    for candidate in (provider_id, None):  # a compatible host serving a known model: by name
        try:
            _, info = snapshot.find_provider_model(model, None, candidate, None)
        except LookupError:
            continue
        window = getattr(info, "context_window", None)
        if isinstance(window, int) and window > 0:
            return window, "genai-prices"
    return None
