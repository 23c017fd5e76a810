"""Run history: keep each run's artifact in a folder, read the trend back, draw it as SVG.

``--token-budget-save-run`` writes the run artifact to ``history-dir`` (default
``.tokenbudget/runs``) under a name that sorts by time and says where the run came from::

    2026-11-23T06-30-12.481Z_main_1a2b3c4d.json

``tokenbudget history`` reads only each file's metadata and totals (not every test), prints one
line per run with the change from the run before, and ``--svg`` draws tokens and cost as a line
chart: plain SVG written by hand, no plotting library.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final
from xml.sax.saxutils import escape, quoteattr

from .artifact import dump_run, write_atomic
from .model import SCHEMA_VERSION, ArtifactError, Run, Tally
from .report import format as fmt

__all__ = ["Entry", "History", "load_history", "run_name", "save_run", "svg_chart", "trend_lines"]

_UNSAFE: Final = re.compile(r"[^A-Za-z0-9._-]+")
_STAMP: Final = "%Y-%m-%dT%H-%M-%S"


# -- save ------------------------------------------------------------------------------------------


def run_name(meta: dict[str, Any], when: datetime) -> str:
    """``<UTC time to the millisecond>_<branch>_<short commit>.json``: sortable, safe on any disk."""
    stamp = when.astimezone(UTC).strftime(_STAMP) + f".{when.microsecond // 1000:03d}Z"
    branch = _UNSAFE.sub("-", str(meta.get("branch") or "")).strip("-.")[:40] or "no-branch"
    commit = re.sub(r"[^A-Za-z0-9]+", "", str(meta.get("commit") or ""))[:8] or "no-commit"
    return f"{stamp}_{branch}_{commit}.json"


def save_run(run: Run, directory: Path, when: datetime | None = None) -> Path:
    """Write ``run`` into ``directory`` (atomically) under a new :func:`run_name`; return the path."""
    moment = when or datetime.now(UTC)
    path = directory / run_name(run.meta, moment)
    while path.exists():  # two runs in one millisecond: the later one a millisecond on
        moment += timedelta(milliseconds=1)
        path = directory / run_name(run.meta, moment)
    write_atomic(path, dump_run(run))
    return path


# -- load ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Entry:
    """One saved run, as much of it as a trend needs."""

    name: str  # the file's name
    finished: str  # ISO time from the run's metadata ("" when absent)
    branch: str
    commit: str
    tests: int
    calls: int
    tokens: int
    cost_usd: float | None  # None: no call had a known price
    cost_known: bool  # False: some calls had no price, the cost is a lower bound

    @property
    def label(self) -> str:
        """``2026-11-23 06:30``: the run's time to the minute (the file name's when not recorded)."""
        if self.finished:
            return self.finished[:16].replace("T", " ")
        day, _, clock = self.name[:16].partition("T")
        return f"{day} {clock.replace('-', ':')}".strip()

    @property
    def short_commit(self) -> str:
        return self.commit[:8]


@dataclass(frozen=True, slots=True)
class History:
    """The runs found in a folder, oldest first, and the files that could not be read."""

    entries: tuple[Entry, ...]
    skipped: tuple[str, ...]  # one sentence per unreadable file


def load_history(directory: Path, *, branch: str | None = None, last: int | None = None) -> History:
    """Every ``*.json`` run in ``directory`` in name (= time) order; unreadable ones are skipped.
    ``last`` reads only the newest files (without ``branch``: a trend needs no more)."""
    if not directory.is_dir():
        raise ArtifactError(f"{directory}: no such folder (pytest --token-budget-save-run fills it)")
    entries: list[Entry] = []
    skipped: list[str] = []
    paths = sorted(directory.glob("*.json"))
    for path in paths[-last:] if last and branch is None else paths:
        try:
            entry = _read_entry(path)
        except ArtifactError as exc:
            skipped.append(str(exc))
            continue
        if branch is None or entry.branch == branch:
            entries.append(entry)
    return History(tuple(entries), tuple(skipped))


def _read_entry(path: Path) -> Entry:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ArtifactError(f"{path}: cannot be read: {exc.strerror or exc}") from exc
    except ValueError as exc:
        raise ArtifactError(f"{path}: not valid JSON: {exc}") from exc
    if not isinstance(data, dict) or data.get("schema") != "pytest-tokenbudget/run":
        raise ArtifactError(f"{path}: not a pytest-tokenbudget run artifact")
    if data.get("schema_version") != SCHEMA_VERSION:
        raise ArtifactError(
            f"{path}: schema_version {data.get('schema_version')!r} is not supported "
            f"(this pytest-tokenbudget reads version {SCHEMA_VERSION})"
        )
    meta, totals, tests = data.get("meta"), data.get("totals"), data.get("tests")
    if not isinstance(meta, dict) or not isinstance(totals, dict) or not isinstance(tests, dict):
        raise ArtifactError(f"{path}: malformed run artifact: meta, totals or tests missing")
    try:
        tally = Tally.from_dict(totals)
    except ArtifactError as exc:
        raise ArtifactError(f"{path}: malformed totals: {exc}") from exc
    return Entry(
        name=path.name,
        finished=str(meta.get("finished") or ""),
        branch=str(meta.get("branch") or ""),
        commit=str(meta.get("commit") or ""),
        tests=sum(1 for t in tests.values() if isinstance(t, dict) and t.get("kind", "test") == "test"),
        calls=tally.calls,
        tokens=tally.total_tokens,
        cost_usd=tally.cost_usd if tally.cost_known or tally.cost_usd else None,
        cost_known=tally.cost_known,
    )


# -- the trend as text -----------------------------------------------------------------------------


def trend_lines(entries: Sequence[Entry], *, last: int | None = None) -> list[str]:
    """An aligned table, one run a line, with the change in tokens and cost from the run before."""
    header = ["date (UTC)", "branch", "commit", "tests", "calls", "tokens", "Δ tokens", "cost", "Δ cost"]
    rows = [header]
    start = 0 if last is None else max(0, len(entries) - last)
    for index in range(start, len(entries)):
        entry = entries[index]
        before = entries[index - 1] if index else None
        rows.append(
            [
                entry.label,
                entry.branch or "-",
                entry.short_commit or "-",
                fmt.tokens(entry.tests),
                fmt.tokens(entry.calls),
                fmt.tokens(entry.tokens),
                _token_delta(before, entry),
                fmt.money(entry.cost_usd, known=entry.cost_known),
                _cost_delta(before, entry),
            ]
        )
    return fmt.table(rows, "<<<>>>>>>")


def _token_delta(before: Entry | None, after: Entry) -> str:
    if before is None:
        return "–"
    change = after.tokens - before.tokens
    text = f"{change:+,}" if change else "0"
    return f"{text} ({_percent(before.tokens, after.tokens)})" if change else text


def _cost_delta(before: Entry | None, after: Entry) -> str:
    if before is None or before.cost_usd is None or after.cost_usd is None:
        return "–"
    if not (before.cost_known and after.cost_known):
        return "?"  # one of the two is a lower bound: their difference means nothing
    change = after.cost_usd - before.cost_usd
    if abs(change) < 5e-11:
        return "0"
    sign = "+" if change > 0 else "-"
    return f"{sign}{fmt.money(abs(change))} ({_percent(before.cost_usd, after.cost_usd)})"


def _percent(before: float, after: float) -> str:
    return f"{100 * (after - before) / before:+.1f}%" if before else "new"


# -- the trend as an SVG line chart ------------------------------------------------------------------

_WIDTH: Final = 760
_HEIGHT: Final = 380
_LEFT, _RIGHT, _TOP, _BOTTOM = 80, 80, 48, 78
_TOKEN_COLOUR: Final = "#1f6feb"
_COST_COLOUR: Final = "#d4762c"
_MAX_X_LABELS: Final = 12


def svg_chart(entries: Sequence[Entry], *, title: str = "LLM token use per run") -> str:
    """Tokens (left axis) and cost (right axis) over the runs, evenly spaced, as an SVG document."""
    if not entries:
        raise ValueError("no runs to draw")
    plot_w, plot_h = _WIDTH - _LEFT - _RIGHT, _HEIGHT - _TOP - _BOTTOM
    count = len(entries)

    def x_at(index: int) -> float:
        return _LEFT + (plot_w / 2 if count == 1 else plot_w * index / (count - 1))

    token_ticks = _ticks(max(e.tokens for e in entries))
    costs = [e.cost_usd for e in entries]
    known_costs = [c for c in costs if c is not None]
    cost_ticks = _ticks(max(known_costs)) if known_costs else []

    def y_at(value: float, ticks: list[float]) -> float:
        return _TOP + plot_h * (1 - value / ticks[-1])

    out = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_WIDTH}" height="{_HEIGHT}" '
        f'viewBox="0 0 {_WIDTH} {_HEIGHT}" font-family="sans-serif" font-size="12">',
        f"<title>{escape(title)}</title>",
        f'<rect x="0" y="0" width="{_WIDTH}" height="{_HEIGHT}" fill="#ffffff"/>',
        _text(_WIDTH / 2, 24, title, anchor="middle", size=15),
    ]
    for tick in token_ticks:  # grid lines and the left (tokens) axis labels
        y = y_at(tick, token_ticks)
        out.append(f'<line x1="{_LEFT}" y1="{y:.1f}" x2="{_LEFT + plot_w}" y2="{y:.1f}" stroke="#e5e5e5"/>')
        out.append(_text(_LEFT - 8, y + 4, _compact_tokens(tick), anchor="end", fill=_TOKEN_COLOUR))
    for tick in cost_ticks:
        y = y_at(tick, cost_ticks)
        out.append(_text(_LEFT + plot_w + 8, y + 4, fmt.money(tick), anchor="start", fill=_COST_COLOUR))
    out.append(
        f'<rect x="{_LEFT}" y="{_TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#999999"/>'
    )
    out.append(_text(18, _TOP + plot_h / 2, "tokens", anchor="middle", fill=_TOKEN_COLOUR, rotate=True))
    if cost_ticks:
        out.append(
            _text(
                _WIDTH - 14, _TOP + plot_h / 2, "cost (USD)", anchor="middle", fill=_COST_COLOUR, rotate=True
            )
        )
    step = max(1, math.ceil(count / _MAX_X_LABELS))
    for index, entry in enumerate(entries):  # x labels: every step-th run, and always the last
        if index % step and index != count - 1:
            continue
        x = x_at(index)
        out.append(_text(x, _TOP + plot_h + 18, entry.label[5:10], anchor="middle"))
        out.append(_text(x, _TOP + plot_h + 32, entry.short_commit or "-", anchor="middle", fill="#666666"))
    token_points = [(x_at(i), y_at(e.tokens, token_ticks)) for i, e in enumerate(entries)]
    out.append(_polyline(token_points, _TOKEN_COLOUR, "tokens"))
    out += [_dot(p, _TOKEN_COLOUR, _tooltip(e)) for p, e in zip(token_points, entries, strict=True)]
    if cost_ticks:
        cost_points = [(x_at(i), y_at(c, cost_ticks)) for i, c in enumerate(costs) if c is not None]
        priced = [e for e in entries if e.cost_usd is not None]
        out.append(_polyline(cost_points, _COST_COLOUR, "cost", dashed=True))
        out += [_dot(p, _COST_COLOUR, _tooltip(e)) for p, e in zip(cost_points, priced, strict=True)]
    legend_y = _HEIGHT - 16
    out.append(f'<line x1="{_LEFT}" y1="{legend_y - 4}" x2="{_LEFT + 24}" y2="{legend_y - 4}" '
               f'stroke="{_TOKEN_COLOUR}" stroke-width="2"/>')  # fmt: skip
    out.append(_text(_LEFT + 30, legend_y, "total tokens", anchor="start"))
    if cost_ticks:
        out.append(f'<line x1="{_LEFT + 140}" y1="{legend_y - 4}" x2="{_LEFT + 164}" y2="{legend_y - 4}" '
                   f'stroke="{_COST_COLOUR}" stroke-width="2" stroke-dasharray="6 3"/>')  # fmt: skip
        out.append(_text(_LEFT + 170, legend_y, "cost", anchor="start"))
    out.append(_text(_WIDTH - _RIGHT, legend_y, f"{count} runs", anchor="end", fill="#666666"))
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _ticks(peak: float) -> list[float]:
    """0 and at most four round steps (1, 2, 2.5 or 5 × 10ⁿ) up to at least ``peak`` (0 → [0, 1])."""
    if peak <= 0:
        return [0.0, 1.0]
    raw = peak / 4
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    return [round(step * i, 12) for i in range(math.ceil(peak / step - 1e-9) + 1)]


def _compact_tokens(value: float) -> str:
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= size:
            return f"{value / size:g}{suffix}"
    return f"{value:g}"


def _tooltip(entry: Entry) -> str:
    cost = fmt.money(entry.cost_usd, known=entry.cost_known)
    return f"{entry.label} {entry.branch or '-'} {entry.short_commit or '-'}: {entry.tokens:,} tokens, {cost}"


def _text(
    x: float,
    y: float,
    text: str,
    *,
    anchor: str,
    fill: str = "#333333",
    size: int | None = None,
    rotate: bool = False,
) -> str:
    extra = f' font-size="{size}"' if size else ""
    if rotate:
        extra += f' transform="rotate(-90 {x:.1f} {y:.1f})"'
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" fill="{fill}"{extra}>{escape(text)}</text>'


def _polyline(points: Iterable[tuple[float, float]], colour: str, name: str, *, dashed: bool = False) -> str:
    coords = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
    dash = ' stroke-dasharray="6 3"' if dashed else ""
    return (
        f'<polyline class={quoteattr(name)} points="{coords}" fill="none" stroke="{colour}" '
        f'stroke-width="2"{dash}/>'
    )


def _dot(point: tuple[float, float], colour: str, tooltip: str) -> str:
    x, y = point
    circle = f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="{colour}">'
    return f"{circle}<title>{escape(tooltip)}</title></circle>"
