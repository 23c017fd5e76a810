"""The shared vocabulary at the bottom floor: numbers and money as every report writes them, and
strings from outside made printable where they enter (:func:`clean`)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache


def tokens(value: int) -> str:
    """``12,345``."""
    return f"{value:,}"


def money(value: float | None, *, known: bool = True) -> str:
    """``$0.0123``; ``unknown`` when no price is known; ``≥$0.01`` when only partly known."""
    if value is None:
        return "unknown"
    text = _dollars(value)
    return text if known else f"≥{text}"


# Remembered: a report formats one amount per test and amounts repeat (tests replaying the same
# cassettes); a hit is cheaper than formatting.
# Equal values always give equal text here (fixed decimals; 0 and -0.0 both give "$0"), so the
# cache cannot mix up 1 and 1.0 the way it could for ``tokens``.
@lru_cache(maxsize=4096)
def _dollars(value: float) -> str:
    """``$0.0123``: two decimals from $100, four from a cent, six below."""
    if value == 0:
        return "$0"
    if abs(value) >= 100:
        return f"${value:,.2f}"
    if abs(value) >= 0.01:
        return f"${value:.4f}".rstrip("0").rstrip(".")
    return f"${value:.6f}".rstrip("0").rstrip(".")


def count(n: int, noun: str) -> str:
    """``1 call``, ``3 calls``, ``1,024 tests``: a number and its noun, singular or plural."""
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {noun}s"


def percent(part: float, whole: float) -> str:
    return f"{100 * part / whole:.0f}%" if whole else "–"


def table(rows: Sequence[Sequence[str]], align: str) -> list[str]:
    """Aligned columns; ``align`` has one ``<`` or ``>`` per column."""
    if not rows:
        return []
    widths = [max(len(row[i]) for row in rows) for i in range(len(align))]
    # One template pads every cell (``{:>9}`` pads as ``str.rjust(9)``, ``{:<9}`` as ``ljust``).
    template = "  ".join(f"{{:{side}{width}}}" for side, width in zip(align, widths, strict=True))
    return [template.format(*row).rstrip() for row in rows]


# Strings from outside — a provider's response, a request, a test's own arguments — made safe at
# the point they enter, for every channel they later reach: the terminal (where a line starting
# ``::error`` is a GitHub workflow command and an escape sequence drives the terminal), JSON, XML
# and markdown, whose writers then never meet a lone surrogate they cannot encode.

REPLACEMENT = "\ufffd"


def clean(text: str) -> str:
    """``text`` with every unprintable character — controls (newlines, ``\\r``, ESC, U+0085),
    line and paragraph separators, lone surrogates — replaced by U+FFFD."""
    if text.isprintable():  # the usual case, checked in C
        return text
    return "".join(char if char.isprintable() else REPLACEMENT for char in text)
