"""``tokenbudget reprice``: what a saved run would cost on other models (same tokens, today's prices).

``--model FROM=TO`` (repeatable) swaps the calls of ``FROM`` for ``TO``. Either side is a model name
(``gpt-4o``) or ``provider/model`` (``anthropic/claude-opus-4-1``); ``FROM`` may be a glob
(``claude-sonnet-*``) and, without a provider, matches that model at any provider; a ``TO``
without a provider keeps the call's provider. Both the run as it is and the swapped run are priced
now, through :class:`~pytest_tokenbudget.pricing.Pricer` (genai-prices, and pyproject's prices and
aliases), so the difference is the models', not a price change since the run.

Each test's per-model tokens are priced as one sum: exact for flat prices (almost all), an
approximation for prices tiered by prompt length.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..model import Run, Tally
from ..pricing.prices import Pricer

__all__ = ["Mapping", "RepriceError", "Repriced", "parse_mappings", "reprice"]


class RepriceError(ValueError):
    """A mapping that cannot be used (malformed, matching nothing, a model without a price)."""


@dataclass(frozen=True, slots=True)
class Mapping:
    """One ``FROM=TO``."""

    text: str
    source: str  # a model name or provider/model, maybe a glob
    target_provider: str  # "" keeps the call's provider
    target_model: str

    def matches(self, key: str) -> bool:
        """Whether calls of ``key`` (``provider/model``) are swapped by this mapping."""
        pattern = self.source.lower()
        whole = key.lower()
        return fnmatch.fnmatchcase(whole if "/" in pattern else whole.partition("/")[2], pattern)

    def target(self, key: str) -> tuple[str, str]:
        return self.target_provider or key.partition("/")[0], self.target_model


def parse_mappings(texts: Sequence[str]) -> tuple[Mapping, ...]:
    mappings = []
    for text in texts:
        source, sep, target = (part.strip() for part in text.partition("="))
        if not sep or not source or not target:
            raise RepriceError(f"--model {text!r}: expected FROM=TO, e.g. gpt-4o=gpt-4o-mini")
        provider, _, model = target.rpartition("/")
        if not model:
            raise RepriceError(f"--model {text!r}: the target names no model")
        mappings.append(Mapping(text, source, provider, model))
    return tuple(mappings)


@dataclass(slots=True)
class Row:
    """One test (or fixture) whose calls a mapping swaps."""

    test: str
    swaps: list[str]  # "openai/gpt-4o → openai/gpt-4o-mini"
    now: float | None  # None: some of its calls have no price today
    what_if: float | None


@dataclass(slots=True)
class Repriced:
    now: float = 0.0
    what_if: float = 0.0
    now_known: bool = True
    what_if_known: bool = True
    recorded: float = 0.0  # the artifact's own cost (the prices of the day it ran)
    models: list[dict[str, Any]] = field(default_factory=list)
    rows: list[Row] = field(default_factory=list)
    unpriced: list[str] = field(default_factory=list)  # models of the run without a price today

    def to_dict(self) -> dict[str, Any]:
        return {
            "totals": {
                "recorded": round(self.recorded, 10),
                "now": round(self.now, 10),
                "what_if": round(self.what_if, 10),
                "delta": round(self.what_if - self.now, 10),
                "now_known": self.now_known,
                "what_if_known": self.what_if_known,
            },
            "models": self.models,
            "tests": [
                {
                    "test": r.test,
                    "swaps": r.swaps,
                    "now": r.now,
                    "what_if": r.what_if,
                    "delta": None if r.now is None or r.what_if is None else round(r.what_if - r.now, 10),
                }
                for r in self.rows
            ],
            "unpriced": self.unpriced,
        }


def reprice(run: Run, mappings: Sequence[Mapping], pricer: Pricer | None = None) -> Repriced:
    """The run's cost now and with ``mappings`` applied, per model, per test and in total."""
    pricer = pricer or Pricer()
    keys = run.models()
    chosen: dict[str, tuple[str, str]] = {}
    for mapping in mappings:
        found = [key for key in keys if mapping.matches(key) and key not in chosen]
        if not found:
            known = ", ".join(sorted(keys)) or "none"
            raise RepriceError(
                f"--model {mapping.text!r}: no call in this run used {mapping.source!r} (models: {known})"
            )
        for key in found:
            chosen[key] = mapping.target(key)
    for key, (provider, model) in sorted(chosen.items()):
        if pricer.cost_of(provider, model, Tally().usage) is None:
            raise RepriceError(
                f"no price for {provider}/{model} (for {key}): genai-prices does not know it and "
                "[tool.tokenbudget.prices] does not price it; check the name (e.g. gpt-4o-mini, "
                "anthropic/claude-sonnet-4-5) or add it under [tool.tokenbudget.prices]"
            )
    result = Repriced(recorded=run.totals().cost_usd)
    for key, tally in keys.items():
        provider, _, model = key.partition("/")
        now = pricer.cost_of(provider, model, tally.usage)
        target = chosen.get(key, (provider, model))
        what_if = pricer.cost_of(*target, tally.usage)
        if now is None and tally.usage:
            result.unpriced.append(key)
        result.models.append(
            {
                "model": key,
                "as": "/".join(target),
                "calls": tally.calls,
                "total_tokens": tally.total_tokens,
                "now": None if now is None else round(now, 10),
                "what_if": None if what_if is None else round(what_if, 10),
            }
        )
        _add(result, now, what_if, bool(tally.usage))
    for entry in run.tests.values():
        swapped = [key for key in entry.models if key in chosen]
        if not swapped:
            continue
        now_total: float | None = 0.0
        what_total: float | None = 0.0
        for key, tally in entry.models.items():
            provider, _, model = key.partition("/")
            now = pricer.cost_of(provider, model, tally.usage)
            what_if = pricer.cost_of(*chosen.get(key, (provider, model)), tally.usage)
            now_total = None if now is None or now_total is None else now_total + now
            what_total = None if what_if is None or what_total is None else what_total + what_if
        swaps = [f"{key} → {'/'.join(chosen[key])}" for key in sorted(swapped)]
        result.rows.append(Row(entry.nodeid, swaps, now_total, what_total))
    result.rows.sort(key=lambda r: (-abs((r.what_if or 0.0) - (r.now or 0.0)), r.test))
    return result


def _add(result: Repriced, now: float | None, what_if: float | None, used: bool) -> None:
    if now is None:
        result.now_known = result.now_known and not used
    else:
        result.now += now
    if what_if is None:
        result.what_if_known = result.what_if_known and not used
    else:
        result.what_if += what_if


# -- rendering -------------------------------------------------------------------------------------


def _money(value: float | None, known: bool = True) -> str:
    from .. import units as fmt

    return fmt.money(value, known=known)


def _signed(now: float | None, what_if: float | None) -> str:
    if now is None or what_if is None:
        return "?"
    from .comparison import signed_money

    change = signed_money(what_if - now)
    if change == "$0":
        return change
    pct = f" ({(what_if - now) / now:+.0%})" if now else ""
    return change + pct


def text_lines(result: Repriced, *, top: int = 20) -> list[str]:
    from .. import units as fmt

    now, what_if = _money(result.now, result.now_known), _money(result.what_if, result.what_if_known)
    lines = [
        f"cost now {now} → what-if {what_if}: {_signed(result.now, result.what_if)}; "
        f"recorded in the run {_money(result.recorded)}",
        "",
    ]
    rows = [["now", "what-if", "Δ", "calls", "model"]]
    for m in result.models:
        name = m["model"] if m["as"] == m["model"] else f"{m['model']} → {m['as']}"
        rows.append(
            [_money(m["now"]), _money(m["what_if"]), _signed(m["now"], m["what_if"]), f"{m['calls']:,}", name]
        )
    lines += ["  " + row for row in fmt.table(rows, ">>>><")]
    if result.rows:
        lines += ["", "per test:"]
        table = [["now", "what-if", "Δ", "test"]]
        for r in result.rows[:top]:
            table.append([_money(r.now), _money(r.what_if), _signed(r.now, r.what_if), r.test])
        lines += ["  " + row for row in fmt.table(table, ">>><")]
        if len(result.rows) > top:
            lines.append(f"  … {len(result.rows) - top:,} more")
    if result.unpriced:
        lines += ["", f"no price today for: {', '.join(result.unpriced)} (their cost is left out)"]
    return lines


def markdown_lines(result: Repriced, *, top: int = 20) -> list[str]:
    from .markdown import more
    from .markup import code

    out = [
        "#### What-if pricing",
        "",
        f"Cost now **{_money(result.now, result.now_known)}** → what-if "
        f"**{_money(result.what_if, result.what_if_known)}**: {_signed(result.now, result.what_if)} "
        "<sub>same tokens, today's prices</sub>",
        "",
        "| model | as | calls | now | what-if | Δ |",
        "|---|---|--:|--:|--:|--:|",
    ]
    for m in result.models:
        out.append(
            f"| {code(m['model'])} | {code(m['as'])} | {m['calls']:,} | {_money(m['now'])} | "
            f"{_money(m['what_if'])} | {_signed(m['now'], m['what_if'])} |"
        )
    if result.rows:
        out += ["", "| test | now | what-if | Δ |", "|---|--:|--:|--:|"]
        for r in result.rows[:top]:
            out.append(
                f"| {code(r.test)} | {_money(r.now)} | {_money(r.what_if)} | {_signed(r.now, r.what_if)} |"
            )
        out += more(len(result.rows) - top)
    return out
