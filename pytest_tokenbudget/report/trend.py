"""The trend of the last runs as a unicode sparkline (``▁▂▃▅█``), for the PR comment.

GitHub shows SVG images only from URLs, so a comment draws its trend in text: one block per run,
its height the run's tokens between the smallest and the largest of those shown, with the range
written beside it. The runs come from the history folder (``--token-budget-save-run``); the
current run is added when it was not kept there.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Final

from .. import units as fmt
from ..model import ArtifactError, Run
from ..runs.history import Entry, load_history

BLOCKS: Final = "▁▂▃▄▅▆▇█"
DEFAULT_RUNS: Final = 20
"""Runs drawn in the comment's trend (the current one included)."""


def sparkline(values: Sequence[float]) -> str:
    """One block per value, scaled from the smallest (▁) to the largest (█); all equal: ▄."""
    if not values:
        return ""
    low, high = min(values), max(values)
    if high == low:
        return BLOCKS[3] * len(values)
    top = len(BLOCKS) - 1
    return "".join(BLOCKS[round((value - low) / (high - low) * top)] for value in values)


def entry_of(run: Run, name: str = "this run") -> Entry:
    """The trend's point for ``run`` (as :func:`~pytest_tokenbudget.history.load_history` reads one)."""
    totals = run.totals()
    meta = run.meta
    return Entry(
        name=name,
        finished=str(meta.get("finished") or ""),
        branch=str(meta.get("branch") or ""),
        commit=str(meta.get("commit") or ""),
        tests=sum(1 for _ in run.iter_tests()),
        calls=totals.calls,
        tokens=totals.total_tokens,
        cost_usd=totals.cost_usd if totals.cost_known or totals.cost_usd else None,
        cost_known=totals.cost_known,
    )


def recent(directory: Path | None, run: Run, *, last: int = DEFAULT_RUNS) -> list[Entry]:
    """The last ``last`` runs of ``directory`` ending with ``run``; [] when there is no history
    (no folder, or nothing in it but this run)."""
    if directory is None or not directory.is_dir():
        return []
    try:
        entries = list(load_history(directory, last=last).entries)
    except ArtifactError:
        return []
    current = entry_of(run)
    kept = entries and entries[-1].finished == current.finished and entries[-1].commit == current.commit
    if not (kept and current.finished):  # --token-budget-save-run keeps it before the reports
        entries.append(current)
    entries = entries[-last:]
    return entries if len(entries) >= 2 else []


def markdown_lines(entries: Sequence[Entry]) -> list[str]:
    """``Trend (last 8 runs): ▁▂▂▃█ tokens 3,100 → 3,843 (min …, max …) · cost …``."""
    if len(entries) < 2:
        return []
    tokens = [e.tokens for e in entries]
    first, latest = entries[0], entries[-1]
    text = (
        f"📈 **Trend** (last {len(entries):,} runs): tokens {sparkline(tokens)} "
        f"{fmt.tokens(first.tokens)} → {fmt.tokens(latest.tokens)} "
        f"(min {fmt.tokens(min(tokens))}, max {fmt.tokens(max(tokens))})"
    )
    costs = [e.cost_usd for e in entries]
    if all(c is not None for c in costs) and all(e.cost_known for e in entries):
        known = [float(c or 0.0) for c in costs]
        text += f" · cost {sparkline(known)} {fmt.money(known[0])} → {fmt.money(known[-1])}"
    return [text]
