"""Prices: what each call cost in USD, from genai-prices or ``[tool.tokenbudget.prices]``.

Order of authority for one call: a ``pytest_tokenbudget_price`` hook (a ledger listener added
first), then ``[tool.tokenbudget.prices]`` (exact key, then globs in table order; a key may name
``provider/model``), then genai-prices. ``[tool.tokenbudget.aliases]`` renames what a provider
returned (an Azure deployment, a proxy's alias) before either is consulted.

genai-prices is imported at the first call that needs a price, never at start-up. A lookup is
cached per ``(provider, model)``; a flat price list is then applied with plain float arithmetic
(about a microsecond), a tiered one (prices that change with the prompt length) goes through
genai-prices' own calculation. A call whose price is unknown keeps ``cost_usd = None``.

Our token meanings match genai-prices': ``input_tokens`` includes cache reads and writes,
``output_tokens`` includes reasoning.
"""

from __future__ import annotations

import bisect
import fnmatch
import math
import threading
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, Final

from ..config import TABLE, ConfigError, Context, Settings
from ..model import Call, Usage

__all__ = ["Pricer", "Rates", "input_cost"]

# Provider ids of this plugin → genai-prices provider ids where they differ. ``None``: the host is
# not the model's vendor (a compatible server or proxy): find the model by its name alone.
_PRICES_PROVIDER: Final[dict[str, str | None]] = {
    "google-vertex": "google",
    "bedrock": "aws",
    "openai-compatible": None,
    "anthropic-compatible": None,
    "manual": None,  # token_usage.record(...) without a provider
}
# Providers that run models locally: a model name there says nothing about a price.
_LOCAL: Final = frozenset({"ollama"})

_FIELDS: Final = {  # [tool.tokenbudget.prices] field → Rates attribute
    "input": "input",
    "output": "output",
    "cached-input": "cached_input",
    "cache-write": "cache_write",
}
_PER: Final = 1_000_000


@dataclass(frozen=True, slots=True)
class Rates:
    """USD per million tokens. Cache rates default to the input rate when not given."""

    input: float
    output: float
    cached_input: float | None = None
    cache_write: float | None = None
    per_request: float = 0.0  # USD per call (a few providers charge per request too)

    def cost(self, usage: Usage) -> float:
        cached = self.input if self.cached_input is None else self.cached_input
        write = self.input if self.cache_write is None else self.cache_write
        return (
            self.per_request
            + (
                usage.uncached_input_tokens * self.input
                + usage.cached_input_tokens * cached
                + usage.cache_write_tokens * write
                + usage.output_tokens * self.output
            )
            / _PER
        )


@dataclass(frozen=True, slots=True)
class _Quote:
    """How one ``(provider, model)`` is priced: flat rates, flat rates per tier, or (for prices on
    things flat rates cannot hold) genai-prices' own calculation."""

    source: str  # "pyproject" | "genai-prices"
    rates: Rates | None = None
    tiers: _Tiers | None = None
    model_price: Any = None  # genai_prices.types.ModelPrice, when neither of the above

    def cost(self, usage: Usage) -> float:
        if self.rates is not None:
            return self.rates.cost(usage)
        if self.tiers is not None:
            return self.tiers.rates_for(usage.input_tokens).cost(usage)
        result = self.model_price.calc_price(_prices_usage(usage))
        return float(result["total_price"])


@dataclass(frozen=True, slots=True)
class _Tiers:
    """Tiered prices resolved once into flat rates per tier. genai-prices' tiers are cliffs: once
    a request's input tokens pass a tier's start, that tier's rate applies to all its tokens, so
    between two consecutive starts (of any of the model's prices) every rate is flat."""

    starts: tuple[int, ...]  # every tier start, ascending
    rates: tuple[Rates, ...]  # rates[i]: input tokens above starts[i - 1] and up to starts[i]

    def rates_for(self, input_tokens: int) -> Rates:
        return self.rates[bisect.bisect_left(self.starts, input_tokens)]


class Pricer:
    """Prices calls; one per session. Thread-safe: the cache tolerates racing fills."""

    def __init__(
        self,
        overrides: Mapping[str, Rates] | None = None,
        aliases: Mapping[str, str] | None = None,
        *,
        use_genai_prices: bool = True,
        when: datetime | None = None,
    ) -> None:
        self._exact = {k.lower(): v for k, v in (overrides or {}).items() if not _is_glob(k)}
        self._globs = [(k.lower(), v) for k, v in (overrides or {}).items() if _is_glob(k)]
        self._alias_exact = {k.lower(): v for k, v in (aliases or {}).items() if not _is_glob(k)}
        self._alias_globs = [(k.lower(), v) for k, v in (aliases or {}).items() if _is_glob(k)]
        self._use_genai_prices = use_genai_prices
        self._when = when or datetime.now(tz=UTC)
        self._cache: dict[tuple[str, str], _Quote | None] = {}
        self._unknown: Counter[tuple[str, str]] = Counter()
        self._used: Counter[str] = Counter()
        self._lock = threading.Lock()

    # -- configuration ------------------------------------------------------------------------

    @classmethod
    def from_settings(cls, settings: Settings) -> Pricer:
        """Parse ``[tool.tokenbudget.prices]`` and ``.aliases``; :class:`ConfigError` names the key.

        Cheap: genai-prices is not imported here.
        """
        ctx = settings.context()
        overrides = _parse_prices(settings.tables.get("prices"), ctx)
        aliases = _parse_aliases(settings.tables.get("aliases"), ctx)
        return cls(overrides, aliases)

    def warm(self) -> None:
        """Read genai-prices' data now (its first import reads package metadata from disk, which
        must not happen inside an event loop under BlockBuster)."""
        if not self._use_genai_prices:
            return
        try:
            from genai_prices import data_snapshot
        except ImportError:
            return
        data_snapshot.get_snapshot()

    # -- pricing ------------------------------------------------------------------------------

    def price(self, call: Call) -> None:
        """Ledger listener: set ``call.cost_usd`` unless a hook priced it already; never raises."""
        if call.cost_usd is not None or not call.usage:
            return
        call.cost_usd = self.cost_of(call.provider, call.model, call.usage, host=call.host)

    def cost_of(self, provider: str, model: str, usage: Usage, *, host: str = "") -> float | None:
        """USD for ``usage`` of ``model`` served by ``provider``; None when no price is known."""
        key = (provider, model)
        try:
            quote = self._cache[key]
        except KeyError:
            quote = self._cache[key] = self._quote(provider, model)
        if quote is None:
            with self._lock:
                self._unknown[key] += 1
            return None
        with self._lock:
            self._used[quote.source] += 1
        return quote.cost(usage)

    def _quote(self, provider: str, model: str) -> _Quote | None:
        name = self._alias(provider, model)
        target_provider, _, target_model = name.rpartition("/") if "/" in name else ("", "", name)
        target_provider = target_provider or provider
        rates = self._override(target_provider, target_model) or self._override(provider, model)
        if rates is not None:
            return _Quote("pyproject", rates=rates)
        if not self._use_genai_prices or not target_model or target_provider in _LOCAL:
            return None
        return _genai_quote(target_provider, target_model, self._when)

    def _alias(self, provider: str, model: str) -> str:
        for candidate in (f"{provider}/{model}".lower(), model.lower()):
            if candidate in self._alias_exact:
                return self._alias_exact[candidate]
        for pattern, target in self._alias_globs:
            if fnmatch.fnmatchcase(model.lower(), pattern) or fnmatch.fnmatchcase(
                f"{provider}/{model}".lower(), pattern
            ):
                return target
        return model

    def _override(self, provider: str, model: str) -> Rates | None:
        if not model:
            return None
        qualified, bare = f"{provider}/{model}".lower(), model.lower()
        for candidate in (qualified, bare):
            if candidate in self._exact:
                return self._exact[candidate]
        for pattern, rates in self._globs:
            if fnmatch.fnmatchcase(qualified if "/" in pattern else bare, pattern):
                return rates
        return None

    # -- what was used ------------------------------------------------------------------------

    def unknown(self) -> list[dict[str, Any]]:
        """Models met without a price, with their call counts (most calls first)."""
        with self._lock:
            items = sorted(self._unknown.items(), key=lambda kv: (-kv[1], kv[0]))
        return [{"provider": p, "model": m, "calls": n} for (p, m), n in items]

    def provenance(self) -> dict[str, Any]:
        """Which prices were used, for the run artifact's ``meta.prices``: enough to trace a cost."""
        info: dict[str, Any] = {
            "source": "genai-prices",
            "priced_at": self._when.date().isoformat(),
            "overrides": len(self._exact) + len(self._globs),
            "aliases": len(self._alias_exact) + len(self._alias_globs),
            "calls_by_source": dict(sorted(self._used.items())),
            "unknown": self.unknown(),
        }
        try:
            from importlib.metadata import PackageNotFoundError, version

            info["version"] = version("genai-prices")
        except PackageNotFoundError:
            info["version"] = None
        if self._used.get("genai-prices"):
            info["data_date"] = _data_date()
        return info


def input_cost(model: str, tokens: int, provider: str = "") -> float | None:
    """USD for ``tokens`` of input to ``model`` (``tokenbudget estimate``); None when unknown."""
    return Pricer().cost_of(provider or "openai-compatible", model, Usage(input_tokens=tokens))


# -- genai-prices -------------------------------------------------------------------------------


def _genai_quote(provider: str, model: str, when: datetime) -> _Quote | None:
    try:
        from genai_prices import data_snapshot, types
    except ImportError:  # an optional dependency in spirit: no prices, tokens still counted
        return None
    snapshot = data_snapshot.get_snapshot()
    provider_id = _PRICES_PROVIDER.get(provider, provider)
    try:
        _, info = snapshot.find_provider_model(model, None, provider_id, None)
    except LookupError:
        if provider_id is None or provider not in _PRICES_PROVIDER:
            return None
        try:  # a known vendor id that genai-prices files elsewhere
            _, info = snapshot.find_provider_model(model, None, None, None)
        except LookupError:
            return None
    model_price = info.get_prices(when)
    if _no_price(model_price):  # an entry without prices ("free" tiers, retired models): unknown, not $0
        return None
    rates = _flat_rates(model_price, types)
    if rates is not None:
        return _Quote("genai-prices", rates=rates)
    tiers = _tiers(model_price, types)
    if tiers is not None:
        return _Quote("genai-prices", tiers=tiers)
    return _Quote("genai-prices", model_price=model_price)


def _no_price(model_price: Any) -> bool:
    """True for a genai-prices entry that states no price at all (every field empty)."""
    return all(value is None for name, value in vars(model_price).items() if not name.startswith("_"))


def _flat_rates(model_price: Any, types: Any, input_tokens: int | None = None) -> Rates | None:
    """The price list as flat rates, or None when genai-prices must do the sum itself: a price on
    something this module does not reduce to flat rates, or (``input_tokens`` None) a tiered rate;
    with ``input_tokens``, each tiered rate as it applies to a request of that many."""
    values: dict[str, float] = {}
    for name, price in vars(model_price).items():
        if price is None or name.startswith("_"):
            continue
        if name not in _FLAT_KEYS:
            return None
        if isinstance(price, types.TieredPrices):
            if input_tokens is None:
                return None
            values[name] = float(_tier_price(price, input_tokens))
        else:
            values[name] = float(price)
    if "input_mtok" not in values and "output_mtok" not in values:
        return None
    return Rates(
        input=values.get("input_mtok", 0.0),
        output=values.get("output_mtok", 0.0),
        cached_input=values.get("cache_read_mtok"),
        cache_write=values.get("cache_write_mtok"),
        per_request=values.get("requests_kcount", 0.0) / 1000,
    )


def _tier_price(price: Any, input_tokens: int) -> Any:
    """The rate of a ``TieredPrices`` for a request of ``input_tokens``: the last tier it passes."""
    return next((t.price for t in reversed(price.tiers) if input_tokens > t.start), price.base)


def _tiers(model_price: Any, types: Any) -> _Tiers | None:
    """Tiered prices as flat rates per tier (None when some price is not one flat rates hold)."""
    prices = [v for k, v in vars(model_price).items() if not k.startswith("_")]
    starts = sorted({t.start for v in prices if isinstance(v, types.TieredPrices) for t in v.tiers})
    # A request of n input tokens is in tier i when starts[i - 1] < n <= starts[i]: price each tier
    # at its lowest count (0 for the base).
    below = [0, *(start + 1 for start in starts)]
    rates = [_flat_rates(model_price, types, input_tokens=n) for n in below]
    if not starts or any(r is None for r in rates):
        return None
    return _Tiers(tuple(starts), tuple(r for r in rates if r is not None))


# Price keys a flat Rates reproduces exactly: the token rates, the per-request fee, and prices on
# counts no provider parser reports (searches, audio, images, pages: zero for every call here).
_FLAT_KEYS: Final = frozenset(
    {"input_mtok", "output_mtok", "cache_read_mtok", "cache_write_mtok", "requests_kcount"}
    | {"web_searches_kcount", "storage_searches_kcount", "cache_write_1h_mtok", "audio_hours"}
    | {"input_audio_mtok", "output_audio_mtok", "cache_audio_read_mtok", "input_audio_hours"}
    | {"input_image_mtok", "output_image_mtok", "cache_image_read_mtok", "input_video_mtok"}
    | {"output_video_mtok", "input_document_kpages", "input_annotated_document_kpages"}
)


def _prices_usage(usage: Usage) -> Any:
    from genai_prices import Usage as PricesUsage

    return PricesUsage(
        input_tokens=usage.input_tokens,
        cache_read_tokens=usage.cached_input_tokens,
        cache_write_tokens=usage.cache_write_tokens,
        output_tokens=usage.output_tokens,
    )


_DATA_DATE: list[str | None] = []


def _data_date() -> str | None:
    """The newest price change recorded in genai-prices' bundled data, up to today.

    genai-prices does not stamp its snapshot with a date; the newest change it knows about (that
    is in effect) is the best trace of how fresh its prices are.
    """
    if _DATA_DATE:
        return _DATA_DATE[0]
    try:
        from genai_prices import data_snapshot
    except ImportError:
        return None
    today = date.today()
    newest: date | None = None
    for provider in data_snapshot.get_snapshot().providers:
        for model in provider.models:
            prices = model.prices if isinstance(model.prices, list) else []
            for conditional in prices:
                start = getattr(getattr(conditional, "constraint", None), "start_date", None)
                if isinstance(start, datetime):
                    start = start.date()
                if isinstance(start, date) and start <= today and (newest is None or start > newest):
                    newest = start
    _DATA_DATE.append(newest.isoformat() if newest else None)
    return _DATA_DATE[0]


# -- [tool.tokenbudget.prices] and .aliases ------------------------------------------------------


def _is_glob(key: str) -> bool:
    return any(ch in key for ch in "*?[")


def _parse_prices(raw: Any, ctx: Context) -> dict[str, Rates]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ctx.error(
            "prices", "a table of model = { input = …, output = … } (USD per million tokens)", raw
        )
    parsed: dict[str, Rates] = {}
    for model, entry in raw.items():
        key = f"prices.{_quote_key(model)}"
        if not isinstance(entry, Mapping):
            raise ctx.error(key, "a table like { input = 0.3, output = 1.2 } (USD per million tokens)", entry)
        unknown = sorted(set(entry) - set(_FIELDS))
        if unknown:
            raise ConfigError(
                f"{_where(ctx)} {key}: unknown field {unknown[0]!r}; expected {', '.join(_FIELDS)}"
            )
        missing = [name for name in ("input", "output") if name not in entry]
        if missing:
            raise ConfigError(f"{_where(ctx)} {key}: missing {missing[0]!r} (USD per million tokens)")
        values = {_FIELDS[name]: _rate(f"{key}.{name}", value, ctx) for name, value in entry.items()}
        parsed[str(model)] = Rates(**values)
    return parsed


def _parse_aliases(raw: Any, ctx: Context) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ctx.error("aliases", 'a table of "returned name" = "priced model"', raw)
    for name, target in raw.items():
        if not isinstance(target, str) or not target.strip():
            raise ctx.error(
                f"aliases.{_quote_key(name)}", 'a model name ("gpt-4o-mini" or "openai/gpt-4o-mini")', target
            )
    return {str(k): v.strip() for k, v in raw.items()}


def _rate(key: str, value: Any, ctx: Context) -> float:
    if (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value >= 0
    ):
        return float(value)
    raise ctx.error(key, "USD per million tokens, a number >= 0", value)


def _quote_key(key: str) -> str:
    return key if key.replace("-", "").replace("_", "").isalnum() else f'"{key}"'


def _where(ctx: Context) -> str:
    return f"{ctx.origin}: [{TABLE}]" if ctx.origin != "command line" else "command line"


def merge_provenance(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One ``meta.prices`` from several processes' (xdist workers, shards): counts summed."""
    parts = [p for p in parts if p]
    if not parts:
        return {}
    merged = dict(parts[0])
    by_source: Counter[str] = Counter()
    unknown: Counter[tuple[str, str]] = Counter()
    for part in parts:
        by_source.update(part.get("calls_by_source") or {})
        for entry in part.get("unknown") or ():
            unknown[(str(entry.get("provider", "")), str(entry.get("model", "")))] += int(
                entry.get("calls", 0)
            )
        if part.get("data_date") and not merged.get("data_date"):
            merged["data_date"] = part["data_date"]
    merged["calls_by_source"] = dict(sorted(by_source.items()))
    merged["unknown"] = [
        {"provider": p, "model": m, "calls": n}
        for (p, m), n in sorted(unknown.items(), key=lambda kv: (-kv[1], kv[0]))
    ]
    return merged
