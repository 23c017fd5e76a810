"""How a baseline comparison (``run.comparison``, from :mod:`pytest_tokenbudget.runs.baseline`) reads."""

from __future__ import annotations

from typing import Any

from .. import units as fmt
from .markup import Line, code, literal

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


def signed_money(value: float) -> str:
    """``+$0.0012``, ``-$0.0003``, ``$0``: a cost change with its sign."""
    if abs(value) < 5e-7:  # the comparison keeps six decimals
        return "$0"
    return ("+" if value > 0 else "-") + fmt.money(abs(value))


def swap(test: dict[str, Any]) -> tuple[list[str], list[str]] | None:
    """A test's models dropped and taken up, when its models changed (a model swap)."""
    models = test.get("models")
    if not isinstance(models, dict):
        return None
    base, head = list(models.get("base") or ()), list(models.get("head") or ())
    return [m for m in base if m not in head], [m for m in head if m not in base]


def _label(test: dict[str, Any]) -> str:
    """``+12.5%``, ``new``, ``removed``; ``model a → b`` for a swap at equal tokens."""
    swapped = swap(test)
    if swapped is not None and test["delta"] == 0:
        return f"model {', '.join(swapped[0]) or '-'} → {', '.join(swapped[1]) or '-'}"
    return test["status"] if test["status"] != "changed" else _pct(test["pct"])


def _cost_delta(test: dict[str, Any]) -> str:
    cost = test.get("cost")
    return signed_money(cost["delta"]) if isinstance(cost, dict) else ""


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
    rows = [["base", "head", "delta", "cost Δ", "", "test"]]
    for test in comparison["tests"][:_ROWS]:
        rows.append(
            [
                fmt.tokens(test["base"]),
                fmt.tokens(test["head"]),
                _signed(test["delta"]),
                _cost_delta(test),
                _label(test),
                test["test"],
            ]
        )
    if len(rows) > 1:
        lines += [Line("    " + row) for row in fmt.table(rows, ">>>>><")]
    return lines


def markdown_lines(comparison: dict[str, Any]) -> list[str]:
    if not comparison:
        return []
    if comparison.get("missing"):
        return [f"ℹ️ Baseline: {literal(comparison.get('note') or 'none yet')}."]
    total = comparison["totals"]["total_tokens"]
    cost = comparison["cost"]
    counts = comparison.get("counts", {})
    arrow = "📈" if total["delta"] > 0 else "📉" if total["delta"] < 0 else "➖"
    out = [
        "#### Against the baseline",
        "",
        f"{arrow} **{_signed(total['delta'])} tokens** ({_pct(total['pct'])}): "
        f"{fmt.tokens(total['base'])} → {fmt.tokens(total['head'])} · {literal(_cost_line(cost))} · "
        f"{counts.get('changed', 0):,} changed, {counts.get('new', 0):,} new, "
        f"{counts.get('removed', 0):,} removed "
        f"<sub>(baseline {code(str(comparison.get('source', '')))})</sub>",
    ]
    if counts.get("models_swapped"):
        out += ["", f"🔀 **{fmt.count(counts['models_swapped'], 'test')} changed model**"]
    if comparison["tests"]:
        out += ["", "| test | base | head | Δ tokens | Δ cost | |", "|---|--:|--:|--:|--:|---|"]
        for test in comparison["tests"][:_ROWS]:
            out.append(
                f"| {code(test['test'])} | {fmt.tokens(test['base'])} | {fmt.tokens(test['head'])} | "
                f"{_signed(test['delta'])} | {_cost_delta(test)} | {_markdown_label(test)} |"
            )
        hidden = len(comparison["tests"]) - _ROWS
        if hidden > 0:
            out.append(f"| … {hidden:,} more | | | | | |")
    return out


def _markdown_label(test: dict[str, Any]) -> str:
    """The row's last cell: growth, new/removed, and a model swap with the model names as code."""
    label = test["status"] if test["status"] != "changed" else _pct(test["pct"])
    if test["delta"] == 0 and test["status"] == "changed":
        label = ""
    swapped = swap(test)
    if swapped is not None:
        before = ", ".join(code(m) for m in swapped[0]) or "-"
        after = ", ".join(code(m) for m in swapped[1]) or "-"
        label = f"{label} 🔀 {before} → {after}".strip()
    return label
