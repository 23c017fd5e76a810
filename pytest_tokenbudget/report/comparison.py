"""How a baseline comparison (``run.comparison``, from :mod:`pytest_tokenbudget.runs.baseline`) reads."""

from __future__ import annotations

from typing import Any

from .. import units as fmt
from .terminal import Line

_ROWS = 10


def _pct(value: float | None) -> str:
    return "new" if value is None else f"{value:+.1%}"


def _signed(value: float) -> str:
    return f"{value:+,.0f}"


def _cost_line(cost: dict[str, Any]) -> str:
    text = f"cost {fmt.money(cost['base'])} → {fmt.money(cost['head'])}"
    if cost.get("usage_effect") is not None:
        text += f" (usage {cost['usage_effect']:+.6f} USD, prices {cost['price_effect']:+.6f} USD)"
    return text


def terminal_lines(comparison: dict[str, Any]) -> list[Line]:
    if not comparison:
        return []
    if comparison.get("missing"):
        return [Line(""), Line(f"baseline: {comparison.get('note') or 'none yet'}", {"yellow": True})]
    total = comparison["totals"]["total_tokens"]
    counts = comparison.get("counts", {})
    lines = [
        Line(""),
        Line(f"against the baseline ({comparison.get('source', '?')}):", {"bold": True}),
        Line(
            f"  tokens {fmt.tokens(total['base'])} → {fmt.tokens(total['head'])} "
            f"({_signed(total['delta'])}, {_pct(total['pct'])}); {_cost_line(comparison['cost'])}"
        ),
        Line(
            f"  tests: {counts.get('changed', 0):,} changed, {counts.get('new', 0):,} new, "
            f"{counts.get('removed', 0):,} removed"
        ),
    ]
    rows = [["base", "head", "delta", "", "test"]]
    for test in comparison["tests"][:_ROWS]:
        label = test["status"] if test["status"] != "changed" else _pct(test["pct"])
        rows.append(
            [fmt.tokens(test["base"]), fmt.tokens(test["head"]), _signed(test["delta"]), label, test["test"]]
        )
    if len(rows) > 1:
        lines += [Line("    " + row) for row in fmt.table(rows, ">>>><")]
    return lines


def markdown_lines(comparison: dict[str, Any]) -> list[str]:
    from .markdown import _code, _text

    if not comparison:
        return []
    if comparison.get("missing"):
        return [f"ℹ️ Baseline: {_text(comparison.get('note') or 'none yet')}."]
    total = comparison["totals"]["total_tokens"]
    cost = comparison["cost"]
    counts = comparison.get("counts", {})
    arrow = "📈" if total["delta"] > 0 else "📉" if total["delta"] < 0 else "➖"
    out = [
        "#### Against the baseline",
        "",
        f"{arrow} **{_signed(total['delta'])} tokens** ({_pct(total['pct'])}): "
        f"{fmt.tokens(total['base'])} → {fmt.tokens(total['head'])} · {_text(_cost_line(cost))} · "
        f"{counts.get('changed', 0):,} changed, {counts.get('new', 0):,} new, "
        f"{counts.get('removed', 0):,} removed "
        f"<sub>(baseline {_code(str(comparison.get('source', '')))})</sub>",
    ]
    if comparison["tests"]:
        out += ["", "| test | base | head | Δ | |", "|---|--:|--:|--:|---|"]
        for test in comparison["tests"][:_ROWS]:
            label = test["status"] if test["status"] != "changed" else _pct(test["pct"])
            out.append(
                f"| {_code(test['test'])} | {fmt.tokens(test['base'])} | {fmt.tokens(test['head'])} | "
                f"{_signed(test['delta'])} | {label} |"
            )
        hidden = len(comparison["tests"]) - _ROWS
        if hidden > 0:
            out.append(f"| … {hidden:,} more | | | | |")
    return out
