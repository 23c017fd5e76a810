"""Number formatting shared by every human-readable report."""

from __future__ import annotations


def tokens(value: int) -> str:
    """``12,345``."""
    return f"{value:,}"


def money(value: float | None, *, known: bool = True) -> str:
    """``$0.0123``; ``unknown`` when no price is known; ``≥$0.01`` when only partly known."""
    if value is None:
        return "unknown"
    if value == 0:
        text = "$0"
    elif abs(value) >= 100:
        text = f"${value:,.2f}"
    elif abs(value) >= 0.01:
        text = f"${value:.4f}".rstrip("0").rstrip(".")
    else:
        text = f"${value:.6f}".rstrip("0").rstrip(".")
    return text if known else f"≥{text}"


def percent(part: float, whole: float) -> str:
    return f"{100 * part / whole:.0f}%" if whole else "–"


def table(rows: list[list[str]], align: str) -> list[str]:
    """Aligned columns; ``align`` has one ``<`` or ``>`` per column."""
    if not rows:
        return []
    widths = [max(len(row[i]) for row in rows) for i in range(len(align))]
    # One template pads every cell (``{:>9}`` pads as ``str.rjust(9)``, ``{:<9}`` as ``ljust``).
    template = "  ".join(f"{{:{side}{width}}}" for side, width in zip(align, widths, strict=True))
    return [template.format(*row).rstrip() for row in rows]
